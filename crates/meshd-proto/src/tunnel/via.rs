//! Which way a message to a peer goes: straight to its endpoint, or through a relay.
//!
//! A peer's direct path is alive while authenticated traffic comes from its endpoint: within
//! [`DIRECT_QUIET`] always, and up to [`DIRECT_DEAD`] while nothing we sent on it waits for
//! an answer (the RTT probe every [`super::PROBE_INTERVAL`] keeps a quiet path heard). A peer
//! without a live direct path is reached through a relay, when the node has any: the one its
//! traffic last came through while that relay is still among the node's live relays
//! ([`super::Tunnel::set_relays`]), else the node's best. Traffic starts on the relay at once
//! (a handshake goes to every direct candidate *and* through the relay), and while a peer is
//! relayed its direct candidates are scanned every [`RELAYED_SCAN_INTERVAL`]: both sides do
//! it from the moment the session is up, so their probes cross in the NATs and punch the
//! holes a direct path needs; the first answer moves the traffic to it.
//!
//! The relays are the replicas' that answer, then the members marked as relays (`meshd
//! daemon --relay`) we hold a live direct session with: when every replica is down, relayed
//! pairs go on through a member. Every node keeps a session with each member relay for that.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::peer::Peer;
use super::{Transmit, Tunnel};
use crate::{NodeId, wire};

/// A direct path heard from within this is alive.
pub const DIRECT_QUIET: Duration = Duration::from_secs(6);
/// A direct path not heard from for this long is dead, even with nothing unanswered.
pub const DIRECT_DEAD: Duration = Duration::from_secs(11);
/// Time between the path scans of a peer that is reached through a relay.
pub const RELAYED_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// How a message reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to this address.
    Direct(SocketAddr),
    /// In a relay envelope, to this relay.
    Relay(SocketAddr),
}

impl Via {
    /// How to answer a message that came from `from`, relayed or not.
    pub fn back(from: SocketAddr, relayed: bool) -> Via {
        if relayed {
            Via::Relay(from)
        } else {
            Via::Direct(from)
        }
    }

    pub fn is_relay(self) -> bool {
        matches!(self, Via::Relay(_))
    }
}

impl Peer {
    /// How to reach the peer now, given the node's live `relays`: see the module docs.
    /// `None`: no address and no relay.
    pub fn via(&self, relays: &Relays, now: Instant) -> Option<Via> {
        if let Some(endpoint) = self.endpoint.filter(|_| self.direct_alive(now)) {
            return Some(Via::Direct(endpoint));
        }
        if let Some(relay) = relays.for_peer(self) {
            return Some(Via::Relay(relay));
        }
        self.endpoint
            .or_else(|| self.candidates.first().copied())
            .map(Via::Direct)
    }

    /// Whether the direct path to the endpoint is alive (see the module docs).
    pub fn direct_alive(&self, now: Instant) -> bool {
        let (Some(_), Some(heard)) = (self.endpoint, self.endpoint_heard) else {
            return false;
        };
        let quiet = now.saturating_duration_since(heard);
        quiet < DIRECT_QUIET || (self.direct_unanswered_since.is_none() && quiet < DIRECT_DEAD)
    }
}

/// The live relays, best first: the replicas' that answer, then member relays.
#[derive(Debug, Default)]
pub(super) struct Relays {
    list: Vec<SocketAddr>,
    /// How many of `list` (its head) are replicas' relays.
    replicas: usize,
}

impl Relays {
    /// The relay for `peer`: the one its traffic last came through while that is live and
    /// as good as the best (a replica's while any replica's answers), else the best.
    pub fn for_peer(&self, peer: &Peer) -> Option<SocketAddr> {
        let replicas = &self.list[..self.replicas];
        let usable =
            |r: &SocketAddr| replicas.contains(r) || (replicas.is_empty() && self.list.contains(r));
        peer.relay
            .filter(usable)
            .or_else(|| self.list.first().copied())
    }
}

impl Tunnel {
    /// The replicas' relays traffic may go through, best first; the node keeps the list to
    /// relays that answer. Members marked as relays come after them while we reach them
    /// directly. None at all: peers are reached directly only.
    pub fn set_relays(&mut self, relays: Vec<SocketAddr>) {
        self.replica_relays = relays;
        self.refresh_relays(self.last_tick);
    }

    /// Rebuilds the relay list: the replicas', then every member relay with a session and a
    /// live direct path (run at each timer tick).
    pub(super) fn refresh_relays(&mut self, now: Instant) {
        let mut members: Vec<(NodeId, SocketAddr)> = self
            .peers
            .values()
            .filter(|p| p.is_relay && p.usable_session(now) && p.direct_alive(now))
            .filter_map(|p| Some((p.node_id, p.endpoint?)))
            .collect();
        members.sort_unstable();
        let relays = &mut self.relays;
        relays.list.clone_from(&self.replica_relays);
        relays.replicas = relays.list.len();
        for (_, address) in members {
            if !relays.list.contains(&address) {
                relays.list.push(address);
            }
        }
    }

    /// Queues `bytes` for `peer` the way `via` says: as they are, or in a relay envelope.
    pub(super) fn push_via(&mut self, via: Via, peer: NodeId, bytes: Vec<u8>) {
        let (destination, bytes) = match via {
            Via::Direct(to) => (to, bytes),
            Via::Relay(relay) => (relay, wire::relay_envelope(peer, self.node_id, &bytes)),
        };
        self.transmits.push_back(Transmit {
            destination,
            peer: Some(peer),
            bytes,
        });
    }

    /// The envelope header for data to `peer` through a relay.
    pub(super) fn envelope_header(&self, peer: NodeId) -> [u8; wire::RELAY_HEADER_LEN] {
        let mut header = [0u8; wire::RELAY_HEADER_LEN];
        wire::put_type(&mut header, wire::TYPE_RELAY);
        header[4..9].copy_from_slice(&peer.to_bytes());
        header[9..14].copy_from_slice(&self.node_id.to_bytes());
        header
    }
}

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
    pub fn via(&self, relays: &[SocketAddr], now: Instant) -> Option<Via> {
        if let Some(endpoint) = self.endpoint.filter(|_| self.direct_alive(now)) {
            return Some(Via::Direct(endpoint));
        }
        if let Some(relay) = relay_for(relays, self) {
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

/// The relay for `peer` among the live `relays`: the one it was last heard through while it
/// is live, else the best.
pub(super) fn relay_for(relays: &[SocketAddr], peer: &Peer) -> Option<SocketAddr> {
    peer.relay
        .filter(|r| relays.contains(r))
        .or_else(|| relays.first().copied())
}

impl Tunnel {
    /// The relays traffic may go through, best first; the node keeps the list to relays that
    /// answer. Empty: peers are reached directly only.
    pub fn set_relays(&mut self, relays: Vec<SocketAddr>) {
        self.relays = relays;
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

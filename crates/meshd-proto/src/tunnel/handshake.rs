//! Handshakes, the tunnel's side of them: answering initiations (demanding cookies under
//! load), finishing on a response, taking cookie replies, starting and retrying
//! initiations, and sending what waited for a session once one is there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::peer::{Pending, retire};
use super::{DropReason, Event, Incoming, Transmit, Tunnel, Via};
use crate::NodeId;
use crate::handshake::{self, InitiationParams};
use crate::session::Session;
use crate::wire;

/// Maps `now` to wall-clock time for handshake timestamps, without reading a clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) base: Instant,
    pub(super) unix_at_base: Duration,
}

impl Clock {
    fn unix(&self, now: Instant) -> Duration {
        self.unix_at_base + now.saturating_duration_since(self.base)
    }
}

#[derive(Debug)]
pub(super) struct LoadMeter {
    pub(super) window_start: Instant,
    pub(super) count: u32,
}

/// Whose handshakes a responder under load limits together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HandshakeSource {
    Address(std::net::IpAddr),
    Relayed(NodeId),
}

/// Initiations one source may have answered per second under load, after a burst (as
/// WireGuard's rate limiter).
pub(crate) const HANDSHAKE_RATE: crate::rate::Rate = crate::rate::Rate {
    per_second: 20.0,
    burst: 5.0,
};
/// Sources the responder tracks at most under load.
pub(crate) const HANDSHAKE_SOURCES: usize = 4096;

impl Tunnel {
    fn under_load(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.load.window_start) >= Duration::from_secs(1) {
            self.load = LoadMeter {
                window_start: now,
                count: 0,
            };
        }
        self.load.count = self.load.count.saturating_add(1);
        self.forced_load || self.load.count > self.settings.cookie_threshold_per_second
    }

    pub(super) fn on_initiation<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        init: &wire::HandshakeInit<'_>,
        relayed: Option<NodeId>,
    ) -> Result<Incoming<'a>, DropReason> {
        if !handshake::mac_eq(&self.own_macs.mac1(init.before_mac1), init.mac1) {
            return Err(DropReason::BadMac1);
        }
        let under_load = self.under_load(now);
        if under_load
            && !self
                .cookie_secret
                .mac2_valid(from, init.before_mac2, init.mac2)
        {
            let reply =
                self.cookie_secret
                    .reply(&self.own_macs, from, init.sender_index, init.mac1);
            let bytes = match relayed {
                Some(source) => wire::relay_envelope(source, self.node_id, &reply),
                None => reply.to_vec(),
            };
            self.transmits.push_back(Transmit {
                destination: from,
                peer: None,
                bytes,
            });
            return Err(DropReason::CookieSent);
        }
        // A cookie proves the address, not good intent: under load, each address (or, through
        // a relay, each source the envelope names) gets its own share of the responder's work.
        let source = match relayed {
            Some(node) => HandshakeSource::Relayed(node),
            None => HandshakeSource::Address(from.ip()),
        };
        if under_load && !self.handshake_limit.admit(source, now, 1.0) {
            return Err(DropReason::HandshakeRateLimited);
        }
        if init.network_id != self.network_id.to_bytes() {
            return Err(DropReason::WrongNetwork);
        }
        let received = handshake::read_initiation(self.network_id, &self.static_secret, init)
            .map_err(|_| DropReason::HandshakeFailed)?;
        // Only members the current signed config lists get an answer.
        let peer_id = *self
            .by_static
            .get(&received.initiator_static)
            .ok_or(DropReason::UnknownPeer)?;
        if relayed.is_some_and(|source| source != peer_id) {
            return Err(DropReason::RelaySourceMismatch);
        }
        let local_index = allocate_index(
            &mut self.by_index,
            &mut self.index_state,
            self.settings.index_prefix,
            peer_id,
        );
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            self.by_index.remove(&local_index);
            return Err(DropReason::UnknownPeer);
        };
        if received.timestamp <= peer.newest_timestamp {
            self.by_index.remove(&local_index);
            return Err(DropReason::StaleInitiation);
        }
        peer.newest_timestamp = received.timestamp;
        let remote_index = received.sender_index;
        let mut out = [0u8; wire::HANDSHAKE_RESPONSE_LEN];
        let keys = match handshake::respond(received, local_index, &peer.macs, &mut out) {
            Ok(k) => k,
            Err(_) => {
                self.by_index.remove(&local_index);
                return Err(DropReason::HandshakeFailed);
            }
        };
        let session = Session::new(
            local_index,
            remote_index,
            &keys.send,
            &keys.recv,
            false,
            now,
        );
        retire(&mut self.by_index, peer.next.replace(session));
        match relayed {
            Some(_) => peer.relay = Some(from),
            None => peer.roam(from, now),
        }
        peer.met_via_relay = relayed.is_some();
        peer.last_handshake = Some(now);
        peer.handshakes += 1;
        self.push_via(Via::back(from, relayed.is_some()), peer_id, out.to_vec());
        Ok(Incoming::Handled)
    }

    pub(super) fn on_response<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        resp: &wire::HandshakeResponse<'_>,
        relayed: Option<NodeId>,
    ) -> Result<Incoming<'a>, DropReason> {
        if !handshake::mac_eq(&self.own_macs.mac1(resp.before_mac1), resp.mac1) {
            return Err(DropReason::BadMac1);
        }
        let peer_id = *self
            .by_index
            .get(&resp.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
        if relayed.is_some_and(|source| source != peer_id) {
            return Err(DropReason::RelaySourceMismatch);
        }
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(DropReason::UnknownIndex)?;
        if peer.pending.as_ref().map(|p| p.local_index) != Some(resp.receiver_index) {
            return Err(DropReason::UnknownIndex);
        }
        let pending = peer.pending.take().ok_or(DropReason::UnknownIndex)?;
        let keys = match handshake::finish(pending.initiation, resp) {
            Ok(k) => k,
            Err(_) => {
                self.by_index.remove(&pending.local_index);
                return Err(DropReason::HandshakeFailed);
            }
        };
        let session = Session::new(
            pending.local_index,
            resp.sender_index,
            &keys.send,
            &keys.recv,
            true,
            now,
        );
        let old = peer.current.replace(session);
        retire(
            &mut self.by_index,
            std::mem::replace(&mut peer.previous, old),
        );
        match relayed {
            Some(_) => peer.relay = Some(from),
            None => peer.roam(from, now),
        }
        peer.met_via_relay = relayed.is_some();
        peer.last_handshake = Some(now);
        peer.handshakes += 1;
        peer.last_received = Some(now);
        peer.unanswered_since = None;
        self.events.push_back(Event::SessionEstablished(peer_id));
        self.flush_queue(now, peer_id, true);
        self.start_path_scan(now, peer_id);
        Ok(Incoming::Handled)
    }

    pub(super) fn on_cookie_reply<'a>(
        &mut self,
        now: Instant,
        reply: &wire::CookieReply<'_>,
    ) -> Result<Incoming<'a>, DropReason> {
        let peer_id = *self
            .by_index
            .get(&reply.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(DropReason::UnknownIndex)?;
        let pending = peer
            .pending
            .as_ref()
            .filter(|p| p.local_index == reply.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
        let cookie = handshake::open_cookie(&peer.macs, reply, &pending.initiation.mac1)
            .ok_or(DropReason::Unauthentic)?;
        peer.cookie = Some((cookie, now));
        Ok(Incoming::Handled)
    }

    /// Starts (or restarts) a handshake with `peer_id`.
    pub(super) fn initiate(&mut self, now: Instant, peer_id: NodeId) {
        let unix = self.clock.unix(now);
        let mut timestamp = handshake::tai64n(unix);
        if timestamp <= self.last_timestamp {
            // Two initiations in one clock step: keep them strictly increasing.
            timestamp = self.last_timestamp;
            increment(&mut timestamp);
        }
        self.last_timestamp = timestamp;
        let local_index = allocate_index(
            &mut self.by_index,
            &mut self.index_state,
            self.settings.index_prefix,
            peer_id,
        );
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            self.by_index.remove(&local_index);
            return;
        };
        let cookie = peer
            .cookie
            .as_ref()
            .filter(|(_, at)| {
                now.saturating_duration_since(*at) < handshake::COOKIE_SECRET_LIFETIME
            })
            .map(|(c, _)| c);
        let mut out = [0u8; wire::HANDSHAKE_INIT_LEN];
        let params = InitiationParams {
            nwid: self.network_id,
            local_secret: &self.static_secret,
            remote_static: &peer.static_public,
            remote_macs: &peer.macs,
            sender_index: local_index,
            timestamp,
            cookie,
        };
        let Ok(initiation) = handshake::initiate(&params, &mut out) else {
            self.by_index.remove(&local_index);
            return;
        };
        let retry = peer.pending.is_some();
        let started_at = peer.pending.as_ref().map_or(now, |p| p.started_at);
        if let Some(old) = peer.pending.replace(Pending {
            initiation,
            local_index,
            sent_at: now,
            started_at,
        }) {
            self.by_index.remove(&old.local_index);
        }
        let destinations = peer.handshake_destinations(retry);
        // Through a relay as well while no direct path is known to work: whichever way
        // answers first carries the session.
        let relay = (!peer.direct_alive(now))
            .then(|| self.relays.for_peer(peer))
            .flatten();
        if destinations.is_empty() && relay.is_none() {
            self.stats.count(DropReason::NoEndpoint);
        }
        for destination in destinations {
            self.push_via(Via::Direct(destination), peer_id, out.to_vec());
        }
        if let Some(relay) = relay {
            self.push_via(Via::Relay(relay), peer_id, out.to_vec());
        }
    }

    /// Sends what waited for a session; as initiator with nothing waiting, a keepalive
    /// confirms the session to the responder.
    pub(super) fn flush_queue(&mut self, now: Instant, peer_id: NodeId, confirm: bool) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let queued: Vec<Vec<u8>> = peer.queue.drain(..).collect();
        if queued.is_empty() && confirm {
            self.send_control(now, peer_id, wire::TYPE_DATA, &[]);
        }
        for packet in queued {
            self.send_control(now, peer_id, wire::TYPE_DATA, &packet);
        }
        if confirm {
            self.send_probe(now, peer_id);
        }
    }
}

/// A fresh non-zero local index not in use, with the tunnel's `prefix` on top and below it
/// the low bits of a full-period LCG seeded at random (they cycle through every value).
fn allocate_index(
    by_index: &mut FxHashMap<u32, NodeId>,
    state: &mut u32,
    prefix: u8,
    peer: NodeId,
) -> u32 {
    let low = (1u32 << super::INDEX_PREFIX_SHIFT) - 1;
    loop {
        *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let index = (u32::from(prefix) << super::INDEX_PREFIX_SHIFT) | (*state & low);
        if index != 0 && !by_index.contains_key(&index) {
            by_index.insert(index, peer);
            return index;
        }
    }
}

fn increment(bytes: &mut [u8]) {
    for b in bytes.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_carry_the_prefix_and_never_repeat_while_in_use() {
        let peer = NodeId::from_bytes([1, 2, 3, 4, 5]).unwrap();
        for prefix in [0u8, 1, 0x7f, 0xff] {
            let (mut by_index, mut state) = (FxHashMap::default(), 0x1234_5678);
            for _ in 0..10_000 {
                let index = allocate_index(&mut by_index, &mut state, prefix, peer);
                assert_eq!(super::super::index_prefix(index), prefix);
                assert_ne!(index, 0);
            }
            assert_eq!(by_index.len(), 10_000, "every index distinct");
        }
    }
}

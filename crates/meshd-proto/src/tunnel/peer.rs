//! Per-peer state inside a [`super::Tunnel`]: sessions, the pending handshake, endpoints,
//! queued packets and the numbers `meshd peers` shows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::paths::{self, FinishedScan, PathScan, ScanReport};
use crate::NodeId;
use crate::handshake::{Initiation, MacKeys, TIMESTAMP_LEN};
use crate::rate::TokenBucket;
use crate::session::Session;
use crate::wire::COOKIE_LEN;

/// Packets held per peer while its handshake runs; more are dropped and counted.
pub const MAX_QUEUED: usize = 128;
/// Peer-reflexive candidates kept per peer.
pub const MAX_DISCOVERED: usize = 4;

#[derive(Debug)]
pub(crate) struct Pending {
    pub initiation: Initiation,
    pub local_index: u32,
    pub sent_at: Instant,
    pub started_at: Instant,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub node_id: NodeId,
    pub static_public: [u8; 32],
    pub macs: MacKeys,
    /// Endpoints from the config, tried in order until one answers.
    pub candidates: Vec<SocketAddr>,
    /// Where we send: where authenticated traffic last came from, or the fastest path a
    /// scan found (see [`super::paths`]).
    pub endpoint: Option<SocketAddr>,
    /// When traffic last came from `endpoint`.
    pub endpoint_heard: Option<Instant>,
    /// When we first sent to `endpoint` without hearing from it since.
    pub direct_unanswered_since: Option<Instant>,
    /// Addresses authenticated traffic came from that the config did not list (the peer's
    /// NAT mapping towards us: a peer-reflexive candidate), newest last.
    pub discovered: Vec<SocketAddr>,
    /// The relay the peer's traffic last came through.
    pub relay: Option<SocketAddr>,
    /// The way traffic went at the last timer tick, and since when.
    pub last_via: Option<super::Via>,
    pub via_since: Option<Instant>,
    /// The direct path in use followed a relayed one (or a handshake through a relay): a
    /// hole punched through the NATs between us.
    pub punched: bool,
    /// The current session's handshake came through a relay.
    pub met_via_relay: bool,
    /// The config marks the peer as a relay for other members.
    pub is_relay: bool,
    /// The peer is a gateway of a failover route: probed often, kept in session.
    pub is_gateway: bool,
    /// Since when the peer has been alive as a gateway, without a gap.
    pub gateway_up_since: Option<Instant>,
    /// What the peer may still have relayed through us (when we relay).
    pub relay_tokens: Option<TokenBucket>,
    /// Addresses the last scan measured slower than `endpoint`.
    pub slower: Vec<SocketAddr>,
    pub scan: Option<PathScan>,
    /// When the next periodic scan is due (`None`: at the next tick with a session).
    pub next_scan: Option<Instant>,
    /// What the last finished scan measured, for the status.
    pub last_scan: Option<FinishedScan>,
    pub pending: Option<Pending>,
    pub cookie: Option<([u8; COOKIE_LEN], Instant)>,
    /// The session we send on.
    pub current: Option<Session>,
    /// The session before it: still accepted while in-flight packets drain.
    pub previous: Option<Session>,
    /// A session we answered as responder, confirmed by the first packet the initiator sends.
    pub next: Option<Session>,
    pub newest_timestamp: [u8; TIMESTAMP_LEN],
    pub queue: VecDeque<Vec<u8>>,
    pub last_sent: Option<Instant>,
    pub last_received: Option<Instant>,
    /// When we first sent on the current session without hearing back since: a peer that
    /// restarted has lost its keys and silently drops everything we send.
    pub unanswered_since: Option<Instant>,
    pub last_handshake: Option<Instant>,
    pub last_probe: Option<Instant>,
    pub outstanding_probe: Option<(u64, Instant)>,
    pub rtt: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Datagrams (data and keepalives) received from and sent to the peer.
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub handshakes: u64,
    /// Times a path scan moved the endpoint.
    pub path_changes: u64,
}

impl Peer {
    pub fn new(node_id: NodeId, static_public: [u8; 32], candidates: Vec<SocketAddr>) -> Self {
        Self {
            node_id,
            static_public,
            macs: MacKeys::for_static(&static_public),
            candidates,
            endpoint: None,
            endpoint_heard: None,
            direct_unanswered_since: None,
            discovered: Vec::new(),
            relay: None,
            last_via: None,
            via_since: None,
            punched: false,
            met_via_relay: false,
            is_relay: false,
            is_gateway: false,
            gateway_up_since: None,
            relay_tokens: None,
            slower: Vec::new(),
            scan: None,
            next_scan: None,
            last_scan: None,
            pending: None,
            cookie: None,
            current: None,
            previous: None,
            next: None,
            newest_timestamp: [0; TIMESTAMP_LEN],
            queue: VecDeque::new(),
            last_sent: None,
            last_received: None,
            unanswered_since: None,
            last_handshake: None,
            last_probe: None,
            outstanding_probe: None,
            rtt: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            handshakes: 0,
            path_changes: 0,
        }
    }

    /// Where to send a handshake initiation: the confirmed endpoint, else every candidate;
    /// a `retry` goes to the endpoint and the candidates, in case the endpoint died.
    pub fn handshake_destinations(&self, retry: bool) -> Vec<SocketAddr> {
        match self.endpoint {
            Some(e) if !retry => vec![e],
            endpoint => paths::endpoint_then_candidates(endpoint, &self.known(), 4),
        }
    }

    /// The config's candidates, then the discovered ones.
    pub fn known(&self) -> Vec<SocketAddr> {
        let mut out = self.candidates.clone();
        for d in &self.discovered {
            if !out.contains(d) {
                out.push(*d);
            }
        }
        out
    }

    /// Authenticated traffic came straight from `from`, which the config does not list:
    /// remember it as a candidate (at most [`MAX_DISCOVERED`], the newest kept).
    pub fn discover(&mut self, from: SocketAddr) {
        if self.candidates.contains(&from) || self.discovered.contains(&from) {
            return;
        }
        if self.discovered.len() >= MAX_DISCOVERED {
            self.discovered.remove(0);
        }
        self.discovered.push(from);
    }

    /// Authenticated traffic came straight from `from`: the endpoint follows it (a peer
    /// that moved, a NAT that rebound), except back to a path measured slower.
    pub fn roam(&mut self, from: SocketAddr, now: Instant) {
        self.discover(from);
        if self.endpoint != Some(from) {
            if !paths::may_roam(from, &self.slower, self.endpoint_heard, now) {
                return;
            }
            self.endpoint = Some(from);
        }
        self.direct_unanswered_since = None;
        self.endpoint_heard = Some(now);
    }

    pub fn usable_session(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| !s.is_expired(now))
    }

    /// Which slot holds the session with this local index.
    pub fn slot_of(&self, index: u32) -> Option<Slot> {
        let is = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.local_index() == index);
        if is(&self.current) {
            Some(Slot::Current)
        } else if is(&self.next) {
            Some(Slot::Next)
        } else if is(&self.previous) {
            Some(Slot::Previous)
        } else {
            None
        }
    }

    pub fn session(&self, slot: Slot) -> Option<&Session> {
        match slot {
            Slot::Current => self.current.as_ref(),
            Slot::Next => self.next.as_ref(),
            Slot::Previous => self.previous.as_ref(),
        }
    }

    pub fn session_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        match slot {
            Slot::Current => self.current.as_mut(),
            Slot::Next => self.next.as_mut(),
            Slot::Previous => self.previous.as_mut(),
        }
    }

    /// Drops every session and the pending handshake, freeing their indices.
    pub fn clear(&mut self, by_index: &mut FxHashMap<u32, NodeId>) {
        for s in [self.current.take(), self.previous.take(), self.next.take()] {
            retire(by_index, s);
        }
        if let Some(p) = self.pending.take() {
            by_index.remove(&p.local_index);
        }
        self.queue.clear();
        self.outstanding_probe = None;
        self.scan = None;
    }

    pub fn status(&self, now: Instant) -> PeerStatus {
        PeerStatus {
            node_id: self.node_id,
            endpoint: self.endpoint,
            candidates: self.known(),
            via: None,
            via_age: self.via_since.map(|t| now.saturating_duration_since(t)),
            punched: self.punched,
            has_session: self.usable_session(now),
            rtt: self.rtt,
            last_handshake: self
                .last_handshake
                .map(|t| now.saturating_duration_since(t)),
            last_received: self.last_received.map(|t| now.saturating_duration_since(t)),
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
            handshakes: self.handshakes,
            path_changes: self.path_changes,
            last_scan: self.last_scan.as_ref().map(|s| s.report(now)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Next,
    Previous,
}

pub(crate) fn retire(by_index: &mut FxHashMap<u32, NodeId>, session: Option<Session>) {
    if let Some(s) = session {
        by_index.remove(&s.local_index());
    }
}

/// What `meshd peers` shows about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub node_id: NodeId,
    /// Confirmed endpoint (authenticated traffic came from it).
    pub endpoint: Option<SocketAddr>,
    /// The config's candidates, then those discovered from traffic.
    pub candidates: Vec<SocketAddr>,
    /// How traffic to the peer goes now.
    pub via: Option<super::Via>,
    /// How long it has gone that way (as of the last timer tick).
    pub via_age: Option<Duration>,
    /// The direct path was punched: found while the peer was reached through a relay.
    pub punched: bool,
    pub has_session: bool,
    pub rtt: Option<Duration>,
    /// Time since the last completed handshake.
    pub last_handshake: Option<Duration>,
    pub last_received: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Completed handshakes, initial and rekeys.
    pub handshakes: u64,
    /// Times a path scan moved the endpoint to a faster address.
    pub path_changes: u64,
    /// What the last path scan measured.
    pub last_scan: Option<ScanReport>,
}

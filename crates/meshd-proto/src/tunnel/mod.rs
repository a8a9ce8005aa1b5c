//! One node's state machine for one network: handshakes, sessions, routing, timers.
//!
//! Call order (sans-IO, as quinn-proto's `Connection`):
//! 1. [`Tunnel::new`], then [`Tunnel::apply_config`] with every verified config revision.
//! 2. Inside → outside: [`Tunnel::encapsulate`] an IP packet read from the TUN into a buffer
//!    and send it to the returned address; or it is queued while a handshake runs.
//! 3. Outside → inside: [`Tunnel::handle_outside`] each UDP datagram; a returned
//!    [`Incoming::Packet`] goes to the TUN, already source-checked.
//!
//! Steps 2 and 3 also come in parts, so that an engine running several threads on one tunnel
//! does the cipher work without holding it: [`Tunnel::prepare_in_place`] then
//! [`Seal::seal`](crate::session::Seal::seal); [`Tunnel::begin_outside`], then
//! [`DataJob::open`], then [`Tunnel::finish_data`].
//! 4. Call [`Tunnel::handle_timeout`] when [`Tunnel::poll_timeout`] is due.
//! 5. After each call, drain [`Tunnel::poll_transmit`] (handshakes, keepalives, probes, queued
//!    packets) and [`Tunnel::poll_event`].
//!
//! Nothing here blocks, allocates per data packet on the fast path, or reads a clock.

mod paths;
mod peer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use zeroize::Zeroizing;

use paths::PathScan;
pub use paths::{PathTime, ScanReport};
pub use peer::{MAX_QUEUED, PeerStatus};
use peer::{Peer, Pending, Slot, retire};

use crate::config::NetworkConfig;
use crate::handshake::{self, CookieSecret, InitiationParams, MacKeys};
use crate::routes::RouteTable;
use crate::session::{self, Open, Seal, Session, SessionError};
use crate::wire::{self, Message};
use crate::{Identity, NetworkId, NodeId, ip};

/// How often [`Tunnel::handle_timeout`] wants to run.
pub const TIMER_TICK: Duration = Duration::from_millis(100);
/// Interval of the authenticated RTT probes on an established session; they double as
/// keepalives that hold NAT mappings open.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
const PROBE_REQUEST: u8 = 1;
const PROBE_REPLY: u8 = 2;
const PROBE_LEN: usize = 9;

/// Tunables; the defaults suit a node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Above this many initiations per second the responder demands cookies (mac2).
    pub cookie_threshold_per_second: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cookie_threshold_per_second: 1000,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    /// The peer it is for, when known (a cookie reply goes to an address only).
    pub peer: Option<NodeId>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SessionEstablished(NodeId),
    SessionExpired(NodeId),
    /// The peer left the config (deauthorized or deleted); its sessions are gone.
    PeerRemoved(NodeId),
    /// No handshake answer for [`session::REKEY_ATTEMPT_TIME`]; queued packets were dropped.
    HandshakeGaveUp(NodeId),
}

/// What came in from the outside.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A source-checked IP packet for the TUN (borrowed from the datagram buffer).
    Packet { peer: NodeId, packet: &'a [u8] },
    /// Protocol traffic (handshake, keepalive, probe); check `poll_transmit`.
    Handled,
}

/// Result of [`Tunnel::prepare_in_place`].
#[derive(Debug)]
pub enum Prepared {
    /// Counter taken and header written: `seal.seal(buf)` seals the packet where it lies,
    /// and `buf[..seal.message_len()]` is then the datagram for `destination`.
    Ready {
        peer: NodeId,
        destination: SocketAddr,
        seal: Seal,
    },
    /// Held until the handshake with `peer` completes.
    Queued { peer: NodeId },
}

/// Result of [`Tunnel::begin_outside`].
#[derive(Debug)]
pub enum Begun<'a> {
    /// A data message that passed the session's checks: [`DataJob::open`] it (no access to
    /// the tunnel needed), then hand the result to [`Tunnel::finish_data`].
    Data(DataJob),
    /// Any other message, handled in full as by [`Tunnel::handle_outside`].
    Handled(Incoming<'a>),
}

/// A data message waiting to be opened: see [`Begun::Data`].
#[derive(Debug)]
pub struct DataJob {
    open: Open,
    index: u32,
}

impl DataJob {
    /// Verifies and decrypts the datagram [`Tunnel::begin_outside`] was given, in place;
    /// returns the plaintext length.
    pub fn open(&self, datagram: &mut [u8]) -> Result<usize, SessionError> {
        self.open.open(datagram)
    }
}

/// Result of [`Tunnel::encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// `out[..len]` is ready to send to `destination`.
    Ready {
        peer: NodeId,
        destination: SocketAddr,
        len: usize,
    },
    /// Held until the handshake with `peer` completes.
    Queued { peer: NodeId },
}

macro_rules! drop_reasons {
    ($($name:ident => $text:literal,)*) => {
        /// Why a packet was dropped: each has a counter (see [`TunnelStats`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason { $($name,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];

            /// Stable snake-case name for metrics and `--json`.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$name => $text,)* }
            }
        }
    };
}

drop_reasons! {
    Malformed => "malformed",
    WrongNetwork => "wrong_network",
    BadMac1 => "bad_mac1",
    CookieSent => "cookie_sent",
    HandshakeFailed => "handshake_failed",
    UnknownPeer => "unknown_peer",
    StaleInitiation => "stale_initiation",
    UnknownIndex => "unknown_index",
    Replayed => "replayed",
    Unauthentic => "unauthentic",
    SessionExpired => "session_expired",
    SpoofedSource => "spoofed_source",
    NotIp => "not_ip",
    NoRoute => "no_route",
    // The mesh is routed, not a LAN: multicast and broadcast (the kernel's own MLD reports
    // and router solicitations on the TUN, mostly) have nobody to go to.
    Multicast => "multicast",
    OwnDestination => "own_destination",
    NoEndpoint => "no_endpoint",
    QueueFull => "queue_full",
    PacketTooLarge => "packet_too_large",
    RelayNotForUs => "relay_not_for_us",
    BadProbe => "bad_probe",
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters, indexed by [`DropReason`].
#[derive(Debug, Clone, Default)]
pub struct TunnelStats {
    drops: FxHashMap<DropReason, u64>,
}

impl TunnelStats {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(&reason).copied().unwrap_or(0)
    }

    pub fn total_dropped(&self) -> u64 {
        self.drops.values().sum()
    }

    fn count(&mut self, reason: DropReason) {
        *self.drops.entry(reason).or_default() += 1;
    }
}

/// Maps `now` to wall-clock time for handshake timestamps, without reading a clock.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    unix_at_base: Duration,
}

impl Clock {
    fn unix(&self, now: Instant) -> Duration {
        self.unix_at_base + now.saturating_duration_since(self.base)
    }
}

#[derive(Debug)]
struct LoadMeter {
    window_start: Instant,
    count: u32,
}

pub struct Tunnel {
    node_id: NodeId,
    network_id: NetworkId,
    static_secret: Zeroizing<[u8; 32]>,
    own_macs: MacKeys,
    clock: Clock,
    settings: Settings,
    routes: RouteTable,
    peers: FxHashMap<NodeId, Peer>,
    /// Initiator static key → node, for the responder's authorization check.
    by_static: FxHashMap<[u8; 32], NodeId>,
    /// Local session/handshake index → node.
    by_index: FxHashMap<u32, NodeId>,
    index_state: u32,
    last_timestamp: [u8; handshake::TIMESTAMP_LEN],
    cookie_secret: CookieSecret,
    cookie_secret_born: Instant,
    load: LoadMeter,
    forced_load: bool,
    probe_seq: u64,
    last_tick: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: TunnelStats,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("node_id", &self.node_id)
            .field("network_id", &self.network_id)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// A tunnel with no peers. `unix_now` is the wall-clock time at `now` (for handshake
    /// timestamps, which must grow across restarts).
    pub fn new(
        identity: &Identity,
        network_id: NetworkId,
        now: Instant,
        unix_now: Duration,
    ) -> Self {
        let mut seed = [0u8; 4];
        getrandom::fill(&mut seed).expect("the OS random source works");
        Self {
            node_id: identity.node_id(),
            network_id,
            static_secret: Zeroizing::new(*identity.x25519_secret()),
            own_macs: MacKeys::for_static(&identity.public().x25519),
            clock: Clock {
                base: now,
                unix_at_base: unix_now,
            },
            settings: Settings::default(),
            routes: RouteTable::new(network_id, false, false),
            peers: FxHashMap::default(),
            by_static: FxHashMap::default(),
            by_index: FxHashMap::default(),
            index_state: u32::from_le_bytes(seed),
            last_timestamp: [0; handshake::TIMESTAMP_LEN],
            cookie_secret: CookieSecret::random(),
            cookie_secret_born: now,
            load: LoadMeter {
                window_start: now,
                count: 0,
            },
            forced_load: false,
            probe_seq: 0,
            last_tick: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TunnelStats::default(),
        }
    }

    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Makes the responder demand cookies regardless of load (tests, and an engine that sees
    /// its socket queue overflowing).
    pub fn set_under_load(&mut self, under_load: bool) {
        self.forced_load = under_load;
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn network_id(&self) -> NetworkId {
        self.network_id
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn stats(&self) -> &TunnelStats {
        &self.stats
    }

    pub fn peer_status(&self, node: NodeId, now: Instant) -> Option<PeerStatus> {
        self.peers.get(&node).map(|p| p.status(now))
    }

    /// Puts every established session on the null cipher: benchmarks only (feature
    /// `null-crypto`), so that they show the packet path's cost apart from the cipher's.
    #[cfg(feature = "null-crypto")]
    pub fn disable_crypto(&mut self) {
        for peer in self.peers.values_mut() {
            let sessions = [&mut peer.current, &mut peer.previous, &mut peer.next];
            for session in sessions.into_iter().flatten() {
                session.disable_crypto();
            }
        }
    }

    /// Whether `index` is one of this tunnel's live local indices (a session or a pending
    /// handshake). An engine running several networks on one UDP socket uses it to hand a
    /// response, cookie reply or data message to the tunnel that issued its receiver index.
    pub fn owns_index(&self, index: u32) -> bool {
        self.by_index.contains_key(&index)
    }

    /// Every peer's status, sorted by node id.
    pub fn peer_statuses(&self, now: Instant) -> Vec<PeerStatus> {
        let mut v: Vec<PeerStatus> = self.peers.values().map(|p| p.status(now)).collect();
        v.sort_by_key(|s| s.node_id);
        v
    }

    /// Applies a verified config: rebuilds the route table, adds new members as peers, tears
    /// down members that left (deauthorized), and refreshes endpoints. If this node is not in
    /// the config it has no peers at all.
    pub fn apply_config(&mut self, cfg: &NetworkConfig) {
        self.routes = RouteTable::from_config(cfg);
        let authorized_self = cfg.member(self.node_id).is_some();
        let wanted: FxHashMap<NodeId, &crate::MemberConfig> = cfg
            .members
            .iter()
            .filter(|m| authorized_self && m.node_id != self.node_id)
            .map(|m| (m.node_id, m))
            .collect();
        let gone: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                wanted
                    .get(id)
                    .is_none_or(|m| m.identity.x25519 != p.static_public)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(mut p) = self.peers.remove(&id) {
                p.clear(&mut self.by_index);
                self.by_static.remove(&p.static_public);
                self.events.push_back(Event::PeerRemoved(id));
            }
        }
        for (id, m) in wanted {
            match self.peers.get_mut(&id) {
                Some(p) => p.candidates.clone_from(&m.endpoints),
                None => {
                    self.by_static.insert(m.identity.x25519, id);
                    self.peers
                        .insert(id, Peer::new(id, m.identity.x25519, m.endpoints.clone()));
                }
            }
        }
    }

    /// Starts a handshake with every peer that has no session and none under way: a node
    /// coming up (or back after a restart, when its peers still hold sessions it lost) is
    /// reachable at once instead of after its peers notice the silence.
    pub fn connect_all(&mut self, now: Instant) {
        let idle: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| !p.usable_session(now) && p.pending.is_none())
            .map(|p| p.node_id)
            .collect();
        for id in idle {
            self.initiate(now, id);
        }
    }

    /// Routes an IP packet read from the TUN: seals it into `out` for the peer owning its
    /// destination, or queues it while a handshake runs.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<Encapsulated, DropReason> {
        let result = self
            .route(packet)
            .and_then(|peer| self.encapsulate_to(now, peer, packet, out));
        result.inspect_err(|r| self.stats.count(*r))
    }

    /// [`Tunnel::encapsulate`] without the copy: the packet already sits in
    /// `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len]` (an engine reads the TUN at that offset)
    /// and `buf` has [`wire::TAG_LEN`] spare bytes after it. Seals it there, so `buf[..len]`
    /// of the returned [`Encapsulated::Ready`] is the datagram; a packet queued behind a
    /// handshake is copied into the queue.
    pub fn encapsulate_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Encapsulated, DropReason> {
        match self.prepare_in_place(now, buf, len)? {
            Prepared::Queued { peer } => Ok(Encapsulated::Queued { peer }),
            Prepared::Ready {
                peer,
                destination,
                seal,
            } => {
                let len = sealed(seal, buf).inspect_err(|r| self.stats.count(*r))?;
                Ok(Encapsulated::Ready {
                    peer,
                    destination,
                    len,
                })
            }
        }
    }

    /// The first part of [`Tunnel::encapsulate_in_place`]: routes the packet, and either
    /// queues it or takes a counter on the peer's session and writes the header; the
    /// returned [`Seal`] does the cipher work. Drops are counted here.
    pub fn prepare_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Prepared, DropReason> {
        let result = if buf.len() < len.saturating_add(wire::DATA_OVERHEAD) {
            Err(DropReason::PacketTooLarge)
        } else {
            let packet = wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len;
            self.route(&buf[packet.clone()]).and_then(|peer| {
                if self.queues_for(now, peer)? {
                    self.queue(now, peer, &buf[packet])?;
                    Ok(Prepared::Queued { peer })
                } else {
                    let (destination, seal) = self.reserve(now, peer, buf, len)?;
                    Ok(Prepared::Ready {
                        peer,
                        destination,
                        seal,
                    })
                }
            })
        };
        result.inspect_err(|r| self.stats.count(*r))
    }

    /// The peer owning a packet's destination.
    fn route(&self, packet: &[u8]) -> Result<NodeId, DropReason> {
        match ip::addresses(packet) {
            None => Err(DropReason::NotIp),
            Some((_, dst)) if is_multicast_or_broadcast(dst) => Err(DropReason::Multicast),
            Some((_, dst)) => match self.routes.lookup(dst) {
                None => Err(DropReason::NoRoute),
                Some(peer) if peer == self.node_id => Err(DropReason::OwnDestination),
                Some(peer) => Ok(peer),
            },
        }
    }

    /// Seals `packet` for `peer` into `out` (which needs [`wire::DATA_OVERHEAD`] spare bytes).
    pub fn encapsulate_to(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<Encapsulated, DropReason> {
        let len = packet.len();
        if out.len() < len + wire::DATA_OVERHEAD {
            return Err(DropReason::PacketTooLarge);
        }
        if self.queues_for(now, peer_id)? {
            return self.queue(now, peer_id, packet);
        }
        out[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len].copy_from_slice(packet);
        let (destination, seal) = self.reserve(now, peer_id, out, len)?;
        let len = sealed(seal, out)?;
        Ok(Encapsulated::Ready {
            peer: peer_id,
            destination,
            len,
        })
    }

    /// Whether packets for `peer_id` wait for a handshake (no usable session).
    fn queues_for(&self, now: Instant, peer_id: NodeId) -> Result<bool, DropReason> {
        let peer = self.peers.get(&peer_id).ok_or(DropReason::NoRoute)?;
        Ok(!peer.usable_session(now))
    }

    /// Holds `packet` until the handshake with `peer_id` completes, starting one if none runs.
    fn queue(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        packet: &[u8],
    ) -> Result<Encapsulated, DropReason> {
        let peer = self.peers.get_mut(&peer_id).ok_or(DropReason::NoRoute)?;
        if peer.queue.len() >= MAX_QUEUED {
            return Err(DropReason::QueueFull);
        }
        peer.queue.push_back(packet.to_vec());
        if peer.pending.is_none() {
            self.initiate(now, peer_id);
        }
        Ok(Encapsulated::Queued { peer: peer_id })
    }

    /// Takes a counter on the current session for `buf[DATA_HEADER_LEN..DATA_HEADER_LEN +
    /// len]` and writes its header; the returned [`Seal`] seals it in place.
    fn reserve(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<(SocketAddr, Seal), DropReason> {
        let peer = self.peers.get_mut(&peer_id).ok_or(DropReason::NoRoute)?;
        let destination = peer.destination().ok_or(DropReason::NoEndpoint)?;
        let session = peer.current.as_mut().ok_or(DropReason::SessionExpired)?;
        let seal = session
            .reserve_seal(now, wire::TYPE_DATA, buf, len)
            .map_err(|_| DropReason::SessionExpired)?;
        let rekey = wants_rekey_on_send(session, now) && peer.pending.is_none();
        peer.tx_bytes += seal.message_len() as u64;
        peer.last_sent = Some(now);
        peer.unanswered_since.get_or_insert(now);
        if rekey {
            self.initiate(now, peer_id);
        }
        Ok((destination, seal))
    }

    /// Convenience for callers without their own buffers (the simulator, control traffic):
    /// routes and seals `packet` and queues the datagram for [`Tunnel::poll_transmit`].
    pub fn send(&mut self, now: Instant, packet: &[u8]) -> Result<(), DropReason> {
        let mut out = vec![0u8; packet.len() + wire::DATA_OVERHEAD];
        if let Encapsulated::Ready {
            peer,
            destination,
            len,
        } = self.encapsulate(now, packet, &mut out)?
        {
            out.truncate(len);
            self.transmits.push_back(Transmit {
                destination,
                peer: Some(peer),
                bytes: out,
            });
        }
        Ok(())
    }

    /// Handles one UDP datagram. Decrypts in place: a returned packet borrows `datagram`.
    pub fn handle_outside<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Incoming<'a>, DropReason> {
        let result = self.handle_message(now, from, datagram, false);
        result.inspect_err(|r| self.stats.count(*r))
    }

    /// The first part of [`Tunnel::handle_outside`]: a data message (not relayed) is checked
    /// against its session and returned as a [`DataJob`] to open; anything else is handled in
    /// full. Drops are counted here.
    pub fn begin_outside<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Result<Begun<'a>, DropReason> {
        if datagram.first() == Some(&wire::TYPE_DATA)
            && let Ok(Message::Data(d)) = wire::parse(datagram)
        {
            let (index, counter) = (d.receiver_index, d.counter);
            let job = self.session_of(index).and_then(|(peer_id, slot)| {
                let session = self.session(peer_id, slot)?;
                let open = session
                    .check_open(now, datagram, counter)
                    .map_err(session_drop)?;
                Ok(DataJob { open, index })
            });
            return job.map(Begun::Data).inspect_err(|r| self.stats.count(*r));
        }
        self.handle_outside(now, from, datagram).map(Begun::Handled)
    }

    /// The last part of [`Tunnel::handle_outside`] for a [`Begun::Data`]: `opened` is what
    /// [`DataJob::open`] returned for `datagram`. Records the counter (a copy accepted in the
    /// meantime makes this one a replay) and goes on as for any data message. Drops are
    /// counted here.
    pub fn finish_data<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        job: DataJob,
        opened: Result<usize, SessionError>,
    ) -> Result<Incoming<'a>, DropReason> {
        let result = opened.map_err(session_drop).and_then(|len| {
            // The session may have been retired while the message was opened.
            let (peer_id, slot) = self.session_of(job.index)?;
            self.session_mut(peer_id, slot)?
                .accept(job.open.counter())
                .map_err(session_drop)?;
            self.opened(now, from, datagram, peer_id, slot, len, false)
        });
        result.inspect_err(|r| self.stats.count(*r))
    }

    fn handle_message<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        relayed: bool,
    ) -> Result<Incoming<'a>, DropReason> {
        let msg = wire::parse(datagram).map_err(|_| DropReason::Malformed)?;
        match msg {
            Message::HandshakeInit(init) => self.on_initiation(now, from, &init, relayed),
            Message::HandshakeResponse(resp) => self.on_response(now, from, &resp, relayed),
            Message::CookieReply(reply) => self.on_cookie_reply(now, &reply),
            Message::Data(d) | Message::Probe(d) => {
                let (index, counter) = (d.receiver_index, d.counter);
                self.on_data(now, from, datagram, index, counter, relayed)
            }
            Message::Relay(r) => {
                if r.destination != self.node_id {
                    return Err(DropReason::RelayNotForUs);
                }
                self.handle_message(now, from, &mut datagram[wire::RELAY_HEADER_LEN..], true)
            }
        }
    }

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

    fn on_initiation<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        init: &wire::HandshakeInit<'_>,
        relayed: bool,
    ) -> Result<Incoming<'a>, DropReason> {
        if !handshake::mac_eq(&self.own_macs.mac1(init.before_mac1), init.mac1) {
            return Err(DropReason::BadMac1);
        }
        if self.under_load(now)
            && !self
                .cookie_secret
                .mac2_valid(from, init.before_mac2, init.mac2)
        {
            let reply =
                self.cookie_secret
                    .reply(&self.own_macs, from, init.sender_index, init.mac1);
            self.transmits.push_back(Transmit {
                destination: from,
                peer: None,
                bytes: reply.to_vec(),
            });
            return Err(DropReason::CookieSent);
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
        let local_index = allocate_index(&mut self.by_index, &mut self.index_state, peer_id);
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
        if !relayed {
            peer.roam(from, now);
        }
        peer.last_handshake = Some(now);
        peer.handshakes += 1;
        self.transmits.push_back(Transmit {
            destination: from,
            peer: Some(peer_id),
            bytes: out.to_vec(),
        });
        Ok(Incoming::Handled)
    }

    fn on_response<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        resp: &wire::HandshakeResponse<'_>,
        relayed: bool,
    ) -> Result<Incoming<'a>, DropReason> {
        if !handshake::mac_eq(&self.own_macs.mac1(resp.before_mac1), resp.mac1) {
            return Err(DropReason::BadMac1);
        }
        let peer_id = *self
            .by_index
            .get(&resp.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
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
        if !relayed {
            peer.roam(from, now);
        }
        peer.last_handshake = Some(now);
        peer.handshakes += 1;
        peer.last_received = Some(now);
        peer.unanswered_since = None;
        self.events.push_back(Event::SessionEstablished(peer_id));
        self.flush_queue(now, peer_id, true);
        self.start_path_scan(now, peer_id);
        Ok(Incoming::Handled)
    }

    fn on_cookie_reply<'a>(
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

    fn on_data<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        index: u32,
        counter: u64,
        relayed: bool,
    ) -> Result<Incoming<'a>, DropReason> {
        let (peer_id, slot) = self.session_of(index)?;
        let len = self
            .session_mut(peer_id, slot)?
            .open_in_place(now, datagram, counter)
            .map_err(session_drop)?;
        self.opened(now, from, datagram, peer_id, slot, len, relayed)
    }

    /// The peer and slot of the session with local index `index`.
    fn session_of(&self, index: u32) -> Result<(NodeId, Slot), DropReason> {
        let peer_id = *self.by_index.get(&index).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get(&peer_id).ok_or(DropReason::UnknownIndex)?;
        let slot = peer.slot_of(index).ok_or(DropReason::UnknownIndex)?;
        Ok((peer_id, slot))
    }

    fn session(&self, peer_id: NodeId, slot: Slot) -> Result<&Session, DropReason> {
        self.peers
            .get(&peer_id)
            .and_then(|p| p.session(slot))
            .ok_or(DropReason::UnknownIndex)
    }

    fn session_mut(&mut self, peer_id: NodeId, slot: Slot) -> Result<&mut Session, DropReason> {
        self.peers
            .get_mut(&peer_id)
            .and_then(|p| p.session_mut(slot))
            .ok_or(DropReason::UnknownIndex)
    }

    /// A data or probe message that opened on `peer_id`'s session in `slot`: confirms a new
    /// session, updates the peer, and hands out the packet if it is one and its source is
    /// the peer's.
    #[allow(clippy::too_many_arguments)]
    fn opened<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a mut [u8],
        peer_id: NodeId,
        slot: Slot,
        len: usize,
        relayed: bool,
    ) -> Result<Incoming<'a>, DropReason> {
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(DropReason::UnknownIndex)?;
        let confirmed = slot == Slot::Next;
        if confirmed {
            // The initiator used the session we answered: it is confirmed, make it current.
            let next = peer.next.take();
            let old = std::mem::replace(&mut peer.current, next);
            retire(
                &mut self.by_index,
                std::mem::replace(&mut peer.previous, old),
            );
            self.events.push_back(Event::SessionEstablished(peer_id));
        }
        let peer = self
            .peers
            .get_mut(&peer_id)
            .ok_or(DropReason::UnknownIndex)?;
        let kind = datagram[0];
        let plaintext = &datagram[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + len];
        // A path probe measures one path; it must not move the endpoint onto it.
        let path_probe = kind == wire::TYPE_PROBE
            && matches!(
                plaintext.first(),
                Some(&paths::PATH_REQUEST | &paths::PATH_REPLY)
            );
        if !relayed && !path_probe {
            peer.roam(from, now);
        }
        peer.last_received = Some(now);
        peer.unanswered_since = None;
        peer.rx_bytes += datagram.len() as u64;
        if confirmed {
            self.flush_queue(now, peer_id, false);
            self.start_path_scan(now, peer_id);
        }
        if kind == wire::TYPE_PROBE {
            self.on_probe(now, from, peer_id, plaintext)?;
            return Ok(Incoming::Handled);
        }
        if plaintext.is_empty() {
            return Ok(Incoming::Handled); // keepalive
        }
        let (src, _) = ip::addresses(plaintext).ok_or(DropReason::NotIp)?;
        if !self.routes.accepts_source(peer_id, src) {
            return Err(DropReason::SpoofedSource);
        }
        Ok(Incoming::Packet {
            peer: peer_id,
            packet: plaintext,
        })
    }

    fn on_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        peer_id: NodeId,
        body: &[u8],
    ) -> Result<(), DropReason> {
        if body.len() != PROBE_LEN {
            return Err(DropReason::BadProbe);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..]);
        let id = u64::from_le_bytes(id);
        match body[0] {
            PROBE_REQUEST => {
                let reply = probe_body(PROBE_REPLY, id);
                self.send_control(now, peer_id, wire::TYPE_PROBE, &reply);
                Ok(())
            }
            // Answered on the path it came by, whatever our endpoint is.
            paths::PATH_REQUEST => {
                let reply = probe_body(paths::PATH_REPLY, id);
                self.send_control_to(now, peer_id, Some(from), wire::TYPE_PROBE, &reply);
                Ok(())
            }
            PROBE_REPLY => {
                let peer = self
                    .peers
                    .get_mut(&peer_id)
                    .ok_or(DropReason::UnknownIndex)?;
                match peer.outstanding_probe {
                    Some((sent_id, sent_at)) if sent_id == id => {
                        peer.rtt = Some(now.saturating_duration_since(sent_at));
                        peer.outstanding_probe = None;
                        Ok(())
                    }
                    _ => Err(DropReason::BadProbe),
                }
            }
            // A reply after its scan ended (a path slower than the scan waits) is no fault.
            paths::PATH_REPLY => {
                let scan = self.peers.get_mut(&peer_id).and_then(|p| p.scan.as_mut());
                if let Some(scan) = scan
                    && scan.answered(id, now)
                    && scan.is_done(now)
                {
                    self.finish_path_scan(now, peer_id);
                }
                Ok(())
            }
            _ => Err(DropReason::BadProbe),
        }
    }

    /// Starts a scan of every known address of `peer_id` (see [`paths`]), its first round
    /// now; [`Tunnel::handle_timeout`] sends the others.
    fn start_path_scan(&mut self, now: Instant, peer_id: NodeId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.next_scan = Some(now + paths::SCAN_INTERVAL);
        let destinations = paths::scan_destinations(peer.endpoint, &peer.candidates);
        if destinations.is_empty() {
            return;
        }
        let moved = peer.rx_bytes + peer.tx_bytes;
        peer.scan = Some(PathScan::new(now, destinations, moved));
        self.send_path_round(now, peer_id);
    }

    /// One path probe to each address `peer_id`'s scan covers.
    fn send_path_round(&mut self, now: Instant, peer_id: NodeId) {
        let Some(scan) = self.peers.get(&peer_id).and_then(|p| p.scan.as_ref()) else {
            return;
        };
        let destinations = scan.destinations.clone();
        let mut ids = Vec::with_capacity(destinations.len());
        for destination in destinations {
            self.probe_seq += 1;
            let id = self.probe_seq;
            ids.push(id);
            let body = probe_body(paths::PATH_REQUEST, id);
            self.send_control_to(now, peer_id, Some(destination), wire::TYPE_PROBE, &body);
        }
        if let Some(scan) = self.peers.get_mut(&peer_id).and_then(|p| p.scan.as_mut()) {
            scan.sent_round(now, &ids);
        }
    }

    /// Moves `peer_id` to the path its scan found fastest, unless traffic to the peer made
    /// the measurement unfair to the endpoint (see [`paths::LOADED`]).
    fn finish_path_scan(&mut self, now: Instant, peer_id: NodeId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(scan) = peer.scan.take() else {
            return;
        };
        let measured = scan.times();
        let times = paths::answered(&measured);
        let endpoint_answered = times.iter().any(|(a, _)| Some(*a) == peer.endpoint);
        let moved = (peer.rx_bytes + peer.tx_bytes).saturating_sub(scan.moved_before);
        let under_load = moved > paths::LOADED;
        peer.last_scan = Some(paths::FinishedScan {
            at: now,
            under_load,
            paths: measured,
        });
        if endpoint_answered && under_load {
            peer.endpoint_heard = Some(now);
            peer.next_scan = Some(now + paths::LOADED_RETRY);
            return;
        }
        if let Some(choice) = paths::choose(&times, peer.endpoint) {
            if peer.endpoint != Some(choice.endpoint) {
                peer.endpoint = Some(choice.endpoint);
                peer.path_changes += 1;
            }
            // Its reply just came back.
            peer.endpoint_heard = Some(now);
            peer.slower = choice.slower;
        }
    }

    /// Starts (or restarts) a handshake with `peer_id`.
    fn initiate(&mut self, now: Instant, peer_id: NodeId) {
        let unix = self.clock.unix(now);
        let mut timestamp = handshake::tai64n(unix);
        if timestamp <= self.last_timestamp {
            // Two initiations in one clock step: keep them strictly increasing.
            timestamp = self.last_timestamp;
            increment(&mut timestamp);
        }
        self.last_timestamp = timestamp;
        let local_index = allocate_index(&mut self.by_index, &mut self.index_state, peer_id);
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
        if destinations.is_empty() {
            self.stats.count(DropReason::NoEndpoint);
        }
        for destination in destinations {
            self.transmits.push_back(Transmit {
                destination,
                peer: Some(peer_id),
                bytes: out.to_vec(),
            });
        }
    }

    /// Sends what waited for a session; as initiator with nothing waiting, a keepalive
    /// confirms the session to the responder.
    fn flush_queue(&mut self, now: Instant, peer_id: NodeId, confirm: bool) {
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

    /// Seals a small message on the current session and queues it for transmission.
    fn send_control(&mut self, now: Instant, peer_id: NodeId, kind: u8, payload: &[u8]) {
        self.send_control_to(now, peer_id, None, kind, payload);
    }

    /// [`Tunnel::send_control`] to `to` instead of the peer's endpoint when given.
    fn send_control_to(
        &mut self,
        now: Instant,
        peer_id: NodeId,
        to: Option<SocketAddr>,
        kind: u8,
        payload: &[u8],
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(destination) = to.or_else(|| peer.destination()) else {
            self.stats.count(DropReason::NoEndpoint);
            return;
        };
        let Some(session) = peer.current.as_mut() else {
            return;
        };
        let mut out = vec![0u8; payload.len() + wire::DATA_OVERHEAD];
        out[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let Ok(n) = session.seal_in_place(now, kind, &mut out, payload.len()) else {
            self.stats.count(DropReason::SessionExpired);
            return;
        };
        let rekey = wants_rekey_on_send(session, now) && peer.pending.is_none();
        out.truncate(n);
        peer.tx_bytes += n as u64;
        peer.last_sent = Some(now);
        peer.unanswered_since.get_or_insert(now);
        self.transmits.push_back(Transmit {
            destination,
            peer: Some(peer_id),
            bytes: out,
        });
        if rekey {
            self.initiate(now, peer_id);
        }
    }

    fn send_probe(&mut self, now: Instant, peer_id: NodeId) {
        self.probe_seq += 1;
        let id = self.probe_seq;
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.outstanding_probe = Some((id, now));
            peer.last_probe = Some(now);
        }
        self.send_control(
            now,
            peer_id,
            wire::TYPE_PROBE,
            &probe_body(PROBE_REQUEST, id),
        );
    }

    /// When [`Tunnel::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Instant {
        self.last_tick + TIMER_TICK
    }

    /// Runs the timers: handshake retransmission and give-up, session expiry, keepalives,
    /// probes, cookie secret rotation.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_tick = now;
        if now.saturating_duration_since(self.cookie_secret_born)
            >= handshake::COOKIE_SECRET_LIFETIME
        {
            self.cookie_secret = CookieSecret::random();
            self.cookie_secret_born = now;
        }
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.peer_timers(now, id);
        }
    }

    fn peer_timers(&mut self, now: Instant, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut retransmit = false;
        if let Some(p) = &peer.pending {
            if now.saturating_duration_since(p.started_at) >= session::REKEY_ATTEMPT_TIME {
                let index = p.local_index;
                peer.pending = None;
                peer.queue.clear();
                self.by_index.remove(&index);
                self.events.push_back(Event::HandshakeGaveUp(id));
            } else if now.saturating_duration_since(p.sent_at) >= session::REKEY_TIMEOUT {
                retransmit = true;
            }
        }
        let expired = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.is_expired(now));
        if expired(&peer.previous) {
            retire(&mut self.by_index, peer.previous.take());
        }
        if expired(&peer.next) {
            retire(&mut self.by_index, peer.next.take());
        }
        if expired(&peer.current) {
            retire(&mut self.by_index, peer.current.take());
            self.events.push_back(Event::SessionExpired(id));
        }
        let has_session = peer.usable_session(now);
        let keepalive = has_session
            && peer.last_received.is_some_and(|r| {
                peer.last_sent.is_none_or(|s| s < r)
                    && now.saturating_duration_since(r) >= session::KEEPALIVE_TIMEOUT
            });
        let probe = has_session
            && peer
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_INTERVAL);
        // WireGuard's rule: sent but heard nothing for KEEPALIVE + REKEY_TIMEOUT means the
        // session is dead on the other side (it restarted): handshake again.
        let peer_silent = has_session
            && peer.pending.is_none()
            && peer.unanswered_since.is_some_and(|t| {
                now.saturating_duration_since(t)
                    >= session::KEEPALIVE_TIMEOUT + session::REKEY_TIMEOUT
            });
        if peer_silent {
            peer.unanswered_since = None;
        }
        if retransmit || peer_silent {
            self.initiate(now, id);
        }
        if keepalive {
            self.send_control(now, id, wire::TYPE_DATA, &[]);
        }
        if probe {
            self.send_probe(now, id);
        }
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        match &peer.scan {
            Some(scan) if scan.round_due(now) => self.send_path_round(now, id),
            Some(scan) if scan.is_done(now) => self.finish_path_scan(now, id),
            Some(_) => {}
            None => {
                let due = peer.next_scan.is_none_or(|t| now >= t);
                if due && peer.usable_session(now) {
                    self.start_path_scan(now, id);
                }
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// The plaintext of a probe message: its tag, then the probe id.
fn probe_body(tag: u8, id: u64) -> [u8; PROBE_LEN] {
    let mut body = [0u8; PROBE_LEN];
    body[0] = tag;
    body[1..].copy_from_slice(&id.to_le_bytes());
    body
}

fn is_multicast_or_broadcast(dst: std::net::IpAddr) -> bool {
    dst.is_multicast() || dst == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
}

/// Seals what [`Tunnel::reserve`] set up; the cipher refusing the buffer is the session's
/// drop, as when sealing was one call.
fn sealed(seal: Seal, buf: &mut [u8]) -> Result<usize, DropReason> {
    seal.seal(buf).map_err(|_| DropReason::SessionExpired)
}

/// The drop a session's refusal counts as.
fn session_drop(e: SessionError) -> DropReason {
    match e {
        SessionError::Replayed => DropReason::Replayed,
        SessionError::Expired => DropReason::SessionExpired,
        SessionError::Unauthentic | SessionError::BufferTooSmall => DropReason::Unauthentic,
    }
}

/// WireGuard's rule: the initiator rekeys when the session is old; the responder waits a
/// little longer so both sides do not start handshakes at once.
fn wants_rekey_on_send(s: &Session, now: Instant) -> bool {
    if s.is_initiator() {
        s.wants_rekey(now)
    } else {
        s.age(now)
            >= session::REKEY_AFTER_TIME + session::REKEY_TIMEOUT + session::KEEPALIVE_TIMEOUT
    }
}

/// A fresh non-zero local index not in use, from a full-period LCG seeded at random.
fn allocate_index(by_index: &mut FxHashMap<u32, NodeId>, state: &mut u32, peer: NodeId) -> u32 {
    loop {
        *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        if *state != 0 && !by_index.contains_key(state) {
            by_index.insert(*state, peer);
            return *state;
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
    use std::time::Duration;

    use super::{Begun, DropReason, Encapsulated, Incoming, Prepared};
    use crate::sim::{self, LinkModel, Simulation};
    use crate::wire::{self, Message};

    #[test]
    fn encapsulate_in_place_seals_where_the_packet_lies() {
        let mut sim = Simulation::new(2, LinkModel::default(), 11);
        let packet = sim::ipv4_packet(sim.nodes[0].ipv4, sim.nodes[1].ipv4, &[0x5a; 100]);
        let mut buf = vec![0u8; wire::DATA_OVERHEAD + packet.len()];
        buf[wire::DATA_HEADER_LEN..][..packet.len()].copy_from_slice(&packet);

        // No session yet: the packet is queued (copied) and a handshake starts.
        let now = sim.now;
        let queued = sim.nodes[0]
            .tunnel
            .encapsulate_in_place(now, &mut buf.clone(), packet.len());
        assert!(
            matches!(queued, Ok(Encapsulated::Queued { .. })),
            "{queued:?}"
        );
        while let Some(t) = sim.nodes[0].tunnel.poll_transmit() {
            sim.put_on_wire(sim::Datagram {
                from: sim.nodes[0].address,
                to: t.destination,
                bytes: t.bytes,
            });
        }
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.nodes[1].received.len(), 1, "the queued packet arrived");

        // With a session: sealed in place, and node 1 opens exactly the packet.
        let now = sim.now;
        let Ok(Encapsulated::Ready { len, .. }) =
            sim.nodes[0]
                .tunnel
                .encapsulate_in_place(now, &mut buf, packet.len())
        else {
            panic!("an established session seals");
        };
        assert_eq!(len, buf.len());
        let from = sim.nodes[0].address;
        match sim.nodes[1]
            .tunnel
            .handle_outside(now, from, &mut buf[..len])
        {
            Ok(Incoming::Packet { packet: opened, .. }) => assert_eq!(opened, &packet[..]),
            other => panic!("{other:?}"),
        }

        // Too little room for the tag, or a length past the buffer: counted, never a panic.
        let short = &mut vec![0u8; wire::DATA_OVERHEAD + packet.len() - 1];
        for (buf, len) in [(short, packet.len()), (&mut vec![0u8; 8], usize::MAX)] {
            let r = sim.nodes[0].tunnel.encapsulate_in_place(now, buf, len);
            assert_eq!(r, Err(DropReason::PacketTooLarge));
        }
        assert_eq!(
            sim.nodes[0]
                .tunnel
                .stats()
                .dropped(DropReason::PacketTooLarge),
            2
        );
    }

    /// Two nodes with a session from 0 to 1, and a sealed data message from 0 to 1.
    fn established(seed: u64) -> (Simulation, Vec<u8>, Vec<u8>) {
        let mut sim = Simulation::new(2, LinkModel::default(), seed);
        sim.send(0, 1, b"first").unwrap();
        sim.run_for(Duration::from_millis(100));
        let packet = sim::ipv4_packet(sim.nodes[0].ipv4, sim.nodes[1].ipv4, &[0xa5; 200]);
        let mut buf = vec![0u8; wire::DATA_OVERHEAD + packet.len()];
        buf[wire::DATA_HEADER_LEN..][..packet.len()].copy_from_slice(&packet);
        let now = sim.now;
        let Ok(Prepared::Ready { seal, .. }) =
            sim.nodes[0]
                .tunnel
                .prepare_in_place(now, &mut buf, packet.len())
        else {
            panic!("an established session prepares");
        };
        let len = seal.seal(&mut buf).unwrap();
        buf.truncate(len);
        (sim, buf, packet)
    }

    /// begin_outside, DataJob::open and finish_data, as an engine runs them.
    fn receive_in_parts(
        sim: &mut Simulation,
        datagram: &mut [u8],
    ) -> Result<Option<Vec<u8>>, DropReason> {
        let (now, from) = (sim.now, sim.nodes[0].address);
        let tunnel = &mut sim.nodes[1].tunnel;
        match tunnel.begin_outside(now, from, datagram)? {
            Begun::Handled(_) => panic!("a data message is a job"),
            Begun::Data(job) => {
                let opened = job.open(datagram);
                match tunnel.finish_data(now, from, datagram, job, opened)? {
                    Incoming::Packet { packet, .. } => Ok(Some(packet.to_vec())),
                    Incoming::Handled => Ok(None),
                }
            }
        }
    }

    #[test]
    fn sealing_and_opening_in_parts_match_the_whole_calls() {
        let (mut sim, datagram, packet) = established(5);
        // What the whole call opens, the parts open the same.
        let mut whole = datagram.clone();
        let (now, from) = (sim.now, sim.nodes[0].address);
        match sim.nodes[1].tunnel.handle_outside(now, from, &mut whole) {
            Ok(Incoming::Packet { packet: p, .. }) => assert_eq!(p, &packet[..]),
            other => panic!("{other:?}"),
        }
        let (mut sim, datagram, packet) = established(5);
        let opened = receive_in_parts(&mut sim, &mut datagram.clone()).unwrap();
        assert_eq!(opened.as_deref(), Some(&packet[..]));

        // Once accepted, a copy is a replay; a tampered copy does not authenticate. Both
        // counted, neither a packet.
        assert_eq!(
            receive_in_parts(&mut sim, &mut datagram.clone()),
            Err(DropReason::Replayed)
        );
        let (mut sim, datagram, _) = established(6);
        let mut tampered = datagram.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            receive_in_parts(&mut sim, &mut tampered),
            Err(DropReason::Unauthentic)
        );
        let stats = sim.nodes[1].tunnel.stats();
        assert_eq!(stats.dropped(DropReason::Unauthentic), 1);
        // The tampered copy recorded nothing: the original still opens.
        assert!(receive_in_parts(&mut sim, &mut datagram.clone()).is_ok());
    }

    #[test]
    fn a_copy_accepted_while_another_was_opened_is_a_replay() {
        let (mut sim, datagram, _) = established(7);
        let (now, from) = (sim.now, sim.nodes[0].address);
        let tunnel = &mut sim.nodes[1].tunnel;
        // Two workers check the same message before either records it: both may open it,
        // only the first to finish hands it out.
        let (mut first, mut second) = (datagram.clone(), datagram.clone());
        let Ok(Begun::Data(job1)) = tunnel.begin_outside(now, from, &mut first) else {
            panic!("a job");
        };
        let Ok(Begun::Data(job2)) = tunnel.begin_outside(now, from, &mut second) else {
            panic!("a job");
        };
        let (opened1, opened2) = (job1.open(&mut first), job2.open(&mut second));
        assert!(opened1.is_ok() && opened2.is_ok());
        let done = tunnel.finish_data(now, from, &mut first, job1, opened1);
        assert!(matches!(done, Ok(Incoming::Packet { .. })), "{done:?}");
        let again = tunnel.finish_data(now, from, &mut second, job2, opened2);
        assert!(matches!(again, Err(DropReason::Replayed)), "{again:?}");
        assert_eq!(tunnel.stats().dropped(DropReason::Replayed), 1);
    }

    #[test]
    fn a_session_gone_while_its_message_was_opened_drops_it() {
        let (mut sim, datagram, _) = established(8);
        let (now, from) = (sim.now, sim.nodes[0].address);
        let mut alone = sim.config.clone();
        let sender = sim.node_id(0);
        alone.members.retain(|m| m.node_id != sender);
        alone.revision += 1;
        let mut d = datagram.clone();
        let tunnel = &mut sim.nodes[1].tunnel;
        let Ok(Begun::Data(job)) = tunnel.begin_outside(now, from, &mut d) else {
            panic!("a job");
        };
        let opened = job.open(&mut d);
        tunnel.apply_config(&alone); // the sender is no longer a member
        let r = tunnel.finish_data(now, from, &mut d, job, opened);
        assert!(matches!(r, Err(DropReason::UnknownIndex)), "{r:?}");
    }

    #[test]
    fn begin_outside_handles_everything_but_direct_data() {
        // A relayed data message is handled in full, packet and all.
        let (mut sim, datagram, packet) = established(9);
        let (now, from) = (sim.now, sim.nodes[0].address);
        let mut relayed = wire::relay_envelope(sim.node_id(1), sim.node_id(0), &datagram);
        match sim.nodes[1].tunnel.begin_outside(now, from, &mut relayed) {
            Ok(Begun::Handled(Incoming::Packet { packet: p, .. })) => assert_eq!(p, &packet[..]),
            other => panic!("{other:?}"),
        }
        // Garbage is counted as by handle_outside, whatever its first byte.
        for junk in [vec![wire::TYPE_DATA, 0, 0], vec![0xff; 40], vec![]] {
            let mut junk = junk;
            let r = sim.nodes[1].tunnel.begin_outside(now, from, &mut junk);
            assert!(r.is_err(), "{r:?}");
        }
        assert_eq!(
            sim.nodes[1].tunnel.stats().dropped(DropReason::Malformed),
            3
        );
    }

    #[test]
    fn owns_index_follows_the_receiver_indices_it_issued() {
        let mut sim = Simulation::new(2, LinkModel::default(), 7);
        sim.recorded = Some(Vec::new());
        sim.send(0, 1, b"hello").unwrap();
        sim.run_for(Duration::from_millis(100));
        let recorded = sim.recorded.take().unwrap();
        let (mut response, mut data) = (None, None);
        for d in &recorded {
            match wire::parse(&d.bytes).unwrap() {
                Message::HandshakeResponse(r) => response = Some(r.receiver_index),
                Message::Data(m) if d.to == sim.nodes[1].address => data = Some(m.receiver_index),
                _ => {}
            }
        }
        // The response names node 0's handshake index; data to node 1 names node 1's session.
        let (response, data) = (response.unwrap(), data.unwrap());
        assert!(sim.nodes[0].tunnel.owns_index(response));
        assert!(!sim.nodes[1].tunnel.owns_index(response));
        assert!(sim.nodes[1].tunnel.owns_index(data));
        assert!(!sim.nodes[0].tunnel.owns_index(data));
        assert!(!sim.nodes[0].tunnel.owns_index(0));
    }
}

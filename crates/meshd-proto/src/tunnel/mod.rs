//! One node's state machine for one network: handshakes, sessions, routing, timers.
//!
//! Call order (sans-IO, as quinn-proto's `Connection`):
//! 1. [`Tunnel::new`], then [`Tunnel::apply_config`] with every verified config revision,
//!    and [`Tunnel::connect_all`] to reach every peer at once.
//! 2. Inside → outside, for each IP packet read from the TUN into a buffer at
//!    [`DATA_HEADER_LEN`](crate::wire::DATA_HEADER_LEN), with room for the tag after it:
//!    [`Tunnel::prepare_in_place`] routes it and either queues it while a handshake runs
//!    ([`Prepared::Queued`]) or takes a counter and writes the header ([`Prepared::Ready`]);
//!    then [`Seal::seal`](crate::session::Seal::seal) seals it where it lies, and the
//!    datagram goes to the destination returned.
//! 3. Outside → inside, for each UDP datagram: [`Tunnel::begin_outside`] handles all but a
//!    direct data message in full ([`Begun::Handled`]); a data message comes back as a
//!    [`Begun::Data`] job: [`DataJob::open`] it, then hand the result to
//!    [`Tunnel::finish_data`]. An [`Incoming::Packet`] from either goes to the TUN, already
//!    source-checked.
//!
//!    Sealing and opening need no access to the tunnel, so an engine running several
//!    threads on one tunnel does the cipher work without holding it. The engine, the
//!    simulator, the benches and the fuzz targets all make these same calls.
//! 4. Call [`Tunnel::handle_timeout`] when [`Tunnel::poll_timeout`] is due.
//! 5. After each call, drain [`Tunnel::poll_transmit`] (handshakes, keepalives, probes, queued
//!    packets) and [`Tunnel::poll_event`].
//!
//! Nothing here blocks, allocates per data packet on the fast path, or reads a clock.
//!
//! Files, by job:
//! - this one: the [`Tunnel`] itself, its construction, config apply and the queues of what
//!   it sends and reports;
//! - `outbound`: inside → outside, and the tunnel's own sealed messages;
//! - `inbound`: outside → inside;
//! - `handshake`: initiations, responses, cookies;
//! - `probes`: RTT probes and path scans; `paths`: how a scan chooses a path;
//! - `timers`: [`Tunnel::handle_timeout`];
//! - `counters`: [`DropReason`] and [`TunnelStats`];
//! - `peer`: the per-peer state; `via`: direct or through a relay.

mod counters;
mod gateways;
mod handshake;
mod inbound;
mod outbound;
mod paths;
mod peer;
mod probes;
mod timers;
mod via;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use zeroize::Zeroizing;

pub use counters::{DropReason, TunnelStats};
pub use gateways::{GATEWAY_ALIVE, GATEWAY_HOLD, GATEWAY_PROBE_INTERVAL};
use handshake::{Clock, LoadMeter};
pub use inbound::{Begun, DataJob, Incoming};
pub use outbound::Prepared;
pub use paths::{PathTime, ScanReport};
use peer::Peer;
pub use peer::{MAX_QUEUED, PeerStatus};
pub use probes::PROBE_INTERVAL;
pub use timers::TIMER_TICK;
pub use via::{DIRECT_DEAD, DIRECT_QUIET, RELAYED_SCAN_INTERVAL, Via};

use crate::config::NetworkConfig;
use crate::handshake::{CookieSecret, MacKeys, TIMESTAMP_LEN};
use crate::rate::Limiter;
use crate::reach::relay::RelayLimits;
use crate::routes::RouteTable;
use crate::{Identity, NetworkId, NodeId};

/// Tunables; the defaults suit a node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Above this many initiations per second the responder demands cookies (mac2).
    pub cookie_threshold_per_second: u32,
    /// The top bits ([`index_prefix`]) of every receiver index this tunnel issues. A data
    /// plane running several networks over one socket gives each network's tunnel its own,
    /// and so finds a datagram's network from its receiver index alone.
    pub index_prefix: u8,
    /// How much each peer may have relayed through this node, when the config marks it a
    /// relay.
    pub relay_limits: RelayLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cookie_threshold_per_second: 1000,
            index_prefix: 0,
            relay_limits: RelayLimits::default(),
        }
    }
}

/// Bits of a receiver index below its prefix: 16 million indices per tunnel.
const INDEX_PREFIX_SHIFT: u32 = 24;

/// The [`Settings::index_prefix`] of the tunnel that issued receiver index `index`.
pub fn index_prefix(index: u32) -> u8 {
    // The shift leaves exactly the top 8 bits.
    (index >> INDEX_PREFIX_SHIFT) as u8
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
    /// No handshake answer for
    /// [`session::REKEY_ATTEMPT_TIME`](crate::session::REKEY_ATTEMPT_TIME); queued packets
    /// were dropped.
    HandshakeGaveUp(NodeId),
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
    last_timestamp: [u8; TIMESTAMP_LEN],
    cookie_secret: CookieSecret,
    cookie_secret_born: Instant,
    load: LoadMeter,
    forced_load: bool,
    /// Initiations answered per source while under load.
    handshake_limit: Limiter<handshake::HandshakeSource>,
    probe_seq: u64,
    last_tick: Instant,
    /// The replicas' relays the node found alive, best first ([`Tunnel::set_relays`]).
    replica_relays: Vec<SocketAddr>,
    /// Every relay traffic may go through, best first: the replicas', then members marked
    /// as relays that we reach directly ([`Tunnel::refresh_relays`]).
    relays: via::Relays,
    /// This node relays between its peers (its own member config says so).
    relaying: bool,
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
            last_timestamp: [0; TIMESTAMP_LEN],
            cookie_secret: CookieSecret::random(),
            cookie_secret_born: now,
            load: LoadMeter {
                window_start: now,
                count: 0,
            },
            forced_load: false,
            handshake_limit: Limiter::new(handshake::HANDSHAKE_RATE, handshake::HANDSHAKE_SOURCES),
            probe_seq: 0,
            last_tick: now,
            replica_relays: Vec::new(),
            relays: via::Relays::default(),
            relaying: false,
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

    /// A peer's status, with the way its traffic goes now.
    fn status_of(&self, peer: &Peer, now: Instant) -> PeerStatus {
        let mut status = peer.status(now);
        status.via = peer.via(&self.relays, now);
        status
    }

    pub fn peer_status(&self, node: NodeId, now: Instant) -> Option<PeerStatus> {
        self.peers.get(&node).map(|p| self.status_of(p, now))
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
        let mut v: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| self.status_of(p, now))
            .collect();
        v.sort_by_key(|s| s.node_id);
        v
    }

    /// Applies a verified config: rebuilds the route table, adds new members as peers, tears
    /// down members that left (deauthorized), and refreshes endpoints. If this node is not in
    /// the config it has no peers at all.
    pub fn apply_config(&mut self, cfg: &NetworkConfig) {
        let in_use: Vec<(ipnet::IpNet, NodeId)> = self
            .routes
            .failover_routes()
            .iter()
            .map(|r| (r.target, r.gateway_in_use()))
            .collect();
        self.routes = RouteTable::from_config(cfg);
        // A new config is no reason to move traffic: each route keeps its gateway while the
        // gateway is still one of its own (the way back waits for the hold, not for a
        // config to come by).
        let keep: Vec<(usize, usize)> = self
            .routes
            .failover_routes()
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                let (_, gateway) = in_use.iter().find(|(t, _)| *t == r.target)?;
                Some((index, r.gateways.iter().position(|g| g == gateway)?))
            })
            .collect();
        for (index, gateway) in keep {
            self.routes.use_gateway(index, gateway);
        }
        let authorized_self = cfg.member(self.node_id).is_some();
        self.relaying = cfg.member(self.node_id).is_some_and(|m| m.relay);
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
        let gateways: Vec<NodeId> = self
            .routes
            .failover_routes()
            .iter()
            .flat_map(|r| r.gateways.iter().copied())
            .collect();
        for (id, m) in wanted {
            let peer = self.peers.entry(id).or_insert_with(|| {
                self.by_static.insert(m.identity.x25519, id);
                Peer::new(id, m.identity.x25519, Vec::new())
            });
            peer.candidates.clone_from(&m.endpoints);
            peer.is_relay = m.relay;
            peer.is_gateway = gateways.contains(&id);
        }
        // The rebuilt table starts on the preferred gateways; keep what liveness chose.
        self.choose_gateways(self.last_tick);
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

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::sim::{LinkModel, Simulation};
    use crate::wire::{self, Message};

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

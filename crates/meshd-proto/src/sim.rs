//! A deterministic in-memory network for the protocol: N nodes, one virtual clock, latency,
//! jitter (reordering) and loss from a seeded generator. No sockets, no threads.
//!
//! Used by the simulator tests and by `meshd simulate`. Every node runs the real
//! [`Tunnel`] with real keys, driven by the same calls as the engine's data plane
//! ([`Tunnel::prepare_in_place`] and [`Seal::seal`](crate::session::Seal::seal) out,
//! [`Tunnel::begin_outside`], [`DataJob::open`](crate::tunnel::DataJob::open) and
//! [`Tunnel::finish_data`] in); only the wire and the clock are simulated.
//!
//! Relays ([`Simulation::add_relay`]) run the real [`RelayServer`] with every node
//! registered; [`Simulation::direct_blocked`] drops every datagram from node to node (as
//! two NATs that no punch gets through), so that only relayed traffic arrives.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::config::{MemberConfig, NetworkConfig};
use crate::reach::credential::RelaySecret;
use crate::reach::reflect::ReflectRequest;
use crate::reach::relay::{RelayAction, RelayLimits, RelayServer};
use crate::tunnel::{Begun, DropReason, Incoming, Prepared, Tunnel};
use crate::{Identity, NetworkKey, NodeId, wire};

/// Link behaviour between every pair of nodes.
#[derive(Debug, Clone, Copy)]
pub struct LinkModel {
    pub latency: Duration,
    /// Extra random delay in `[0, jitter)`: packets overtake each other.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is lost.
    pub loss: f64,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

/// One of the networks every node has an address on (a LAN, the internet, another VPN):
/// datagrams to a node's address on it take the link's latency plus `extra_latency`.
#[derive(Debug, Clone, Copy)]
pub struct SimPath {
    pub extra_latency: Duration,
    /// A path that is down loses everything sent over it.
    pub up: bool,
}

/// A datagram on the simulated wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
pub struct SimNode {
    pub identity: Identity,
    pub tunnel: Tunnel,
    /// The address on path 0.
    pub address: SocketAddr,
    /// One address per path, in path order; all are the node's endpoints in the config.
    pub addresses: Vec<SocketAddr>,
    pub ipv4: Ipv4Addr,
    /// IP packets the tunnel handed to the inside, with the peer they came from.
    pub received: Vec<(NodeId, Vec<u8>)>,
}

/// Small, fast, seedable generator (xorshift64*): the simulation must not depend on the OS.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
pub struct Simulation {
    pub now: Instant,
    started: Instant,
    pub nodes: Vec<SimNode>,
    pub link: LinkModel,
    pub paths: Vec<SimPath>,
    pub network_key: NetworkKey,
    pub config: NetworkConfig,
    rng: Rng,
    in_flight: Vec<(Instant, u64, Datagram)>,
    seq: u64,
    /// Every datagram put on the wire, if recording (for replay and tampering tests).
    pub recorded: Option<Vec<Datagram>>,
    pub delivered: u64,
    pub lost: u64,
    next_timer: Instant,
    /// Relays by address ([`Simulation::add_relay`]).
    pub relays: Vec<(SocketAddr, RelayServer)>,
    /// Drop every datagram from one node's address to another's.
    pub direct_blocked: bool,
    /// Drop every datagram between these two nodes (by index, either way).
    pub blocked: Vec<(usize, usize)>,
}

impl Simulation {
    /// `n` nodes, all authorized members of one network, with addresses `10.147.17.(10+i)`,
    /// container subnets `172.28.i.0/24` and endpoints `192.0.2.(10+i):9993`.
    pub fn new(n: usize, link: LinkModel, seed: u64) -> Self {
        let one = SimPath {
            extra_latency: Duration::ZERO,
            up: true,
        };
        Self::with_paths(n, link, seed, vec![one])
    }

    /// As [`Simulation::new`], with every node on each of `paths`: node `i`'s address on
    /// path `p` is `192.0.(2+p).(10+i):9993`, and the config lists them in path order.
    pub fn with_paths(n: usize, link: LinkModel, seed: u64, paths: Vec<SimPath>) -> Self {
        assert!(
            (1..=8).contains(&paths.len()),
            "a simulation has 1 to 8 paths"
        );
        let now = Instant::now();
        let network_key = NetworkKey::generate();
        let mut config = NetworkConfig::new(network_key.network_id(), "sim");
        config.revision = 1;
        config.v4_pools = vec![Ipv4Net::new(Ipv4Addr::new(10, 147, 17, 0), 24).expect("valid /24")];
        config.container_pool =
            Some(Ipv4Net::new(Ipv4Addr::new(172, 28, 0, 0), 16).expect("valid /16"));
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let octet = u8::try_from(10 + i).expect("simulations have fewer than 240 nodes");
            let identity = Identity::generate_unproven();
            let addresses: Vec<SocketAddr> = (0..paths.len())
                .map(|p| {
                    let third = 2 + u8::try_from(p).expect("at most 8 paths");
                    SocketAddr::from(([192, 0, third, octet], 9993))
                })
                .collect();
            let address = addresses[0];
            let ipv4 = Ipv4Addr::new(10, 147, 17, octet);
            config.members.push(MemberConfig {
                node_id: identity.node_id(),
                identity: *identity.public(),
                name: format!("node-{i}"),
                ipv4: vec![ipv4],
                container_subnet: Some(
                    Ipv4Net::new(Ipv4Addr::new(172, 28, octet, 0), 24).expect("valid /24"),
                ),
                endpoints: addresses.clone(),
                delegated_subnet: None,
                relay: false,
                port_mapped: false,
            });
            let tunnel = Tunnel::new(
                &identity,
                network_key.network_id(),
                now,
                Duration::from_secs(1_700_000_000),
            );
            nodes.push(SimNode {
                identity,
                tunnel,
                address,
                addresses,
                ipv4,
                received: Vec::new(),
            });
        }
        config.canonicalize();
        for node in &mut nodes {
            node.tunnel.apply_config(&config);
        }
        Self {
            now,
            started: now,
            nodes,
            link,
            paths,
            network_key,
            config,
            rng: Rng::new(seed),
            in_flight: Vec::new(),
            seq: 0,
            recorded: None,
            delivered: 0,
            lost: 0,
            next_timer: now,
            relays: Vec::new(),
            direct_blocked: false,
            blocked: Vec::new(),
        }
    }

    /// Starts a relay at `address` with every node an authorized member and registered from
    /// its address on path 0, and gives every node's tunnel the live relays.
    pub fn add_relay(&mut self, address: SocketAddr) {
        let secret = RelaySecret::derive(b"sim");
        // Registered once: the simulated nodes run no reach client to refresh them.
        let limits = RelayLimits {
            registration_ttl: Duration::from_secs(24 * 3600),
            ..RelayLimits::default()
        };
        let mut relay = RelayServer::new(secret.clone(), limits);
        let nwid = self.network_key.network_id();
        relay.set_members(self.nodes.iter().map(|n| (nwid, n.identity.node_id())));
        for node in &self.nodes {
            let credential = secret.issue(node.identity.node_id(), u64::MAX);
            let request = ReflectRequest {
                node: credential.node,
                expires: credential.expires,
                sequence: 1,
            }
            .encode(&credential.key);
            let registered = relay.handle(self.now, 0, node.address, &request);
            assert!(matches!(registered, Ok(RelayAction::Reply { .. })));
        }
        self.relays.push((address, relay));
        self.set_relays();
    }

    /// Takes the relay at `address` away (a replica that died): what is sent to it is lost,
    /// and the nodes are told the relays that remain.
    pub fn remove_relay(&mut self, address: SocketAddr) {
        self.relays.retain(|(a, _)| *a != address);
        self.set_relays();
    }

    fn set_relays(&mut self) {
        let live: Vec<SocketAddr> = self.relays.iter().map(|(a, _)| *a).collect();
        for node in &mut self.nodes {
            node.tunnel.set_relays(live.clone());
        }
    }

    /// Re-signs `config` with a higher revision and pushes it to the nodes it lists, as a
    /// controller does: a member that was removed never receives the config removing it.
    pub fn push_config(&mut self, mut config: NetworkConfig) {
        config.revision = self.config.revision + 1;
        config.canonicalize();
        let signed =
            crate::SignedConfig::sign(&self.network_key, &config).expect("sim configs encode");
        let verified = signed
            .verify(self.network_key.network_id())
            .expect("own signature verifies");
        for node in &mut self.nodes {
            if verified.member(node.identity.node_id()).is_some() {
                node.tunnel.apply_config(&verified);
            }
        }
        self.config = verified;
    }

    /// Marks node `i` as a relay for the others in a new config revision, as
    /// `meshd daemon --relay` does through the controller.
    pub fn make_relay(&mut self, i: usize) {
        let node = self.node_id(i);
        let mut config = self.config.clone();
        for m in &mut config.members {
            m.relay = m.node_id == node;
        }
        self.push_config(config);
    }

    /// Sends an IPv4 packet with `payload` from node `from` to node `to`'s address.
    pub fn send(&mut self, from: usize, to: usize, payload: &[u8]) -> Result<(), DropReason> {
        let packet = ipv4_packet(self.nodes[from].ipv4, self.nodes[to].ipv4, payload);
        self.send_packet(from, &packet)
    }

    /// Sends a raw IP packet from node `from`'s TUN.
    pub fn send_packet(&mut self, from: usize, packet: &[u8]) -> Result<(), DropReason> {
        let sealed = self.seal_packet(from, packet)?;
        // What preparing sent (a handshake the packet started, or a rekey) goes first.
        self.collect(from);
        if let Some((destination, bytes)) = sealed {
            self.put_from(from, destination, bytes);
        }
        Ok(())
    }

    /// Seals a raw IP packet from node `from`'s TUN as the engine does, and returns the
    /// datagram and where it goes without putting it on the wire; `None` if the packet was
    /// queued behind a handshake. Anything else the tunnel sends waits for the next call.
    pub fn seal_packet(
        &mut self,
        from: usize,
        packet: &[u8],
    ) -> Result<Option<(SocketAddr, Vec<u8>)>, DropReason> {
        let now = self.now;
        // Where the engine reads a packet from the TUN: after room for the header, with room
        // for the tag.
        let mut buf = vec![0u8; packet.len() + wire::DATA_OVERHEAD];
        buf[wire::DATA_HEADER_LEN..][..packet.len()].copy_from_slice(packet);
        let tunnel = &mut self.nodes[from].tunnel;
        match tunnel.prepare_in_place(now, &mut buf, packet.len())? {
            Prepared::Queued { .. } => Ok(None),
            Prepared::Ready {
                destination,
                seal,
                envelope,
                ..
            } => {
                // Refused only for a buffer shorter than prepare_in_place checked: never.
                let len = seal
                    .seal(&mut buf)
                    .map_err(|_| DropReason::SessionExpired)?;
                buf.truncate(len);
                if let Some(header) = envelope {
                    buf.splice(0..0, header);
                }
                Ok(Some((destination, buf)))
            }
        }
    }

    /// Moves node `i`'s outgoing datagrams onto the wire.
    fn collect(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].tunnel.poll_transmit() {
            self.put_from(i, t.destination, t.bytes);
        }
    }

    /// Puts a datagram from node `i` on the wire, from the node's address on the path of its
    /// destination.
    fn put_from(&mut self, i: usize, destination: SocketAddr, bytes: Vec<u8>) {
        let path = self.path_of(destination).unwrap_or(0);
        let d = Datagram {
            from: self.nodes[i].addresses[path],
            to: destination,
            bytes,
        };
        self.put_on_wire(d);
    }

    /// The path an address of some node is on.
    pub fn path_of(&self, address: SocketAddr) -> Option<usize> {
        self.nodes
            .iter()
            .find_map(|n| n.addresses.iter().position(|a| *a == address))
    }

    /// Puts a datagram on the wire, subject to its path, loss, latency and jitter.
    pub fn put_on_wire(&mut self, d: Datagram) {
        if let Some(r) = &mut self.recorded {
            r.push(d.clone());
        }
        let direct = self.path_of(d.from).is_some() && self.path_of(d.to).is_some();
        let node_at = |a: SocketAddr| self.nodes.iter().position(|n| n.addresses.contains(&a));
        let pair_blocked = match (node_at(d.from), node_at(d.to)) {
            (Some(a), Some(b)) => self.blocked.contains(&(a, b)) || self.blocked.contains(&(b, a)),
            _ => false,
        };
        if (self.direct_blocked && direct) || pair_blocked {
            self.lost += 1;
            return;
        }
        let path = self.path_of(d.to).map(|p| self.paths[p]);
        if path.is_some_and(|p| !p.up) || (self.link.loss > 0.0 && self.rng.unit() < self.link.loss)
        {
            self.lost += 1;
            return;
        }
        let extra = path.map_or(Duration::ZERO, |p| p.extra_latency);
        let jitter = self.link.jitter.mul_f64(self.rng.unit());
        self.seq += 1;
        self.in_flight
            .push((self.now + self.link.latency + extra + jitter, self.seq, d));
    }

    /// Delivers a datagram to whichever node owns `d.to` right now, bypassing the wire.
    pub fn inject(&mut self, d: Datagram) -> Option<Result<bool, DropReason>> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.addresses.contains(&d.to))?;
        Some(self.deliver(i, d))
    }

    /// Hands a datagram to node `i`; `Ok(true)` if an IP packet came out.
    fn deliver(&mut self, i: usize, d: Datagram) -> Result<bool, DropReason> {
        let now = self.now;
        let mut bytes = d.bytes;
        let node = &mut self.nodes[i];
        let incoming = match node.tunnel.begin_outside(now, d.from, &mut bytes) {
            Ok(Begun::Handled(incoming)) => Ok(incoming),
            Ok(Begun::Data(job)) => {
                let opened = job.open(&mut bytes);
                node.tunnel
                    .finish_data(now, d.from, &mut bytes, job, opened)
            }
            Err(e) => Err(e),
        };
        let out = match incoming {
            Ok(Incoming::Packet { peer, packet }) => {
                node.received.push((peer, packet.to_vec()));
                Ok(true)
            }
            Ok(Incoming::Handled) => Ok(false),
            Err(e) => Err(e),
        };
        self.collect(i);
        out
    }

    /// Advances the virtual clock by `dt`, delivering datagrams and running timers on the way.
    pub fn run_for(&mut self, dt: Duration) {
        let end = self.now + dt;
        loop {
            let next_delivery = self.in_flight.iter().map(|(t, s, _)| (*t, *s)).min();
            let next = match next_delivery {
                Some((t, _)) if t <= self.next_timer => t,
                _ => self.next_timer,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            // Deliver everything due, in arrival order.
            loop {
                let due = self
                    .in_flight
                    .iter()
                    .enumerate()
                    .filter(|(_, (t, _, _))| *t <= self.now)
                    .min_by_key(|(_, (t, s, _))| (*t, *s))
                    .map(|(i, _)| i);
                let Some(at) = due else { break };
                let (_, _, d) = self.in_flight.swap_remove(at);
                if let Some((relay_addr, relay)) = self.relays.iter_mut().find(|(a, _)| *a == d.to)
                {
                    let relay_addr = *relay_addr;
                    if let Ok(RelayAction::Forward { to, bytes }) =
                        relay.handle(self.now, 0, d.from, &d.bytes)
                    {
                        let forwarded = Datagram {
                            from: relay_addr,
                            to,
                            bytes: bytes.to_vec(),
                        };
                        self.put_on_wire(forwarded);
                    }
                    continue;
                }
                if let Some(i) = self.nodes.iter().position(|n| n.addresses.contains(&d.to)) {
                    self.delivered += 1;
                    let _ = self.deliver(i, d);
                }
            }
            if self.now >= self.next_timer {
                for i in 0..self.nodes.len() {
                    let now = self.now;
                    self.nodes[i].tunnel.handle_timeout(now);
                    self.collect(i);
                }
                self.next_timer = self.now + crate::tunnel::TIMER_TICK;
            }
        }
        self.now = end;
    }

    /// Restarts node `i` as a process restart would: same identity and config, every
    /// session and handshake state lost, traffic in flight to it still arriving.
    pub fn restart(&mut self, i: usize) {
        let unix =
            Duration::from_secs(1_700_000_000) + self.now.saturating_duration_since(self.started);
        let node = &mut self.nodes[i];
        node.tunnel = Tunnel::new(
            &node.identity,
            self.network_key.network_id(),
            self.now,
            unix,
        );
        node.tunnel.apply_config(&self.config);
    }

    /// The payloads of the packets node `i` received, in order (packets built by
    /// [`ipv4_packet`]).
    pub fn payloads(&self, i: usize) -> Vec<Vec<u8>> {
        self.nodes[i]
            .received
            .iter()
            .map(|(_, p)| payload_of(p).to_vec())
            .collect()
    }

    /// Node `i` handshakes with every peer it has no session with.
    pub fn connect_all(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].tunnel.connect_all(now);
        self.collect(i);
    }

    pub fn node_id(&self, i: usize) -> NodeId {
        self.nodes[i].identity.node_id()
    }
}

/// A minimal IPv4 packet (UDP protocol number, no checksum): enough for routing and the
/// source check, which read only the addresses.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    let len = u16::try_from(total).unwrap_or(u16::MAX);
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(payload);
    p
}

/// The payload of a packet built by [`ipv4_packet`].
pub fn payload_of(packet: &[u8]) -> &[u8] {
    packet.get(20..).unwrap_or_default()
}

/// Source address of an IP packet, for assertions.
pub fn source_of(packet: &[u8]) -> Option<IpAddr> {
    crate::ip::addresses(packet).map(|(s, _)| s)
}

//! Compiled only with the `fuzzing` feature; the seed inputs are [`seeds`]. Each entry point
//! takes arbitrary bytes, must never panic, and asserts the invariants that must hold for every
//! input:
//! - [`wire()`]: a relay envelope that parses carries a message that parses and is not a relay.
//! - [`config()`]: a config that decodes re-encodes to exactly the same bytes (one encoding per
//!   config is what makes signatures over it meaningful).
//! - [`responder()`]: a node's [`Tunnel`] fed untrusted datagrams, as the fixed responder of a
//!   two-member network, through the calls an engine's packet workers make: every drop is
//!   counted under the reason the tunnel gives, and of two copies of a datagram raced through
//!   at once, one at most comes out as a packet.
//! - [`initiator()`]: the fixed initiator's tunnel, with a handshake under way, fed the real
//!   answer and untrusted datagrams: the same counting invariant as the responder's.
//! - [`reach()`]: a replica's relay fed up to three datagrams from two registered members'
//!   addresses: it forwards only to registered addresses, answers a request only to where it
//!   came from and at most five bytes larger, and counts every datagram exactly once.
//!
//! The fixed identities make a committed seed useful across runs: [`responder_seed_initiation`]
//! is a real initiation to the fixed responder, with a correct mac1, so the fuzzer starts past
//! the mac1 check inside Noise. Regenerate the committed corpus with
//! `cargo run -p meshd-proto --features fuzzing --example fuzz_seeds`.
//!
//! What stays random even here: the tunnel's local indices and cookie secret, and Noise's
//! ephemeral keys, come from the OS. So the responder target cannot be deterministic; its
//! "session" mode therefore runs a real handshake as the fixed initiator and seals the
//! fuzzer's bytes with the keys that handshake yields, which is what makes the data path
//! after a handshake reachable at all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::{ManagedRoute, MemberConfig, NetworkConfig, SignedConfig, codec};
use crate::handshake::{self, InitiationParams, MacKeys};
use crate::reach::credential::RelaySecret;
use crate::reach::reflect::{ReflectRequest, Reflection};
use crate::reach::relay::{RelayAction, RelayLimits, RelayServer};
use crate::session::Session;
use crate::sim::ipv4_packet;
use crate::tunnel::{Begun, DataJob, DropReason, Incoming, Tunnel, TunnelStats};
use crate::wire::{self, Message};
use crate::{Identity, NetworkKey, RouteTable, addr};

/// The fixed responder's 64 secret bytes (X25519 secret, Ed25519 seed). Its node id is not
/// reserved (checked by a unit test).
pub const RESPONDER_SECRETS: [u8; 64] = [0x52; 64];
/// The fixed initiator's secret bytes; a member of the fixture network like the responder.
pub const INITIATOR_SECRETS: [u8; 64] = [0x49; 64];
/// Seed of the fixture network's signing key.
pub const NETWORK_SEED: [u8; 32] = [0x4e; 32];
/// Where the responder target's datagrams come from: the initiator's configured endpoint.
pub const FROM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9993);
/// The initiator's and responder's assigned IPv4 addresses.
pub const INITIATOR_IP: Ipv4Addr = Ipv4Addr::new(10, 147, 17, 1);
pub const RESPONDER_IP: Ipv4Addr = Ipv4Addr::new(10, 147, 17, 2);
/// Wall-clock time at `now` for every tunnel the targets build.
const UNIX_NOW: Duration = Duration::from_secs(1_700_000_000);
/// The sender index of the fixed initiator's handshakes.
const INITIATOR_INDEX: u32 = 0x1000_0001;

/// Bits of the responder target's control byte (see [`responder`]).
pub const CTRL_UNDER_LOAD: u8 = 1;
pub const CTRL_SESSION: u8 = 2;
/// Bits of a session-mode frame's selector byte (see [`responder`]).
pub const FRAME_DATA: u8 = 0;
pub const FRAME_PROBE: u8 = 1;
pub const FRAME_RAW: u8 = 2;
pub const FRAME_REPLAY: u8 = 3;
pub const FRAME_RELAYED: u8 = 4;
pub const FRAME_RACED: u8 = 8;

/// The fixed network both identities are members of.
#[derive(Debug)]
pub struct Fixture {
    pub responder: Identity,
    pub initiator: Identity,
    pub network_key: NetworkKey,
    pub config: NetworkConfig,
}

/// Built once per process: key derivation is far slower than one fuzz input.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let responder = Identity::from_secrets(&RESPONDER_SECRETS).expect("non-reserved id");
        let initiator = Identity::from_secrets(&INITIATOR_SECRETS).expect("non-reserved id");
        let network_key = NetworkKey::from_seed(&NETWORK_SEED).expect("any seed is valid");
        let mut config = NetworkConfig::new(network_key.network_id(), "fuzz");
        config.revision = 1;
        config.v4_pools = vec![Ipv4Net::new(Ipv4Addr::new(10, 147, 17, 0), 24).expect("/24")];
        config.container_pool = Some(Ipv4Net::new(Ipv4Addr::new(172, 28, 0, 0), 16).expect("/16"));
        let member = |id: &Identity, name: &str, ip: Ipv4Addr, octet: u8, endpoints| MemberConfig {
            node_id: id.node_id(),
            identity: *id.public(),
            name: name.to_owned(),
            ipv4: vec![ip],
            container_subnet: Some(
                Ipv4Net::new(Ipv4Addr::new(172, 28, octet, 0), 24).expect("/24"),
            ),
            endpoints,
            delegated_subnet: None,
            relay: false,
            port_mapped: false,
        };
        // The responder relays (the responder target reaches the tunnel's relaying), the
        // initiator's first endpoint is port-mapped (the config seed has member flags).
        // The responder also has a delegated IPv6 subnet and the IPv6 route fails over
        // between both (the seed is a version 4 config).
        let relaying = |m: MemberConfig| MemberConfig {
            relay: true,
            delegated_subnet: Some(
                Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, 1, 0x40, 0, 0, 0, 0), 80).expect("/80"),
            ),
            ..m
        };
        let mapped = |m: MemberConfig| MemberConfig {
            port_mapped: true,
            ..m
        };
        config.members = vec![
            mapped(member(
                &initiator,
                "initiator",
                INITIATOR_IP,
                1,
                vec![
                    FROM,
                    SocketAddr::new(
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                        9993,
                    ),
                ],
            )),
            relaying(member(
                &responder,
                "responder",
                RESPONDER_IP,
                2,
                vec![SocketAddr::from(([192, 0, 2, 2], 9993))],
            )),
        ];
        let route = |target: &str| {
            ManagedRoute::via(target.parse().expect("valid prefix"), initiator.node_id())
        };
        let mut failover = route("fd00:1234::/48");
        failover.gateways.push(responder.node_id());
        config.routes = vec![route("192.168.100.0/24"), failover];
        config.canonicalize();
        Fixture {
            responder,
            initiator,
            network_key,
            config,
        }
    })
}

impl Fixture {
    /// A fresh responder tunnel running the fixture config.
    pub fn tunnel(&self, now: Instant) -> Tunnel {
        self.tunnel_of(&self.responder, now)
    }

    /// A fresh tunnel of the fixed initiator, running the fixture config.
    pub fn initiator_tunnel(&self, now: Instant) -> Tunnel {
        self.tunnel_of(&self.initiator, now)
    }

    fn tunnel_of(&self, identity: &Identity, now: Instant) -> Tunnel {
        let mut t = Tunnel::new(identity, self.network_key.network_id(), now, UNIX_NOW);
        t.apply_config(&self.config);
        t
    }
}

/// Target `wire`: parses one datagram.
pub fn wire(data: &[u8]) {
    // The data plane routes by `recipient` and the tunnel parses: they must agree.
    match (wire::parse(data), wire::recipient(data)) {
        (Ok(_) | Err(wire::WireError::BadRelayNode), recipient) => assert!(
            recipient.is_ok(),
            "a message that parses has no recipient: {recipient:?}"
        ),
        (Err(e), recipient) => assert_eq!(recipient, Err(e), "recipient and parse disagree"),
    }
    if let Ok(Message::Relay(r)) = wire::parse(data) {
        let inner = wire::parse(r.inner);
        assert!(
            matches!(inner, Ok(m) if !matches!(m, Message::Relay(_))),
            "relay envelope accepted with inner message {inner:?}"
        );
    }
}

/// Target `config`: decodes a config (and builds its route table) and verifies a signed one.
pub fn config(data: &[u8]) {
    if let Ok(cfg) = codec::decode(data) {
        assert_eq!(
            codec::encode(&cfg).as_deref(),
            Ok(data),
            "a decoded config re-encodes to other bytes"
        );
        let routes = RouteTable::from_config(&cfg);
        for m in &cfg.members {
            let _ = cfg.interface_addresses(m.node_id);
            let _ = routes.lookup(addr::sixplane_addr(cfg.network_id, m.node_id).into());
        }
    }
    let _ = SignedConfig::from_bytes(data.to_vec()).verify(fixture().network_key.network_id());
}

/// The relay secret of the `reach` target's replica.
const RELAY_SECRET: &[u8] = b"meshd fuzzing relay";
/// Where the `reach` target's two members registered from.
const MEMBER_ADDRS: [SocketAddr; 2] = [
    FROM,
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 9993),
];

/// A reflect request of `node` under the `reach` target's secret, never expiring.
fn reach_request(node: crate::NodeId, sequence: u64) -> Vec<u8> {
    let cred = RelaySecret::derive(RELAY_SECRET).issue(node, u64::MAX);
    ReflectRequest {
        node,
        expires: cred.expires,
        sequence,
    }
    .encode(&cred.key)
    .to_vec()
}

/// Target `reach`: the fixture's two members registered at a relay (sequence 1), then
/// [`frames`] of the input, alternately from the first and the second member's address.
pub fn reach(data: &[u8]) {
    let _ = run_reach(data);
}

/// [`reach`], with what the relay counted.
fn run_reach(data: &[u8]) -> crate::reach::relay::RelayCounters {
    let fx = fixture();
    let now = Instant::now();
    let secret = RelaySecret::derive(RELAY_SECRET);
    let mut relay = RelayServer::new(secret.clone(), RelayLimits::default());
    let nwid = fx.network_key.network_id();
    let members = [fx.initiator.node_id(), fx.responder.node_id()];
    relay.set_members(members.map(|m| (nwid, m)));
    for (m, from) in members.iter().zip(MEMBER_ADDRS) {
        let request = reach_request(*m, 1);
        let registered = relay.handle(now, 0, from, &request);
        assert!(matches!(registered, Ok(RelayAction::Reply { .. })));
    }
    let frames = frames(data);
    for (i, frame) in frames.iter().enumerate() {
        let from = MEMBER_ADDRS[i % 2];
        match relay.handle(now, 0, from, frame) {
            Ok(RelayAction::Forward { to, bytes }) => {
                assert!(MEMBER_ADDRS.contains(&to), "forwarded to {to}");
                assert_eq!(bytes, *frame, "forwarded other bytes");
            }
            Ok(RelayAction::Reply { to, bytes }) => {
                assert_eq!(to, from, "answered elsewhere");
                assert!(bytes.len() <= frame.len() + 5, "amplified");
            }
            Err(_) => {}
        }
        let key = secret.key_for(members[i % 2], u64::MAX);
        let _ = Reflection::open(frame, &key);
    }
    let c = relay.counters();
    let counted = c.reflections + c.relayed_packets + c.drops.values().sum::<u64>();
    assert_eq!(
        counted,
        2 + frames.len() as u64,
        "a datagram not counted once"
    );
    c.clone()
}

/// Target `responder`: the fixed responder's tunnel, fed untrusted datagrams from [`FROM`]
/// as an engine's packet workers hand them over ([`Tunnel::begin_outside`],
/// [`DataJob::open`], [`Tunnel::finish_data`]).
///
/// 1. The whole input is one datagram to a fresh tunnel.
/// 2. Then, on another fresh tunnel, the first byte is a control byte and the rest is up to
///    three frames, each `length (u16 LE) | bytes` (a length past the end takes the rest):
///    - bit 0 ([`CTRL_UNDER_LOAD`]): the tunnel demands cookies;
///    - bit 1 ([`CTRL_SESSION`]): first complete a real handshake as the fixed initiator; each
///      frame is then `selector | payload`, where selector bits 0-1 pick [`FRAME_DATA`] or
///      [`FRAME_PROBE`] (payload sealed on the session), [`FRAME_RAW`] (payload sent as is) or
///      [`FRAME_REPLAY`] (the previous datagram again), bit 2 ([`FRAME_RELAYED`]) wraps
///      the datagram in a relay envelope, and bit 3 ([`FRAME_RACED`]) hands two copies of it
///      to the tunnel as two packet workers would, both begun before either finishes.
///      Without the session bit each frame is a raw datagram;
///    - bits 4-7: seconds to advance before a last `handle_timeout` (keepalives, probes).
pub fn responder(data: &[u8]) {
    let _ = run_responder(data);
}

/// Target `initiator`: the initiator's side of a handshake. The fixed initiator starts one
/// to the fixed responder (a packet for it waits); with bit 0 of the first byte, the real
/// responder's answer comes back first (the success path, with its random indices); then up
/// to three frames of the input arrive as datagrams (responses, cookie replies, data).
pub fn initiator(data: &[u8]) {
    let _ = run_initiator(data);
}

fn run_initiator(data: &[u8]) -> Reached {
    let fx = fixture();
    let now = Instant::now();
    let mut reached = Reached::default();
    let mut t = fx.initiator_tunnel(now);
    let packet = ipv4_packet(INITIATOR_IP, RESPONDER_IP, b"waits for the handshake");
    let mut buf = vec![0u8; packet.len() + wire::DATA_OVERHEAD];
    buf[wire::DATA_HEADER_LEN..][..packet.len()].copy_from_slice(&packet);
    let _ = t.prepare_in_place(now, &mut buf, packet.len());
    let initiations = reached.drain(&mut t);
    let Some((&ctrl, rest)) = data.split_first() else {
        return reached;
    };
    if ctrl & 1 != 0 {
        let mut responder = fx.tunnel(now);
        t.set_under_load(ctrl & CTRL_UNDER_LOAD != 0);
        for mut init in initiations {
            let _ = receive(&mut responder, now, &mut init);
        }
        for mut answer in reached.drain(&mut responder) {
            reached.note(&receive(&mut t, now, &mut answer));
        }
        // The queued packet goes out on the new session.
        reached.drain(&mut t);
    }
    for frame in frames(rest) {
        let mut datagram = frame.to_vec();
        reached.note(&receive(&mut t, now, &mut datagram));
        reached.drain(&mut t);
    }
    reached
}

/// What one responder input reached, for the unit tests that keep the seeds honest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Reached {
    handshake_responses: usize,
    cookie_replies: usize,
    data_sent: usize,
    packets: usize,
}

fn run_responder(data: &[u8]) -> Reached {
    let fx = fixture();
    let now = Instant::now();
    let mut reached = Reached::default();
    let mut t = fx.tunnel(now);
    let mut datagram = data.to_vec();
    reached.note(&receive(&mut t, now, &mut datagram));
    reached.drain(&mut t);

    let Some((&ctrl, rest)) = data.split_first() else {
        return reached;
    };
    let mut t = fx.tunnel(now);
    if ctrl & CTRL_SESSION == 0 {
        t.set_under_load(ctrl & CTRL_UNDER_LOAD != 0);
        for frame in frames(rest) {
            let mut datagram = frame.to_vec();
            reached.note(&receive(&mut t, now, &mut datagram));
            reached.drain(&mut t);
        }
    } else if let Some(mut session) = handshake_as_initiator(&mut t, now, &mut reached) {
        t.set_under_load(ctrl & CTRL_UNDER_LOAD != 0);
        let mut previous = Vec::new();
        for frame in frames(rest) {
            let Some((&selector, payload)) = frame.split_first() else {
                continue;
            };
            let mut datagram = match selector & 3 {
                FRAME_DATA => seal(&mut session, now, wire::TYPE_DATA, payload),
                FRAME_PROBE => seal(&mut session, now, wire::TYPE_PROBE, payload),
                FRAME_RAW => payload.to_vec(),
                _ => previous.clone(),
            };
            if selector & FRAME_RELAYED != 0 {
                let (to, from) = (fx.responder.node_id(), fx.initiator.node_id());
                datagram = wire::relay_envelope(to, from, &datagram);
            }
            previous.clone_from(&datagram);
            if selector & FRAME_RACED != 0 {
                raced(&mut t, now, &datagram)
                    .iter()
                    .for_each(|outcome| reached.note(outcome));
            } else {
                reached.note(&receive(&mut t, now, &mut datagram));
            }
            reached.drain(&mut t);
        }
    }
    t.handle_timeout(now + Duration::from_secs(u64::from(ctrl >> 4)));
    reached.drain(&mut t);
    reached
}

/// What a datagram came to: the packet it yielded (`None`: handled), or the drop.
type Outcome = Result<Option<Vec<u8>>, DropReason>;

/// What [`Tunnel::begin_outside`] left to do with a datagram.
enum Step {
    Open(DataJob),
    Done(Outcome),
}

fn begin(t: &mut Tunnel, now: Instant, datagram: &mut [u8]) -> Step {
    match t.begin_outside(now, FROM, datagram) {
        Ok(Begun::Data(job)) => Step::Open(job),
        Ok(Begun::Handled(incoming)) => Step::Done(Ok(packet(incoming))),
        Err(reason) => Step::Done(Err(reason)),
    }
}

fn finish(t: &mut Tunnel, now: Instant, datagram: &mut [u8], step: Step) -> Outcome {
    match step {
        Step::Done(outcome) => outcome,
        Step::Open(job) => {
            let opened = job.open(datagram);
            t.finish_data(now, FROM, datagram, job, opened).map(packet)
        }
    }
}

fn packet(incoming: Incoming<'_>) -> Option<Vec<u8>> {
    match incoming {
        Incoming::Packet { packet, .. } => Some(packet.to_vec()),
        Incoming::Handled => None,
    }
}

/// One datagram through the tunnel the way an engine's packet worker hands it over.
fn receive(t: &mut Tunnel, now: Instant, datagram: &mut [u8]) -> Outcome {
    let before = t.stats().clone();
    let step = begin(t, now, datagram);
    let outcome = finish(t, now, datagram, step);
    assert_counted(&before, t.stats(), std::slice::from_ref(&outcome));
    outcome
}

/// Two copies of `datagram` through the tunnel as two packet workers that received it at
/// once: both are begun (checked against the replay window) before either finishes.
fn raced(t: &mut Tunnel, now: Instant, datagram: &[u8]) -> [Outcome; 2] {
    let before = t.stats().clone();
    let (mut first, mut second) = (datagram.to_vec(), datagram.to_vec());
    let steps = (begin(t, now, &mut first), begin(t, now, &mut second));
    let outcomes = [
        finish(t, now, &mut first, steps.0),
        finish(t, now, &mut second, steps.1),
    ];
    assert_counted(&before, t.stats(), &outcomes);
    assert!(
        !outcomes.iter().all(|o| matches!(o, Ok(Some(_)))),
        "both copies of a datagram came out as packets"
    );
    outcomes
}

/// Every drop among `outcomes` was counted under its reason between `before` and `after`.
fn assert_counted(before: &TunnelStats, after: &TunnelStats, outcomes: &[Outcome]) {
    for &reason in DropReason::ALL {
        let given = outcomes.iter().filter(|o| **o == Err(reason)).count() as u64;
        let counted = after.dropped(reason) - before.dropped(reason);
        assert!(
            counted >= given,
            "{given} datagrams dropped as {reason}, {counted} counted"
        );
    }
}

impl Reached {
    fn note(&mut self, outcome: &Outcome) {
        if let Ok(Some(_)) = outcome {
            self.packets += 1;
        }
    }

    /// Drains what the tunnel wants to send; returns the datagrams.
    fn drain(&mut self, t: &mut Tunnel) -> Vec<Vec<u8>> {
        while t.poll_event().is_some() {}
        let sent: Vec<Vec<u8>> = std::iter::from_fn(|| t.poll_transmit())
            .map(|tx| tx.bytes)
            .collect();
        for bytes in &sent {
            // A reply to a relayed message goes back in an envelope: count what it carries.
            let inner = match wire::parse(bytes) {
                Ok(Message::Relay(r)) => r.inner,
                _ => bytes,
            };
            match inner.first().copied() {
                Some(wire::TYPE_HANDSHAKE_RESPONSE) => self.handshake_responses += 1,
                Some(wire::TYPE_COOKIE_REPLY) => self.cookie_replies += 1,
                _ => self.data_sent += 1,
            }
        }
        sent
    }
}

/// Splits `rest` into up to three `length (u16 LE) | bytes` frames.
fn frames(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(3);
    while out.len() < 3 && rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let (frame, tail) = rest[2..].split_at(len.min(rest.len() - 2));
        out.push(frame);
        rest = tail;
    }
    out
}

/// Encodes `frames` for [`frames`].
fn encode_frames(ctrl: u8, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![ctrl];
    for f in frames {
        let len = u16::try_from(f.len()).expect("seed frames are short");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn seal(session: &mut Session, now: Instant, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; payload.len() + wire::DATA_OVERHEAD];
    buf[wire::DATA_HEADER_LEN..wire::DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
    match session.seal_in_place(now, kind, &mut buf, payload.len()) {
        Ok(n) => buf.truncate(n),
        Err(_) => buf.clear(),
    }
    buf
}

/// A handshake initiation from the fixed initiator to the fixed responder (correct mac1, a
/// fresh ephemeral key), and the initiator's state waiting for the response.
fn initiation() -> ([u8; wire::HANDSHAKE_INIT_LEN], handshake::Initiation) {
    let fx = fixture();
    let remote_macs = MacKeys::for_static(&fx.responder.public().x25519);
    let mut out = [0u8; wire::HANDSHAKE_INIT_LEN];
    let params = InitiationParams {
        nwid: fx.network_key.network_id(),
        local_secret: fx.initiator.x25519_secret(),
        remote_static: &fx.responder.public().x25519,
        remote_macs: &remote_macs,
        sender_index: INITIATOR_INDEX,
        timestamp: handshake::tai64n(UNIX_NOW),
        cookie: None,
    };
    let state = handshake::initiate(&params, &mut out).expect("fixed keys make a valid handshake");
    (out, state)
}

/// A real initiation addressed to the fixed responder: the responder seed.
pub fn responder_seed_initiation() -> Vec<u8> {
    initiation().0.to_vec()
}

/// Runs a handshake with `t` as the fixed initiator; returns the initiator's session.
fn handshake_as_initiator(t: &mut Tunnel, now: Instant, reached: &mut Reached) -> Option<Session> {
    let (mut msg, state) = initiation();
    receive(t, now, &mut msg).ok()?;
    let response = reached
        .drain(t)
        .into_iter()
        .find(|b| b.first() == Some(&wire::TYPE_HANDSHAKE_RESPONSE))?;
    let Ok(Message::HandshakeResponse(resp)) = wire::parse(&response) else {
        return None;
    };
    let keys = handshake::finish(state, &resp).ok()?;
    Some(Session::new(
        INITIATOR_INDEX,
        resp.sender_index,
        &keys.send,
        &keys.recv,
        true,
        now,
    ))
}

/// The seed corpus: `(target, file name, bytes)` for every target.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let fx = fixture();
    let now = Instant::now();
    let (responder_id, initiator_id) = (fx.responder.node_id(), fx.initiator.node_id());
    let init = responder_seed_initiation();
    let packet = ipv4_packet(INITIATOR_IP, RESPONDER_IP, b"hello over meshd");
    let mut probe = [0u8; 9];
    probe[0] = 1; // a probe request, id 1
    probe[1] = 1;

    // Real responses, cookie replies and transport messages from a real exchange.
    let mut t = fx.tunnel(now);
    let mut reached = Reached::default();
    let mut session = handshake_as_initiator(&mut t, now, &mut reached)
        .expect("the fixed initiator completes a handshake");
    let response = {
        let (mut msg, _) = initiation();
        let mut t = fx.tunnel(now);
        let _ = receive(&mut t, now, &mut msg);
        t.poll_transmit().expect("a handshake response").bytes
    };
    let cookie_reply = {
        let (mut msg, _) = initiation();
        let mut t = fx.tunnel(now);
        t.set_under_load(true);
        let _ = receive(&mut t, now, &mut msg);
        t.poll_transmit().expect("a cookie reply").bytes
    };
    let data = seal(&mut session, now, wire::TYPE_DATA, &packet);
    let keepalive = seal(&mut session, now, wire::TYPE_DATA, &[]);
    let probe_msg = seal(&mut session, now, wire::TYPE_PROBE, &probe);

    let config_bytes = codec::encode(&fx.config).expect("the fixture config encodes");
    let signed = SignedConfig::sign(&fx.network_key, &fx.config).expect("encodes");
    let mut empty = NetworkConfig::new(fx.network_key.network_id(), "");
    empty.sixplane = false;
    let empty = codec::encode(&empty).expect("encodes");

    // A source the initiator does not own, and an IPv6 packet from its RFC4193 address.
    let spoofed = ipv4_packet(Ipv4Addr::new(10, 147, 17, 99), RESPONDER_IP, b"spoofed");
    let nwid = fx.network_key.network_id();
    let mut v6 = vec![0u8; 48];
    v6[0] = 0x60;
    v6[8..24].copy_from_slice(&addr::rfc4193_addr(nwid, initiator_id).octets());
    v6[24..40].copy_from_slice(&addr::rfc4193_addr(nwid, responder_id).octets());
    let mut garbage_data = vec![0u8; wire::DATA_OVERHEAD + 8];
    wire::put_data_header(&mut garbage_data, wire::TYPE_DATA, 1, 0);

    let with = |selector: u8, payload: &[u8]| [&[selector][..], payload].concat();
    let session_frames = [
        with(FRAME_DATA, &packet),
        with(FRAME_PROBE, &probe),
        with(FRAME_REPLAY, &[]),
    ];
    let raced_frames = [
        with(FRAME_DATA | FRAME_RACED, &packet),
        with(FRAME_REPLAY | FRAME_RACED, &[]),
        with(FRAME_DATA | FRAME_RACED, &spoofed),
    ];
    let relayed_frames = [
        with(FRAME_DATA | FRAME_RELAYED, &v6),
        with(FRAME_DATA, &spoofed),
        with(FRAME_RAW, &init),
    ];
    let frame_refs = |f: &[Vec<u8>; 3]| -> Vec<u8> {
        let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
        encode_frames(CTRL_SESSION | (6 << 4), &refs)
    };

    vec![
        ("wire", "handshake-init", init.clone()),
        ("wire", "handshake-response", response.clone()),
        ("wire", "cookie-reply", cookie_reply.clone()),
        ("wire", "data", data),
        ("wire", "keepalive", keepalive),
        ("wire", "probe", probe_msg),
        (
            "wire",
            "relay-init",
            wire::relay_envelope(responder_id, initiator_id, &init),
        ),
        (
            "wire",
            "relay-response",
            wire::relay_envelope(initiator_id, responder_id, &response),
        ),
        ("config", "config", config_bytes.clone()),
        ("config", "empty-config", empty),
        ("config", "signed-config", signed.as_bytes().to_vec()),
        ("responder", "initiation", init.clone()),
        ("initiator", "answered", vec![1]),
        (
            "initiator",
            "answered-then-response-cookie-data",
            encode_frames(1, &[&response, &cookie_reply, &garbage_data]),
        ),
        (
            "reach",
            "reflect-then-relay-both-ways",
            encode_frames(
                0,
                &[
                    &reach_request(initiator_id, 2),
                    &wire::relay_envelope(initiator_id, responder_id, &response),
                    &wire::relay_envelope(responder_id, initiator_id, &init),
                ],
            )[1..]
                .to_vec(),
        ),
        (
            "responder",
            "relayed-initiation",
            wire::relay_envelope(responder_id, initiator_id, &init),
        ),
        (
            "responder",
            "initiation-then-data-then-replay",
            encode_frames(0, &[&init, &garbage_data, &init]),
        ),
        (
            "responder",
            "under-load",
            encode_frames(CTRL_UNDER_LOAD, &[&init, &cookie_reply]),
        ),
        (
            "responder",
            "session-packet-probe-replay",
            frame_refs(&session_frames),
        ),
        (
            "responder",
            "session-relayed-v6-spoofed-reinit",
            frame_refs(&relayed_frames),
        ),
        (
            "responder",
            "session-raced-packet-replay-spoofed",
            frame_refs(&raced_frames),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds_for(target: &str) -> Vec<(&'static str, Vec<u8>)> {
        seeds()
            .into_iter()
            .filter(|(t, _, _)| *t == target)
            .map(|(_, name, bytes)| (name, bytes))
            .collect()
    }

    #[test]
    fn fixed_secrets_make_valid_identities() {
        for secrets in [RESPONDER_SECRETS, INITIATOR_SECRETS] {
            let id = Identity::from_secrets(&secrets).unwrap();
            assert_eq!(id.public().node_id().unwrap(), id.node_id());
        }
        let fx = fixture();
        assert_ne!(fx.responder.node_id(), fx.initiator.node_id());
        assert_eq!(fx.config.members.len(), 2);
    }

    #[test]
    fn every_entry_point_runs_on_every_seed() {
        let seeds = seeds();
        assert!(seeds.len() < 50);
        for (_, _, bytes) in &seeds {
            for f in [wire, config, responder, initiator, reach] {
                f(bytes);
            }
            for len in [0, 1, bytes.len() / 2] {
                let cut = &bytes[..len];
                for f in [wire, config, responder, initiator, reach] {
                    f(cut);
                }
            }
        }
    }

    #[test]
    fn wire_seeds_are_every_message_type() {
        let mut kinds: Vec<u8> = seeds_for("wire")
            .iter()
            .map(|(name, b)| {
                wire::parse(b).unwrap_or_else(|e| panic!("{name}: {e}"));
                b[0]
            })
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn config_seeds_decode_and_verify() {
        let nwid = fixture().network_key.network_id();
        for (name, bytes) in seeds_for("config") {
            if name.starts_with("signed") {
                SignedConfig::from_bytes(bytes).verify(nwid).unwrap();
            } else {
                assert_eq!(
                    codec::encode(&codec::decode(&bytes).unwrap()).unwrap(),
                    bytes
                );
            }
        }
    }

    #[test]
    fn responder_seeds_get_past_mac1_and_noise() {
        let seeds = seeds_for("responder");
        let reached = |name: &str| {
            let (_, bytes) = seeds.iter().find(|(n, _)| *n == name).unwrap();
            run_responder(bytes)
        };
        assert_eq!(reached("initiation").handshake_responses, 1);
        // Its first byte (6) also selects the session mode: a second, harness-made handshake.
        assert_eq!(reached("relayed-initiation").handshake_responses, 2);
        let split = reached("initiation-then-data-then-replay");
        // The whole input is no message; the first frame answers, the replayed one is stale.
        assert_eq!(split.handshake_responses, 1);
        assert_eq!(reached("under-load").cookie_replies, 1);
        let session = reached("session-packet-probe-replay");
        assert_eq!(session.packets, 1);
        // Probe reply, then the timer's probe request after 6 s.
        assert!(session.data_sent >= 2, "{session:?}");
        let relayed = reached("session-relayed-v6-spoofed-reinit");
        assert_eq!(
            relayed.packets, 1,
            "the relayed v6 packet only: {relayed:?}"
        );
        let raced = reached("session-raced-packet-replay-spoofed");
        assert_eq!(raced.packets, 1, "not the replay, not the spoofed one");
    }

    #[test]
    fn initiator_seeds_complete_the_handshake() {
        for (name, bytes) in seeds_for("initiator") {
            let reached = run_initiator(&bytes);
            // The waiting packet left on the session the real answer made.
            assert!(reached.data_sent >= 1, "{name}: {reached:?}");
        }
    }

    #[test]
    fn reach_seed_reflects_and_relays_both_ways() {
        let (_, bytes) = seeds_for("reach").remove(0);
        let counted = run_reach(&bytes);
        assert_eq!(
            (counted.reflections, counted.relayed_packets),
            (3, 2),
            "{counted:?}"
        );
    }

    /// The committed corpus goes stale silently if the fixture or a format changes: regenerate
    /// it with the `fuzz_seeds` example when this fails.
    #[test]
    fn committed_corpus_is_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let read = |target: &str, name: &str| std::fs::read(dir.join(target).join(name)).unwrap();
        for (target, name, _) in seeds() {
            let bytes = read(target, name);
            match target {
                "wire" => assert!(wire::parse(&bytes).is_ok(), "{name}"),
                "config" if name.starts_with("signed") => {
                    let nwid = fixture().network_key.network_id();
                    SignedConfig::from_bytes(bytes).verify(nwid).unwrap();
                }
                "config" => assert!(codec::decode(&bytes).is_ok(), "{name}"),
                _ => {}
            }
        }
        let init = read("responder", "initiation");
        assert_eq!(run_responder(&init).handshake_responses, 1);
        let session = read("responder", "session-packet-probe-replay");
        assert_eq!(run_responder(&session).packets, 1);
    }

    #[test]
    fn frames_split_and_clamp() {
        let bytes = encode_frames(0, &[b"ab", b"", b"cde"]);
        assert_eq!(frames(&bytes[1..]), vec![&b"ab"[..], b"", b"cde"]);
        assert_eq!(frames(&[5, 0, 1, 2]), vec![&[1u8, 2][..]]);
        assert!(frames(&[9]).is_empty());
    }
}

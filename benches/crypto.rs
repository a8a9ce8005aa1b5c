//! Packet crypto and handshakes (the per-packet tunnel path is in `per_packet.rs`).
//!
//! * `seal/<size>`, `open/<size>`: [`Session::seal_in_place`] / [`Session::open_in_place`] on
//!   one data message of `size` payload bytes, in preallocated buffers.
//! * `handshake/full`: both sides of Noise IKpsk2 (initiate, read_initiation, respond,
//!   finish), with message parsing and mac1 checks; `handshake/responder`: what a responder
//!   spends on one valid initiation (parse, mac1, read_initiation, respond).
//!
//! The replay window accepts each counter once, so the opening benches seal fresh messages
//! in untimed chunks (`iter_custom`) and time only the opening of each chunk.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meshd_proto::handshake::{self, InitiationParams, MacKeys};
use meshd_proto::session::Session;
use meshd_proto::wire::{self, Message};
use meshd_proto::{Identity, NetworkId};

const SIZES: [usize; 4] = [64, 512, 1420, 8192];
/// Payload bytes sealed per untimed preparation chunk of the opening benches: small enough
/// that the chunk is still in L2 when it is opened, large enough that the two clock reads
/// per chunk are noise.
const CHUNK_BYTES: usize = 256 * 1024;

fn chunk_len(message_len: usize) -> usize {
    (CHUNK_BYTES / message_len).clamp(16, 4096)
}

fn session_pair(now: Instant) -> (Session, Session) {
    let (k1, k2) = ([0x11u8; 32], [0x22u8; 32]);
    (
        Session::new(1, 2, &k1, &k2, true, now),
        Session::new(2, 1, &k2, &k1, false, now),
    )
}

fn counter_of(msg: &[u8]) -> u64 {
    let mut c = [0u8; 8];
    c.copy_from_slice(&msg[8..16]);
    u64::from_le_bytes(c)
}

fn seal_open(c: &mut Criterion) {
    let now = Instant::now();

    let mut group = c.benchmark_group("seal");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let (mut tx, _) = session_pair(now);
            let mut buf = vec![0xa5u8; wire::DATA_OVERHEAD + size];
            b.iter(|| {
                let n = tx
                    .seal_in_place(now, wire::TYPE_DATA, black_box(&mut buf), size)
                    .expect("a fresh session seals into a buffer with room");
                black_box(n)
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("open");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let (mut tx, mut rx) = session_pair(now);
            let msg_len = wire::DATA_OVERHEAD + size;
            let mut chunk = vec![vec![0xa5u8; msg_len]; chunk_len(msg_len)];
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = usize::try_from(left).map_or(chunk.len(), |l| l.min(chunk.len()));
                    // Untimed: seal k messages with fresh, increasing counters.
                    for msg in &mut chunk[..k] {
                        let n = tx
                            .seal_in_place(now, wire::TYPE_DATA, msg, size)
                            .expect("a fresh session seals into a buffer with room");
                        debug_assert_eq!(n, msg_len);
                    }
                    let start = Instant::now();
                    for msg in &mut chunk[..k] {
                        let counter = counter_of(msg);
                        let n = rx
                            .open_in_place(now, black_box(msg), counter)
                            .expect("a message sealed by the peer opens");
                        assert_eq!(n, size);
                    }
                    elapsed += start.elapsed();
                    left -= k as u64;
                }
                elapsed
            });
        });
    }
    group.finish();
}

struct HandshakeSetup {
    nwid: NetworkId,
    initiator: Identity,
    responder: Identity,
    initiator_macs: MacKeys,
    responder_macs: MacKeys,
}

impl HandshakeSetup {
    fn new() -> Self {
        let (initiator, responder) = (Identity::generate_unproven(), Identity::generate_unproven());
        Self {
            nwid: NetworkId::from_u64(0x8056_c2e2_1c00_0001),
            initiator_macs: MacKeys::for_static(&initiator.public().x25519),
            responder_macs: MacKeys::for_static(&responder.public().x25519),
            initiator,
            responder,
        }
    }

    fn initiate(
        &self,
        out: &mut [u8; wire::HANDSHAKE_INIT_LEN],
    ) -> Result<handshake::Initiation, handshake::HandshakeError> {
        handshake::initiate(
            &InitiationParams {
                nwid: self.nwid,
                local_secret: self.initiator.x25519_secret(),
                remote_static: &self.responder.public().x25519,
                remote_macs: &self.responder_macs,
                sender_index: 7,
                timestamp: handshake::tai64n(Duration::from_secs(1_700_000_000)),
                cookie: None,
            },
            out,
        )
    }

    /// The responder's work on one initiation: parse, mac1, Noise read, Noise write.
    fn respond(
        &self,
        init_msg: &[u8; wire::HANDSHAKE_INIT_LEN],
        out: &mut [u8; wire::HANDSHAKE_RESPONSE_LEN],
    ) -> handshake::SessionKeys {
        let Ok(Message::HandshakeInit(parsed)) = wire::parse(init_msg) else {
            panic!("initiate wrote something that is not an initiation");
        };
        assert!(handshake::mac_eq(
            &self.responder_macs.mac1(parsed.before_mac1),
            parsed.mac1
        ));
        let received =
            handshake::read_initiation(self.nwid, self.responder.x25519_secret(), &parsed)
                .expect("a valid initiation for our network reads");
        handshake::respond(received, 9, &self.initiator_macs, out)
            .expect("an accepted initiation gets a response")
    }
}

fn handshakes(c: &mut Criterion) {
    let setup = HandshakeSetup::new();
    let mut group = c.benchmark_group("handshake");

    group.bench_function("full", |b| {
        b.iter(|| {
            let mut init_msg = [0u8; wire::HANDSHAKE_INIT_LEN];
            let init = setup
                .initiate(&mut init_msg)
                .expect("initiation to a known static key builds");
            let mut resp_msg = [0u8; wire::HANDSHAKE_RESPONSE_LEN];
            let responder_keys = setup.respond(black_box(&init_msg), &mut resp_msg);
            let Ok(Message::HandshakeResponse(parsed)) = wire::parse(black_box(&resp_msg)) else {
                panic!("respond wrote something that is not a response");
            };
            assert!(handshake::mac_eq(
                &setup.initiator_macs.mac1(parsed.before_mac1),
                parsed.mac1
            ));
            let initiator_keys =
                handshake::finish(init, &parsed).expect("the responder's answer completes");
            assert_eq!(initiator_keys.send, responder_keys.recv);
            black_box((initiator_keys, responder_keys))
        });
    });

    // read_initiation keeps no state (the newest-timestamp check lives in the Tunnel), so one
    // initiation can be answered again and again; respond draws a fresh ephemeral each time.
    let mut init_msg = [0u8; wire::HANDSHAKE_INIT_LEN];
    setup
        .initiate(&mut init_msg)
        .expect("initiation to a known static key builds");
    group.bench_function("responder", |b| {
        b.iter(|| {
            let mut resp_msg = [0u8; wire::HANDSHAKE_RESPONSE_LEN];
            let keys = setup.respond(black_box(&init_msg), &mut resp_msg);
            black_box((keys, resp_msg))
        });
    });
    group.finish();
}

/// What one try at a chosen node id costs: the memory-hard hash behind node ids, next to one
/// plain Blake2s over a key (what a try cost when ids were a plain hash). Claiming a chosen
/// id takes 2^(40 + WORK_BITS) tries; the ratio of these two times says how much more that
/// is than the 2^40 plain hashes it used to take.
fn node_ids(c: &mut Criterion) {
    let public = *Identity::generate_unproven().public();
    let mut group = c.benchmark_group("node_id");
    group.bench_function("memory_hard", |b| {
        b.iter(|| meshd_proto::identity::node_digest(black_box(&public)))
    });
    group.bench_function("plain_blake2s", |b| {
        b.iter(|| meshd_proto::identity::network_id_for(black_box(&public.ed25519)))
    });
    group.finish();
}

criterion_group!(benches, seal_open, handshakes, node_ids);
criterion_main!(benches);

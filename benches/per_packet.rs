//! The per-packet path in process, as the data plane runs it, with and without the cipher.
//!
//! * `per_packet/outbound/<cipher>/<size>`: `Tunnel::prepare_in_place` and `Seal::seal` on
//!   one IPv4 packet lying in a TUN read slot: managed-route lookup, session choice,
//!   counter, frame and seal, no copy.
//! * `per_packet/inbound/<cipher>/<size>`: `Tunnel::begin_outside`, `DataJob::open` and
//!   `Tunnel::finish_data` on one datagram: parse, session lookup, replay window, open, and
//!   the source-address check.
//!
//! `<cipher>` is `chacha20poly1305` (ring, as the node runs) or `null` (feature
//! `null-crypto`: a zero tag and no encryption), so `chacha20poly1305 - null` is what the
//! cipher costs and `null` is what the rest of the path costs. The transport (syscalls,
//! batching, offloads) is measured by `benches/netns` on real devices.
//!
//! Sealing overwrites the packet and the replay window takes each counter once, so every
//! iteration gets a fresh input prepared outside the timed section (`iter_batched_ref` for
//! outbound, untimed sealing of chunks for inbound).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meshd_benches::TunnelPair;
use meshd_proto::tunnel::{Begun, Incoming, Prepared};
use meshd_proto::wire;

/// The packet of the netns benchmark's UDP row (20 IP + 8 UDP + 64 payload bytes), and a
/// full packet at the default 1420-byte MTU.
const SIZES: [usize; 2] = [92, 1420];
/// Datagrams sealed per untimed chunk of the inbound bench.
const CHUNK: usize = 256;

/// A bench name and how to make the pair it runs on.
type Cipher = (&'static str, fn() -> TunnelPair);

fn ciphers() -> [Cipher; 2] {
    [
        ("chacha20poly1305", TunnelPair::new),
        ("null", without_crypto),
    ]
}

/// The pair on the null cipher: what is left is the packet path itself.
fn without_crypto() -> TunnelPair {
    let mut pair = TunnelPair::new();
    pair.sender.disable_crypto();
    pair.receiver.disable_crypto();
    pair
}

/// A TUN read slot holding `packet` at the data header's offset, with room for the tag.
fn slot(packet: &[u8]) -> Vec<u8> {
    let mut slot = vec![0u8; wire::DATA_HEADER_LEN + packet.len() + wire::TAG_LEN];
    slot[wire::DATA_HEADER_LEN..][..packet.len()].copy_from_slice(packet);
    slot
}

fn seal(pair: &mut TunnelPair, buf: &mut [u8], len: usize) -> usize {
    match pair.sender.prepare_in_place(pair.now, buf, len) {
        Ok(Prepared::Ready { seal, .. }) => seal.seal(buf).expect("a prepared slot seals"),
        other => panic!("the session is established, yet preparing gave {other:?}"),
    }
}

fn outbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_packet/outbound");
    for (cipher, make) in ciphers() {
        for size in SIZES {
            let mut pair = make();
            let template = slot(&pair.packet(size));
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(cipher, size), &size, |b, &size| {
                b.iter_batched_ref(
                    || template.clone(),
                    |buf| black_box(seal(&mut pair, black_box(buf), size)),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

fn inbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_packet/inbound");
    for (cipher, make) in ciphers() {
        for size in SIZES {
            let mut pair = make();
            let template = slot(&pair.packet(size));
            let mut chunk = vec![template.clone(); CHUNK];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(cipher, size), &size, |b, &size| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let k = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
                        // Untimed: k datagrams with fresh counters.
                        for d in &mut chunk[..k] {
                            d.copy_from_slice(&template);
                            let n = seal(&mut pair, d, size);
                            debug_assert_eq!(n, d.len());
                        }
                        let (now, from) = (pair.now, pair.sender_address);
                        let start = Instant::now();
                        for d in &mut chunk[..k] {
                            let d = black_box(d);
                            let receiver = &mut pair.receiver;
                            let Ok(Begun::Data(job)) = receiver.begin_outside(now, from, d) else {
                                panic!("a sealed packet is not a data job");
                            };
                            let opened = job.open(d);
                            match receiver.finish_data(now, from, d, job, opened) {
                                Ok(Incoming::Packet { packet, .. }) => {
                                    assert_eq!(packet.len(), size);
                                }
                                other => panic!("a sealed packet did not come out: {other:?}"),
                            }
                        }
                        elapsed += start.elapsed();
                        left -= k as u64;
                    }
                    elapsed
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, outbound, inbound);
criterion_main!(benches);

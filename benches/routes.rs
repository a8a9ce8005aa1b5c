//! Destination lookups in the managed-routes table, against `prefix_trie::PrefixMap` as a
//! reference on the same entries and probes.
//!
//! Every bench runs a batch of 1024 pre-generated lookups per iteration
//! (`Throughput::Elements(1024)`), cycling through 64 different batches so the branch
//! predictor cannot learn one. Half of the probes hit (a random address inside a random
//! entry), half miss (random addresses no entry covers), shuffled.
//!
//! * `route_v4/{route_table,prefix_map}/<n>`: `n` IPv4 entries, roughly half member /32s and
//!   half container /24s drawn from 10.0.0.0/8, plus three managed routes (/16, /20, /28).
//! * `route_v6/{route_table,prefix_map}/<n>`: `n` member /128s in 2001:db8::/32.
//! * `sixplane/<n>`: 6PLANE destinations with `n` members; no prefix entries, the owner is read
//!   from the address bits and checked against the member set. Misses are 6PLANE addresses of
//!   non-members.

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ipnet::{Ipv4Net, Ipv6Net};
use meshd_proto::sim::Rng;
use meshd_proto::{NetworkId, NodeId, RouteTable, addr};
use prefix_trie::PrefixMap;

const SIZES: [usize; 3] = [10, 1_000, 100_000];
const BATCH: usize = 1024;
const BATCHES: usize = 64;
const NWID: NetworkId = NetworkId::from_u64(0x8056_c2e2_1c00_0001);

fn node(i: usize) -> NodeId {
    NodeId::new(0x10_0000_0000 + i as u64).expect("small offsets from 0x1000000000 are valid ids")
}

/// Probes for one table: the addresses, and whether each was generated to hit.
struct Probes<A> {
    addrs: Vec<A>,
    hits: usize,
}

impl<A: Copy> Probes<A> {
    /// `BATCHES * BATCH` probes; each is a hit with probability 1/2.
    fn generate(
        rng: &mut Rng,
        mut hit: impl FnMut(&mut Rng) -> A,
        mut miss: impl FnMut(&mut Rng) -> A,
    ) -> Self {
        let mut addrs = Vec::with_capacity(BATCHES * BATCH);
        let mut hits = 0;
        for _ in 0..BATCHES * BATCH {
            if rng.next_u64() & 1 == 0 {
                addrs.push(hit(rng));
                hits += 1;
            } else {
                addrs.push(miss(rng));
            }
        }
        Self { addrs, hits }
    }

    /// The next batch of `BATCH` probes, cycling.
    fn batch(&self, i: &mut usize) -> &[A] {
        let at = *i * BATCH;
        *i = (*i + 1) % BATCHES;
        &self.addrs[at..at + BATCH]
    }
}

/// `n` IPv4 entries: three managed routes, then members' /32s and containers' /24s.
fn v4_entries(n: usize, rng: &mut Rng) -> Vec<(Ipv4Net, NodeId)> {
    let managed = [
        Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
        Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 16, 0), 20),
        Ipv4Net::new_assert(Ipv4Addr::new(10, 200, 0, 16), 28),
    ];
    let rest = n - managed.len();
    let (members, containers) = (rest.div_ceil(2), rest / 2);
    let mut entries = Vec::with_capacity(n);
    let mut seen = HashSet::new();
    while entries.len() < members {
        // Random distinct /32 members in 10.0.0.0/8.
        let a = Ipv4Addr::from(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff));
        let net = Ipv4Net::new_assert(a, 32);
        if seen.insert(net) {
            entries.push((net, node(entries.len())));
        }
    }
    for i in 0..containers {
        // Random distinct container /24s in 10.0.0.0/8 (65 536 exist), one per member.
        loop {
            let a = Ipv4Addr::from(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ff00));
            let net = Ipv4Net::new_assert(a, 24);
            if seen.insert(net) {
                entries.push((net, node(i % members)));
                break;
            }
        }
    }
    for (i, net) in managed.into_iter().enumerate() {
        entries.push((net, node(i % members)));
    }
    assert_eq!(entries.len(), n);
    entries
}

fn random_inside_v4(net: Ipv4Net, rng: &mut Rng) -> Ipv4Addr {
    let host = rng.next_u64() as u32 & u32::from(net.hostmask());
    Ipv4Addr::from(u32::from(net.network()) | host)
}

fn route_v4(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_v4");
    group.throughput(Throughput::Elements(BATCH as u64));
    for n in SIZES {
        let mut rng = Rng::new(0x5eed_0000 + n as u64);
        let entries = v4_entries(n, &mut rng);
        let mut table = RouteTable::new(NWID, true, true);
        let mut trie: PrefixMap<Ipv4Net, u64> = PrefixMap::new();
        for &(net, owner) in &entries {
            table.add_member(owner);
            table.insert(net.into(), owner);
            trie.insert(net, owner.as_u64());
        }
        assert_eq!(table.len(), n);
        let probes = Probes::generate(
            &mut rng,
            |rng| {
                let (net, _) = entries[rng.next_u64() as usize % entries.len()];
                random_inside_v4(net, rng)
            },
            |rng| loop {
                let a = Ipv4Addr::from(rng.next_u64() as u32);
                if trie.get_lpm(&Ipv4Net::from(a)).is_none() {
                    break a;
                }
            },
        );
        // Outside the timed loops: both structures agree on every probe, and half hit.
        let mut hits = 0;
        for &a in &probes.addrs {
            let ours = table.lookup(IpAddr::V4(a)).map(NodeId::as_u64);
            let theirs = trie.get_lpm(&Ipv4Net::from(a)).map(|(_, v)| *v);
            assert_eq!(ours, theirs, "RouteTable and PrefixMap disagree on {a}");
            hits += usize::from(ours.is_some());
        }
        assert_eq!(hits, probes.hits);

        group.bench_with_input(BenchmarkId::new("route_table", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                for &a in probes.batch(&mut i) {
                    black_box(table.lookup(IpAddr::V4(black_box(a))));
                }
            });
        });
        let trie_probes: Vec<Ipv4Net> = probes.addrs.iter().map(|&a| Ipv4Net::from(a)).collect();
        let trie_probes = Probes {
            addrs: trie_probes,
            hits: probes.hits,
        };
        group.bench_with_input(BenchmarkId::new("prefix_map", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                for a in trie_probes.batch(&mut i) {
                    black_box(trie.get_lpm(black_box(a)).map(|(_, v)| *v));
                }
            });
        });
    }
    group.finish();
}

fn route_v6(c: &mut Criterion) {
    const DOC: u128 = 0x2001_0db8 << 96;
    let mut group = c.benchmark_group("route_v6");
    group.throughput(Throughput::Elements(BATCH as u64));
    for n in SIZES {
        let mut rng = Rng::new(0x6eed_0000 + n as u64);
        let mut seen = HashSet::new();
        let mut members = Vec::with_capacity(n);
        while members.len() < n {
            // Members spread over 2001:db8::/32.
            let a = Ipv6Addr::from(
                DOC | (u128::from(rng.next_u64()) << 32) | u128::from(rng.next_u64()),
            );
            if seen.insert(a) {
                members.push((a, node(members.len())));
            }
        }
        // Formula lookups off, so every destination goes to the /128 table.
        let mut table = RouteTable::new(NWID, false, false);
        let mut trie: PrefixMap<Ipv6Net, u64> = PrefixMap::new();
        for &(a, owner) in &members {
            table.add_member(owner);
            table.insert(IpAddr::V6(a).into(), owner);
            trie.insert(Ipv6Net::from(a), owner.as_u64());
        }
        assert_eq!(table.len(), n);
        let probes = Probes::generate(
            &mut rng,
            |rng| members[rng.next_u64() as usize % members.len()].0,
            |rng| loop {
                let a = Ipv6Addr::from(
                    DOC | (u128::from(rng.next_u64()) << 32) | u128::from(rng.next_u64()),
                );
                if !seen.contains(&a) {
                    break a;
                }
            },
        );
        let mut hits = 0;
        for &a in &probes.addrs {
            let ours = table.lookup(IpAddr::V6(a)).map(NodeId::as_u64);
            let theirs = trie.get_lpm(&Ipv6Net::from(a)).map(|(_, v)| *v);
            assert_eq!(ours, theirs, "RouteTable and PrefixMap disagree on {a}");
            hits += usize::from(ours.is_some());
        }
        assert_eq!(hits, probes.hits);

        group.bench_with_input(BenchmarkId::new("route_table", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                for &a in probes.batch(&mut i) {
                    black_box(table.lookup(IpAddr::V6(black_box(a))));
                }
            });
        });
        let trie_probes = Probes {
            addrs: probes.addrs.iter().map(|&a| Ipv6Net::from(a)).collect(),
            hits: probes.hits,
        };
        group.bench_with_input(BenchmarkId::new("prefix_map", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                for a in trie_probes.batch(&mut i) {
                    black_box(trie.get_lpm(black_box(a)).map(|(_, v)| *v));
                }
            });
        });
    }
    group.finish();
}

fn sixplane(c: &mut Criterion) {
    let mut group = c.benchmark_group("sixplane");
    group.throughput(Throughput::Elements(BATCH as u64));
    for n in SIZES {
        let mut rng = Rng::new(0x7eed_0000 + n as u64);
        let mut table = RouteTable::new(NWID, true, false);
        let members: Vec<NodeId> = (0..n).map(node).collect();
        for &m in &members {
            table.add_member(m);
        }
        assert!(table.is_empty(), "6PLANE needs no prefix entries");
        // A random container address in a node's /80.
        let container = |rng: &mut Rng, id: NodeId| {
            let host = u128::from(rng.next_u64() & 0xffff_ffff_ffff);
            Ipv6Addr::from(u128::from(addr::sixplane_node_prefix(NWID, id).network()) | host)
        };
        let probes = Probes::generate(
            &mut rng,
            |rng| {
                let id = members[rng.next_u64() as usize % n];
                container(rng, id)
            },
            // Inside the network's /40, but the node is not a member.
            |rng| {
                let id = node(n + (rng.next_u64() % 1_000_000) as usize);
                container(rng, id)
            },
        );
        let mut hits = 0;
        for &a in &probes.addrs {
            let owner = table.lookup(IpAddr::V6(a));
            if let Some(owner) = owner {
                assert!(addr::sixplane_node_prefix(NWID, owner).contains(&a));
            }
            hits += usize::from(owner.is_some());
        }
        assert_eq!(hits, probes.hits);

        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                for &a in probes.batch(&mut i) {
                    black_box(table.lookup(IpAddr::V6(black_box(a))));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, route_v4, route_v6, sixplane);
criterion_main!(benches);

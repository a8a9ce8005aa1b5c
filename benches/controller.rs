//! Controller costs that grow with the network: building and signing the config, and its size.
//!
//! `config/sign/<members>` is what a replica spends per push after every change; the encoded
//! size is printed once per size (it is what every node downloads per revision).

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use meshd_controller::state::{Command, ControllerState, NetworkSpec};
use meshd_proto::{Identity, NetworkId, NetworkKey};

/// A network with `members` authorized members, each with an endpoint, from big enough pools.
pub fn network_with(members: usize) -> (ControllerState, NetworkId) {
    let mut state = ControllerState::default();
    let spec = NetworkSpec {
        key_seed: [9; 32],
        name: "bench".into(),
        v4_pools: vec!["10.0.0.0/16".parse().expect("valid pool")],
        container_pool: "10.128.0.0/9".parse().expect("valid pool"),
        container_prefix: 24,
        sixplane: true,
        rfc4193: true,
        mtu: 1420,
        at_ms: 0,
    };
    state
        .apply(&Command::CreateNetwork(spec))
        .expect("network created");
    let network = NetworkKey::from_seed(&[9; 32])
        .expect("valid seed")
        .network_id();
    for i in 0..members {
        let id = Identity::generate_unproven();
        let port = 9993 + u16::try_from(i % 1000).expect("small");
        state
            .apply(&Command::MemberJoin {
                network,
                node: id.node_id(),
                identity: *id.public(),
                physical: Some(SocketAddr::from(([198, 51, 100, 7], port))),
                local: vec![SocketAddr::from(([10, 1, 2, 3], 9993))],
                at_ms: 1,
            })
            .expect("join");
        state
            .apply(&Command::Authorize {
                network,
                node: id.node_id(),
                at_ms: 2,
            })
            .expect("authorize");
    }
    (state, network)
}

fn config(c: &mut Criterion) {
    let mut group = c.benchmark_group("config");
    group.sample_size(10);
    for members in [1_000usize, 10_000] {
        let (state, network) = network_with(members);
        let net = state.network(network).expect("network exists");
        let signed = net.signed_config();
        eprintln!(
            "config with {members} members: {} bytes signed ({:.1} bytes per member)",
            signed.as_bytes().len(),
            signed.as_bytes().len() as f64 / members as f64
        );
        group.bench_with_input(BenchmarkId::new("sign", members), &members, |b, _| {
            b.iter(|| black_box(net.signed_config()))
        });
        group.bench_with_input(BenchmarkId::new("verify", members), &members, |b, _| {
            b.iter(|| black_box(signed.verify(network).expect("verifies")))
        });
    }
    group.finish();
}

criterion_group!(benches, config);
criterion_main!(benches);

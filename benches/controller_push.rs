//! Authorize → push round trips through one real replica: an admin authorizes a member
//! (a raft write, fsynced), the replica signs the new config and pushes it over QUIC to a
//! connected member, which receives and decodes it. The network holds 1 000 members.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use meshd_channel::{ChannelClient, ControllerMessage};
use meshd_controller::channel;
use meshd_controller::controller::Controller;
use meshd_controller::raft::ReplicaCredentials;
use meshd_controller::replica::Replica;
use meshd_controller::state::{Command, NetworkSpec};
use meshd_proto::{Identity, NetworkId, NetworkKey};

const MEMBERS: usize = 1_000;

struct Setup {
    replica: Replica,
    network: NetworkId,
    watcher: ChannelClient,
    _dir: tempfile::TempDir,
}

async fn join_and_authorize(replica: &Replica, network: NetworkId, id: &Identity) -> u64 {
    replica
        .write(Command::MemberJoin {
            network,
            node: id.node_id(),
            identity: *id.public(),
            physical: Some(SocketAddr::from(([198, 51, 100, 1], 9993))),
            local: vec![],
            at_ms: 1,
        })
        .await
        .expect("join applies");
    match replica
        .write(Command::Authorize {
            network,
            node: id.node_id(),
            at_ms: 2,
        })
        .await
        .expect("authorize applies")
    {
        meshd_controller::state::Applied::Member { revision, .. } => revision,
        other => panic!("unexpected {other:?}"),
    }
}

/// Waits for a pushed config of at least `revision`.
async fn await_revision(client: &mut ChannelClient, revision: u64) {
    loop {
        match client.recv().await.expect("channel up") {
            ControllerMessage::Config { revision: r, .. } if r >= revision => return,
            _ => continue,
        }
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = Replica::open(
        dir.path(),
        1,
        "http://127.0.0.1:9".into(),
        ReplicaCredentials::generate(),
    )
    .await
    .expect("replica opens");
    let spec = NetworkSpec {
        key_seed: [5; 32],
        name: "bench".into(),
        v4_pools: vec!["10.0.0.0/16".parse().expect("pool")],
        container_pool: "10.128.0.0/9".parse().expect("pool"),
        container_prefix: 24,
        sixplane: true,
        rfc4193: true,
        mtu: 1420,
        at_ms: 0,
    };
    replica
        .write(Command::CreateNetwork(spec))
        .await
        .expect("network");
    let network = NetworkKey::from_seed(&[5; 32]).expect("seed").network_id();
    let started = Instant::now();
    let watcher_id = Identity::generate();
    join_and_authorize(&replica, network, &watcher_id).await;
    for _ in 1..MEMBERS {
        join_and_authorize(&replica, network, &Identity::generate_unproven()).await;
    }
    eprintln!(
        "set up {MEMBERS} members in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let endpoint =
        channel::endpoint("127.0.0.1:0".parse().expect("addr"), &[6; 32]).expect("endpoint");
    let addr = endpoint.local_addr().expect("bound");
    tokio::spawn(channel::serve(endpoint, replica.clone()));
    let mut watcher = ChannelClient::connect(addr, &watcher_id, 9993, vec![])
        .await
        .expect("connects");
    watcher.join(network, 0).await.expect("join");
    await_revision(&mut watcher, 1).await;
    Setup {
        replica,
        network,
        watcher,
        _dir: dir,
    }
}

fn authorize_push(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut s = rt.block_on(setup());
    let mut group = c.benchmark_group("controller");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(format!("authorize_push/{MEMBERS}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let id = Identity::generate_unproven();
                    s.replica
                        .write(Command::MemberJoin {
                            network: s.network,
                            node: id.node_id(),
                            identity: *id.public(),
                            physical: None,
                            local: vec![],
                            at_ms: 3,
                        })
                        .await
                        .expect("join");
                    let t = Instant::now();
                    let revision = match s
                        .replica
                        .write(Command::Authorize {
                            network: s.network,
                            node: id.node_id(),
                            at_ms: 4,
                        })
                        .await
                        .expect("authorize")
                    {
                        meshd_controller::state::Applied::Member { revision, .. } => revision,
                        other => panic!("unexpected {other:?}"),
                    };
                    await_revision(&mut s.watcher, revision).await;
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, authorize_push);
criterion_main!(benches);

//! The node daemon against real controller replicas over the node channel (QUIC on
//! 127.0.0.1), with a data plane that only records what it is asked: how a node learns every
//! replica of a network, fails over, and never goes back to an older config.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use meshd_controller::channel;
use meshd_controller::controller::{Controller, InMemoryController, WriteError};
use meshd_controller::state::{Applied, Command, ControllerState, NetworkSpec};
use meshd_node::daemon::client::DaemonClient;
use meshd_node::daemon::no_dataplane::{DataplaneCall, NoDataplane};
use meshd_node::daemon::state::StateDir;
use meshd_node::daemon::{DaemonOptions, run};
use meshd_proto::{NetworkId, NetworkKey, NodeId};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);

/// A controller state served by one "replica", reporting the addresses of all of them.
#[derive(Debug, Clone)]
struct Replicated {
    state: InMemoryController,
    replicas: Vec<String>,
}

impl Controller for Replicated {
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Applied, WriteError>> + Send {
        self.state.write(cmd)
    }

    fn read<T>(&self, f: impl FnOnce(&ControllerState) -> T) -> T {
        self.state.read(f)
    }

    fn applied(&self) -> watch::Receiver<u64> {
        self.state.applied()
    }

    fn replica_addresses(&self) -> Vec<String> {
        self.replicas.clone()
    }
}

fn revision(ctl: &InMemoryController, network: NetworkId) -> u64 {
    ctl.read(|s| s.networks[&network].revision)
}

/// Renames the member until the network's revision passes `above`.
async fn bump_past(ctl: &InMemoryController, network: NetworkId, node: NodeId, above: u64) {
    let mut i = 0;
    while revision(ctl, network) <= above {
        i += 1;
        ctl.write(Command::RenameMember {
            network,
            node,
            name: format!("n{i}"),
        })
        .await
        .expect("a rename is a valid write");
    }
}

async fn answering(client: &DaemonClient) {
    for _ in 0..200 {
        match client.status().await {
            Ok(_) => return,
            Err(e) if e.no_daemon() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the daemon does not answer");
}

async fn wait_status(
    client: &DaemonClient,
    what: &str,
    within: Duration,
    done: impl Fn(&meshd_node::daemon::api::StatusView) -> bool,
) -> meshd_node::daemon::api::StatusView {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = client.status().await.expect("the daemon answers");
        if done(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon on `state` with one controller `address`, on `dp`; stop it with the sender.
fn start_daemon(
    state: StateDir,
    address: &str,
    dp: &Arc<NoDataplane>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let opts = DaemonOptions {
        state,
        port: 0,
        controllers: vec![address.parse().expect("host:port")],
        configure_forwarding: false,
        relay: false,
        hostname: String::new(),
        metrics_listen: None,
        ipv6_prefix: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run(opts, Arc::clone(dp), async {
        let _ = stop_rx.await;
    }));
    (stop_tx, daemon)
}

/// Two replicas serving the same network, A ahead of B: the node, given only A, learns
/// B, fails over to it within a second when A goes away, is not rolled back by B's older
/// revision, takes B's config once B moves past it, and after a restart with only A (dead)
/// still finds B from the state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_learns_every_replica_fails_over_and_never_goes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::open(tmp.path()).unwrap();
    let identity = *state.identity().public();
    let node = state.identity().node_id();
    let key = NetworkKey::from_seed(&[11; 32]).unwrap();
    let network = key.network_id();

    let ep_a = channel::endpoint("127.0.0.1:0".parse().unwrap(), &[1; 32]).unwrap();
    let ep_b = channel::endpoint("127.0.0.1:0".parse().unwrap(), &[2; 32]).unwrap();
    let (a, b) = (ep_a.local_addr().unwrap(), ep_b.local_addr().unwrap());
    let replicas = vec![a.to_string(), b.to_string()];
    let (ctl_a, ctl_b) = (InMemoryController::default(), InMemoryController::default());
    for ctl in [&ctl_a, &ctl_b] {
        assert_eq!(served_network(ctl, 11, identity).await, network);
    }
    // B lags well behind A (its own MemberJoin may bump it once or twice).
    bump_past(&ctl_a, network, node, revision(&ctl_b, network) + 10).await;
    let rev_a = revision(&ctl_a, network);
    for (ep, ctl) in [(&ep_a, &ctl_a), (&ep_b, &ctl_b)] {
        let served = Replicated {
            state: ctl.clone(),
            replicas: replicas.clone(),
        };
        tokio::spawn(channel::serve(ep.clone(), served));
    }

    let dp = Arc::new(NoDataplane::new(node));
    let (stop_tx, daemon) = start_daemon(state, &a.to_string(), &dp);
    let client = DaemonClient::new(tmp.path());
    answering(&client).await;
    client.join(network, None).await.unwrap();
    let status = wait_status(&client, "A's config and B learned", WAIT, |s| {
        s.networks[0].revision == Some(rev_a) && s.controllers.len() == 2
    })
    .await;
    let (a, b) = (a.to_string(), b.to_string());
    assert_eq!(status.controller.as_deref(), Some(a.as_str()));
    assert_eq!(status.controllers_unreachable_for_s, None);
    let shown: Vec<(&str, bool, bool)> = status
        .controllers
        .iter()
        .map(|c| (c.address.as_str(), c.connected, c.learned))
        .collect();
    assert_eq!(
        shown,
        vec![(a.as_str(), true, false), (b.as_str(), false, true)]
    );
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join(meshd_node::daemon::state::CONTROLLERS_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["learned"][&a], serde_json::json!([a, b]));

    // A session that lasted, then A goes away: B within a second, and B's older
    // revision does not roll the node back.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    ep_a.close(3u32.into(), b"going away");
    drop(ep_a);
    let lost = std::time::Instant::now();
    wait_status(&client, "failover to B", WAIT, |s| {
        s.controller.as_deref() == Some(b.as_str())
    })
    .await;
    let took = lost.elapsed();
    eprintln!("failover took {took:?}");
    assert!(took < Duration::from_millis(1500), "failover took {took:?}");
    assert!(revision(&ctl_b, network) < rev_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = client.status().await.unwrap();
    assert_eq!(status.controller.as_deref(), Some(b.as_str()));
    assert_eq!(status.networks[0].revision, Some(rev_a));
    assert_eq!(
        status.networks[0].status,
        meshd_node::daemon::api::NetworkStatus::Ok
    );
    assert!(
        dp.calls().iter().all(|c| match c {
            DataplaneCall::Join { revision, .. } | DataplaneCall::Update { revision, .. } =>
                *revision <= rev_a,
            DataplaneCall::Leave { .. } => false,
        }),
        "{:?}",
        dp.calls()
    );

    // B moves past A: its config is taken.
    bump_past(&ctl_b, network, node, rev_a).await;
    let rev_b = revision(&ctl_b, network);
    wait_status(&client, "B's newer config", WAIT, |s| {
        s.networks[0].revision == Some(rev_b)
    })
    .await;
    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();

    // Restarted with only A, which now swallows every packet: B is known from the state
    // directory, and is tried a second after A did not answer.
    let _blackhole = std::net::UdpSocket::bind(&a).expect("A's port is free again");
    let (stop_tx, daemon) = start_daemon(StateDir::open(tmp.path()).unwrap(), &a, &dp);
    let restarted = std::time::Instant::now();
    answering(&client).await;
    let status = client.status().await.unwrap();
    assert_eq!(status.networks[0].revision, Some(rev_b));
    assert_eq!(status.controllers.len(), 2, "{status:#?}");
    assert!(status.controllers[1].learned);
    let status = wait_status(&client, "B after the restart", WAIT, |s| {
        s.controller.as_deref() == Some(b.as_str())
    })
    .await;
    let took = restarted.elapsed();
    eprintln!("B reached {took:?} after the restart");
    assert!(took < Duration::from_secs(3), "B reached after {took:?}");
    assert_eq!(status.networks[0].revision, Some(rev_b));
    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();
}

/// The network of key seed `[seed; 32]` in `ctl`, with the node of `identity` authorized.
async fn served_network(
    ctl: &InMemoryController,
    seed: u8,
    identity: meshd_proto::PublicIdentity,
) -> NetworkId {
    let network = NetworkKey::from_seed(&[seed; 32])
        .expect("valid")
        .network_id();
    let spec = NetworkSpec {
        key_seed: [seed; 32],
        name: format!("net-{seed}"),
        v4_pools: vec!["10.147.17.0/24".parse().expect("valid")],
        container_pool: "172.28.0.0/22".parse().expect("valid"),
        container_prefix: 24,
        sixplane: false,
        rfc4193: false,
        mtu: 1420,
        at_ms: 1,
    };
    ctl.write(Command::CreateNetwork(spec))
        .await
        .expect("valid");
    let node = identity.node_id().expect("valid");
    ctl.write(Command::MemberJoin {
        network,
        node,
        identity,
        physical: None,
        local: vec![],
        at_ms: 1,
    })
    .await
    .expect("valid");
    ctl.write(Command::Authorize {
        network,
        node,
        at_ms: 2,
    })
    .await
    .expect("valid");
    network
}

/// A node's state directory and a controller with network `[seed; 32]` that authorizes it.
struct NodeAndController {
    tmp: tempfile::TempDir,
    state: StateDir,
    node: NodeId,
    ctl: InMemoryController,
    network: NetworkId,
}

async fn node_and_controller(seed: u8) -> NodeAndController {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let state = StateDir::open(tmp.path()).expect("a state dir");
    let node = state.identity().node_id();
    let ctl = InMemoryController::default();
    let network = served_network(&ctl, seed, *state.identity().public()).await;
    NodeAndController {
        tmp,
        state,
        node,
        ctl,
        network,
    }
}

/// The node pins a replica's key at first contact: after a restart, whoever answers at that
/// address with another key (the same state behind it, even) is refused, and the status says
/// why; the node keeps running on its cached config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answering_with_another_key_than_pinned_is_refused() {
    let NodeAndController {
        tmp,
        state,
        node,
        ctl,
        network,
    } = node_and_controller(12).await;
    let ep = channel::endpoint("127.0.0.1:0".parse().unwrap(), &[1; 32]).unwrap();
    let a = ep.local_addr().unwrap();
    let served = Replicated {
        state: ctl.clone(),
        replicas: vec![a.to_string()],
    };
    let serving = tokio::spawn(channel::serve(ep.clone(), served.clone()));

    let dp = Arc::new(NoDataplane::new(node));
    let (stop_tx, daemon) = start_daemon(state, &a.to_string(), &dp);
    let client = DaemonClient::new(tmp.path());
    answering(&client).await;
    client.join(network, None).await.unwrap();
    let status = wait_status(&client, "a config", WAIT, |s| {
        s.networks[0].revision.is_some()
    })
    .await;
    let revision = status.networks[0].revision;
    let pins: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join(meshd_node::daemon::state::PINS_FILE)).unwrap(),
    )
    .unwrap();
    assert!(pins["pinned"][a.to_string()].is_string(), "{pins}");
    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();

    // Another key at the same address.
    ep.close(3u32.into(), b"going away");
    ep.wait_idle().await;
    drop(ep);
    serving.await.unwrap();
    // The old socket goes with the last connection task that held it.
    let mut impostor = channel::endpoint(a, &[3; 32]);
    for _ in 0..100 {
        if impostor.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        impostor = channel::endpoint(a, &[3; 32]);
    }
    let impostor = impostor.expect("the address is free again");
    tokio::spawn(channel::serve(impostor.clone(), served));
    let (stop_tx, daemon) = start_daemon(StateDir::open(tmp.path()).unwrap(), &a.to_string(), &dp);
    answering(&client).await;
    let status = wait_status(&client, "the impostor refused", WAIT, |s| {
        s.controllers
            .iter()
            .any(|c| c.error.as_deref().is_some_and(|e| e.contains("pinned")))
    })
    .await;
    assert_eq!(status.controller, None, "{status:#?}");
    assert_eq!(status.networks[0].revision, revision, "still on its cache");
    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();
}

/// A config names the replicas with their keys (the network key signs it): the node pins
/// those keys for addresses it has not contacted yet, before any contact. A key pinned
/// otherwise (at first contact, or by another network's config) is kept: one controller's
/// config cannot displace another's replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_signed_config_names_are_pinned_before_first_contact() {
    let NodeAndController {
        tmp,
        state,
        node,
        ctl,
        network,
    } = node_and_controller(13).await;
    let ep = channel::endpoint("127.0.0.1:0".parse().unwrap(), &[1; 32]).unwrap();
    let a = ep.local_addr().unwrap();
    // Replicas B and C are never contacted; another key was pinned at B's address before.
    let b: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let c: std::net::SocketAddr = "127.0.0.1:11".parse().unwrap();
    let key = |seed: u8| {
        meshd_controller::raft::ReplicaCredentials {
            seed: [seed; 32],
            cluster_secret: "unused".into(),
        }
        .key()
        .0
    };
    let hex = |k: [u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let pins_file = tmp.path().join(meshd_node::daemon::state::PINS_FILE);
    std::fs::write(
        &pins_file,
        serde_json::json!({ "pinned": { b.to_string(): hex(key(66)) } }).to_string(),
    )
    .unwrap();
    ctl.write(Command::SetReplicas {
        replicas: vec![
            meshd_controller::state::ReplicaRecord {
                address: a.to_string(),
                key: key(1),
            },
            meshd_controller::state::ReplicaRecord {
                address: b.to_string(),
                key: key(2),
            },
            meshd_controller::state::ReplicaRecord {
                address: c.to_string(),
                key: key(3),
            },
        ],
    })
    .await
    .unwrap();
    let served = Replicated {
        state: ctl.clone(),
        // The unsigned list also names an address no config vouches for: ignored.
        replicas: vec![a.to_string(), b.to_string(), "127.0.0.1:7".into()],
    };
    tokio::spawn(channel::serve(ep.clone(), served));

    let dp = Arc::new(NoDataplane::new(node));
    let (stop_tx, daemon) = start_daemon(state, &a.to_string(), &dp);
    let client = DaemonClient::new(tmp.path());
    answering(&client).await;
    client.join(network, None).await.unwrap();
    wait_status(&client, "a config", WAIT, |s| {
        s.networks[0].revision.is_some()
    })
    .await;
    let pinned = |addr: std::net::SocketAddr| {
        let pins: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&pins_file).unwrap()).unwrap();
        pins["pinned"][addr.to_string()].as_str().map(str::to_owned)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while pinned(c) != Some(hex(key(3))) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pinned(c), Some(hex(key(3))), "pinned before any contact");
    assert_eq!(pinned(a), Some(hex(key(1))));
    assert_eq!(
        pinned(b),
        Some(hex(key(66))),
        "a key pinned otherwise is kept"
    );
    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    let learned =
        std::fs::read_to_string(tmp.path().join(meshd_node::daemon::state::CONTROLLERS_FILE))
            .expect("the learned replicas are saved");
    assert!(learned.contains(&c.to_string()), "{learned}");
    assert!(!learned.contains("127.0.0.1:7"), "{learned}");
}

use std::time::Duration;

use super::api::NetworkStatus;
use super::client::{ClientError, DaemonClient};
use super::no_dataplane::DataplaneCall;
use super::test_support::signed_config;
use super::*;

fn saved_network(state: &StateDir, seed: u8, revision: u64) -> (NetworkId, SignedConfig) {
    let (key, _, signed) = signed_config(seed, revision);
    let record = NetworkRecord {
        // Nothing listens there: the daemon must do without a controller.
        controllers: vec!["127.0.0.1:9".parse().unwrap()],
        joined_at: 1,
    };
    state.save_record(key.network_id(), &record).unwrap();
    state.save_config(key.network_id(), &signed).unwrap();
    (key.network_id(), signed)
}

#[tokio::test]
async fn only_newer_verified_configs_reach_the_cache_and_the_data_plane() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::open(tmp.path()).unwrap();
    let node = state.identity().node_id();
    let (nwid, _) = saved_network(&state, 4, 5);
    let cache = tmp.path().join("networks").join(format!("{nwid}.config"));
    let dp = Arc::new(NoDataplane::new(node));
    let (_stop_tx, stop) = watch::channel(false);
    let opts = DaemonOptions {
        state,
        port: 0,
        controllers: vec![],
        configure_forwarding: false,
        relay: false,
        hostname: String::new(),
        metrics_listen: None,
        ipv6_prefix: None,
    };
    let daemon = Arc::new(Daemon::new(opts, Box::new(Arc::clone(&dp)), stop).unwrap());
    daemon.restore().await;
    let join5 = DataplaneCall::Join {
        network: nwid,
        revision: 5,
    };
    assert_eq!(dp.calls(), vec![join5]);

    // Older and equal revisions: refused, nothing changes.
    for revision in [4, 5] {
        let (_, _, signed) = signed_config(4, revision);
        daemon.on_config(nwid, revision, signed).await;
    }
    assert_eq!(dp.calls(), vec![join5]);
    assert_eq!(daemon.status_view().networks[0].revision, Some(5));
    // Signed with another network's key, claiming a high revision: refused and shown.
    let (_, _, forged) = signed_config(9, 50);
    let before = std::fs::read(&cache).unwrap();
    daemon.on_config(nwid, 50, forged).await;
    assert_eq!(dp.calls(), vec![join5]);
    assert_eq!(std::fs::read(&cache).unwrap(), before);
    let view = daemon.status_view().networks[0].clone();
    assert!(view.error.unwrap().contains("refused"));
    // Newer: cached, then applied as an update.
    let (_, _, signed6) = signed_config(4, 6);
    daemon.on_config(nwid, 6, signed6.clone()).await;
    assert_eq!(
        dp.calls(),
        vec![
            join5,
            DataplaneCall::Update {
                network: nwid,
                revision: 6
            }
        ]
    );
    assert_eq!(std::fs::read(&cache).unwrap(), signed6.as_bytes());
    let view = daemon.status_view().networks[0].clone();
    assert_eq!((view.status, view.revision), (NetworkStatus::Ok, Some(6)));
    assert_eq!(view.error, None);
    // A config for a network the node has not joined: ignored.
    let (other, _, signed) = signed_config(5, 1);
    daemon.on_config(other.network_id(), 1, signed).await;
    assert_eq!(dp.calls().len(), 2);
}

#[tokio::test]
async fn the_local_api_restores_joins_and_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::open(tmp.path()).unwrap();
    let node = state.identity().node_id();
    let (nwid, _) = saved_network(&state, 6, 3);
    let dp = Arc::new(NoDataplane::new(node));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = DaemonOptions {
        state,
        port: 0,
        controllers: vec![],
        configure_forwarding: false,
        relay: false,
        hostname: String::new(),
        metrics_listen: None,
        ipv6_prefix: None,
    };
    let daemon = tokio::spawn(run(opts, Arc::clone(&dp), async {
        let _ = stop_rx.await;
    }));
    let client = DaemonClient::new(tmp.path());
    let mut status = None;
    for _ in 0..100 {
        match client.status().await {
            Ok(s) => {
                status = Some(s);
                break;
            }
            Err(e) if e.no_daemon() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let status = status.expect("the daemon answers");
    assert_eq!(status.node_id, node);
    assert!(!status.online && !status.dataplane_attached);
    assert_eq!(status.controllers[0].address, "127.0.0.1:9");
    let net = &status.networks[0];
    assert_eq!(
        (net.id, net.status, net.revision),
        (nwid, NetworkStatus::Ok, Some(3))
    );
    assert_eq!(
        net.interface.as_deref(),
        Some(meshd_engine::interface_name(nwid).as_str())
    );

    // A join without --controller uses the controllers saved by earlier joins.
    let (other, _, _) = signed_config(7, 1);
    let joined = client.join(other.network_id(), None).await.unwrap();
    assert_eq!(joined.node_id, node);
    assert_eq!(
        joined.network.status,
        NetworkStatus::RequestingConfiguration
    );
    assert_eq!(joined.network.controllers, vec!["127.0.0.1:9".to_owned()]);
    assert!(
        tmp.path()
            .join("networks")
            .join(format!("{}.json", other.network_id()))
            .exists()
    );

    // Leave takes the network off the data plane and out of the state directory.
    assert_eq!(client.leave(nwid).await.unwrap().left, nwid);
    assert_eq!(
        dp.calls(),
        vec![
            DataplaneCall::Join {
                network: nwid,
                revision: 3
            },
            DataplaneCall::Leave { network: nwid }
        ]
    );
    assert!(
        !tmp.path()
            .join("networks")
            .join(format!("{nwid}.config"))
            .exists()
    );
    match client.leave(nwid).await {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status.as_u16(), 404);
            assert!(message.contains("has not joined"), "{message}");
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    let ids: Vec<NetworkId> = client
        .status()
        .await
        .unwrap()
        .networks
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, vec![other.network_id()]);

    stop_tx.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert!(!tmp.path().join("meshd.sock").exists());
}

//! kill -9 at any point loses no acknowledged write: writes run in a loop, the replica is
//! SIGKILLed mid-stream, restarted, and everything that was acknowledged is still there.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ReplicaProcess;
use meshd_controller::admin_client::AdminClient;
use meshd_controller::api::requests::CreateNetwork;
use meshd_proto::NetworkId;

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let mut replica = ReplicaProcess::init();
    replica.start();
    let client = AdminClient::new(replica.url(), replica.token()).expect("a client");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let mut all_acked: BTreeSet<NetworkId> = BTreeSet::new();
    for round in 0..3u64 {
        let acked: Arc<Mutex<Vec<NetworkId>>> = Arc::default();
        let writer = {
            let (client, acked) = (client.clone(), acked.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().expect("a runtime");
                rt.block_on(async {
                    for i in 0.. {
                        let req = CreateNetwork {
                            name: format!("round-{round}-{i}"),
                            ..CreateNetwork::default()
                        };
                        match client.create_network(&req).await {
                            Ok(view) => acked.lock().expect("lock").push(view.id),
                            // The replica died mid-request: this write was never acknowledged.
                            Err(_) => break,
                        }
                    }
                });
            })
        };
        // Kill at a different point of the stream each round.
        std::thread::sleep(Duration::from_millis(400 + 300 * round));
        replica.kill();
        writer.join().expect("writer thread");
        let acked = acked.lock().expect("lock").clone();
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged before the kill"
        );
        all_acked.extend(acked);

        replica.start();
        let present: BTreeSet<NetworkId> = rt
            .block_on(client.networks())
            .expect("lists networks after restart")
            .into_iter()
            .map(|n| n.id)
            .collect();
        let lost: Vec<_> = all_acked.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost: {lost:?}"
        );
    }
    replica.stop();
}

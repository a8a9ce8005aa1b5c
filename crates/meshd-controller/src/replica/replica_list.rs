//! The replica list every network config names ([`Command::SetReplicas`]): the leader
//! writes the cluster membership's addresses and keys into the replicated state whenever they
//! differ, so configs (signed by each network's key) tell nodes which replica keys to pin.

use std::time::Duration;

use openraft::ServerState;

use meshd_proto::config::codec::{MAX_NAME_LEN, MAX_REPLICAS};

use super::Replica;
use crate::controller::Controller;
use crate::state::{Command, ReplicaRecord};

/// Pause after a failed write before trying again.
const RETRY: Duration = Duration::from_secs(1);

impl Replica {
    /// The replicas of the membership with a recorded key, sorted by address: at most as
    /// many and as long as a config carries (a list the state would refuse is never written).
    fn membership_list(&self) -> Vec<ReplicaRecord> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let mut list: Vec<ReplicaRecord> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(_, node)| !node.addr.is_empty() && node.addr.len() <= MAX_NAME_LEN)
            .filter_map(|(_, node)| {
                node.key.map(|key| ReplicaRecord {
                    address: node.addr.clone(),
                    key: key.0,
                })
            })
            .collect();
        list.sort();
        list.dedup_by(|a, b| a.address == b.address);
        list.truncate(MAX_REPLICAS);
        list
    }

    /// On the leader, writes the membership's replica list if the state records another.
    /// `Err`: the write failed (try again later).
    pub(super) async fn record_replica_list(&self) -> Result<(), String> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return Ok(());
        }
        let wanted = self.membership_list();
        if wanted.is_empty() || self.read(|s| s.replicas == wanted) {
            return Ok(());
        }
        self.write(Command::SetReplicas { replicas: wanted })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Keeps the recorded replica list in step with the membership while `replica` runs: checks
/// again whenever its raft metrics change (elections and membership changes among them).
pub(super) async fn keep_in_step(replica: Replica) {
    let mut metrics = replica.raft.metrics();
    let mut warned = false;
    loop {
        let keyless: Vec<u64> = metrics
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(_, n)| n.key.is_none())
            .map(|(id, _)| *id)
            .collect();
        if !keyless.is_empty() && !warned {
            warned = true;
            tracing::warn!(
                replica = replica.id,
                "replicas {keyless:?} were added before replica keys were pinned: until each \
                 is added again with its key (`meshd controller replica add --id N --address \
                 HOST:PORT --key KEY`, the key from its `meshd controller run`), replication \
                 accepts any key that holds the cluster secret"
            );
        }
        if let Err(e) = replica.record_replica_list().await {
            tracing::debug!(
                replica = replica.id,
                "cannot record the replica list yet: {e}"
            );
            tokio::time::sleep(RETRY).await;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

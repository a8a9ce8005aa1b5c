//! A controller replica: the state machine behind openraft with durable storage.
//!
//! [`Replica::open`] on a fresh data directory forms a cluster of one; later starts resume
//! from the snapshot and log in `<data dir>/raft.redb`. Replicas joining a larger cluster open
//! with [`ReplicaOptions::bootstrap`] off and wait to be added by the leader
//! ([`Replica::add_replica`]). Any replica takes writes: a follower forwards them to the
//! leader ([`cluster`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::controller::{Controller, WriteError};
use crate::raft::network::Contacts;
use crate::raft::state_machine::SharedState;
use crate::raft::{
    HttpNetworkFactory, LogStore, Raft, ReplicaCredentials, ReplicaId, ReplicaKey, ReplicaNode,
    StateMachineStore, StoreError, open_db,
};
use crate::state::{Applied, Command, ControllerState};

pub mod cluster;
pub mod metrics;
mod replica_list;

pub use cluster::{
    ClusterSecret, ClusterView, MembershipError, MembershipErrorKind, ReplicaStatus, admin_routes,
    is_loopback_address, parse_replica_address,
};

/// How long [`Replica::open`] waits for a single-replica cluster to elect itself.
const SELF_ELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Replica::shutdown`] waits for openraft's tasks to release the database.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Tuning for [`Replica::open_with`]; the defaults suit production.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// On a fresh data directory, form a cluster of this replica alone. Off for a replica
    /// that an existing cluster will add (`add_learner`, then `change_membership`).
    pub bootstrap: bool,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up
    /// from the log rather than by a snapshot transfer.
    pub keep_after_snapshot: u64,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        Self {
            bootstrap: true,
            snapshot_every: 1000,
            keep_after_snapshot: 1000,
        }
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("cannot create the controller data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the raft database {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("{path} is in use; is another controller running on this data directory?")]
    InUse { path: PathBuf },
    #[error("invalid raft settings: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("the raft engine failed to start: {0}")]
    Start(Fatal<ReplicaId>),
    #[error("cannot form the single-replica cluster: {0}")]
    Initialize(String),
    #[error(
        "replica {id} did not become the leader of its single-replica cluster within {timeout:?}"
    )]
    NoLeader { id: ReplicaId, timeout: Duration },
}

/// What a replica is doing in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaRole {
    Leader,
    Follower,
    Candidate,
    /// Receives the log but does not vote (joining, or not yet a member).
    Learner,
    ShuttingDown,
    /// A voting member whose current role the reporting replica cannot see (the leader's
    /// view was unavailable).
    Voter,
}

/// A replica's raft status, for the health endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaHealth {
    pub id: ReplicaId,
    pub role: ReplicaRole,
    pub term: u64,
    pub leader: Option<ReplicaId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
}

/// A running controller replica. Cloning is cheap and shares the replica.
#[derive(Clone)]
pub struct Replica {
    id: ReplicaId,
    raft: Raft,
    state: SharedState,
    applied: watch::Receiver<u64>,
    credentials: ReplicaCredentials,
    /// Where other replicas reach this one (`host:port`), for messages.
    advertise: Arc<str>,
    /// When each peer last answered this replica's raft RPCs.
    contacts: Contacts,
    /// The database lives in openraft's tasks; this tells when they have closed it.
    db_closed: watch::Receiver<()>,
}

impl Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("applied", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens the replica `id` on `data_dir` with default options. `advertise` is where other
    /// replicas reach this one's [`Replica::serve_replication`] (`host:port`, e.g.
    /// `10.0.0.1:9994`; an `http://` URL also works); `credentials` are its key and the
    /// cluster secret, which replicas prove to each other.
    pub async fn open(
        data_dir: &Path,
        id: ReplicaId,
        advertise: String,
        credentials: ReplicaCredentials,
    ) -> Result<Replica, ReplicaError> {
        Self::open_with(
            data_dir,
            id,
            advertise,
            credentials,
            ReplicaOptions::default(),
        )
        .await
    }

    pub async fn open_with(
        data_dir: &Path,
        id: ReplicaId,
        advertise: String,
        credentials: ReplicaCredentials,
        options: ReplicaOptions,
    ) -> Result<Replica, ReplicaError> {
        // Mode 0700 when created here: the directory holds secrets.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| ReplicaError::DataDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let store_err = |source| {
            let path = data_dir.join(crate::raft::DB_FILE);
            match source {
                StoreError::Db(redb::Error::DatabaseAlreadyOpen) => ReplicaError::InUse { path },
                source => ReplicaError::Store { path, source },
            }
        };
        let db = open_db(data_dir).map_err(store_err)?;
        let log_store = LogStore::new(db.clone());
        let state_machine = StateMachineStore::open(db.clone()).map_err(store_err)?;
        let state = state_machine.shared();
        let applied = state_machine.subscribe();
        let db_closed = db.closed();
        drop(db);

        let config = Config {
            cluster_name: "meshd".into(),
            // A follower that stops hearing from the leader starts an election after the
            // leader's lease (election_timeout_max) plus its own election timeout: 2.5-3 s
            // from a leader's death to a new leader.
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 1500,
            // Snapshots go whole in one request (see raft::network).
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every),
            max_in_snapshot_log_to_keep: options.keep_after_snapshot,
            ..Config::default()
        }
        .validate()?;
        let network = HttpNetworkFactory::new(id, credentials.clone());
        let contacts = network.contacts();
        let raft = Raft::new(id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(ReplicaError::Start)?;

        let replica = Replica {
            id,
            raft,
            state,
            applied,
            credentials,
            advertise: advertise.as_str().into(),
            contacts,
            db_closed,
        };
        if let Err(e) = replica.start(advertise, options.bootstrap).await {
            // Release the database, so a retry can open the directory again.
            replica.shutdown().await;
            return Err(e);
        }
        // A replica alone records the list before it serves, so its first configs name it.
        if let Err(e) = replica.record_replica_list().await {
            tracing::warn!(replica = id, "cannot record the replica list: {e}");
        }
        tokio::spawn(replica_list::keep_in_step(replica.clone()));
        Ok(replica)
    }

    /// Forms the cluster of one on a fresh directory and, when this replica is the only voter,
    /// waits until it leads: the first write after `open` must not fail for want of a leader.
    async fn start(&self, advertise: String, bootstrap: bool) -> Result<(), ReplicaError> {
        let id = self.id;
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(ReplicaError::Start)?;
        let me = ReplicaNode::new(advertise.clone(), Some(self.credentials.key()));
        if bootstrap && !initialized {
            let members = BTreeMap::from([(id, me.clone())]);
            match self.raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ReplicaError::Initialize(e.to_string())),
            }
        }
        let voters = self
            .raft
            .with_raft_state(|st| {
                st.membership_state
                    .effective()
                    .voter_ids()
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(ReplicaError::Start)?;
        if voters == [id] {
            self.raft
                .wait(Some(SELF_ELECTION_TIMEOUT))
                .current_leader(id, "single replica elects itself")
                .await
                .map_err(|_| ReplicaError::NoLeader {
                    id,
                    timeout: SELF_ELECTION_TIMEOUT,
                })?;
            // Alone, this replica may record a new address or its key (an older data
            // directory, or a changed --advertise): nobody else needs the old record.
            let recorded = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .cloned();
            if recorded.is_some_and(|r| r != me) {
                let nodes = BTreeMap::from([(id, me.clone())]);
                if let Err(e) = self
                    .raft
                    .change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
                    .await
                {
                    tracing::warn!(replica = id, "cannot record the address {advertise}: {e}");
                }
            }
        }
        Ok(())
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The openraft handle, for membership changes and tests.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Where other replicas reach this one, as given to [`Replica::open`].
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// The key this replica proves to the others (and to nodes).
    pub fn key(&self) -> ReplicaKey {
        self.credentials.key()
    }

    /// Serves the replication routes ([`Replica::router`]) on `listener`, inside TLS that
    /// admits the keys of the cluster membership ([`crate::raft::tls`]), until dropped.
    pub fn serve_replication(
        &self,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<impl Future<Output = std::io::Result<()>> + Send + 'static> {
        let acceptor = crate::raft::tls::acceptor(&self.credentials.seed, self.raft.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let listener = crate::tls_listener::TlsListener::new(listener, acceptor, "replication")?;
        Ok(axum::serve(listener, self.router()).into_future())
    }

    /// The replica's raft status.
    pub fn metrics(&self) -> ReplicaHealth {
        let m = self.raft.metrics();
        let m = m.borrow();
        ReplicaHealth {
            id: self.id,
            role: match m.state {
                ServerState::Leader => ReplicaRole::Leader,
                ServerState::Follower => ReplicaRole::Follower,
                ServerState::Candidate => ReplicaRole::Candidate,
                ServerState::Learner => ReplicaRole::Learner,
                ServerState::Shutdown => ReplicaRole::ShuttingDown,
            },
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
        }
    }

    /// Stops the raft engine and waits until the database file is closed, so the directory
    /// can be opened again at once.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(replica = self.id, "raft engine ended with an error: {e}");
        }
        let mut closed = self.db_closed.clone();
        let wait = async { while closed.changed().await.is_ok() {} };
        if tokio::time::timeout(CLOSE_TIMEOUT, wait).await.is_err() {
            tracing::warn!(
                replica = self.id,
                "raft tasks still hold the database after {CLOSE_TIMEOUT:?}"
            );
        }
    }
}

/// Why a write through openraft on replica `id` failed, for the user.
fn unavailable_message(
    id: ReplicaId,
    e: RaftError<ReplicaId, ClientWriteError<ReplicaId, ReplicaNode>>,
) -> String {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match (f.leader_id, f.leader_node) {
            (Some(leader), Some(node)) => format!(
                "replica {id} is not the leader; replica {leader} at {} is, send writes there",
                node.addr
            ),
            (Some(leader), None) => {
                format!("replica {id} is not the leader; replica {leader} is, send writes there")
            }
            (None, _) => "no controller replica is leader right now (election in progress or no quorum); retry in a few seconds".to_owned(),
        },
        RaftError::APIError(e) => format!("replica {id} refused the write: {e}"),
        RaftError::Fatal(Fatal::Stopped) => format!("replica {id} is shutting down"),
        RaftError::Fatal(e) => format!(
            "the raft engine of replica {id} stopped ({e}); see the controller log and restart it"
        ),
    }
}

impl Controller for Replica {
    /// Proposes here on the leader; a follower forwards to the leader (see [`cluster`]).
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Applied, WriteError>> + Send {
        let replica = self.clone();
        async move { replica.write_anywhere(cmd).await }
    }

    fn read<T>(&self, f: impl FnOnce(&ControllerState) -> T) -> T {
        // Poisoned only by a panic inside `ControllerState::apply`, which also stops raft.
        let applied = self
            .state
            .read()
            .expect("controller state lock poisoned by a panic while applying");
        f(&applied.state)
    }

    fn applied(&self) -> watch::Receiver<u64> {
        let mut rx = self.applied.clone();
        rx.mark_unchanged();
        rx
    }

    fn replica_addresses(&self) -> Vec<String> {
        // A replica's node-channel address is its raft address; voters and learners alike.
        let mut addrs: Vec<String> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(_, node)| node.addr.clone())
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }
}

#[cfg(test)]
mod tests;

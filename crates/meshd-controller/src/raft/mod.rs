//! Replication of [`Command`]s through openraft: the type configuration, durable storage of
//! the log and of snapshots in one redb file, and the HTTP transport between replicas.
//!
//! - [`log_store`]: the raft log, vote and committed pointer ([`LogStore`]).
//! - [`state_machine`]: [`ControllerState`](crate::state::ControllerState) as openraft's state
//!   machine, with snapshots ([`StateMachineStore`]).
//! - [`network`]: replica-to-replica RPCs over HTTP ([`HttpNetworkFactory`], [`raft_router`]),
//!   inside TLS with the replicas' keys pinned in the membership ([`tls`]).
//!
//! Only the glue lives here: the commands and their semantics stay in [`crate::state`], so an
//! openraft upgrade touches these files alone.

pub mod log_store;
pub mod network;
pub mod node;
pub mod owner;
pub(crate) mod snapshot_format;
pub mod state_machine;
pub mod tls;

use std::fs::OpenOptions;
use std::io::Cursor;
use std::ops::Deref;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, StorageError, StorageIOError};
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::{Applied, Command, Rejected};

pub use log_store::LogStore;
pub use network::{CLUSTER_SECRET_HEADER, HttpNetworkFactory, ReplicaCredentials, raft_router};
pub use node::{ReplicaKey, ReplicaNode};
pub use state_machine::StateMachineStore;

openraft::declare_raft_types!(
    /// meshd's openraft types: commands in, command outcomes out, replicas named by a `u64`,
    /// reached at their [`ReplicaNode::addr`] and proving their [`ReplicaNode::key`].
    pub TypeConfig:
        D = Command,
        R = ClientResponse,
        NodeId = u64,
        Node = ReplicaNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A replica id, stable for the replica's lifetime (it is in every vote and log id).
pub type ReplicaId = u64;

/// The running raft node.
pub type Raft = openraft::Raft<TypeConfig>;

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// A command's outcome. A rejected command is still a successfully applied entry: every
    /// replica rejects it the same way and the state does not change.
    Command(Result<Applied, Rejected>),
    /// Entries openraft writes itself (leader blanks, membership changes) carry no command.
    Internal,
}

/// The single redb file a replica keeps its raft log, vote and snapshot in.
pub const DB_FILE: &str = "raft.redb";
const DB_MODE: u32 = 0o600;

// Tables, shared by the log store and the state machine (one file, one fsync per commit).
/// Log entries by index, postcard-encoded `Entry<TypeConfig>`.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Small records: vote, committed and last purged log ids (postcard).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The current snapshot: meta and data (postcard).
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// Why the raft database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("raft database: {0}")]
    Db(#[from] redb::Error),
    #[error("the raft database holds a record this version cannot decode: {0}")]
    Codec(#[from] postcard::Error),
    #[error("{} is damaged: {reason}; restore it from a backup", path.display())]
    Damaged { path: PathBuf, reason: String },
}

macro_rules! store_error_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
store_error_from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The raft database, shared by the log store and the state machine.
pub struct RaftDb {
    db: Database,
    // Declared after `db`: fields drop in order, so receivers see this sender go only once
    // the file is closed and its lock released.
    closed: watch::Sender<()>,
}

impl RaftDb {
    /// Resolves (with an error, as nothing is ever sent) once the database is closed.
    pub fn closed(&self) -> watch::Receiver<()> {
        self.closed.subscribe()
    }
}

impl Deref for RaftDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

impl std::fmt::Debug for RaftDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftDb").finish_non_exhaustive()
    }
}

/// Opens (creating if needed) `<dir>/raft.redb` with every table present, so read
/// transactions never meet a missing table.
pub fn open_db(dir: &Path) -> Result<Arc<RaftDb>, StoreError> {
    let path = dir.join(DB_FILE);
    // The log and snapshots hold every network's signing key: the file is never readable by
    // others, not even between its creation and a chmod.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DB_MODE)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(StoreError::Create { path, source }),
    }
    // redb reports most damage as errors, but panics on some: either way it is damage.
    let db = match std::panic::catch_unwind(|| Database::create(&path)) {
        Ok(db) => db?,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unreadable".to_owned());
            return Err(StoreError::Damaged { path, reason });
        }
    };
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    txn.open_table(SNAPSHOT)?;
    txn.commit()?;
    Ok(Arc::new(RaftDb {
        db,
        closed: watch::channel(()).0,
    }))
}

/// Storage failures as openraft wants them. Openraft shuts the node down on any of them: the
/// disk is no longer trustworthy.
pub(crate) fn io_err(
    make: impl FnOnce(AnyError) -> StorageIOError<ReplicaId>,
    e: impl std::error::Error + 'static,
) -> StorageError<ReplicaId> {
    StorageError::IO {
        source: make(AnyError::new(&e)),
    }
}

/// Runs blocking redb work (every commit fsyncs) off the async worker threads. `make` says what
/// was being done, for the error.
pub(crate) async fn blocking<T: Send + 'static>(
    make: impl FnOnce(AnyError) -> StorageIOError<ReplicaId> + Send,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StorageError<ReplicaId>> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_err(make, e)),
        Err(e) => Err(io_err(make, e)),
    }
}

#[cfg(test)]
mod tests;

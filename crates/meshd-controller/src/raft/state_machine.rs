//! [`ControllerState`] as openraft's state machine.
//!
//! The state lives in memory behind a lock that serving code reads directly. Only snapshots
//! are persisted (in the same redb file as the log): on restart the state machine starts from
//! the last snapshot and openraft re-applies the committed entries after it from the log.

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::snapshot_format::{self, SnapshotData};
use super::{
    ClientResponse, RaftDb, ReplicaId, ReplicaNode, SNAPSHOT, StoreError, TypeConfig, blocking,
    io_err,
};
use crate::state::ControllerState;

const CURRENT: &str = "current";

/// Everything applied so far, changed as one unit so readers never see a state without the
/// log id it corresponds to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedState {
    pub state: ControllerState,
    pub last_applied: Option<LogId<ReplicaId>>,
    pub membership: StoredMembership<ReplicaId, ReplicaNode>,
}

/// The applied state, shared between openraft's state machine worker and readers.
pub type SharedState = Arc<RwLock<AppliedState>>;

/// A snapshot as kept in redb.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<ReplicaId, ReplicaNode>,
    data: Vec<u8>,
}

/// The state machine half of openraft's storage.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<RaftDb>,
    applied: SharedState,
    /// The last applied log index, for wake-ups.
    applied_index: watch::Sender<u64>,
}

impl Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("applied_index", &*self.applied_index.borrow())
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(_: PoisonError<T>) -> StorageError<ReplicaId> {
    // A panic while the write lock was held may have left a half-applied command behind.
    io_err(
        StorageIOError::write_state_machine,
        std::io::Error::other("the state lock is poisoned by a panic while applying"),
    )
}

impl StateMachineStore {
    /// Loads the last snapshot from `db`, if there is one.
    pub fn open(db: Arc<RaftDb>) -> Result<Self, StoreError> {
        let applied = match load_snapshot(&db)? {
            Some(stored) => snapshot_format::decode(&stored.data).map(|d| AppliedState {
                state: d.state,
                last_applied: d.last_applied,
                membership: d.membership,
            })?,
            None => AppliedState::default(),
        };
        let index = applied.last_applied.map_or(0, |l| l.index);
        Ok(Self {
            db,
            applied: Arc::new(RwLock::new(applied)),
            applied_index: watch::channel(index).0,
        })
    }

    /// The applied state, for reading without going through openraft.
    pub fn shared(&self) -> SharedState {
        self.applied.clone()
    }

    /// Changes to the last applied log index (after every applied batch or installed
    /// snapshot).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    fn announce(&self, last_applied: Option<LogId<ReplicaId>>) {
        let index = last_applied.map_or(0, |l| l.index);
        self.applied_index.send_if_modified(|i| {
            let changed = *i != index;
            *i = index;
            changed
        });
    }
}

fn load_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SNAPSHOT)?;
    let Some(v) = table.get(CURRENT)? else {
        return Ok(None);
    };
    Ok(Some(postcard::from_bytes(v.value())?))
}

/// Durably replaces the stored snapshot, unless the stored one is newer: a snapshot build that
/// raced with an installed (newer) snapshot must not roll it back.
async fn persist_snapshot(
    db: Arc<RaftDb>,
    stored: StoredSnapshot,
) -> Result<(), StorageError<ReplicaId>> {
    let signature = stored.meta.signature();
    let make = |e: AnyError| StorageIOError::write_snapshot(None, e);
    let bytes = postcard::to_allocvec(&stored).map_err(|e| io_err(make, e))?;
    let last = stored.meta.last_log_id;
    blocking(make, move || {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(SNAPSHOT)?;
            let existing = match table.get(CURRENT)? {
                Some(v) => Some(postcard::from_bytes::<StoredSnapshot>(v.value())?),
                None => None,
            };
            if existing.is_none_or(|e| e.meta.last_log_id <= last) {
                table.insert(CURRENT, bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    })
    .await
    .map_err(|e| {
        tracing::error!(snapshot = %signature.snapshot_id, "persisting a snapshot failed: {e}");
        e
    })
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<ReplicaId>>,
            StoredMembership<ReplicaId, ReplicaNode>,
        ),
        StorageError<ReplicaId>,
    > {
        let g = self.applied.read().map_err(poisoned)?;
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ClientResponse>, StorageError<ReplicaId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let last_applied = {
            let mut g = self.applied.write().map_err(poisoned)?;
            for entry in entries {
                g.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Normal(cmd) => ClientResponse::Command(g.state.apply(&cmd)),
                    EntryPayload::Membership(m) => {
                        g.membership = StoredMembership::new(Some(entry.log_id), m);
                        ClientResponse::Internal
                    }
                    EntryPayload::Blank => ClientResponse::Internal,
                };
                responses.push(response);
            }
            g.last_applied
        };
        self.announce(last_applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            applied: self.applied.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<ReplicaId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<ReplicaId, ReplicaNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<ReplicaId>> {
        let make = |e: AnyError| StorageIOError::read_snapshot(Some(meta.signature()), e);
        let data = snapshot.into_inner();
        let decoded = snapshot_format::decode(&data).map_err(|e| io_err(make, e))?;
        if decoded.last_applied != meta.last_log_id || decoded.membership != meta.last_membership {
            return Err(io_err(
                make,
                std::io::Error::other(format!(
                    "snapshot {} says it covers up to {:?}, its data up to {:?}",
                    meta.snapshot_id, meta.last_log_id, decoded.last_applied
                )),
            ));
        }
        persist_snapshot(
            self.db.clone(),
            StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )
        .await?;
        {
            let mut g = self.applied.write().map_err(poisoned)?;
            *g = AppliedState {
                state: decoded.state,
                last_applied: decoded.last_applied,
                membership: decoded.membership,
            };
        }
        self.announce(meta.last_log_id);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<ReplicaId>> {
        let stored = load_snapshot(&self.db)
            .map_err(|e| io_err(|e| StorageIOError::read_snapshot(None, e), e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Builds snapshots from a consistent view of the applied state, off openraft's core task.
pub struct SnapshotBuilder {
    db: Arc<RaftDb>,
    applied: SharedState,
}

impl Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<ReplicaId>> {
        let make = |e: AnyError| StorageIOError::write_snapshot(None, e);
        // Encoding under the read lock avoids cloning the state; applies wait that long.
        let (data, last_applied, membership) = {
            let g = self.applied.read().map_err(poisoned)?;
            let data = snapshot_format::encode(&SnapshotData {
                last_applied: g.last_applied,
                membership: g.membership.clone(),
                state: &g.state,
            })
            .map_err(|e| io_err(make, e))?;
            (data, g.last_applied, g.membership.clone())
        };
        // Unique even when two snapshots cover the same log id (after a restart, say).
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{nanos}", l.leader_id, l.index),
            None => format!("none-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        persist_snapshot(
            self.db.clone(),
            StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

//! The raft log, the vote and the committed pointer in redb.
//!
//! Every write is its own redb transaction committed with redb's default durability
//! (`Immediate`: fsync before `commit` returns). Openraft is told a log append is flushed only
//! after that commit, so an entry a client saw acknowledged survives `kill -9`.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{LOG, META, RaftDb, ReplicaId, StoreError, TypeConfig, blocking, io_err};

pub(super) const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The log half of openraft's storage. Cloning shares the database: the clone is also the
/// log reader replication tasks use.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<RaftDb>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    pub fn new(db: Arc<RaftDb>) -> Self {
        Self { db }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let Some(v) = table.get(key)? else {
            return Ok(None);
        };
        Ok(Some(postcard::from_bytes(v.value())?))
    }

    /// Durably sets (or with `None` removes) one meta record.
    async fn write_meta<T: Serialize>(
        &self,
        make: fn(openraft::AnyError) -> StorageIOError<ReplicaId>,
        key: &'static str,
        value: Option<&T>,
    ) -> Result<(), StorageError<ReplicaId>> {
        let bytes = value
            .map(postcard::to_allocvec)
            .transpose()
            .map_err(|e| io_err(make, e))?;
        let db = self.db.clone();
        blocking(make, move || {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(META)?;
                match &bytes {
                    Some(b) => {
                        table.insert(key, b.as_slice())?;
                    }
                    None => {
                        table.remove(key)?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    fn last_entry_id(&self) -> Result<Option<LogId<ReplicaId>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let Some((_, v)) = table.last()? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> = postcard::from_bytes(v.value())?;
        Ok(Some(*entry.get_log_id()))
    }

    fn entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for item in table.range::<u64>(range)? {
            let (_, v) = item?;
            out.push(postcard::from_bytes(v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<ReplicaId>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        self.entries(bounds)
            .map_err(|e| io_err(StorageIOError::read_logs, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<ReplicaId>> {
        let last_purged_log_id: Option<LogId<ReplicaId>> = self
            .read_meta(LAST_PURGED)
            .map_err(|e| io_err(StorageIOError::read_logs, e))?;
        let last = self
            .last_entry_id()
            .map_err(|e| io_err(StorageIOError::read_logs, e))?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<ReplicaId>) -> Result<(), StorageError<ReplicaId>> {
        self.write_meta(StorageIOError::write_vote, VOTE, Some(vote))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<ReplicaId>>, StorageError<ReplicaId>> {
        self.read_meta(VOTE)
            .map_err(|e| io_err(StorageIOError::read_vote, e))
    }

    // Saving it lets openraft re-apply committed entries at startup, before serving: the state
    // machine itself is only persisted as snapshots.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<ReplicaId>>,
    ) -> Result<(), StorageError<ReplicaId>> {
        self.write_meta(StorageIOError::write, COMMITTED, committed.as_ref())
            .await
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<ReplicaId>>, StorageError<ReplicaId>> {
        self.read_meta(COMMITTED)
            .map_err(|e| io_err(StorageIOError::read, e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<ReplicaId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| postcard::to_allocvec(&e).map(|b| (e.get_log_id().index, b)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io_err(StorageIOError::write_logs, e))?;
        let db = self.db.clone();
        let res = blocking(StorageIOError::write_logs, move || {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<ReplicaId>) -> Result<(), StorageError<ReplicaId>> {
        let db = self.db.clone();
        blocking(StorageIOError::write_logs, move || {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<ReplicaId>) -> Result<(), StorageError<ReplicaId>> {
        let purged =
            postcard::to_allocvec(&log_id).map_err(|e| io_err(StorageIOError::write_logs, e))?;
        let db = self.db.clone();
        // The pointer and the removal commit together: a crash never leaves a hole between the
        // last purged id and the first entry.
        blocking(StorageIOError::write_logs, move || {
            let txn = db.begin_write()?;
            txn.open_table(META)?
                .insert(LAST_PURGED, purged.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

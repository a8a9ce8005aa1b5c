//! Which replica a raft store belongs to. `meshd controller init` creates the store and
//! stamps it with the replica's id; `run` opens only a stamped store of its own replica. So a
//! store that was deleted, emptied or swapped is refused instead of starting a replica with
//! no networks (which, in a cluster, would bootstrap a second cluster under the same name).

use std::path::Path;

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::log_store::VOTE;
use super::{DB_FILE, LOG, META, ReplicaId, SNAPSHOT, StoreError, open_db};

/// The META record naming the replica the store belongs to.
const OWNER: &str = "owner";

/// What is wrong with a replica's store.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "{DB_FILE} is missing: this replica's log and networks are gone. Restore the file \
         from a backup, or remove this replica from the cluster (`meshd controller replica \
         remove`) and init a new one"
    )]
    Missing,
    #[error(
        "{DB_FILE} is empty: this replica's log and networks are gone. Restore the file from \
         a backup, or remove this replica from the cluster and init a new one"
    )]
    Empty,
    #[error(
        "{DB_FILE} belongs to replica {found}, not to replica {want}; is this the right --data directory?"
    )]
    Foreign { found: ReplicaId, want: ReplicaId },
    #[error("{DB_FILE} cannot be read: {0}")]
    Store(#[from] StoreError),
}

/// Creates the store of replica `id` (at init).
pub fn stamp(dir: &Path, id: ReplicaId) -> Result<(), StoreError> {
    let db = open_db(dir)?;
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(OWNER, postcard::to_allocvec(&id)?.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

/// Checks that `dir` holds the store of replica `id`. A store from before stamps that holds
/// a vote, a log or a snapshot is that replica's: it is stamped now.
pub fn check(dir: &Path, id: ReplicaId) -> Result<(), OwnerError> {
    let path = dir.join(DB_FILE);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OwnerError::Missing),
        Ok(m) if m.len() == 0 => return Err(OwnerError::Empty),
        _ => {}
    }
    let (owner, used) = {
        let db = open_db(dir)?;
        let txn = db.begin_read().map_err(StoreError::from)?;
        let meta = txn.open_table(META).map_err(StoreError::from)?;
        let owner: Option<ReplicaId> = match meta.get(OWNER).map_err(StoreError::from)? {
            Some(v) => Some(postcard::from_bytes(v.value()).map_err(StoreError::from)?),
            None => None,
        };
        let used = meta.get(VOTE).map_err(StoreError::from)?.is_some()
            || !txn
                .open_table(LOG)
                .map_err(StoreError::from)?
                .is_empty()
                .map_err(StoreError::from)?
            || !txn
                .open_table(SNAPSHOT)
                .map_err(StoreError::from)?
                .is_empty()
                .map_err(StoreError::from)?;
        (owner, used)
    };
    match owner {
        Some(found) if found == id => Ok(()),
        Some(found) => Err(OwnerError::Foreign { found, want: id }),
        None if used => Ok(stamp(dir, id)?),
        None => Err(OwnerError::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stamped_store_of_this_replica_opens() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(check(dir.path(), 1), Err(OwnerError::Missing)));
        stamp(dir.path(), 1).unwrap();
        check(dir.path(), 1).unwrap();
        assert!(matches!(
            check(dir.path(), 2),
            Err(OwnerError::Foreign { found: 1, want: 2 })
        ));
        // Emptied, or replaced by a fresh store: refused.
        let path = dir.path().join(DB_FILE);
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(check(dir.path(), 1), Err(OwnerError::Empty)));
        std::fs::remove_file(&path).unwrap();
        drop(open_db(dir.path()).unwrap());
        assert!(matches!(check(dir.path(), 1), Err(OwnerError::Empty)));
    }
}

use std::collections::BTreeSet;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, blank_ent, log_id, membership_ent};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use tempfile::TempDir;

use super::*;
use crate::state::{Command, ControllerState, RejectKind};

struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStore {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<ReplicaId>> {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let sm = StateMachineStore::open(db.clone()).unwrap();
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_conformance() {
    Suite::test_all(TempStore).unwrap();
}

fn open(dir: &TempDir) -> (LogStore, StateMachineStore) {
    let db = open_db(dir.path()).unwrap();
    (
        LogStore::new(db.clone()),
        StateMachineStore::open(db).unwrap(),
    )
}

/// Appends and waits for the flush callback, as openraft does.
async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    store.blocking_append(entries).await.unwrap();
}

fn normal(term: u64, index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn bad_command() -> Command {
    Command::DeleteNetwork {
        network: meshd_proto::NetworkKey::from_seed(&[9; 32])
            .unwrap()
            .network_id(),
    }
}

#[tokio::test]
async fn log_vote_committed_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _) = open(&dir);
        append(
            &mut store,
            (1..=10).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect(),
        )
        .await;
        store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        store.save_committed(Some(log_id(1, 1, 8))).await.unwrap();
        store.purge(log_id(1, 1, 4)).await.unwrap();
        store.truncate(log_id(1, 1, 10)).await.unwrap();
    }
    let (mut store, _) = open(&dir);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 9)));
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(1, 1))
    );
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 8)));
    let indexes: Vec<u64> = store
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, (5..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn commands_round_trip_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(&dir);
    append(&mut store, vec![normal(1, 1, bad_command())]).await;
    let got = store.try_get_log_entries(1..2).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(matches!(&got[0].payload, EntryPayload::Normal(c) if *c == bad_command()));
}

#[tokio::test]
async fn rejected_commands_apply_as_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm) = open(&dir);
    let mut applied = sm.subscribe();
    let out = sm
        .apply([
            blank_ent::<TypeConfig>(1, 1, 1),
            normal(1, 2, bad_command()),
        ])
        .await
        .unwrap();
    assert_eq!(out[0], ClientResponse::Internal);
    let ClientResponse::Command(Err(rejected)) = &out[1] else {
        panic!("expected a rejection, got {:?}", out[1]);
    };
    assert_eq!(rejected.kind, RejectKind::NotFound);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 2)));
    assert!(applied.has_changed().unwrap());
    assert_eq!(*applied.borrow_and_update(), 2);
    assert_eq!(
        sm.shared().read().unwrap().state,
        ControllerState::default()
    );
}

#[tokio::test]
async fn snapshots_survive_reopen_and_replace_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let members = vec![BTreeSet::from([1, 2, 3])];
    let meta = {
        let (_, mut sm) = open(&dir);
        sm.apply([membership_ent::<TypeConfig>(1, 1, 1, members.clone())])
            .await
            .unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 1)));
        snap.meta
    };
    let (_, mut sm) = open(&dir);
    let (last, membership) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(log_id(1, 1, 1)));
    assert_eq!(membership, meta.last_membership);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, meta);

    // Installing the snapshot elsewhere replaces whatever was applied there.
    let other = tempfile::tempdir().unwrap();
    let (_, mut follower) = open(&other);
    follower
        .apply([blank_ent::<TypeConfig>(0, 2, 1)])
        .await
        .unwrap();
    follower
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    assert_eq!(
        follower.applied_state().await.unwrap(),
        (Some(log_id(1, 1, 1)), meta.last_membership.clone())
    );
    assert_eq!(
        follower.get_current_snapshot().await.unwrap().unwrap().meta,
        meta
    );
}

#[tokio::test]
async fn a_snapshot_whose_data_disagrees_with_its_meta_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm) = open(&dir);
    sm.apply([blank_ent::<TypeConfig>(1, 1, 1)]).await.unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut meta = snap.meta.clone();
    meta.last_log_id = Some(log_id(1, 1, 5));
    let other = tempfile::tempdir().unwrap();
    let (_, mut follower) = open(&other);
    assert!(
        follower
            .install_snapshot(&meta, snap.snapshot)
            .await
            .is_err()
    );
    assert_eq!(follower.applied_state().await.unwrap().0, None);
}

#[test]
fn the_database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(open_db(dir.path()).unwrap());
    let mode = std::fs::metadata(dir.path().join(DB_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Reopening an existing file works.
    drop(open_db(dir.path()).unwrap());
}

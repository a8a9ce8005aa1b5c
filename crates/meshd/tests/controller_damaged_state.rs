//! A replica whose files are damaged or gone stops with a message that says what is wrong
//! and what to do, and a non-zero exit: never a panic, never a silent fresh start (which, in
//! a cluster, would be a second cluster under the same name).

mod common;

use std::process::Output;
use std::time::Duration;

use common::{ReplicaProcess, meshd};

/// `meshd controller run` on a replica's directory, expected to stop on its own.
fn run_once(replica: &ReplicaProcess) -> Output {
    let mut child = meshd()
        .args(["controller", "run", "--data"])
        .arg(replica.data())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("meshd runs");
    let stopped = meshd_lab::interrupt::wait_until(Duration::from_secs(15), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !stopped {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    assert!(stopped, "the replica kept running on damaged state");
    out
}

fn refused(replica: &ReplicaProcess, what: &str, says: &[&str]) {
    let out = run_once(replica);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: exit 0\n{stderr}");
    assert_ne!(out.status.code(), Some(101), "{what}: a panic\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what}: a panic\n{stderr}");
    for s in says {
        assert!(stderr.contains(s), "{what}: no {s:?} in\n{stderr}");
    }
}

#[test]
fn damaged_or_missing_replica_files_stop_the_replica_with_a_clear_error() {
    // A replica that ran once, with a network.
    let mut replica = ReplicaProcess::init();
    replica.start();
    common::ok_stdout(&replica.cli(&["network", "create", "--name", "keep"]));
    replica.stop();
    let store = replica.data().join("raft.redb");
    let saved = std::fs::read(&store).expect("the store");

    std::fs::remove_file(&store).expect("remove");
    refused(
        &replica,
        "missing store",
        &["raft.redb is missing", "backup"],
    );
    assert!(!store.exists(), "a missing store was created afresh");

    std::fs::write(&store, b"").expect("empty");
    refused(&replica, "emptied store", &["raft.redb is empty"]);

    let mut noise = vec![0u8; saved.len().max(4096)];
    getrandom::fill(&mut noise).expect("random");
    std::fs::write(&store, &noise).expect("noise");
    refused(&replica, "random store", &["raft.redb"]);

    // The store back as it was: the replica starts with its network.
    std::fs::write(&store, &saved).expect("restore");
    let key = replica.data().join("replica.key");
    let good_key = std::fs::read(&key).expect("the key");
    // 64 bytes, one of them inside a multi-byte character.
    let mut bad_key = "é".to_owned();
    bad_key.push_str(&"a".repeat(62));
    std::fs::write(&key, bad_key).expect("bad key");
    refused(&replica, "non-ASCII key", &["replica.key", "64 hex digits"]);
    std::fs::write(&key, good_key).expect("restore the key");

    let secret = replica.data().join("cluster.secret");
    let good_secret = std::fs::read(&secret).expect("the cluster secret");
    std::fs::write(&secret, "short\n").expect("bad secret");
    refused(
        &replica,
        "damaged cluster secret",
        &["cluster.secret is damaged", "another replica"],
    );
    std::fs::write(&secret, good_secret).expect("restore the secret");

    replica.start();
    let list = common::ok_stdout(&replica.cli(&["network", "list"]));
    assert!(list.contains("keep"), "{list}");
}

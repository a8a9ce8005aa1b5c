use std::net::SocketAddr;
use std::time::Duration;

use meshd_proto::Identity;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use openraft::error::RPCError;
use openraft::network::RPCOption;
use openraft::raft::VoteRequest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;
use crate::state::RejectKind;
use crate::test_support::{nwid, spec};

const TOKEN: &str = "test-cluster-token";
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// `networks` networks with two members each, one authorized per step: 5 commands a network.
fn workload(seeds: std::ops::RangeInclusive<u8>, ids: &[Identity; 2]) -> Vec<Command> {
    let mut cmds = Vec::new();
    for seed in seeds {
        let network = nwid(seed);
        cmds.push(Command::CreateNetwork(spec(seed)));
        for (who, id) in ids.iter().enumerate() {
            cmds.push(Command::MemberJoin {
                network,
                identity: *id.public(),
                physical: Some(SocketAddr::from(([192, 0, 2, who as u8 + 1], 9993))),
                local: vec![],
                at_ms: 2,
            });
            cmds.push(Command::Authorize {
                network,
                node: id.node_id(),
                at_ms: 3,
            });
        }
    }
    cmds
}

fn identities() -> [Identity; 2] {
    [Identity::generate(), Identity::generate()]
}

async fn write_all(replica: &Replica, cmds: Vec<Command>) {
    for cmd in cmds {
        replica.write(cmd).await.unwrap();
    }
}

fn snapshot_of(replica: &Replica) -> ControllerState {
    replica.read(Clone::clone)
}

async fn open(dir: &Path) -> Replica {
    Replica::open(dir, 1, "http://127.0.0.1:1".into(), TOKEN.into())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_leads_and_reports_health() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path()).await;
    let health = replica.metrics();
    assert_eq!(health.id, 1);
    assert_eq!(health.role, ReplicaRole::Leader);
    assert_eq!(health.leader, Some(1));

    let applied = replica.applied();
    assert!(!applied.has_changed().unwrap());
    let out = replica
        .write(Command::CreateNetwork(spec(1)))
        .await
        .unwrap();
    assert_eq!(out, Applied::NetworkCreated { network: nwid(1) });
    assert!(applied.has_changed().unwrap());
    assert!(replica.read(|s| s.network(nwid(1)).is_some()));

    // Openraft publishes metrics after the write returns.
    let index = replica.raft().metrics().borrow().last_log_index;
    replica
        .raft()
        .wait(WAIT)
        .applied_index(index, "metrics")
        .await
        .unwrap();
    let health = replica.metrics();
    assert!(health.applied_index.is_some());
    assert_eq!(health.applied_index, health.last_log_index);
    // The health record is what the health endpoint serves.
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["role"], "leader");
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path()).await;
    write_all(&replica, workload(1..=1, &identities())).await;
    let before = snapshot_of(&replica);

    let err = replica
        .write(Command::Authorize {
            network: nwid(7),
            node: identities()[0].node_id(),
            at_ms: 4,
        })
        .await
        .unwrap_err();
    let WriteError::Rejected(rejected) = err else {
        panic!("expected a rejection, got {err:?}");
    };
    assert_eq!(rejected.kind, RejectKind::NotFound);
    let err = replica
        .write(Command::CreateNetwork(spec(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Rejected(r) if r.kind == RejectKind::Conflict),
        "{err:?}"
    );
    assert_eq!(snapshot_of(&replica), before);

    // The rejections are in the log; replaying them after a restart changes nothing either.
    replica.shutdown().await;
    let replica = open(dir.path()).await;
    assert_eq!(snapshot_of(&replica), before);
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path()).await;
    let cmds = workload(1..=40, &identities());
    assert_eq!(cmds.len(), 200);
    write_all(&replica, cmds).await;
    let before = snapshot_of(&replica);
    assert_eq!(before.networks.len(), 40);
    let applied_before = replica.metrics().applied_index;
    replica.shutdown().await;
    drop(replica);

    let replica = open(dir.path()).await;
    assert_eq!(snapshot_of(&replica), before);
    // Committed entries are re-applied while opening, before any read.
    assert!(replica.metrics().applied_index >= applied_before);
    assert_eq!(replica.metrics().role, ReplicaRole::Leader);
    // And it keeps working.
    write_all(&replica, workload(41..=41, &identities())).await;
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_after_snapshot_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let options = ReplicaOptions {
        keep_after_snapshot: 0,
        ..ReplicaOptions::default()
    };
    let ids = identities();
    let replica = Replica::open_with(
        dir.path(),
        1,
        "http://127.0.0.1:1".into(),
        TOKEN.into(),
        options.clone(),
    )
    .await
    .unwrap();
    write_all(&replica, workload(1..=20, &ids)).await;
    let upto = replica.metrics().applied_index.unwrap();
    replica.raft().trigger().snapshot().await.unwrap();
    replica
        .raft()
        .wait(WAIT)
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= upto), "snapshot")
        .await
        .unwrap();
    replica.raft().trigger().purge_log(upto).await.unwrap();
    replica
        .raft()
        .wait(WAIT)
        .metrics(|m| m.purged.is_some_and(|p| p.index >= upto), "purge")
        .await
        .unwrap();
    write_all(&replica, workload(21..=40, &ids)).await;
    let before = snapshot_of(&replica);
    replica.shutdown().await;

    let replica = Replica::open_with(
        dir.path(),
        1,
        "http://127.0.0.1:1".into(),
        TOKEN.into(),
        options,
    )
    .await
    .unwrap();
    assert_eq!(snapshot_of(&replica), before);
    let m = replica.raft().metrics().borrow().clone();
    assert!(m.snapshot.is_some_and(|s| s.index >= upto), "{m:?}");
    assert!(m.purged.is_some_and(|p| p.index >= upto), "{m:?}");
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_policy_builds_snapshots_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let options = ReplicaOptions {
        snapshot_every: 50,
        keep_after_snapshot: 10,
        ..ReplicaOptions::default()
    };
    let replica = Replica::open_with(
        dir.path(),
        1,
        "http://127.0.0.1:1".into(),
        TOKEN.into(),
        options.clone(),
    )
    .await
    .unwrap();
    write_all(&replica, workload(1..=40, &identities())).await;
    replica
        .raft()
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 150),
            "automatic snapshot",
        )
        .await
        .unwrap();
    let before = snapshot_of(&replica);
    replica.shutdown().await;
    let replica = Replica::open_with(
        dir.path(),
        1,
        "http://127.0.0.1:1".into(),
        TOKEN.into(),
        options,
    )
    .await
    .unwrap();
    assert_eq!(snapshot_of(&replica), before);
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path()).await;
    let err = Replica::open(dir.path(), 1, "http://127.0.0.1:1".into(), TOKEN.into())
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicaError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("another controller"), "{err}");
    replica.shutdown().await;
}

/// A replica serving its raft endpoints on a loopback port.
struct Served {
    replica: Replica,
    url: String,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn serve(id: u64, options: ReplicaOptions) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open_with(dir.path(), id, url.clone(), TOKEN.into(), options)
        .await
        .unwrap();
    let router = replica.router();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Served {
        replica,
        url,
        server,
        _dir: dir,
    }
}

/// The state machine's own applied index: exact, where openraft's metrics trail a little.
fn applied_now(replica: &Replica) -> u64 {
    *replica.applied().borrow()
}

async fn wait_applied(replica: &Replica, index: u64) {
    replica
        .raft()
        .wait(WAIT)
        .applied_index_at_least(Some(index), "catch up")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_replicate_and_elect_a_new_leader() {
    // The first replica snapshots and purges eagerly, so the others must receive a snapshot.
    let eager = ReplicaOptions {
        snapshot_every: 20,
        keep_after_snapshot: 0,
        ..ReplicaOptions::default()
    };
    let joining = ReplicaOptions {
        bootstrap: false,
        ..eager.clone()
    };
    let ids = identities();
    let a = serve(1, eager).await;
    write_all(&a.replica, workload(1..=10, &ids)).await;
    a.replica
        .raft()
        .wait(WAIT)
        .metrics(|m| m.purged.is_some(), "purge on the first replica")
        .await
        .unwrap();

    let b = serve(2, joining.clone()).await;
    let c = serve(3, joining).await;
    assert_eq!(b.replica.metrics().role, ReplicaRole::Learner);
    let raft = a.replica.raft();
    for s in [&b, &c] {
        raft.add_learner(s.replica.id(), BasicNode::new(&s.url), true)
            .await
            .unwrap();
    }
    let purged = raft.metrics().borrow().purged.unwrap();
    for s in [&b, &c] {
        // The log up to `purged` is gone: only a snapshot transfer can bring them past it.
        // (`add_learner(.., true)` returns once the lag is under `replication_lag_threshold`,
        // 5000 entries by default, so it does not mean caught up.)
        s.replica
            .raft()
            .wait(WAIT)
            .metrics(
                |m| m.snapshot.is_some_and(|l| l >= purged),
                "snapshot installed",
            )
            .await
            .unwrap();
    }
    raft.change_membership([1, 2, 3], false).await.unwrap();

    write_all(&a.replica, workload(11..=12, &ids)).await;
    let index = applied_now(&a.replica);
    for s in [&b, &c] {
        wait_applied(&s.replica, index).await;
        assert_eq!(snapshot_of(&s.replica), snapshot_of(&a.replica));
        assert_eq!(s.replica.metrics().leader, Some(1));
        assert_eq!(s.replica.metrics().role, ReplicaRole::Follower);
    }

    // A follower refuses writes and names the leader.
    let err = b
        .replica
        .write(Command::CreateNetwork(spec(99)))
        .await
        .unwrap_err();
    let WriteError::Unavailable(msg) = &err else {
        panic!("expected unavailable, got {err:?}");
    };
    assert!(msg.contains(&a.url), "{msg}");

    // A wrong cluster token is refused, and reported as unreachable (back off, do not hammer).
    let mut stranger = HttpNetworkFactory::new(9, "wrong-token")
        .new_client(2, &BasicNode::new(&b.url))
        .await;
    let err = stranger
        .vote(
            VoteRequest::new(openraft::Vote::new(99, 9), None),
            RPCOption::new(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    assert!(err.to_string().contains("admin token"), "{err}");

    // The leader goes away; the other two elect one of themselves and keep serving writes.
    a.replica.shutdown().await;
    a.server.abort();
    let m = b
        .replica
        .raft()
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some_and(|l| l != 1), "a new leader")
        .await
        .unwrap();
    let leader = m.current_leader.unwrap();
    let (new_leader, other) = if leader == 2 { (&b, &c) } else { (&c, &b) };
    write_all(&new_leader.replica, workload(13..=13, &ids)).await;
    let index = applied_now(&new_leader.replica);
    wait_applied(&other.replica, index).await;
    assert_eq!(
        snapshot_of(&other.replica),
        snapshot_of(&new_leader.replica)
    );
    assert!(snapshot_of(&other.replica).network(nwid(13)).is_some());

    for s in [&b, &c] {
        s.replica.shutdown().await;
        s.server.abort();
    }
}

const KILL9_CHILD_DIR: &str = "MESHD_TEST_KILL9_CHILD_DIR";
const KILL9_TEST: &str = "replica::tests::acknowledged_writes_survive_kill_9";

/// The child half of the kill -9 test: writes networks one by one and reports each ack.
fn kill9_child(dir: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let replica = open(Path::new(dir)).await;
        for seed in 1..=u8::MAX {
            replica
                .write(Command::CreateNetwork(spec(seed)))
                .await
                .unwrap();
            println!("acked {seed}");
        }
        // Never reached in the test: the parent kills us first.
        std::future::pending::<()>().await;
    });
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command as Process, Stdio};

    if let Ok(dir) = std::env::var(KILL9_CHILD_DIR) {
        return kill9_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([KILL9_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(KILL9_CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0u8;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            acked = n.parse().unwrap();
            if acked >= 40 {
                break;
            }
        }
    }
    // Kill mid-stream: the child is writing the next network as it dies.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(acked >= 40, "the child stopped after {acked} writes");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let replica = open(dir.path()).await;
        for seed in 1..=acked {
            assert!(
                replica.read(|s| s.network(nwid(seed)).is_some()),
                "acknowledged network {seed} of {acked} is lost"
            );
        }
        replica.shutdown().await;
    });
}

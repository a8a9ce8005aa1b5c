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

/// The cluster secret every test replica shares (64 hex digits, as a real one).
const SECRET: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

/// Replica `id`'s key (the same each time, as its replica.key would be) with the tests'
/// cluster secret.
fn credentials(id: u64) -> ReplicaCredentials {
    ReplicaCredentials {
        seed: [u8::try_from(id).unwrap(); 32],
        cluster_secret: SECRET.into(),
    }
}
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
                node: id.node_id(),
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
    [Identity::generate_unproven(), Identity::generate_unproven()]
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
    Replica::open(dir, 1, "http://127.0.0.1:1".into(), credentials(1))
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
        credentials(1),
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
        credentials(1),
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
        credentials(1),
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
        credentials(1),
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
    let err = Replica::open(dir.path(), 1, "http://127.0.0.1:1".into(), credentials(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicaError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("another controller"), "{err}");
    replica.shutdown().await;
}

/// A replica serving its raft endpoints on a loopback port.
struct Served {
    replica: Replica,
    credentials: ReplicaCredentials,
    /// `host:port`, as replicas advertise themselves.
    addr: String,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn serve(id: u64, options: ReplicaOptions) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let credentials = credentials(id);
    let replica = Replica::open_with(dir.path(), id, addr.clone(), credentials.clone(), options)
        .await
        .unwrap();
    let serving = replica.serve_replication(listener).unwrap();
    let server = tokio::spawn(async move {
        serving.await.unwrap();
    });
    Served {
        replica,
        credentials,
        addr,
        server,
        _dir: dir,
    }
}

/// A vote request through `client`, which must fail.
async fn refused_vote(
    client: &mut crate::raft::network::HttpNetwork,
) -> RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId>> {
    let vote = VoteRequest::new(openraft::Vote::new(99, 9), None);
    client
        .vote(vote, RPCOption::new(Duration::from_secs(5)))
        .await
        .unwrap_err()
}

impl Served {
    /// This replica as the membership records it.
    fn node(&self) -> ReplicaNode {
        ReplicaNode::new(&self.addr, Some(self.replica.key()))
    }
}

/// Sends a plain HTTP request to `addr` and checks that no HTTP answer comes back: the
/// replication listener speaks only TLS.
async fn assert_no_http_answer(addr: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /raft/vote HTTP/1.1\r\nhost: {addr}\r\n{}: {SECRET}\r\ncontent-length: 0\r\n\r\n",
        crate::raft::CLUSTER_SECRET_HEADER
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was closed");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
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
        raft.add_learner(s.replica.id(), s.node(), true)
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

    // A follower passes writes on to the leader, rejections included.
    let out = b
        .replica
        .write(Command::CreateNetwork(spec(99)))
        .await
        .unwrap();
    assert_eq!(out, Applied::NetworkCreated { network: nwid(99) });
    let err = c
        .replica
        .write(Command::CreateNetwork(spec(99)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Rejected(r) if r.kind == RejectKind::Conflict),
        "{err:?}"
    );
    let index = applied_now(&a.replica);
    for s in [&b, &c] {
        wait_applied(&s.replica, index).await;
        assert!(snapshot_of(&s.replica).network(nwid(99)).is_some());
    }

    // Strangers are refused, and reported as unreachable (back off, do not hammer): a key
    // outside the membership (even with the secret), a member's key without the secret, a
    // replica that does not prove the key recorded for it.
    let mut stranger = HttpNetworkFactory::new(9, credentials(9))
        .new_client(2, &b.node())
        .await;
    // TLS 1.3 checks a client's key after the client's side of the handshake is done, so the
    // refusal shows as a closed connection; what matters is that the vote was not counted.
    let term = b.replica.metrics().term;
    let err = refused_vote(&mut stranger).await;
    assert!(
        matches!(err, RPCError::Unreachable(_) | RPCError::Network(_)),
        "{err}"
    );
    assert_eq!(b.replica.metrics().term, term);
    let no_secret = ReplicaCredentials {
        cluster_secret: crate::datadir::new_token().into(),
        ..a.credentials.clone()
    };
    let mut client = HttpNetworkFactory::new(1, no_secret)
        .new_client(2, &b.node())
        .await;
    let err = refused_vote(&mut client).await;
    assert!(matches!(err, RPCError::Unreachable(_)), "{err}");
    assert!(
        err.to_string().contains("refused the cluster secret"),
        "{err}"
    );
    let impostor = ReplicaNode::new(&b.addr, Some(c.replica.key()));
    let mut client = HttpNetworkFactory::new(1, a.credentials.clone())
        .new_client(2, &impostor)
        .await;
    let err = refused_vote(&mut client).await;
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    // Plain HTTP on the replication port gets no HTTP answer at all.
    assert_no_http_answer(&b.addr).await;

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

/// Waits until `replica` knows a leader.
async fn wait_leader(replica: &Replica) -> ReplicaId {
    let m = replica
        .raft()
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap();
    m.current_leader.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_are_added_and_removed_through_any_replica() {
    let joining = ReplicaOptions {
        bootstrap: false,
        ..ReplicaOptions::default()
    };
    let a = serve(1, ReplicaOptions::default()).await;
    write_all(&a.replica, workload(1..=2, &identities())).await;
    let b = serve(2, joining.clone()).await;
    let c = serve(3, joining).await;

    // A fresh replica that is not yet added says how to add it.
    let view = b.replica.cluster_view().await;
    assert_eq!(view.leader, None);
    assert!(view.replicas.is_empty());
    let note = view.note.unwrap();
    assert!(
        note.contains(&format!(
            "--id 2 --address {} --key {}",
            b.addr,
            b.replica.key()
        )),
        "{note}"
    );

    // Mistakes are caught before anything changes.
    let err = a
        .replica
        .add_replica(4, &b.addr, b.replica.key())
        .await
        .unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::Invalid, "{err}");
    assert!(
        err.message
            .contains("this is controller replica 2, not replica 4"),
        "{err}"
    );
    let err = a
        .replica
        .add_replica(4, "127.0.0.1:1", b.replica.key())
        .await
        .unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::Unavailable, "{err}");
    assert!(
        err.message
            .contains("cannot reach replica 4 at 127.0.0.1:1"),
        "{err}"
    );
    let err = a
        .replica
        .add_replica(4, "http://127.0.0.1:1", b.replica.key())
        .await
        .unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::Invalid, "{err}");
    let err = a
        .replica
        .add_replica(4, "10.0.0.9:9994", b.replica.key())
        .await
        .unwrap_err();
    assert!(err.message.contains("loopback"), "{err}");
    assert_eq!(a.replica.cluster_view().await.replicas.len(), 1);

    // A replica that does not prove the key given is not added.
    let err = a
        .replica
        .add_replica(2, &b.addr, c.replica.key())
        .await
        .unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::Invalid, "{err}");
    assert!(err.message.contains("did not prove the key"), "{err}");
    assert_eq!(a.replica.cluster_view().await.replicas.len(), 1);

    // Added on the leader; adding again changes nothing.
    assert!(
        a.replica
            .add_replica(2, &b.addr, b.replica.key())
            .await
            .unwrap()
    );
    assert!(
        !a.replica
            .add_replica(2, &b.addr, b.replica.key())
            .await
            .unwrap()
    );
    let err = a
        .replica
        .add_replica(2, &b.addr, c.replica.key())
        .await
        .unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::Conflict, "{err}");
    // Added through a follower, which asks the leader.
    assert_eq!(wait_leader(&b.replica).await, 1);
    assert!(
        b.replica
            .add_replica(3, &c.addr, c.replica.key())
            .await
            .unwrap()
    );
    let err = b
        .replica
        .add_replica(3, "127.0.0.1:2", c.replica.key())
        .await
        .unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::Conflict, "{err}");

    // Every replica shows the leader's view: one leader, two followers that caught up.
    write_all(&a.replica, workload(3..=3, &identities())).await;
    wait_applied(&c.replica, applied_now(&a.replica)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = c.replica.cluster_view().await;
        if view
            .replicas
            .iter()
            .all(|r| r.lag == Some(0) && r.healthy == Some(true))
            || std::time::Instant::now() > deadline
        {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view.leader, Some(1), "{view:?}");
    assert_eq!(view.reported_by, 1, "{view:?}");
    let roles: Vec<_> = view.replicas.iter().map(|r| (r.id, r.role)).collect();
    assert_eq!(
        roles,
        [
            (1, ReplicaRole::Leader),
            (2, ReplicaRole::Follower),
            (3, ReplicaRole::Follower)
        ]
    );
    assert!(
        view.replicas
            .iter()
            .all(|r| r.lag == Some(0) && r.healthy == Some(true)),
        "{view:?}"
    );
    assert_eq!(view.replicas[2].address, c.addr);
    assert_eq!(view.replicas[2].key, Some(c.replica.key()));
    // The leader records the membership's addresses and keys; every replica applies them, and
    // every network's config names them (signed with the network's key).
    let mut wanted: Vec<crate::state::ReplicaRecord> = [&a, &b, &c]
        .iter()
        .map(|s| crate::state::ReplicaRecord {
            address: s.addr.clone(),
            key: s.replica.key().0,
        })
        .collect();
    wanted.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.replica.read(|s| s.replicas != wanted) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let named = c.replica.read(|s| {
        let net = s.networks.values().next().expect("a network");
        s.network_config(net).replicas
    });
    let named: Vec<(String, [u8; 32])> = named.into_iter().map(|r| (r.address, r.key)).collect();
    let wanted_pairs: Vec<(String, [u8; 32])> =
        wanted.iter().map(|r| (r.address.clone(), r.key)).collect();
    assert_eq!(named, wanted_pairs);
    wait_applied(&c.replica, applied_now(&a.replica)).await;
    assert_eq!(snapshot_of(&c.replica), snapshot_of(&a.replica));

    // Removed through a follower; unknown ids and the last voter are refused.
    assert!(c.replica.remove_replica(2).await.unwrap());
    let err = c.replica.remove_replica(9).await.unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::NotFound, "{err}");
    assert!(a.replica.remove_replica(3).await.unwrap());
    let err = a.replica.remove_replica(1).await.unwrap_err();
    assert_eq!(err.kind, MembershipErrorKind::Invalid, "{err}");
    assert!(err.message.contains("only voter"), "{err}");
    let ids: Vec<_> = a
        .replica
        .cluster_view()
        .await
        .replicas
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [1]);
    // The cluster of one still takes writes.
    write_all(&a.replica, workload(4..=4, &identities())).await;

    for s in [&a, &b, &c] {
        s.replica.shutdown().await;
        s.server.abort();
    }
}

#[test]
fn replica_addresses_are_checked() {
    assert_eq!(
        parse_replica_address(" 10.0.0.2:9994 ").unwrap(),
        "10.0.0.2:9994"
    );
    assert_eq!(
        parse_replica_address("[fd00::2]:9994").unwrap(),
        "[fd00::2]:9994"
    );
    assert_eq!(
        parse_replica_address("Ctl2.Example.com:9994").unwrap(),
        "ctl2.example.com:9994"
    );
    for bad in [
        "http://10.0.0.2:9994",
        "10.0.0.2",
        "0.0.0.0:9994",
        "[::]:9994",
        "fd00::2:9994",
        "ctl2:0",
        "ctl 2:9994",
        ":9994",
    ] {
        let e = parse_replica_address(bad).unwrap_err();
        assert!(e.contains(bad.trim()), "{bad}: {e}");
    }
    assert!(is_loopback_address("127.0.0.3:9994"));
    assert!(is_loopback_address("[::1]:9994"));
    assert!(is_loopback_address("localhost:9994"));
    assert!(is_loopback_address("http://127.0.0.1:9995"));
    assert!(!is_loopback_address("10.0.0.2:9994"));
    assert!(!is_loopback_address("ctl2.example.com:9994"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_api_explains_bad_input() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use hyper::{Request, StatusCode, header};
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path()).await;
    let token = "a".repeat(64);
    let app = crate::api::router_with(
        replica.clone(),
        token.clone(),
        crate::api::ApiOptions {
            admin_routes: Some(admin_routes(replica.clone())),
            ..crate::api::ApiOptions::default()
        },
    );
    let send = |method: &str, uri: &str, body: Option<&str>, auth: bool| {
        let mut req = Request::builder().method(method).uri(uri);
        if auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            (status, body)
        }
    };

    let (status, _) = send("GET", "/v1/replicas", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, view) = send("GET", "/v1/replicas", None, true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["leader"], 1);
    assert_eq!(view["replicas"][0]["role"], "leader");
    assert_eq!(view["replicas"][0]["lag"], 0);

    for (body, needle) in [
        (
            r#"{"id":"two","address":"10.0.0.2:9994","key":"3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f"}"#,
            "wrong field",
        ),
        (
            r#"{"id":2,"key":"3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f"}"#,
            "address",
        ),
        (r#"{"id":2,"address":"127.0.0.1:1"}"#, "key"),
        (
            r#"{"id":2,"address":"10.0.0.2","key":"3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f"}"#,
            "HOST:PORT",
        ),
        (
            r#"{"id":2,"address":"127.0.0.1:1","key":"3f"}"#,
            "printed by `meshd controller init --join`",
        ),
        (
            r#"{"id":2,"address":"127.0.0.1:1","key":"3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f"}"#,
            "cannot reach replica 2",
        ),
    ] {
        let (status, reply) = send("POST", "/v1/replicas", Some(body), true).await;
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(needle), "{body}: {error}");
        let expected = if needle.starts_with("cannot reach") {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, expected, "{body}: {error}");
    }
    let (status, reply) = send("DELETE", "/v1/replicas/two", None, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("not a number"));
    let (status, _) = send("DELETE", "/v1/replicas/7", None, true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, reply) = send("DELETE", "/v1/replicas/1", None, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_records_its_new_address() {
    let dir = tempfile::tempdir().unwrap();
    // An older data directory: the admin API URL as the raft address.
    let replica = open(dir.path()).await;
    replica.shutdown().await;
    let replica = Replica::open(dir.path(), 1, "127.0.0.1:9994".into(), credentials(1))
        .await
        .unwrap();
    let addr = |r: &Replica| {
        r.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&1)
            .map(|n| n.addr.clone())
    };
    assert_eq!(addr(&replica).as_deref(), Some("127.0.0.1:9994"));
    replica
        .write(Command::CreateNetwork(spec(1)))
        .await
        .unwrap();
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_can_remove_itself() {
    let joining = ReplicaOptions {
        bootstrap: false,
        ..ReplicaOptions::default()
    };
    let a = serve(1, ReplicaOptions::default()).await;
    let b = serve(2, joining.clone()).await;
    let c = serve(3, joining).await;
    a.replica
        .add_replica(2, &b.addr, b.replica.key())
        .await
        .unwrap();
    a.replica
        .add_replica(3, &c.addr, c.replica.key())
        .await
        .unwrap();
    // Asked through a follower; the leader commits its own removal and steps down.
    assert!(b.replica.remove_replica(1).await.unwrap());
    // The two left elect a leader (after the old one's lease) and take writes.
    let started = std::time::Instant::now();
    b.replica
        .write(Command::CreateNetwork(spec(5)))
        .await
        .unwrap();
    eprintln!("first write after the leader left: {:?}", started.elapsed());
    let view = c.replica.cluster_view().await;
    let ids: Vec<_> = view.replicas.iter().map(|r| r.id).collect();
    assert_eq!(ids, [2, 3], "{view:?}");
    assert!(matches!(view.leader, Some(2 | 3)), "{view:?}");
    for s in [&a, &b, &c] {
        s.replica.shutdown().await;
        s.server.abort();
    }
}

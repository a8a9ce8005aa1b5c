//! Three controller replica processes on loopback: `init`, `init --join`, `replica add`;
//! writes through a follower; the leader is SIGKILLed and a new one takes writes within 5 s;
//! the killed replica restarts and catches up; `replica remove`.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{ReplicaProcess, ok_stdout};
use meshd_controller::admin_client::AdminClient;
use meshd_controller::api::requests::CreateNetwork;
use meshd_controller::replica::{ClusterView, ReplicaRole};
use serde_json::Value;

/// `replica list --json` through `via`'s admin API.
fn replica_list(via: &ReplicaProcess) -> ClusterView {
    let out = ok_stdout(&via.cli(&["replica", "list", "--json"]));
    serde_json::from_str(&out).expect("replica list --json parses")
}

/// `network list --json` on `via`: its applied state.
fn networks(via: &ReplicaProcess) -> Value {
    serde_json::from_str(&ok_stdout(&via.cli(&["network", "list", "--json"]))).expect("JSON")
}

fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `replica add` command `init --join` printed, as arguments after `meshd controller`.
fn printed_add_command(init_stdout: &str) -> Vec<String> {
    let line = init_stdout
        .lines()
        .find_map(|l| {
            l.split_once("meshd controller replica add ")
                .map(|(_, rest)| rest)
        })
        .unwrap_or_else(|| panic!("init prints the replica add command: {init_stdout}"));
    std::iter::once("replica")
        .chain(std::iter::once("add"))
        .chain(line.split_whitespace())
        .map(str::to_owned)
        .collect()
}

fn healthy_cluster(view: &ClusterView, voters: usize) -> bool {
    view.leader.is_some()
        && view.replicas.len() == voters
        && view
            .replicas
            .iter()
            .all(|r| r.lag == Some(0) && r.healthy == Some(true))
}

#[test]
fn three_replicas_survive_the_loss_of_the_leader() {
    let started = Instant::now();
    let ip = |n| Ipv4Addr::new(127, 0, 0, n);
    let mut first = ReplicaProcess::init_at(ip(2), &[]);
    first.start();
    let token = first.token();
    let url = first.url();

    // Two more, each joined and then added with the command init printed.
    let mut replicas = vec![first];
    for n in [3, 4] {
        let mut r = ReplicaProcess::init_at(ip(n), &["--join", &url, "--token", &token]);
        assert_eq!(
            r.token(),
            token,
            "a joining replica holds the cluster's token"
        );
        r.start();
        let add = printed_add_command(&r.init_stdout);
        let add: Vec<&str> = add.iter().map(String::as_str).collect();
        let out = ok_stdout(&replicas[0].cli(&add));
        assert!(out.contains("is a voter"), "{out}");
        replicas.push(r);
    }
    let ids: Vec<u64> = replica_list(&replicas[0])
        .replicas
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [1, 2, 3]);

    // Every replica's API shows the leader's view: one leader, two followers, no lag.
    for r in &replicas {
        let view = eventually("a caught-up cluster", Duration::from_secs(5), || {
            Some(replica_list(r)).filter(|v| healthy_cluster(v, 3))
        });
        let roles: Vec<ReplicaRole> = view.replicas.iter().map(|r| r.role).collect();
        assert_eq!(
            roles,
            [
                ReplicaRole::Leader,
                ReplicaRole::Follower,
                ReplicaRole::Follower
            ]
        );
        assert_eq!(view.replicas[2].address, replicas[2].channel.to_string());
    }
    let table = ok_stdout(&replicas[1].cli(&["replica", "list"]));
    assert!(table.starts_with("leader: replica 1"), "{table}");
    eprintln!("{table}");
    let health = common::http_get(replicas[2].api, "/v1/health").expect("health answers");
    assert!(
        health.ends_with(r#"{"status":"ok"}"#),
        "no details without the token: {health}"
    );
    let health = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(
            AdminClient::new(replicas[2].url(), replicas[2].token())
                .expect("client")
                .health(),
        )
        .expect("health with the token");
    assert!(health["replicas"].is_array(), "{health}");

    // Replication speaks only TLS: a plain HTTP request, even one carrying the cluster
    // secret, gets no HTTP answer. The secret is the same on every replica and is not the
    // admin token.
    let secret = |r: &ReplicaProcess| {
        std::fs::read_to_string(r.data().join("cluster.secret"))
            .expect("cluster.secret")
            .trim()
            .to_owned()
    };
    assert!(replicas.iter().all(|r| secret(r) == secret(&replicas[0])));
    assert_ne!(secret(&replicas[0]), token);
    let plain = format!(
        "POST /raft/vote HTTP/1.1\r\nHost: x\r\nx-meshd-cluster-secret: {}\r\n\
         content-length: 0\r\n\r\n",
        secret(&replicas[0])
    );
    let answer = common::raw_exchange(replicas[1].channel, plain.as_bytes())
        .expect("the replication port accepts connections");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP to the replication listener got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // A write through a follower's admin API is forwarded to the leader and reaches all.
    let nwid = ok_stdout(&replicas[2].cli(&["network", "create", "--name", "via-follower"]));
    let expected = networks(&replicas[0]);
    assert!(expected.to_string().contains(&nwid));
    for r in &replicas {
        eventually("the write on every replica", Duration::from_secs(5), || {
            (networks(r) == expected).then_some(())
        });
    }

    // SIGKILL the leader; a survivor takes a write within 5 s.
    let leader = replica_list(&replicas[1]).leader.expect("a leader");
    let leader_ix = usize::try_from(leader - 1).expect("ids are 1..=3");
    let survivor_ix = (leader_ix + 1) % 3;
    let survivor = AdminClient::new(replicas[survivor_ix].url(), token.clone()).expect("client");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    eprintln!(
        "killing the leader, replica {leader} (pid {:?})",
        replicas[leader_ix].pid()
    );
    replicas[leader_ix].kill();
    let killed_at = Instant::now();
    let mut attempts = 0;
    let created = loop {
        attempts += 1;
        let req = CreateNetwork {
            name: "after-failover".into(),
            ..CreateNetwork::default()
        };
        match rt.block_on(survivor.create_network(&req)) {
            Ok(view) => break view,
            Err(e) => {
                assert!(
                    killed_at.elapsed() < Duration::from_secs(5),
                    "no write accepted within 5 s of killing the leader: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let failover = killed_at.elapsed();
    eprintln!(
        "leader killed -> first acknowledged write: {failover:?} ({attempts} attempt(s), \
         through replica {})",
        survivor_ix + 1
    );
    assert!(failover < Duration::from_secs(5), "{failover:?}");
    let view = replica_list(&replicas[survivor_ix]);
    let new_leader = view.leader.expect("a new leader");
    assert_ne!(new_leader, leader);

    // The killed replica restarts and catches up, as a follower.
    replicas[leader_ix].start();
    let expected = networks(&replicas[survivor_ix]);
    assert!(expected.to_string().contains(&created.id.to_string()));
    for r in &replicas {
        eventually(
            "every replica holds the same state",
            Duration::from_secs(10),
            || (networks(r) == expected).then_some(()),
        );
    }
    let view = eventually(
        "the restarted replica rejoins",
        Duration::from_secs(10),
        || Some(replica_list(&replicas[leader_ix])).filter(|v| healthy_cluster(v, 3)),
    );
    let restarted = view
        .replicas
        .iter()
        .find(|r| r.id == leader)
        .expect("listed");
    assert_eq!(restarted.role, ReplicaRole::Follower);

    // Remove a follower (through another follower's API); the two left keep working.
    let victim = view
        .replicas
        .iter()
        .find(|r| r.role == ReplicaRole::Follower)
        .expect("a follower")
        .id;
    let via = view
        .replicas
        .iter()
        .find(|r| r.role == ReplicaRole::Follower && r.id != victim)
        .expect("another follower")
        .id;
    let via_ix = usize::try_from(via - 1).expect("ids are 1..=3");
    let out = ok_stdout(&replicas[via_ix].cli(&["replica", "remove", "--id", &victim.to_string()]));
    assert!(out.contains(&format!("removed replica {victim}")), "{out}");
    let view = replica_list(&replicas[via_ix]);
    assert!(view.replicas.iter().all(|r| r.id != victim), "{view:?}");
    assert_eq!(view.replicas.len(), 2);
    let victim_ix = usize::try_from(victim - 1).expect("ids are 1..=3");
    replicas[victim_ix].stop();
    ok_stdout(&replicas[via_ix].cli(&["network", "create", "--name", "two-left"]));

    // Bad input is refused with a message that says what to fix.
    let key = "ab".repeat(32);
    let add = |address: &str, key: &str| {
        let out = replicas[via_ix].cli(&[
            "replica",
            "add",
            "--id",
            "7",
            "--address",
            address,
            "--key",
            key,
        ]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = add("http://x:1", &key);
    assert!(err.contains("HOST:PORT"), "{err}");
    let err = add("127.0.0.9:9", "abc");
    assert!(
        err.contains("--key") && err.contains("64 hex digits"),
        "{err}"
    );
    let out = replicas[via_ix].cli(&["replica", "remove", "--id", "42"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no replica 42"), "{err}");

    for r in &mut replicas {
        r.stop();
    }
    eprintln!("cluster test took {:?}", started.elapsed());
}

#[test]
fn init_join_checks_the_cluster_and_token() {
    let mut first = ReplicaProcess::init_at(Ipv4Addr::new(127, 0, 0, 5), &[]);
    first.start();
    let dir = tempfile::tempdir().expect("a temp dir");
    let join = |extra: &[&str]| {
        common::meshd()
            .args(["controller", "init", "--data"])
            .arg(dir.path().join("r2"))
            .args(["--listen", "127.0.0.6:9994", "--join", &first.url()])
            .args(extra)
            .env_remove("MESHD_TOKEN")
            .output()
            .expect("meshd runs")
    };
    let out = join(&[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--join needs the cluster's admin token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = "0".repeat(64);
    let out = join(&["--token", &wrong]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused the token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = join(&["--token", &first.token(), "--id", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("replica id 1 is taken"));
    assert!(
        !dir.path().join("r2").exists(),
        "nothing written on failure"
    );
    let out = ok_stdout(&join(&["--token", &first.token()]));
    assert!(
        out.contains("meshd controller replica add --api http://127.0.0.5:")
            && out.contains("--id 2 --address 127.0.0.6:9994"),
        "{out}"
    );
    first.stop();
}

//! The replicated controller under faults, end to end, in network namespaces with real
//! processes: three controller replicas and four member hosts on one bridge.
//!
//! - The nodes are given one replica and learn the others from it.
//! - SIGKILL the leader: within 5 s a surviving replica acknowledges a write; authorizing a
//!   new member through a survivor reaches every node (the time is printed: the
//!   authorize → all-nodes-updated latency with three replicas); the killed replica
//!   restarts and catches up; no acknowledged write is lost.
//! - A follower cut off (link down) while writes continue converges once healed: every
//!   replica's state dump is the same.
//! - Every replica stopped: the nodes keep passing traffic, also across a node restart,
//!   and `meshd status` says how long the controllers have been unreachable and which
//!   revision it runs on; replicas started again, a change made then reaches every node.
//!
//! Needs root, iproute2 and ping. Phases and timings go to stderr
//! (`cargo test -p meshd --test ha_e2e -- --nocapture`).

mod common;
mod mesh;

use std::time::{Duration, Instant};

use common::ok_stdout;
use mesh::cluster::Cluster;
use mesh::{CTL, Mesh, network, network_status, revision};
use meshd_proto::NetworkId;
use serde_json::Value;

/// The replicas' hosts: the mesh's controller host is the first.
const REPLICAS: [&str; 3] = [CTL, "c2", "c3"];
const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];
/// n4 joins at the start but is authorized only after the leader is killed.
const LATE: usize = 3;
/// The bound: a new leader takes writes within this long of the old one dying.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(5);

/// The revision a replica's `network show --json` gives.
fn network_revision(c: &Cluster, r: usize, nwid: NetworkId) -> Option<u64> {
    let out = c.cli(r, &["network", "show", &nwid.to_string(), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["revision"].as_u64()
}

#[test]
fn replicas_fail_and_heal_while_the_mesh_keeps_running() {
    let mut c = Cluster::new(Mesh::with_hosts(&NODES, &REPLICAS[1..]), &REPLICAS);
    c.m.phase(&c.m.describe_lab());

    c.start_all();
    c.m.phase("3 replicas: 1 leader, 2 followers, lag 0");

    // The network; the nodes know only the first replica.
    let nwid: NetworkId = ok_stdout(&c.cli(1, &["network", "create", "--name", "ha"]))
        .parse()
        .expect("network create prints the id");
    for i in 0..NODES.len() {
        c.m.start_daemon(i);
    }
    c.m.join_all(nwid);
    let early: Vec<usize> = (0..NODES.len()).filter(|&i| i != LATE).collect();
    for &i in &early {
        let node = c.m.nodes[i].id().to_string();
        ok_stdout(&c.cli(2, &["member", "authorize", &nwid.to_string(), &node]));
    }
    for &i in &early {
        c.m.wait_status(i, "OK", Duration::from_secs(15), |s| {
            network_status(s, nwid) == Some("OK")
        });
    }
    record_addresses(&mut c.m, nwid, &early);
    let learned = meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
        early.iter().all(|&i| {
            c.m.status(i)["controllers"]
                .as_array()
                .is_some_and(|cs| cs.len() == REPLICAS.len())
        })
    });
    assert!(
        learned,
        "every node learns all 3 replicas from the one it was given:\n{:#}",
        c.m.status(0)["controllers"]
    );
    let failed = c.pings_ok(&[(0, 1), (1, 2), (2, 0)]);
    assert!(failed.is_empty(), "{failed:?}\n{}", c.diagnostics());
    c.m.phase("n1..n3 authorized through a follower, OK, talking; each knows 3 replicas");

    // With all three replicas up: a change through a follower → every node on the new
    // revision, measured a few times.
    let n1 = c.m.nodes[0].id().to_string();
    let mut samples = Vec::new();
    for k in 0..5 {
        let follower = (0..REPLICAS.len())
            .find(|&r| Some(r) != c.leader(0))
            .expect("a follower");
        let t = Instant::now();
        let prefix = format!("192.168.{}.0/24", 80 + k);
        ok_stdout(&c.cli(
            follower,
            &["route", "add", &nwid.to_string(), &prefix, "--via", &n1],
        ));
        let latest = network_revision(&c, follower, nwid).expect("a revision");
        c.wait_revision(&early, nwid, latest, Duration::from_secs(10));
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    eprintln!(
        "change through a follower -> all 3 nodes updated, 3 replicas up: median {:.0} ms \
         (min {:.0}, max {:.0}, {} runs; includes the CLI and status polling every 100 ms)",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );

    // SIGKILL the leader; a survivor acknowledges a write within 5 s.
    let leader = c.leader(0).expect("a leader");
    let survivor = (leader + 1) % REPLICAS.len();
    let killed = c.replicas[leader].proc.take().expect("running");
    c.m.lab.kill(killed);
    let t0 = Instant::now();
    let mut attempts = 0;
    let mut last = String::new();
    let acked = meshd_lab::interrupt::wait_until(Duration::from_secs(15), || {
        attempts += 1;
        let out = c.cli(
            survivor,
            &["network", "create", "--name", &format!("after-{attempts}")],
        );
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    let failover = t0.elapsed();
    assert!(
        acked,
        "no write acknowledged after the leader died: {last}\n{}",
        c.diagnostics()
    );
    assert!(
        failover < FAILOVER_DEADLINE,
        "the first write was acknowledged {failover:?} after the leader died ({attempts} \
         attempts; last error: {last})"
    );
    eprintln!(
        "leader {} killed: first acknowledged write through {} after {:.2} s ({attempts} attempts)",
        REPLICAS[leader],
        REPLICAS[survivor],
        failover.as_secs_f64()
    );

    // Authorize n4 through the survivor: every node gets it.
    let before = network_revision(&c, survivor, nwid).expect("a revision");
    let n4 = c.m.nodes[LATE].id().to_string();
    let t1 = Instant::now();
    ok_stdout(&c.cli(survivor, &["member", "authorize", &nwid.to_string(), &n4]));
    let after = network_revision(&c, survivor, nwid).expect("a revision");
    assert!(after > before);
    c.wait_revision(&[0, 1, 2, 3], nwid, after, Duration::from_secs(20));
    let propagated = t1.elapsed();
    eprintln!(
        "authorize -> all 4 nodes on revision {after}: {:.0} ms (2 of 3 replicas up)",
        propagated.as_secs_f64() * 1000.0
    );
    record_addresses(&mut c.m, nwid, &[LATE]);
    let failed = c.pings_ok(&[(0, LATE), (LATE, 1)]);
    assert!(
        failed.is_empty(),
        "n4 after its authorization: {failed:?}\n{}",
        c.diagnostics()
    );
    c.m.phase("leader killed; survivors took writes; n4 authorized and reachable");

    // The killed replica restarts and catches up; no acknowledged write is lost.
    c.run(leader);
    let mut dumps = Vec::new();
    let same = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        dumps = (0..REPLICAS.len()).map(|r| c.dump(r)).collect();
        dumps.iter().all(|d| d.is_some() && *d == dumps[0])
    });
    assert!(
        same,
        "the restarted replica did not catch up:\n{dumps:#?}\n{}",
        c.diagnostics()
    );
    let names: Vec<String> = dumps[0]
        .as_ref()
        .and_then(Value::as_array)
        .expect("networks")
        .iter()
        .filter_map(|n| n["network"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        names.iter().any(|n| n == &format!("after-{attempts}")),
        "the acknowledged write is in every replica: {names:?}"
    );
    c.m.phase("the killed replica restarted and holds the same state as the others");

    // Cut a follower off while writes continue; heal; it converges.
    let leader = c.leader(survivor).expect("a leader");
    let cut = (0..REPLICAS.len())
        .find(|&r| r != leader)
        .expect("a follower");
    let cut_role = c.replicas[cut].role;
    let link = c.m.lab.host(cut_role).link.clone();
    c.m.lab
        .run_ip(cut_role, &["link", "set", &link, "down"])
        .expect("lab");
    let writer = (0..REPLICAS.len())
        .find(|&r| r != leader && r != cut)
        .expect("a third");
    let mut created = Vec::new();
    for k in 0..3 {
        let out = c.cli(
            writer,
            &["network", "create", "--name", &format!("during-cut-{k}")],
        );
        created.push(ok_stdout(&out));
    }
    ok_stdout(&c.cli(
        leader,
        &[
            "route",
            "add",
            &nwid.to_string(),
            "192.168.90.0/24",
            "--via",
            &n4,
        ],
    ));
    c.m.phase(&format!(
        "{cut_role} cut off; 3 networks and a route written meanwhile"
    ));
    c.m.lab
        .run_ip(cut_role, &["link", "set", &link, "up"])
        .expect("lab");
    let same = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        dumps = (0..REPLICAS.len()).map(|r| c.dump(r)).collect();
        dumps.iter().all(|d| d.is_some() && *d == dumps[0])
    });
    assert!(
        same,
        "{cut_role} did not converge after healing:\n{dumps:#?}\n{}",
        c.diagnostics()
    );
    c.m.phase(&format!(
        "{cut_role} healed: every replica's state dump is the same"
    ));

    // Every replica stopped: the mesh keeps running, also across a node restart.
    let held = revision(&c.m.status(1), nwid).expect("n2 runs on a config");
    for r in 0..REPLICAS.len() {
        if let Some(p) = c.replicas[r].proc.take() {
            c.m.lab.stop(p, Duration::from_secs(10));
        }
    }
    let n2 = c.m.nodes[1].proc.take().expect("n2 running");
    c.m.lab.kill(n2);
    c.m.start_daemon(1);
    let failed = c.pings_ok(&[(0, 1), (1, 2), (2, LATE)]);
    assert!(
        failed.is_empty(),
        "no controller: {failed:?}\n{}",
        c.diagnostics()
    );
    let status = c.m.wait_status(
        1,
        "the controllers to be unreachable",
        Duration::from_secs(20),
        |s| s["online"] == false && s["controllers_unreachable_for_s"].is_u64(),
    );
    assert_eq!(revision(&status, nwid), Some(held), "{status:#}");
    let human = ok_stdout(&c.m.node_cli(1, &["status"]));
    assert!(human.contains("unreachable"), "{human}");
    assert!(human.contains(&format!("revision {held}")), "{human}");
    c.m.phase("all replicas down: traffic flows, n2 restarted on its cache, status says so");

    // The replicas come back; a change made now reaches every node.
    for r in 0..REPLICAS.len() {
        c.run(r);
    }
    let leader_back =
        meshd_lab::interrupt::wait_until(Duration::from_secs(20), || c.leader(0).is_some());
    assert!(
        leader_back,
        "no leader after the restart\n{}",
        c.diagnostics()
    );
    let t2 = Instant::now();
    ok_stdout(&c.cli(
        0,
        &["route", "remove", &nwid.to_string(), "192.168.90.0/24"],
    ));
    let latest = network_revision(&c, 0, nwid).expect("a revision");
    c.wait_revision(&[0, 1, 2, 3], nwid, latest, Duration::from_secs(45));
    c.m.phase(&format!(
        "replicas back: revision {latest} reached every node {:.1} s after the write",
        t2.elapsed().as_secs_f64()
    ));
}

/// Records the addresses of `nodes` (already OK) the way `authorize_all` does.
fn record_addresses(m: &mut Mesh, nwid: NetworkId, nodes: &[usize]) {
    for &i in nodes {
        let status = m.wait_status(i, "OK", Duration::from_secs(20), |s| {
            network_status(s, nwid) == Some("OK")
        });
        let net = network(&status, nwid).expect("joined");
        m.nodes[i].addrs = Some(mesh::addresses_from(nwid, m.nodes[i].id(), net));
    }
}

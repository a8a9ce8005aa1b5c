//! The node's end-to-end test, in network namespaces with real processes: a controller host
//! and three node hosts on one bridge.
//!
//! Join → ACCESS_DENIED → authorize → OK; every node pings every other node over IPv4,
//! RFC4193 and 6PLANE; 50 MB of TCP between two nodes arrive byte-exact (throughput is
//! printed); `status --json` shows OK, the addresses and `direct` peers on the underlay;
//! deauthorizing one node makes the others tear its sessions down within 2 s and count what
//! it still sends, while they keep talking; with the controller stopped, a restarted daemon
//! brings its tunnels back from the cached config; `leave` leaves no interface, address or
//! route behind; deleting the network takes it down on every node within 5 s, also across
//! a restart.
//!
//! Needs root, iproute2, ping and python3. Phases and timings go to stderr
//! (`cargo test -p meshd --test mesh_e2e -- --nocapture`).

mod common;
mod mesh;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ok_stdout;
use mesh::{Mesh, NODE_PORT, Node, network, network_status, revision, transfer};
use meshd_lab::Lab;
use meshd_proto::NetworkId;
use serde_json::Value;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const TRANSFER_BYTES: usize = 50 * 1024 * 1024;
const TRANSFER_PORT: u16 = 5001;

#[test]
fn three_hosts_join_talk_lose_a_member_and_run_on_the_cache() {
    let mut m = Mesh::new(&NODES);
    m.phase(&m.describe_lab());

    // The controller, and a network.
    m.start_controller();
    let nwid = m.create_network("e2e");
    m.phase(&format!("controller up, network {nwid} created"));

    // Daemons; join; ACCESS_DENIED.
    for i in 0..NODES.len() {
        m.start_daemon(i);
    }
    m.join_all(nwid);
    m.phase("3 daemons joined: ACCESS_DENIED");

    // Authorize; OK with the addresses.
    m.authorize_all(nwid);
    // What a node shows of its keys is what the controller lists for it.
    let members = ok_stdout(&m.ctl(&["member", "list", &nwid.to_string()]));
    for i in 0..m.nodes.len() {
        let status = m.status(i);
        let key = status["key_fingerprint"].as_str().expect("a fingerprint");
        assert_eq!(key.len(), 19, "{key}");
        let row = members
            .lines()
            .find(|l| l.starts_with(&m.nodes[i].id().to_string()))
            .expect("listed");
        assert!(row.contains(key), "{row} lacks {key}");
    }
    m.phase(&format!(
        "authorized: OK; addresses {:?}",
        m.nodes.iter().map(Node::addrs).collect::<Vec<_>>()
    ));

    // The data plane: interfaces in the kernel.
    for i in 0..NODES.len() {
        let status = m.status(i);
        assert_eq!(
            status["dataplane_attached"], true,
            "{}: the daemon runs without its data plane (no TUN, no packets); everything \
             from here on needs it:\n{status:#}",
            m.nodes[i].role
        );
        m.check_interface(i, network(&status, nwid).expect("joined"));
    }
    m.phase("interfaces carry the addresses");

    // Everyone reaches everyone over IPv4 (sessions come up), then over every family.
    let all_pairs: Vec<(usize, usize)> = (0..NODES.len())
        .flat_map(|a| {
            (0..NODES.len())
                .filter(move |&b| b != a)
                .map(move |b| (a, b))
        })
        .collect();
    let v4_targets: Vec<(usize, IpAddr)> = all_pairs
        .iter()
        .map(|&(a, b)| (a, IpAddr::V4(m.nodes[b].addrs().v4)))
        .collect();
    let mut failed = Vec::new();
    let converged = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        failed = m.pings(&v4_targets, 1, 1);
        failed.is_empty()
    });
    assert!(
        converged,
        "the mesh did not converge over IPv4:\n{}\n{}",
        failed.join("\n"),
        m.diagnostics()
    );
    m.phase("IPv4 between every pair");
    let failed = m.pings(&m.matrix(&all_pairs), 2, 2);
    assert!(
        failed.is_empty(),
        "pings failed:\n{}\n{}",
        failed.join("\n"),
        m.diagnostics()
    );
    m.phase("every node pings every other over IPv4, RFC4193 and 6PLANE");

    // 50 MB of TCP from n1 to n2 over the mesh, byte-exact.
    let received = transfer(
        &m.lab,
        (NODES[0], NODES[1]),
        IpAddr::V4(m.nodes[1].addrs().v4),
        TRANSFER_PORT,
        TRANSFER_BYTES,
        7,
    );
    let seconds = received.seconds;
    eprintln!(
        "throughput n1 -> n2, one TCP flow, {} MiB: {:.1} MB/s = {:.0} Mbit/s ({seconds:.2} s)",
        TRANSFER_BYTES >> 20,
        TRANSFER_BYTES as f64 / 1e6 / seconds,
        TRANSFER_BYTES as f64 * 8.0 / 1e6 / seconds
    );
    m.phase("50 MB over TCP arrived byte-exact");

    // n1's status: OK, its addresses, every other node a direct peer on the underlay.
    let mut last = Value::Null;
    let direct = meshd_lab::interrupt::wait_until(Duration::from_secs(5), || {
        last = m.status(0);
        (1..NODES.len()).all(|j| {
            let endpoint = format!("{}:{NODE_PORT}", m.lab.ip(NODES[j]));
            last["peers"].as_array().is_some_and(|peers| {
                peers.iter().any(|p| {
                    p["node_id"] == m.nodes[j].id().to_string()
                        && p["network"] == nwid.to_string()
                        && p["path"] == "direct"
                        && p["endpoint"] == endpoint
                })
            })
        })
    });
    assert!(
        direct,
        "n1 should list n2 and n3 as direct peers on the underlay:\n{last:#}"
    );
    let net = network(&last, nwid).expect("joined");
    assert_eq!(net["status"], "OK");
    let listed: Vec<&str> = net["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for a in m.nodes[0].addrs().all() {
        assert!(
            listed
                .iter()
                .any(|l| l.split('/').next() == Some(&a.to_string())),
            "{a} missing from {listed:?}"
        );
    }
    m.phase("n1's status: OK, its addresses, n2 and n3 direct");

    // Deauthorize n3: n1 and n2 tear its sessions down within 2 s of the push and count
    // what it still sends; n1 and n2 keep talking.
    let n3 = m.nodes[2].id().to_string();
    let dropped_before = [dropped(&m.status(0), nwid), dropped(&m.status(1), nwid)];
    ok_stdout(&m.ctl(&["member", "deauthorize", &nwid.to_string(), &n3]));
    let pushed = Instant::now();
    let mut holders = Vec::new();
    let torn_down = meshd_lab::interrupt::wait_until(Duration::from_secs(5), || {
        holders = (0..2)
            .filter(|&i| {
                m.status(i)["peers"]
                    .as_array()
                    .is_some_and(|peers| peers.iter().any(|p| p["node_id"] == n3.as_str()))
            })
            .map(|i| m.nodes[i].role)
            .collect();
        holders.is_empty()
    });
    let teardown = pushed.elapsed();
    assert!(
        torn_down && teardown < Duration::from_secs(2),
        "n1 and n2 should drop n3 within 2 s of its deauthorization; after {teardown:?} \
         {holders:?} still list it\n{}",
        m.diagnostics()
    );
    eprintln!(
        "n3's sessions torn down on n1 and n2 {:.2} s after `member deauthorize` returned",
        teardown.as_secs_f64()
    );
    let to_n3 = m.matrix(&[(0, 2), (1, 2)]);
    let mut answered = Vec::new();
    let cut = meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
        answered = to_n3
            .iter()
            .zip(m.ping_results(&to_n3, 1, 1))
            .filter(|(_, r)| r.is_ok())
            .map(|((from, to), _)| format!("{} -> {to}", m.nodes[*from].role))
            .collect();
        answered.is_empty()
    });
    assert!(
        cut,
        "n3 still answers after its deauthorization: {answered:?}\n{}",
        m.diagnostics()
    );
    m.phase("n3 deauthorized: n1 and n2 no longer reach it");
    m.wait_status(2, "ACCESS_DENIED on n3", Duration::from_secs(10), |s| {
        network_status(s, nwid) == Some("ACCESS_DENIED")
    });
    let from_n3 = m.matrix(&[(2, 0), (2, 1)]);
    let answered: Vec<String> = from_n3
        .iter()
        .zip(m.ping_results(&from_n3, 2, 1))
        .filter(|(_, r)| r.is_ok())
        .map(|((from, to), _)| format!("{} -> {to}", m.nodes[*from].role))
        .collect();
    assert!(
        answered.is_empty(),
        "n3 must not reach n1 or n2 any more: {answered:?}\n{}",
        m.diagnostics()
    );
    for (i, before) in dropped_before.into_iter().enumerate() {
        let status = m.status(i);
        let after = dropped(&status, nwid);
        assert!(
            after > before,
            "{}: what n3 sent after its deauthorization should be dropped and counted \
             (before {}, after {after}):\n{status:#}",
            m.nodes[i].role,
            before
        );
        eprintln!(
            "{} dropped n3's packets: {}",
            m.nodes[i].role,
            network(&status, nwid).expect("joined")["drops"]
        );
    }
    let failed = m.pings(&m.matrix(&[(0, 1), (1, 0)]), 2, 2);
    assert!(
        failed.is_empty(),
        "n1 and n2 should still talk:\n{}\n{}",
        failed.join("\n"),
        m.diagnostics()
    );
    m.phase("n3 cannot reach n1/n2 either; n1 <-> n2 still over every family");

    // Every controller stopped; restart n2's daemon: it comes back from its cache.
    let ctl = m.ctl_proc.take().expect("controller running");
    let (status, clean) = m.lab.stop(ctl, Duration::from_secs(10));
    m.phase(&format!(
        "controller stopped ({status:?}, clean exit: {clean})"
    ));
    let cached = revision(&m.status(1), nwid).expect("n2 runs on a config");
    let n2 = m.nodes[1].proc.take().expect("n2 running");
    m.lab.kill(n2);
    let restarted = Instant::now();
    m.start_daemon(1);
    let status = m.status(1);
    assert_eq!(
        network_status(&status, nwid),
        Some("OK"),
        "n2 runs on the cached config at once:\n{status:#}"
    );
    assert_eq!(revision(&status, nwid), Some(cached), "{status:#}");
    let v4 = [(0, IpAddr::V4(m.nodes[1].addrs().v4))];
    let mut failed = Vec::new();
    let back = meshd_lab::interrupt::wait_until(Duration::from_secs(15), || {
        failed = m.pings(&v4, 1, 1);
        failed.is_empty()
    });
    assert!(
        back,
        "n1 cannot reach the restarted n2 within 15 s:\n{}\n{}",
        failed.join("\n"),
        m.diagnostics()
    );
    eprintln!(
        "n2's tunnels back {:.1} s after its restart (no controller)",
        restarted.elapsed().as_secs_f64()
    );
    let failed = m.pings(&m.matrix(&[(0, 1), (1, 0)]), 2, 2);
    assert!(
        failed.is_empty(),
        "n1 <-> n2 after the restart:\n{}\n{}",
        failed.join("\n"),
        m.diagnostics()
    );
    let status = m.wait_status(
        1,
        "the controller to be unreachable",
        Duration::from_secs(20),
        |s| {
            s["online"] == false
                && s["controllers"].as_array().is_some_and(|c| {
                    !c.is_empty()
                        && c.iter()
                            .all(|c| c["reachable"] == false && c["unreachable_for_s"].is_u64())
                })
        },
    );
    assert_eq!(network_status(&status, nwid), Some("OK"), "{status:#}");
    assert_eq!(revision(&status, nwid), Some(cached), "{status:#}");
    let net = network(&status, nwid).expect("joined");
    m.check_interface(1, net);
    m.phase("n2 restarted without a controller: OK on the cached revision, tunnels back");

    // n1 leaves: its interface goes, and with it every address and route of the network.
    let iface = network(&m.status(0), nwid).expect("joined")["interface"]
        .as_str()
        .expect("an interface")
        .to_owned();
    let out = m.node_cli(0, &["leave", &nwid.to_string()]);
    ok_stdout(&out);
    let status = m.status(0);
    assert!(network(&status, nwid).is_none(), "{status:#}");
    let role = m.nodes[0].role;
    let link = m
        .lab
        .exec(role, &["ip", "link", "show", "dev", &iface])
        .expect("lab");
    assert!(
        !link.status.success(),
        "{iface} is still there after leave: {}",
        String::from_utf8_lossy(&link.stdout)
    );
    let addresses = m.nodes[0].addrs().all().map(|a| a.to_string());
    let owned = |text: &str| {
        text.lines()
            .filter(|l| {
                l.contains(&iface)
                    || l.contains("proto 109")
                    || addresses.iter().any(|a| l.contains(a.as_str()))
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for argv in [
        ["ip", "-4", "addr"].as_slice(),
        &["ip", "-6", "addr"],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
    ] {
        let left = owned(&ok_stdout(&m.lab.exec(role, argv).expect("lab")));
        assert!(left.is_empty(), "{argv:?} after leave still shows {left:?}");
    }
    m.phase("n1 left: no interface, address or route of the network is left");

    // The network is deleted: every node that runs it takes its interface down within 5 s,
    // and a restart does not bring it back.
    m.run_controller();
    let interfaces: Vec<(usize, String)> = [1, 2]
        .into_iter()
        .map(|i| {
            let status = m.wait_status(i, "the network", Duration::from_secs(20), |s| {
                network(s, nwid).is_some_and(|n| n["interface"].is_string())
            });
            let net = network(&status, nwid).expect("joined");
            (i, net["interface"].as_str().expect("a name").to_owned())
        })
        .collect();
    ok_stdout(&m.ctl(&["network", "delete", &nwid.to_string()]));
    let deleted = Instant::now();
    let gone = |m: &Mesh, i: usize, iface: &str| {
        !m.lab
            .exec(m.nodes[i].role, &["ip", "link", "show", "dev", iface])
            .expect("lab")
            .status
            .success()
    };
    let down = meshd_lab::interrupt::wait_until(Duration::from_secs(5), || {
        interfaces.iter().all(|(i, iface)| gone(&m, *i, iface))
    });
    m.phase(&format!(
        "network deleted: interfaces down on n2 and n3 after {:?}",
        deleted.elapsed()
    ));
    assert!(
        down,
        "interfaces still up 5 s after the delete\n{}",
        m.diagnostics()
    );
    let n2 = m.nodes[1].proc.take().expect("n2 running");
    m.lab.kill(n2);
    m.start_daemon(1);
    m.wait_status(1, "NOT_FOUND", Duration::from_secs(15), |s| {
        network_status(s, nwid) == Some("NOT_FOUND")
    });
    assert!(
        gone(&m, 1, &interfaces[0].1),
        "the restart brought the deleted network back"
    );
    m.phase("n2 restarted: the deleted network stays down, NOT_FOUND");
}

/// Packets from outside the node that it dropped on the network for coming from no
/// member: data on a torn-down session, or a handshake from a key not in the config (its
/// own packets to a destination nobody owns any more count as `no_route`, not here).
fn dropped(status: &Value, nwid: NetworkId) -> u64 {
    let Some(drops) = network(status, nwid).and_then(|n| n["drops"].as_object()) else {
        return 0;
    };
    ["unknown_index", "unknown_peer", "handshake_failed"]
        .iter()
        .filter_map(|reason| drops.get(*reason).and_then(Value::as_u64))
        .sum()
}

/// The lab itself: hosts reach each other on the underlay, a namespace behind a host
/// ([`Lab::add_namespace`], [`Lab::add_veth`]) reaches its host, a process's namespace
/// attached by name ([`Lab::attach_namespace`]) is that namespace, and a panic leaves no
/// namespace, name, link or process behind.
#[test]
fn lab_cleans_up_after_a_panic() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let log = tmp.path().join("sleep.log");
    let mut seen: Option<(String, Vec<String>, u32)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new(meshd_lab::Naming::test(), &["a", "b"]).expect("lab");
        let b = lab.ip("b").to_string();
        let ping = |lab: &Lab, from: &str, to: &str| {
            let out = lab
                .exec(from, &["ping", "-n", "-c", "1", "-W", "2", to])
                .expect("lab");
            assert!(
                out.status.success(),
                "{from} -> {to}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        };
        ping(&lab, "a", &b);
        lab.add_namespace("c").expect("lab");
        let (near, far) = (lab.link_name("v0"), lab.link_name("v1"));
        lab.add_veth("b", &near, "c", &far).expect("lab");
        lab.run_ip("b", &["addr", "add", "192.168.99.1/24", "dev", &near])
            .expect("lab");
        lab.run_ip("b", &["link", "set", &near, "up"]).expect("lab");
        lab.run_ip("c", &["addr", "add", "192.168.99.2/24", "dev", &far])
            .expect("lab");
        lab.run_ip("c", &["link", "set", &far, "up"]).expect("lab");
        ping(&lab, "c", "192.168.99.1");
        let sleeper = lab.spawn("c", &["sleep", "600"], &log).expect("lab");
        assert!(lab.exited(sleeper).is_none());
        lab.attach_namespace("x", sleeper.pid).expect("lab");
        let addrs = lab.exec("x", &["ip", "-br", "addr"]).expect("lab");
        assert!(
            ok_stdout(&addrs).contains("192.168.99.2/24"),
            "x is c's namespace: {}",
            ok_stdout(&addrs)
        );
        seen = Some((lab.tag().to_owned(), lab.namespaces().to_vec(), sleeper.pid));
        panic!("on purpose, to test the lab's cleanup");
    }));
    assert!(result.is_err(), "the closure panics");
    let (tag, namespaces, pid) = seen.expect("the lab was built");
    assert_eq!(
        namespaces.len(),
        5,
        "switch, 2 hosts, one behind b and one attached: {namespaces:?}"
    );
    let list = ok_stdout(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip runs"),
    );
    for ns in &namespaces {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} is left: {list}"
        );
    }
    let links = ok_stdout(
        &Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .expect("ip runs"),
    );
    assert!(
        !links.contains(&format!("msh-{tag}")),
        "a link is left: {links}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).starts_with("sleep"),
        "the spawned process {pid} is left"
    );
}

//! Delegated prefixes: h2's daemon reads its host's delegated prefix from a file (as a
//! DHCPv6-PD hook writes it). Given a /60, h2's container /80 becomes the prefix's first
//! /80, every peer routes it within 5 s, docker-config gives it (and `--apply` writes it
//! into a daemon.json), and a container on it is reached from h1's container by its global
//! address. A new prefix moves the route on every peer within 5 s.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::ok_stdout;
use crate::mesh::{Mesh, network};
use meshd_proto::NetworkId;

/// How fast every peer must route a member's new container /80.
const PREFIX_DEADLINE: Duration = Duration::from_secs(5);

fn kernel_routes(m: &Mesh, i: usize, nwid: NetworkId) -> Vec<String> {
    network(&m.status(i), nwid)
        .and_then(|n| n["kernel_routes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

/// Writes `prefix` into the file and waits until every other node routes `subnet` (and
/// no longer `old`); how long that took.
fn delegate(
    m: &Mesh,
    nwid: NetworkId,
    file: &Path,
    owner: usize,
    prefix: &str,
    subnet: &str,
    old: Option<&str>,
) -> Duration {
    std::fs::write(
        file,
        format!("# written by the lab's DHCPv6-PD hook\n{prefix}\n"),
    )
    .expect("write");
    let written = Instant::now();
    let others: Vec<usize> = (0..m.nodes.len()).filter(|&i| i != owner).collect();
    let routed = meshd_lab::interrupt::wait_until(PREFIX_DEADLINE * 3, || {
        others.iter().all(|&i| {
            let routes = kernel_routes(m, i, nwid);
            routes.iter().any(|r| r == subnet) && old.is_none_or(|o| !routes.iter().any(|r| r == o))
        })
    });
    let took = written.elapsed();
    assert!(
        routed && took <= PREFIX_DEADLINE,
        "peers should route {subnet} (and drop {old:?}) within {PREFIX_DEADLINE:?} of the \
         prefix file saying {prefix}: took {took:?}; {:?}",
        others
            .iter()
            .map(|&i| kernel_routes(m, i, nwid))
            .collect::<Vec<_>>()
    );
    took
}

pub struct Global<'a> {
    /// The node whose daemon reads `file`.
    pub owner: usize,
    pub file: &'a Path,
    /// Runs `docker <args>` against the owner's dockerd; its stdout.
    pub docker: &'a dyn Fn(&[&str]) -> String,
    /// Whether h1's first container pings the address.
    pub ping_from_h1: &'a dyn Fn(IpAddr) -> bool,
    pub scratch: &'a Path,
}

pub fn containers_get_global_addresses(
    m: &Mesh,
    nwid: NetworkId,
    g: &Global,
    report: &dyn Fn(&Mesh) -> String,
) {
    let owner = g.owner;
    let role = m.nodes[owner].role;
    let took = delegate(
        m,
        nwid,
        g.file,
        owner,
        "2001:db8:1:40::/60",
        "2001:db8:1:40::/80",
        None,
    );
    let status = m.status(owner);
    assert_eq!(
        status["delegated_prefix"]["prefix"], "2001:db8:1:40::/60",
        "{status:#}"
    );
    let net = network(&status, nwid).expect("joined").clone();
    assert_eq!(
        net["container_subnets"]["ipv6"], "2001:db8:1:40::/80",
        "{net:#}"
    );
    m.phase(&format!("{role} delegated 2001:db8:1:40::/60: its containers' /80 2001:db8:1:40::/80 routed by every peer after {:.2} s", took.as_secs_f64()));

    let nw = nwid.to_string();
    let out = m.node_cli(owner, &["docker-config", &nw, "--format", "json"]);
    let json: Value = serde_json::from_str(&ok_stdout(&out)).expect("JSON");
    assert_eq!(json["ipv6"]["subnet"], "2001:db8:1:40::/80", "{json:#}");
    let path = g.scratch.join("daemon.json");
    std::fs::write(&path, "{\"log-level\": \"warn\"}\n").expect("write");
    let path_text = path.to_str().expect("UTF-8 path");
    let out = m.node_cli(
        owner,
        &["docker-config", &nw, "--apply", "--daemon-json", path_text],
    );
    assert!(ok_stdout(&out).contains("restart Docker"), "{out:?}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
    assert_eq!(
        written["fixed-cidr-v6"], "2001:db8:1:40::/80",
        "{written:#}"
    );
    assert_eq!(
        written["log-level"], "warn",
        "--apply keeps the other keys: {written:#}"
    );
    // The host's side for the new subnet, as docker-config prints it.
    let notes = String::from_utf8_lossy(&out.stderr).into_owned();
    for rule in notes.lines().filter(|l| l.starts_with("ip6tables ")) {
        let done = m.lab.exec(role, &["sh", "-c", rule]).expect("lab");
        assert!(done.status.success(), "{role}: `{rule}`: {done:?}");
    }
    // A Docker network on the global /80 (as after a restart with the new daemon.json),
    // and a container on it.
    (g.docker)(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "2001:db8:1:40::/80",
        "--gateway",
        "2001:db8:1:40::1",
        "--opt",
        "com.docker.network.bridge.name=pd0",
        "pd0",
    ]);
    let global = Ipv6Addr::new(0x2001, 0xdb8, 1, 0x40, 0, 0, 0, 0x10);
    (g.docker)(&[
        "run",
        "-d",
        "--name",
        "h2g1",
        "--network",
        "pd0",
        "--ip6",
        &global.to_string(),
        crate::docker::IMAGE,
        "sleep",
        "3600",
    ]);
    let reached = meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
        (g.ping_from_h1)(IpAddr::V6(global))
    });
    assert!(
        reached,
        "h1's container does not reach {global} on {role}\n{}",
        report(m)
    );
    m.phase(&format!("docker-config --apply wrote fixed-cidr-v6 2001:db8:1:40::/80; h1's container pings {role}'s container at {global}"));

    let took = delegate(
        m,
        nwid,
        g.file,
        owner,
        "2001:db8:2:80::/60",
        "2001:db8:2:80::/80",
        Some("2001:db8:1:40::/80"),
    );
    m.phase(&format!(
        "new prefix 2001:db8:2:80::/60: every peer moved the route after {:.2} s",
        took.as_secs_f64()
    ));
}

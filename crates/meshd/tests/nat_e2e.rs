//! Members behind every kind of NAT reach each other: a controller on a public host; two
//! hosts behind one port-restricted cone NAT, one behind another cone NAT, two behind
//! symmetric NATs (each its own router), one behind a full-cone NAT, one public host. Every
//! router's LAN is 192.168.1.0/24, routers drop unsolicited traffic and do not hairpin
//! (`meshd_lab::nat`).
//!
//! Checked: every directed pair pings within 15 s of authorization; each host behind a NAT
//! learns its router's public address from the controller's relay; pairs where a direct
//! path can exist go direct (the two hosts behind one NAT, cone and cone by punching,
//! anything and the public or full-cone host), and cone–symmetric and symmetric–symmetric
//! pairs go through the relay, with `meshd peers` saying which.
//!
//! Needs root, iproute2, nftables, conntrack and ping (`cargo test -p meshd --test nat_e2e
//! -- --nocapture` prints the phases).

mod common;
mod mesh;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mesh::Mesh;
use meshd_lab::NatKind;
use serde_json::Value;

const PUBLIC: &str = "pub";
const CONE_A: &str = "c1a";
const CONE_B: &str = "c1b";
const CONE_2: &str = "c2";
const SYM_1: &str = "s1";
const SYM_2: &str = "s2";
const FULL: &str = "f1";

/// Whose path to whom must be direct (`true`) or relayed (`false`), by role.
fn expected_path(a: &str, b: &str) -> bool {
    let symmetric = |r: &str| r == SYM_1 || r == SYM_2;
    let open = |r: &str| r == PUBLIC || r == FULL;
    let cone = |r: &str| [CONE_A, CONE_B, CONE_2].contains(&r);
    open(a) || open(b) || (cone(a) && cone(b)) || !(symmetric(a) || symmetric(b))
}

fn peer_path(status: &Value, peer: &str) -> Option<(String, Option<String>)> {
    status["peers"].as_array()?.iter().find_map(|p| {
        (p["node_id"] == peer).then(|| {
            (
                p["path"].as_str().unwrap_or("?").to_owned(),
                p["relay"].as_str().map(str::to_owned),
            )
        })
    })
}

#[test]
fn members_behind_any_nat_reach_each_other() {
    let mut m = Mesh::with_nats(
        &[PUBLIC],
        &[
            ("r1", NatKind::PortRestrictedCone, &[CONE_A, CONE_B]),
            ("r2", NatKind::PortRestrictedCone, &[CONE_2]),
            ("r3", NatKind::Symmetric, &[SYM_1]),
            ("r4", NatKind::Symmetric, &[SYM_2]),
            ("r5", NatKind::FullCone, &[FULL]),
        ],
    );
    m.phase(&m.describe_lab());
    m.start_controller();
    let nwid = m.create_network("nat");
    for i in 0..m.nodes.len() {
        m.start_daemon(i);
    }
    m.join_all(nwid);
    m.authorize_all(nwid);
    let authorized = Instant::now();
    m.phase("authorized");

    // Every directed pair pings (IPv4 over the mesh) within 15 s.
    let n = m.nodes.len();
    let targets: Vec<(usize, IpAddr)> = (0..n)
        .flat_map(|a| (0..n).filter(move |b| *b != a).map(move |b| (a, b)))
        .map(|(a, b)| (a, IpAddr::V4(m.nodes[b].addrs().v4)))
        .collect();
    let mut failed = targets.len();
    while authorized.elapsed() < Duration::from_secs(15) {
        failed = m.pings(&targets, 1, 1).len();
        if failed == 0 {
            break;
        }
    }
    let took = authorized.elapsed();
    m.phase(&format!(
        "{} directed pairs ping: {failed} failing after {took:?}",
        targets.len()
    ));
    assert_eq!(
        failed,
        0,
        "pairs still failing 15 s after authorization:\n{}",
        m.diagnostics()
    );

    // Each host behind a NAT knows its public endpoint: its router's address.
    for (i, node) in m.nodes.iter().enumerate() {
        let Some(router) = m
            .lab
            .routers()
            .iter()
            .find(|r| r.behind.iter().any(|b| b == node.role))
        else {
            continue;
        };
        let status = m.wait_status(i, "a public endpoint", Duration::from_secs(10), |s| {
            s["public_endpoint"].is_string()
        });
        let endpoint: SocketAddr = status["public_endpoint"]
            .as_str()
            .and_then(|e| e.parse().ok())
            .expect("an address");
        assert_eq!(endpoint.ip(), IpAddr::V4(router.public_ip), "{}", node.role);
    }

    // Direct where a direct path can exist, through the relay elsewhere; within 20 s.
    let deadline = authorized + Duration::from_secs(20);
    for a in 0..n {
        for b in (0..n).filter(|b| *b != a) {
            let (ra, rb) = (m.nodes[a].role, m.nodes[b].role);
            let want = if expected_path(ra, rb) {
                "direct"
            } else {
                "relay"
            };
            let peer = m.nodes[b].id().to_string();
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
            // Keep traffic flowing, as a user's would, while the paths settle.
            let _ = m.pings(&[(a, IpAddr::V4(m.nodes[b].addrs().v4))], 1, 1);
            let status = m.wait_status(a, &format!("{ra} -> {rb} {want}"), left, |s| {
                peer_path(s, &peer).is_some_and(|(path, _)| path == want)
            });
            if want == "relay" {
                let (_, relay) = peer_path(&status, &peer).expect("the peer");
                let relay: SocketAddr = relay.and_then(|r| r.parse().ok()).expect("a relay");
                assert_eq!(relay.ip(), IpAddr::V4(m.lab.ip(mesh::CTL)), "{ra} -> {rb}");
            }
        }
    }
    m.phase("paths as expected");
    let peers = m.node_cli(0, &["peers"]);
    eprintln!("{}", String::from_utf8_lossy(&peers.stdout));
}

//! Members behind every kind of NAT reach each other: three controller replicas on public
//! hosts; two hosts behind one port-restricted cone NAT, one behind another cone NAT, two
//! behind symmetric NATs (each its own router), one behind a full-cone NAT, one behind a
//! symmetric NAT whose router maps ports (miniupnpd), one behind one that maps over UPnP-IGD
//! only, one public host. Every router's LAN is 192.168.1.0/24, routers drop unsolicited
//! traffic and do not hairpin (`meshd_lab::nat`).
//!
//! Checked: every directed pair pings within 15 s of authorization; each host behind a NAT
//! learns its router's public address from the controller's relay; pairs where a direct
//! path can exist go direct (the two hosts behind one NAT, cone and cone by punching,
//! anything and the public, full-cone or port-mapped host, whose router's PCP mapping is its
//! public endpoint), and cone–symmetric and symmetric–symmetric
//! pairs go through the relay, with `meshd peers` saying which; each node knows its NAT's
//! behaviour from three relays' answers. Then the replica relaying a symmetric pair is
//! killed: the pair pings again within 5 s through another; and a cone router's mappings
//! are flushed under a punched pair: it pings again within 10 s. The public host is
//! re-addressed: reached again within 2 s of its first packet from the new address. Last,
//! with every router forgetting idle UDP mappings after 30 s, 90 s without traffic: the
//! first ping of every pair answers. Last of all, every replica is killed: the symmetric
//! pair pings again through the public host, which runs `meshd daemon --relay`.
//!
//! Needs root, iproute2, nftables, conntrack and ping (`cargo test -p meshd --test nat_e2e
//! -- --nocapture` prints the phases).

mod common;
mod mesh;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mesh::cluster::Cluster;
use mesh::{CTL, Mesh};
use meshd_lab::NatKind;
use serde_json::Value;

const PUBLIC: &str = "pub";
const CONE_A: &str = "c1a";
const CONE_B: &str = "c1b";
const CONE_2: &str = "c2";
const SYM_1: &str = "s1";
const SYM_2: &str = "s2";
const FULL: &str = "f1";
/// Behind a symmetric NAT whose router maps ports (miniupnpd: PCP, NAT-PMP, UPnP-IGD).
const MAPPED: &str = "m1";
/// Behind a symmetric NAT whose router maps ports over UPnP-IGD only.
const UPNP: &str = "u1";
const REPLICAS: [&str; 3] = [CTL, "ctl2", "ctl3"];

/// The NAT behaviour a node's status must report, by role.
fn expected_nat(role: &str) -> &'static str {
    match role {
        PUBLIC => "none",
        SYM_1 | SYM_2 | MAPPED | UPNP => "endpoint-dependent",
        _ => "endpoint-independent",
    }
}

/// Whose path to whom must be direct (`true`) or relayed (`false`), by role.
fn expected_path(a: &str, b: &str) -> bool {
    let symmetric = |r: &str| r == SYM_1 || r == SYM_2;
    let open = |r: &str| [PUBLIC, FULL, MAPPED, UPNP].contains(&r);
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
        &REPLICAS[1..],
        &[
            ("r1", NatKind::PortRestrictedCone, &[CONE_A, CONE_B]),
            ("r2", NatKind::PortRestrictedCone, &[CONE_2]),
            ("r3", NatKind::Symmetric, &[SYM_1]),
            ("r4", NatKind::Symmetric, &[SYM_2]),
            ("r5", NatKind::FullCone, &[FULL]),
            ("r6", NatKind::Symmetric, &[MAPPED]),
            ("r7", NatKind::Symmetric, &[UPNP]),
        ],
    );
    m.lab.enable_port_mapping("r6").expect("lab");
    m.lab.enable_port_mapping("r7").expect("lab");
    m.lab.disable_pcp("r7").expect("lab");
    add_ipv6(&m);
    let mut c = Cluster::new(m, &REPLICAS);
    c.m.phase(&c.m.describe_lab());
    c.start_all();
    // The mesh's admin commands go to the first replica.
    c.m.ctl_data = c.replicas[0].data.clone();
    let m = &mut c.m;
    m.phase("3 replicas");
    let nwid = m.create_network("nat");
    // The public host also relays for the others, under a name its peers show.
    for node in m.nodes.iter_mut().filter(|n| n.role == PUBLIC) {
        node.args.extend(["--relay", "--hostname", "pub-relay"]);
    }
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

    // Each node knows its NAT from what the relays saw.
    for (i, node) in m.nodes.iter().enumerate() {
        let want = expected_nat(node.role);
        m.wait_status(i, &format!("NAT {want}"), Duration::from_secs(10), |s| {
            s["nat"] == want
        });
    }
    // m1's router mapped its port over PCP, u1's over UPnP-IGD: that is their public
    // endpoint.
    for (role, protocol) in [(MAPPED, "pcp"), (UPNP, "upnp")] {
        let mapped = m.wait_status(
            m.nodes.iter().position(|n| n.role == role).expect("a node"),
            &format!("a port mapping over {protocol}"),
            Duration::from_secs(15),
            |s| s["port_mapping"]["protocol"] == protocol,
        );
        assert_eq!(
            mapped["public_endpoint"],
            mapped["port_mapping"]["external"]
        );
    }
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
            let kind = status["peers"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["node_id"] == peer.as_str()))
                .map(|p| p["direct"].clone());
            match (ra, rb) {
                (CONE_A, CONE_B) => assert_eq!(kind, Some("lan".into()), "{ra} -> {rb}"),
                // A host behind a cone or symmetric NAT reaches the port-mapped hosts at
                // the mappings their routers hold (the public and full-cone hosts may
                // first hear them from another port of their symmetric NATs).
                (CONE_A | CONE_B | CONE_2 | SYM_1 | SYM_2, MAPPED | UPNP) => {
                    assert_eq!(kind, Some("port-mapped".into()), "{ra} -> {rb}");
                }
                // Punched: through the relay's handshake, or by both sides' handshakes
                // crossing in the NATs (then it looks like any public endpoint).
                (CONE_A, CONE_2) => assert!(
                    kind == Some("punched".into()) || kind == Some("public".into()),
                    "{ra} -> {rb}: {kind:?}"
                ),
                _ => {}
            }
            if want == "relay" {
                let (_, relay) = peer_path(&status, &peer).expect("the peer");
                let relay: SocketAddr = relay.and_then(|r| r.parse().ok()).expect("a relay");
                let replica_ips: Vec<IpAddr> =
                    REPLICAS.iter().map(|r| IpAddr::V4(m.lab.ip(r))).collect();
                assert!(
                    replica_ips.contains(&relay.ip()),
                    "{ra} -> {rb} via {relay}"
                );
            }
        }
    }
    m.phase("paths as expected");
    let peers = m.node_cli(0, &["peers"]);
    eprintln!("{}", String::from_utf8_lossy(&peers.stdout));

    let roles: Vec<&str> = m.nodes.iter().map(|n| n.role).collect();
    let index = |role: &str| roles.iter().position(|r| *r == role).expect("a node");
    let (s1, s2) = (index(SYM_1), index(SYM_2));
    let (c1a, c2) = (index(CONE_A), index(CONE_2));

    // `meshd bench` over the relayed pair works, and says it is relayed.
    let s2_node = m.nodes[s2].id().to_string();
    let state = m.nodes[s1].state.to_str().expect("UTF-8 path").to_owned();
    let out = m
        .lab
        .exec_timeout(
            SYM_1,
            &[
                mesh::MESHD,
                "bench",
                &s2_node,
                "--seconds",
                "1",
                "--json",
                "--state",
                &state,
            ],
            Duration::from_secs(60),
        )
        .expect("lab");
    assert!(
        out.status.success(),
        "bench over the relay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bench: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    assert_eq!(bench["path"], "relay", "{bench}");
    let mbit = bench["mbit_per_s"].as_f64().expect("mbit_per_s");
    assert!(mbit > 0.0, "{bench}");
    m.phase(&format!(
        "bench s1 -> s2 through the relay: {mbit:.0} Mbit/s"
    ));

    // Kill the replica that relays s1 -> s2: the pair pings again within 5 s.
    let s2_id = m.nodes[s2].id().to_string();
    let (_, relay) = peer_path(&m.status(s1), &s2_id).expect("the peer");
    let relay: SocketAddr = relay.and_then(|r| r.parse().ok()).expect("relayed");
    let victim = REPLICAS
        .iter()
        .position(|r| IpAddr::V4(c.m.lab.ip(r)) == relay.ip())
        .expect("a replica relays");
    let proc = c.replicas[victim].proc.take().expect("running");
    c.m.lab.kill(proc);
    let killed = Instant::now();
    let m = &c.m;
    let both_ways = [
        (s1, IpAddr::V4(m.nodes[s2].addrs().v4)),
        (s2, IpAddr::V4(m.nodes[s1].addrs().v4)),
    ];
    let back = meshd_lab::interrupt::wait_until(Duration::from_secs(5), || {
        m.pings(&both_ways, 1, 1).is_empty()
    });
    m.phase(&format!(
        "relay {} killed: s1 <-> s2 ping again after {:?}",
        REPLICAS[victim],
        killed.elapsed()
    ));
    assert!(
        back,
        "s1 <-> s2 not back within 5 s of their relay dying\n{}",
        c.diagnostics()
    );
    let (_, now_via) = peer_path(&m.status(s1), &s2_id).expect("the peer");
    assert_ne!(
        now_via,
        Some(relay.to_string()),
        "still through the dead relay"
    );

    // Flush the mappings of c2's router under the punched c1a <-> c2 pair: back within 10 s.
    let pair = [
        (c1a, IpAddr::V4(m.nodes[c2].addrs().v4)),
        (c2, IpAddr::V4(m.nodes[c1a].addrs().v4)),
    ];
    assert!(
        m.pings(&pair, 1, 1).is_empty(),
        "c1a <-> c2 before the flush"
    );
    m.lab.flush_conntrack("r2").expect("lab");
    let flushed = Instant::now();
    let back = meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
        m.pings(&pair, 1, 1).is_empty()
    });
    m.phase(&format!(
        "r2's conntrack flushed: c1a <-> c2 ping again after {:?}",
        flushed.elapsed()
    ));
    assert!(
        back,
        "c1a <-> c2 not back within 10 s of the flush\n{}",
        c.diagnostics()
    );

    // Roaming: the public host is re-addressed (a VPS given a new IP). Its first
    // authenticated packets from the new address (a ping to the full-cone host) move the
    // peer's endpoint there: the peer reaches it again within 2 s, and every peer soon after.
    let (public, full) = (index(PUBLIC), index(FULL));
    let host = m.lab.host(PUBLIC).clone();
    let moved = std::net::Ipv4Addr::from(u32::from(host.ip) + 190);
    // Deleted first: deleting a primary address deletes its secondaries with it.
    for change in [
        ["addr", "del", &format!("{}/24", host.ip), "dev", &host.link],
        ["addr", "add", &format!("{moved}/24"), "dev", &host.link],
    ] {
        m.lab.run_ip(PUBLIC, &change).expect("lab");
    }
    let roamed = Instant::now();
    let _ = m.pings(&[(public, IpAddr::V4(m.nodes[full].addrs().v4))], 1, 1);
    let back = meshd_lab::interrupt::wait_until(Duration::from_secs(2), || {
        m.pings(&[(full, IpAddr::V4(m.nodes[public].addrs().v4))], 1, 1)
            .is_empty()
    });
    m.phase(&format!(
        "pub moved {} -> {moved}: f1 reaches it again after {:?}",
        host.ip,
        roamed.elapsed()
    ));
    assert!(
        back,
        "f1 -> pub not back within 2 s of pub's first packet from {moved}"
    );
    let with_public: Vec<(usize, IpAddr)> = (0..n)
        .filter(|&i| i != public)
        .flat_map(|i| {
            [
                (i, IpAddr::V4(m.nodes[public].addrs().v4)),
                (public, IpAddr::V4(m.nodes[i].addrs().v4)),
            ]
        })
        .collect();
    let back = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        m.pings(&with_public, 1, 1).is_empty()
    });
    m.phase(&format!(
        "every peer reaches the moved pub again after {:?}",
        roamed.elapsed()
    ));
    assert!(
        back,
        "pub's peers not back within 20 s\n{}",
        c.diagnostics()
    );

    // Routers that forget an idle UDP mapping after 30 s: after 90 s without a ping, the
    // first ping of every pair answers (keepalives held the mappings).
    for r in ["r1", "r2", "r3", "r4", "r5", "r6", "r7"] {
        m.lab
            .set_udp_timeout(r, Duration::from_secs(30))
            .expect("lab");
    }
    m.phase("UDP timeouts 30 s; 90 s idle");
    meshd_lab::interrupt::sleep(Duration::from_secs(90)).expect("not interrupted");
    let failed = m.pings(&targets, 1, 2);
    m.phase(&format!(
        "after 90 s idle: {} of {} first pings failed",
        failed.len(),
        targets.len()
    ));
    assert!(failed.is_empty(), "{failed:#?}\n{}", c.diagnostics());

    // IPv6 underlay: pub and c1a also have global IPv6 addresses (routed by c1a's router,
    // no NAT). With IPv4 between them dropped, they go direct over IPv6.
    let r1 = m.lab.router("r1").public_ip;
    let blocked = m
        .lab
        .exec(
            PUBLIC,
            &[
                "nft",
                &format!(
                    "add table ip v4block; \
                     add chain ip v4block out {{ type filter hook output priority 0; }}; \
                     add rule ip v4block out ip daddr {r1} meta l4proto udp drop; \
                     add chain ip v4block in {{ type filter hook input priority 0; }}; \
                     add rule ip v4block in ip saddr {r1} meta l4proto udp drop"
                ),
            ],
        )
        .expect("lab");
    common::ok_stdout(&blocked);
    let c1a_id = m.nodes[c1a].id().to_string();
    let pub_v4 = IpAddr::V4(m.nodes[public].addrs().v4);
    let status = m.wait_status(c1a, "pub over IPv6", Duration::from_secs(40), |s| {
        let _ = m.pings(&[(c1a, pub_v4)], 1, 1);
        s["peers"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["node_id"] == m.nodes[public].id().to_string()
                    && p["path"] == "direct"
                    && p["endpoint"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("[2001:db8:77::"))
            })
        })
    });
    let _ = status;
    let status = m.wait_status(public, "c1a over IPv6", Duration::from_secs(20), |s| {
        s["peers"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["node_id"] == c1a_id.as_str()
                    && p["path"] == "direct"
                    && p["endpoint"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("[2001:db8:78::"))
            })
        })
    });
    let _ = status;
    assert!(
        m.pings(
            &[(c1a, pub_v4), (public, IpAddr::V4(m.nodes[c1a].addrs().v4))],
            1,
            1
        )
        .is_empty(),
        "pub <-> c1a over IPv6"
    );
    m.phase("pub <-> c1a direct over the IPv6 underlay with IPv4 between them dropped");

    // Every replica down: the symmetric pair goes on through pub, the member relay.
    let pub_id = m.nodes[public].id().to_string();
    for replica in &mut c.replicas {
        if let Some(proc) = replica.proc.take() {
            c.m.lab.kill(proc);
        }
    }
    let down = Instant::now();
    let m = &c.m;
    let back = meshd_lab::interrupt::wait_until(Duration::from_secs(15), || {
        m.pings(&both_ways, 1, 1).is_empty()
    });
    m.phase(&format!(
        "every replica down: s1 <-> s2 ping again after {:?}",
        down.elapsed()
    ));
    assert!(
        back,
        "s1 <-> s2 not back through the member relay\n{}",
        c.diagnostics()
    );
    let status = m.status(s1);
    let relayed_by = status["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["node_id"] == s2_id.as_str()))
        .map(|p| (p["path"].clone(), p["relay_member"].clone()));
    assert_eq!(
        relayed_by,
        Some(("relay".into(), pub_id.as_str().into())),
        "{status:#}"
    );
    let pub_status = m.status(public);
    let relayed = pub_status["networks"][0]["relaying"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(relayed > 0, "pub relayed nothing: {pub_status:#}");
    let peers = m.node_cli(s1, &["peers"]);
    let text = String::from_utf8_lossy(&peers.stdout);
    assert!(text.contains("via member pub-relay"), "{text}");
    m.phase(&format!("pub relayed {relayed} packets"));
}

/// Global IPv6 on pub (2001:db8:77::/64, on the switch) and on c1a behind r1
/// (2001:db8:78::/64 on r1's LAN, routed by r1 without NAT or filtering), before any
/// daemon starts: they report them as candidates.
fn add_ipv6(m: &Mesh) {
    let lab = &m.lab;
    let r1 = lab.router("r1").clone();
    let steps: [(&str, Vec<String>); 6] = [
        (
            PUBLIC,
            vec![
                "addr".into(),
                "add".into(),
                "2001:db8:77::13/64".into(),
                "dev".into(),
                lab.host(PUBLIC).link.clone(),
                "nodad".into(),
            ],
        ),
        (
            PUBLIC,
            vec![
                "route".into(),
                "add".into(),
                "2001:db8:78::/64".into(),
                "via".into(),
                "2001:db8:77::14".into(),
            ],
        ),
        (
            "r1",
            vec![
                "addr".into(),
                "add".into(),
                "2001:db8:77::14/64".into(),
                "dev".into(),
                r1.wan.clone(),
                "nodad".into(),
            ],
        ),
        (
            "r1",
            vec![
                "addr".into(),
                "add".into(),
                "2001:db8:78::1/64".into(),
                "dev".into(),
                r1.bridge.clone(),
                "nodad".into(),
            ],
        ),
        (
            CONE_A,
            vec![
                "addr".into(),
                "add".into(),
                "2001:db8:78::10/64".into(),
                "dev".into(),
                "eth0".into(),
                "nodad".into(),
            ],
        ),
        (
            CONE_A,
            vec![
                "route".into(),
                "add".into(),
                "default".into(),
                "via".into(),
                "2001:db8:78::1".into(),
            ],
        ),
    ];
    for (role, argv) in &steps {
        let mut args = vec!["-6"];
        args.extend(argv.iter().map(String::as_str));
        lab.run_ip(role, &args).expect("lab");
    }
    common::ok_stdout(
        &lab.exec("r1", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
            .expect("lab"),
    );
}

//! IPv6 egress: h1's containers are on 6PLANE addresses and h1's Docker does no IPv6 NAT
//! (Docker 20.10's default), so they cannot reach an IPv6 host outside the mesh until the
//! network says `--ipv6-egress nat66`; then they can, the outside host sees h1's uplink
//! address, and traffic between containers across the mesh keeps its own source.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use crate::common::ok_stdout;
use crate::mesh::{Mesh, network, transfer};
use meshd_proto::NetworkId;

/// The host outside the mesh, and h1's uplink to it.
const OUTSIDE: &str = "inet";
const UPLINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
const OUTSIDE_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x100);
const PORT: u16 = 5004;

/// A container as the test addresses it: its Docker name (also its attached namespace),
/// its host's index and its IPv6 address.
pub struct Endpoint<'a> {
    pub name: &'a str,
    pub host: usize,
    pub v6: Ipv6Addr,
}

/// The outside host's namespace (before the phase: the phase's closures borrow the mesh).
pub fn add_outside(m: &mut Mesh) {
    m.lab.add_namespace(OUTSIDE).expect("lab");
}

pub fn containers_reach_the_ipv6_internet(
    m: &Mesh,
    nwid: NetworkId,
    ping: &dyn Fn(&Endpoint, IpAddr) -> bool,
    from: &Endpoint,
    across: &Endpoint,
    report: &dyn Fn(&Mesh) -> String,
) {
    let host = m.nodes[from.host].role;
    let lab = &m.lab;
    let (near, far) = (lab.link_name("u0"), lab.link_name("u1"));
    lab.add_veth(host, &near, OUTSIDE, &far).expect("lab");
    for (role, link, addr) in [(host, &near, UPLINK), (OUTSIDE, &far, OUTSIDE_ADDR)] {
        lab.run_ip(
            role,
            &["addr", "add", &format!("{addr}/64"), "dev", link, "nodad"],
        )
        .expect("lab");
        lab.run_ip(role, &["link", "set", link, "up"]).expect("lab");
    }
    let outside = IpAddr::V6(OUTSIDE_ADDR);
    assert!(
        !ping(from, outside),
        "{} reaches {OUTSIDE_ADDR} from its mesh address before egress is on: who NATs it?",
        from.name
    );
    m.phase(&format!(
        "{OUTSIDE} at {OUTSIDE_ADDR} behind {host}'s uplink: unreachable from {} without egress",
        from.name
    ));

    let nw = nwid.to_string();
    ok_stdout(&m.ctl(&["network", "update", &nw, "--ipv6-egress", "nat66"]));
    let status = m.wait_status(
        from.host,
        "its IPv6 egress masquerade installed",
        Duration::from_secs(5),
        |s| network(s, nwid).is_some_and(|n| n["ipv6_egress"]["installed"] == true),
    );
    let egress = network(&status, nwid).expect("joined")["ipv6_egress"].clone();
    assert_eq!(egress["tool"], "ip6tables", "{egress:#}");
    let rules = ok_stdout(
        &lab.exec(host, &["ip6tables", "-t", "nat", "-S"])
            .expect("lab"),
    );
    assert!(rules.contains(&format!("-j MESHD-EG-{nwid}")), "{rules}");
    let notes = m.node_cli(from.host, &["docker-config", &nw]);
    let notes = String::from_utf8_lossy(&notes.stderr).into_owned();
    assert!(
        notes.contains("# IPv6 egress, done by meshd itself: nat66"),
        "{notes}"
    );

    let reached = meshd_lab::interrupt::wait_until(Duration::from_secs(5), || ping(from, outside));
    assert!(
        reached,
        "{} does not reach {OUTSIDE_ADDR} with nat66 on\n{}",
        from.name,
        report(m)
    );
    let seen = transfer(lab, (from.name, OUTSIDE), outside, PORT, 16 * 1024, 11).peer;
    assert_eq!(
        seen,
        IpAddr::V6(UPLINK),
        "{OUTSIDE} should see {host}'s uplink address"
    );
    let across_mesh = transfer(
        lab,
        (from.name, across.name),
        IpAddr::V6(across.v6),
        PORT,
        16 * 1024,
        12,
    )
    .peer;
    assert_eq!(
        across_mesh,
        IpAddr::V6(from.v6),
        "{} should see {}'s own address across the mesh with egress on",
        across.name,
        from.name
    );
    m.phase(&format!(
        "nat66 on: {} pings {OUTSIDE_ADDR}, which sees {UPLINK}; across the mesh {} still sees {}",
        from.name, across.name, from.v6
    ));

    ok_stdout(&m.ctl(&["network", "update", &nw, "--ipv6-egress", "off"]));
    m.wait_status(
        from.host,
        "its IPv6 egress masquerade removed",
        Duration::from_secs(5),
        |s| {
            network(s, nwid)
                .is_some_and(|n| n.get("ipv6_egress").is_none_or(serde_json::Value::is_null))
        },
    );
    let rules = ok_stdout(
        &lab.exec(host, &["ip6tables", "-t", "nat", "-S"])
            .expect("lab"),
    );
    assert!(
        !rules.contains("MESHD-EG-"),
        "the masquerade is left: {rules}"
    );
    m.phase("nat66 off: the masquerade is gone");
}

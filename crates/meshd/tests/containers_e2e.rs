//! Containers behind the hosts, end to end, in network namespaces with real processes: a
//! controller host and three member hosts on one bridge, each host with a container bridge
//! carrying its container /24 and 6PLANE /80, and two "container" namespaces on it.
//!
//! Every container pings every container of the other hosts over IPv4 and IPv6; a TCP
//! connection between containers of two hosts arrives from the sender's own address (no
//! masquerade); a managed route to a LAN behind one host reaches every other member within
//! 2 s of `route add`, is never routed by its owner, and is gone within 2 s of
//! `route remove`; dropping the lab leaves no namespace behind.
//!
//! Needs root, iproute2, sysctl, ping and python3. Phases and timings go to stderr
//! (`cargo test -p meshd --test containers_e2e -- --nocapture`).

mod common;
mod mesh;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::ok_stdout;
use ipnet::{Ipv4Net, Ipv6Net};
use mesh::{Mesh, network, ping_all, transfer};
use meshd_lab::Lab;
use meshd_proto::NetworkId;
use serde_json::Value;

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// Container namespaces per host.
const CONTAINERS: usize = 2;
const TCP_PORT: u16 = 5002;
const TCP_BYTES: usize = 64 * 1024;
/// The LAN behind h2 (index 1), h2's address on it, and a host on it.
const LAN: &str = "lan";
const LAN_OWNER: usize = 1;
const LAN_PREFIX: &str = "192.168.77.0/24";
const LAN_GATEWAY: &str = "192.168.77.1";
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
/// How fast a managed route must reach (and leave) the members.
const ROUTE_DEADLINE: Duration = Duration::from_secs(2);

/// A host's container subnets, as its `status --json` gives them.
#[derive(Debug, Clone, Copy)]
struct Subnets {
    v4: Ipv4Net,
    v6: Ipv6Net,
}

impl Subnets {
    /// The bridge's addresses: `.1` and `::1`.
    fn gateway(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.nth(1, 1)
    }

    /// Container `j`'s addresses (from 0): `.10`, `.11`, ... and `::10`, `::11`, ...
    fn container(&self, j: usize) -> (Ipv4Addr, Ipv6Addr) {
        let j = u32::try_from(j).expect("few containers");
        self.nth(10 + j, 0x10 + j)
    }

    fn nth(&self, v4: u32, v6: u32) -> (Ipv4Addr, Ipv6Addr) {
        (
            Ipv4Addr::from(u32::from(self.v4.network()) + v4),
            Ipv6Addr::from(u128::from(self.v6.network()) + u128::from(v6)),
        )
    }
}

/// A "container": a namespace on a host's container bridge.
#[derive(Debug, Clone)]
struct Container {
    /// Its lab role, `h<i>c<j>`.
    role: String,
    /// The index of its host in `Mesh::nodes`.
    host: usize,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

impl Container {
    fn addrs(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }
}

/// Per host: drop counters, `ip route` (both families) and the bridge's addresses; and the
/// daemon logs. What to look at when packets between containers go missing.
fn dataplane_report(m: &Mesh, nwid: NetworkId) -> String {
    let mut out = String::new();
    for (i, n) in m.nodes.iter().enumerate() {
        let status = m.status(i);
        let net = network(&status, nwid).cloned().unwrap_or(Value::Null);
        out.push_str(&format!(
            "--- {}: drops {} kernel_routes {} routes {}\n",
            n.role, net["drops"], net["kernel_routes"], net["routes"]
        ));
        for argv in [
            ["ip", "-4", "route"].as_slice(),
            &["ip", "-6", "route"],
            &["ip", "-br", "addr"],
            &[
                "sysctl",
                "net.ipv4.ip_forward",
                "net.ipv6.conf.all.forwarding",
            ],
        ] {
            let o = m.lab.exec(n.role, argv).expect("lab");
            out.push_str(&format!(
                "$ {}\n{}{}",
                argv.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    out.push_str(&m.diagnostics());
    out
}

/// `meshd docker-config` on host `i` gives exactly what the controller assigned the member
/// (its container /24 and 6PLANE /80), the bridge gateways the test wires, and the mesh
/// MTU, in every format.
fn check_docker_config(m: &Mesh, i: usize, nwid: NetworkId, s: &Subnets, net: &Value) {
    let role = m.nodes[i].role;
    let node = m.nodes[i].id().to_string();
    let members: Value = serde_json::from_str(&ok_stdout(&m.ctl(&[
        "member",
        "list",
        &nwid.to_string(),
        "--json",
    ])))
    .expect("member list --json prints JSON");
    let member = members
        .as_array()
        .and_then(|ms| ms.iter().find(|mb| mb["node_id"] == node.as_str()))
        .unwrap_or_else(|| panic!("{role}: {node} not in the member list:\n{members:#}"));
    assert_eq!(member["container_subnet"], s.v4.to_string(), "{member:#}");
    assert_eq!(member["sixplane_subnet"], s.v6.to_string(), "{member:#}");
    let (gw4, gw6) = s.gateway();
    let nwid = nwid.to_string();
    let json: Value = serde_json::from_str(&ok_stdout(
        &m.node_cli(i, &["docker-config", &nwid, "--format", "json"]),
    ))
    .expect("docker-config --format json prints JSON");
    assert_eq!(json["ipv4"]["subnet"], s.v4.to_string(), "{json:#}");
    assert_eq!(json["ipv4"]["gateway"], gw4.to_string(), "{json:#}");
    assert_eq!(json["ipv6"]["subnet"], s.v6.to_string(), "{json:#}");
    assert_eq!(json["ipv6"]["gateway"], gw6.to_string(), "{json:#}");
    assert_eq!(json["mtu"], net["mtu"], "{json:#}");
    assert_eq!(json["interface"], net["interface"], "{json:#}");
    let daemon: Value = serde_json::from_str(&ok_stdout(
        &m.node_cli(i, &["docker-config", &nwid, "--format", "daemon-json"]),
    ))
    .expect("daemon.json is JSON");
    assert_eq!(daemon["bip"], format!("{gw4}/24"), "{daemon:#}");
    assert_eq!(daemon["fixed-cidr"], s.v4.to_string(), "{daemon:#}");
    assert_eq!(daemon["fixed-cidr-v6"], s.v6.to_string(), "{daemon:#}");
    assert_eq!(daemon["ipv6"], true, "{daemon:#}");
    assert_eq!(daemon["mtu"], net["mtu"], "{daemon:#}");
    let out = m.node_cli(
        i,
        &[
            "docker-config",
            &nwid,
            "--format",
            "network-create",
            "--bridge",
            "mesh0",
        ],
    );
    let line = ok_stdout(&out).replace("\\\n", " ");
    for part in [
        format!("--subnet {} --gateway {gw4}", s.v4),
        format!("--ipv6 --subnet {} --gateway {gw6}", s.v6),
        format!("--opt com.docker.network.driver.mtu={}", net["mtu"]),
    ] {
        assert!(
            line.contains(&part),
            "{role}: {part:?} missing from {line:?}"
        );
    }
    // What the host needs around it goes to stderr: the NAT exception for its own subnet.
    let notes = String::from_utf8_lossy(&out.stderr);
    let iface = net["interface"].as_str().expect("an interface");
    assert!(
        notes.contains(&format!(
            "iptables -t nat -I POSTROUTING -s {} -o {iface} -j RETURN",
            s.v4
        )),
        "{role}: {notes}"
    );
}

/// Whether a host's status lists `prefix` among its kernel routes.
fn kernel_route(status: &Value, nwid: NetworkId, prefix: &str) -> bool {
    network(status, nwid)
        .and_then(|n| n["kernel_routes"].as_array())
        .is_some_and(|routes| routes.iter().any(|r| r == prefix))
}

#[test]
fn containers_behind_hosts_reach_each_other_and_a_routed_lan() {
    let mut m = Mesh::new(&HOSTS);
    // The daemons turn forwarding on themselves, as on a Docker host.
    m.daemon_args = vec!["--configure-forwarding"];
    let tag = m.lab.tag().to_owned();
    m.phase(&m.describe_lab());

    // 1. The controller, a network, three members joined and authorized.
    m.start_controller();
    let nwid = m.create_network("containers");
    m.phase(&format!("controller up, network {nwid} created"));
    for i in 0..HOSTS.len() {
        m.start_daemon(i);
    }
    m.join_all(nwid);
    m.authorize_all(nwid);
    for i in 0..HOSTS.len() {
        let status = m.status(i);
        assert_eq!(
            status["dataplane_attached"], true,
            "{}: the daemon runs without its data plane:\n{status:#}",
            m.nodes[i].role
        );
        m.check_interface(i, network(&status, nwid).expect("joined"));
        let fwd = &status["forwarding"];
        assert!(
            fwd["ipv4"] == true
                && fwd["ipv6"] == true
                && fwd["configured"].as_array().is_some_and(|c| c.len() == 2)
                && fwd["problems"].as_array().is_some_and(Vec::is_empty),
            "{}: --configure-forwarding should have turned forwarding on:\n{fwd:#}",
            m.nodes[i].role
        );
    }
    m.phase("3 hosts joined and authorized: OK, interfaces up, forwarding on by meshd");

    // 2. Per host: a container bridge with the host's subnets, forwarding on, and two
    // containers on it.
    let mut containers = Vec::new();
    let mut subnets = Vec::new();
    for i in 0..HOSTS.len() {
        let role = m.nodes[i].role;
        let status = m.status(i);
        let net = network(&status, nwid).expect("joined");
        let cs = &net["container_subnets"];
        let parse = |family: &str| {
            cs[family]
                .as_str()
                .unwrap_or_else(|| panic!("{role}: no {family} container subnet:\n{net:#}"))
                .to_owned()
        };
        let s = Subnets {
            v4: parse("ipv4").parse().expect("an IPv4 prefix"),
            v6: parse("ipv6").parse().expect("an IPv6 prefix"),
        };
        assert_eq!(s.v4.prefix_len(), 24, "{role}: {net:#}");
        assert_eq!(s.v6.prefix_len(), 80, "{role}: {net:#}");
        let mtu = net["mtu"].as_u64().expect("an MTU").to_string();
        let (gw4, gw6) = s.gateway();
        check_docker_config(&m, i, nwid, &s, net);
        let bridge = m.lab.link_name(&format!("b{}", i + 1));
        let lab = &m.lab;
        lab.run_ip(role, &["link", "add", &bridge, "type", "bridge"])
            .expect("lab");
        lab.run_ip(role, &["addr", "add", &format!("{gw4}/24"), "dev", &bridge])
            .expect("lab");
        lab.run_ip(
            role,
            &["addr", "add", &format!("{gw6}/80"), "dev", &bridge, "nodad"],
        )
        .expect("lab");
        lab.run_ip(role, &["link", "set", &bridge, "up"])
            .expect("lab");
        for j in 0..CONTAINERS {
            let (v4, v6) = s.container(j);
            let c = Container {
                role: format!("h{}c{}", i + 1, j + 1),
                host: i,
                v4,
                v6,
            };
            let outer = m.lab.link_name(&format!("v{}{}", i + 1, j + 1));
            let inner = m.lab.link_name(&format!("c{}{}", i + 1, j + 1));
            m.lab.add_namespace(&c.role).expect("lab");
            let lab = &m.lab;
            lab.add_veth(role, &outer, &c.role, &inner).expect("lab");
            lab.run_ip(role, &["link", "set", &outer, "mtu", &mtu])
                .expect("lab");
            lab.run_ip(role, &["link", "set", &outer, "master", &bridge])
                .expect("lab");
            lab.run_ip(role, &["link", "set", &outer, "up"])
                .expect("lab");
            let cr = c.role.as_str();
            lab.run_ip(cr, &["link", "set", &inner, "mtu", &mtu])
                .expect("lab");
            lab.run_ip(cr, &["addr", "add", &format!("{v4}/24"), "dev", &inner])
                .expect("lab");
            lab.run_ip(
                cr,
                &["addr", "add", &format!("{v6}/80"), "dev", &inner, "nodad"],
            )
            .expect("lab");
            lab.run_ip(cr, &["link", "set", &inner, "up"]).expect("lab");
            lab.run_ip(cr, &["route", "add", "default", "via", &gw4.to_string()])
                .expect("lab");
            lab.run_ip(
                cr,
                &["-6", "route", "add", "default", "via", &gw6.to_string()],
            )
            .expect("lab");
            containers.push(c);
        }
        subnets.push(s);
    }
    m.phase(&format!(
        "container bridges and {} containers up: {:?}",
        containers.len(),
        containers
            .iter()
            .map(|c| format!("{}={},{}", c.role, c.v4, c.v6))
            .collect::<Vec<_>>()
    ));

    // 3. Every container reaches every container of the other hosts, both families: IPv4
    // until the sessions are up, then everything.
    let pairs: Vec<(&Container, &Container)> = containers
        .iter()
        .flat_map(|a| {
            containers
                .iter()
                .filter(move |b| b.host != a.host)
                .map(move |b| (a, b))
        })
        .collect();
    let v4_targets: Vec<(&str, IpAddr)> = pairs
        .iter()
        .map(|(a, b)| (a.role.as_str(), IpAddr::V4(b.v4)))
        .collect();
    let failures = |targets: &[(&str, IpAddr)], count, wait_s| {
        ping_all(&m.lab, targets, count, wait_s)
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
    };
    let mut failed = Vec::new();
    let converged = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        failed = failures(&v4_targets, 1, 1);
        failed.is_empty()
    });
    assert!(
        converged,
        "containers did not reach each other over IPv4 within 20 s ({} of {} failed):\n{}\n{}",
        failed.len(),
        v4_targets.len(),
        failed.join("\n"),
        dataplane_report(&m, nwid)
    );
    m.phase("IPv4 between the containers of every pair of hosts");
    let all_targets: Vec<(&str, IpAddr)> = pairs
        .iter()
        .flat_map(|(a, b)| b.addrs().map(|to| (a.role.as_str(), to)))
        .collect();
    let failed = failures(&all_targets, 2, 2);
    assert!(
        failed.is_empty(),
        "container pings failed ({} of {}):\n{}\n{}",
        failed.len(),
        all_targets.len(),
        failed.join("\n"),
        dataplane_report(&m, nwid)
    );
    m.phase(&format!(
        "every container pings every container on the other hosts over IPv4 and IPv6 ({} pings)",
        all_targets.len()
    ));

    for i in 0..HOSTS.len() {
        let status = m.status(i);
        let drops = &network(&status, nwid).expect("joined")["drops"];
        eprintln!("{} drops: {drops}", m.nodes[i].role);
    }

    // 4. TCP from h1's first container to h3's: accepted from h1's container address.
    let (from, to) = (&containers[0], &containers[CONTAINERS * 2]);
    assert_eq!((from.host, to.host), (0, 2));
    for (seed, (src, dst)) in from.addrs().into_iter().zip(to.addrs()).enumerate() {
        let received = transfer(
            &m.lab,
            (&from.role, &to.role),
            dst,
            TCP_PORT,
            TCP_BYTES,
            u64::try_from(seed).expect("small"),
        );
        assert_eq!(
            received.peer, src,
            "{} accepted from {} instead of {}'s own address {src}: masqueraded?",
            to.role, received.peer, from.role
        );
        eprintln!(
            "TCP {} -> {dst}: {} bytes byte-exact, accepted from {}",
            from.role, received.bytes, received.peer
        );
    }
    m.phase("TCP between containers keeps the source address (IPv4 and IPv6)");

    // 5. A LAN behind h2, routed through it by a managed route.
    let owner = m.nodes[LAN_OWNER].role;
    let owner_id = m.nodes[LAN_OWNER].id().to_string();
    m.lab.add_namespace(LAN).expect("lab");
    let (near, far) = (m.lab.link_name("l0"), m.lab.link_name("l1"));
    m.lab.add_veth(owner, &near, LAN, &far).expect("lab");
    m.lab
        .run_ip(
            owner,
            &["addr", "add", &format!("{LAN_GATEWAY}/24"), "dev", &near],
        )
        .expect("lab");
    m.lab
        .run_ip(owner, &["link", "set", &near, "up"])
        .expect("lab");
    m.lab
        .run_ip(
            LAN,
            &["addr", "add", &format!("{LAN_HOST}/24"), "dev", &far],
        )
        .expect("lab");
    m.lab
        .run_ip(LAN, &["link", "set", &far, "up"])
        .expect("lab");
    m.lab
        .run_ip(LAN, &["route", "add", "default", "via", LAN_GATEWAY])
        .expect("lab");
    let local = ping_all(&m.lab, &[(owner, IpAddr::V4(LAN_HOST))], 1, 2);
    assert!(local[0].is_ok(), "{owner} reaches its own LAN: {local:?}");
    m.phase(&format!("LAN {LAN_PREFIX} behind {owner}"));

    let (h1, lan) = (0, [(m.nodes[0].role, IpAddr::V4(LAN_HOST))]);
    let h1_ping = || ping_all(&m.lab, &lan, 1, 1).remove(0);
    assert!(
        h1_ping().is_err(),
        "h1 reaches the LAN before any route to it"
    );
    let nw = nwid.to_string();
    ok_stdout(&m.ctl(&["route", "add", &nw, LAN_PREFIX, "--via", &owner_id]));
    let added = Instant::now();
    let (mut routed_at, mut ping_at) = (None, None);
    let (mut owner_routes_it, mut last, mut last_ping) = (false, Value::Null, Ok(()));
    meshd_lab::interrupt::wait_until(ROUTE_DEADLINE * 3, || {
        last = m.status(h1);
        owner_routes_it |= kernel_route(&m.status(LAN_OWNER), nwid, LAN_PREFIX);
        if routed_at.is_none() && kernel_route(&last, nwid, LAN_PREFIX) {
            routed_at = Some(added.elapsed());
        }
        last_ping = h1_ping();
        if ping_at.is_none() && last_ping.is_ok() {
            ping_at = Some(added.elapsed());
        }
        routed_at.is_some() && ping_at.is_some()
    });
    let listed = network(&last, nwid)
        .map(|n| n["routes"].clone())
        .unwrap_or_default();
    assert!(
        listed.as_array().is_some_and(|r| r
            .iter()
            .any(|r| r["target"] == LAN_PREFIX && r["node_id"] == owner_id.as_str())),
        "h1's status should list the managed route via {owner}: {listed}"
    );
    eprintln!(
        "route add: in h1's kernel routes after {routed_at:?}, h1 pings {LAN_HOST} after {ping_at:?}"
    );
    let added_in = routed_at.max(ping_at);
    assert!(
        added_in.is_some_and(|t| t < ROUTE_DEADLINE),
        "h1 should route {LAN_PREFIX} and reach {LAN_HOST} within {ROUTE_DEADLINE:?} of \
         `route add`: kernel route after {routed_at:?}, ping after {ping_at:?} (last: \
         {last_ping:?})\n{}",
        dataplane_report(&m, nwid)
    );
    assert!(
        !owner_routes_it && !kernel_route(&m.status(LAN_OWNER), nwid, LAN_PREFIX),
        "{owner} owns {LAN_PREFIX} and must not route it into its own interface\n{}",
        dataplane_report(&m, nwid)
    );
    m.phase(&format!(
        "route add: h1 reaches the LAN in {:.2} s; {owner} does not route its own prefix",
        added_in.expect("checked").as_secs_f64()
    ));

    ok_stdout(&m.ctl(&["route", "remove", &nw, LAN_PREFIX]));
    let removed = Instant::now();
    let (mut unrouted_at, mut unreachable_at) = (None, None);
    let mut kernel = String::new();
    meshd_lab::interrupt::wait_until(ROUTE_DEADLINE * 3, || {
        last = m.status(h1);
        kernel = ok_stdout(
            &m.lab
                .exec(m.nodes[h1].role, &["ip", "-4", "route"])
                .expect("lab"),
        );
        let gone = !kernel_route(&last, nwid, LAN_PREFIX) && !kernel.contains(LAN_PREFIX);
        if unrouted_at.is_none() && gone {
            unrouted_at = Some(removed.elapsed());
        }
        last_ping = h1_ping();
        if unreachable_at.is_none() && last_ping.is_err() {
            unreachable_at = Some(removed.elapsed());
        }
        unrouted_at.is_some() && unreachable_at.is_some()
    });
    eprintln!(
        "route remove: gone from h1's kernel routes after {unrouted_at:?}, h1's ping fails \
         after {unreachable_at:?}"
    );
    let removed_in = unrouted_at.max(unreachable_at);
    assert!(
        removed_in.is_some_and(|t| t < ROUTE_DEADLINE),
        "h1 should drop {LAN_PREFIX} and stop reaching {LAN_HOST} within {ROUTE_DEADLINE:?} of \
         `route remove`: route gone after {unrouted_at:?}, ping failing after \
         {unreachable_at:?}; h1's ip route:\n{kernel}\n{}",
        dataplane_report(&m, nwid)
    );
    assert!(h1_ping().is_err(), "h1 still reaches {LAN_HOST}");
    m.phase(&format!(
        "route remove: h1 loses the LAN in {:.2} s",
        removed_in.expect("checked").as_secs_f64()
    ));

    // 6. Dropping the lab removes every namespace and link it made, containers too.
    let namespaces = m.lab.namespaces().len();
    drop(m);
    let left = meshd_lab::leftovers(&tag);
    assert!(
        left.is_empty(),
        "the lab {tag} left namespaces or links behind: {left:#?}"
    );
    eprintln!("lab {tag} dropped: its {namespaces} namespaces are gone");
}

/// The lab's namespaces behind a host ([`Lab::add_namespace`], [`Lab::add_veth`]) work,
/// and go with the lab also when the test panics.
#[test]
fn lab_cleans_up_namespaces_behind_hosts_after_a_panic() {
    let mut seen: Option<(String, usize)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new(meshd_lab::Naming::test(), &["h"]).expect("lab");
        lab.add_namespace("c").expect("lab");
        let (near, far) = (lab.link_name("v0"), lab.link_name("v1"));
        lab.add_veth("h", &near, "c", &far).expect("lab");
        lab.run_ip("h", &["addr", "add", "192.168.99.1/24", "dev", &near])
            .expect("lab");
        lab.run_ip("h", &["link", "set", &near, "up"]).expect("lab");
        lab.run_ip("c", &["addr", "add", "192.168.99.2/24", "dev", &far])
            .expect("lab");
        lab.run_ip("c", &["link", "set", &far, "up"]).expect("lab");
        let out = lab
            .exec("c", &["ping", "-n", "-c", "1", "-W", "2", "192.168.99.1"])
            .expect("lab");
        assert!(
            out.status.success(),
            "c -> h over the veth: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        seen = Some((lab.tag().to_owned(), lab.namespaces().len()));
        panic!("on purpose, to test the lab's cleanup");
    }));
    assert!(result.is_err(), "the closure panics");
    let (tag, namespaces) = seen.expect("the lab was built");
    assert_eq!(namespaces, 3, "switch, host and the namespace behind it");
    let left = meshd_lab::leftovers(&tag);
    assert!(left.is_empty(), "the lab {tag} left {left:#?}");
}

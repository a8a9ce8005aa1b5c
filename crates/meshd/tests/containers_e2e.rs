//! Containers behind the hosts, end to end, with real Docker: a controller host and three
//! member hosts in network namespaces with real processes, each host running its own
//! `dockerd` configured only from what `meshd docker-config` prints there, one form per
//! host — h1 its daemon.json (`--format daemon-json`: docker0 on the host's container
//! subnets), h2 its `docker network create` command (`--format network-create`), h3 its
//! compose `networks:` section (`--format compose`, brought up by docker-compose) — with
//! two busybox containers each, and the iptables lines docker-config prints on stderr
//! applied on every host.
//!
//! Every container pings every container of the other hosts over IPv4 and IPv6 (6PLANE);
//! TCP between containers of two hosts arrives from the sender's own container address (no
//! masquerade), with each host sending once; with the printed rules in place `meshd status`
//! sees Docker's firewall and no forwarding problem; a managed route to a LAN behind h2
//! reaches h1 within 2 s of `route add`, is never routed by its owner, and is gone within
//! 2 s of `route remove`; stopping Docker leaves no process or mount behind, and dropping
//! the lab no namespace.
//!
//! Needs root, iproute2, iptables, sysctl, nsenter, ping, python3, and Debian 12's
//! docker.io (dockerd 20.10), docker-compose (1.29) and busybox-static. Phases and timings
//! go to stderr (`cargo test -p meshd --test containers_e2e -- --nocapture`).

mod common;
mod containers;
mod docker;
mod mesh;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::ok_stdout;
use docker::{COMPOSE, DOCKER, Docker, Dockerd, IMAGE, all_ok, run_all};
use ipnet::{Ipv4Net, Ipv6Net};
use mesh::{Mesh, network, ping_all, transfer};
use meshd_proto::NetworkId;
use serde_json::{Value, json};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// h1's index: its Docker does no IPv6 NAT of its own.
const H1: usize = 0;
/// Containers per host.
const CONTAINERS: usize = 2;
/// h2's Docker network and its bridge (`--bridge` to docker-config). Not `mesh…`: meshd
/// takes interfaces named so for its own (`mesh+` in the rules `meshd status` suggests).
const H2_NETWORK: &str = "ctr0";
/// docker-compose's project on h3.
const PROJECT: &str = "lab";
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

/// What every daemon.json has besides what docker-config prints (h1's merges both).
///
/// Docker 20.10 leaves IPv6 alone unless `ip6tables` (experimental there) is on: no NAT,
/// no filtering, and the IPv6 half of docker-config's rules would prove nothing. Docker
/// 27 and later have it on by default — IPv6 container subnets masqueraded, FORWARD
/// policy DROP — so that is the host worth proving; here it takes `experimental` too.
/// `shutdown-timeout` only makes the cleanup quick.
fn own_daemon_keys(ip6tables: bool) -> serde_json::Map<String, Value> {
    let keys = if ip6tables {
        json!({
            "iptables": true,
            "experimental": true,
            "ip6tables": true,
            "shutdown-timeout": 1,
        })
    } else {
        json!({"iptables": true, "shutdown-timeout": 1})
    };
    keys.as_object().expect("an object").clone()
}

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

    /// Fixed addresses for container `j` (from 0): `.10`, `.11`, ... and `::10`, ...
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

/// What `meshd docker-config` printed on one host.
#[derive(Debug, Clone)]
struct Printed {
    /// `--format daemon-json`.
    daemon_json: Value,
    /// `--format network-create --bridge H2_NETWORK`, as printed.
    network_create: String,
    /// `--format compose`, as printed.
    compose: String,
    /// What it prints on stderr: sysctls and firewall rules.
    notes: String,
}

/// A Docker container on a host.
#[derive(Debug, Clone)]
struct Container {
    /// Its Docker name, `h<i>c<j>`; also its lab role once its namespace is attached.
    name: String,
    /// The index of its host in `Mesh::nodes` (and `Docker::daemons`).
    host: usize,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    /// Its init process, for its network namespace.
    pid: u32,
}

impl Container {
    fn addrs(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }
}

/// Per host: drop counters, `ip route` (both families), the bridges' addresses, the
/// forwarding sysctls and firewall chains; and the daemon and dockerd logs. What to look
/// at when packets between containers go missing.
fn dataplane_report(m: &Mesh, docker: &Docker, nwid: NetworkId) -> String {
    let mut out = String::new();
    for (i, n) in m.nodes.iter().enumerate() {
        let status = m.status(i);
        let net = network(&status, nwid).cloned().unwrap_or(Value::Null);
        out.push_str(&format!(
            "--- {}: drops {} kernel_routes {} routes {} forwarding {}\n",
            n.role, net["drops"], net["kernel_routes"], net["routes"], status["forwarding"]
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
            &["iptables", "-S", "FORWARD"],
            &["ip6tables", "-S", "FORWARD"],
            &["iptables", "-t", "nat", "-S", "POSTROUTING"],
            &["ip6tables", "-t", "nat", "-S", "POSTROUTING"],
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
    for d in &docker.daemons {
        out.push_str(&format!(
            "--- {} dockerd log (tail)\n{}\n",
            d.role,
            d.log_tail()
        ));
    }
    out.push_str(&m.diagnostics());
    out
}

/// `meshd docker-config` on host `i` gives exactly what the controller assigned the member
/// (its container /24 and 6PLANE /80), the bridge gateways, and the mesh MTU, in every
/// format; and on stderr the rules that keep container addresses across the mesh. What it
/// printed.
fn check_docker_config(m: &Mesh, i: usize, nwid: NetworkId, s: &Subnets, net: &Value) -> Printed {
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
    let mtu = &net["mtu"];
    let nwid = nwid.to_string();
    let json: Value = serde_json::from_str(&ok_stdout(
        &m.node_cli(i, &["docker-config", &nwid, "--format", "json"]),
    ))
    .expect("docker-config --format json prints JSON");
    assert_eq!(json["ipv4"]["subnet"], s.v4.to_string(), "{json:#}");
    assert_eq!(json["ipv4"]["gateway"], gw4.to_string(), "{json:#}");
    assert_eq!(json["ipv6"]["subnet"], s.v6.to_string(), "{json:#}");
    assert_eq!(json["ipv6"]["gateway"], gw6.to_string(), "{json:#}");
    assert_eq!(&json["mtu"], mtu, "{json:#}");
    assert_eq!(json["interface"], net["interface"], "{json:#}");
    assert_eq!(json["warnings"], json!([]), "{role}: {json:#}");

    let daemon_json: Value = serde_json::from_str(&ok_stdout(
        &m.node_cli(i, &["docker-config", &nwid, "--format", "daemon-json"]),
    ))
    .expect("daemon.json is JSON");
    assert_eq!(daemon_json["bip"], format!("{gw4}/24"), "{daemon_json:#}");
    assert_eq!(
        daemon_json["fixed-cidr"],
        s.v4.to_string(),
        "{daemon_json:#}"
    );
    assert_eq!(
        daemon_json["fixed-cidr-v6"],
        s.v6.to_string(),
        "{daemon_json:#}"
    );
    assert_eq!(daemon_json["ipv6"], true, "{daemon_json:#}");
    assert_eq!(&daemon_json["mtu"], mtu, "{daemon_json:#}");

    let out = m.node_cli(
        i,
        &[
            "docker-config",
            &nwid,
            "--format",
            "network-create",
            "--bridge",
            H2_NETWORK,
        ],
    );
    let network_create = ok_stdout(&out);
    let line = network_create.replace("\\\n", " ");
    for part in [
        format!("--subnet {} --gateway {gw4}", s.v4),
        format!("--ipv6 --subnet {} --gateway {gw6}", s.v6),
        format!("--opt com.docker.network.driver.mtu={mtu}"),
        format!("--opt com.docker.network.bridge.name={H2_NETWORK}"),
    ] {
        assert!(
            line.contains(&part),
            "{role}: {part:?} missing from {line:?}"
        );
    }

    let compose = ok_stdout(&m.node_cli(i, &["docker-config", &nwid, "--format", "compose"]));
    for part in [
        "networks:".to_owned(),
        "enable_ipv6: true".to_owned(),
        format!("com.docker.network.driver.mtu: \"{mtu}\""),
        format!("- subnet: \"{}\"\n          gateway: \"{gw4}\"", s.v4),
        format!("- subnet: \"{}\"\n          gateway: \"{gw6}\"", s.v6),
    ] {
        assert!(
            compose.contains(&part),
            "{role}: {part:?} missing from\n{compose}"
        );
    }

    // What the host needs around it goes to stderr: the NAT exception for its own subnets
    // and the opening in Docker's FORWARD policy, per family.
    let notes = String::from_utf8_lossy(&out.stderr).into_owned();
    let iface = net["interface"].as_str().expect("an interface");
    let v6_accept = format!("-i {iface} -d {} -j ACCEPT", s.v6);
    for rule in [
        format!(
            "iptables -t nat -I POSTROUTING -s {} -o {iface} -j RETURN",
            s.v4
        ),
        format!("iptables -I DOCKER-USER -i {iface} -d {} -j ACCEPT", s.v4),
        format!(
            "ip6tables -t nat -I POSTROUTING -s {} -o {iface} -j RETURN",
            s.v6
        ),
        format!(
            "ip6tables -I DOCKER-USER {v6_accept} 2>/dev/null || ip6tables -I FORWARD {v6_accept}"
        ),
    ] {
        assert!(
            notes.lines().any(|l| l == rule),
            "{role}: {rule:?} missing from\n{notes}"
        );
    }
    Printed {
        daemon_json,
        network_create,
        compose,
        notes,
    }
}

/// h3's compose file: two services on the meshd image, on the network of the printed
/// `networks:` section, which is appended verbatim.
fn compose_file(printed: &str) -> String {
    let network = printed
        .split_once("networks:\n")
        .and_then(|(_, block)| block.lines().next())
        .and_then(|l| l.trim().strip_suffix(':'))
        .unwrap_or_else(|| panic!("no network in\n{printed}"));
    let mut file = "version: \"2.4\"\nservices:\n".to_owned();
    for j in 1..=CONTAINERS {
        file.push_str(&format!(
            "  c{j}:\n    image: {IMAGE}\n    container_name: h3c{j}\n    \
             command: [\"sleep\", \"3600\"]\n    networks: [{network}]\n"
        ));
    }
    file.push_str(printed);
    file.push('\n');
    file
}

/// The containers of host `i` as `docker inspect` gives them: each on exactly one network,
/// with addresses in the host's subnets and the bridge's as gateways.
fn inspect(m: &Mesh, d: &Dockerd, i: usize, s: &Subnets) -> Vec<Container> {
    let names: Vec<String> = (1..=CONTAINERS)
        .map(|j| format!("h{}c{j}", i + 1))
        .collect();
    let mut args = vec!["inspect"];
    args.extend(names.iter().map(String::as_str));
    let text = d.docker(&m.lab, &args);
    let inspected: Value = serde_json::from_str(&text).expect("docker inspect prints JSON");
    let (gw4, gw6) = s.gateway();
    names
        .iter()
        .zip(inspected.as_array().expect("an array"))
        .map(|(name, c)| {
            let networks = c["NetworkSettings"]["Networks"]
                .as_object()
                .expect("networks");
            assert_eq!(networks.len(), 1, "{name}: {networks:#?}");
            let n = networks.values().next().expect("one");
            let addr = |key: &str| n[key].as_str().unwrap_or_default().to_owned();
            let v4: Ipv4Addr = addr("IPAddress").parse().expect("an IPv4 address");
            let v6: Ipv6Addr = addr("GlobalIPv6Address")
                .parse()
                .unwrap_or_else(|_| panic!("{name}: no IPv6 address: {n:#}"));
            assert!(
                s.v4.contains(&v4) && s.v6.contains(&v6),
                "{name}: {v4} and {v6} should lie in {} and {}",
                s.v4,
                s.v6
            );
            assert_eq!(
                (addr("Gateway"), addr("IPv6Gateway")),
                (gw4.to_string(), gw6.to_string()),
                "{name}: {n:#}"
            );
            assert_eq!(c["Name"], format!("/{name}"));
            Container {
                name: name.clone(),
                host: i,
                v4,
                v6,
                pid: c["State"]["Pid"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .unwrap_or_else(|| panic!("{name} is not running: {:#}", c["State"])),
            }
        })
        .collect()
}

/// `docker run` of a container `name` on the image, sleeping, with `extra` options.
fn docker_run<'a>(d: &'a Dockerd, name: &str, extra: &[&str]) -> (&'a Dockerd, Vec<String>) {
    let mut args = vec!["run", "--detach", "--name", name];
    args.extend(extra);
    args.extend([IMAGE, "sleep", "3600"]);
    (d, d.argv(DOCKER, &args))
}

/// Pings each address given after COUNT and WAIT at once, inside a container (busybox
/// `sh` and `ping`): one line per address, `ok ADDR` or `fail ADDR: <what ping said>`.
const PING_SCRIPT: &str = r#"c=$1; w=$2; shift 2
for t in "$@"; do
  (out=$(ping -q -c "$c" -W "$w" -i 0.2 "$t" 2>&1) && echo "ok $t" || echo "fail $t:" $out) &
done
wait"#;

/// Pings every `(container, to)` from inside the containers (`docker exec`, all at once):
/// the failures, with what ping said.
fn container_pings(
    m: &Mesh,
    docker: &Docker,
    targets: &[(&Container, IpAddr)],
    count: u32,
    wait_s: u32,
) -> Vec<String> {
    let mut from: Vec<&Container> = targets.iter().map(|(c, _)| *c).collect();
    from.dedup_by_key(|c| c.name.clone());
    let (count, wait_s) = (count.to_string(), wait_s.to_string());
    let commands: Vec<(&Dockerd, Vec<String>)> = from
        .iter()
        .map(|c| {
            let d = &docker.daemons[c.host];
            let to: Vec<String> = targets
                .iter()
                .filter(|(a, _)| a.name == c.name)
                .map(|(_, to)| to.to_string())
                .collect();
            let mut args = vec!["exec", &c.name, "sh", "-c", PING_SCRIPT, "sh"];
            args.extend([count.as_str(), wait_s.as_str()]);
            args.extend(to.iter().map(String::as_str));
            (d, d.argv(DOCKER, &args))
        })
        .collect();
    let outs = run_all(&m.lab, &commands, Duration::from_secs(30));
    let mut failures = Vec::new();
    for (c, out) in from.iter().zip(&outs) {
        let said = String::from_utf8_lossy(&out.stdout);
        for (_, to) in targets.iter().filter(|(a, _)| a.name == c.name) {
            if said.lines().any(|l| l == format!("ok {to}")) {
                continue;
            }
            let failed = said.lines().find(|l| l.starts_with(&format!("fail {to}:")));
            let why = match failed {
                Some(line) => line.to_owned(),
                None => format!("no answer ({}): {}", out.status, output_text(out)),
            };
            failures.push(format!("{} -> {to}: {why}", c.name));
        }
    }
    failures
}

/// A command's stdout and stderr, for messages.
fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
    // Dropped before the lab, also on a panic: containers, dockerd, mounts.
    let mut docker = Docker::new();
    // h2's daemon reads its host's delegated IPv6 prefix from a file, empty for now.
    let scratch = tempfile::tempdir().expect("a temp dir");
    let prefix_file = scratch.path().join("delegated-prefix");
    std::fs::write(&prefix_file, "").expect("write");
    let prefix_arg: &'static str = Box::leak(
        prefix_file
            .to_str()
            .expect("UTF-8 path")
            .to_owned()
            .into_boxed_str(),
    );
    m.nodes[LAN_OWNER].args = vec!["--ipv6-prefix-file", prefix_arg];
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

    // 2. Per host: its subnets, and what docker-config prints for them.
    let mut subnets = Vec::new();
    let mut printed = Vec::new();
    let mut mtu = 0;
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
        mtu = net["mtu"].as_u64().expect("an MTU");
        printed.push(check_docker_config(&m, i, nwid, &s, net));
        subnets.push(s);
    }
    m.phase(&format!(
        "docker-config on every host gives its subnets, gateways and MTU {mtu}: {:?}",
        subnets
            .iter()
            .map(|s| format!("{},{}", s.v4, s.v6))
            .collect::<Vec<_>>()
    ));

    // 3. A dockerd per host: h1's daemon.json is docker-config's with our keys added (none
    // of which it sets), h2's and h3's are our keys alone.
    for (i, role) in HOSTS.iter().enumerate() {
        // h1 runs Docker 20.10's default, no ip6tables: no IPv6 NAT of its own, so the
        // IPv6 egress phase proves meshd's.
        let mut config = own_daemon_keys(i != H1);
        if i == 0 {
            let from_meshd = printed[0].daemon_json.as_object().expect("an object");
            for (key, value) in from_meshd {
                assert!(
                    config.insert(key.clone(), value.clone()).is_none(),
                    "docker-config's daemon.json sets {key:?}, which the test sets too"
                );
            }
        }
        docker.start(&m.lab, role, &Value::Object(config));
    }
    let started = Instant::now();
    let version = docker.wait_up(&m.lab, Duration::from_secs(60));
    m.phase(&format!(
        "dockerd {version} up on every host after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    docker.import_image(&m.lab);

    // h1: the default bridge, on the subnets by daemon.json; Docker picks the addresses.
    // h2: the network docker-config's command creates, with fixed addresses. h3: the
    // compose file's network; Docker picks.
    let [d1, d2, d3] = [0, 1, 2].map(|i| &docker.daemons[i]);
    // The printed command as `sh -c "$(meshd docker-config ...)"` runs it, with `docker`
    // the client that goes with this dockerd.
    let create = format!(
        "docker() {{ {DOCKER} \"$@\"; }}\n{}",
        printed[1].network_create
    );
    let compose = docker.dir().join("compose.yml");
    std::fs::write(&compose, compose_file(&printed[2].compose)).expect("write");
    let compose = compose.to_str().expect("UTF-8 path");
    all_ok(
        &m.lab,
        &[
            docker_run(d1, "h1c1", &[]),
            docker_run(d1, "h1c2", &[]),
            (d2, d2.argv("sh", &["-c", &create])),
            (
                d3,
                d3.argv(COMPOSE, &["-p", PROJECT, "-f", compose, "up", "-d"]),
            ),
        ],
    );
    let fixed: Vec<(String, String)> = (0..CONTAINERS)
        .map(|j| {
            let (v4, v6) = subnets[1].container(j);
            (v4.to_string(), v6.to_string())
        })
        .collect();
    all_ok(
        &m.lab,
        &[
            docker_run(
                d2,
                "h2c1",
                &[
                    "--network",
                    H2_NETWORK,
                    "--ip",
                    &fixed[0].0,
                    "--ip6",
                    &fixed[0].1,
                ],
            ),
            docker_run(
                d2,
                "h2c2",
                &[
                    "--network",
                    H2_NETWORK,
                    "--ip",
                    &fixed[1].0,
                    "--ip6",
                    &fixed[1].1,
                ],
            ),
        ],
    );
    let mut containers = Vec::new();
    for (i, s) in subnets.iter().enumerate() {
        containers.extend(inspect(&m, &docker.daemons[i], i, s));
    }
    for (c, (v4, v6)) in containers[CONTAINERS..2 * CONTAINERS].iter().zip(&fixed) {
        assert_eq!(
            (c.v4.to_string(), c.v6.to_string()),
            (v4.clone(), v6.clone()),
            "{}: the addresses given to docker run",
            c.name
        );
    }
    let bridge = m
        .lab
        .exec(m.nodes[1].role, &["ip", "link", "show", H2_NETWORK]);
    assert!(
        bridge.expect("lab").status.success(),
        "h2's Docker network should be on the bridge {H2_NETWORK} (--bridge)"
    );
    // Every container's interface has the mesh MTU: daemon.json's, the network's option.
    let mtus = all_ok(
        &m.lab,
        &containers
            .iter()
            .map(|c| {
                let d = &docker.daemons[c.host];
                let args = ["exec", &c.name, "cat", "/sys/class/net/eth0/mtu"];
                (d, d.argv(DOCKER, &args))
            })
            .collect::<Vec<_>>(),
    );
    for (c, got) in containers.iter().zip(&mtus) {
        assert_eq!(got, &mtu.to_string(), "{}: eth0's MTU", c.name);
    }
    m.phase(&format!(
        "{} containers up (h1 docker0 by daemon.json, h2 `docker network create`, h3 \
         docker-compose), on their host's subnets with MTU {mtu}: {:?}",
        containers.len(),
        containers
            .iter()
            .map(|c| format!("{}={},{}", c.name, c.v4, c.v6))
            .collect::<Vec<_>>()
    ));

    // 4. The host's side, as docker-config printed it on stderr: its iptables and ip6tables
    // lines, now that Docker has made its chains. (The sysctls are meshd's own doing here:
    // --configure-forwarding.)
    for (i, p) in printed.iter().enumerate() {
        let role = m.nodes[i].role;
        let rules: Vec<&str> = p
            .notes
            .lines()
            .filter(|l| l.starts_with("iptables ") || l.starts_with("ip6tables "))
            .collect();
        assert_eq!(rules.len(), 4, "{role}: {}", p.notes);
        for rule in rules {
            let out = m.lab.exec(role, &["sh", "-c", rule]).expect("lab");
            assert!(
                out.status.success(),
                "{role}: `{rule}` failed: {}",
                output_text(&out)
            );
        }
    }
    // meshd's own check (cached for a few seconds) comes to see Docker's firewall, IPv6
    // FORWARD policy DROP, and the opening in it: no forwarding problem.
    for i in 0..HOSTS.len() {
        let status = m.wait_status(
            i,
            "its firewall check to see Docker's ip6tables, opened, and no problem",
            Duration::from_secs(10),
            |s| {
                let fwd = &s["forwarding"];
                let seen = i == H1
                    || fwd["firewall"].as_str().is_some_and(|f| {
                        f.contains("ip6tables FORWARD policy DROP, accepts mesh-* in")
                    });
                seen && fwd["problems"] == json!([])
            },
        );
        eprintln!(
            "{} firewall: {}",
            m.nodes[i].role, status["forwarding"]["firewall"]
        );
    }
    m.phase(
        "docker-config's iptables/ip6tables rules applied on every host; meshd sees no problem",
    );

    // 5. Every container reaches every container of the other hosts, both families: IPv4
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
    let v4_targets: Vec<(&Container, IpAddr)> =
        pairs.iter().map(|(a, b)| (*a, IpAddr::V4(b.v4))).collect();
    let mut failed = Vec::new();
    let converged = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
        failed = container_pings(&m, &docker, &v4_targets, 1, 1);
        failed.is_empty()
    });
    assert!(
        converged,
        "containers did not reach each other over IPv4 within 20 s ({} of {} failed):\n{}\n{}",
        failed.len(),
        v4_targets.len(),
        failed.join("\n"),
        dataplane_report(&m, &docker, nwid)
    );
    m.phase("IPv4 between the containers of every pair of hosts");
    let all_targets: Vec<(&Container, IpAddr)> = pairs
        .iter()
        .flat_map(|(a, b)| b.addrs().map(|to| (*a, to)))
        .collect();
    // Docker's bridges take a second or two to finish duplicate address detection on
    // their IPv6 gateways: until then they neither answer nor forward over IPv6.
    let converged = meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
        failed = container_pings(&m, &docker, &all_targets, 2, 2);
        failed.is_empty()
    });
    assert!(
        converged,
        "container pings failed ({} of {}):\n{}\n{}",
        failed.len(),
        all_targets.len(),
        failed.join("\n"),
        dataplane_report(&m, &docker, nwid)
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

    // 6. TCP from each host's first container to the next host's: accepted from the
    // sender's container address, which Docker would have masqueraded to the host's mesh
    // address without docker-config's NAT exception. The senders and receivers run in the
    // containers' network namespaces, attached to the lab by name.
    let first = |i: usize| &containers[i * CONTAINERS];
    for i in 0..HOSTS.len() {
        let c = first(i);
        m.lab.attach_namespace(&c.name, c.pid).expect("lab");
    }
    for (seed, (a, b)) in [(0, 2), (1, 0), (2, 1)].into_iter().enumerate() {
        let (from, to) = (first(a), first(b));
        for (family, (src, dst)) in from.addrs().into_iter().zip(to.addrs()).enumerate() {
            let received = transfer(
                &m.lab,
                (&from.name, &to.name),
                dst,
                TCP_PORT,
                TCP_BYTES,
                u64::try_from(seed * 2 + family).expect("small"),
            );
            assert_eq!(
                received.peer,
                src,
                "{} accepted from {} instead of {}'s own address {src}: masqueraded?\n{}",
                to.name,
                received.peer,
                from.name,
                dataplane_report(&m, &docker, nwid)
            );
            eprintln!(
                "TCP {} -> {dst}: {} bytes byte-exact, accepted from {}",
                from.name, received.bytes, received.peer
            );
        }
    }
    m.phase("TCP between containers keeps the source address (IPv4 and IPv6, every host sending)");

    // 7. IPv6 egress: h1's first container reaches an IPv6 host outside the mesh only with
    // the network's nat66, behind h1's uplink address.
    fn endpoint(c: &Container) -> containers::egress::Endpoint<'_> {
        containers::egress::Endpoint {
            name: &c.name,
            host: c.host,
            v6: c.v6,
        }
    }
    containers::egress::add_outside(&mut m);
    let ping = |e: &containers::egress::Endpoint, to: IpAddr| {
        let c = containers
            .iter()
            .find(|c| c.name == e.name)
            .expect("a container");
        container_pings(&m, &docker, &[(c, to)], 1, 1).is_empty()
    };
    containers::egress::containers_reach_the_ipv6_internet(
        &m,
        nwid,
        &ping,
        &endpoint(first(H1)),
        &endpoint(first(2)),
        &|m| dataplane_report(m, &docker, nwid),
    );

    // 8. Delegated prefixes: h2's host gets a /60, its containers a global /80 from it.
    let h2_docker = |args: &[&str]| docker.daemons[LAN_OWNER].docker(&m.lab, args);
    let h1_ping = |to: IpAddr| container_pings(&m, &docker, &[(first(H1), to)], 1, 1).is_empty();
    containers::prefix::containers_get_global_addresses(
        &m,
        nwid,
        &containers::prefix::Global {
            owner: LAN_OWNER,
            file: &prefix_file,
            docker: &h2_docker,
            ping_from_h1: &h1_ping,
            scratch: scratch.path(),
        },
        &|m| dataplane_report(m, &docker, nwid),
    );

    // 9. A LAN behind h2, routed through it by a managed route.
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
        dataplane_report(&m, &docker, nwid)
    );
    assert!(
        !owner_routes_it && !kernel_route(&m.status(LAN_OWNER), nwid, LAN_PREFIX),
        "{owner} owns {LAN_PREFIX} and must not route it into its own interface\n{}",
        dataplane_report(&m, &docker, nwid)
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
        dataplane_report(&m, &docker, nwid)
    );
    assert!(h1_ping().is_err(), "h1 still reaches {LAN_HOST}");
    m.phase(&format!(
        "route remove: h1 loses the LAN in {:.2} s",
        removed_in.expect("checked").as_secs_f64()
    ));

    // 10. The same LAN behind h2 and h3: the route fails over when h2's daemon dies, and
    // comes back to it.
    let lan_def = containers::failover::Lan {
        role: LAN,
        prefix: LAN_PREFIX,
        host: LAN_HOST,
        far: far.clone(),
        gateways: [
            (
                LAN_OWNER,
                LAN_GATEWAY.parse().expect("an address"),
                near.clone(),
            ),
            (2, Ipv4Addr::new(192, 168, 77, 2), m.lab.link_name("l2")),
        ],
    };
    containers::failover::route_fails_over(&mut m, nwid, &lan_def, &|m| {
        dataplane_report(m, &docker, nwid)
    });

    // 11. Stopping Docker removes the containers and leaves no process or mount; dropping
    // the lab removes every namespace and link it made or attached.
    let dir = docker.dir().display().to_string();
    let problems = docker.stop();
    assert!(problems.is_empty(), "stopping Docker: {problems:#?}");
    let (processes, mounts) = (docker.processes(), docker.mounts());
    assert!(
        processes.is_empty() && mounts.is_empty(),
        "Docker left processes {processes:#?} and mounts {mounts:#?} under {dir}"
    );
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
    drop(docker);
    m.phase("Docker stopped: no container, dockerd, containerd or mount left");
    let namespaces = m.lab.namespaces().len();
    drop(m);
    let left = meshd_lab::leftovers(&tag);
    assert!(
        left.is_empty(),
        "the lab {tag} left namespaces or links behind: {left:#?}"
    );
    eprintln!("lab {tag} dropped: its {namespaces} namespaces are gone");
}

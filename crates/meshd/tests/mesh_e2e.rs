//! The node's end-to-end test, in network namespaces with real processes: a controller host
//! and three node hosts on one bridge.
//!
//! Join → ACCESS_DENIED → authorize → OK; every node pings every other node over IPv4,
//! RFC4193 and 6PLANE; 50 MB of TCP between two nodes arrive byte-exact (throughput is
//! printed); `status --json` shows OK, the addresses and `direct` peers on the underlay;
//! deauthorizing one node makes the others tear its sessions down within 2 s and count what
//! it still sends, while they keep talking; with the controller stopped, a restarted daemon
//! brings its tunnels back from the cached config; `leave` leaves no interface, address or
//! route behind.
//!
//! Needs root, iproute2, ping and python3. Phases and timings go to stderr
//! (`cargo test -p meshd --test mesh_e2e -- --nocapture`).

mod common;
mod netns;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::ok_stdout;
use ipnet::IpNet;
use meshd_proto::{NetworkId, NodeId, addr};
use netns::{Lab, Proc};
use serde_json::Value;

const MESHD: &str = env!("CARGO_BIN_EXE_meshd");
const CTL: &str = "ctl";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// The controllers' node channel (QUIC) and admin API ports, inside the controller netns.
const CHANNEL_PORT: u16 = 9994;
const API_PORT: u16 = 9995;
/// The nodes' data-plane UDP port.
const NODE_PORT: u16 = 9993;
const TRANSFER_BYTES: usize = 50 * 1024 * 1024;
const TRANSFER_PORT: u16 = 5001;

/// One node's addresses on the network, as `status --json` gives them.
#[derive(Debug, Clone, Copy)]
struct Addresses {
    v4: Ipv4Addr,
    v4_prefix: u8,
    rfc4193: Ipv6Addr,
    sixplane: Ipv6Addr,
}

impl Addresses {
    fn all(&self) -> [IpAddr; 3] {
        [
            IpAddr::V4(self.v4),
            IpAddr::V6(self.rfc4193),
            IpAddr::V6(self.sixplane),
        ]
    }
}

#[derive(Debug)]
struct Node {
    role: &'static str,
    state: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
    id: Option<NodeId>,
    addrs: Option<Addresses>,
}

impl Node {
    fn id(&self) -> NodeId {
        self.id.expect("node id known")
    }
    fn addrs(&self) -> Addresses {
        self.addrs.expect("addresses known")
    }
}

/// The lab, the controller and the three nodes. Field order is drop order: the lab kills
/// every process and removes the namespaces before the temp dir goes.
#[derive(Debug)]
struct Mesh {
    lab: Lab,
    nodes: Vec<Node>,
    ctl_data: PathBuf,
    ctl_log: PathBuf,
    ctl_proc: Option<Proc>,
    start: Instant,
    _tmp: tempfile::TempDir,
}

impl Mesh {
    fn new() -> Self {
        let start = Instant::now();
        let tmp = tempfile::tempdir().expect("a temp dir");
        let mut roles = vec![CTL];
        roles.extend(NODES);
        let lab = Lab::new(&roles);
        let nodes = NODES
            .iter()
            .map(|role| Node {
                role,
                state: tmp.path().join(role),
                log: tmp.path().join(format!("{role}.log")),
                proc: None,
                id: None,
                addrs: None,
            })
            .collect();
        Mesh {
            lab,
            nodes,
            ctl_data: tmp.path().join("ctl"),
            ctl_log: tmp.path().join("ctl.log"),
            ctl_proc: None,
            start,
            _tmp: tmp,
        }
    }

    fn phase(&self, what: &str) {
        eprintln!("[{:>5.1}s] {what}", self.start.elapsed().as_secs_f64());
    }

    fn channel(&self) -> String {
        format!("{}:{CHANNEL_PORT}", self.lab.ip(CTL))
    }

    /// `meshd controller <args> --data D`, in the controller's namespace.
    fn ctl(&self, args: &[&str]) -> Output {
        let data = self.ctl_data.to_str().expect("UTF-8 path");
        let mut argv = vec![MESHD, "controller"];
        argv.extend(args);
        argv.extend(["--data", data]);
        self.lab.exec(CTL, &argv)
    }

    fn start_controller(&mut self) {
        let data = self.ctl_data.to_str().expect("UTF-8 path").to_owned();
        let channel = self.channel();
        let api = format!("127.0.0.1:{API_PORT}");
        ok_stdout(&self.lab.exec(
            CTL,
            &[
                MESHD,
                "controller",
                "init",
                "--data",
                &data,
                "--listen",
                &channel,
                "--api-listen",
                &api,
            ],
        ));
        let proc = self.lab.spawn(
            CTL,
            &[MESHD, "controller", "run", "--data", &data],
            &self.ctl_log.clone(),
        );
        self.ctl_proc = Some(proc);
        let up = Lab::wait_until(Duration::from_secs(30), || {
            self.ctl(&["network", "list"]).status.success() || self.lab.exited(proc).is_some()
        });
        assert!(
            up && self.lab.exited(proc).is_none(),
            "the controller did not come up:\n{}",
            tail(&self.ctl_log)
        );
    }

    /// `meshd <args> --state S` in node `i`'s namespace.
    fn node_cli(&self, i: usize, args: &[&str]) -> Output {
        let n = &self.nodes[i];
        let mut argv = vec![MESHD];
        argv.extend(args);
        argv.extend(["--state", n.state.to_str().expect("UTF-8 path")]);
        self.lab
            .exec_timeout(n.role, &argv, Duration::from_secs(10))
    }

    fn status(&self, i: usize) -> Value {
        let out = self.node_cli(i, &["status", "--json"]);
        assert!(
            out.status.success(),
            "{}: status --json failed: {}\n{}",
            self.nodes[i].role,
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }

    /// Polls node `i`'s `status --json` until `done` holds; panics with the last status
    /// and the logs.
    fn wait_status(
        &self,
        i: usize,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let ok = Lab::wait_until(timeout, || {
            last = self.status(i);
            done(&last)
        });
        assert!(
            ok,
            "{}: timed out after {timeout:?} waiting for {what}; last status:\n{last:#}\n{}",
            self.nodes[i].role,
            self.diagnostics()
        );
        last
    }

    /// `meshd daemon` on node `i`, waiting until its local API answers.
    fn start_daemon(&mut self, i: usize) {
        let channel = self.channel();
        let port = NODE_PORT.to_string();
        let n = &self.nodes[i];
        let (role, log) = (n.role, n.log.clone());
        let state = n.state.to_str().expect("UTF-8 path").to_owned();
        let proc = self.lab.spawn(
            role,
            &[
                "env",
                "RUST_LOG=info,meshd=debug,meshd_engine=debug",
                MESHD,
                "daemon",
                "--state",
                &state,
                "--port",
                &port,
                "--controller",
                &channel,
            ],
            &log,
        );
        self.nodes[i].proc = Some(proc);
        let up = Lab::wait_until(Duration::from_secs(20), || {
            self.node_cli(i, &["status", "--json"]).status.success()
                || self.lab.exited(proc).is_some()
        });
        if let Some(status) = self.lab.exited(proc) {
            panic!("{role}: the daemon exited with {status}:\n{}", tail(&log));
        }
        assert!(
            up,
            "{role}: the daemon's API did not answer:\n{}",
            tail(&log)
        );
    }

    fn diagnostics(&self) -> String {
        let mut out = format!("--- controller log (tail)\n{}", tail(&self.ctl_log));
        for n in &self.nodes {
            out.push_str(&format!("--- {} log (tail)\n{}", n.role, tail(&n.log)));
        }
        out
    }

    /// Pings every `(from, to)` at once: per target, success or ping's output.
    fn ping_results(
        &self,
        targets: &[(usize, IpAddr)],
        count: u32,
        wait_s: u32,
    ) -> Vec<Result<(), String>> {
        let argvs: Vec<Vec<String>> = targets
            .iter()
            .map(|(_, to)| ping_argv(*to, count, wait_s))
            .collect();
        let refs: Vec<Vec<&str>> = argvs
            .iter()
            .map(|a| a.iter().map(String::as_str).collect())
            .collect();
        let commands: Vec<(&str, &[&str])> = targets
            .iter()
            .zip(&refs)
            .map(|((from, _), argv)| (self.nodes[*from].role, argv.as_slice()))
            .collect();
        self.lab
            .exec_all(&commands, Duration::from_secs(20))
            .into_iter()
            .zip(targets)
            .map(|(out, (from, to))| {
                if out.status.success() {
                    return Ok(());
                }
                Err(format!(
                    "{} -> {to}: {} {}",
                    self.nodes[*from].role,
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            })
            .collect()
    }

    /// Pings every `(from, to)` at once; the ones that failed, with ping's output.
    fn pings(&self, targets: &[(usize, IpAddr)], count: u32, wait_s: u32) -> Vec<String> {
        self.ping_results(targets, count, wait_s)
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }

    /// Every `(from, to address)` of the given ordered pairs, over all three families.
    fn matrix(&self, pairs: &[(usize, usize)]) -> Vec<(usize, IpAddr)> {
        pairs
            .iter()
            .flat_map(|&(a, b)| self.nodes[b].addrs().all().map(|to| (a, to)))
            .collect()
    }

    /// The interface carries the node's three addresses (6PLANE as `::1/40`) and the
    /// status's MTU.
    fn check_interface(&self, i: usize, net: &Value) {
        let n = &self.nodes[i];
        let iface = net["interface"].as_str().unwrap_or_else(|| {
            panic!("{}: no interface in status:\n{net:#}", n.role);
        });
        let out = self
            .lab
            .exec(n.role, &["ip", "-j", "addr", "show", "dev", iface]);
        let text = ok_stdout(&out);
        let links: Value = serde_json::from_str(&text).expect("ip -j prints JSON");
        let link = &links[0];
        assert_eq!(link["mtu"], net["mtu"], "{}: {text}", n.role);
        let carried: Vec<(String, u64)> = link["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            .map(|a| {
                (
                    a["local"].as_str().expect("local").to_owned(),
                    a["prefixlen"].as_u64().expect("prefixlen"),
                )
            })
            .collect();
        let a = n.addrs();
        for (ip, prefix) in [
            (IpAddr::V4(a.v4), u64::from(a.v4_prefix)),
            (
                IpAddr::V6(a.rfc4193),
                u64::from(addr::RFC4193_NETWORK_PREFIX),
            ),
            (
                IpAddr::V6(a.sixplane),
                u64::from(addr::SIXPLANE_NETWORK_PREFIX),
            ),
        ] {
            assert!(
                carried.contains(&(ip.to_string(), prefix)),
                "{}: {iface} should carry {ip}/{prefix}; it has {carried:?}",
                n.role
            );
        }
    }
}

fn network(status: &Value, nwid: NetworkId) -> Option<&Value> {
    status["networks"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == nwid.to_string())
}

fn network_status(status: &Value, nwid: NetworkId) -> Option<&str> {
    network(status, nwid).and_then(|n| n["status"].as_str())
}

fn revision(status: &Value, nwid: NetworkId) -> Option<u64> {
    network(status, nwid).and_then(|n| n["revision"].as_u64())
}

/// `ping` for one address: `-c count -W wait_s`, 0.2 s apart (we are root).
fn ping_argv(to: IpAddr, count: u32, wait_s: u32) -> Vec<String> {
    let mut argv = vec!["ping".to_owned()];
    if to.is_ipv6() {
        argv.push("-6".to_owned());
    }
    argv.extend([
        "-n".to_owned(),
        "-c".to_owned(),
        count.to_string(),
        "-W".to_owned(),
        wait_s.to_string(),
        "-i".to_owned(),
        "0.2".to_owned(),
        to.to_string(),
    ]);
    argv
}

/// The last lines of a log file.
fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(40)..].join("\n");
    out.push('\n');
    out
}

/// The real python3 interpreter (pyenv shims are slow to start under `ip netns exec`).
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is installed");
        ok_stdout(&out)
    })
}

/// Receives one TCP connection on ADDR PORT; prints bytes, sha256 and seconds from
/// accept to EOF.
const RECEIVER: &str = r#"
import hashlib, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(30)
c, _ = s.accept()
c.settimeout(30)
t0 = time.monotonic()
h = hashlib.sha256()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
dt = time.monotonic() - t0
c.close()
print(n, h.hexdigest(), f"{dt:.6f}")
"#;

/// Sends N deterministic bytes (seeded) to ADDR PORT, retrying the connect while the
/// receiver starts; waits for the receiver to close; prints bytes and sha256.
const SENDER: &str = r#"
import hashlib, random, socket, sys, time
host, port, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
data = random.Random(seed).randbytes(n)
deadline = time.monotonic() + 10
while True:
    try:
        s = socket.create_connection((host, port), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
s.settimeout(30)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
print(n, hashlib.sha256(data).hexdigest())
"#;

#[test]
fn three_hosts_join_talk_lose_a_member_and_run_on_the_cache() {
    let mut m = Mesh::new();
    m.phase(&format!(
        "lab {} up: {:?}",
        m.lab.tag(),
        m.lab
            .hosts()
            .iter()
            .map(|h| format!("{}={}", h.role, h.ip))
            .collect::<Vec<_>>()
    ));

    // The controller, and a network.
    m.start_controller();
    let nwid: NetworkId = ok_stdout(&m.ctl(&["network", "create", "--name", "e2e"]))
        .parse()
        .expect("network create prints the id alone");
    m.phase(&format!("controller up, network {nwid} created"));

    // Daemons; join; ACCESS_DENIED.
    for i in 0..NODES.len() {
        m.start_daemon(i);
    }
    for i in 0..NODES.len() {
        let out = m.node_cli(i, &["join", &nwid.to_string()]);
        let text = ok_stdout(&out);
        let status = m.wait_status(i, "ACCESS_DENIED", Duration::from_secs(15), |s| {
            network_status(s, nwid) == Some("ACCESS_DENIED")
        });
        let node: NodeId = status["node_id"]
            .as_str()
            .expect("node_id")
            .parse()
            .expect("10 hex digits");
        assert!(text.contains(&node.to_string()), "{text}");
        m.nodes[i].id = Some(node);
    }
    m.phase("3 daemons joined: ACCESS_DENIED");

    // Authorize; OK with the addresses.
    for i in 0..NODES.len() {
        let node = m.nodes[i].id().to_string();
        ok_stdout(&m.ctl(&["member", "authorize", &nwid.to_string(), &node]));
    }
    for i in 0..NODES.len() {
        let status = m.wait_status(i, "OK", Duration::from_secs(15), |s| {
            network_status(s, nwid) == Some("OK")
        });
        let net = network(&status, nwid).expect("joined");
        let node = m.nodes[i].id();
        let addresses: Vec<IpNet> = net["addresses"]
            .as_array()
            .expect("addresses")
            .iter()
            .map(|a| a.as_str().expect("text").parse().expect("address/prefix"))
            .collect();
        let v4 = addresses
            .iter()
            .find_map(|a| match a {
                IpNet::V4(n) => Some(*n),
                IpNet::V6(_) => None,
            })
            .unwrap_or_else(|| panic!("no IPv4 address: {net:#}"));
        assert_eq!(
            v4.trunc().to_string(),
            "10.147.0.0/16",
            "from the default pool, with its prefix"
        );
        let v6 = |want: Ipv6Addr| {
            addresses
                .iter()
                .find_map(|a| match a {
                    IpNet::V6(n) if n.addr() == want => Some(*n),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{want} missing from {net:#}"))
        };
        let rfc4193 = v6(addr::rfc4193_addr(nwid, node));
        assert_eq!(rfc4193.prefix_len(), addr::RFC4193_NETWORK_PREFIX);
        // 6PLANE: the ::1 host of the node's /80, carried with the network's /40 (the
        // interface too: checked in the kernel below).
        let sixplane = v6(addr::sixplane_addr(nwid, node));
        assert_eq!(sixplane.prefix_len(), addr::SIXPLANE_NETWORK_PREFIX);
        m.nodes[i].addrs = Some(Addresses {
            v4: v4.addr(),
            v4_prefix: v4.prefix_len(),
            rfc4193: rfc4193.addr(),
            sixplane: sixplane.addr(),
        });
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
    let converged = Lab::wait_until(Duration::from_secs(20), || {
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
    let to = m.nodes[1].addrs().v4.to_string();
    let (port, size) = (TRANSFER_PORT.to_string(), TRANSFER_BYTES.to_string());
    let receiver: &[&str] = &[python(), "-c", RECEIVER, &to, &port];
    let sender: &[&str] = &[python(), "-c", SENDER, &to, &port, &size, "7"];
    let outs = m.lab.exec_all(
        &[(NODES[1], receiver), (NODES[0], sender)],
        Duration::from_secs(45),
    );
    let (received, sent) = (ok_stdout(&outs[0]), ok_stdout(&outs[1]));
    let received: Vec<&str> = received.split_whitespace().collect();
    let sent: Vec<&str> = sent.split_whitespace().collect();
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], size, "{sent:?}");
    assert_eq!(received[0], size, "every byte arrived");
    assert_eq!(received[1], sent[1], "the same bytes arrived (sha256)");
    let seconds: f64 = received[2].parse().expect("seconds");
    eprintln!(
        "throughput n1 -> n2, one TCP flow, {} MiB: {:.1} MB/s = {:.0} Mbit/s ({seconds:.2} s)",
        TRANSFER_BYTES >> 20,
        TRANSFER_BYTES as f64 / 1e6 / seconds,
        TRANSFER_BYTES as f64 * 8.0 / 1e6 / seconds
    );
    m.phase("50 MB over TCP arrived byte-exact");

    // n1's status: OK, its addresses, every other node a direct peer on the underlay.
    let mut last = Value::Null;
    let direct = Lab::wait_until(Duration::from_secs(5), || {
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
    let torn_down = Lab::wait_until(Duration::from_secs(5), || {
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
    let cut = Lab::wait_until(Duration::from_secs(10), || {
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
    let back = Lab::wait_until(Duration::from_secs(15), || {
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
    let link = m.lab.exec(role, &["ip", "link", "show", "dev", &iface]);
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
        let left = owned(&ok_stdout(&m.lab.exec(role, argv)));
        assert!(left.is_empty(), "{argv:?} after leave still shows {left:?}");
    }
    m.phase("n1 left: no interface, address or route of the network is left");
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

/// The lab itself: hosts reach each other on the underlay, and a panic leaves no
/// namespace, link or process behind.
#[test]
fn lab_cleans_up_after_a_panic() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let log = tmp.path().join("sleep.log");
    let mut seen: Option<(String, Vec<String>, u32)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new(&["a", "b"]);
        let b = lab.ip("b").to_string();
        let out = lab.exec("a", &["ping", "-n", "-c", "1", "-W", "2", &b]);
        assert!(
            out.status.success(),
            "a -> b on the underlay: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let sleeper = lab.spawn("b", &["sleep", "600"], &log);
        assert!(lab.exited(sleeper).is_none());
        seen = Some((lab.tag().to_owned(), lab.namespaces().to_vec(), sleeper.pid));
        panic!("on purpose, to test the lab's cleanup");
    }));
    assert!(result.is_err(), "the closure panics");
    let (tag, namespaces, pid) = seen.expect("the lab was built");
    assert_eq!(namespaces.len(), 3, "switch + 2 hosts: {namespaces:?}");
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

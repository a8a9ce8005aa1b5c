//! A controller and member hosts running real `meshd` processes in a [`Lab`], for the
//! end-to-end tests (`mesh_e2e`, `containers_e2e`): starting them, joining and
//! authorizing, `status --json`, pings, and python TCP endpoints.
//!
//! The controller runs on the lab host [`CTL`], one daemon per node host; each node's
//! state and log live in the mesh's temp dir.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use meshd_proto::{NetworkId, NodeId, addr};
use serde_json::Value;

use crate::common::ok_stdout;
use meshd_lab::{Lab, Proc};

pub mod cluster;

pub const MESHD: &str = env!("CARGO_BIN_EXE_meshd");
pub const CTL: &str = "ctl";
/// The controllers' node channel (QUIC) and admin API ports, inside the controller netns.
pub const CHANNEL_PORT: u16 = 9994;
pub const API_PORT: u16 = 9995;
/// The nodes' data-plane UDP port.
pub const NODE_PORT: u16 = 9993;

/// One node's addresses on the network, as `status --json` gives them.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub v4: Ipv4Addr,
    pub v4_prefix: u8,
    pub rfc4193: Ipv6Addr,
    pub sixplane: Ipv6Addr,
}

impl Addresses {
    pub fn all(&self) -> [IpAddr; 3] {
        [
            IpAddr::V4(self.v4),
            IpAddr::V6(self.rfc4193),
            IpAddr::V6(self.sixplane),
        ]
    }
}

#[derive(Debug)]
pub struct Node {
    pub role: &'static str,
    pub state: PathBuf,
    pub log: PathBuf,
    pub proc: Option<Proc>,
    pub id: Option<NodeId>,
    pub addrs: Option<Addresses>,
    /// `meshd daemon` options for this node only (after the mesh's `daemon_args`).
    pub args: Vec<&'static str>,
}

impl Node {
    pub fn id(&self) -> NodeId {
        self.id.expect("node id known")
    }
    pub fn addrs(&self) -> Addresses {
        self.addrs.expect("addresses known")
    }
}

/// The lab, the controller and the nodes. Field order is drop order: the lab kills every
/// process and removes the namespaces before the temp dir goes.
#[derive(Debug)]
pub struct Mesh {
    pub lab: Lab,
    pub nodes: Vec<Node>,
    pub ctl_data: PathBuf,
    pub ctl_log: PathBuf,
    pub ctl_proc: Option<Proc>,
    pub start: Instant,
    /// Added to every `meshd daemon` command line (e.g. `--configure-forwarding`).
    pub daemon_args: Vec<&'static str>,
    _tmp: tempfile::TempDir,
}

impl Mesh {
    /// A lab with the controller host [`CTL`] and one host per node role; nothing runs yet.
    pub fn new(node_roles: &[&'static str]) -> Self {
        Self::with_hosts(node_roles, &[])
    }

    /// The same with `extra` hosts that run no node (more controller replicas, say).
    pub fn with_hosts(node_roles: &[&'static str], extra: &[&'static str]) -> Self {
        let start = Instant::now();
        let tmp = tempfile::tempdir().expect("a temp dir");
        let mut roles = vec![CTL];
        roles.extend(extra);
        roles.extend(node_roles);
        let lab = Lab::new(meshd_lab::Naming::test(), &roles).expect("lab");
        let nodes = node_roles
            .iter()
            .map(|role| Node {
                role,
                state: tmp.path().join(role),
                log: tmp.path().join(format!("{role}.log")),
                proc: None,
                id: None,
                addrs: None,
                args: Vec::new(),
            })
            .collect();
        Mesh {
            lab,
            nodes,
            ctl_data: tmp.path().join("ctl"),
            ctl_log: tmp.path().join("ctl.log"),
            ctl_proc: None,
            start,
            daemon_args: Vec::new(),
            _tmp: tmp,
        }
    }

    /// A lab with the controller host [`CTL`], `public` node hosts and `extra` hosts that run
    /// no node on the switch, and for
    /// each `(router, kind, hosts)` a NAT router of that kind with the node hosts behind it,
    /// every router's LAN on `192.168.1.0/24`. Nodes are the public ones, then the others
    /// in order.
    pub fn with_nats(
        public: &[&'static str],
        extra: &[&'static str],
        nats: &[(&'static str, meshd_lab::NatKind, &[&'static str])],
    ) -> Self {
        let mut mesh = Self::with_hosts(public, extra);
        let lan: ipnet::Ipv4Net = "192.168.1.0/24".parse().expect("a LAN");
        for (router, kind, hosts) in nats {
            mesh.lab.add_router(router, *kind, lan).expect("lab");
            for host in *hosts {
                mesh.lab.add_host_behind(router, host).expect("lab");
                let tmp = mesh._tmp.path();
                mesh.nodes.push(Node {
                    role: host,
                    state: tmp.join(host),
                    log: tmp.join(format!("{host}.log")),
                    proc: None,
                    id: None,
                    addrs: None,
                    args: Vec::new(),
                });
            }
        }
        mesh
    }

    pub fn phase(&self, what: &str) {
        eprintln!("[{:>5.1}s] {what}", self.start.elapsed().as_secs_f64());
    }

    /// The lab's hosts and their underlay addresses, for the first phase line.
    pub fn describe_lab(&self) -> String {
        format!(
            "lab {} up: {:?}",
            self.lab.tag(),
            self.lab
                .hosts()
                .iter()
                .map(|h| format!("{}={}", h.role, h.ip))
                .collect::<Vec<_>>()
        )
    }

    pub fn channel(&self) -> String {
        format!("{}:{CHANNEL_PORT}", self.lab.ip(CTL))
    }

    /// `meshd controller <args> --data D`, in the controller's namespace.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let data = self.ctl_data.to_str().expect("UTF-8 path");
        let mut argv = vec![MESHD, "controller"];
        argv.extend(args);
        argv.extend(["--data", data]);
        self.lab.exec(CTL, &argv).expect("lab")
    }

    pub fn start_controller(&mut self) {
        let data = self.ctl_data.to_str().expect("UTF-8 path").to_owned();
        let channel = self.channel();
        let api = format!("127.0.0.1:{API_PORT}");
        ok_stdout(
            &self
                .lab
                .exec(
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
                )
                .expect("lab"),
        );
        self.run_controller();
    }

    /// `meshd controller run` on the controller's data (after [`Mesh::start_controller`]
    /// made it, and the controller was stopped).
    pub fn run_controller(&mut self) {
        let data = self.ctl_data.to_str().expect("UTF-8 path").to_owned();
        let proc = self
            .lab
            .spawn(
                CTL,
                &[MESHD, "controller", "run", "--data", &data],
                &self.ctl_log.clone(),
            )
            .expect("lab");
        self.ctl_proc = Some(proc);
        let up = meshd_lab::interrupt::wait_until(Duration::from_secs(30), || {
            self.ctl(&["network", "list"]).status.success() || self.lab.exited(proc).is_some()
        });
        assert!(
            up && self.lab.exited(proc).is_none(),
            "the controller did not come up:\n{}",
            tail(&self.ctl_log)
        );
    }

    /// `meshd controller network create --name <name>`: the new network's id.
    pub fn create_network(&self, name: &str) -> NetworkId {
        ok_stdout(&self.ctl(&["network", "create", "--name", name]))
            .parse()
            .expect("network create prints the id alone")
    }

    /// `meshd <args> --state S` in node `i`'s namespace.
    pub fn node_cli(&self, i: usize, args: &[&str]) -> Output {
        let n = &self.nodes[i];
        let mut argv = vec![MESHD];
        argv.extend(args);
        argv.extend(["--state", n.state.to_str().expect("UTF-8 path")]);
        self.lab
            .exec_timeout(n.role, &argv, Duration::from_secs(10))
            .expect("lab")
    }

    pub fn status(&self, i: usize) -> Value {
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
    pub fn wait_status(
        &self,
        i: usize,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let ok = meshd_lab::interrupt::wait_until(timeout, || {
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
    pub fn start_daemon(&mut self, i: usize) {
        let channel = self.channel();
        let port = NODE_PORT.to_string();
        let n = &self.nodes[i];
        let (role, log) = (n.role, n.log.clone());
        let state = n.state.to_str().expect("UTF-8 path").to_owned();
        let mut argv = vec![
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
        ];
        argv.extend(&self.daemon_args);
        argv.extend(&n.args);
        let proc = self.lab.spawn(role, &argv, &log).expect("lab");
        self.nodes[i].proc = Some(proc);
        let up = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
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

    /// Every node joins the network and sees ACCESS_DENIED; records the node ids.
    pub fn join_all(&mut self, nwid: NetworkId) {
        for i in 0..self.nodes.len() {
            let out = self.node_cli(i, &["join", &nwid.to_string()]);
            let text = ok_stdout(&out);
            let status = self.wait_status(i, "ACCESS_DENIED", Duration::from_secs(15), |s| {
                network_status(s, nwid) == Some("ACCESS_DENIED")
            });
            let node: NodeId = status["node_id"]
                .as_str()
                .expect("node_id")
                .parse()
                .expect("10 hex digits");
            assert!(text.contains(&node.to_string()), "{text}");
            self.nodes[i].id = Some(node);
        }
    }

    /// Authorizes every node, waits for OK on each and records its addresses (IPv4 from
    /// the default pool, RFC4193 /88, 6PLANE `::1/40`).
    pub fn authorize_all(&mut self, nwid: NetworkId) {
        for i in 0..self.nodes.len() {
            let node = self.nodes[i].id().to_string();
            ok_stdout(&self.ctl(&["member", "authorize", &nwid.to_string(), &node]));
        }
        for i in 0..self.nodes.len() {
            let status = self.wait_status(i, "OK", Duration::from_secs(15), |s| {
                network_status(s, nwid) == Some("OK")
            });
            let net = network(&status, nwid).expect("joined");
            self.nodes[i].addrs = Some(addresses_from(nwid, self.nodes[i].id(), net));
        }
    }

    pub fn diagnostics(&self) -> String {
        let mut out = format!("--- controller log (tail)\n{}", tail(&self.ctl_log));
        for n in &self.nodes {
            out.push_str(&format!("--- {} log (tail)\n{}", n.role, tail(&n.log)));
        }
        out
    }

    /// Pings every `(from, to)` at once: per target, success or ping's output.
    pub fn ping_results(
        &self,
        targets: &[(usize, IpAddr)],
        count: u32,
        wait_s: u32,
    ) -> Vec<Result<(), String>> {
        let from_roles: Vec<(&str, IpAddr)> = targets
            .iter()
            .map(|&(from, to)| (self.nodes[from].role, to))
            .collect();
        ping_all(&self.lab, &from_roles, count, wait_s)
    }

    /// Pings every `(from, to)` at once; the ones that failed, with ping's output.
    pub fn pings(&self, targets: &[(usize, IpAddr)], count: u32, wait_s: u32) -> Vec<String> {
        self.ping_results(targets, count, wait_s)
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }

    /// Every `(from, to address)` of the given ordered pairs, over all three families.
    pub fn matrix(&self, pairs: &[(usize, usize)]) -> Vec<(usize, IpAddr)> {
        pairs
            .iter()
            .flat_map(|&(a, b)| self.nodes[b].addrs().all().map(|to| (a, to)))
            .collect()
    }

    /// The interface carries the node's three addresses (6PLANE as `::1/40`) and the
    /// status's MTU.
    pub fn check_interface(&self, i: usize, net: &Value) {
        let n = &self.nodes[i];
        let iface = net["interface"].as_str().unwrap_or_else(|| {
            panic!("{}: no interface in status:\n{net:#}", n.role);
        });
        let out = self
            .lab
            .exec(n.role, &["ip", "-j", "addr", "show", "dev", iface])
            .expect("lab");
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

/// A node's addresses on the network from its `status --json` network entry: IPv4 from the
/// default pool, RFC4193 /88, 6PLANE `::1/40`; checked against the address math.
pub fn addresses_from(nwid: NetworkId, node: NodeId, net: &Value) -> Addresses {
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
    // interface too: see `check_interface`).
    let sixplane = v6(addr::sixplane_addr(nwid, node));
    assert_eq!(sixplane.prefix_len(), addr::SIXPLANE_NETWORK_PREFIX);
    Addresses {
        v4: v4.addr(),
        v4_prefix: v4.prefix_len(),
        rfc4193: rfc4193.addr(),
        sixplane: sixplane.addr(),
    }
}

pub fn network(status: &Value, nwid: NetworkId) -> Option<&Value> {
    status["networks"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == nwid.to_string())
}

pub fn network_status(status: &Value, nwid: NetworkId) -> Option<&str> {
    network(status, nwid).and_then(|n| n["status"].as_str())
}

pub fn revision(status: &Value, nwid: NetworkId) -> Option<u64> {
    network(status, nwid).and_then(|n| n["revision"].as_u64())
}

/// Pings every `(namespace role, to)` of the lab at once: per target, success or ping's
/// output.
pub fn ping_all(
    lab: &Lab,
    targets: &[(&str, IpAddr)],
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
        .map(|((from, _), argv)| (*from, argv.as_slice()))
        .collect();
    lab.exec_all(&commands, Duration::from_secs(20))
        .expect("lab")
        .into_iter()
        .zip(targets)
        .map(|(out, (from, to))| {
            if out.status.success() {
                return Ok(());
            }
            Err(format!(
                "{from} -> {to}: {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
        .collect()
}

/// `ping` for one address: `-c count -W wait_s`, 0.2 s apart (we are root).
pub fn ping_argv(to: IpAddr, count: u32, wait_s: u32) -> Vec<String> {
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
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(40)..].join("\n");
    out.push('\n');
    out
}

/// The real python3 interpreter (pyenv shims are slow to start under `ip netns exec`).
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is installed");
        ok_stdout(&out)
    })
}

/// Receives one TCP connection on ADDR PORT; prints bytes, sha256, seconds from accept
/// to EOF, and the peer's address as accepted.
pub const RECEIVER: &str = r#"
import hashlib, socket, sys, time
addr = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, int(sys.argv[2])))
s.listen(1)
s.settimeout(30)
c, peer = s.accept()
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
print(n, h.hexdigest(), f"{dt:.6f}", peer[0])
"#;

/// Sends N deterministic bytes (seeded) to ADDR PORT, retrying the connect while the
/// receiver starts; waits for the receiver to close; prints bytes and sha256.
pub const SENDER: &str = r#"
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

/// One TCP transfer: what the receiver printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub bytes: usize,
    pub sha256: String,
    pub seconds: f64,
    /// The peer address the receiver accepted the connection from.
    pub peer: IpAddr,
}

/// Sends `bytes` seeded bytes over TCP from the lab namespace `from` to `to:port`, with
/// the receiver listening in `at`; asserts they arrived byte-exact and returns what the
/// receiver saw.
pub fn transfer(
    lab: &Lab,
    (from, at): (&str, &str),
    to: IpAddr,
    port: u16,
    bytes: usize,
    seed: u64,
) -> Received {
    let (to, port, size, seed) = (
        to.to_string(),
        port.to_string(),
        bytes.to_string(),
        seed.to_string(),
    );
    let receiver: &[&str] = &[python(), "-c", RECEIVER, &to, &port];
    let sender: &[&str] = &[python(), "-c", SENDER, &to, &port, &size, &seed];
    let outs = lab
        .exec_all(&[(at, receiver), (from, sender)], Duration::from_secs(45))
        .expect("lab");
    let (received, sent) = (ok_stdout(&outs[0]), ok_stdout(&outs[1]));
    let received: Vec<&str> = received.split_whitespace().collect();
    let sent: Vec<&str> = sent.split_whitespace().collect();
    assert_eq!(received.len(), 4, "{received:?}");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], size, "{sent:?}");
    assert_eq!(received[0], size, "every byte arrived");
    assert_eq!(received[1], sent[1], "the same bytes arrived (sha256)");
    Received {
        bytes,
        sha256: received[1].to_owned(),
        seconds: received[2].parse().expect("seconds"),
        peer: received[3].parse().expect("the peer's address"),
    }
}

//! Network namespaces for the engine's tests: named, unique per process, always deleted (a
//! Drop guard, so also when a test panics), and nodes that run a `Dataplane` inside them.
//!
//! Tests need root and iproute2 (`ip`); the data-plane test also needs `ping` (iputils-ping).

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use ipnet::{IpNet, Ipv4Net};
use meshd_engine::sys::netns;
use meshd_engine::{DEFAULT_BUSY_POLL, Dataplane, NetworkStatus, WorkerPackets};
use meshd_proto::{Identity, MemberConfig, NetworkConfig, NetworkId, NetworkKey, SignedConfig};
use serde_json::Value;

/// Runs a command and returns its output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {args:?}: {e} (tests need iproute2 and iputils-ping)")
        })
}

/// Runs a command that must succeed; returns its stdout.
pub fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`meshd-eng-<pid>-<n>`), deleted when the last clone drops.
#[derive(Debug, Clone)]
pub struct Netns(Arc<Named>);

#[derive(Debug)]
pub struct Named {
    pub name: String,
}

impl std::ops::Deref for Netns {
    type Target = Named;
    fn deref(&self) -> &Named {
        &self.0
    }
}

impl Netns {
    pub fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "meshd-eng-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        must(&["ip", "netns", "add", &name]);
        let ns = Netns(Arc::new(Named { name }));
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        must(&all)
    }

    /// `ip -j -n <ns> <args>` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["ip", "-j", "-n", &self.name];
        all.extend_from_slice(args);
        let out = must(&all);
        if out.trim().is_empty() {
            return Value::Array(Vec::new());
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j output {out:?}: {e}"))
    }

    /// `ip netns exec <ns> <args>`, whatever its exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    pub fn link_exists(&self, ifname: &str) -> bool {
        run(&["ip", "-n", &self.name, "link", "show", "dev", ifname])
            .status
            .success()
    }

    /// Addresses on `ifname` other than link-local ones, with prefix lengths.
    pub fn addresses(&self, ifname: &str) -> BTreeSet<IpNet> {
        let v = self.ip_json(&["addr", "show", "dev", ifname]);
        let mut out = BTreeSet::new();
        for info in v[0]["addr_info"].as_array().into_iter().flatten() {
            if info["scope"] == "link" {
                continue;
            }
            let text = format!(
                "{}/{}",
                info["local"].as_str().expect("ip -j addr has local"),
                info["prefixlen"]
            );
            out.insert(text.parse().expect("ip prints valid prefixes"));
        }
        out
    }

    /// Destinations of the routes on `ifname` matching `filter` (e.g. `["proto", "109"]`),
    /// both families.
    pub fn routes(&self, ifname: &str, filter: &[&str]) -> BTreeSet<IpNet> {
        let mut out = BTreeSet::new();
        for family in ["-4", "-6"] {
            let mut args = vec![family, "route", "show", "dev", ifname];
            args.extend_from_slice(filter);
            let v = self.ip_json(&args);
            for r in v.as_array().into_iter().flatten() {
                let dst = r["dst"].as_str().expect("ip -j route has dst");
                if dst.starts_with("fe80:") || dst.starts_with("ff00:") || dst == "multicast" {
                    continue;
                }
                let dst = if dst.contains('/') {
                    dst.to_owned()
                } else if family == "-4" {
                    format!("{dst}/32")
                } else {
                    format!("{dst}/128")
                };
                out.insert(dst.parse().expect("ip prints valid prefixes"));
            }
        }
        out
    }

    /// The MTU and flags of `ifname`.
    pub fn link(&self, ifname: &str) -> (u64, Vec<String>) {
        let v = self.ip_json(&["link", "show", "dev", ifname]);
        let mtu = v[0]["mtu"].as_u64().expect("ip -j link has mtu");
        let flags = v[0]["flags"]
            .as_array()
            .expect("ip -j link has flags")
            .iter()
            .map(|f| f.as_str().expect("flags are strings").to_owned())
            .collect();
        (mtu, flags)
    }

    /// Runs `f` on a new thread inside this namespace, on a runtime built there, and returns
    /// its result (re-raising its panic).
    pub fn block_on<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let name = self.name.clone();
        let thread = std::thread::spawn(move || {
            netns::enter(&name).expect("enter the namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Runs a blocking `f` on a new thread inside this namespace.
    pub fn thread<F, T>(&self, f: F) -> std::thread::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = self.name.clone();
        std::thread::spawn(move || {
            netns::enter(&name).expect("enter the namespace");
            f()
        })
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        // Deleting the namespace takes its veth end (and so the pair) with it.
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair between `a` and `b`, `10.99.1.1/24` in `a` and `10.99.1.2/24` in `b`.
pub fn veth(a: &Netns, b: &Netns) -> (Ipv4Addr, Ipv4Addr) {
    a.ip(&[
        "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", &b.name,
    ]);
    a.ip(&["addr", "add", "10.99.1.1/24", "dev", "veth-a"]);
    b.ip(&["addr", "add", "10.99.1.2/24", "dev", "veth-b"]);
    a.ip(&["link", "set", "veth-a", "up"]);
    b.ip(&["link", "set", "veth-b", "up"]);
    (Ipv4Addr::new(10, 99, 1, 1), Ipv4Addr::new(10, 99, 1, 2))
}

/// A member as the tests give them: `10.147.17.(10+i)` in the /24 pool, containers
/// `172.28.i.0/24`.
pub fn member(i: u8, identity: &meshd_proto::PublicIdentity, endpoint: SocketAddr) -> MemberConfig {
    MemberConfig {
        node_id: identity.node_id().expect("a valid identity"),
        identity: *identity,
        name: format!("node-{i}"),
        ipv4: vec![Ipv4Addr::new(10, 147, 17, 10 + i)],
        container_subnet: Some(Ipv4Net::new(Ipv4Addr::new(172, 28, i, 0), 24).expect("valid /24")),
        endpoints: vec![endpoint],
    }
}

/// A config for `members`, signed and verified as a node receives it.
pub fn config(key: &NetworkKey, revision: u64, members: Vec<MemberConfig>) -> NetworkConfig {
    let mut cfg = NetworkConfig::new(key.network_id(), "engine-test");
    cfg.revision = revision;
    cfg.v4_pools = vec!["10.147.17.0/24".parse().expect("valid pool")];
    cfg.container_pool = Some("172.28.0.0/16".parse().expect("valid pool"));
    cfg.members = members;
    cfg.canonicalize();
    SignedConfig::sign(key, &cfg)
        .expect("test configs encode")
        .verify(key.network_id())
        .expect("our own signature verifies")
}

type Reply<T> = mpsc::Sender<T>;

enum Request {
    Join(Box<NetworkConfig>, Reply<Result<(), String>>),
    Update(Box<NetworkConfig>, Reply<Result<(), String>>),
    Leave(NetworkId, Reply<Result<(), String>>),
    Status(NetworkId, Reply<Option<NetworkStatus>>),
    SocketDrops(Reply<Vec<(&'static str, u64)>>),
    Workers(Reply<Vec<WorkerPackets>>),
}

/// Packet workers per test node: more than one, so that the tests cover multiqueue TUNs
/// and sockets sharing a port.
pub const WORKERS: usize = 2;

/// A node: a thread inside a namespace running a multi-thread runtime (built after entering,
/// so its workers are in the namespace too) with one `Dataplane` bound on an ephemeral port.
#[derive(Debug)]
pub struct Node {
    commands: Option<tokio::sync::mpsc::UnboundedSender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub port: u16,
}

impl Node {
    pub fn start(ns: &Netns, identity: Identity) -> Node {
        let (commands, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let (port_tx, port_rx) = mpsc::channel();
        let thread = ns.thread(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let dp = Dataplane::bind(0, WORKERS, DEFAULT_BUSY_POLL)
                    .await
                    .expect("bind the data plane");
                port_tx
                    .send(dp.local_addr().port())
                    .expect("the test waits for the port");
                while let Some(command) = inbox.recv().await {
                    let text =
                        |r: Result<(), meshd_engine::EngineError>| r.map_err(|e| e.to_string());
                    // A test that stopped listening has failed already; ignore send errors.
                    match command {
                        Request::Join(cfg, reply) => {
                            let _ = reply.send(text(dp.join(&identity, &cfg).await));
                        }
                        Request::Update(cfg, reply) => {
                            let _ = reply.send(text(dp.update(&cfg).await));
                        }
                        Request::Leave(id, reply) => {
                            let _ = reply.send(text(dp.leave(id).await));
                        }
                        Request::Status(id, reply) => {
                            let _ = reply.send(dp.status(id));
                        }
                        Request::SocketDrops(reply) => {
                            let _ = reply.send(dp.socket_drops());
                        }
                        Request::Workers(reply) => {
                            let _ = reply.send(dp.workers());
                        }
                    }
                }
            });
        });
        let port = port_rx
            .recv()
            .expect("the node thread started its data plane");
        Node {
            commands: Some(commands),
            thread: Some(thread),
            port,
        }
    }

    fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Request) -> T {
        let (tx, rx) = mpsc::channel();
        self.commands
            .as_ref()
            .expect("commands close only on drop")
            .send(command(tx))
            .expect("the node thread is running");
        rx.recv().expect("the node thread answered")
    }

    pub fn join(&self, cfg: &NetworkConfig) -> Result<(), String> {
        self.call(|r| Request::Join(Box::new(cfg.clone()), r))
    }

    pub fn update(&self, cfg: &NetworkConfig) -> Result<(), String> {
        self.call(|r| Request::Update(Box::new(cfg.clone()), r))
    }

    pub fn leave(&self, id: NetworkId) -> Result<(), String> {
        self.call(|r| Request::Leave(id, r))
    }

    pub fn status(&self, id: NetworkId) -> Option<NetworkStatus> {
        self.call(|r| Request::Status(id, r))
    }

    pub fn socket_drops(&self) -> Vec<(&'static str, u64)> {
        self.call(Request::SocketDrops)
    }

    /// The packets each of the node's [`WORKERS`] packet workers moved.
    pub fn workers(&self) -> Vec<WorkerPackets> {
        self.call(Request::Workers)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.commands = None; // ends the command loop; the Dataplane drops in its runtime
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The engine tests' lab: namespaces from `meshd-lab` ([`Netns`]), a veth between two of
//! them, and nodes that run a `Dataplane` inside them.
//!
//! Tests need root and iproute2 (`ip`); the data-plane test also needs `ping` (iputils-ping).

#![allow(dead_code)] // each test binary uses part of it

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;

use ipnet::Ipv4Net;
use meshd_engine::{DEFAULT_BUSY_POLL, Dataplane, NetworkStatus, WorkerPackets};
pub use meshd_lab::Netns;
use meshd_proto::{Identity, MemberConfig, NetworkConfig, NetworkId, NetworkKey, SignedConfig};

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
        delegated_subnet: None,
        relay: false,
        port_mapped: false,
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

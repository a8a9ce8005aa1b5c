//! The data plane of one node: packet workers (one per core by default, module `worker`),
//! each with its own UDP socket on the node's port and its own queue of every joined
//! network's TUN; per network a [`Tunnel`] the workers share.
//!
//! ```text
//!  per network: a Tunnel,          packet worker k (one thread)               per worker
//!  a TUN of N queues
//!  TUN queue k ──read batch──▶ Sender: seal in place ──────GSO send──────▶ UDP socket k
//!  TUN queue k ◀──GRO write── Receiver: open, source check ◀─ demux ◀─ recvmmsg + GRO ─┘
//!               timers: handle_timeout per tick (a task on the node's runtime) ──▶ socket 0
//! ```
//!
//! Spreading the work: the sockets share the port with SO_REUSEPORT, and the kernel gives all
//! datagrams of one sender (address and port) to one socket; a TUN queue gets whole flows
//! (by their hash), except that the kernel sends a flow to the queue its incoming packets were
//! last written to. So a flow is moved by one worker on each node, in order; flows that only
//! leave spread over the workers, and a conversation with a peer follows the worker that
//! receives from that peer. Several peers use several cores; one busy peer uses one.
//!
//! Call order: [`Dataplane::bind`], then [`Dataplane::join`] each network with its verified
//! config, [`Dataplane::update`] on every new revision, [`Dataplane::leave`] to remove it.
//! Dropping the `Dataplane` stops the workers and every task; the TUN devices close with them
//! and take their addresses and routes along.
//!
//! Batching (see [`Offloads`]): a TUN read returns up to 64 KB of one flow when the device has
//! offloads, and the reader keeps reading what is queued, up to
//! [`READ_SLOTS`](crate::tun::READ_SLOTS) packets; the datagrams of one destination leave in
//! one `sendmsg` (UDP GSO, module `gso`). One receive returns up to 32 reads, each a
//! GRO batch of up to 64 datagrams of one sender, and the opened packets go to the TUN in one
//! batch that coalesces each flow's segments again.
//!
//! Locking: each network's `Tunnel` sits behind a `std::sync::Mutex`, held for the
//! bookkeeping of one batch (routing, counters, replay windows: `prepare_in_place`,
//! `begin_outside`, `finish_data`) or one `handle_timeout`, and never across an `.await` or
//! the cipher: packets are sealed and opened without it, so several workers move one
//! network's packets in parallel. The workers and the timers are its only contenders. The network map is a
//! `RwLock`, read once per receive batch; it finds a datagram's network by the network id
//! of an initiation or by the prefix of any other message's receiver index (module
//! `networks`), from the header alone, so each datagram is parsed once, by its tunnel. Control operations
//! (join, update, leave) are serialized by an async mutex because they await the kernel
//! between reading and storing the plan.

mod busy_poll;
mod gso;
mod networks;
mod outside;
mod pacing;
mod reach;
mod tasks;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use meshd_proto::routes::FailoverRoute;
use meshd_proto::tunnel::{DropReason, PeerStatus, Settings, Tunnel};
use meshd_proto::{Identity, NetworkConfig, NetworkId, NodeId};
use std::os::fd::{AsFd, AsRawFd};
use tokio::task::JoinHandle;
use tun_rs::SyncDevice;

pub use outside::SOCKET_BUFFER;
use outside::{Outside, get};

use crate::plan::{InterfacePlan, plan};
use crate::{EngineError, Kernel, tun};
pub use networks::MAX_NETWORKS;
use networks::NetworkTable;
pub use reach::ReachDatagram;
use reach::ReachInbox;
use worker::Worker;
pub use worker::WorkerPackets;

/// How long a packet worker polls for packets after a batch before it sleeps, unless told
/// otherwise: on the netns benchmark 50 µs saved most of the wake-ups of a ping's round trip
/// and 20 µs almost none (module `busy_poll`); twice the former leaves room for a slower
/// peer or a busier host.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

/// A node's data plane: see the module docs.
pub struct Dataplane {
    /// One socket per packet worker, all on `local_addr`'s port.
    outside: Vec<Arc<Outside>>,
    local_addr: SocketAddr,
    kernel: Kernel,
    networks: Networks,
    /// Serializes join, update and leave.
    control: tokio::sync::Mutex<()>,
    /// Move the packets of every network (see [`worker`]); worker `k` reads socket `k` and
    /// queue `k` of every TUN.
    workers: Vec<Worker>,
    /// The epoll token the next joined network's TUN gets.
    next_token: AtomicU64,
}

type Networks = Arc<RwLock<NetworkTable>>;

/// One joined network.
struct Network {
    id: NetworkId,
    /// The top bits of every receiver index its tunnel issues ([`networks`]).
    index_prefix: u8,
    me: NodeId,
    interface: String,
    /// The TUN's queues, one per packet worker, non-blocking; queue `k` is read and written
    /// by worker `k` and by nothing else.
    queues: Vec<SyncDevice>,
    /// Tells the packet workers' events for this TUN apart.
    token: u64,
    tunnel: Mutex<Tunnel>,
    /// What the kernel was last successfully given.
    plan: Mutex<InterfacePlan>,
    counters: NetworkCounters,
    /// `timers`; aborted on leave and on drop.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the engine itself drops for one network (the tunnel counts the protocol's drops).
#[derive(Debug, Default)]
struct NetworkCounters {
    tun_read_error: AtomicU64,
    /// TUN reads that could not be split into packets.
    tun_malformed: AtomicU64,
    /// Failed TUN write batches (a batch holds up to [`crate::tun::WRITE_BATCH`] packets).
    tun_write_error: AtomicU64,
    /// Datagrams the socket would not send.
    udp_send_error: AtomicU64,
    /// Packets the cipher refused to seal (it takes any packet a TUN can hold: never seen).
    seal_error: AtomicU64,
}

impl NetworkCounters {
    fn list(&self) -> [(&'static str, u64); 5] {
        [
            ("tun_read_error", get(&self.tun_read_error)),
            ("tun_malformed", get(&self.tun_malformed)),
            ("tun_write_error", get(&self.tun_write_error)),
            ("udp_send_error", get(&self.udp_send_error)),
            ("seal_error", get(&self.seal_error)),
        ]
    }
}

/// The offloads a network's packets get; each degrades on its own when the kernel refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// The TUN has virtio-net headers with TCP segmentation offload: a read returns up to
    /// 64 KB of one TCP flow, and writes coalesce TCP segments (GRO).
    pub tun_tcp: bool,
    /// The same for UDP (USO, Linux 6.2 and later).
    pub tun_udp: bool,
    /// Datagrams one `sendmsg` on the UDP socket may carry (UDP GSO); 1 when off.
    pub udp_gso_segments: usize,
    /// Datagrams one read from the UDP socket may return coalesced (UDP GRO); 1 when off.
    pub udp_gro_segments: usize,
    /// Segmented sends the kernel refused, since the socket was bound: each turned GSO off
    /// and was resent one datagram at a time.
    pub udp_gso_refused: u64,
}

/// One packet worker per core the node may run on (at least one).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// What `meshd status` shows about one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub interface: String,
    pub mtu: u16,
    /// Interface addresses with prefix lengths, as applied to the kernel.
    pub addresses: Vec<IpNet>,
    /// Routes into the TUN (besides the addresses' connected routes), as applied.
    pub routes: Vec<IpNet>,
    /// Sorted by node id.
    pub peers: Vec<PeerStatus>,
    /// Every drop counter by stable name: the tunnel's [`DropReason`]s, then the engine's
    /// `tun_read_error`, `tun_malformed` (a TUN read that could not be split into packets),
    /// `tun_write_error` (per failed write batch), `udp_send_error`, `seal_error`. Zeros
    /// included.
    pub drops: Vec<(&'static str, u64)>,
    /// Envelopes this node relayed between two peers (when the config marks it a relay),
    /// and their bytes.
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    /// The managed routes with several gateways, and the one each uses now.
    pub failover: Vec<FailoverRoute>,
    pub offloads: Offloads,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("local_addr", &self.local_addr)
            .field("networks", &self.networks())
            .finish_non_exhaustive()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        for net in read(&self.networks).values() {
            for task in lock(&net.tasks).iter() {
                task.abort();
            }
        }
    }
}

impl Dataplane {
    /// Starts `workers` packet workers (at least one; [`default_workers`] is one per core)
    /// with their UDP sockets on `[::]:port` (dual-stack; `0` picks a port) and connects to
    /// the kernel. Runs inside a tokio runtime, in the network namespace the node lives in:
    /// the sockets, TUN devices, netlink socket and workers all belong to the namespace of
    /// the thread that creates them.
    ///
    /// After each batch a worker keeps polling for packets for `busy_poll` before it sleeps,
    /// within a budget of a tenth of a core ([`DEFAULT_BUSY_POLL`]; zero: it sleeps at once):
    /// it saves the wake-ups that dominate a round trip's latency on a host whose idle CPUs
    /// halt.
    pub async fn bind(
        port: u16,
        workers: usize,
        busy_poll: Duration,
    ) -> Result<Dataplane, EngineError> {
        let reach = Arc::new(ReachInbox::default());
        let outside: Vec<Arc<Outside>> = Outside::bind(port, workers.max(1))
            .map_err(EngineError::Socket)?
            .into_iter()
            .map(|mut o| {
                o.reach = Arc::clone(&reach);
                Arc::new(o)
            })
            .collect();
        let local_addr = outside[0]
            .socket
            .local_addr()
            .map_err(EngineError::Socket)?;
        let kernel = Kernel::connect().await?;
        let networks: Networks = Arc::default();
        let workers = outside
            .iter()
            .enumerate()
            .map(|(queue, socket)| {
                Worker::start(queue, busy_poll, Arc::clone(socket), Arc::clone(&networks))
            })
            .collect::<std::io::Result<Vec<Worker>>>()
            .map_err(EngineError::Socket)?;
        Ok(Dataplane {
            outside,
            local_addr,
            kernel,
            networks,
            control: tokio::sync::Mutex::new(()),
            workers,
            next_token: AtomicU64::new(worker::FIRST_NETWORK_TOKEN),
        })
    }

    /// The packets each worker moved, in worker order (one entry per worker, UDP socket
    /// and TUN queue).
    pub fn workers(&self) -> Vec<WorkerPackets> {
        self.workers.iter().map(Worker::moved).collect()
    }

    /// The bound UDP address (`[::]:port`): peers reach this node on `port`.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Joins a network: creates its TUN [`crate::interface_name`], applies its
    /// [`plan`](crate::plan()), starts its tunnel and tasks. `cfg` must be verified.
    pub async fn join(&self, identity: &Identity, cfg: &NetworkConfig) -> Result<(), EngineError> {
        let _control = self.control.lock().await;
        let id = cfg.network_id;
        let index_prefix = {
            let networks = read(&self.networks);
            if networks.contains(&id) {
                return Err(EngineError::AlreadyJoined(id));
            }
            // Joins are serialized by `control`: the prefix stays free until inserted below.
            networks
                .free_prefix()
                .ok_or(EngineError::TooManyNetworks(MAX_NETWORKS))?
        };
        let me = identity.node_id();
        let wanted = plan(cfg, me);
        let interface = wanted.name.clone();
        let queues = tun::open(&interface, cfg.mtu, self.workers.len())?;
        let unconfigured = InterfacePlan::unconfigured(interface.clone());
        if let Err(e) = self.kernel.apply(&interface, &unconfigured, &wanted).await {
            drop(queues); // closing the last descriptor removes the link
            let _ = self.kernel.remove(&interface).await;
            return Err(e);
        }

        let now = Instant::now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut tunnel = Tunnel::new(identity, id, now, unix_now).with_settings(Settings {
            index_prefix,
            ..Settings::default()
        });
        tunnel.apply_config(cfg);
        // Handshake with every member now: after a restart our peers still hold sessions we
        // lost, and this replaces them at once. The timer task sends what this queues.
        tunnel.connect_all(now);
        let net = Arc::new(Network {
            id,
            index_prefix,
            me,
            interface: interface.clone(),
            queues,
            token: self.next_token.fetch_add(1, Ordering::Relaxed),
            tunnel: Mutex::new(tunnel),
            plan: Mutex::new(wanted),
            counters: NetworkCounters::default(),
            tasks: Mutex::new(Vec::new()),
        });
        // Visible to the receiver before the first handshake leaves, so its answer finds us.
        write(&self.networks).insert(Arc::clone(&net));
        let added = self
            .workers
            .iter()
            .zip(&net.queues)
            .try_for_each(|(worker, queue)| worker.add(queue.as_fd(), net.token));
        if let Err(e) = added {
            self.unregister(&net);
            write(&self.networks).remove(&id);
            drop(net);
            let _ = self.kernel.remove(&interface).await;
            return Err(EngineError::Tun {
                name: interface,
                source: e,
            });
        }
        *lock(&net.tasks) = vec![tokio::spawn(tasks::timers(
            Arc::clone(&net),
            Arc::clone(&self.outside[0]),
        ))];
        tracing::info!(network = %id, interface = %interface, "joined");
        Ok(())
    }

    /// Applies a new revision of a joined network's config: the tunnel first (peers, routes,
    /// source checks), then the kernel diff. If the kernel refuses, the error is returned and
    /// the next update diffs from the last plan that was applied, so it retries.
    pub async fn update(&self, cfg: &NetworkConfig) -> Result<(), EngineError> {
        let _control = self.control.lock().await;
        let net = self
            .network(cfg.network_id)
            .ok_or(EngineError::NotJoined(cfg.network_id))?;
        lock(&net.tunnel).apply_config(cfg);
        let old = lock(&net.plan).clone();
        let new = plan(cfg, net.me);
        self.kernel.apply(&net.interface, &old, &new).await?;
        *lock(&net.plan) = new;
        Ok(())
    }

    /// Leaves a network: stops its tasks and removes its TUN with every address and route.
    pub async fn leave(&self, id: NetworkId) -> Result<(), EngineError> {
        let _control = self.control.lock().await;
        let net = write(&self.networks)
            .remove(&id)
            .ok_or(EngineError::NotJoined(id))?;
        self.unregister(&net);
        let tasks = std::mem::take(&mut *lock(&net.tasks));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await; // cancelled: nothing to report
        }
        let interface = net.interface.clone();
        // A packet worker may hold the network until it handles the wake-up; deleting the
        // link does not wait for the descriptor to close.
        drop(net);
        self.kernel.remove(&interface).await?;
        tracing::info!(network = %id, interface = %interface, "left");
        Ok(())
    }

    /// The state of a joined network.
    pub fn status(&self, id: NetworkId) -> Option<NetworkStatus> {
        let net = self.network(id)?;
        let plan = lock(&net.plan).clone();
        let (peers, mut drops, relayed, failover) = {
            let tunnel = lock(&net.tunnel);
            let peers = tunnel.peer_statuses(Instant::now());
            let stats = tunnel.stats();
            let drops: Vec<(&'static str, u64)> = DropReason::ALL
                .iter()
                .map(|&r| (r.name(), stats.dropped(r)))
                .collect();
            let failover = tunnel.routes().failover_routes().to_vec();
            (
                peers,
                drops,
                (stats.relayed_packets, stats.relayed_bytes),
                failover,
            )
        };
        drops.extend(net.counters.list());
        Some(NetworkStatus {
            interface: plan.name,
            mtu: plan.mtu,
            addresses: plan.addresses.into_iter().collect(),
            routes: plan.routes.into_iter().collect(),
            peers,
            drops,
            relayed_packets: relayed.0,
            relayed_bytes: relayed.1,
            failover,
            offloads: Offloads {
                tun_tcp: net.queues[0].tcp_gso(),
                tun_udp: net.queues[0].udp_gso(),
                udp_gso_segments: self.outside[0].max_gso_segments(),
                udp_gro_segments: self.outside[0].gro_segments(),
                udp_gso_refused: self.outside.iter().map(|o| get(&o.gso_refused)).sum(),
            },
        })
    }

    /// Sends one datagram from the data-plane socket that is not a tunnel's: the node's
    /// reflect requests to controller relays, which must see the port peers use.
    pub fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
        let outside = &self.outside[0];
        outside.socket.send_to(bytes, outside.to_wire(to)).map(drop)
    }

    /// The answers of controller relays the data-plane socket receives, for the node's reach
    /// client: the receiver the first time, `None` after.
    pub fn reach_datagrams(&self) -> Option<tokio::sync::mpsc::Receiver<ReachDatagram>> {
        self.outside[0].reach.take_receiver()
    }

    /// The relays a network's tunnel may send through when a peer has no direct path, best
    /// first (the node's reach client keeps the list to the live ones).
    pub fn set_relays(&self, id: NetworkId, relays: Vec<SocketAddr>) {
        if let Some(net) = self.network(id) {
            lock(&net.tunnel).set_relays(relays);
        }
    }

    /// The joined networks, sorted.
    pub fn networks(&self) -> Vec<NetworkId> {
        let mut ids: Vec<NetworkId> = read(&self.networks).ids().collect();
        ids.sort();
        ids
    }

    /// Datagrams the socket received that reached no network, by stable name:
    /// `udp_recv_error`, `malformed` (no readable header), `unknown_network` (an initiation
    /// for a network not joined), `unknown_index` (a receiver index under a prefix no joined
    /// network has; one under a joined network's prefix that its tunnel did not issue is
    /// that tunnel's own `unknown_index`, and a bad message with a readable header is that
    /// tunnel's `malformed`), `reach_dropped` (answers of controller relays nobody took).
    pub fn socket_drops(&self) -> Vec<(&'static str, u64)> {
        let mut total = self.outside[0].counters.list();
        for other in &self.outside[1..] {
            for ((_, sum), (_, n)) in total.iter_mut().zip(other.counters.list()) {
                *sum += n;
            }
        }
        total.push(("reach_dropped", get(&self.outside[0].reach.dropped)));
        total
    }

    /// Takes a network's TUN queues off the workers' lists.
    fn unregister(&self, net: &Network) {
        for (worker, queue) in self.workers.iter().zip(&net.queues) {
            worker.remove(queue.as_raw_fd());
        }
    }

    fn network(&self, id: NetworkId) -> Option<Arc<Network>> {
        read(&self.networks).get(&id).cloned()
    }
}

// A panic while a lock is held (a bug) must not take every other task down with it: the
// tunnel's state is updated call by call, so the data behind a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

//! The node daemon's control side (`meshd daemon`): identity and state directory, the
//! links to controller replicas, the local API, and the data plane it drives.
//!
//! ```text
//!   controllers ──QUIC── controller_link (one task per controller set)
//!                              │ verified, strictly newer configs
//!                              ▼
//!   meshd CLI ──Unix socket── api ──▶ Daemon ──▶ Dataplane (join / update / leave)
//!                                        │
//!                                        ▼
//!                  state dir (identity, networks/<nwid>.{json,config}, controllers.json)
//! ```
//!
//! Layout:
//! - [`state`]: the state directory (identity, joined networks, cached configs).
//! - [`controller_link`]: connections to controller replicas, with reconnection.
//! - [`dataplane`]: the [`Dataplane`] trait, with the engine's status and error types.
//! - [`engine`]: the trait implemented by `meshd-engine` (TUN, kernel routes, UDP).
//! - [`no_dataplane`]: [`NoDataplane`], which records calls and touches nothing, for tests.
//! - [`api`]: the local HTTP+JSON API on `DIR/meshd.sock` and its JSON shapes.
//! - [`client`]: the CLI's client of that API.
//! - [`bench`]: the bench server on TCP/UDP port 9992 of the mesh addresses (`meshd bench`).
//! - [`forwarding`]: the kernel forwarding and firewall checks (`--configure-forwarding`,
//!   `"forwarding"` in `meshd status`).
//!
//! Locking: `inner` (a std mutex, never held across an await) guards the bookkeeping;
//! `changes` (an async mutex) serializes everything that changes which config a network
//! runs on (a config from a controller, a join, a leave), so the data plane sees one call
//! at a time per network and a leave cannot race a config being applied.

pub mod api;
pub mod bench;
pub mod client;
pub mod controller_link;
pub mod dataplane;
pub mod delegated;
pub mod engine;
pub mod forwarding;
pub mod metrics;
pub mod no_dataplane;
pub mod pins;
mod port_map;
mod reach;
mod report;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use meshd_channel::JoinStatus;
use meshd_proto::{NetworkConfig, NetworkId, SignedConfig};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::api::NetworkStatus;
use self::controller_link::{
    AddrState, ConfigRefused, ControllerAddr, LinkAddr, LinkKey, accept_config, learned_for,
    merge_addresses, parse_replicas,
};
use self::state::{NetworkRecord, StateDir};

pub use self::dataplane::Dataplane;
pub use self::no_dataplane::NoDataplane;
pub use self::report::system_hostname;

/// How long the daemon waits for its tasks at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What `meshd daemon` was started with.
#[derive(Debug)]
pub struct DaemonOptions {
    /// The opened (and locked) state directory, with the node's identity.
    pub state: StateDir,
    /// The data plane's UDP port, reported to controllers with the host's addresses as
    /// local endpoints; 0 when not known (then none are reported).
    pub port: u16,
    /// Controller replicas for networks joined without `--controller`, in order. Empty:
    /// the controllers that earlier joins saved in the state directory.
    pub controllers: Vec<ControllerAddr>,
    /// `--configure-forwarding`: turn on IPv4/IPv6 forwarding at start, before any network
    /// comes up ([`forwarding::configure_at_start`]).
    pub configure_forwarding: bool,
    /// `--relay`: offer to relay for the other members of every network (the controller
    /// marks the member a relay in the config).
    pub relay: bool,
    /// The name the node reports to controllers: the member's name until an admin renames it.
    pub hostname: String,
    /// `--metrics-listen`: where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--ipv6-prefix` or `--ipv6-prefix-file`: the global prefix delegated to this host.
    pub ipv6_prefix: Option<delegated::PrefixSource>,
}

/// Runs the daemon until `shutdown` resolves: serves the local API on `DIR/meshd.sock`,
/// brings every cached network up on `dataplane`, and keeps the controllers' links.
pub async fn run(
    opts: DaemonOptions,
    dataplane: impl Dataplane,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let socket = opts.state.socket_path();
    let configure_forwarding = opts.configure_forwarding;
    let metrics_listen = opts.metrics_listen;
    let (stop_tx, stop) = watch::channel(false);
    // The state first: a damaged file stops the daemon before it touches the host.
    let mut daemon = Daemon::new(opts, Box::new(dataplane), stop)?;
    let listener = api::bind(&socket)?;
    let configured = if configure_forwarding {
        forwarding::configure_at_start(std::path::Path::new(forwarding::PROC_SYS))
    } else {
        Vec::new()
    };
    daemon.forwarding = forwarding::Checker::new(forwarding::PROC_SYS, configured);
    let daemon = Arc::new(daemon);
    info!(
        node = %daemon.node_id(),
        state = %daemon.state.path().display(),
        socket = %socket.display(),
        networks = daemon.lock().networks.len(),
        "meshd daemon running"
    );
    let server = tokio::spawn(api::serve(listener, Arc::clone(&daemon)));
    if let Some(listen) = metrics_listen {
        let listener = metrics::bind(listen).await?;
        let serving = metrics::serve(listener, Arc::clone(&daemon));
        daemon.lock().tasks.spawn(serving);
    }
    bench::start(&daemon);
    daemon.lock().tasks.spawn(reach::run(Arc::clone(&daemon)));
    if daemon.delegated.view().is_some_and(|v| v.file.is_some()) {
        let watcher = delegated::watch(Arc::clone(&daemon));
        daemon.lock().tasks.spawn(watcher);
    }
    if daemon.dataplane.attached() {
        let mapper = port_map::run(Arc::clone(&daemon));
        daemon.lock().tasks.spawn(mapper);
    }
    daemon.restore().await;
    daemon.update_links();

    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let mut tasks = std::mem::take(&mut daemon.lock().tasks);
    let drain = async {
        let _ = server.await;
        while tasks.join_next().await.is_some() {}
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("some tasks did not stop in time");
    }
    // The masquerades go with the daemon: nothing it installed outlives it.
    let egress = Arc::clone(&daemon.egress);
    let _ = tokio::task::spawn_blocking(move || egress.remove_all()).await;
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(socket = %socket.display(), error = %e, "cannot remove the socket"),
    }
    Ok(())
}

/// What the API and the links share.
pub(crate) struct Daemon {
    state: Arc<StateDir>,
    port: u16,
    /// `--relay`: the node offers to relay for other members.
    relay: bool,
    hostname: String,
    defaults: Vec<ControllerAddr>,
    dataplane: Box<dyn Dataplane>,
    /// The forwarding part of `meshd status`.
    forwarding: forwarding::Checker,
    /// The global IPv6 prefix delegated to this host, reported with every network.
    delegated: Arc<delegated::DelegatedPrefix>,
    /// The IPv6 egress masquerades installed for networks with `ipv6_egress: nat66`.
    egress: Arc<forwarding::Egress>,
    /// Turns true once, at shutdown.
    stop: watch::Receiver<bool>,
    next_link_id: AtomicU64,
    changes: tokio::sync::Mutex<()>,
    /// Serializes writes of `controllers.json`, so the last one written is the newest.
    learned_file: Mutex<()>,
    inner: Mutex<Inner>,
}

struct Inner {
    networks: BTreeMap<NetworkId, Network>,
    links: BTreeMap<Vec<ControllerAddr>, Link>,
    /// For each user-given controller address, the replicas its controller reported (as
    /// `controllers.json` has them).
    learned: BTreeMap<ControllerAddr, Vec<ControllerAddr>>,
    /// When the last controller session ended (or the daemon started): how long the node has
    /// been without a controller, while no link is connected.
    offline_since: Instant,
    /// The router's mapping of the data-plane port, when it granted one.
    port_mapping: Option<port_map::Mapped>,
    /// The replicas' keys, pinned at first contact.
    pins: pins::ReplicaPins,
    tasks: JoinSet<()>,
}

/// A joined network.
struct Network {
    record: NetworkRecord,
    /// The verified config the node runs on.
    config: Option<Arc<NetworkConfig>>,
    /// The controller's last word on the join, if any since the daemon started.
    remote: Option<JoinStatus>,
    /// Whether the data plane has the network up (its `join` succeeded).
    up: bool,
    /// The last problem, for `meshd status`: a refused join, a bad config, a data-plane
    /// failure. Cleared by the next success.
    error: Option<String>,
    /// How many times `meshd join` asked for it since the daemon started: each time the
    /// link sends a new `Join`, even to a controller that said NOT_FOUND moments ago.
    requests: u64,
}

/// A network as a link should have it joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wanted {
    pub network: NetworkId,
    /// The revision held, 0 for none.
    pub revision: u64,
    pub requests: u64,
}

impl Network {
    fn status(&self) -> NetworkStatus {
        match (self.remote, &self.config) {
            (Some(JoinStatus::AccessDenied), _) => NetworkStatus::AccessDenied,
            (Some(JoinStatus::NotFound), _) => NetworkStatus::NotFound,
            (_, Some(_)) => NetworkStatus::Ok,
            (_, None) => NetworkStatus::RequestingConfiguration,
        }
    }
}

struct Link {
    id: u64,
    wake: Arc<Notify>,
    /// The set's addresses in order, then the learned ones ([`merge_addresses`]).
    addrs: Vec<LinkAddr>,
    /// The controller's relays as this node sees them.
    reach: reach::LinkReach,
}

/// Why a join or leave request failed; the API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error(
        "no controller is known for network {0}: pass --controller HOST:PORT to `meshd join` \
         (or to `meshd daemon`)"
    )]
    NoController(NetworkId),
    #[error(
        "this node has not joined network {0}; `meshd status` lists the networks it has joined"
    )]
    NotJoined(NetworkId),
    #[error("cannot save the state of network {network}: {error}")]
    Storage { network: NetworkId, error: String },
}

impl Daemon {
    fn new(
        opts: DaemonOptions,
        dataplane: Box<dyn Dataplane>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let mut inner = Inner {
            networks: BTreeMap::new(),
            links: BTreeMap::new(),
            learned: opts.state.load_learned_controllers().learned,
            offline_since: Instant::now(),
            port_mapping: None,
            pins: opts.state.load_pins()?,
            tasks: JoinSet::new(),
        };
        for saved in opts.state.load_networks()? {
            let revision = saved.config.as_ref().map(|c| c.revision);
            info!(network = %saved.id, ?revision, "rejoining a network from the state directory");
            inner.networks.insert(
                saved.id,
                Network {
                    record: saved.record,
                    config: saved.config.map(Arc::new),
                    remote: None,
                    up: false,
                    error: None,
                    requests: 0,
                },
            );
        }
        // Without --controller, the controllers earlier joins saved serve new joins too.
        let mut defaults = opts.controllers;
        if defaults.is_empty() {
            for n in inner.networks.values() {
                for c in &n.record.controllers {
                    if !defaults.contains(c) {
                        defaults.push(c.clone());
                    }
                }
            }
        }
        Ok(Self {
            state: Arc::new(opts.state),
            port: opts.port,
            relay: opts.relay,
            hostname: opts.hostname,
            defaults,
            dataplane,
            forwarding: forwarding::Checker::new(forwarding::PROC_SYS, Vec::new()),
            egress: Arc::default(),
            delegated: Arc::new(delegated::DelegatedPrefix::new(opts.ipv6_prefix.as_ref())),
            stop,
            next_link_id: AtomicU64::new(1),
            changes: tokio::sync::Mutex::new(()),
            learned_file: Mutex::new(()),
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent, so a panic elsewhere does not
        // poison it in a way that matters.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node_id(&self) -> meshd_proto::NodeId {
        self.state.identity().node_id()
    }

    /// The controllers a network asks: its own, or the daemon's.
    fn controllers_for(&self, record: &NetworkRecord) -> Vec<ControllerAddr> {
        if record.controllers.is_empty() {
            self.defaults.clone()
        } else {
            record.controllers.clone()
        }
    }

    /// Brings every network with a cached config up on the data plane, before any
    /// controller is asked: the node works with no controller reachable.
    async fn restore(&self) {
        let _changes = self.changes.lock().await;
        let cached: Vec<(NetworkId, Arc<NetworkConfig>)> = self
            .lock()
            .networks
            .iter()
            .filter_map(|(id, n)| n.config.clone().map(|c| (*id, c)))
            .collect();
        for (id, cfg) in cached {
            let result = self.dataplane.join(&cfg).await;
            if let Err(e) = &result {
                warn!(network = %id, revision = cfg.revision, error = %e, "data plane refused the cached config");
            }
            self.apply_egress(id, result.is_ok().then_some(&*cfg)).await;
            if let Some(n) = self.lock().networks.get_mut(&id) {
                n.up = result.is_ok();
                n.error = result.err().map(|e| format!("data plane: {e}"));
            }
        }
    }

    /// Starts a link for every controller set in use (and the daemon's own), stops the
    /// links no longer needed, and wakes the others to join and leave what changed.
    fn update_links(self: &Arc<Self>) {
        let mut inner = self.lock();
        let mut wanted: BTreeSet<Vec<ControllerAddr>> = inner
            .networks
            .values()
            .map(|n| self.controllers_for(&n.record))
            .filter(|c| !c.is_empty())
            .collect();
        if !self.defaults.is_empty() {
            wanted.insert(self.defaults.clone());
        }
        inner.links.retain(|controllers, link| {
            let keep = wanted.contains(controllers);
            if !keep {
                // It finds itself gone from the map and stops.
                link.wake.notify_one();
            }
            keep
        });
        for controllers in wanted {
            if let Some(link) = inner.links.get(&controllers) {
                link.wake.notify_one();
                continue;
            }
            let key = LinkKey {
                controllers: controllers.clone(),
                id: self.next_link_id.fetch_add(1, Ordering::Relaxed),
            };
            let wake = Arc::new(Notify::new());
            let learned = learned_for(&inner.learned, &controllers);
            inner.links.insert(
                controllers.clone(),
                Link {
                    id: key.id,
                    wake: Arc::clone(&wake),
                    addrs: merge_addresses(&controllers, &learned, &[]),
                    reach: reach::LinkReach::new(),
                },
            );
            inner
                .tasks
                .spawn(controller_link::run(Arc::clone(self), key, wake));
        }
    }

    /// The networks link `key` serves; `None` when the link is no longer wanted.
    fn link_networks(&self, key: &LinkKey) -> Option<Vec<Wanted>> {
        let inner = self.lock();
        if inner.links.get(&key.controllers).map(|l| l.id) != Some(key.id) {
            return None;
        }
        Some(
            self.served_by(&inner.networks, &key.controllers)
                .map(|(id, n)| Wanted {
                    network: *id,
                    revision: n.config.as_ref().map_or(0, |c| c.revision),
                    requests: n.requests,
                })
                .collect(),
        )
    }

    /// The networks of `networks` that the link to `controllers` serves.
    fn served_by<'a>(
        &'a self,
        networks: &'a BTreeMap<NetworkId, Network>,
        controllers: &'a [ControllerAddr],
    ) -> impl Iterator<Item = (&'a NetworkId, &'a Network)> {
        networks
            .iter()
            .filter(move |(_, n)| self.controllers_for(&n.record) == controllers)
    }

    /// The addresses link `key` tries, user-given then learned; `None` when the link is no
    /// longer wanted.
    fn link_addresses(&self, key: &LinkKey) -> Option<Vec<ControllerAddr>> {
        let inner = self.lock();
        let link = inner
            .links
            .get(&key.controllers)
            .filter(|l| l.id == key.id)?;
        Some(link.addrs.iter().map(|a| a.addr.clone()).collect())
    }

    fn set_controller_state(
        &self,
        key: &LinkKey,
        addr: &ControllerAddr,
        f: impl FnOnce(&AddrState) -> AddrState,
    ) {
        let mut inner = self.lock();
        if let Some(link) = inner.links.get_mut(&key.controllers)
            && link.id == key.id
            && let Some(a) = link.addrs.iter_mut().find(|a| a.addr == *addr)
        {
            a.state = f(&a.state);
        }
    }

    /// A controller session ended (the link marks the address's new state itself).
    fn session_ended(&self) {
        self.lock().offline_since = Instant::now();
    }

    /// The replicas a controller reported to link `key`: remembered for each of the link's
    /// user-given addresses, merged into the link's addresses, and saved when they changed.
    async fn on_replicas(self: &Arc<Self>, key: &LinkKey, addresses: &[String]) {
        // Once a verified config of this link's networks names the replicas, an unsigned
        // list may only repeat them.
        let named: BTreeSet<String> = {
            let inner = self.lock();
            inner
                .networks
                .values()
                .filter(|n| self.controllers_for(&n.record) == key.controllers)
                .filter_map(|n| n.config.as_ref())
                .flat_map(|c| c.replicas.iter().map(|r| r.address.clone()))
                .collect()
        };
        let addresses: Vec<String> = if named.is_empty() {
            addresses.to_vec()
        } else {
            addresses
                .iter()
                .filter(|a| named.contains(*a))
                .cloned()
                .collect()
        };
        let replicas = parse_replicas(&addresses);
        if replicas.is_empty() {
            return;
        }
        let changed = {
            let mut inner = self.lock();
            let mut changed = false;
            for user in &key.controllers {
                if inner.learned.get(user) != Some(&replicas) {
                    inner.learned.insert(user.clone(), replicas.clone());
                    changed = true;
                }
            }
            let learned = learned_for(&inner.learned, &key.controllers);
            if let Some(link) = inner.links.get_mut(&key.controllers)
                && link.id == key.id
            {
                link.addrs = merge_addresses(&key.controllers, &learned, &link.addrs);
            }
            changed
        };
        if !changed {
            return;
        }
        let shown: Vec<String> = replicas.iter().map(ToString::to_string).collect();
        info!(replicas = %shown.join(", "), "learned the controller's replicas");
        let daemon = Arc::clone(self);
        let saved = tokio::task::spawn_blocking(move || {
            // The snapshot is taken under the file lock: the last write has the newest.
            let _file = daemon
                .learned_file
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let learned = daemon.lock().learned.clone();
            daemon
                .state
                .save_learned_controllers(&state::LearnedControllers { learned })
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot save the learned controller addresses"),
            Err(e) => warn!(error = %e, "cannot save the learned controller addresses"),
        }
    }

    fn on_status(&self, network: NetworkId, status: JoinStatus) {
        let mut inner = self.lock();
        let Some(n) = inner.networks.get_mut(&network) else {
            return;
        };
        if n.remote != Some(status) {
            info!(%network, ?status, "controller status");
        }
        n.remote = Some(status);
        if status == JoinStatus::Ok {
            n.error = None;
        }
    }

    /// A controller that served `network` says it no longer exists (it was deleted): its
    /// interface goes down and its cached config is forgotten, so that a restart does not
    /// bring it back. The record stays (the node keeps asking, and `meshd leave` forgets it).
    async fn on_network_gone(self: &Arc<Self>, network: NetworkId) {
        let _changes = self.changes.lock().await;
        let up = {
            let mut inner = self.lock();
            let Some(n) = inner.networks.get_mut(&network) else {
                return;
            };
            if n.config.is_none() {
                // Never had a config: a network not created yet, or a replica behind.
                return;
            }
            n.config = None;
            n.error = Some(format!(
                "the controller says network {network} does not exist (deleted): its interface \
                 is down; `meshd leave {network}` forgets it"
            ));
            std::mem::replace(&mut n.up, false)
        };
        warn!(%network, "the network is gone from the controller; taking it down");
        let state = Arc::clone(&self.state);
        match tokio::task::spawn_blocking(move || state.remove_config(network)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%network, error = %e, "cannot remove the cached config"),
            Err(e) => warn!(%network, error = %e, "cannot remove the cached config"),
        }
        if up && let Err(e) = self.dataplane.leave(network).await {
            warn!(%network, error = %e, "data plane failed to take the network down");
        }
        self.apply_egress(network, None).await;
    }

    /// Installs, replaces or removes `network`'s IPv6 egress masquerade for `cfg` (`None`:
    /// the network is down).
    async fn apply_egress(&self, network: NetworkId, cfg: Option<&NetworkConfig>) {
        let rule = cfg.and_then(|c| forwarding::EgressRule::for_config(c, self.node_id()));
        let egress = Arc::clone(&self.egress);
        let applied = tokio::task::spawn_blocking(move || egress.apply(network, rule.as_ref()));
        if let Err(e) = applied.await {
            warn!(%network, error = %e, "the IPv6 egress update did not finish");
        }
    }

    /// Checks the key of the replica at `server` against the pins (pinning it at first
    /// contact, and saving the pins then). `Err`: why the replica is refused.
    async fn check_pin(
        self: &Arc<Self>,
        server: std::net::SocketAddr,
        key: &[u8; 32],
    ) -> Result<(), String> {
        let verdict = self.lock().pins.check(server, key);
        match verdict {
            pins::PinVerdict::Known => Ok(()),
            pins::PinVerdict::Pinned => {
                info!(%server, key = %pins::hex(key), "replica key pinned at first contact");
                self.save_pins().await;
                Ok(())
            }
            pins::PinVerdict::Mismatch { pinned } => Err(format!(
                "the replica at {server} presented key {} but this node pinned {pinned} there at \
                 first contact; refusing it (someone may be standing in for it). If it was \
                 re-initialized on purpose, remove its line from {}",
                pins::hex(key),
                self.state.path().join(state::PINS_FILE).display()
            )),
        }
    }

    /// Pins the replica keys the verified config of `network` names ([`pins::ReplicaPins::vouch`]).
    /// Runs outside the `changes` lock: names may take a DNS lookup.
    pub(super) async fn pin_named_replicas(
        self: &Arc<Self>,
        network: NetworkId,
        replicas: &[meshd_proto::config::ReplicaEntry],
    ) {
        let mut named = Vec::new();
        for replica in replicas {
            match replica.address.parse::<std::net::SocketAddr>() {
                Ok(addr) => named.push((addr, replica.key)),
                Err(_) => match tokio::net::lookup_host(replica.address.as_str()).await {
                    Ok(addrs) => named.extend(addrs.map(|a| (a, replica.key))),
                    Err(e) => {
                        debug!(address = %replica.address, error = %e, "cannot resolve a replica the config names")
                    }
                },
            }
        }
        let mut changed = false;
        for (addr, key) in &named {
            let vouched = self.lock().pins.vouch(network, *addr, key);
            match vouched {
                pins::Vouched::Pinned => changed = true,
                pins::Vouched::Known => {}
                pins::Vouched::Conflict { pinned } => warn!(
                    %network, server = %addr, named = %pins::hex(key), %pinned,
                    "the network config names another key for this replica than the one pinned \
                     (at first contact or by another network); keeping the pinned key"
                ),
            }
        }
        if !changed {
            return;
        }
        info!(%network, replicas = named.len(), "pinned the replica keys the network config names");
        self.save_pins().await;
    }

    /// Writes the pins as they are now; a failure is logged (they are pinned in memory).
    async fn save_pins(self: &Arc<Self>) {
        let daemon = Arc::clone(self);
        let saved = tokio::task::spawn_blocking(move || {
            let pins = daemon.lock().pins.clone();
            daemon.state.save_pins(&pins)
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            warn!("cannot save the pinned replica keys");
        }
    }

    fn on_join_error(&self, network: NetworkId, message: String) {
        if let Some(n) = self.lock().networks.get_mut(&network) {
            n.error = Some(message);
        }
    }

    /// A config from a controller: verified, refused unless newer than the one held,
    /// cached, then applied to the data plane. Returns the replicas it names (their keys to
    /// pin, their addresses what the link's list becomes), if it was accepted and names any.
    async fn on_config(
        self: &Arc<Self>,
        network: NetworkId,
        revision: u64,
        signed: SignedConfig,
    ) -> Option<Vec<meshd_proto::config::ReplicaEntry>> {
        let _changes = self.changes.lock().await;
        let held = match self.lock().networks.get(&network) {
            // Left meanwhile.
            None => return None,
            Some(n) => n.config.as_ref().map(|c| c.revision),
        };
        let cfg = match accept_config(network, held, &signed) {
            Ok(cfg) => cfg,
            Err(e @ ConfigRefused::NotNewer { .. }) => {
                debug!(%network, error = %e, "config ignored");
                return None;
            }
            Err(e @ ConfigRefused::Invalid(_)) => {
                warn!(%network, claimed_revision = revision, error = %e, "config refused");
                if let Some(n) = self.lock().networks.get_mut(&network) {
                    n.error = Some(format!("a controller sent a config that was refused: {e}"));
                }
                return None;
            }
        };
        let named = cfg.replicas.clone();
        let state = Arc::clone(&self.state);
        let saved = tokio::task::spawn_blocking(move || state.save_config(network, &signed)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(%network, error = %e, "cannot cache the config; running on it anyway")
            }
            Err(e) => warn!(%network, error = %e, "cannot cache the config; running on it anyway"),
        }
        let up = self.lock().networks.get(&network).is_some_and(|n| n.up);
        let result = if up {
            self.dataplane.update(&cfg).await
        } else {
            self.dataplane.join(&cfg).await
        };
        self.apply_egress(network, result.is_ok().then_some(&cfg))
            .await;
        match &result {
            Ok(()) => info!(%network, revision = cfg.revision, "config applied"),
            Err(e) => {
                warn!(%network, revision = cfg.revision, error = %e, "data plane refused the config")
            }
        }
        if let Some(n) = self.lock().networks.get_mut(&network) {
            n.config = Some(Arc::new(cfg));
            n.remote = Some(JoinStatus::Ok);
            n.up |= result.is_ok();
            n.error = result.err().map(|e| format!("data plane: {e}"));
        }
        (!named.is_empty()).then_some(named)
    }

    /// Joins `network` (again): records the controllers to ask and wakes the link. Returns
    /// whether the network is new.
    pub(crate) async fn join(
        self: &Arc<Self>,
        network: NetworkId,
        controller: Option<ControllerAddr>,
    ) -> Result<bool, RequestError> {
        let _changes = self.changes.lock().await;
        let existing = self.lock().networks.get(&network).map(|n| n.record.clone());
        let controllers = match (controller, &existing) {
            (Some(c), _) => vec![c],
            (None, Some(record)) => self.controllers_for(record),
            (None, None) => self.defaults.clone(),
        };
        if controllers.is_empty() {
            return Err(RequestError::NoController(network));
        }
        let record = NetworkRecord {
            controllers,
            joined_at: existing
                .as_ref()
                .map_or_else(meshd_io::clock::now_secs, |r| r.joined_at),
        };
        if existing.as_ref() != Some(&record) {
            let state = Arc::clone(&self.state);
            let to_save = record.clone();
            tokio::task::spawn_blocking(move || state.save_record(network, &to_save))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|error| RequestError::Storage { network, error })?;
        }
        let new = existing.is_none();
        {
            let mut inner = self.lock();
            let n = inner.networks.entry(network).or_insert_with(|| Network {
                record: record.clone(),
                config: None,
                remote: None,
                up: false,
                error: None,
                requests: 0,
            });
            n.record = record;
            n.requests += 1;
        }
        info!(%network, new, "joined");
        self.update_links();
        Ok(new)
    }

    /// Leaves `network`: stops asking for it, forgets its cached config, and takes it off
    /// the data plane.
    pub(crate) async fn leave(self: &Arc<Self>, network: NetworkId) -> Result<(), RequestError> {
        let _changes = self.changes.lock().await;
        let removed = self
            .lock()
            .networks
            .remove(&network)
            .ok_or(RequestError::NotJoined(network))?;
        self.update_links();
        let state = Arc::clone(&self.state);
        match tokio::task::spawn_blocking(move || state.remove_network(network)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%network, error = %e, "cannot remove the network's files"),
            Err(e) => warn!(%network, error = %e, "cannot remove the network's files"),
        }
        if removed.up
            && let Err(e) = self.dataplane.leave(network).await
        {
            warn!(%network, error = %e, "data plane failed to take the network down");
        }
        self.apply_egress(network, None).await;
        info!(%network, "left");
        Ok(())
    }
}

/// Resolves once the daemon stops (`stop` turns true, or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
pub(crate) mod test_support {
    use meshd_proto::{NetworkConfig, NetworkKey, SignedConfig};

    /// A config of the network whose key has seed `[seed; 32]`, at `revision`, signed.
    pub(crate) fn signed_config(
        seed: u8,
        revision: u64,
    ) -> (NetworkKey, NetworkConfig, SignedConfig) {
        let key = NetworkKey::from_seed(&[seed; 32]).expect("any seed makes a key");
        let mut cfg = NetworkConfig::new(key.network_id(), "test");
        cfg.revision = revision;
        cfg.v4_pools = vec!["10.147.17.0/24".parse().expect("a CIDR")];
        let signed = SignedConfig::sign(&key, &cfg).expect("a canonical config signs");
        (key, cfg, signed)
    }
}

#[cfg(test)]
mod tests;

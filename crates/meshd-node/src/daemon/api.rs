//! The daemon's local API: HTTP+JSON on the Unix socket `DIR/meshd.sock` (mode 0600, in
//! the 0700 state directory), so the CLI and `curl --unix-socket` both use it.
//!
//! ```text
//! GET    /v1/status            StatusView: node, controllers, networks, peers, forwarding
//! GET    /v1/peers             [PeerView]
//! GET    /v1/cpu               {"cpu_ms": N}: the daemon's CPU time (`meshd bench`)
//! POST   /v1/networks/{nwid}   {"controller": "HOST:PORT"}? -> 201 (new) or 200: JoinView
//! DELETE /v1/networks/{nwid}   -> 200 {"left": nwid}
//! ```
//!
//! Errors are `{"error": "..."}` (one line, meant for the user) with 400 (bad input), 404
//! (unknown path, or a network not joined), 405, or 500. Answers are pretty-printed JSON:
//! `meshd status --json` prints them as they come.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ipnet::{IpNet, Ipv4Net};
use meshd_io::http::ErrorBody;
use meshd_proto::tunnel::{PeerStatus, Via};
use meshd_proto::{NetworkConfig, NetworkId, NodeId, addr};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tracing::warn;

use super::controller_link::{AddrState, ControllerAddr, LinkAddr};
use super::dataplane::WorkerPackets;
use super::forwarding::{self, ForwardingReport, Needs};
use super::{Daemon, RequestError, stopped};

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub node_id: NodeId,
    /// Both of the node's keys, hashed short: compare with `member list` before authorizing.
    #[serde(default)]
    pub key_fingerprint: String,
    /// The name the node reports to its controllers (`--hostname`, else the host's).
    #[serde(default)]
    pub hostname: String,
    pub version: String,
    /// Connected to at least one controller.
    pub online: bool,
    /// The controller replica the node is connected to (`HOST:PORT`); null when none.
    #[serde(default)]
    pub controller: Option<String>,
    /// Seconds since the node last had a controller session (or since the daemon started,
    /// if it has had none); null while connected, and when no controller is known.
    #[serde(default)]
    pub controllers_unreachable_for_s: Option<u64>,
    /// Whether the data plane moves packets; false while it is not attached (then
    /// interfaces and routes are what it would set up).
    pub dataplane_attached: bool,
    pub controllers: Vec<ControllerView>,
    pub networks: Vec<NetworkView>,
    pub peers: Vec<PeerView>,
    /// Kernel forwarding and the firewall's FORWARD state; problems only when a network
    /// gives this host a container subnet. Default (older daemons): all false, empty.
    #[serde(default)]
    pub forwarding: ForwardingReport,
    /// The global IPv6 prefix delegated to this host (`--ipv6-prefix[-file]`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_prefix: Option<super::delegated::PrefixView>,
    /// The data plane's packet workers (one per core unless `meshd daemon --workers` says
    /// otherwise), in order; empty when the data plane is not attached (and from older
    /// daemons).
    #[serde(default)]
    pub packet_workers: Vec<WorkerPackets>,
    /// Where the controllers' relays see this node's data-plane socket (its address and
    /// port on the internet); null until a relay answered.
    #[serde(default)]
    pub public_endpoint: Option<SocketAddr>,
    /// The NAT in front of the node, from what the relays saw: `none`,
    /// `endpoint-independent` (a cone NAT: direct paths can be punched),
    /// `endpoint-dependent` (a symmetric NAT: peers behind NATs are reached through a
    /// relay) or `unknown`; null while no controller relays.
    #[serde(default)]
    pub nat: Option<String>,
    /// The controllers' relays this node registers with.
    #[serde(default)]
    pub relays: Vec<RelayStatusView>,
    /// The router's mapping of the data-plane port (PCP or NAT-PMP), when it granted one:
    /// then it is the public endpoint peers get.
    #[serde(default)]
    pub port_mapping: Option<PortMappingView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMappingView {
    pub external: SocketAddr,
    /// `pcp` or `nat-pmp`.
    pub protocol: String,
}

/// One relay as the node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayStatusView {
    pub address: SocketAddr,
    /// It answered within the last few seconds: traffic may go through it.
    pub alive: bool,
    pub rtt_ms: Option<f64>,
    /// This node's address and port as the relay saw them.
    pub observed: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerView {
    /// As given, or as a controller reported it: `HOST:PORT`.
    pub address: String,
    pub reachable: bool,
    /// The node is connected to this replica right now.
    #[serde(default)]
    pub connected: bool,
    /// A replica the controller reported, not one given with `--controller`.
    #[serde(default)]
    pub learned: bool,
    /// Seconds since the connection was made, while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since_s: Option<u64>,
    /// Seconds since the first failure after the last success, while unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_for_s: Option<u64>,
    /// Why it is unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a join stands, with ZeroTier's names for the same states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NetworkStatus {
    /// No config yet: waiting for a controller.
    RequestingConfiguration,
    /// The member is not authorized (yet, or any more).
    AccessDenied,
    /// Running on a verified config.
    Ok,
    /// The controller does not know the network.
    NotFound,
}

impl NetworkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkStatus::RequestingConfiguration => "REQUESTING_CONFIGURATION",
            NetworkStatus::AccessDenied => "ACCESS_DENIED",
            NetworkStatus::Ok => "OK",
            NetworkStatus::NotFound => "NOT_FOUND",
        }
    }
}

impl std::fmt::Display for NetworkStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: NetworkId,
    /// The network's name from its config; empty before the first config.
    pub name: String,
    /// This node's member name in the network, as its config gives it.
    #[serde(default)]
    pub member_name: String,
    pub status: NetworkStatus,
    /// Revision of the config the node runs on; null before the first.
    pub revision: Option<u64>,
    /// The data plane's interface; null while the network is not up.
    pub interface: Option<String>,
    pub mtu: Option<u16>,
    /// This node's addresses on the network, with their prefix lengths: IPv4 (its pool's),
    /// RFC4193 (/88), 6PLANE. As the interface carries them once the data plane has the
    /// network up (6PLANE `::1/40`); before, as the config assigns them (6PLANE /80).
    pub addresses: Vec<IpNet>,
    pub container_subnets: ContainerSubnets,
    /// The IPv6 egress masquerade for this host's containers, when the network has
    /// `ipv6_egress: nat66` and they are on mesh addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_egress: Option<forwarding::EgressView>,
    /// Who owns which destination: every member's container subnet and the managed
    /// routes, by target.
    pub routes: Vec<RouteView>,
    /// Routes the data plane points at the interface.
    pub kernel_routes: Vec<IpNet>,
    /// Packets the data plane dropped on this network, by reason (`unknown_peer`,
    /// `spoofed_source`, `replayed`, ...); reasons that never happened are left out.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// What this node relayed for the other members, when the config marks it a relay
    /// (`meshd daemon --relay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relaying: Option<RelayedView>,
    /// The controllers asked for this network.
    pub controllers: Vec<String>,
    /// When the network was joined, in seconds since the Unix epoch.
    pub joined_at: u64,
    /// The last problem (a refused join or config, a data-plane failure), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Envelopes relayed between two other members, and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedView {
    pub packets: u64,
    pub bytes: u64,
}

/// The subnets this host's containers take their addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSubnets {
    pub ipv4: Option<Ipv4Net>,
    pub ipv6: Option<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub target: IpNet,
    /// The member traffic to `target` goes to: for a route with several gateways, the one
    /// in use.
    pub node_id: NodeId,
    /// Every gateway of a route that fails over, most preferred first; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<NodeId>,
}

/// What kind of direct path a peer is reached on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectKind {
    Lan,
    Public,
    Punched,
    /// The port mapping the peer's router holds (UPnP-IGD, NAT-PMP, PCP).
    #[serde(rename = "port-mapped")]
    PortMapped,
}

impl DirectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectKind::Lan => "lan",
            DirectKind::Public => "public",
            DirectKind::Punched => "punched",
            DirectKind::PortMapped => "port-mapped",
        }
    }
}

/// How traffic reaches a peer: `"direct"`, `"relay"` or `"none"` in JSON (the human
/// output shows them in capitals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerPath {
    /// A session, and traffic goes straight to the peer's endpoint, which answers.
    Direct,
    /// A session, and traffic goes through a relay: no direct path answers (yet).
    Relay,
    /// No session.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub node_id: NodeId,
    pub network: NetworkId,
    /// The peer's member name, if the network's config gives one.
    pub name: String,
    pub path: PeerPath,
    /// The relay traffic to the peer goes through, while its path is `relay`.
    #[serde(default)]
    pub relay: Option<SocketAddr>,
    /// The member that relay is, when a member relays (`meshd daemon --relay`); null for a
    /// replica's relay.
    #[serde(default)]
    pub relay_member: Option<NodeId>,
    /// What kind of direct path: `lan` (one of the peer's own addresses that is not its
    /// public endpoint), `public` (its public endpoint, or where its NAT showed it),
    /// `port-mapped` (the port mapping its router holds) or `punched` (found by probing
    /// from both sides while relayed); null unless direct.
    #[serde(default)]
    pub direct: Option<DirectKind>,
    /// Seconds since the path (direct endpoint or relay) last changed.
    #[serde(default)]
    pub path_age_s: Option<u64>,
    pub endpoint: Option<SocketAddr>,
    /// Every address the config gives for the peer; the endpoint is the fastest that
    /// answered the last path scan. Empty from older daemons.
    #[serde(default)]
    pub candidates: Vec<SocketAddr>,
    /// Times a path scan moved the endpoint to a faster address.
    #[serde(default)]
    pub path_changes: u64,
    /// What the last path scan measured, `None` before the first (or from older daemons).
    #[serde(default)]
    pub path_scan: Option<PathScanView>,
    pub rtt_ms: Option<f64>,
    pub last_handshake_s: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Datagrams received from and sent to the peer (data and keepalives).
    #[serde(default)]
    pub rx_packets: u64,
    #[serde(default)]
    pub tx_packets: u64,
    /// Completed handshakes with the peer, initial and rekeys.
    #[serde(default)]
    pub handshakes: u64,
    /// The peer's addresses on the network, as its member entry in the config gives
    /// them: IPv4, RFC4193, 6PLANE (the `::1` of its /80). Empty from older daemons.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// The last path scan of a peer: why its endpoint is the one it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathScanView {
    /// Seconds since the scan finished.
    pub age_s: u64,
    /// Traffic to the peer was flowing, so the probes measured its queues too: such a scan
    /// keeps the endpoint and is repeated 5 s later.
    pub under_load: bool,
    /// Every address probed, with its fastest answer (`null`: none came).
    pub paths: Vec<PathTimeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathTimeView {
    pub address: SocketAddr,
    pub rtt_ms: Option<f64>,
}

/// `POST /v1/networks/{nwid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinView {
    pub node_id: NodeId,
    pub network: NetworkView,
}

/// `POST /v1/networks/{nwid}` body; empty is fine too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerAddr>,
}

/// `DELETE /v1/networks/{nwid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftView {
    pub left: NetworkId,
}

/// Binds the socket at `path`, replacing a stale one (the state directory lock guarantees
/// no other daemon uses it), readable and writable by the owner only.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()));
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    Ok(listener)
}

/// Serves the API until the daemon stops.
pub(super) async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    let mut stop = daemon.stop.clone();
    let app = router(daemon);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped(&mut stop).await })
        .await;
    if let Err(e) = result {
        warn!(error = %e, "local API stopped");
    }
}

fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/cpu", get(super::bench::cpu))
        .route("/v1/networks/{nwid}", post(join).delete(leave))
        .fallback(|| async {
            Failure(
                StatusCode::NOT_FOUND,
                "no such API path; see `GET /v1/status`".to_owned(),
            )
        })
        .method_not_allowed_fallback(|| async {
            Failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path".to_owned(),
            )
        })
        .with_state(daemon)
}

/// A failed request: the status and the one-line reason, sent as `{"error": ...}`.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        let code = match e {
            RequestError::NoController(_) => StatusCode::BAD_REQUEST,
            RequestError::NotJoined(_) => StatusCode::NOT_FOUND,
            RequestError::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            warn!(status = %self.0, error = %self.1, "local API request failed");
        }
        json(self.0, &ErrorBody { error: self.1 })
    }
}

/// [`Daemon::status_view`] on a blocking thread: it may run the firewall tools (at most
/// every few seconds, with a timeout).
async fn current_status(daemon: &Arc<Daemon>) -> Result<StatusView, Failure> {
    let daemon = Arc::clone(daemon);
    tokio::task::spawn_blocking(move || daemon.status_view())
        .await
        .map_err(|e| {
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make the status: {e}"),
            )
        })
}

async fn status(State(daemon): State<Arc<Daemon>>) -> Result<Response, Failure> {
    Ok(json(StatusCode::OK, &current_status(&daemon).await?))
}

async fn peers(State(daemon): State<Arc<Daemon>>) -> Result<Response, Failure> {
    Ok(json(StatusCode::OK, &current_status(&daemon).await?.peers))
}

async fn join(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(nwid): UrlPath<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let network = parse_network(&nwid)?;
    let request: JoinRequest = if body.iter().all(u8::is_ascii_whitespace) {
        JoinRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Failure(
                StatusCode::BAD_REQUEST,
                format!("the request body is not a join request: {e}"),
            )
        })?
    };
    let new = daemon.join(network, request.controller).await?;
    let view = current_status(&daemon).await?;
    let found = view.networks.into_iter().find(|n| n.id == network);
    // None: left again between the two steps.
    let network = found.ok_or(RequestError::NotJoined(network))?;
    let code = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let answer = JoinView {
        node_id: view.node_id,
        network,
    };
    Ok(json(code, &answer))
}

async fn leave(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(nwid): UrlPath<String>,
) -> Result<Response, Failure> {
    let network = parse_network(&nwid)?;
    daemon.leave(network).await?;
    Ok(json(StatusCode::OK, &LeftView { left: network }))
}

fn parse_network(text: &str) -> Result<NetworkId, Failure> {
    text.parse().map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("bad network id {text:?}: {e}"),
        )
    })
}

fn json(code: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
            .into_response(),
    }
}

impl Daemon {
    /// Everything `meshd status` shows, as of now.
    pub(super) fn status_view(&self) -> StatusView {
        let node = self.node_id();
        // A snapshot under the lock; the data plane is asked without it.
        let (controllers, controller, controllers_unreachable_for_s, networks) = {
            let inner = self.lock();
            let mut controllers: Vec<ControllerView> = Vec::new();
            for link in inner.links.values() {
                for a in &link.addrs {
                    let view = controller_view(a);
                    match controllers.iter_mut().find(|c| c.address == view.address) {
                        // In two links (two controller sets sharing an address): the
                        // connected one tells more.
                        Some(c) if view.connected && !c.connected => *c = view,
                        Some(_) => {}
                        None => controllers.push(view),
                    }
                }
            }
            let connected = controllers.iter().find(|c| c.connected);
            let controller = connected.map(|c| c.address.clone());
            let unreachable_for = (connected.is_none() && !controllers.is_empty())
                .then(|| inner.offline_since.elapsed().as_secs());
            let networks: Vec<(NetworkView, Option<Arc<NetworkConfig>>, bool)> = inner
                .networks
                .iter()
                .map(|(id, n)| {
                    let mut view = network_view(node, *id, n.status(), n.config.as_deref());
                    view.controllers = self
                        .controllers_for(&n.record)
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    view.joined_at = n.record.joined_at;
                    view.ipv6_egress = self.egress.view(*id);
                    view.error.clone_from(&n.error);
                    (view, n.config.clone(), n.up)
                })
                .collect();
            (controllers, controller, unreachable_for, networks)
        };
        let mut peers = Vec::new();
        let mut views = Vec::with_capacity(networks.len());
        for (mut view, cfg, up) in networks {
            if let Some(dp) = up.then(|| self.dataplane.status(view.id)).flatten() {
                if let Some(cfg) = &cfg {
                    let all = &dp.peers;
                    peers.extend(all.iter().map(|p| peer_view(view.id, cfg, all, p)));
                }
                view.interface = Some(dp.interface);
                view.mtu = Some(dp.mtu);
                view.addresses = dp.addresses;
                view.kernel_routes = dp.routes;
                for f in &dp.failover {
                    if let Some(r) = view.routes.iter_mut().find(|r| r.target == f.target) {
                        r.node_id = f.gateway_in_use();
                    }
                }
                // Only the reasons that dropped something.
                view.drops = dp
                    .drops
                    .into_iter()
                    .filter(|&(_, n)| n > 0)
                    .map(|(reason, n)| (reason.to_owned(), n))
                    .collect();
                let relays = cfg.as_ref().and_then(|c| c.member(self.node_id()));
                view.relaying = relays.filter(|m| m.relay).map(|_| RelayedView {
                    packets: dp.relayed_packets,
                    bytes: dp.relayed_bytes,
                });
            }
            views.push(view);
        }
        // A host forwards for the families of its container subnets.
        let needs = Needs {
            ipv4: views.iter().any(|v| v.container_subnets.ipv4.is_some()),
            ipv6: views.iter().any(|v| v.container_subnets.ipv6.is_some()),
        };
        // What traffic from the mesh may be forwarded to: this host's containers, and the
        // LANs it is the gateway of.
        let owned: Vec<IpNet> = views
            .iter()
            .flat_map(|v| {
                let containers = [
                    v.container_subnets.ipv4.map(IpNet::V4),
                    v.container_subnets.ipv6,
                ];
                let routes = v
                    .routes
                    .iter()
                    .filter(|r| r.node_id == node)
                    .map(|r| r.target);
                containers.into_iter().flatten().chain(routes)
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let reach = self.reach_summary();
        StatusView {
            hostname: self.hostname.clone(),
            delegated_prefix: self.delegated.view(),
            public_endpoint: reach
                .port_mapping
                .map(|m| m.external)
                .or(reach.public_endpoint),
            port_mapping: reach.port_mapping.map(|m| PortMappingView {
                external: m.external,
                protocol: m.protocol.to_owned(),
            }),
            nat: reach.nat.map(|n| n.as_str().to_owned()),
            relays: reach
                .relays
                .iter()
                .map(|(view, alive)| RelayStatusView {
                    address: view.address,
                    alive: *alive,
                    rtt_ms: view.rtt.map(milliseconds_to_the_us),
                    observed: view.observed,
                })
                .collect(),
            node_id: node,
            key_fingerprint: self.state.identity().public().fingerprint(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            online: controllers.iter().any(|c| c.reachable),
            controller,
            controllers_unreachable_for_s,
            dataplane_attached: self.dataplane.attached(),
            controllers,
            networks: views,
            peers,
            forwarding: self.forwarding.report_for(needs, &owned),
            packet_workers: self.dataplane.workers(),
        }
    }
}

fn controller_view(a: &LinkAddr) -> ControllerView {
    let mut view = ControllerView {
        address: a.addr.to_string(),
        reachable: false,
        connected: false,
        learned: a.learned,
        connected_since_s: None,
        unreachable_for_s: None,
        error: None,
    };
    match &a.state {
        AddrState::Idle => {}
        AddrState::Connected { since } => {
            view.reachable = true;
            view.connected = true;
            view.connected_since_s = Some(since.elapsed().as_secs());
        }
        AddrState::Unreachable { since, error } => {
            view.unreachable_for_s = Some(since.elapsed().as_secs());
            view.error = Some(error.clone());
        }
    }
    view
}

/// What the config says about a network, for this node: addresses and who owns which
/// destination. The interface, MTU, addresses and kernel routes come from the data plane
/// once it has the network up.
fn network_view(
    node: NodeId,
    id: NetworkId,
    status: NetworkStatus,
    cfg: Option<&NetworkConfig>,
) -> NetworkView {
    let mut view = NetworkView {
        id,
        name: String::new(),
        member_name: String::new(),
        status,
        revision: None,
        interface: None,
        mtu: None,
        addresses: Vec::new(),
        container_subnets: ContainerSubnets::default(),
        ipv6_egress: None,
        routes: Vec::new(),
        kernel_routes: Vec::new(),
        drops: BTreeMap::new(),
        relaying: None,
        controllers: Vec::new(),
        joined_at: 0,
        error: None,
    };
    let Some(cfg) = cfg else {
        return view;
    };
    view.name.clone_from(&cfg.name);
    if let Some(me) = cfg.member(node) {
        view.member_name.clone_from(&me.name);
    }
    view.revision = Some(cfg.revision);
    view.mtu = Some(cfg.mtu);
    view.addresses = cfg.interface_addresses(node);
    view.container_subnets = ContainerSubnets {
        ipv4: cfg.member(node).and_then(|m| m.container_subnet),
        ipv6: cfg.container_subnet_v6(node).map(IpNet::V6),
    };
    view.routes = cfg
        .members
        .iter()
        .flat_map(|m| {
            let v4 = m.container_subnet.map(IpNet::V4);
            let v6 = m.delegated_subnet.map(IpNet::V6);
            [v4, v6].into_iter().flatten().map(|target| RouteView {
                target,
                node_id: m.node_id,
                gateways: Vec::new(),
            })
        })
        .chain(cfg.routes.iter().filter_map(|r| {
            let gateways: Vec<NodeId> = r
                .gateways
                .iter()
                .copied()
                .filter(|g| cfg.member(*g).is_some())
                .collect();
            Some(RouteView {
                target: r.target,
                node_id: *gateways.first()?,
                gateways: if gateways.len() > 1 {
                    gateways
                } else {
                    Vec::new()
                },
            })
        }))
        .collect();
    view.routes.sort_by_key(|r| (r.target, r.node_id));
    view
}

/// What `meshd peers` shows of peer `p`; `all` is every peer of the network (one of them
/// may be the member relaying for `p`).
pub(super) fn peer_view(
    network: NetworkId,
    cfg: &NetworkConfig,
    all: &[PeerStatus],
    p: &PeerStatus,
) -> PeerView {
    let (path, relay) = match (p.has_session, p.via) {
        (true, Some(Via::Relay(relay))) => (PeerPath::Relay, Some(relay)),
        (true, _) => (PeerPath::Direct, None),
        (false, _) => (PeerPath::None, None),
    };
    let relay_member = relay.and_then(|address| {
        all.iter()
            .filter(|other| cfg.member(other.node_id).is_some_and(|m| m.relay))
            .find(|other| other.endpoint == Some(address))
            .map(|other| other.node_id)
    });
    PeerView {
        node_id: p.node_id,
        network,
        name: cfg
            .member(p.node_id)
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        path,
        relay,
        relay_member,
        direct: (path == PeerPath::Direct)
            .then(|| direct_kind(cfg, p))
            .flatten(),
        path_age_s: p.via_age.map(|d| d.as_secs()),
        endpoint: p.endpoint,
        candidates: p.candidates.clone(),
        path_changes: p.path_changes,
        path_scan: p.last_scan.as_ref().map(|scan| PathScanView {
            age_s: scan.age.as_secs(),
            under_load: scan.under_load,
            paths: scan
                .paths
                .iter()
                .map(|t| PathTimeView {
                    address: t.address,
                    rtt_ms: t.rtt.map(milliseconds_to_the_us),
                })
                .collect(),
        }),
        rtt_ms: p.rtt.map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
        last_handshake_s: p.last_handshake.map(|d| d.as_secs()),
        rx_bytes: p.rx_bytes,
        tx_bytes: p.tx_bytes,
        rx_packets: p.rx_packets,
        tx_packets: p.tx_packets,
        handshakes: p.handshakes,
        addresses: member_addresses(cfg, p.node_id),
    }
}

/// The kind of a direct path: see [`PeerView::direct`]. The config lists a member's public
/// endpoint (as the replicas saw it, or its router's port mapping) first, then its own
/// addresses.
fn direct_kind(cfg: &NetworkConfig, p: &PeerStatus) -> Option<DirectKind> {
    let endpoint = p.endpoint?;
    let member = cfg.member(p.node_id);
    let listed = member.map(|m| m.endpoints.as_slice()).unwrap_or_default();
    let position = listed.iter().position(|e| *e == endpoint);
    // What the address is comes first: the router's mapping takes traffic from anyone, and
    // a LAN address is the LAN, however the path was found.
    Some(match position {
        Some(0) if member.is_some_and(|m| m.port_mapped) => DirectKind::PortMapped,
        Some(i) if i > 0 => DirectKind::Lan,
        _ if p.punched => DirectKind::Punched,
        _ => DirectKind::Public,
    })
}

/// Milliseconds to the microsecond: paths on one LAN differ by tens of microseconds.
fn milliseconds_to_the_us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A member's addresses on a network: its IPv4 addresses, then RFC4193 and 6PLANE when
/// the network has them.
fn member_addresses(cfg: &NetworkConfig, node: NodeId) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = cfg
        .member(node)
        .map(|m| m.ipv4.iter().map(|&a| IpAddr::V4(a)).collect())
        .unwrap_or_default();
    if cfg.rfc4193 {
        out.push(IpAddr::V6(addr::rfc4193_addr(cfg.network_id, node)));
    }
    if cfg.sixplane {
        out.push(IpAddr::V6(addr::sixplane_addr(cfg.network_id, node)));
    }
    out
}

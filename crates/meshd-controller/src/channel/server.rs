//! The controller side of the node channel: one task per node connection.
//!
//! A connection's life: the TLS handshake proves the node's Ed25519 key; the node opens its
//! stream and sends `Hello` with its X25519 key, which completes its identity and node id.
//! Each `Join` is written to the controller as a `MemberJoin` (creating the unauthorized
//! member record, or refreshing where the node was seen), and answered from the applied
//! state. From then on the task watches the controller's applied counter and, for every
//! network the node joined, pushes what changed: a newer config, a deauthorization, the
//! network's deletion. The node also learns the addresses of every replica (`Replicas`),
//! right after its `Hello` and again whenever the set changes, so it can fail over.
//! A replica that relays ([`serve_relaying`]) also hands the node its relay credential
//! (`RelayCredential`), and takes how the node says it is reached (`Reach`: its
//! server-reflexive address or port mapping as where peers reach it from outside, and
//! whether it relays for other members). What a node reports of a network it follows
//! (`Report`: host name, paths to peers) is recorded through the log ([`super::reports`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshd_proto::addr::unmapped;
use meshd_proto::reach::credential::RelaySecret;
use meshd_proto::{NetworkId, NodeId, PublicIdentity};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::join_limit::JoinLimit;
use super::signed::{self, SignedConfigs};
use super::stats::ChannelStats;
use crate::controller::{Controller, WriteError};
use crate::state::{Applied, Command, ControllerState, MAX_LOCAL_ENDPOINTS, RejectKind};
use meshd_channel::protocol::{
    self, ControllerMessage, FrameError, JoinStatus, NodeMessage, Reach, close_code,
};
use meshd_channel::tls;

/// How long a node has, after the handshake, to open its stream and say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a frame may wait for the node to make room (it stopped reading: drop it).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the last words before a close (an `Error`) get to be acknowledged.
const LINGER: Duration = Duration::from_secs(2);
/// Most networks one connection may follow; each costs a config signature per change.
const MAX_NETWORKS_PER_CONNECTION: usize = 256;
/// Most bytes of a close reason (it must fit one packet).
const MAX_REASON_LEN: usize = 200;
/// How often a connection checks whether the set of replicas changed (a cheap read of the
/// replica's membership).
const REPLICAS_POLL: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(3)
};

/// A QUIC endpoint for the node channel, listening on `listen`, whose TLS key is the
/// replica's Ed25519 key given by `server_seed`.
pub fn endpoint(listen: SocketAddr, server_seed: &[u8; 32]) -> io::Result<quinn::Endpoint> {
    let config = tls::server_config(server_seed)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    quinn::Endpoint::server(config, listen)
}

/// Serves node connections on `endpoint` until it is closed. Each connection runs in a task
/// of its own; closing the endpoint closes them all.
pub async fn serve<C: Controller>(endpoint: quinn::Endpoint, controller: C) {
    serve_signed(
        endpoint,
        controller,
        Arc::default(),
        None,
        ChannelStats::default(),
    )
    .await;
}

/// [`serve`] for a replica whose relay runs with `secret`: nodes get credentials for it.
/// Counts into `stats` for the replica's metrics.
pub async fn serve_relaying<C: Controller>(
    endpoint: quinn::Endpoint,
    controller: C,
    secret: RelaySecret,
    stats: ChannelStats,
) {
    let relay = Some(Arc::new(secret));
    serve_signed(endpoint, controller, Arc::default(), relay, stats).await;
}

/// [`serve`], signing into `configs` (which a test can watch).
pub(super) async fn serve_signed<C: Controller>(
    endpoint: quinn::Endpoint,
    controller: C,
    configs: Arc<SignedConfigs>,
    relay: Option<Arc<RelaySecret>>,
    stats: ChannelStats,
) {
    if let Ok(local) = endpoint.local_addr() {
        info!(%local, "node channel listening");
    }
    let _signer = AbortOnDrop(tokio::spawn(signed::run(
        controller.clone(),
        Arc::clone(&configs),
    )));
    let join_limit = Arc::new(JoinLimit::default());
    while let Some(incoming) = endpoint.accept().await {
        let (controller, configs) = (controller.clone(), Arc::clone(&configs));
        let (relay, join_limit) = (relay.clone(), Arc::clone(&join_limit));
        let stats = stats.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    let ends = Ends {
                        relay,
                        join_limit,
                        stats,
                    };
                    connection(conn, controller, configs, ends).await;
                }
                // Scanners and nodes with the wrong key type end here: not worth a warning.
                Err(e) => debug!(%remote, error = %e, "node channel handshake failed"),
            }
        });
    }
}

/// How a connection ended, and so how it is closed.
#[derive(Debug)]
enum End {
    /// The node finished its stream or closed the connection.
    NodeClosed,
    /// The connection broke (timeout, reset, node stopped reading).
    Lost(String),
    /// The node broke the protocol: tell it why, close with [`close_code::PROTOCOL`].
    Protocol(String),
    /// The node's identity conflicts with the record: tell it, close with
    /// [`close_code::FORBIDDEN`].
    Forbidden(String),
    /// The controller is going away.
    Shutdown,
}

impl From<FrameError> for End {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => End::Lost(e.to_string()),
            other => End::Protocol(other.to_string()),
        }
    }
}

/// What every connection of one server shares besides the controller and its configs.
struct Ends {
    relay: Option<Arc<RelaySecret>>,
    join_limit: Arc<JoinLimit>,
    stats: ChannelStats,
}

async fn connection<C: Controller>(
    conn: quinn::Connection,
    controller: C,
    configs: Arc<SignedConfigs>,
    ends: Ends,
) {
    let Ends {
        relay,
        join_limit,
        stats,
    } = ends;
    let remote = conn.remote_address();
    let Some(ed25519) = tls::peer_ed25519(&conn) else {
        // The verifier admits Ed25519 keys only, so this is unreachable unless it changes.
        warn!(%remote, "node channel peer has no Ed25519 key; closing");
        conn.close(
            close_code::PROTOCOL.into(),
            b"an Ed25519 raw public key is required",
        );
        return;
    };
    let (mut send, mut recv, hello) = match tokio::time::timeout(HELLO_TIMEOUT, async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| End::Lost(e.to_string()))?;
        let hello = protocol::read_frame::<_, NodeMessage>(&mut recv).await?;
        Ok::<_, End>((send, recv, hello))
    })
    .await
    {
        Ok(Ok((send, recv, Some(hello)))) => (send, recv, hello),
        Ok(Ok((_, _, None))) => return finish(&conn, None, End::NodeClosed).await,
        Ok(Err(end)) => return finish(&conn, None, end).await,
        Err(_) => return finish(&conn, None, End::Lost("no Hello in time".into())).await,
    };
    let NodeMessage::Hello {
        x25519,
        version,
        data_port,
        mut local_endpoints,
    } = hello
    else {
        let end = End::Protocol("the first message must be Hello".into());
        return finish(&conn, Some(&mut send), end).await;
    };
    let identity = PublicIdentity { x25519, ed25519 };
    // The one place keys become a node: the proof of work behind the id is checked here, off
    // the async workers (a memory-hard hash takes about half a millisecond).
    let worked = tokio::task::spawn_blocking(move || identity.proven_node_id())
        .await
        .unwrap_or(Err(meshd_proto::IdError::NoProofOfWork));
    let node = match worked {
        Ok(node) => node,
        Err(e) => {
            let end = End::Protocol(format!("identity refused: {e}"));
            return finish(&conn, Some(&mut send), end).await;
        }
    };
    local_endpoints.truncate(MAX_LOCAL_ENDPOINTS);
    let version: String = version.chars().take(64).collect();
    info!(node = %node, %remote, %version, "node connected");

    // Reading runs in a task of its own because `read_frame` is not cancel-safe; the loop
    // below selects between its frames and controller changes.
    let (tx, mut rx) = mpsc::channel(EARLY_MESSAGES);
    if protocol::knows_key_proofs(&version) {
        match proven(&mut send, &mut recv, &identity).await {
            Ok(early) => {
                for msg in early {
                    // Room for every early message: the channel holds EARLY_MESSAGES.
                    let _ = tx.try_send(Ok(Some(msg)));
                }
            }
            Err(end) => {
                warn!(node = %node, %remote, "node refused: {end:?}");
                return finish(&conn, Some(&mut send), end).await;
            }
        }
    } else {
        warn!(node = %node, %remote, %version, "node too old to prove its X25519 key; let in unproven");
    }
    let reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let frame = protocol::read_frame::<_, NodeMessage>(&mut recv).await;
            let last = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).await.is_err() || last {
                break;
            }
        }
    }));

    let mut signed = configs.subscribe();
    signed.borrow_and_update();
    let mut session = Session {
        controller,
        configs,
        node,
        identity,
        // The QUIC connection's source port is the control socket's, not the data plane's:
        // peers reach the node at the same address on its data-plane port.
        physical: (data_port != 0).then(|| SocketAddr::new(unmapped(remote).ip(), data_port)),
        local: local_endpoints,
        networks: BTreeMap::new(),
        replicas: Vec::new(),
        relay,
        knows_relaying: protocol::knows_relaying(&version),
        member_relay: false,
        port_mapped: false,
        source: unmapped(remote).ip(),
        join_limit,
        version: version.clone(),
        _connected: stats.connected(),
        stats,
        connected_at: std::time::Instant::now(),
    };
    let mut applied = session.controller.applied();
    applied.borrow_and_update();
    // The replica list goes out right after `Hello`, before any answer, then when it changes.
    if let Err(end) = session.send_replicas(&mut send).await {
        drop(reader);
        return finish(&conn, Some(&mut send), end).await;
    }
    if let Err(end) = session.send_credential(&mut send).await {
        drop(reader);
        return finish(&conn, Some(&mut send), end).await;
    }
    let mut credential_refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + crate::relay::CREDENTIAL_REFRESH,
        crate::relay::CREDENTIAL_REFRESH,
    );
    let mut replicas_poll =
        tokio::time::interval_at(tokio::time::Instant::now() + REPLICAS_POLL, REPLICAS_POLL);
    replicas_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        let step = tokio::select! {
            _ = replicas_poll.tick() => session.send_replicas(&mut send).await,
            _ = credential_refresh.tick() => session.send_credential(&mut send).await,
            frame = rx.recv() => match frame {
                Some(Ok(Some(msg))) => session.on_message(msg, &mut send).await,
                Some(Ok(None)) | None => Err(End::NodeClosed),
                Some(Err(e)) => Err(End::from(e)),
            },
            changed = applied.changed() => match changed {
                Ok(()) => session.refresh(&mut send).await,
                Err(_) => Err(End::Shutdown),
            },
            // A config signed after the change that woke the branch above.
            changed = signed.changed() => match changed {
                Ok(()) => session.refresh(&mut send).await,
                Err(_) => Err(End::Shutdown),
            },
        };
        if let Err(end) = step {
            break end;
        }
    };
    drop(reader);
    finish(&conn, Some(&mut send), end).await;
}

/// Closes a connection the way `end` calls for, telling the node why first where it helps.
async fn finish(conn: &quinn::Connection, send: Option<&mut quinn::SendStream>, end: End) {
    let remote = conn.remote_address();
    let (code, reason) = match end {
        End::NodeClosed => {
            debug!(%remote, "node closed the channel");
            (close_code::DONE, String::new())
        }
        End::Lost(why) => {
            debug!(%remote, error = %why, "node channel lost");
            (close_code::DONE, why)
        }
        End::Shutdown => {
            info!(%remote, "controller shutting down; closing node channel");
            (close_code::SHUTDOWN, "controller shutting down".into())
        }
        End::Protocol(why) => {
            warn!(%remote, error = %why, "node broke the channel protocol; closing");
            (close_code::PROTOCOL, why)
        }
        End::Forbidden(why) => {
            warn!(%remote, error = %why, "node refused; closing");
            (close_code::FORBIDDEN, why)
        }
    };
    if code != close_code::DONE
        && let Some(send) = send
    {
        // The reason also travels in the close frame, but only the stream message is sure to
        // reach a client that reads messages rather than close reasons.
        let msg = ControllerMessage::Error {
            message: reason.clone(),
        };
        let last_words = async {
            protocol::write_frame(send, &msg).await.ok()?;
            send.finish().ok()?;
            send.stopped().await.ok()
        };
        let _ = tokio::time::timeout(LINGER, last_words).await;
    }
    let reason = truncate(&reason, MAX_REASON_LEN);
    conn.close(code.into(), reason.as_bytes());
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Messages a node may send after `Hello` before its `Proof`: a join for every network it
/// may follow, sent at once, and a few more.
const EARLY_MESSAGES: usize = MAX_NETWORKS_PER_CONNECTION + 8;

/// Challenges the node to prove the X25519 key its `Hello` names and reads up to its
/// `Proof`; returns the messages that came before it, to be handled after.
async fn proven(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    identity: &PublicIdentity,
) -> Result<Vec<NodeMessage>, End> {
    let challenge = meshd_proto::possession::Challenge::new();
    send_msg(
        send,
        &ControllerMessage::Challenge {
            key: challenge.public(),
        },
    )
    .await?;
    let mut early = Vec::new();
    let answer = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match protocol::read_frame::<_, NodeMessage>(recv).await? {
                Some(NodeMessage::Proof { tag }) => return Ok(tag),
                Some(msg) if early.len() < EARLY_MESSAGES => early.push(msg),
                Some(_) => {
                    return Err(End::Protocol(
                        "too many messages before the Proof; answer the Challenge first".into(),
                    ));
                }
                None => return Err(End::NodeClosed),
            }
        }
    })
    .await
    .map_err(|_| End::Lost("no Proof in time".into()))??;
    if !challenge.verify(identity, &answer) {
        return Err(End::Forbidden(
            "the node does not hold the X25519 key its Hello names".into(),
        ));
    }
    Ok(early)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One node connection after `Hello`.
struct Session<C> {
    controller: C,
    node: NodeId,
    /// Every network's config, signed once per revision for all connections.
    configs: Arc<SignedConfigs>,
    identity: PublicIdentity,
    physical: Option<SocketAddr>,
    local: Vec<SocketAddr>,
    networks: BTreeMap<NetworkId, Tracked>,
    /// The replica addresses last sent; empty before the first `Replicas`.
    replicas: Vec<String>,
    /// The relay secret when this replica relays.
    relay: Option<Arc<RelaySecret>>,
    /// The node's version knows `RelayCredential` ([`protocol::knows_relaying`]).
    knows_relaying: bool,
    /// The node relays for other members (it said so in `Reach`).
    member_relay: bool,
    /// `physical` is a port mapping the node's router holds.
    port_mapped: bool,
    /// The address the connection comes from, and how many joins such addresses may write.
    source: std::net::IpAddr,
    join_limit: Arc<JoinLimit>,
    /// What the node's `Hello` says it runs.
    version: String,
    /// Counts the connection while it lives.
    _connected: super::stats::Connected,
    stats: ChannelStats,
    connected_at: std::time::Instant,
}

impl<C: Controller> Session<C> {
    async fn on_message(
        &mut self,
        msg: NodeMessage,
        send: &mut quinn::SendStream,
    ) -> Result<(), End> {
        match msg {
            NodeMessage::Hello { .. } => Err(End::Protocol("Hello sent twice".into())),
            NodeMessage::Join {
                network,
                have_revision,
            } => self.join(network, have_revision, send).await,
            NodeMessage::Leave { network } => {
                if self.networks.remove(&network).is_some() {
                    info!(node = %self.node, network = %network, "node left");
                }
                Ok(())
            }
            NodeMessage::Reach(reach) => self.reach(reach).await,
            NodeMessage::Proof { .. } => Err(End::Protocol("a Proof without a Challenge".into())),
            NodeMessage::Report(report) => self.report(report).await,
        }
    }

    /// Records the node's report of a network it follows on this connection, paced
    /// ([`reports`](super::reports)); reports of other networks are ignored.
    async fn report(&mut self, report: protocol::Report) -> Result<(), End> {
        let now = std::time::Instant::now();
        let Some(tracked) = self.networks.get_mut(&report.network) else {
            debug!(node = %self.node, network = %report.network, "report of a network not followed");
            return Ok(());
        };
        let (network, prefix) = (report.network, report.delegated_prefix);
        super::reports::record_prefix(&self.controller, self.node, network, prefix).await;
        let cmd =
            super::reports::command(self.node, &self.version, report, meshd_io::clock::now_ms())
                .map_err(End::Protocol)?;
        if !super::reports::due(tracked.reported, now) {
            return Ok(());
        }
        tracked.reported = Some(now);
        if let Err(e) = self.controller.write(cmd).await {
            debug!(node = %self.node, error = %e, "report not recorded");
        }
        Ok(())
    }

    /// The node's relay credential, when this replica relays and the node knows the message.
    async fn send_credential(&mut self, send: &mut quinn::SendStream) -> Result<(), End> {
        let Some(secret) = self.relay.as_ref().filter(|_| self.knows_relaying) else {
            return Ok(());
        };
        let credential = crate::relay::issue(secret, self.node);
        let msg = ControllerMessage::RelayCredential {
            expires: credential.expires,
            key: credential.key,
        };
        send_msg(send, &msg).await
    }

    /// Takes how the node is reached: its public endpoint as where peers reach it from
    /// outside, and its flags, recorded for every network it follows (a config change for
    /// its peers).
    async fn reach(&mut self, reach: Reach) -> Result<(), End> {
        let public = reach.public.map(unmapped);
        if let Some(address) = public
            && (address.ip().is_unspecified() || address.port() == 0)
        {
            return Err(End::Protocol(format!(
                "public address {address} is no endpoint"
            )));
        }
        let moved = public.is_some() && self.physical != public;
        let flags = (reach.relay, reach.port_mapped && public.is_some());
        let flagged = flags != (self.member_relay, self.port_mapped);
        if moved {
            info!(node = %self.node, address = ?public, port_mapped = flags.1, "node's public endpoint");
            self.physical = public;
        }
        if flagged {
            info!(node = %self.node, relay = flags.0, port_mapped = flags.1, "node's reach");
            (self.member_relay, self.port_mapped) = flags;
        }
        let followed: Vec<NetworkId> = self.networks.keys().copied().collect();
        for network in followed {
            // The push that follows the applied change brings every member up to date;
            // a refused write leaves the old record, which the next report retries.
            if moved && let Err(e) = self.write_join(network).await {
                warn!(node = %self.node, network = %network, error = %e, "cannot record the public endpoint");
            }
            if flagged && let Err(e) = self.write_reach(network).await {
                warn!(node = %self.node, network = %network, error = %e, "cannot record how the node is reached");
            }
        }
        Ok(())
    }

    /// Records the member's flags in `network`.
    async fn write_reach(&self, network: NetworkId) -> Result<Applied, WriteError> {
        self.controller
            .write(Command::MemberReach {
                network,
                node: self.node,
                relay: self.member_relay,
                port_mapped: self.port_mapped,
            })
            .await
    }

    /// Records the member in `network` as this connection sees it: created unauthorized if
    /// new, with where it was seen and what it reports.
    async fn write_join(&self, network: NetworkId) -> Result<Applied, WriteError> {
        self.controller
            .write(Command::MemberJoin {
                network,
                node: self.node,
                identity: self.identity,
                physical: self.physical,
                local: self.local.clone(),
                at_ms: meshd_io::clock::now_ms(),
            })
            .await
    }

    async fn join(
        &mut self,
        network: NetworkId,
        have_revision: u64,
        send: &mut quinn::SendStream,
    ) -> Result<(), End> {
        let node = self.node;
        if !self.networks.contains_key(&network)
            && self.networks.len() >= MAX_NETWORKS_PER_CONNECTION
        {
            let message = format!(
                "a connection may follow at most {MAX_NETWORKS_PER_CONNECTION} networks; leave one first"
            );
            return send_msg(send, &ControllerMessage::Error { message }).await;
        }
        // A network this replica does not know is answered from the applied state: joins
        // cost nothing to send, and none of them may reach the replicated log for nothing.
        if !self.controller.read(|s| s.network(network).is_some()) {
            debug!(node = %node, network = %network, "join: no such network");
            self.networks.remove(&network);
            let status = ControllerMessage::Status {
                network,
                status: JoinStatus::NotFound,
            };
            return send_msg(send, &status).await;
        }
        if !self
            .join_limit
            .admit(self.source, std::time::Instant::now())
        {
            warn!(node = %node, source = %self.source, "join refused: too many joins from this address");
            let message = format!(
                "too many joins from {}; the controller takes {} per second from one address, retry later",
                self.source,
                super::join_limit::JOIN_RATE.per_second
            );
            return send_msg(send, &ControllerMessage::Error { message }).await;
        }
        let result = self.write_join(network).await;
        match join_verdict(&result) {
            JoinVerdict::Member => {
                debug!(node = %node, network = %network, revision = have_revision, "join");
                if (self.member_relay || self.port_mapped)
                    && let Err(e) = self.write_reach(network).await
                {
                    warn!(node = %node, network = %network, error = %e, "cannot record how the node is reached");
                }
                self.networks.insert(network, Tracked::new(have_revision));
                self.refresh_one(network, send).await
            }
            JoinVerdict::NotFound => {
                info!(node = %node, network = %network, "join: no such network");
                self.networks.remove(&network);
                let status = ControllerMessage::Status {
                    network,
                    status: JoinStatus::NotFound,
                };
                send_msg(send, &status).await
            }
            JoinVerdict::Forbidden(why) => {
                warn!(node = %node, network = %network, error = %why, "join refused");
                Err(End::Forbidden(why))
            }
            JoinVerdict::Failed(why) => {
                warn!(node = %node, network = %network, error = %why, "join failed");
                self.networks.remove(&network);
                let message = format!("joining network {network} failed: {why}; retry later");
                send_msg(send, &ControllerMessage::Error { message }).await
            }
        }
    }

    /// Tells the node the replicas' addresses when they differ from what it was told last.
    /// An empty set (a controller that does not know its replicas) is never sent.
    async fn send_replicas(&mut self, send: &mut quinn::SendStream) -> Result<(), End> {
        let msg = ControllerMessage::replicas(self.controller.replica_addresses());
        let ControllerMessage::Replicas { addresses } = &msg else {
            unreachable!("ControllerMessage::replicas makes a Replicas")
        };
        if addresses.is_empty() || *addresses == self.replicas {
            return Ok(());
        }
        debug!(node = %self.node, replicas = ?addresses, "replicas sent");
        self.replicas.clone_from(addresses);
        send_msg(send, &msg).await
    }

    /// Pushes whatever changed for every followed network.
    async fn refresh(&mut self, send: &mut quinn::SendStream) -> Result<(), End> {
        let node = self.node;
        let (networks, configs) = (&mut self.networks, &self.configs);
        let out = self.controller.read(|state| {
            let mut out = Vec::new();
            for (network, tracked) in networks.iter_mut() {
                out.extend(updates(state, configs, *network, node, tracked));
            }
            out
        });
        self.send_updates(out, send).await
    }

    async fn refresh_one(
        &mut self,
        network: NetworkId,
        send: &mut quinn::SendStream,
    ) -> Result<(), End> {
        let node = self.node;
        let Some(tracked) = self.networks.get_mut(&network) else {
            return Ok(());
        };
        let configs = &self.configs;
        let out = self
            .controller
            .read(|state| updates(state, configs, network, node, tracked));
        self.send_updates(out, send).await
    }

    async fn send_updates(
        &mut self,
        out: Vec<ControllerMessage>,
        send: &mut quinn::SendStream,
    ) -> Result<(), End> {
        let node = self.node;
        for msg in &out {
            // A push's latency runs from the change to the frame written; configs of changes
            // from before the node connected are catching up, not pushes.
            let mut pushed = None;
            match msg {
                ControllerMessage::Config {
                    network, revision, ..
                } => {
                    info!(node = %node, network = %network, revision = *revision, "config sent");
                    pushed = self
                        .configs
                        .noticed(*network, *revision)
                        .filter(|noticed| *noticed >= self.connected_at);
                }
                ControllerMessage::Status { network, status } => {
                    info!(node = %node, network = %network, ?status, "status sent");
                    // A deleted network is no longer followed: the node must join again.
                    if *status == JoinStatus::NotFound {
                        self.networks.remove(network);
                    }
                }
                ControllerMessage::Error { .. }
                | ControllerMessage::Replicas { .. }
                | ControllerMessage::RelayCredential { .. }
                | ControllerMessage::Challenge { .. } => {}
            }
            send_msg(send, msg).await?;
            if let Some(noticed) = pushed {
                self.stats.pushed(noticed.elapsed());
            }
        }
        Ok(())
    }
}

async fn send_msg(send: &mut quinn::SendStream, msg: &ControllerMessage) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, protocol::write_frame(send, msg)).await {
        Ok(result) => result.map_err(End::from),
        Err(_) => Err(End::Lost("the node stopped reading".into())),
    }
}

/// What the answer to a `Join` is, given how its `MemberJoin` write went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JoinVerdict {
    /// The member record exists (new or refreshed): answer from its state.
    Member,
    /// No such network.
    NotFound,
    /// Another identity is on record for this node id: refuse and close the connection.
    Forbidden(String),
    /// The write failed otherwise (no quorum, pool trouble): tell the node, which retries.
    Failed(String),
}

fn join_verdict(result: &Result<Applied, WriteError>) -> JoinVerdict {
    match result {
        Ok(_) => JoinVerdict::Member,
        Err(WriteError::Rejected(r)) => match r.kind {
            RejectKind::NotFound => JoinVerdict::NotFound,
            RejectKind::Forbidden => JoinVerdict::Forbidden(r.message.clone()),
            RejectKind::Conflict | RejectKind::Invalid | RejectKind::Exhausted => {
                JoinVerdict::Failed(r.message.clone())
            }
        },
        Err(e @ WriteError::Unavailable(_)) => JoinVerdict::Failed(e.to_string()),
    }
}

/// What a connection last told the node about one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracked {
    /// The last status sent; `None` before the first.
    status: Option<JoinStatus>,
    /// The newest config revision the node has: from its `Join`, then from what was sent.
    revision: u64,
    /// When the node's last report of the network was written.
    reported: Option<std::time::Instant>,
}

impl Tracked {
    fn new(have_revision: u64) -> Self {
        Self {
            status: None,
            revision: have_revision,
            reported: None,
        }
    }
}

/// The messages that bring the node up to date on `network`, given the applied state; updates
/// `tracked` to what they say.
///
/// Configs go out only when the revision is *newer* than what the node has: a replica that
/// lags behind the one the node last talked to must not roll the node back. They go out as
/// `configs` signed them; a revision not signed yet goes out when the signer says it is.
fn updates(
    state: &ControllerState,
    configs: &SignedConfigs,
    network: NetworkId,
    node: NodeId,
    tracked: &mut Tracked,
) -> Vec<ControllerMessage> {
    let mut out = Vec::new();
    let mut status = |s: JoinStatus, out: &mut Vec<ControllerMessage>| {
        if tracked.status != Some(s) {
            tracked.status = Some(s);
            out.push(ControllerMessage::Status { network, status: s });
        }
    };
    let Some(net) = state.network(network) else {
        status(JoinStatus::NotFound, &mut out);
        return out;
    };
    // A deleted member is treated like a deauthorized one: it has no access until it joins
    // again (which recreates it, unauthorized).
    if !net.members.get(&node).is_some_and(|m| m.authorized) {
        status(JoinStatus::AccessDenied, &mut out);
        return out;
    }
    status(JoinStatus::Ok, &mut out);
    if net.revision > tracked.revision
        && let Some(signed) = configs.get(network, net.revision)
    {
        tracked.revision = net.revision;
        out.push(ControllerMessage::Config {
            network,
            revision: net.revision,
            signed: signed.to_vec(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use meshd_proto::Identity;

    use super::*;
    use crate::state::Rejected;
    use crate::test_support::{authorized_member, nwid, spec};

    #[test]
    fn join_verdicts() {
        assert_eq!(
            join_verdict(&Ok(Applied::NetworkCreated {
                network: NetworkId::from_u64(1)
            })),
            JoinVerdict::Member
        );
        let rejected = |kind| Err(WriteError::Rejected(Rejected::new(kind, "why")));
        assert_eq!(
            join_verdict(&rejected(RejectKind::NotFound)),
            JoinVerdict::NotFound
        );
        assert_eq!(
            join_verdict(&rejected(RejectKind::Forbidden)),
            JoinVerdict::Forbidden("why".into())
        );
        assert_eq!(
            join_verdict(&rejected(RejectKind::Exhausted)),
            JoinVerdict::Failed("why".into())
        );
        assert!(matches!(
            join_verdict(&Err(WriteError::Unavailable("no leader".into()))),
            JoinVerdict::Failed(m) if m.contains("no leader")
        ));
    }

    #[test]
    fn forbidden_join_is_decided_by_the_state_machine() {
        // Two identities cannot share a node id (it is a hash of the keys), so the conflict is
        // forged in the state directly: the record for `a`'s id holds `b`'s keys.
        let a = Identity::generate();
        let b = Identity::generate();
        let mut state = ControllerState::default();
        state.apply(&Command::CreateNetwork(spec(5))).unwrap();
        let network = nwid(5);
        let join = |identity: &Identity| Command::MemberJoin {
            network,
            node: identity.node_id(),
            identity: *identity.public(),
            physical: None,
            local: vec![],
            at_ms: 2,
        };
        state.apply(&join(&a)).unwrap();
        let net = state.networks.get_mut(&network).unwrap();
        net.members.get_mut(&a.node_id()).unwrap().identity = *b.public();
        let result = state.apply(&join(&a)).map_err(WriteError::from);
        assert!(matches!(join_verdict(&result), JoinVerdict::Forbidden(_)));
    }

    #[test]
    fn updates_follow_the_member_state() {
        let a = Identity::generate();
        let mut state = ControllerState::default();
        let network = nwid(6);
        let mut t = Tracked::new(0);
        let node = a.node_id();
        let configs = SignedConfigs::default();
        // No network.
        assert_eq!(
            updates(&state, &configs, network, node, &mut t),
            vec![ControllerMessage::Status {
                network,
                status: JoinStatus::NotFound
            }]
        );
        assert!(updates(&state, &configs, network, node, &mut t).is_empty());
        state.apply(&Command::CreateNetwork(spec(6))).unwrap();
        state
            .apply(&Command::MemberJoin {
                network,
                node: a.node_id(),
                identity: *a.public(),
                physical: None,
                local: vec![],
                at_ms: 2,
            })
            .unwrap();
        assert_eq!(
            updates(&state, &configs, network, node, &mut t),
            vec![ControllerMessage::Status {
                network,
                status: JoinStatus::AccessDenied
            }]
        );
        state
            .apply(&Command::Authorize {
                network,
                node,
                at_ms: 3,
            })
            .unwrap();
        configs.sign(configs.stale(&state));
        let out = updates(&state, &configs, network, node, &mut t);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(out[1], ControllerMessage::Config { revision, .. } if revision == state.networks[&network].revision)
        );
        assert!(updates(&state, &configs, network, node, &mut t).is_empty());
        // A node that already holds the revision (or a newer one) gets no config.
        let mut holder = Tracked::new(state.networks[&network].revision + 5);
        assert_eq!(
            updates(&state, &configs, network, node, &mut holder),
            vec![ControllerMessage::Status {
                network,
                status: JoinStatus::Ok
            }]
        );
    }

    #[test]
    fn a_revision_not_signed_yet_goes_out_once_it_is() {
        let a = Identity::generate();
        let mut state = ControllerState::default();
        let network = nwid(7);
        let node = a.node_id();
        let configs = SignedConfigs::default();
        state.apply(&Command::CreateNetwork(spec(7))).unwrap();
        authorized_member(&mut state, network, &a);
        let mut t = Tracked::new(0);
        let ok = ControllerMessage::Status {
            network,
            status: JoinStatus::Ok,
        };
        // The status goes out at once; the config waits for its signature, and the node is
        // not counted as having it meanwhile.
        assert_eq!(updates(&state, &configs, network, node, &mut t), vec![ok]);
        assert_eq!(t.revision, 0);
        configs.sign(configs.stale(&state));
        let revision = state.networks[&network].revision;
        let out = updates(&state, &configs, network, node, &mut t);
        assert!(
            matches!(&out[..], [ControllerMessage::Config { revision: r, .. }] if *r == revision),
            "{out:?}"
        );
        assert_eq!(t.revision, revision);
    }

    #[test]
    fn helpers() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:9993".parse().unwrap();
        assert_eq!(unmapped(mapped), "192.0.2.1:9993".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:9993".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}

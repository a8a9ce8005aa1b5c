//! The daemon's side of the node channel: one task per set of controller replicas, keeping
//! one [`ChannelClient`] connected and every network of that set joined.
//!
//! A link's addresses are the user's (`--controller`, in order), then the replicas the
//! controller reported (`Replicas`) that are not among them; the learned ones are saved in
//! the state directory, so a restarted daemon knows every replica even when it was given only
//! one. A link tries its addresses in turn (the one that worked last first; the next one
//! as soon as an attempt fails or has had no answer for a second), backs off between rounds
//! (1 s doubling to 30 s, with jitter, reset after a session that lasted), and wakes early
//! when a network is joined or left. When a session that lasted breaks, the next round
//! starts within half a second, with the replica that broke tried last: the node fails over
//! to another replica rather than waiting out a backoff. Once connected it says `Hello` with
//! the host's local endpoints, joins each network with the revision it holds, and then:
//! - `Config`: checked by [`accept_config`] (signature against the network id, strictly
//!   newer than the revision held) and handed to the daemon, which caches it and gives it
//!   to the data plane;
//! - `Status`: recorded; `NOT_FOUND` is asked again every 30 s, and takes down a network
//!   the node runs (it was deleted);
//! - `Error`: answers the oldest join still waiting for an answer; that join is retried
//!   after 5 s;
//! - `Replicas`: the addresses of every replica, merged into the link's and saved.
//!
//! It also reports each joined network (`Report`: the host name, and how each peer is
//! reached) when a path changes and every 10 s, for the admin's view of the mesh.
//!
//! No other status tears a network down: statuses are not signed, so a spoofed
//! `ACCESS_DENIED` must not be able to stop a node that runs on a verified config. Peers
//! stop talking to a deauthorized node because *their* signed configs no longer list it.
//! A deleted network has nobody left to sign for it; a node whose network a spoofed
//! `NOT_FOUND` took down gets it back from the next replica that serves it (within 30 s).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use meshd_channel::protocol::{REPORT_INTERVAL, Report};
use meshd_channel::{ChannelClient, ControllerMessage, JoinStatus, Reach};
use meshd_proto::config::VerifyError;
use meshd_proto::{NetworkConfig, NetworkId, SignedConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Daemon, Wanted, stopped};

/// The controller's node-channel port when an address gives none (`meshd controller init
/// --listen` defaults to it).
pub const DEFAULT_CONTROLLER_PORT: u16 = 9994;
/// How long one connection attempt (name lookup, then QUIC handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an attempt goes unanswered before the next address is tried alongside it.
const STAGGER: Duration = Duration::from_secs(1);
/// Backoff between rounds of connection attempts.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff; a shorter one (a controller that
/// accepts and then closes at once) keeps it growing.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// When to ask again after a join failed (`Error`) or the network was `NOT_FOUND`.
const ERROR_RETRY: Duration = Duration::from_secs(5);
const NOT_FOUND_RETRY: Duration = Duration::from_secs(30);
/// Most local endpoints a controller keeps (`MAX_LOCAL_ENDPOINTS` in the controller).
const MAX_LOCAL_ENDPOINTS: usize = 8;
/// A session that lasted this long and then broke is followed by a new round at once (after
/// [`FAILOVER_JITTER`] at most) rather than after the backoff: the replica most likely died
/// and another one serves. A shorter one (a controller that accepts and then closes at once)
/// waits out the backoff, so it cannot make the link spin.
const FAILOVER_MIN_SESSION: Duration = Duration::from_secs(2);
/// Longest wait before failing over, so that the nodes of a replica that died do not all
/// knock on the next one in the same millisecond.
const FAILOVER_JITTER: Duration = Duration::from_millis(500);
/// How often a link looks for path changes to report.
const REPORT_CHECK: Duration = Duration::from_secs(1);
/// The least time between two reports of one network.
const REPORT_GAP: Duration = Duration::from_secs(2);
/// Most learned addresses a link keeps (what a controller may send).
const MAX_LEARNED: usize = meshd_channel::protocol::MAX_REPLICAS;

/// A controller replica's node-channel address as the user wrote it: `HOST:PORT`,
/// `[IPv6]:PORT`, or a bare host or IP for the default port. Names are resolved at each
/// connection attempt, so a replica may move.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ControllerAddr {
    host: String,
    port: u16,
}

/// Why a controller address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid controller address {0:?}: write it as HOST:PORT, e.g. ctl.example.com:9994")]
pub struct BadControllerAddr(String);

impl FromStr for ControllerAddr {
    type Err = BadControllerAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadControllerAddr(s.to_owned());
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return (sa.port() != 0)
                .then(|| Self {
                    host: sa.ip().to_string(),
                    port: sa.port(),
                })
                .ok_or_else(bad);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self {
                host: ip.to_string(),
                port: DEFAULT_CONTROLLER_PORT,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (s, DEFAULT_CONTROLLER_PORT),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !host_ok || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for ControllerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for ControllerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ControllerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a config from a controller was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigRefused {
    #[error("the signed config does not verify: {0}")]
    Invalid(#[from] VerifyError),
    #[error("config revision {offered} is not newer than revision {held}, which the node runs")]
    NotNewer { offered: u64, held: u64 },
}

/// The config inside `signed` if the node should switch to it: the signature verifies
/// against the key that hashes to `nwid`, and its revision is strictly newer than `held`
/// (so a lagging replica can never roll a node back). The revision that counts is the
/// signed one, not the `revision` field beside it in the message.
pub fn accept_config(
    nwid: NetworkId,
    held: Option<u64>,
    signed: &SignedConfig,
) -> Result<NetworkConfig, ConfigRefused> {
    let cfg = signed.verify(nwid)?;
    match held {
        Some(held) if cfg.revision <= held => Err(ConfigRefused::NotNewer {
            offered: cfg.revision,
            held,
        }),
        _ => Ok(cfg),
    }
}

/// The addresses this host is reachable at on its own networks, for the controller to
/// hand to peers: every non-loopback interface address with the data plane's UDP port.
/// Left out: the mesh's own interfaces (`mesh-*`), link-local addresses (useless without
/// an interface scope), and everything when the port is not known (0).
pub fn local_endpoints(port: u16) -> Vec<SocketAddr> {
    if port == 0 {
        return Vec::new();
    }
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces,
        Err(e) => {
            warn!(error = %e, "cannot list this host's addresses; reporting no local endpoints");
            return Vec::new();
        }
    };
    let mut out: Vec<SocketAddr> = interfaces
        .iter()
        .filter(|i| !i.is_loopback() && !i.name.starts_with("mesh-"))
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_unspecified(),
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    // IPv4 first, then in interface order; stable, so reconnecting does not churn the config.
    out.sort_by_key(|a| a.is_ipv6());
    out.dedup();
    out.truncate(MAX_LOCAL_ENDPOINTS);
    out
}

/// What the daemon shows about one controller address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrState {
    /// Not tried yet (another address of the set is in use, or the link just started).
    Idle,
    Connected {
        since: Instant,
    },
    /// Failing since `since` (when the first failed attempt after the last success began);
    /// `error` is the latest reason.
    Unreachable {
        since: Instant,
        error: String,
    },
}

/// One address of a link, as the link tries it and the daemon shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAddr {
    pub addr: ControllerAddr,
    /// Reported by a controller (`Replicas`) rather than given by the user.
    pub learned: bool,
    pub state: AddrState,
}

/// A link's addresses: the user's in their order, then the learned ones not among them,
/// without duplicates. States carry over from `old` by address; an address `old` has
/// connected stays (as learned) until its session ends, even when no longer reported.
pub fn merge_addresses(
    user: &[ControllerAddr],
    learned: &[ControllerAddr],
    old: &[LinkAddr],
) -> Vec<LinkAddr> {
    let mut out: Vec<LinkAddr> = Vec::with_capacity(user.len() + learned.len());
    let candidates = user
        .iter()
        .map(|a| (a, false))
        .chain(learned.iter().map(|a| (a, true)))
        .chain(
            old.iter()
                .filter(|o| matches!(o.state, AddrState::Connected { .. }))
                .map(|o| (&o.addr, true)),
        );
    for (addr, is_learned) in candidates {
        if out.iter().any(|o| o.addr == *addr) {
            continue;
        }
        let state = old
            .iter()
            .find(|o| o.addr == *addr)
            .map_or(AddrState::Idle, |o| o.state.clone());
        out.push(LinkAddr {
            addr: addr.clone(),
            learned: is_learned,
            state,
        });
    }
    out
}

/// The replicas learned for a link whose user-given addresses are `user`: what each of them
/// led to, in order, without duplicates.
pub fn learned_for(
    learned: &BTreeMap<ControllerAddr, Vec<ControllerAddr>>,
    user: &[ControllerAddr],
) -> Vec<ControllerAddr> {
    let mut out: Vec<ControllerAddr> = Vec::new();
    for addr in user.iter().filter_map(|u| learned.get(u)).flatten() {
        if !out.contains(addr) {
            out.push(addr.clone());
        }
    }
    out
}

/// The addresses of a `Replicas` message that the link can use: those that parse as
/// controller addresses, without duplicates, at most [`MAX_LEARNED`].
pub fn parse_replicas(addresses: &[String]) -> Vec<ControllerAddr> {
    let mut out: Vec<ControllerAddr> = Vec::new();
    for text in addresses {
        match text.parse::<ControllerAddr>() {
            Ok(addr) if !out.contains(&addr) => out.push(addr),
            Ok(_) => {}
            Err(e) => debug!(error = %e, "a controller reported an unusable replica address"),
        }
    }
    out.truncate(MAX_LEARNED);
    out
}

/// The order of a round of attempts: from the address that worked `last` on, in the list's
/// order, with the one whose session just `broke` moved to the end.
fn attempt_order(
    addrs: &[ControllerAddr],
    last: Option<&ControllerAddr>,
    broke: Option<&ControllerAddr>,
) -> Vec<ControllerAddr> {
    let first = last
        .and_then(|l| addrs.iter().position(|a| a == l))
        .unwrap_or(0);
    let mut order: Vec<ControllerAddr> = addrs[first..]
        .iter()
        .chain(&addrs[..first])
        .cloned()
        .collect();
    if let Some(broke) = broke
        && let Some(i) = order.iter().position(|a| a == broke)
    {
        let addr = order.remove(i);
        order.push(addr);
    }
    order
}

impl AddrState {
    fn failed(&self, now: Instant, error: String) -> Self {
        let since = match self {
            AddrState::Unreachable { since, .. } => *since,
            _ => now,
        };
        AddrState::Unreachable { since, error }
    }
}

/// A link's identity in the daemon: its controller set and a unique id, so that a link
/// replaced by another for the same set notices it is no longer wanted.
#[derive(Debug, Clone)]
pub(super) struct LinkKey {
    pub controllers: Vec<ControllerAddr>,
    pub id: u64,
}

/// Runs a link until the daemon stops or no longer wants it.
pub(super) async fn run(daemon: Arc<Daemon>, key: LinkKey, wake: Arc<Notify>) {
    let mut stop = daemon.stop.clone();
    let mut backoff = Backoff::new();
    // The address that worked last (tried first), and the one whose session just broke
    // (tried last).
    let mut last: Option<ControllerAddr> = None;
    let mut broke: Option<ControllerAddr> = None;
    loop {
        if *stop.borrow() || daemon.link_networks(&key).is_none() {
            return;
        }
        // Read each round: the learned addresses change while connected.
        let Some(addrs) = daemon.link_addresses(&key) else {
            return;
        };
        let order = attempt_order(&addrs, last.as_ref(), broke.take().as_ref());
        let connected = tokio::select! {
            c = connect_any(&daemon, &key, order) => c,
            () = stopped(&mut stop) => return,
        };
        let mut failover = false;
        if let Some((addr, client)) = connected {
            info!(controller = %addr, remote = %client.remote_address(), "connected to controller");
            let began = Instant::now();
            daemon.set_controller_state(&key, &addr, |_| AddrState::Connected { since: began });
            let session = Session {
                daemon: &daemon,
                key: &key,
                client,
                joined: BTreeSet::new(),
                sent: BTreeMap::new(),
                pending: VecDeque::new(),
                retry: BTreeMap::new(),
                reach_sent: None,
                relaying: false,
                reported: BTreeMap::new(),
                report_check: Instant::now() + REPORT_CHECK,
            };
            let end = session.run(&wake, &mut stop).await;
            daemon.session_ended();
            match end {
                SessionEnd::Stop => return,
                SessionEnd::Failed(error) => {
                    warn!(controller = %addr, %error, "controller channel lost");
                    daemon.set_controller_state(&key, &addr, |s| s.failed(Instant::now(), error));
                }
            }
            let lasted = began.elapsed();
            if lasted >= STABLE_SESSION {
                backoff = Backoff::new();
            }
            failover = lasted >= FAILOVER_MIN_SESSION;
            broke = Some(addr.clone());
            last = Some(addr);
        }
        let delay = if failover {
            jitter(FAILOVER_JITTER)
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            // A join or leave: try now rather than at the end of the backoff.
            () = wake.notified() => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// One round: tries `order` in turn, starting the next attempt when one fails or after
/// [`STAGGER`] without an answer (so a dead replica first in line costs a second, not
/// [`CONNECT_TIMEOUT`]). The first connection made wins; failures are recorded.
async fn connect_any(
    daemon: &Arc<Daemon>,
    key: &LinkKey,
    order: Vec<ControllerAddr>,
) -> Option<(ControllerAddr, ChannelClient)> {
    let mut waiting = order.into_iter();
    let mut running = FuturesUnordered::new();
    let attempt = |addr: ControllerAddr| async move {
        let started = Instant::now();
        let result = connect(daemon, &addr).await;
        (addr, started, result)
    };
    loop {
        if running.is_empty() {
            running.push(attempt(waiting.next()?));
        }
        let stagger = tokio::time::sleep(STAGGER);
        tokio::select! {
            Some((addr, started, result)) = running.next() => match result {
                Ok(client) => return Some((addr, client)),
                Err(error) => {
                    debug!(controller = %addr, %error, "cannot connect to controller");
                    daemon.set_controller_state(key, &addr, |s| s.failed(started, error));
                    if let Some(next) = waiting.next() {
                        running.push(attempt(next));
                    }
                }
            },
            () = stagger, if waiting.len() > 0 => {
                if let Some(next) = waiting.next() {
                    running.push(attempt(next));
                }
            }
        }
    }
}

/// Resolves `addr` and connects to the first of its addresses that answers.
async fn connect(daemon: &Arc<Daemon>, addr: &ControllerAddr) -> Result<ChannelClient, String> {
    let target = addr.to_string();
    let resolved: Vec<SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(&target)).await {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(e)) => return Err(format!("cannot resolve {target}: {e}")),
            Err(_) => return Err(format!("cannot resolve {target}: timed out")),
        };
    let endpoints = local_endpoints(daemon.port);
    let mut last = format!("{target} resolves to no address");
    for server in resolved.into_iter().take(4) {
        let identity = daemon.state.identity();
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            ChannelClient::connect(server, identity, daemon.port, endpoints.clone()),
        )
        .await
        {
            Ok(Ok(client)) => {
                let Some(key) = client.server_key() else {
                    last = format!("{server} presented no Ed25519 key");
                    client.close();
                    continue;
                };
                match daemon.check_pin(server, &key).await {
                    Ok(()) => return Ok(client),
                    Err(refused) => {
                        warn!(%server, "{refused}");
                        client.close();
                        last = refused;
                    }
                }
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => {
                last = format!(
                    "no answer from {server} within {} s",
                    CONNECT_TIMEOUT.as_secs()
                );
            }
        }
    }
    Err(last)
}

enum SessionEnd {
    /// The daemon stops, or no longer wants this link.
    Stop,
    Failed(String),
}

/// One connection's worth of a link.
struct Session<'a> {
    daemon: &'a Arc<Daemon>,
    key: &'a LinkKey,
    client: ChannelClient,
    /// Networks joined on this connection.
    joined: BTreeSet<NetworkId>,
    /// For each network, the [`Wanted::requests`] count of the last `Join` sent: a new
    /// `meshd join` makes the link ask again at once.
    sent: BTreeMap<NetworkId, u64>,
    /// Joins not answered yet, oldest first: an `Error` (which names no network) answers
    /// the oldest.
    pending: VecDeque<NetworkId>,
    /// Networks to join again once their time comes.
    retry: BTreeMap<NetworkId, Instant>,
    /// How the node is reached, as last reported on this connection.
    reach_sent: Option<Reach>,
    /// The controller sent a relay credential, so it knows `Reach` too.
    relaying: bool,
    /// The last report sent of each joined network, and when.
    reported: BTreeMap<NetworkId, (Instant, Report)>,
    /// When to look for news to report next.
    report_check: Instant,
}

impl Session<'_> {
    async fn run(mut self, wake: &Notify, stop: &mut watch::Receiver<bool>) -> SessionEnd {
        loop {
            let Some(wanted) = self.daemon.link_networks(self.key) else {
                return SessionEnd::Stop;
            };
            if let Err(e) = self.sync(&wanted).await {
                return SessionEnd::Failed(e.to_string());
            }
            if Instant::now() >= self.report_check {
                if let Err(e) = self.send_reports().await {
                    return SessionEnd::Failed(e.to_string());
                }
                self.report_check = Instant::now() + REPORT_CHECK;
            }
            let retry_at = self.retry.values().min().copied();
            tokio::select! {
                msg = self.client.recv() => match msg {
                    Ok(msg) => self.on_message(msg).await,
                    Err(e) => return SessionEnd::Failed(e.to_string()),
                },
                () = wake.notified() => {}
                () = sleep_until(retry_at) => {}
                () = tokio::time::sleep_until(self.report_check) => {}
                () = stopped(stop) => {
                    self.client.close();
                    return SessionEnd::Stop;
                }
            }
        }
    }

    /// Joins what is wanted and not joined (unless waiting to retry, and `meshd join` did
    /// not ask again), leaves what is joined and no longer wanted.
    async fn sync(&mut self, wanted: &[Wanted]) -> Result<(), meshd_channel::ChannelError> {
        // Reported before joins, so that a join records where peers reach the node.
        let reach = self.daemon.reach_for(self.key);
        let worth_saying = reach.public.is_some() || reach.relay;
        if self.relaying && worth_saying && self.reach_sent != Some(reach) {
            self.client.reach(reach).await?;
            self.reach_sent = Some(reach);
        }
        let now = Instant::now();
        let is_wanted = |n: &NetworkId| wanted.iter().any(|w| w.network == *n);
        self.retry.retain(|n, at| *at > now && is_wanted(n));
        self.sent.retain(|n, _| is_wanted(n));
        for w in wanted {
            let asked_again = self.sent.get(&w.network).is_some_and(|r| *r != w.requests);
            let due = !self.joined.contains(&w.network) && !self.retry.contains_key(&w.network);
            if due || asked_again {
                debug!(network = %w.network, have_revision = w.revision, "joining");
                self.client.join(w.network, w.revision).await?;
                self.retry.remove(&w.network);
                self.joined.insert(w.network);
                self.sent.insert(w.network, w.requests);
                self.pending.push_back(w.network);
            }
        }
        let gone: Vec<NetworkId> = self
            .joined
            .iter()
            .filter(|n| !is_wanted(n))
            .copied()
            .collect();
        for network in gone {
            debug!(%network, "leaving");
            self.client.leave(network).await?;
            self.joined.remove(&network);
            self.pending.retain(|n| *n != network);
        }
        Ok(())
    }

    /// Reports each joined network when a path changed (at most every [`REPORT_GAP`]) or
    /// every [`REPORT_INTERVAL`] (which keeps the member online in the admin's view).
    async fn send_reports(&mut self) -> Result<(), meshd_channel::ChannelError> {
        let now = Instant::now();
        self.reported.retain(|n, _| self.joined.contains(n));
        for network in self.joined.clone() {
            let report = self.daemon.report(network);
            let due = self.reported.get(&network).is_none_or(|(at, before)| {
                let since = now.saturating_duration_since(*at);
                // A new delegated prefix goes at once: it moves a route on every peer.
                since >= REPORT_INTERVAL
                    || (since >= REPORT_GAP && !before.same_paths(&report))
                    || before.delegated_prefix != report.delegated_prefix
            });
            if due {
                self.client.report(report.clone()).await?;
                self.reported.insert(network, (now, report));
            }
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: ControllerMessage) {
        match msg {
            ControllerMessage::Status { network, status } => {
                self.pending.retain(|n| *n != network);
                self.daemon.on_status(network, status);
                if status == JoinStatus::NotFound {
                    // The controller stops following it; ask again later (a lagging
                    // replica may not know the network yet). One that had a config is gone.
                    self.joined.remove(&network);
                    self.retry.insert(network, Instant::now() + NOT_FOUND_RETRY);
                    self.daemon.on_network_gone(network).await;
                }
            }
            ControllerMessage::Config {
                network,
                revision,
                signed,
            } => {
                self.pending.retain(|n| *n != network);
                let named = self
                    .daemon
                    .on_config(network, revision, SignedConfig::from_bytes(signed))
                    .await;
                // The replicas a verified config names: their keys pinned, and the link's
                // list from now on.
                if let Some(replicas) = named {
                    self.daemon.pin_named_replicas(network, &replicas).await;
                    let addresses: Vec<String> = replicas.into_iter().map(|r| r.address).collect();
                    self.daemon.on_replicas(self.key, &addresses).await;
                }
            }
            ControllerMessage::Replicas { addresses } => {
                self.daemon.on_replicas(self.key, &addresses).await;
            }
            ControllerMessage::RelayCredential { expires, key } => {
                self.relaying = true;
                self.daemon.on_relay_credential(self.key, expires, key);
            }
            ControllerMessage::Error { message } => match self.pending.pop_front() {
                Some(network) => {
                    warn!(%network, error = %message, "the controller refused the join; retrying");
                    self.joined.remove(&network);
                    self.retry.insert(network, Instant::now() + ERROR_RETRY);
                    self.daemon.on_join_error(network, message);
                }
                None => warn!(error = %message, "controller error"),
            },
            // ChannelClient::recv answers challenges itself.
            ControllerMessage::Challenge { .. } => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A random duration up to `max`.
fn jitter(max: Duration) -> Duration {
    max.mul_f64(f64::from(getrandom::u32().unwrap_or(0) % 1001) / 1000.0)
}

/// Exponential backoff with ±20 % jitter, so that nodes cut off together do not all come
/// back in the same second.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let jitter = f64::from(getrandom::u32().unwrap_or(0) % 401) / 1000.0 + 0.8;
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::test_support::signed_config;

    #[test]
    fn controller_addresses_parse_and_print() {
        let cases = [
            ("127.0.0.1:9994", "127.0.0.1:9994"),
            ("[::1]:7000", "[::1]:7000"),
            ("::1", "[::1]:9994"),
            ("10.0.0.5", "10.0.0.5:9994"),
            ("Ctl.Example.com:9994", "ctl.example.com:9994"),
            ("ctl", "ctl:9994"),
        ];
        for (input, shown) in cases {
            let addr: ControllerAddr = input.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(addr.to_string(), shown);
            assert_eq!(shown.parse::<ControllerAddr>().unwrap(), addr);
        }
        for bad in [
            "",
            ":9994",
            "host:",
            "host:0",
            "host:99999",
            "a b:1",
            "1.2.3.4:0",
            "x:y:z",
        ] {
            assert!(bad.parse::<ControllerAddr>().is_err(), "{bad:?} accepted");
        }
        let json = serde_json::to_string(&vec!["[::1]:7000".parse::<ControllerAddr>().unwrap()]);
        assert_eq!(json.unwrap(), r#"["[::1]:7000"]"#);
    }

    #[test]
    fn only_strictly_newer_verified_configs_are_accepted() {
        let (key, cfg, signed) = signed_config(1, 10);
        let nwid = key.network_id();
        assert_eq!(accept_config(nwid, None, &signed).unwrap(), cfg);
        assert_eq!(accept_config(nwid, Some(9), &signed).unwrap(), cfg);
        assert!(matches!(
            accept_config(nwid, Some(10), &signed),
            Err(ConfigRefused::NotNewer {
                offered: 10,
                held: 10
            })
        ));
        assert!(matches!(
            accept_config(nwid, Some(11), &signed),
            Err(ConfigRefused::NotNewer {
                offered: 10,
                held: 11
            })
        ));
        // Signed by another network's key: refused whatever the revision.
        let (_, _, foreign) = signed_config(2, 99);
        assert!(matches!(
            accept_config(nwid, Some(1), &foreign),
            Err(ConfigRefused::Invalid(VerifyError::WrongNetworkKey { .. }))
        ));
        let mut bytes = signed.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            accept_config(nwid, None, &SignedConfig::from_bytes(bytes)),
            Err(ConfigRefused::Invalid(VerifyError::BadSignature))
        ));
    }

    fn addrs(list: &[&str]) -> Vec<ControllerAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn shown(list: &[LinkAddr]) -> Vec<(String, bool)> {
        list.iter()
            .map(|a| (a.addr.to_string(), a.learned))
            .collect()
    }

    #[test]
    fn learned_addresses_follow_the_users_without_duplicates() {
        let user = addrs(&["ctl.example.com:9994", "10.0.0.1:9994"]);
        let learned = addrs(&["10.0.0.1:9994", "10.0.0.2:9994", "10.0.0.3:9994"]);
        let merged = merge_addresses(&user, &learned, &[]);
        assert_eq!(
            shown(&merged),
            vec![
                ("ctl.example.com:9994".to_owned(), false),
                ("10.0.0.1:9994".to_owned(), false),
                ("10.0.0.2:9994".to_owned(), true),
                ("10.0.0.3:9994".to_owned(), true),
            ]
        );
        assert!(merged.iter().all(|a| a.state == AddrState::Idle));

        // States carry over by address; a connected replica no longer reported stays
        // until its session ends, one that is not connected goes.
        let now = Instant::now();
        let mut old = merged;
        old[2].state = AddrState::Connected { since: now };
        old[3].state = AddrState::Unreachable {
            since: now,
            error: "down".into(),
        };
        old[1].state = AddrState::Unreachable {
            since: now,
            error: "down".into(),
        };
        let merged = merge_addresses(&user, &addrs(&["10.0.0.4:9994"]), &old);
        assert_eq!(
            shown(&merged),
            vec![
                ("ctl.example.com:9994".to_owned(), false),
                ("10.0.0.1:9994".to_owned(), false),
                ("10.0.0.4:9994".to_owned(), true),
                ("10.0.0.2:9994".to_owned(), true),
            ]
        );
        assert_eq!(merged[1].state, old[1].state);
        assert_eq!(merged[2].state, AddrState::Idle);
        assert_eq!(merged[3].state, AddrState::Connected { since: now });
        // Once that session is over, it drops out.
        let mut old = merged;
        old[3].state = AddrState::Idle;
        let merged = merge_addresses(&user, &addrs(&["10.0.0.4:9994"]), &old);
        assert_eq!(merged.len(), 3);
    }

    #[test]
    fn learned_lists_are_kept_per_user_address() {
        let mut map = BTreeMap::new();
        map.insert("a:1".parse().unwrap(), addrs(&["a:1", "b:1", "c:1"]));
        map.insert("z:1".parse().unwrap(), addrs(&["c:1", "y:1"]));
        assert_eq!(
            learned_for(&map, &addrs(&["a:1"])),
            addrs(&["a:1", "b:1", "c:1"])
        );
        assert_eq!(
            learned_for(&map, &addrs(&["z:1", "a:1"])),
            addrs(&["c:1", "y:1", "a:1", "b:1"])
        );
        assert!(learned_for(&map, &addrs(&["q:1"])).is_empty());
    }

    #[test]
    fn reported_replicas_are_parsed_deduplicated_and_bounded() {
        let reported: Vec<String> = [
            "10.0.0.1:9994",
            "http://10.0.0.9:9994",
            "10.0.0.1:9994",
            "Ctl-2.Example.com:9994",
            "[::1]:9994",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            parse_replicas(&reported),
            addrs(&["10.0.0.1:9994", "ctl-2.example.com:9994", "[::1]:9994"])
        );
        let many: Vec<String> = (0..40).map(|i| format!("10.0.1.{i}:9994")).collect();
        assert_eq!(parse_replicas(&many).len(), MAX_LEARNED);
    }

    #[test]
    fn a_round_starts_with_the_last_good_address_and_ends_with_the_broken_one() {
        let list = addrs(&["a:1", "b:1", "c:1", "d:1"]);
        assert_eq!(attempt_order(&list, None, None), list);
        let b = "b:1".parse().unwrap();
        assert_eq!(
            attempt_order(&list, Some(&b), None),
            addrs(&["b:1", "c:1", "d:1", "a:1"])
        );
        // b's session broke: the next round starts with c, and b is tried last.
        assert_eq!(
            attempt_order(&list, Some(&b), Some(&b)),
            addrs(&["c:1", "d:1", "a:1", "b:1"])
        );
        // Gone from the list (a learned address no longer reported): from the start.
        let gone = "x:1".parse().unwrap();
        assert_eq!(attempt_order(&list, Some(&gone), Some(&gone)), list);
    }

    #[test]
    fn failover_waits_less_than_a_second() {
        let waits: Vec<Duration> = (0..200).map(|_| jitter(FAILOVER_JITTER)).collect();
        assert!(waits.iter().all(|w| *w <= FAILOVER_JITTER));
        assert!(waits.iter().any(|w| *w != waits[0]), "spread out");
    }

    #[test]
    fn local_endpoints_skip_loopback_and_unknown_ports() {
        assert!(local_endpoints(0).is_empty());
        let found = local_endpoints(9993);
        assert!(found.len() <= MAX_LOCAL_ENDPOINTS);
        for a in &found {
            assert_eq!(a.port(), 9993);
            assert!(!a.ip().is_loopback(), "{a}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_MIN.mul_f64(0.8) && delays[0] <= BACKOFF_MIN.mul_f64(1.2));
        assert!(delays[1] >= Duration::from_millis(1600));
        for d in &delays {
            assert!(*d <= BACKOFF_MAX.mul_f64(1.2));
        }
        assert!(delays[7] >= BACKOFF_MAX.mul_f64(0.8));
    }
}

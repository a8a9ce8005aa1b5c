//! The daemon's side of the node channel: one task per set of controller replicas, keeping
//! one [`ChannelClient`] connected and every network of that set joined.
//!
//! A link tries its addresses in turn (the one that worked last first), backs off between
//! rounds (1 s doubling to 30 s, with jitter, reset after a session that lasted), and wakes
//! early when a network is joined or left. Once connected it says `Hello` with the host's
//! local endpoints, joins each network with the revision it holds, and then:
//! - `Config`: checked by [`accept_config`] (signature against the network id, strictly
//!   newer than the revision held) and handed to the daemon, which caches it and gives it
//!   to the data plane;
//! - `Status`: recorded; `NOT_FOUND` is asked again every 30 s;
//! - `Error`: answers the oldest join still waiting for an answer; that join is retried
//!   after 5 s.
//!
//! A status never tears a network down: statuses are not signed, so a spoofed
//! `ACCESS_DENIED` must not be able to stop a node that runs on a verified config. Peers
//! stop talking to a deauthorized node because *their* signed configs no longer list it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use meshd_controller::channel::{ChannelClient, ControllerMessage, JoinStatus};
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
    let mut first = 0;
    loop {
        if *stop.borrow() || daemon.link_networks(&key).is_none() {
            return;
        }
        let mut connected = None;
        for step in 0..key.controllers.len() {
            let idx = (first + step) % key.controllers.len();
            let addr = &key.controllers[idx];
            let started = Instant::now();
            let attempt = tokio::select! {
                r = connect(&daemon, addr) => r,
                () = stopped(&mut stop) => return,
            };
            match attempt {
                Ok(client) => {
                    connected = Some((idx, client));
                    break;
                }
                Err(error) => {
                    debug!(controller = %addr, %error, "cannot connect to controller");
                    daemon.set_controller_state(&key, idx, |s| s.failed(started, error));
                }
            }
        }
        if let Some((idx, client)) = connected {
            first = idx;
            let addr = &key.controllers[idx];
            info!(controller = %addr, remote = %client.remote_address(), "connected to controller");
            let began = Instant::now();
            daemon.set_controller_state(&key, idx, |_| AddrState::Connected { since: began });
            let session = Session {
                daemon: &daemon,
                key: &key,
                client,
                joined: BTreeSet::new(),
                sent: BTreeMap::new(),
                pending: VecDeque::new(),
                retry: BTreeMap::new(),
            };
            match session.run(&wake, &mut stop).await {
                SessionEnd::Stop => return,
                SessionEnd::Failed(error) => {
                    warn!(controller = %addr, %error, "controller channel lost");
                    daemon.set_controller_state(&key, idx, |s| s.failed(Instant::now(), error));
                }
            }
            if began.elapsed() >= STABLE_SESSION {
                backoff = Backoff::new();
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            // A join or leave: try now rather than at the end of the backoff.
            () = wake.notified() => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Resolves `addr` and connects to the first of its addresses that answers.
async fn connect(daemon: &Daemon, addr: &ControllerAddr) -> Result<ChannelClient, String> {
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
            Ok(Ok(client)) => return Ok(client),
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
            let retry_at = self.retry.values().min().copied();
            tokio::select! {
                msg = self.client.recv() => match msg {
                    Ok(msg) => self.on_message(msg).await,
                    Err(e) => return SessionEnd::Failed(e.to_string()),
                },
                () = wake.notified() => {}
                () = sleep_until(retry_at) => {}
                () = stopped(stop) => {
                    self.client.close();
                    return SessionEnd::Stop;
                }
            }
        }
    }

    /// Joins what is wanted and not joined (unless waiting to retry, and `meshd join` did
    /// not ask again), leaves what is joined and no longer wanted.
    async fn sync(
        &mut self,
        wanted: &[Wanted],
    ) -> Result<(), meshd_controller::channel::ChannelError> {
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

    async fn on_message(&mut self, msg: ControllerMessage) {
        match msg {
            ControllerMessage::Status { network, status } => {
                self.pending.retain(|n| *n != network);
                if status == JoinStatus::NotFound {
                    // The controller stops following it; ask again later (a lagging
                    // replica may not know the network yet).
                    self.joined.remove(&network);
                    self.retry.insert(network, Instant::now() + NOT_FOUND_RETRY);
                }
                self.daemon.on_status(network, status);
            }
            ControllerMessage::Config {
                network,
                revision,
                signed,
            } => {
                self.pending.retain(|n| *n != network);
                self.daemon
                    .on_config(network, revision, SignedConfig::from_bytes(signed))
                    .await;
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
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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

//! A controller replica as a running service: `meshd controller init` lays out its data
//! directory, `meshd controller run` serves from it.
//!
//! Ports: the node channel on UDP `listen`, replication on TCP at the same address, the relay
//! on UDP at the next port, the admin API on TCP `api_listen`.
//!
//! ```text
//! DIR/                mode 0700
//!   replica.json      id, listen address (node channel on UDP, replication on TCP),
//!                     advertised address, admin API listen address, whether it joins
//!   replica.key       the replica's Ed25519 seed (its identity on the node channel and in
//!                     replication), mode 0600
//!   api.url api.token what admin clients read (see `datadir`); the token is the cluster's,
//!                     the same in every replica's directory
//!   cluster.secret    what replicas prove to each other besides their keys, the same in
//!                     every replica's directory, mode 0600
//!   api.crt api.key   the admin API's certificate, for HTTPS off loopback (`api_tls`)
//!   raft.redb         the replicated log, vote and snapshots
//! ```

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{self, ApiOptions};
use crate::api_tls::ApiFingerprint;
use crate::channel;
use crate::datadir::{self, DataDirError};
use crate::raft::{ReplicaCredentials, ReplicaKey};
use crate::replica::{Replica, ReplicaOptions};

const REPLICA_FILE: &str = "replica.json";
const KEY_FILE: &str = "replica.key";

/// What `init` records about a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSettings {
    pub id: u64,
    /// The node channel (QUIC) listens here on UDP, replication between replicas on TCP.
    pub listen: SocketAddr,
    /// TCP address of the admin API.
    pub api_listen: SocketAddr,
    /// Where nodes and the other replicas reach `listen` (`host:port`). Default: `listen`,
    /// or `127.0.0.1:PORT` when its IP is unspecified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Made with `init --join`: wait to be added to an existing cluster instead of forming
    /// a cluster of one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
    /// What the relay forwards for one member, in Mbit/s; 0 for no limit. Default
    /// ([`DEFAULT_RELAY_LIMIT_MBIT`]) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_limit_mbit: Option<u64>,
}

/// The relay's default rate per member: enough for a relayed bulk transfer, not for a
/// member to flood a replica.
pub const DEFAULT_RELAY_LIMIT_MBIT: u64 = 100;

impl ReplicaSettings {
    /// The relay's limits as this replica is set up.
    pub fn relay_limits(&self) -> meshd_proto::reach::relay::RelayLimits {
        let defaults = meshd_proto::reach::relay::RelayLimits::default();
        match self.relay_limit_mbit.unwrap_or(DEFAULT_RELAY_LIMIT_MBIT) {
            0 => meshd_proto::reach::relay::RelayLimits {
                bytes_per_second: u64::MAX / 4,
                burst: u64::MAX / 4,
                ..defaults
            },
            mbit => {
                let bytes_per_second = mbit.saturating_mul(125_000);
                meshd_proto::reach::relay::RelayLimits {
                    bytes_per_second,
                    // A fifth of a second at full rate, at least two megabytes.
                    burst: (bytes_per_second / 5).max(2_000_000),
                    ..defaults
                }
            }
        }
    }
}

/// The address a replica listening on `listen` is reached at when it advertises none.
pub fn default_advertise(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        // `[::]` listens on IPv4 too; 127.0.0.1 works for either.
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

impl ReplicaSettings {
    /// Where nodes and other replicas reach this replica (`host:port`).
    pub fn advertise_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| default_advertise(self.listen))
    }

    /// The URL clients use for the API: https:// unless it listens on loopback only; an
    /// unspecified listen address is reached through loopback on this host.
    pub fn api_url(&self) -> String {
        let ip = match self.api_listen.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let scheme = if self.api_tls() { "https" } else { "http" };
        format!("{scheme}://{}", SocketAddr::new(ip, self.api_listen.port()))
    }

    /// Whether the admin API speaks HTTPS: whenever it listens beyond loopback.
    pub fn api_tls(&self) -> bool {
        crate::api_tls::needs_tls(self.api_listen.ip())
    }

    /// The names the admin API's certificate carries: its listen address, or loopback's
    /// (what `api.url` names) when that is unspecified, and the advertised host.
    fn certificate_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.api_listen.ip().is_unspecified() {
            names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
        } else {
            names.push(self.api_listen.ip().to_string());
        }
        if let Some((host, _)) = self.advertise.as_deref().and_then(|a| a.rsplit_once(':')) {
            names.push(host.trim_matches(['[', ']']).to_owned());
        }
        names
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{} already holds a controller replica; pick another --data directory", .0.display())]
    AlreadyInitialized(PathBuf),
    #[error("no controller replica in {}; run `meshd controller init --data {}` first", .0.display(), .0.display())]
    NotInitialized(PathBuf),
    #[error("{} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot open the replicated store: {0}")]
    Replica(String),
    #[error("replica in {}: {source}", dir.display())]
    Store {
        dir: PathBuf,
        source: crate::raft::owner::OwnerError,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// What `init` made that its user needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Initialized {
    /// The replica's key: `replica add --key` names it.
    pub key: ReplicaKey,
    /// The admin API certificate's fingerprint, which clients pin (`--fingerprint`).
    pub api_fingerprint: ApiFingerprint,
}

/// Creates a new cluster's first replica: a fresh admin token and cluster secret.
pub fn init(dir: &Path, settings: &ReplicaSettings) -> Result<Initialized, ServiceError> {
    init_with_token(dir, settings, &datadir::new_token(), &datadir::new_token())
}

/// Creates a new replica's data directory with the cluster's admin `token` and
/// `cluster_secret` (a replica that joins holds those of the cluster it joins).
pub fn init_with_token(
    dir: &Path,
    settings: &ReplicaSettings,
    token: &str,
    cluster_secret: &str,
) -> Result<Initialized, ServiceError> {
    if dir.join(REPLICA_FILE).exists() {
        return Err(ServiceError::AlreadyInitialized(dir.to_owned()));
    }
    datadir::write_api_info(dir, &settings.api_url(), token)?;
    datadir::write_cluster_secret(dir, cluster_secret)?;
    let api_fingerprint = crate::api_tls::ensure_certificate(dir, &settings.certificate_names())?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ServiceError::Io {
        what: "read the OS random source".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    datadir::write_atomically(&dir.join(KEY_FILE), &hex, 0o600)?;
    crate::raft::owner::stamp(dir, settings.id).map_err(|e| ServiceError::Store {
        dir: dir.to_owned(),
        source: e.into(),
    })?;
    let json = serde_json::to_string_pretty(settings).map_err(|e| ServiceError::Damaged {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    // Written last: its presence means the directory is complete.
    datadir::write_atomically(&dir.join(REPLICA_FILE), &json, 0o644)?;
    Ok(Initialized {
        key: ReplicaCredentials {
            seed,
            cluster_secret: cluster_secret.into(),
        }
        .key(),
        api_fingerprint,
    })
}

/// The cluster secret in `dir`; a directory from before secrets were separate from the
/// admin token gets the one every replica of its cluster derives from the token.
fn cluster_secret(dir: &Path, token: &str) -> Result<String, ServiceError> {
    if let Some(secret) = datadir::read_cluster_secret(dir)? {
        return Ok(secret);
    }
    let secret = datadir::legacy_cluster_secret(token);
    datadir::write_cluster_secret(dir, &secret)?;
    tracing::info!(
        "wrote {}/cluster.secret, derived from the admin token",
        dir.display()
    );
    Ok(secret)
}

/// Reads a replica's settings and key seed.
pub fn load(dir: &Path) -> Result<(ReplicaSettings, [u8; 32]), ServiceError> {
    let path = dir.join(REPLICA_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ServiceError::NotInitialized(dir.to_owned()));
        }
        Err(e) => return Err(io(format!("read {}", path.display()))(e)),
    };
    let settings: ReplicaSettings =
        serde_json::from_str(&text).map_err(|e| ServiceError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let key_path = dir.join(KEY_FILE);
    let key_hex =
        std::fs::read_to_string(&key_path).map_err(io(format!("read {}", key_path.display())))?;
    let key_hex = key_hex.trim().as_bytes();
    // Checked as bytes: any other byte, multi-byte UTF-8 included, is damage to report.
    if key_hex.len() != 64 || !key_hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(ServiceError::Damaged {
            path: key_path,
            reason: "expected 64 hex digits (the replica's key); restore the file from a \
                     backup, or remove this replica from the cluster and init a new one"
                .into(),
        });
    }
    let mut seed = [0u8; 32];
    for (b, pair) in seed.iter_mut().zip(key_hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        *b = digit(pair[0]) << 4 | digit(pair[1]);
    }
    Ok((settings, seed))
}

/// What a running replica listens on, once bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub api: SocketAddr,
    /// The admin API's certificate, when it speaks HTTPS.
    pub api_fingerprint: Option<ApiFingerprint>,
    /// The replica's key, which the others pin.
    pub key: ReplicaKey,
    /// UDP: the node channel.
    pub channel: SocketAddr,
    /// TCP, the same address as `channel`: replication between replicas.
    pub replication: SocketAddr,
    /// UDP, the next port after `channel`'s: reflect requests and relaying.
    pub relay: SocketAddr,
}

/// Serves a replica from `dir` until `shutdown` resolves: the replicated store, the admin
/// API, the node channel (UDP) and the replication endpoints (TCP, same address). `on_bound`
/// runs once every socket is bound (the CLI prints it; tests learn the ports).
pub async fn run(
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound) + Send,
) -> Result<(), ServiceError> {
    let (settings, seed) = load(dir)?;
    let (url, token) = datadir::read_api_info(dir)?;
    // A directory from before HTTPS off loopback says http:// where the API now speaks
    // HTTPS: clients reading it (`--data DIR`) must find the API as it is.
    if url != settings.api_url() {
        datadir::write_api_info(dir, &settings.api_url(), &token)?;
    }
    let credentials = ReplicaCredentials {
        seed,
        cluster_secret: cluster_secret(dir, &token)?.into(),
    };
    let api_tls = if settings.api_tls() {
        crate::api_tls::ensure_certificate(dir, &settings.certificate_names())?;
        Some(crate::api_tls::server_config(dir)?)
    } else {
        None
    };
    let api_fingerprint = match api_tls {
        Some(_) => Some(crate::api_tls::read_fingerprint(dir)?),
        None => None,
    };
    crate::raft::owner::check(dir, settings.id).map_err(|source| ServiceError::Store {
        dir: dir.to_owned(),
        source,
    })?;
    let listener = tokio::net::TcpListener::bind(settings.api_listen)
        .await
        .map_err(io(format!(
            "listen on {} for the admin API",
            settings.api_listen
        )))?;
    let api_addr = listener.local_addr().map_err(io("read the API address"))?;
    let endpoint = channel::endpoint(settings.listen, &seed)
        .map_err(io(format!("listen on {} for nodes", settings.listen)))?;
    let channel_addr = endpoint
        .local_addr()
        .map_err(io("read the channel address"))?;
    // The same port on TCP (port 0 in --listen: the one the channel got).
    let replication_listen = SocketAddr::new(settings.listen.ip(), channel_addr.port());
    let replication = tokio::net::TcpListener::bind(replication_listen)
        .await
        .map_err(io(format!(
            "listen on {replication_listen} (TCP) for replication between replicas"
        )))?;
    let replication_addr = replication
        .local_addr()
        .map_err(io("read the replication address"))?;
    let relay_listen = meshd_channel::protocol::relay_port(channel_addr.port())
        .map(|port| SocketAddr::new(settings.listen.ip(), port))
        .ok_or_else(|| ServiceError::Io {
            what: "listen for the relay".into(),
            source: std::io::Error::other(format!(
                "the relay takes the UDP port after the node channel's, and {} is the last",
                channel_addr.port()
            )),
        })?;
    let relay_socket = tokio::net::UdpSocket::bind(relay_listen)
        .await
        .map_err(io(format!(
            "listen on {relay_listen} (UDP) for the relay (the port after the node channel's)"
        )))?;
    let relay_addr = relay_socket
        .local_addr()
        .map_err(io("read the relay address"))?;
    let advertise = settings
        .advertise
        .clone()
        .unwrap_or_else(|| default_advertise(replication_addr));
    let options = ReplicaOptions {
        bootstrap: !settings.join,
        ..ReplicaOptions::default()
    };
    let replica = Replica::open_with(dir, settings.id, advertise, credentials.clone(), options)
        .await
        .map_err(|e| ServiceError::Replica(e.to_string()))?;

    let relay_stats = crate::relay::RelayStats::default();
    let channel_stats = channel::ChannelStats::default();
    let health = {
        let replica = replica.clone();
        let relay_stats = relay_stats.clone();
        std::sync::Arc::new(move || -> api::HealthFuture {
            let replica = replica.clone();
            let relay = relay_stats.to_json();
            Box::pin(async move {
                let mut health = serde_json::to_value(replica.metrics()).unwrap_or_default();
                let view = replica.cluster_view().await;
                if let Some(fields) = health.as_object_mut() {
                    fields.insert(
                        "replicas".into(),
                        serde_json::to_value(&view.replicas).unwrap_or_default(),
                    );
                    fields.insert("relay".into(), relay);
                }
                health
            })
        })
    };
    let app = api::router_with(
        replica.clone(),
        token.clone(),
        ApiOptions {
            health: Some(health),
            admin_routes: Some(crate::replica::admin_routes(replica.clone()).merge(
                crate::replica::metrics::routes(
                    replica.clone(),
                    channel_stats.clone(),
                    relay_stats.clone(),
                ),
            )),
        },
    );
    on_bound(Bound {
        api: api_addr,
        api_fingerprint,
        key: replica.key(),
        channel: channel_addr,
        replication: replication_addr,
        relay: relay_addr,
    });
    tracing::info!(
        replica = settings.id,
        api = %api_addr,
        channel = %channel_addr,
        replication = %replication_addr,
        relay = %relay_addr,
        advertise = replica.advertise(),
        "controller replica serving"
    );

    let relay_secret = crate::relay::secret(&credentials.cluster_secret);
    let channel_task = tokio::spawn(channel::serve_relaying(
        endpoint.clone(),
        replica.clone(),
        relay_secret.clone(),
        channel_stats,
    ));
    let relay_task = tokio::spawn(crate::relay::serve(
        relay_socket,
        replica.clone(),
        relay_secret,
        settings.relay_limits(),
        relay_stats,
    ));
    let replication_task = tokio::spawn(
        replica
            .serve_replication(replication)
            .map_err(io("serve replication over TLS"))?,
    );
    let served = match api_tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
            let listener = crate::tls_listener::TlsListener::new(listener, acceptor, "admin API")
                .map_err(io("serve the admin API over HTTPS"))?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    endpoint.close(
        meshd_channel::protocol::close_code::SHUTDOWN.into(),
        b"controller shutting down",
    );
    channel_task.abort();
    relay_task.abort();
    replica.shutdown().await;
    replication_task.abort();
    served.map_err(io("serve the admin API"))
}

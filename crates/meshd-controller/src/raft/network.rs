//! Replica-to-replica raft RPCs over HTTP/1.1 with postcard bodies, inside TLS whose keys
//! are pinned in the membership ([`super::tls`]).
//!
//! `POST /raft/append`, `/raft/vote` and `/raft/snapshot`, each carrying the cluster secret
//! (not the admin token: an admin client never holds it, a replica never sends the admin
//! token) in [`CLUSTER_SECRET_HEADER`] and the id of the replica it is meant for in
//! [`REPLICA_ID_HEADER`]. A peer's address ([`ReplicaNode::addr`]) is `host:port` (the
//! replica's `--listen`/`--advertise` address, TCP); an `http://host:port` URL is accepted too.
//! Snapshots travel whole in one request (they are the controller state, small), so
//! openraft's chunked `install_snapshot` is never used. A replica keeps one HTTP connection
//! per peer and stream, reconnecting after any error.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap};
use hyper::{Request, StatusCode, Uri};
use meshd_io::http::{Answer, Connection, HttpError};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{
    OptionalSend, RPCTypes, RaftNetwork, RaftNetworkFactory, Snapshot, SnapshotMeta, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;

use super::{Raft, ReplicaId, ReplicaKey, ReplicaNode, TypeConfig};

/// The header every raft RPC carries the cluster secret in.
pub const CLUSTER_SECRET_HEADER: &str = "x-meshd-cluster-secret";
/// The header naming the replica an RPC is meant for: a replica refuses RPCs for another id,
/// so a replica added under the wrong id is noticed instead of silently mis-counted.
pub const REPLICA_ID_HEADER: &str = "x-meshd-replica-id";

/// How long to wait for a TCP connection to a peer, and again for its TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// When each peer last answered an RPC, shared by all of a replica's clients: the leader's
/// view of which followers are alive.
pub(crate) type Contacts = Arc<Mutex<BTreeMap<ReplicaId, Instant>>>;

/// Largest append or vote request accepted.
pub const MAX_RPC_BODY: usize = 32 << 20;
/// Largest snapshot accepted: the whole controller state in one body.
pub const MAX_SNAPSHOT_BODY: usize = 256 << 20;

const POSTCARD: &str = "application/x-postcard";

/// A whole snapshot in one request.
#[derive(Serialize, Deserialize)]
struct SnapshotRequest {
    vote: Vote<ReplicaId>,
    meta: SnapshotMeta<ReplicaId, ReplicaNode>,
    data: Vec<u8>,
}

/// Why an RPC did not get an answer from the peer's raft.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("peer address {addr:?} is not host:port")]
    BadAddress { addr: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http { addr: String, source: HttpError },
    #[error("building a request to {addr} failed: {source}")]
    Request {
        addr: String,
        source: hyper::http::Error,
    },
    #[error(
        "the TLS handshake with {addr} failed ({source}): either something else than the \
         replica recorded there answers, or it does not count this replica as a member"
    )]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "{addr} refused the cluster secret ({status}); every replica must hold the cluster's \
         secret (cluster.secret, written by `meshd controller init --join`)"
    )]
    Unauthorized { addr: String, status: StatusCode },
    #[error("{addr} is not the replica it was expected to be: {body}")]
    WrongReplica { addr: String, body: String },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: StatusCode,
        body: String,
    },
    #[error("cannot encode or decode a raft message for {addr}: {source}")]
    Codec {
        addr: String,
        source: postcard::Error,
    },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
}

impl TransportError {
    /// Failures where trying again at once is pointless: openraft backs off on `Unreachable`.
    fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::BadAddress { .. }
                | Self::Connect { .. }
                | Self::Tls { .. }
                | Self::Unauthorized { .. }
                | Self::WrongReplica { .. }
        )
    }

    /// The peer cannot have acted on the request: it was never sent, or refused before its
    /// body was read.
    pub(crate) fn not_delivered(&self) -> bool {
        self.is_unreachable()
    }

    /// Nothing answered at the address (as opposed to a replica refusing the request).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    fn into_rpc<E: std::error::Error>(
        self,
        id: ReplicaId,
        target: ReplicaId,
        action: RPCTypes,
    ) -> RPCError<ReplicaId, ReplicaNode, E> {
        match self {
            Self::Timeout { timeout, .. } => RPCError::Timeout(Timeout {
                action,
                id,
                target,
                timeout,
            }),
            e if e.is_unreachable() => RPCError::Unreachable(Unreachable::new(&e)),
            e => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn into_streaming<E: std::error::Error>(
        self,
        id: ReplicaId,
        target: ReplicaId,
    ) -> StreamingError<TypeConfig, E> {
        match self {
            Self::Timeout { timeout, .. } => StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id,
                target,
                timeout,
            }),
            e if e.is_unreachable() => StreamingError::Unreachable(Unreachable::new(&e)),
            e => StreamingError::Network(NetworkError::new(&e)),
        }
    }
}

/// What a replica proves to its peers: its key, and the cluster secret they all share.
#[derive(Clone)]
pub struct ReplicaCredentials {
    /// The replica's Ed25519 seed (`replica.key`).
    pub seed: [u8; 32],
    /// The cluster secret (`cluster.secret`), the same on every replica.
    pub cluster_secret: Arc<str>,
}

impl ReplicaCredentials {
    /// A fresh key and secret, for tests and new clusters.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the OS random number generator works");
        Self {
            seed,
            cluster_secret: crate::datadir::new_token().into(),
        }
    }

    /// The replica's public key.
    pub fn key(&self) -> ReplicaKey {
        // A 32-byte seed is always a valid Ed25519 key.
        ReplicaKey(meshd_channel::tls::ed25519_public(&self.seed).unwrap_or_default())
    }
}

impl Debug for ReplicaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaCredentials")
            .field("key", &self.key())
            .finish_non_exhaustive()
    }
}

/// Makes [`HttpNetwork`] clients for openraft.
#[derive(Clone)]
pub struct HttpNetworkFactory {
    id: ReplicaId,
    credentials: ReplicaCredentials,
    contacts: Contacts,
}

impl Debug for HttpNetworkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpNetworkFactory")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl HttpNetworkFactory {
    /// `id` is this replica's; `credentials` its key and the cluster secret.
    pub fn new(id: ReplicaId, credentials: ReplicaCredentials) -> Self {
        Self {
            id,
            credentials,
            contacts: Contacts::default(),
        }
    }

    /// When each peer last answered one of this factory's clients.
    pub(crate) fn contacts(&self) -> Contacts {
        self.contacts.clone()
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetworkFactory {
    type Network = HttpNetwork;

    async fn new_client(&mut self, target: ReplicaId, node: &ReplicaNode) -> HttpNetwork {
        HttpNetwork {
            id: self.id,
            target,
            node: node.clone(),
            credentials: self.credentials.clone(),
            conn: None,
            contacts: Some(self.contacts.clone()),
        }
    }
}

/// One peer, over one kept-alive HTTP/1.1 connection.
pub struct HttpNetwork {
    id: ReplicaId,
    target: ReplicaId,
    node: ReplicaNode,
    credentials: ReplicaCredentials,
    conn: Option<Connection>,
    contacts: Option<Contacts>,
}

impl Debug for HttpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpNetwork")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("addr", &self.node.addr)
            .finish_non_exhaustive()
    }
}

impl HttpNetwork {
    /// A one-off client of replica `target`, for requests outside openraft (forwarded
    /// writes, membership changes, status).
    pub(crate) fn peer(
        id: ReplicaId,
        target: ReplicaId,
        node: ReplicaNode,
        credentials: ReplicaCredentials,
    ) -> Self {
        Self {
            id,
            target,
            node,
            credentials,
            conn: None,
            contacts: None,
        }
    }

    fn authority(&self) -> Result<String, TransportError> {
        let bad = || TransportError::BadAddress {
            addr: self.node.addr.clone(),
        };
        let addr = self.node.addr.trim();
        let url = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        Ok(match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        })
    }

    /// Runs the TLS handshake on `stream`, requiring the key recorded for the peer.
    async fn tls(
        &self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
        let tls_err = |source| TransportError::Tls {
            addr: self.node.addr.clone(),
            source,
        };
        let connector = super::tls::connector(&self.credentials.seed, self.node.key)
            .map_err(|e| tls_err(std::io::Error::other(e.to_string())))?;
        let handshake = connector.connect(super::tls::server_name(), stream);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(r) => r.map_err(tls_err),
            Err(_) => Err(TransportError::Timeout {
                addr: self.node.addr.clone(),
                timeout: CONNECT_TIMEOUT,
            }),
        }
    }

    async fn connection(&mut self, authority: &str) -> Result<&mut Connection, TransportError> {
        if self.conn.as_ref().is_some_and(Connection::is_closed) {
            self.conn = None;
        }
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority));
                let stream = match connect.await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {CONNECT_TIMEOUT:?}"),
                    )),
                }
                .map_err(|source| TransportError::Connect {
                    addr: self.node.addr.clone(),
                    source,
                })?;
                // Raft messages are small and latency-bound.
                let _ = stream.set_nodelay(true);
                let stream = self.tls(stream).await?;
                Connection::handshake(stream)
                    .await
                    .map_err(|source| TransportError::Http {
                        addr: self.node.addr.clone(),
                        source,
                    })?
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// POSTs `body` to `path` and decodes the answer; drops the connection on any failure.
    pub(crate) async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let addr = self.node.addr.clone();
        let bytes = postcard::to_allocvec(body).map_err(|source| TransportError::Codec {
            addr: addr.clone(),
            source,
        })?;
        let res = tokio::time::timeout(timeout, self.exchange(path, bytes)).await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                addr: addr.clone(),
                timeout,
            }),
        };
        if res.is_err() {
            // A timed-out HTTP/1.1 exchange leaves the connection unusable.
            self.conn = None;
        }
        let body = res?;
        if let Some(contacts) = &self.contacts {
            let mut contacts = contacts.lock().unwrap_or_else(|e| e.into_inner());
            contacts.insert(self.target, Instant::now());
        }
        postcard::from_bytes(&body).map_err(|source| TransportError::Codec { addr, source })
    }

    async fn exchange(&mut self, path: &str, body: Vec<u8>) -> Result<Bytes, TransportError> {
        let addr = self.node.addr.clone();
        let authority = self.authority()?;
        let req = Request::post(path)
            .header(HOST, authority.as_str())
            .header(CONTENT_TYPE, POSTCARD)
            .header(CLUSTER_SECRET_HEADER, &*self.credentials.cluster_secret)
            .header(REPLICA_ID_HEADER, self.target.to_string())
            .body(Full::new(Bytes::from(body)))
            .map_err(|source| TransportError::Request {
                addr: addr.clone(),
                source,
            })?;
        let http = |source| TransportError::Http {
            addr: addr.clone(),
            source,
        };
        let conn = self.connection(&authority).await?;
        // Any answer: a snapshot travels in the request, not the answer.
        let Answer { status, body } = conn.exchange(req, MAX_SNAPSHOT_BODY).await.map_err(http)?;
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(TransportError::Unauthorized { addr, status })
            }
            StatusCode::MISDIRECTED_REQUEST => Err(TransportError::WrongReplica {
                addr,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
            _ => Err(TransportError::Status {
                addr,
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
        }
    }
}

impl RaftNetwork<TypeConfig> for HttpNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<ReplicaId>,
        RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId>>,
    > {
        let res: Result<_, RaftError<ReplicaId>> = self
            .post("/raft/append", &rpc, option.hard_ttl())
            .await
            .map_err(|e| e.into_rpc(self.id, self.target, RPCTypes::AppendEntries))?;
        res.map_err(|e| RemoteError::new_with_node(self.target, self.node.clone(), e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ReplicaId>,
        option: RPCOption,
    ) -> Result<VoteResponse<ReplicaId>, RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId>>>
    {
        let res: Result<_, RaftError<ReplicaId>> = self
            .post("/raft/vote", &rpc, option.hard_ttl())
            .await
            .map_err(|e| e.into_rpc(self.id, self.target, RPCTypes::Vote))?;
        res.map_err(|e| RemoteError::new_with_node(self.target, self.node.clone(), e).into())
    }

    // Openraft only calls this from the default `full_snapshot`, which is overridden below.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<ReplicaId>,
        RPCError<ReplicaId, ReplicaNode, RaftError<ReplicaId, InstallSnapshotError>>,
    > {
        let e = std::io::Error::other(
            "chunked snapshot transfer is not supported; meshd sends snapshots whole",
        );
        Err(RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<ReplicaId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<ReplicaId>, StreamingError<TypeConfig, Fatal<ReplicaId>>> {
        let req = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let timeout = option.hard_ttl();
        let res: Result<_, Fatal<ReplicaId>> = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            res = self.post("/raft/snapshot", &req, timeout) => {
                res.map_err(|e| e.into_streaming(self.id, self.target))?
            }
        };
        res.map_err(|e| RemoteError::new_with_node(self.target, self.node.clone(), e).into())
    }
}

#[derive(Clone)]
struct Served {
    raft: Raft,
}

/// Who may call a replica's `/raft/*` routes: holders of the cluster secret, addressing this
/// replica's id.
#[derive(Clone)]
struct Guard {
    id: ReplicaId,
    secret: Arc<str>,
}

impl Guard {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        // An empty configured secret must not admit requests that carry an empty header.
        !self.secret.is_empty()
            && headers
                .get(CLUSTER_SECRET_HEADER)
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(self.secret.as_bytes())))
    }
}

/// Serves this replica's raft RPCs: `/raft/append`, `/raft/vote`, `/raft/snapshot`. Requests
/// must carry the cluster `secret` in [`CLUSTER_SECRET_HEADER`].
pub fn raft_router(raft: Raft, secret: impl Into<Arc<str>>) -> Router {
    let id = raft.metrics().borrow().id;
    let served = Served { raft };
    let routes = Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route(
            "/raft/snapshot",
            post(snapshot).layer(DefaultBodyLimit::max(MAX_SNAPSHOT_BODY)),
        )
        .with_state(served);
    guard(routes, id, secret.into())
}

/// Puts `routes` behind the cluster secret and the replica id check, with the RPC body limit.
pub(crate) fn guard(routes: Router, id: ReplicaId, secret: Arc<str>) -> Router {
    routes
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        // Outermost: a request without the secret is refused before its body is read.
        .layer(middleware::from_fn_with_state(
            Guard { id, secret },
            require_token,
        ))
}

async fn require_token(
    State(g): State<Guard>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if !g.authorized(req.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            format!("missing or wrong {CLUSTER_SECRET_HEADER}"),
        )
            .into_response();
    }
    let meant_for = req
        .headers()
        .get(REPLICA_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<ReplicaId>().ok());
    if let Some(meant_for) = meant_for
        && meant_for != g.id
    {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this is controller replica {}, not replica {meant_for} (was it added with the wrong --id?)",
                g.id
            ),
        )
            .into_response();
    }
    next.run(req).await
}

pub(crate) fn postcard_response<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(b) => (StatusCode::OK, [(CONTENT_TYPE, POSTCARD)], b).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the raft response: {e}"),
        )
            .into_response(),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    postcard::from_bytes(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("undecodable raft request (are all replicas the same meshd version?): {e}"),
        )
    })
}

async fn append(State(s): State<Served>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    postcard_response(&s.raft.append_entries(req).await)
}

async fn vote(State(s): State<Served>, body: Bytes) -> Response {
    let req: VoteRequest<ReplicaId> = match decode(&body) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    postcard_response(&s.raft.vote(req).await)
}

async fn snapshot(State(s): State<Served>, body: Bytes) -> Response {
    let req: SnapshotRequest = match decode(&body) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    let snapshot = Snapshot {
        meta: req.meta,
        snapshot: Box::new(std::io::Cursor::new(req.data)),
    };
    postcard_response(&s.raft.install_full_snapshot(req.vote, snapshot).await)
}

//! A client of the admin API ([`crate::api`]), used by the `meshd controller` admin commands.
//!
//! HTTP/1.1 over TCP (`http://`, the API on loopback) or over TLS to a certificate pinned
//! by its fingerprint (`https://`, [`crate::api_tls`]), one connection per call: the CLI
//! makes one or two calls per run, so pooling would buy nothing. Errors carry the server's
//! one-line `error` text, so the CLI prints exactly what the server said.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use ipnet::IpNet;
use meshd_io::http::{Answer, Connection, error_message};
use meshd_proto::{NetworkId, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::api::requests::{
    AddReplica, AddRoute, CreateNetwork, InvalidRequest, RouteGateways, UpdateMember,
    UpdateNetwork, via_text,
};
use crate::api::views::{MemberView, NetworkView, RouteView};
use crate::api_tls::ApiFingerprint;
use crate::replica::{ClusterSecret, ClusterView};
use crate::state::RouteVia;

/// How long to wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for an answer: a write waits for the replicas to commit it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer accepted (a network with thousands of members fits easily).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why a call failed. Each displays as one line meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error; `message` is its `error` text.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error(
        "cannot reach the controller API at {url}: {reason}; is `meshd controller run` running?"
    )]
    Unreachable { url: String, reason: String },
    #[error("the controller API at {url} did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("bad controller API URL {url:?}: {reason}; write it like http://127.0.0.1:9995")]
    BadUrl { url: String, reason: String },
    #[error(
        "{url} is HTTPS: pass the certificate fingerprint that `meshd controller init` and \
         `run` print (--fingerprint sha256:..., or MESHD_API_FINGERPRINT); on the replica's \
         host, `openssl x509 -noout -fingerprint -sha256 -in DIR/api.crt` shows it too"
    )]
    NoFingerprint { url: String },
    #[error(
        "the controller API at {url} did not present the pinned certificate ({reason}); if the \
         replica's certificate was replaced, pin the new fingerprint, otherwise something else \
         answers at that address"
    )]
    Untrusted { url: String, reason: String },
    #[error("unexpected answer from the controller API at {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// Caught before sending: the request could not be valid.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
}

impl ClientError {
    /// The HTTP status, when the API answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Where and how to connect, parsed once from the base URL.
#[derive(Debug, Clone)]
struct Target {
    /// For the Host header.
    authority: String,
    host: String,
    port: u16,
    /// Path prefix (for an API behind a reverse proxy), without a trailing slash.
    prefix: String,
    https: bool,
}

/// A client of one replica's admin API.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    target: Target,
    fingerprint: Option<ApiFingerprint>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: debug output ends up in logs.
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:9995`, or `https://...`
    /// with [`AdminClient::pinned`]).
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Result<Self, ClientError> {
        let base = base.into();
        let target = parse_base(base.trim())?;
        Ok(Self {
            base: base.trim().trim_end_matches('/').to_owned(),
            token: token.into().trim().to_owned(),
            target,
            fingerprint: None,
        })
    }

    /// Trusts the `https://` API whose certificate has `fingerprint` (and no other).
    pub fn pinned(mut self, fingerprint: ApiFingerprint) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// The client of the replica whose data directory is `dir`: its URL, token and (for
    /// HTTPS) certificate.
    pub fn from_data_dir(dir: &std::path::Path) -> Result<Self, crate::datadir::DataDirError> {
        let (url, token) = crate::datadir::read_api_info(dir)?;
        let client =
            Self::new(&url, token).map_err(|e| crate::datadir::DataDirError::Malformed {
                path: dir.join(crate::datadir::API_URL_FILE),
                reason: e.to_string(),
            })?;
        if client.target.https {
            Ok(client.pinned(crate::api_tls::read_fingerprint(dir)?))
        } else {
            Ok(client)
        }
    }

    /// The certificate this client trusts, for an https:// API.
    pub fn fingerprint(&self) -> Option<ApiFingerprint> {
        self.fingerprint
    }

    /// The base URL, as used in messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v1/health` (needs no token): `{"status":"ok","networks":N,...}`.
    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, "/v1/health", None::<&()>).await
    }

    pub async fn networks(&self) -> Result<Vec<NetworkView>, ClientError> {
        self.call(Method::GET, "/v1/networks", None::<&()>).await
    }

    pub async fn create_network(&self, req: &CreateNetwork) -> Result<NetworkView, ClientError> {
        self.call(Method::POST, "/v1/networks", Some(req)).await
    }

    pub async fn network(&self, network: NetworkId) -> Result<NetworkView, ClientError> {
        self.call(Method::GET, &format!("/v1/networks/{network}"), None::<&()>)
            .await
    }

    pub async fn update_network(
        &self,
        network: NetworkId,
        req: &UpdateNetwork,
    ) -> Result<NetworkView, ClientError> {
        self.call(Method::PATCH, &format!("/v1/networks/{network}"), Some(req))
            .await
    }

    /// Deletes the network; answers with it as it was.
    pub async fn delete_network(&self, network: NetworkId) -> Result<NetworkView, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/networks/{network}"),
            None::<&()>,
        )
        .await
    }

    pub async fn members(&self, network: NetworkId) -> Result<Vec<MemberView>, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/networks/{network}/members"),
            None::<&()>,
        )
        .await
    }

    pub async fn member(
        &self,
        network: NetworkId,
        node: NodeId,
    ) -> Result<MemberView, ClientError> {
        self.call(Method::GET, &member_path(network, node), None::<&()>)
            .await
    }

    pub async fn update_member(
        &self,
        network: NetworkId,
        node: NodeId,
        req: &UpdateMember,
    ) -> Result<MemberView, ClientError> {
        self.call(Method::PATCH, &member_path(network, node), Some(req))
            .await
    }

    /// Deletes the member; answers with it as it was.
    pub async fn delete_member(
        &self,
        network: NetworkId,
        node: NodeId,
    ) -> Result<MemberView, ClientError> {
        self.call(Method::DELETE, &member_path(network, node), None::<&()>)
            .await
    }

    pub async fn authorize(
        &self,
        network: NetworkId,
        node: NodeId,
    ) -> Result<MemberView, ClientError> {
        let path = format!("{}/authorize", member_path(network, node));
        self.call(Method::POST, &path, None::<&()>).await
    }

    pub async fn deauthorize(
        &self,
        network: NetworkId,
        node: NodeId,
    ) -> Result<MemberView, ClientError> {
        let path = format!("{}/deauthorize", member_path(network, node));
        self.call(Method::POST, &path, None::<&()>).await
    }

    pub async fn routes(&self, network: NetworkId) -> Result<Vec<RouteView>, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/networks/{network}/routes"),
            None::<&()>,
        )
        .await
    }

    /// Adds a route through `gateways`, most preferred first.
    pub async fn add_route(
        &self,
        network: NetworkId,
        target: IpNet,
        gateways: &[RouteVia],
    ) -> Result<RouteView, ClientError> {
        let mut texts: Vec<String> = gateways.iter().map(|g| via_text(*g)).collect();
        let via = if texts.len() == 1 {
            RouteGateways::One(texts.remove(0))
        } else {
            RouteGateways::Many(texts)
        };
        let body = AddRoute {
            target: target.to_string(),
            via,
        };
        self.call(
            Method::POST,
            &format!("/v1/networks/{network}/routes"),
            Some(&body),
        )
        .await
    }

    /// Removes the route; answers with it as it was.
    pub async fn remove_route(
        &self,
        network: NetworkId,
        target: IpNet,
    ) -> Result<RouteView, ClientError> {
        // A CIDR's characters (digits, hex, `.`, `:`, `/`) need no escaping in a query.
        self.call(
            Method::DELETE,
            &format!("/v1/networks/{network}/routes?target={target}"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/replicas`: the replica set and its replication progress.
    pub async fn replicas(&self) -> Result<ClusterView, ClientError> {
        self.call(Method::GET, "/v1/replicas", None::<&()>).await
    }

    /// Adds replica `id` at `address` (`host:port`) proving `key` as a voter; answers with
    /// the replica set.
    pub async fn add_replica(
        &self,
        id: u64,
        address: &str,
        key: &str,
    ) -> Result<ClusterView, ClientError> {
        let body = AddReplica {
            id,
            address: address.to_owned(),
            key: key.to_owned(),
        };
        self.call(Method::POST, "/v1/replicas", Some(&body)).await
    }

    /// `GET /v1/cluster-secret`: what a joining replica needs to replicate.
    pub async fn cluster_secret(&self) -> Result<ClusterSecret, ClientError> {
        self.call(Method::GET, "/v1/cluster-secret", None::<&()>)
            .await
    }

    /// Removes replica `id`; answers with the replica set after.
    pub async fn remove_replica(&self, id: u64) -> Result<ClusterView, ClientError> {
        self.call(Method::DELETE, &format!("/v1/replicas/{id}"), None::<&()>)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| self.protocol(e))?,
            None => Vec::new(),
        };
        let (status, bytes) =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(ClientError::Timeout {
                        url: self.base.clone(),
                    });
                }
            };
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| self.protocol(e))
        } else {
            Err(self.api_error(status, &bytes))
        }
    }

    /// One request on a fresh connection: the status and the whole body.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let t = &self.target;
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.unreachable(e)),
            Err(_) => return Err(self.unreachable("no answer to the connection attempt")),
        };
        let mut connection = if t.https {
            let fingerprint = self.fingerprint.ok_or_else(|| ClientError::NoFingerprint {
                url: self.base.clone(),
            })?;
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                crate::api_tls::client_config(fingerprint),
            ));
            // Any name: the pinned certificate is what is checked, not a name.
            let name = rustls::pki_types::ServerName::try_from("meshd-controller")
                .expect("a valid DNS name");
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| self.handshake_failed(e))?;
            Connection::handshake(tls).await
        } else {
            Connection::handshake(stream).await
        }
        .map_err(|e| self.unreachable(e))?;

        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", t.prefix))
            .header(HOST, &t.authority)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, format!("Bearer {}", self.token));
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.protocol(e))?;
        let Answer { status, body } = connection
            .exchange(request, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| self.protocol(e))?;
        Ok((status, body))
    }

    fn api_error(&self, status: StatusCode, body: &[u8]) -> ClientError {
        let server = format!("the controller API at {}", self.base);
        ClientError::Api {
            status,
            message: error_message(&server, status, body),
        }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: reason.to_string(),
        }
    }

    fn handshake_failed(&self, e: std::io::Error) -> ClientError {
        let certificate = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        if certificate {
            ClientError::Untrusted {
                url: self.base.clone(),
                reason: e.to_string(),
            }
        } else {
            self.unreachable(format!("TLS handshake failed: {e}"))
        }
    }

    fn protocol(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            url: self.base.clone(),
            reason: reason.to_string(),
        }
    }
}

fn member_path(network: NetworkId, node: NodeId) -> String {
    format!("/v1/networks/{network}/members/{node}")
}

fn parse_base(base: &str) -> Result<Target, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: base.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(_) | None => return Err(bad("it must start with http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if uri.query().is_some() {
        return Err(bad("it must not have a query"));
    }
    // `[::1]` in a URL; the socket wants `::1`.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(Target {
        authority: authority.as_str().to_owned(),
        host,
        port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        prefix: uri.path().trim_end_matches('/').to_owned(),
        https,
    })
}

#[cfg(test)]
mod tests;

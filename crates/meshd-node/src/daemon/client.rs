//! The CLI's client of the daemon's local API ([`super::api`]): HTTP/1.1 over the Unix
//! socket, one connection per call (a command makes a handful).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use meshd_io::http::{Answer, Connection, error_message};
use meshd_proto::NetworkId;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::api::{JoinRequest, JoinView, LeftView, StatusView};
use super::controller_link::ControllerAddr;
use super::state;

/// How long a call may take. A join or leave waits for the data plane; status answers at
/// once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer accepted (a status of a node in big networks fits easily).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why a call failed. Each displays as one line meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket: no daemon was started on this state directory (or it stopped cleanly).
    #[error("no daemon is running (no socket at {})", socket.display())]
    NoSocket { socket: PathBuf },
    /// A socket nobody listens on: the daemon died without cleaning up.
    #[error("no daemon is running (nothing answers on {})", socket.display())]
    NotListening { socket: PathBuf },
    #[error("cannot connect to the daemon at {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    #[error("the daemon at {} did not answer within {} s", socket.display(), REQUEST_TIMEOUT.as_secs())]
    Timeout { socket: PathBuf },
    /// The daemon answered with an error; `message` is its `error` text.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from the daemon at {}: {reason}", socket.display())]
    Protocol { socket: PathBuf, reason: String },
}

impl ClientError {
    /// Whether the failure means "start a daemon first".
    pub fn no_daemon(&self) -> bool {
        matches!(
            self,
            ClientError::NoSocket { .. } | ClientError::NotListening { .. }
        )
    }
}

/// A client of the daemon running on one state directory.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    socket: PathBuf,
}

impl DaemonClient {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            socket: state::socket_path(state_dir),
        }
    }

    pub async fn status(&self) -> Result<StatusView, ClientError> {
        let body = self.call(Method::GET, "/v1/status", None).await?;
        self.decode(&body)
    }

    /// The raw JSON of a `GET`, for `--json`: printed exactly as the API sent it.
    pub async fn get_json(&self, path: &str) -> Result<Bytes, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn join(
        &self,
        network: NetworkId,
        controller: Option<ControllerAddr>,
    ) -> Result<JoinView, ClientError> {
        let body = serde_json::to_vec(&JoinRequest { controller }).map_err(|e| self.protocol(e))?;
        let answer = self
            .call(Method::POST, &format!("/v1/networks/{network}"), Some(body))
            .await?;
        self.decode(&answer)
    }

    pub async fn leave(&self, network: NetworkId) -> Result<LeftView, ClientError> {
        let answer = self
            .call(Method::DELETE, &format!("/v1/networks/{network}"), None)
            .await?;
        self.decode(&answer)
    }

    fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| self.protocol(e))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let (status, bytes) =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(ClientError::Timeout {
                        socket: self.socket.clone(),
                    });
                }
            };
        if status.is_success() {
            return Ok(bytes);
        }
        Err(ClientError::Api {
            status,
            message: error_message("the daemon", status, &bytes),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            let socket = self.socket.clone();
            match source.kind() {
                io::ErrorKind::NotFound => ClientError::NoSocket { socket },
                io::ErrorKind::ConnectionRefused => ClientError::NotListening { socket },
                _ => ClientError::Connect { socket, source },
            }
        })?;
        let mut connection = Connection::handshake(stream)
            .await
            .map_err(|e| self.protocol(e))?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "meshd");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(e))?;
        let Answer { status, body } = connection
            .exchange(request, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| self.protocol(e))?;
        Ok((status, body))
    }

    fn protocol(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            reason: e.to_string(),
        }
    }
}

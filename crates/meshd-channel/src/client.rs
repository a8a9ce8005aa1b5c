//! The node side of the node channel: what the daemon uses to join networks and receive
//! configs, and what the controller tests drive.
//!
//! The client does not verify configs: it hands over `Config` messages as received, and the
//! caller checks them with `SignedConfig::from_bytes(signed).verify(network)` before use.
//! That check is what makes an unpinned controller key safe (see [`super::tls`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use meshd_proto::possession::Prover;
use meshd_proto::{Identity, NetworkId};
use tokio::sync::mpsc;

use super::protocol::{self, ControllerMessage, FrameError, NodeMessage, Reach, close_code};
use super::tls::{self, TlsError};

/// How long to wait for the controller's close after its stream ended.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Why the channel to a controller failed. After any error but [`ChannelError::Frame`] on
/// sending, the connection is gone: connect again (to this or another replica).
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open a UDP socket for the controller channel: {0}")]
    Bind(io::Error),
    #[error("cannot connect to controller {server}: {source}")]
    Connect {
        server: SocketAddr,
        source: quinn::ConnectError,
    },
    #[error("controller connection failed: {0}")]
    Connection(quinn::ConnectionError),
    #[error("the controller closed the channel (code {code}): {reason}")]
    ClosedByController { code: u64, reason: String },
    #[error("controller channel: {0}")]
    Frame(#[from] FrameError),
    #[error("the controller ended the channel")]
    Closed,
}

impl From<quinn::ConnectionError> for ChannelError {
    fn from(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => ChannelError::ClosedByController {
                code: close.error_code.into_inner(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            other => ChannelError::Connection(other),
        }
    }
}

/// A node's connection to one controller replica.
#[derive(Debug)]
pub struct ChannelClient {
    conn: quinn::Connection,
    send: quinn::SendStream,
    incoming: mpsc::Receiver<Result<ControllerMessage, ChannelError>>,
    reader: tokio::task::JoinHandle<()>,
    /// Answers the controller's `Challenge` (proof of the X25519 key `Hello` names).
    prover: Prover,
    // Owns the socket; dropped last (fields drop in declaration order).
    _endpoint: quinn::Endpoint,
}

impl ChannelClient {
    /// Connects to the controller at `server` as `identity` and says `Hello`, reporting the
    /// data-plane UDP port (0: none) and `local_endpoints`, the addresses the node is reachable
    /// at on its own networks.
    ///
    /// Binds a UDP socket of the server's address family on an ephemeral port.
    pub async fn connect(
        server: SocketAddr,
        identity: &Identity,
        data_port: u16,
        local_endpoints: Vec<SocketAddr>,
    ) -> Result<Self, ChannelError> {
        let config = tls::client_config(identity)?;
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(bind).map_err(ChannelError::Bind)?;
        let conn = endpoint
            .connect_with(config, server, tls::SERVER_NAME)
            .map_err(|source| ChannelError::Connect { server, source })?
            .await?;
        let (send, recv) = conn.open_bi().await?;
        let mut client = Self::start(conn, send, recv, endpoint, Prover::of(identity));
        let hello = NodeMessage::Hello {
            x25519: identity.public().x25519,
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_port,
            local_endpoints,
        };
        client.send(&hello).await?;
        Ok(client)
    }

    fn start(
        conn: quinn::Connection,
        send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        endpoint: quinn::Endpoint,
        prover: Prover,
    ) -> Self {
        // Frames are read in a task so that `recv` is cancel-safe (usable in `select!`).
        let (tx, incoming) = mpsc::channel(16);
        let reader_conn = conn.clone();
        let reader = tokio::spawn(async move {
            loop {
                let item = match protocol::read_frame::<_, ControllerMessage>(&mut recv).await {
                    Ok(Some(msg)) => Ok(msg),
                    // The controller finishes its stream only right before closing the
                    // connection: wait briefly for the close, whose code says why.
                    Ok(None) => Err(
                        match tokio::time::timeout(CLOSE_WAIT, reader_conn.closed()).await {
                            Ok(reason) => ChannelError::from(reason),
                            Err(_) => ChannelError::Closed,
                        },
                    ),
                    Err(e) => Err(read_error(&reader_conn, e)),
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        Self {
            conn,
            send,
            incoming,
            reader,
            prover,
            _endpoint: endpoint,
        }
    }

    /// Asks to join `network` (or refreshes the join after reconnecting). `have_revision` is
    /// the revision of the config the node holds, 0 for none. The answer arrives via
    /// [`ChannelClient::recv`].
    pub async fn join(
        &mut self,
        network: NetworkId,
        have_revision: u64,
    ) -> Result<(), ChannelError> {
        self.send(&NodeMessage::Join {
            network,
            have_revision,
        })
        .await
    }

    /// Stops updates for `network` on this connection.
    pub async fn leave(&mut self, network: NetworkId) -> Result<(), ChannelError> {
        self.send(&NodeMessage::Leave { network }).await
    }

    /// The Ed25519 key the controller proved in the TLS handshake.
    pub fn server_key(&self) -> Option<[u8; 32]> {
        tls::peer_ed25519(&self.conn)
    }

    /// Reports how the node is reached (see [`NodeMessage::Reach`]).
    pub async fn reach(&mut self, reach: Reach) -> Result<(), ChannelError> {
        self.send(&NodeMessage::Reach(reach)).await
    }

    /// Reports how the node sees a network (see [`NodeMessage::Report`]).
    pub async fn report(&mut self, report: protocol::Report) -> Result<(), ChannelError> {
        self.send(&NodeMessage::Report(report)).await
    }

    /// The next message from the controller: answers and pushes alike (a `Challenge` is
    /// answered here and not handed out). Cancel-safe.
    pub async fn recv(&mut self) -> Result<ControllerMessage, ChannelError> {
        loop {
            let msg = match self.incoming.recv().await {
                Some(item) => item?,
                // The reader reported its error already; any later call lands here.
                None => {
                    return Err(self
                        .conn
                        .close_reason()
                        .map_or(ChannelError::Closed, ChannelError::from));
                }
            };
            match msg {
                ControllerMessage::Challenge { key } => {
                    let tag = self.prover.prove(&key);
                    self.send(&NodeMessage::Proof { tag }).await?;
                }
                other => return Ok(other),
            }
        }
    }

    /// The controller's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Closes the channel; the controller sees a normal close.
    pub fn close(&self) {
        self.conn.close(close_code::DONE.into(), b"");
    }

    async fn send(&mut self, msg: &NodeMessage) -> Result<(), ChannelError> {
        protocol::write_frame(&mut self.send, msg)
            .await
            .map_err(|e| read_error(&self.conn, e))
    }
}

impl Drop for ChannelClient {
    fn drop(&mut self) {
        // The reader holds the stream, which keeps the connection open: stop it, and say
        // goodbye so the controller frees the connection now rather than at its idle timeout.
        self.reader.abort();
        self.conn.close(close_code::DONE.into(), b"");
    }
}

/// An I/O failure on the stream usually means the connection closed: report why.
fn read_error(conn: &quinn::Connection, e: FrameError) -> ChannelError {
    match (e, conn.close_reason()) {
        (FrameError::Io(_), Some(reason)) => ChannelError::from(reason),
        (e, _) => ChannelError::Frame(e),
    }
}

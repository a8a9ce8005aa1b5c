//! A TCP listener that hands axum only connections whose TLS handshake completed.
//!
//! Handshakes run in tasks of their own, each bounded by [`HANDSHAKE_TIMEOUT`]: a client that
//! connects and stays silent ties up one task for a few seconds, never the accept loop. At
//! most [`MAX_HANDSHAKES_PER_SOURCE`] run for one source address and [`MAX_HANDSHAKES`] in
//! all; a connection past either is closed at once, so idle strangers cannot keep replicas
//! from reaching each other. A client that speaks anything but TLS (plain HTTP, say) fails
//! its handshake and is closed without an HTTP answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once.
const MAX_HANDSHAKES: usize = 256;
/// Handshakes in progress at once from one source address.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 8;

/// Accepted, handshaken TLS connections, for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp`; `what` names the listener in logs ("replication").
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        what: &'static str,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let sources: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!("{what}: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "{what}: too many TLS handshakes at once; closed");
                    continue;
                };
                let Some(source) = SourceSlot::take(&sources, peer.ip()) else {
                    tracing::debug!(%peer, "{what}: too many TLS handshakes from one address; closed");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _source = source;
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "{what}: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "{what}: TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        });
        Ok(Self {
            local,
            ready,
            accepting,
        })
    }
}

/// One handshake's place in its source's count, given back when dropped.
struct SourceSlot {
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn take(sources: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut counts = sources.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_default();
        if *count >= MAX_HANDSHAKES_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(Self {
            sources: Arc::clone(sources),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Idle connections from one address hold at most their share of handshakes: one more
    /// is closed at once, and room comes back when they go.
    #[tokio::test]
    async fn idle_connections_from_one_source_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        crate::api_tls::ensure_certificate(dir.path(), &[]).unwrap();
        let config = crate::api_tls::server_config(dir.path()).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let _listener = TlsListener::new(tcp, acceptor, "test").unwrap();

        let mut idle = Vec::new();
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let closed_at_once = |mut s: TcpStream| async move {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_millis(500), s.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            )
        };
        let extra = TcpStream::connect(addr).await.unwrap();
        assert!(closed_at_once(extra).await, "one past the cap is closed");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = TcpStream::connect(addr).await.unwrap();
        assert!(!closed_at_once(again).await, "room again once they went");
    }
}

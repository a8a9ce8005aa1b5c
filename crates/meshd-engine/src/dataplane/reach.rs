//! Reach datagrams on the data-plane socket. The node registers with controller relays
//! from this socket (so they see the address and port peers must use), and their answers
//! arrive here: they belong to no network, so the packet workers hand them to the node
//! through a bounded queue instead of to a tunnel. A full or absent queue drops them,
//! counted: the node asks again within a second.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

/// Answers queued for the node before the workers drop more.
pub const INBOX_DEPTH: usize = 256;

/// One datagram for the node's reach client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachDatagram {
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Where the workers put reach datagrams; shared by every worker's socket.
#[derive(Debug, Default)]
pub(crate) struct ReachInbox {
    sender: OnceLock<mpsc::Sender<ReachDatagram>>,
    /// Reach datagrams dropped: nobody takes them yet, or the queue is full.
    pub dropped: AtomicU64,
}

impl ReachInbox {
    /// The receiving end, the first time only.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<ReachDatagram>> {
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        self.sender.set(tx).ok().map(|()| rx)
    }

    /// Hands a datagram to the node, or counts it dropped.
    pub fn deliver(&self, from: SocketAddr, bytes: &[u8]) {
        let delivered = self.sender.get().is_some_and(|tx| {
            tx.try_send(ReachDatagram {
                from,
                bytes: bytes.to_vec(),
            })
            .is_ok()
        });
        if !delivered {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_once_taken_and_counts_the_rest() {
        let inbox = ReachInbox::default();
        let from: SocketAddr = "198.51.100.1:9995".parse().expect("addr");
        inbox.deliver(from, b"early");
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 1);
        let mut rx = inbox.take_receiver().expect("first take");
        assert!(inbox.take_receiver().is_none(), "one receiver only");
        for _ in 0..INBOX_DEPTH + 3 {
            inbox.deliver(from, b"answer");
        }
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 4);
        let first = rx.try_recv().expect("queued");
        assert_eq!((first.from, first.bytes.as_slice()), (from, &b"answer"[..]));
    }
}

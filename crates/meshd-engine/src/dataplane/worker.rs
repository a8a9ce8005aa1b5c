//! A packet worker: one thread that waits in `epoll_wait` on its UDP socket and its queue of
//! every network's TUN, and runs one batch for each descriptor that is readable. A node runs
//! one per core (see the module docs of `dataplane` for how the kernel spreads flows).
//!
//! Why a plain thread and not tasks on the node's async runtime: a ping through the tunnel
//! crosses four wake-ups (a TUN read and a UDP receive on each side), and on an idle machine
//! each one pays for the path from a readiness event to the code that reads. Measured on the
//! netns benchmark, the runtime's path (reactor, task wake-up, waking a sibling worker) put
//! meshd's added latency 15-25% above userspace WireGuard's; this loop runs the read straight
//! after the wait returns. Level-triggered: a descriptor with more queued than one batch is
//! reported again by the next wait, so descriptors take turns and none is drained before
//! another is looked at.
//!
//! Between two TUN batches the worker may yield the CPU (see [`super::pacing`]); after a
//! batch it polls for a short while before it sleeps again (see [`super::busy_poll`]).
//!
//! Networks come and go while the worker runs: `join` registers the worker's TUN queue
//! ([`Worker::add`]), `leave` unregisters it ([`Worker::remove`]) and wakes the worker, which
//! then drops what it held of that network.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use std::time::{Duration, Instant};

use super::busy_poll::BusyPoll;
use super::outside::{Outside, add, bump, get};
use super::pacing::Pacing;
use super::tasks::{Receiver, Sender};
use super::{Network, Networks, read};
use crate::sys::poll::{Epoll, EventFd, Token};

/// The epoll token of the UDP socket.
const SOCKET: Token = 0;
/// The epoll token of the worker's wake-up eventfd.
const WAKE: Token = 1;
/// The first token a network's TUN gets.
pub(super) const FIRST_NETWORK_TOKEN: Token = 2;

#[derive(Debug)]
pub(super) struct Worker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    epoll: Epoll,
    wake: EventFd,
    stop: AtomicBool,
    moved: Moved,
}

/// Packets one worker moved, for every network together.
#[derive(Debug, Default)]
struct Moved {
    /// Sealed and handed to the socket.
    to_peers: AtomicU64,
    /// Opened and handed to a TUN.
    from_peers: AtomicU64,
    /// Microseconds spent polling for packets instead of sleeping (see [`BusyPoll`]).
    polled_us: AtomicU64,
}

/// The packets one packet worker moved ([`Dataplane::workers`](super::Dataplane::workers)),
/// as `meshd status --json` shows them (`packet_workers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct WorkerPackets {
    /// Packets read from a TUN, sealed and handed to the socket.
    pub to_peers: u64,
    /// Packets received from peers, opened and handed to a TUN.
    pub from_peers: u64,
    /// Milliseconds the worker spent polling for packets instead of sleeping (see
    /// [`Dataplane::bind`](super::Dataplane::bind)'s `busy_poll`), wall-clock: the CPU it
    /// used is at most that, as it yields between polls.
    #[serde(default)]
    pub busy_poll_ms: u64,
}

impl Worker {
    /// Starts the worker for TUN queue `queue` (it inherits the calling thread's network
    /// namespace) with its socket registered; it polls for `busy_poll` after each batch
    /// (see [`BusyPoll`]).
    pub fn start(
        queue: usize,
        busy_poll: Duration,
        outside: Arc<Outside>,
        networks: Networks,
    ) -> io::Result<Worker> {
        let shared = Arc::new(Shared {
            epoll: Epoll::new()?,
            wake: EventFd::new()?,
            stop: AtomicBool::new(false),
            moved: Moved::default(),
        });
        shared.epoll.add(outside.socket.as_fd(), SOCKET)?;
        shared.epoll.add(shared.wake.fd(), WAKE)?;
        let thread = thread::Builder::new()
            .name(format!("meshd-packets-{queue}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(queue, busy_poll, &shared, &outside, &networks)
            })?;
        Ok(Worker {
            shared,
            thread: Some(thread),
        })
    }

    /// Starts reading a network's TUN queue; its events carry `token`.
    pub fn add(&self, tun: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        self.shared.epoll.add(tun, token)
    }

    /// The packets this worker moved since it started.
    pub fn moved(&self) -> WorkerPackets {
        WorkerPackets {
            to_peers: get(&self.shared.moved.to_peers),
            from_peers: get(&self.shared.moved.from_peers),
            busy_poll_ms: get(&self.shared.moved.polled_us) / 1000,
        }
    }

    /// Stops reading `tun` and has the worker let go of networks no longer joined.
    pub fn remove(&self, tun: RawFd) {
        // ENOENT: the worker already dropped it after a read error.
        let _ = self.shared.epoll.delete(tun);
        self.shared.wake.notify();
    }
}

impl Drop for Worker {
    /// Stops the thread and waits for it, so that whoever drops the data plane finds the
    /// worker's references to the TUN devices gone.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify();
        // The worker thread never holds a `Worker`, so this is never a join of itself.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A network as the worker holds it while its TUN is registered.
struct Joined {
    net: Arc<Network>,
    sender: Sender,
}

fn run(queue: usize, busy_poll: Duration, shared: &Shared, outside: &Outside, networks: &Networks) {
    let mut tokens: Vec<Token> = Vec::new();
    let mut receiver = Receiver::new(queue);
    let mut joined: FxHashMap<Token, Joined> = FxHashMap::default();
    let mut pacing = Pacing::default();
    let mut busy = BusyPoll::new(busy_poll, Instant::now());
    loop {
        let waited = if busy.polling() {
            shared.epoll.wait_for(&mut tokens, 0)
        } else {
            shared.epoll.wait(&mut tokens)
        };
        if let Err(e) = waited {
            tracing::error!(error = %e, "the packet worker cannot wait for packets; it stops");
            return;
        }
        if tokens.is_empty() {
            if busy.poll_again(Instant::now()) {
                thread::yield_now();
            } else {
                let polled = u64::try_from(busy.total().as_micros()).unwrap_or(u64::MAX);
                shared.moved.polled_us.store(polled, Ordering::Relaxed);
            }
            continue;
        }
        for &token in &tokens {
            match token {
                SOCKET => add(
                    &shared.moved.from_peers,
                    receiver.run_once(outside, networks),
                ),
                WAKE => {
                    shared.wake.clear();
                    if shared.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let current = read(networks);
                    joined.retain(|_, j| {
                        current
                            .get(&j.net.id)
                            .is_some_and(|n| Arc::ptr_eq(n, &j.net))
                    });
                }
                token => {
                    let Some(j) = joined_for(&mut joined, networks, token, queue) else {
                        continue; // left between the wait and now
                    };
                    match j.sender.run_once(&j.net, outside) {
                        Ok(sent) => {
                            add(&shared.moved.to_peers, sent);
                            if pacing.sent(Instant::now(), sent) {
                                thread::yield_now();
                            }
                        }
                        Err(e) => {
                            // The link was deleted under us, or the descriptor broke: nothing to
                            // read ever again. Said once, not per packet.
                            bump(&j.net.counters.tun_read_error);
                            tracing::warn!(network = %j.net.id, interface = %j.net.interface,
                            error = %e, "TUN read failed; this network stops sending");
                            let _ = shared.epoll.delete(j.net.queues[queue].as_raw_fd());
                            joined.remove(&token);
                        }
                    }
                }
            }
        }
        busy.handled(Instant::now());
    }
}

/// The worker's state for the network whose TUN has `token`, set up on its first event.
fn joined_for<'a>(
    joined: &'a mut FxHashMap<Token, Joined>,
    networks: &Networks,
    token: Token,
    queue: usize,
) -> Option<&'a mut Joined> {
    match joined.entry(token) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) => {
            let net = read(networks)
                .values()
                .find(|n| n.token == token)
                .cloned()?;
            let sender = Sender::new(&net, queue);
            Some(e.insert(Joined { net, sender }))
        }
    }
}

//! The seam between the state machine and everything that serves it.
//!
//! The admin API and the node channel are written against [`Controller`]: they propose
//! commands and read applied state. The raft-backed replica implements it; so does
//! [`InMemoryController`], the state machine behind a lock, which unit tests of the API and
//! channel use (the real replica is exercised by the process-level tests).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::state::{Applied, Command, ControllerState, Rejected};

/// Why a write did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The state machine refused the command; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The command could not be committed (no leader, no quorum, shutting down).
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

/// What serving code needs from a controller replica.
pub trait Controller: Clone + Send + Sync + 'static {
    /// Proposes `cmd`; resolves once it is committed and applied (or rejected).
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Applied, WriteError>> + Send;

    /// Runs `f` on the applied state.
    fn read<T>(&self, f: impl FnOnce(&ControllerState) -> T) -> T;

    /// A counter that changes after every applied command: wake-ups for config pushes.
    fn applied(&self) -> watch::Receiver<u64>;

    /// The node-channel addresses (`HOST:PORT`) of every replica, voters and learners,
    /// sorted; the node channel passes them on to nodes so they can fail over. Empty when
    /// unknown (a controller that replicates nothing): then nodes are told nothing.
    fn replica_addresses(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The state machine behind a mutex, applying commands directly. For tests of the code that
/// serves a controller; it replicates nothing and persists nothing.
#[derive(Debug, Clone)]
pub struct InMemoryController {
    state: Arc<Mutex<ControllerState>>,
    applied: Arc<watch::Sender<u64>>,
    replicas: Arc<Mutex<Vec<String>>>,
}

impl Default for InMemoryController {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            applied: Arc::new(watch::channel(0).0),
            replicas: Arc::default(),
        }
    }
}

impl InMemoryController {
    /// What [`Controller::replica_addresses`] answers from now on.
    pub fn set_replica_addresses(&self, addresses: Vec<String>) {
        *self.replicas.lock().expect("replicas lock") = addresses;
    }
}

impl Controller for InMemoryController {
    fn write(&self, cmd: Command) -> impl Future<Output = Result<Applied, WriteError>> + Send {
        let result = {
            // A poisoned lock means a panic mid-apply in a test: propagate it.
            let mut state = self.state.lock().expect("state lock");
            state.apply(&cmd)
        };
        self.applied.send_modify(|n| *n += 1);
        std::future::ready(result.map_err(WriteError::from))
    }

    fn read<T>(&self, f: impl FnOnce(&ControllerState) -> T) -> T {
        f(&self.state.lock().expect("state lock"))
    }

    fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn replica_addresses(&self) -> Vec<String> {
        self.replicas.lock().expect("replicas lock").clone()
    }
}

//! The daemon's [`Dataplane`] backed by `meshd-engine`: real TUN devices, kernel addresses
//! and routes, and the encrypted UDP data plane.

use std::net::SocketAddr;

use futures::future::BoxFuture;
use meshd_engine::dataplane::Dataplane as Engine;
use meshd_proto::{Identity, NetworkConfig, NetworkId};

use tokio::sync::mpsc;

use super::dataplane::{Dataplane, EngineError, NetworkStatus, ReachDatagram, WorkerPackets};

pub struct EngineDataplane {
    engine: Engine,
    identity: Identity,
}

impl std::fmt::Debug for EngineDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineDataplane")
            .field("local_addr", &self.engine.local_addr())
            .finish_non_exhaustive()
    }
}

impl EngineDataplane {
    /// Wraps a bound engine; the identity is the node's (the daemon's state dir holds it).
    pub fn new(engine: Engine, identity: Identity) -> Self {
        Self { engine, identity }
    }
}

impl Dataplane for EngineDataplane {
    fn join(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>> {
        let cfg = cfg.clone();
        Box::pin(async move { self.engine.join(&self.identity, &cfg).await })
    }

    fn update(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>> {
        let cfg = cfg.clone();
        Box::pin(async move { self.engine.update(&cfg).await })
    }

    fn leave(&self, nwid: NetworkId) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.engine.leave(nwid).await })
    }

    fn status(&self, nwid: NetworkId) -> Option<NetworkStatus> {
        self.engine.status(nwid)
    }

    fn workers(&self) -> Vec<WorkerPackets> {
        self.engine.workers()
    }

    fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) -> bool {
        self.engine.send_datagram(to, bytes).is_ok()
    }

    fn reach_datagrams(&self) -> Option<mpsc::Receiver<ReachDatagram>> {
        self.engine.reach_datagrams()
    }

    fn set_relays(&self, nwid: NetworkId, relays: Vec<SocketAddr>) {
        self.engine.set_relays(nwid, relays);
    }
}

//! The daemon's [`Dataplane`] backed by `meshd-engine`: real TUN devices, kernel addresses
//! and routes, and the encrypted UDP data plane.

use futures::future::BoxFuture;
use meshd_engine::dataplane::Dataplane as Engine;
use meshd_proto::{Identity, NetworkConfig, NetworkId};

use super::dataplane::{Dataplane, DataplaneStatus, WorkerPackets};

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
    fn join(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), String>> {
        let cfg = cfg.clone();
        Box::pin(async move {
            self.engine
                .join(&self.identity, &cfg)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn update(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), String>> {
        let cfg = cfg.clone();
        Box::pin(async move { self.engine.update(&cfg).await.map_err(|e| e.to_string()) })
    }

    fn leave(&self, nwid: NetworkId) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.engine.leave(nwid).await.map_err(|e| e.to_string()) })
    }

    fn status(&self, nwid: NetworkId) -> Option<DataplaneStatus> {
        self.engine.status(nwid).map(|s| DataplaneStatus {
            interface: s.interface,
            mtu: s.mtu,
            addresses: s.addresses,
            routes: s.routes,
            peers: s.peers,
            drops: s.drops.into_iter().filter(|&(_, n)| n > 0).collect(),
        })
    }

    fn workers(&self) -> Vec<WorkerPackets> {
        self.engine
            .workers()
            .into_iter()
            .map(|w| WorkerPackets {
                to_peers: w.to_peers,
                from_peers: w.from_peers,
                busy_poll_ms: w.busy_poll_ms,
            })
            .collect()
    }
}

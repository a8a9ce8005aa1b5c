//! `NoDataplane`: a [`Dataplane`] that records what it is asked to do and reports the plan
//! it would apply, touching no kernel state. The daemon's unit tests drive it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;
use meshd_engine::Offloads;
use meshd_proto::{NetworkConfig, NetworkId, NodeId};

use super::dataplane::{Dataplane, EngineError, NetworkStatus};

/// What a [`NoDataplane`] was asked to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneCall {
    Join { network: NetworkId, revision: u64 },
    Update { network: NetworkId, revision: u64 },
    Leave { network: NetworkId },
}

/// A data plane that touches nothing: it records the calls and reports the engine's plan
/// for the network (interface name, addresses, routes: [`meshd_engine::plan`]) as if it
/// had been carried out, with no peers. Used until the engine is attached, and by the
/// daemon's tests.
#[derive(Debug)]
pub struct NoDataplane {
    node: NodeId,
    calls: Mutex<Vec<DataplaneCall>>,
    plans: Mutex<BTreeMap<NetworkId, NetworkStatus>>,
}

impl NoDataplane {
    /// A data plane for the node `node` (whose addresses the plans show).
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            calls: Mutex::new(Vec::new()),
            plans: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<DataplaneCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn plan(&self, cfg: &NetworkConfig) -> NetworkStatus {
        let plan = meshd_engine::plan(cfg, self.node);
        NetworkStatus {
            interface: plan.name,
            mtu: plan.mtu,
            addresses: plan.addresses.into_iter().collect(),
            routes: plan.routes.into_iter().collect(),
            peers: Vec::new(),
            drops: Vec::new(),
            relayed_packets: 0,
            relayed_bytes: 0,
            failover: Vec::new(),
            offloads: Offloads::default(),
        }
    }

    fn record(&self, call: DataplaneCall, plan: Option<(NetworkId, NetworkStatus)>) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        match (call, plan) {
            (_, Some((network, plan))) => {
                plans.insert(network, plan);
            }
            (DataplaneCall::Leave { network }, None) => {
                plans.remove(&network);
            }
            _ => {}
        }
    }
}

impl Dataplane for NoDataplane {
    fn join(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>> {
        let call = DataplaneCall::Join {
            network: cfg.network_id,
            revision: cfg.revision,
        };
        self.record(call, Some((cfg.network_id, self.plan(cfg))));
        Box::pin(async { Ok(()) })
    }

    fn update(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>> {
        let call = DataplaneCall::Update {
            network: cfg.network_id,
            revision: cfg.revision,
        };
        self.record(call, Some((cfg.network_id, self.plan(cfg))));
        Box::pin(async { Ok(()) })
    }

    fn leave(&self, nwid: NetworkId) -> BoxFuture<'_, Result<(), EngineError>> {
        self.record(DataplaneCall::Leave { network: nwid }, None);
        Box::pin(async { Ok(()) })
    }

    fn status(&self, nwid: NetworkId) -> Option<NetworkStatus> {
        self.plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&nwid)
            .cloned()
    }

    fn attached(&self) -> bool {
        false
    }
}

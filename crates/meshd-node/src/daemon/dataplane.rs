//! The seam between the daemon's control side and the data plane (TUN, kernel addresses and
//! routes, UDP sessions): the daemon decides *which* verified config a network runs on and
//! calls a [`Dataplane`] to make it so.
//!
//! Call order, per network: `join` once with the first config (from the controller or from
//! the cache at start), then `update` with each newer one, then `leave`. Calls for one
//! network never overlap, and each `update` carries a strictly newer revision than the one
//! before. A `join` that failed is followed by another `join` (not `update`) with the next
//! config, and `leave` comes only after a `join` that succeeded (a failed `join` cleans up
//! after itself). `status` may be called at any time, from any task, and must not block.
//!
//! The returned futures borrow `self` only: take from `cfg` what the work needs (a clone)
//! before returning the future.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
pub use meshd_engine::dataplane::ReachDatagram;
pub use meshd_engine::{EngineError, NetworkStatus, WorkerPackets};
use meshd_proto::{NetworkConfig, NetworkId};
use tokio::sync::mpsc;

/// What the daemon drives. Implemented by the engine (meshd-engine) and, for the daemon's
/// own tests and for builds without the engine, by [`NoDataplane`](super::NoDataplane).
///
/// The types are the engine's own: what it reports is what `meshd status` shows, and its
/// errors (one line meant for the user) are shown per network.
pub trait Dataplane: Send + Sync + 'static {
    /// Brings the network up on its first config: interface, addresses, routes, peers.
    fn join(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Moves the network to a newer config (apply the difference).
    fn update(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Tears the network down: peers, routes, addresses, interface.
    fn leave(&self, nwid: NetworkId) -> BoxFuture<'_, Result<(), EngineError>>;
    /// What the network looks like right now; `None` when it is not up.
    fn status(&self, nwid: NetworkId) -> Option<NetworkStatus>;
    /// Whether packets really flow (false for [`NoDataplane`](super::NoDataplane)); shown by `meshd status`.
    fn attached(&self) -> bool {
        true
    }
    /// The packets each packet worker moved, in worker order; empty when nothing moves
    /// packets.
    fn workers(&self) -> Vec<WorkerPackets> {
        Vec::new()
    }
    /// Sends a reach datagram (a reflect request) from the data-plane socket; false when it
    /// could not (or there is no socket).
    fn send_datagram(&self, _to: SocketAddr, _bytes: &[u8]) -> bool {
        false
    }
    /// The relays' answers that reach the data-plane socket: the receiver the first time,
    /// `None` after, and when there is no socket.
    fn reach_datagrams(&self) -> Option<mpsc::Receiver<ReachDatagram>> {
        None
    }
    /// The live relays, best first, for a network's peers without a direct path.
    fn set_relays(&self, _nwid: NetworkId, _relays: Vec<SocketAddr>) {}
}

/// A shared data plane is a data plane: lets a test keep a handle on the one it passes to
/// [`super::run`].
impl<D: Dataplane + ?Sized> Dataplane for Arc<D> {
    fn join(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>> {
        (**self).join(cfg)
    }
    fn update(&self, cfg: &NetworkConfig) -> BoxFuture<'_, Result<(), EngineError>> {
        (**self).update(cfg)
    }
    fn leave(&self, nwid: NetworkId) -> BoxFuture<'_, Result<(), EngineError>> {
        (**self).leave(nwid)
    }
    fn status(&self, nwid: NetworkId) -> Option<NetworkStatus> {
        (**self).status(nwid)
    }
    fn attached(&self) -> bool {
        (**self).attached()
    }
    fn workers(&self) -> Vec<WorkerPackets> {
        (**self).workers()
    }
    fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) -> bool {
        (**self).send_datagram(to, bytes)
    }
    fn reach_datagrams(&self) -> Option<mpsc::Receiver<ReachDatagram>> {
        (**self).reach_datagrams()
    }
    fn set_relays(&self, nwid: NetworkId, relays: Vec<SocketAddr>) {
        (**self).set_relays(nwid, relays);
    }
}

#[cfg(test)]
mod tests {
    use super::super::no_dataplane::*;
    use meshd_proto::NodeId;
    use std::net::Ipv4Addr;

    use ipnet::Ipv4Net;
    use meshd_proto::{Identity, ManagedRoute, MemberConfig, NetworkKey};

    use super::*;

    fn two_member_config() -> (NetworkConfig, NodeId, NodeId) {
        let key = NetworkKey::from_seed(&[3; 32]).unwrap();
        let (a, b) = (Identity::generate_unproven(), Identity::generate_unproven());
        let mut cfg = NetworkConfig::new(key.network_id(), "t");
        cfg.revision = 4;
        cfg.v4_pools = vec!["10.147.17.0/24".parse().unwrap()];
        cfg.container_pool = Some("172.28.0.0/16".parse().unwrap());
        for (i, id) in [&a, &b].into_iter().enumerate() {
            let i = u8::try_from(i).unwrap();
            cfg.members.push(MemberConfig {
                node_id: id.node_id(),
                identity: *id.public(),
                name: format!("h{i}"),
                ipv4: vec![Ipv4Addr::new(10, 147, 17, 10 + i)],
                container_subnet: Some(Ipv4Net::new(Ipv4Addr::new(172, 28, i, 0), 24).unwrap()),
                endpoints: vec![],
                delegated_subnet: None,
                relay: false,
                port_mapped: false,
            });
        }
        cfg.routes.push(ManagedRoute::via(
            "192.168.100.0/24".parse().unwrap(),
            a.node_id(),
        ));
        cfg.canonicalize();
        (cfg, a.node_id(), b.node_id())
    }

    #[test]
    fn no_dataplane_records_calls_and_reports_the_plan() {
        let (cfg, a, _) = two_member_config();
        let dp = NoDataplane::new(a);
        assert!(!dp.attached());
        futures::executor::block_on(dp.join(&cfg)).unwrap();
        let status = dp.status(cfg.network_id).expect("a plan after join");
        let plan = meshd_engine::plan(&cfg, a);
        assert_eq!(status.interface, plan.name);
        assert_eq!(status.mtu, cfg.mtu);
        assert_eq!(
            status.addresses,
            plan.addresses.into_iter().collect::<Vec<_>>()
        );
        assert_eq!(status.routes, plan.routes.into_iter().collect::<Vec<_>>());
        assert!(!status.routes.is_empty() && status.peers.is_empty());
        let mut newer = cfg.clone();
        newer.revision += 1;
        futures::executor::block_on(dp.update(&newer)).unwrap();
        futures::executor::block_on(dp.leave(cfg.network_id)).unwrap();
        assert!(dp.status(cfg.network_id).is_none());
        assert_eq!(
            dp.calls(),
            vec![
                DataplaneCall::Join {
                    network: cfg.network_id,
                    revision: 4
                },
                DataplaneCall::Update {
                    network: cfg.network_id,
                    revision: 5
                },
                DataplaneCall::Leave {
                    network: cfg.network_id
                },
            ]
        );
    }
}

//! The replica's relay on UDP, next to its node channel (port + 1, see
//! [`meshd_channel::protocol::relay_port`]): it answers nodes' reflect requests with the
//! address it saw (how nodes learn their public endpoint and NAT behaviour) and forwards
//! relay envelopes between authorized members of a common network. The protocol, the
//! checks and the limits are [`meshd_proto::reach::relay::RelayServer`]'s; this is its
//! socket, its clock and its view of the membership, refreshed after every applied command.
//!
//! Every replica derives the same relay secret from the cluster secret, so a node
//! registers with every replica under the one credential its connected replica gave it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshd_proto::addr::unmapped;
use meshd_proto::reach::credential::{Credential, RelaySecret};
use meshd_proto::reach::relay::{RelayAction, RelayCounters, RelayLimits, RelayServer};
use meshd_proto::{NetworkId, NodeId};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::controller::Controller;
use crate::state::ControllerState;

/// How long a credential handed to a node is valid.
pub const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(2 * 24 * 3600);
/// How often a connected node gets a fresh credential: well before the last one expires.
pub const CREDENTIAL_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// How often registrations that were not refreshed are dropped, and the counters published.
const EXPIRE_EVERY: Duration = Duration::from_secs(2);

/// The relay secret of a cluster whose replicas share `cluster_secret`.
pub fn secret(cluster_secret: &str) -> RelaySecret {
    RelaySecret::derive(cluster_secret.as_bytes())
}

/// A credential for `node`, valid for [`CREDENTIAL_LIFETIME`] from now.
pub fn issue(secret: &RelaySecret, node: NodeId) -> Credential {
    let expires = meshd_io::clock::now_secs().saturating_add(CREDENTIAL_LIFETIME.as_secs());
    secret.issue(node, expires)
}

/// The authorized members of every network.
fn authorized(state: &ControllerState) -> Vec<(NetworkId, NodeId)> {
    state
        .networks
        .values()
        .flat_map(|n| {
            n.members
                .values()
                .filter(|m| m.authorized)
                .map(|m| (n.id, m.node_id))
        })
        .collect()
}

/// A running relay's counters, for logs and metrics.
#[derive(Debug, Clone, Default)]
pub struct RelayStats(Arc<Mutex<RelayCounters>>);

impl RelayStats {
    pub fn snapshot(&self) -> RelayCounters {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// What `GET /v1/health` shows under `relay` (as of the last few seconds).
    pub fn to_json(&self) -> serde_json::Value {
        let c = self.snapshot();
        serde_json::json!({
            "reflections": c.reflections,
            "relayed_packets": c.relayed_packets,
            "relayed_bytes": c.relayed_bytes,
            "drops": c.drops,
        })
    }
}

/// Serves the relay on `socket` until the task is dropped.
pub async fn serve<C: Controller>(
    socket: UdpSocket,
    controller: C,
    secret: RelaySecret,
    limits: RelayLimits,
    stats: RelayStats,
) {
    if let Ok(local) = socket.local_addr() {
        info!(%local, "relay listening");
    }
    let mut relay = RelayServer::new(secret, limits);
    let mut applied = controller.applied();
    relay.set_members(controller.read(authorized));
    applied.borrow_and_update();
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((len, from)) = received else { continue };
                let from = unmapped(from);
                let now_unix = meshd_io::clock::now_secs();
                match relay.handle(Instant::now(), now_unix, from, &buf[..len]) {
                    Ok(RelayAction::Reply { to, bytes }) => {
                        let _ = socket.send_to(&bytes, to).await;
                    }
                    Ok(RelayAction::Forward { to, bytes }) => {
                        let _ = socket.send_to(bytes, to).await;
                    }
                    Err(reason) => debug!(%from, %reason, "relay dropped a datagram"),
                }
            }
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
                relay.set_members(controller.read(authorized));
            }
            _ = expire.tick() => {
                relay.expire(Instant::now());
                if let Ok(mut c) = stats.0.lock() {
                    *c = relay.counters().clone();
                }
            }
        }
    }
}

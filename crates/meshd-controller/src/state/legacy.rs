//! The state as older replicas stored it in snapshots: before member flags (no format tag)
//! and before the replica list (tag 2). Read once at start and converted, so a replica
//! upgraded in place keeps its networks.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use meshd_proto::{NetworkId, NodeId, PublicIdentity};
use serde::Deserialize;

use super::{ControllerState, Member, Network, Route};

/// The second format: the networks alone.
#[derive(Deserialize)]
pub struct ControllerStateV2 {
    networks: BTreeMap<NetworkId, Network>,
}

impl std::fmt::Debug for ControllerStateV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The networks hold signing keys.
        f.debug_struct("ControllerStateV2")
            .field("networks", &self.networks.len())
            .finish_non_exhaustive()
    }
}

impl From<ControllerStateV2> for ControllerState {
    fn from(old: ControllerStateV2) -> Self {
        ControllerState {
            networks: old.networks,
            replicas: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
pub struct ControllerStateV1 {
    networks: BTreeMap<NetworkId, NetworkV1>,
}

impl std::fmt::Debug for ControllerStateV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The networks hold signing keys.
        f.debug_struct("ControllerStateV1")
            .field("networks", &self.networks.len())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct NetworkV1 {
    id: NetworkId,
    key_seed: [u8; 32],
    name: String,
    revision: u64,
    mtu: u16,
    sixplane: bool,
    rfc4193: bool,
    v4_pools: Vec<Ipv4Net>,
    container_pool: Ipv4Net,
    container_prefix: u8,
    routes: BTreeMap<IpNet, Route>,
    members: BTreeMap<NodeId, MemberV1>,
    created_ms: u64,
}

#[derive(Deserialize)]
struct MemberV1 {
    node_id: NodeId,
    identity: PublicIdentity,
    name: String,
    authorized: bool,
    ipv4: Vec<Ipv4Addr>,
    container_subnet: Option<Ipv4Net>,
    physical: Option<SocketAddr>,
    local: Vec<SocketAddr>,
    created_ms: u64,
    last_authorized_ms: Option<u64>,
    last_deauthorized_ms: Option<u64>,
    last_seen_ms: Option<u64>,
}

impl From<ControllerStateV1> for ControllerState {
    fn from(old: ControllerStateV1) -> Self {
        let networks = old
            .networks
            .into_iter()
            .map(|(id, n)| {
                let members = n
                    .members
                    .into_iter()
                    .map(|(node, m)| {
                        let member = Member {
                            node_id: m.node_id,
                            identity: m.identity,
                            name: m.name,
                            authorized: m.authorized,
                            ipv4: m.ipv4,
                            container_subnet: m.container_subnet,
                            physical: m.physical,
                            local: m.local,
                            created_ms: m.created_ms,
                            last_authorized_ms: m.last_authorized_ms,
                            last_deauthorized_ms: m.last_deauthorized_ms,
                            last_seen_ms: m.last_seen_ms,
                            relay: false,
                            port_mapped: false,
                            report: None,
                        };
                        (node, member)
                    })
                    .collect();
                let network = Network {
                    id: n.id,
                    key_seed: n.key_seed,
                    name: n.name,
                    revision: n.revision,
                    mtu: n.mtu,
                    sixplane: n.sixplane,
                    rfc4193: n.rfc4193,
                    v4_pools: n.v4_pools,
                    container_pool: n.container_pool,
                    container_prefix: n.container_prefix,
                    routes: n.routes,
                    members,
                    created_ms: n.created_ms,
                };
                (id, network)
            })
            .collect();
        ControllerState {
            networks,
            replicas: Vec::new(),
        }
    }
}

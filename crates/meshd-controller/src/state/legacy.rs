//! The state as older replicas stored it in snapshots: before member flags (no format tag),
//! before the replica list (tag 2), and before IPv6 egress, delegated prefixes and failover
//! routes (tag 3). Read once at start and converted, so a replica upgraded in place keeps
//! its networks.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use meshd_proto::config::Ipv6Egress;
use meshd_proto::{NetworkId, NodeId, PublicIdentity};
use serde::Deserialize;

use super::{ControllerState, Member, Network, ReplicaRecord, Route};

/// The third format: the networks and the replica list.
#[derive(Deserialize)]
pub struct ControllerStateV3 {
    networks: BTreeMap<NetworkId, NetworkV3>,
    replicas: Vec<ReplicaRecord>,
}

/// The second format: the networks alone.
#[derive(Deserialize)]
pub struct ControllerStateV2 {
    networks: BTreeMap<NetworkId, NetworkV3>,
}

/// The first format: members without flags.
#[derive(Deserialize)]
pub struct ControllerStateV1 {
    networks: BTreeMap<NetworkId, NetworkV1>,
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // The networks hold signing keys.
                f.debug_struct(stringify!($t))
                    .field("networks", &self.networks.len())
                    .finish_non_exhaustive()
            }
        }
    )*};
}

redacted_debug!(ControllerStateV1, ControllerStateV2, ControllerStateV3);

impl From<ControllerStateV3> for ControllerState {
    fn from(old: ControllerStateV3) -> Self {
        ControllerState {
            networks: convert(old.networks),
            replicas: old.replicas,
        }
    }
}

impl From<ControllerStateV2> for ControllerState {
    fn from(old: ControllerStateV2) -> Self {
        ControllerState {
            networks: convert(old.networks),
            replicas: Vec::new(),
        }
    }
}

impl From<ControllerStateV1> for ControllerState {
    fn from(old: ControllerStateV1) -> Self {
        let networks = old
            .networks
            .into_iter()
            .map(|(id, n)| (id, NetworkV3::from(n)))
            .collect();
        ControllerState {
            networks: convert(networks),
            replicas: Vec::new(),
        }
    }
}

fn convert(networks: BTreeMap<NetworkId, NetworkV3>) -> BTreeMap<NetworkId, Network> {
    networks
        .into_iter()
        .map(|(id, n)| (id, Network::from(n)))
        .collect()
}

/// Fields common to every older network record, in their order.
macro_rules! network_fields {
    ($name:ident, $member:ty) => {
        #[derive(Deserialize)]
        struct $name {
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
            routes: BTreeMap<IpNet, RouteV3>,
            members: BTreeMap<NodeId, $member>,
            created_ms: u64,
        }
    };
}

network_fields!(NetworkV3, MemberV3);
network_fields!(NetworkV1, MemberV1);

#[derive(Deserialize)]
struct RouteV3 {
    via: NodeId,
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
struct MemberV3 {
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
    relay: bool,
    port_mapped: bool,
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

impl From<MemberV1> for MemberV3 {
    fn from(m: MemberV1) -> Self {
        MemberV3 {
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
        }
    }
}

impl From<NetworkV1> for NetworkV3 {
    fn from(n: NetworkV1) -> Self {
        NetworkV3 {
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
            members: n
                .members
                .into_iter()
                .map(|(id, m)| (id, MemberV3::from(m)))
                .collect(),
            created_ms: n.created_ms,
        }
    }
}

impl From<MemberV3> for Member {
    fn from(m: MemberV3) -> Self {
        Member {
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
            relay: m.relay,
            port_mapped: m.port_mapped,
            delegated_prefix: None,
            report: None,
        }
    }
}

impl From<NetworkV3> for Network {
    fn from(n: NetworkV3) -> Self {
        Network {
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
            routes: n
                .routes
                .into_iter()
                .map(|(t, r)| {
                    let route = Route {
                        via: r.via,
                        gateway: r.gateway,
                        backups: Vec::new(),
                    };
                    (t, route)
                })
                .collect(),
            members: n
                .members
                .into_iter()
                .map(|(id, m)| (id, Member::from(m)))
                .collect(),
            created_ms: n.created_ms,
            ipv6_egress: Ipv6Egress::Off,
        }
    }
}

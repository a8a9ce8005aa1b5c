//! What the API answers with: the JSON shapes of networks, members and routes.
//!
//! Views are built from applied state and carry derived values (the 6PLANE and RFC4193
//! ranges, member counts) so clients need no address math. They never carry the network's
//! key seed. The admin client deserializes the same types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use meshd_proto::{NetworkId, NodeId, addr};
use serde::{Deserialize, Serialize};

use crate::state::{Member, Network, Route};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: NetworkId,
    pub name: String,
    pub revision: u64,
    pub mtu: u16,
    pub sixplane: bool,
    pub rfc4193: bool,
    pub v4_pools: Vec<Ipv4Net>,
    pub container_pool: Ipv4Net,
    pub container_prefix: u8,
    /// The network's 6PLANE /40, when 6PLANE is on.
    pub sixplane_range: Option<Ipv6Net>,
    /// The network's RFC4193 /88, when RFC4193 is on.
    pub rfc4193_range: Option<Ipv6Net>,
    pub routes: Vec<RouteView>,
    pub members: MemberCounts,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounts {
    pub total: usize,
    pub authorized: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub target: IpNet,
    pub via: NodeId,
    /// The member address the route was added with (`--via 10.147.0.12`), if any.
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub node_id: NodeId,
    /// Both of the member's keys, hashed short: what `meshd status` shows on the node, to
    /// compare before authorizing.
    pub key_fingerprint: String,
    pub name: String,
    pub authorized: bool,
    pub ipv4: Vec<Ipv4Addr>,
    pub container_subnet: Option<Ipv4Net>,
    /// The member's 6PLANE /80 (its containers' IPv6 range), when 6PLANE is on.
    pub sixplane_subnet: Option<Ipv6Net>,
    /// The member's RFC4193 address, when RFC4193 is on.
    pub rfc4193_address: Option<Ipv6Addr>,
    /// Where the member's last connection came from.
    pub physical_endpoint: Option<SocketAddr>,
    /// The addresses the member reports for itself.
    pub local_endpoints: Vec<SocketAddr>,
    /// The physical endpoint is a port mapping the member's router holds.
    pub port_mapped: bool,
    /// The member relays for other members (`meshd daemon --relay`).
    pub relay: bool,
    pub created_ms: u64,
    pub last_authorized_ms: Option<u64>,
    pub last_deauthorized_ms: Option<u64>,
    pub last_seen_ms: Option<u64>,
}

impl NetworkView {
    pub fn of(net: &Network) -> Self {
        Self {
            id: net.id,
            name: net.name.clone(),
            revision: net.revision,
            mtu: net.mtu,
            sixplane: net.sixplane,
            rfc4193: net.rfc4193,
            v4_pools: net.v4_pools.clone(),
            container_pool: net.container_pool,
            container_prefix: net.container_prefix,
            sixplane_range: net.sixplane.then(|| addr::sixplane_network_prefix(net.id)),
            rfc4193_range: net.rfc4193.then(|| addr::rfc4193_network_prefix(net.id)),
            routes: net
                .routes
                .iter()
                .map(|(t, r)| RouteView::of(*t, r))
                .collect(),
            members: MemberCounts {
                total: net.members.len(),
                authorized: net.members.values().filter(|m| m.authorized).count(),
            },
            created_ms: net.created_ms,
        }
    }
}

impl RouteView {
    pub fn of(target: IpNet, route: &Route) -> Self {
        Self {
            target,
            via: route.via,
            gateway: route.gateway,
        }
    }
}

impl MemberView {
    pub fn of(net: &Network, m: &Member) -> Self {
        Self {
            node_id: m.node_id,
            key_fingerprint: m.identity.fingerprint(),
            name: m.name.clone(),
            authorized: m.authorized,
            ipv4: m.ipv4.clone(),
            container_subnet: m.container_subnet,
            sixplane_subnet: net
                .sixplane
                .then(|| addr::sixplane_node_prefix(net.id, m.node_id)),
            rfc4193_address: net.rfc4193.then(|| addr::rfc4193_addr(net.id, m.node_id)),
            physical_endpoint: m.physical,
            local_endpoints: m.local.clone(),
            port_mapped: m.port_mapped,
            relay: m.relay,
            created_ms: m.created_ms,
            last_authorized_ms: m.last_authorized_ms,
            last_deauthorized_ms: m.last_deauthorized_ms,
            last_seen_ms: m.last_seen_ms,
        }
    }
}

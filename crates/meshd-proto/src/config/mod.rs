//! The network config a controller signs and every node runs on.
//!
//! It lists the *authorized* members only (a node that is not listed gets no session), their
//! public keys, assigned addresses, container subnets and last known endpoints, plus the
//! network's managed routes. Members and routes are kept sorted so that one config has exactly
//! one encoding ([`codec`]), which is what the controller signs ([`signed`]).

pub mod codec;
pub mod signed;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::identity::PublicIdentity;
use crate::{NetworkId, NodeId, addr};

pub use codec::DecodeError;
pub use signed::{SignedConfig, VerifyError};

/// Default tunnel MTU: a 1500-byte underlay minus IPv6 (40) + UDP (8) + our 32 bytes.
pub const DEFAULT_MTU: u16 = 1420;
/// Smallest MTU a config may carry: IPv6's minimum link MTU.
pub const MIN_MTU: u16 = 1280;
/// Largest MTU a config may carry (jumbo underlays).
pub const MAX_MTU: u16 = 9000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub network_id: NetworkId,
    /// Increases with every change; a node never replaces a config with an older one.
    pub revision: u64,
    pub name: String,
    pub mtu: u16,
    /// Each member owns the 6PLANE /80 ending in its node id.
    pub sixplane: bool,
    /// Each member has the RFC4193 /128 ending in its node id.
    pub rfc4193: bool,
    /// IPv4 pools members' addresses come from; an address's interface prefix is its pool's.
    pub v4_pools: Vec<Ipv4Net>,
    /// The supernet container subnets are carved from, if the network hands them out.
    pub container_pool: Option<Ipv4Net>,
    /// What each node does with its containers' mesh IPv6 traffic leaving through its own
    /// uplink.
    pub ipv6_egress: Ipv6Egress,
    /// Authorized members, sorted by node id.
    pub members: Vec<MemberConfig>,
    /// Managed routes, sorted by target.
    pub routes: Vec<ManagedRoute>,
    /// The controller's replicas and their keys, sorted by address: a node pins these keys
    /// (the network key vouches for them), whatever it met first at those addresses.
    pub replicas: Vec<ReplicaEntry>,
}

/// A controller replica as a config names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaEntry {
    /// `host:port` of its node channel.
    pub address: String,
    /// Its Ed25519 key, which it proves in the channel's TLS handshake.
    pub key: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    pub node_id: NodeId,
    pub identity: PublicIdentity,
    pub name: String,
    /// Assigned IPv4 addresses, sorted.
    pub ipv4: Vec<Ipv4Addr>,
    /// The IPv4 subnet routed to this member for its containers.
    pub container_subnet: Option<Ipv4Net>,
    /// The member's container IPv6 /80 from its host's delegated (global) prefix; its
    /// containers use it instead of the 6PLANE /80.
    pub delegated_subnet: Option<Ipv6Net>,
    /// Where the member was last seen from (its address as the controller saw it, then the
    /// local addresses it reported), most likely first.
    pub endpoints: Vec<SocketAddr>,
    /// The member forwards relay envelopes between members it holds sessions with
    /// (`meshd daemon --relay`), so relayed pairs need no replica.
    pub relay: bool,
    /// The first endpoint is a port mapping the member's router holds (UPnP-IGD, NAT-PMP or
    /// PCP), not an address the member or a replica saw.
    pub port_mapped: bool,
}

/// A prefix routed through a member (a LAN behind a host, say): its gateways, most preferred
/// first. Peers send to the first gateway with a live session ([`crate::routes`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManagedRoute {
    pub target: IpNet,
    /// One or more distinct members, at most [`MAX_ROUTE_GATEWAYS`].
    pub gateways: Vec<NodeId>,
}

/// Most gateways one managed route names.
pub const MAX_ROUTE_GATEWAYS: usize = 8;

impl ManagedRoute {
    /// A route through one member.
    pub fn via(target: IpNet, gateway: NodeId) -> Self {
        Self {
            target,
            gateways: vec![gateway],
        }
    }

    /// The most preferred gateway.
    pub fn preferred(&self) -> Option<NodeId> {
        self.gateways.first().copied()
    }

    pub fn has_gateway(&self, node: NodeId) -> bool {
        self.gateways.contains(&node)
    }
}

/// What nodes do with their containers' mesh IPv6 traffic (6PLANE, RFC4193) that leaves
/// through the host's own uplink rather than the mesh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Ipv6Egress {
    /// Nothing: mesh addresses stay inside the mesh.
    #[default]
    Off,
    /// Masquerade it behind the host's uplink address (NAT66), never traffic into the mesh.
    Nat66,
}

impl Ipv6Egress {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Egress::Off => "off",
            Ipv6Egress::Nat66 => "nat66",
        }
    }
}

impl std::fmt::Display for Ipv6Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Ipv6Egress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Ipv6Egress::Off),
            "nat66" => Ok(Ipv6Egress::Nat66),
            other => Err(format!(
                "unknown IPv6 egress mode {other:?}: use nat66 (masquerade containers' mesh \
                 IPv6 leaving through the host's uplink) or off"
            )),
        }
    }
}

impl NetworkConfig {
    /// An empty config at revision 0 with default settings.
    pub fn new(network_id: NetworkId, name: impl Into<String>) -> Self {
        Self {
            network_id,
            revision: 0,
            name: name.into(),
            mtu: DEFAULT_MTU,
            sixplane: true,
            rfc4193: true,
            v4_pools: Vec::new(),
            container_pool: None,
            ipv6_egress: Ipv6Egress::Off,
            members: Vec::new(),
            routes: Vec::new(),
            replicas: Vec::new(),
        }
    }

    pub fn member(&self, node: NodeId) -> Option<&MemberConfig> {
        self.members
            .binary_search_by_key(&node, |m| m.node_id)
            .ok()
            .map(|i| &self.members[i])
    }

    /// Restores the canonical order (members by id, routes by target, addresses sorted) after
    /// building a config by hand; the encoder refuses configs that are not in it.
    pub fn canonicalize(&mut self) {
        self.members.sort_by_key(|m| m.node_id);
        self.members.dedup_by_key(|m| m.node_id);
        for m in &mut self.members {
            m.ipv4.sort();
            m.ipv4.dedup();
        }
        self.routes.sort();
        self.routes.dedup_by_key(|r| r.target);
        for r in &mut self.routes {
            let mut seen = Vec::with_capacity(r.gateways.len());
            r.gateways.retain(|g| {
                let new = !seen.contains(g);
                seen.push(*g);
                new
            });
        }
        self.v4_pools.sort();
        self.v4_pools.dedup();
        self.replicas.sort();
        self.replicas.dedup_by(|a, b| a.address == b.address);
    }

    /// The interface addresses `node` carries on this network, with their prefix lengths:
    /// IPv4 with its pool's prefix, RFC4193 as /88 and 6PLANE as /80.
    pub fn interface_addresses(&self, node: NodeId) -> Vec<IpNet> {
        let mut out = Vec::new();
        if let Some(m) = self.member(node) {
            for &a in &m.ipv4 {
                let len = self
                    .v4_pools
                    .iter()
                    .find(|p| p.contains(&a))
                    .map_or(32, |p| p.prefix_len());
                out.extend(Ipv4Net::new(a, len).ok().map(IpNet::V4));
            }
        }
        if self.rfc4193 {
            let a = addr::rfc4193_addr(self.network_id, node);
            out.extend(
                Ipv6Net::new(a, addr::RFC4193_NETWORK_PREFIX)
                    .ok()
                    .map(IpNet::V6),
            );
        }
        if self.sixplane {
            let a = addr::sixplane_addr(self.network_id, node);
            out.extend(
                Ipv6Net::new(a, addr::SIXPLANE_NODE_PREFIX)
                    .ok()
                    .map(IpNet::V6),
            );
        }
        out
    }

    /// The 6PLANE /80 a member owns, when 6PLANE is on.
    pub fn sixplane_subnet(&self, node: NodeId) -> Option<Ipv6Net> {
        self.sixplane
            .then(|| addr::sixplane_node_prefix(self.network_id, node))
    }

    /// The IPv6 /80 a member's containers use: from its delegated prefix when it has one,
    /// else its 6PLANE /80.
    pub fn container_subnet_v6(&self, node: NodeId) -> Option<Ipv6Net> {
        self.member(node)
            .and_then(|m| m.delegated_subnet)
            .or_else(|| self.sixplane_subnet(node))
    }

    /// Whether `ip` is one of the addresses this network assigns by formula to `node`.
    pub fn is_formula_address(&self, node: NodeId, ip: Ipv6Addr) -> bool {
        (self.rfc4193 && addr::rfc4193_addr(self.network_id, node) == ip)
            || (self.sixplane && addr::sixplane_node_prefix(self.network_id, node).contains(&ip))
    }

    /// Every prefix owned by `node`: assigned addresses, container subnets, managed routes.
    pub fn owned_prefixes(&self, node: NodeId) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = Vec::new();
        if let Some(m) = self.member(node) {
            out.extend(m.ipv4.iter().map(|&a| IpNet::from(IpAddr::V4(a))));
            out.extend(m.container_subnet.map(IpNet::V4));
            out.extend(m.delegated_subnet.map(IpNet::V6));
        }
        out.extend(
            self.routes
                .iter()
                .filter(|r| r.has_gateway(node))
                .map(|r| r.target),
        );
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;

    /// A config with `n` members holding addresses, container /24s and endpoints, plus routes.
    pub(crate) fn sample(n: usize) -> (NetworkConfig, Vec<Identity>) {
        let key = crate::NetworkKey::from_seed(&[1; 32]).unwrap();
        let mut cfg = NetworkConfig::new(key.network_id(), "sample");
        cfg.revision = 7;
        cfg.v4_pools = vec!["10.147.17.0/24".parse().unwrap()];
        cfg.container_pool = Some("172.28.0.0/16".parse().unwrap());
        let ids: Vec<Identity> = (0..n).map(|_| Identity::generate_unproven()).collect();
        for (i, id) in ids.iter().enumerate() {
            let i = u8::try_from(i).unwrap();
            cfg.members.push(MemberConfig {
                node_id: id.node_id(),
                identity: *id.public(),
                name: format!("host-{i}"),
                ipv4: vec![Ipv4Addr::new(10, 147, 17, 10 + i)],
                container_subnet: Some(Ipv4Net::new(Ipv4Addr::new(172, 28, i, 0), 24).unwrap()),
                endpoints: vec![SocketAddr::from(([192, 0, 2, 10 + i], 9993))],
                delegated_subnet: None,
                relay: false,
                port_mapped: false,
            });
        }
        if let Some(first) = ids.first() {
            cfg.routes.push(ManagedRoute::via(
                "192.168.100.0/24".parse().unwrap(),
                first.node_id(),
            ));
        }
        cfg.canonicalize();
        (cfg, ids)
    }

    #[test]
    fn interface_addresses_carry_pool_prefixes() {
        let (cfg, ids) = sample(2);
        let node = ids[0].node_id();
        let m = cfg.member(node).unwrap();
        let addrs = cfg.interface_addresses(node);
        assert_eq!(addrs[0], IpNet::V4(Ipv4Net::new(m.ipv4[0], 24).unwrap()));
        assert_eq!(addrs.len(), 3);
        assert!(addrs[1].to_string().ends_with("/88"));
        assert!(cfg.is_formula_address(node, addr::sixplane_addr(cfg.network_id, node)));
        assert!(
            !cfg.is_formula_address(ids[1].node_id(), addr::sixplane_addr(cfg.network_id, node))
        );
    }
}

//! What a network routes to which member: managed routes (with their failover gateways)
//! and the global prefixes delegated to members' hosts, and the checks that keep them from
//! overlapping each other, the pools, the containers' subnets and the mesh's own ranges.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv6Net};
use meshd_proto::config::MAX_ROUTE_GATEWAYS;
use meshd_proto::{NodeId, addr};
use serde::{Deserialize, Serialize};

use super::{Applied, MAX_ROUTES, Network, RejectKind, Rejected, RouteVia};
use crate::ipam::overlaps;

/// A member's container subnet from its delegated prefix: the prefix's first /80 (Docker's
/// `fixed-cidr-v6` takes a /80 and leaves room for its MAC-derived addresses).
pub const DELEGATED_SUBNET_LEN: u8 = 80;

/// The /80 a delegated prefix gives its member's containers: its first.
pub fn delegated_subnet(prefix: Ipv6Net) -> Ipv6Net {
    Ipv6Net::new(prefix.network(), DELEGATED_SUBNET_LEN).expect("80 is a valid length")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The most preferred gateway.
    pub via: NodeId,
    /// The gateway address the route was given with, if any.
    pub gateway: Option<IpAddr>,
    /// The gateways traffic fails over to, in order of preference.
    pub backups: Vec<NodeId>,
}

impl Route {
    /// Every gateway, most preferred first.
    pub fn gateways(&self) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::once(self.via).chain(self.backups.iter().copied())
    }

    pub fn has_gateway(&self, node: NodeId) -> bool {
        self.gateways().any(|g| g == node)
    }
}

/// Address ranges a managed route may not touch: they never cross the mesh, and routing
/// them into it would cut the host off (loopback) or break its LAN (link-local, multicast).
const RESERVED_RANGES: [(&str, &str); 8] = [
    ("0.0.0.0/8", "this-network addresses"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// Refuses a route target that touches a reserved range.
pub fn check_route_target(target: IpNet) -> Result<(), Rejected> {
    for (range, what) in RESERVED_RANGES {
        let range: IpNet = range.parse().expect("the reserved ranges parse");
        if overlaps(&target, &range) {
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!(
                    "route {target} touches {range} ({what}), which never goes through the mesh"
                ),
            ));
        }
    }
    Ok(())
}

impl Network {
    pub(super) fn add_route(
        &mut self,
        target: IpNet,
        gateways: &[RouteVia],
    ) -> Result<Applied, Rejected> {
        let id = self.id;
        if gateways.is_empty() || gateways.len() > MAX_ROUTE_GATEWAYS {
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!("a route names 1 to {MAX_ROUTE_GATEWAYS} gateways"),
            ));
        }
        if target.trunc() != target {
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!(
                    "route {target} has host bits set; did you mean {}?",
                    target.trunc()
                ),
            ));
        }
        check_route_target(target)?;
        if self.routes.len() >= MAX_ROUTES {
            return Err(Rejected::new(
                RejectKind::Conflict,
                format!("network {id} has {MAX_ROUTES} routes, the most it can hold"),
            ));
        }
        if let Some((m, endpoint)) = self
            .members
            .values()
            .flat_map(|m| m.endpoints().into_iter().map(move |e| (m, e)))
            .find(|(_, e)| target.contains(&e.ip()))
        {
            return Err(Rejected::new(
                RejectKind::Conflict,
                format!(
                    "route {target} covers {}, where member {} is reached: its own traffic \
                     would go into the mesh and the member would be cut off",
                    endpoint.ip(),
                    m.node_id
                ),
            ));
        }
        let mut owners = Vec::with_capacity(gateways.len());
        for via in gateways {
            let owner = match via {
                RouteVia::Node(n) => *n,
                RouteVia::Gateway(ip) => self.holder_of(*ip).ok_or_else(|| {
                    Rejected::new(
                        RejectKind::NotFound,
                        format!("no member of network {id} holds gateway address {ip}"),
                    )
                })?,
            };
            match self.members.get(&owner) {
                Some(m) if m.authorized => {}
                _ => {
                    return Err(Rejected::new(
                        RejectKind::NotFound,
                        format!("node {owner} is not an authorized member of network {id}"),
                    ));
                }
            }
            if owners.contains(&owner) {
                return Err(Rejected::new(
                    RejectKind::Invalid,
                    format!("route {target} names gateway {owner} twice"),
                ));
            }
            owners.push(owner);
        }
        let owner = owners[0];
        let gateway = match gateways[0] {
            RouteVia::Node(_) => None,
            RouteVia::Gateway(ip) => Some(ip),
        };
        if let Some(existing) = self.routes.get(&target) {
            return Err(Rejected::new(
                RejectKind::Conflict,
                format!(
                    "route {target} exists already via {}; remove it first",
                    existing.via
                ),
            ));
        }
        self.check_route_conflicts(target, owner)?;
        self.routes.insert(
            target,
            Route {
                via: owner,
                gateway,
                backups: owners[1..].to_vec(),
            },
        );
        self.revision += 1;
        Ok(Applied::RouteAdded {
            network: id,
            target,
            via: owner,
            revision: self.revision,
        })
    }

    fn check_route_conflicts(&self, target: IpNet, owner: NodeId) -> Result<(), Rejected> {
        let conflict = |what: String| {
            Err(Rejected::new(
                RejectKind::Conflict,
                format!("route {target} overlaps {what}"),
            ))
        };
        for pool in &self.v4_pools {
            if overlaps(&target, &IpNet::V4(*pool)) {
                return conflict(format!("the network's IPv4 pool {pool}"));
            }
        }
        for m in self.members.values() {
            if let Some(s) = m.container_subnet
                && overlaps(&target, &IpNet::V4(s))
            {
                return conflict(format!("container subnet {s} of member {}", m.node_id));
            }
        }
        for (t, r) in &self.routes {
            if r.via != owner && overlaps(&target, t) {
                return conflict(format!("route {t} via {}", r.via));
            }
        }
        for m in self.members.values() {
            if let Some(p) = m.delegated_prefix
                && overlaps(&target, &IpNet::V6(p))
            {
                return conflict(format!("delegated prefix {p} of member {}", m.node_id));
            }
        }
        if self.sixplane && overlaps(&target, &IpNet::V6(addr::sixplane_network_prefix(self.id))) {
            return conflict(format!(
                "the network's 6PLANE range {}",
                addr::sixplane_network_prefix(self.id)
            ));
        }
        if self.rfc4193 && overlaps(&target, &IpNet::V6(addr::rfc4193_network_prefix(self.id))) {
            return conflict(format!(
                "the network's RFC4193 range {}",
                addr::rfc4193_network_prefix(self.id)
            ));
        }
        Ok(())
    }

    /// Whether member `node` may have `prefix` delegated: global unicast, at most a /80,
    /// clear of other members' prefixes, the routes and the network's own ranges.
    pub(super) fn check_delegated_prefix(
        &self,
        node: NodeId,
        prefix: Ipv6Net,
    ) -> Result<(), Rejected> {
        let invalid = |why: String| Err(Rejected::new(RejectKind::Invalid, why));
        if prefix.trunc() != prefix {
            return invalid(format!(
                "delegated prefix {prefix} has host bits set; did you mean {}?",
                prefix.trunc()
            ));
        }
        if prefix.prefix_len() > DELEGATED_SUBNET_LEN {
            return invalid(format!(
                "delegated prefix {prefix} is longer than the /{DELEGATED_SUBNET_LEN} containers need"
            ));
        }
        let global: Ipv6Net = "2000::/3".parse().expect("a valid prefix");
        if !global.contains(&prefix) {
            return invalid(format!(
                "delegated prefix {prefix} is not global unicast (2000::/3): a ULA or link-local \
                 range needs no delegation, 6PLANE gives containers mesh addresses already"
            ));
        }
        let conflict = |what: String| {
            Err(Rejected::new(
                RejectKind::Conflict,
                format!("delegated prefix {prefix} overlaps {what}"),
            ))
        };
        for m in self.members.values().filter(|m| m.node_id != node) {
            if let Some(p) = m.delegated_prefix
                && overlaps(&IpNet::V6(prefix), &IpNet::V6(p))
            {
                return conflict(format!("delegated prefix {p} of member {}", m.node_id));
            }
        }
        for t in self.routes.keys() {
            if overlaps(&IpNet::V6(prefix), t) {
                return conflict(format!("route {t}"));
            }
        }
        Ok(())
    }
}

//! What the kernel side of one network looks like on this node (DESIGN.md section 3), as a
//! value: the TUN's name, MTU, addresses and routes. Pure, so the rules are unit-tested here
//! and [`crate::kernel::Kernel::apply`] only has to carry out a [`PlanDiff`].
//!
//! ```text
//! addresses (each brings its connected route)      routes (dev = the TUN, proto 109)
//!   my IPv4 / its pool's length  → the pool route    every other member's container subnet
//!   my RFC4193 / 88              → the network /88    every managed route owned by another member
//!   my 6PLANE ::1 / 40           → the network /40    every IPv4 pool I hold no address in
//! ```
//! My own 6PLANE /80 is deliberately not an address prefix: the host routes it to a
//! container bridge, which is more specific than the /40. A prefix I own is never routed into
//! the TUN, and no route duplicates an address's connected prefix (the kernel already has it).

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv6Net};
use meshd_proto::{NetworkConfig, NetworkId, NodeId, addr};

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_NAME: usize = 15;

/// The TUN name for a network: `mesh-` and the first 10 hex digits of its id (15 characters,
/// the Linux limit). Two networks whose ids share their first 40 bits would clash; ids are
/// hashes of signing keys, so that takes about a million joined networks to become likely.
pub fn interface_name(nwid: NetworkId) -> String {
    format!("mesh-{:010x}", nwid.as_u64() >> 24)
}

/// The kernel state one network's TUN should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfacePlan {
    pub name: String,
    pub mtu: u16,
    /// Interface addresses with their prefix lengths (the length makes the connected route).
    pub addresses: BTreeSet<IpNet>,
    /// Prefixes routed into the TUN, truncated to their networks.
    pub routes: BTreeSet<IpNet>,
}

impl InterfacePlan {
    /// A plan with no addresses and no routes: what a freshly opened TUN has. `mtu` 0 makes
    /// the first diff set the MTU whatever the device was opened with.
    pub fn unconfigured(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            mtu: 0,
            addresses: BTreeSet::new(),
            routes: BTreeSet::new(),
        }
    }
}

/// The plan for node `me` on `cfg`. A node the config does not list (not authorized, or
/// deauthorized) gets an interface with no addresses and no routes.
pub fn plan(cfg: &NetworkConfig, me: NodeId) -> InterfacePlan {
    let mut out = InterfacePlan {
        name: interface_name(cfg.network_id),
        mtu: cfg.mtu,
        addresses: BTreeSet::new(),
        routes: BTreeSet::new(),
    };
    if cfg.member(me).is_none() {
        return out;
    }
    // IPv4 with its pool's prefix length; the 6PLANE entry of `interface_addresses` is the
    // node /80, which we replace by the network /40 below.
    out.addresses.extend(
        cfg.interface_addresses(me)
            .into_iter()
            .filter(|a| matches!(a, IpNet::V4(_))),
    );
    if cfg.rfc4193 {
        out.addresses.extend(v6(
            addr::rfc4193_addr(cfg.network_id, me),
            addr::RFC4193_NETWORK_PREFIX,
        ));
    }
    if cfg.sixplane {
        out.addresses.extend(v6(
            addr::sixplane_addr(cfg.network_id, me),
            addr::SIXPLANE_NETWORK_PREFIX,
        ));
    }

    let connected: BTreeSet<IpNet> = out.addresses.iter().map(IpNet::trunc).collect();
    let owned: BTreeSet<IpNet> = cfg.owned_prefixes(me).iter().map(IpNet::trunc).collect();
    let mut route = |prefix: IpNet| {
        let prefix = prefix.trunc();
        if !connected.contains(&prefix) && !owned.contains(&prefix) {
            out.routes.insert(prefix);
        }
    };
    for m in cfg.members.iter().filter(|m| m.node_id != me) {
        if let Some(subnet) = m.container_subnet {
            route(IpNet::V4(subnet));
        }
        if let Some(subnet) = m.delegated_subnet {
            route(IpNet::V6(subnet));
        }
    }
    // Only routes through members resolve (as in `RouteTable::from_config`); a gateway of a
    // route reaches its target itself (`owned` above).
    for r in &cfg.routes {
        if r.gateways.iter().any(|&g| cfg.member(g).is_some()) {
            route(r.target);
        }
    }
    // Members' addresses come from the pools; a pool I hold no address in still has to lead
    // into the TUN, or the members in it would be unreachable from this host.
    for pool in &cfg.v4_pools {
        route(IpNet::V4(*pool));
    }
    out
}

fn v6(address: std::net::Ipv6Addr, len: u8) -> Option<IpNet> {
    Ipv6Net::new(address, len).ok().map(IpNet::V6)
}

/// What changes between two plans of the same interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDiff {
    pub add_addresses: Vec<IpNet>,
    pub remove_addresses: Vec<IpNet>,
    pub add_routes: Vec<IpNet>,
    pub remove_routes: Vec<IpNet>,
    /// The new MTU, if it changed.
    pub mtu: Option<u16>,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        self.add_addresses.is_empty()
            && self.remove_addresses.is_empty()
            && self.add_routes.is_empty()
            && self.remove_routes.is_empty()
            && self.mtu.is_none()
    }
}

/// The changes that turn `old` into `new`. An address whose prefix length changed is removed
/// and added again (the kernel keys addresses by address and length).
pub fn diff(old: &InterfacePlan, new: &InterfacePlan) -> PlanDiff {
    PlanDiff {
        add_addresses: new.addresses.difference(&old.addresses).copied().collect(),
        remove_addresses: old.addresses.difference(&new.addresses).copied().collect(),
        add_routes: new.routes.difference(&old.routes).copied().collect(),
        remove_routes: old.routes.difference(&new.routes).copied().collect(),
        mtu: (old.mtu != new.mtu).then_some(new.mtu),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use ipnet::Ipv4Net;
    use meshd_proto::{Identity, ManagedRoute, MemberConfig, NetworkKey};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Three members: 10.147.17.{10,11,12}/24, containers 172.28.{0,1,2}.0/24.
    fn config() -> (NetworkConfig, Vec<NodeId>) {
        let key = NetworkKey::from_seed(&[9; 32]).unwrap();
        let mut cfg = NetworkConfig::new(key.network_id(), "plan");
        cfg.v4_pools = vec!["10.147.17.0/24".parse().unwrap()];
        cfg.container_pool = Some("172.28.0.0/16".parse().unwrap());
        let mut ids = Vec::new();
        for i in 0..3u8 {
            let id = Identity::generate_unproven();
            ids.push(id.node_id());
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
        cfg.canonicalize();
        (cfg, ids)
    }

    #[test]
    fn interface_name_is_fifteen_characters() {
        let nwid: NetworkId = "8056c2e21c000001".parse().unwrap();
        assert_eq!(interface_name(nwid), "mesh-8056c2e21c");
        assert_eq!(interface_name(NetworkId::from_u64(1)), "mesh-0000000000");
        assert_eq!(
            interface_name(NetworkId::from_u64(u64::MAX)).len(),
            MAX_INTERFACE_NAME
        );
    }

    #[test]
    fn addresses_give_the_network_routes_and_routes_lead_to_others() {
        let (mut cfg, ids) = config();
        let me = ids[0];
        let other = ids[1];
        cfg.routes = vec![
            // Another member's LAN: routed.
            ManagedRoute::via(net("192.168.50.0/24"), other),
            // My own LAN: never routed into the TUN.
            ManagedRoute::via(net("192.168.60.0/24"), me),
            // A LAN I am the backup gateway of: I reach it myself, never through the TUN.
            ManagedRoute {
                target: net("192.168.70.0/24"),
                gateways: vec![other, me],
            },
            // Duplicates the pool's connected route: left to the address.
            ManagedRoute::via(net("10.147.17.0/24"), other),
            // Host bits set: routed as its network.
            ManagedRoute::via(net("fd00:1::5/64"), other),
        ];
        // Another member's delegated /80: routed.
        cfg.members[2].delegated_subnet = Some("2001:db8:1:40::/80".parse().unwrap());
        let third = cfg.members[2].node_id;
        cfg.canonicalize();
        let p = plan(&cfg, me);
        let m = cfg.member(me).unwrap();
        assert_eq!(p.name, interface_name(cfg.network_id));
        assert_eq!(p.mtu, cfg.mtu);
        let expected: BTreeSet<IpNet> = [
            IpNet::V4(Ipv4Net::new(m.ipv4[0], 24).unwrap()),
            IpNet::V6(Ipv6Net::new(addr::rfc4193_addr(cfg.network_id, me), 88).unwrap()),
            IpNet::V6(Ipv6Net::new(addr::sixplane_addr(cfg.network_id, me), 40).unwrap()),
        ]
        .into();
        assert_eq!(p.addresses, expected);
        // The /40 and /88 the addresses make are the network prefixes.
        let connected: BTreeSet<IpNet> = p.addresses.iter().map(IpNet::trunc).collect();
        assert!(connected.contains(&IpNet::V6(addr::sixplane_network_prefix(cfg.network_id))));
        assert!(connected.contains(&IpNet::V6(addr::rfc4193_network_prefix(cfg.network_id))));
        let expected: BTreeSet<IpNet> = [
            net("172.28.1.0/24"),
            net("172.28.2.0/24"),
            net("192.168.50.0/24"),
            net("fd00:1::/64"),
        ]
        .into_iter()
        .chain((third != me).then(|| net("2001:db8:1:40::/80")))
        .collect();
        assert_eq!(p.routes, expected);
    }

    #[test]
    fn switches_and_pools_shape_the_plan() {
        let (mut cfg, ids) = config();
        cfg.sixplane = false;
        cfg.rfc4193 = false;
        // A second pool I hold no address in still leads into the TUN.
        cfg.v4_pools.push("10.148.0.0/16".parse().unwrap());
        cfg.members[1].ipv4 = vec![Ipv4Addr::new(10, 148, 0, 7)];
        cfg.canonicalize();
        let me = cfg
            .members
            .iter()
            .map(|m| m.node_id)
            .find(|&n| n != cfg.members[1].node_id)
            .unwrap();
        let p = plan(&cfg, me);
        assert_eq!(p.addresses.len(), 1);
        assert!(p.addresses.iter().all(|a| matches!(a, IpNet::V4(_))));
        assert!(p.routes.contains(&net("10.148.0.0/16")));
        assert!(!p.routes.contains(&net("10.147.17.0/24")));
        // An address outside every pool is a /32.
        let i = cfg.members.iter().position(|m| m.node_id == me).unwrap();
        cfg.members[i].ipv4 = vec![Ipv4Addr::new(100, 64, 0, 1)];
        assert!(plan(&cfg, me).addresses.contains(&net("100.64.0.1/32")));
        // A node the config does not list carries nothing.
        let (cfg, _) = config();
        let stranger = Identity::generate_unproven().node_id();
        let p = plan(&cfg, stranger);
        assert!(p.addresses.is_empty() && p.routes.is_empty());
        assert!(ids.iter().all(|&id| id != stranger));
    }

    #[test]
    fn diff_lists_only_changes() {
        let (mut cfg, ids) = config();
        let me = ids[0];
        let old = plan(&cfg, me);
        assert!(diff(&old, &old).is_empty());

        // Member 2 leaves, a route appears, my pool grows to /16, the MTU shrinks.
        let gone = ids[2];
        cfg.members.retain(|m| m.node_id != gone);
        cfg.routes
            .push(ManagedRoute::via(net("192.168.50.0/24"), ids[1]));
        cfg.v4_pools = vec!["10.147.0.0/16".parse().unwrap()];
        cfg.mtu = 1400;
        let new = plan(&cfg, me);
        let d = diff(&old, &new);
        let mine = cfg.member(me).unwrap().ipv4[0];
        assert_eq!(
            d.remove_addresses,
            vec![IpNet::V4(Ipv4Net::new(mine, 24).unwrap())]
        );
        assert_eq!(
            d.add_addresses,
            vec![IpNet::V4(Ipv4Net::new(mine, 16).unwrap())]
        );
        assert_eq!(d.add_routes, vec![net("192.168.50.0/24")]);
        assert_eq!(d.remove_routes, vec![net("172.28.2.0/24")]);
        assert_eq!(d.mtu, Some(1400));
        // Applying the diff to the old sets gives the new ones.
        let mut addresses = old.addresses.clone();
        d.remove_addresses.iter().for_each(|a| {
            addresses.remove(a);
        });
        addresses.extend(d.add_addresses.iter().copied());
        assert_eq!(addresses, new.addresses);
        assert!(diff(&InterfacePlan::unconfigured(&new.name), &new).mtu == Some(1400));
    }
}

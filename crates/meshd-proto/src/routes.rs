//! Who owns a destination: the managed-routes table of DESIGN.md section 3.
//!
//! Lookup order for a destination address:
//! 1. inside the network's 6PLANE /40: the owner's node id is in address bits 40..79;
//! 2. inside the network's RFC4193 /88: the node id is the last 40 bits;
//! 3. otherwise the longest prefix over members' addresses (/32), container subnets and
//!    managed routes.
//!
//! The same rules check the *source* of a packet received from a peer (anti-spoofing, as
//! WireGuard's allowed-IPs): [`RouteTable::accepts_source`].
//!
//! A managed route with several gateways (failover) resolves to the one in use, which the
//! tunnel picks by liveness ([`crate::tunnel`]'s gateway choice) and sets with
//! [`RouteTable::use_gateway`]; answers from any of its gateways are accepted, since the LAN
//! behind them may answer through another one than we send to.
//!
//! The table is rebuilt from each config revision and never edited in place, so the lookup
//! structure can be read-optimised: one hash map per prefix length present, probed longest
//! first. Real tables hold a handful of lengths (/32 members, /24 container subnets, a few
//! route lengths), so a lookup is two or three hash probes whatever the table's size.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::{ManagedRoute, NetworkConfig};
use crate::{NetworkId, NodeId, addr};

/// The read-only destination → owner table of one network.
#[derive(Debug, Clone)]
pub struct RouteTable {
    network_id: NetworkId,
    sixplane: bool,
    rfc4193: bool,
    members: FxHashSet<NodeId>,
    v4: LengthBuckets<u32>,
    v6: LengthBuckets<u128>,
    /// Routes with more than one gateway that is a member, and the gateway each uses now.
    failover: Vec<FailoverRoute>,
}

/// A managed route with several member gateways, and the one in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverRoute {
    pub target: IpNet,
    /// Members only, most preferred first.
    pub gateways: Vec<NodeId>,
    /// Index into `gateways` of the one traffic goes to.
    pub in_use: usize,
}

impl FailoverRoute {
    pub fn gateway_in_use(&self) -> NodeId {
        self.gateways[self.in_use]
    }
}

impl RouteTable {
    /// An empty table; formula addresses resolve only to nodes added with [`RouteTable::add_member`].
    pub fn new(network_id: NetworkId, sixplane: bool, rfc4193: bool) -> Self {
        Self {
            network_id,
            sixplane,
            rfc4193,
            members: FxHashSet::default(),
            v4: LengthBuckets::default(),
            v6: LengthBuckets::default(),
            failover: Vec::new(),
        }
    }

    /// The table for a config: its members' addresses and subnets and its managed routes.
    pub fn from_config(cfg: &NetworkConfig) -> Self {
        let mut t = Self::new(cfg.network_id, cfg.sixplane, cfg.rfc4193);
        for m in &cfg.members {
            t.add_member(m.node_id);
            for &a in &m.ipv4 {
                t.insert(IpNet::from(IpAddr::V4(a)), m.node_id);
            }
            if let Some(subnet) = m.container_subnet {
                t.insert(IpNet::V4(subnet), m.node_id);
            }
            if let Some(subnet) = m.delegated_subnet {
                t.insert(IpNet::V6(subnet), m.node_id);
            }
        }
        for r in &cfg.routes {
            t.add_route(r);
        }
        t
    }

    /// Adds a managed route, through its most preferred gateway until
    /// [`RouteTable::use_gateway`] says otherwise. Gateways must be members: a route through
    /// nodes that are not authorized resolves nowhere rather than to a node with no session.
    pub fn add_route(&mut self, route: &ManagedRoute) {
        let gateways: Vec<NodeId> = route
            .gateways
            .iter()
            .copied()
            .filter(|g| self.members.contains(g))
            .collect();
        let Some(&first) = gateways.first() else {
            return;
        };
        self.insert(route.target, first);
        self.failover.retain(|f| f.target != route.target.trunc());
        if gateways.len() > 1 {
            self.failover.push(FailoverRoute {
                target: route.target.trunc(),
                gateways,
                in_use: 0,
            });
        }
    }

    /// The routes with a choice of gateways.
    pub fn failover_routes(&self) -> &[FailoverRoute] {
        &self.failover
    }

    /// Sends route `index` (of [`RouteTable::failover_routes`]) through its gateway `gateway`
    /// (an index into its gateways); out-of-range indices change nothing.
    pub fn use_gateway(&mut self, index: usize, gateway: usize) {
        let Some(route) = self.failover.get_mut(index) else {
            return;
        };
        let Some(&node) = route.gateways.get(gateway) else {
            return;
        };
        route.in_use = gateway;
        let target = route.target;
        self.insert(target, node);
    }

    pub fn add_member(&mut self, node: NodeId) {
        self.members.insert(node);
    }

    /// Adds `prefix → node`, replacing an entry for the same prefix.
    pub fn insert(&mut self, prefix: IpNet, node: NodeId) {
        match prefix.trunc() {
            IpNet::V4(p) => self
                .v4
                .insert(u32::from(p.addr()), p.prefix_len(), 32, node),
            IpNet::V6(p) => self
                .v6
                .insert(u128::from(p.addr()), p.prefix_len(), 128, node),
        }
    }

    pub fn network_id(&self) -> NetworkId {
        self.network_id
    }

    /// The node that owns `dst`, if any.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<NodeId> {
        match dst {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    #[inline]
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> Option<NodeId> {
        self.v4.lookup(u32::from(dst), 32)
    }

    #[inline]
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<NodeId> {
        if self.sixplane
            && let Some(node) = addr::node_from_6plane(self.network_id, dst)
        {
            return self.members.get(&node).copied();
        }
        if self.rfc4193
            && let Some(node) = addr::node_from_rfc4193(self.network_id, dst)
        {
            return self.members.get(&node).copied();
        }
        self.v6.lookup(u128::from(dst), 128)
    }

    /// Whether a packet from `src`, received from `peer`, may be written to the TUN.
    #[inline]
    pub fn accepts_source(&self, peer: NodeId, src: IpAddr) -> bool {
        let owner = self.lookup(src);
        owner == Some(peer) || (!self.failover.is_empty() && self.failover_source(peer, src, owner))
    }

    /// Whether `src` is in a failover route `peer` is a gateway of, the route being the most
    /// specific one for `src` (its gateway in use owns it).
    #[cold]
    fn failover_source(&self, peer: NodeId, src: IpAddr, owner: Option<NodeId>) -> bool {
        self.failover.iter().any(|r| {
            r.target.contains(&src)
                && Some(r.gateway_in_use()) == owner
                && r.gateways.contains(&peer)
        })
    }

    /// Number of prefix entries (formula addresses excluded).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One exact-match map per prefix length, longest first.
#[derive(Debug, Clone)]
struct LengthBuckets<K> {
    buckets: Vec<(u8, FxHashMap<K, NodeId>)>,
}

impl<K> Default for LengthBuckets<K> {
    fn default() -> Self {
        Self {
            buckets: Vec::new(),
        }
    }
}

trait Bits:
    Copy + Eq + Hash + std::ops::Shr<u32, Output = Self> + std::ops::Shl<u32, Output = Self>
{
    const ZERO: Self;
    fn mask(self, len: u8, width: u8) -> Self {
        if len == 0 {
            Self::ZERO
        } else {
            let shift = u32::from(width - len);
            (self >> shift) << shift
        }
    }
}

impl Bits for u32 {
    const ZERO: Self = 0;
}

impl Bits for u128 {
    const ZERO: Self = 0;
}

impl<K: Bits> LengthBuckets<K> {
    fn insert(&mut self, addr: K, len: u8, width: u8, node: NodeId) {
        let key = addr.mask(len, width);
        let at = match self.buckets.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.insert(i, (len, FxHashMap::default()));
                i
            }
        };
        self.buckets[at].1.insert(key, node);
    }

    #[inline]
    fn lookup(&self, addr: K, width: u8) -> Option<NodeId> {
        self.buckets
            .iter()
            .find_map(|(len, map)| map.get(&addr.mask(*len, width)).copied())
    }

    fn len(&self) -> usize {
        self.buckets.iter().map(|(_, m)| m.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::tests::sample;

    /// The slow reference: scan every entry, keep the longest containing prefix.
    fn linear(entries: &[(IpNet, NodeId)], dst: IpAddr) -> Option<NodeId> {
        entries
            .iter()
            .filter(|(p, _)| p.contains(&dst))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(_, n)| *n)
    }

    fn node(i: u64) -> NodeId {
        NodeId::new(0x10_0000_0000 + i).unwrap()
    }

    #[test]
    fn config_lookup_follows_design_order() {
        let (cfg, ids) = sample(3);
        let t = RouteTable::from_config(&cfg);
        let (a, b) = (ids[0].node_id(), ids[1].node_id());
        let ma = cfg.member(a).unwrap();
        assert_eq!(t.lookup(IpAddr::V4(ma.ipv4[0])), Some(a));
        let inside_subnet = ma.container_subnet.unwrap().hosts().nth(5).unwrap();
        assert_eq!(t.lookup(IpAddr::V4(inside_subnet)), Some(a));
        assert_eq!(
            t.lookup("192.168.100.77".parse().unwrap()),
            cfg.routes[0].preferred()
        );
        assert_eq!(t.lookup("8.8.8.8".parse().unwrap()), None);
        // 6PLANE container and RFC4193 address: by bits, no table entry.
        let container = u128::from(addr::sixplane_addr(cfg.network_id, b)) + 0x4242;
        assert_eq!(t.lookup(IpAddr::V6(container.into())), Some(b));
        assert_eq!(
            t.lookup(IpAddr::V6(addr::rfc4193_addr(cfg.network_id, b))),
            Some(b)
        );
        // A 6PLANE address of a node that is not a member resolves nowhere.
        assert_eq!(
            t.lookup(IpAddr::V6(addr::sixplane_addr(cfg.network_id, node(1)))),
            None
        );
        // Source check.
        assert!(t.accepts_source(a, IpAddr::V4(inside_subnet)));
        assert!(!t.accepts_source(b, IpAddr::V4(inside_subnet)));
    }

    #[test]
    fn failover_routes_use_the_chosen_gateway_and_accept_all() {
        let (mut cfg, ids) = sample(3);
        let (a, b, c) = (ids[0].node_id(), ids[1].node_id(), ids[2].node_id());
        let lan: IpNet = "192.168.100.0/24".parse().unwrap();
        cfg.routes = vec![ManagedRoute {
            target: lan,
            gateways: vec![b, node(9), a],
        }];
        let mut t = RouteTable::from_config(&cfg);
        let host: IpAddr = "192.168.100.7".parse().unwrap();
        // The non-member is left out; the first gateway is in use.
        assert_eq!(t.failover_routes()[0].gateways, vec![b, a]);
        assert_eq!(t.lookup(host), Some(b));
        t.use_gateway(0, 1);
        assert_eq!(t.lookup(host), Some(a));
        assert_eq!(t.failover_routes()[0].gateway_in_use(), a);
        // Answers through either gateway pass the source check, not through others.
        assert!(t.accepts_source(a, host) && t.accepts_source(b, host));
        assert!(!t.accepts_source(c, host));
        t.use_gateway(0, 7);
        t.use_gateway(3, 0);
        assert_eq!(t.lookup(host), Some(a));
        // A more specific route through another member wins, and its owner alone is accepted.
        t.add_route(&ManagedRoute::via("192.168.100.0/28".parse().unwrap(), c));
        assert!(t.accepts_source(c, host) && !t.accepts_source(a, host));
    }

    #[test]
    fn delegated_subnets_resolve_to_their_member() {
        let (mut cfg, ids) = sample(2);
        cfg.members[1].delegated_subnet = Some("2001:db8:1:40::/80".parse().unwrap());
        let owner = cfg.members[1].node_id;
        let t = RouteTable::from_config(&cfg);
        let inside: IpAddr = "2001:db8:1:40::42".parse().unwrap();
        assert_eq!(t.lookup(inside), Some(owner));
        assert!(t.accepts_source(owner, inside));
        assert!(
            !t.accepts_source(
                ids.iter()
                    .map(|i| i.node_id())
                    .find(|n| *n != owner)
                    .unwrap(),
                inside
            )
        );
        assert_eq!(t.lookup("2001:db8:1:41::1".parse().unwrap()), None);
    }

    #[test]
    fn modes_off_disable_formula_lookups() {
        let (mut cfg, ids) = sample(1);
        cfg.sixplane = false;
        cfg.rfc4193 = false;
        let t = RouteTable::from_config(&cfg);
        let a = ids[0].node_id();
        assert_eq!(
            t.lookup(IpAddr::V6(addr::sixplane_addr(cfg.network_id, a))),
            None
        );
        assert_eq!(
            t.lookup(IpAddr::V6(addr::rfc4193_addr(cfg.network_id, a))),
            None
        );
    }

    #[test]
    fn default_route_and_longest_prefix() {
        let mut t = RouteTable::new(NetworkId::from_u64(1), true, true);
        t.insert("0.0.0.0/0".parse().unwrap(), node(1));
        t.insert("10.0.0.0/8".parse().unwrap(), node(2));
        t.insert("10.1.0.0/16".parse().unwrap(), node(3));
        t.insert("::/0".parse().unwrap(), node(4));
        assert_eq!(t.lookup("1.2.3.4".parse().unwrap()), Some(node(1)));
        assert_eq!(t.lookup("10.2.3.4".parse().unwrap()), Some(node(2)));
        assert_eq!(t.lookup("10.1.3.4".parse().unwrap()), Some(node(3)));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(node(4)));
        assert_eq!(t.len(), 4);
    }

    fn v4_entry() -> impl Strategy<Value = (IpNet, NodeId)> {
        // A narrow universe (10.0.0.0/12) so prefixes nest and lookups hit.
        (0u32..(1 << 20), 8u8..=32, 1u64..6).prop_map(|(low, len, n)| {
            let a = Ipv4Addr::from(0x0a00_0000 | low);
            (
                IpNet::from(ipnet::Ipv4Net::new(a, len).unwrap().trunc()),
                node(n),
            )
        })
    }

    fn v6_entry() -> impl Strategy<Value = (IpNet, NodeId)> {
        (0u128..(1 << 24), 0u8..=128, 1u64..6).prop_map(|(low, len, n)| {
            let a = Ipv6Addr::from((0x2001_0db8_u128 << 96) | (low << 80) | low);
            (
                IpNet::from(ipnet::Ipv6Net::new(a, len).unwrap().trunc()),
                node(n),
            )
        })
    }

    proptest! {
        #[test]
        fn matches_linear_reference(
            v4 in proptest::collection::vec(v4_entry(), 0..60),
            v6 in proptest::collection::vec(v6_entry(), 0..30),
            probes4 in proptest::collection::vec(0u32..(1 << 20), 1..100),
            probes6 in proptest::collection::vec(0u128..(1 << 24), 1..50),
        ) {
            // Keep the first owner of a prefix, as the reference has no tie-breaking.
            let mut entries: Vec<(IpNet, NodeId)> = Vec::new();
            for e in v4.into_iter().chain(v6) {
                if !entries.iter().any(|(p, _)| *p == e.0) {
                    entries.push(e);
                }
            }
            let mut t = RouteTable::new(NetworkId::from_u64(0x8056c2e21c000001), true, true);
            for (p, n) in &entries {
                t.insert(*p, *n);
            }
            for p in probes4 {
                let dst = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | p));
                prop_assert_eq!(t.lookup(dst), linear(&entries, dst));
            }
            for p in probes6 {
                let dst = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (p << 80) | p));
                prop_assert_eq!(t.lookup(dst), linear(&entries, dst));
            }
            // Every entry's own network address resolves to the most specific owner.
            for (p, _) in &entries {
                prop_assert_eq!(t.lookup(p.addr()), linear(&entries, p.addr()));
            }
        }
    }
}

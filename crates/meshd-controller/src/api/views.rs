//! What the API answers with: the JSON shapes of networks, members and routes.
//!
//! Views are built from applied state and carry derived values (the 6PLANE and RFC4193
//! ranges, member counts) so clients need no address math. They never carry the network's
//! key seed. The admin client deserializes the same types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use meshd_channel::protocol::{PathKind, PeerPathReport, REPORT_INTERVAL};
use meshd_proto::config::Ipv6Egress;
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
    /// What members do with their containers' mesh IPv6 leaving their uplinks.
    pub ipv6_egress: Ipv6Egress,
    pub routes: Vec<RouteView>,
    pub members: MemberCounts,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounts {
    pub total: usize,
    pub authorized: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub target: IpNet,
    /// The most preferred gateway.
    pub via: NodeId,
    /// The member address the route was added with (`--via 10.147.0.12`), if any.
    pub gateway: Option<IpAddr>,
    /// Every gateway, most preferred first (more than one: the route fails over).
    pub gateways: Vec<NodeId>,
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
    /// The member's 6PLANE /80 (its containers' IPv6 range unless it has a delegated
    /// prefix), when 6PLANE is on.
    pub sixplane_subnet: Option<Ipv6Net>,
    /// The global prefix delegated to the member's host, and the /80 of it its containers use.
    pub delegated_prefix: Option<Ipv6Net>,
    pub delegated_subnet: Option<Ipv6Net>,
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
    /// The host name the member's node reports.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The meshd version the member's node runs.
    #[serde(default)]
    pub version: Option<String>,
    /// The node joined or reported within [`ONLINE_WITHIN_MS`].
    #[serde(default)]
    pub online: bool,
    /// When the node last reported how it reaches its peers.
    #[serde(default)]
    pub last_report_ms: Option<u64>,
    /// How many of its peers the node reaches which way, as it last reported.
    #[serde(default)]
    pub paths: Option<PathCounts>,
}

/// A member counts as online while it joined or reported this recently: three report
/// intervals.
pub const ONLINE_WITHIN_MS: u64 = 3 * REPORT_INTERVAL.as_millis() as u64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCounts {
    pub direct: usize,
    pub relay: usize,
    pub none: usize,
}

/// The picture of a network's mesh: its authorized members and a link per pair, as the
/// members report them (`GET /v1/networks/{nwid}/mesh`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshView {
    pub members: Vec<MeshMember>,
    /// One per pair of members, `a` < `b`.
    pub links: Vec<MeshLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshMember {
    pub node_id: NodeId,
    pub name: String,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshLink {
    pub a: NodeId,
    pub b: NodeId,
    /// `direct`, `relay` or `none`.
    pub path: String,
    /// What kind of direct path (`lan`, `public`, `punched`, `port-mapped`), when direct.
    pub direct: Option<String>,
    /// The path's round-trip time as the faster side measured it.
    pub rtt_ms: Option<f64>,
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
            ipv6_egress: net.ipv6_egress,
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
            gateways: route.gateways().collect(),
        }
    }
}

impl MemberView {
    /// The member as of `now_ms` (which decides `online`).
    pub fn of(net: &Network, m: &Member, now_ms: u64) -> Self {
        let report = m.report.as_ref();
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
            delegated_prefix: m.delegated_prefix,
            delegated_subnet: m.delegated_prefix.map(crate::state::delegated_subnet),
            rfc4193_address: net.rfc4193.then(|| addr::rfc4193_addr(net.id, m.node_id)),
            physical_endpoint: m.physical,
            local_endpoints: m.local.clone(),
            port_mapped: m.port_mapped,
            relay: m.relay,
            created_ms: m.created_ms,
            last_authorized_ms: m.last_authorized_ms,
            last_deauthorized_ms: m.last_deauthorized_ms,
            last_seen_ms: m.last_seen_ms,
            hostname: report.map(|r| r.hostname.clone()),
            version: report.map(|r| r.version.clone()),
            online: is_online(m, now_ms),
            last_report_ms: report.map(|r| r.at_ms),
            paths: report.map(|r| {
                let mut counts = PathCounts::default();
                for p in &r.peers {
                    match p.path {
                        PathKind::None => counts.none += 1,
                        PathKind::Relay => counts.relay += 1,
                        _ => counts.direct += 1,
                    }
                }
                counts
            }),
        }
    }
}

/// Whether `m` joined or reported within [`ONLINE_WITHIN_MS`] of `now_ms`.
pub fn is_online(m: &Member, now_ms: u64) -> bool {
    let last = m.report.as_ref().map(|r| r.at_ms).max(m.last_seen_ms);
    last.is_some_and(|t| now_ms.saturating_sub(t) <= ONLINE_WITHIN_MS)
}

impl MeshView {
    /// The picture of `net` as of `now_ms`: only what online members report counts, so a
    /// member that went away takes its links with it.
    pub fn of(net: &Network, now_ms: u64) -> Self {
        let members: Vec<&Member> = net.members.values().filter(|m| m.authorized).collect();
        fn seen(from: &Member, to: NodeId, now_ms: u64) -> Option<&PeerPathReport> {
            from.report
                .as_ref()
                .filter(|_| is_online(from, now_ms))
                .and_then(|r| r.peers.iter().find(|p| p.peer == to))
        }
        let mut links = Vec::new();
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                let sides = [seen(a, b.node_id, now_ms), seen(b, a.node_id, now_ms)];
                let path = sides.iter().flatten().map(|p| p.path).max();
                let rtt_us = sides
                    .iter()
                    .flatten()
                    .filter(|p| Some(p.path) == path)
                    .filter_map(|p| p.rtt_us)
                    .min();
                let path = path.unwrap_or(PathKind::None);
                links.push(MeshLink {
                    a: a.node_id,
                    b: b.node_id,
                    path: match path {
                        PathKind::None => "none",
                        PathKind::Relay => "relay",
                        _ => "direct",
                    }
                    .to_owned(),
                    direct: path.is_direct().then(|| path.as_str().to_owned()),
                    rtt_ms: rtt_us.map(|us| f64::from(us) / 1000.0),
                });
            }
        }
        Self {
            members: members
                .iter()
                .map(|m| MeshMember {
                    node_id: m.node_id,
                    name: m.name.clone(),
                    online: is_online(m, now_ms),
                })
                .collect(),
            links,
        }
    }
}

#[cfg(test)]
mod tests {
    use meshd_proto::Identity;

    use super::*;
    use crate::state::{Command, ControllerState};
    use crate::test_support::{authorized_member, nwid, spec};

    fn report(node: NodeId, peers: &[(NodeId, PathKind, Option<u32>)], at_ms: u64) -> Command {
        Command::MemberReport {
            network: nwid(1),
            node,
            hostname: format!("host-{node}"),
            version: "0.2.0".into(),
            peers: peers
                .iter()
                .map(|&(peer, path, rtt_us)| PeerPathReport { peer, path, rtt_us })
                .collect(),
            at_ms,
        }
    }

    #[test]
    fn the_picture_takes_the_better_side_of_each_pair_from_online_members_only() {
        let mut state = ControllerState::default();
        state.apply(&Command::CreateNetwork(spec(1))).unwrap();
        let ids: Vec<Identity> = (0..3).map(|_| Identity::generate_unproven()).collect();
        for id in &ids {
            authorized_member(&mut state, nwid(1), id);
        }
        let [a, b, c] = [ids[0].node_id(), ids[1].node_id(), ids[2].node_id()];
        let now = 1_000_000;
        // a sees b relayed, b sees a direct (a punch landed on b's side first): direct,
        // at b's round-trip time. c reported long ago that it reaches a directly.
        for cmd in [
            report(a, &[(b, PathKind::Relay, Some(9_000))], now - 1_000),
            report(b, &[(a, PathKind::Punched, Some(1_500))], now - 2_000),
            report(
                c,
                &[(a, PathKind::Lan, Some(200))],
                now - ONLINE_WITHIN_MS - 40_000,
            ),
        ] {
            state.apply(&cmd).unwrap();
        }
        let net = state.network(nwid(1)).unwrap();
        let mesh = MeshView::of(net, now);
        assert_eq!(mesh.members.len(), 3);
        assert_eq!(mesh.links.len(), 3, "a link per pair");
        let link = |x: NodeId, y: NodeId| {
            mesh.links
                .iter()
                .find(|l| (l.a, l.b) == (x.min(y), x.max(y)))
                .unwrap()
        };
        assert_eq!(link(a, b).path, "direct");
        assert_eq!(link(a, b).direct.as_deref(), Some("punched"));
        assert_eq!(link(a, b).rtt_ms, Some(1.5));
        // c is offline: what it said no longer counts.
        assert_eq!(link(a, c).path, "none");
        assert_eq!(link(b, c).rtt_ms, None);

        // Member views: online, the host name as default name, path counts.
        let view = |n: NodeId| MemberView::of(net, &net.members[&n], now);
        assert!(view(a).online && !view(c).online);
        assert_eq!(view(a).name, format!("host-{a}"));
        assert_eq!(
            view(a).hostname.as_deref(),
            Some(format!("host-{a}").as_str())
        );
        assert_eq!(
            view(b).paths,
            Some(PathCounts {
                direct: 1,
                relay: 0,
                none: 0
            })
        );
    }

    #[test]
    fn a_named_member_keeps_its_name_and_an_odd_host_name_is_refused() {
        let mut state = ControllerState::default();
        state.apply(&Command::CreateNetwork(spec(1))).unwrap();
        let id = Identity::generate_unproven();
        authorized_member(&mut state, nwid(1), &id);
        let node = id.node_id();
        let revision = |s: &ControllerState| s.network(nwid(1)).unwrap().revision;
        let before = revision(&state);
        state.apply(&report(node, &[], 5)).unwrap();
        assert_eq!(
            revision(&state),
            before + 1,
            "the default name is news for peers"
        );
        state
            .apply(&Command::RenameMember {
                network: nwid(1),
                node,
                name: "db-1".into(),
            })
            .unwrap();
        let renamed = revision(&state);
        state.apply(&report(node, &[], 6)).unwrap();
        assert_eq!(state.network(nwid(1)).unwrap().members[&node].name, "db-1");
        assert_eq!(
            revision(&state),
            renamed,
            "a report alone changes no config"
        );
        let mut odd = report(node, &[], 7);
        if let Command::MemberReport { hostname, .. } = &mut odd {
            *hostname = "a\u{202e}b".into();
        }
        assert!(state.apply(&odd).is_err());
    }
}

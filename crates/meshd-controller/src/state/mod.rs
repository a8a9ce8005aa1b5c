//! The controller state machine: networks and their members, changed only by [`Command`]s
//! applied in log order. Applying is deterministic and all-or-nothing: a rejected command
//! leaves the state exactly as it was (every check runs before the first change).

mod command;
pub(crate) mod legacy;
mod routing;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use meshd_channel::protocol::{MAX_HOSTNAME_LEN, MAX_REPORT_PEERS, PeerPathReport};
use meshd_proto::config::{Ipv6Egress, MAX_MTU, MIN_MTU, codec::MAX_NAME_LEN};
use meshd_proto::{
    ManagedRoute, MemberConfig, NetworkConfig, NetworkId, NetworkKey, NodeId, PublicIdentity,
    SignedConfig, addr,
};
use serde::{Deserialize, Serialize};

pub use command::{Applied, Command, NetworkSpec, RejectKind, Rejected, ReplicaRecord, RouteVia};
pub use routing::{DELEGATED_SUBNET_LEN, Route, check_route_target, delegated_subnet};

use crate::ipam::{self, overlaps};

/// Default IPv4 pool when a network is created without one.
pub const DEFAULT_V4_POOL: &str = "10.147.0.0/16";
/// Default container pool: 1024 container /24s, clear of Docker's 172.17.0.0/16.
pub const DEFAULT_CONTAINER_POOL: &str = "172.28.0.0/14";
pub const DEFAULT_CONTAINER_PREFIX: u8 = 24;
/// Most endpoints a member may report.
pub const MAX_LOCAL_ENDPOINTS: usize = 8;
/// Most IPv4 pools per network.
pub const MAX_V4_POOLS: usize = 64;
/// Most authorized members per network: every member holds a session with every other.
pub const MAX_MEMBERS: usize = 10_000;
/// Most managed routes per network.
pub const MAX_ROUTES: usize = 1024;
/// Most members one network keeps waiting for authorization: joins cost nothing to send.
pub const MAX_WAITING_MEMBERS: usize = 1024;
/// A waiting member not seen for this long makes room for a new one at the cap.
pub const WAITING_MEMBER_TTL_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub networks: BTreeMap<NetworkId, Network>,
    /// The replicas every config names, sorted by address ([`Command::SetReplicas`]).
    pub replicas: Vec<ReplicaRecord>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    /// The network signing key: cluster state, so any replica can sign configs.
    pub key_seed: [u8; 32],
    pub name: String,
    /// Increases with every change to what the signed config contains.
    pub revision: u64,
    pub mtu: u16,
    pub sixplane: bool,
    pub rfc4193: bool,
    pub v4_pools: Vec<Ipv4Net>,
    pub container_pool: Ipv4Net,
    pub container_prefix: u8,
    pub routes: BTreeMap<IpNet, Route>,
    pub members: BTreeMap<NodeId, Member>,
    pub created_ms: u64,
    /// What members do with their containers' mesh IPv6 leaving their uplinks.
    pub ipv6_egress: Ipv6Egress,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("revision", &self.revision)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: NodeId,
    pub identity: PublicIdentity,
    pub name: String,
    pub authorized: bool,
    /// Sticky once assigned; released when the member is deleted.
    pub ipv4: Vec<Ipv4Addr>,
    /// Sticky once assigned; released when the member is deleted.
    pub container_subnet: Option<Ipv4Net>,
    /// The address the member's last connection came from.
    pub physical: Option<SocketAddr>,
    /// The addresses the member reports for itself.
    pub local: Vec<SocketAddr>,
    pub created_ms: u64,
    pub last_authorized_ms: Option<u64>,
    pub last_deauthorized_ms: Option<u64>,
    pub last_seen_ms: Option<u64>,
    /// The member relays for other members (`meshd daemon --relay`).
    pub relay: bool,
    /// Its public endpoint (`physical`) is a port mapping its router holds.
    pub port_mapped: bool,
    /// The global prefix delegated to its host, which its container /80 comes from.
    pub delegated_prefix: Option<Ipv6Net>,
    /// What its node last reported ([`Command::MemberReport`]). Left out of snapshots: a
    /// replica restored from one learns it again within a report interval.
    #[serde(skip)]
    pub report: Option<MemberReport>,
}

/// What a member's node last reported of a network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberReport {
    pub hostname: String,
    pub version: String,
    /// When the replica that took it wrote it down.
    pub at_ms: u64,
    /// How the node reaches each peer.
    pub peers: Vec<PeerPathReport>,
}

impl Member {
    /// Never authorized: waiting for an admin (an authorized-then-cut member is not).
    pub fn is_waiting(&self) -> bool {
        !self.authorized && self.last_authorized_ms.is_none()
    }

    /// Endpoints in the order peers should try them.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self.physical.into_iter().collect();
        for e in &self.local {
            if !out.contains(e) {
                out.push(*e);
            }
        }
        out
    }
}

fn not_found_network(network: NetworkId) -> Rejected {
    Rejected::new(
        RejectKind::NotFound,
        format!("no network {network}; `meshd controller network list` shows the networks"),
    )
}

fn not_found_member(network: NetworkId, node: NodeId) -> Rejected {
    Rejected::new(
        RejectKind::NotFound,
        format!(
            "node {node} is not a member of network {network}; it must run `meshd join {network}` first"
        ),
    )
}

impl ControllerState {
    pub fn network(&self, id: NetworkId) -> Option<&Network> {
        self.networks.get(&id)
    }

    /// Applies one command. On `Err` nothing changed.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, Rejected> {
        match cmd {
            Command::CreateNetwork(spec) => self.create_network(spec),
            Command::SetReplicas { replicas } => self.set_replicas(replicas),
            other => {
                let id = other.network().ok_or_else(|| {
                    Rejected::new(RejectKind::Invalid, "command names no network")
                })?;
                if let Command::DeleteNetwork { network } = other {
                    return self
                        .networks
                        .remove(network)
                        .map(|_| Applied::NetworkDeleted { network: *network })
                        .ok_or_else(|| not_found_network(*network));
                }
                let net = self
                    .networks
                    .get_mut(&id)
                    .ok_or_else(|| not_found_network(id))?;
                net.apply(other)
            }
        }
    }

    fn set_replicas(&mut self, replicas: &[ReplicaRecord]) -> Result<Applied, Rejected> {
        if replicas.len() > meshd_proto::config::codec::MAX_REPLICAS {
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!(
                    "configs name at most {} replicas",
                    meshd_proto::config::codec::MAX_REPLICAS
                ),
            ));
        }
        if let Some(r) = replicas
            .iter()
            .find(|r| r.address.is_empty() || r.address.len() > MAX_NAME_LEN)
        {
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!("replica address {:?} is empty or too long", r.address),
            ));
        }
        let mut sorted = replicas.to_vec();
        sorted.sort();
        sorted.dedup_by(|a, b| a.address == b.address);
        if sorted == self.replicas {
            return Ok(Applied::ReplicasSet { changed: false });
        }
        self.replicas = sorted;
        // Every config names them: every network gets a new revision for its members.
        for net in self.networks.values_mut() {
            net.revision += 1;
        }
        Ok(Applied::ReplicasSet { changed: true })
    }

    /// The config of `network` as nodes get it: the network's own, naming the replicas.
    pub fn network_config(&self, network: &Network) -> NetworkConfig {
        let mut cfg = network.config();
        cfg.replicas = self
            .replicas
            .iter()
            .map(|r| meshd_proto::config::ReplicaEntry {
                address: r.address.clone(),
                key: r.key,
            })
            .collect();
        cfg.canonicalize();
        cfg
    }

    fn create_network(&mut self, spec: &NetworkSpec) -> Result<Applied, Rejected> {
        let key = NetworkKey::from_seed(&spec.key_seed)
            .map_err(|e| Rejected::new(RejectKind::Invalid, e.to_string()))?;
        let id = key.network_id();
        if self.networks.contains_key(&id) {
            return Err(Rejected::new(
                RejectKind::Conflict,
                format!("network {id} exists already"),
            ));
        }
        validate_name(&spec.name, "network name")?;
        validate_mtu(spec.mtu)?;
        if spec.v4_pools.is_empty() {
            return Err(Rejected::new(
                RejectKind::Invalid,
                "a network needs at least one IPv4 pool",
            ));
        }
        if spec.v4_pools.len() > MAX_V4_POOLS {
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!("a network has at most {MAX_V4_POOLS} IPv4 pools"),
            ));
        }
        let mut sorted = spec.v4_pools.clone();
        sorted.sort();
        // Sorted, a pool that overlaps any other overlaps its neighbour: one pass.
        for pair in sorted.windows(2) {
            if overlaps(&IpNet::V4(pair[0]), &IpNet::V4(pair[1])) {
                return Err(Rejected::new(
                    RejectKind::Conflict,
                    format!("IPv4 pools {} and {} overlap", pair[0], pair[1]),
                ));
            }
        }
        for p in &spec.v4_pools {
            canonical_v4(p, "IPv4 pool")?;
            if overlaps(&IpNet::V4(*p), &IpNet::V4(spec.container_pool)) {
                return Err(Rejected::new(
                    RejectKind::Conflict,
                    format!(
                        "IPv4 pool {p} overlaps container pool {}; pick pools that do not overlap",
                        spec.container_pool
                    ),
                ));
            }
        }
        canonical_v4(&spec.container_pool, "container pool")?;
        if spec.container_prefix < spec.container_pool.prefix_len() || spec.container_prefix > 30 {
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!(
                    "container prefix /{} must be between the pool's /{} and /30",
                    spec.container_prefix,
                    spec.container_pool.prefix_len()
                ),
            ));
        }
        let mut v4_pools = spec.v4_pools.clone();
        v4_pools.sort();
        self.networks.insert(
            id,
            Network {
                id,
                key_seed: spec.key_seed,
                name: spec.name.clone(),
                revision: 1,
                mtu: spec.mtu,
                sixplane: spec.sixplane,
                rfc4193: spec.rfc4193,
                v4_pools,
                container_pool: spec.container_pool,
                container_prefix: spec.container_prefix,
                routes: BTreeMap::new(),
                members: BTreeMap::new(),
                created_ms: spec.at_ms,
                ipv6_egress: Ipv6Egress::Off,
            },
        );
        Ok(Applied::NetworkCreated { network: id })
    }
}

fn validate_report(
    hostname: &str,
    version: &str,
    peers: &[PeerPathReport],
) -> Result<(), Rejected> {
    validate_name(hostname, "host name")?;
    if hostname.len() > MAX_HOSTNAME_LEN || version.len() > MAX_HOSTNAME_LEN {
        return Err(Rejected::new(
            RejectKind::Invalid,
            format!("host name and version must be at most {MAX_HOSTNAME_LEN} bytes"),
        ));
    }
    if peers.len() > MAX_REPORT_PEERS {
        return Err(Rejected::new(
            RejectKind::Invalid,
            format!("a report names at most {MAX_REPORT_PEERS} peers"),
        ));
    }
    Ok(())
}

/// `text` with every character [`validate_name`] refuses replaced by `?`: what a node
/// reports is recorded even when its host name is odd.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if unfit_for_names(c) { '?' } else { c })
        .collect()
}

fn validate_name(name: &str, what: &str) -> Result<(), Rejected> {
    if name.len() > MAX_NAME_LEN {
        return Err(Rejected::new(
            RejectKind::Invalid,
            format!("{what} must be at most {MAX_NAME_LEN} bytes"),
        ));
    }
    if let Some(c) = name.chars().find(|&c| unfit_for_names(c)) {
        return Err(Rejected::new(
            RejectKind::Invalid,
            format!(
                "{what} must be printable text; it holds U+{:04X}, a control or formatting \
                 character (bidi overrides and invisible characters can make one name look \
                 like another)",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// What no name may hold: control characters and format characters.
fn unfit_for_names(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// Unicode's format characters (general category Cf): invisible, and the bidi controls
/// among them reorder what is shown around them.
fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

fn validate_mtu(mtu: u16) -> Result<(), Rejected> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(Rejected::new(
            RejectKind::Invalid,
            format!("MTU {mtu} is out of range; use {MIN_MTU} to {MAX_MTU}"),
        ));
    }
    Ok(())
}

fn canonical_v4(net: &Ipv4Net, what: &str) -> Result<(), Rejected> {
    if net.trunc() != *net {
        return Err(Rejected::new(
            RejectKind::Invalid,
            format!(
                "{what} {net} has host bits set; did you mean {}?",
                net.trunc()
            ),
        ));
    }
    Ok(())
}

impl Network {
    fn apply(&mut self, cmd: &Command) -> Result<Applied, Rejected> {
        let id = self.id;
        match cmd {
            Command::CreateNetwork(_)
            | Command::DeleteNetwork { .. }
            | Command::SetReplicas { .. } => Err(Rejected::new(
                RejectKind::Invalid,
                "not a network-level command",
            )),
            Command::UpdateNetwork { name, mtu, .. } => {
                if let Some(n) = name {
                    validate_name(n, "network name")?;
                }
                if let Some(m) = mtu {
                    validate_mtu(*m)?;
                }
                if let Some(n) = name {
                    self.name.clone_from(n);
                }
                if let Some(m) = mtu {
                    self.mtu = *m;
                }
                self.revision += 1;
                Ok(Applied::NetworkUpdated {
                    network: id,
                    revision: self.revision,
                })
            }
            Command::MemberJoin {
                node,
                identity,
                physical,
                local,
                at_ms,
                ..
            } => self.join(*node, identity, *physical, local, *at_ms),
            Command::MemberJoinBeforeProofOfWork {
                identity,
                physical,
                local,
                at_ms,
                ..
            } => {
                let node = identity
                    .node_id_before_proof_of_work()
                    .map_err(|e| Rejected::new(RejectKind::Invalid, e.to_string()))?;
                self.join(node, identity, *physical, local, *at_ms)
            }
            Command::Authorize { node, at_ms, .. } => self.authorize(*node, *at_ms),
            Command::MemberReach {
                node,
                relay,
                port_mapped,
                ..
            } => self.change_member(*node, |m| {
                let changed = (m.relay, m.port_mapped) != (*relay, *port_mapped);
                (m.relay, m.port_mapped) = (*relay, *port_mapped);
                changed && m.authorized
            }),
            Command::Deauthorize { node, at_ms, .. } => self.change_member(*node, |m| {
                let was = m.authorized;
                m.authorized = false;
                m.last_deauthorized_ms = Some(*at_ms);
                was
            }),
            Command::MemberReport {
                node,
                hostname,
                version,
                peers,
                at_ms,
                ..
            } => {
                validate_report(hostname, version, peers)?;
                self.change_member(*node, |m| {
                    // The host name names a member no admin named: a change for its peers,
                    // who show names.
                    let named = m.name.is_empty() && !hostname.is_empty();
                    if named {
                        m.name.clone_from(hostname);
                    }
                    m.report = Some(MemberReport {
                        hostname: hostname.clone(),
                        version: version.clone(),
                        at_ms: *at_ms,
                        peers: peers.clone(),
                    });
                    named && m.authorized
                })
            }
            Command::RenameMember { node, name, .. } => {
                validate_name(name, "member name")?;
                self.change_member(*node, |m| {
                    m.name.clone_from(name);
                    m.authorized
                })
            }
            Command::DeleteMember { node, .. } => {
                if let Some((target, _)) = self.routes.iter().find(|(_, r)| r.has_gateway(*node)) {
                    return Err(Rejected::new(
                        RejectKind::Conflict,
                        format!("route {target} goes via {node}; remove it first"),
                    ));
                }
                let m = self
                    .members
                    .remove(node)
                    .ok_or_else(|| not_found_member(id, *node))?;
                if m.authorized {
                    self.revision += 1;
                }
                Ok(Applied::MemberDeleted {
                    network: id,
                    node: *node,
                    revision: self.revision,
                })
            }
            Command::AddRoute { target, via, .. } => self.add_route(*target, &[*via]),
            Command::AddFailoverRoute {
                target, gateways, ..
            } => self.add_route(*target, gateways),
            Command::SetIpv6Egress { egress, .. } => {
                if self.ipv6_egress != *egress {
                    self.ipv6_egress = *egress;
                    self.revision += 1;
                }
                Ok(Applied::NetworkUpdated {
                    network: id,
                    revision: self.revision,
                })
            }
            Command::MemberDelegatedPrefix { node, prefix, .. } => {
                if let Some(p) = prefix {
                    self.check_delegated_prefix(*node, *p)?;
                }
                self.change_member(*node, |m| {
                    let changed = m.delegated_prefix != *prefix;
                    m.delegated_prefix = *prefix;
                    changed && m.authorized
                })
            }
            Command::RemoveRoute { target, .. } => {
                let target = target.trunc();
                if self.routes.remove(&target).is_none() {
                    return Err(Rejected::new(
                        RejectKind::NotFound,
                        format!("network {id} has no route {target}"),
                    ));
                }
                self.revision += 1;
                Ok(Applied::RouteRemoved {
                    network: id,
                    target,
                    revision: self.revision,
                })
            }
        }
    }

    /// Changes member `node` with `change`, which says whether the config changed (a new
    /// revision for the nodes).
    fn change_member(
        &mut self,
        node: NodeId,
        change: impl FnOnce(&mut Member) -> bool,
    ) -> Result<Applied, Rejected> {
        let id = self.id;
        let m = self
            .members
            .get_mut(&node)
            .ok_or_else(|| not_found_member(id, node))?;
        let changed = change(m);
        let authorized = m.authorized;
        if changed {
            self.revision += 1;
        }
        Ok(Applied::Member {
            network: id,
            node,
            authorized,
            revision: self.revision,
        })
    }

    /// Keeps members waiting for authorization (never authorized) below
    /// [`MAX_WAITING_MEMBERS`]: at the cap, those not seen for [`WAITING_MEMBER_TTL_MS`] go;
    /// if none has been away that long, the join is refused.
    fn make_room_for_a_waiting_member(&mut self, at_ms: u64) -> Result<(), Rejected> {
        if self.members.values().filter(|m| m.is_waiting()).count() < MAX_WAITING_MEMBERS {
            return Ok(());
        }
        let stale = |m: &Member| {
            m.is_waiting()
                && m.last_seen_ms.unwrap_or(m.created_ms) + WAITING_MEMBER_TTL_MS <= at_ms
        };
        self.members.retain(|_, m| !stale(m));
        if self.members.values().filter(|m| m.is_waiting()).count() < MAX_WAITING_MEMBERS {
            return Ok(());
        }
        Err(Rejected::new(
            RejectKind::Conflict,
            format!(
                "network {} has {MAX_WAITING_MEMBERS} members waiting for authorization; \
                 authorize or delete some first",
                self.id
            ),
        ))
    }

    fn join(
        &mut self,
        node: NodeId,
        identity: &PublicIdentity,
        physical: Option<SocketAddr>,
        local: &[SocketAddr],
        at_ms: u64,
    ) -> Result<Applied, Rejected> {
        let local: Vec<SocketAddr> = local.iter().take(MAX_LOCAL_ENDPOINTS).copied().collect();
        let id = self.id;
        // Peers tell members apart by their X25519 keys: one key, one member.
        if let Some(other) = self
            .members
            .values()
            .find(|m| m.node_id != node && m.identity.x25519 == identity.x25519)
        {
            return Err(Rejected::new(
                RejectKind::Forbidden,
                format!(
                    "node {node}'s X25519 key is member {}'s already; refusing",
                    other.node_id
                ),
            ));
        }
        if !self.members.contains_key(&node) {
            self.make_room_for_a_waiting_member(at_ms)?;
        }
        let revision = &mut self.revision;
        let m = self.members.entry(node).or_insert_with(|| Member {
            node_id: node,
            identity: *identity,
            name: String::new(),
            authorized: false,
            ipv4: Vec::new(),
            container_subnet: None,
            physical: None,
            local: Vec::new(),
            created_ms: at_ms,
            last_authorized_ms: None,
            last_deauthorized_ms: None,
            last_seen_ms: None,
            relay: false,
            port_mapped: false,
            delegated_prefix: None,
            report: None,
        });
        if m.identity != *identity {
            return Err(Rejected::new(
                RejectKind::Forbidden,
                format!("node {node} is on record with another identity; refusing"),
            ));
        }
        let moved = m.physical != physical || m.local != local;
        m.physical = physical;
        m.local = local;
        m.last_seen_ms = Some(at_ms);
        if moved && m.authorized {
            // Endpoints are part of the config: peers learn where to find the member.
            *revision += 1;
        }
        Ok(Applied::Member {
            network: id,
            node,
            authorized: m.authorized,
            revision: *revision,
        })
    }

    fn authorize(&mut self, node: NodeId, at_ms: u64) -> Result<Applied, Rejected> {
        let id = self.id;
        let m = self
            .members
            .get(&node)
            .ok_or_else(|| not_found_member(id, node))?;
        if m.authorized {
            return Ok(Applied::Member {
                network: id,
                node,
                authorized: true,
                revision: self.revision,
            });
        }
        if self.members.values().filter(|m| m.authorized).count() >= MAX_MEMBERS {
            return Err(Rejected::new(
                RejectKind::Conflict,
                format!("network {id} has {MAX_MEMBERS} authorized members, the most it can hold"),
            ));
        }
        // Everything fallible first: the assignments.
        let ipv4 = if m.ipv4.is_empty() {
            let taken: BTreeSet<Ipv4Addr> = self
                .members
                .values()
                .flat_map(|m| m.ipv4.iter().copied())
                .collect();
            vec![
                ipam::assign_ipv4(&self.v4_pools, &taken, node)
                    .map_err(|e| Rejected::new(RejectKind::Exhausted, e.to_string()))?,
            ]
        } else {
            m.ipv4.clone()
        };
        let subnet = match m.container_subnet {
            Some(s) => s,
            None => {
                let mut forbidden: Vec<Ipv4Net> = self.v4_pools.clone();
                forbidden.extend(self.members.values().filter_map(|m| m.container_subnet));
                forbidden.extend(self.routes.keys().filter_map(|t| match t {
                    IpNet::V4(n) => Some(*n),
                    IpNet::V6(_) => None,
                }));
                ipam::assign_subnet(self.container_pool, self.container_prefix, &forbidden)
                    .map_err(|e| Rejected::new(RejectKind::Exhausted, e.to_string()))?
            }
        };
        let m = self
            .members
            .get_mut(&node)
            .ok_or_else(|| not_found_member(id, node))?;
        m.ipv4 = ipv4;
        m.container_subnet = Some(subnet);
        m.authorized = true;
        m.last_authorized_ms = Some(at_ms);
        self.revision += 1;
        Ok(Applied::Member {
            network: id,
            node,
            authorized: true,
            revision: self.revision,
        })
    }

    /// The member holding `ip` as an assigned or formula address.
    pub fn holder_of(&self, ip: IpAddr) -> Option<NodeId> {
        match ip {
            IpAddr::V4(a) => self
                .members
                .values()
                .find(|m| m.ipv4.contains(&a))
                .map(|m| m.node_id),
            IpAddr::V6(a) => {
                let node = (self
                    .rfc4193
                    .then(|| addr::node_from_rfc4193(self.id, a))
                    .flatten())
                .or_else(|| {
                    self.sixplane
                        .then(|| addr::node_from_6plane(self.id, a))
                        .flatten()
                })?;
                self.members.contains_key(&node).then_some(node)
            }
        }
    }

    /// The config nodes run on: authorized members only, canonical order.
    pub fn config(&self) -> NetworkConfig {
        let mut cfg = NetworkConfig::new(self.id, self.name.clone());
        cfg.revision = self.revision;
        cfg.mtu = self.mtu;
        cfg.sixplane = self.sixplane;
        cfg.rfc4193 = self.rfc4193;
        cfg.v4_pools.clone_from(&self.v4_pools);
        cfg.container_pool = Some(self.container_pool);
        cfg.members = self
            .members
            .values()
            .filter(|m| m.authorized)
            .map(|m| MemberConfig {
                node_id: m.node_id,
                identity: m.identity,
                name: m.name.clone(),
                ipv4: m.ipv4.clone(),
                container_subnet: m.container_subnet,
                delegated_subnet: m.delegated_prefix.map(delegated_subnet),
                endpoints: m.endpoints().into_iter().take(8).collect(),
                relay: m.relay,
                port_mapped: m.port_mapped && m.physical.is_some(),
            })
            .collect();
        // A gateway that is not an authorized member (any more) is left out until it is; a
        // route with none is withdrawn.
        cfg.ipv6_egress = self.ipv6_egress;
        cfg.routes = self
            .routes
            .iter()
            .map(|(t, r)| ManagedRoute {
                target: *t,
                gateways: r
                    .gateways()
                    .filter(|g| self.members.get(g).is_some_and(|m| m.authorized))
                    .collect(),
            })
            .filter(|r| !r.gateways.is_empty())
            .collect();
        cfg.canonicalize();
        cfg
    }

    /// The network's own config (no replica list) signed with the network key, for tests
    /// and benchmarks; nodes get [`ControllerState::network_config`], signed by the channel.
    /// Ed25519 is deterministic: every replica produces the same bytes for the same state.
    pub fn signed_config(&self) -> SignedConfig {
        // The seed was validated when the network was created.
        let key = NetworkKey::from_seed(&self.key_seed).expect("network key seed is valid");
        SignedConfig::sign(&key, &self.config())
            .expect("controller configs are canonical and in bounds")
    }
}

#[cfg(test)]
mod tests;

//! Which peer `meshd bench` measures: the peer a node id or a mesh address names in the
//! local daemon's status.

use std::fmt::Write as _;
use std::net::IpAddr;

use meshd_proto::{NetworkId, NodeId};

use crate::daemon::api::{PeerPath, PeerView, StatusView};

/// Why no peer could be benched; the text says which peers there are.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnknownPeer(String);

/// The peer as resolved from the local status.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub node: NodeId,
    pub name: String,
    pub network: NetworkId,
    pub address: IpAddr,
    pub path: PeerPath,
}

/// Finds the peer `text` names (a node id or one of its mesh addresses) in `status`.
pub fn resolve(status: &StatusView, text: &str) -> Result<Target, UnknownPeer> {
    let rank = |p: &&PeerView| match p.path {
        PeerPath::Direct => 0,
        PeerPath::Relay => 1,
        PeerPath::None => 2,
    };
    let target = |p: &PeerView, address: IpAddr| Target {
        node: p.node_id,
        name: p.name.clone(),
        network: p.network,
        address,
        path: p.path,
    };
    let text = text.trim();
    if let Ok(node) = text.parse::<NodeId>() {
        if node == status.node_id {
            return Err(UnknownPeer(format!(
                "{node} is this node; bench a peer. {}",
                peer_list(status)
            )));
        }
        let mut found: Vec<&PeerView> = status.peers.iter().filter(|p| p.node_id == node).collect();
        if found.is_empty() {
            return Err(UnknownPeer(format!(
                "unknown peer {node}. {}",
                peer_list(status)
            )));
        }
        found.sort_by_key(rank);
        return found
            .iter()
            .find_map(|p| preferred_address(&p.addresses).map(|a| target(p, a)))
            .ok_or_else(|| {
                UnknownPeer(format!(
                    "the daemon lists no mesh address for peer {node}; pass one of its \
                     addresses instead of the node id"
                ))
            });
    }
    let Ok(ip) = text.parse::<IpAddr>() else {
        return Err(UnknownPeer(format!(
            "{text:?} is neither a node id (10 hex digits, e.g. 89e92ceee5) nor an IP address"
        )));
    };
    let ip = ip.to_canonical();
    let mut found: Vec<&PeerView> = status
        .peers
        .iter()
        .filter(|p| p.addresses.contains(&ip))
        .collect();
    found.sort_by_key(rank);
    if let Some(p) = found.first() {
        return Ok(target(p, ip));
    }
    if status
        .networks
        .iter()
        .any(|n| n.addresses.iter().any(|a| a.addr() == ip))
    {
        return Err(UnknownPeer(format!(
            "{ip} is this node's own mesh address; bench a peer. {}",
            peer_list(status)
        )));
    }
    Err(UnknownPeer(format!(
        "{ip} is not a mesh address of any peer: `meshd bench` measures the tunnel to a \
         peer, on one of its mesh addresses. {}",
        peer_list(status)
    )))
}

/// IPv4 first, then the others in the order given (RFC4193, 6PLANE).
pub fn preferred_address(addresses: &[IpAddr]) -> Option<IpAddr> {
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
}

/// "Peers: 1a2b3c4d5e (host-b) 10.147.17.2, ..." for errors.
pub fn peer_list(status: &StatusView) -> String {
    if status.peers.is_empty() {
        return "This node has no peers (yet): `meshd status` shows its networks".to_owned();
    }
    let mut seen = Vec::new();
    let mut out = "Peers:".to_owned();
    for p in &status.peers {
        if seen.contains(&p.node_id) {
            continue;
        }
        seen.push(p.node_id);
        let _ = write!(
            out,
            "{} {}",
            if seen.len() > 1 { "," } else { "" },
            p.node_id
        );
        if !p.name.is_empty() {
            let _ = write!(out, " ({})", p.name);
        }
        if let Some(a) = preferred_address(&p.addresses) {
            let _ = write!(out, " {a}");
        }
    }
    out
}

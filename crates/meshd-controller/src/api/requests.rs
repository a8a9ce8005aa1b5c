//! Request bodies and the parsing of user-typed values (CIDRs, route owners) into commands.
//!
//! The parsers are public so the CLI rejects a bad CIDR with the same words before it sends
//! anything. Bodies refuse unknown fields: a misspelt `v4_pool` is an error, not a silently
//! ignored setting.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use meshd_proto::config::{DEFAULT_MTU, Ipv6Egress, MAX_ROUTE_GATEWAYS};
use meshd_proto::{NetworkId, NodeId};
use serde::{Deserialize, Serialize};

use crate::state::{
    Command, DEFAULT_CONTAINER_POOL, DEFAULT_CONTAINER_PREFIX, DEFAULT_V4_POOL, NetworkSpec,
    RouteVia,
};

/// A request that cannot become a command; the text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// Body of `POST /v1/networks`. Only `name` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    /// Default: [`DEFAULT_V4_POOL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4_pools: Option<Vec<String>>,
    /// Default: [`DEFAULT_CONTAINER_POOL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_pool: Option<String>,
    /// Default: [`DEFAULT_CONTAINER_PREFIX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_prefix: Option<u8>,
    /// Default: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sixplane: Option<bool>,
    /// Default: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc4193: Option<bool>,
    /// Default: [`DEFAULT_MTU`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// `"nat66"` or `"off"`; default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_egress: Option<Ipv6Egress>,
}

impl CreateNetwork {
    /// The command's spec with defaults filled in. The key seed and time come from the
    /// replica that accepts the request, so they travel in the command (see [`NetworkSpec`]).
    pub fn to_spec(&self, key_seed: [u8; 32], at_ms: u64) -> Result<NetworkSpec, InvalidRequest> {
        let v4_pools = match &self.v4_pools {
            Some(pools) => pools
                .iter()
                .map(|p| parse_v4_cidr("IPv4 pool", p))
                .collect::<Result<_, _>>()?,
            None => vec![parse_v4_cidr("IPv4 pool", DEFAULT_V4_POOL)?],
        };
        let container_pool = parse_v4_cidr(
            "container pool",
            self.container_pool
                .as_deref()
                .unwrap_or(DEFAULT_CONTAINER_POOL),
        )?;
        Ok(NetworkSpec {
            key_seed,
            name: self.name.clone(),
            v4_pools,
            container_pool,
            container_prefix: self.container_prefix.unwrap_or(DEFAULT_CONTAINER_PREFIX),
            sixplane: self.sixplane.unwrap_or(true),
            rfc4193: self.rfc4193.unwrap_or(true),
            mtu: self.mtu.unwrap_or(DEFAULT_MTU),
            at_ms,
        })
    }
}

/// Body of `PATCH /v1/networks/{nwid}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// `"nat66"` or `"off"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_egress: Option<Ipv6Egress>,
}

impl UpdateNetwork {
    /// The commands, none when the body changes nothing.
    pub fn to_commands(&self, network: NetworkId) -> Vec<Command> {
        let mut out = Vec::new();
        if self.name.is_some() || self.mtu.is_some() {
            out.push(Command::UpdateNetwork {
                network,
                name: self.name.clone(),
                mtu: self.mtu,
            });
        }
        if let Some(egress) = self.ipv6_egress {
            out.push(Command::SetIpv6Egress { network, egress });
        }
        out
    }
}

/// Body of `PATCH /v1/networks/{nwid}/members/{node}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized: Option<bool>,
}

impl UpdateMember {
    /// The command, or `None` when the body changes nothing. Renaming and (de)authorizing
    /// are separate commands; one request applies at most one, so that a request either
    /// happens entirely or not at all.
    pub fn to_command(
        &self,
        network: NetworkId,
        node: NodeId,
        at_ms: u64,
    ) -> Result<Option<Command>, InvalidRequest> {
        match (&self.name, self.authorized) {
            (Some(_), Some(_)) => Err(InvalidRequest(
                "change `name` and `authorized` in two requests: each request applies one change"
                    .into(),
            )),
            (Some(name), None) => Ok(Some(Command::RenameMember {
                network,
                node,
                name: name.clone(),
            })),
            (None, Some(true)) => Ok(Some(Command::Authorize {
                network,
                node,
                at_ms,
            })),
            (None, Some(false)) => Ok(Some(Command::Deauthorize {
                network,
                node,
                at_ms,
            })),
            (None, None) => Ok(None),
        }
    }
}

/// Body of `POST /v1/networks/{nwid}/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRoute {
    /// The prefix, e.g. `192.168.50.0/24`.
    pub target: String,
    /// The gateway: a member's node id or one of its mesh addresses; or a list of them,
    /// most preferred first, for a route that fails over.
    pub via: RouteGateways,
}

/// One gateway, or several in order of preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RouteGateways {
    One(String),
    Many(Vec<String>),
}

impl AddRoute {
    pub fn to_command(&self, network: NetworkId) -> Result<Command, InvalidRequest> {
        let target = parse_route_target(&self.target)?;
        match &self.via {
            RouteGateways::One(via) => Ok(Command::AddRoute {
                network,
                target,
                via: parse_via(via)?,
            }),
            RouteGateways::Many(list) if list.is_empty() => Err(InvalidRequest(
                "via names no gateway: give a member's node id or address".into(),
            )),
            RouteGateways::Many(list) if list.len() > MAX_ROUTE_GATEWAYS => {
                Err(InvalidRequest(format!(
                    "via names {} gateways; a route has at most {MAX_ROUTE_GATEWAYS}",
                    list.len()
                )))
            }
            RouteGateways::Many(list) => Ok(Command::AddFailoverRoute {
                network,
                target,
                gateways: list
                    .iter()
                    .map(|v| parse_via(v))
                    .collect::<Result<_, _>>()?,
            }),
        }
    }
}

/// Body of `POST /v1/replicas`: add the replica `id`, reached at `address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddReplica {
    /// The id given to (or printed by) `meshd controller init --join` on the new replica.
    pub id: u64,
    /// Where the other replicas reach it: `host:port`, its `init --listen`/`--advertise`.
    pub address: String,
    /// Its key (64 hex digits), printed by `init --join` and `run`: replication with it
    /// requires that key.
    pub key: String,
}

/// Query of `DELETE /v1/networks/{nwid}/routes?target=CIDR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQuery {
    pub target: String,
}

/// An IPv4 prefix such as a pool: a CIDR without host bits.
pub fn parse_v4_cidr(what: &str, text: &str) -> Result<Ipv4Net, InvalidRequest> {
    match parse_cidr(what, text, "10.147.0.0/16")? {
        IpNet::V4(net) => Ok(net),
        IpNet::V6(_) => Err(InvalidRequest(format!(
            "{what} {text:?} is IPv6; it must be an IPv4 CIDR like 10.147.0.0/16 \
             (members' IPv6 addresses come from 6PLANE and RFC4193)"
        ))),
    }
}

/// A managed route's prefix, IPv4 or IPv6.
pub fn parse_route_target(text: &str) -> Result<IpNet, InvalidRequest> {
    parse_cidr("route target", text, "192.168.50.0/24")
}

/// A route owner: a node id (10 hex digits) or a member's mesh address.
pub fn parse_via(text: &str) -> Result<RouteVia, InvalidRequest> {
    let text = text.trim();
    if let Ok(node) = text.parse::<NodeId>() {
        return Ok(RouteVia::Node(node));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(RouteVia::Gateway(ip));
    }
    Err(InvalidRequest(format!(
        "via {text:?} is neither a node id (10 lowercase hex digits, e.g. 89e92ceee5) \
         nor an address of a member (e.g. 10.147.0.12)"
    )))
}

/// How [`parse_via`] reads a route owner back: the text to send.
pub fn via_text(via: RouteVia) -> String {
    match via {
        RouteVia::Node(node) => node.to_string(),
        RouteVia::Gateway(ip) => ip.to_string(),
    }
}

fn parse_cidr(what: &str, text: &str, example: &str) -> Result<IpNet, InvalidRequest> {
    let text = text.trim();
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => Err(InvalidRequest(format!(
            "{what} {net} has host bits set; did you mean {}?",
            net.trunc()
        ))),
        Ok(net) => Ok(net),
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => {
                let full = if ip.is_ipv4() { 32 } else { 128 };
                Err(InvalidRequest(format!(
                    "{what} {text:?} has no prefix length; write a CIDR like {example} \
                     ({ip}/{full} for the one address)"
                )))
            }
            Err(_) => Err(InvalidRequest(format!(
                "{what} {text:?} is not a CIDR; write it like {example}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked_with_a_suggestion() {
        assert_eq!(
            parse_route_target("192.168.50.0/24").unwrap().to_string(),
            "192.168.50.0/24"
        );
        assert_eq!(
            parse_route_target("fd00::/64").unwrap().to_string(),
            "fd00::/64"
        );
        let e = parse_route_target("192.168.50.7/24").unwrap_err().0;
        assert!(e.contains("did you mean 192.168.50.0/24?"), "{e}");
        let e = parse_route_target("192.168.50.7").unwrap_err().0;
        assert!(e.contains("192.168.50.7/32 for the one address"), "{e}");
        let e = parse_route_target("192.168.50/24").unwrap_err().0;
        assert!(e.contains("is not a CIDR"), "{e}");
        let e = parse_v4_cidr("IPv4 pool", "fd00::/64").unwrap_err().0;
        assert!(e.contains("is IPv6"), "{e}");
    }

    #[test]
    fn via_is_a_node_id_or_an_address() {
        let node: NodeId = "89e92ceee5".parse().unwrap();
        assert_eq!(parse_via("89e92ceee5").unwrap(), RouteVia::Node(node));
        assert_eq!(
            parse_via("10.147.0.12").unwrap(),
            RouteVia::Gateway("10.147.0.12".parse().unwrap())
        );
        assert!(parse_via("89E92CEEE5").is_err());
        assert!(parse_via("router").is_err());
        assert_eq!(via_text(parse_via("fc00::1").unwrap()), "fc00::1");
    }

    #[test]
    fn member_patch_applies_one_change() {
        let (n, m) = (
            NetworkId::from_u64(1),
            "89e92ceee5".parse::<NodeId>().unwrap(),
        );
        let both = UpdateMember {
            name: Some("a".into()),
            authorized: Some(true),
        };
        assert!(both.to_command(n, m, 0).is_err());
        assert_eq!(UpdateMember::default().to_command(n, m, 0), Ok(None));
        assert!(matches!(
            UpdateMember {
                authorized: Some(false),
                ..Default::default()
            }
            .to_command(n, m, 5),
            Ok(Some(Command::Deauthorize { at_ms: 5, .. }))
        ));
    }
}

//! The canonical byte encoding of a [`NetworkConfig`].
//!
//! ```text
//! "MSHN" | version 1 | nwid (8) | revision u64 | name | mtu u16 | flags u8 (1 = 6PLANE, 2 = RFC4193)
//! | pools: u16 n, n * v4net | container pool: u8 0|1 [v4net] | members: u32 n, n * member
//! | routes: u32 n, n * (ipnet | via node id (5))
//! member = node id (5) | x25519 (32) | ed25519 (32) | name | ipv4: u8 n, n * 4
//!        | container subnet: u8 0|1 [v4net] | endpoints: u8 n, n * (family 4|6, addr, port u16)
//! name = u16 length + UTF-8; v4net = addr (4) + len; ipnet = family 4|6 + addr + len
//! ```
//! Version 2 adds a flags byte at the end of each member (1 = relay, 2 = port-mapped) and is
//! used only when some member has a flag. Version 3 has the member flags and, after the
//! routes, the controller's replicas: `u8 n, n * (address as name | ed25519 key (32))`; it is
//! used only when the config names replicas.
//! Version 4 is version 3 (its replica list may be empty) with the IPv6 extensions, used
//! only when the config has one: network flag 4 = IPv6 egress NAT66; member flag 4 = a
//! delegated IPv6 subnet follows the member's flags (`addr (16) | len`); and every route
//! names its gateways, `ipnet | u8 n (1..=8) | n * node id (5)`, most preferred first.
//! Integers are big-endian. Decoding rejects anything that would not re-encode to the same
//! bytes: unsorted or duplicate members and routes, host bits in prefixes, trailing bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    Ipv6Egress, MAX_MTU, MAX_ROUTE_GATEWAYS, MIN_MTU, ManagedRoute, MemberConfig, NetworkConfig,
    ReplicaEntry,
};
use crate::identity::{KEY_LEN, PublicIdentity};
use crate::{NetworkId, NodeId};

const MAGIC: &[u8; 4] = b"MSHN";
const VERSION: u8 = 1;
/// Version 1 plus a flags byte per member.
const VERSION_MEMBER_FLAGS: u8 = 2;
/// Version 2 plus the replica list.
const VERSION_REPLICAS: u8 = 3;
/// Version 3 plus IPv6 egress, delegated subnets and routes with several gateways.
const VERSION_IPV6: u8 = 4;
/// Most replicas a config names.
pub const MAX_REPLICAS: usize = 16;
const FLAG_SIXPLANE: u8 = 1;
const FLAG_RFC4193: u8 = 2;
const FLAG_EGRESS_NAT66: u8 = 4;
const MEMBER_RELAY: u8 = 1;
const MEMBER_PORT_MAPPED: u8 = 2;
const MEMBER_DELEGATED: u8 = 4;
/// Longest network or member name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Smallest encoded member: ids, keys, empty name and lists.
const MIN_MEMBER_LEN: usize = 5 + 2 * KEY_LEN + 2 + 1 + 1 + 1;

/// Why bytes are not a valid config. Every variant names the field so a log line is useful.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("config ends early while reading {0}")]
    Truncated(&'static str),
    #[error("not a meshd network config (bad magic)")]
    BadMagic,
    #[error("unsupported config version {0}")]
    UnsupportedVersion(u8),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} is not in canonical order or has duplicates")]
    NotCanonical(&'static str),
    #[error("{0} trailing bytes after the config")]
    TrailingBytes(usize),
}

/// Why a config cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} is too long or has too many entries")]
    TooLarge(&'static str),
    #[error("{0} is not in canonical order; call NetworkConfig::canonicalize")]
    NotCanonical(&'static str),
}

pub fn encode(cfg: &NetworkConfig) -> Result<Vec<u8>, EncodeError> {
    check_canonical(cfg).map_err(|e| match e {
        DecodeError::NotCanonical(what) => EncodeError::NotCanonical(what),
        _ => EncodeError::NotCanonical("config"),
    })?;
    let mut w = Vec::with_capacity(64 + cfg.members.len() * 128);
    w.extend_from_slice(MAGIC);
    let with_ipv6 = needs_ipv6_version(cfg);
    let with_replicas = with_ipv6 || !cfg.replicas.is_empty();
    let with_flags = with_replicas || cfg.members.iter().any(|m| member_flags(m) != 0);
    w.push(if with_ipv6 {
        VERSION_IPV6
    } else if with_replicas {
        VERSION_REPLICAS
    } else if with_flags {
        VERSION_MEMBER_FLAGS
    } else {
        VERSION
    });
    w.extend_from_slice(&cfg.network_id.to_bytes());
    w.extend_from_slice(&cfg.revision.to_be_bytes());
    put_name(&mut w, &cfg.name, "network name")?;
    w.extend_from_slice(&cfg.mtu.to_be_bytes());
    let flags = if cfg.sixplane { FLAG_SIXPLANE } else { 0 }
        | if cfg.rfc4193 { FLAG_RFC4193 } else { 0 }
        | if cfg.ipv6_egress == Ipv6Egress::Nat66 {
            FLAG_EGRESS_NAT66
        } else {
            0
        };
    w.push(flags);
    let pools = u16::try_from(cfg.v4_pools.len()).map_err(|_| EncodeError::TooLarge("v4 pools"))?;
    w.extend_from_slice(&pools.to_be_bytes());
    for p in &cfg.v4_pools {
        put_v4net(&mut w, p);
    }
    put_opt_v4net(&mut w, cfg.container_pool);
    let members = u32::try_from(cfg.members.len()).map_err(|_| EncodeError::TooLarge("members"))?;
    w.extend_from_slice(&members.to_be_bytes());
    for m in &cfg.members {
        w.extend_from_slice(&m.node_id.to_bytes());
        w.extend_from_slice(&m.identity.x25519);
        w.extend_from_slice(&m.identity.ed25519);
        put_name(&mut w, &m.name, "member name")?;
        w.push(u8::try_from(m.ipv4.len()).map_err(|_| EncodeError::TooLarge("member ipv4"))?);
        for a in &m.ipv4 {
            w.extend_from_slice(&a.octets());
        }
        put_opt_v4net(&mut w, m.container_subnet);
        w.push(u8::try_from(m.endpoints.len()).map_err(|_| EncodeError::TooLarge("endpoints"))?);
        for e in &m.endpoints {
            put_ip(&mut w, e.ip());
            w.extend_from_slice(&e.port().to_be_bytes());
        }
        if with_flags {
            w.push(member_flags(m));
        }
        if let Some(net) = m.delegated_subnet {
            w.extend_from_slice(&net.addr().octets());
            w.push(net.prefix_len());
        }
    }
    let routes = u32::try_from(cfg.routes.len()).map_err(|_| EncodeError::TooLarge("routes"))?;
    w.extend_from_slice(&routes.to_be_bytes());
    for r in &cfg.routes {
        put_ip(&mut w, r.target.addr());
        w.push(r.target.prefix_len());
        if with_ipv6 {
            // At most MAX_ROUTE_GATEWAYS: check_canonical above.
            w.push(r.gateways.len() as u8);
            for g in &r.gateways {
                w.extend_from_slice(&g.to_bytes());
            }
        } else {
            // One gateway exactly: otherwise the config needs version 4.
            let via = r
                .preferred()
                .ok_or(EncodeError::TooLarge("route gateways"))?;
            w.extend_from_slice(&via.to_bytes());
        }
    }
    if with_replicas {
        if cfg.replicas.len() > MAX_REPLICAS {
            return Err(EncodeError::TooLarge("replicas"));
        }
        // At most MAX_REPLICAS, checked above.
        w.push(cfg.replicas.len() as u8);
        for replica in &cfg.replicas {
            put_name(&mut w, &replica.address, "replica address")?;
            w.extend_from_slice(&replica.key);
        }
    }
    Ok(w)
}

pub fn decode(bytes: &[u8]) -> Result<NetworkConfig, DecodeError> {
    let mut r = Reader { rest: bytes };
    if r.array::<4>("magic")? != *MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8("version")?;
    if !(VERSION..=VERSION_IPV6).contains(&version) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let network_id = NetworkId::from_bytes(r.array("network id")?);
    let revision = r.u64("revision")?;
    let name = r.name("network name")?;
    let mtu = r.u16("mtu")?;
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(DecodeError::Invalid("mtu"));
    }
    let flags = r.u8("flags")?;
    let known = if version >= VERSION_IPV6 {
        FLAG_SIXPLANE | FLAG_RFC4193 | FLAG_EGRESS_NAT66
    } else {
        FLAG_SIXPLANE | FLAG_RFC4193
    };
    if flags & !known != 0 {
        return Err(DecodeError::Invalid("flags"));
    }
    let pool_count = usize::from(r.u16("v4 pool count")?);
    let mut v4_pools = Vec::with_capacity(pool_count.min(r.rest.len() / 5));
    for _ in 0..pool_count {
        v4_pools.push(r.v4net("v4 pool")?);
    }
    let container_pool = r.opt_v4net("container pool")?;
    let member_count = r.count("member count", MIN_MEMBER_LEN)?;
    let mut members = Vec::with_capacity(member_count);
    for _ in 0..member_count {
        members.push(r.member(version)?);
    }
    if version == VERSION_MEMBER_FLAGS && members.iter().all(|m| member_flags(m) == 0) {
        return Err(DecodeError::NotCanonical(
            "member flags (version 2 without any)",
        ));
    }
    let route_count = r.count("route count", 11)?;
    let mut routes = Vec::with_capacity(route_count);
    for _ in 0..route_count {
        let target = r.ipnet("route target")?;
        let n = if version >= VERSION_IPV6 {
            usize::from(r.u8("route gateway count")?)
        } else {
            1
        };
        if n == 0 || n > MAX_ROUTE_GATEWAYS {
            return Err(DecodeError::Invalid("route gateway count"));
        }
        // Distinct: check_canonical below.
        let mut gateways = Vec::with_capacity(n);
        for _ in 0..n {
            gateways.push(r.node_id("route gateway")?);
        }
        routes.push(ManagedRoute { target, gateways });
    }
    let mut replicas = Vec::new();
    if version >= VERSION_REPLICAS {
        let n = usize::from(r.u8("replica count")?);
        if n == 0 && version == VERSION_REPLICAS {
            return Err(DecodeError::NotCanonical(
                "replicas (version 3 without any)",
            ));
        }
        if n > MAX_REPLICAS {
            return Err(DecodeError::Invalid("replica count"));
        }
        for _ in 0..n {
            let address = r.name("replica address")?;
            let key = r.array("replica key")?;
            replicas.push(ReplicaEntry { address, key });
        }
    }
    if !r.rest.is_empty() {
        return Err(DecodeError::TrailingBytes(r.rest.len()));
    }
    let cfg = NetworkConfig {
        network_id,
        revision,
        name,
        mtu,
        sixplane: flags & FLAG_SIXPLANE != 0,
        rfc4193: flags & FLAG_RFC4193 != 0,
        v4_pools,
        container_pool,
        ipv6_egress: if flags & FLAG_EGRESS_NAT66 != 0 {
            Ipv6Egress::Nat66
        } else {
            Ipv6Egress::Off
        },
        members,
        routes,
        replicas,
    };
    if version == VERSION_IPV6 && !needs_ipv6_version(&cfg) {
        return Err(DecodeError::NotCanonical(
            "IPv6 extensions (version 4 without any)",
        ));
    }
    check_canonical(&cfg)?;
    Ok(cfg)
}

fn check_canonical(cfg: &NetworkConfig) -> Result<(), DecodeError> {
    fn strictly_sorted<T: Ord>(items: impl Iterator<Item = T>) -> bool {
        let mut prev: Option<T> = None;
        for item in items {
            if prev.as_ref().is_some_and(|p| *p >= item) {
                return false;
            }
            prev = Some(item);
        }
        true
    }
    if !strictly_sorted(cfg.v4_pools.iter()) {
        return Err(DecodeError::NotCanonical("v4 pools"));
    }
    if !strictly_sorted(cfg.members.iter().map(|m| m.node_id)) {
        return Err(DecodeError::NotCanonical("members"));
    }
    if !strictly_sorted(cfg.routes.iter().map(|r| r.target)) {
        return Err(DecodeError::NotCanonical("routes"));
    }
    for r in &cfg.routes {
        let distinct = r
            .gateways
            .iter()
            .enumerate()
            .all(|(i, g)| !r.gateways[..i].contains(g));
        if r.gateways.is_empty() || r.gateways.len() > MAX_ROUTE_GATEWAYS || !distinct {
            return Err(DecodeError::NotCanonical("route gateways"));
        }
    }
    if !strictly_sorted(cfg.replicas.iter().map(|r| r.address.as_str())) {
        return Err(DecodeError::NotCanonical("replicas"));
    }
    for m in &cfg.members {
        if !strictly_sorted(m.ipv4.iter()) {
            return Err(DecodeError::NotCanonical("member ipv4 addresses"));
        }
        if m.port_mapped && m.endpoints.is_empty() {
            return Err(DecodeError::NotCanonical(
                "port-mapped member without an endpoint",
            ));
        }
    }
    Ok(())
}

fn member_flags(m: &MemberConfig) -> u8 {
    (if m.relay { MEMBER_RELAY } else { 0 })
        | (if m.port_mapped { MEMBER_PORT_MAPPED } else { 0 })
        | if m.delegated_subnet.is_some() {
            MEMBER_DELEGATED
        } else {
            0
        }
}

/// Whether the config uses what only version 4 spells.
fn needs_ipv6_version(cfg: &NetworkConfig) -> bool {
    cfg.ipv6_egress != Ipv6Egress::Off
        || cfg.members.iter().any(|m| m.delegated_subnet.is_some())
        || cfg.routes.iter().any(|r| r.gateways.len() != 1)
}

fn put_name(w: &mut Vec<u8>, name: &str, what: &'static str) -> Result<(), EncodeError> {
    if name.len() > MAX_NAME_LEN {
        return Err(EncodeError::TooLarge(what));
    }
    // MAX_NAME_LEN fits in u16.
    w.extend_from_slice(&(name.len() as u16).to_be_bytes());
    w.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_v4net(w: &mut Vec<u8>, net: &Ipv4Net) {
    w.extend_from_slice(&net.addr().octets());
    w.push(net.prefix_len());
}

fn put_opt_v4net(w: &mut Vec<u8>, net: Option<Ipv4Net>) {
    match net {
        None => w.push(0),
        Some(n) => {
            w.push(1);
            put_v4net(w, &n);
        }
    }
}

fn put_ip(w: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            w.push(4);
            w.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            w.push(6);
            w.extend_from_slice(&a.octets());
        }
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A count of items at least `min_item_len` bytes each; refuses counts the remaining bytes
    /// cannot hold, so a forged count cannot make us allocate.
    fn count(&mut self, what: &'static str, min_item_len: usize) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.u32(what)?).map_err(|_| DecodeError::Invalid(what))?;
        if n.saturating_mul(min_item_len) > self.rest.len() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }

    fn name(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(what)?);
        if len > MAX_NAME_LEN {
            return Err(DecodeError::Invalid(what));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid(what))
    }

    fn node_id(&mut self, what: &'static str) -> Result<NodeId, DecodeError> {
        NodeId::from_bytes(self.array(what)?).map_err(|_| DecodeError::Invalid(what))
    }

    fn v4net(&mut self, what: &'static str) -> Result<Ipv4Net, DecodeError> {
        let addr = Ipv4Addr::from(self.array::<4>(what)?);
        let len = self.u8(what)?;
        let net = Ipv4Net::new(addr, len).map_err(|_| DecodeError::Invalid(what))?;
        if net.trunc() != net {
            return Err(DecodeError::Invalid(what));
        }
        Ok(net)
    }

    fn v6net(&mut self, what: &'static str) -> Result<Ipv6Net, DecodeError> {
        let addr = Ipv6Addr::from(self.array::<16>(what)?);
        let len = self.u8(what)?;
        let net = Ipv6Net::new(addr, len).map_err(|_| DecodeError::Invalid(what))?;
        if net.trunc() != net {
            return Err(DecodeError::Invalid(what));
        }
        Ok(net)
    }

    fn opt_v4net(&mut self, what: &'static str) -> Result<Option<Ipv4Net>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.v4net(what)?)),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    fn ip(&mut self, what: &'static str) -> Result<IpAddr, DecodeError> {
        match self.u8(what)? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?))),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    fn ipnet(&mut self, what: &'static str) -> Result<IpNet, DecodeError> {
        let addr = self.ip(what)?;
        let len = self.u8(what)?;
        let net = match addr {
            IpAddr::V4(a) => Ipv4Net::new(a, len).map(IpNet::V4),
            IpAddr::V6(a) => Ipv6Net::new(a, len).map(IpNet::V6),
        }
        .map_err(|_| DecodeError::Invalid(what))?;
        if net.trunc() != net {
            return Err(DecodeError::Invalid(what));
        }
        Ok(net)
    }

    fn member(&mut self, version: u8) -> Result<MemberConfig, DecodeError> {
        let node_id = self.node_id("member node id")?;
        let identity = PublicIdentity {
            x25519: self.array("member x25519 key")?,
            ed25519: self.array("member ed25519 key")?,
        };
        // Not re-derived here: a node id costs a memory-hard hash, and the controller paired
        // id and keys when it checked the member's proof of work; the signature covers both.
        let name = self.name("member name")?;
        let n = usize::from(self.u8("member ipv4 count")?);
        let mut ipv4 = Vec::with_capacity(n);
        for _ in 0..n {
            ipv4.push(Ipv4Addr::from(self.array::<4>("member ipv4")?));
        }
        let container_subnet = self.opt_v4net("member container subnet")?;
        let n = usize::from(self.u8("member endpoint count")?);
        let mut endpoints = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = self.ip("member endpoint")?;
            let port = self.u16("member endpoint port")?;
            endpoints.push(SocketAddr::new(ip, port));
        }
        let flags = if version >= VERSION_MEMBER_FLAGS {
            self.u8("member flags")?
        } else {
            0
        };
        let known = if version >= VERSION_IPV6 {
            MEMBER_RELAY | MEMBER_PORT_MAPPED | MEMBER_DELEGATED
        } else {
            MEMBER_RELAY | MEMBER_PORT_MAPPED
        };
        if flags & !known != 0 {
            return Err(DecodeError::Invalid("member flags"));
        }
        let delegated_subnet = if flags & MEMBER_DELEGATED != 0 {
            Some(self.v6net("member delegated subnet")?)
        } else {
            None
        };
        Ok(MemberConfig {
            node_id,
            identity,
            name,
            ipv4,
            container_subnet,
            endpoints,
            delegated_subnet,
            relay: flags & MEMBER_RELAY != 0,
            port_mapped: flags & MEMBER_PORT_MAPPED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::tests::sample;

    #[test]
    fn round_trips() {
        for n in [0, 1, 3] {
            let (cfg, _) = sample(n);
            let bytes = encode(&cfg).unwrap();
            assert_eq!(decode(&bytes).unwrap(), cfg);
        }
    }

    /// [`sample`] with a relay member and a port-mapped one.
    fn flagged(n: usize) -> NetworkConfig {
        let (mut cfg, _) = sample(n);
        cfg.members[0].relay = true;
        cfg.members[n - 1].port_mapped = true;
        cfg
    }

    #[test]
    fn ipv6_extensions_need_version_4_and_only_they_do() {
        let (plain, ids) = sample(3);
        assert!(encode(&plain).unwrap()[4] < VERSION_IPV6);
        let mut egress = plain.clone();
        egress.ipv6_egress = Ipv6Egress::Nat66;
        let mut delegated = plain.clone();
        delegated.members[1].delegated_subnet = Some("2001:db8:1:40::/80".parse().unwrap());
        let mut failover = plain.clone();
        failover.routes[0].gateways.push(ids[2].node_id());
        for cfg in [egress, delegated, failover] {
            let bytes = encode(&cfg).unwrap();
            assert_eq!(bytes[4], VERSION_IPV6);
            assert_eq!(decode(&bytes).unwrap(), cfg);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{cut}");
            }
        }
        // Version 4 spelling a config that needs none of it is not canonical.
        let mut bytes = encode(&plain).unwrap();
        assert_eq!(bytes[4], VERSION);
        bytes[4] = VERSION_IPV6;
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn route_gateways_are_distinct_and_bounded() {
        let (mut cfg, ids) = sample(2);
        cfg.routes[0].gateways = vec![ids[0].node_id(), ids[0].node_id()];
        assert!(encode(&cfg).is_err());
        cfg.routes[0].gateways.clear();
        assert!(encode(&cfg).is_err());
        cfg.routes[0].gateways = vec![ids[0].node_id(); MAX_ROUTE_GATEWAYS + 1];
        assert!(encode(&cfg).is_err());
        cfg.routes[0].gateways = vec![ids[1].node_id(), ids[0].node_id()];
        let bytes = encode(&cfg).unwrap();
        assert_eq!(
            decode(&bytes).unwrap().routes[0].gateways,
            cfg.routes[0].gateways
        );
    }

    /// [`sample`] naming two replicas.
    fn with_replicas(n: usize) -> NetworkConfig {
        let (mut cfg, _) = sample(n);
        cfg.replicas = vec![
            ReplicaEntry {
                address: "ctl1.example.com:9994".into(),
                key: [1; 32],
            },
            ReplicaEntry {
                address: "[2001:db8::2]:9994".into(),
                key: [2; 32],
            },
        ];
        cfg.canonicalize();
        cfg
    }

    #[test]
    fn replicas_need_version_3_and_only_they_do() {
        let cfg = with_replicas(2);
        let bytes = encode(&cfg).unwrap();
        assert_eq!(bytes[4], VERSION_REPLICAS);
        assert_eq!(decode(&bytes).unwrap(), cfg);
        // Member flags travel in version 3 as well.
        let mut flagged = with_replicas(2);
        flagged.members[0].relay = true;
        assert_eq!(decode(&encode(&flagged).unwrap()).unwrap(), flagged);

        // Version 3 with no replicas has a shorter spelling: refused.
        let mut none = cfg.clone();
        none.replicas.clear();
        let mut bytes = encode(&none).unwrap();
        bytes[4] = VERSION_REPLICAS;
        // As version 3: member flag bytes it lacks, so something is off either way.
        assert!(decode(&bytes).is_err());

        // Out of order or repeated: refused, as is a list longer than MAX_REPLICAS.
        let mut unsorted = cfg.clone();
        unsorted.replicas.swap(0, 1);
        assert!(matches!(
            encode(&unsorted),
            Err(EncodeError::NotCanonical("replicas"))
        ));
        let mut many = cfg.clone();
        many.replicas = (0..=MAX_REPLICAS)
            .map(|i| ReplicaEntry {
                address: format!("10.0.0.{i}:9994"),
                key: [3; 32],
            })
            .collect();
        many.canonicalize();
        assert!(encode(&many).is_err());
        let mut bytes = encode(&cfg).unwrap();
        let count_at = bytes.len()
            - 2 * (32 + 2)
            - "ctl1.example.com:9994".len()
            - "[2001:db8::2]:9994".len()
            - 1;
        bytes[count_at] = 0;
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn member_flags_need_version_2_and_only_they_do() {
        let (plain, _) = sample(3);
        assert_eq!(encode(&plain).unwrap()[4], VERSION);
        let cfg = flagged(3);
        let bytes = encode(&cfg).unwrap();
        assert_eq!(bytes[4], VERSION_MEMBER_FLAGS);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded, cfg);
        assert!(decoded.members[0].relay && !decoded.members[0].port_mapped);
        assert!(decoded.members[2].port_mapped && !decoded.members[2].relay);
        // Version 2 where no member has a flag has a shorter spelling: refused.
        let mut none = cfg.clone();
        for m in &mut none.members {
            (m.relay, m.port_mapped) = (false, false);
        }
        let mut bytes = encode(&none).unwrap();
        bytes[4] = VERSION_MEMBER_FLAGS;
        assert!(decode(&bytes).is_err());
        // Unknown flag bits are refused.
        let mut bytes = encode(&flagged(1)).unwrap();
        // The flags are the member's last byte, before the route count and one IPv4 route.
        let flags_at = bytes.len() - 4 - 11 - 1;
        bytes[flags_at] |= 0x80;
        assert_eq!(decode(&bytes), Err(DecodeError::Invalid("member flags")));
        // A port mapping needs an endpoint to be one.
        let mut cfg = flagged(1);
        cfg.members[0].endpoints.clear();
        assert!(encode(&cfg).is_err());
    }

    #[test]
    fn every_truncated_prefix_is_rejected() {
        let (cfg, _) = sample(3);
        let bytes = encode(&cfg).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn non_canonical_configs_are_refused() {
        let (mut cfg, _) = sample(2);
        cfg.members.swap(0, 1);
        assert!(matches!(
            encode(&cfg),
            Err(EncodeError::NotCanonical("members"))
        ));
        cfg.canonicalize();
        assert_eq!(decode(&encode(&cfg).unwrap()).unwrap(), cfg);
    }

    #[test]
    fn forged_counts_do_not_allocate() {
        let (cfg, _) = sample(0);
        let mut bytes = encode(&cfg).unwrap();
        let routes_at = bytes.len() - 4;
        let members_at = routes_at - 4;
        bytes[members_at..routes_at].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&bytes), Err(DecodeError::Truncated("member count")));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_encodings_never_panic_and_reencode_identically(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            form in 0..3u8,
        ) {
            let cfg = match form {
                0 => sample(2).0,
                1 => flagged(2),
                _ => with_replicas(2),
            };
            let mut bytes = encode(&cfg).unwrap();
            for (at, x) in flips {
                let i = at % bytes.len();
                bytes[i] ^= x;
            }
            if let Ok(decoded) = decode(&bytes) {
                // Canonical: whatever decodes re-encodes to the very same bytes.
                prop_assert_eq!(encode(&decoded).unwrap(), bytes);
            }
        }
    }
}

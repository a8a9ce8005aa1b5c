//! Address assignment: pure functions of the current allocations, so replaying the command
//! log on any replica assigns exactly the same addresses.
//!
//! * A member's IPv4 address comes from the network's pools. The search starts at an offset
//!   derived from the node id (as ZeroTier does), so ids spread over the pool, and probes
//!   linearly to the first free host address.
//! * A member's container subnet is the lowest free block of the configured length in the
//!   container pool that overlaps nothing else: no pool, no managed route, no other subnet.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use meshd_proto::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in the IPv4 pools ({pools}); add a pool or use a larger one")]
    PoolsExhausted { pools: String },
    #[error(
        "no free /{prefix} left in container pool {pool}; use a larger pool or a longer --container-prefix"
    )]
    ContainerPoolExhausted { pool: Ipv4Net, prefix: u8 },
}

/// The usable host range of a pool: without network and broadcast for /30 and shorter.
fn host_range(pool: &Ipv4Net) -> (u32, u32) {
    let (first, last) = (u32::from(pool.network()), u32::from(pool.broadcast()));
    if pool.prefix_len() >= 31 {
        (first, last)
    } else {
        (first + 1, last - 1)
    }
}

/// Picks a free address for `node` from `pools`, none of `taken`.
pub fn assign_ipv4(
    pools: &[Ipv4Net],
    taken: &BTreeSet<Ipv4Addr>,
    node: NodeId,
) -> Result<Ipv4Addr, IpamError> {
    for pool in pools {
        let (first, last) = host_range(pool);
        let size = u64::from(last - first) + 1;
        let start = node.as_u64() % size;
        for i in 0..size {
            // Below `size`, which fits in the pool's u32 range.
            let offset = ((start + i) % size) as u32;
            let candidate = Ipv4Addr::from(first + offset);
            if !taken.contains(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(IpamError::PoolsExhausted {
        pools: pools
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Whether two prefixes share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The lowest `/prefix` block of `pool` that overlaps none of `forbidden`.
pub fn assign_subnet(
    pool: Ipv4Net,
    prefix: u8,
    forbidden: &[Ipv4Net],
) -> Result<Ipv4Net, IpamError> {
    let exhausted = IpamError::ContainerPoolExhausted { pool, prefix };
    if prefix < pool.prefix_len() || prefix > 32 {
        return Err(exhausted);
    }
    // Forbidden ranges as sorted, merged [start, end] intervals: one pass over the candidates.
    let mut ranges: Vec<(u64, u64)> = forbidden
        .iter()
        .map(|n| {
            (
                u64::from(u32::from(n.network())),
                u64::from(u32::from(n.broadcast())),
            )
        })
        .collect();
    ranges.sort_unstable();
    let block = 1u64 << (32 - prefix);
    let mut start = u64::from(u32::from(pool.network()));
    let end = u64::from(u32::from(pool.broadcast()));
    for (lo, hi) in ranges {
        if hi < start {
            continue;
        }
        if lo >= start + block {
            break;
        }
        // The candidate overlaps [lo, hi]: move to the first aligned block after hi.
        start = (hi + 1).div_ceil(block) * block;
        if start + block - 1 > end {
            return Err(exhausted);
        }
    }
    if start + block - 1 > end {
        return Err(exhausted);
    }
    // start is aligned and inside the pool, so this is a valid prefix.
    Ipv4Net::new(Ipv4Addr::from(start as u32), prefix).map_err(|_| exhausted)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(n: u64) -> NodeId {
        NodeId::new(n).unwrap()
    }

    #[test]
    fn skips_network_broadcast_and_taken() {
        let pools = vec!["10.0.0.0/30".parse().unwrap()];
        let mut taken = BTreeSet::new();
        let a = assign_ipv4(&pools, &taken, node(1)).unwrap();
        taken.insert(a);
        let b = assign_ipv4(&pools, &taken, node(1)).unwrap();
        taken.insert(b);
        let mut got = vec![a, b];
        got.sort();
        assert_eq!(
            got,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        let err = assign_ipv4(&pools, &taken, node(1)).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/30"), "{err}");
    }

    #[test]
    fn falls_through_to_the_next_pool() {
        let pools: Vec<Ipv4Net> = vec![
            "10.0.0.0/31".parse().unwrap(),
            "10.9.0.0/24".parse().unwrap(),
        ];
        let taken: BTreeSet<_> = [Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1)].into();
        let a = assign_ipv4(&pools, &taken, node(77)).unwrap();
        assert!(pools[1].contains(&a));
    }

    #[test]
    fn subnets_avoid_everything_forbidden() {
        let pool: Ipv4Net = "172.28.0.0/16".parse().unwrap();
        let forbidden: Vec<Ipv4Net> = vec![
            "172.28.0.0/24".parse().unwrap(),
            "172.28.1.128/25".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert_eq!(
            assign_subnet(pool, 24, &forbidden).unwrap().to_string(),
            "172.28.2.0/24"
        );
        assert_eq!(
            assign_subnet(pool, 25, &forbidden).unwrap().to_string(),
            "172.28.1.0/25"
        );
        // A forbidden supernet covering the pool leaves nothing.
        let all: Vec<Ipv4Net> = vec!["172.0.0.0/8".parse().unwrap()];
        assert!(assign_subnet(pool, 24, &all).is_err());
        assert!(
            assign_subnet(pool, 15, &[]).is_err(),
            "longer than the pool"
        );
    }

    fn reference_subnet(pool: Ipv4Net, prefix: u8, forbidden: &[Ipv4Net]) -> Option<Ipv4Net> {
        pool.subnets(prefix).ok()?.find(|c| {
            forbidden
                .iter()
                .all(|f| !overlaps(&IpNet::V4(*c), &IpNet::V4(*f)))
        })
    }

    proptest! {
        #[test]
        fn subnet_matches_reference(
            prefix in 20u8..=28,
            forbidden in proptest::collection::vec((0u32..(1 << 16), 16u8..=30), 0..40),
        ) {
            let pool: Ipv4Net = "172.28.0.0/16".parse().unwrap();
            let forbidden: Vec<Ipv4Net> = forbidden
                .into_iter()
                .map(|(low, len)| Ipv4Net::new(Ipv4Addr::from(0xac1c_0000 | low), len).unwrap().trunc())
                .collect();
            prop_assert_eq!(assign_subnet(pool, prefix, &forbidden).ok(), reference_subnet(pool, prefix, &forbidden));
        }

        #[test]
        fn addresses_are_unique_and_inside_the_pool(ids in proptest::collection::vec(1u64..(1 << 39), 1..80)) {
            let pools: Vec<Ipv4Net> = vec!["10.147.17.0/25".parse().unwrap()];
            let mut taken = BTreeSet::new();
            for (i, id) in ids.iter().enumerate() {
                match assign_ipv4(&pools, &taken, node(*id)) {
                    Ok(a) => {
                        prop_assert!(pools[0].contains(&a));
                        prop_assert!(a != pools[0].network() && a != pools[0].broadcast());
                        prop_assert!(taken.insert(a), "duplicate {}", a);
                    }
                    Err(_) => prop_assert_eq!(i, 126, "exhausted early"),
                }
            }
        }
    }
}

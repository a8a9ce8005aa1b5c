//! What changed between two revisions of a network config.
//!
//! The node applies a new revision as a diff: the kernel side adds and removes only the
//! routes and addresses that changed, the peer table tears down only removed members.

use super::{ManagedRoute, NetworkConfig};
use crate::NodeId;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Members authorized in `new` and not in `old`.
    pub members_added: Vec<NodeId>,
    /// Members listed in `old` that are gone (deauthorized or deleted): tear their sessions down.
    pub members_removed: Vec<NodeId>,
    /// Members in both whose keys, addresses, subnet, name or endpoints changed.
    pub members_changed: Vec<NodeId>,
    pub routes_added: Vec<ManagedRoute>,
    pub routes_removed: Vec<ManagedRoute>,
    /// Name, MTU, pools or address modes changed.
    pub settings_changed: bool,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Compares two canonical configs in one merge pass over their sorted lists.
pub fn diff(old: &NetworkConfig, new: &NetworkConfig) -> ConfigDiff {
    let mut d = ConfigDiff {
        settings_changed: old.name != new.name
            || old.mtu != new.mtu
            || old.sixplane != new.sixplane
            || old.rfc4193 != new.rfc4193
            || old.v4_pools != new.v4_pools
            || old.container_pool != new.container_pool,
        ..ConfigDiff::default()
    };
    let (mut a, mut b) = (old.members.iter().peekable(), new.members.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(x), None) => {
                d.members_removed.push(x.node_id);
                a.next();
            }
            (None, Some(y)) => {
                d.members_added.push(y.node_id);
                b.next();
            }
            (Some(x), Some(y)) => match x.node_id.cmp(&y.node_id) {
                std::cmp::Ordering::Less => {
                    d.members_removed.push(x.node_id);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    d.members_added.push(y.node_id);
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if x != y {
                        d.members_changed.push(x.node_id);
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    d.routes_removed = old
        .routes
        .iter()
        .filter(|r| new.routes.binary_search(r).is_err())
        .copied()
        .collect();
    d.routes_added = new
        .routes
        .iter()
        .filter(|r| old.routes.binary_search(r).is_err())
        .copied()
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample;

    #[test]
    fn identical_configs_have_an_empty_diff() {
        let (cfg, _) = sample(3);
        assert!(diff(&cfg, &cfg).is_empty());
    }

    #[test]
    fn reports_members_routes_and_settings() {
        let (old, _) = sample(3);
        let mut new = old.clone();
        let removed = new.members.remove(0).node_id;
        new.members[0].endpoints.clear();
        let changed = new.members[0].node_id;
        let (extra, _) = sample(1);
        let added = extra.members[0].node_id;
        new.members.push(extra.members[0].clone());
        let route = ManagedRoute {
            target: "10.9.0.0/16".parse().unwrap(),
            via: changed,
        };
        new.routes = vec![route];
        new.mtu = 1400;
        new.canonicalize();
        let d = diff(&old, &new);
        assert_eq!(d.members_removed, vec![removed]);
        assert_eq!(d.members_changed, vec![changed]);
        assert_eq!(d.members_added, vec![added]);
        assert_eq!(d.routes_added, vec![route]);
        assert_eq!(d.routes_removed, old.routes);
        assert!(d.settings_changed);
    }
}

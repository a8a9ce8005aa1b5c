//! Fixtures shared by the crate's unit tests.

use meshd_proto::{Identity, NetworkId, NetworkKey};

use crate::state::{Command, ControllerState, NetworkSpec};

/// A network created from a fixed key seed: small IPv4 pool (six hosts), a container pool
/// with four /24s, both IPv6 modes on.
pub(crate) fn spec(seed: u8) -> NetworkSpec {
    NetworkSpec {
        key_seed: [seed; 32],
        name: format!("net-{seed}"),
        v4_pools: vec!["10.147.17.0/29".parse().expect("valid pool")],
        container_pool: "172.28.0.0/22".parse().expect("valid pool"),
        container_prefix: 24,
        sixplane: true,
        rfc4193: true,
        mtu: 1420,
        at_ms: 1,
    }
}

/// The id of the network [`spec`] creates for `seed`.
pub(crate) fn nwid(seed: u8) -> NetworkId {
    NetworkKey::from_seed(&[seed; 32])
        .expect("any seed is valid")
        .network_id()
}

/// `identity` joins `network` and is authorized, as a node and an admin would.
pub(crate) fn authorized_member(
    state: &mut ControllerState,
    network: NetworkId,
    identity: &Identity,
) {
    let join = Command::MemberJoin {
        network,
        node: identity.node_id(),
        identity: *identity.public(),
        physical: None,
        local: vec![],
        at_ms: 2,
    };
    let authorize = Command::Authorize {
        network,
        node: identity.node_id(),
        at_ms: 3,
    };
    for cmd in [join, authorize] {
        state
            .apply(&cmd)
            .expect("a fresh member of an existing network");
    }
}

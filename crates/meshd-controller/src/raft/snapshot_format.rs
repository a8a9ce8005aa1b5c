//! How a snapshot's data is spelled: a format tag, then postcard. Older formats are still
//! read, so that a replica upgraded in place starts from its snapshot instead of failing:
//! data without a tag is the first (members without relay and port-mapping flags), tag 2 the
//! second (no replica list), tag 3 the third (no IPv6 egress, delegated prefixes or backup
//! gateways).

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use super::{ReplicaId, ReplicaNode};
use crate::state::ControllerState;
use crate::state::legacy::{ControllerStateV1, ControllerStateV2, ControllerStateV3};

/// Untagged data starts with an `Option` tag (0 or 1), never with this.
const TAG: &[u8; 6] = b"MSNAP\x04";
/// The third format: no IPv6 egress, delegated prefixes or backup gateways.
const TAG_V3: &[u8; 6] = b"MSNAP\x03";
/// The second format: the state without its replica list.
const TAG_V2: &[u8; 6] = b"MSNAP\x02";

/// A snapshot's data: self-describing, so a snapshot file alone tells what it contains.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotData<S> {
    pub last_applied: Option<LogId<ReplicaId>>,
    pub membership: StoredMembership<ReplicaId, ReplicaNode>,
    pub state: S,
}

pub(super) fn encode(data: &SnapshotData<&ControllerState>) -> Result<Vec<u8>, postcard::Error> {
    let mut out = TAG.to_vec();
    out.extend(postcard::to_allocvec(data)?);
    Ok(out)
}

pub(super) fn decode(bytes: &[u8]) -> Result<SnapshotData<ControllerState>, postcard::Error> {
    if let Some(rest) = bytes.strip_prefix(TAG_V3) {
        let old: SnapshotData<ControllerStateV3> = postcard::from_bytes(rest)?;
        return Ok(SnapshotData {
            last_applied: old.last_applied,
            membership: old.membership,
            state: old.state.into(),
        });
    }
    if let Some(rest) = bytes.strip_prefix(TAG_V2) {
        let old: SnapshotData<ControllerStateV2> = postcard::from_bytes(rest)?;
        return Ok(SnapshotData {
            last_applied: old.last_applied,
            membership: old.membership,
            state: old.state.into(),
        });
    }
    match bytes.strip_prefix(TAG) {
        Some(rest) => postcard::from_bytes(rest),
        None => {
            let old: SnapshotData<ControllerStateV1> = postcard::from_bytes(bytes)?;
            Ok(SnapshotData {
                last_applied: old.last_applied,
                membership: old.membership,
                state: old.state.into(),
            })
        }
    }
}

/// The state a snapshot holds, for the fuzz target (its framing types are private).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_state(bytes: &[u8]) -> Option<ControllerState> {
    decode(bytes).ok().map(|d| d.state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;
    use crate::test_support::{nwid, spec};

    /// The first format, as replicas wrote it: the current state minus the member flags.
    #[derive(Serialize)]
    struct MemberV1<'a> {
        node_id: meshd_proto::NodeId,
        identity: meshd_proto::PublicIdentity,
        name: &'a str,
        authorized: bool,
        ipv4: &'a [std::net::Ipv4Addr],
        container_subnet: Option<ipnet::Ipv4Net>,
        physical: Option<std::net::SocketAddr>,
        local: &'a [std::net::SocketAddr],
        created_ms: u64,
        last_authorized_ms: Option<u64>,
        last_deauthorized_ms: Option<u64>,
        last_seen_ms: Option<u64>,
    }

    /// A network as the second and third formats spelled it (tuples stand for structs:
    /// postcard writes both the same way), without routes.
    fn network_v3(net: &crate::state::Network) -> impl Serialize + '_ {
        assert!(net.routes.is_empty());
        let members: std::collections::BTreeMap<_, _> = net
            .members
            .values()
            .map(|m| {
                let member = (
                    (m.node_id, m.identity, &m.name, m.authorized, &m.ipv4),
                    (m.container_subnet, m.physical, &m.local, m.created_ms),
                    (m.last_authorized_ms, m.last_deauthorized_ms, m.last_seen_ms),
                    (m.relay, m.port_mapped),
                );
                (m.node_id, member)
            })
            .collect();
        (
            (net.id, net.key_seed, &net.name, net.revision, net.mtu),
            (net.sixplane, net.rfc4193, &net.v4_pools, net.container_pool),
            (net.container_prefix, &net.routes, members, net.created_ms),
        )
    }

    fn sample() -> ControllerState {
        let mut s = ControllerState::default();
        s.apply(&Command::CreateNetwork(spec(1))).unwrap();
        let id = meshd_proto::Identity::generate_unproven();
        s.apply(&Command::MemberJoin {
            network: nwid(1),
            node: id.node_id(),
            identity: *id.public(),
            physical: Some("192.0.2.7:9993".parse().unwrap()),
            local: vec![],
            at_ms: 5,
        })
        .unwrap();
        s.apply(&Command::Authorize {
            network: nwid(1),
            node: id.node_id(),
            at_ms: 6,
        })
        .unwrap();
        s
    }

    #[test]
    fn tagged_snapshots_round_trip() {
        let state = sample();
        let bytes = encode(&SnapshotData {
            last_applied: None,
            membership: StoredMembership::default(),
            state: &state,
        })
        .unwrap();
        assert!(bytes.starts_with(TAG));
        assert_eq!(decode(&bytes).unwrap().state, state);
    }

    #[test]
    fn second_format_snapshots_load_without_replicas() {
        let state = sample();
        let networks: std::collections::BTreeMap<_, _> = state
            .networks
            .iter()
            .map(|(id, n)| (*id, network_v3(n)))
            .collect();
        let mut bytes = TAG_V2.to_vec();
        bytes.extend(
            postcard::to_allocvec(&SnapshotData {
                last_applied: None,
                membership: StoredMembership::<ReplicaId, ReplicaNode>::default(),
                state: (&networks,),
            })
            .unwrap(),
        );
        assert_eq!(decode(&bytes).unwrap().state, state);
        // The third format: the same with the replica list.
        let replicas = vec![crate::state::ReplicaRecord {
            address: "10.0.0.9:9994".into(),
            key: [9; 32],
        }];
        let mut bytes = TAG_V3.to_vec();
        bytes.extend(
            postcard::to_allocvec(&SnapshotData {
                last_applied: None,
                membership: StoredMembership::<ReplicaId, ReplicaNode>::default(),
                state: (&networks, &replicas),
            })
            .unwrap(),
        );
        let loaded = decode(&bytes).unwrap().state;
        assert_eq!(loaded.networks, state.networks);
        assert_eq!(loaded.replicas, replicas);

        // And the replica list survives the current format.
        let mut with_replicas = state.clone();
        with_replicas
            .apply(&Command::SetReplicas {
                replicas: vec![crate::state::ReplicaRecord {
                    address: "10.0.0.1:9994".into(),
                    key: [4; 32],
                }],
            })
            .unwrap();
        // And so do egress, delegated prefixes and backup gateways.
        let (net, node) = (
            nwid(1),
            *with_replicas.networks[&nwid(1)]
                .members
                .keys()
                .next()
                .unwrap(),
        );
        for cmd in [
            Command::SetIpv6Egress {
                network: net,
                egress: meshd_proto::config::Ipv6Egress::Nat66,
            },
            Command::MemberDelegatedPrefix {
                network: net,
                node,
                prefix: Some("2001:db8:1:40::/60".parse().unwrap()),
            },
        ] {
            with_replicas.apply(&cmd).unwrap();
        }
        let bytes = encode(&SnapshotData {
            last_applied: None,
            membership: StoredMembership::default(),
            state: &with_replicas,
        })
        .unwrap();
        assert_eq!(decode(&bytes).unwrap().state, with_replicas);
    }

    #[test]
    fn first_format_snapshots_load_with_flags_off() {
        let state = sample();
        let net = state.networks.values().next().unwrap();
        let m = net.members.values().next().unwrap();
        // Spelled field by field as the first format did, tuples standing for structs
        // (postcard writes both the same way).
        let member = MemberV1 {
            node_id: m.node_id,
            identity: m.identity,
            name: &m.name,
            authorized: m.authorized,
            ipv4: &m.ipv4,
            container_subnet: m.container_subnet,
            physical: m.physical,
            local: &m.local,
            created_ms: m.created_ms,
            last_authorized_ms: m.last_authorized_ms,
            last_deauthorized_ms: m.last_deauthorized_ms,
            last_seen_ms: m.last_seen_ms,
        };
        let members: std::collections::BTreeMap<_, _> = [(m.node_id, member)].into();
        let network = (
            net.id,
            net.key_seed,
            &net.name,
            net.revision,
            net.mtu,
            net.sixplane,
            net.rfc4193,
            &net.v4_pools,
            net.container_pool,
            net.container_prefix,
            &net.routes,
            members,
            net.created_ms,
        );
        let networks: std::collections::BTreeMap<_, _> = [(net.id, network)].into();
        let old = SnapshotData {
            last_applied: None,
            membership: StoredMembership::<ReplicaId, ReplicaNode>::default(),
            state: (networks,),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        let loaded = decode(&bytes).unwrap().state;
        assert_eq!(loaded, state);
        // Garbage is an error, not an empty state.
        assert!(decode(&[7, 7, 7]).is_err());
        let mut tagged = TAG.to_vec();
        tagged.push(9);
        assert!(decode(&tagged).is_err());
    }
}

//! The entry point of the cargo-fuzz target `controller` (feature `fuzzing`): what a replica
//! parses from outside, fed arbitrary bytes. The first byte picks the parser:
//! 0 `POST /v1/networks`, 1 `PATCH /v1/networks/{nwid}`, 2 `POST .../routes`,
//! 3 `PATCH .../members/{node}` (admin API JSON, each turned into its command and applied);
//! 4 a Raft log entry's command (postcard), applied; 5 a Raft append or vote body;
//! 6 a snapshot; 7 `replica.json`. Nothing may panic, and an applied command that is refused
//! must leave the state as it was.

use openraft::raft::{AppendEntriesRequest, VoteRequest};

use crate::api::requests::{AddRoute, CreateNetwork, UpdateMember, UpdateNetwork};
use crate::raft::TypeConfig;
use crate::service::ReplicaSettings;
use crate::state::{Command, ControllerState, NetworkSpec};
use meshd_proto::{Identity, NetworkId, NetworkKey, NodeId};

const SEED: [u8; 32] = [7; 32];

fn network() -> NetworkId {
    NetworkKey::from_seed(&SEED)
        .expect("any seed is valid")
        .network_id()
}

/// A state with one network and one authorized member, built once (a member's node id costs
/// a memory-hard hash) and cloned for each input.
fn state() -> (ControllerState, NodeId) {
    static STATE: std::sync::OnceLock<(ControllerState, NodeId)> = std::sync::OnceLock::new();
    STATE.get_or_init(build_state).clone()
}

fn build_state() -> (ControllerState, NodeId) {
    let mut s = ControllerState::default();
    let spec = NetworkSpec {
        key_seed: SEED,
        name: "fuzz".into(),
        v4_pools: vec!["10.147.17.0/24".parse().expect("a pool")],
        container_pool: "172.28.0.0/22".parse().expect("a pool"),
        container_prefix: 24,
        sixplane: true,
        rfc4193: true,
        mtu: 1420,
        at_ms: 1,
    };
    let _ = s.apply(&Command::CreateNetwork(spec));
    let member = Identity::from_secrets(&[9; 64]).expect("fixed secrets make an identity");
    let node = member.node_id();
    let _ = s.apply(&Command::MemberJoin {
        network: network(),
        node: member.node_id(),
        identity: *member.public(),
        physical: Some("192.0.2.9:9993".parse().expect("an address")),
        local: vec![],
        at_ms: 2,
    });
    let _ = s.apply(&Command::Authorize {
        network: network(),
        node,
        at_ms: 3,
    });
    (s, node)
}

/// Applies `cmd`; a refusal changes nothing.
fn apply(s: &mut ControllerState, cmd: &Command) {
    let before = s.clone();
    if s.apply(cmd).is_err() {
        assert_eq!(*s, before, "a refused command changed the state");
    }
    // Whatever was applied still signs, and the admin's views of it (the mesh picture
    // from members' reports, the metrics page) still render.
    for net in s.networks.values() {
        let _ = net.signed_config();
        let _ = crate::api::views::MeshView::of(net, 10);
        for m in net.members.values() {
            let _ = crate::api::views::MemberView::of(net, m, 10);
        }
    }
    let mut page = meshd_io::metrics::Exposition::new();
    crate::replica::metrics::controller_metrics(&mut page, s, 10);
}

pub fn controller_input(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (mut s, node) = state();
    match selector % 8 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<CreateNetwork>(body)
                && let Ok(spec) = req.to_spec([8; 32], 5)
            {
                apply(&mut s, &Command::CreateNetwork(spec));
            }
        }
        1 => {
            if let Ok(req) = serde_json::from_slice::<UpdateNetwork>(body) {
                for cmd in req.to_commands(network()) {
                    apply(&mut s, &cmd);
                }
            }
        }
        2 => {
            if let Ok(req) = serde_json::from_slice::<AddRoute>(body)
                && let Ok(cmd) = req.to_command(network())
            {
                apply(&mut s, &cmd);
            }
        }
        3 => {
            if let Ok(req) = serde_json::from_slice::<UpdateMember>(body)
                && let Ok(Some(cmd)) = req.to_command(network(), node, 5)
            {
                apply(&mut s, &cmd);
            }
        }
        4 => {
            if let Ok(cmd) = postcard::from_bytes::<Command>(body) {
                apply(&mut s, &cmd);
            }
        }
        5 => {
            let _ = crate::raft::network::decode::<AppendEntriesRequest<TypeConfig>>(body);
            let _ = crate::raft::network::decode::<VoteRequest<u64>>(body);
        }
        6 => {
            let _ = crate::raft::snapshot_format::decode_state(body);
        }
        _ => {
            if let Ok(settings) =
                serde_json::from_str::<ReplicaSettings>(&String::from_utf8_lossy(body))
            {
                let _ = settings.relay_limits();
                let _ = settings.api_url();
                let _ = settings.advertise_address();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parser_runs_on_a_valid_input() {
        let inputs: [(u8, &[u8]); 5] = [
            (0, br#"{"name":"x","v4_pools":["10.1.0.0/24"]}"#),
            (1, br#"{"mtu":1400}"#),
            (2, br#"{"target":"192.168.9.0/24","via":"10.147.17.1"}"#),
            (3, br#"{"name":"web"}"#),
            (
                7,
                br#"{"id":1,"listen":"127.0.0.1:9994","api_listen":"127.0.0.1:9995"}"#,
            ),
        ];
        for (selector, body) in inputs {
            let mut data = vec![selector];
            data.extend_from_slice(body);
            controller_input(&data);
        }
        let (_, node) = state();
        let report = Command::MemberReport {
            network: network(),
            node,
            hostname: "web-1".into(),
            version: "0.2.0".into(),
            peers: vec![],
            at_ms: 9,
        };
        for cmd in [report, Command::DeleteNetwork { network: network() }] {
            let mut data = vec![4];
            data.extend(postcard::to_allocvec(&cmd).unwrap());
            controller_input(&data);
        }
        for len in 0..4 {
            controller_input(&[6; 4][..len]);
        }
    }
}

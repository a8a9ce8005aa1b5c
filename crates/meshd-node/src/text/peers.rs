//! `meshd peers` for people: one row per peer and network, ZeroTier `peers` style.

use meshd_io::text::table;

use crate::daemon::api::{PeerPath, StatusView};
use crate::text::status::duration;
use crate::text::units::bytes;

/// One row per peer and network, ZeroTier `peers` style.
pub fn render(s: &StatusView) -> String {
    if s.peers.is_empty() {
        return if s.dataplane_attached {
            "no peers\n".to_owned()
        } else {
            "no peers: the data plane is not attached\n".to_owned()
        };
    }
    let dash = || "-".to_owned();
    table(
        &[
            "NODE",
            "NAME",
            "NETWORK",
            "PATH",
            "ENDPOINT",
            "RTT",
            "HANDSHAKE",
            "RX",
            "TX",
        ],
        s.peers
            .iter()
            .map(|p| {
                vec![
                    p.node_id.to_string(),
                    if p.name.is_empty() {
                        dash()
                    } else {
                        p.name.clone()
                    },
                    p.network.to_string(),
                    match (p.path, p.direct) {
                        (PeerPath::Direct, Some(kind)) => format!("DIRECT {}", kind.as_str()),
                        (PeerPath::Direct, None) => "DIRECT".to_owned(),
                        (PeerPath::Relay, _) => "RELAY".to_owned(),
                        (PeerPath::None, _) => "NONE".to_owned(),
                    },
                    match (p.path, p.relay, p.endpoint) {
                        (PeerPath::Relay, Some(relay), _) => match p.relay_member {
                            Some(member) => format!("via member {} {relay}", name_of(s, member)),
                            None => format!("via {relay}"),
                        },
                        (_, _, endpoint) => endpoint.map_or_else(dash, |e| e.to_string()),
                    },
                    p.rtt_ms.map_or_else(dash, |r| format!("{r:.1}ms")),
                    p.last_handshake_s
                        .map_or_else(dash, |h| format!("{} ago", duration(h))),
                    bytes(p.rx_bytes),
                    bytes(p.tx_bytes),
                ]
            })
            .collect(),
    )
}

/// A peer's member name, else its node id.
fn name_of(s: &StatusView, node: meshd_proto::NodeId) -> String {
    s.peers
        .iter()
        .find(|p| p.node_id == node && !p.name.is_empty())
        .map_or_else(|| node.to_string(), |p| p.name.clone())
}

#[cfg(test)]
mod tests {
    use crate::daemon::api::PeerView;

    use super::*;

    #[test]
    fn table_of_peers() {
        let mut s = StatusView {
            delegated_prefix: None,
            node_id: "89e92ceee5".parse().unwrap(),
            key_fingerprint: String::new(),
            hostname: String::new(),
            version: "0.1.0".into(),
            online: true,
            controller: None,
            controllers_unreachable_for_s: None,
            dataplane_attached: true,
            controllers: vec![],
            networks: vec![],
            peers: vec![],
            forwarding: Default::default(),
            packet_workers: vec![],
            public_endpoint: None,
            nat: None,
            relays: vec![],
            port_mapping: None,
        };
        assert_eq!(render(&s), "no peers\n");
        s.peers.push(PeerView {
            node_id: "1a2b3c4d5e".parse().unwrap(),
            network: "8056c2e21c000001".parse().unwrap(),
            name: "host-b".into(),
            path: PeerPath::Direct,
            relay: None,
            relay_member: None,
            direct: None,
            path_age_s: None,
            endpoint: Some("192.0.2.11:9993".parse().unwrap()),
            candidates: vec!["192.0.2.11:9993".parse().unwrap()],
            path_changes: 0,
            path_scan: None,
            rtt_ms: Some(0.42),
            last_handshake_s: Some(12),
            rx_bytes: 1_234_567,
            tx_bytes: 512,
            rx_packets: 0,
            tx_packets: 0,
            handshakes: 0,
            addresses: vec![],
        });
        let text = render(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("NODE        NAME    NETWORK"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "1a2b3c4d5e  host-b  8056c2e21c000001  DIRECT  192.0.2.11:9993  0.4ms  12s ago    1.2 MB  512 B"
        );
        // A direct path says what kind it is.
        s.peers[0].direct = Some(crate::daemon::api::DirectKind::Punched);
        assert!(
            render(&s).contains("DIRECT punched  192.0.2.11:9993"),
            "{}",
            render(&s)
        );
        // A relayed peer shows the relay its traffic goes through.
        let mut relayed = s.peers[0].clone();
        relayed.path = PeerPath::Relay;
        relayed.relay = Some("198.51.100.1:9995".parse().unwrap());
        s.peers = vec![relayed];
        let text = render(&s);
        assert!(text.contains("RELAY  via 198.51.100.1:9995"), "{text}");
        // Through a member: named.
        let mut member = s.peers[0].clone();
        member.node_id = "0a0b0c0d0e".parse().unwrap();
        member.name = "vps-relay".into();
        member.path = PeerPath::Direct;
        member.direct = Some(crate::daemon::api::DirectKind::PortMapped);
        s.peers[0].relay_member = Some(member.node_id);
        s.peers[0].relay = Some("203.0.113.5:9993".parse().unwrap());
        s.peers.push(member);
        let text = render(&s);
        assert!(
            text.contains("RELAY               via member vps-relay 203.0.113.5:9993"),
            "{text}"
        );
        assert!(text.contains("DIRECT port-mapped"), "{text}");
    }
}

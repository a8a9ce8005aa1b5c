//! What nodes report of their networks ([`NodeMessage::Report`](meshd_channel::NodeMessage)):
//! checked, paced and turned into the command that records it.
//!
//! Reports go through the replicated log, so every replica's panel shows every member's
//! paths whichever replica the node is connected to. A node sends one every
//! [`REPORT_INTERVAL`](meshd_channel::protocol::REPORT_INTERVAL) and when a path changes; a connection writes at most one per
//! [`MIN_REPORT_GAP`] per network, so a node that sends more only loses its extras.

use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use meshd_channel::protocol::{MAX_HOSTNAME_LEN, MAX_REPORT_PEERS, Report, cut};
use meshd_proto::{NetworkId, NodeId};

use crate::controller::Controller;
use crate::state::{Command, printable};

/// The least time between two reports a connection writes for one network.
pub(super) const MIN_REPORT_GAP: Duration = Duration::from_millis(1500);

/// Whether a report may be written now, given when the last one of its network was.
pub(super) fn due(last_written: Option<Instant>, now: Instant) -> bool {
    last_written.is_none_or(|t| now.saturating_duration_since(t) >= MIN_REPORT_GAP)
}

/// The command that records `report` from `node` (a node of `version`), or why the report
/// breaks the protocol.
pub(super) fn command(
    node: NodeId,
    version: &str,
    report: Report,
    at_ms: u64,
) -> Result<Command, String> {
    if report.peers.len() > MAX_REPORT_PEERS {
        return Err(format!(
            "a report of {} peers; at most {MAX_REPORT_PEERS}",
            report.peers.len()
        ));
    }
    let bounded = Report::bounded(report.network, &printable(&report.hostname), report.peers);
    let mut peers = bounded.peers;
    // One entry per peer, and never the node itself: the picture draws pairs.
    peers.retain(|p| p.peer != node);
    peers.sort_by_key(|p| p.peer);
    peers.dedup_by_key(|p| p.peer);
    Ok(Command::MemberReport {
        network: bounded.network,
        node,
        hostname: bounded.hostname.trim().to_owned(),
        version: cut(&printable(version), MAX_HOSTNAME_LEN).to_owned(),
        peers,
        at_ms,
    })
}

/// Records the delegated prefix a report names when it differs from the member's (not
/// paced: a prefix change moves the member's container route on every peer). A prefix the
/// state refuses (overlapping, not global) is logged; the member keeps its old one.
pub(super) async fn record_prefix<C: Controller>(
    controller: &C,
    node: NodeId,
    network: NetworkId,
    prefix: Option<Ipv6Net>,
) {
    let recorded = controller.read(|s| {
        s.network(network)
            .and_then(|n| n.members.get(&node))
            .map(|m| m.delegated_prefix)
    });
    if recorded.is_none_or(|r| r == prefix) {
        return;
    }
    let cmd = Command::MemberDelegatedPrefix {
        network,
        node,
        prefix,
    };
    match controller.write(cmd).await {
        Ok(_) => tracing::info!(%node, %network, ?prefix, "delegated prefix recorded"),
        Err(e) => tracing::warn!(%node, %network, ?prefix, error = %e, "delegated prefix refused"),
    }
}

#[cfg(test)]
mod tests {
    use meshd_channel::protocol::{PathKind, PeerPathReport};
    use meshd_proto::NetworkId;

    use super::*;

    fn node(n: u64) -> NodeId {
        NodeId::new(0x10_0000_0000 + n).unwrap()
    }

    #[test]
    fn reports_are_paced_per_network() {
        let t0 = Instant::now();
        assert!(due(None, t0));
        assert!(!due(Some(t0), t0 + Duration::from_millis(200)));
        assert!(due(Some(t0), t0 + MIN_REPORT_GAP));
    }

    #[test]
    fn a_report_is_recorded_bounded_and_without_the_node_itself() {
        let net = NetworkId::from_u64(0x8056_c2e2_1c00_0001);
        let p = |n, path| PeerPathReport {
            peer: node(n),
            path,
            rtt_us: Some(900),
        };
        let report = Report {
            network: net,
            hostname: format!(" web\u{202e}1{} ", "x".repeat(100)),
            peers: vec![
                p(2, PathKind::Lan),
                p(1, PathKind::Relay),
                p(2, PathKind::None),
                p(9, PathKind::Lan),
            ],
            delegated_prefix: None,
        };
        let Command::MemberReport {
            hostname,
            peers,
            version,
            ..
        } = command(node(9), "0.3.0\n", report, 5).unwrap()
        else {
            panic!("a MemberReport");
        };
        assert!(hostname.starts_with("web?1x"), "{hostname}");
        assert!(hostname.len() <= 64);
        assert_eq!(version, "0.3.0?");
        let ids: Vec<NodeId> = peers.iter().map(|p| p.peer).collect();
        assert_eq!(ids, [node(1), node(2)]);

        let flood = Report {
            network: net,
            hostname: String::new(),
            peers: vec![p(1, PathKind::Lan); MAX_REPORT_PEERS + 1],
            delegated_prefix: None,
        };
        assert!(command(node(9), "0.3.0", flood, 5).is_err());
    }
}

//! What the node tells its controllers about each network it joined
//! ([`meshd_channel::protocol::Report`]): its host name, the member's default name, and
//! how it reaches each peer, which the admin's picture of the mesh is drawn from.

use meshd_channel::protocol::{PathKind, PeerPathReport, Report};
use meshd_proto::NetworkId;

use super::Daemon;
use super::api::{DirectKind, PeerPath, peer_view};

impl Daemon {
    /// This node's report of `network` as of now: no peers while the network is not up.
    pub(super) fn report(&self, network: NetworkId) -> Report {
        let (config, up) = {
            let inner = self.lock();
            inner
                .networks
                .get(&network)
                .map_or((None, false), |n| (n.config.clone(), n.up))
        };
        let peers = match (config, up.then(|| self.dataplane.status(network)).flatten()) {
            (Some(cfg), Some(dp)) => dp
                .peers
                .iter()
                .map(|p| {
                    let view = peer_view(network, &cfg, &dp.peers, p);
                    PeerPathReport {
                        peer: p.node_id,
                        path: path_kind(view.path, view.direct),
                        rtt_us: p
                            .rtt
                            .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut report = Report::bounded(network, &self.hostname, peers);
        report.delegated_prefix = self.delegated.prefix();
        report
    }
}

fn path_kind(path: PeerPath, direct: Option<DirectKind>) -> PathKind {
    match (path, direct) {
        (PeerPath::None, _) => PathKind::None,
        (PeerPath::Relay, _) => PathKind::Relay,
        (PeerPath::Direct, Some(DirectKind::Lan)) => PathKind::Lan,
        (PeerPath::Direct, Some(DirectKind::Punched)) => PathKind::Punched,
        (PeerPath::Direct, Some(DirectKind::PortMapped)) => PathKind::PortMapped,
        (PeerPath::Direct, Some(DirectKind::Public) | None) => PathKind::Public,
    }
}

/// The host's name as the kernel has it (this UTS namespace's), or empty when unknown.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_has_its_kind() {
        assert_eq!(path_kind(PeerPath::None, None), PathKind::None);
        assert_eq!(path_kind(PeerPath::Relay, None), PathKind::Relay);
        assert_eq!(
            path_kind(PeerPath::Direct, Some(DirectKind::Lan)),
            PathKind::Lan
        );
        assert_eq!(
            path_kind(PeerPath::Direct, Some(DirectKind::PortMapped)),
            PathKind::PortMapped
        );
        assert_eq!(path_kind(PeerPath::Direct, None), PathKind::Public);
    }
}

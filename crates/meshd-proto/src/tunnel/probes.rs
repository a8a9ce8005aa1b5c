//! Probes and path scans: the RTT probe every [`PROBE_INTERVAL`], and the path probes of the
//! scans [`paths`] describes. Both are `TYPE_PROBE` messages sealed on the session; their
//! plaintext is a tag byte and a probe id.

use std::time::{Duration, Instant};

use super::paths::{self, PathScan};
use super::{DropReason, RELAYED_SCAN_INTERVAL, Tunnel, Via};
use crate::NodeId;
use crate::wire;

/// Interval of the authenticated RTT probes on an established session; they double as
/// keepalives that hold NAT mappings open.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
const PROBE_REQUEST: u8 = 1;
const PROBE_REPLY: u8 = 2;
const PROBE_LEN: usize = 9;

impl Tunnel {
    pub(super) fn on_probe(
        &mut self,
        now: Instant,
        back: Via,
        peer_id: NodeId,
        body: &[u8],
    ) -> Result<(), DropReason> {
        if body.len() != PROBE_LEN {
            return Err(DropReason::BadProbe);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..]);
        let id = u64::from_le_bytes(id);
        match body[0] {
            PROBE_REQUEST => {
                let reply = probe_body(PROBE_REPLY, id);
                self.send_control(now, peer_id, wire::TYPE_PROBE, &reply);
                Ok(())
            }
            // Answered on the path it came by, whatever our endpoint is.
            paths::PATH_REQUEST => {
                let reply = probe_body(paths::PATH_REPLY, id);
                self.send_control_to(now, peer_id, Some(back), wire::TYPE_PROBE, &reply);
                Ok(())
            }
            PROBE_REPLY => {
                let peer = self
                    .peers
                    .get_mut(&peer_id)
                    .ok_or(DropReason::UnknownIndex)?;
                match peer.outstanding_probe {
                    Some((sent_id, sent_at)) if sent_id == id => {
                        peer.rtt = Some(now.saturating_duration_since(sent_at));
                        peer.outstanding_probe = None;
                        Ok(())
                    }
                    _ => Err(DropReason::BadProbe),
                }
            }
            // A reply after its scan ended (a path slower than the scan waits) is no fault.
            paths::PATH_REPLY => {
                let scan = self.peers.get_mut(&peer_id).and_then(|p| p.scan.as_mut());
                if let Some(scan) = scan
                    && scan.answered(id, now)
                    && scan.is_done(now)
                {
                    self.finish_path_scan(now, peer_id);
                }
                Ok(())
            }
            _ => Err(DropReason::BadProbe),
        }
    }

    /// Starts a scan of every known address of `peer_id` (see [`paths`]), its first round
    /// now; [`Tunnel::handle_timeout`] sends the others.
    pub(super) fn start_path_scan(&mut self, now: Instant, peer_id: NodeId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        // Relayed: probe even a single address, and soon again: it may be a hole to punch.
        let relayed = !peer.direct_alive(now) && self.relays.for_peer(peer).is_some();
        let (interval, min) = if relayed {
            (RELAYED_SCAN_INTERVAL, 1)
        } else {
            (paths::SCAN_INTERVAL, 2)
        };
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.next_scan = Some(now + interval);
        let destinations = paths::scan_destinations(peer.endpoint, &peer.known(), min);
        if destinations.is_empty() {
            return;
        }
        let moved = peer.rx_bytes + peer.tx_bytes;
        peer.scan = Some(PathScan::new(now, destinations, moved));
        self.send_path_round(now, peer_id);
    }

    /// One path probe to each address `peer_id`'s scan covers.
    pub(super) fn send_path_round(&mut self, now: Instant, peer_id: NodeId) {
        let Some(scan) = self.peers.get(&peer_id).and_then(|p| p.scan.as_ref()) else {
            return;
        };
        let destinations = scan.destinations.clone();
        let mut ids = Vec::with_capacity(destinations.len());
        for destination in destinations {
            self.probe_seq += 1;
            let id = self.probe_seq;
            ids.push(id);
            let body = probe_body(paths::PATH_REQUEST, id);
            let to = Some(Via::Direct(destination));
            self.send_control_to(now, peer_id, to, wire::TYPE_PROBE, &body);
        }
        if let Some(scan) = self.peers.get_mut(&peer_id).and_then(|p| p.scan.as_mut()) {
            scan.sent_round(now, &ids);
        }
    }

    /// Moves `peer_id` to the path its scan found fastest, unless traffic to the peer made
    /// the measurement unfair to the endpoint (see [`paths::LOADED`]).
    pub(super) fn finish_path_scan(&mut self, now: Instant, peer_id: NodeId) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(scan) = peer.scan.take() else {
            return;
        };
        let measured = scan.times();
        let times = paths::answered(&measured);
        let endpoint_answered = times.iter().any(|(a, _)| Some(*a) == peer.endpoint);
        let moved = (peer.rx_bytes + peer.tx_bytes).saturating_sub(scan.moved_before);
        let under_load = moved > paths::LOADED;
        peer.last_scan = Some(paths::FinishedScan {
            at: now,
            under_load,
            paths: measured,
        });
        if endpoint_answered && under_load {
            peer.endpoint_heard = Some(now);
            peer.next_scan = Some(now + paths::LOADED_RETRY);
            return;
        }
        if let Some(choice) = paths::choose(&times, peer.endpoint) {
            if peer.endpoint != Some(choice.endpoint) {
                peer.endpoint = Some(choice.endpoint);
                peer.path_changes += 1;
            }
            // Its reply just came back.
            peer.endpoint_heard = Some(now);
            peer.slower = choice.slower;
        }
    }

    pub(super) fn send_probe(&mut self, now: Instant, peer_id: NodeId) {
        self.probe_seq += 1;
        let id = self.probe_seq;
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.outstanding_probe = Some((id, now));
            peer.last_probe = Some(now);
        }
        self.send_control(
            now,
            peer_id,
            wire::TYPE_PROBE,
            &probe_body(PROBE_REQUEST, id),
        );
    }
}

/// The plaintext of a probe message: its tag, then the probe id.
fn probe_body(tag: u8, id: u64) -> [u8; PROBE_LEN] {
    let mut body = [0u8; PROBE_LEN];
    body[0] = tag;
    body[1..].copy_from_slice(&id.to_le_bytes());
    body
}

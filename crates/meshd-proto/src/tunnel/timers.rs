//! Timers: what [`Tunnel::handle_timeout`] runs for the whole tunnel and for each peer.

use std::time::{Duration, Instant};

use super::peer::retire;
use super::{Event, GATEWAY_PROBE_INTERVAL, PROBE_INTERVAL, Tunnel, Via};
use crate::NodeId;
use crate::handshake::{self, CookieSecret};
use crate::session::{self, Session};
use crate::wire;

/// How often [`Tunnel::handle_timeout`] wants to run.
pub const TIMER_TICK: Duration = Duration::from_millis(100);

impl Tunnel {
    /// When [`Tunnel::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Instant {
        self.last_tick + TIMER_TICK
    }

    /// Runs the timers: handshake retransmission and give-up, session expiry, keepalives,
    /// probes, cookie secret rotation.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_tick = now;
        if now.saturating_duration_since(self.cookie_secret_born)
            >= handshake::COOKIE_SECRET_LIFETIME
        {
            self.cookie_secret = CookieSecret::random();
            self.cookie_secret_born = now;
        }
        self.refresh_relays(now);
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.peer_timers(now, id);
        }
        self.choose_gateways(now);
    }

    fn peer_timers(&mut self, now: Instant, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let via = peer.via(&self.relays, now);
        if via != peer.last_via {
            // A direct path that follows a relayed one was opened through the NATs.
            peer.punched = match via {
                Some(Via::Relay(_)) | None => false,
                Some(Via::Direct(_)) => {
                    peer.punched || peer.met_via_relay || peer.last_via.is_some_and(Via::is_relay)
                }
            };
            peer.last_via = via;
            peer.via_since = Some(now);
        }
        let mut retransmit = false;
        if let Some(p) = &peer.pending {
            if now.saturating_duration_since(p.started_at) >= session::REKEY_ATTEMPT_TIME {
                let index = p.local_index;
                peer.pending = None;
                peer.queue.clear();
                self.by_index.remove(&index);
                self.events.push_back(Event::HandshakeGaveUp(id));
            } else if now.saturating_duration_since(p.sent_at) >= session::REKEY_TIMEOUT {
                retransmit = true;
            }
        }
        let expired = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.is_expired(now));
        if expired(&peer.previous) {
            retire(&mut self.by_index, peer.previous.take());
        }
        if expired(&peer.next) {
            retire(&mut self.by_index, peer.next.take());
        }
        if expired(&peer.current) {
            retire(&mut self.by_index, peer.current.take());
            self.events.push_back(Event::SessionExpired(id));
        }
        let has_session = peer.usable_session(now);
        let keepalive = has_session
            && peer.last_received.is_some_and(|r| {
                peer.last_sent.is_none_or(|s| s < r)
                    && now.saturating_duration_since(r) >= session::KEEPALIVE_TIMEOUT
            });
        let probe_interval = if peer.is_gateway {
            GATEWAY_PROBE_INTERVAL
        } else {
            PROBE_INTERVAL
        };
        let probe = has_session
            && peer
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= probe_interval);
        // WireGuard's rule: sent but heard nothing for KEEPALIVE + REKEY_TIMEOUT means the
        // session is dead on the other side (it restarted): handshake again.
        let peer_silent = has_session
            && peer.pending.is_none()
            && peer.unanswered_since.is_some_and(|t| {
                now.saturating_duration_since(t)
                    >= session::KEEPALIVE_TIMEOUT + session::REKEY_TIMEOUT
            });
        if peer_silent {
            peer.unanswered_since = None;
        }
        // A member relay is worth a session before anyone needs it: it is what relayed pairs
        // fall back on when no replica answers. So is a gateway: failover needs to know it
        // lives, and a session ready when traffic moves to it.
        let relay_idle =
            (peer.is_relay || peer.is_gateway) && !has_session && peer.pending.is_none();
        if retransmit || peer_silent || relay_idle {
            self.initiate(now, id);
        }
        if keepalive {
            self.send_control(now, id, wire::TYPE_DATA, &[]);
        }
        if probe {
            self.send_probe(now, id);
        }
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        match &peer.scan {
            Some(scan) if scan.round_due(now) => self.send_path_round(now, id),
            Some(scan) if scan.is_done(now) => self.finish_path_scan(now, id),
            Some(_) => {}
            None => {
                let due = peer.next_scan.is_none_or(|t| now >= t);
                if due && peer.usable_session(now) {
                    self.start_path_scan(now, id);
                }
            }
        }
    }
}

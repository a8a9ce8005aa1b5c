//! Which gateway a managed route with several gateways goes through: the most preferred one
//! that is alive.
//!
//! A gateway is alive while it has a session and answered within [`GATEWAY_ALIVE`]; the node
//! probes its gateways every [`GATEWAY_PROBE_INTERVAL`] (instead of every
//! [`super::PROBE_INTERVAL`]) and keeps a session with each even when no traffic needs one,
//! so a dead gateway is noticed within about three seconds and its replacement has a session
//! ready. A route leaves its gateway as soon as that is dead, for the most preferred alive
//! one. It goes back to a more preferred gateway only once that has been alive for
//! [`GATEWAY_HOLD`]: a gateway that flaps does not drag the traffic along.

use std::time::{Duration, Instant};

use super::Tunnel;
use crate::NodeId;

/// How often gateways are probed.
pub const GATEWAY_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A gateway that answered within this is alive.
pub const GATEWAY_ALIVE: Duration = Duration::from_millis(3_000);
/// How long a more preferred gateway must have been alive before traffic goes back to it.
pub const GATEWAY_HOLD: Duration = Duration::from_secs(5);

/// Picks the gateway for one route: `alive_for(i)` is how long gateway `i` has been alive
/// (`None`: dead). Returns the new index, or `in_use` when nothing should change.
pub fn choose(
    in_use: usize,
    gateways: usize,
    alive_for: impl Fn(usize) -> Option<Duration>,
) -> usize {
    if alive_for(in_use).is_none() {
        // Dead: the most preferred alive one, or stay (nothing better to send to).
        return (0..gateways)
            .find(|&i| alive_for(i).is_some())
            .unwrap_or(in_use);
    }
    (0..in_use)
        .find(|&i| alive_for(i).is_some_and(|up| up >= GATEWAY_HOLD))
        .unwrap_or(in_use)
}

impl Tunnel {
    /// How long `node` has been alive as a gateway (this node itself always is).
    fn gateway_alive_for(&self, node: NodeId, now: Instant) -> Option<Duration> {
        if node == self.node_id {
            return Some(Duration::MAX);
        }
        let peer = self.peers.get(&node)?;
        let heard = peer.last_received?;
        let alive =
            peer.usable_session(now) && now.saturating_duration_since(heard) < GATEWAY_ALIVE;
        alive.then(|| now.saturating_duration_since(peer.gateway_up_since.unwrap_or(now)))
    }

    /// Updates each gateway's alive period and moves routes between gateways (each tick).
    pub(super) fn choose_gateways(&mut self, now: Instant) {
        if self.routes.failover_routes().is_empty() {
            return;
        }
        let gateways: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| p.is_gateway)
            .map(|p| p.node_id)
            .collect();
        for id in gateways {
            let alive = self.gateway_alive_for(id, now).is_some();
            if let Some(peer) = self.peers.get_mut(&id) {
                match (alive, peer.gateway_up_since) {
                    (true, None) => peer.gateway_up_since = Some(now),
                    (false, Some(_)) => peer.gateway_up_since = None,
                    _ => {}
                }
            }
        }
        let moves: Vec<(usize, usize)> = self
            .routes
            .failover_routes()
            .iter()
            .enumerate()
            .filter_map(|(index, route)| {
                let alive_for = |i: usize| self.gateway_alive_for(route.gateways[i], now);
                let next = choose(route.in_use, route.gateways.len(), alive_for);
                (next != route.in_use).then_some((index, next))
            })
            .collect();
        for (index, gateway) in moves {
            self.routes.use_gateway(index, gateway);
            self.stats.gateway_changes += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Option<Duration> = Some(GATEWAY_HOLD);
    const JUST_UP: Option<Duration> = Some(Duration::from_secs(1));

    #[test]
    fn a_dead_gateway_is_left_for_the_most_preferred_alive_one() {
        assert_eq!(choose(0, 3, |i| [None, JUST_UP, UP][i]), 1);
        assert_eq!(choose(1, 3, |i| [None, None, JUST_UP][i]), 2);
        // Nothing alive: stay.
        assert_eq!(choose(1, 3, |_| None), 1);
    }

    #[test]
    fn traffic_returns_only_after_the_hold() {
        assert_eq!(choose(1, 2, |i| [JUST_UP, UP][i]), 1);
        assert_eq!(choose(1, 2, |i| [UP, UP][i]), 0);
        assert_eq!(choose(2, 3, |i| [JUST_UP, UP, UP][i]), 1);
        // Never to a less preferred one while the one in use lives.
        assert_eq!(choose(0, 2, |i| [JUST_UP, UP][i]), 0);
    }

    #[test]
    fn exhaustive_choices_are_alive_and_never_worse_than_needed() {
        let states = [None, JUST_UP, UP];
        for in_use in 0..3 {
            for a in states {
                for b in states {
                    for c in states {
                        let alive = [a, b, c];
                        let next = choose(in_use, 3, |i| alive[i]);
                        if alive.iter().any(Option::is_some) {
                            assert!(alive[next].is_some(), "{in_use} {alive:?} -> {next}");
                        } else {
                            assert_eq!(next, in_use);
                        }
                        // A move back goes only to a gateway up for the hold.
                        if next < in_use && alive[in_use].is_some() {
                            assert!(alive[next].is_some_and(|d| d >= GATEWAY_HOLD));
                        }
                    }
                }
            }
        }
    }
}

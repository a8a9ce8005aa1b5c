//! Choosing among a peer's direct paths by measured round-trip time.
//!
//! A peer often has several addresses that answer: a LAN address and a public one, or an
//! address behind another VPN running on the same host. The handshake goes to all of them
//! and the first answer to reach the responder wins, which under load can be the slowest
//! path; after that both sides would keep it, because every authenticated packet moves the
//! endpoint to where it came from. So each new session, and every [`SCAN_INTERVAL`] after
//! the last scan (a path that comes up later is found), starts a scan: [`SCAN_ROUNDS`]
//! rounds, [`ROUND_GAP`] apart, of one authenticated path probe to every known address of
//! the peer, each answered to the address it came from. A path's time is its fastest
//! answer: one probe stuck behind a busy or cold worker does not decide. When every probe
//! has answered (or [`SCAN_TIMEOUT`] passed after the last round) the fastest path becomes
//! the endpoint, unless the current one is within [`HYSTERESIS`] of it. Addresses measured
//! slower are not roamed to while the endpoint is heard from (within [`PATH_STALE`]): a
//! packet still in flight on the old path does not pull the endpoint back, and a dead
//! endpoint still gives way to whatever path works.
//!
//! A scan taken while traffic to the peer flows measures the endpoint's queue as well as
//! its path: the probes wait behind the data in the same socket and TUN queues, and an idle
//! path through another tunnel can answer first. Moving a bulk transfer onto it because of
//! its own queue would be the worst choice, so a scan during which more than [`LOADED`]
//! bytes moved to and from the peer does not move an endpoint that answered; the next scan
//! comes [`LOADED_RETRY`] later instead, to measure in a quieter moment.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Body tag of a path probe request (inside a `TYPE_PROBE` message).
pub(crate) const PATH_REQUEST: u8 = 3;
/// Body tag of a path probe reply.
pub(crate) const PATH_REPLY: u8 = 4;
/// Time between the scans of a peer with a session.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Rounds of probes in one scan.
pub const SCAN_ROUNDS: u32 = 4;
/// Time between two rounds (the tunnel's timer tick).
pub const ROUND_GAP: Duration = Duration::from_millis(100);
/// How long a scan waits after its last round before choosing among the answers that came.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(1);
/// An endpoint not heard from for this long no longer holds off slower paths.
pub const PATH_STALE: Duration = Duration::from_secs(15);
/// Most addresses one scan probes.
pub const MAX_SCANNED: usize = 8;
/// More traffic to and from the peer than this (bytes, both ways) during a scan makes it
/// a measurement under load: a few kilobytes of keystrokes or pings do not queue, a
/// transfer at a couple of Mbit/s or more can.
pub const LOADED: u64 = 64 * 1024;
/// The next scan after one taken under load.
pub const LOADED_RETRY: Duration = Duration::from_secs(5);
/// The current endpoint stays unless another path answers this many times faster (5/4):
/// near-equal paths do not make the endpoint flap between scans.
pub const HYSTERESIS: (u32, u32) = (5, 4);

/// One probe of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathProbe {
    pub destination: SocketAddr,
    pub id: u64,
    pub sent_at: Instant,
    pub rtt: Option<Duration>,
}

/// A scan under way.
#[derive(Debug)]
pub(crate) struct PathScan {
    pub started: Instant,
    pub destinations: Vec<SocketAddr>,
    pub rounds_sent: u32,
    pub last_round: Instant,
    pub probes: Vec<PathProbe>,
    /// The peer's bytes received and sent when the scan started.
    pub moved_before: u64,
}

impl PathScan {
    /// A scan of `destinations` (see [`scan_destinations`]) whose first round goes now,
    /// the peer's traffic counters at `moved_before`.
    pub fn new(now: Instant, destinations: Vec<SocketAddr>, moved_before: u64) -> Self {
        Self {
            started: now,
            destinations,
            rounds_sent: 0,
            last_round: now,
            probes: Vec::new(),
            moved_before,
        }
    }

    /// Whether the next round is due.
    pub fn round_due(&self, now: Instant) -> bool {
        self.rounds_sent < SCAN_ROUNDS
            && now.saturating_duration_since(self.started) >= ROUND_GAP * self.rounds_sent
    }

    /// Records a round sent now: `ids[i]` probes `destinations[i]`.
    pub fn sent_round(&mut self, now: Instant, ids: &[u64]) {
        self.rounds_sent += 1;
        self.last_round = now;
        self.probes
            .extend(self.destinations.iter().zip(ids).map(|(d, id)| PathProbe {
                destination: *d,
                id: *id,
                sent_at: now,
                rtt: None,
            }));
    }

    /// Records the reply to probe `id`; false if no probe of this scan waits for it.
    pub fn answered(&mut self, id: u64, now: Instant) -> bool {
        match self
            .probes
            .iter_mut()
            .find(|p| p.id == id && p.rtt.is_none())
        {
            Some(p) => {
                p.rtt = Some(now.saturating_duration_since(p.sent_at));
                true
            }
            None => false,
        }
    }

    /// Every round sent, and every probe answered or the wait after the last one over.
    pub fn is_done(&self, now: Instant) -> bool {
        self.rounds_sent == SCAN_ROUNDS
            && (self.probes.iter().all(|p| p.rtt.is_some())
                || now.saturating_duration_since(self.last_round) >= SCAN_TIMEOUT)
    }

    /// Each destination with its fastest answer (`None`: it never answered), in the scan's
    /// order.
    pub fn times(&self) -> Vec<PathTime> {
        self.destinations
            .iter()
            .map(|d| PathTime {
                address: *d,
                rtt: self
                    .probes
                    .iter()
                    .filter(|p| p.destination == *d)
                    .filter_map(|p| p.rtt)
                    .min(),
            })
            .collect()
    }
}

/// The paths of `times` that answered, with their times: what [`choose`] decides on.
pub(crate) fn answered(times: &[PathTime]) -> Vec<(SocketAddr, Duration)> {
    times
        .iter()
        .filter_map(|t| Some((t.address, t.rtt?)))
        .collect()
}

/// One path as a scan measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTime {
    pub address: SocketAddr,
    /// The fastest answer; `None` if no probe to this address was answered.
    pub rtt: Option<Duration>,
}

/// The last finished scan of a peer, as `meshd peers --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Time since the scan finished.
    pub age: Duration,
    /// Traffic to the peer made it a measurement under load ([`LOADED`]): it could not
    /// move the endpoint.
    pub under_load: bool,
    pub paths: Vec<PathTime>,
}

/// A finished scan as the peer keeps it.
#[derive(Debug, Clone)]
pub(crate) struct FinishedScan {
    pub at: Instant,
    pub under_load: bool,
    pub paths: Vec<PathTime>,
}

impl FinishedScan {
    pub fn report(&self, now: Instant) -> ScanReport {
        ScanReport {
            age: now.saturating_duration_since(self.at),
            under_load: self.under_load,
            paths: self.paths.clone(),
        }
    }
}

/// What a finished scan decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathChoice {
    pub endpoint: SocketAddr,
    /// Addresses that answered slower than `endpoint`.
    pub slower: Vec<SocketAddr>,
}

/// The endpoint, then the candidates not equal to it or to each other, in the config's
/// order: at most `max` addresses.
pub(crate) fn endpoint_then_candidates(
    endpoint: Option<SocketAddr>,
    candidates: &[SocketAddr],
    max: usize,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = endpoint.into_iter().collect();
    for c in candidates {
        if out.len() >= max {
            break;
        }
        if !out.contains(c) {
            out.push(*c);
        }
    }
    out
}

/// The addresses a scan probes: [`endpoint_then_candidates`], up to [`MAX_SCANNED`]. Empty
/// when fewer than `min` (nothing to choose between, or nothing to try).
pub(crate) fn scan_destinations(
    endpoint: Option<SocketAddr>,
    candidates: &[SocketAddr],
    min: usize,
) -> Vec<SocketAddr> {
    let mut out = endpoint_then_candidates(endpoint, candidates, MAX_SCANNED);
    if out.len() < min {
        out.clear();
    }
    out
}

/// The path to use after a scan, given each path's time and the endpoint in use; `None`
/// if nothing answered.
pub(crate) fn choose(
    times: &[(SocketAddr, Duration)],
    current: Option<SocketAddr>,
) -> Option<PathChoice> {
    // `min_by_key` keeps the first of equals: the endpoint, then the config's order.
    let &(best, best_rtt) = times.iter().min_by_key(|(_, rtt)| *rtt)?;
    let (num, den) = HYSTERESIS;
    let (endpoint, rtt) = match times.iter().find(|(a, _)| Some(*a) == current) {
        Some(&(a, current_rtt)) if best_rtt * num / den >= current_rtt => (a, current_rtt),
        _ => (best, best_rtt),
    };
    let slower = times
        .iter()
        .filter(|(a, r)| *a != endpoint && *r > rtt)
        .map(|(a, _)| *a)
        .collect();
    Some(PathChoice { endpoint, slower })
}

/// Whether authenticated traffic from `from` moves the endpoint there: always, unless
/// `from` was measured slower than an endpoint heard from within [`PATH_STALE`].
pub(crate) fn may_roam(
    from: SocketAddr,
    slower: &[SocketAddr],
    endpoint_heard: Option<Instant>,
    now: Instant,
) -> bool {
    let endpoint_alive =
        endpoint_heard.is_some_and(|t| now.saturating_duration_since(t) < PATH_STALE);
    !(endpoint_alive && slower.contains(&from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 9993))
    }

    fn time(last: u8, rtt_us: u64) -> (SocketAddr, Duration) {
        (addr(last), Duration::from_micros(rtt_us))
    }

    #[test]
    fn scans_the_endpoint_first_then_the_other_candidates_once() {
        let candidates = [addr(1), addr(2), addr(1), addr(3)];
        assert_eq!(
            scan_destinations(Some(addr(2)), &candidates, 2),
            vec![addr(2), addr(1), addr(3)]
        );
        assert_eq!(scan_destinations(None, &[addr(1)], 2), vec![]);
        assert_eq!(scan_destinations(Some(addr(1)), &[addr(1)], 2), vec![]);
        let many: Vec<SocketAddr> = (1..=20).map(addr).collect();
        assert_eq!(scan_destinations(None, &many, 2).len(), MAX_SCANNED);
    }

    #[test]
    fn the_fastest_answer_wins_and_the_rest_are_slower() {
        let times = [time(1, 900), time(2, 60), time(3, 400)];
        let choice = choose(&times, Some(addr(1))).expect("answered");
        assert_eq!(choice.endpoint, addr(2));
        assert_eq!(choice.slower, vec![addr(1), addr(3)]);
    }

    #[test]
    fn a_current_endpoint_within_the_margin_stays() {
        // 100 µs against 90 µs: not 5/4 faster.
        let times = [time(1, 100), time(2, 90)];
        let choice = choose(&times, Some(addr(1))).expect("answered");
        assert_eq!(choice.endpoint, addr(1));
        assert_eq!(choice.slower, Vec::<SocketAddr>::new());
        // 130 µs against 100 µs: it moves.
        let times = [time(1, 130), time(2, 100)];
        assert_eq!(
            choose(&times, Some(addr(1))).map(|c| c.endpoint),
            Some(addr(2))
        );
    }

    #[test]
    fn a_silent_endpoint_gives_way_and_nothing_answering_changes_nothing() {
        let choice = choose(&[time(2, 500)], Some(addr(1))).expect("one answered");
        assert_eq!(choice.endpoint, addr(2));
        assert_eq!(choose(&[], Some(addr(1))), None);
    }

    #[test]
    fn slower_paths_are_held_off_only_while_the_endpoint_lives() {
        let now = Instant::now();
        let slower = [addr(1)];
        assert!(!may_roam(addr(1), &slower, Some(now), now));
        assert!(may_roam(addr(1), &slower, Some(now), now + PATH_STALE));
        assert!(may_roam(addr(1), &slower, None, now));
        // A new address (a NAT rebinding) always moves the endpoint.
        assert!(may_roam(addr(9), &slower, Some(now), now));
    }

    #[test]
    fn a_scan_sends_its_rounds_and_keeps_each_paths_fastest_answer() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut scan = PathScan::new(t0, vec![addr(1), addr(2)], 0);
        let mut id = 0;
        let mut at = t0;
        while scan.round_due(at) {
            assert!(!scan.is_done(at));
            scan.sent_round(at, &[id, id + 1]);
            // Path 1 answers slowly in the first round only (a cold worker), path 2 never
            // in the second.
            let first = if id == 0 { us(5000) } else { us(300) };
            assert!(scan.answered(id, at + first));
            if id != 2 {
                assert!(scan.answered(id + 1, at + us(400)));
            }
            id += 2;
            assert!(
                !scan.round_due(at + us(500)),
                "rounds are {ROUND_GAP:?} apart"
            );
            at += ROUND_GAP;
        }
        assert_eq!(scan.rounds_sent, SCAN_ROUNDS);
        assert!(!scan.answered(0, at), "answered twice");
        assert!(!scan.answered(99, at), "not a probe of this scan");
        assert!(!scan.is_done(at), "one probe still out");
        assert!(scan.is_done(scan.last_round + SCAN_TIMEOUT));
        let unanswered = PathScan::new(t0, vec![addr(3)], 0);
        assert_eq!(
            unanswered.times(),
            vec![PathTime {
                address: addr(3),
                rtt: None
            }]
        );
        assert_eq!(
            answered(&scan.times()),
            vec![(addr(1), us(300)), (addr(2), us(400))]
        );
        assert!(scan.answered(3, at));
        assert!(scan.is_done(at), "every probe answered");
    }
}

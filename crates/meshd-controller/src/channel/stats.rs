//! What a replica's node-channel server counts for its metrics: the nodes connected now,
//! and how long configs take from the change that made them to the nodes' streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the push latency histogram, in seconds.
pub const PUSH_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Shared by every connection of one server; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ChannelStats {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connected: AtomicU64,
    /// Per bucket of [`PUSH_BUCKETS`], not cumulative.
    pushes: [AtomicU64; PUSH_BUCKETS.len()],
    /// Pushes slower than the last bucket.
    slow_pushes: AtomicU64,
    push_micros: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    pub connected: u64,
    /// Cumulative, as Prometheus's `le` buckets: (upper bound in seconds, pushes at or below).
    pub push_buckets: Vec<(f64, u64)>,
    pub push_count: u64,
    pub push_seconds: f64,
}

/// Counts a connection while it lives.
#[derive(Debug)]
pub(super) struct Connected(ChannelStats);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.inner.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ChannelStats {
    /// Counts a node connected until the guard drops.
    pub(super) fn connected(&self) -> Connected {
        self.inner.connected.fetch_add(1, Ordering::Relaxed);
        Connected(self.clone())
    }

    /// One config pushed `latency` after its change was applied.
    pub(super) fn pushed(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        match PUSH_BUCKETS.iter().position(|b| seconds <= *b) {
            Some(i) => self.inner.pushes[i].fetch_add(1, Ordering::Relaxed),
            None => self.inner.slow_pushes.fetch_add(1, Ordering::Relaxed),
        };
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.inner.push_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ChannelSnapshot {
        let mut running = 0;
        let push_buckets: Vec<(f64, u64)> = PUSH_BUCKETS
            .iter()
            .zip(&self.inner.pushes)
            .map(|(bound, n)| {
                running += n.load(Ordering::Relaxed);
                (*bound, running)
            })
            .collect();
        ChannelSnapshot {
            connected: self.inner.connected.load(Ordering::Relaxed),
            push_buckets,
            push_count: running + self.inner.slow_pushes.load(Ordering::Relaxed),
            push_seconds: self.inner.push_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_and_pushes_are_counted() {
        let stats = ChannelStats::default();
        let a = stats.connected();
        let b = stats.connected();
        drop(a);
        stats.pushed(Duration::from_micros(800));
        stats.pushed(Duration::from_millis(30));
        stats.pushed(Duration::from_secs(9));
        let s = stats.snapshot();
        assert_eq!(s.connected, 1);
        assert_eq!(s.push_count, 3);
        assert_eq!(s.push_buckets[0], (0.001, 1));
        assert_eq!(s.push_buckets[5], (0.05, 2));
        assert_eq!(s.push_buckets.last(), Some(&(5.0, 2)));
        assert!((s.push_seconds - 9.0308).abs() < 1e-9);
        drop(b);
        assert_eq!(stats.snapshot().connected, 0);
    }
}

//! Token buckets: how much a source may send per second, after a burst. Every per-source
//! limit uses them: relayed bytes per member (a replica's relay and a member relay),
//! handshakes per address under load, joins per address at the controller.

use std::hash::Hash;
use std::time::Instant;

use rustc_hash::FxHashMap;

/// A rate and the burst allowed above it, in whatever unit the caller counts (bytes,
/// messages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// What one source may still send, refilled at its rate up to its burst.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A bucket holding a full burst.
    pub fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }

    /// Takes `cost` if the bucket holds it; `false` (and nothing taken) if not.
    pub fn take(&mut self, rate: Rate, now: Instant, cost: f64) -> bool {
        self.tokens = self.refilled(rate, now);
        self.at = now;
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// A bucket per source key, for at most `max_sources` sources: past that, sources whose
/// bucket is full again (idle for a burst's worth of time) are forgotten, and if none is, a
/// new source is refused until one is. Memory stays bounded whatever the sources.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    max_sources: usize,
    buckets: FxHashMap<K, TokenBucket>,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(rate: Rate, max_sources: usize) -> Self {
        Limiter {
            rate,
            max_sources,
            buckets: FxHashMap::default(),
        }
    }

    /// Takes `cost` from `source`'s bucket; `false` when it is empty.
    pub fn admit(&mut self, source: K, now: Instant, cost: f64) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            let rate = self.rate;
            self.buckets
                .retain(|_, b| b.refilled(rate, now) < rate.burst);
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let rate = self.rate;
        self.buckets
            .entry(source)
            .or_insert_with(|| TokenBucket::full(rate, now))
            .take(rate, now, cost)
    }

    /// Sources with a bucket now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_second: 1000.0,
        burst: 1500.0,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(RATE, t0);
        assert!(bucket.take(RATE, t0, 1000.0));
        assert!(!bucket.take(RATE, t0, 600.0), "only 500 left");
        assert!(bucket.take(RATE, t0, 500.0));
        assert!(!bucket.take(RATE, t0, 1.0));
        // Half a second refills 500; a long pause refills no more than the burst.
        assert!(bucket.take(RATE, t0 + Duration::from_millis(500), 500.0));
        assert!(!bucket.take(RATE, t0 + Duration::from_millis(500), 1.0));
        let later = t0 + Duration::from_secs(60);
        assert!(!bucket.take(RATE, later, 1501.0));
        assert!(bucket.take(RATE, later, 1500.0));
    }

    #[test]
    fn sources_are_limited_apart_and_their_number_is_bounded() {
        let rate = Rate {
            per_second: 1.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        let mut limiter = Limiter::new(rate, 3);
        assert!(limiter.admit(1, t0, 1.0) && limiter.admit(1, t0, 1.0));
        assert!(!limiter.admit(1, t0, 1.0));
        assert!(
            limiter.admit(2, t0, 1.0),
            "another source has its own bucket"
        );
        assert!(limiter.admit(3, t0, 1.0));
        // Full of busy sources: a new one waits.
        assert!(!limiter.admit(4, t0, 1.0));
        assert_eq!(limiter.sources(), 3);
        // Two seconds on, every bucket is full again: the idle ones make room.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.admit(4, later, 1.0));
        assert_eq!(limiter.sources(), 1);
    }
}

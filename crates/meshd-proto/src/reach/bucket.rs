//! A token bucket of bytes per second: the per-member rate limit of every relay, a
//! replica's ([`super::relay`]) and a member's ([`crate::tunnel`] with `relay` set).

use std::time::Instant;

use super::relay::RelayLimits;

/// Bytes one source may still send, refilled at the limit's rate up to its burst.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A bucket holding a full burst.
    pub fn full(limits: &RelayLimits, now: Instant) -> Self {
        TokenBucket {
            tokens: limits.burst as f64,
            at: now,
        }
    }

    /// Takes `cost` bytes if the bucket holds them; `false` (and nothing taken) if not.
    pub fn take(&mut self, limits: &RelayLimits, now: Instant, cost: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * limits.bytes_per_second as f64).min(limits.burst as f64);
        self.at = now;
        let cost = cost as f64;
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limits = RelayLimits {
            bytes_per_second: 1000,
            burst: 1500,
            ..RelayLimits::default()
        };
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(&limits, t0);
        assert!(bucket.take(&limits, t0, 1000));
        assert!(!bucket.take(&limits, t0, 600), "only 500 left");
        assert!(bucket.take(&limits, t0, 500));
        assert!(!bucket.take(&limits, t0, 1));
        // Half a second refills 500 bytes; a long pause refills no more than the burst.
        assert!(bucket.take(&limits, t0 + Duration::from_millis(500), 500));
        assert!(!bucket.take(&limits, t0 + Duration::from_millis(500), 1));
        let later = t0 + Duration::from_secs(60);
        assert!(!bucket.take(&limits, later, 1501));
        assert!(bucket.take(&limits, later, 1500));
    }
}

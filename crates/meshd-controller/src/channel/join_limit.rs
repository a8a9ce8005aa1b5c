//! How fast one source address may have joins written: each join that reaches the
//! replicated log costs an append, an fsync and replication on every replica, and anyone can
//! make fresh keys. Sources are IP addresses, shared by every connection from them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Joins one source may have written per second, after its burst.
pub const JOINS_PER_SECOND: f64 = 2.0;
/// Joins one source may have written at once: a node joining many networks at start, or
/// many nodes behind one NAT reconnecting together.
pub const JOIN_BURST: f64 = 64.0;
/// Sources remembered at most; past it, those with a full bucket are forgotten.
const MAX_SOURCES: usize = 4096;

#[derive(Debug, Default)]
pub struct JoinLimit {
    sources: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl JoinLimit {
    /// Takes one join for `source` at `now`; `false` when its bucket is empty.
    pub fn admit(&self, source: IpAddr, now: Instant) -> bool {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = |(tokens, at): (f64, Instant)| {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            (tokens + elapsed * JOINS_PER_SECOND).min(JOIN_BURST)
        };
        if sources.len() >= MAX_SOURCES {
            sources.retain(|_, entry| refill(*entry) < JOIN_BURST);
        }
        let entry = sources.entry(source).or_insert((JOIN_BURST, now));
        let tokens = refill(*entry);
        if tokens < 1.0 {
            *entry = (tokens, now);
            return false;
        }
        *entry = (tokens - 1.0, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_source() {
        let limit = JoinLimit::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..JOIN_BURST as usize {
            assert!(limit.admit(a, t0));
        }
        assert!(!limit.admit(a, t0));
        assert!(limit.admit(b, t0), "another source has its own bucket");
        assert!(limit.admit(a, t0 + Duration::from_millis(500)));
        assert!(!limit.admit(a, t0 + Duration::from_millis(500)));
    }
}

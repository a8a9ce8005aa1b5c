//! The wall clock, as Unix time. The protocol core never reads a clock (it is handed `now`);
//! these are for what is stored or shown: member timestamps, join times, last-seen ages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time since the Unix epoch. A clock set before 1970 is a broken host: it reads as 0,
/// which keeps every timestamp valid (if wrong) instead of failing the command.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree() {
        let (secs, ms) = (now_secs(), now_ms());
        // Taken a moment apart: the milliseconds are the seconds' or the next second's.
        assert!(
            ms / 1000 >= secs && ms / 1000 <= secs + 1,
            "{secs} s vs {ms} ms"
        );
        // After this code was written and before u64 milliseconds run out.
        assert!(secs > 1_700_000_000);
    }
}

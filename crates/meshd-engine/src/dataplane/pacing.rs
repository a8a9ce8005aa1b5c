//! When a packet worker gives the CPU away between two TUN batches.
//!
//! A TUN read returns one packet unless the sender used segmentation offload (TCP does, a
//! UDP application rarely). When a worker keeps up with such a stream, every batch holds a
//! packet or two, and the worker spends its time on the syscalls around each one: the read,
//! an empty read, a send, a wait. That CPU comes out of the applications' share: in the
//! netns benchmark's 64-byte UDP flood (two cores, sender and receiver on the same host as
//! both nodes) the receiving application got a fifth of a core and read a third of what the
//! tunnel delivered to it. So a worker whose batches stay small while packets keep coming
//! yields once before it waits again: whoever else is runnable (the receiving application,
//! the sender filling the next batch) runs first, and the next read finds more. A lone packet
//! (a ping, a keystroke) never waits for this: the policy only yields in a stream.

use std::time::{Duration, Instant};

/// Batches smaller than this, in a stream, are worth a yield.
const SMALL_BATCH: u64 = 16;
/// Batches closer together than this are a stream.
const STREAM_GAP: Duration = Duration::from_micros(200);

/// The pacing of one worker's TUN batches.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    last_batch: Option<Instant>,
}

impl Pacing {
    /// Notes a batch of `sent` packets read from a TUN and sealed at `now`; `true` when the
    /// worker should yield before it waits for the next.
    pub fn sent(&mut self, now: Instant, sent: u64) -> bool {
        if sent == 0 {
            return false;
        }
        let streaming = self
            .last_batch
            .is_some_and(|at| now.saturating_duration_since(at) < STREAM_GAP);
        self.last_batch = Some(now);
        streaming && sent < SMALL_BATCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn lone_packets_never_yield() {
        let mut pacing = Pacing::default();
        let t0 = Instant::now();
        // A ping every 20 ms: each batch is the first of its stream.
        for k in 0..10 {
            assert!(!pacing.sent(t0 + Duration::from_millis(20 * k), 1));
        }
    }

    #[test]
    fn small_batches_in_a_stream_yield() {
        let mut pacing = Pacing::default();
        let t0 = Instant::now();
        assert!(
            !pacing.sent(t0, 1),
            "the first batch has no stream behind it"
        );
        assert!(pacing.sent(t0 + micros(10), 1));
        assert!(pacing.sent(t0 + micros(20), SMALL_BATCH - 1));
        assert!(
            !pacing.sent(t0 + micros(30), SMALL_BATCH),
            "a full batch is efficient"
        );
        assert!(pacing.sent(t0 + micros(30) + STREAM_GAP - micros(1), 2));
        assert!(
            !pacing.sent(t0 + micros(40) + 2 * STREAM_GAP, 2),
            "a gap ends the stream"
        );
    }

    #[test]
    fn empty_batches_change_nothing() {
        let mut pacing = Pacing::default();
        let t0 = Instant::now();
        assert!(!pacing.sent(t0, 0));
        assert!(
            !pacing.sent(t0 + micros(10), 1),
            "an empty batch starts no stream"
        );
        assert!(!pacing.sent(t0 + micros(20), 0));
        assert!(pacing.sent(t0 + micros(30), 1));
    }
}

//! Sliding anti-replay window over 64-bit counters (RFC 6479's ring of bitmap blocks).
//!
//! A counter is accepted once, and only if it is newer than everything seen or no more than
//! [`WINDOW`] behind the newest. The check and the update are separate so a packet is only
//! recorded after its tag verified: forged counters cannot move the window.

/// Counters at most this far behind the newest one are still accepted (out-of-order delivery).
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * 64;
const BLOCKS: usize = 32;
/// Counters from here on are never accepted: the session must rekey first (WireGuard's
/// REJECT_AFTER_MESSAGES, 2^64 - 2^13 - 1).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One past the newest accepted counter; 0 before the first.
    next: u64,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            next: 0,
            bitmap: [0; BLOCKS],
        }
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted, without recording it.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW {
            return false;
        }
        self.bitmap[block(counter)] & bit(counter) == 0
    }

    /// Records `counter`; false (and no change) if it is a replay or too old.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            if self.next > 0 {
                // Clear the blocks the window slides over, at most the whole ring.
                let current = (self.next - 1) / 64;
                let steps = (counter / 64 - current).min(BLOCKS as u64);
                for i in 1..=steps {
                    self.bitmap[((current + i) % BLOCKS as u64) as usize] = 0;
                }
            }
            self.next = counter + 1;
        }
        self.bitmap[block(counter)] |= bit(counter);
        true
    }
}

fn block(counter: u64) -> usize {
    // Reduced modulo BLOCKS, so it fits.
    ((counter / 64) % BLOCKS as u64) as usize
}

fn bit(counter: u64) -> u64 {
    1 << (counter % 64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// The reference: a set of everything seen and the newest counter.
    #[derive(Default)]
    struct Reference {
        seen: BTreeSet<u64>,
        newest: Option<u64>,
    }

    impl Reference {
        fn update(&mut self, c: u64) -> bool {
            if c >= REJECT_AFTER_MESSAGES || self.seen.contains(&c) {
                return false;
            }
            if let Some(n) = self.newest
                && c < n
                && n - c >= WINDOW
            {
                return false;
            }
            self.seen.insert(c);
            self.newest = Some(self.newest.map_or(c, |n| n.max(c)));
            true
        }
    }

    #[test]
    fn basics() {
        let mut w = ReplayWindow::default();
        assert!(w.update(0));
        assert!(!w.update(0));
        assert!(w.update(5));
        assert!(w.update(3));
        assert!(!w.update(3));
        assert!(w.update(5 + WINDOW));
        assert!(!w.check(5), "just outside the window");
        assert!(w.check(6));
        assert!(!w.update(REJECT_AFTER_MESSAGES));
        assert!(w.update(REJECT_AFTER_MESSAGES - 1));
    }

    #[test]
    fn check_does_not_record() {
        let mut w = ReplayWindow::default();
        assert!(w.check(9));
        assert!(w.check(9));
        assert!(w.update(9));
        assert!(!w.check(9));
    }

    proptest! {
        #[test]
        fn matches_reference(ops in proptest::collection::vec(
            prop_oneof![
                (0u64..4000).boxed(),                 // dense, overlapping region
                (0u64..u64::MAX).boxed(),             // anywhere, including huge jumps
                (REJECT_AFTER_MESSAGES - 3000..u64::MAX).boxed(),
            ],
            1..400,
        )) {
            let mut w = ReplayWindow::default();
            let mut r = Reference::default();
            for c in ops {
                prop_assert_eq!(w.update(c), r.update(c), "counter {}", c);
            }
        }

        #[test]
        fn in_order_with_reordering_all_accepted_once(jitter in proptest::collection::vec(0u64..64, 1..500)) {
            let mut w = ReplayWindow::default();
            // Deliver 0..n with each counter delayed by up to 63 positions: all inside the window.
            let mut order: Vec<(u64, u64)> = jitter.iter().enumerate().map(|(i, j)| (i as u64 + j, i as u64)).collect();
            order.sort();
            for (_, c) in &order {
                prop_assert!(w.update(*c));
            }
            for (_, c) in &order {
                prop_assert!(!w.update(*c));
            }
        }
    }
}

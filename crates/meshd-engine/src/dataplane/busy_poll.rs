//! How long a packet worker keeps polling for packets before it sleeps.
//!
//! A ping through the tunnel wakes a sleeping worker on each node at least twice, and on a
//! virtual machine whose idle CPUs halt, a wake-up is an interrupt to a halted CPU: tens of
//! microseconds, several times the work of sealing or opening the packet. Most of those
//! wake-ups come within a short time of the last packet (the answer to what was just sent,
//! the next packet of a conversation), so after a batch a worker polls without sleeping for
//! a short window ([`BusyPoll::new`]). Measured on the netns benchmark (two vCPUs, idle CPUs
//! halt), a 50-100 µs window took meshd's added ping latency from about boringtun's to about
//! 0.8 of it; 20 µs did nothing.
//!
//! Polling costs a CPU that could sleep, so it is capped: a worker polls for at most
//! [`BUDGET`] in any [`PERIOD`] (a tenth of a core). A steady trickle of packets that would
//! keep it polling all the time uses the budget up and then sleeps between packets as it
//! would without polling; an idle node never polls. While it polls, the worker yields the
//! CPU between polls, so whatever else is runnable on that CPU runs first.

use std::time::{Duration, Instant};

/// The accounting period of the polling budget.
pub(super) const PERIOD: Duration = Duration::from_secs(1);
/// At most this much polling per [`PERIOD`].
pub(super) const BUDGET: Duration = Duration::from_millis(100);

/// One worker's polling state: see the module docs.
#[derive(Debug)]
pub(super) struct BusyPoll {
    window: Duration,
    /// Poll until then; `None`: sleep at the next wait.
    until: Option<Instant>,
    /// When the last batch ended or the last empty poll returned: polling time is counted
    /// from there.
    last: Instant,
    period_start: Instant,
    /// Polling time spent in the current period: wall-clock, including what the yields
    /// between polls gave to other threads, so the budget errs on the side of less CPU.
    spent: Duration,
    /// Polling time spent since the worker started.
    total: Duration,
}

impl BusyPoll {
    /// Polls for `window` after every batch; a zero window never polls.
    pub fn new(window: Duration, now: Instant) -> BusyPoll {
        BusyPoll {
            window,
            until: None,
            last: now,
            period_start: now,
            spent: Duration::ZERO,
            total: Duration::ZERO,
        }
    }

    /// Notes that the worker finished handling what a wait or poll returned, at `now`.
    pub fn handled(&mut self, now: Instant) {
        if now.saturating_duration_since(self.period_start) >= PERIOD {
            self.period_start = now;
            self.spent = Duration::ZERO;
        }
        self.until = (!self.window.is_zero() && self.spent < BUDGET).then(|| now + self.window);
        self.last = now;
    }

    /// After a poll found nothing at `now`: `true` to poll again, `false` to sleep until the
    /// next packet.
    pub fn poll_again(&mut self, now: Instant) -> bool {
        let Some(until) = self.until else {
            return false;
        };
        let polled = now.saturating_duration_since(self.last);
        self.spent += polled;
        self.total += polled;
        self.last = now;
        if now >= until || self.spent >= BUDGET {
            self.until = None;
            return false;
        }
        true
    }

    /// Whether the next wait should poll rather than sleep.
    pub fn polling(&self) -> bool {
        self.until.is_some()
    }

    /// The time spent polling since the worker started.
    pub fn total(&self) -> Duration {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(100);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn a_zero_window_never_polls() {
        let t0 = Instant::now();
        let mut poll = BusyPoll::new(Duration::ZERO, t0);
        poll.handled(t0);
        assert!(!poll.polling());
        assert!(!poll.poll_again(t0 + US));
        assert_eq!(poll.total(), Duration::ZERO);
    }

    #[test]
    fn an_idle_worker_does_not_poll_until_it_handles_something() {
        let t0 = Instant::now();
        let mut poll = BusyPoll::new(WINDOW, t0);
        assert!(!poll.polling());
        assert!(!poll.poll_again(t0 + US));
    }

    #[test]
    fn it_polls_for_the_window_after_a_batch_then_sleeps() {
        let t0 = Instant::now();
        let mut poll = BusyPoll::new(WINDOW, t0);
        poll.handled(t0);
        assert!(poll.polling());
        assert!(poll.poll_again(t0 + 10 * US));
        assert!(poll.poll_again(t0 + 99 * US));
        assert!(!poll.poll_again(t0 + 100 * US));
        assert!(!poll.polling());
        assert_eq!(poll.total(), 100 * US);
    }

    #[test]
    fn every_batch_opens_a_new_window() {
        let t0 = Instant::now();
        let mut poll = BusyPoll::new(WINDOW, t0);
        poll.handled(t0);
        assert!(poll.poll_again(t0 + 80 * US));
        poll.handled(t0 + 90 * US);
        assert!(poll.poll_again(t0 + 180 * US));
        assert!(!poll.poll_again(t0 + 190 * US));
        // The time spent handling the batch (80-90 µs) is not polling.
        assert_eq!(poll.total(), 180 * US);
    }

    #[test]
    fn the_budget_caps_polling_per_period_and_comes_back_in_the_next() {
        let t0 = Instant::now();
        let mut poll = BusyPoll::new(WINDOW, t0);
        // A packet every 99 µs: without the cap the worker would poll all the time.
        let mut now = t0;
        let mut polled_until = None;
        while now < t0 + PERIOD {
            poll.handled(now);
            if !poll.polling() {
                polled_until = Some(now);
                break;
            }
            now += 99 * US;
            if !poll.poll_again(now) {
                // The budget ran out in this poll.
                polled_until = Some(now);
                break;
            }
        }
        let stopped = polled_until.expect("the budget stops the polling within the period");
        assert!(poll.total() >= BUDGET && poll.total() < BUDGET + WINDOW);
        assert!(stopped < t0 + PERIOD);
        // Still within the period: no polling however many batches come.
        poll.handled(stopped + 10 * US);
        assert!(!poll.polling());
        // The next period has a fresh budget.
        poll.handled(t0 + PERIOD + US);
        assert!(poll.polling());
        assert!(poll.poll_again(t0 + PERIOD + 50 * US));
    }
}

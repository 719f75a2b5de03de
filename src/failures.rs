//! A streak of failures of one loop (a worker claiming from the store, the `/updates` poller,
//! the store's writer, the owner-command reader): when to say so in the log, and how long to
//! wait before trying again. Every loop that can fail repeatedly counts its failures here, so
//! a failing disk or an unreachable server costs one log line, then a reminder every
//! [`LOG_EVERY`] failures, and a growing, jittered pause — never a busy loop or a flooded log.

use std::time::Duration;

/// A streak logs its first failure, then every `LOG_EVERY`-th.
pub const LOG_EVERY: u32 = 20;

#[derive(Debug, Default)]
pub struct Streak {
    count: u32,
}

impl Streak {
    /// Counts one more failure. True when this one should be logged: the first of the streak,
    /// then every [`LOG_EVERY`]-th.
    pub fn failed(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        self.count == 1 || self.count.is_multiple_of(LOG_EVERY)
    }

    /// Failures so far in this streak.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Ends the streak; returns how long it was (0 when there was none), so the caller can say
    /// that it recovered.
    pub fn recovered(&mut self) -> u32 {
        std::mem::take(&mut self.count)
    }

    /// How long to wait before the next try: about `base` after the first failure, doubling up
    /// to `cap`, jittered.
    pub fn backoff(&self, base: Duration, cap: Duration) -> Duration {
        crate::opentrain::backoff(self.count.max(1), base, cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_failure_then_every_twentieth() {
        let mut s = Streak::default();
        let logged: Vec<u32> = (1..=60).filter(|_| s.failed()).collect();
        assert_eq!(logged, vec![1, 20, 40, 60]);
        assert_eq!(s.recovered(), 60);
        assert_eq!(s.recovered(), 0);
        assert!(s.failed(), "a new streak logs its first failure again");
    }

    #[test]
    fn backs_off_more_as_the_streak_grows() {
        let mut s = Streak::default();
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(60));
        s.failed();
        assert!(s.backoff(base, cap) <= base);
        for _ in 0..10 {
            s.failed();
        }
        assert!(s.backoff(base, cap) >= cap / 2);
    }
}

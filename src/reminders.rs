//! When to remind the owner of a still-pending approval. Pure arithmetic over `expiresAt`, the
//! configured thresholds (`reminders.before_expiry`, e.g. 24 h and 1 h) and now, so a restart
//! computes the same answer and never repeats a reminder already counted in the store.

use std::time::Duration;

/// For an approval expiring at `expires_ms`: how many thresholds have already passed at `now_ms`
/// (each counts as fired: a reminder is never sent late for a threshold that passed while the
/// daemon was down or before the approval arrived), and when the next one falls due.
pub fn plan(expires_ms: i64, thresholds: &[Duration], now_ms: i64) -> (i64, Option<i64>) {
    let mut times: Vec<i64> = thresholds
        .iter()
        .map(|t| expires_ms - t.as_millis() as i64)
        .collect();
    times.sort_unstable();
    let fired = times.iter().filter(|&&at| at <= now_ms).count() as i64;
    let next = times.into_iter().find(|&at| at > now_ms && at < expires_ms);
    (fired, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn th() -> Vec<Duration> {
        vec![Duration::from_secs(24 * 3600), Duration::from_secs(3600)]
    }

    #[test]
    fn a_fresh_72h_approval_waits_for_the_24h_mark() {
        assert_eq!(plan(72 * H, &th(), 0), (0, Some(48 * H)));
    }

    #[test]
    fn thresholds_already_passed_count_as_fired() {
        // 10 h left at arrival: the 24 h reminder is not sent late; the 1 h one is next.
        assert_eq!(plan(10 * H, &th(), 0), (1, Some(9 * H)));
        assert_eq!(plan(10 * H, &th(), 9 * H + 1), (2, None));
    }

    #[test]
    fn no_thresholds_means_no_reminders() {
        assert_eq!(plan(72 * H, &[], 0), (0, None));
    }
}

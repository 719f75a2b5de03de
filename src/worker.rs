//! What every background worker shares: the clock, how long a claim is leased, how an idle
//! worker waits (for a wake-up from the store, the next scheduled item, or shutdown), and the
//! pool that runs claimed work.

use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::failures::Streak;

/// How long a claim stays with its worker, derived from how long its work may take.
///
/// The work itself is cut off at [`Lease::work`] (network calls at their timeout, the whole job
/// at the sum of them), and the lease runs [`LEASE_MARGIN`] longer, for the store writes around
/// it. So a live worker always finishes, or gives up, before its lease runs out, and no one
/// else can claim the same item meanwhile: a slow OpenTrain never gets one approval verified
/// twice. A dead worker's work comes back when its lease runs out (or at the next start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    work: Duration,
}

/// Room on top of the work's own deadline for the writes that record it.
pub const LEASE_MARGIN: Duration = Duration::from_secs(30);

impl Lease {
    /// For work made of `calls` requests, each cut off at `timeout`.
    pub fn for_calls(calls: u32, timeout: Duration) -> Lease {
        Lease {
            work: timeout.saturating_mul(calls),
        }
    }

    /// The longest the work may take; past it the worker gives up and schedules a retry.
    pub fn work(&self) -> Duration {
        self.work
    }

    /// How long the claim is held.
    pub fn duration(&self) -> Duration {
        self.work + LEASE_MARGIN
    }
}

/// The longest an idle worker sleeps before looking again, whatever it was told.
pub const MAX_IDLE: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch: the store's unit of time.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long an idle worker sleeps: until `next_at` (ms), never past `MAX_IDLE`.
pub fn idle_for(next_at: Option<i64>) -> Duration {
    match next_at {
        Some(at) => Duration::from_millis((at - now_ms()).max(0) as u64).min(MAX_IDLE),
        None => MAX_IDLE,
    }
}

/// Keeps the earlier of `next_at` and `at`: when a worker next has something to do.
pub fn earliest(next_at: &mut Option<i64>, at: i64) {
    *next_at = Some(next_at.map_or(at, |n| n.min(at)));
}

/// Waits until `wake` is notified, `next_at` (ms) arrives, `MAX_IDLE` passes, or shutdown.
pub async fn idle(wake: &Notify, next_at: Option<i64>, cancel: &CancellationToken) {
    let wait = idle_for(next_at);
    if wait.is_zero() {
        return;
    }
    tokio::select! {
        _ = wake.notified() => {}
        _ = tokio::time::sleep(wait) => {}
        _ = cancel.cancelled() => {}
    }
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

/// Spaces requests to one chat: every request takes the next free slot, and the next slot is at
/// least `interval` after the previous request *finished* — not after it started, since the
/// server times their arrival and one slow request would otherwise bunch the next two. A 429
/// pushes every later slot past its `retry_after`. A chat with a window (a Telegram group: 20
/// messages a minute) also never gets more than `limit` requests in any `period`. Shared by
/// everything that writes to the chat (deliveries, notices and answers to owner commands).
#[derive(Clone)]
pub struct Pacer {
    interval: Duration,
    window: Option<Window>,
    state: std::sync::Arc<std::sync::Mutex<PacerState>>,
}

/// At most `limit` requests in any `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub limit: usize,
    pub period: Duration,
}

struct PacerState {
    next: tokio::time::Instant,
    /// When the last `limit` requests went (a windowed chat only); oldest first.
    sent: std::collections::VecDeque<tokio::time::Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            window: None,
            state: std::sync::Arc::new(std::sync::Mutex::new(PacerState {
                next: tokio::time::Instant::now(),
                sent: std::collections::VecDeque::new(),
            })),
        }
    }

    /// The same pace, and never more than `window.limit` requests in any `window.period`.
    pub fn with_window(mut self, window: Option<Window>) -> Pacer {
        self.window = window.filter(|w| w.limit > 0);
        self
    }

    /// The chat counts requests over a window: every message there is precious.
    pub fn windowed(&self) -> bool {
        self.window.is_some()
    }

    /// The least time between two requests.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The earliest a request may go now.
    fn slot(&self, state: &PacerState) -> tokio::time::Instant {
        let mut slot = state.next.max(tokio::time::Instant::now());
        if let Some(w) = self.window
            && state.sent.len() >= w.limit
        {
            slot = slot.max(state.sent[state.sent.len() - w.limit] + w.period);
        }
        slot
    }

    /// Waits for this request's slot; false on shutdown.
    pub async fn wait(&self, cancel: &CancellationToken) -> bool {
        let slot = {
            let mut state = self.state.lock().expect("pacer lock");
            let slot = self.slot(&state);
            state.next = slot + self.interval;
            if let Some(w) = self.window {
                state.sent.push_back(slot);
                while state.sent.len() > w.limit {
                    state.sent.pop_front();
                }
            }
            slot
        };
        tokio::select! {
            _ = tokio::time::sleep_until(slot) => true,
            _ = cancel.cancelled() => false,
        }
    }

    /// Waits until the next slot has come, without taking it; false on shutdown. Delivery
    /// claims its work only then, so what arrives while the chat must be left alone is sent
    /// together.
    pub async fn ready(&self, cancel: &CancellationToken) -> bool {
        let slot = self.slot(&self.state.lock().expect("pacer lock"));
        tokio::select! {
            _ = tokio::time::sleep_until(slot) => true,
            _ = cancel.cancelled() => false,
        }
    }

    /// The request that waited last has finished: the next one goes `interval` after now. In a
    /// window it counts from now too (its arrival was no later), so a slow request never lets
    /// the window's next one go early.
    pub fn done(&self) {
        let now = tokio::time::Instant::now();
        let mut state = self.state.lock().expect("pacer lock");
        state.next = state.next.max(now + self.interval);
        if let Some(last) = state.sent.back_mut() {
            *last = (*last).max(now);
        }
    }

    /// Nothing may be sent before `d` from now (the chat said so with a 429).
    pub fn hold_for(&self, d: Duration) {
        let mut state = self.state.lock().expect("pacer lock");
        state.next = state.next.max(tokio::time::Instant::now() + d);
    }
}

/// After a failed claim, the first retry comes after about this long, doubling up to the cap.
const CLAIM_RETRY_BASE: Duration = Duration::from_secs(1);
const CLAIM_RETRY_CAP: Duration = Duration::from_secs(60);

/// Runs claimed work, up to `concurrency` items at once, until shutdown: claims as many items as
/// there is room for, runs each on its own task, and when nothing is claimable sleeps until the
/// next scheduled item (`next_at`), a wake-up, or shutdown. A claim that fails (the store cannot
/// write) is retried after a jittered, growing pause. Work still running at shutdown is waited
/// for; a claim it never finishes is released at the next start.
pub async fn pool<J, Claim, ClaimFut, Next, NextFut, Work, WorkFut>(
    name: &'static str,
    concurrency: usize,
    wake: &Notify,
    cancel: &CancellationToken,
    mut claim: Claim,
    mut next_at: Next,
    work: Work,
) where
    J: Send + 'static,
    Claim: FnMut(usize) -> ClaimFut,
    ClaimFut: std::future::Future<Output = Result<Vec<J>, crate::store::StoreError>>,
    Next: FnMut() -> NextFut,
    NextFut: std::future::Future<Output = Option<i64>>,
    Work: Fn(J) -> WorkFut,
    WorkFut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    let mut failures = Streak::default();
    while !cancel.is_cancelled() {
        while running.try_join_next().is_some() {}
        let room = concurrency.saturating_sub(running.len());
        let jobs = if room > 0 {
            match claim(room).await {
                Ok(jobs) => {
                    let failed = failures.recovered();
                    if failed > 0 {
                        tracing::info!(worker = name, failed, "the store answers again");
                    }
                    jobs
                }
                Err(e) => {
                    // A failing store (full disk, I/O error) must not burn a core or flood the
                    // log: one line, a reminder now and then, and a growing pause.
                    if failures.failed() {
                        tracing::error!(worker = name, error = %e, failures = failures.count(), "cannot claim work from the store; backing off");
                    }
                    let wait = failures.backoff(CLAIM_RETRY_BASE, CLAIM_RETRY_CAP);
                    sleep_or_cancel(wait, cancel).await;
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let claimed = jobs.len();
        for job in jobs {
            running.spawn(work(job));
        }
        if claimed == 0 {
            if running.is_empty() {
                let next = next_at().await;
                idle(wake, next, cancel).await;
            } else {
                // A slot frees up, new work arrives, or shutdown.
                tokio::select! {
                    _ = running.join_next() => {}
                    _ = wake.notified() => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
    }
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When each of `n` requests goes, in ms from the start, one after another.
    async fn schedule(pacer: &Pacer, n: usize) -> Vec<u64> {
        let start = tokio::time::Instant::now();
        let cancel = CancellationToken::new();
        let mut at = Vec::new();
        for _ in 0..n {
            assert!(pacer.wait(&cancel).await);
            at.push((tokio::time::Instant::now() - start).as_millis() as u64);
            pacer.done();
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_lets_a_burst_go_at_the_interval_then_waits_for_the_oldest_to_leave_it() {
        let pacer = Pacer::new(Duration::from_secs(1)).with_window(Some(Window {
            limit: 20,
            period: Duration::from_secs(60),
        }));
        let at = schedule(&pacer, 22).await;
        assert_eq!(&at[..3], [0, 1_000, 2_000]);
        assert_eq!(at[19], 19_000, "the 20th at the interval");
        assert_eq!(at[20], 60_000, "the 21st when the first leaves the minute");
        assert_eq!(at[21], 61_000);
        // In any 60 s, never more than 20.
        for (i, t) in at.iter().enumerate() {
            let in_minute = at[i..].iter().filter(|u| **u < t + 60_000).count();
            assert!(in_minute <= 20, "{in_minute} from {t}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_window_only_the_interval_counts() {
        let pacer = Pacer::new(Duration::from_secs(1));
        let at = schedule(&pacer, 22).await;
        assert_eq!(at[21], 21_000);
        assert!(!pacer.windowed());
    }
}

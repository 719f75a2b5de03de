//! Tracking: learn when an approval reaches a terminal status, at the least cost to OpenTrain.
//!
//! - The ledger: `GET /updates` from a cursor kept in the store, one request per poll interval
//!   (more only while OpenTrain says `hasMore`), however many approvals are pending. An
//!   `approval.confirmed` event for a tracked approval rings its doorbell; the cursor moves in
//!   the same transaction, so a crash never skips an event.
//! - Doorbells (from `/updates`, an agent's `POST /v1/events`, or a webhook) and expiry (expiry is
//!   lazy upstream: it flips only when read) schedule a fresh `GET /approvals/{id}`. The status
//!   shown always comes from that read, never from an event's payload.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::approval::{ApprovalId, Status};
use crate::failures::Streak;
use crate::metrics::Metrics;
use crate::notices::{Problem, Problems};
use crate::opentrain::{OpenTrain, UpstreamError, backoff};
use crate::store::{ReadJob, ReadOutcome, Store};
use crate::verify::{EXPIRY_GRACE_MS, retry_at};
use crate::worker::{self, Lease, now_ms, sleep_or_cancel};

/// Events per `/updates` page (OpenTrain allows 1–200).
const PAGE: u32 = 200;
/// How many approval re-reads run at once.
const CONCURRENCY: usize = 8;

pub struct Tracker {
    pub store: Store,
    pub opentrain: OpenTrain,
    pub poll_interval: Duration,
    /// `reminders.before_expiry`.
    pub reminders: Vec<Duration>,
    pub metrics: Arc<Metrics>,
    /// How long one re-read may take: see [`Tracker::lease`].
    pub lease: Lease,
    /// Told when OpenTrain stops showing approvals it showed before, and when it shows them
    /// all again (§3.8).
    pub problems: Problems,
}

impl Tracker {
    /// A re-read is one OpenTrain call, cut off at `request_timeout`.
    pub fn lease(request_timeout: Duration) -> Lease {
        Lease::for_calls(1, request_timeout)
    }

    /// Polls `/updates` until shutdown. The ledger heals itself: a refused cursor starts it
    /// again, and after any break (a refused cursor, events that did not decode, an outage of
    /// more than a few intervals) every tracked approval is re-read once, since any of them may
    /// have been resolved unseen.
    pub async fn poll_updates(self: Arc<Self>, cancel: CancellationToken) {
        let mut failures = Streak::default();
        let mut failing_since: Option<std::time::Instant> = None;
        let mut reread_all = false;
        while !cancel.is_cancelled() {
            let wait = match self.poll_once().await {
                Ok(polled) => {
                    if failures.recovered() > 0 {
                        tracing::info!(
                            "updates: OpenTrain answers again; caught up from the saved cursor"
                        );
                    }
                    if failing_since
                        .take()
                        .is_some_and(|t| t.elapsed() > self.poll_interval * OUTAGE_INTERVALS)
                    {
                        reread_all = true;
                    }
                    if polled.skipped > 0 {
                        self.metrics
                            .opentrain_errors
                            .with_label_values(&["undecodable_event"])
                            .inc_by(polled.skipped as u64);
                        tracing::warn!(
                            skipped = polled.skipped,
                            "updates: skipped events that do not decode"
                        );
                        reread_all = true;
                    }
                    if polled.rung > 0 {
                        tracing::debug!(rung = polled.rung, "updates: doorbells rung");
                    }
                    self.poll_interval
                }
                Err(e) => {
                    if let PollError::Upstream(u) = &e {
                        self.metrics.opentrain_error(u);
                    }
                    failing_since.get_or_insert_with(std::time::Instant::now);
                    // Only a cursor can be refused: a refusal without one is a plain failure,
                    // or every interval would re-read everything.
                    let refused = matches!(&e, PollError::Upstream(u) if u.is_refusal())
                        && matches!(self.store.cursor().await, Ok(Some(_)));
                    let undecodable = matches!(&e, PollError::Upstream(UpstreamError::Decode(_)));
                    if refused {
                        tracing::warn!(error = %e, "updates: OpenTrain refused the cursor; starting the ledger again and re-reading every pending approval");
                        if let Err(e) = self.store.forget_cursor().await {
                            tracing::error!(error = %e, "updates: cannot forget the refused cursor");
                        }
                    } else if failures.failed() {
                        tracing::warn!(error = %e, failures = failures.count(), "updates: poll failed; backing off");
                    }
                    if refused || undecodable {
                        reread_all = true;
                    }
                    if refused {
                        self.poll_interval
                    } else {
                        e.retry_after()
                            .unwrap_or_else(|| {
                                failures.backoff(self.poll_interval, Duration::from_secs(300))
                            })
                            .max(self.poll_interval)
                    }
                }
            };
            if reread_all {
                match self.store.ring_all_tracked(now_ms()).await {
                    Ok(n) => {
                        reread_all = false;
                        tracing::info!(
                            approvals = n,
                            "updates: the ledger broke; re-reading every pending approval once"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "updates: cannot ring the pending approvals; will try again")
                    }
                }
            }
            if !sleep_or_cancel(wait, &cancel).await {
                break;
            }
        }
    }

    /// Reads every page from the saved cursor: how many tracked approvals were rung, and how many
    /// events were skipped because they do not decode.
    pub async fn poll_once(&self) -> Result<Polled, PollError> {
        let mut cursor = self.store.cursor().await.map_err(PollError::Store)?;
        let mut polled = Polled::default();
        loop {
            let page = self
                .opentrain
                .updates(cursor.as_deref(), PAGE)
                .await
                .map_err(PollError::Upstream)?;
            // An id countersign would never have accepted cannot be tracked: skip it.
            let ids: Vec<ApprovalId> = page
                .events
                .iter()
                .filter_map(|e| ApprovalId::parse(e.approval_id()?).ok())
                .collect();
            polled.skipped += page.skipped;
            let next = page.next_cursor.clone().or(cursor.clone());
            let advanced = next != cursor;
            polled.rung += self
                .store
                .ring_and_save_cursor(ids, next.clone(), now_ms())
                .await
                .map_err(PollError::Store)?;
            cursor = next;
            // Stop on a page that does not move the cursor, whatever hasMore says: looping on
            // it would only ask for the same page again.
            if !page.has_more || !advanced {
                return Ok(polled);
            }
        }
    }

    /// Re-reads approvals whose doorbell rang or whose expiry passed, and fires due reminders,
    /// until shutdown.
    pub async fn read_due(self: Arc<Self>, cancel: CancellationToken) {
        let store = &self.store;
        let reminders = &self.reminders;
        let lease = self.lease;
        worker::pool(
            "track",
            CONCURRENCY,
            &store.signals().reads,
            &cancel,
            |room| async move {
                // Reminders need no network call: fire what is due, then claim the reads. A
                // failure is the claim's failure, so the pool backs off: an overdue reminder
                // that cannot be written must not make the loop spin.
                let ids = store.fire_reminders(reminders.clone(), now_ms()).await?;
                for id in ids {
                    tracing::info!(approval_id = %id, "reminder due: refreshing the message and nudging the owner");
                }
                store.claim_reads(now_ms(), lease.duration(), room).await
            },
            || async {
                let next_read = store.next_read_at(now_ms()).await.ok().flatten();
                let next_reminder = store.next_reminder_at().await.ok().flatten();
                [next_read, next_reminder].into_iter().flatten().min()
            },
            |job| {
                let me = self.clone();
                async move { me.reread(job).await }
            },
        )
        .await;
    }

    async fn reread(&self, job: ReadJob) {
        // Never past the lease: past it, another worker could take the same approval.
        let read =
            tokio::time::timeout(self.lease.work(), self.opentrain.approval(job.id.as_str()))
                .await
                .unwrap_or_else(|_| {
                    Err(UpstreamError::Transport(format!(
                        "no answer within {:?}",
                        self.lease.work()
                    )))
                });
        let hidden = match &read {
            Ok(_) => Some(false),
            Err(UpstreamError::NotFound { .. }) => Some(true),
            Err(_) => None,
        };
        let outcome = match read {
            Ok(upstream) => {
                let mut status = Status::from_upstream(upstream.status.as_deref());
                let mut terminal = status.is_terminal(upstream.resolved_at.is_some());
                // OpenTrain's word wins; only if it still calls a replaced hire pending does
                // countersign mark it superseded itself.
                if !terminal && job.superseded_by.is_some() {
                    status = Status::Superseded;
                    terminal = true;
                }
                let now = now_ms();
                let expires = upstream.expires_at().map(|t| t.timestamp_millis());
                let (next_read_at, backing_off) = next_read(expires, &status, job.attempts, now);
                if status != job.status {
                    tracing::info!(approval_id = %job.id, from = %job.status, to = %status, "status changed");
                    if terminal && let Some(created) = upstream.created_at() {
                        let age = (chrono::Utc::now() - created).num_milliseconds().max(0);
                        self.metrics.resolution.observe(age as f64 / 1000.0);
                    }
                }
                ReadOutcome::Status {
                    upstream: Some(upstream),
                    status,
                    terminal,
                    next_read_at,
                    backing_off,
                }
            }
            // Only a 200 ends a message. A 404 of an approval OpenTrain showed before is
            // visibility that flips or a token that changed, not a verdict: read it again,
            // backing off, and leave the message as it is.
            // The same for a refused token (401/403): the message keeps its last true status
            // while the token is fixed, and the wait stays short at first so a restored token
            // shows outcomes soon.
            Err(e @ (UpstreamError::NotFound { .. } | UpstreamError::Auth { .. })) => {
                self.metrics.opentrain_error(&e);
                let wait = backoff(job.attempts, REREAD_BASE, REREAD_CAP);
                tracing::warn!(approval_id = %job.id, error = %e, retry_in_ms = wait.as_millis() as u64, "OpenTrain does not show this approval to countersign now; the message stays as it is and it will be read again");
                ReadOutcome::Retry {
                    at: now_ms() + wait.as_millis() as i64,
                    error: e.to_string(),
                }
            }
            Err(e) => {
                self.metrics.opentrain_error(&e);
                tracing::warn!(approval_id = %job.id, error = %e, "re-read failed; will retry");
                ReadOutcome::Retry {
                    at: retry_at(&e, job.attempts),
                    error: e.to_string(),
                }
            }
        };
        if let Err(e) = self.store.finish_read(&job, outcome, now_ms()).await {
            tracing::error!(approval_id = %job.id, error = %e, "cannot record the re-read; it will be redone");
            return;
        }
        self.note_visibility(&job.id, hidden).await;
    }

    /// A 404 for an approval already shown is a problem while it lasts for any of them; it
    /// clears once no tracked approval's last read was a 404 (the store keeps that reason).
    async fn note_visibility(&self, id: &ApprovalId, hidden: Option<bool>) {
        let problem = Problem::OpenTrainHidesApprovals;
        match hidden {
            Some(true) => self.problems.raise(
                problem,
                format!("approval {id}: {}", crate::opentrain::NOT_FOUND_TEXT),
            ),
            Some(false) if self.problems.is_lasting(problem) => {
                if let Ok(0) = self.store.hidden_approvals().await {
                    self.problems.clear(problem);
                }
            }
            _ => {}
        }
    }
}

/// An outage longer than this many poll intervals may have hidden events: re-read everything.
const OUTAGE_INTERVALS: u32 = 4;

/// What one poll of the ledger found.
#[derive(Debug, Default)]
pub struct Polled {
    pub rung: usize,
    pub skipped: usize,
}

/// The first wait of a re-read that backs off (past `expiresAt`, an unknown status, a 404) and the
/// most it grows to: doubling from seconds to an hour, so a clock skew of minutes costs a handful
/// of reads.
const REREAD_BASE: Duration = Duration::from_secs(5);
const REREAD_CAP: Duration = Duration::from_secs(3_600);

/// When to read an approval that is not terminal again, and whether that wait backs off (so its
/// attempts keep counting instead of starting over). Before `expiresAt`: just after it. Still
/// pending after it (OpenTrain's clock lags countersign's) or in a status countersign does not
/// know: later and later, doubling up to an hour.
pub fn next_read(
    expires: Option<i64>,
    status: &Status,
    attempts: u32,
    now: i64,
) -> (Option<i64>, bool) {
    let overdue = expires.is_some_and(|exp| exp + EXPIRY_GRACE_MS <= now);
    if overdue || matches!(status, Status::Other(_)) {
        let wait = backoff(attempts, REREAD_BASE, REREAD_CAP);
        (Some(now + wait.as_millis() as i64), true)
    } else {
        (expires.map(|exp| exp + EXPIRY_GRACE_MS), false)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Upstream(UpstreamError),
    #[error("store: {0}")]
    Store(crate::store::StoreError),
}

impl PollError {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            PollError::Upstream(e) => e.retry_after(),
            PollError::Store(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_expiry_back_off_to_an_hour() {
        let now = 1_000_000_000;
        let expired = Some(now - 60_000);
        let waits: Vec<i64> = (1..=20)
            .map(|a| next_read(expired, &Status::Pending, a, now).0.unwrap() - now)
            .collect();
        assert!(waits[0] <= 5_000, "the first look is soon");
        assert!(
            waits[6] >= 100_000,
            "a few minutes of skew costs a handful of reads"
        );
        assert!(
            waits[19] >= 1_800_000 && waits[19] <= 3_600_000,
            "capped at an hour"
        );
        let (at, backing_off) = next_read(expired, &Status::Pending, 1, now);
        assert!(backing_off && at.is_some());
    }

    #[test]
    fn an_unknown_status_backs_off_and_a_pending_one_waits_for_expiry() {
        let now = 1_000_000_000;
        let later = Some(now + 600_000);
        let odd = Status::Other("on_hold".into());
        assert!(next_read(later, &odd, 12, now).0.unwrap() - now >= 1_800_000);
        assert!(next_read(None, &odd, 1, now).1);
        assert_eq!(
            next_read(later, &Status::Pending, 9, now),
            (Some(now + 600_000 + EXPIRY_GRACE_MS), false)
        );
    }
}

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
}

impl Tracker {
    /// A re-read is one OpenTrain call, cut off at `request_timeout`.
    pub fn lease(request_timeout: Duration) -> Lease {
        Lease::for_calls(1, request_timeout)
    }

    /// Polls `/updates` until shutdown.
    pub async fn poll_updates(self: Arc<Self>, cancel: CancellationToken) {
        let mut failures = Streak::default();
        while !cancel.is_cancelled() {
            let wait = match self.poll_once().await {
                Ok(rung) => {
                    if failures.recovered() > 0 {
                        tracing::info!(
                            "updates: OpenTrain answers again; caught up from the saved cursor"
                        );
                    }
                    if rung > 0 {
                        tracing::debug!(rung, "updates: doorbells rung");
                    }
                    self.poll_interval
                }
                Err(e) => {
                    if let PollError::Upstream(u) = &e {
                        self.metrics.opentrain_error(u);
                    }
                    if failures.failed() {
                        tracing::warn!(error = %e, failures = failures.count(), "updates: poll failed; backing off");
                    }
                    e.retry_after()
                        .unwrap_or_else(|| {
                            failures.backoff(self.poll_interval, Duration::from_secs(300))
                        })
                        .max(self.poll_interval)
                }
            };
            if !sleep_or_cancel(wait, &cancel).await {
                break;
            }
        }
    }

    /// Reads every page from the saved cursor. Returns how many tracked approvals were rung.
    pub async fn poll_once(&self) -> Result<usize, PollError> {
        let mut cursor = self.store.cursor().await.map_err(PollError::Store)?;
        let mut rung = 0;
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
            let next = page.next_cursor.clone().or(cursor.clone());
            let advanced = next != cursor;
            rung += self
                .store
                .ring_and_save_cursor(ids, next.clone(), now_ms())
                .await
                .map_err(PollError::Store)?;
            cursor = next;
            // Stop on a page that does not move the cursor, whatever hasMore says: looping on
            // it would only ask for the same page again.
            if !page.has_more || !advanced {
                return Ok(rung);
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
                let next_read_at = match upstream.expires_at().map(|t| t.timestamp_millis()) {
                    // Still pending after expiry (clocks differ): look again, backing off.
                    Some(exp) if exp + EXPIRY_GRACE_MS <= now => Some(
                        now + backoff(
                            job.attempts,
                            Duration::from_secs(5),
                            Duration::from_secs(600),
                        )
                        .as_millis() as i64,
                    ),
                    Some(exp) => Some(exp + EXPIRY_GRACE_MS),
                    None => None,
                };
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
                }
            }
            Err(UpstreamError::NotFound { .. }) => {
                self.metrics
                    .opentrain_errors
                    .with_label_values(&["not_found"])
                    .inc();
                // It was verified before, so OpenTrain withdrew it: say so rather than keep
                // showing a link that no longer works.
                tracing::warn!(approval_id = %job.id, "OpenTrain no longer shows this approval");
                ReadOutcome::Status {
                    upstream: None,
                    status: Status::Other("not_found".into()),
                    terminal: true,
                    next_read_at: None,
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
        }
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

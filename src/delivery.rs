//! Delivery: one worker per channel claims the next message to post or edit, renders the card
//! from the store, calls the notifier, and records what happened.
//!
//! Invariants:
//! - **At least once.** A delivery is done only when the store records the message; a crash
//!   between the send and that record repeats one message, never loses one.
//! - **The chat's pace is respected.** One request at a time per channel, at least
//!   `min_interval` apart; after a 429 nothing goes to that chat until `retry_after` has passed.
//! - **No retry loops.** Transient failures back off (jittered, exponential); a deleted message
//!   is never re-posted; a permanent error stops that delivery with one log line and shows as
//!   `failed` in `list` until the next start.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::notify::{Card, MessageRef, Notifier, NotifyError};
use crate::opentrain::backoff;
use crate::store::{DeliveryJob, DeliveryOutcome, Store};
use crate::worker::{LEASE, idle, now_ms, sleep_or_cancel};

/// The longest one post or edit may take before it counts as a transient failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Delivery<N: Notifier> {
    pub notifier: N,
    pub store: Store,
    pub app_url: String,
}

impl<N: Notifier> Delivery<N> {
    pub async fn run(self, cancel: CancellationToken) {
        let channel = self.notifier.channel();
        let wake = self.store.signals().delivery(channel);
        let mut not_before = Instant::now();
        while !cancel.is_cancelled() {
            let job = match self.store.claim_delivery(channel, now_ms(), LEASE).await {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(channel, error = %e, "delivery: cannot claim work from the store");
                    sleep_or_cancel(Duration::from_secs(1), &cancel).await;
                    continue;
                }
            };
            let Some(job) = job else {
                let next = self.store.next_delivery_at(channel).await.ok().flatten();
                idle(&wake, next, &cancel).await;
                continue;
            };
            // Pace: wait out the chat's interval or its retry_after. On shutdown the claim is
            // simply left; the next start releases it.
            let wait = not_before.saturating_duration_since(Instant::now());
            if !wait.is_zero() && !sleep_or_cancel(wait, &cancel).await {
                break;
            }
            let (outcome, pause) = self.attempt(&job).await;
            not_before = Instant::now() + pause.max(self.notifier.min_interval());
            if let Err(e) = self
                .store
                .finish_delivery(&job.record.id, channel, outcome, now_ms())
                .await
            {
                tracing::error!(channel, approval_id = %job.record.id, error = %e, "cannot record the delivery; it may be repeated");
            }
        }
    }

    /// One post or edit. Returns what to record and how long the chat must be left alone.
    async fn attempt(&self, job: &DeliveryJob) -> (DeliveryOutcome, Duration) {
        let channel = self.notifier.channel();
        let id = &job.record.id;
        let card = Card::from_record(&job.record, &self.app_url, Utc::now());
        let existing = job.message_ref.clone().map(MessageRef);
        let sent = tokio::time::timeout(SEND_TIMEOUT, async {
            match &existing {
                None => self.notifier.post(&card).await,
                Some(m) => self.notifier.edit(m, &card).await.map(|()| m.clone()),
            }
        })
        .await
        .unwrap_or_else(|_| Err(NotifyError::Transient("timed out".into())));
        let action = if existing.is_some() { "edit" } else { "post" };
        let status = job.record.status.as_str();
        match sent {
            Ok(message) => {
                tracing::info!(channel, approval_id = %id, %status, action, "message {}", if existing.is_some() { "edited" } else { "posted" });
                (
                    DeliveryOutcome::Shown {
                        message_ref: message.0,
                        version: job.record.version,
                    },
                    Duration::ZERO,
                )
            }
            Err(NotifyError::RateLimited(d)) => {
                tracing::warn!(channel, approval_id = %id, action, retry_after_ms = d.as_millis() as u64, "rate limited by the chat; waiting as asked");
                (
                    DeliveryOutcome::Retry {
                        at: now_ms() + d.as_millis() as i64,
                        error: format!("rate limited: retry after {d:?}"),
                    },
                    d,
                )
            }
            Err(NotifyError::Transient(e)) => {
                let wait = backoff(
                    job.attempts,
                    Duration::from_secs(1),
                    Duration::from_secs(300),
                );
                tracing::warn!(channel, approval_id = %id, action, error = %e, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                (
                    DeliveryOutcome::Retry {
                        at: now_ms() + wait.as_millis() as i64,
                        error: e,
                    },
                    Duration::ZERO,
                )
            }
            Err(NotifyError::Gone(e)) if existing.is_some() => {
                tracing::warn!(channel, approval_id = %id, error = %e, "the message is gone (deleted by the owner?); it will not be re-posted");
                (DeliveryOutcome::Gone { error: e }, Duration::ZERO)
            }
            Err(NotifyError::Gone(e)) | Err(NotifyError::Permanent(e)) => {
                tracing::error!(channel, approval_id = %id, action, error = %e, "delivery failed permanently; fix the cause and restart to retry");
                (DeliveryOutcome::Failed { error: e }, Duration::ZERO)
            }
        }
    }
}

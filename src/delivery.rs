//! Delivery: one worker per channel claims the next message to post, edit or remind with,
//! renders it from the store, calls the notifier, and records what happened.
//!
//! A message holds one or more approvals (SPEC §3.9): a lone approval is a group of one, and
//! a burst waiting to be posted goes out as groups of up to `grouping.max_batch`. The worker
//! gathers: it waits for the chat's next free slot *before* it claims, so whatever arrived
//! while the chat could not be written to goes out together.
//!
//! Invariants:
//! - **At least once.** A message is done only when the store records it, on every approval it
//!   holds at once; a crash between the send and that record repeats one message, never loses
//!   one.
//! - **The chat's pace is respected.** One request at a time per channel, at least
//!   `min_interval` apart; after a 429 nothing goes to that chat until `retry_after` has passed.
//! - **No retry loops, no giving up.** Transient failures back off (jittered, exponential); a
//!   deleted message is never re-posted; a permanent error (a permission taken away, a blocked
//!   bot) is retried slowly, after about a minute and then up to hourly, for as long as the
//!   delivery has work left, so fixing the cause is enough: no restart needed.
//! - **The message is true when sent.** It is rendered from every approval it holds as they are
//!   after the pacing wait, which can be long (a 429's `retry_after`), not as they were when
//!   claimed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use tokio_util::sync::CancellationToken;

use crate::approval::Status;
use crate::config::Grouping;
use crate::metrics::Metrics;
use crate::notices::{Problem, Problems};
use crate::notify::{Card, Group, MessageRef, Notifier, NotifyError};
use crate::opentrain::backoff;
use crate::quiet::OwnerTime;
use crate::store::{DeliveryJob, DeliveryOutcome, Member, Shown, Store};
use crate::worker::{self, Lease, Pacer, now_ms};

/// The longest one post or edit may take before it counts as a transient failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The first retry of a delivery the chat refused for good, and the slowest pace it backs off
/// to: the owner may fix the cause at any time, and nothing else would try again.
const PERMANENT_RETRY: Duration = Duration::from_secs(60);
const PERMANENT_RETRY_CAP: Duration = Duration::from_secs(3_600);

pub struct Delivery<N: Notifier> {
    pub notifier: N,
    pub store: Store,
    pub app_url: String,
    pub metrics: Arc<Metrics>,
    /// The chat's pace, shared with anything else that writes to it.
    pub pacer: Pacer,
    /// The owner's zone and quiet hours: which posts and reminders ring (§3.6).
    pub owner_time: OwnerTime,
    /// Told when this chat refuses messages for good, and when it takes them again (§3.8).
    pub problems: Problems,
    /// How many waiting approvals go out in one message (§3.9).
    pub grouping: Grouping,
}

impl<N: Notifier> Delivery<N> {
    /// One post or edit, cut off at `SEND_TIMEOUT`. A channel has one worker, which never
    /// claims again while it holds a claim, so pacing waits (a long `retry_after`) cannot lead
    /// to a second claim of the same delivery either.
    pub fn lease() -> Lease {
        Lease::for_calls(1, SEND_TIMEOUT)
    }

    /// Delivers on this channel until shutdown: one delivery at a time, through the shared
    /// worker pool (claim, back off when the store fails, idle until due).
    pub async fn run(self, cancel: CancellationToken) {
        let me = Arc::new(self);
        let channel = me.notifier.channel();
        let store = me.store.clone();
        let wake = store.signals().delivery(channel);
        worker::pool(
            channel,
            1,
            &wake,
            &cancel,
            |_room| async {
                // Gather until the chat may be written to: what waits then goes out together.
                if !me.pacer.ready(&cancel).await {
                    return Ok(Vec::new());
                }
                me.gather(&cancel).await;
                let job = store
                    .claim_delivery(channel, now_ms(), Self::lease().duration(), me.grouping)
                    .await?;
                Ok(job.into_iter().collect())
            },
            || async { store.next_delivery_at(channel).await.ok().flatten() },
            |job| {
                let me = me.clone();
                let cancel = cancel.clone();
                async move { me.deliver(job, &cancel).await }
            },
        )
        .await;
    }

    /// In a chat that counts messages over a window (a Telegram group: 20 a minute), a post of
    /// fewer than `max_batch` approvals first waits one interval for company: a burst then goes
    /// out in full messages from its first one, and 200 approvals take 20 messages, inside one
    /// minute's allowance instead of spilling into the next. A lone approval there arrives one
    /// interval later; edits and reminders wait only when a post is waiting too.
    async fn gather(&self, cancel: &CancellationToken) {
        if !self.pacer.windowed() || !self.grouping.is_on() {
            return;
        }
        let channel = self.notifier.channel();
        if let Ok(n) = self.store.waiting_posts(channel, now_ms()).await
            && n > 0
            && (n as usize) < self.grouping.max_batch
        {
            worker::sleep_or_cancel(self.pacer.interval(), cancel).await;
        }
    }

    /// Paces, sends, and records one claimed message.
    async fn deliver(&self, mut job: DeliveryJob, cancel: &CancellationToken) {
        let channel = self.notifier.channel();
        // Pace: wait out the chat's interval or its retry_after. On shutdown the claim is
        // simply left; the next start releases it.
        if !self.pacer.wait(cancel).await {
            return;
        }
        // The wait can be long: show what is true now.
        let ids = job.members.iter().map(|m| m.record.id.clone()).collect();
        match self.store.approval_records(ids).await {
            Ok(records) => {
                for (member, record) in job.members.iter_mut().zip(records) {
                    if let Some(record) = record {
                        member.record = record;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(channel, approval_id = %ids_of(&job), error = %e, "cannot re-read the approvals; sending them as claimed")
            }
        }
        let (outcome, shown, pause) = self.attempt(&job).await;
        self.pacer.done();
        if !pause.is_zero() {
            self.pacer.hold_for(pause);
        }
        if let Err(e) = self
            .store
            .finish_delivery(channel, shown, outcome, now_ms())
            .await
        {
            tracing::error!(channel, approval_id = %ids_of(&job), error = %e, "cannot record the delivery; it may be repeated");
        }
    }

    /// The message as the owner sees it now: every approval's card, in the owner's time and
    /// quiet hours.
    fn group(&self, job: &DeliveryJob) -> Group {
        let now = Utc::now();
        Group::new(
            job.members
                .iter()
                .map(|m| {
                    let mut card = Card::from_record(&m.record, &self.app_url, now);
                    self.owner_time.apply(&mut card);
                    card
                })
                .collect(),
        )
    }

    /// One request to the chat: a post, an edit or a reminder, whichever comes first. Returns
    /// what to record, on which approvals, and how long the chat must be left alone.
    async fn attempt(&self, job: &DeliveryJob) -> (DeliveryOutcome, Vec<Shown>, Duration) {
        let channel = self.notifier.channel();
        let ids = ids_of(job);
        let group = self.group(job);
        let action = match &job.message_ref {
            None => Action::Post,
            Some(m)
                if job
                    .members
                    .iter()
                    .any(|x| x.shown_version < x.record.version) =>
            {
                Action::Edit(m.clone())
            }
            Some(m) if job.members.iter().any(reminder_due) => Action::Remind(m.clone()),
            // Nothing left (the approvals moved on since this was due): record it as caught up.
            Some(_) => {
                return (
                    DeliveryOutcome::Reminded { rang: None },
                    shown(job, false),
                    Duration::ZERO,
                );
            }
        };
        let reminding = matches!(action, Action::Remind(_));
        let sent = tokio::time::timeout(SEND_TIMEOUT, async {
            match &action {
                Action::Post => {
                    self.notifier
                        .post_group(&group)
                        .await
                        .map(|m| DeliveryOutcome::Posted {
                            message_ref: m,
                            rang: !group.silent(),
                        })
                }
                Action::Edit(m) => self
                    .notifier
                    .edit_group(m, &group)
                    .await
                    .map(|()| DeliveryOutcome::Edited),
                Action::Remind(m) => {
                    // The reminder names only the approvals it is about.
                    let mut about = group.clone();
                    let named: Vec<String> = job
                        .members
                        .iter()
                        .filter(|m| reminder_due(m))
                        .map(|m| m.record.id.to_string())
                        .collect();
                    about.retain(|c| named.contains(&c.approval_id));
                    self.notifier.remind_group(m, &about).await.map(|()| {
                        DeliveryOutcome::Reminded {
                            rang: Some(!about.silent()),
                        }
                    })
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(NotifyError::Transient("timed out".into())));
        let shown = shown(job, reminding);
        let approvals = job.members.len();
        let action = action.name();
        let outcome = match &sent {
            Ok(_) => "ok",
            Err(NotifyError::RateLimited(_)) => "rate_limited",
            Err(NotifyError::Transient(_)) => "transient",
            Err(NotifyError::Gone(_)) => "gone",
            Err(NotifyError::Permanent(_)) => "permanent",
        };
        self.metrics
            .deliveries
            .with_label_values(&[channel, action, outcome])
            .inc();
        if sent.is_err() {
            self.metrics
                .chat_errors
                .with_label_values(&[channel, outcome])
                .inc();
        }
        match &sent {
            Ok(_) => self.problems.clear(Problem::ChannelRefuses(channel)),
            Err(NotifyError::Permanent(e)) => {
                self.problems.raise(Problem::ChannelRefuses(channel), e)
            }
            Err(NotifyError::Gone(e)) if job.message_ref.is_none() => {
                self.problems.raise(Problem::ChannelRefuses(channel), e)
            }
            Err(_) => {}
        }
        let id = &ids;
        let verdict = match sent {
            Ok(outcome) => {
                tracing::info!(channel, approval_id = %id, approvals, action, "delivered");
                (outcome, Duration::ZERO)
            }
            Err(NotifyError::RateLimited(d)) => {
                tracing::warn!(channel, approval_id = %id, action, retry_after_ms = d.as_millis() as u64, "rate limited by the chat; waiting as asked");
                (
                    DeliveryOutcome::Held {
                        until: now_ms() + d.as_millis() as i64,
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
            Err(NotifyError::Gone(e)) if job.message_ref.is_some() => {
                tracing::warn!(channel, approval_id = %id, action, error = %e, "the message is gone (deleted by the owner?); it will not be re-posted");
                (DeliveryOutcome::Gone { error: e }, Duration::ZERO)
            }
            Err(NotifyError::Gone(e)) | Err(NotifyError::Permanent(e)) => {
                let wait = backoff(job.attempts, PERMANENT_RETRY, PERMANENT_RETRY_CAP);
                let retry_in_s = wait.as_secs();
                if job.attempts <= 1 {
                    tracing::error!(channel, approval_id = %id, action, error = %e, retry_in_s, "the chat refused this message; fix the cause (bot blocked, permission removed?): it is retried about every hour at most, no restart needed");
                } else {
                    tracing::warn!(channel, approval_id = %id, action, error = %e, retry_in_s, "the chat still refuses this message; retrying later");
                }
                (
                    DeliveryOutcome::Refused {
                        at: now_ms() + wait.as_millis() as i64,
                        error: e,
                    },
                    Duration::ZERO,
                )
            }
        };
        (verdict.0, shown, verdict.1)
    }
}

/// A reminder is due for this approval: one fired since the last sent, and it still waits.
fn reminder_due(m: &Member) -> bool {
    m.reminded_seq < m.record.reminder_seq && m.record.status == Status::Pending
}

/// What the attempt showed of each approval; `reminding` marks those a reminder named.
fn shown(job: &DeliveryJob, reminding: bool) -> Vec<Shown> {
    job.members
        .iter()
        .map(|m| Shown {
            id: m.record.id.clone(),
            version: m.record.version,
            reminder_seq: m.record.reminder_seq,
            reminded: reminding && reminder_due(m),
        })
        .collect()
}

/// The approvals of a message, for the log: `apr_1` or `apr_1,apr_2,…`.
fn ids_of(job: &DeliveryJob) -> String {
    job.members
        .iter()
        .map(|m| m.record.id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

enum Action {
    Post,
    Edit(MessageRef),
    Remind(MessageRef),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Post => "post",
            Action::Edit(_) => "edit",
            Action::Remind(_) => "remind",
        }
    }
}

//! Delivery: the per-channel queue of messages to post, edit, or remind with.
//!
//! Invariants: **at least once** — a delivery is done only when its outcome is recorded, so a
//! crash between the send and the record repeats one message and never loses one; `due` is kept
//! true exactly while a delivery has work left ([`refresh_due`] is the only place that decides).

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};
use crate::approval::{AgentContext, MoneyContext, Status, WireApproval};

impl Store {
    /// Claims the next message to post or edit on `channel`, with everything needed to render it.
    pub async fn claim_delivery(
        &self,
        channel: &'static str,
        now: i64,
        lease: Duration,
    ) -> Result<Option<DeliveryJob>, StoreError> {
        let lease_until = now + lease.as_millis() as i64;
        self.write(move |c| {
            let claimed = c
                .query_row(
                    "UPDATE deliveries SET lease_until = ?3, attempts = attempts + 1
                     WHERE rowid = (SELECT rowid FROM deliveries
                                    WHERE channel = ?1 AND due = 1 AND state = 'active'
                                      AND run_after <= ?2 AND lease_until <= ?2
                                    ORDER BY run_after, rowid LIMIT 1)
                     RETURNING approval_id, message_ref, attempts, shown_version, reminded_seq",
                    params![channel, now, lease_until],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((approval_id, message_ref, attempts, shown_version, reminded_seq)) = claimed
            else {
                return Ok(None);
            };
            let record = load_record(c, &approval_id)?;
            Ok(Some(DeliveryJob {
                channel,
                message_ref,
                attempts: attempts as u32,
                shown_version,
                reminded_seq,
                record,
            }))
        })
        .await
    }

    /// Records the end of a delivery attempt.
    pub async fn finish_delivery(
        &self,
        approval_id: &str,
        channel: &'static str,
        outcome: DeliveryOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        let approval_id = approval_id.to_string();
        self.write(move |c| {
            match outcome {
                DeliveryOutcome::Posted {
                    message_ref,
                    version,
                    reminder_seq,
                } => {
                    // A fresh message already shows the time left: it counts as reminded.
                    c.execute(
                        "UPDATE deliveries SET message_ref = ?3, shown_version = ?4,
                            reminded_seq = ?5, posted_at = COALESCE(posted_at, ?6),
                            updated_at = ?6, lease_until = 0, run_after = 0, attempts = 0,
                            last_error = NULL
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![
                            approval_id,
                            channel,
                            message_ref,
                            version,
                            reminder_seq,
                            now
                        ],
                    )?;
                }
                DeliveryOutcome::Edited { version } => {
                    c.execute(
                        "UPDATE deliveries SET shown_version = ?3, updated_at = ?4,
                            lease_until = 0, run_after = 0, attempts = 0, last_error = NULL
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, version, now],
                    )?;
                }
                DeliveryOutcome::Reminded { seq } => {
                    c.execute(
                        "UPDATE deliveries SET reminded_seq = ?3, updated_at = ?4,
                            lease_until = 0, run_after = 0, attempts = 0, last_error = NULL
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, seq, now],
                    )?;
                }
                DeliveryOutcome::Retry { at, error } => {
                    c.execute(
                        "UPDATE deliveries SET run_after = ?3, last_error = ?4, lease_until = 0,
                            updated_at = ?5
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, at, error, now],
                    )?;
                }
                DeliveryOutcome::Gone { error } => {
                    c.execute(
                        "UPDATE deliveries SET state = 'gone', due = 0, last_error = ?3,
                            lease_until = 0, updated_at = ?4
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, error, now],
                    )?;
                }
                DeliveryOutcome::Failed { error } => {
                    c.execute(
                        "UPDATE deliveries SET state = 'failed', last_error = ?3, lease_until = 0,
                            updated_at = ?4
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, error, now],
                    )?;
                }
            }
            refresh_due(c, &approval_id, Some(channel))?;
            Ok(())
        })
        .await
    }

    /// The earliest time a delivery on `channel` becomes claimable, if any is waiting.
    pub async fn next_delivery_at(&self, channel: &'static str) -> Result<Option<i64>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT MIN(MAX(run_after, lease_until)) FROM deliveries
                 WHERE channel = ?1 AND due = 1 AND state = 'active'",
                [channel],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Gives every tracked approval a delivery on each of `channels`: a channel the operator
    /// enabled since the last start shows the approvals that are still open.
    pub async fn ensure_deliveries(
        &self,
        channels: &[&'static str],
        now: i64,
    ) -> Result<(), StoreError> {
        let channels = channels.to_vec();
        self.write(move |c| {
            for channel in channels {
                c.execute(
                    "INSERT INTO deliveries (approval_id, channel, state, updated_at)
                     SELECT id, ?1, 'active', ?2 FROM approvals WHERE phase = 'track'
                     ON CONFLICT(approval_id, channel) DO NOTHING",
                    params![channel, now],
                )?;
            }
            Ok(())
        })
        .await?;
        self.inner.signals.wake_deliveries();
        Ok(())
    }
}

/// Recomputes whether deliveries of `approval_id` (on `channel`, or all) have work left: a message
/// to post, an edit to catch up with the approval's version, or a reminder to send while pending.
pub(super) fn refresh_due(
    c: &Connection,
    approval_id: &str,
    channel: Option<&str>,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE deliveries SET due = (
             state = 'active' AND (
                 message_ref IS NULL
                 OR shown_version < (SELECT version FROM approvals WHERE id = ?1)
                 OR (reminded_seq < (SELECT reminder_seq FROM approvals WHERE id = ?1)
                     AND (SELECT status FROM approvals WHERE id = ?1) = 'pending')))
         WHERE approval_id = ?1 AND (?2 IS NULL OR channel = ?2)",
        params![approval_id, channel],
    )?;
    Ok(())
}

/// Everything a notifier needs to render an approval.
#[derive(Debug, Clone)]
pub struct ApprovalRecord {
    pub id: String,
    pub kind: String,
    pub status: Status,
    pub version: i64,
    pub reminder_seq: i64,
    pub submitted: WireApproval,
    pub agent: AgentContext,
    pub upstream: Option<WireApproval>,
    pub context: Option<MoneyContext>,
    pub superseded_by: Option<String>,
}

pub struct DeliveryJob {
    pub channel: &'static str,
    pub message_ref: Option<String>,
    pub attempts: u32,
    /// What the message shows now, and the last reminder sent on this channel.
    pub shown_version: i64,
    pub reminded_seq: i64,
    pub record: ApprovalRecord,
}

pub enum DeliveryOutcome {
    /// A new message shows `version`; it counts as reminded up to `reminder_seq`.
    Posted {
        message_ref: String,
        version: i64,
        reminder_seq: i64,
    },
    /// The message was edited to show `version`.
    Edited {
        version: i64,
    },
    /// The reminder for `seq` was sent.
    Reminded {
        seq: i64,
    },
    Retry {
        at: i64,
        error: String,
    },
    Gone {
        error: String,
    },
    Failed {
        error: String,
    },
}

fn load_record(c: &Connection, id: &str) -> Result<ApprovalRecord, StoreError> {
    let (kind, status, version, submitted, agent, upstream, context, superseded_by, reminder_seq) =
        c.query_row(
            "SELECT kind, status, version, submitted_json, agent_json, upstream_json,
                    context_json, superseded_by, reminder_seq
             FROM approvals WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            },
        )?;
    Ok(ApprovalRecord {
        id: id.to_string(),
        kind,
        status: Status::parse(&status),
        version,
        reminder_seq,
        submitted: serde_json::from_str(&submitted)?,
        agent: serde_json::from_str(&agent)?,
        upstream: upstream.map(|u| serde_json::from_str(&u)).transpose()?,
        context: context.map(|u| serde_json::from_str(&u)).transpose()?,
        superseded_by,
    })
}

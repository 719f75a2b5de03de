//! Delivery: the per-channel queue of messages to post, edit, or remind with.
//!
//! Invariants: **at least once** — a delivery is done only when its outcome is recorded, so a
//! crash between the send and the record repeats one message and never loses one; `due` is kept
//! true exactly while a delivery has work left ([`refresh_due`] is the only place that decides);
//! a `failed` delivery (refused by the chat for good) still has its work and is tried again on a
//! slow schedule, so fixing the cause is enough.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Queue, Store, StoreError, Unreadable, column, decode, stored_id};

/// A delivery whose approval cannot be read is tried again this much later (a restart, or a
/// repair by re-submitting, comes sooner).
const UNREADABLE_RETRY_MS: i64 = 3_600_000;
use crate::approval::{AgentContext, ApprovalId, MoneyContext, Status, WireApproval};

impl Store {
    /// Claims the next message to post or edit on `channel`, with everything needed to render
    /// it. The writer only takes the row; the approval is read and decoded on a reader thread.
    /// One whose stored record cannot be decoded has this delivery set aside as `failed`, with
    /// the reason (tried again once at the next start), and the others go on.
    pub async fn claim_delivery(
        &self,
        channel: &'static str,
        now: i64,
        lease: Duration,
    ) -> Result<Option<DeliveryJob>, StoreError> {
        let lease_until = now + lease.as_millis() as i64;
        let claimed = self
            .write(move |c| {
                Ok(c.query_row(
                    "UPDATE deliveries SET lease_until = ?3, attempts = attempts + 1
                     WHERE rowid = (SELECT rowid FROM deliveries
                                    WHERE channel = ?1 AND due = 1
                                      AND state IN ('active', 'failed')
                                      AND run_after <= ?2 AND lease_until <= ?2
                                    ORDER BY run_after, rowid LIMIT 1)
                     RETURNING approval_id, message_ref, attempts, shown_version, reminded_seq",
                    params![channel, now, lease_until],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?
                                .map(|m| MessageRef::from_stored(&m)),
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        let Some((approval_id, message_ref, attempts, shown_version, reminded_seq)) = claimed
        else {
            return Ok(None);
        };
        let raw_id = approval_id.clone();
        let record = self
            .read(move |c| {
                let id = match stored_id(&approval_id) {
                    Ok(id) => id,
                    Err(reason) => return Ok(Err(reason)),
                };
                load_record(c, &id)
            })
            .await?;
        match record {
            Ok(record) => Ok(Some(DeliveryJob {
                channel,
                message_ref,
                attempts: attempts as u32,
                shown_version,
                reminded_seq,
                record,
            })),
            Err(reason) => {
                let row = Unreadable::new(raw_id, reason);
                self.note_unreadable(Queue::Delivery, std::slice::from_ref(&row));
                self.write(move |c| {
                    c.execute(
                        "UPDATE deliveries SET state = 'failed', last_error = ?3, lease_until = 0,
                            run_after = ?4 + ?5, updated_at = ?4
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![row.id, channel, row.reason, now, UNREADABLE_RETRY_MS],
                    )?;
                    refresh_due(c, &row.id, Some(channel))?;
                    Ok(())
                })
                .await?;
                Ok(None)
            }
        }
    }

    /// Records the end of a delivery attempt.
    pub async fn finish_delivery(
        &self,
        approval_id: &ApprovalId,
        channel: &'static str,
        outcome: DeliveryOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        let approval_id = approval_id.clone();
        self.write(move |c| {
            match outcome {
                DeliveryOutcome::Posted {
                    message_ref,
                    version,
                    reminder_seq,
                    rang,
                } => {
                    // A fresh message already shows the time left: it counts as reminded.
                    let message_ref = message_ref.to_string();
                    c.execute(
                        "UPDATE deliveries SET message_ref = ?3, shown_version = ?4,
                            reminded_seq = ?5, posted_at = COALESCE(posted_at, ?6),
                            updated_at = ?6, lease_until = 0, run_after = 0, attempts = 0,
                            last_error = NULL, last_rang = ?7, state = 'active'
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![
                            approval_id,
                            channel,
                            message_ref,
                            version,
                            reminder_seq,
                            now,
                            rang
                        ],
                    )?;
                }
                DeliveryOutcome::Edited { version } => {
                    c.execute(
                        "UPDATE deliveries SET shown_version = ?3, updated_at = ?4, state = 'active',
                            lease_until = 0, run_after = 0, attempts = 0, last_error = NULL
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, version, now],
                    )?;
                }
                DeliveryOutcome::Reminded { seq, rang } => {
                    c.execute(
                        "UPDATE deliveries SET reminded_seq = ?3, updated_at = ?4, state = 'active',
                            lease_until = 0, run_after = 0, attempts = 0, last_error = NULL,
                            last_rang = COALESCE(?5, last_rang)
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, seq, now, rang],
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
                DeliveryOutcome::Refused { at, error } => {
                    c.execute(
                        "UPDATE deliveries SET state = 'failed', run_after = ?3, last_error = ?4,
                            lease_until = 0, updated_at = ?5
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, at, error, now],
                    )?;
                }
                DeliveryOutcome::Held { until, error } => {
                    c.execute(
                        "UPDATE deliveries SET run_after = ?3, hold_until = ?3, last_error = ?4,
                            lease_until = 0, updated_at = ?5
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![approval_id, channel, until, error, now],
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
            }
            refresh_due(c, approval_id.as_str(), Some(channel))?;
            Ok(())
        })
        .await
    }

    /// The approval as a card shows it now: a delivery that waited for the chat's pace renders
    /// what is true after the wait, not what was when it was claimed. `None` when it is gone
    /// or cannot be decoded (the claimed record is then used).
    pub async fn approval_record(
        &self,
        id: &ApprovalId,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let id = id.clone();
        self.read(move |c| {
            Ok(match load_record_if_present(c, &id)? {
                Some(Ok(record)) => Some(record),
                _ => None,
            })
        })
        .await
    }

    /// The earliest time a delivery on `channel` becomes claimable, if any is waiting.
    pub async fn next_delivery_at(&self, channel: &'static str) -> Result<Option<i64>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT MIN(MAX(run_after, lease_until)) FROM deliveries
                 WHERE channel = ?1 AND due = 1 AND state IN ('active', 'failed')",
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
             state IN ('active', 'failed') AND (
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
    pub id: ApprovalId,
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

/// Where a posted message lives: the chat (a Telegram chat id, a Discord channel id, `console`)
/// and the message in it, each in its platform's notation, which only that notifier reads. The
/// store keeps it as `chat:message`, the text every store file has held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub chat: String,
    pub message: String,
}

impl MessageRef {
    pub fn new(chat: impl ToString, message: impl ToString) -> MessageRef {
        MessageRef {
            chat: chat.to_string(),
            message: message.to_string(),
        }
    }

    /// Reads the stored text. One without a chat (the console wrote those before it named its
    /// chat) keeps its whole text as the message, and is stored back unchanged.
    pub fn from_stored(text: &str) -> MessageRef {
        match text.split_once(':') {
            Some((chat, message)) => MessageRef::new(chat, message),
            None => MessageRef::new("", text),
        }
    }
}

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.chat.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}", self.chat, self.message)
        }
    }
}

pub struct DeliveryJob {
    pub channel: &'static str,
    pub message_ref: Option<MessageRef>,
    pub attempts: u32,
    /// What the message shows now, and the last reminder sent on this channel.
    pub shown_version: i64,
    pub reminded_seq: i64,
    pub record: ApprovalRecord,
}

pub enum DeliveryOutcome {
    /// A new message shows `version`; it counts as reminded up to `reminder_seq`.
    Posted {
        message_ref: MessageRef,
        version: i64,
        reminder_seq: i64,
        /// It rang (false: silent, in quiet hours).
        rang: bool,
    },
    /// The message was edited to show `version`.
    Edited {
        version: i64,
    },
    /// The reminder for `seq` was sent.
    Reminded {
        seq: i64,
        /// Whether a reminder was sent and rang; `None` when none was sent (caught up).
        rang: Option<bool>,
    },
    /// Try again at `at` (a transient failure, or a permanent one retried slowly).
    Retry {
        at: i64,
        error: String,
    },
    /// The chat refused it for good (a blocked bot, a permission removed): shown as `failed`,
    /// and tried again at `at`, slowly, until it goes through.
    Refused {
        at: i64,
        error: String,
    },
    /// The chat answered 429: nothing goes to it before `until`, whatever changes meanwhile.
    Held {
        until: i64,
        error: String,
    },
    Gone {
        error: String,
    },
}

/// An approval as the notifiers render it. The outer Err is the store failing; the inner Err
/// says why this row cannot be decoded.
fn load_record(
    c: &Connection,
    id: &ApprovalId,
) -> Result<Result<ApprovalRecord, String>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT kind, status, version, submitted_json, agent_json, upstream_json,
                context_json, superseded_by, reminder_seq
         FROM approvals WHERE id = ?1",
    )?;
    Ok(stmt.query_row([id], |r| Ok(decode_record(r, id)))?)
}

fn load_record_if_present(
    c: &Connection,
    id: &ApprovalId,
) -> Result<Option<Result<ApprovalRecord, String>>, StoreError> {
    match load_record(c, id) {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn decode_record(r: &rusqlite::Row, id: &ApprovalId) -> Result<ApprovalRecord, String> {
    let status: String = column(r, 1)?;
    let submitted: String = column(r, 3)?;
    let agent: String = column(r, 4)?;
    let upstream: Option<String> = column(r, 5)?;
    let context: Option<String> = column(r, 6)?;
    Ok(ApprovalRecord {
        id: id.clone(),
        kind: column(r, 0)?,
        status: Status::parse(&status),
        version: column(r, 2)?,
        reminder_seq: column(r, 8)?,
        submitted: decode("submitted_json", &submitted)?,
        agent: decode("agent_json", &agent)?,
        upstream: upstream.map(|u| decode("upstream_json", &u)).transpose()?,
        context: context.map(|u| decode("context_json", &u)).transpose()?,
        superseded_by: column(r, 7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::MessageRef;

    #[test]
    fn message_refs_read_back_as_they_were_stored() {
        for text in [
            "4242:17",
            "-1001234:5",
            "555000000000000001:999",
            "console-apr_1-3",
        ] {
            assert_eq!(MessageRef::from_stored(text).to_string(), text);
        }
        let m = MessageRef::from_stored("-1001234:5");
        assert_eq!((m.chat.as_str(), m.message.as_str()), ("-1001234", "5"));
    }
}

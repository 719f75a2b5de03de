//! Delivery: the per-channel queue of messages to post, edit, or remind with.
//!
//! A message holds one or more approvals: each approval has one delivery row per channel, and
//! the rows that share a `message_ref` on a channel are the approvals of one message (SPEC §3.9).
//! A single approval is a group of one; there is no other path.
//!
//! Invariants: **at least once** — a delivery is done only when its outcome is recorded, so a
//! crash between the send and the record repeats one message and never loses one; **one live
//! message per approval and channel** — the message is a column of the approval's own row, set
//! for every approval of a group in the one transaction that records the post, so no approval
//! can end up in two messages, crash or not; **a group is handled as a unit** — it is claimed,
//! paced, held, retried and given up together, and an edit re-renders the whole message from
//! every row that shares it; `due` is kept true exactly while a delivery has work left
//! ([`refresh_due`] is the only place that decides); a `failed` delivery (refused by the chat for
//! good) still has its work and is tried again on a slow schedule, so fixing the cause is enough.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Queue, Store, StoreError, Unreadable, column, decode, stored_id};

/// A delivery whose approval cannot be read is tried again this much later (a restart, or a
/// repair by re-submitting, comes sooner).
const UNREADABLE_RETRY_MS: i64 = 3_600_000;
use crate::approval::{AgentContext, ApprovalId, MoneyContext, Status, WireApproval};
use crate::config::Grouping;

impl Store {
    /// Claims the next message to post, edit or remind with on `channel`, with everything needed
    /// to render it: every approval it holds (a group of one for a lone approval). The writer
    /// only takes the rows; the approvals are read and decoded on a reader thread. One whose
    /// stored record cannot be decoded has its delivery set aside as `failed`, with the reason
    /// (tried again once at the next start), and the others go on.
    ///
    /// Which rows: the earliest due delivery decides. Already posted, it brings every approval
    /// of its message (an edit re-renders them all). Not posted yet, it brings up to
    /// `grouping.max_batch` of the deliveries waiting to be posted on the channel, when at least
    /// `grouping.min_batch` are waiting; otherwise it goes alone.
    pub async fn claim_delivery(
        &self,
        channel: &'static str,
        now: i64,
        lease: Duration,
        grouping: Grouping,
    ) -> Result<Option<DeliveryJob>, StoreError> {
        let lease_until = now + lease.as_millis() as i64;
        let claimed = self
            .write(move |c| claim_rows(c, channel, now, lease_until, grouping))
            .await?;
        if claimed.is_empty() {
            return Ok(None);
        }
        let message_ref = claimed[0].message_ref.clone();
        let attempts = claimed.iter().map(|r| r.attempts).max().unwrap_or(0);
        let ids: Vec<String> = claimed.iter().map(|r| r.approval_id.clone()).collect();
        let records = self
            .read(move |c| {
                ids.iter()
                    .map(|raw| match stored_id(raw) {
                        Ok(id) => load_record(c, &id),
                        Err(reason) => Ok(Err(reason)),
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        let mut members = Vec::new();
        let mut unreadable = Vec::new();
        for (row, record) in claimed.into_iter().zip(records) {
            match record {
                Ok(record) => members.push(Member {
                    shown_version: row.shown_version,
                    reminded_seq: row.reminded_seq,
                    record,
                }),
                Err(reason) => unreadable.push(Unreadable::new(row.approval_id, reason)),
            }
        }
        if !unreadable.is_empty() {
            self.note_unreadable(Queue::Delivery, &unreadable);
            self.write(move |c| {
                for row in &unreadable {
                    c.execute(
                        "UPDATE deliveries SET state = 'failed', last_error = ?3, lease_until = 0,
                            run_after = ?4 + ?5, updated_at = ?4
                         WHERE approval_id = ?1 AND channel = ?2",
                        params![row.id, channel, row.reason, now, UNREADABLE_RETRY_MS],
                    )?;
                    refresh_due(c, &row.id, Some(channel))?;
                }
                Ok(())
            })
            .await?;
        }
        if members.is_empty() {
            return Ok(None);
        }
        Ok(Some(DeliveryJob {
            channel,
            message_ref,
            attempts: attempts as u32,
            members,
        }))
    }

    /// Records the end of a delivery attempt, for every approval of its message at once: one
    /// transaction, so a group's post is recorded on all of its rows or on none.
    pub async fn finish_delivery(
        &self,
        channel: &'static str,
        members: Vec<Shown>,
        outcome: DeliveryOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            for m in &members {
                record_outcome(c, channel, m, &outcome, now)?;
                refresh_due(c, m.id.as_str(), Some(channel))?;
            }
            Ok(())
        })
        .await
    }

    /// The approvals as a message shows them now: a delivery that waited for the chat's pace
    /// renders what is true after the wait, not what was when it was claimed. `None` for one that
    /// is gone or cannot be decoded (its claimed record is then used).
    pub async fn approval_records(
        &self,
        ids: Vec<ApprovalId>,
    ) -> Result<Vec<Option<ApprovalRecord>>, StoreError> {
        self.read(move |c| {
            ids.iter()
                .map(|id| {
                    Ok(match load_record_if_present(c, id)? {
                        Some(Ok(record)) => Some(record),
                        _ => None,
                    })
                })
                .collect()
        })
        .await
    }

    /// How many approvals wait to be posted on `channel` now (claimable, not in a message yet).
    pub async fn waiting_posts(&self, channel: &'static str, now: i64) -> Result<i64, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM deliveries
                 WHERE channel = ?1 AND due = 1 AND state IN ('active', 'failed')
                   AND run_after <= ?2 AND lease_until <= ?2 AND message_ref IS NULL",
                params![channel, now],
                |r| r.get(0),
            )?)
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

/// A claimed delivery row, before its approval is read.
struct ClaimedRow {
    approval_id: String,
    message_ref: Option<MessageRef>,
    attempts: i64,
    shown_version: i64,
    reminded_seq: i64,
}

/// Takes the rows of the next message on `channel` (see [`Store::claim_delivery`]) under one
/// lease, in the order of their lines: the order they were queued in, the same for every edit.
fn claim_rows(
    c: &Connection,
    channel: &str,
    now: i64,
    lease_until: i64,
    grouping: Grouping,
) -> Result<Vec<ClaimedRow>, StoreError> {
    const CLAIMABLE: &str = "channel = ?1 AND due = 1 AND state IN ('active', 'failed')
                             AND run_after <= ?2 AND lease_until <= ?2";
    let head: Option<(i64, Option<String>)> = c
        .query_row(
            &format!(
                "SELECT rowid, message_ref FROM deliveries WHERE {CLAIMABLE}
                 ORDER BY run_after, rowid LIMIT 1"
            ),
            params![channel, now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((head, message_ref)) = head else {
        return Ok(Vec::new());
    };
    let rowids = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Vec<i64>, StoreError> {
        let mut stmt = c.prepare_cached(sql)?;
        let rows = stmt.query_map(p, |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let mut rows = match &message_ref {
        // Posted: every approval of that message, due or not, since an edit shows them all.
        Some(m) => rowids(
            "SELECT rowid FROM deliveries
             WHERE channel = ?1 AND message_ref = ?2 AND state IN ('active', 'failed')",
            &[&channel, m],
        )?,
        None if grouping.is_on() => {
            let waiting = rowids(
                &format!(
                    "SELECT rowid FROM deliveries WHERE {CLAIMABLE} AND message_ref IS NULL
                     ORDER BY run_after, rowid LIMIT ?3"
                ),
                &[&channel, &now, &(grouping.max_batch as i64)],
            )?;
            if waiting.len() >= grouping.min_batch {
                waiting
            } else {
                vec![head]
            }
        }
        None => vec![head],
    };
    rows.sort_unstable();
    let mut take = c.prepare_cached(
        "UPDATE deliveries SET lease_until = ?2, attempts = attempts + 1 WHERE rowid = ?1
         RETURNING approval_id, message_ref, attempts, shown_version, reminded_seq",
    )?;
    let mut claimed = Vec::with_capacity(rows.len());
    for rowid in rows {
        claimed.push(take.query_row(params![rowid, lease_until], |r| {
            Ok(ClaimedRow {
                approval_id: r.get(0)?,
                message_ref: r
                    .get::<_, Option<String>>(1)?
                    .map(|m| MessageRef::from_stored(&m)),
                attempts: r.get(2)?,
                shown_version: r.get(3)?,
                reminded_seq: r.get(4)?,
            })
        })?);
    }
    Ok(claimed)
}

/// Records `outcome` on one approval's row of the message.
fn record_outcome(
    c: &Connection,
    channel: &str,
    m: &Shown,
    outcome: &DeliveryOutcome,
    now: i64,
) -> Result<(), StoreError> {
    let id = m.id.as_str();
    match outcome {
        DeliveryOutcome::Posted { message_ref, rang } => {
            // A fresh message already shows the time left: it counts as reminded.
            c.execute(
                "UPDATE deliveries SET message_ref = ?3, shown_version = ?4,
                    reminded_seq = ?5, posted_at = COALESCE(posted_at, ?6),
                    updated_at = ?6, lease_until = 0, run_after = 0, attempts = 0,
                    last_error = NULL, last_rang = ?7, state = 'active'
                 WHERE approval_id = ?1 AND channel = ?2",
                params![
                    id,
                    channel,
                    message_ref.to_string(),
                    m.version,
                    m.reminder_seq,
                    now,
                    rang
                ],
            )?;
        }
        DeliveryOutcome::Edited => {
            c.execute(
                "UPDATE deliveries SET shown_version = ?3, updated_at = ?4, state = 'active',
                    lease_until = 0, run_after = 0, attempts = 0, last_error = NULL
                 WHERE approval_id = ?1 AND channel = ?2",
                params![id, channel, m.version, now],
            )?;
        }
        DeliveryOutcome::Reminded { rang } => {
            // Only an approval the reminder named has rung (or not); the others are caught up.
            let rang = rang.filter(|_| m.reminded);
            c.execute(
                "UPDATE deliveries SET reminded_seq = ?3, updated_at = ?4, state = 'active',
                    lease_until = 0, run_after = 0, attempts = 0, last_error = NULL,
                    last_rang = COALESCE(?5, last_rang)
                 WHERE approval_id = ?1 AND channel = ?2",
                params![id, channel, m.reminder_seq, now, rang],
            )?;
        }
        DeliveryOutcome::Retry { at, error } => {
            c.execute(
                "UPDATE deliveries SET run_after = ?3, last_error = ?4, lease_until = 0,
                    updated_at = ?5
                 WHERE approval_id = ?1 AND channel = ?2",
                params![id, channel, at, error, now],
            )?;
        }
        DeliveryOutcome::Refused { at, error } => {
            c.execute(
                "UPDATE deliveries SET state = 'failed', run_after = ?3, last_error = ?4,
                    lease_until = 0, updated_at = ?5
                 WHERE approval_id = ?1 AND channel = ?2",
                params![id, channel, at, error, now],
            )?;
        }
        DeliveryOutcome::Held { until, error } => {
            c.execute(
                "UPDATE deliveries SET run_after = ?3, hold_until = ?3, last_error = ?4,
                    lease_until = 0, updated_at = ?5
                 WHERE approval_id = ?1 AND channel = ?2",
                params![id, channel, until, error, now],
            )?;
        }
        DeliveryOutcome::Gone { error } => {
            c.execute(
                "UPDATE deliveries SET state = 'gone', due = 0, last_error = ?3,
                    lease_until = 0, updated_at = ?4
                 WHERE approval_id = ?1 AND channel = ?2",
                params![id, channel, error, now],
            )?;
        }
    }
    Ok(())
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

/// One claimed message: every approval it holds (or will hold, once posted), in line order.
pub struct DeliveryJob {
    pub channel: &'static str,
    /// The message, once posted (the same for every member).
    pub message_ref: Option<MessageRef>,
    /// The most attempts any member has had: the message's backoff.
    pub attempts: u32,
    pub members: Vec<Member>,
}

/// One approval of a claimed message.
pub struct Member {
    /// What the message shows of it now, and the last reminder sent about it on this channel.
    pub shown_version: i64,
    pub reminded_seq: i64,
    pub record: ApprovalRecord,
}

/// What an attempt showed of one approval of the message, to record with its outcome.
#[derive(Debug, Clone)]
pub struct Shown {
    pub id: ApprovalId,
    pub version: i64,
    pub reminder_seq: i64,
    /// A reminder sent by this attempt named it.
    pub reminded: bool,
}

pub enum DeliveryOutcome {
    /// A new message shows every member at its `version`; each counts as reminded up to its
    /// `reminder_seq`.
    Posted {
        message_ref: MessageRef,
        /// It rang (false: silent, in quiet hours).
        rang: bool,
    },
    /// The message was edited to show every member at its `version`.
    Edited,
    /// The reminder was sent for the members it named; every member is caught up to its
    /// `reminder_seq`.
    Reminded {
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

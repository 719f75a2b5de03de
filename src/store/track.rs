//! Tracking: doorbells, the `/updates` cursor, re-reads and reminders.
//!
//! Invariants: a doorbell is never lost — the cursor moves in the same transaction as the rings
//! of its page, and `recheck` counts the rings until a recorded read answers them, so a ring
//! during the read, or a read that dies with its process, leaves the doorbell ringing; a status
//! change bumps the approval's version, which makes every delivery due for an edit (at once, but
//! never inside a chat's 429 hold); a reminder threshold fires once, however often the daemon
//! restarts. A doorbell is deferred, never dropped: after a read, the next one waits
//! [`READ_SPACING`], so however often an agent (or a hostile one) rings, an approval costs at
//! most one OpenTrain read per few seconds.

use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use super::delivery::refresh_due;
use super::{Queue, Store, StoreError, Unreadable, column, stored_id};
use crate::approval::{ApprovalId, Status, WireApproval};

/// The least time between two re-reads of one approval (SPEC guarantee 13). A ring that comes
/// sooner keeps ringing (`recheck`) and is answered when it has passed.
pub const READ_SPACING: Duration = Duration::from_secs(3);

impl Store {
    /// The persisted `/updates` cursor.
    pub async fn cursor(&self) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT value FROM kv WHERE key = 'updates_cursor'",
                [],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Rings the doorbell of every tracked approval in `ids` and, in the same transaction, saves
    /// the cursor that follows them, so a crash cannot advance the cursor past an unrung event.
    /// Returns how many tracked approvals were rung.
    pub async fn ring_and_save_cursor(
        &self,
        ids: Vec<ApprovalId>,
        cursor: Option<String>,
        now: i64,
    ) -> Result<usize, StoreError> {
        let rung = self
            .write(move |c| {
                let mut rung = 0;
                let mut stmt = c.prepare_cached(
                    "UPDATE approvals SET recheck = recheck + 1, updated_at = ?2
                     WHERE id = ?1 AND phase IN ('track', 'verify')",
                )?;
                for id in &ids {
                    rung += stmt.execute(params![id, now])?;
                }
                if let Some(cursor) = cursor {
                    c.execute(
                        "INSERT INTO kv (key, value) VALUES ('updates_cursor', ?1)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        [cursor],
                    )?;
                }
                Ok(rung)
            })
            .await?;
        if rung > 0 {
            self.inner.signals.reads.notify_one();
        }
        Ok(rung)
    }

    /// Starts the ledger again after OpenTrain refused the cursor: the next poll asks without one.
    pub async fn forget_cursor(&self) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute("DELETE FROM kv WHERE key = 'updates_cursor'", [])?;
            Ok(())
        })
        .await
    }

    /// Rings every tracked approval's doorbell once: after the ledger broke (a refused cursor, an
    /// event that did not decode, a long outage) any of them may have been resolved unseen.
    /// Returns how many were rung.
    pub async fn ring_all_tracked(&self, now: i64) -> Result<usize, StoreError> {
        let rung = self
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE approvals SET recheck = recheck + 1, updated_at = ?1
                     WHERE phase = 'track'",
                    [now],
                )?)
            })
            .await?;
        if rung > 0 {
            self.inner.signals.reads.notify_one();
        }
        Ok(rung)
    }

    /// Claims tracked approvals that need a fresh read: a doorbell rang, or `expiresAt` passed.
    /// The doorbells stay until the read is recorded ([`ReadJob::rang`]), so neither one that
    /// rings during the read nor one whose read dies with its process is lost.
    pub async fn claim_reads(
        &self,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ReadJob>, StoreError> {
        let lease_until = now + lease.as_millis() as i64;
        let claimed: Vec<Result<ReadJob, Unreadable>> = self
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "UPDATE approvals SET lease_until = ?2, attempts = attempts + 1
                     WHERE id IN (SELECT id FROM approvals
                                  WHERE recheck > 0 AND +phase = 'track'
                                    AND +run_after <= ?1 AND +lease_until <= ?1
                                  UNION
                                  SELECT id FROM approvals
                                  WHERE phase = 'track' AND next_read_at <= ?1
                                    AND +run_after <= ?1 AND +lease_until <= ?1
                                  LIMIT ?3)
                     RETURNING id, status, superseded_by, attempts, recheck",
                )?;
                let rows = stmt.query_map(params![now, lease_until, limit as i64], |r| {
                    let id: String = r.get(0)?;
                    Ok(decode_read(r, &id).map_err(|reason| Unreadable::new(id, reason)))
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await?;
        self.keep_readable(Queue::Track, claimed, now).await
    }

    /// Records a re-read. A status change bumps the version, which makes every delivery of the
    /// approval due for an edit.
    pub async fn finish_read(
        &self,
        job: &ReadJob,
        outcome: ReadOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        let (id, rang) = (job.id.clone(), job.rang);
        // Encoded here, not on the writer thread, which every write waits for.
        let upstream_json = match &outcome {
            ReadOutcome::Status {
                upstream: Some(u), ..
            } => Some(serde_json::to_string(u)?),
            _ => None,
        };
        let watched = id.clone();
        let changed = self
            .write(move |c| match outcome {
                ReadOutcome::Status {
                    upstream,
                    status,
                    terminal,
                    next_read_at,
                    backing_off,
                } => {
                    let old: String =
                        c.query_row("SELECT status FROM approvals WHERE id = ?1", [&id], |r| {
                            r.get(0)
                        })?;
                    let changed = old != status.as_str();
                    c.execute(
                        "UPDATE approvals SET status = ?2, phase = ?3,
                                recheck = MAX(recheck - ?9, 0),
                                upstream_json = COALESCE(?4, upstream_json),
                                resolved_at = COALESCE(?5, resolved_at), next_read_at = ?6,
                                next_reminder_at = CASE WHEN ?3 = 'done' THEN NULL
                                                        ELSE next_reminder_at END,
                                version = version + ?7,
                                attempts = CASE WHEN ?10 AND NOT ?7 THEN attempts ELSE 0 END,
                                lease_until = 0, run_after = ?11, reason = NULL, updated_at = ?8
                             WHERE id = ?1",
                        params![
                            id,
                            status.as_str(),
                            if terminal { "done" } else { "track" },
                            upstream_json,
                            upstream
                                .as_ref()
                                .and_then(|u| u.resolved_at())
                                .map(|t| t.timestamp_millis()),
                            if terminal { None } else { next_read_at },
                            changed as i64,
                            now,
                            rang,
                            backing_off && !terminal,
                            now + READ_SPACING.as_millis() as i64,
                        ],
                    )?;
                    if changed {
                        c.execute(
                            "UPDATE deliveries SET run_after = hold_until, updated_at = ?2
                             WHERE approval_id = ?1 AND state = 'active'",
                            params![id, now],
                        )?;
                        refresh_due(c, id.as_str(), None)?;
                    }
                    Ok(changed)
                }
                ReadOutcome::Retry { at, error } => {
                    c.execute(
                        "UPDATE approvals SET run_after = ?2, reason = ?3, lease_until = 0,
                                recheck = MAX(recheck, 1), updated_at = ?4
                             WHERE id = ?1",
                        params![id, at, error, now],
                    )?;
                    Ok(false)
                }
            })
            .await?;
        if changed {
            self.inner.signals.status_changed(watched.as_str());
            self.inner.signals.wake_deliveries();
        }
        Ok(())
    }

    /// How many tracked approvals OpenTrain answered 404 for at their last read (the reason
    /// stays until a read succeeds).
    pub async fn hidden_approvals(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM approvals
                 WHERE phase = 'track' AND substr(reason, 1, ?2) = ?1",
                params![
                    crate::opentrain::NOT_FOUND_TEXT,
                    crate::opentrain::NOT_FOUND_TEXT.len() as i64
                ],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// The earliest time a tracked approval needs a read, if any does.
    pub async fn next_read_at(&self, now: i64) -> Result<Option<i64>, StoreError> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT MIN(t) FROM (
                   SELECT MAX(run_after, lease_until) AS t FROM approvals
                   WHERE recheck > 0 AND +phase = 'track'
                   UNION ALL
                   SELECT MAX(next_read_at, run_after, lease_until) FROM approvals
                   WHERE phase = 'track' AND next_read_at <= ?1
                   UNION ALL
                   SELECT MIN(next_read_at) FROM approvals
                   WHERE phase = 'track' AND next_read_at > ?1)",
                [now],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Fires the reminders that are due: each approval's card is refreshed (its version bumps, so
    /// every message is edited to show the time left) and one reminder per channel is queued.
    /// Several thresholds passed at once (after downtime) make one reminder, not a burst.
    pub async fn fire_reminders(
        &self,
        thresholds: Vec<Duration>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let fired = self
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, expires_at FROM approvals
                     WHERE next_reminder_at <= ?1 AND +phase = 'track' AND +status = 'pending'
                     LIMIT 200",
                )?;
                let due: Vec<(String, Option<i64>)> = stmt
                    .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                for (id, expires) in &due {
                    let (seq, next) = match expires {
                        Some(exp) => crate::reminders::plan(*exp, &thresholds, now),
                        None => (0, None),
                    };
                    c.execute(
                        "UPDATE approvals SET reminder_seq = MAX(reminder_seq, ?2),
                            next_reminder_at = ?3, version = version + 1, updated_at = ?4
                         WHERE id = ?1",
                        params![id, seq, next, now],
                    )?;
                    c.execute(
                        "UPDATE deliveries SET run_after = hold_until
                         WHERE approval_id = ?1 AND state = 'active'",
                        [id],
                    )?;
                    refresh_due(c, id, None)?;
                }
                Ok(due.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
            })
            .await?;
        if !fired.is_empty() {
            self.inner.signals.wake_deliveries();
        }
        Ok(fired)
    }

    /// When the next reminder falls due, if any.
    pub async fn next_reminder_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_reminder_at) FROM approvals
                 WHERE next_reminder_at IS NOT NULL AND +phase = 'track' AND +status = 'pending'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// A webhook doorbell, deduplicated on the delivery id (`X-OpenTrain-Delivery`): in one
    /// transaction, remembers the delivery and rings the approval, unless that delivery was seen
    /// before (OpenTrain retries reuse the id). Returns (duplicate, rung). Ids older than a week
    /// are forgotten: OpenTrain stops retrying after about two and a half hours.
    pub async fn webhook_doorbell(
        &self,
        delivery: Option<String>,
        approval: Option<ApprovalId>,
        now: i64,
    ) -> Result<(bool, bool), StoreError> {
        let (duplicate, rung) = self
            .write(move |c| {
                if let Some(d) = &delivery {
                    c.execute(
                        "DELETE FROM webhook_deliveries WHERE received_at < ?1",
                        [now - 7 * 24 * 3_600_000],
                    )?;
                    let n = c.execute(
                        "INSERT INTO webhook_deliveries (id, received_at) VALUES (?1, ?2)
                         ON CONFLICT(id) DO NOTHING",
                        params![d, now],
                    )?;
                    if n == 0 {
                        return Ok((true, false));
                    }
                }
                let rung = match &approval {
                    Some(id) => {
                        c.execute(
                            "UPDATE approvals SET recheck = recheck + 1, updated_at = ?2
                         WHERE id = ?1 AND phase IN ('track', 'verify')",
                            params![id, now],
                        )? > 0
                    }
                    None => false,
                };
                Ok((false, rung))
            })
            .await?;
        if rung {
            self.inner.signals.reads.notify_one();
        }
        Ok((duplicate, rung))
    }
}

pub struct ReadJob {
    pub id: ApprovalId,
    pub status: Status,
    pub superseded_by: Option<String>,
    pub attempts: u32,
    /// The doorbells this read answers. A read that is recorded clears only these: one that
    /// rang during the read stays, and one whose read never finished (a crash, a lease that
    /// ran out) is still there for the next claim.
    pub rang: i64,
}

#[allow(clippy::large_enum_variant)]
pub enum ReadOutcome {
    Status {
        /// OpenTrain's answer; `None` keeps the last one (the approval is no longer visible).
        upstream: Option<WireApproval>,
        status: Status,
        terminal: bool,
        next_read_at: Option<i64>,
        /// The next read backs off (past `expiresAt`, an unknown status): the attempts keep
        /// counting, so the waits grow, unless the status changed.
        backing_off: bool,
    },
    Retry {
        at: i64,
        error: String,
    },
}

/// One claimed row of [`Store::claim_reads`]; Err says why it cannot be read.
fn decode_read(r: &rusqlite::Row, id: &str) -> Result<ReadJob, String> {
    let status: String = column(r, 1)?;
    Ok(ReadJob {
        id: stored_id(id)?,
        status: Status::parse(&status),
        superseded_by: column(r, 2)?,
        attempts: column::<i64>(r, 3)? as u32,
        rang: column(r, 4)?,
    })
}

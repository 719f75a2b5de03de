//! Verification: the queue of approvals waiting to be read back from OpenTrain.
//!
//! Invariants: a verification is claimed by one short `UPDATE … RETURNING` with a lease, and its
//! outcome recorded by another write, never with a transaction held across the OpenTrain call.
//! Only a verified approval gets deliveries; of the hire requests for one proposal only the
//! newest stays live, whichever is verified first.

use std::time::Duration;

use rusqlite::{OptionalExtension, Row, params};

use super::{Queue, Store, StoreError, Unreadable, column, decode, stored_id};
use crate::approval::{AgentContext, ApprovalId, Kind, MoneyContext, Status, WireApproval};

impl Store {
    /// Claims up to `limit` approvals waiting to be read back from OpenTrain. The writer only
    /// takes the ids; the rows are read and decoded on a reader thread, and a row that cannot be
    /// decoded is set aside as `failed`, with its reason, while the others go on.
    pub async fn claim_verifications(
        &self,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<VerifyJob>, StoreError> {
        let lease_until = now + lease.as_millis() as i64;
        let claimed: Vec<(String, i64)> = self
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "UPDATE approvals SET lease_until = ?2, attempts = attempts + 1
                     WHERE id IN (SELECT id FROM approvals
                                  WHERE phase = 'verify' AND run_after <= ?1 AND lease_until <= ?1
                                  ORDER BY run_after, received_at LIMIT ?3)
                     RETURNING id, attempts",
                )?;
                let rows = stmt.query_map(params![now, lease_until, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let decoded = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT kind, submitted_json, agent_json, upstream_json
                     FROM approvals WHERE id = ?1",
                )?;
                let mut out = Vec::with_capacity(claimed.len());
                for (id, attempts) in claimed {
                    let job = stmt
                        .query_row([&id], |r| Ok(decode_job(r, &id, attempts)))
                        .optional()?;
                    // A claimed row that is gone was pruned meanwhile: nothing to verify.
                    if let Some(job) = job {
                        out.push(job.map_err(|reason| Unreadable::new(id, reason)));
                    }
                }
                Ok(out)
            })
            .await?;
        self.keep_readable(Queue::Verify, decoded, now).await
    }

    /// Keeps OpenTrain's answer for a verification in progress, so a retry of the context fetch
    /// does not read the approval again.
    pub async fn record_upstream(
        &self,
        id: &ApprovalId,
        upstream: &WireApproval,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        let json = serde_json::to_string(upstream)?;
        self.write(move |c| {
            c.execute(
                "UPDATE approvals SET upstream_json = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, json, now],
            )?;
            Ok(())
        })
        .await
    }

    /// Records the end of a verification attempt. `channels` are the notifiers that must show a
    /// verified approval.
    pub async fn finish_verification(
        &self,
        id: &ApprovalId,
        outcome: VerifyOutcome,
        channels: &[&'static str],
        now: i64,
    ) -> Result<VerifyRecorded, StoreError> {
        let status_changes = !matches!(outcome, VerifyOutcome::Retry { .. });
        let id = id.clone();
        let watched = id.clone();
        let channels: Vec<&'static str> = channels.to_vec();
        // Encoded here, not on the writer thread, which every write waits for.
        let encoded = match &outcome {
            VerifyOutcome::Verified {
                upstream, context, ..
            } => Some((
                serde_json::to_string(upstream)?,
                serde_json::to_string(context)?,
            )),
            _ => None,
        };
        let recorded = self
            .write(move |c| {
                let mut recorded = VerifyRecorded::default();
                match outcome {
                    VerifyOutcome::Verified {
                        upstream,
                        context: _,
                        status,
                        next_read_at,
                        reminder_seq,
                        next_reminder_at,
                    } => {
                        let (upstream_json, context_json) =
                            encoded.expect("encoded above for a verified outcome");
                        let terminal = status.is_terminal(upstream.resolved_at.is_some());
                        let created_at = upstream.created_at().map(|t| t.timestamp_millis());
                        c.execute(
                            "UPDATE approvals SET status = ?2, phase = ?3, upstream_json = ?4,
                                context_json = ?5, kind = ?6, proposal_id = ?7, expires_at = ?8,
                                resolved_at = ?9, next_read_at = ?10, reason = NULL,
                                lease_until = 0, run_after = 0, attempts = 0, updated_at = ?11,
                                created_at = ?12, reminder_seq = ?13, next_reminder_at = ?14
                             WHERE id = ?1",
                            params![
                                id,
                                status.as_str(),
                                if terminal { "done" } else { "track" },
                                upstream_json,
                                context_json,
                                upstream.kind,
                                upstream.proposal_id,
                                upstream.expires_at().map(|t| t.timestamp_millis()),
                                upstream.resolved_at().map(|t| t.timestamp_millis()),
                                if terminal { None } else { next_read_at },
                                now,
                                created_at,
                                reminder_seq,
                                if terminal { None } else { next_reminder_at },
                            ],
                        )?;
                        for channel in &channels {
                            c.execute(
                                "INSERT INTO deliveries (approval_id, channel, state, updated_at)
                                 VALUES (?1, ?2, 'active', ?3)
                                 ON CONFLICT(approval_id, channel) DO NOTHING",
                                params![id, channel, now],
                            )?;
                        }
                        recorded.deliveries_created = !channels.is_empty();
                        recorded.tracking = !terminal;
                        // One live hire request per proposal: of the tracked ones, the newest
                        // (by OpenTrain's createdAt) stays; every older one is re-read and shown
                        // as superseded. Either may be verified first.
                        if upstream.kind == Kind::ProposalHire.as_str()
                            && !terminal
                            && let Some(proposal) = &upstream.proposal_id
                        {
                            let mut stmt = c.prepare_cached(
                                "SELECT id, created_at FROM approvals
                                 WHERE proposal_id = ?1 AND id != ?2 AND kind = 'proposal_hire'
                                   AND phase = 'track' AND superseded_by IS NULL",
                            )?;
                            let others: Vec<(String, Option<i64>)> = stmt
                                .query_map(params![proposal, id], |r| Ok((r.get(0)?, r.get(1)?)))?
                                .collect::<Result<_, _>>()?;
                            for (other, other_created) in others {
                                let (old, new) = if other_created.unwrap_or(i64::MIN)
                                    <= created_at.unwrap_or(i64::MAX)
                                {
                                    (other, id.to_string())
                                } else {
                                    (id.to_string(), other)
                                };
                                c.execute(
                                    "UPDATE approvals SET superseded_by = ?2, recheck = recheck + 1,
                                        updated_at = ?3
                                     WHERE id = ?1",
                                    params![old, new, now],
                                )?;
                                recorded.superseded.push((old, new));
                            }
                        }
                    }
                    VerifyOutcome::Rejected { reason } => {
                        c.execute(
                            "UPDATE approvals SET status = 'rejected', phase = 'done', reason = ?2,
                                lease_until = 0, updated_at = ?3
                             WHERE id = ?1",
                            params![id, reason, now],
                        )?;
                    }
                    VerifyOutcome::Retry { at, error } => {
                        c.execute(
                            "UPDATE approvals SET run_after = ?2, reason = ?3, lease_until = 0,
                                updated_at = ?4
                             WHERE id = ?1",
                            params![id, at, error, now],
                        )?;
                    }
                }
                Ok(recorded)
            })
            .await?;
        if status_changes {
            self.inner.signals.status_changed(watched.as_str());
        }
        if recorded.deliveries_created {
            self.inner.signals.wake_deliveries();
        }
        // The reader may be asleep until a later expiry than this approval's.
        if recorded.tracking || !recorded.superseded.is_empty() {
            self.inner.signals.reads.notify_one();
        }
        Ok(recorded)
    }

    /// The earliest time verification work becomes claimable, if any is waiting.
    pub async fn next_verification_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT MIN(MAX(run_after, lease_until)) FROM approvals WHERE phase = 'verify'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

pub struct VerifyJob {
    pub id: ApprovalId,
    pub kind: Option<Kind>,
    pub submitted: WireApproval,
    pub agent: AgentContext,
    /// OpenTrain's answer from an earlier attempt, when only the context fetch is left.
    pub upstream: Option<WireApproval>,
    pub attempts: u32,
}

// Outcomes live for one call and are moved once; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum VerifyOutcome {
    Verified {
        upstream: WireApproval,
        context: MoneyContext,
        status: Status,
        next_read_at: Option<i64>,
        /// Reminder thresholds already passed (never sent late) and when the next is due.
        reminder_seq: i64,
        next_reminder_at: Option<i64>,
    },
    Rejected {
        reason: String,
    },
    Retry {
        at: i64,
        error: String,
    },
}

#[derive(Default, Debug)]
pub struct VerifyRecorded {
    deliveries_created: bool,
    tracking: bool,
    /// (older, newer) hire requests for the same proposal: the older is marked for a re-read
    /// as superseded.
    pub superseded: Vec<(String, String)>,
}

/// One claimed row of [`Store::claim_verifications`], decoded; Err says why it cannot be.
fn decode_job(r: &Row, id: &str, attempts: i64) -> Result<VerifyJob, String> {
    let kind: String = column(r, 0)?;
    let submitted: String = column(r, 1)?;
    let agent: String = column(r, 2)?;
    let upstream: Option<String> = column(r, 3)?;
    Ok(VerifyJob {
        id: stored_id(id)?,
        kind: Kind::parse(&kind),
        submitted: decode("submitted_json", &submitted)?,
        agent: decode("agent_json", &agent)?,
        upstream: upstream.map(|u| decode("upstream_json", &u)).transpose()?,
        attempts: attempts as u32,
    })
}

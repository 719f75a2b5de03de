//! Intake: storing what agents submit.
//!
//! Invariant: **one approval, one row.** The writer is serial, so of any number of concurrent
//! submissions of the same id exactly one is new; the others are told it is a duplicate and
//! change nothing.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::approval::{AgentContext, Kind, WireApproval};

impl Store {
    /// Stores a new submission, or reports the one already stored under that id. Exactly one of
    /// any number of concurrent submissions of the same id is new: the writer is serial. An
    /// approval set aside as `failed` (its stored record could not be read) is stored again from
    /// this submission and verified afresh: re-submitting is how an operator repairs one. So is a
    /// `rejected` one (OpenTrain may show it now, or countersign's token was wrong then).
    pub async fn insert_submission(&self, sub: NewSubmission) -> Result<Inserted, StoreError> {
        // Encoded here, not on the writer thread, which every write waits for.
        let submitted = serde_json::to_string(&sub.approval)?;
        let agent = serde_json::to_string(&sub.agent)?;
        let inserted_id = sub.approval.id.clone();
        let inserted = self
            .write(move |c| {
                let stored: Option<String> = c
                    .prepare_cached(
                        "INSERT INTO approvals (id, kind, status, phase, submitted_json, agent_json,
                            proposal_id, expires_at, received_at, updated_at)
                         VALUES (?1, ?2, 'verifying', 'verify', ?3, ?4, ?5, ?6, ?7, ?7)
                         ON CONFLICT(id) DO UPDATE SET
                            kind = excluded.kind, status = 'verifying', phase = 'verify',
                            submitted_json = excluded.submitted_json,
                            agent_json = excluded.agent_json, upstream_json = NULL,
                            context_json = NULL, proposal_id = excluded.proposal_id,
                            expires_at = excluded.expires_at, reason = NULL, run_after = 0,
                            attempts = 0, lease_until = 0, version = version + 1,
                            updated_at = excluded.updated_at
                         WHERE approvals.phase = 'failed' OR approvals.status = 'rejected'
                         RETURNING status",
                    )?
                    .query_row(
                        params![
                            sub.approval.id,
                            sub.kind.as_str(),
                            submitted,
                            agent,
                            sub.approval.proposal_id,
                            sub.approval.expires_at().map(|t| t.timestamp_millis()),
                            sub.now,
                        ],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(match stored {
                    Some(status) => Inserted { new: true, status },
                    None => Inserted {
                        new: false,
                        status: c
                            .prepare_cached("SELECT status FROM approvals WHERE id = ?1")?
                            .query_row([&sub.approval.id], |r| r.get(0))?,
                    },
                })
            })
            .await?;
        if inserted.new {
            // A re-verified `rejected` one changed status: wake whoever waits on it.
            self.inner.signals.status_changed(&inserted_id);
            self.inner.signals.verify.notify_one();
        }
        Ok(inserted)
    }
}

pub struct NewSubmission {
    pub approval: WireApproval,
    pub kind: Kind,
    pub agent: AgentContext,
    pub now: i64,
}

#[derive(Debug)]
pub struct Inserted {
    pub new: bool,
    pub status: String,
}

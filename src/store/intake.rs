//! Intake: storing what agents submit.
//!
//! Invariant: **one approval, one row.** The writer is serial, so of any number of concurrent
//! submissions of the same id exactly one is new; the others are told it is a duplicate and
//! change nothing.

use rusqlite::params;

use super::{Store, StoreError};
use crate::approval::{AgentContext, Kind, WireApproval};

impl Store {
    /// Stores a new submission, or reports the one already stored under that id. Exactly one of
    /// any number of concurrent submissions of the same id is new: the writer is serial.
    pub async fn insert_submission(&self, sub: NewSubmission) -> Result<Inserted, StoreError> {
        let inserted = self
            .write(move |c| {
                let submitted = serde_json::to_string(&sub.approval)?;
                let agent = serde_json::to_string(&sub.agent)?;
                let n = c.execute(
                    "INSERT INTO approvals (id, kind, status, phase, submitted_json, agent_json,
                        proposal_id, expires_at, received_at, updated_at)
                     VALUES (?1, ?2, 'verifying', 'verify', ?3, ?4, ?5, ?6, ?7, ?7)
                     ON CONFLICT(id) DO NOTHING",
                    params![
                        sub.approval.id,
                        sub.kind.as_str(),
                        submitted,
                        agent,
                        sub.approval.proposal_id,
                        sub.approval.expires_at().map(|t| t.timestamp_millis()),
                        sub.now,
                    ],
                )?;
                let status: String = c.query_row(
                    "SELECT status FROM approvals WHERE id = ?1",
                    [&sub.approval.id],
                    |r| r.get(0),
                )?;
                Ok(Inserted {
                    new: n == 1,
                    status,
                })
            })
            .await?;
        if inserted.new {
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

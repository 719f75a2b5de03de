//! Service notices (§3.8): the problems that keep the owner's messages from being true or from
//! arriving, and the one notice message per problem and channel that tells the owner about each.
//!
//! Invariants: a problem is stored from its first sighting, with when it began, so a restart
//! neither forgets how long it has lasted nor posts its notice again; a notice is recorded in the
//! same write that learns its message, so it is edited, never re-posted; a problem row goes only
//! once every notice about it shows that it cleared.

use rusqlite::{OptionalExtension, params};

use super::{MessageRef, Store, StoreError};

/// A problem as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemRow {
    /// Its key (see `crate::notices::Problem::key`).
    pub problem: String,
    /// When it began (ms).
    pub since: i64,
    /// What was seen first, e.g. the error OpenTrain gave.
    pub detail: String,
    /// When it cleared (ms); `None` while it lasts.
    pub cleared_at: Option<i64>,
}

/// A notice posted on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeRow {
    pub problem: String,
    pub message_ref: MessageRef,
    /// The message already says the problem cleared.
    pub shows_cleared: bool,
}

impl Store {
    /// Every stored problem, lasting or cleared but not yet shown as cleared everywhere.
    pub async fn problems(&self) -> Result<Vec<ProblemRow>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT problem, since, detail, cleared_at FROM problems ORDER BY since, problem",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ProblemRow {
                    problem: r.get(0)?,
                    since: r.get(1)?,
                    detail: r.get(2)?,
                    cleared_at: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records that `problem` is happening. One that is already lasting keeps its start; one that
    /// had cleared begins again now (its notices, if any, are edited back to say so).
    pub async fn raise_problem(
        &self,
        problem: &str,
        detail: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (problem, detail) = (problem.to_string(), detail.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO problems (problem, since, detail) VALUES (?1, ?2, ?3)
                 ON CONFLICT(problem) DO UPDATE SET
                     since = CASE WHEN cleared_at IS NULL THEN since ELSE excluded.since END,
                     detail = CASE WHEN cleared_at IS NULL THEN detail ELSE excluded.detail END,
                     cleared_at = NULL",
                params![problem, now, detail],
            )?;
            c.execute(
                "UPDATE notices SET shows_cleared = 0 WHERE problem = ?1",
                [&problem],
            )?;
            Ok(())
        })
        .await
    }

    /// Records that `problem` has cleared. One that never got a notice is simply forgotten.
    pub async fn clear_problem(&self, problem: &str, now: i64) -> Result<(), StoreError> {
        let problem = problem.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE problems SET cleared_at = ?2 WHERE problem = ?1 AND cleared_at IS NULL",
                params![problem, now],
            )?;
            forget_if_told(c, &problem)?;
            Ok(())
        })
        .await
    }

    /// The notices on `channel`.
    pub async fn notices(&self, channel: &'static str) -> Result<Vec<NoticeRow>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT problem, message_ref, shows_cleared FROM notices WHERE channel = ?1",
            )?;
            let rows = stmt.query_map([channel], |r| {
                Ok(NoticeRow {
                    problem: r.get(0)?,
                    message_ref: MessageRef::from_stored(&r.get::<_, String>(1)?),
                    shows_cleared: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records the notice about `problem` on `channel`: posted at `message_ref`, showing the
    /// problem as lasting or as cleared. Once every notice about a cleared problem says so, the
    /// problem and its notices are forgotten. Returns false (and records nothing) when the
    /// problem is no longer stored.
    pub async fn record_notice(
        &self,
        problem: &str,
        channel: &'static str,
        message_ref: &MessageRef,
        shows_cleared: bool,
    ) -> Result<bool, StoreError> {
        let (problem, message_ref) = (problem.to_string(), message_ref.to_string());
        self.write(move |c| {
            let known = c
                .query_row(
                    "SELECT 1 FROM problems WHERE problem = ?1",
                    [&problem],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !known {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO notices (problem, channel, message_ref, shows_cleared)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(problem, channel) DO UPDATE SET
                     message_ref = excluded.message_ref, shows_cleared = excluded.shows_cleared",
                params![problem, channel, message_ref, shows_cleared],
            )?;
            forget_if_told(c, &problem)?;
            Ok(true)
        })
        .await
    }
}

/// Forgets a cleared problem once no notice about it still shows it as lasting.
fn forget_if_told(c: &rusqlite::Connection, problem: &str) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM problems WHERE problem = ?1 AND cleared_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM notices WHERE problem = ?1 AND shows_cleared = 0)",
        [problem],
    )?;
    Ok(())
}

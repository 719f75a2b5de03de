//! Schema migrations, applied in order at start-up; `PRAGMA user_version` records how many ran.
//! Never edit a migration that has shipped: add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: approvals, their per-channel deliveries, and small key/value state (the /updates cursor).
    r#"
    CREATE TABLE approvals (
        id              TEXT PRIMARY KEY,
        kind            TEXT NOT NULL,
        -- countersign's status: verifying, pending, confirmed, declined, expired, superseded,
        -- rejected, or an unknown OpenTrain value kept raw.
        status          TEXT NOT NULL,
        -- what work the approval needs: 'verify' (read it back from OpenTrain), 'track' (wait for
        -- a terminal status), 'done' (nothing more to read).
        phase           TEXT NOT NULL,
        -- bumped whenever what the owner should see changes; deliveries catch up to it.
        version         INTEGER NOT NULL DEFAULT 1,
        submitted_json  TEXT NOT NULL,
        agent_json      TEXT NOT NULL,
        upstream_json   TEXT,
        context_json    TEXT,
        proposal_id     TEXT,
        -- OpenTrain's createdAt: orders hire requests for the same proposal.
        created_at      INTEGER,
        expires_at      INTEGER,
        resolved_at     INTEGER,
        received_at     INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        reason          TEXT,
        superseded_by   TEXT,
        -- a doorbell rang: re-read the approval from OpenTrain.
        recheck         INTEGER NOT NULL DEFAULT 0,
        -- when to re-read without a doorbell (after expiresAt, since expiry is lazy upstream).
        next_read_at    INTEGER,
        -- reminders before expiry: how many thresholds have fired, and when the next one is due.
        reminder_seq    INTEGER NOT NULL DEFAULT 0,
        next_reminder_at INTEGER,
        -- work claiming: backoff, attempts and the lease of the worker holding it.
        run_after       INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        lease_until     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX approvals_phase_run ON approvals(phase, run_after);
    CREATE INDEX approvals_phase_read ON approvals(phase, next_read_at);
    CREATE INDEX approvals_recheck ON approvals(recheck) WHERE recheck = 1;
    CREATE INDEX approvals_proposal ON approvals(proposal_id) WHERE proposal_id IS NOT NULL;
    CREATE INDEX approvals_received ON approvals(received_at);
    CREATE INDEX approvals_reminder ON approvals(next_reminder_at) WHERE next_reminder_at IS NOT NULL;

    CREATE TABLE deliveries (
        approval_id     TEXT NOT NULL REFERENCES approvals(id),
        channel         TEXT NOT NULL,
        -- 'active', 'gone' (the owner deleted the message: never re-posted) or 'failed'
        -- (a permanent error such as a blocked bot; retried once at the next start).
        state           TEXT NOT NULL,
        message_ref     TEXT,
        shown_version   INTEGER NOT NULL DEFAULT 0,
        -- the approval's reminder_seq this channel has sent a reminder for.
        reminded_seq    INTEGER NOT NULL DEFAULT 0,
        -- 1 while the message is missing or shows an older version than the approval's.
        due             INTEGER NOT NULL DEFAULT 1,
        run_after       INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        lease_until     INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        posted_at       INTEGER,
        updated_at      INTEGER NOT NULL,
        PRIMARY KEY (approval_id, channel)
    );
    CREATE INDEX deliveries_due ON deliveries(channel, due, run_after) WHERE due = 1;

    -- OpenTrain webhook deliveries already handled (X-OpenTrain-Delivery), for dedupe.
    CREATE TABLE webhook_deliveries (
        id          TEXT PRIMARY KEY,
        received_at INTEGER NOT NULL
    );
    CREATE INDEX webhook_deliveries_received ON webhook_deliveries(received_at);

    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 2: the verification queue in claim order, with the lease in the index: claiming reads
    // only the rows it takes (it used to visit, and sort, every approval waiting for verification).
    r#"
    CREATE INDEX approvals_verify_queue ON approvals(phase, run_after, received_at, lease_until);
    "#,
    // 3: housekeeping.
    // - approvals_verify_queue (2) starts with (phase, run_after): approvals_phase_run is a
    //   prefix of it, costs every write, and serves no query the other does not.
    // - Settled approvals are pruned after store.retention, oldest first: an index over the
    //   settled ones only, so pruning never visits the open ones and costs the hot path nothing.
    // - /metrics shows approvals by status; counting them on every scrape visited every row.
    //   Triggers keep the counts instead, in the same transaction as each change.
    // - recheck counts the doorbells no finished read has answered yet (it was a flag that the
    //   claim cleared, so a read cut short by a crash lost its doorbell); its index follows.
    r#"
    DROP INDEX approvals_phase_run;

    DROP INDEX approvals_recheck;
    CREATE INDEX approvals_rechecks ON approvals(recheck) WHERE recheck > 0;

    CREATE INDEX approvals_settled ON approvals(updated_at) WHERE phase = 'done';

    CREATE TABLE status_counts (
        status TEXT PRIMARY KEY,
        n      INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO status_counts (status, n) SELECT status, COUNT(*) FROM approvals GROUP BY status;
    CREATE TRIGGER approvals_counted_in AFTER INSERT ON approvals BEGIN
        INSERT INTO status_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT(status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER approvals_counted_out AFTER DELETE ON approvals BEGIN
        UPDATE status_counts SET n = n - 1 WHERE status = OLD.status;
    END;
    CREATE TRIGGER approvals_counted_moved AFTER UPDATE OF status ON approvals
        WHEN OLD.status IS NOT NEW.status BEGIN
        UPDATE status_counts SET n = n - 1 WHERE status = OLD.status;
        INSERT INTO status_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT(status) DO UPDATE SET n = n + 1;
    END;
    "#,
    // 4: quiet hours (§3.6): whether the last post or reminder on this channel rang (1) or went
    // out silent (0); NULL until one is sent.
    r#"
    ALTER TABLE deliveries ADD COLUMN last_rang INTEGER;
    "#,
    // 5: a chat's 429 hold, kept apart from run_after: a status change or a reminder makes a
    // delivery due at once (run_after drops to the hold), but never sooner than the chat allows.
    r#"
    ALTER TABLE deliveries ADD COLUMN hold_until INTEGER NOT NULL DEFAULT 0;
    "#,
    // 6: service notices (§3.8). A problem that keeps messages from being true or arriving, from
    // when it began; cleared_at is set when it clears, and the row goes once every notice about
    // it says so. One notice message per problem and channel, so a restart never posts twice.
    r#"
    CREATE TABLE problems (
        problem    TEXT PRIMARY KEY,
        since      INTEGER NOT NULL,
        detail     TEXT NOT NULL,
        cleared_at INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE notices (
        problem       TEXT NOT NULL REFERENCES problems(problem) ON DELETE CASCADE,
        channel       TEXT NOT NULL,
        message_ref   TEXT NOT NULL,
        shows_cleared INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (problem, channel)
    ) WITHOUT ROWID;
    "#,
    // 7: grouped messages (§3.9): the deliveries that share a message_ref on a channel are the
    // approvals of one message, and each edit reads all of them, so they are found by it.
    r#"
    CREATE INDEX deliveries_message ON deliveries(channel, message_ref)
        WHERE message_ref IS NOT NULL;
    "#,
];

use rusqlite::Connection;

use super::StoreError;

/// The schema this countersign writes (`PRAGMA user_version` once migrated).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to date, one transaction per migration. A store written by a newer
/// countersign is refused: this one cannot know what the newer schema means.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Open(format!(
            "the store was written by a newer countersign (schema {current}, this one knows {known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v3_store_migrates_and_keeps_its_deliveries() {
        let mut c = Connection::open_in_memory().unwrap();
        let tx = c.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.execute_batch(
            "INSERT INTO approvals (id, kind, status, phase, submitted_json, agent_json,
                 received_at, updated_at)
             VALUES ('apr_1', 'milestone_fund', 'pending', 'track', '{}', '{}', 1, 1);
             INSERT INTO deliveries (approval_id, channel, state, run_after, updated_at)
             VALUES ('apr_1', 'telegram', 'active', 42, 1)",
        )
        .unwrap();
        tx.commit().unwrap();
        migrate(&mut c).unwrap();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let (run_after, hold): (i64, i64) = c
            .query_row(
                "SELECT run_after, hold_until FROM deliveries WHERE approval_id = 'apr_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((run_after, hold), (42, 0));
    }
}

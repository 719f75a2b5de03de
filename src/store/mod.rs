//! The store: the only module that speaks SQL.
//!
//! Invariants it carries:
//! - **Durable before acknowledged.** Every write goes through one writer thread that commits
//!   (WAL, `synchronous=FULL` by default) before it answers; an intake 2xx is sent only after
//!   that answer. Concurrent writes are batched into one transaction (group commit), each in its
//!   own savepoint, so one failing write never undoes another and one fsync serves many.
//! - **No transaction across a network call.** Work is *claimed* by one short `UPDATE …
//!   RETURNING` that sets a lease and counts the attempt; the network call happens outside; the
//!   outcome is recorded by another short write. A lease that runs out (a crashed or stuck worker)
//!   makes the work claimable again, so nothing claimed is ever stranded.
//! - **One daemon per store.** A lock file beside the database keeps a second daemon away, which is
//!   what makes it safe to release every lease at start-up: they belong to a dead process.

mod migrations;

use std::collections::HashMap;
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::approval::{AgentContext, Kind, MoneyContext, Status, WireApproval};
use crate::config::Synchronous;

/// How many queued writes one transaction may carry.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's commit failed: {0}")]
    Commit(String),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Open(String),
    #[error("a write panicked: {0}")]
    Panicked(String),
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// 1 turns group commit off (one commit per write): the benchmark's baseline.
    pub max_batch: usize,
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>, synchronous: Synchronous) -> Self {
        StoreOptions {
            path: path.into(),
            synchronous,
            max_batch: MAX_BATCH,
        }
    }
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

/// Wakes the workers when the store gains work for them.
#[derive(Default)]
pub struct Signals {
    pub verify: Notify,
    pub reads: Notify,
    deliveries: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Signals {
    pub fn delivery(&self, channel: &str) -> Arc<Notify> {
        self.deliveries
            .lock()
            .expect("signals lock")
            .entry(channel.to_string())
            .or_default()
            .clone()
    }
    fn wake_deliveries(&self) {
        for n in self.deliveries.lock().expect("signals lock").values() {
            n.notify_one();
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    signals: Signals,
}

fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = migrations::MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Open(format!(
            "the store was written by a newer countersign (schema {current}, this one knows {known})"
        )));
    }
    for (i, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(current as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store for the daemon: takes the lock, migrates, releases the
    /// leases of a previous run and starts the writer thread.
    pub fn open(options: &StoreOptions) -> Result<Store, StoreError> {
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock_path = lock_path(&options.path);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Open(format!("cannot open {}: {e}", lock_path.display())))?;
        // A daemon that is shutting down holds the lock until its writer has closed the
        // database; give it a moment before calling the store taken.
        let mut tries = 0;
        while lock.try_lock().is_err() {
            tries += 1;
            if tries == 30 {
                return Err(StoreError::Open(format!(
                    "{} is in use by another countersign daemon (lock {} is held)",
                    options.path.display(),
                    lock_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let mut conn = open_connection(&options.path, options.synchronous)?;
        migrate(&mut conn)?;
        // Any lease in the file belongs to a process that is gone (we hold the lock). Work that
        // failed permanently gets one more try per start, after the operator fixed the cause.
        conn.execute_batch(
            "UPDATE approvals SET lease_until = 0 WHERE lease_until != 0;
             UPDATE deliveries SET lease_until = 0 WHERE lease_until != 0;
             UPDATE deliveries SET state = 'active', due = 1, run_after = 0 WHERE state = 'failed';
             UPDATE approvals SET run_after = 0 WHERE phase = 'verify';",
        )?;

        let (tx, rx) = mpsc::channel::<Job>(8192);
        let max_batch = options.max_batch.max(1);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, max_batch);
                // The connection is closed (and the WAL checkpointed) before another daemon
                // may open the store.
                drop(lock);
            })
            .map_err(|e| StoreError::Open(format!("cannot start the writer thread: {e}")))?;

        Ok(Store {
            inner: Arc::new(Inner {
                writer: tx,
                readers: Mutex::new(Vec::new()),
                path: options.path.clone(),
                signals: Signals::default(),
            }),
        })
    }

    pub fn signals(&self) -> &Signals {
        &self.inner.signals
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` inside the next group commit and answers once it is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let r = match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(r) => r,
                Err(p) => Err(StoreError::Panicked(panic_text(&p))),
            };
            let ok = r.is_ok();
            let reply: Reply = Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(r));
            });
            (ok, reply)
        });
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read on a pooled connection off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match inner.readers.lock().expect("reader pool").pop() {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.busy_timeout(Duration::from_secs(5))?;
                    c
                }
            };
            let r = f(&conn);
            inner.readers.lock().expect("reader pool").push(conn);
            r
        })
        .await
        .map_err(|e| StoreError::Panicked(e.to_string()))?
    }

    // ---------------------------------------------------------------- intake

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

    // ---------------------------------------------------------------- verification

    /// Claims up to `limit` approvals waiting to be read back from OpenTrain.
    pub async fn claim_verifications(
        &self,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<VerifyJob>, StoreError> {
        let lease_until = now + lease.as_millis() as i64;
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE approvals SET lease_until = ?2, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM approvals
                              WHERE phase = 'verify' AND run_after <= ?1 AND lease_until <= ?1
                              ORDER BY run_after, received_at LIMIT ?3)
                 RETURNING id, kind, submitted_json, agent_json, upstream_json, attempts",
            )?;
            let rows = stmt.query_map(params![now, lease_until, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut jobs = Vec::new();
            for row in rows {
                let (id, kind, submitted, agent, upstream, attempts) = row?;
                jobs.push(VerifyJob {
                    id,
                    kind: Kind::parse(&kind),
                    submitted: serde_json::from_str(&submitted)?,
                    agent: serde_json::from_str(&agent)?,
                    upstream: upstream.map(|u| serde_json::from_str(&u)).transpose()?,
                    attempts: attempts as u32,
                });
            }
            Ok(jobs)
        })
        .await
    }

    /// Keeps OpenTrain's answer for a verification in progress, so a retry of the context fetch
    /// does not read the approval again.
    pub async fn record_upstream(
        &self,
        id: &str,
        upstream: &WireApproval,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
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
        id: &str,
        outcome: VerifyOutcome,
        channels: &[&'static str],
        now: i64,
    ) -> Result<VerifyRecorded, StoreError> {
        let id = id.to_string();
        let channels: Vec<&'static str> = channels.to_vec();
        let recorded = self
            .write(move |c| {
                let mut recorded = VerifyRecorded::default();
                match outcome {
                    VerifyOutcome::Verified {
                        upstream,
                        context,
                        status,
                        next_read_at,
                        reminder_seq,
                        next_reminder_at,
                    } => {
                        let terminal = status.is_terminal(upstream.resolved_at.is_some());
                        let created_at = upstream.created_at().map(|t| t.timestamp_millis());
                        c.execute(
                            "UPDATE approvals SET status = ?2, phase = ?3, upstream_json = ?4,
                                context_json = ?5, kind = ?6, proposal_id = ?7, expires_at = ?8,
                                resolved_at = ?9, next_read_at = ?10, reason = NULL,
                                lease_until = 0, run_after = 0, updated_at = ?11,
                                created_at = ?12, reminder_seq = ?13, next_reminder_at = ?14
                             WHERE id = ?1",
                            params![
                                id,
                                status.as_str(),
                                if terminal { "done" } else { "track" },
                                serde_json::to_string(&upstream)?,
                                serde_json::to_string(&context)?,
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
                                    (other, id.clone())
                                } else {
                                    (id.clone(), other)
                                };
                                c.execute(
                                    "UPDATE approvals SET superseded_by = ?2, recheck = 1,
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

    // ---------------------------------------------------------------- tracking

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
        ids: Vec<String>,
        cursor: Option<String>,
        now: i64,
    ) -> Result<usize, StoreError> {
        let rung = self
            .write(move |c| {
                let mut rung = 0;
                let mut stmt = c.prepare_cached(
                    "UPDATE approvals SET recheck = 1, updated_at = ?2
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

    /// Claims tracked approvals that need a fresh read: a doorbell rang, or `expiresAt` passed.
    /// Claiming clears the doorbell, so one that rings during the read is not lost.
    pub async fn claim_reads(
        &self,
        now: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ReadJob>, StoreError> {
        let lease_until = now + lease.as_millis() as i64;
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE approvals SET lease_until = ?2, recheck = 0, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM approvals
                              WHERE recheck = 1 AND +phase = 'track'
                                AND +run_after <= ?1 AND +lease_until <= ?1
                              UNION
                              SELECT id FROM approvals
                              WHERE phase = 'track' AND next_read_at <= ?1
                                AND +run_after <= ?1 AND +lease_until <= ?1
                              LIMIT ?3)
                 RETURNING id, status, superseded_by, attempts",
            )?;
            let rows = stmt.query_map(params![now, lease_until, limit as i64], |r| {
                Ok(ReadJob {
                    id: r.get(0)?,
                    status: Status::parse(&r.get::<_, String>(1)?),
                    superseded_by: r.get(2)?,
                    attempts: r.get::<_, i64>(3)? as u32,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records a re-read. A status change bumps the version, which makes every delivery of the
    /// approval due for an edit.
    pub async fn finish_read(
        &self,
        id: &str,
        outcome: ReadOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        let changed = self
            .write(move |c| match outcome {
                ReadOutcome::Status {
                    upstream,
                    status,
                    terminal,
                    next_read_at,
                } => {
                    let old: String =
                        c.query_row("SELECT status FROM approvals WHERE id = ?1", [&id], |r| {
                            r.get(0)
                        })?;
                    let changed = old != status.as_str();
                    c.execute(
                        "UPDATE approvals SET status = ?2, phase = ?3,
                                upstream_json = COALESCE(?4, upstream_json),
                                resolved_at = COALESCE(?5, resolved_at), next_read_at = ?6,
                                next_reminder_at = CASE WHEN ?3 = 'done' THEN NULL
                                                        ELSE next_reminder_at END,
                                version = version + ?7,
                                lease_until = 0, run_after = 0, attempts = 0, reason = NULL,
                                updated_at = ?8
                             WHERE id = ?1",
                        params![
                            id,
                            status.as_str(),
                            if terminal { "done" } else { "track" },
                            upstream.as_ref().map(serde_json::to_string).transpose()?,
                            upstream
                                .as_ref()
                                .and_then(|u| u.resolved_at())
                                .map(|t| t.timestamp_millis()),
                            if terminal { None } else { next_read_at },
                            changed as i64,
                            now,
                        ],
                    )?;
                    if changed {
                        c.execute(
                            "UPDATE deliveries SET run_after = 0, updated_at = ?2
                             WHERE approval_id = ?1 AND state = 'active'",
                            params![id, now],
                        )?;
                        refresh_due(c, &id, None)?;
                    }
                    Ok(changed)
                }
                ReadOutcome::Retry { at, error } => {
                    c.execute(
                        "UPDATE approvals SET run_after = ?2, reason = ?3, lease_until = 0,
                                recheck = 1, updated_at = ?4
                             WHERE id = ?1",
                        params![id, at, error, now],
                    )?;
                    Ok(false)
                }
            })
            .await?;
        if changed {
            self.inner.signals.wake_deliveries();
        }
        Ok(())
    }

    /// The earliest time a tracked approval needs a read, if any does.
    pub async fn next_read_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT MIN(t) FROM (
                   SELECT MAX(run_after, lease_until) AS t FROM approvals
                   WHERE recheck = 1 AND +phase = 'track'
                   UNION ALL
                   SELECT MAX(next_read_at, run_after, lease_until) FROM approvals
                   WHERE phase = 'track' AND next_read_at <= ?1
                   UNION ALL
                   SELECT MIN(next_read_at) FROM approvals
                   WHERE phase = 'track' AND next_read_at > ?1)",
                [crate::worker::now_ms()],
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
                        "UPDATE deliveries SET run_after = 0 WHERE approval_id = ?1",
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
        approval: Option<String>,
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
                            "UPDATE approvals SET recheck = 1, updated_at = ?2
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

    // ---------------------------------------------------------------- delivery

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

    // ---------------------------------------------------------------- reading back

    pub async fn get(&self, id: &str) -> Result<Option<ApprovalView>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let exists: Option<i64> = c
                .query_row("SELECT 1 FROM approvals WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            Ok(Some(load_view(c, &id)?))
        })
        .await
    }

    /// Tracked approvals, newest first. `status` filters on countersign's status.
    pub async fn list(
        &self,
        status: Option<String>,
        limit: usize,
    ) -> Result<Vec<ApprovalView>, StoreError> {
        self.read(move |c| list_views(c, status.as_deref(), limit))
            .await
    }

    /// How many approvals have each status.
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT status, COUNT(*) FROM approvals GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Proves the store accepts a durable write (for `/healthz`).
    pub async fn healthcheck(&self, now: i64) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO kv (key, value) VALUES ('healthcheck', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [now.to_string()],
            )?;
            Ok(())
        })
        .await
    }
}

/// Recomputes whether deliveries of `approval_id` (on `channel`, or all) have work left: a message
/// to post, an edit to catch up with the approval's version, or a reminder to send while pending.
fn refresh_due(c: &Connection, approval_id: &str, channel: Option<&str>) -> Result<(), StoreError> {
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

/// For `countersign list`: reads the store at `path` without the daemon's lock, safely while a
/// daemon runs (WAL readers never block the writer). `all` includes settled approvals.
pub fn list_read_only(
    path: &Path,
    all: bool,
    limit: usize,
) -> Result<Vec<ApprovalView>, StoreError> {
    if !path.exists() {
        return Err(StoreError::Open(format!(
            "no store at {} (has `countersign run` started with this config?)",
            path.display()
        )));
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    c.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != migrations::MIGRATIONS.len() as i64 {
        return Err(StoreError::Open(format!(
            "the store at {} has schema {version}; this countersign reads schema {} (start the daemon once to migrate)",
            path.display(),
            migrations::MIGRATIONS.len()
        )));
    }
    if all {
        list_views(&c, None, limit)
    } else {
        query_views(
            &c,
            "WHERE a.phase != 'done' OR EXISTS (SELECT 1 FROM deliveries d
                 WHERE d.approval_id = a.id AND d.state = 'failed')
             ORDER BY a.received_at DESC, a.id LIMIT ?1",
            params![limit as i64],
        )
    }
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The writer thread: waits for a write, gathers whatever else is queued, runs them all in one
/// transaction (each in a savepoint), commits once, then answers each.
fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in batch.drain(..) {
                // The job never ran; answer it with the error without running it.
                drop(job);
                tracing::error!(error = %msg, "store: cannot begin a transaction");
            }
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            let savepoint = conn.execute_batch("SAVEPOINT op");
            let (ok, reply) = job(&conn);
            if savepoint.is_ok() {
                let end = if ok {
                    "RELEASE op"
                } else {
                    "ROLLBACK TO op; RELEASE op"
                };
                if let Err(e) = conn.execute_batch(end) {
                    tracing::error!(error = %e, "store: savepoint failed");
                }
            }
            replies.push(reply);
        }
        let commit = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        if let Err(e) = &commit {
            tracing::error!(error = %e, "store: commit failed; the batch's writes are not durable");
        }
        for reply in replies {
            reply(commit.clone().map_err(StoreError::Commit));
        }
    }
}

// ---------------------------------------------------------------- types

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

pub struct VerifyJob {
    pub id: String,
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

pub struct ReadJob {
    pub id: String,
    pub status: Status,
    pub superseded_by: Option<String>,
    pub attempts: u32,
}

#[allow(clippy::large_enum_variant)]
pub enum ReadOutcome {
    Status {
        /// OpenTrain's answer; `None` keeps the last one (the approval is no longer visible).
        upstream: Option<WireApproval>,
        status: Status,
        terminal: bool,
        next_read_at: Option<i64>,
    },
    Retry {
        at: i64,
        error: String,
    },
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

/// An approval as `list` and `GET /v1/approvals` show it. Holds no secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub amount: Option<String>,
    pub expires_at: Option<String>,
    pub resolved_at: Option<String>,
    pub received_at: String,
    pub agent: Option<String>,
    pub reason: Option<String>,
    pub superseded_by: Option<String>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub channel: String,
    pub state: String,
    pub posted: bool,
    pub up_to_date: bool,
    pub attempts: i64,
    pub last_error: Option<String>,
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

fn ms_to_rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn load_view(c: &Connection, id: &str) -> Result<ApprovalView, StoreError> {
    let mut views = query_views(c, "WHERE a.id = ?1", params![id])?;
    views
        .pop()
        .ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
}

fn list_views(
    c: &Connection,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<ApprovalView>, StoreError> {
    match status {
        Some(s) => query_views(
            c,
            "WHERE a.status = ?1 ORDER BY a.received_at DESC, a.id LIMIT ?2",
            params![s, limit as i64],
        ),
        None => query_views(
            c,
            "ORDER BY a.received_at DESC, a.id LIMIT ?1",
            params![limit as i64],
        ),
    }
}

fn query_views(
    c: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<ApprovalView>, StoreError> {
    let sql = format!(
        "SELECT a.id, a.kind, a.status, a.context_json, a.agent_json, a.expires_at,
                a.resolved_at, a.received_at, a.reason, a.superseded_by, a.version
         FROM approvals a {tail}"
    );
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<String>>(8)?,
            r.get::<_, Option<String>>(9)?,
            r.get::<_, i64>(10)?,
        ))
    })?;
    let mut views = Vec::new();
    let mut dstmt = c.prepare_cached(
        "SELECT channel, state, message_ref IS NOT NULL, shown_version, attempts, last_error
         FROM deliveries WHERE approval_id = ?1 ORDER BY channel",
    )?;
    for row in rows {
        let (id, kind, status, context, agent, expires, resolved, received, reason, sup, version) =
            row?;
        let context: Option<MoneyContext> =
            context.map(|c| serde_json::from_str(&c)).transpose()?;
        let agent: AgentContext = serde_json::from_str(&agent)?;
        let amount = context
            .as_ref()
            .and_then(|c| c.amount.clone())
            .or_else(|| agent.milestone.as_ref().and_then(|m| m.amount.clone()));
        let deliveries = dstmt
            .query_map([&id], |r| {
                let shown: i64 = r.get(3)?;
                Ok(DeliveryView {
                    channel: r.get(0)?,
                    state: r.get(1)?,
                    posted: r.get(2)?,
                    up_to_date: shown >= version,
                    attempts: r.get(4)?,
                    last_error: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        views.push(ApprovalView {
            id,
            kind,
            status,
            amount,
            expires_at: ms_to_rfc3339(expires),
            resolved_at: ms_to_rfc3339(resolved),
            received_at: ms_to_rfc3339(Some(received)).unwrap_or_default(),
            agent: agent.agent,
            reason,
            superseded_by: sup,
            deliveries,
        });
    }
    Ok(views)
}

//! The writer thread and group commit.
//!
//! Invariant: **durable before acknowledged.** Every write runs on the one writer thread, inside
//! a transaction that is committed before the caller gets its answer. Writes that queue up
//! together share that transaction (one fsync serves many), each in its own savepoint, so one
//! failing write never undoes another. A batch that cannot begin or commit answers every one of
//! its writes with the real reason; after repeated failures the writer reopens its connection,
//! so one stuck transaction cannot fail every later batch.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};
use crate::failures::Streak;

/// Answers a write once its batch's fate is known.
pub(super) type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A queued write. Given the connection, it runs (inside its savepoint) and says whether it
/// succeeded; given the reason its batch could not begin, it does not run and answers with it.
pub(super) type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> (bool, Reply) + Send>;

/// Failed batches in a row before the writer reopens its connection; it then waits twice as
/// many failures before the next reopen, so a dead disk is not reopened on every batch.
const REOPEN_AFTER: u32 = 3;

/// How long the writer's last commit counts as proof that the store takes durable writes. When
/// there is no such proof, `/healthz` makes one probe write, and not more often than this, so
/// however often it is called it cannot load the disk.
pub const HEALTH_FRESH: Duration = Duration::from_secs(30);

/// What the writer thread last saw, for [`Store::health`]: wall-clock milliseconds of its last
/// committed batch and of its last failed one (0: none yet).
#[derive(Default)]
pub(super) struct WriterHealth {
    last_ok: AtomicI64,
    last_err: AtomicI64,
    /// The last probe write `/healthz` made.
    probe: tokio::sync::Mutex<Option<Probe>>,
}

/// A probe write: when it was made, the writer's `last_err` just after it (a failure after the
/// probe makes its answer stale), and how it went.
struct Probe {
    at: i64,
    err_then: i64,
    result: Result<(), String>,
}

impl WriterHealth {
    fn record(&self, ok: bool) {
        let now = chrono::Utc::now().timestamp_millis();
        let slot = if ok { &self.last_ok } else { &self.last_err };
        slot.store(now, Ordering::Relaxed);
    }
}

impl Store {
    /// Runs `f` inside the next group commit and answers once it is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let r = match conn {
                Ok(conn) => match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
                    Ok(r) => r,
                    Err(p) => Err(StoreError::Panicked(panic_text(&p))),
                },
                Err(why) => Err(StoreError::Begin(why.to_string())),
            };
            let ok = r.is_ok();
            let reply: Reply = Box::new(move |commit: Result<(), StoreError>| {
                // A write that never ran reports why, not the commit that did not happen.
                let _ = tx.send(r.and_then(|v| commit.map(|()| v)));
            });
            (ok, reply)
        });
        let sent = self.inner.writer.send(job).await;
        let answer = match sent {
            Ok(()) => rx.await.unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        if answer.is_err() {
            self.inner
                .write_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        answer
    }

    /// Whether the store takes durable writes (`/healthz`), as cheaply as can be known: a batch
    /// the writer committed in the last [`HEALTH_FRESH`] (with no failure since) is proof
    /// enough; otherwise one probe write, whose answer stands for [`HEALTH_FRESH`].
    pub async fn health(&self, now: i64) -> Result<(), StoreError> {
        let fresh = HEALTH_FRESH.as_millis() as i64;
        let health = &self.inner.health;
        let (ok, err) = (
            health.last_ok.load(Ordering::Relaxed),
            health.last_err.load(Ordering::Relaxed),
        );
        if ok > 0 && ok >= err && now - ok < fresh {
            return Ok(());
        }
        // One probe at a time; callers meanwhile get its answer.
        let mut probe = health.probe.lock().await;
        if let Some(p) = &*probe
            && now - p.at < fresh
            && now >= p.at
            && health.last_err.load(Ordering::Relaxed) == p.err_then
        {
            return p.result.clone().map_err(StoreError::Commit);
        }
        let result = self.healthcheck(now).await;
        *probe = Some(Probe {
            at: now,
            err_then: health.last_err.load(Ordering::Relaxed),
            result: result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        });
        result
    }

    /// Proves the store accepts a durable write (the probe behind [`Store::health`]).
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

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The writer thread: waits for a write, gathers whatever else is queued, runs them all in one
/// transaction (each in a savepoint), commits once, then answers each. `reopen` opens a fresh
/// connection when this one keeps failing.
pub(super) fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    reopen: impl Fn() -> Result<Connection, StoreError>,
    health: &WriterHealth,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut failures = Streak::default();
    let mut reopen_at = REOPEN_AFTER;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match run_batch(&conn, &mut batch, health) {
            Ok(()) => {
                let failed = failures.recovered();
                if failed > 0 {
                    tracing::info!(failed, "store: transactions commit again");
                }
                reopen_at = REOPEN_AFTER;
            }
            Err(e) => {
                if failures.failed() {
                    tracing::error!(error = %e, failures = failures.count(),
                        "store: a transaction failed; its writes were answered with this error");
                }
                if failures.count() >= reopen_at {
                    reopen_at = reopen_at.saturating_mul(2);
                    match reopen() {
                        Ok(fresh) => {
                            tracing::warn!(
                                failures = failures.count(),
                                "store: reopened the database connection after repeated failures"
                            );
                            conn = fresh;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "store: cannot reopen the database")
                        }
                    }
                }
            }
        }
    }
}

/// Runs one batch in one transaction and answers each of its writes. Err says why the batch
/// as a whole failed (each write has already been told).
/// The outcome is recorded in `health` before any write is answered, so whoever is answered
/// sees it there.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>, health: &WriterHealth) -> Result<(), String> {
    // A connection left inside a transaction (a failed commit whose rollback failed too) cannot
    // begin another; try to end it first.
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        health.record(false);
        let why = e.to_string();
        for job in batch.drain(..) {
            // The job does not run; it answers with the reason.
            let (_, reply) = job(Err(&why));
            reply(Ok(()));
        }
        return Err(format!("cannot begin: {why}"));
    }
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        // Without its savepoint a failing write could not be undone alone: it does not run.
        if let Err(e) = conn.execute_batch("SAVEPOINT op") {
            let (_, reply) = job(Err(&format!("cannot open a savepoint: {e}")));
            replies.push(reply);
            continue;
        }
        let (ok, reply) = job(Ok(conn));
        let end = if ok {
            "RELEASE op"
        } else {
            "ROLLBACK TO op; RELEASE op"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::error!(error = %e, "store: savepoint failed");
        }
        replies.push(reply);
    }
    let commit = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    });
    health.record(commit.is_ok());
    for reply in replies {
        reply(commit.clone().map_err(StoreError::Commit));
    }
    commit.map_err(|e| format!("commit failed; the batch's writes are not durable: {e}"))
}

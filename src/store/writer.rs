//! The writer thread and group commit.
//!
//! Invariant: **durable before acknowledged.** Every write runs on the one writer thread, inside
//! a transaction that is committed before the caller gets its answer. Writes that queue up
//! together share that transaction (one fsync serves many), each in its own savepoint, so one
//! failing write never undoes another.

use std::panic::AssertUnwindSafe;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};

pub(super) type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
pub(super) type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

impl Store {
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

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The writer thread: waits for a write, gathers whatever else is queued, runs them all in one
/// transaction (each in a savepoint), commits once, then answers each.
pub(super) fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
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

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
//! - **One bad record never stops the rest.** A claim takes ids on the writer; the rows are
//!   decoded on a reader thread, and one that cannot be decoded (a field renamed by another
//!   version, a hand-edited file) is set aside as `failed`, with its reason, while the others
//!   go on. Views decode leniently, so `list` and the hook's `GET` still show such a row.
//! - **One daemon per store.** A lock file beside the database keeps a second daemon away, which is
//!   what makes it safe to release every lease at start-up: they belong to a dead process.
//!
//! Each concern lives in its own file, as its own `impl Store` block: `writer.rs` (group
//! commit), `intake.rs`, `verify.rs`, `track.rs` (doorbells, re-reads, reminders), `delivery.rs`,
//! `views.rs` (`list`, the hook's `GET`, metrics) and `retention.rs` (pruning what is long
//! settled), each with the invariant it keeps. This file opens the store and holds what they
//! share.

mod delivery;
mod intake;
mod migrations;
mod notices;
mod retention;
mod status_watch;
mod track;
mod verify;
mod views;
mod writer;

pub use delivery::{ApprovalRecord, DeliveryJob, DeliveryOutcome, Member, MessageRef, Shown};
pub use intake::{Inserted, NewSubmission};
pub use migrations::SCHEMA_VERSION;
pub use notices::{NoticeRow, ProblemRow};
pub use status_watch::{StatusChanges, StatusWatch};
pub use track::{READ_SPACING, ReadJob, ReadOutcome};
pub use verify::{VerifyJob, VerifyOutcome, VerifyRecorded};
pub use views::{ApprovalView, DeliveryView, Listing, list_read_only};
pub use writer::HEALTH_FRESH;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{FromSql, ToSqlOutput};
use rusqlite::{Connection, OpenFlags, Row, ToSql};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};

use crate::approval::ApprovalId;
use crate::config::Synchronous;
use writer::Job;

/// How many queued writes one transaction may carry.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store cannot start a transaction: {0}")]
    Begin(String),
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
    /// How long a statement waits for a lock held by another connection before it fails.
    pub busy_timeout: Duration,
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>, synchronous: Synchronous) -> Self {
        StoreOptions {
            path: path.into(),
            synchronous,
            max_batch: MAX_BATCH,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Wakes the workers when the store gains work for them.
#[derive(Default)]
pub struct Signals {
    pub verify: Notify,
    pub reads: Notify,
    deliveries: Mutex<HashMap<String, Arc<Notify>>>,
    /// Waiters on one approval's status (the hook's long poll).
    pub status: StatusWatch,
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
    /// Wakes whoever waits on approval `id`: call it after the commit that changed its status.
    fn status_changed(&self, id: &str) {
        self.status.announce(id);
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
    busy_timeout: Duration,
    signals: Signals,
    /// Rows set aside as unreadable since start, by [`Queue`].
    unreadable: [AtomicU64; 3],
    /// Writes that failed since start (for `/metrics`: the log says only some of them).
    write_errors: AtomicU64,
    /// The writer's last commit and failure, for a `/healthz` that costs no fsync.
    health: Arc<writer::WriterHealth>,
}

fn open_connection(
    path: &Path,
    sync: Synchronous,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
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

/// How long `open` waits for a daemon that is shutting down to let go of the lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);

impl Store {
    /// Opens (creating if needed) the store for the daemon: takes the lock, migrates, releases the
    /// leases of a previous run and starts the writer thread. The file work (and the wait for a
    /// daemon that is still shutting down) happens on a blocking thread, never on the runtime.
    pub async fn open(options: &StoreOptions) -> Result<Store, StoreError> {
        let options = options.clone();
        // The writer thread logs where the caller logs.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        tokio::task::spawn_blocking(move || {
            tracing::dispatcher::with_default(&dispatch.clone(), || {
                Store::open_blocking(&options, dispatch)
            })
        })
        .await
        .map_err(|e| StoreError::Panicked(e.to_string()))?
    }

    fn open_blocking(
        options: &StoreOptions,
        dispatch: tracing::Dispatch,
    ) -> Result<Store, StoreError> {
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
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        while lock.try_lock().is_err() {
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Open(format!(
                    "{} is in use by another countersign daemon (lock {} is held)",
                    options.path.display(),
                    lock_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let mut conn = open_connection(&options.path, options.synchronous, options.busy_timeout)?;
        migrations::migrate(&mut conn)?;
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
        let reopen = {
            let (path, sync, busy) = (
                options.path.clone(),
                options.synchronous,
                options.busy_timeout,
            );
            move || open_connection(&path, sync, busy)
        };
        let health = Arc::new(writer::WriterHealth::default());
        let writer_health = health.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    writer::writer_loop(conn, rx, max_batch, reopen, &writer_health)
                });
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
                busy_timeout: options.busy_timeout,
                signals: Signals::default(),
                unreadable: Default::default(),
                write_errors: AtomicU64::new(0),
                health,
            }),
        })
    }

    pub fn signals(&self) -> &Signals {
        &self.inner.signals
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
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
                    c.busy_timeout(inner.busy_timeout)?;
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
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

impl ToSql for ApprovalId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// The work queues a claimed row can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Verify,
    Track,
    Delivery,
}

impl Queue {
    pub const ALL: [Queue; 3] = [Queue::Verify, Queue::Track, Queue::Delivery];

    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Verify => "verify",
            Queue::Track => "track",
            Queue::Delivery => "delivery",
        }
    }
}

/// A claimed row that cannot be read back: a field renamed by another version of countersign,
/// a hand-edited file. It is set aside as `failed`, with this reason, so the rest go on.
#[derive(Debug)]
pub(super) struct Unreadable {
    /// The row's approval id as stored (it may itself be what cannot be read).
    pub id: String,
    pub reason: String,
}

impl Unreadable {
    pub fn new(id: impl Into<String>, problem: impl std::fmt::Display) -> Unreadable {
        Unreadable {
            id: id.into(),
            reason: unreadable_reason(problem),
        }
    }
}

/// Why a stored row cannot be used, as `list` and the hook show it.
fn unreadable_reason(problem: impl std::fmt::Display) -> String {
    format!("the stored record cannot be read: {problem}")
}

impl Store {
    /// How many writes have failed since the start.
    pub fn write_errors(&self) -> u64 {
        self.inner.write_errors.load(Ordering::Relaxed)
    }

    /// How many rows each queue has set aside as unreadable since the start.
    pub fn unreadable_counts(&self) -> [(Queue, u64); 3] {
        Queue::ALL.map(|q| (q, self.inner.unreadable[q as usize].load(Ordering::Relaxed)))
    }

    /// Takes approvals whose stored record cannot be read out of the verify or track queue, to
    /// status and phase `failed` with the reason, shown by `list` and the hook's `GET`. A
    /// re-submission of the approval stores it again and verifies it afresh.
    async fn set_aside(
        &self,
        queue: Queue,
        rows: Vec<Unreadable>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.note_unreadable(queue, &rows);
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE approvals SET status = 'failed', phase = 'failed', reason = ?2,
                    lease_until = 0, next_read_at = NULL, next_reminder_at = NULL,
                    recheck = 0, updated_at = ?3
                 WHERE id = ?1",
            )?;
            for row in &rows {
                stmt.execute(rusqlite::params![row.id, row.reason, now])?;
            }
            Ok(())
        })
        .await?;
        // Their status changed: a waiter learns it at once (see `outcome::Outcome::Unreadable`).
        for id in &ids {
            self.inner.signals.status_changed(id);
        }
        Ok(())
    }

    /// The claimed rows that could be read; the others are set aside (see [`Store::set_aside`]).
    async fn keep_readable<J>(
        &self,
        queue: Queue,
        rows: Vec<Result<J, Unreadable>>,
        now: i64,
    ) -> Result<Vec<J>, StoreError> {
        let mut jobs = Vec::with_capacity(rows.len());
        let mut unreadable = Vec::new();
        for row in rows {
            match row {
                Ok(job) => jobs.push(job),
                Err(u) => unreadable.push(u),
            }
        }
        if !unreadable.is_empty() {
            self.set_aside(queue, unreadable, now).await?;
        }
        Ok(jobs)
    }

    /// Counts and logs rows a claim set aside (they are rare: each is logged).
    fn note_unreadable(&self, queue: Queue, rows: &[Unreadable]) {
        self.inner.unreadable[queue as usize].fetch_add(rows.len() as u64, Ordering::Relaxed);
        for row in rows {
            tracing::error!(approval_id = %row.id, queue = queue.as_str(), reason = %row.reason,
                "a stored record cannot be read; it is marked failed and the others go on");
        }
    }
}

/// One column of a claimed row. A value of the wrong type (a hand-edited file) is that row's
/// problem, returned as text, not an error that would fail the whole claim.
fn column<T: FromSql>(r: &Row, i: usize) -> Result<T, String> {
    r.get::<_, T>(i).map_err(|e| e.to_string())
}

/// Decodes a stored JSON column; an error names the column.
fn decode<T: DeserializeOwned>(name: &str, text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))
}

/// An approval id read back from a row.
fn stored_id(text: &str) -> Result<ApprovalId, String> {
    ApprovalId::parse(text).map_err(|e| format!("id {text:?}: {e}"))
}

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
//!
//! Each concern lives in its own file, as its own `impl Store` block: [`writer`] (group commit),
//! [`intake`], [`verify`], [`track`] (doorbells, re-reads, reminders), [`delivery`] and [`views`]
//! (`list`, the hook's `GET`, metrics). This file opens the store and holds what they share.

mod delivery;
mod intake;
mod migrations;
mod status_watch;
mod track;
mod verify;
mod views;
mod writer;

pub use delivery::{ApprovalRecord, DeliveryJob, DeliveryOutcome};
pub use intake::{Inserted, NewSubmission};
pub use status_watch::{StatusChanges, StatusWatch};
pub use track::{ReadJob, ReadOutcome};
pub use verify::{VerifyJob, VerifyOutcome, VerifyRecorded};
pub use views::{ApprovalView, DeliveryView, list_read_only};

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Notify, mpsc};

use crate::config::Synchronous;
use writer::Job;

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
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer::writer_loop(conn, rx, max_batch);
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
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

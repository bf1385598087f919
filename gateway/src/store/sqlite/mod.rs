//! The embedded dialect: SQLite in WAL mode with `synchronous=FULL`.
//!
//! | file | what it holds |
//! |---|---|
//! | `connection` | opening connections; SQLite's errors as [`StoreError`]s (the one place) |
//! | `migrations` | the versioned schema under `gateway/migrations/sqlite/` and its backfills |
//! | `writer` | the group-commit writer thread |
//! | `participants` | participant rows, the change log, idempotency records |
//! | `sync_queue` | outbound delivery rows |
//! | `inbox` | inbound changes and their settling |
//! | `audit_log` | the chained audit log and its verification |
//! | `maintenance` | sealing, key checks and key rotation |
//!
//! Writes of participants go through one writer thread that drains a queue
//! of pending writes into a single transaction (group commit). Reads use a
//! small pool of separate connections, which WAL lets run beside the
//! writer. Sync and inbox bookkeeping commit on connections of their own;
//! SQLite serialises them with the writer's commits, which is what makes
//! each read-then-write of the rules safe here.

mod audit_log;
mod connection;
mod inbox;
mod maintenance;
mod migrations;
mod participants;
mod sync_queue;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use audit_log::verify_audit_log;
pub(crate) use maintenance::rotate_keys;
pub(crate) use migrations::migrate_only;

use self::{
    connection::open_connection,
    writer::{Context, Counters, Job, QUEUE_DEPTH},
};
use crate::{
    audit::AuditKey,
    clock::Clock,
    crypto::Keyring,
    error::Error,
    store::{
        Maintenance, MigrationReport, Rotation, RotationProgress, StoreError, StoreOptions, SyncConfig, WriteStats,
        error::Result,
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::Ordering},
    thread::JoinHandle,
};
use tokio::sync::{mpsc, oneshot};

/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

pub(crate) struct SqliteStore {
    path: PathBuf,
    /// Sync bookkeeping (claims, outcomes) beside the group-commit writer.
    sync_conn: Arc<Mutex<Connection>>,
    /// The dispatcher's claims and outcomes. `synchronous = NORMAL`: still
    /// atomic, but not synced to disk at every commit; a power cut may lose
    /// the last few, which only makes deliveries due again, and reconciling
    /// an already delivered version changes nothing.
    bookkeeping_conn: Arc<Mutex<Connection>>,
    counters: Arc<Counters>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Targets and wake-up for writes made outside the writer (inbound).
    sync: SyncConfig,
    /// Chains the audit log.
    audit_key: AuditKey,
    /// Seals national ids on insert and opens them on read: the only place
    /// they are encrypted or decrypted.
    keyring: Arc<Keyring>,
    clock: Clock,
}

/// Creates the directory a database file goes in.
fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("cannot create data directory {}: {e}", dir.display())))?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending
    /// migrations, seals and checks national ids, queues participants for
    /// targets new to them and starts the writer. Blocks.
    pub(crate) fn open(path: &Path, options: StoreOptions) -> Result<(Self, MigrationReport)> {
        let StoreOptions { sync, keyring, audit_key, clock, .. } = options;
        create_parent(path)?;
        let mut conn = open_connection(path, false)?;
        let report = migrations::migrate(&mut conn, clock.now())?;
        maintenance::seal_plaintext_national_ids(&mut conn, &keyring)?;
        maintenance::check_keys(&conn, &keyring)?;
        migrations::backfill_sync(&conn, &sync.targets, clock.now())?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let counters = Arc::new(Counters::default());
        let cx = Context {
            counters: Arc::clone(&counters),
            sync: sync.clone(),
            keyring: Arc::clone(&keyring),
            audit_key: audit_key.clone(),
            clock: clock.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::writer_loop(conn, rx, &cx))
            .map_err(|e| StoreError::Internal(format!("cannot start writer thread: {e}")))?;
        Ok((
            Self {
                path: path.to_owned(),
                sync_conn: Arc::new(Mutex::new(open_connection(path, false)?)),
                bookkeeping_conn: Arc::new(Mutex::new({
                    let conn = open_connection(path, false)?;
                    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
                    conn
                })),
                counters,
                queue: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                readers: Arc::new(Mutex::new(Vec::new())),
                sync,
                audit_key,
                keyring,
                clock,
            },
            report,
        ))
    }

    /// Hands a job to the writer and waits for its answer (after commit).
    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Job) -> Result<T, Error> {
        let queue = self.queue.lock().expect("queue lock").clone();
        let Some(queue) = queue else {
            return Err(Error::Unavailable("the store is shutting down".into()));
        };
        let (tx, rx) = oneshot::channel();
        queue.send(make(tx)).await.map_err(|_| Error::Unavailable("the writer has stopped".into()))?;
        rx.await.map_err(|_| Error::Internal("the writer dropped a write without answering".into()))?
    }

    /// Runs `f` in a transaction on the sync connection, on the blocking
    /// pool (SQLite serialises it with the writer's commits).
    async fn sync_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, DateTime<Utc>) -> Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        self.write_on(Arc::clone(&self.sync_conn), f).await
    }

    /// Like `sync_write`, on the dispatcher's bookkeeping connection.
    async fn bookkeeping_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, DateTime<Utc>) -> Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        self.write_on(Arc::clone(&self.bookkeeping_conn), f).await
    }

    /// Runs `f` in a write transaction on `conn`, with the time read once
    /// the write lock is held, so that what it stamps is never earlier than
    /// a commit it waited for.
    async fn write_on<T: Send + 'static>(
        &self,
        conn: Arc<Mutex<Connection>>,
        f: impl FnOnce(&Connection, DateTime<Utc>) -> Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().expect("sync connection lock");
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx, clock.now())?;
            tx.commit()?;
            Ok::<_, StoreError>(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("sync task failed: {e}")))?
        .map_err(Error::from)
    }

    /// Runs `f` on a pooled read connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let pool = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().expect("reader pool lock").pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&path, true)?,
            };
            let result = f(&conn);
            let mut idle = pool.lock().expect("reader pool lock");
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
        .map_err(Error::from)
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn rotate_keys(&self, batch: usize, progress: RotationProgress) -> Result<Rotation, Error> {
        let path = self.path.clone();
        let keyring = Arc::clone(&self.keyring);
        tokio::task::spawn_blocking(move || rotate_keys(&path, &keyring, batch, progress))
            .await
            .map_err(|e| Error::Internal(format!("key rotation failed: {e}")))?
            .map_err(Error::from)
    }

    fn write_stats(&self) -> WriteStats {
        WriteStats {
            writes: self.counters.writes.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
        }
    }

    async fn close(&self) {
        // Dropping the sender lets the writer finish what is queued and stop.
        drop(self.queue.lock().expect("queue lock").take());
        let handle = self.writer.lock().expect("writer lock").take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        self.readers.lock().expect("reader pool lock").clear();
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
    }
}

/// See [`crate::store::conformance::sealed_national_ids`].
#[cfg(any(test, feature = "testsuite"))]
pub(crate) fn sealed_national_ids(path: &Path) -> Vec<Vec<u8>> {
    let conn = open_connection(path, true).expect("the database opens");
    let mut stmt = conn.prepare("SELECT national_id_sealed FROM participants ORDER BY position").expect("prepares");
    stmt.query_map([], |r| r.get(0)).expect("reads").collect::<Result<_, _>>().expect("reads")
}

//! The PostgreSQL dialect, for several gateway instances on one database.
//!
//! Every write is one transaction on a small pool of connections; PostgreSQL
//! already shares a WAL flush between commits that arrive together, so no
//! batching of our own sits in front of it. Where SQLite's single writer made
//! a read-then-write safe, a lock does here, taken before the read:
//!
//! - a participant's row (`SELECT … FOR UPDATE`) before a change of it is
//!   planned: two instances changing one person queue, and the second plans
//!   from the first's result (its etag check then sees the new version);
//! - a transaction-scoped advisory lock on the national id's hash before a
//!   registration: the second of two racing registrations of one person sees
//!   the first and answers ALREADY_EXISTS or replays it;
//! - a delivery row (`FOR UPDATE`), an inbox entry and a feed's reader row
//!   before they are settled.
//!
//! What readers see is ordered by the visibility horizon, not by a lock: a
//! change-log row carries its transaction id (`xid8`), and a reader takes
//! only rows below the oldest transaction still open
//! (`pg_snapshot_xmin(pg_current_snapshot())`), in (transaction, sequence)
//! order. A change that commits late has a transaction id at or above that
//! horizon, so it sorts after every cursor already handed out: it is never
//! skipped and never sent twice. Audit entries are appended unchained and
//! chained in the background below the same horizon (`audit_log`).
//!
//! | file | what it holds |
//! |---|---|
//! | `connection` | connecting, the pool, prepared statements; PostgreSQL's errors as [`StoreError`](super::StoreError)s (the one place) |
//! | `migrations` | the versioned schema and its runner |
//! | `participants` | participant rows, the change log, idempotency records |
//! | `sync_queue` | outbound delivery rows and their leases |
//! | `inbox` | inbound changes, their settling, and one reader per feed |
//! | `audit_log` | appending, chaining below the horizon, verifying |
//! | `maintenance` | key checks, start-up backfills and key rotation |
//! | `signals` | wake-ups between instances (LISTEN/NOTIFY) |
//! | `testing` | a database of its own for each test, made and dropped |

mod audit_log;
mod connection;
mod inbox;
mod maintenance;
mod migrations;
mod participants;
mod signals;
mod sync_queue;
#[cfg(any(test, feature = "testsuite"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub(crate) use audit_log::verify_audit_log;
pub(crate) use migrations::migrate;

use self::connection::{Pool, Pooled};
use crate::{
    audit::AuditKey,
    clock::Clock,
    crypto::Keyring,
    error::Error,
    store::{
        Maintenance, MigrationReport, Rotation, RotationProgress, StoreOptions, SyncConfig, WriteStats, error::Result,
    },
};
use async_trait::async_trait;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};
use tokio::task::JoinHandle;

pub(crate) struct PostgresStore {
    pool: Arc<Pool>,
    /// Targets every write is queued for, and this instance's dispatcher.
    sync: SyncConfig,
    audit_key: AuditKey,
    keyring: Arc<Keyring>,
    clock: Clock,
    /// This instance, as its delivery leases and feed claims name it.
    instance: String,
    writes: AtomicU64,
    /// Wakes this instance's readers and tells the other instances.
    signals: Arc<signals::Signals>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl PostgresStore {
    /// Migrates the database at `url` (once, whoever starts first), does
    /// the start-up work once (key checks, queueing participants for new
    /// targets), and starts the audit chainer and the wake-ups.
    pub(crate) async fn open(url: &str, options: StoreOptions) -> Result<(Self, MigrationReport)> {
        let StoreOptions { sync, keyring, audit_key, clock, pool_size, .. } = options;
        let report = migrate(url).await?;
        let pool = Arc::new(Pool::new(url, pool_size));
        maintenance::start_up(&pool, &keyring, &sync.targets, clock.now()).await?;
        let instance = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let signals = Arc::new(signals::Signals::new(
            instance.clone(),
            sync.wake.clone(),
            sync.changes.clone(),
            sync.inbox.clone(),
        ));
        let mut background = vec![signals::listen(url.to_owned(), Arc::clone(&signals))];
        background.push(signals::announce(Arc::clone(&pool), Arc::clone(&signals)));
        background.push(audit_log::chainer(Arc::clone(&pool), audit_key.clone(), Arc::clone(&signals)));
        tracing::info!(instance = %instance, "serving from PostgreSQL");
        Ok((
            Self {
                pool,
                sync,
                audit_key,
                keyring,
                clock,
                instance,
                writes: AtomicU64::new(0),
                signals,
                background: Mutex::new(background),
            },
            report,
        ))
    }

    async fn conn(&self) -> Result<Pooled<'_>> {
        self.pool.get().await
    }

    /// After a commit that wrote a participant version: counts it and wakes
    /// the dispatchers and change readers here and on every instance.
    fn committed_version(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.signals.changed();
    }
}

#[async_trait]
impl Maintenance for PostgresStore {
    async fn rotate_keys(&self, batch: usize, progress: RotationProgress) -> Result<Rotation, Error> {
        Ok(maintenance::rotate_keys(&self.pool, &self.keyring, batch, progress).await?)
    }

    fn write_stats(&self) -> WriteStats {
        // One commit per write: PostgreSQL groups the flushes itself.
        let writes = self.writes.load(Ordering::Relaxed);
        WriteStats { writes, commits: writes }
    }

    async fn close(&self) {
        let background: Vec<_> = std::mem::take(&mut *self.background.lock().expect("background lock"));
        for task in background {
            task.abort();
        }
        // What is appended is chained by whichever instance runs next; a
        // last pass here keeps a single instance's log whole at rest.
        if let Err(e) = audit_log::chain_pending(&self.pool, &self.audit_key).await {
            tracing::warn!(error = %e, "the audit log could not be chained at shutdown; the next start chains it");
        }
        self.pool.close();
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Ok(mut background) = self.background.lock() {
            for task in background.drain(..) {
                task.abort();
            }
        }
    }
}

/// See [`crate::store::migrate`]: migrates, then checks the keys.
pub(crate) async fn migrate_checked(url: &str, keyring: Option<&Keyring>) -> Result<MigrationReport> {
    let report = migrate(url).await?;
    if let Some(keyring) = keyring {
        maintenance::check(&Pool::new(url, 1), keyring).await?;
    }
    Ok(report)
}

/// See [`crate::store::rotate_keys`]: on a connection of its own.
pub(crate) async fn rotate_keys(
    url: &str,
    keyring: &Keyring,
    batch: usize,
    progress: RotationProgress,
) -> std::result::Result<Rotation, Error> {
    let pool = Pool::new(url, 1);
    maintenance::rotate_keys(&pool, keyring, batch, progress).await
}

/// The server and database of a URL, without its user's password.
pub(crate) fn describe(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return "(not a URL)".into() };
    let rest = &url[start..];
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    // The user and password end at the authority's last `@` (a password
    // may hold one); the authority ends at the first `/`.
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    match path {
        Some(path) => format!("{host}/{path}"),
        None => host.to_owned(),
    }
}

/// A transaction-scoped advisory lock key from the first eight bytes of a
/// hash: two registrations of one person take the same key.
fn lock_key(hash: &[u8]) -> i64 {
    let mut bytes = [0u8; 8];
    for (b, h) in bytes.iter_mut().zip(hash) {
        *b = *h;
    }
    i64::from_be_bytes(bytes)
}

/// See [`crate::store::conformance::sealed_national_ids`].
#[cfg(any(test, feature = "testsuite"))]
pub(crate) async fn sealed_national_ids(url: &str) -> Vec<Vec<u8>> {
    let client = connection::connect(url).await.expect("the database answers");
    let rows = client.query("SELECT national_id_sealed FROM participants ORDER BY position", &[]).await.expect("reads");
    rows.iter().map(|r| r.get(0)).collect()
}

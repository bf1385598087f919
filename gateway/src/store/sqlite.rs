//! The embedded store: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Writes go through one writer thread that drains a queue of pending writes
//! into a single transaction (group commit): each write runs in its own
//! savepoint, so one refused write rolls back alone, and every caller is
//! answered only after the shared commit. Reads use a small pool of separate
//! connections, which WAL lets run beside the writer.

use super::{
    ChangeRecord, Committed, IdempotencyKey, InboxEntry, InboxFilter, InboxItem, ListPage, ListQuery, MeasureInstance,
    Mutation, NewParticipant, Origin, Settle, Settled, Store, SyncOutcome, SyncStatus, SyncTask, etag_for,
    resource_name,
};
use crate::{
    audit::{AuditEntry, AuditKey, AuditQuery, AuditRecord, Break, GENESIS, Verifier, chain_hash},
    crypto::Keyring,
    error::Error,
};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use hurtigspor_proto::v1::Participant;
use prost::Message;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
};
use tokio::sync::{mpsc, oneshot};

/// SQLite's errors in the gateway's terms: what a retry may fix is
/// UNAVAILABLE, the rest is a bug.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked | DiskFull | CannotOpen | SystemIoFailure | OutOfMemory) => {
                Self::Unavailable(e.to_string())
            }
            _ => Self::Internal(e.to_string()),
        }
    }
}

/// Versioned migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "sync", include_str!("../../migrations/sqlite/0002_sync.sql")),
    (3, "inbound", include_str!("../../migrations/sqlite/0003_inbound.sql")),
    (4, "national_id_encryption", include_str!("../../migrations/sqlite/0004_national_id_encryption.sql")),
    (5, "audit", include_str!("../../migrations/sqlite/0005_audit.sql")),
];

/// Most writes committed together.
const MAX_BATCH: usize = 256;
/// Pending writes the queue holds before callers wait.
const QUEUE_DEPTH: usize = 4096;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

type Reply = oneshot::Sender<Result<Committed, Error>>;
type AuditReply = oneshot::Sender<Result<(), Error>>;

enum Job {
    Create(Box<NewParticipant>, Reply),
    Mutate(Box<Mutation>, Reply),
    /// Audit entries of reads: committed with the writes of the same batch.
    Audit(Vec<AuditEntry>, AuditReply),
}

/// A job's outcome, sent once the batch is committed. Answers live only
/// until the batch commits, so their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Write(Reply, Result<Committed, Error>),
    Audit(AuditReply, Result<(), Error>),
}

/// Which targets every accepted write must reach, and whom to wake when
/// there is new work.
#[derive(Clone, Default)]
pub struct SyncConfig {
    pub targets: Vec<String>,
    pub wake: Arc<tokio::sync::Notify>,
}

pub struct SqliteStore {
    path: PathBuf,
    /// Sync bookkeeping (claims, outcomes) beside the group-commit writer.
    sync_conn: Arc<Mutex<Connection>>,
    /// The dispatcher's claims and outcomes. `synchronous = NORMAL`: still
    /// atomic, but not synced to disk at every commit; a power cut may lose
    /// the last few, which only makes deliveries due again, and reconciling
    /// an already delivered version changes nothing.
    bookkeeping_conn: Arc<Mutex<Connection>>,
    stats: Arc<WriteStats>,
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
}

/// Counters of the write path: how many writes shared how many commits.
#[derive(Debug, Default)]
pub struct WriteStats {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
}

/// What a key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key id values were moved to.
    pub active: String,
    /// Values re-encrypted by this run.
    pub reencrypted: usize,
    /// False when `progress` stopped it early.
    pub finished: bool,
    /// How many national ids each key id holds now.
    pub by_key: std::collections::BTreeMap<String, usize>,
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i64>,
    pub current: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending
    /// migrations and starts the writer. `audit_key` chains the audit log.
    /// National ids are encrypted with [`Keyring::process_local`], a key
    /// that lives as long as this process: for tests and benchmarks. The
    /// gateway opens with [`SqliteStore::open_with`].
    pub fn open(path: &Path, audit_key: AuditKey) -> Result<(Self, MigrationReport), Error> {
        Self::open_with_sync(path, SyncConfig::default(), audit_key)
    }

    /// Like [`SqliteStore::open`]; every accepted write also records, in
    /// its own transaction, that each of `sync.targets` must reach it.
    pub fn open_with_sync(
        path: &Path,
        sync: SyncConfig,
        audit_key: AuditKey,
    ) -> Result<(Self, MigrationReport), Error> {
        Self::open_with(path, sync, Keyring::process_local(), audit_key)
    }

    /// Like [`SqliteStore::open_with_sync`], with national ids encrypted by
    /// `keyring`. National ids a migration left in plain text are encrypted
    /// first; opening fails, naming the key id, when the database holds
    /// values under a key the keyring lacks or cannot decrypt.
    pub fn open_with(
        path: &Path,
        sync: SyncConfig,
        keyring: Arc<Keyring>,
        audit_key: AuditKey,
    ) -> Result<(Self, MigrationReport), Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Unavailable(format!("cannot create data directory {}: {e}", dir.display())))?;
        }
        let mut conn = open_connection(path, false)?;
        let report = migrate(&mut conn)?;
        if report.applied.contains(&3) {
            backfill_case_numbers(&conn)?;
        }
        seal_plaintext_national_ids(&mut conn, &keyring)?;
        check_keys(&conn, &keyring)?;
        backfill_sync(&conn, &sync.targets)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriteStats::default());
        let writer_stats = Arc::clone(&stats);
        let writer_sync = sync.clone();
        let writer_key = audit_key.clone();
        let writer_keyring = Arc::clone(&keyring);
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &writer_stats, &writer_sync, &writer_keyring, &writer_key))
            .map_err(|e| Error::Internal(format!("cannot start writer thread: {e}")))?;
        Ok((
            Self {
                path: path.to_owned(),
                sync_conn: Arc::new(Mutex::new(open_connection(path, false)?)),
                bookkeeping_conn: Arc::new(Mutex::new({
                    let conn = open_connection(path, false)?;
                    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
                    conn
                })),
                stats,
                queue: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                readers: Arc::new(Mutex::new(Vec::new())),
                sync,
                audit_key,
                keyring,
            },
            report,
        ))
    }

    /// Re-encrypts under the active key every national id stored under
    /// another key, `batch` per transaction, oldest first. After each batch
    /// `progress(done, total)` is told how far it got; `Break` stops there.
    /// Each batch commits on its own, so an interrupted rotation keeps what
    /// it did and the next one carries on; with nothing left to do it
    /// changes nothing. Runs on its own connection beside a serving gateway.
    /// Blocks: call it off the async runtime.
    pub fn rotate_keys(
        &self,
        batch: usize,
        mut progress: impl FnMut(usize, usize) -> std::ops::ControlFlow<()>,
    ) -> Result<Rotation, Error> {
        let keyring = &self.keyring;
        let active = keyring.active();
        let mut conn = open_connection(&self.path, false)?;
        let total: usize =
            conn.query_row("SELECT count(*) FROM participants WHERE national_id_key IS NOT ?1", [active], |r| {
                r.get(0)
            })?;
        let mut done = 0;
        let mut after = 0i64;
        let mut finished = true;
        loop {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let rows: Vec<(i64, String, SealedColumns)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT position, id, national_id_key, national_id_sealed FROM participants
                     WHERE position > ?1 AND national_id_key IS NOT ?2 ORDER BY position LIMIT ?3",
                )?;
                stmt.query_map(params![after, active, batch.max(1) as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, (r.get(2)?, r.get(3)?)))
                })?
                .collect::<Result<_, _>>()?
            };
            let Some(last) = rows.last().map(|r| r.0) else { break };
            for (_, id, (key_id, sealed)) in rows {
                let national_id = open_national_id(keyring, &id, key_id.clone(), sealed.clone())?;
                let value = keyring.seal(&id, &national_id)?;
                tx.execute(
                    "UPDATE participants SET national_id_key = ?2, national_id_sealed = ?3
                     WHERE id = ?1 AND national_id_key IS ?4 AND national_id_sealed IS ?5",
                    params![id, value.key_id, value.bytes, key_id, sealed],
                )?;
                done += 1;
            }
            tx.commit()?;
            after = last;
            if progress(done, total.max(done)).is_break() {
                finished = false;
                break;
            }
        }
        // The old ciphertext is zeroed in the file (secure_delete); clear it
        // from the WAL too, as far as readers allow.
        if done > 0 {
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        }
        let mut stmt =
            conn.prepare("SELECT coalesce(national_id_key, ''), count(*) FROM participants GROUP BY national_id_key")?;
        let by_key = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(Rotation { active: active.to_owned(), reencrypted: done, finished, by_key })
    }

    /// Writes and commits so far: writes / commits is the mean batch size.
    pub fn write_stats(&self) -> (u64, u64) {
        (self.stats.writes.load(Ordering::Relaxed), self.stats.commits.load(Ordering::Relaxed))
    }

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
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        Self::write_on(Arc::clone(&self.sync_conn), f).await
    }

    /// Like `sync_write`, on the dispatcher's bookkeeping connection.
    async fn bookkeeping_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        Self::write_on(Arc::clone(&self.bookkeeping_conn), f).await
    }

    async fn write_on<T: Send + 'static>(
        conn: Arc<Mutex<Connection>>,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().expect("sync connection lock");
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("sync task failed: {e}")))?
    }

    /// Runs `f` on a pooled read connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
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
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        Error::Unavailable(format!(
            "cannot open database {}: {e}; check that the data directory is writable",
            path.display()
        ))
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Unavailable(format!("database refused WAL mode (got {mode})")));
        }
    }
    // FULL: a commit is on disk before the caller is answered.
    // secure_delete: deleted or rewritten content is overwritten with zeros
    // instead of lingering in free space, so that what the gateway removes
    // (the plaintext national ids a migration sets aside, ciphertext under a
    // retired key after rotation) cannot be read back from the file. Deletes
    // are rare here, so the extra writes cost little.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<MigrationReport, Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_time TEXT NOT NULL)",
    )?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut applied = Vec::new();
    let known: Vec<(i64, String)> = {
        let mut stmt = tx.prepare("SELECT version, checksum FROM schema_migrations ORDER BY version")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    if let Some((v, _)) = known.iter().find(|(v, _)| !MIGRATIONS.iter().any(|(m, _, _)| m == v)) {
        return Err(Error::Unavailable(format!(
            "the database has schema version {v}, which this gateway does not know; run a newer gateway"
        )));
    }
    for (version, name, sql) in MIGRATIONS {
        let checksum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sql.as_bytes()));
        match known.iter().find(|(v, _)| v == version) {
            Some((_, stored)) if *stored == checksum => continue,
            Some(_) => {
                return Err(Error::Unavailable(format!(
                    "migration {version} ({name}) differs from the one applied to this database; restore the original migration file"
                )));
            }
            None => {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_time) VALUES (?1, ?2, ?3, ?4)",
                    params![version, name, checksum, now_text(Utc::now())],
                )?;
                applied.push(*version);
            }
        }
    }
    tx.commit()?;
    Ok(MigrationReport { applied, current: MIGRATIONS.last().map_or(0, |m| m.0) })
}

/// The writer: takes one job, then whatever else is already queued (up to
/// `MAX_BATCH`), applies them in one transaction and answers after commit.
fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    stats: &WriteStats,
    sync: &SyncConfig,
    keyring: &Keyring,
    audit_key: &AuditKey,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let size = batch.len() as u64;
        if run_batch(&mut conn, &mut batch, &sync.targets, keyring, audit_key) {
            stats.writes.fetch_add(size, Ordering::Relaxed);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            if !sync.targets.is_empty() {
                sync.wake.notify_one();
            }
        }
    }
    // Fold the WAL back into the database file so a stopped gateway leaves
    // one self-contained file behind.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "WAL checkpoint at shutdown failed; the WAL is replayed at next start");
    }
    tracing::debug!("sqlite writer stopped");
}

/// Runs one batch in one transaction; returns whether it committed.
fn run_batch(
    conn: &mut Connection,
    batch: &mut Vec<Job>,
    targets: &[String],
    keyring: &Keyring,
    audit_key: &AuditKey,
) -> bool {
    let mut jobs = batch.drain(..);
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = Error::from(e);
            for job in jobs {
                job.fail(unavailable(&err));
            }
            return false;
        }
    };
    let now = Utc::now();
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    let mut broken = None;
    for job in jobs.by_ref() {
        // The outer error: the transaction can no longer be trusted.
        let step: Result<Answer, (Answer, Error)> = match job {
            Job::Create(new, reply) => {
                let audit = new.audit.clone().map(|e| (e, new.id.clone()));
                let result = in_savepoint(&mut tx, |sp| apply_create(sp, *new, now, targets, keyring))
                    .and_then(|r| audit_write(&tx, audit_key, audit, false, &r, now).map(|()| r));
                match result {
                    Ok(r) => Ok(Answer::Write(reply, r)),
                    Err(e) => Err((Answer::Write(reply, Err(unavailable(&e))), e)),
                }
            }
            Job::Mutate(m, reply) => {
                let audit = m.audit.clone().map(|e| (e, m.id.clone()));
                let result = in_savepoint(&mut tx, |sp| apply_mutation(sp, *m, now, targets, keyring))
                    .and_then(|r| audit_write(&tx, audit_key, audit, true, &r, now).map(|()| r));
                match result {
                    Ok(r) => Ok(Answer::Write(reply, r)),
                    Err(e) => Err((Answer::Write(reply, Err(unavailable(&e))), e)),
                }
            }
            Job::Audit(entries, reply) => match append_audit(&tx, audit_key, &entries, now) {
                Ok(()) => Ok(Answer::Audit(reply, Ok(()))),
                Err(e) => Err((Answer::Audit(reply, Err(unavailable(&e))), e)),
            },
        };
        match step {
            Ok(answer) => answers.push(answer),
            Err((answer, e)) => {
                answers.push(answer);
                broken = Some(e);
                break;
            }
        }
        // On some errors (disk full, I/O) SQLite rolls back the whole
        // transaction by itself: nothing of this batch would be stored.
        if tx.is_autocommit() {
            broken = Some(Error::Unavailable("the database rolled back the transaction".into()));
            break;
        }
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => tx.commit().map_err(Error::from),
    };
    match outcome {
        Ok(()) => {
            for answer in answers {
                answer.send();
            }
            true
        }
        Err(err) => {
            // The transaction is gone (dropping it rolls back what is left):
            // no write of this batch is stored, so none may be acknowledged.
            tracing::error!(error = %err, "write batch failed; nothing of it was stored");
            for answer in answers {
                answer.fail(unavailable(&err));
            }
            for job in jobs {
                job.fail(unavailable(&err));
            }
            false
        }
    }
}

impl Job {
    fn fail(self, e: Error) {
        match self {
            Job::Create(_, r) | Job::Mutate(_, r) => {
                let _ = r.send(Err(e));
            }
            Job::Audit(_, r) => {
                let _ = r.send(Err(e));
            }
        }
    }
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Write(r, result) => {
                let _ = r.send(result);
            }
            Answer::Audit(r, result) => {
                let _ = r.send(result);
            }
        }
    }

    /// The batch did not commit: what would have succeeded fails with `e`;
    /// a refusal stays a refusal (it changed nothing either way).
    fn fail(self, e: Error) {
        match self {
            Answer::Write(r, result) => {
                let _ = r.send(result.and(Err(e)));
            }
            Answer::Audit(r, result) => {
                let _ = r.send(result.and(Err(e)));
            }
        }
    }
}

/// Appends a write's audit entry: the participant it concerned and how it
/// went. A refused write is audited too (its changes were rolled back).
fn audit_write(
    conn: &Connection,
    key: &AuditKey,
    audit: Option<(AuditEntry, String)>,
    existing_record: bool,
    result: &Result<Committed, Error>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let Some((mut entry, id)) = audit else { return Ok(()) };
    crate::audit::settle(&mut entry, result);
    entry.participant_id = match result {
        Ok(c) => {
            entry.detail = Some(if c.replayed {
                format!("replayed version {}", c.version)
            } else {
                format!("version {}", c.version)
            });
            c.participant.name.strip_prefix("participants/").map(str::to_owned).or(Some(id))
        }
        // The person is registered already: the attempt concerned them.
        Err(Error::AlreadyExists { existing }) => existing.strip_prefix("participants/").map(str::to_owned),
        Err(_) if existing_record => Some(id),
        Err(_) => None,
    };
    append_audit(conn, key, &[entry], now)
}

/// Appends entries to the audit log, chained to its current head. Runs in
/// a write transaction, which SQLite serialises: two appends cannot both
/// chain to the same head.
fn append_audit(conn: &Connection, key: &AuditKey, entries: &[AuditEntry], now: DateTime<Utc>) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (mut sequence, mut previous) = head.unwrap_or((0, GENESIS.to_vec()));
    let time = now_text(now);
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_log (sequence, time, organisation, vendor, method, participant_id, purpose, outcome, detail,
             previous_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for e in entries {
        sequence += 1;
        let hash = chain_hash(key, &previous, sequence, &time, e);
        insert.execute(params![
            sequence,
            time,
            e.organisation,
            e.vendor,
            e.method,
            e.participant_id,
            e.purpose,
            e.outcome,
            e.detail,
            previous,
            hash.as_slice()
        ])?;
        previous = hash.to_vec();
    }
    Ok(())
}

fn audit_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        sequence: r.get(0)?,
        time: r.get(1)?,
        entry: AuditEntry {
            organisation: r.get(2)?,
            vendor: r.get(3)?,
            method: r.get(4)?,
            participant_id: r.get(5)?,
            purpose: r.get(6)?,
            outcome: r.get(7)?,
            detail: r.get(8)?,
        },
        previous_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

const AUDIT_COLUMNS: &str =
    "sequence, time, organisation, vendor, method, participant_id, purpose, outcome, detail, previous_hash, hash";

/// The head of an intact audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub entries: i64,
    /// The last entry's sequence and hash (0 and zeros when empty).
    pub sequence: i64,
    pub hash: Vec<u8>,
}

/// Checks the audit log of the database at `path`, read-only, entry by
/// entry in constant memory. `progress(checked, total)` is called every
/// `every` entries. The outer error: the log could not be read; the inner:
/// where the chain is broken.
pub fn verify_audit_log(
    path: &Path,
    key: &AuditKey,
    expect_head: Option<(i64, Vec<u8>)>,
    every: i64,
    mut progress: impl FnMut(i64, i64),
) -> Result<Result<AuditHead, Break>, Error> {
    if !path.exists() {
        return Err(Error::Unavailable(format!(
            "no database at {}; check --data-dir (or data_dir in the config)",
            path.display()
        )));
    }
    let conn = open_connection(path, true)?;
    let has_log: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
        [],
        |r| r.get(0),
    )?;
    if !has_log {
        return Err(Error::Unavailable(format!(
            "{} has no audit log yet; run `hurtigspor migrate` (or start the gateway) first",
            path.display()
        )));
    }
    let total: i64 = conn.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))?;
    let mut stmt = conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY sequence"))?;
    let mut rows = stmt.query([])?;
    let mut verifier = Verifier::new(key.clone());
    let mut checked = 0;
    while let Some(row) = rows.next()? {
        // A value whose type was changed (text for a blob, bytes that are
        // not text) is an altered entry, not a reason to stop checking.
        let record = match audit_record(row) {
            Ok(r) => r,
            Err(_) => {
                let sequence = row.get::<_, i64>(0).unwrap_or(verifier.head().0 + 1);
                return Ok(Err(Break::Altered { sequence }));
            }
        };
        if let Err(broken) = verifier.check(&record) {
            return Ok(Err(broken));
        }
        if let Some((entry, hash)) = &expect_head
            && record.sequence == *entry
            && record.hash != *hash
        {
            return Ok(Err(Break::Altered { sequence: *entry }));
        }
        checked += 1;
        if every > 0 && checked % every == 0 {
            progress(checked, total);
        }
    }
    let (sequence, hash) = verifier.head();
    if let Some((entry, _)) = expect_head
        && entry > sequence
    {
        return Ok(Err(Break::Truncated { sequence: entry, last: sequence }));
    }
    Ok(Ok(AuditHead { entries: checked, sequence, hash: hash.to_vec() }))
}

fn unavailable(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::Unavailable(other.to_string()),
    }
}

/// Runs one write in its own savepoint. The inner result is the write's own
/// outcome (an error rolls back this write only); the outer error means the
/// transaction itself can no longer be trusted.
fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&rusqlite::Savepoint<'_>) -> Result<T, Error>,
) -> Result<Result<T, Error>, Error> {
    let mut sp = tx.savepoint()?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&sp))).unwrap_or_else(|_| {
        Err(Error::Internal("a write panicked; it was rolled back and the writer carries on".into()))
    });
    match result {
        Ok(value) => {
            sp.commit()?;
            Ok(Ok(value))
        }
        Err(e) => {
            // ROLLBACK TO, then RELEASE: the savepoint's changes are undone.
            sp.rollback()?;
            sp.commit()?;
            Ok(Err(e))
        }
    }
}

fn now_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// Looks up a request id; returns the answer to replay, if any.
fn replay(conn: &Connection, key: &IdempotencyKey, keyring: &Keyring) -> Result<Option<Committed>, Error> {
    let row: Option<(Vec<u8>, String, i64)> = conn
        .query_row(
            "SELECT fingerprint, participant_id, version FROM idempotency WHERE method = ?1 AND request_id = ?2",
            params![key.method, key.request_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((fingerprint, participant_id, version)) = row else { return Ok(None) };
    if fingerprint != key.fingerprint {
        return Err(Error::RequestIdReused);
    }
    let (snapshot, key_id, sealed): (Vec<u8>, Option<String>, Option<Vec<u8>>) = conn.query_row(
        "SELECT c.snapshot, p.national_id_key, p.national_id_sealed FROM change_log c
         JOIN participants p ON p.id = c.participant_id
         WHERE c.participant_id = ?1 AND c.version = ?2",
        params![participant_id, version],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut participant = decode(&snapshot)?;
    participant.national_id = open_national_id(keyring, &participant_id, key_id, sealed)?;
    Ok(Some(Committed { participant, version, replayed: true }))
}

fn remember(conn: &Connection, key: &IdempotencyKey, id: &str, version: i64, now: DateTime<Utc>) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO idempotency (method, request_id, fingerprint, participant_id, version, create_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![key.method, key.request_id, key.fingerprint.as_slice(), id, version, now_text(now)],
    )?;
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<Participant, Error> {
    Participant::decode(bytes).map_err(|e| Error::Internal(format!("stored record does not decode: {e}")))
}

/// Encodes a record for storage: without the national id.
fn encode_record(p: &Participant) -> Vec<u8> {
    let mut stored = p.clone();
    stored.national_id.clear();
    stored.warnings.clear();
    stored.encode_to_vec()
}

#[allow(clippy::too_many_arguments)]
fn append_change(
    conn: &Connection,
    id: &str,
    version: i64,
    kind: &str,
    origin: Origin,
    actor: &str,
    now: DateTime<Utc>,
    encoded: &[u8],
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, version, kind, origin.as_str(), actor, now_text(now), encoded],
    )?;
    Ok(())
}

/// Participants a target has no row for (registered before the target was
/// configured, or before sync existed) are queued for it at start.
fn backfill_sync(conn: &Connection, targets: &[String]) -> Result<(), Error> {
    let now = now_text(Utc::now());
    for target in targets {
        let added = conn.execute(
            "INSERT INTO sync_state (target, participant_id, desired_version, state, attempts, next_attempt_time, update_time)
             SELECT ?1, p.id, p.version, 'pending', 0, ?2, ?2 FROM participants p
             WHERE NOT EXISTS (SELECT 1 FROM sync_state s WHERE s.target = ?1 AND s.participant_id = p.id)",
            params![target, now],
        )?;
        if added > 0 {
            tracing::info!(target = %target, participants = added, "queued existing participants for a target");
        }
    }
    Ok(())
}

/// Records that every target must reach `version` of the participant.
fn mark_for_sync(
    conn: &Connection,
    targets: &[String],
    id: &str,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let now = now_text(now);
    for target in targets {
        conn.execute(
            "INSERT INTO sync_state (target, participant_id, desired_version, state, attempts, next_attempt_time, update_time)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)
             ON CONFLICT (target, participant_id) DO UPDATE SET
                 desired_version = excluded.desired_version, state = 'pending', attempts = 0,
                 next_attempt_time = excluded.next_attempt_time, last_error = NULL, update_time = excluded.update_time",
            params![target, id, version, now],
        )?;
    }
    Ok(())
}

fn apply_create(
    conn: &Connection,
    new: NewParticipant,
    now: DateTime<Utc>,
    targets: &[String],
    keyring: &Keyring,
) -> Result<Committed, Error> {
    if let Some(key) = &new.idempotency
        && let Some(done) = replay(conn, key, keyring)?
    {
        return Ok(done);
    }
    let existing: Option<String> = conn
        .query_row("SELECT id FROM participants WHERE national_id_hash = ?1", [&new.national_id_hash], |r| r.get(0))
        .optional()?;
    if let Some(existing) = existing {
        return Err(Error::AlreadyExists { existing: resource_name(&existing) });
    }
    let version = 1;
    let mut p = new.record;
    p.name = resource_name(&new.id);
    p.etag = etag_for(version);
    p.create_time = Some(timestamp(now));
    p.update_time = Some(timestamp(now));
    let encoded = encode_record(&p);
    let status = p.hurtigspor.as_ref().map_or(0, |h| h.status);
    let sealed = keyring.seal(&new.id, &new.national_id)?;
    conn.execute(
        "INSERT INTO participants (id, national_id_hash, national_id_key, national_id_sealed, kommunenummer, hurtigspor_status, version, record, create_time, update_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        params![
            new.id,
            new.national_id_hash,
            sealed.key_id,
            sealed.bytes,
            p.kommunenummer,
            status,
            version,
            encoded,
            now_text(now)
        ],
    )?;
    append_change(conn, &new.id, version, "participant.created", new.origin, &new.actor, now, &encoded)?;
    keep_case_numbers(conn, &new.id, &p)?;
    if let Some(key) = &new.idempotency {
        remember(conn, key, &new.id, version, now)?;
    }
    mark_for_sync(conn, targets, &new.id, version, now)?;
    p.national_id = new.national_id;
    Ok(Committed { participant: p, version, replayed: false })
}

fn apply_mutation(
    conn: &Connection,
    m: Mutation,
    now: DateTime<Utc>,
    targets: &[String],
    keyring: &Keyring,
) -> Result<Committed, Error> {
    apply_mutation_if(conn, m, now, targets, false, keyring).map(|c| c.expect("stored unconditionally"))
}

/// Applies a mutation; with `skip_unchanged`, a mutation that leaves the
/// record as it was stores nothing and answers `None`.
fn apply_mutation_if(
    conn: &Connection,
    m: Mutation,
    now: DateTime<Utc>,
    targets: &[String],
    skip_unchanged: bool,
    keyring: &Keyring,
) -> Result<Option<Committed>, Error> {
    if let Some(key) = &m.idempotency
        && let Some(done) = replay(conn, key, keyring)?
    {
        if done.participant.name != resource_name(&m.id) {
            return Err(Error::RequestIdReused);
        }
        return Ok(Some(done));
    }
    let row: Option<(i64, Vec<u8>, SealedColumns)> = conn
        .query_row(
            "SELECT version, record, national_id_key, national_id_sealed FROM participants WHERE id = ?1",
            [&m.id],
            |r| Ok((r.get(0)?, r.get(1)?, (r.get(2)?, r.get(3)?))),
        )
        .optional()?;
    let Some((current, record, (key_id, sealed))) = row else {
        return Err(Error::not_found(resource_name(&m.id)));
    };
    let mut p = decode(&record)?;
    let within = |k: &str| m.kommuner.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
    // Another kommune's participant does not exist for this writer, whatever
    // the etag says.
    if !within(&p.kommunenummer) {
        return Err(Error::not_found(resource_name(&m.id)));
    }
    if let Some(etag) = &m.expected_etag
        && *etag != etag_for(current)
    {
        return Err(Error::StaleEtag { resource: resource_name(&m.id) });
    }
    p.national_id = open_national_id(keyring, &m.id, key_id, sealed)?;
    let before = p.clone();
    (m.apply)(&mut p)?;
    if !within(&p.kommunenummer) {
        return Err(Error::PermissionDenied {
            reason: "KOMMUNE_NOT_YOURS",
            message: "a kommune cannot move a participant to a kommune it does not act for".into(),
        });
    }
    // Fields only the store sets cannot be changed by a mutator.
    p.name = before.name.clone();
    p.national_id = before.national_id.clone();
    p.create_time = before.create_time;
    p.etag = before.etag.clone();
    p.update_time = before.update_time;
    if skip_unchanged && encode_record(&p) == encode_record(&before) {
        return Ok(None);
    }
    let version = current + 1;
    p.etag = etag_for(version);
    p.update_time = Some(timestamp(now));
    let encoded = encode_record(&p);
    let status = p.hurtigspor.as_ref().map_or(0, |h| h.status);
    conn.execute(
        "UPDATE participants SET kommunenummer = ?2, hurtigspor_status = ?3, version = ?4, record = ?5, update_time = ?6
         WHERE id = ?1",
        params![m.id, p.kommunenummer, status, version, encoded, now_text(now)],
    )?;
    append_change(conn, &m.id, version, m.kind.0, m.origin, &m.actor, now, &encoded)?;
    keep_case_numbers(conn, &m.id, &p)?;
    if let Some(key) = &m.idempotency {
        remember(conn, key, &m.id, version, now)?;
    }
    mark_for_sync(conn, targets, &m.id, version, now)?;
    Ok(Some(Committed { participant: p, version, replayed: false }))
}

/// Case numbers stored before `external_refs` existed are made findable
/// once, when that migration runs.
fn backfill_case_numbers(conn: &Connection) -> Result<(), Error> {
    let mut stmt = conn.prepare("SELECT id, record FROM participants")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    for row in rows {
        let (id, record) = row?;
        keep_case_numbers(conn, &id, &decode(&record)?)?;
    }
    Ok(())
}

/// Keeps the recognition authority's case numbers findable, so that its
/// changes can be matched to the participant.
fn keep_case_numbers(conn: &Connection, id: &str, p: &Participant) -> Result<(), Error> {
    for case in p.recognition_cases.iter().filter(|c| !c.case_number.is_empty()) {
        conn.execute(
            "INSERT OR IGNORE INTO external_refs (system, reference, participant_id) VALUES ('nokut', ?1, ?2)",
            params![case.case_number, id],
        )?;
    }
    Ok(())
}

fn inbox_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboxItem> {
    Ok(InboxItem {
        source: r.get(0)?,
        position: r.get(1)?,
        kind: r.get(2)?,
        body: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        participant_id: r.get(6)?,
        note: r.get(7)?,
        received_time: r.get(8)?,
        update_time: r.get(9)?,
    })
}

const INBOX_COLUMNS: &str =
    "source, position, kind, body, status, attempts, participant_id, note, received_time, update_time";

/// Records `position` as the latest change handled for `entity`, so that
/// an older change of it is superseded (never moves backwards).
fn advance_applied(c: &Connection, source: &str, entity: &str, position: &str) -> Result<(), Error> {
    c.execute(
        "INSERT INTO inbound_applied (source, entity, position) VALUES (?1, ?2, ?3)
         ON CONFLICT (source, entity) DO UPDATE SET position = excluded.position
         WHERE excluded.position > inbound_applied.position",
        params![source, entity, position],
    )?;
    Ok(())
}

/// Settles one inbox entry and audits how: which system's change, about
/// whom, and what came of it.
fn settle_audited(
    c: &Connection,
    key: &AuditKey,
    source: &str,
    position: &str,
    outcome: Settle,
    targets: &[String],
    keyring: &Keyring,
) -> Result<Settled, Error> {
    let participant = match &outcome {
        Settle::Apply { mutation, .. } => Some(mutation.id.clone()),
        _ => None,
    };
    let kind: Option<String> = c
        .query_row("SELECT kind FROM inbox WHERE source = ?1 AND position = ?2", params![source, position], |r| {
            r.get(0)
        })
        .optional()?;
    let settled = settle(c, source, position, outcome, targets, keyring)?;
    let (result, detail) = match &settled {
        Settled::Handled(Some(v)) => ("handled", format!("position {position}; version {v}")),
        Settled::Handled(None) => ("handled", format!("position {position}; nothing changed")),
        Settled::Ignored => ("ignored", format!("position {position}")),
        Settled::Superseded => ("superseded", format!("position {position}")),
        Settled::Retry => ("retry", format!("position {position}")),
        Settled::Failed => ("failed", format!("position {position}")),
        // Nothing was done.
        Settled::Gone => return Ok(settled),
    };
    let entry = AuditEntry {
        organisation: source.to_owned(),
        vendor: None,
        method: format!("inbound/{source}/{}", kind.unwrap_or_default()),
        participant_id: participant,
        purpose: Some("sync".into()),
        outcome: result.into(),
        detail: Some(detail),
    };
    append_audit(c, key, &[entry], Utc::now())?;
    Ok(settled)
}

/// Settles one inbox entry inside a transaction.
fn settle(
    c: &Connection,
    source: &str,
    position: &str,
    settle: Settle,
    targets: &[String],
    keyring: &Keyring,
) -> Result<Settled, Error> {
    let now = Utc::now();
    let open: Option<i64> = c
        .query_row(
            "SELECT attempts FROM inbox WHERE source = ?1 AND position = ?2 AND status IN ('new', 'retry')",
            params![source, position],
            |r| r.get(0),
        )
        .optional()?;
    if open.is_none() {
        return Ok(Settled::Gone);
    }
    let mark = |status: &str, note: Option<&str>, participant: Option<&str>| -> Result<(), Error> {
        c.execute(
            "UPDATE inbox SET status = ?3, note = ?4, participant_id = coalesce(?5, participant_id), update_time = ?6
             WHERE source = ?1 AND position = ?2",
            params![source, position, status, note, participant, now_text(now)],
        )?;
        Ok(())
    };
    match settle {
        Settle::Apply { entity, mutation, refs } => {
            let applied: Option<String> = c
                .query_row(
                    "SELECT position FROM inbound_applied WHERE source = ?1 AND entity = ?2",
                    params![source, entity],
                    |r| r.get(0),
                )
                .optional()?;
            let participant = mutation.id.clone();
            if applied.is_some_and(|a| a.as_str() >= position) {
                mark(
                    "ignored",
                    Some("superseded: a later change of the same record was applied already"),
                    Some(&participant),
                )?;
                return Ok(Settled::Superseded);
            }
            let committed = apply_mutation_if(c, *mutation, now, targets, true, keyring)?;
            advance_applied(c, source, &entity, position)?;
            for (system, reference) in refs {
                c.execute(
                    "INSERT INTO external_refs (system, reference, participant_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT (system, reference) DO UPDATE SET participant_id = excluded.participant_id",
                    params![system, reference, participant],
                )?;
            }
            let version = committed.map(|c| c.version);
            let note = match version {
                Some(v) => format!("applied as version {v}"),
                None => "the record already held it".to_owned(),
            };
            mark("handled", Some(&note), Some(&participant))?;
            Ok(Settled::Handled(version))
        }
        Settle::Instance(i) => {
            c.execute(
                "INSERT INTO arena_measure_instances (instance_id, code, employer_id, position) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (instance_id) DO UPDATE SET code = excluded.code, employer_id = excluded.employer_id,
                     position = excluded.position
                 WHERE excluded.position > arena_measure_instances.position",
                params![i.instance_id, i.code, i.employer_id, position],
            )?;
            mark("handled", Some("measure instance remembered"), None)?;
            Ok(Settled::Handled(None))
        }
        Settle::Ignore { reason, entity } => {
            if let Some(entity) = entity {
                advance_applied(c, source, &entity, position)?;
            }
            mark("ignored", Some(&reason), None)?;
            Ok(Settled::Ignored)
        }
        Settle::Retry { error, at } => {
            c.execute(
                "UPDATE inbox SET status = 'retry', attempts = attempts + 1, note = ?3, next_attempt_time = ?4,
                     update_time = ?5 WHERE source = ?1 AND position = ?2",
                params![source, position, error, now_text(at), now_text(now)],
            )?;
            Ok(Settled::Retry)
        }
        Settle::Fail { error } => {
            c.execute(
                "UPDATE inbox SET status = 'failed', attempts = attempts + 1, note = ?3, update_time = ?4
                 WHERE source = ?1 AND position = ?2",
                params![source, position, error, now_text(now)],
            )?;
            Ok(Settled::Failed)
        }
    }
}

/// A failed attempt's audit detail: the version and the error, cut short.
fn attempt_detail(version: i64, error: &str) -> String {
    let error: String = error.chars().take(200).collect();
    format!("version {version}: {}", crate::audit::mask_digit_runs(&error))
}

fn sync_rows(c: &Connection, filter: &str, args: impl rusqlite::Params) -> Result<Vec<SyncStatus>, Error> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT target, participant_id, desired_version, delivered_version, state, attempts, last_error, update_time
         FROM sync_state {filter}"
    ))?;
    let rows = stmt.query_map(args, |r| {
        Ok(SyncStatus {
            target: r.get(0)?,
            participant_id: r.get(1)?,
            desired_version: r.get(2)?,
            delivered_version: r.get(3)?,
            state: r.get(4)?,
            attempts: r.get(5)?,
            last_error: r.get(6)?,
            update_time: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A stored national id as read: its key id and its ciphertext
/// (`national_id_key`, `national_id_sealed`).
type SealedColumns = (Option<String>, Option<Vec<u8>>);

/// The participant of a row (`id, record, national_id_key,
/// national_id_sealed`), its national id decrypted.
/// The columns of a change-log row, as `changes` and `histories` select
/// them: sequence, participant_id, version, kind, origin, actor, snapshot.
type ChangeRow = (i64, String, i64, String, String, String, Vec<u8>);

fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChangeRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

/// Change-log rows as records, their snapshots decoded.
fn change_records(rows: impl Iterator<Item = rusqlite::Result<ChangeRow>>) -> Result<Vec<ChangeRecord>, Error> {
    rows.map(|row| {
        let (sequence, participant_id, version, kind, origin, actor, snapshot) = row?;
        Ok(ChangeRecord { sequence, participant_id, version, kind, origin, actor, snapshot: decode(&snapshot)? })
    })
    .collect()
}

fn row_participant(keyring: &Keyring, r: &rusqlite::Row<'_>) -> Result<Participant, Error> {
    let id: String = r.get("id")?;
    let mut p = decode(&r.get::<_, Vec<u8>>("record")?)?;
    p.national_id = open_national_id(keyring, &id, r.get("national_id_key")?, r.get("national_id_sealed")?)?;
    Ok(p)
}

/// Decrypts a stored national id. Errors name the participant and the key
/// id, never the value.
fn open_national_id(
    keyring: &Keyring,
    id: &str,
    key_id: Option<String>,
    sealed: Option<Vec<u8>>,
) -> Result<String, Error> {
    let (Some(key_id), Some(sealed)) = (key_id, sealed) else {
        return Err(Error::Internal(format!(
            "participants/{id} has no encrypted national id; reopen the database with the gateway to finish its migration"
        )));
    };
    Ok(keyring.open(id, &key_id, &sealed)?)
}

/// Encrypts the national ids that migration 4 set aside in plain text, in
/// one transaction, then rewrites the file (VACUUM) and truncates the WAL:
/// with `secure_delete` the rows deleted are zeroed, and VACUUM plus the
/// TRUNCATE checkpoint leave no page of the file and no WAL frame that held
/// them. The set-aside table is dropped only after that, so an interrupted
/// run (or a WAL another process kept open) is finished at the next open.
fn seal_plaintext_national_ids(conn: &mut Connection, keyring: &Keyring) -> Result<(), Error> {
    let pending: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'national_id_plaintext'",
        [],
        |r| r.get(0),
    )?;
    if !pending {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut sealed = 0;
    {
        let mut select = tx.prepare("SELECT participant_id, national_id FROM national_id_plaintext")?;
        let mut update =
            tx.prepare("UPDATE participants SET national_id_key = ?2, national_id_sealed = ?3 WHERE id = ?1")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let national_id: String = row.get(1)?;
            let value = keyring.seal(&id, &national_id)?;
            update.execute(params![id, value.key_id, value.bytes])?;
            sealed += 1;
        }
    }
    tx.execute("DELETE FROM national_id_plaintext", [])?;
    let stored: i64 = tx.query_row("SELECT count(*) FROM participants", [], |r| r.get(0))?;
    tx.commit()?;
    // A database that never held a participant has no plaintext to clear.
    if stored > 0 {
        conn.execute_batch("VACUUM")?;
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(Error::Unavailable(
                "national ids were encrypted, but another process holds the database open, so its WAL could not be cleared of the old plain text; stop that process and start again".into(),
            ));
        }
    }
    conn.execute_batch("DROP TABLE national_id_plaintext")?;
    if sealed > 0 {
        tracing::info!(participants = sealed, "national ids stored in plain text were encrypted");
    }
    Ok(())
}

/// Every key id the database holds national ids under must be in the
/// keyring and must decrypt one of them, so that a missing or wrong key
/// stops the start instead of failing reads later.
fn check_keys(conn: &Connection, keyring: &Keyring) -> Result<(), Error> {
    let mut stmt = conn.prepare(
        "SELECT national_id_key, count(*), min(id) FROM participants GROUP BY national_id_key ORDER BY national_id_key",
    )?;
    let in_use: Vec<(Option<String>, i64, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    for (key_id, count, sample) in in_use {
        let Some(key_id) = key_id else {
            return Err(Error::precondition(
                "NATIONAL_ID_NOT_ENCRYPTED",
                format!("participants/{sample}"),
                format!(
                    "{count} participant(s), e.g. participants/{sample}, have no encrypted national id: the database was changed outside the gateway; restore it from a backup"
                ),
            ));
        };
        if !keyring.contains(&key_id) {
            return Err(Error::precondition(
                "ENCRYPTION_KEY_NOT_CONFIGURED",
                "security.encryption_keys",
                format!(
                    "{count} national id(s) in this database are encrypted under key `{key_id}`, which is not configured: add it to security.encryption_keys (or set {}) and start again. Remove a key only after `hurtigspor rotate-key` reports that no value is under it",
                    crate::crypto::env_var(&key_id)
                ),
            ));
        }
        let sealed: Option<Vec<u8>> =
            conn.query_row("SELECT national_id_sealed FROM participants WHERE id = ?1", [&sample], |r| r.get(0))?;
        if keyring.open(&sample, &key_id, sealed.as_deref().unwrap_or_default()).is_err() {
            return Err(Error::precondition(
                "ENCRYPTION_KEY_WRONG",
                "security.encryption_keys",
                format!(
                    "the configured key `{key_id}` does not decrypt the national ids stored under it (e.g. participants/{sample}): its value differs from the one they were encrypted with; configure the original value of `{key_id}`"
                ),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, new: NewParticipant) -> Result<Committed, Error> {
        self.submit(|reply| Job::Create(Box::new(new), reply)).await
    }

    async fn mutate(&self, mutation: Mutation) -> Result<Committed, Error> {
        self.submit(|reply| Job::Mutate(Box::new(mutation), reply)).await
    }

    async fn get(&self, id: &str) -> Result<Option<Participant>, Error> {
        let id = id.to_owned();
        let keyring = Arc::clone(&self.keyring);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, record, national_id_key, national_id_sealed FROM participants WHERE id = ?1",
            )?;
            let mut rows = stmt.query([&id])?;
            rows.next()?.map(|r| row_participant(&keyring, r)).transpose()
        })
        .await
    }

    async fn get_by_national_id_hash(&self, hash: &[u8]) -> Result<Option<Participant>, Error> {
        let hash = hash.to_vec();
        let keyring = Arc::clone(&self.keyring);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, record, national_id_key, national_id_sealed FROM participants WHERE national_id_hash = ?1",
            )?;
            let mut rows = stmt.query([&hash])?;
            rows.next()?.map(|r| row_participant(&keyring, r)).transpose()
        })
        .await
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage, Error> {
        let keyring = Arc::clone(&self.keyring);
        self.read(move |c| {
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1) + 1;
            let after = query.after.unwrap_or(0);
            let mut sql = String::from(
                "SELECT position, id, record, national_id_key, national_id_sealed FROM participants WHERE position > :after",
            );
            let mut args: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":after", &after), (":limit", &limit)];
            let names: Vec<String> =
                (0..query.kommuner.as_ref().map_or(0, Vec::len)).map(|i| format!(":k{i}")).collect();
            if let Some(kommuner) = &query.kommuner {
                sql.push_str(&format!(" AND kommunenummer IN ({})", names.join(", ")));
                for (name, k) in names.iter().zip(kommuner) {
                    args.push((name.as_str(), k));
                }
            }
            if let Some(s) = &query.hurtigspor_status {
                sql.push_str(" AND hurtigspor_status = :status");
                args.push((":status", s));
            }
            sql.push_str(" ORDER BY position LIMIT :limit");
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(args.as_slice())?;
            let mut participants = Vec::new();
            let mut last_position = None;
            let mut more = false;
            while let Some(row) = rows.next()? {
                if participants.len() == query.limit {
                    more = true;
                    break;
                }
                last_position = Some(row.get::<_, i64>(0)?);
                participants.push(row_participant(&keyring, row)?);
            }
            Ok(ListPage { participants, last_position, more })
        })
        .await
    }

    async fn changes(&self, after: i64, limit: usize) -> Result<Vec<ChangeRecord>, Error> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT sequence, participant_id, version, kind, origin, actor, snapshot FROM change_log
                 WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, i64::try_from(limit).unwrap_or(i64::MAX)], change_row)?;
            change_records(rows)
        })
        .await
    }

    async fn histories(&self, after: Option<(String, i64)>, limit: usize) -> Result<Vec<ChangeRecord>, Error> {
        self.read(move |c| {
            // The UNIQUE (participant_id, version) index serves this order.
            let mut stmt = c.prepare_cached(
                "SELECT sequence, participant_id, version, kind, origin, actor, snapshot FROM change_log
                 WHERE participant_id > ?1 OR (participant_id = ?1 AND version > ?2)
                 ORDER BY participant_id, version LIMIT ?3",
            )?;
            let (after_id, after_version) = after.unwrap_or((String::new(), i64::MIN));
            let rows =
                stmt.query_map(params![after_id, after_version, i64::try_from(limit).unwrap_or(i64::MAX)], change_row)?;
            change_records(rows)
        })
        .await
    }

    async fn claim_sync(&self, limit: usize, lease: std::time::Duration) -> Result<Vec<SyncTask>, Error> {
        self.bookkeeping_write(move |c| {
            let now = Utc::now();
            let lease_end = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
            let mut stmt = c.prepare_cached(
                "UPDATE sync_state SET leased_until = ?1
                 WHERE (target, participant_id) IN (
                     SELECT target, participant_id FROM sync_state
                     WHERE state = 'pending' AND next_attempt_time <= ?2 AND (leased_until IS NULL OR leased_until <= ?2)
                     ORDER BY next_attempt_time LIMIT ?3)
                 RETURNING target, participant_id, desired_version, attempts",
            )?;
            let rows = stmt.query_map(params![now_text(lease_end), now_text(now), limit as i64], |r| {
                Ok(SyncTask { target: r.get(0)?, participant_id: r.get(1)?, desired_version: r.get(2)?, attempts: r.get(3)? })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn finish_sync(&self, task: SyncTask, outcome: SyncOutcome) -> Result<(), Error> {
        let key = self.audit_key.clone();
        self.bookkeeping_write(move |c| {
            let time = Utc::now();
            let now = now_text(time);
            // Every delivery attempt is audited; a deferred one was not made.
            let attempt = match &outcome {
                SyncOutcome::Delivered { version } => Some(("delivered", format!("version {version}"))),
                SyncOutcome::Retry { error, .. } => Some(("retry", attempt_detail(task.desired_version, error))),
                SyncOutcome::Failed { error } => Some(("failed", attempt_detail(task.desired_version, error))),
                SyncOutcome::Deferred { .. } => None,
            };
            if let Some((result, detail)) = attempt {
                let entry = AuditEntry {
                    organisation: "gateway".into(),
                    vendor: None,
                    method: format!("deliver/{}", task.target),
                    participant_id: Some(task.participant_id.clone()),
                    purpose: Some("sync".into()),
                    outcome: result.into(),
                    detail: Some(detail),
                };
                append_audit(c, &key, &[entry], time)?;
            }
            match outcome {
                // Delivered up to `version`; if a newer version arrived in the
                // meantime the row stays pending and is claimed again.
                SyncOutcome::Delivered { version } => c.execute(
                    "UPDATE sync_state SET delivered_version = max(delivered_version, ?3),
                         state = CASE WHEN desired_version <= ?3 THEN 'delivered' ELSE 'pending' END,
                         attempts = 0, leased_until = NULL, last_error = NULL, next_attempt_time = ?4, update_time = ?4
                     WHERE target = ?1 AND participant_id = ?2",
                    params![task.target, task.participant_id, version, now],
                )?,
                // A version written since the claim is tried at once, not
                // after this attempt's backoff.
                SyncOutcome::Retry { error, at } => c.execute(
                    "UPDATE sync_state SET attempts = attempts + 1, leased_until = NULL, last_error = ?3,
                         next_attempt_time = CASE WHEN desired_version > ?6 THEN ?5 ELSE ?4 END, update_time = ?5
                     WHERE target = ?1 AND participant_id = ?2",
                    params![task.target, task.participant_id, error, now_text(at), now, task.desired_version],
                )?,
                SyncOutcome::Deferred { error, at } => c.execute(
                    "UPDATE sync_state SET leased_until = NULL, last_error = ?3,
                         next_attempt_time = CASE WHEN desired_version > ?6 THEN ?5 ELSE ?4 END, update_time = ?5
                     WHERE target = ?1 AND participant_id = ?2",
                    params![task.target, task.participant_id, error, now_text(at), now, task.desired_version],
                )?,
                // A newer version may have come in while this one was tried:
                // then it deserves its own chance instead of failing unseen.
                SyncOutcome::Failed { error } => c.execute(
                    "UPDATE sync_state SET attempts = attempts + 1, leased_until = NULL, last_error = ?4,
                         state = CASE WHEN desired_version > ?3 THEN 'pending' ELSE 'failed' END, update_time = ?5
                     WHERE target = ?1 AND participant_id = ?2",
                    params![task.target, task.participant_id, task.desired_version, error, now],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn sync_status(&self, participant_id: &str) -> Result<Vec<SyncStatus>, Error> {
        let id = participant_id.to_owned();
        self.read(move |c| sync_rows(c, "WHERE participant_id = ?1 ORDER BY target", params![id])).await
    }

    async fn failed_syncs(
        &self,
        after: Option<(String, String, String)>,
        limit: usize,
    ) -> Result<Vec<SyncStatus>, Error> {
        let (time, target, participant) = after.unwrap_or_default();
        self.read(move |c| {
            sync_rows(
                c,
                "WHERE state = 'failed' AND (update_time, target, participant_id) > (?1, ?2, ?3)
                 ORDER BY update_time, target, participant_id LIMIT ?4",
                params![time, target, participant, limit as i64],
            )
        })
        .await
    }

    async fn retry_failed_syncs(&self, participant_id: Option<String>) -> Result<usize, Error> {
        self.sync_write(move |c| {
            let now = now_text(Utc::now());
            let changed = c.execute(
                "UPDATE sync_state SET state = 'pending', attempts = 0, next_attempt_time = ?1, update_time = ?1
                 WHERE state = 'failed' AND (?2 IS NULL OR participant_id = ?2)",
                params![now, participant_id],
            )?;
            Ok(changed)
        })
        .await
    }

    async fn inbound_cursor(&self, source: &str) -> Result<Option<String>, Error> {
        let source = source.to_owned();
        self.read(move |c| {
            Ok(c.query_row("SELECT position FROM inbound_cursor WHERE source = ?1", [&source], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn receive_inbound(
        &self,
        source: &str,
        entries: Vec<InboxEntry>,
        cursor: Option<String>,
    ) -> Result<usize, Error> {
        let source = source.to_owned();
        self.sync_write(move |c| {
            let now = now_text(Utc::now());
            let mut added = 0;
            {
                let mut insert = c.prepare_cached(
                    "INSERT OR IGNORE INTO inbox (source, position, kind, body, status, next_attempt_time, received_time, update_time)
                     VALUES (?1, ?2, ?3, ?4, 'new', ?5, ?5, ?5)",
                )?;
                for e in entries {
                    added += insert.execute(params![source, e.position, e.kind, e.body, now])?;
                }
            }
            if let Some(cursor) = cursor {
                c.execute(
                    "INSERT INTO inbound_cursor (source, position, update_time) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source) DO UPDATE SET position = excluded.position, update_time = excluded.update_time
                     WHERE excluded.position > inbound_cursor.position",
                    params![source, cursor, now],
                )?;
            }
            Ok(added)
        })
        .await
    }

    async fn due_inbound(&self, source: &str, limit: usize) -> Result<Vec<InboxItem>, Error> {
        let source = source.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {INBOX_COLUMNS} FROM inbox
                 WHERE source = ?1 AND (status = 'new' OR (status = 'retry' AND next_attempt_time <= ?2))
                 ORDER BY position LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![source, now_text(Utc::now()), limit as i64], inbox_item)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn settle_inbound(&self, source: &str, position: &str, outcome: Settle) -> Result<Settled, Error> {
        let (source, position) = (source.to_owned(), position.to_owned());
        let targets = self.sync.targets.clone();
        let key = self.audit_key.clone();
        let keyring = Arc::clone(&self.keyring);
        let settled =
            self.sync_write(move |c| settle_audited(c, &key, &source, &position, outcome, &targets, &keyring)).await?;
        if matches!(settled, Settled::Handled(Some(_))) && !self.sync.targets.is_empty() {
            self.sync.wake.notify_one();
        }
        Ok(settled)
    }

    async fn list_inbound(&self, filter: InboxFilter) -> Result<Vec<InboxItem>, Error> {
        self.read(move |c| {
            let (after_source, after_position) = filter.after.unwrap_or_default();
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {INBOX_COLUMNS} FROM inbox
                 WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR status = ?2) AND (source, position) > (?3, ?4)
                 ORDER BY source, position LIMIT ?5"
            ))?;
            let rows = stmt.query_map(
                params![filter.source, filter.status, after_source, after_position, filter.limit as i64],
                inbox_item,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn reingest_inbound(&self, source: Option<String>, position: Option<String>) -> Result<usize, Error> {
        self.sync_write(move |c| {
            let now = now_text(Utc::now());
            // One named entry is taken again whatever its status; without a
            // position, the failed ones are.
            let changed = c.execute(
                "UPDATE inbox SET status = 'new', attempts = 0, next_attempt_time = ?1, update_time = ?1
                 WHERE (?2 IS NULL OR source = ?2)
                   AND CASE WHEN ?3 IS NULL THEN status = 'failed' ELSE position = ?3 AND status <> 'new' END",
                params![now, source, position],
            )?;
            Ok(changed)
        })
        .await
    }

    async fn measure_instance(&self, instance_id: i64) -> Result<Option<MeasureInstance>, Error> {
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT instance_id, code, employer_id FROM arena_measure_instances WHERE instance_id = ?1",
                [instance_id],
                |r| Ok(MeasureInstance { instance_id: r.get(0)?, code: r.get(1)?, employer_id: r.get(2)? }),
            )
            .optional()?)
        })
        .await
    }

    async fn participant_by_ref(&self, system: &str, reference: &str) -> Result<Option<String>, Error> {
        let (system, reference) = (system.to_owned(), reference.to_owned());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT participant_id FROM external_refs WHERE system = ?1 AND reference = ?2",
                params![system, reference],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.submit(|reply| Job::Audit(entries, reply)).await
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, Error> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log
                 WHERE sequence > ?1 AND (?2 IS NULL OR participant_id = ?2) AND (?3 IS NULL OR organisation = ?3)
                   AND (?4 IS NULL OR method = ?4) AND (?5 IS NULL OR time >= ?5) AND (?6 IS NULL OR time < ?6)
                 ORDER BY sequence LIMIT ?7"
            ))?;
            let rows = stmt.query_map(
                params![
                    query.after,
                    query.participant_id,
                    query.organisation,
                    query.method,
                    query.from,
                    query.to,
                    query.limit as i64
                ],
                audit_record,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChangeKind;

    fn test_key() -> AuditKey {
        AuditKey::new([5; 32])
    }

    fn new_participant(id: &str, hash: u8) -> NewParticipant {
        NewParticipant {
            id: id.to_owned(),
            national_id: format!("{hash:011}"),
            national_id_hash: vec![hash; 32],
            record: Participant { given_name: "A".into(), kommunenummer: "0301".into(), ..Default::default() },
            idempotency: None,
            origin: Origin::Api,
            actor: "test".into(),
            audit: None,
        }
    }

    fn mutation(id: &str, apply: impl FnOnce(&mut Participant) -> Result<(), Error> + Send + 'static) -> Mutation {
        Mutation {
            id: id.to_owned(),
            expected_etag: None,
            idempotency: None,
            kind: ChangeKind("test.changed"),
            origin: Origin::Api,
            actor: "test".into(),
            kommuner: None,
            audit: None,
            apply: Box::new(apply),
        }
    }

    /// Runs `jobs` as one batch on `conn` and returns each caller's answer.
    fn batch(conn: &mut Connection, jobs: Vec<Box<dyn FnOnce(Reply) -> Job>>) -> Vec<Result<Committed, Error>> {
        let mut receivers = Vec::new();
        let mut batch = Vec::new();
        for make in jobs {
            let (tx, rx) = oneshot::channel();
            batch.push(make(tx));
            receivers.push(rx);
        }
        run_batch(conn, &mut batch, &[], &Keyring::process_local(), &test_key());
        receivers.into_iter().map(|mut rx| rx.try_recv().expect("every job is answered")).collect()
    }

    fn fresh() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("t.db"), false).unwrap();
        migrate(&mut conn).unwrap();
        (dir, conn)
    }

    fn stored(conn: &Connection, id: &str) -> (i64, Participant) {
        conn.query_row("SELECT version, record FROM participants WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, decode(&r.get::<_, Vec<u8>>(1)?).unwrap()))
        })
        .unwrap()
    }

    #[test]
    fn a_refused_or_panicking_write_rolls_back_alone() {
        let (_dir, mut conn) = fresh();
        let answers = batch(
            &mut conn,
            vec![
                Box::new(|r| Job::Create(Box::new(new_participant("a", 1)), r)),
                Box::new(|r| Job::Mutate(Box::new(mutation("a", |_| Err(Error::precondition("NO", "x", "no")))), r)),
                Box::new(|r| Job::Mutate(Box::new(mutation("a", |_| panic!("a rule bug"))), r)),
                Box::new(|r| {
                    Job::Mutate(
                        Box::new(mutation("a", |p| {
                            p.given_name = "B".into();
                            Ok(())
                        })),
                        r,
                    )
                }),
            ],
        );
        assert!(answers[0].is_ok());
        assert!(matches!(answers[1], Err(Error::FailedPrecondition { .. })));
        assert!(matches!(answers[2], Err(Error::Internal(_))));
        assert_eq!(answers[3].as_ref().unwrap().version, 2);
        let (version, p) = stored(&conn, "a");
        assert_eq!((version, p.given_name.as_str()), (2, "B"));
        let changes: i64 = conn.query_row("SELECT count(*) FROM change_log", [], |r| r.get(0)).unwrap();
        assert_eq!(changes, 2, "one change per acknowledged write");
    }

    #[test]
    fn a_write_failing_half_way_leaves_no_trace() {
        let (_dir, mut conn) = fresh();
        batch(&mut conn, vec![Box::new(|r| Job::Create(Box::new(new_participant("a", 1)), r))]);
        // Occupy version 2 in the change log: the next mutation updates the
        // participant row, then fails on the change-log insert.
        conn.execute(
            "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
             VALUES ('a', 2, 'x', 'x', 'x', 'x', x'')",
            [],
        )
        .unwrap();
        let answers = batch(
            &mut conn,
            vec![
                Box::new(|r| {
                    Job::Mutate(
                        Box::new(mutation("a", |p| {
                            p.given_name = "half".into();
                            Ok(())
                        })),
                        r,
                    )
                }),
                Box::new(|r| Job::Create(Box::new(new_participant("b", 2)), r)),
            ],
        );
        assert!(answers[0].is_err());
        assert!(answers[1].is_ok(), "the other write of the batch commits");
        let (version, p) = stored(&conn, "a");
        assert_eq!((version, p.given_name.as_str()), (1, "A"), "the half-done update was rolled back");
    }

    #[test]
    fn replays_and_reused_request_ids_inside_one_batch() {
        let (_dir, mut conn) = fresh();
        let key = |fp: u8| {
            Some(IdempotencyKey { method: "CreateParticipant", request_id: "r".into(), fingerprint: [fp; 32] })
        };
        let answers = batch(
            &mut conn,
            vec![
                Box::new(move |r| {
                    Job::Create(Box::new(NewParticipant { idempotency: key(1), ..new_participant("a", 1) }), r)
                }),
                Box::new(move |r| {
                    Job::Create(Box::new(NewParticipant { idempotency: key(1), ..new_participant("b", 1) }), r)
                }),
                Box::new(move |r| {
                    Job::Create(Box::new(NewParticipant { idempotency: key(2), ..new_participant("c", 3) }), r)
                }),
            ],
        );
        let first = answers[0].as_ref().unwrap();
        let replay = answers[1].as_ref().unwrap();
        assert!(!first.replayed && replay.replayed);
        assert_eq!(replay.participant.name, first.participant.name);
        assert_eq!(replay.participant.national_id, first.participant.national_id);
        assert!(matches!(answers[2], Err(Error::RequestIdReused)));
    }

    #[tokio::test]
    async fn migrations_are_recorded_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let (store, report) = SqliteStore::open(&path, test_key()).unwrap();
        assert_eq!(report.applied, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
        store.close().await;
        let (store, report) = SqliteStore::open(&path, test_key()).unwrap();
        assert!(report.applied.is_empty());
        store.close().await;
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", []).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, test_key()).err().unwrap();
        assert!(err.to_string().contains("differs"), "{err}");
        let conn = Connection::open(&path).unwrap();
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'x', 'x')", []).unwrap();
        conn.execute(
            "UPDATE schema_migrations SET checksum = ?1 WHERE version = 1",
            [hex::encode(<sha2::Sha256 as sha2::Digest>::digest(MIGRATIONS[0].2.as_bytes()))],
        )
        .unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, test_key()).err().unwrap();
        assert!(err.to_string().contains("newer gateway"), "{err}");
    }

    #[tokio::test]
    async fn every_write_queues_its_targets_and_deliveries_coalesce() {
        use crate::store::{Store, SyncOutcome};
        let dir = tempfile::tempdir().unwrap();
        let wake = Arc::new(tokio::sync::Notify::new());
        let sync = SyncConfig { targets: vec!["arena".into(), "nir".into()], wake: wake.clone() };
        let (store, _) = SqliteStore::open_with_sync(&dir.path().join("s.db"), sync, test_key()).unwrap();
        let lease = std::time::Duration::from_secs(30);
        store.create(new_participant("a", 1)).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .expect("the commit wakes the dispatcher");
        let mut tasks = store.claim_sync(10, lease).await.unwrap();
        tasks.sort_by(|a, b| a.target.cmp(&b.target));
        assert_eq!(
            tasks.iter().map(|t| (t.target.as_str(), t.desired_version)).collect::<Vec<_>>(),
            [("arena", 1), ("nir", 1)]
        );
        assert!(store.claim_sync(10, lease).await.unwrap().is_empty(), "leased");

        // Two more writes while arena delivers version 1: one reconcile of the
        // latest follows, not one per write.
        store.finish_sync(tasks[1].clone(), SyncOutcome::Delivered { version: 1 }).await.unwrap();
        store
            .mutate(mutation("a", |p| {
                p.given_name = "B".into();
                Ok(())
            }))
            .await
            .unwrap();
        store
            .mutate(mutation("a", |p| {
                p.given_name = "C".into();
                Ok(())
            }))
            .await
            .unwrap();
        store.finish_sync(tasks[0].clone(), SyncOutcome::Delivered { version: 1 }).await.unwrap();
        let mut next = store.claim_sync(10, lease).await.unwrap();
        next.sort_by(|a, b| a.target.cmp(&b.target));
        assert_eq!(
            next.iter().map(|t| (t.target.as_str(), t.desired_version)).collect::<Vec<_>>(),
            [("arena", 3), ("nir", 3)]
        );

        // A permanent failure shows, and a replay makes it due again.
        store.finish_sync(next[0].clone(), SyncOutcome::Failed { error: "ORA-20011".into() }).await.unwrap();
        store.finish_sync(next[1].clone(), SyncOutcome::Delivered { version: 3 }).await.unwrap();
        let status = store.sync_status("a").await.unwrap();
        assert_eq!((status[0].state.as_str(), status[0].last_error.as_deref()), ("failed", Some("ORA-20011")));
        assert_eq!((status[1].state.as_str(), status[1].delivered_version), ("delivered", 3));
        assert_eq!(store.failed_syncs(None, 10).await.unwrap().len(), 1);
        assert_eq!(store.retry_failed_syncs(Some("a".into())).await.unwrap(), 1);
        assert_eq!(store.claim_sync(10, lease).await.unwrap().len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn participants_from_before_a_target_was_configured_are_queued_for_it() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let (store, _) = SqliteStore::open(&path, test_key()).unwrap();
        store.create(new_participant("a", 1)).await.unwrap();
        store.close().await;
        let sync = SyncConfig { targets: vec!["nir".into()], wake: Arc::default() };
        let (store, _) = SqliteStore::open_with_sync(&path, sync, test_key()).unwrap();
        let tasks = store.claim_sync(10, std::time::Duration::from_secs(30)).await.unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            (tasks[0].target.as_str(), tasks[0].participant_id.as_str(), tasks[0].desired_version),
            ("nir", "a", 1)
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_inbox_keeps_each_change_once_and_never_rolls_a_record_back() {
        use crate::store::{InboxEntry, InboxFilter, Settle, Settled, Store};
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SqliteStore::open(&dir.path().join("i.db"), test_key()).unwrap();
        store.create(new_participant("a", 1)).await.unwrap();
        let entry = |pos: u64| InboxEntry { position: format!("{pos:020}"), kind: "K".into(), body: "{}".into() };
        assert_eq!(
            store.receive_inbound("arena", vec![entry(1), entry(2)], Some(format!("{:020}", 2))).await.unwrap(),
            2
        );
        // A repeat (a webhook after polling) is kept once; the cursor never goes back.
        assert_eq!(store.receive_inbound("arena", vec![entry(2)], Some(format!("{:020}", 1))).await.unwrap(), 0);
        assert_eq!(store.inbound_cursor("arena").await.unwrap(), Some(format!("{:020}", 2)));
        let due = store.due_inbound("arena", 10).await.unwrap();
        assert_eq!(due.iter().map(|i| i.position.as_str()).collect::<Vec<_>>(), [entry(1).position, entry(2).position]);

        let set_name = |n: &'static str| Settle::Apply {
            entity: "e".into(),
            mutation: Box::new(mutation("a", move |p| {
                p.given_name = n.into();
                Ok(())
            })),
            refs: vec![("arena_person".into(), "7".into())],
        };
        // The newer change first (the older one was waiting for a retry).
        assert_eq!(
            store.settle_inbound("arena", &entry(2).position, set_name("New")).await.unwrap(),
            Settled::Handled(Some(2))
        );
        assert_eq!(
            store.settle_inbound("arena", &entry(1).position, set_name("Old")).await.unwrap(),
            Settled::Superseded
        );
        assert_eq!(store.get("a").await.unwrap().unwrap().given_name, "New", "not rolled back");
        assert_eq!(store.participant_by_ref("arena_person", "7").await.unwrap().as_deref(), Some("a"));
        assert_eq!(store.settle_inbound("arena", &entry(1).position, set_name("Old")).await.unwrap(), Settled::Gone);

        // An ignored change of the entity (say, registered in error before
        // it was ever applied) still outranks an older one waiting to retry.
        store.receive_inbound("arena", vec![entry(5), entry(6)], None).await.unwrap();
        let ignore = Settle::Ignore { reason: "registered in error".into(), entity: Some("f".into()) };
        assert_eq!(store.settle_inbound("arena", &entry(6).position, ignore).await.unwrap(), Settled::Ignored);
        let late = Settle::Apply { entity: "f".into(), mutation: Box::new(mutation("a", |_| Ok(()))), refs: vec![] };
        assert_eq!(store.settle_inbound("arena", &entry(5).position, late).await.unwrap(), Settled::Superseded);

        // Re-ingested, an echo of what the record holds stores no version.
        assert_eq!(store.reingest_inbound(Some("arena".into()), Some(entry(2).position)).await.unwrap(), 1);
        store.receive_inbound("arena", vec![entry(3)], None).await.unwrap();
        let same = Settle::Apply { entity: "e".into(), mutation: Box::new(mutation("a", |_| Ok(()))), refs: vec![] };
        assert_eq!(store.settle_inbound("arena", &entry(3).position, same).await.unwrap(), Settled::Handled(None));
        assert_eq!(store.get("a").await.unwrap().unwrap().etag, etag_for(2));

        // A refused entry fails; re-ingesting the failed ones makes it due again.
        store.settle_inbound("arena", &entry(2).position, Settle::Fail { error: "bad".into() }).await.unwrap();
        let failed = InboxFilter { status: Some("failed".into()), limit: 10, ..Default::default() };
        assert_eq!(store.list_inbound(failed.clone()).await.unwrap()[0].note.as_deref(), Some("bad"));
        assert_eq!(store.reingest_inbound(None, None).await.unwrap(), 1);
        assert!(store.list_inbound(failed).await.unwrap().is_empty());
        assert_eq!(store.due_inbound("arena", 10).await.unwrap().len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn case_numbers_stored_before_the_inbound_migration_are_found_after_it() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let (store, _) = SqliteStore::open(&path, test_key()).unwrap();
        store.create(new_participant("a", 1)).await.unwrap();
        store
            .mutate(mutation("a", |p| {
                p.recognition_cases.push(hurtigspor_proto::v1::RecognitionCase {
                    case_number: "2026-000042".into(),
                    ..Default::default()
                });
                Ok(())
            }))
            .await
            .unwrap();
        store.close().await;
        // Back to the schema before migration 3.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE inbound_cursor; DROP TABLE inbox; DROP TABLE inbound_applied; DROP TABLE external_refs;
             DROP TABLE arena_measure_instances; DELETE FROM schema_migrations WHERE version = 3;",
        )
        .unwrap();
        drop(conn);
        let (store, report) = SqliteStore::open(&path, test_key()).unwrap();
        assert_eq!(report.applied, vec![3]);
        assert_eq!(store.participant_by_ref("nokut", "2026-000042").await.unwrap().as_deref(), Some("a"));
        store.close().await;
    }

    /// The database file and its WAL, as bytes.
    fn file_bytes(path: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        bytes.extend(std::fs::read(wal).unwrap_or_default());
        bytes
    }

    fn holds(bytes: &[u8], text: &str) -> bool {
        bytes.windows(text.len()).any(|w| w == text.as_bytes())
    }

    fn synthetic_id(n: u32) -> String {
        crate::domain::national_id::testing::synthetic_fnr(1985, 1 + n % 12, 1 + n % 28, n)
    }

    /// A participant with a real-looking national id and a given name that
    /// only it has.
    fn person(id: &str, n: u32) -> NewParticipant {
        NewParticipant {
            national_id: synthetic_id(n),
            record: Participant {
                given_name: format!("Filescan{n:04}"),
                kommunenummer: "0301".into(),
                ..Default::default()
            },
            ..new_participant(id, n as u8)
        }
    }

    fn keyring(keys: &[(&str, u8)], active: &str) -> Arc<Keyring> {
        Arc::new(Keyring::new(keys.iter().map(|(id, b)| (id.to_string(), [*b; 32])), active).unwrap())
    }

    #[tokio::test]
    async fn national_ids_never_reach_the_file_or_the_wal_in_plain_text() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scan.db");
        let (store, _) =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("a", 1)], "a"), test_key()).unwrap();
        let people: Vec<NewParticipant> = (0..20).map(|n| person(&format!("p{n}"), n)).collect();
        let ids: Vec<(String, String)> = people.iter().map(|p| (p.id.clone(), p.national_id.clone())).collect();
        for p in people {
            store.create(p).await.unwrap();
        }
        store
            .mutate(mutation("p3", |p| {
                p.family_name = "Changed".into();
                Ok(())
            }))
            .await
            .unwrap();
        for (id, national_id) in &ids {
            assert_eq!(&store.get(id).await.unwrap().unwrap().national_id, national_id, "it reads back");
        }
        // While open, the writes are in the WAL; after close, in the file.
        for stage in ["open", "closed"] {
            if stage == "closed" {
                store.close().await;
            }
            let bytes = file_bytes(&path);
            assert!(holds(&bytes, "Filescan0007"), "the scan sees what is stored ({stage})");
            for (id, national_id) in &ids {
                assert!(!holds(&bytes, national_id), "the national id of {id} is in the file in plain text ({stage})");
            }
        }
    }

    /// A database as gateways before migration 4 left it: migrations 1-3
    /// and national ids in plain text.
    fn database_before_encryption(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_time TEXT NOT NULL)",
        )
        .unwrap();
        for (version, name, sql) in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
            let checksum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sql.as_bytes()));
            conn.execute("INSERT INTO schema_migrations VALUES (?1, ?2, ?3, 'then')", params![version, name, checksum])
                .unwrap();
        }
        conn
    }

    fn insert_plaintext(conn: &Connection, id: &str, n: u32) {
        let record = Participant {
            name: resource_name(id),
            given_name: format!("Filescan{n:04}"),
            kommunenummer: "0301".into(),
            etag: etag_for(1),
            ..Default::default()
        }
        .encode_to_vec();
        conn.execute(
            "INSERT INTO participants (id, national_id_hash, national_id, kommunenummer, hurtigspor_status, version, record, create_time, update_time)
             VALUES (?1, ?2, ?3, '0301', 0, 1, ?4, 'then', 'then')",
            params![id, vec![n as u8; 32], synthetic_id(n), record],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
             VALUES (?1, 1, 'participant.created', 'api', 'test', 'then', ?2)",
            params![id, record],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO idempotency (method, request_id, fingerprint, participant_id, version, create_time)
             VALUES ('CreateParticipant', ?1, ?2, ?1, 1, 'then')",
            params![id, vec![n as u8; 32]],
        )
        .unwrap();
    }

    #[tokio::test]
    async fn plain_text_national_ids_are_encrypted_at_open_and_leave_no_trace_in_the_file() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = database_before_encryption(&path);
        insert_plaintext(&old, "a", 1);
        old.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).unwrap();
        // The second stays in the WAL, as after a crash: the old connection
        // stays open so that closing it does not fold the WAL in.
        insert_plaintext(&old, "b", 2);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        assert!(holds(&std::fs::read(&path).unwrap(), &synthetic_id(1)), "the scan finds plaintext in the file");
        assert!(holds(&std::fs::read(&wal).unwrap(), &synthetic_id(2)), "the scan finds plaintext in the WAL");

        let (store, report) = SqliteStore::open(&path, test_key()).unwrap();
        assert_eq!(report.applied, vec![4, 5]);
        drop(old);
        for (id, n) in [("a", 1), ("b", 2)] {
            let p = store.get(id).await.unwrap().unwrap();
            assert_eq!(p.national_id, synthetic_id(n), "participants/{id} reads back");
            assert_eq!(p.given_name, format!("Filescan{n:04}"));
            let found = store.get_by_national_id_hash(&[n as u8; 32]).await.unwrap().unwrap();
            assert_eq!(found.national_id, synthetic_id(n));
        }
        // A retried request is answered from the change log, national id included.
        let key = IdempotencyKey { method: "CreateParticipant", request_id: "a".into(), fingerprint: [1; 32] };
        let replayed = store.create(NewParticipant { idempotency: Some(key), ..person("x", 9) }).await.unwrap();
        assert!(replayed.replayed);
        assert_eq!(replayed.participant.national_id, synthetic_id(1));
        let (columns, leftover): (String, i64) = store
            .read(|c| {
                Ok((
                    c.query_row("SELECT group_concat(name) FROM pragma_table_info('participants')", [], |r| r.get(0))?,
                    c.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'national_id_plaintext'", [], |r| {
                        r.get(0)
                    })?,
                ))
            })
            .await
            .unwrap();
        assert!(!columns.split(',').any(|c| c == "national_id"), "{columns}");
        assert_eq!(leftover, 0, "the set-aside plaintext is gone");
        // Before the store writes anything else: the file and the WAL.
        let bytes = file_bytes(&path);
        assert!(holds(&bytes, "Filescan0002"), "the scan sees what is stored");
        for n in [1, 2] {
            assert!(!holds(&bytes, &synthetic_id(n)), "national id {n} is left in plain text");
        }
        store.close().await;
        let bytes = file_bytes(&path);
        assert!(holds(&bytes, "Filescan0001"));
        for n in [1, 2] {
            assert!(!holds(&bytes, &synthetic_id(n)), "national id {n} is left in plain text after close");
        }
        // Opening again finds nothing more to do.
        let (store, report) = SqliteStore::open(&path, test_key()).unwrap();
        assert!(report.applied.is_empty());
        assert_eq!(store.get("b").await.unwrap().unwrap().national_id, synthetic_id(2));
        store.close().await;
    }

    #[tokio::test]
    async fn rotation_moves_every_value_to_the_active_key_in_resumable_batches() {
        use crate::store::Store;
        use std::ops::ControlFlow;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rot.db");
        let (store, _) =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("a", 1)], "a"), test_key()).unwrap();
        for n in 0..5 {
            store.create(person(&format!("p{n}"), n)).await.unwrap();
        }
        store.close().await;

        // B is active, A is kept: both read; new values go under B.
        let (store, _) =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("a", 1), ("b", 2)], "b"), test_key())
                .unwrap();
        store.create(person("p5", 5)).await.unwrap();
        assert_eq!(store.get("p0").await.unwrap().unwrap().national_id, synthetic_id(0));
        // Interrupted after the first batch: that batch is kept.
        let mut seen = Vec::new();
        let first = store
            .rotate_keys(2, |done, total| {
                seen.push((done, total));
                ControlFlow::Break(())
            })
            .unwrap();
        assert_eq!((first.reencrypted, first.finished), (2, false));
        assert_eq!(first.by_key, [("a".to_owned(), 3), ("b".to_owned(), 3)].into());
        // Run again: it carries on from where it stopped.
        let second = store
            .rotate_keys(2, |done, total| {
                seen.push((done, total));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!((second.reencrypted, second.finished), (3, true));
        assert_eq!(second.by_key, [("b".to_owned(), 6)].into());
        assert_eq!(seen, [(2, 5), (2, 3), (3, 3)]);
        // And once more: nothing to do, nothing changed.
        let before: Vec<Vec<u8>> = store
            .read(|c| {
                let mut stmt = c.prepare("SELECT national_id_sealed FROM participants ORDER BY position")?;
                Ok(stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        let third = store.rotate_keys(2, |_, _| panic!("no batch to report")).unwrap();
        assert_eq!((third.reencrypted, third.by_key.clone()), (0, [("b".to_owned(), 6)].into()));
        let after: Vec<Vec<u8>> = store
            .read(|c| {
                let mut stmt = c.prepare("SELECT national_id_sealed FROM participants ORDER BY position")?;
                Ok(stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(before, after);
        store.close().await;

        // A removed: everything still reads, by id and by hash.
        let (store, _) =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("b", 2)], "b"), test_key()).unwrap();
        for n in 0..6u32 {
            let id = format!("p{n}");
            assert_eq!(store.get(&id).await.unwrap().unwrap().national_id, synthetic_id(n));
            let found = store.get_by_national_id_hash(&[n as u8; 32]).await.unwrap().unwrap();
            assert_eq!((found.name, found.national_id), (resource_name(&id), synthetic_id(n)));
        }
        let page = store.list(ListQuery { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(
            page.participants.iter().map(|p| p.national_id.clone()).collect::<Vec<_>>(),
            (0..6).map(synthetic_id).collect::<Vec<_>>()
        );
        store.close().await;

        // Without B, the start is refused, naming the key id.
        let err =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("a", 1)], "a"), test_key()).err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, Error::FailedPrecondition { reason: "ENCRYPTION_KEY_NOT_CONFIGURED", .. }), "{text}");
        assert!(text.contains("`b`") && text.contains("HURTIGSPOR__SECURITY__ENCRYPTION_KEYS__B"), "{text}");
        // With another value under the id B, too.
        let err =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("b", 3)], "b"), test_key()).err().unwrap();
        assert!(matches!(err, Error::FailedPrecondition { reason: "ENCRYPTION_KEY_WRONG", .. }), "{err}");
        assert!(err.to_string().contains("`b`"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_runs_beside_writes() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let (store, _) =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("a", 1)], "a"), test_key()).unwrap();
        for n in 0..300u32 {
            store
                .create(NewParticipant { national_id_hash: n.to_be_bytes().to_vec(), ..person(&format!("p{n}"), n) })
                .await
                .unwrap();
        }
        store.close().await;
        let (store, _) =
            SqliteStore::open_with(&path, SyncConfig::default(), keyring(&[("a", 1), ("b", 2)], "b"), test_key())
                .unwrap();
        let store = Arc::new(store);
        let rotation = tokio::task::spawn_blocking({
            let store = Arc::clone(&store);
            move || store.rotate_keys(25, |_, _| std::ops::ControlFlow::Continue(()))
        });
        for n in 300..400u32 {
            store
                .create(NewParticipant { national_id_hash: n.to_be_bytes().to_vec(), ..person(&format!("p{n}"), n) })
                .await
                .unwrap();
        }
        let rotation = rotation.await.unwrap().unwrap();
        assert_eq!(rotation.reencrypted, 300);
        assert_eq!(rotation.by_key.get("a"), None, "{:?}", rotation.by_key);
        for n in 0..400u32 {
            assert_eq!(store.get(&format!("p{n}")).await.unwrap().unwrap().national_id, synthetic_id(n));
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moved.db");
        let (store, _) = SqliteStore::open(&path, test_key()).unwrap();
        store.create(person("a", 1)).await.unwrap();
        store.create(person("b", 2)).await.unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE participants SET national_id_sealed = (SELECT national_id_sealed FROM participants WHERE id = 'a')
             WHERE id = 'b'",
            [],
        )
        .unwrap();
        drop(conn);
        assert_eq!(store.get("a").await.unwrap().unwrap().national_id, synthetic_id(1));
        for result in [
            store.get("b").await.map(|_| ()),
            store.get_by_national_id_hash(&[2; 32]).await.map(|_| ()),
            store.list(ListQuery { limit: 10, ..Default::default() }).await.map(|_| ()),
            store.mutate(mutation("b", |_| Ok(()))).await.map(|_| ()),
        ] {
            let Err(Error::Internal(message)) = result else {
                panic!("a moved ciphertext must not decrypt: {result:?}")
            };
            assert!(message.contains("participants/b") && message.contains("`process-local`"), "{message}");
            assert!(!message.contains(&synthetic_id(1)) && !message.contains(&synthetic_id(2)), "{message}");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn the_database_is_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SqliteStore::open(&dir.path().join("w.db"), test_key()).unwrap();
        let (mode, sync): (String, i64) = store
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "FULL");
        let secure_delete: i64 =
            store.read(|c| Ok(c.query_row("PRAGMA secure_delete", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(secure_delete, 1, "deleted content is overwritten");
        store.close().await;
    }

    fn api_entry() -> AuditEntry {
        AuditEntry {
            organisation: "0192:900000014".into(),
            method: "ParticipantService/Test".into(),
            purpose: Some("case-processing".into()),
            ..Default::default()
        }
    }

    fn audit_rows(conn: &Connection) -> Vec<(Option<String>, String, Option<String>)> {
        conn.prepare("SELECT participant_id, outcome, detail FROM audit_log ORDER BY sequence")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_write_is_audited_with_it_and_a_refused_write_alone() {
        let (_dir, mut conn) = fresh();
        let answers = batch(
            &mut conn,
            vec![
                Box::new(|r| {
                    Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("a", 1) }), r)
                }),
                // The same person again.
                Box::new(|r| {
                    Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("b", 1) }), r)
                }),
                Box::new(|r| {
                    let m = mutation("a", |_| Err(Error::precondition("ILLEGAL_TRANSITION", "x", "no")));
                    Job::Mutate(Box::new(Mutation { audit: Some(api_entry()), ..m }), r)
                }),
                Box::new(|r| {
                    Job::Mutate(Box::new(Mutation { audit: Some(api_entry()), ..mutation("zz", |_| Ok(())) }), r)
                }),
                Box::new(|r| {
                    let m = mutation("a", |p| {
                        p.given_name = "B".into();
                        Ok(())
                    });
                    Job::Mutate(Box::new(Mutation { audit: Some(api_entry()), ..m }), r)
                }),
                // Not audited by the store: inbound changes are audited where they settle.
                Box::new(|r| Job::Mutate(Box::new(mutation("a", |_| Ok(()))), r)),
            ],
        );
        assert!(answers[0].is_ok() && answers[4].is_ok());
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            audit_rows(&conn),
            [
                (some("a"), "OK".to_owned(), some("version 1")),
                (some("a"), "ALREADY_EXISTS".to_owned(), some("PARTICIPANT_ALREADY_EXISTS")),
                (some("a"), "FAILED_PRECONDITION".to_owned(), some("ILLEGAL_TRANSITION")),
                (some("zz"), "NOT_FOUND".to_owned(), some("NOT_FOUND")),
                (some("a"), "OK".to_owned(), some("version 2")),
            ]
        );
        let mut v = Verifier::new(test_key());
        let mut stmt = conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY sequence")).unwrap();
        for r in stmt.query_map([], audit_record).unwrap() {
            v.check(&r.unwrap()).unwrap();
        }
    }

    #[test]
    fn a_batch_that_does_not_commit_leaves_no_audit_entry_of_its_writes() {
        let (_dir, mut conn) = fresh();
        // A trigger that fails the write's transaction from inside, as a
        // full disk would.
        conn.execute_batch(
            "CREATE TRIGGER boom AFTER INSERT ON change_log WHEN NEW.participant_id = 'b'
             BEGIN SELECT RAISE(ROLLBACK, 'disk full'); END;",
        )
        .unwrap();
        let answers = batch(
            &mut conn,
            vec![
                Box::new(|r| {
                    Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("a", 1) }), r)
                }),
                Box::new(|r| {
                    Job::Create(Box::new(NewParticipant { audit: Some(api_entry()), ..new_participant("b", 2) }), r)
                }),
            ],
        );
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        assert!(audit_rows(&conn).is_empty());
    }

    /// A store with `n` audit entries, closed; returns its path.
    async fn audited_store(dir: &Path, n: usize) -> PathBuf {
        use crate::store::Store;
        let path = dir.join("audit.db");
        let (store, _) = SqliteStore::open(&path, test_key()).unwrap();
        for i in 0..n {
            let entry = AuditEntry { participant_id: Some(format!("p{i}")), outcome: "OK".into(), ..api_entry() };
            store.audit(vec![entry]).await.unwrap();
        }
        store.close().await;
        path
    }

    fn tampered(path: &Path, sql: &str) -> Result<AuditHead, Break> {
        let copy = path.with_extension(format!("t{}", rand::random::<u32>()));
        std::fs::copy(path, &copy).unwrap();
        let conn = Connection::open(&copy).unwrap();
        conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;").unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        verify_audit_log(&copy, &test_key(), None, 0, |_, _| {}).unwrap()
    }

    #[tokio::test]
    async fn verify_names_the_first_entry_edited_deleted_or_moved_in_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = audited_store(dir.path(), 6).await;
        let head = verify_audit_log(&path, &test_key(), None, 0, |_, _| {}).unwrap().unwrap();
        assert_eq!((head.entries, head.sequence), (6, 6));

        let edited = tampered(&path, "UPDATE audit_log SET purpose = 'reporting' WHERE sequence = 3");
        assert_eq!(edited, Err(Break::Altered { sequence: 3 }));
        let rehashed = tampered(&path, "UPDATE audit_log SET hash = zeroblob(32) WHERE sequence = 5");
        assert_eq!(rehashed, Err(Break::Altered { sequence: 5 }));
        let deleted = tampered(&path, "DELETE FROM audit_log WHERE sequence = 4");
        assert_eq!(deleted, Err(Break::Missing { sequence: 4, found: 5 }));
        // Two entries swap places (their sequence numbers are swapped).
        let reordered = tampered(
            &path,
            "UPDATE audit_log SET sequence = -2 WHERE sequence = 2;
             UPDATE audit_log SET sequence = 2 WHERE sequence = 3;
             UPDATE audit_log SET sequence = 3 WHERE sequence = -2;",
        );
        assert_eq!(reordered, Err(Break::Altered { sequence: 2 }));
        // Deleting one and renumbering the rest to close the gap.
        let closed = tampered(
            &path,
            "DELETE FROM audit_log WHERE sequence = 2; UPDATE audit_log SET sequence = sequence - 1 WHERE sequence > 2;",
        );
        assert_eq!(closed, Err(Break::Altered { sequence: 2 }));
        // A value of another type (bytes that are not text) is an altered
        // entry too, not a log that cannot be read.
        let retyped = tampered(&path, "UPDATE audit_log SET detail = X'FF00' WHERE sequence = 4");
        assert_eq!(retyped, Err(Break::Altered { sequence: 4 }));
        // Entries removed from the end leave a chain that verifies; the
        // head recorded earlier finds them.
        let copy = path.with_extension("cut");
        std::fs::copy(&path, &copy).unwrap();
        let conn = Connection::open(&copy).unwrap();
        conn.execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE sequence >= 5;").unwrap();
        drop(conn);
        let cut = verify_audit_log(&copy, &test_key(), None, 0, |_, _| {}).unwrap().expect("a shorter chain verifies");
        assert_eq!(cut.sequence, 4);
        let expected = Some((head.sequence, head.hash.clone()));
        assert_eq!(
            verify_audit_log(&copy, &test_key(), expected.clone(), 0, |_, _| {}).unwrap(),
            Err(Break::Truncated { sequence: 6, last: 4 })
        );
        verify_audit_log(&path, &test_key(), expected, 0, |_, _| {}).unwrap().expect("the full log has its head");
        let wrong_head = Some((3, vec![0; 32]));
        assert_eq!(
            verify_audit_log(&path, &test_key(), wrong_head, 0, |_, _| {}).unwrap(),
            Err(Break::Altered { sequence: 3 })
        );
        // With another key, nothing verifies.
        assert_eq!(
            verify_audit_log(&path, &AuditKey::new([6; 32]), None, 0, |_, _| {}).unwrap(),
            Err(Break::Altered { sequence: 1 })
        );
    }

    #[tokio::test]
    async fn the_log_refuses_updates_and_deletes_and_verify_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = audited_store(dir.path(), 5).await;
        let conn = Connection::open(&path).unwrap();
        for sql in ["UPDATE audit_log SET outcome = 'OK'", "DELETE FROM audit_log"] {
            let err = conn.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        let mut seen = Vec::new();
        verify_audit_log(&path, &test_key(), None, 2, |checked, total| seen.push((checked, total))).unwrap().unwrap();
        assert_eq!(seen, [(2, 5), (4, 5)]);
    }

    #[tokio::test]
    async fn deliveries_and_inbound_changes_are_audited() {
        use crate::store::{InboxEntry, Settle, Store, SyncOutcome};
        let dir = tempfile::tempdir().unwrap();
        let sync = SyncConfig { targets: vec!["nir".into()], wake: Arc::default() };
        let path = dir.path().join("d.db");
        let (store, _) = SqliteStore::open_with_sync(&path, sync, test_key()).unwrap();
        store.create(new_participant("a", 1)).await.unwrap();
        let task = store.claim_sync(10, std::time::Duration::from_secs(30)).await.unwrap().remove(0);
        let at = Utc::now();
        store.finish_sync(task.clone(), SyncOutcome::Deferred { error: "breaker open".into(), at }).await.unwrap();
        store.finish_sync(task.clone(), SyncOutcome::Retry { error: "HTTP 503".into(), at }).await.unwrap();
        store.finish_sync(task, SyncOutcome::Delivered { version: 1 }).await.unwrap();
        let entry =
            InboxEntry { position: format!("{:020}", 7), kind: "SIAMO.TILTAKDELTAKER U".into(), body: "{}".into() };
        store.receive_inbound("arena", vec![entry], None).await.unwrap();
        let settle = Settle::Apply {
            entity: "TD-1".into(),
            mutation: Box::new(mutation("a", |p| {
                p.given_name = "Z".into();
                Ok(())
            })),
            refs: vec![],
        };
        store.settle_inbound("arena", &format!("{:020}", 7), settle).await.unwrap();
        let records = store.audit_log(AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
        let seen: Vec<(&str, &str, Option<&str>, &str)> = records
            .iter()
            .map(|r| {
                (
                    r.entry.organisation.as_str(),
                    r.entry.method.as_str(),
                    r.entry.participant_id.as_deref(),
                    r.entry.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("gateway", "deliver/nir", Some("a"), "retry"),
                ("gateway", "deliver/nir", Some("a"), "delivered"),
                ("arena", "inbound/arena/SIAMO.TILTAKDELTAKER U", Some("a"), "handled"),
            ],
            "a deferred delivery was not attempted and is not audited"
        );
        assert_eq!(records[0].entry.detail.as_deref(), Some("version 1: HTTP 503"));
        assert_eq!(records[2].entry.detail.as_deref(), Some(format!("position {:020}; version 2", 7).as_str()));
        // Filters and paging.
        let only_arena = store
            .audit_log(AuditQuery { organisation: Some("arena".into()), limit: 10, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(only_arena.len(), 1);
        let after_first = store.audit_log(AuditQuery { after: 1, limit: 1, ..Default::default() }).await.unwrap();
        assert_eq!(after_first.iter().map(|r| r.sequence).collect::<Vec<_>>(), [2]);
        store.close().await;
        verify_audit_log(&path, &test_key(), None, 0, |_, _| {}).unwrap().unwrap();
    }

    #[tokio::test]
    async fn histories_come_per_participant_in_version_order_across_pages() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SqliteStore::open(&dir.path().join("h.db"), test_key()).unwrap();
        // Interleaved writes: the change log holds b1 a1 b2 a2 b3.
        store.create(new_participant("b", 1)).await.unwrap();
        store.create(new_participant("a", 2)).await.unwrap();
        for id in ["b", "a", "b"] {
            store
                .mutate(mutation(id, |p| {
                    p.given_name.push('x');
                    Ok(())
                }))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.histories(after.clone(), 2).await.unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = Some((last.participant_id.clone(), last.version));
            for r in &page {
                assert!(r.snapshot.national_id.is_empty(), "snapshots hold no national id");
                seen.push((r.participant_id.clone(), r.version));
            }
        }
        let expected = [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3)];
        assert_eq!(seen, expected.map(|(p, v)| (p.to_owned(), v)));
        store.close().await;
    }
}

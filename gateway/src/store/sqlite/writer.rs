//! The group-commit writer: one thread takes a write, then whatever else is
//! already queued (up to [`MAX_BATCH`]), applies each in its own savepoint
//! of one transaction and answers every caller only after the commit. One
//! refused write rolls back alone; a batch that does not commit answers
//! every write of it as not stored.

use super::{
    audit_log::append_audit,
    connection::in_savepoint,
    participants::{apply_create, apply_mutation},
};
use crate::{
    audit::{AuditEntry, AuditKey},
    clock::Clock,
    crypto::Keyring,
    error::Error,
    store::{Committed, Mutation, NewParticipant, StoreError, SyncConfig, error::Result, rules},
};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most writes committed together.
pub(super) const MAX_BATCH: usize = 256;
/// Pending writes the queue holds before callers wait.
pub(super) const QUEUE_DEPTH: usize = 4096;

pub(super) type Reply = oneshot::Sender<Result<Committed, Error>>;
pub(super) type AuditReply = oneshot::Sender<Result<(), Error>>;

pub(super) enum Job {
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

/// Counters of the write path: how many writes shared how many commits.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
}

/// What the writer needs besides its connection.
pub(super) struct Context {
    pub counters: std::sync::Arc<Counters>,
    pub sync: SyncConfig,
    pub keyring: std::sync::Arc<Keyring>,
    pub audit_key: AuditKey,
    pub clock: Clock,
}

/// The writer: takes one job, then whatever else is already queued (up to
/// `MAX_BATCH`), applies them in one transaction and answers after commit.
pub(super) fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>, cx: &Context) {
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
        // A batch of read audits alone changes no participant.
        let changed = batch.iter().any(|job| !matches!(job, Job::Audit(..)));
        if run_batch(&mut conn, &mut batch, cx) {
            cx.counters.writes.fetch_add(size, Ordering::Relaxed);
            cx.counters.commits.fetch_add(1, Ordering::Relaxed);
            if changed {
                cx.sync.changes.notify();
                if !cx.sync.targets.is_empty() {
                    cx.sync.wake.notify_one();
                }
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
pub(super) fn run_batch(conn: &mut Connection, batch: &mut Vec<Job>, cx: &Context) -> bool {
    let mut jobs = batch.drain(..);
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = StoreError::from(e);
            for job in jobs {
                job.fail(StoreError::unavailable(&err));
            }
            return false;
        }
    };
    let now = cx.clock.now();
    let targets = &cx.sync.targets;
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    let mut broken = None;
    for job in jobs.by_ref() {
        // With an error: the transaction can no longer be trusted.
        let (answer, broke) = match job {
            Job::Create(new, reply) => {
                let audit = new.audit.clone().map(|e| (e, new.id.clone()));
                write(&mut tx, cx, now, reply, audit, false, |sp| apply_create(sp, *new, now, targets, &cx.keyring))
            }
            Job::Mutate(m, reply) => {
                let audit = m.audit.clone().map(|e| (e, m.id.clone()));
                write(&mut tx, cx, now, reply, audit, true, |sp| apply_mutation(sp, *m, now, targets, &cx.keyring))
            }
            Job::Audit(entries, reply) => match append_audit(&tx, &cx.audit_key, &entries, now) {
                Ok(()) => (Answer::Audit(reply, Ok(())), None),
                Err(e) => (Answer::Audit(reply, Err(StoreError::unavailable(&e))), Some(e)),
            },
        };
        answers.push(answer);
        if let Some(e) = broke {
            broken = Some(e);
            break;
        }
        // On some errors (disk full, I/O) SQLite rolls back the whole
        // transaction by itself: nothing of this batch would be stored.
        if tx.is_autocommit() {
            broken = Some(StoreError::Unavailable("the database rolled back the transaction".into()));
            break;
        }
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => tx.commit().map_err(StoreError::from),
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
                answer.fail(StoreError::unavailable(&err));
            }
            for job in jobs {
                job.fail(StoreError::unavailable(&err));
            }
            false
        }
    }
}

/// Runs one write in its own savepoint and appends its audit entry,
/// completed by the rules, beside it: the caller's answer, and the error
/// when the transaction can no longer be trusted.
fn write(
    tx: &mut rusqlite::Transaction<'_>,
    cx: &Context,
    now: DateTime<Utc>,
    reply: Reply,
    audit: Option<(AuditEntry, String)>,
    existing_record: bool,
    apply: impl FnOnce(&rusqlite::Savepoint<'_>) -> Result<Committed>,
) -> (Answer, Option<StoreError>) {
    let result = in_savepoint(tx, apply).and_then(|r| {
        if let Some(entry) = rules::write_audit(audit, existing_record, &r) {
            append_audit(tx, &cx.audit_key, &[entry], now)?;
        }
        Ok(r)
    });
    match result {
        Ok(r) => (Answer::Write(reply, r), None),
        Err(e) => (Answer::Write(reply, Err(StoreError::unavailable(&e))), Some(e)),
    }
}

impl Job {
    pub(super) fn fail(self, e: Error) {
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

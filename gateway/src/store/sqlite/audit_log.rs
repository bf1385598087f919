//! The audit log's rows: appending chained entries, reading them back, and
//! verifying the chain of a database file read-only.

use super::{SqliteStore, connection::open_connection, writer::Job};
use crate::{
    audit::{AuditEntry, AuditKey, AuditQuery, AuditRecord, Break},
    error::Error,
    store::{AuditHead, AuditLog, ChainCheck, StoreError, error::Result, rules},
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

pub(super) const AUDIT_COLUMNS: &str =
    "sequence, time, organisation, vendor, method, participant_id, purpose, outcome, detail, previous_hash, hash";

/// Appends entries to the audit log, chained to its current head. Runs in
/// a write transaction, which SQLite serialises: two appends cannot both
/// chain to the same head.
pub(super) fn append_audit(
    conn: &Connection,
    key: &AuditKey,
    entries: &[AuditEntry],
    now: DateTime<Utc>,
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_log (sequence, time, organisation, vendor, method, participant_id, purpose, outcome, detail,
             previous_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for r in rules::chain(key, head, now, entries) {
        let e = &r.entry;
        insert.execute(params![
            r.sequence,
            r.time,
            e.organisation,
            e.vendor,
            e.method,
            e.participant_id,
            e.purpose,
            e.outcome,
            e.detail,
            r.previous_hash,
            r.hash
        ])?;
    }
    Ok(())
}

pub(super) fn audit_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
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

/// See [`crate::store::verify_audit_log`].
pub(crate) fn verify_audit_log(
    path: &Path,
    key: &AuditKey,
    expect_head: Option<(i64, Vec<u8>)>,
    every: i64,
    progress: impl FnMut(i64, i64),
) -> Result<std::result::Result<AuditHead, Break>> {
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
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
        return Err(StoreError::Unavailable(format!(
            "{} has no audit log yet; run `hurtigspor migrate` (or start the gateway) first",
            path.display()
        )));
    }
    let total: i64 = conn.query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))?;
    let mut stmt = conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY sequence"))?;
    let mut rows = stmt.query([])?;
    let mut chain = ChainCheck::new(key, expect_head, total, every, progress);
    while let Some(row) = rows.next()? {
        // A value whose type was changed (text for a blob, bytes that are
        // not text) is an altered entry, not a reason to stop checking.
        let record = match audit_record(row) {
            Ok(r) => r,
            Err(_) => {
                let sequence = row.get::<_, i64>(0).unwrap_or(chain.next_sequence());
                return Ok(Err(Break::Altered { sequence }));
            }
        };
        if let Err(broken) = chain.check(&record) {
            return Ok(Err(broken));
        }
    }
    Ok(chain.finish())
}

#[async_trait]
impl AuditLog for SqliteStore {
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
}

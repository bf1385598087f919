//! The audit log on PostgreSQL. An entry is appended in its own write's
//! transaction without a place in the chain: no audited read or write waits
//! for a lock on the chain's head. A chainer (one instance at a time, under
//! an advisory lock) then gives each entry its sequence and hashes, in
//! (transaction, arrival) order, once its transaction is below the
//! visibility horizon: every entry that could still commit before it has
//! committed or aborted, so the chain never needs a gap filled. `audit
//! verify` checks the chained entries, as on SQLite.

use super::{
    PostgresStore,
    connection::{Db, Pool, connect},
    signals::Signals,
};
use crate::{
    audit::{AuditEntry, AuditKey, AuditQuery, AuditRecord, Break},
    error::Error,
    store::{AuditHead, AuditLog, ChainCheck, StoreError, codec::time_text, error::Result, rules},
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use tokio_postgres::{GenericClient, Row};

/// Held (for a transaction) by the instance that chains.
const CHAIN_LOCK: i64 = 0x6875_7274_6967_0002;
/// Entries chained per transaction.
const CHAIN_BATCH: i64 = 1_000;
/// How long a reader of the log waits for the entries appended before it
/// asked to be chained (a long transaction elsewhere holds the horizon).
const CHAIN_WAIT: Duration = Duration::from_secs(5);
/// How often the chainer looks when nothing woke it.
const CHAIN_POLL: Duration = Duration::from_millis(500);

/// Appends entries, unchained, in the caller's transaction.
pub(super) async fn append_audit<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    entries: &[AuditEntry],
    now: DateTime<Utc>,
) -> Result<()> {
    let time = time_text(now);
    for e in entries {
        db.execute(
            "INSERT INTO audit_log (time, organisation, vendor, method, participant_id, purpose, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&time, &e.organisation, &e.vendor, &e.method, &e.participant_id, &e.purpose, &e.outcome, &e.detail],
        )
        .await?;
    }
    Ok(())
}

/// Chains what is below the horizon, a batch per transaction, unless
/// another instance is chaining now. Returns how many it chained.
pub(super) async fn chain_pending(pool: &Pool, key: &AuditKey) -> Result<usize> {
    let mut chained = 0;
    loop {
        let mut conn = pool.get().await?;
        let conn = &mut *conn;
        let tx = conn.client.transaction().await?;
        let db = Db { client: &tx, statements: &conn.statements };
        let mine: bool = db.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&CHAIN_LOCK]).await?.get(0);
        if !mine {
            return Ok(chained);
        }
        let head = db
            .query_opt(
                "SELECT sequence, hash FROM audit_log WHERE sequence IS NOT NULL ORDER BY sequence DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)));
        let rows = db
            .query(
                "SELECT id, time, organisation, vendor, method, participant_id, purpose, outcome, detail
                 FROM audit_log
                 WHERE sequence IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY xid, id LIMIT $1",
                &[&CHAIN_BATCH],
            )
            .await?;
        if rows.is_empty() {
            return Ok(chained);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let entries: Vec<(String, AuditEntry)> = rows.iter().map(|r| (r.get(1), entry(r, 2))).collect();
        let records = rules::chain_each(key, head, &entries);
        let sequences: Vec<i64> = records.iter().map(|r| r.sequence).collect();
        let previous: Vec<&[u8]> = records.iter().map(|r| r.previous_hash.as_slice()).collect();
        let hashes: Vec<&[u8]> = records.iter().map(|r| r.hash.as_slice()).collect();
        db.execute(
            "UPDATE audit_log a SET sequence = c.sequence, previous_hash = c.previous_hash, hash = c.hash
             FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[]) AS c(id, sequence, previous_hash, hash)
             WHERE a.id = c.id",
            &[&ids, &sequences, &previous, &hashes],
        )
        .await?;
        tx.commit().await?;
        chained += records.len();
        if (records.len() as i64) < CHAIN_BATCH {
            return Ok(chained);
        }
    }
}

/// Chains in the background: soon after entries are appended here, and
/// now and then for what other instances appended.
pub(super) fn chainer(pool: Arc<Pool>, key: AuditKey, signals: Arc<Signals>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = signals.audited.notified() => {
                    // Let a burst of appends land, so one pass chains them.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ = tokio::time::sleep(CHAIN_POLL) => {}
            }
            if let Err(e) = chain_pending(&pool, &key).await {
                tracing::warn!(error = %e, "cannot chain the audit log now; trying again");
            }
        }
    })
}

/// An audit entry from a row's columns, starting at `first` (organisation,
/// vendor, method, participant_id, purpose, outcome, detail).
fn entry(r: &Row, first: usize) -> AuditEntry {
    AuditEntry {
        organisation: r.get(first),
        vendor: r.get(first + 1),
        method: r.get(first + 2),
        participant_id: r.get(first + 3),
        purpose: r.get(first + 4),
        outcome: r.get(first + 5),
        detail: r.get(first + 6),
    }
}

/// A chained row (`sequence, time, organisation, ..., detail,
/// previous_hash, hash`) as a record.
fn record(r: &Row) -> AuditRecord {
    AuditRecord { sequence: r.get(0), time: r.get(1), entry: entry(r, 2), previous_hash: r.get(9), hash: r.get(10) }
}

/// A query of chained entries, as [`record`] reads them.
macro_rules! chained_query {
    ($rest:literal) => {
        concat!(
            "SELECT sequence, time, organisation, vendor, method, participant_id, purpose, outcome, detail,
                 previous_hash, hash FROM audit_log ",
            $rest
        )
    };
}

/// See [`crate::store::verify_audit_log`]: reads the chained entries in
/// pages, in sequence order.
pub(crate) async fn verify_audit_log(
    url: &str,
    key: &AuditKey,
    expect_head: Option<(i64, Vec<u8>)>,
    every: i64,
    progress: impl FnMut(i64, i64),
) -> Result<std::result::Result<AuditHead, Break>> {
    let client = connect(url).await?;
    let has_log: bool = client.query_one("SELECT to_regclass('audit_log') IS NOT NULL", &[]).await?.get(0);
    if !has_log {
        return Err(StoreError::Unavailable(
            "this database has no audit log yet; run `hurtigspor migrate --database-url ...` (or start the gateway) first"
                .into(),
        ));
    }
    let total: i64 = client.query_one("SELECT count(*) FROM audit_log WHERE sequence IS NOT NULL", &[]).await?.get(0);
    let page = client.prepare(chained_query!("WHERE sequence > $1 ORDER BY sequence LIMIT 10000")).await?;
    let mut chain = ChainCheck::new(key, expect_head, total, every, progress);
    let mut after = 0i64;
    loop {
        let rows = client.query(&page, &[&after]).await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for row in &rows {
            if let Err(broken) = chain.check(&record(row)) {
                return Ok(Err(broken));
            }
        }
    }
    Ok(chain.finish())
}

impl PostgresStore {
    /// Chains what was appended before now, waiting (a little) for other
    /// transactions that hold the horizon, so that a reader of the log
    /// finds what it just caused.
    async fn chain_appended(&self) -> Result<()> {
        let conn = self.conn().await?;
        let newest: Option<i64> =
            conn.db().query_one("SELECT max(id) FROM audit_log WHERE sequence IS NULL", &[]).await?.get(0);
        drop(conn);
        let Some(newest) = newest else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + CHAIN_WAIT;
        loop {
            chain_pending(&self.pool, &self.audit_key).await?;
            let conn = self.conn().await?;
            let waiting: bool = conn
                .db()
                .query_one("SELECT EXISTS (SELECT 1 FROM audit_log WHERE sequence IS NULL AND id <= $1)", &[&newest])
                .await?
                .get(0);
            if !waiting || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl AuditLog for PostgresStore {
    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let now = self.clock.now();
        if entries.len() == 1 {
            append_audit(&conn.db(), &entries, now).await?;
        } else {
            let conn = &mut *conn;
            let tx = conn.client.transaction().await.map_err(StoreError::from)?;
            append_audit(&Db { client: &tx, statements: &conn.statements }, &entries, now).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        self.signals.audited.notify_one();
        Ok(())
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, Error> {
        self.chain_appended().await?;
        let conn = self.conn().await?;
        let rows = conn
            .db()
            .query(
                chained_query!(
                    "WHERE sequence > $1 AND ($2::text IS NULL OR participant_id = $2)
                       AND ($3::text IS NULL OR organisation = $3) AND ($4::text IS NULL OR method = $4)
                       AND ($5::text IS NULL OR time >= $5) AND ($6::text IS NULL OR time < $6)
                     ORDER BY sequence LIMIT $7"
                ),
                &[
                    &query.after,
                    &query.participant_id,
                    &query.organisation,
                    &query.method,
                    &query.from,
                    &query.to,
                    &(query.limit as i64),
                ],
            )
            .await?;
        Ok(rows.iter().map(record).collect())
    }
}

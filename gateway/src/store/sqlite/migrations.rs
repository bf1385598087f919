//! The schema: versioned migrations under `gateway/migrations/sqlite/`,
//! applied in order, each recorded with its checksum in `schema_migrations`,
//! and the backfills a migration needs once.

use super::connection::open_connection;
use crate::{
    crypto::Keyring,
    store::{MigrationReport, codec, error::Result, rules},
};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::Path;

/// Versioned migrations, applied in order. A second dialect keeps the same
/// version numbers for the same steps.
pub(super) const MIGRATIONS: &[rules::Migration] = &[
    (1, "initial", include_str!("../../../migrations/sqlite/0001_initial.sql")),
    (2, "sync", include_str!("../../../migrations/sqlite/0002_sync.sql")),
    (3, "inbound", include_str!("../../../migrations/sqlite/0003_inbound.sql")),
    (4, "national_id_encryption", include_str!("../../../migrations/sqlite/0004_national_id_encryption.sql")),
    (5, "audit", include_str!("../../../migrations/sqlite/0005_audit.sql")),
];

/// Applies pending migrations in one transaction. A database of a newer
/// schema, or one whose applied migration differs from ours, is refused.
pub(super) fn migrate(conn: &mut Connection, now: DateTime<Utc>) -> Result<MigrationReport> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_time TEXT NOT NULL)",
    )?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let known: Vec<(i64, String)> = {
        let mut stmt = tx.prepare("SELECT version, checksum FROM schema_migrations ORDER BY version")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    let mut applied = Vec::new();
    for ((version, name, sql), checksum) in rules::pending_migrations(&known, MIGRATIONS)? {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_time) VALUES (?1, ?2, ?3, ?4)",
            params![version, name, checksum, codec::time_text(now)],
        )?;
        applied.push(*version);
    }
    tx.commit()?;
    if applied.contains(&3) {
        backfill_case_numbers(conn)?;
    }
    Ok(MigrationReport { applied, current: MIGRATIONS.last().map_or(0, |m| m.0) })
}

/// See [`crate::store::migrate`].
pub(crate) fn migrate_only(path: &Path, keyring: Option<&Keyring>) -> Result<MigrationReport> {
    super::create_parent(path)?;
    let mut conn = open_connection(path, false)?;
    let report = migrate(&mut conn, Utc::now())?;
    if let Some(keyring) = keyring {
        super::maintenance::seal_plaintext_national_ids(&mut conn, keyring)?;
        super::maintenance::check_keys(&conn, keyring)?;
    }
    Ok(report)
}

/// Case numbers stored before `external_refs` existed are made findable
/// once, when that migration runs.
fn backfill_case_numbers(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("SELECT id, record FROM participants")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    for row in rows {
        let (id, record) = row?;
        let numbers = rules::case_numbers(&codec::decode(&record)?);
        super::participants::keep_case_numbers(conn, &id, &numbers)?;
    }
    Ok(())
}

/// Participants a target has no row for (registered before the target was
/// configured, or before sync existed) are queued for it at start.
pub(super) fn backfill_sync(conn: &Connection, targets: &[String], now: DateTime<Utc>) -> Result<()> {
    let now = codec::time_text(now);
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

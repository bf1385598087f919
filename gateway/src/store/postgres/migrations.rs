//! The schema: versioned migrations under `gateway/migrations/postgres/`,
//! applied in order, each recorded with its checksum in `schema_migrations`.

use super::connection::connect;
use crate::store::{MigrationReport, codec, error::Result, rules};
use chrono::Utc;

/// Versioned migrations, applied in order: the same steps, under the same
/// version numbers, as SQLite's.
pub(super) const MIGRATIONS: &[rules::Migration] = &[
    (1, "initial", include_str!("../../../migrations/postgres/0001_initial.sql")),
    (2, "sync", include_str!("../../../migrations/postgres/0002_sync.sql")),
    (3, "inbound", include_str!("../../../migrations/postgres/0003_inbound.sql")),
    (4, "national_id_encryption", include_str!("../../../migrations/postgres/0004_national_id_encryption.sql")),
    (5, "audit", include_str!("../../../migrations/postgres/0005_audit.sql")),
];

/// The advisory lock migrations run under: instances that start together
/// wait for the first, then find nothing left to do.
const MIGRATION_LOCK: i64 = 0x6875_7274_6967_0001;

/// Applies pending migrations to the database at `url` in one transaction.
/// A database of a newer schema, or one whose applied migration differs
/// from ours, is refused.
pub(crate) async fn migrate(url: &str) -> Result<MigrationReport> {
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_time TEXT NOT NULL)",
    )
    .await?;
    let known: Vec<(i64, String)> = tx
        .query("SELECT version, checksum FROM schema_migrations ORDER BY version", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut applied = Vec::new();
    for ((version, name, sql), checksum) in rules::pending_migrations(&known, MIGRATIONS)? {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_time) VALUES ($1, $2, $3, $4)",
            &[version, name, &checksum, &codec::time_text(Utc::now())],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(MigrationReport { applied, current: MIGRATIONS.last().map_or(0, |m| m.0) })
}

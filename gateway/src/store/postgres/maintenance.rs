//! Work on the database as a whole: what every instance does once at start
//! (under one advisory lock, so instances starting together do it one after
//! another, the later ones finding nothing left), and key rotation.

use super::connection::{Db, Pool};
use crate::{
    crypto::Keyring,
    error::Error,
    store::{Rotation, RotationProgress, codec::time_text, error::Result, rules},
};
use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// Held (for a transaction) by an instance doing its start-up work.
const START_UP_LOCK: i64 = 0x6875_7274_6967_0003;

/// Checks the keys and queues participants for targets new to them, one
/// instance at a time.
pub(super) async fn start_up(pool: &Pool, keyring: &Keyring, targets: &[String], now: DateTime<Utc>) -> Result<()> {
    let mut conn = pool.get().await?;
    let conn = &mut *conn;
    let tx = conn.client.transaction().await?;
    let db = Db { client: &tx, statements: &conn.statements };
    db.execute("SELECT pg_advisory_xact_lock($1)", &[&START_UP_LOCK]).await?;
    check_keys(&db, keyring).await?;
    backfill_sync(&db, targets, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Checks the keys, as at start.
pub(super) async fn check(pool: &Pool, keyring: &Keyring) -> Result<()> {
    let conn = pool.get().await?;
    check_keys(&conn.db(), keyring).await
}

/// Participants a target has no row for (registered before the target was
/// configured) are queued for it.
async fn backfill_sync<C: GenericClient + Sync>(db: &Db<'_, C>, targets: &[String], now: DateTime<Utc>) -> Result<()> {
    let now = time_text(now);
    for target in targets {
        let added = db
            .execute(
                "INSERT INTO sync_state (target, participant_id, desired_version, state, attempts, next_attempt_time,
                     update_time)
                 SELECT $1, p.id, p.version, 'pending', 0, $2, $2 FROM participants p
                 WHERE NOT EXISTS (SELECT 1 FROM sync_state s WHERE s.target = $1 AND s.participant_id = p.id)
                 ON CONFLICT (target, participant_id) DO NOTHING",
                &[target, &now],
            )
            .await?;
        if added > 0 {
            tracing::info!(target = %target, participants = added, "queued existing participants for a target");
        }
    }
    Ok(())
}

/// Every key id the database holds national ids under must be in the
/// keyring and must decrypt one of them: a missing or wrong key stops the
/// start instead of failing reads later.
async fn check_keys<C: GenericClient + Sync>(db: &Db<'_, C>, keyring: &Keyring) -> Result<()> {
    let in_use = db
        .query(
            "SELECT national_id_key, count(*), min(id) FROM participants GROUP BY national_id_key
             ORDER BY national_id_key",
            &[],
        )
        .await?;
    for row in in_use {
        let (key_id, count, sample): (Option<String>, i64, String) = (row.get(0), row.get(1), row.get(2));
        let sealed: Option<Vec<u8>> =
            db.query_one("SELECT national_id_sealed FROM participants WHERE id = $1", &[&sample]).await?.get(0);
        rules::check_key(keyring, key_id.as_deref(), count, &sample, sealed.as_deref())?;
    }
    Ok(())
}

/// See [`crate::store::Maintenance::rotate_keys`]: batches of `batch`
/// participants, each re-encrypted only if no one changed its value
/// meanwhile, each batch committed on its own.
pub(super) async fn rotate_keys(
    pool: &Pool,
    keyring: &Keyring,
    batch: usize,
    mut progress: RotationProgress,
) -> Result<Rotation, Error> {
    let active = keyring.active();
    let mut conn = pool.get().await?;
    let total: i64 = conn
        .db()
        .query_one("SELECT count(*) FROM participants WHERE national_id_key IS DISTINCT FROM $1", &[&active])
        .await?
        .get(0);
    let total = total as usize;
    let (mut done, mut after, mut finished) = (0, 0i64, true);
    loop {
        let conn = &mut *conn;
        let tx = conn.client.transaction().await.map_err(crate::store::StoreError::from)?;
        let db = Db { client: &tx, statements: &conn.statements };
        let rows = db
            .query(
                "SELECT position, id, national_id_key, national_id_sealed FROM participants
                 WHERE position > $1 AND national_id_key IS DISTINCT FROM $2 ORDER BY position LIMIT $3
                 FOR UPDATE",
                &[&after, &active, &(batch.max(1) as i64)],
            )
            .await?;
        let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else { break };
        for row in rows {
            let id: String = row.get(1);
            let sealed = rules::SealedId { key_id: row.get(2), bytes: row.get(3) };
            let national_id = rules::open_national_id(keyring, &id, sealed)?;
            let value = keyring.seal(&id, &national_id)?;
            db.execute(
                "UPDATE participants SET national_id_key = $2, national_id_sealed = $3 WHERE id = $1",
                &[&id, &value.key_id, &value.bytes],
            )
            .await?;
            done += 1;
        }
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        after = last;
        if progress(done, total.max(done)).is_break() {
            finished = false;
            break;
        }
    }
    let by_key = conn
        .db()
        .query("SELECT coalesce(national_id_key, ''), count(*) FROM participants GROUP BY national_id_key", &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
        .collect();
    Ok(Rotation { active: active.to_owned(), reencrypted: done, finished, by_key })
}

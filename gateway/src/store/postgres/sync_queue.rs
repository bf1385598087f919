//! The sync queue on PostgreSQL: one row per (target, participant), marked
//! by every write, claimed by the dispatchers of every instance with
//! `FOR UPDATE SKIP LOCKED`, leased to one instance by name, and settled
//! only by the instance that still holds the lease.

use super::{PostgresStore, audit_log::append_audit, connection::Db};
use crate::{
    error::Error,
    store::{
        SyncOutcome, SyncQueue, SyncStatus, SyncTask,
        codec::time_text,
        error::Result,
        rules::{self, SyncRow},
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

/// Records that every target in `targets` must reach `version` of the
/// participant, as [`rules::pending`] says.
pub(super) async fn mark_for_sync<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    targets: &[String],
    id: &str,
    version: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let row = rules::pending(version, now);
    db.execute(
        "INSERT INTO sync_state (target, participant_id, desired_version, delivered_version, state, attempts,
             last_error, next_attempt_time, update_time)
         SELECT t, $2, $3, $4, $5, $6, $7, $8, $8 FROM unnest($1::text[]) AS t
         ON CONFLICT (target, participant_id) DO UPDATE SET
             desired_version = excluded.desired_version, state = excluded.state, attempts = excluded.attempts,
             last_error = excluded.last_error, next_attempt_time = excluded.next_attempt_time,
             update_time = excluded.update_time",
        &[
            &targets,
            &id,
            &row.desired_version,
            &row.delivered_version,
            &row.state,
            &row.attempts,
            &row.last_error,
            &row.next_attempt_time,
        ],
    )
    .await?;
    Ok(())
}

/// A query of delivery states, as [`status`] reads them.
macro_rules! status_query {
    ($rest:literal) => {
        concat!(
            "SELECT target, participant_id, desired_version, delivered_version, state, attempts, last_error,
                 update_time FROM sync_state ",
            $rest
        )
    };
}

fn status(r: &Row) -> SyncStatus {
    SyncStatus {
        target: r.get(0),
        participant_id: r.get(1),
        desired_version: r.get(2),
        delivered_version: r.get(3),
        state: r.get(4),
        attempts: r.get(5),
        last_error: r.get(6),
        update_time: r.get(7),
    }
}

fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> String {
    time_text(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30)))
}

#[async_trait]
impl SyncQueue for PostgresStore {
    async fn claim_sync(&self, limit: usize, lease: std::time::Duration) -> Result<Vec<SyncTask>, Error> {
        let conn = self.conn().await?;
        let now = self.clock.now();
        // Each claim its own: a row this instance claims again after its
        // lease ran out is not settled by the earlier attempt either.
        let lease_id = format!("{}:{}", self.instance, uuid::Uuid::new_v4().simple());
        // Rows another instance is claiming right now are skipped, not
        // waited for; an expired lease is anyone's.
        let rows = conn
            .db()
            .query(
                "UPDATE sync_state s SET lease_owner = $1, leased_until = $2
                 FROM (SELECT target, participant_id FROM sync_state
                       WHERE state = 'pending' AND next_attempt_time <= $3
                         AND (leased_until IS NULL OR leased_until <= $3)
                       ORDER BY next_attempt_time LIMIT $4
                       FOR UPDATE SKIP LOCKED) due
                 WHERE s.target = due.target AND s.participant_id = due.participant_id
                 RETURNING s.target, s.participant_id, s.desired_version, s.attempts",
                &[&lease_id, &lease_end(now, lease), &time_text(now), &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SyncTask {
                target: r.get(0),
                participant_id: r.get(1),
                desired_version: r.get(2),
                attempts: r.get(3),
                lease: lease_id.clone(),
            })
            .collect())
    }

    async fn renew_sync(&self, task: &SyncTask, lease: std::time::Duration) -> Result<bool, Error> {
        let conn = self.conn().await?;
        let renewed = conn
            .db()
            .execute(
                "UPDATE sync_state SET leased_until = $4
                 WHERE target = $1 AND participant_id = $2 AND lease_owner = $3 AND leased_until IS NOT NULL",
                &[&task.target, &task.participant_id, &task.lease, &lease_end(self.clock.now(), lease)],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn finish_sync(&self, task: SyncTask, outcome: SyncOutcome) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        let conn = &mut *conn;
        let tx = conn.client.transaction().await.map_err(crate::store::StoreError::from)?;
        let db = Db { client: &tx, statements: &conn.statements };
        let row = db
            .query_opt(
                "SELECT desired_version, delivered_version, state, attempts, last_error, next_attempt_time,
                     lease_owner = $3 AND leased_until IS NOT NULL
                 FROM sync_state WHERE target = $1 AND participant_id = $2 FOR UPDATE",
                &[&task.target, &task.participant_id, &task.lease],
            )
            .await?;
        let now = self.clock.now();
        // Every delivery attempt is audited, also one whose lease was
        // taken over meanwhile; a deferred one was not made.
        if let Some(entry) = rules::delivery_audit(&task, &outcome) {
            append_audit(&db, &[entry], now).await?;
        }
        // A lease another instance took over is theirs to settle: this
        // outcome must not overwrite what they record.
        if let Some(r) = row.filter(|r| r.get::<_, Option<bool>>(6) == Some(true)) {
            let row = SyncRow {
                desired_version: r.get(0),
                delivered_version: r.get(1),
                state: r.get(2),
                attempts: r.get(3),
                last_error: r.get(4),
                next_attempt_time: r.get(5),
            };
            let next = rules::finish_sync(&row, &task, outcome, now);
            db.execute(
                "UPDATE sync_state SET delivered_version = $3, state = $4, attempts = $5, last_error = $6,
                     next_attempt_time = $7, lease_owner = NULL, leased_until = NULL, update_time = $8
                 WHERE target = $1 AND participant_id = $2",
                &[
                    &task.target,
                    &task.participant_id,
                    &next.delivered_version,
                    &next.state,
                    &next.attempts,
                    &next.last_error,
                    &next.next_attempt_time,
                    &time_text(now),
                ],
            )
            .await?;
        }
        tx.commit().await.map_err(crate::store::StoreError::from)?;
        self.signals.audited.notify_one();
        Ok(())
    }

    async fn sync_status(&self, participant_id: &str) -> Result<Vec<SyncStatus>, Error> {
        let conn = self.conn().await?;
        let rows =
            conn.db().query(status_query!("WHERE participant_id = $1 ORDER BY target"), &[&participant_id]).await?;
        Ok(rows.iter().map(status).collect())
    }

    async fn failed_syncs(
        &self,
        after: Option<(String, String, String)>,
        limit: usize,
    ) -> Result<Vec<SyncStatus>, Error> {
        let (time, target, participant) = after.unwrap_or_default();
        let conn = self.conn().await?;
        let rows = conn
            .db()
            .query(
                status_query!(
                    "WHERE state = 'failed' AND (update_time, target, participant_id) > ($1, $2, $3)
                     ORDER BY update_time, target, participant_id LIMIT $4"
                ),
                &[&time, &target, &participant, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(status).collect())
    }

    async fn retry_failed_syncs(&self, participant_id: Option<String>) -> Result<usize, Error> {
        let conn = self.conn().await?;
        let now = time_text(self.clock.now());
        let changed = conn
            .db()
            .execute(
                "UPDATE sync_state SET state = 'pending', attempts = 0, next_attempt_time = $1, update_time = $1
                 WHERE state = 'failed' AND ($2::text IS NULL OR participant_id = $2)",
                &[&now, &participant_id],
            )
            .await?;
        if changed > 0 {
            self.signals.changed();
        }
        Ok(changed as usize)
    }
}

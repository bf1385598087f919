//! The sync queue's rows: one per (target, participant), marked by every
//! write, leased by dispatchers, settled by the rules.

use super::{SqliteStore, audit_log::append_audit};
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
use rusqlite::{Connection, OptionalExtension, params};

/// Records that every target in `targets` must reach `version` of the
/// participant, as [`rules::pending`] says.
pub(super) fn mark_for_sync(
    conn: &Connection,
    targets: &[String],
    id: &str,
    version: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    let row = rules::pending(version, now);
    let mut upsert = conn.prepare_cached(
        "INSERT INTO sync_state (target, participant_id, desired_version, delivered_version, state, attempts,
             last_error, next_attempt_time, update_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT (target, participant_id) DO UPDATE SET
             desired_version = excluded.desired_version, state = excluded.state, attempts = excluded.attempts,
             last_error = excluded.last_error, next_attempt_time = excluded.next_attempt_time,
             update_time = excluded.update_time",
    )?;
    for target in targets {
        upsert.execute(params![
            target,
            id,
            row.desired_version,
            row.delivered_version,
            row.state,
            row.attempts,
            row.last_error,
            row.next_attempt_time
        ])?;
    }
    Ok(())
}

fn sync_rows(c: &Connection, filter: &str, args: impl rusqlite::Params) -> Result<Vec<SyncStatus>> {
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

#[async_trait]
impl SyncQueue for SqliteStore {
    async fn claim_sync(&self, limit: usize, lease: std::time::Duration) -> Result<Vec<SyncTask>, Error> {
        self.bookkeeping_write(move |c, now| {
            let lease_end = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
            let mut stmt = c.prepare_cached(
                "UPDATE sync_state SET leased_until = ?1
                 WHERE (target, participant_id) IN (
                     SELECT target, participant_id FROM sync_state
                     WHERE state = 'pending' AND next_attempt_time <= ?2 AND (leased_until IS NULL OR leased_until <= ?2)
                     ORDER BY next_attempt_time LIMIT ?3)
                 RETURNING target, participant_id, desired_version, attempts",
            )?;
            let rows = stmt.query_map(params![time_text(lease_end), time_text(now), limit as i64], |r| {
                Ok(SyncTask {
                    target: r.get(0)?,
                    participant_id: r.get(1)?,
                    desired_version: r.get(2)?,
                    attempts: r.get(3)?,
                    lease: String::new(),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn renew_sync(&self, task: &SyncTask, lease: std::time::Duration) -> Result<bool, Error> {
        let task = task.clone();
        self.bookkeeping_write(move |c, now| {
            let lease_end = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
            let renewed = c.execute(
                "UPDATE sync_state SET leased_until = ?3
                 WHERE target = ?1 AND participant_id = ?2 AND leased_until IS NOT NULL",
                params![task.target, task.participant_id, time_text(lease_end)],
            )?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn finish_sync(&self, task: SyncTask, outcome: SyncOutcome) -> Result<(), Error> {
        let key = self.audit_key.clone();
        self.bookkeeping_write(move |c, now| {
            // Every delivery attempt is audited; a deferred one was not made.
            if let Some(entry) = rules::delivery_audit(&task, &outcome) {
                append_audit(c, &key, &[entry], now)?;
            }
            let row = c
                .query_row(
                    "SELECT desired_version, delivered_version, state, attempts, last_error, next_attempt_time
                     FROM sync_state WHERE target = ?1 AND participant_id = ?2",
                    params![task.target, task.participant_id],
                    |r| {
                        Ok(SyncRow {
                            desired_version: r.get(0)?,
                            delivered_version: r.get(1)?,
                            state: r.get(2)?,
                            attempts: r.get(3)?,
                            last_error: r.get(4)?,
                            next_attempt_time: r.get(5)?,
                        })
                    },
                )
                .optional()?;
            let Some(row) = row else { return Ok(()) };
            let next = rules::finish_sync(&row, &task, outcome, now);
            c.execute(
                "UPDATE sync_state SET delivered_version = ?3, state = ?4, attempts = ?5, last_error = ?6,
                     next_attempt_time = ?7, leased_until = NULL, update_time = ?8
                 WHERE target = ?1 AND participant_id = ?2",
                params![
                    task.target,
                    task.participant_id,
                    next.delivered_version,
                    next.state,
                    next.attempts,
                    next.last_error,
                    next.next_attempt_time,
                    time_text(now)
                ],
            )?;
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
        self.sync_write(move |c, now| {
            let now = time_text(now);
            let changed = c.execute(
                "UPDATE sync_state SET state = 'pending', attempts = 0, next_attempt_time = ?1, update_time = ?1
                 WHERE state = 'failed' AND (?2 IS NULL OR participant_id = ?2)",
                params![now, participant_id],
            )?;
            Ok(changed)
        })
        .await
    }
}

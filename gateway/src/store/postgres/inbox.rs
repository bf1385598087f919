//! The inbox on PostgreSQL: changes Arena and NOKUT published, kept once
//! whichever instance received them, read by one instance per feed (a
//! reader lease on the feed's cursor row), settled with the entry locked.

use super::{PostgresStore, audit_log::append_audit, connection::Db, participants::apply_mutation_if};
use crate::{
    error::Error,
    store::{
        Inbox, InboxEntry, InboxFilter, InboxItem, MeasureInstance, Settle, Settled, StoreError,
        codec::time_text,
        error::Result,
        rules::{self, EntryUpdate, SettlePlan},
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};

/// A query of inbox entries, as [`inbox_item`] reads them.
macro_rules! inbox_query {
    ($rest:literal) => {
        concat!(
            "SELECT source, position, kind, body, status, attempts, participant_id, note, received_time, update_time
             FROM inbox ",
            $rest
        )
    };
}

fn inbox_item(r: &Row) -> InboxItem {
    InboxItem {
        source: r.get(0),
        position: r.get(1),
        kind: r.get(2),
        body: r.get(3),
        status: r.get(4),
        attempts: r.get(5),
        participant_id: r.get(6),
        note: r.get(7),
        received_time: r.get(8),
        update_time: r.get(9),
    }
}

/// Records `position` as the latest change handled for `entity`.
async fn advance_applied<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    source: &str,
    entity: &str,
    position: &str,
) -> Result<()> {
    db.execute(
        "INSERT INTO inbound_applied (source, entity, position) VALUES ($1, $2, $3)
         ON CONFLICT (source, entity) DO UPDATE SET position = excluded.position
         WHERE inbound_applied.position < excluded.position",
        &[&source, &entity, &position],
    )
    .await?;
    Ok(())
}

/// Writes an entry's settled state.
async fn mark<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    source: &str,
    position: &str,
    u: &EntryUpdate,
    now: DateTime<Utc>,
) -> Result<()> {
    db.execute(
        "UPDATE inbox SET status = $3, note = $4, participant_id = coalesce($5, participant_id), attempts = $6,
             next_attempt_time = coalesce($7, next_attempt_time), update_time = $8
         WHERE source = $1 AND position = $2",
        &[&source, &position, &u.status, &u.note, &u.participant, &u.attempts, &u.next_attempt_time, &time_text(now)],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    /// Settles one entry in one transaction, its row locked first, and
    /// audits how.
    async fn settle(&self, source: &str, position: &str, outcome: Settle) -> Result<Settled> {
        let participant = match &outcome {
            Settle::Apply { mutation, .. } => Some(mutation.id.clone()),
            _ => None,
        };
        let mut conn = self.conn().await?;
        let conn = &mut *conn;
        let tx = conn.client.transaction().await?;
        let db = Db { client: &tx, statements: &conn.statements };
        // The participant first: its row lock is what gives this transaction
        // its id, so that of two writes of one person the one that commits
        // later has the later id, and change readers see them in order.
        if let Some(id) = &participant {
            db.query_opt("SELECT 1 FROM participants WHERE id = $1 FOR UPDATE", &[id]).await?;
        }
        // The entry's kind (for the audit), and its attempts while it is open.
        let entry = db
            .query_opt(
                "SELECT kind, CASE WHEN status IN ('new', 'retry') THEN attempts END FROM inbox
                 WHERE source = $1 AND position = $2 FOR UPDATE",
                &[&source, &position],
            )
            .await?;
        let (kind, attempts) = entry.map_or((None, None), |r| (Some(r.get::<_, String>(0)), r.get(1)));
        let applied: Option<String> = match outcome.entity() {
            Some(entity) => db
                .query_opt(
                    "SELECT position FROM inbound_applied WHERE source = $1 AND entity = $2 FOR UPDATE",
                    &[&source, &entity],
                )
                .await?
                .map(|r| r.get(0)),
            None => None,
        };
        let instance_at: Option<String> = match &outcome {
            Settle::Instance(i) => db
                .query_opt(
                    "SELECT position FROM arena_measure_instances WHERE instance_id = $1 FOR UPDATE",
                    &[&i.instance_id],
                )
                .await?
                .map(|r| r.get(0)),
            _ => None,
        };
        let now = self.clock.now();
        let plan =
            rules::plan_settle(attempts, applied.as_deref(), instance_at.as_deref(), position, outcome, time_text);
        let settled = match plan {
            SettlePlan::Gone => Settled::Gone,
            SettlePlan::Apply { entity, mutation, refs, attempts } => {
                let participant = mutation.id.clone();
                let targets = &self.sync.targets;
                let committed = apply_mutation_if(&db, *mutation, now, targets, true, &self.keyring).await?;
                advance_applied(&db, source, &entity, position).await?;
                for (system, reference) in refs {
                    db.execute(
                        "INSERT INTO external_refs (system, reference, participant_id) VALUES ($1, $2, $3)
                         ON CONFLICT (system, reference) DO UPDATE SET participant_id = excluded.participant_id",
                        &[&system, &reference, &participant],
                    )
                    .await?;
                }
                let version = committed.map(|c| c.version);
                mark(&db, source, position, &rules::handled(attempts, participant, version), now).await?;
                Settled::Handled(version)
            }
            SettlePlan::Mark { update, advance, instance, settled } => {
                if let Some(entity) = advance {
                    advance_applied(&db, source, &entity, position).await?;
                }
                if let Some(i) = instance {
                    db.execute(
                        "INSERT INTO arena_measure_instances (instance_id, code, employer_id, position)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (instance_id) DO UPDATE SET code = excluded.code,
                             employer_id = excluded.employer_id, position = excluded.position",
                        &[&i.instance_id, &i.code, &i.employer_id, &position],
                    )
                    .await?;
                }
                mark(&db, source, position, &update, now).await?;
                settled
            }
        };
        if let Some(entry) = rules::inbound_audit(source, position, kind, participant, &settled) {
            append_audit(&db, &[entry], now).await?;
        }
        tx.commit().await?;
        self.signals.audited.notify_one();
        if matches!(settled, Settled::Handled(Some(_))) {
            self.committed_version();
        }
        Ok(settled)
    }
}

#[async_trait]
impl Inbox for PostgresStore {
    async fn inbound_cursor(&self, source: &str) -> Result<Option<String>, Error> {
        let conn = self.conn().await?;
        // A feed's row exists from its first claim, before any position.
        let row = conn
            .db()
            .query_opt("SELECT NULLIF(position, '') FROM inbound_cursor WHERE source = $1", &[&source])
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    async fn claim_feed(&self, source: &str, lease: std::time::Duration) -> Result<bool, Error> {
        let conn = self.conn().await?;
        let now = self.clock.now();
        let until = time_text(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30)));
        let claimed = conn
            .db()
            .query_opt(
                "INSERT INTO inbound_cursor (source, position, reader, reader_until, update_time)
                 VALUES ($1, '', $2, $3, $4)
                 ON CONFLICT (source) DO UPDATE SET reader = excluded.reader, reader_until = excluded.reader_until
                 WHERE inbound_cursor.reader IS NULL OR inbound_cursor.reader = excluded.reader
                    OR inbound_cursor.reader_until <= $4
                 RETURNING reader",
                &[&source, &self.instance, &until, &time_text(now)],
            )
            .await?;
        Ok(claimed.is_some())
    }

    async fn receive_inbound(
        &self,
        source: &str,
        entries: Vec<InboxEntry>,
        cursor: Option<String>,
    ) -> Result<usize, Error> {
        let mut conn = self.conn().await?;
        let conn = &mut *conn;
        let tx = conn.client.transaction().await.map_err(StoreError::from)?;
        let db = Db { client: &tx, statements: &conn.statements };
        let now = time_text(self.clock.now());
        let column = |f: fn(&InboxEntry) -> &str| entries.iter().map(f).collect::<Vec<&str>>();
        let (positions, kinds, bodies) = (column(|e| &e.position), column(|e| &e.kind), column(|e| &e.body));
        // Kept once, whichever instance received it (a webhook and a poll
        // may both bring one change).
        let added = db
            .execute(
                "INSERT INTO inbox (source, position, kind, body, status, next_attempt_time, received_time, update_time)
                 SELECT $1, p, k, b, 'new', $5, $5, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS e(p, k, b)
                 ON CONFLICT (source, position) DO NOTHING",
                &[&source, &positions, &kinds, &bodies, &now],
            )
            .await?;
        if let Some(cursor) = cursor {
            db.execute(
                "INSERT INTO inbound_cursor (source, position, update_time) VALUES ($1, '', $2)
                 ON CONFLICT (source) DO NOTHING",
                &[&source, &now],
            )
            .await?;
            let kept: String = db
                .query_one("SELECT position FROM inbound_cursor WHERE source = $1 FOR UPDATE", &[&source])
                .await?
                .get(0);
            // The cursor never moves back (a webhook may repeat what polling read).
            if !rules::superseded(Some(kept.as_str()).filter(|k| !k.is_empty()), &cursor) {
                db.execute(
                    "UPDATE inbound_cursor SET position = $2, update_time = $3 WHERE source = $1",
                    &[&source, &cursor, &now],
                )
                .await?;
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        if added > 0 {
            self.signals.received();
        }
        Ok(added as usize)
    }

    async fn due_inbound(&self, source: &str, limit: usize) -> Result<Vec<InboxItem>, Error> {
        let conn = self.conn().await?;
        let now = time_text(self.clock.now());
        let rows = conn
            .db()
            .query(
                inbox_query!(
                    "WHERE source = $1 AND (status = 'new' OR (status = 'retry' AND next_attempt_time <= $2))
                     ORDER BY position LIMIT $3"
                ),
                &[&source, &now, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(inbox_item).collect())
    }

    async fn settle_inbound(&self, source: &str, position: &str, outcome: Settle) -> Result<Settled, Error> {
        Ok(self.settle(source, position, outcome).await?)
    }

    async fn list_inbound(&self, filter: InboxFilter) -> Result<Vec<InboxItem>, Error> {
        let conn = self.conn().await?;
        let (after_source, after_position) = filter.after.unwrap_or_default();
        let rows = conn
            .db()
            .query(
                inbox_query!(
                    "WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR status = $2)
                       AND (source, position) > ($3, $4)
                     ORDER BY source, position LIMIT $5"
                ),
                &[&filter.source, &filter.status, &after_source, &after_position, &(filter.limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(inbox_item).collect())
    }

    async fn reingest_inbound(&self, source: Option<String>, position: Option<String>) -> Result<usize, Error> {
        let conn = self.conn().await?;
        let now = time_text(self.clock.now());
        // One named entry is taken again whatever its status; without a
        // position, the failed ones are.
        let changed = conn
            .db()
            .execute(
                "UPDATE inbox SET status = 'new', attempts = 0, next_attempt_time = $1, update_time = $1
                 WHERE ($2::text IS NULL OR source = $2)
                   AND CASE WHEN $3::text IS NULL THEN status = 'failed' ELSE position = $3 AND status <> 'new' END",
                &[&now, &source, &position],
            )
            .await?;
        Ok(changed as usize)
    }

    async fn measure_instance(&self, instance_id: i64) -> Result<Option<MeasureInstance>, Error> {
        let conn = self.conn().await?;
        let row = conn
            .db()
            .query_opt(
                "SELECT instance_id, code, employer_id FROM arena_measure_instances WHERE instance_id = $1",
                &[&instance_id],
            )
            .await?;
        Ok(row.map(|r| MeasureInstance { instance_id: r.get(0), code: r.get(1), employer_id: r.get(2) }))
    }

    async fn participant_by_ref(&self, system: &str, reference: &str) -> Result<Option<String>, Error> {
        let conn = self.conn().await?;
        let row = conn
            .db()
            .query_opt(
                "SELECT participant_id FROM external_refs WHERE system = $1 AND reference = $2",
                &[&system, &reference],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}

//! The inbox's rows: changes Arena and NOKUT published, kept once each,
//! ingested in feed order, settled together with what they apply.

use super::{SqliteStore, audit_log::append_audit, participants::apply_mutation_if};
use crate::{
    audit::AuditKey,
    crypto::Keyring,
    error::Error,
    store::{
        Inbox, InboxEntry, InboxFilter, InboxItem, MeasureInstance, Settle, Settled,
        codec::time_text,
        error::Result,
        rules::{self, EntryUpdate, SettlePlan},
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

const INBOX_COLUMNS: &str =
    "source, position, kind, body, status, attempts, participant_id, note, received_time, update_time";

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

/// Records `position` as the latest change handled for `entity`.
fn advance_applied(c: &Connection, source: &str, entity: &str, position: &str) -> Result<()> {
    c.execute(
        "INSERT INTO inbound_applied (source, entity, position) VALUES (?1, ?2, ?3)
         ON CONFLICT (source, entity) DO UPDATE SET position = excluded.position",
        params![source, entity, position],
    )?;
    Ok(())
}

/// What settling needs besides the entry.
struct SettleContext<'a> {
    key: &'a AuditKey,
    targets: &'a [String],
    keyring: &'a Keyring,
    now: DateTime<Utc>,
}

/// Settles one inbox entry and audits how.
fn settle_audited(
    c: &Connection,
    cx: &SettleContext<'_>,
    source: &str,
    position: &str,
    outcome: Settle,
) -> Result<Settled> {
    let participant = match &outcome {
        Settle::Apply { mutation, .. } => Some(mutation.id.clone()),
        _ => None,
    };
    // The entry's kind (for the audit), and its attempts while it is open.
    let entry: Option<(String, Option<i64>)> = c
        .query_row(
            "SELECT kind, CASE WHEN status IN ('new', 'retry') THEN attempts END FROM inbox
             WHERE source = ?1 AND position = ?2",
            params![source, position],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (kind, attempts) = entry.map_or((None, None), |(kind, attempts)| (Some(kind), attempts));
    let settled = settle(c, cx, source, position, attempts, outcome)?;
    if let Some(entry) = rules::inbound_audit(source, position, kind, participant, &settled) {
        append_audit(c, cx.key, &[entry], cx.now)?;
    }
    Ok(settled)
}

/// Settles one inbox entry (`attempts`: its attempts while open, `None`
/// when it is not) inside a transaction: reads what the rules need, writes
/// what they plan.
fn settle(
    c: &Connection,
    cx: &SettleContext<'_>,
    source: &str,
    position: &str,
    attempts: Option<i64>,
    outcome: Settle,
) -> Result<Settled> {
    let applied: Option<String> = match outcome.entity() {
        Some(entity) => c
            .query_row(
                "SELECT position FROM inbound_applied WHERE source = ?1 AND entity = ?2",
                params![source, entity],
                |r| r.get(0),
            )
            .optional()?,
        None => None,
    };
    let instance_at: Option<String> = match &outcome {
        Settle::Instance(i) => c
            .query_row("SELECT position FROM arena_measure_instances WHERE instance_id = ?1", [i.instance_id], |r| {
                r.get(0)
            })
            .optional()?,
        _ => None,
    };
    let plan = rules::plan_settle(attempts, applied.as_deref(), instance_at.as_deref(), position, outcome, time_text);
    match plan {
        SettlePlan::Gone => Ok(Settled::Gone),
        SettlePlan::Apply { entity, mutation, refs, attempts } => {
            let participant = mutation.id.clone();
            let committed = apply_mutation_if(c, *mutation, cx.now, cx.targets, true, cx.keyring)?;
            advance_applied(c, source, &entity, position)?;
            for (system, reference) in refs {
                c.execute(
                    "INSERT INTO external_refs (system, reference, participant_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT (system, reference) DO UPDATE SET participant_id = excluded.participant_id",
                    params![system, reference, participant],
                )?;
            }
            let version = committed.map(|c| c.version);
            mark(c, source, position, &rules::handled(attempts, participant, version), cx.now)?;
            Ok(Settled::Handled(version))
        }
        SettlePlan::Mark { update, advance, instance, settled } => {
            if let Some(entity) = advance {
                advance_applied(c, source, &entity, position)?;
            }
            if let Some(i) = instance {
                c.execute(
                    "INSERT INTO arena_measure_instances (instance_id, code, employer_id, position) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (instance_id) DO UPDATE SET code = excluded.code, employer_id = excluded.employer_id,
                         position = excluded.position",
                    params![i.instance_id, i.code, i.employer_id, position],
                )?;
            }
            mark(c, source, position, &update, cx.now)?;
            Ok(settled)
        }
    }
}

/// Writes an entry's settled state.
fn mark(c: &Connection, source: &str, position: &str, u: &EntryUpdate, now: DateTime<Utc>) -> Result<()> {
    c.execute(
        "UPDATE inbox SET status = ?3, note = ?4, participant_id = coalesce(?5, participant_id), attempts = ?6,
             next_attempt_time = coalesce(?7, next_attempt_time), update_time = ?8
         WHERE source = ?1 AND position = ?2",
        params![source, position, u.status, u.note, u.participant, u.attempts, u.next_attempt_time, time_text(now)],
    )?;
    Ok(())
}

#[async_trait]
impl Inbox for SqliteStore {
    async fn inbound_cursor(&self, source: &str) -> Result<Option<String>, Error> {
        let source = source.to_owned();
        self.read(move |c| {
            Ok(c.query_row("SELECT position FROM inbound_cursor WHERE source = ?1", [&source], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// One process serves a SQLite file: it reads every feed.
    async fn claim_feed(&self, _source: &str, _lease: std::time::Duration) -> Result<bool, Error> {
        Ok(true)
    }

    async fn receive_inbound(
        &self,
        source: &str,
        entries: Vec<InboxEntry>,
        cursor: Option<String>,
    ) -> Result<usize, Error> {
        let source = source.to_owned();
        self.sync_write(move |c, now| {
            let now = time_text(now);
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
            let kept: Option<String> = c
                .query_row("SELECT position FROM inbound_cursor WHERE source = ?1", [&source], |r| r.get(0))
                .optional()?;
            // The cursor never moves back (a webhook may repeat what polling read).
            if let Some(cursor) = cursor.filter(|to| !rules::superseded(kept.as_deref(), to)) {
                c.execute(
                    "INSERT INTO inbound_cursor (source, position, update_time) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source) DO UPDATE SET position = excluded.position, update_time = excluded.update_time",
                    params![source, cursor, now],
                )?;
            }
            Ok(added)
        })
        .await
    }

    async fn due_inbound(&self, source: &str, limit: usize) -> Result<Vec<InboxItem>, Error> {
        let source = source.to_owned();
        let now = time_text(self.clock.now());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {INBOX_COLUMNS} FROM inbox
                 WHERE source = ?1 AND (status = 'new' OR (status = 'retry' AND next_attempt_time <= ?2))
                 ORDER BY position LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![source, now, limit as i64], inbox_item)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn settle_inbound(&self, source: &str, position: &str, outcome: Settle) -> Result<Settled, Error> {
        let (source, position) = (source.to_owned(), position.to_owned());
        let targets = self.sync.targets.clone();
        let key = self.audit_key.clone();
        let keyring = Arc::clone(&self.keyring);
        let settled = self
            .sync_write(move |c, now| {
                let cx = SettleContext { key: &key, targets: &targets, keyring: &keyring, now };
                settle_audited(c, &cx, &source, &position, outcome)
            })
            .await?;
        if matches!(settled, Settled::Handled(Some(_))) {
            self.sync.changes.notify();
            if !self.sync.targets.is_empty() {
                self.sync.wake.notify_one();
            }
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
        self.sync_write(move |c, now| {
            let now = time_text(now);
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
}

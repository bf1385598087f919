//! The inbox's rows: changes Arena and NOKUT published, kept once each,
//! ingested in feed order, settled together with what they apply.

use super::{SqliteStore, audit_log::append_audit, participants::apply_mutation_if};
use crate::{
    audit::AuditKey,
    crypto::Keyring,
    error::Error,
    store::{
        Inbox, InboxEntry, InboxFilter, InboxItem, MeasureInstance, Settle, Settled, codec::time_text, error::Result,
        rules,
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

/// Records `position` as the latest change handled for `entity`, so that
/// an older change of it is superseded (never moves backwards).
fn advance_applied(c: &Connection, source: &str, entity: &str, position: &str) -> Result<()> {
    c.execute(
        "INSERT INTO inbound_applied (source, entity, position) VALUES (?1, ?2, ?3)
         ON CONFLICT (source, entity) DO UPDATE SET position = excluded.position
         WHERE excluded.position > inbound_applied.position",
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
    let kind: Option<String> = c
        .query_row("SELECT kind FROM inbox WHERE source = ?1 AND position = ?2", params![source, position], |r| {
            r.get(0)
        })
        .optional()?;
    let settled = settle(c, cx, source, position, outcome)?;
    if let Some(entry) = rules::inbound_audit(source, position, kind, participant, &settled) {
        append_audit(c, cx.key, &[entry], cx.now)?;
    }
    Ok(settled)
}

/// Settles one inbox entry inside a transaction.
fn settle(c: &Connection, cx: &SettleContext<'_>, source: &str, position: &str, settle: Settle) -> Result<Settled> {
    let now = time_text(cx.now);
    let open: Option<i64> = c
        .query_row(
            "SELECT attempts FROM inbox WHERE source = ?1 AND position = ?2 AND status IN ('new', 'retry')",
            params![source, position],
            |r| r.get(0),
        )
        .optional()?;
    if open.is_none() {
        return Ok(Settled::Gone);
    }
    let mark = |status: &str, note: Option<&str>, participant: Option<&str>| -> Result<()> {
        c.execute(
            "UPDATE inbox SET status = ?3, note = ?4, participant_id = coalesce(?5, participant_id), update_time = ?6
             WHERE source = ?1 AND position = ?2",
            params![source, position, status, note, participant, now],
        )?;
        Ok(())
    };
    match settle {
        Settle::Apply { entity, mutation, refs } => {
            let applied: Option<String> = c
                .query_row(
                    "SELECT position FROM inbound_applied WHERE source = ?1 AND entity = ?2",
                    params![source, entity],
                    |r| r.get(0),
                )
                .optional()?;
            let participant = mutation.id.clone();
            if rules::superseded(applied.as_deref(), position) {
                mark(
                    "ignored",
                    Some("superseded: a later change of the same record was applied already"),
                    Some(&participant),
                )?;
                return Ok(Settled::Superseded);
            }
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
            mark("handled", Some(&rules::handled_note(version)), Some(&participant))?;
            Ok(Settled::Handled(version))
        }
        Settle::Instance(i) => {
            c.execute(
                "INSERT INTO arena_measure_instances (instance_id, code, employer_id, position) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (instance_id) DO UPDATE SET code = excluded.code, employer_id = excluded.employer_id,
                     position = excluded.position
                 WHERE excluded.position > arena_measure_instances.position",
                params![i.instance_id, i.code, i.employer_id, position],
            )?;
            mark("handled", Some("measure instance remembered"), None)?;
            Ok(Settled::Handled(None))
        }
        Settle::Ignore { reason, entity } => {
            if let Some(entity) = entity {
                advance_applied(c, source, &entity, position)?;
            }
            mark("ignored", Some(&reason), None)?;
            Ok(Settled::Ignored)
        }
        Settle::Retry { error, at } => {
            c.execute(
                "UPDATE inbox SET status = 'retry', attempts = attempts + 1, note = ?3, next_attempt_time = ?4,
                     update_time = ?5 WHERE source = ?1 AND position = ?2",
                params![source, position, error, time_text(at), now],
            )?;
            Ok(Settled::Retry)
        }
        Settle::Fail { error } => {
            c.execute(
                "UPDATE inbox SET status = 'failed', attempts = attempts + 1, note = ?3, update_time = ?4
                 WHERE source = ?1 AND position = ?2",
                params![source, position, error, now],
            )?;
            Ok(Settled::Failed)
        }
    }
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

    async fn receive_inbound(
        &self,
        source: &str,
        entries: Vec<InboxEntry>,
        cursor: Option<String>,
    ) -> Result<usize, Error> {
        let source = source.to_owned();
        let now = time_text(self.clock.now());
        self.sync_write(move |c| {
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
            if let Some(cursor) = cursor {
                c.execute(
                    "INSERT INTO inbound_cursor (source, position, update_time) VALUES (?1, ?2, ?3)
                     ON CONFLICT (source) DO UPDATE SET position = excluded.position, update_time = excluded.update_time
                     WHERE excluded.position > inbound_cursor.position",
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
        let now = self.clock.now();
        let settled = self
            .sync_write(move |c| {
                let cx = SettleContext { key: &key, targets: &targets, keyring: &keyring, now };
                settle_audited(c, &cx, &source, &position, outcome)
            })
            .await?;
        if matches!(settled, Settled::Handled(Some(_))) && !self.sync.targets.is_empty() {
            self.sync.wake.notify_one();
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
        let now = time_text(self.clock.now());
        self.sync_write(move |c| {
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

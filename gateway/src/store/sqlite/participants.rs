//! Participant rows, the change log and idempotency records: reading what
//! a write depends on and writing what the rules planned.

use super::{SqliteStore, sync_queue::mark_for_sync, writer::Job};
use crate::{
    crypto::Keyring,
    error::Error,
    store::{
        ChangeCursor, ChangeLog, ChangeRecord, Committed, IdempotencyKey, ListPage, ListQuery, Mutation,
        NewParticipant, Participants,
        codec::{self, time_text},
        error::Result,
        rules::{self, Current, SealedId, StoredRequest, WritePlan},
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hurtigspor_proto::v1::Participant;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

/// The stored request with this id, if any.
fn stored_request(conn: &Connection, key: &IdempotencyKey) -> Result<Option<StoredRequest>> {
    Ok(conn
        .query_row(
            "SELECT fingerprint, participant_id, version FROM idempotency WHERE method = ?1 AND request_id = ?2",
            params![key.method, key.request_id],
            |r| Ok(StoredRequest { fingerprint: r.get(0)?, participant_id: r.get(1)?, version: r.get(2)? }),
        )
        .optional()?)
}

/// Looks up a request id; returns the answer to replay, if any.
fn replay(
    conn: &Connection,
    key: &IdempotencyKey,
    for_participant: Option<&str>,
    keyring: &Keyring,
) -> Result<Option<Committed>> {
    let Some((participant_id, version)) = rules::replay_of(key, stored_request(conn, key)?, for_participant)? else {
        return Ok(None);
    };
    let (snapshot, sealed): (Vec<u8>, SealedId) = conn.query_row(
        "SELECT c.snapshot, p.national_id_key, p.national_id_sealed FROM change_log c
         JOIN participants p ON p.id = c.participant_id
         WHERE c.participant_id = ?1 AND c.version = ?2",
        params![participant_id, version],
        |r| Ok((r.get(0)?, SealedId { key_id: r.get(1)?, bytes: r.get(2)? })),
    )?;
    let national_id = rules::open_national_id(keyring, &participant_id, sealed)?;
    Ok(Some(rules::replayed(codec::decode(&snapshot)?, national_id, version)))
}

/// What commits with every new version: its change-log row, its case
/// numbers, its request id and its sync marks.
fn write_version_rows(conn: &Connection, plan: &WritePlan) -> Result<()> {
    let now = time_text(plan.time);
    conn.execute(
        "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![plan.id, plan.version, plan.kind, plan.origin.as_str(), plan.actor, now, plan.record],
    )?;
    keep_case_numbers(conn, &plan.id, &plan.case_numbers)?;
    if let Some(key) = &plan.remember {
        conn.execute(
            "INSERT INTO idempotency (method, request_id, fingerprint, participant_id, version, create_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key.method, key.request_id, key.fingerprint.as_slice(), plan.id, plan.version, now],
        )?;
    }
    mark_for_sync(conn, &plan.deliver_to, &plan.id, plan.version, plan.time)
}

/// Keeps the recognition authority's case numbers findable, so that its
/// changes can be matched to the participant.
pub(super) fn keep_case_numbers(conn: &Connection, id: &str, numbers: &[String]) -> Result<()> {
    for number in numbers {
        conn.execute(
            "INSERT OR IGNORE INTO external_refs (system, reference, participant_id) VALUES ('nokut', ?1, ?2)",
            params![number, id],
        )?;
    }
    Ok(())
}

pub(super) fn apply_create(
    conn: &Connection,
    new: NewParticipant,
    now: DateTime<Utc>,
    targets: &[String],
    keyring: &Keyring,
) -> Result<Committed> {
    if let Some(key) = &new.idempotency
        && let Some(done) = replay(conn, key, None, keyring)?
    {
        return Ok(done);
    }
    let existing: Option<String> = conn
        .query_row("SELECT id FROM participants WHERE national_id_hash = ?1", [&new.national_id_hash], |r| r.get(0))
        .optional()?;
    let plan = rules::plan_create(new, existing, now, targets, keyring)?;
    let w = &plan.write;
    conn.execute(
        "INSERT INTO participants (id, national_id_hash, national_id_key, national_id_sealed, kommunenummer, hurtigspor_status, version, record, create_time, update_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        params![
            w.id,
            plan.national_id_hash,
            plan.sealed.key_id,
            plan.sealed.bytes,
            w.kommunenummer,
            w.hurtigspor_status,
            w.version,
            w.record,
            time_text(now)
        ],
    )?;
    write_version_rows(conn, w)?;
    Ok(w.committed())
}

pub(super) fn apply_mutation(
    conn: &Connection,
    m: Mutation,
    now: DateTime<Utc>,
    targets: &[String],
    keyring: &Keyring,
) -> Result<Committed> {
    apply_mutation_if(conn, m, now, targets, false, keyring).map(|c| c.expect("stored unconditionally"))
}

/// Applies a mutation; with `skip_unchanged`, a mutation that leaves the
/// record as it was stores nothing and answers `None`.
pub(super) fn apply_mutation_if(
    conn: &Connection,
    m: Mutation,
    now: DateTime<Utc>,
    targets: &[String],
    skip_unchanged: bool,
    keyring: &Keyring,
) -> Result<Option<Committed>> {
    if let Some(key) = &m.idempotency
        && let Some(done) = replay(conn, key, Some(&m.id), keyring)?
    {
        return Ok(Some(done));
    }
    let current = conn
        .query_row(
            "SELECT version, record, national_id_key, national_id_sealed FROM participants WHERE id = ?1",
            [&m.id],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, SealedId { key_id: r.get(2)?, bytes: r.get(3)? })),
        )
        .optional()?
        .map(|(version, record, national_id)| {
            Ok::<_, Error>(Current { version, record: codec::decode(&record)?, national_id })
        })
        .transpose()?;
    let Some(plan) = rules::plan_mutation(m, current, now, targets, skip_unchanged, keyring)? else {
        return Ok(None);
    };
    conn.execute(
        "UPDATE participants SET kommunenummer = ?2, hurtigspor_status = ?3, version = ?4, record = ?5, update_time = ?6
         WHERE id = ?1",
        params![plan.id, plan.kommunenummer, plan.hurtigspor_status, plan.version, plan.record, time_text(now)],
    )?;
    write_version_rows(conn, &plan)?;
    Ok(Some(plan.committed()))
}

/// The participant of a row (`id, record, national_id_key,
/// national_id_sealed`), its national id decrypted.
fn row_participant(keyring: &Keyring, r: &rusqlite::Row<'_>) -> Result<Participant> {
    let id: String = r.get("id")?;
    let mut p = codec::decode(&r.get::<_, Vec<u8>>("record")?)?;
    let sealed = SealedId { key_id: r.get("national_id_key")?, bytes: r.get("national_id_sealed")? };
    p.national_id = rules::open_national_id(keyring, &id, sealed)?;
    Ok(p)
}

/// The columns of a change-log row, as `changes` and `histories` select
/// them: sequence, participant_id, version, kind, origin, actor, snapshot.
type ChangeRow = (i64, String, i64, String, String, String, Vec<u8>);

fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChangeRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

/// Change-log rows as records, their snapshots decoded.
fn change_records(rows: impl Iterator<Item = rusqlite::Result<ChangeRow>>) -> Result<Vec<ChangeRecord>> {
    rows.map(|row| {
        let (sequence, participant_id, version, kind, origin, actor, snapshot) = row?;
        Ok(ChangeRecord {
            cursor: ChangeCursor { transaction: 0, sequence },
            participant_id,
            version,
            kind,
            origin,
            actor,
            snapshot: codec::decode(&snapshot)?,
        })
    })
    .collect()
}

#[async_trait]
impl Participants for SqliteStore {
    async fn create(&self, new: NewParticipant) -> Result<Committed, Error> {
        self.submit(|reply| Job::Create(Box::new(new), reply)).await
    }

    async fn mutate(&self, mutation: Mutation) -> Result<Committed, Error> {
        self.submit(|reply| Job::Mutate(Box::new(mutation), reply)).await
    }

    async fn get(&self, id: &str) -> Result<Option<Participant>, Error> {
        let id = id.to_owned();
        let keyring = Arc::clone(&self.keyring);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, record, national_id_key, national_id_sealed FROM participants WHERE id = ?1",
            )?;
            let mut rows = stmt.query([&id])?;
            rows.next()?.map(|r| row_participant(&keyring, r)).transpose()
        })
        .await
    }

    async fn get_by_national_id_hash(&self, hash: &[u8]) -> Result<Option<Participant>, Error> {
        let hash = hash.to_vec();
        let keyring = Arc::clone(&self.keyring);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, record, national_id_key, national_id_sealed FROM participants WHERE national_id_hash = ?1",
            )?;
            let mut rows = stmt.query([&hash])?;
            rows.next()?.map(|r| row_participant(&keyring, r)).transpose()
        })
        .await
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage, Error> {
        let keyring = Arc::clone(&self.keyring);
        self.read(move |c| {
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1) + 1;
            let after = query.after.unwrap_or(0);
            let mut sql = String::from(
                "SELECT position, id, record, national_id_key, national_id_sealed FROM participants WHERE position > :after",
            );
            let mut args: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":after", &after), (":limit", &limit)];
            let names: Vec<String> =
                (0..query.kommuner.as_ref().map_or(0, Vec::len)).map(|i| format!(":k{i}")).collect();
            if let Some(kommuner) = &query.kommuner {
                sql.push_str(&format!(" AND kommunenummer IN ({})", names.join(", ")));
                for (name, k) in names.iter().zip(kommuner) {
                    args.push((name.as_str(), k));
                }
            }
            if let Some(s) = &query.hurtigspor_status {
                sql.push_str(" AND hurtigspor_status = :status");
                args.push((":status", s));
            }
            sql.push_str(" ORDER BY position LIMIT :limit");
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(args.as_slice())?;
            let mut participants = Vec::new();
            let mut last_position = None;
            let mut more = false;
            while let Some(row) = rows.next()? {
                if participants.len() == query.limit {
                    more = true;
                    break;
                }
                last_position = Some(row.get::<_, i64>(0)?);
                participants.push(row_participant(&keyring, row)?);
            }
            Ok(ListPage { participants, last_position, more })
        })
        .await
    }
}

#[async_trait]
impl ChangeLog for SqliteStore {
    async fn changes(&self, after: ChangeCursor, limit: usize) -> Result<Vec<ChangeRecord>, Error> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT sequence, participant_id, version, kind, origin, actor, snapshot FROM change_log
                 WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after.sequence, i64::try_from(limit).unwrap_or(i64::MAX)], change_row)?;
            change_records(rows)
        })
        .await
    }

    async fn histories(&self, after: Option<(String, i64)>, limit: usize) -> Result<Vec<ChangeRecord>, Error> {
        self.read(move |c| {
            // The UNIQUE (participant_id, version) index serves this order.
            let mut stmt = c.prepare_cached(
                "SELECT sequence, participant_id, version, kind, origin, actor, snapshot FROM change_log
                 WHERE participant_id > ?1 OR (participant_id = ?1 AND version > ?2)
                 ORDER BY participant_id, version LIMIT ?3",
            )?;
            let (after_id, after_version) = after.unwrap_or((String::new(), i64::MIN));
            let rows =
                stmt.query_map(params![after_id, after_version, i64::try_from(limit).unwrap_or(i64::MAX)], change_row)?;
            change_records(rows)
        })
        .await
    }
}

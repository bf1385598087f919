//! Participant rows, the change log and idempotency records, on PostgreSQL:
//! each write one transaction that locks what it reads before the rules
//! plan from it.

use super::{PostgresStore, audit_log::append_audit, connection::Db, lock_key, sync_queue::mark_for_sync};
use crate::{
    crypto::Keyring,
    error::Error,
    store::{
        ChangeCursor, ChangeLog, ChangeRecord, Committed, IdempotencyKey, ListPage, ListQuery, Mutation,
        NewParticipant, Participants, StoreError,
        codec::{self, time_text},
        error::Result,
        rules::{self, Current, SealedId, StoredRequest, WritePlan},
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hurtigspor_proto::v1::Participant;
use sha2::Digest;
use tokio_postgres::{GenericClient, Row};

/// Times a registration that lost a race for a key is planned again (it
/// then sees the winner, and replays it or answers ALREADY_EXISTS).
const CREATE_ATTEMPTS: usize = 3;

/// A write of a participant version.
enum Write {
    Create(Box<NewParticipant>),
    Mutate(Box<Mutation>),
}

/// The stored request with this id, if any.
async fn stored_request<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    key: &IdempotencyKey,
) -> Result<Option<StoredRequest>> {
    Ok(db
        .query_opt(
            "SELECT fingerprint, participant_id, version FROM idempotency WHERE method = $1 AND request_id = $2",
            &[&key.method, &key.request_id],
        )
        .await?
        .map(|r| StoredRequest { fingerprint: r.get(0), participant_id: r.get(1), version: r.get(2) }))
}

/// Looks up a request id, holding it (for the transaction) so that a race
/// for one id between two writes queues them: the second sees the first's
/// record and replays it or is refused, never a unique violation. Returns
/// the answer to replay, if any.
async fn replay<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    key: &IdempotencyKey,
    for_participant: Option<&str>,
    keyring: &Keyring,
) -> Result<Option<Committed>> {
    let held = format!("{}\u{0}{}", key.method, key.request_id);
    db.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(&sha2::Sha256::digest(held.as_bytes()))]).await?;
    let Some((participant_id, version)) = rules::replay_of(key, stored_request(db, key).await?, for_participant)?
    else {
        return Ok(None);
    };
    let row = db
        .query_one(
            "SELECT c.snapshot, p.national_id_key, p.national_id_sealed FROM change_log c
             JOIN participants p ON p.id = c.participant_id
             WHERE c.participant_id = $1 AND c.version = $2",
            &[&participant_id, &version],
        )
        .await?;
    let sealed = SealedId { key_id: row.get(1), bytes: row.get(2) };
    let national_id = rules::open_national_id(keyring, &participant_id, sealed)?;
    Ok(Some(rules::replayed(codec::decode(row.get(0))?, national_id, version)))
}

/// What commits with every new version: its change-log row, its case
/// numbers, its request id and its sync marks. They are independent of each
/// other, so they go to the server together (pipelined on the connection)
/// instead of one round trip after another.
async fn write_version_rows<C: GenericClient + Sync>(db: &Db<'_, C>, plan: &WritePlan) -> Result<()> {
    let now = time_text(plan.time);
    let origin = plan.origin.as_str();
    let change = async {
        db.execute(
            "INSERT INTO change_log (participant_id, version, kind, origin, actor, commit_time, snapshot)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&plan.id, &plan.version, &plan.kind, &origin, &plan.actor, &now, &plan.record],
        )
        .await
    };
    let request = async {
        let Some(key) = &plan.remember else { return Ok(0) };
        db.execute(
            "INSERT INTO idempotency (method, request_id, fingerprint, participant_id, version, create_time)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&key.method, &key.request_id, &key.fingerprint.as_slice(), &plan.id, &plan.version, &now],
        )
        .await
    };
    tokio::try_join!(
        change,
        keep_case_numbers(db, &plan.id, &plan.case_numbers),
        request,
        mark_for_sync(db, &plan.deliver_to, &plan.id, plan.version, plan.time),
    )?;
    Ok(())
}

/// Keeps the recognition authority's case numbers findable.
async fn keep_case_numbers<C: GenericClient + Sync>(db: &Db<'_, C>, id: &str, numbers: &[String]) -> Result<()> {
    if numbers.is_empty() {
        return Ok(());
    }
    db.execute(
        "INSERT INTO external_refs (system, reference, participant_id)
         SELECT 'nokut', n, $2 FROM unnest($1::text[]) AS n ON CONFLICT DO NOTHING",
        &[&numbers, &id],
    )
    .await?;
    Ok(())
}

async fn apply_create<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    new: NewParticipant,
    now: DateTime<Utc>,
    targets: &[String],
    keyring: &Keyring,
) -> Result<Committed> {
    // Two registrations of one person queue here; the second sees the first.
    db.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(&new.national_id_hash)]).await?;
    if let Some(key) = &new.idempotency
        && let Some(done) = replay(db, key, None, keyring).await?
    {
        return Ok(done);
    }
    let existing: Option<String> = db
        .query_opt("SELECT id FROM participants WHERE national_id_hash = $1", &[&new.national_id_hash])
        .await?
        .map(|r| r.get(0));
    let plan = rules::plan_create(new, existing, now, targets, keyring)?;
    let w = &plan.write;
    let now_text = time_text(now);
    db.execute(
        "INSERT INTO participants (id, national_id_hash, national_id_key, national_id_sealed, kommunenummer,
             hurtigspor_status, version, record, create_time, update_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        &[
            &w.id,
            &plan.national_id_hash,
            &plan.sealed.key_id,
            &plan.sealed.bytes,
            &w.kommunenummer,
            &w.hurtigspor_status,
            &w.version,
            &w.record,
            &now_text,
        ],
    )
    .await?;
    write_version_rows(db, w).await?;
    Ok(w.committed())
}

/// Applies a mutation; with `skip_unchanged`, a mutation that leaves the
/// record as it was stores nothing and answers `None`. The participant's
/// row is locked first, so that changes of one person queue.
pub(super) async fn apply_mutation_if<C: GenericClient + Sync>(
    db: &Db<'_, C>,
    m: Mutation,
    now: DateTime<Utc>,
    targets: &[String],
    skip_unchanged: bool,
    keyring: &Keyring,
) -> Result<Option<Committed>> {
    let row = db
        .query_opt(
            "SELECT version, record, national_id_key, national_id_sealed FROM participants WHERE id = $1 FOR UPDATE",
            &[&m.id],
        )
        .await?;
    if let Some(key) = &m.idempotency
        && let Some(done) = replay(db, key, Some(&m.id), keyring).await?
    {
        return Ok(Some(done));
    }
    let current = row
        .map(|r| {
            let record: &[u8] = r.get(1);
            Ok::<_, Error>(Current {
                version: r.get(0),
                record: codec::decode(record)?,
                national_id: SealedId { key_id: r.get(2), bytes: r.get(3) },
            })
        })
        .transpose()?;
    // The mutator is the caller's code: a panic in it refuses this write only.
    let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rules::plan_mutation(m, current, now, targets, skip_unchanged, keyring)
    }))
    .unwrap_or_else(|_| Err(Error::Internal("a write panicked; it was rolled back and the store carries on".into())));
    let Some(plan) = planned? else {
        return Ok(None);
    };
    db.execute(
        "UPDATE participants SET kommunenummer = $2, hurtigspor_status = $3, version = $4, record = $5, update_time = $6
         WHERE id = $1",
        &[&plan.id, &plan.kommunenummer, &plan.hurtigspor_status, &plan.version, &plan.record, &time_text(now)],
    )
    .await?;
    write_version_rows(db, &plan).await?;
    Ok(Some(plan.committed()))
}

impl PostgresStore {
    /// One write in one transaction, its audit entry beside it. A refused
    /// write is rolled back and audited alone.
    async fn write(&self, job: Write) -> Result<Committed> {
        let (audit, existing_record) = match &job {
            Write::Create(n) => (n.audit.clone().map(|e| (e, n.id.clone())), false),
            Write::Mutate(m) => (m.audit.clone().map(|e| (e, m.id.clone())), true),
        };
        let mut conn = self.conn().await?;
        let conn = &mut *conn;
        let tx = conn.client.transaction().await?;
        let db = Db { client: &tx, statements: &conn.statements };
        let now = self.clock.now();
        let targets = &self.sync.targets;
        let result = match job {
            Write::Create(new) => apply_create(&db, *new, now, targets, &self.keyring).await,
            Write::Mutate(m) => apply_mutation_if(&db, *m, now, targets, false, &self.keyring)
                .await
                .map(|c| c.expect("stored unconditionally")),
        };
        let refusal = match result {
            Ok(committed) => {
                if let Some(entry) = rules::write_audit(audit, existing_record, &Ok(committed.clone())) {
                    append_audit(&db, &[entry], now).await?;
                }
                tx.commit().await?;
                if !committed.replayed {
                    self.committed_version();
                }
                self.signals.audited.notify_one();
                return Ok(committed);
            }
            Err(StoreError::Refused(e)) => e,
            Err(other) => return Err(other),
        };
        tx.rollback().await?;
        let refused = Err(refusal);
        if let Some(entry) = rules::write_audit(audit, existing_record, &refused) {
            append_audit(&conn.db(), &[entry], now).await?;
            self.signals.audited.notify_one();
        }
        refused.map_err(StoreError::Refused)
    }
}

/// The participant of a row (`id, record, national_id_key,
/// national_id_sealed`), its national id decrypted.
fn row_participant(keyring: &Keyring, r: &Row) -> Result<Participant> {
    let id: String = r.get("id");
    let mut p = codec::decode(r.get::<_, &[u8]>("record"))?;
    let sealed = SealedId { key_id: r.get("national_id_key"), bytes: r.get("national_id_sealed") };
    p.national_id = rules::open_national_id(keyring, &id, sealed)?;
    Ok(p)
}

/// Change-log rows (`xid, sequence, participant_id, version, kind, origin,
/// actor, snapshot`) as records.
fn change_records(rows: Vec<Row>) -> Result<Vec<ChangeRecord>> {
    rows.into_iter()
        .map(|r| {
            Ok(ChangeRecord {
                cursor: ChangeCursor { transaction: r.get(0), sequence: r.get(1) },
                participant_id: r.get(2),
                version: r.get(3),
                kind: r.get(4),
                origin: r.get(5),
                actor: r.get(6),
                snapshot: codec::decode(r.get::<_, &[u8]>(7))?,
            })
        })
        .collect()
}

#[async_trait]
impl Participants for PostgresStore {
    async fn create(&self, new: NewParticipant) -> Result<Committed, Error> {
        let mut attempt = 1;
        loop {
            match self.write(Write::Create(Box::new(new.clone()))).await {
                // Another instance took the same request id or national id
                // between this one's look and its insert: look again.
                Err(StoreError::Conflict(_)) if attempt < CREATE_ATTEMPTS => attempt += 1,
                result => return Ok(result?),
            }
        }
    }

    async fn mutate(&self, mutation: Mutation) -> Result<Committed, Error> {
        Ok(self.write(Write::Mutate(Box::new(mutation))).await?)
    }

    async fn get(&self, id: &str) -> Result<Option<Participant>, Error> {
        let conn = self.conn().await?;
        let row = conn
            .db()
            .query_opt("SELECT id, record, national_id_key, national_id_sealed FROM participants WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|r| row_participant(&self.keyring, &r)).transpose()?)
    }

    async fn get_by_national_id_hash(&self, hash: &[u8]) -> Result<Option<Participant>, Error> {
        let conn = self.conn().await?;
        let row = conn
            .db()
            .query_opt(
                "SELECT id, record, national_id_key, national_id_sealed FROM participants WHERE national_id_hash = $1",
                &[&hash],
            )
            .await?;
        Ok(row.map(|r| row_participant(&self.keyring, &r)).transpose()?)
    }

    async fn list(&self, query: ListQuery) -> Result<ListPage, Error> {
        let conn = self.conn().await?;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = conn
            .db()
            .query(
                "SELECT position, id, record, national_id_key, national_id_sealed FROM participants
                 WHERE position > $1 AND ($2::text[] IS NULL OR kommunenummer = ANY($2))
                   AND ($3::integer IS NULL OR hurtigspor_status = $3)
                 ORDER BY position LIMIT $4",
                &[&query.after.unwrap_or(0), &query.kommuner, &query.hurtigspor_status, &limit],
            )
            .await?;
        let more = rows.len() > query.limit;
        let mut participants = Vec::with_capacity(rows.len().min(query.limit));
        let mut last_position = None;
        for row in rows.iter().take(query.limit) {
            last_position = Some(row.get::<_, i64>(0));
            participants.push(row_participant(&self.keyring, row)?);
        }
        Ok(ListPage { participants, last_position, more })
    }
}

#[async_trait]
impl ChangeLog for PostgresStore {
    async fn changes(&self, after: ChangeCursor, limit: usize) -> Result<Vec<ChangeRecord>, Error> {
        let conn = self.conn().await?;
        // Only what committed below the horizon: a transaction still open
        // (its changes unseen) has an id at or above it, so every change it
        // commits later sorts after what is read now.
        let rows = conn
            .db()
            .query(
                "SELECT xid::text::bigint, sequence, participant_id, version, kind, origin, actor, snapshot
                 FROM change_log
                 WHERE (xid, sequence) > ($1::text::xid8, $2)
                   AND xid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY xid, sequence LIMIT $3",
                &[&after.transaction.to_string(), &after.sequence, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        Ok(change_records(rows)?)
    }

    async fn histories(&self, after: Option<(String, i64)>, limit: usize) -> Result<Vec<ChangeRecord>, Error> {
        let conn = self.conn().await?;
        let (after_id, after_version) = after.unwrap_or((String::new(), i64::MIN));
        let rows = conn
            .db()
            .query(
                "SELECT xid::text::bigint, sequence, participant_id, version, kind, origin, actor, snapshot
                 FROM change_log
                 WHERE (participant_id, version) > ($1, $2)
                 ORDER BY participant_id, version LIMIT $3",
                &[&after_id, &after_version, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        Ok(change_records(rows)?)
    }
}

//! The write rules, planned without a database.
//!
//! A dialect reads the rows a write depends on, asks these functions what
//! the write means, and writes the plan they return, all in one
//! transaction:
//!
//! ```text
//! create:    stored request? -> replay_of -> id by national id hash -> plan_create -> insert plan
//! mutate:    stored request? -> replay_of -> current row -> plan_mutation -> update plan
//! inbound:   applied position -> superseded? -> plan_mutation(skip unchanged) -> inbound_audit
//! delivery:  sync row -> finish_sync -> update row; delivery_audit -> chain -> append
//! audit:     head of the log -> chain -> append
//! ```
//!
//! Nothing here reads a clock, a file or a connection: every input is an
//! argument, so each rule is tested by itself, and a second dialect cannot
//! disagree with the first about what a write means.

use super::{
    ChangeKind, Committed, IdempotencyKey, Mutation, NewParticipant, Origin, Settled, SyncOutcome, SyncTask,
    codec::{encode_record, time_text, timestamp},
    etag_for, resource_name,
};
use crate::{
    audit::{AuditEntry, AuditKey, AuditRecord, GENESIS, chain_hash},
    crypto::{Keyring, Sealed},
    error::Error,
};
use chrono::{DateTime, Utc};
use hurtigspor_proto::v1::Participant;

/// An idempotency record as stored: which request id answered with what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRequest {
    pub fingerprint: Vec<u8>,
    pub participant_id: String,
    pub version: i64,
}

/// Which earlier answer a retried request gets: the participant and the
/// version to answer with, or `None` when the request id is new.
///
/// The same id with another body is refused (`RequestIdReused`), and so is
/// an id reused for a change of another participant (`for_participant`).
pub fn replay_of(
    key: &IdempotencyKey,
    stored: Option<StoredRequest>,
    for_participant: Option<&str>,
) -> Result<Option<(String, i64)>, Error> {
    let Some(stored) = stored else { return Ok(None) };
    if stored.fingerprint != key.fingerprint {
        return Err(Error::RequestIdReused);
    }
    if for_participant.is_some_and(|id| id != stored.participant_id) {
        return Err(Error::RequestIdReused);
    }
    Ok(Some((stored.participant_id, stored.version)))
}

/// A national id as stored: the key id and the ciphertext
/// (`national_id_key`, `national_id_sealed`), either possibly missing in a
/// database changed outside the gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealedId {
    pub key_id: Option<String>,
    pub bytes: Option<Vec<u8>>,
}

/// Decrypts a stored national id. Errors name the participant and the key
/// id, never the value.
pub fn open_national_id(keyring: &Keyring, id: &str, sealed: SealedId) -> Result<String, Error> {
    let (Some(key_id), Some(bytes)) = (sealed.key_id, sealed.bytes) else {
        return Err(Error::Internal(format!(
            "participants/{id} has no encrypted national id; reopen the database with the gateway to finish its migration"
        )));
    };
    Ok(keyring.open(id, &key_id, &bytes)?)
}

/// Whether the national ids stored under `key_id` (`count` of them, e.g.
/// `sample`'s, sealed as `sealed`) can be read with this keyring: a value
/// under no key, a key not configured, or a key whose value differs stops
/// the start, saying what to do.
pub fn check_key(
    keyring: &Keyring,
    key_id: Option<&str>,
    count: i64,
    sample: &str,
    sealed: Option<&[u8]>,
) -> Result<(), Error> {
    let Some(key_id) = key_id else {
        return Err(Error::precondition(
            "NATIONAL_ID_NOT_ENCRYPTED",
            format!("participants/{sample}"),
            format!(
                "{count} participant(s), e.g. participants/{sample}, have no encrypted national id: the database was changed outside the gateway; restore it from a backup"
            ),
        ));
    };
    if !keyring.contains(key_id) {
        return Err(Error::precondition(
            "ENCRYPTION_KEY_NOT_CONFIGURED",
            "security.encryption_keys",
            format!(
                "{count} national id(s) in this database are encrypted under key `{key_id}`, which is not configured: add it to security.encryption_keys (or set {}) and start again. Remove a key only after `hurtigspor rotate-key` reports that no value is under it",
                crate::crypto::env_var(key_id)
            ),
        ));
    }
    if keyring.open(sample, key_id, sealed.unwrap_or_default()).is_err() {
        return Err(Error::precondition(
            "ENCRYPTION_KEY_WRONG",
            "security.encryption_keys",
            format!(
                "the configured key `{key_id}` does not decrypt the national ids stored under it (e.g. participants/{sample}): its value differs from the one they were encrypted with; configure the original value of `{key_id}`"
            ),
        ));
    }
    Ok(())
}

/// The answer to a replayed request: the version it wrote, as it was then.
pub fn replayed(mut snapshot: Participant, national_id: String, version: i64) -> Committed {
    snapshot.national_id = national_id;
    Committed { participant: snapshot, version, replayed: true }
}

/// A new participant version and everything that commits with it.
#[derive(Clone, Debug, PartialEq)]
pub struct WritePlan {
    pub id: String,
    pub version: i64,
    /// The participant as the caller is answered: national id included.
    pub participant: Participant,
    /// The record as stored ([`encode_record`]): no national id.
    pub record: Vec<u8>,
    pub kommunenummer: String,
    pub hurtigspor_status: i32,
    pub time: DateTime<Utc>,
    /// The change log's row.
    pub kind: &'static str,
    pub origin: Origin,
    pub actor: String,
    /// NOKUT case numbers to keep findable (`external_refs`).
    pub case_numbers: Vec<String>,
    /// The request id to remember with this version.
    pub remember: Option<IdempotencyKey>,
    /// The targets that must reach this version.
    pub deliver_to: Vec<String>,
}

impl WritePlan {
    pub fn committed(&self) -> Committed {
        Committed { participant: self.participant.clone(), version: self.version, replayed: false }
    }
}

/// A participant to insert.
#[derive(Clone, Debug, PartialEq)]
pub struct CreatePlan {
    pub write: WritePlan,
    pub national_id_hash: Vec<u8>,
    pub sealed: Sealed,
}

/// Plans a registration. `existing` is the participant already registered
/// with the same national id hash, if any: then the person exists and the
/// answer is ALREADY_EXISTS, naming them.
pub fn plan_create(
    new: NewParticipant,
    existing: Option<String>,
    now: DateTime<Utc>,
    targets: &[String],
    keyring: &Keyring,
) -> Result<CreatePlan, Error> {
    if let Some(existing) = existing {
        return Err(Error::AlreadyExists { existing: resource_name(&existing) });
    }
    let version = 1;
    let mut p = new.record;
    p.name = resource_name(&new.id);
    p.etag = etag_for(version);
    p.create_time = Some(timestamp(now));
    p.update_time = Some(timestamp(now));
    let record = encode_record(&p);
    let sealed = keyring.seal(&new.id, &new.national_id)?;
    p.national_id = new.national_id;
    Ok(CreatePlan {
        write: WritePlan {
            version,
            record,
            kommunenummer: p.kommunenummer.clone(),
            hurtigspor_status: p.hurtigspor.as_ref().map_or(0, |h| h.status),
            case_numbers: case_numbers(&p),
            participant: p,
            time: now,
            kind: "participant.created",
            origin: new.origin,
            actor: new.actor,
            remember: new.idempotency,
            deliver_to: targets.to_vec(),
            id: new.id,
        },
        national_id_hash: new.national_id_hash,
        sealed,
    })
}

/// The participant row a change starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct Current {
    pub version: i64,
    /// The stored record (no national id).
    pub record: Participant,
    pub national_id: SealedId,
}

/// Plans a change of `current` (`None`: no such participant).
///
/// In this order: a participant of a kommune the writer does not act for
/// does not exist for it (NOT_FOUND, whatever the etag says); a stale etag
/// is ABORTED; the mutator runs; the participant cannot be moved out of the
/// writer's kommuner; fields only the store sets are put back; and with
/// `skip_unchanged`, a change that leaves the record as it was plans
/// nothing (`None`).
pub fn plan_mutation(
    m: Mutation,
    current: Option<Current>,
    now: DateTime<Utc>,
    targets: &[String],
    skip_unchanged: bool,
    keyring: &Keyring,
) -> Result<Option<WritePlan>, Error> {
    let Some(current) = current else {
        return Err(Error::not_found(resource_name(&m.id)));
    };
    let mut p = current.record;
    let within = |k: &str| m.kommuner.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
    if !within(&p.kommunenummer) {
        return Err(Error::not_found(resource_name(&m.id)));
    }
    if let Some(etag) = &m.expected_etag
        && *etag != etag_for(current.version)
    {
        return Err(Error::StaleEtag { resource: resource_name(&m.id) });
    }
    p.national_id = open_national_id(keyring, &m.id, current.national_id)?;
    let before = p.clone();
    (m.apply)(&mut p)?;
    if !within(&p.kommunenummer) {
        return Err(Error::PermissionDenied {
            reason: "KOMMUNE_NOT_YOURS",
            message: "a kommune cannot move a participant to a kommune it does not act for".into(),
        });
    }
    // Fields only the store sets cannot be changed by a mutator.
    p.name = before.name.clone();
    p.national_id = before.national_id.clone();
    p.create_time = before.create_time;
    p.etag = before.etag.clone();
    p.update_time = before.update_time;
    if skip_unchanged && encode_record(&p) == encode_record(&before) {
        return Ok(None);
    }
    let version = current.version + 1;
    p.etag = etag_for(version);
    p.update_time = Some(timestamp(now));
    let ChangeKind(kind) = m.kind;
    Ok(Some(WritePlan {
        version,
        record: encode_record(&p),
        kommunenummer: p.kommunenummer.clone(),
        hurtigspor_status: p.hurtigspor.as_ref().map_or(0, |h| h.status),
        case_numbers: case_numbers(&p),
        participant: p,
        time: now,
        kind,
        origin: m.origin,
        actor: m.actor,
        remember: m.idempotency,
        deliver_to: targets.to_vec(),
        id: m.id,
    }))
}

/// The recognition authority's case numbers, so that its changes can be
/// matched to the participant.
pub fn case_numbers(p: &Participant) -> Vec<String> {
    p.recognition_cases.iter().filter(|c| !c.case_number.is_empty()).map(|c| c.case_number.clone()).collect()
}

/// A write's audit entry, completed with the participant it concerned and
/// how it went. A refused write is audited too (its changes were rolled
/// back); `existing_record` says whether the write was about a participant
/// already registered (a change) or a new one (a registration).
pub fn write_audit(
    audit: Option<(AuditEntry, String)>,
    existing_record: bool,
    result: &Result<Committed, Error>,
) -> Option<AuditEntry> {
    let (mut entry, id) = audit?;
    crate::audit::settle(&mut entry, result);
    entry.participant_id = match result {
        Ok(c) => {
            entry.detail = Some(if c.replayed {
                format!("replayed version {}", c.version)
            } else {
                format!("version {}", c.version)
            });
            c.participant.name.strip_prefix("participants/").map(str::to_owned).or(Some(id))
        }
        // The person is registered already: the attempt concerned them.
        Err(Error::AlreadyExists { existing }) => existing.strip_prefix("participants/").map(str::to_owned),
        Err(_) if existing_record => Some(id),
        Err(_) => None,
    };
    Some(entry)
}

/// Chains `entries` to the log's current `head` (its last sequence and
/// hash; `None` for an empty log), all at `time`. The dialect must read the
/// head and append in one transaction that no other append can interleave
/// with, or two entries would chain to the same head.
pub fn chain(
    key: &AuditKey,
    head: Option<(i64, Vec<u8>)>,
    time: DateTime<Utc>,
    entries: &[AuditEntry],
) -> Vec<AuditRecord> {
    let time = time_text(time);
    let timed: Vec<(String, AuditEntry)> = entries.iter().map(|e| (time.clone(), e.clone())).collect();
    chain_each(key, head, &timed)
}

/// Chains entries appended earlier, each at the time it was appended, to
/// the log's current `head`, in the order given: for a dialect that
/// appends first and chains later.
pub fn chain_each(key: &AuditKey, head: Option<(i64, Vec<u8>)>, entries: &[(String, AuditEntry)]) -> Vec<AuditRecord> {
    let (mut sequence, mut previous) = head.unwrap_or((0, GENESIS.to_vec()));
    entries
        .iter()
        .map(|(time, e)| {
            sequence += 1;
            let hash = chain_hash(key, &previous, sequence, time, e).to_vec();
            AuditRecord {
                sequence,
                time: time.clone(),
                entry: e.clone(),
                previous_hash: std::mem::replace(&mut previous, hash.clone()),
                hash,
            }
        })
        .collect()
}

/// A delivery attempt's audit entry; a deferred one was not made, and is
/// not audited.
pub fn delivery_audit(task: &SyncTask, outcome: &SyncOutcome) -> Option<AuditEntry> {
    let (result, detail) = match outcome {
        SyncOutcome::Delivered { version } => ("delivered", format!("version {version}")),
        SyncOutcome::Retry { error, .. } => ("retry", attempt_detail(task.desired_version, error)),
        SyncOutcome::Failed { error } => ("failed", attempt_detail(task.desired_version, error)),
        SyncOutcome::Deferred { .. } => return None,
    };
    Some(AuditEntry {
        organisation: "gateway".into(),
        vendor: None,
        method: format!("deliver/{}", task.target),
        participant_id: Some(task.participant_id.clone()),
        purpose: Some("sync".into()),
        outcome: result.into(),
        detail: Some(detail),
    })
}

/// A failed attempt's audit detail: the version and the error, cut short,
/// with any run of digits masked (other systems' errors may quote a number).
fn attempt_detail(version: i64, error: &str) -> String {
    let error: String = error.chars().take(200).collect();
    format!("version {version}: {}", crate::audit::mask_digit_runs(&error))
}

/// One target's delivery state for one participant, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRow {
    pub desired_version: i64,
    pub delivered_version: i64,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_time: String,
}

/// Settles a claimed task's row by its outcome; the lease ends with it.
///
/// A version written after the claim (`row.desired_version` above the
/// task's) is never lost to this attempt: a delivery of the older version
/// leaves the row pending, a retry or deferral of it is due at once instead
/// of after this attempt's backoff, and a permanent failure of it leaves the
/// newer version its own chance instead of failing unseen.
pub fn finish_sync(row: &SyncRow, task: &SyncTask, outcome: SyncOutcome, now: DateTime<Utc>) -> SyncRow {
    let now = time_text(now);
    let newer = row.desired_version > task.desired_version;
    let mut next = row.clone();
    match outcome {
        SyncOutcome::Delivered { version } => {
            next.delivered_version = row.delivered_version.max(version);
            next.state = if row.desired_version <= version { "delivered" } else { "pending" }.into();
            next.attempts = 0;
            next.last_error = None;
            next.next_attempt_time = now;
        }
        SyncOutcome::Retry { error, at } => {
            next.attempts += 1;
            next.last_error = Some(error);
            next.next_attempt_time = if newer { now } else { time_text(at) };
        }
        SyncOutcome::Deferred { error, at } => {
            next.last_error = Some(error);
            next.next_attempt_time = if newer { now } else { time_text(at) };
        }
        SyncOutcome::Failed { error } => {
            next.attempts += 1;
            next.last_error = Some(error);
            next.state = if newer { "pending" } else { "failed" }.into();
        }
    }
    next
}

/// Whether an inbound change at `position` comes too late: a change of the
/// same entity at `applied` or later was applied already. Feed positions
/// are zero-padded, so text order is feed order. The same rule keeps a feed
/// cursor and a measure instance from moving back.
pub fn superseded(applied: Option<&str>, position: &str) -> bool {
    applied.is_some_and(|a| a >= position)
}

/// What settling writes to an inbox entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryUpdate {
    /// `handled`, `ignored`, `retry` or `failed`.
    pub status: &'static str,
    pub note: Option<String>,
    /// The participant it concerned, when known; `None` keeps the one kept.
    pub participant: Option<String>,
    pub attempts: i64,
    /// When a retry is due; `None` keeps the time kept.
    pub next_attempt_time: Option<String>,
}

impl EntryUpdate {
    fn new(status: &'static str, note: impl Into<String>, attempts: i64) -> Self {
        Self { status, note: Some(note.into()), participant: None, attempts, next_attempt_time: None }
    }
}

/// How to settle one inbox entry.
pub enum SettlePlan {
    /// The entry is not open (never kept, or settled for good): nothing to do.
    Gone,
    /// Apply `mutation` (skipping it if it changes nothing), record this
    /// position as the entity's latest, keep `refs` for the participant,
    /// then mark the entry with [`handled`].
    Apply { entity: String, mutation: Box<Mutation>, refs: Vec<(String, String)>, attempts: i64 },
    /// Mark the entry; record this position as `advance`'s latest and keep
    /// `instance`, when given.
    Mark { update: EntryUpdate, advance: Option<String>, instance: Option<super::MeasureInstance>, settled: Settled },
}

/// Plans how an inbox entry at `position` is settled. `attempts` is the
/// open entry's count of attempts (`None`: it is not open); `applied` is
/// the latest position applied for the entity the outcome names; `instance`
/// the position an instance the outcome remembers was last kept at.
pub fn plan_settle(
    attempts: Option<i64>,
    applied: Option<&str>,
    instance_at: Option<&str>,
    position: &str,
    outcome: super::Settle,
    retry_at: impl FnOnce(chrono::DateTime<Utc>) -> String,
) -> SettlePlan {
    use super::Settle;
    let Some(attempts) = attempts else { return SettlePlan::Gone };
    match outcome {
        Settle::Apply { mutation, .. } if superseded(applied, position) => SettlePlan::Mark {
            update: EntryUpdate {
                participant: Some(mutation.id.clone()),
                ..EntryUpdate::new(
                    "ignored",
                    "superseded: a later change of the same record was applied already",
                    attempts,
                )
            },
            advance: None,
            instance: None,
            settled: Settled::Superseded,
        },
        Settle::Apply { entity, mutation, refs } => SettlePlan::Apply { entity, mutation, refs, attempts },
        Settle::Instance(i) => SettlePlan::Mark {
            update: EntryUpdate::new("handled", "measure instance remembered", attempts),
            advance: None,
            instance: (!superseded(instance_at, position)).then_some(i),
            settled: Settled::Handled(None),
        },
        Settle::Ignore { reason, entity } => SettlePlan::Mark {
            update: EntryUpdate::new("ignored", reason, attempts),
            advance: entity.filter(|_| !superseded(applied, position)),
            instance: None,
            settled: Settled::Ignored,
        },
        Settle::Retry { error, at } => SettlePlan::Mark {
            update: EntryUpdate {
                next_attempt_time: Some(retry_at(at)),
                ..EntryUpdate::new("retry", error, attempts + 1)
            },
            advance: None,
            instance: None,
            settled: Settled::Retry,
        },
        Settle::Fail { error } => SettlePlan::Mark {
            update: EntryUpdate::new("failed", error, attempts + 1),
            advance: None,
            instance: None,
            settled: Settled::Failed,
        },
    }
}

/// How an applied entry is marked: handled, about whom, and whether it
/// stored a new version (`None`: the record already held it, an echo).
pub fn handled(attempts: i64, participant: String, version: Option<i64>) -> EntryUpdate {
    let note = match version {
        Some(v) => format!("applied as version {v}"),
        None => "the record already held it".to_owned(),
    };
    EntryUpdate { participant: Some(participant), ..EntryUpdate::new("handled", note, attempts) }
}

/// A target's queue row once a new version is written: pending, due at
/// once, with a fresh count of attempts and no error. A row kept already
/// keeps the version it delivered; a new one has delivered none.
pub fn pending(version: i64, now: DateTime<Utc>) -> SyncRow {
    SyncRow {
        desired_version: version,
        delivered_version: 0,
        state: "pending".into(),
        attempts: 0,
        last_error: None,
        next_attempt_time: time_text(now),
    }
}

/// How an inbound change was settled, for the audit log: which system's
/// change, about whom, and what came of it. Nothing is audited when
/// nothing was done (`Gone`).
pub fn inbound_audit(
    source: &str,
    position: &str,
    kind: Option<String>,
    participant: Option<String>,
    settled: &Settled,
) -> Option<AuditEntry> {
    let (result, detail) = match settled {
        Settled::Handled(Some(v)) => ("handled", format!("position {position}; version {v}")),
        Settled::Handled(None) => ("handled", format!("position {position}; nothing changed")),
        Settled::Ignored => ("ignored", format!("position {position}")),
        Settled::Superseded => ("superseded", format!("position {position}")),
        Settled::Retry => ("retry", format!("position {position}")),
        Settled::Failed => ("failed", format!("position {position}")),
        Settled::Gone => return None,
    };
    Some(AuditEntry {
        organisation: source.to_owned(),
        vendor: None,
        method: format!("inbound/{source}/{}", kind.unwrap_or_default()),
        participant_id: participant,
        purpose: Some("sync".into()),
        outcome: result.into(),
        detail: Some(detail),
    })
}

/// A dialect's migration: its version, name and SQL.
pub type Migration = (i64, &'static str, &'static str);

/// A migration's checksum, as `schema_migrations` keeps it.
pub fn migration_checksum(sql: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sql.as_bytes()))
}

/// Which of `ours` to apply, in order, with their checksums, given the
/// versions and checksums a database `applied` already. A database of a
/// version we do not know (a newer gateway migrated it), or one whose
/// applied migration differs from ours, is refused: running on it could
/// lose data.
pub fn pending_migrations(
    applied: &[(i64, String)],
    ours: &'static [Migration],
) -> Result<Vec<(&'static Migration, String)>, super::StoreError> {
    if let Some((v, _)) = applied.iter().find(|(v, _)| !ours.iter().any(|(m, _, _)| m == v)) {
        return Err(super::StoreError::Unavailable(format!(
            "the database has schema version {v}, which this gateway does not know; run a newer gateway"
        )));
    }
    let mut pending = Vec::new();
    for migration in ours {
        let (version, name, sql) = migration;
        let checksum = migration_checksum(sql);
        match applied.iter().find(|(v, _)| v == version) {
            Some((_, stored)) if *stored == checksum => {}
            Some(_) => {
                return Err(super::StoreError::Unavailable(format!(
                    "migration {version} ({name}) differs from the one applied to this database; restore the original migration file"
                )));
            }
            None => pending.push((migration, checksum)),
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Verifier;
    use hurtigspor_proto::v1::{Hurtigspor, RecognitionCase};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn key(request_id: &str, body: u8) -> IdempotencyKey {
        IdempotencyKey { method: "UpdateParticipant", request_id: request_id.into(), fingerprint: [body; 32] }
    }

    fn stored(participant: &str, version: i64, body: u8) -> StoredRequest {
        StoredRequest { fingerprint: vec![body; 32], participant_id: participant.into(), version }
    }

    fn keyring() -> std::sync::Arc<Keyring> {
        Keyring::process_local()
    }

    fn current(kommune: &str, version: i64) -> Current {
        let keyring = keyring();
        let sealed = keyring.seal("p1", "15838510075").unwrap();
        Current {
            version,
            record: Participant {
                name: "participants/p1".into(),
                kommunenummer: kommune.into(),
                etag: etag_for(version),
                ..Default::default()
            },
            national_id: SealedId { key_id: Some(sealed.key_id), bytes: Some(sealed.bytes) },
        }
    }

    fn mutation(
        kommuner: Option<&[&str]>,
        etag: Option<&str>,
        apply: impl FnOnce(&mut Participant) -> Result<(), Error> + Send + 'static,
    ) -> Mutation {
        Mutation {
            id: "p1".into(),
            expected_etag: etag.map(str::to_owned),
            idempotency: None,
            kind: ChangeKind("participant.updated"),
            origin: Origin::Api,
            actor: "0192:974760673".into(),
            kommuner: kommuner.map(|ks| ks.iter().map(|k| (*k).to_owned()).collect()),
            audit: None,
            apply: Box::new(apply),
        }
    }

    #[test]
    fn migrations_apply_what_is_missing_and_refuse_a_changed_or_unknown_schema() {
        static OURS: [Migration; 2] = [(1, "a", "CREATE TABLE a (x)"), (2, "b", "CREATE TABLE b (x)")];
        let sum = |i: usize| migration_checksum(OURS[i].2);
        let versions = |applied: &[(i64, String)]| {
            pending_migrations(applied, &OURS).map(|p| p.iter().map(|(m, _)| m.0).collect::<Vec<_>>())
        };
        assert_eq!(versions(&[]).unwrap(), [1, 2]);
        assert_eq!(versions(&[(1, sum(0))]).unwrap(), [2]);
        assert!(versions(&[(1, sum(0)), (2, sum(1))]).unwrap().is_empty());
        let changed = versions(&[(1, "edited".into())]).unwrap_err().to_string();
        assert!(changed.contains("migration 1 (a) differs"), "{changed}");
        let newer = versions(&[(1, sum(0)), (3, "x".into())]).unwrap_err().to_string();
        assert!(newer.contains("schema version 3") && newer.contains("newer gateway"), "{newer}");
    }

    #[test]
    fn a_replay_needs_the_same_body_and_the_same_participant() {
        assert_eq!(replay_of(&key("r", 1), None, None).unwrap(), None);
        assert_eq!(replay_of(&key("r", 1), Some(stored("p1", 3, 1)), Some("p1")).unwrap(), Some(("p1".into(), 3)));
        assert!(matches!(replay_of(&key("r", 2), Some(stored("p1", 3, 1)), None), Err(Error::RequestIdReused)));
        assert!(matches!(replay_of(&key("r", 1), Some(stored("p1", 3, 1)), Some("p2")), Err(Error::RequestIdReused)));
    }

    #[test]
    fn another_kommunes_participant_is_not_found_before_the_etag_is_looked_at() {
        let never = |_: &mut Participant| -> Result<(), Error> { panic!("the mutator must not run") };
        let m = mutation(Some(&["4601"]), Some("W/\"99\""), never);
        let err =
            plan_mutation(m, Some(current("0301", 2)), at("2026-12-04T10:00:00Z"), &[], false, &keyring()).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        let m = mutation(None, Some("W/\"1\""), never);
        let err =
            plan_mutation(m, Some(current("0301", 2)), at("2026-12-04T10:00:00Z"), &[], false, &keyring()).unwrap_err();
        assert!(matches!(err, Error::StaleEtag { .. }), "{err:?}");
        let m = mutation(None, None, never);
        let err = plan_mutation(m, None, at("2026-12-04T10:00:00Z"), &[], false, &keyring()).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn a_writer_cannot_move_a_participant_out_of_its_kommuner() {
        let m = mutation(Some(&["0301"]), None, |p| {
            p.kommunenummer = "4601".into();
            Ok(())
        });
        let err =
            plan_mutation(m, Some(current("0301", 1)), at("2026-12-04T10:00:00Z"), &[], false, &keyring()).unwrap_err();
        assert_eq!(err.reason(), "KOMMUNE_NOT_YOURS");
    }

    #[test]
    fn fields_only_the_store_sets_are_put_back_and_the_version_moves_on() {
        let m = mutation(None, Some("W/\"4\""), |p| {
            p.name = "participants/other".into();
            p.national_id = "00000000000".into();
            p.etag = "W/\"1000\"".into();
            p.kommunenummer = "4601".into();
            p.recognition_cases.push(RecognitionCase { case_number: "NOKUT-7".into(), ..Default::default() });
            Ok(())
        });
        let now = at("2026-12-04T10:00:00Z");
        let plan = plan_mutation(m, Some(current("0301", 4)), now, &["arena".into(), "nir".into()], false, &keyring())
            .unwrap()
            .unwrap();
        assert_eq!(plan.version, 5);
        assert_eq!(plan.participant.name, "participants/p1");
        assert_eq!(plan.participant.national_id, "15838510075", "the sealed national id, opened");
        assert_eq!(plan.participant.etag, "W/\"5\"");
        assert_eq!(plan.participant.update_time, Some(timestamp(now)));
        assert_eq!(plan.kommunenummer, "4601", "an admin (no kommuner) may move a participant");
        assert_eq!(plan.case_numbers, ["NOKUT-7"]);
        assert_eq!(plan.deliver_to, ["arena", "nir"]);
        let stored = super::super::codec::decode(&plan.record).unwrap();
        assert!(stored.national_id.is_empty(), "the stored record never holds the national id");
    }

    #[test]
    fn an_unchanged_record_is_skipped_only_when_asked() {
        let plan = |skip| {
            plan_mutation(mutation(None, None, |_| Ok(())), Some(current("0301", 2)), Utc::now(), &[], skip, &keyring())
        };
        assert_eq!(plan(true).unwrap(), None);
        assert_eq!(plan(false).unwrap().unwrap().version, 3);
    }

    #[test]
    fn a_registration_of_a_known_person_names_them() {
        let new = NewParticipant {
            id: "p2".into(),
            national_id: "15838510075".into(),
            national_id_hash: vec![1],
            record: Participant {
                kommunenummer: "0301".into(),
                hurtigspor: Some(Hurtigspor { status: 2, ..Default::default() }),
                ..Default::default()
            },
            idempotency: None,
            origin: Origin::Api,
            actor: "a".into(),
            audit: None,
        };
        let now = at("2026-12-04T10:00:00Z");
        let err = plan_create(new.clone(), Some("p1".into()), now, &[], &keyring()).unwrap_err();
        assert!(matches!(&err, Error::AlreadyExists { existing } if existing == "participants/p1"));
        let plan = plan_create(new, None, now, &["nokut".into()], &keyring()).unwrap();
        assert_eq!(plan.write.version, 1);
        assert_eq!(plan.write.participant.name, "participants/p2");
        assert_eq!(plan.write.hurtigspor_status, 2);
        assert_eq!(plan.write.kind, "participant.created");
        assert_eq!(keyring().open("p2", &plan.sealed.key_id, &plan.sealed.bytes).unwrap(), "15838510075");
    }

    fn task(desired: i64) -> SyncTask {
        SyncTask {
            target: "arena".into(),
            participant_id: "p1".into(),
            desired_version: desired,
            attempts: 0,
            lease: String::new(),
        }
    }

    fn row(desired: i64) -> SyncRow {
        SyncRow {
            desired_version: desired,
            delivered_version: 1,
            state: "pending".into(),
            attempts: 2,
            last_error: Some("earlier".into()),
            next_attempt_time: "2026-12-04T09:00:00.000000Z".into(),
        }
    }

    #[test]
    fn a_version_written_after_the_claim_is_never_lost_to_its_outcome() {
        let now = at("2026-12-04T10:00:00Z");
        let later = at("2026-12-04T10:05:00Z");
        let delivered = finish_sync(&row(3), &task(3), SyncOutcome::Delivered { version: 3 }, now);
        assert_eq!((delivered.state.as_str(), delivered.delivered_version, delivered.attempts), ("delivered", 3, 0));
        assert_eq!(delivered.last_error, None);
        let behind = finish_sync(&row(4), &task(3), SyncOutcome::Delivered { version: 3 }, now);
        assert_eq!((behind.state.as_str(), behind.delivered_version), ("pending", 3));

        let retry =
            |desired| finish_sync(&row(desired), &task(3), SyncOutcome::Retry { error: "503".into(), at: later }, now);
        assert_eq!(retry(3).next_attempt_time, time_text(later), "its own backoff");
        assert_eq!(retry(4).next_attempt_time, time_text(now), "the newer version is due at once");
        assert_eq!(retry(3).attempts, 3);

        let deferred = finish_sync(&row(3), &task(3), SyncOutcome::Deferred { error: "open".into(), at: later }, now);
        assert_eq!(deferred.attempts, 2, "a deferral is not an attempt");

        let fail = |desired| finish_sync(&row(desired), &task(3), SyncOutcome::Failed { error: "400".into() }, now);
        assert_eq!(fail(3).state, "failed");
        assert_eq!(fail(4).state, "pending", "the newer version gets its own chance");
    }

    #[test]
    fn deliveries_are_audited_except_a_deferral_and_numbers_are_masked() {
        let entry =
            delivery_audit(&task(3), &SyncOutcome::Failed { error: "person 15838510075 unknown".into() }).unwrap();
        assert_eq!((entry.method.as_str(), entry.outcome.as_str()), ("deliver/arena", "failed"));
        assert!(!entry.detail.unwrap().contains("15838510075"));
        let deferred = SyncOutcome::Deferred { error: "breaker open".into(), at: Utc::now() };
        assert_eq!(delivery_audit(&task(3), &deferred), None);
    }

    #[test]
    fn a_chain_continues_from_the_head_and_verifies() {
        let key = AuditKey::new([7; 32]);
        let entry = |n: &str| AuditEntry { organisation: n.into(), outcome: "OK".into(), ..Default::default() };
        let first = chain(&key, None, at("2026-12-04T10:00:00Z"), &[entry("a"), entry("b")]);
        let head = first.last().map(|r| (r.sequence, r.hash.clone()));
        let second = chain(&key, head, at("2026-12-04T10:00:01Z"), &[entry("c")]);
        assert_eq!(second[0].sequence, 3);
        let mut verifier = Verifier::new(key);
        for record in first.iter().chain(&second) {
            verifier.check(record).unwrap();
        }
    }

    #[test]
    fn a_refused_write_is_audited_about_whom_it_concerned() {
        let entry = || Some((AuditEntry { method: "m".into(), ..Default::default() }, "p9".to_owned()));
        let exists: Result<Committed, Error> = Err(Error::AlreadyExists { existing: "participants/p1".into() });
        assert_eq!(write_audit(entry(), false, &exists).unwrap().participant_id.as_deref(), Some("p1"));
        let stale: Result<Committed, Error> = Err(Error::StaleEtag { resource: "participants/p9".into() });
        assert_eq!(write_audit(entry(), true, &stale).unwrap().participant_id.as_deref(), Some("p9"));
        let invalid: Result<Committed, Error> = Err(Error::RequestIdReused);
        assert_eq!(write_audit(entry(), false, &invalid).unwrap().participant_id, None);
        assert_eq!(write_audit(None, true, &stale), None);
    }

    #[test]
    fn settling_an_entry_is_planned_from_what_was_applied_and_kept() {
        use crate::store::{MeasureInstance, Settle};
        let pos = "00000000000000000005";
        let apply =
            || Settle::Apply { entity: "e".into(), mutation: Box::new(mutation(None, None, |_| Ok(()))), refs: vec![] };
        let at = |t: DateTime<Utc>| time_text(t);
        assert!(matches!(plan_settle(None, None, None, pos, apply(), at), SettlePlan::Gone), "not open");
        let SettlePlan::Mark { update, settled, advance, .. } =
            plan_settle(Some(2), Some("00000000000000000009"), None, pos, apply(), at)
        else {
            panic!("a superseded change is marked, not applied")
        };
        assert_eq!((update.status, update.participant.as_deref(), update.attempts), ("ignored", Some("p1"), 2));
        assert_eq!((settled, advance), (Settled::Superseded, None));
        assert!(matches!(
            plan_settle(Some(0), Some("00000000000000000004"), None, pos, apply(), at),
            SettlePlan::Apply { .. }
        ));

        let ignore = |entity: Option<&str>| Settle::Ignore { reason: "r".into(), entity: entity.map(str::to_owned) };
        let advance_of = |applied, outcome| match plan_settle(Some(0), applied, None, pos, outcome, at) {
            SettlePlan::Mark { advance, .. } => advance,
            _ => panic!("an ignored change is marked"),
        };
        assert_eq!(advance_of(None, ignore(Some("e"))).as_deref(), Some("e"), "it still outranks older changes");
        assert_eq!(advance_of(Some("00000000000000000009"), ignore(Some("e"))), None, "never moves back");

        let instance =
            || Settle::Instance(MeasureInstance { instance_id: 1, code: "ARBTREN".into(), employer_id: None });
        let kept = |instance_at| match plan_settle(Some(0), None, instance_at, pos, instance(), at) {
            SettlePlan::Mark { instance, settled, .. } => (instance.is_some(), settled),
            _ => panic!("an instance is marked"),
        };
        assert_eq!(kept(None), (true, Settled::Handled(None)));
        assert_eq!(kept(Some("00000000000000000009")), (false, Settled::Handled(None)), "a later one wins");

        let due = at_time("2026-12-04T10:00:00Z");
        let retry = Settle::Retry { error: "503".into(), at: due };
        let SettlePlan::Mark { update, .. } = plan_settle(Some(3), None, None, pos, retry, at) else { panic!() };
        assert_eq!((update.status, update.attempts, update.next_attempt_time), ("retry", 4, Some(time_text(due))));
        let SettlePlan::Mark { update, .. } =
            plan_settle(Some(3), None, None, pos, Settle::Fail { error: "x".into() }, at)
        else {
            panic!()
        };
        assert_eq!((update.status, update.attempts, update.next_attempt_time), ("failed", 4, None));
        assert_eq!(handled(1, "p1".into(), Some(7)).note.as_deref(), Some("applied as version 7"));
    }

    fn at_time(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_version_makes_every_target_due_at_once_with_fresh_attempts() {
        let now = at_time("2026-12-04T10:00:00Z");
        let row = pending(4, now);
        assert_eq!((row.desired_version, row.state.as_str(), row.attempts), (4, "pending", 0));
        assert_eq!((row.last_error, row.next_attempt_time), (None, time_text(now)));
    }

    #[test]
    fn an_inbound_change_at_or_before_the_applied_position_is_superseded() {
        assert!(!superseded(None, "00000000000000000005"));
        assert!(superseded(Some("00000000000000000005"), "00000000000000000005"));
        assert!(!superseded(Some("00000000000000000004"), "00000000000000000005"));
        assert_eq!(inbound_audit("arena", "5", None, None, &Settled::Gone), None);
        let audited = inbound_audit("arena", "5", Some("K".into()), None, &Settled::Superseded).unwrap();
        assert_eq!((audited.method.as_str(), audited.outcome.as_str()), ("inbound/arena/K", "superseded"));
    }
}

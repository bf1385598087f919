//! Durable storage of the canonical record, behind one trait.
//!
//! A write is accepted only as a whole: the new participant version, its row
//! in the change log and its idempotency record commit in one transaction, and
//! the caller hears back only after that commit. Dialect specifics live in the
//! implementations (`sqlite` now; PostgreSQL later).

pub mod sqlite;

use crate::{
    audit::{AuditEntry, AuditQuery, AuditRecord},
    error::Error,
};
use async_trait::async_trait;
use hurtigspor_proto::v1::Participant;

/// Who a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of the gRPC API.
    Api,
    /// NOKUT (its case numbers and decisions).
    Nokut,
    /// Arena (NAV's measures, and the start of work).
    Arena,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Nokut => "nokut",
            Self::Arena => "arena",
        }
    }
}

/// Makes a retried request return the original response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The RPC method, so that one id may not be reused across methods.
    pub method: &'static str,
    pub request_id: String,
    /// Hash of the request body: the same id with another body is refused.
    pub fingerprint: [u8; 32],
}

/// A participant to register.
pub struct NewParticipant {
    /// The opaque id (the `{participant}` in `participants/{participant}`).
    pub id: String,
    /// The validated national id, digits only.
    pub national_id: String,
    /// Keyed hash of the national id: the lookup and uniqueness key.
    pub national_id_hash: Vec<u8>,
    /// The record to store; the store sets `name`, `etag` and the times.
    pub record: Participant,
    pub idempotency: Option<IdempotencyKey>,
    pub origin: Origin,
    pub actor: String,
    /// The request's audit entry: the store completes it (participant,
    /// outcome) and appends it in the same transaction as the write, or,
    /// when the write is refused, alone.
    pub audit: Option<AuditEntry>,
}

/// The change a mutation made, as recorded in the change log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeKind(pub &'static str);

/// Applies a change to the current record; runs inside the write transaction.
/// Returning an error rolls back this change only.
pub type Mutator = Box<dyn FnOnce(&mut Participant) -> Result<(), Error> + Send>;

/// A change to an existing participant.
pub struct Mutation {
    pub id: String,
    /// When set, must equal the current etag, or the change is ABORTED.
    pub expected_etag: Option<String>,
    pub idempotency: Option<IdempotencyKey>,
    pub kind: ChangeKind,
    pub origin: Origin,
    pub actor: String,
    /// The kommuner the writer acts for (`None`: every kommune). A
    /// participant of another kommune is NOT_FOUND, before the etag is
    /// looked at, and cannot be moved out of these kommuner.
    pub kommuner: Option<Vec<String>>,
    /// As for [`NewParticipant::audit`].
    pub audit: Option<AuditEntry>,
    pub apply: Mutator,
}

/// The outcome of a committed (or replayed) write.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// The participant as of this write, national id included.
    pub participant: Participant,
    pub version: i64,
    /// True when this answers a retry of an earlier request.
    pub replayed: bool,
}

/// Filters and position for listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only participants of these kommuner (none: every kommune).
    pub kommuner: Option<Vec<String>>,
    pub hurtigspor_status: Option<i32>,
    /// Return participants registered after this position (exclusive).
    pub after: Option<i64>,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListPage {
    pub participants: Vec<Participant>,
    /// Position of the last participant returned; `None` if empty.
    pub last_position: Option<i64>,
    /// Whether more participants match after this page.
    pub more: bool,
}

/// One entry of the change log.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRecord {
    /// Monotonic position in the log.
    pub sequence: i64,
    pub participant_id: String,
    pub version: i64,
    pub kind: String,
    pub origin: String,
    pub actor: String,
    /// The participant after the change, without the national id.
    pub snapshot: Participant,
}

/// One piece of outbound work: bring `target` up to date with a participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncTask {
    pub target: String,
    pub participant_id: String,
    /// The version the target must reach (the latest, when claimed).
    pub desired_version: i64,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// How a delivery went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The target holds this version now.
    Delivered { version: i64 },
    /// Try again at `at`.
    Retry { error: String, at: chrono::DateTime<chrono::Utc> },
    /// Not attempted (the target's breaker is open): try at `at`, without
    /// counting an attempt.
    Deferred { error: String, at: chrono::DateTime<chrono::Utc> },
    /// Give up until someone replays it.
    Failed { error: String },
}

/// Where one target stands for one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    pub target: String,
    pub participant_id: String,
    pub desired_version: i64,
    pub delivered_version: i64,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When the row last changed (RFC 3339); orders failed deliveries.
    pub update_time: String,
}

/// A change another system published, as it goes into the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxEntry {
    /// The source's position of the change, zero-padded to 20 digits.
    pub position: String,
    /// What it is, e.g. `SIAMO.TILTAKDELTAKER U`.
    pub kind: String,
    /// The change as received (JSON), personal data removed.
    pub body: String,
}

/// An inbox entry and how its ingest went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxItem {
    pub source: String,
    pub position: String,
    pub kind: String,
    pub body: String,
    /// `new`, `handled`, `retry`, `failed` or `ignored`.
    pub status: String,
    pub attempts: i64,
    pub participant_id: Option<String>,
    pub note: Option<String>,
    pub received_time: String,
    pub update_time: String,
}

/// Which inbox entries to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboxFilter {
    pub source: Option<String>,
    pub status: Option<String>,
    /// Entries after this (source, position), for paging.
    pub after: Option<(String, String)>,
    pub limit: usize,
}

/// An Arena measure instance (SIAMO.TILTAKGJENNOMFORING) as last published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasureInstance {
    pub instance_id: i64,
    /// Arena's TILTAKSKODE, e.g. `ARBTREN`.
    pub code: String,
    /// Arena's employer number (ARBGIV_ID_ARRANGOR), if any.
    pub employer_id: Option<i64>,
}

/// How an inbox entry's ingest ended.
pub enum Settle {
    /// Apply `mutation` to the participant, unless a later change of the same
    /// `entity` was applied already. A mutation that changes nothing stores
    /// no new version. `refs` are remembered as (system, reference) for the
    /// mutation's participant.
    Apply { entity: String, mutation: Box<Mutation>, refs: Vec<(String, String)> },
    /// Remember an Arena measure instance (later ones win).
    Instance(MeasureInstance),
    /// Nothing to do, and why. With an `entity`, the position still counts
    /// as that entity's latest, so an older change of it cannot be applied
    /// after this one.
    Ignore { reason: String, entity: Option<String> },
    /// Try again at `at`.
    Retry { error: String, at: chrono::DateTime<chrono::Utc> },
    /// Give up until someone re-ingests it.
    Fail { error: String },
}

/// What settling did.
#[derive(Clone, Debug, PartialEq)]
pub enum Settled {
    /// Applied as this version; `None` when the record already held it
    /// (an echo).
    Handled(Option<i64>),
    Ignored,
    /// A later change of the same entity was applied already.
    Superseded,
    Retry,
    Failed,
    /// No such entry, or it was already settled for good.
    Gone,
}

#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a participant. `AlreadyExists` if the national id hash is
    /// taken; replays an earlier identical request with the same request id.
    async fn create(&self, new: NewParticipant) -> Result<Committed, Error>;

    /// Reads the current record, checks the etag, applies the mutator and
    /// stores the result as the next version.
    async fn mutate(&self, mutation: Mutation) -> Result<Committed, Error>;

    async fn get(&self, id: &str) -> Result<Option<Participant>, Error>;

    async fn get_by_national_id_hash(&self, hash: &[u8]) -> Result<Option<Participant>, Error>;

    async fn list(&self, query: ListQuery) -> Result<ListPage, Error>;

    /// Change log entries after `after`, oldest first.
    async fn changes(&self, after: i64, limit: usize) -> Result<Vec<ChangeRecord>, Error>;

    /// Change log entries ordered by participant id, then version, after
    /// `after` (the participant id and version of the last entry of the
    /// previous page). Every version of one participant comes together, so
    /// a reader can fold one participant's history at a time (reporting).
    async fn histories(&self, after: Option<(String, i64)>, limit: usize) -> Result<Vec<ChangeRecord>, Error>;

    /// Leases up to `limit` due sync tasks for `lease`; a task leased and not
    /// finished in time becomes due again.
    async fn claim_sync(&self, limit: usize, lease: std::time::Duration) -> Result<Vec<SyncTask>, Error>;

    /// Records how a claimed task went.
    async fn finish_sync(&self, task: SyncTask, outcome: SyncOutcome) -> Result<(), Error>;

    /// Every target's state for one participant.
    async fn sync_status(&self, participant_id: &str) -> Result<Vec<SyncStatus>, Error>;

    /// Failed deliveries, oldest first, after `after` (the update time,
    /// target and participant of the last one of the previous page).
    async fn failed_syncs(
        &self,
        after: Option<(String, String, String)>,
        limit: usize,
    ) -> Result<Vec<SyncStatus>, Error>;

    /// Makes failed deliveries due again (one participant's, or all);
    /// returns how many.
    async fn retry_failed_syncs(&self, participant_id: Option<String>) -> Result<usize, Error>;

    /// Where `source`'s feed was read up to.
    async fn inbound_cursor(&self, source: &str) -> Result<Option<String>, Error>;

    /// Keeps changes received from `source` (ignoring ones already kept) and,
    /// in the same transaction, moves its cursor to `cursor` if given.
    /// Returns how many were new.
    async fn receive_inbound(
        &self,
        source: &str,
        entries: Vec<InboxEntry>,
        cursor: Option<String>,
    ) -> Result<usize, Error>;

    /// Entries of `source` to ingest now (new, or retry and due), in feed order.
    async fn due_inbound(&self, source: &str, limit: usize) -> Result<Vec<InboxItem>, Error>;

    /// Ends (or defers) one entry's ingest, together with what it applies.
    async fn settle_inbound(&self, source: &str, position: &str, settle: Settle) -> Result<Settled, Error>;

    /// Inbox entries, in (source, position) order.
    async fn list_inbound(&self, filter: InboxFilter) -> Result<Vec<InboxItem>, Error>;

    /// Makes entries due for ingest again: one (`source` and `position`), or
    /// every failed one (of `source`, if given). Returns how many.
    async fn reingest_inbound(&self, source: Option<String>, position: Option<String>) -> Result<usize, Error>;

    /// An Arena measure instance the feed published.
    async fn measure_instance(&self, instance_id: i64) -> Result<Option<MeasureInstance>, Error>;

    /// The participant another system knows by `reference` (e.g. a NOKUT
    /// case number, system `nokut`).
    async fn participant_by_ref(&self, system: &str, reference: &str) -> Result<Option<String>, Error>;

    /// Appends entries to the audit log; answers once they are committed.
    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), Error>;

    /// Audit entries matching `query`, in sequence order.
    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, Error>;

    /// Finishes pending writes and releases the database.
    async fn close(&self);
}

/// `participants/{id}` from an id.
pub fn resource_name(id: &str) -> String {
    format!("participants/{id}")
}

/// The etag of a version.
pub fn etag_for(version: i64) -> String {
    format!("W/\"{version}\"")
}

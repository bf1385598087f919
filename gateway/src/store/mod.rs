//! Durable storage of the canonical record, behind one trait.
//!
//! A write is accepted only as a whole: the new participant version, its row
//! in the change log and its idempotency record commit in one transaction, and
//! the caller hears back only after that commit. Dialect specifics live in the
//! implementations (`sqlite` now; PostgreSQL later).

pub mod sqlite;

use crate::error::Error;
use async_trait::async_trait;
use hurtigspor_proto::v1::Participant;

/// Who a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of the gRPC API.
    Api,
    /// NOKUT (its case numbers and decisions).
    Nokut,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Nokut => "nokut",
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
    pub kommunenummer: Option<String>,
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

    /// Leases up to `limit` due sync tasks for `lease`; a task leased and not
    /// finished in time becomes due again.
    async fn claim_sync(&self, limit: usize, lease: std::time::Duration) -> Result<Vec<SyncTask>, Error>;

    /// Records how a claimed task went.
    async fn finish_sync(&self, task: SyncTask, outcome: SyncOutcome) -> Result<(), Error>;

    /// Every target's state for one participant.
    async fn sync_status(&self, participant_id: &str) -> Result<Vec<SyncStatus>, Error>;

    /// Failed deliveries, oldest first.
    async fn failed_syncs(&self, limit: usize) -> Result<Vec<SyncStatus>, Error>;

    /// Makes failed deliveries due again (one participant's, or all);
    /// returns how many.
    async fn retry_failed_syncs(&self, participant_id: Option<String>) -> Result<usize, Error>;

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

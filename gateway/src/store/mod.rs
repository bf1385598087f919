//! Durable storage of the canonical record.
//!
//! A write is accepted only as a whole: the new participant version, its row
//! in the change log, its idempotency record, its sync marks and its audit
//! entry commit in one transaction, and the caller hears back only after
//! that commit.
//!
//! The store is built in three layers, so that a second SQL dialect adds
//! rows and statements, never rules:
//!
//! - [`rules`]: what a write means, with no database in sight. Tenancy, the
//!   etag check, protected fields, skip-unchanged, idempotent replay, the
//!   sync fan-out, inbound supersession, delivery outcomes and audit
//!   completion and chaining are planned here from the rows a dialect read.
//! - The role traits below ([`Participants`], [`ChangeLog`], [`SyncQueue`],
//!   [`Inbox`], [`AuditLog`], [`Maintenance`]): what the rest of the gateway
//!   may ask of a store. Each consumer takes the role it uses; [`Store`] is
//!   all of them, for the composition root.
//! - The dialects (`sqlite` now): read rows, hand them to the rules, write
//!   the plan. Driver errors become a [`StoreError`] in one place per
//!   dialect. Nothing outside this module names a dialect: [`open`] picks it
//!   from a [`Location`].
//!
//! [`conformance`] is the behaviour every dialect must show, as one suite.

mod codec;
#[cfg(any(test, feature = "testsuite"))]
pub mod conformance;
mod error;
mod postgres;
pub mod rules;
/// A PostgreSQL database of its own for each test (other crates' tests too).
#[cfg(any(test, feature = "testsuite"))]
pub use postgres::testing;
mod sqlite;

pub use error::StoreError;

use crate::{
    audit::{AuditEntry, AuditKey, AuditQuery, AuditRecord, Break},
    clock::Clock,
    crypto::Keyring,
    error::Error,
};
use async_trait::async_trait;
use hurtigspor_proto::v1::Participant;
use std::{ops::ControlFlow, path::PathBuf, sync::Arc};

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
#[derive(Clone)]
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

/// Where a reader of the change log stands. Changes come in cursor order,
/// and a change that commits late never lands behind a cursor already
/// handed out, so a reader that resumes after its last cursor skips
/// nothing and sees nothing twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeCursor {
    /// The writing transaction, where writers commit out of sequence order
    /// (PostgreSQL: its 64-bit transaction id); 0 where commit order is
    /// sequence order (SQLite's single writer).
    pub transaction: i64,
    /// The change's number in the log.
    pub sequence: i64,
}

impl std::fmt::Display for ChangeCursor {
    /// `42` where there is no transaction to name, `7031-42` where there is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transaction {
            0 => write!(f, "{}", self.sequence),
            t => write!(f, "{t}-{}", self.sequence),
        }
    }
}

impl std::str::FromStr for ChangeCursor {
    type Err = ();

    /// What [`Display`](std::fmt::Display) wrote; never a negative number.
    fn from_str(s: &str) -> Result<Self, ()> {
        let number = |n: &str| n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or(());
        match s.split_once('-') {
            None => Ok(Self { transaction: 0, sequence: number(s)? }),
            Some((t, n)) => Ok(Self { transaction: number(t)?, sequence: number(n)? }),
        }
    }
}

/// One entry of the change log.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRecord {
    /// Its place in the log, to resume after.
    pub cursor: ChangeCursor,
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
    /// The claim this task was leased under, where instances share the
    /// queue: only it may renew or settle the row (empty where one process
    /// owns the queue).
    pub lease: String,
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

impl Settle {
    /// The entity whose latest applied position decides supersession.
    pub fn entity(&self) -> Option<&str> {
        match self {
            Self::Apply { entity, .. } => Some(entity),
            Self::Ignore { entity, .. } => entity.as_deref(),
            _ => None,
        }
    }
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

/// Which targets every accepted write must reach, and whom to wake when
/// there is new work.
#[derive(Clone, Default)]
pub struct SyncConfig {
    pub targets: Vec<String>,
    /// The dispatcher.
    pub wake: Arc<tokio::sync::Notify>,
    /// The change-log readers (WatchChanges).
    pub changes: ChangeSignal,
    /// The inbound feeds: changes were received into the inbox (a webhook,
    /// here or, with a shared database, on another instance).
    pub inbox: ChangeSignal,
}

/// Tells change-log readers that a change committed: on this instance, or,
/// with a shared database, on another. A reader that subscribed misses no
/// signal between two reads of the log; polling stays the fallback.
#[derive(Clone)]
pub struct ChangeSignal(Arc<tokio::sync::watch::Sender<u64>>);

impl Default for ChangeSignal {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

impl ChangeSignal {
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Marked changed by every later [`notify`](Self::notify).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Where the store keeps its data; picks the dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The embedded database: one SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database several instances share
    /// (`postgres://user@host:port/database`).
    Postgres(String),
}

impl Location {
    /// Where the configured gateway keeps its data.
    pub fn of(config: &crate::config::Config) -> Self {
        match config.postgres_url() {
            Some(url) => Self::Postgres(url.to_owned()),
            None => Self::Sqlite(config.database_path()),
        }
    }

    /// Whether there is a database here already.
    pub fn exists(&self) -> bool {
        match self {
            Self::Sqlite(path) => path.exists(),
            Self::Postgres(_) => true,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            // The server and database only: a password in the URL stays out.
            Self::Postgres(url) => write!(f, "PostgreSQL database {}", postgres::describe(url)),
        }
    }
}

/// What a store is opened with.
#[derive(Clone)]
pub struct StoreOptions {
    pub location: Location,
    /// Targets every write is queued for.
    pub sync: SyncConfig,
    /// Seals national ids on insert and opens them on read.
    pub keyring: Arc<Keyring>,
    /// Chains the audit log.
    pub audit_key: AuditKey,
    /// Every commit time, lease and due time is read from it.
    pub clock: Clock,
    /// Connections to keep open to a shared database (PostgreSQL).
    pub pool_size: usize,
}

impl StoreOptions {
    /// Options for a store at `location` with no targets, the wall clock and
    /// a key that lives as long as this process ([`Keyring::process_local`]):
    /// for tests, benchmarks and tools that never read a national id back
    /// after a restart.
    pub fn new(location: Location, audit_key: AuditKey) -> Self {
        Self {
            location,
            sync: SyncConfig::default(),
            keyring: Keyring::process_local(),
            audit_key,
            clock: Clock::system(),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// Connections an instance keeps to a shared database unless configured.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Opens (creating if needed) the store, applies pending migrations and
/// gets it ready to write. National ids a migration left in plain text are
/// encrypted first; opening fails, naming the key id, when the database
/// holds values under a key the keyring lacks or cannot decrypt.
pub async fn open(options: StoreOptions) -> Result<(Arc<dyn Store>, MigrationReport), Error> {
    match options.location.clone() {
        Location::Sqlite(path) => {
            let (store, report) = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path, options))
                .await
                .map_err(|e| Error::Internal(format!("opening the store failed: {e}")))??;
            Ok((Arc::new(store), report))
        }
        Location::Postgres(url) => {
            let (store, report) = postgres::PostgresStore::open(&url, options).await?;
            Ok((Arc::new(store), report))
        }
    }
}

/// Applies pending migrations, and nothing of the running store: no writer
/// starts, no audit key is needed and nothing is audited. With a `keyring`,
/// national ids a migration set aside in plain text are sealed at once, so
/// that no plain text outlives the migration that set it aside, and the
/// keys are checked as at open: a key the database needs and the keyring
/// lacks (or holds with another value) fails the migration, naming it.
pub async fn migrate(location: &Location, keyring: Option<Arc<Keyring>>) -> Result<MigrationReport, Error> {
    match location {
        Location::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite::migrate_only(&path, keyring.as_deref()))
                .await
                .map_err(|e| Error::Internal(format!("migrating failed: {e}")))?
                .map_err(Error::from)
        }
        // Nothing is ever set aside in plain text there; the keys are
        // checked as on SQLite.
        Location::Postgres(url) => Ok(postgres::migrate_checked(url, keyring.as_deref()).await?),
    }
}

/// Re-encrypts every national id under the active key, as
/// [`Maintenance::rotate_keys`] does, without opening the store: nothing of
/// a running gateway starts (no writer, no audit chainer), so it runs
/// beside serving instances. Migrate first; a database not migrated to the
/// current schema is refused.
pub async fn rotate_keys(
    location: &Location,
    keyring: Arc<Keyring>,
    batch: usize,
    progress: RotationProgress,
) -> Result<Rotation, Error> {
    match location {
        Location::Sqlite(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sqlite::rotate_keys(&path, &keyring, batch, progress))
                .await
                .map_err(|e| Error::Internal(format!("key rotation failed: {e}")))?
                .map_err(Error::from)
        }
        Location::Postgres(url) => postgres::rotate_keys(url, &keyring, batch, progress).await,
    }
}

/// Checks the audit log, read-only, entry by entry in constant memory.
/// `progress(checked, total)` is called every `every` entries. The outer
/// error: the log could not be read; the inner: where the chain is broken.
/// `expect_head` (a sequence and its hash, recorded earlier) must still be
/// in the chain.
pub async fn verify_audit_log(
    location: &Location,
    key: &AuditKey,
    expect_head: Option<(i64, Vec<u8>)>,
    every: i64,
    progress: impl FnMut(i64, i64) + Send + 'static,
) -> Result<Result<AuditHead, Break>, Error> {
    match location {
        Location::Sqlite(path) => {
            let (path, key) = (path.clone(), key.clone());
            tokio::task::spawn_blocking(move || sqlite::verify_audit_log(&path, &key, expect_head, every, progress))
                .await
                .map_err(|e| Error::Internal(format!("verifying the audit log failed: {e}")))?
                .map_err(Error::from)
        }
        Location::Postgres(url) => Ok(postgres::verify_audit_log(url, key, expect_head, every, progress).await?),
    }
}

/// One run of [`verify_audit_log`] over entries in sequence order, as a
/// dialect reads them: the chain, the head recorded earlier that must still
/// be in it, and the progress told every `every` entries.
pub(crate) struct ChainCheck<P> {
    verifier: crate::audit::Verifier,
    expect_head: Option<(i64, Vec<u8>)>,
    checked: i64,
    total: i64,
    every: i64,
    progress: P,
}

impl<P: FnMut(i64, i64)> ChainCheck<P> {
    pub(crate) fn new(
        key: &AuditKey,
        expect_head: Option<(i64, Vec<u8>)>,
        total: i64,
        every: i64,
        progress: P,
    ) -> Self {
        Self { verifier: crate::audit::Verifier::new(key.clone()), expect_head, checked: 0, total, every, progress }
    }

    /// The sequence the next entry must have.
    pub(crate) fn next_sequence(&self) -> i64 {
        self.verifier.head().0 + 1
    }

    pub(crate) fn check(&mut self, record: &crate::audit::AuditRecord) -> Result<(), Break> {
        self.verifier.check(record)?;
        if let Some((entry, hash)) = &self.expect_head
            && record.sequence == *entry
            && record.hash != *hash
        {
            return Err(Break::Altered { sequence: *entry });
        }
        self.checked += 1;
        if self.every > 0 && self.checked % self.every == 0 {
            (self.progress)(self.checked, self.total);
        }
        Ok(())
    }

    /// After the last entry: the head, unless the expected one is past it.
    pub(crate) fn finish(self) -> Result<AuditHead, Break> {
        let (sequence, hash) = self.verifier.head();
        if let Some((entry, _)) = self.expect_head
            && entry > sequence
        {
            return Err(Break::Truncated { sequence: entry, last: sequence });
        }
        Ok(AuditHead { entries: self.checked, sequence, hash: hash.to_vec() })
    }
}

/// The head of an intact audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub entries: i64,
    /// The last entry's sequence and hash (0 and zeros when empty).
    pub sequence: i64,
    pub hash: Vec<u8>,
}

/// What a key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key id values were moved to.
    pub active: String,
    /// Values re-encrypted by this run.
    pub reencrypted: usize,
    /// False when `progress` stopped it early.
    pub finished: bool,
    /// How many national ids each key id holds now.
    pub by_key: std::collections::BTreeMap<String, usize>,
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i64>,
    pub current: i64,
}

/// How many writes shared how many commits: writes / commits is the mean
/// batch size of a group-committing dialect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: u64,
    pub commits: u64,
}

/// Told how far a key rotation got (`done`, `total`); `Break` stops it.
pub type RotationProgress = Box<dyn FnMut(usize, usize) -> ControlFlow<()> + Send>;

/// The participants: registering, changing and reading them.
#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait Participants: Send + Sync + 'static {
    /// Registers a participant. `AlreadyExists` if the national id hash is
    /// taken; replays an earlier identical request with the same request id.
    async fn create(&self, new: NewParticipant) -> Result<Committed, Error>;

    /// Reads the current record, checks the etag, applies the mutator and
    /// stores the result as the next version.
    async fn mutate(&self, mutation: Mutation) -> Result<Committed, Error>;

    async fn get(&self, id: &str) -> Result<Option<Participant>, Error>;

    async fn get_by_national_id_hash(&self, hash: &[u8]) -> Result<Option<Participant>, Error>;

    async fn list(&self, query: ListQuery) -> Result<ListPage, Error>;
}

/// Every version of every participant, in commit order or per participant.
#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait ChangeLog: Send + Sync + 'static {
    /// Change log entries after `after`, in cursor order, as far as no
    /// change still uncommitted could come before them.
    async fn changes(&self, after: ChangeCursor, limit: usize) -> Result<Vec<ChangeRecord>, Error>;

    /// Change log entries ordered by participant id, then version, after
    /// `after` (the participant id and version of the last entry of the
    /// previous page). Every version of one participant comes together, so
    /// a reader can fold one participant's history at a time (reporting).
    async fn histories(&self, after: Option<(String, i64)>, limit: usize) -> Result<Vec<ChangeRecord>, Error>;
}

/// Outbound work: which target must reach which version of whom.
#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait SyncQueue: Send + Sync + 'static {
    /// Leases up to `limit` due sync tasks for `lease`; a task leased and not
    /// finished in time becomes due again.
    async fn claim_sync(&self, limit: usize, lease: std::time::Duration) -> Result<Vec<SyncTask>, Error>;

    /// Extends the lease of a claimed task whose delivery is still running;
    /// false when this instance no longer holds it (it ran out and another
    /// took it over, or it was settled).
    async fn renew_sync(&self, task: &SyncTask, lease: std::time::Duration) -> Result<bool, Error>;

    /// Records how a claimed task went, and audits the attempt. Where
    /// instances share the queue, only the holder of the lease settles the
    /// row: an attempt whose lease another instance took over is audited,
    /// and changes nothing.
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
}

/// Inbound work: changes other systems published, kept until applied.
#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Where `source`'s feed was read up to.
    async fn inbound_cursor(&self, source: &str) -> Result<Option<String>, Error>;

    /// Claims (or keeps) the reading of `source`'s feed for this instance
    /// for `lease`: true when this instance is its one reader now. A reader
    /// that stops renewing loses it to another instance when the lease
    /// runs out.
    async fn claim_feed(&self, source: &str, lease: std::time::Duration) -> Result<bool, Error>;

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
}

/// The append-only, hash-chained record of who read or changed whom.
#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends entries to the audit log; answers once they are committed.
    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), Error>;

    /// Audit entries matching `query`, in sequence order.
    async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, Error>;
}

/// Work on the store as a whole.
#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Re-encrypts under the active key every national id stored under
    /// another key, `batch` per transaction, oldest first. After each batch
    /// `progress(done, total)` is told how far it got; `Break` stops there.
    /// Each batch commits on its own, so an interrupted rotation keeps what
    /// it did and the next one carries on; with nothing left to do it
    /// changes nothing. Runs beside a serving gateway.
    async fn rotate_keys(&self, batch: usize, progress: RotationProgress) -> Result<Rotation, Error>;

    /// Writes and commits so far.
    fn write_stats(&self) -> WriteStats;

    /// Finishes pending writes and releases the database.
    async fn close(&self);
}

/// Every role: what the composition root opens and hands out piece by piece.
pub trait Store: Participants + ChangeLog + SyncQueue + Inbox + AuditLog + Maintenance {}

impl<T: Participants + ChangeLog + SyncQueue + Inbox + AuditLog + Maintenance> Store for T {}

/// `participants/{id}` from an id.
pub fn resource_name(id: &str) -> String {
    format!("participants/{id}")
}

/// The etag of a version.
pub fn etag_for(version: i64) -> String {
    format!("W/\"{version}\"")
}

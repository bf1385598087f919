//! The store's own error: what went wrong below the rules, in terms a
//! caller can act on. Each dialect maps its driver's errors into it in one
//! place (`sqlite::connection` for SQLite); the gateway's [`Error`] is made
//! from it in one place, here.

use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A rule refused the write, or the store answers with a fact the API
    /// passes on as it is (not found, stale etag, already exists, ...).
    #[error(transparent)]
    Refused(#[from] Error),
    /// The database is busy, full, unreachable or failed an I/O: a retry
    /// later may succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint refused a row that the rules did not expect
    /// to exist: two writers raced for the same key.
    #[error("a concurrent write took the same key ({0})")]
    Conflict(String),
    /// Anything else: a bug, or a database changed outside the gateway.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(e) => e,
            StoreError::Unavailable(m) => Error::Unavailable(m),
            // A dialect that lets writers race turns its conflicts into the
            // rules' answers (a replay, ALREADY_EXISTS) before they get
            // here; one that reaches the caller is a bug.
            StoreError::Conflict(m) => Error::Internal(m),
            StoreError::Internal(m) => Error::Internal(m),
        }
    }
}

impl StoreError {
    /// The same failure as UNAVAILABLE: used when a batch that did not
    /// commit answers the writes that were fine on their own.
    pub(crate) fn unavailable(e: &StoreError) -> Error {
        match e {
            StoreError::Unavailable(m) => Error::Unavailable(m.clone()),
            StoreError::Refused(Error::Unavailable(m)) => Error::Unavailable(m.clone()),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<crate::crypto::CryptoError> for StoreError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        Self::Refused(e.into())
    }
}

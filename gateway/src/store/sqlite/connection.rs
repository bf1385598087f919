//! Connections to the SQLite file, and SQLite's errors in the store's terms.

use crate::{
    error::Error,
    store::{StoreError, error::Result},
};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// The one place SQLite's errors are read: what a retry may fix is
/// unavailable, a constraint that refused a row is a conflict, the rest is
/// a bug.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked | DiskFull | CannotOpen | SystemIoFailure | OutOfMemory) => {
                Self::Unavailable(e.to_string())
            }
            Some(ConstraintViolation) if e.to_string().contains("UNIQUE") => Self::Conflict(e.to_string()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

/// Opens a connection to the database at `path`: a writer (creating the
/// file, in WAL mode) or a reader.
pub(super) fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot open database {}: {e}; check that the data directory is writable",
            path.display()
        ))
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!("database refused WAL mode (got {mode})")));
        }
    }
    // FULL: a commit is on disk before the caller is answered.
    // secure_delete: deleted or rewritten content is overwritten with zeros
    // instead of lingering in free space, so that what the gateway removes
    // (the plaintext national ids a migration sets aside, ciphertext under a
    // retired key after rotation) cannot be read back from the file. Deletes
    // are rare here, so the extra writes cost little.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;")?;
    Ok(conn)
}

/// Runs one write in its own savepoint. The inner result is the write's own
/// outcome (an error rolls back this write only); the outer error means the
/// transaction itself can no longer be trusted.
pub(super) fn in_savepoint<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&rusqlite::Savepoint<'_>) -> Result<T>,
) -> Result<std::result::Result<T, Error>> {
    let mut sp = tx.savepoint()?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&sp))).unwrap_or_else(|_| {
        Err(Error::Internal("a write panicked; it was rolled back and the writer carries on".into()).into())
    });
    match result {
        Ok(value) => {
            sp.commit()?;
            Ok(Ok(value))
        }
        Err(e) => {
            // ROLLBACK TO, then RELEASE: the savepoint's changes are undone.
            sp.rollback()?;
            sp.commit()?;
            Ok(Err(e.into()))
        }
    }
}

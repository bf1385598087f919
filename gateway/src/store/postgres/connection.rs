//! Connections to PostgreSQL, and PostgreSQL's errors in the store's terms.

use crate::store::{StoreError, error::Result};
use tokio_postgres::{Client, NoTls, error::SqlState};

/// The one place PostgreSQL's errors are read: a unique violation is a
/// conflict (two writers raced for one key), what a retry may fix is
/// unavailable, the rest is a bug. Only the server's message is kept, never
/// its detail, which can quote the values of a row.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // No answer from the server: the connection failed or closed.
            return Self::Unavailable(format!("the database connection failed: {e}"));
        };
        let message = format!("{} ({})", db.message(), db.code().code());
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return Self::Conflict(message);
        }
        let retry = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::DISK_FULL,
            SqlState::OUT_OF_MEMORY,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
        ];
        if retry.contains(code) { Self::Unavailable(message) } else { Self::Internal(message) }
    }
}

/// Connects to the database at `url` (`postgres://user@host:port/database`)
/// and drives the connection in the background until the client is dropped.
pub(crate) async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL: {e}; check the database URL and that the server answers"
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "a PostgreSQL connection ended with an error");
        }
    });
    Ok(client)
}

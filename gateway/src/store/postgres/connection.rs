//! Connections to PostgreSQL, and PostgreSQL's errors in the store's terms.

use crate::store::{StoreError, error::Result};
use std::{collections::HashMap, sync::Mutex};
use tokio_postgres::{Client, GenericClient, NoTls, Row, Statement, error::SqlState, types::ToSql};

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

/// Connects to the database at `url` for its notifications: they arrive
/// on the receiver until the connection ends.
pub(crate) async fn connect_with_messages(
    url: &str,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>)> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(message) => {
                    if tx.send(message).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a listening connection ended");
                    return;
                }
            }
        }
    });
    Ok((client, rx))
}

/// A few connections several tasks share: a task takes one for a
/// transaction and gives it back when done. A connection that broke is
/// dropped instead of given back, and the next task connects anew.
pub(crate) struct Pool {
    url: String,
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection the pool may hold open at once.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A connection taken from the pool; given back on drop.
pub(crate) struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Pool {
    pub(crate) fn new(url: &str, size: usize) -> Self {
        Self {
            url: url.to_owned(),
            idle: Mutex::new(Vec::new()),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(size.max(1))),
        }
    }

    /// A connection: an idle one, or a new one while the pool is below its
    /// size; otherwise waits for one to be given back.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>> {
        let permit = std::sync::Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        let idle = {
            let mut idle = self.idle.lock().expect("pool lock");
            std::iter::from_fn(|| idle.pop()).find(|c| !c.client.is_closed())
        };
        let conn = match idle {
            Some(conn) => conn,
            None => Conn { client: connect(&self.url).await?, statements: Statements::default() },
        };
        Ok(Pooled { conn: Some(conn), pool: self, _permit: permit })
    }

    /// Closes the idle connections and lets no task take another.
    pub(crate) fn close(&self) {
        self.permits.close();
        self.idle.lock().expect("pool lock").clear();
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("held until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("held until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take().filter(|c| !c.client.is_closed()) {
            self.pool.idle.lock().expect("pool lock").push(conn);
        }
    }
}

/// The statements a connection has prepared, by their text: each is
/// parsed once per connection, then only bound and run.
#[derive(Default)]
pub(crate) struct Statements(Mutex<HashMap<&'static str, Statement>>);

/// A pooled connection and what it has prepared.
pub(crate) struct Conn {
    pub client: Client,
    pub statements: Statements,
}

impl Conn {
    /// Statements outside a transaction (reads, and writes that stand alone).
    pub(crate) fn db(&self) -> Db<'_, Client> {
        Db { client: &self.client, statements: &self.statements }
    }
}

/// Runs statements on a connection or in a transaction of it, each
/// prepared once per connection.
pub(crate) struct Db<'a, C> {
    pub client: &'a C,
    pub statements: &'a Statements,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<C: GenericClient + Sync> Db<'_, C> {
    async fn prepared(&self, sql: &'static str) -> Result<Statement> {
        let known = self.statements.0.lock().expect("statement cache lock").get(sql).cloned();
        if let Some(statement) = known {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.0.lock().expect("statement cache lock").insert(sql, statement.clone());
        Ok(statement)
    }

    pub(crate) async fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let statement = self.prepared(sql).await?;
        Ok(self.client.query(&statement, params).await?)
    }

    pub(crate) async fn query_opt(&self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let statement = self.prepared(sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    pub(crate) async fn query_one(&self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        let statement = self.prepared(sql).await?;
        Ok(self.client.query_one(&statement, params).await?)
    }

    pub(crate) async fn execute(&self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        let statement = self.prepared(sql).await?;
        Ok(self.client.execute(&statement, params).await?)
    }
}

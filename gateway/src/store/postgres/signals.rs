//! Wake-ups between instances. A commit here wakes this instance's
//! dispatcher and change readers at once and is announced to the others
//! with `NOTIFY`; every instance `LISTEN`s on a connection of its own and
//! wakes its own. Polling stays as the fallback for a lost connection.

use super::connection::{Pool, connect_with_messages};
use crate::store::ChangeSignal;
use std::{sync::Arc, time::Duration};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_postgres::AsyncMessage;

/// The channel every instance listens on.
const CHANNEL: &str = "hurtigspor_changes";

pub(super) struct Signals {
    /// This instance, so that it does not wake itself twice.
    instance: String,
    /// This instance's dispatcher.
    wake: Arc<Notify>,
    /// This instance's change readers (WatchChanges).
    changes: ChangeSignal,
    /// Commits here not yet announced to the others.
    announce: Notify,
    /// Audit entries appended here, for the chainer.
    pub(super) audited: Notify,
}

impl Signals {
    pub(super) fn new(instance: String, wake: Arc<Notify>, changes: ChangeSignal) -> Self {
        Self { instance, wake, changes, announce: Notify::new(), audited: Notify::new() }
    }

    /// A participant version committed here.
    pub(super) fn changed(&self) {
        self.heard();
        self.announce.notify_one();
    }

    /// A participant version committed here or on another instance.
    fn heard(&self) {
        self.wake.notify_one();
        self.changes.notify();
    }
}

/// Announces this instance's commits to the others: one `NOTIFY` for
/// every burst of commits, off the commit path.
pub(super) fn announce(pool: Arc<Pool>, signals: Arc<Signals>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            signals.announce.notified().await;
            let sent = async {
                let conn = pool.get().await?;
                conn.db().execute("SELECT pg_notify('hurtigspor_changes', $1)", &[&signals.instance]).await
            }
            .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "a commit could not be announced; the other instances poll");
            }
        }
    })
}

/// Listens for the other instances' commits, reconnecting after a lost
/// connection.
pub(super) fn listen(url: String, signals: Arc<Signals>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listen_once(&url, &signals).await {
                Ok(()) => tracing::debug!("the wake-up connection closed; reconnecting"),
                Err(e) => {
                    tracing::warn!(error = %e, "no wake-ups from other instances; reconnecting (they are polled meanwhile)")
                }
            }
            // What was missed meanwhile is found by polling; a wake-up now
            // makes up for any lost notification.
            signals.heard();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn listen_once(url: &str, signals: &Signals) -> crate::store::error::Result<()> {
    let (client, mut messages) = connect_with_messages(url).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    while let Some(message) = messages.recv().await {
        if let AsyncMessage::Notification(n) = message
            && n.payload() != signals.instance
        {
            signals.heard();
        }
    }
    Ok(())
}

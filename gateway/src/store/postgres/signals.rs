//! Wake-ups between instances. A commit here wakes this instance's
//! dispatcher and change readers at once and is announced to the others
//! with `NOTIFY`; every instance `LISTEN`s on a connection of its own and
//! wakes its own. Polling stays as the fallback for a lost connection.

use super::connection::{Pool, connect_with_messages};
use crate::store::ChangeSignal;
use std::{sync::Arc, time::Duration};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_postgres::AsyncMessage;

/// The channel every instance listens on; a notification's payload is
/// `<kind>:<instance>`.
const CHANNEL: &str = "hurtigspor_changes";
/// A participant version committed.
const CHANGE: &str = "change";
/// Changes were received into the inbox.
const INBOX: &str = "inbox";

pub(super) struct Signals {
    /// This instance, so that it does not wake itself twice.
    instance: String,
    /// This instance's dispatcher.
    wake: Arc<Notify>,
    /// This instance's change readers (WatchChanges).
    changes: ChangeSignal,
    /// This instance's feed readers.
    inbox: ChangeSignal,
    /// Commits here not yet announced to the others.
    announce: Notify,
    /// Inbox arrivals here not yet announced to the others.
    announce_inbox: Notify,
    /// Audit entries appended here, for the chainer.
    pub(super) audited: Notify,
}

impl Signals {
    pub(super) fn new(instance: String, wake: Arc<Notify>, changes: ChangeSignal, inbox: ChangeSignal) -> Self {
        Self {
            instance,
            wake,
            changes,
            inbox,
            announce: Notify::new(),
            announce_inbox: Notify::new(),
            audited: Notify::new(),
        }
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

    /// Changes received into the inbox here (a webhook on an instance that
    /// may not read the feed): the feed's reader, wherever it is, ingests.
    pub(super) fn received(&self) {
        self.inbox.notify();
        self.announce_inbox.notify_one();
    }
}

/// Announces this instance's commits to the others: one `NOTIFY` for
/// every burst of commits, off the commit path.
pub(super) fn announce(pool: Arc<Pool>, signals: Arc<Signals>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let kind = tokio::select! {
                () = signals.announce.notified() => CHANGE,
                () = signals.announce_inbox.notified() => INBOX,
            };
            let payload = format!("{kind}:{}", signals.instance);
            let sent = async {
                let conn = pool.get().await?;
                conn.db().execute("SELECT pg_notify('hurtigspor_changes', $1)", &[&payload]).await
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
            signals.inbox.notify();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn listen_once(url: &str, signals: &Signals) -> crate::store::error::Result<()> {
    let (client, mut messages) = connect_with_messages(url).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    while let Some(message) = messages.recv().await {
        let AsyncMessage::Notification(n) = message else { continue };
        let Some((kind, from)) = n.payload().split_once(':') else { continue };
        if from == signals.instance {
            continue;
        }
        if kind == INBOX {
            signals.inbox.notify();
        } else {
            signals.heard();
        }
    }
    Ok(())
}

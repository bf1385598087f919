//! Inbound sync: what Arena and NOKUT change comes back into the canonical
//! record, only in the fields each owns (DESIGN.md section 6).
//!
//! Each source is read from a persisted position into the inbox; an entry is
//! kept before it is handled, so nothing read is lost. An ingester takes due
//! entries in feed order and settles each one: handled (applied, or already
//! held), ignored (with the reason), retry (a passing failure, with backoff)
//! or failed (needs a fix, then re-ingest). Applying and settling commit
//! together, and a change older than one already applied to the same Arena
//! participation or NOKUT case is superseded, so a re-ingest or a repeat
//! never rolls a record back. Echoes of the gateway's own writes change
//! nothing and store no new version.

pub mod arena;
pub mod nokut;

use crate::{
    store::{Inbox, InboxItem, Settle, Settled},
    sync::RetryPolicy,
};
use hurtigspor_adapters::TargetError;
use std::{future::Future, sync::Arc, time::Duration};
use tokio::sync::{Notify, watch};

/// Entries taken per round.
const BATCH: usize = 100;

/// One source's ingest loop: read the feed, then handle what is due.
pub(crate) trait Source: Send + Sync + 'static {
    /// `arena` or `nokut`.
    fn name(&self) -> &'static str;

    /// Reads new changes into the inbox; returns how many were new.
    fn fetch(&self) -> impl Future<Output = Result<usize, TargetError>> + Send;

    /// Decides what one entry means. A transient error retries it.
    fn handle(&self, item: &InboxItem) -> impl Future<Output = Result<Settle, TargetError>> + Send;
}

/// How long an instance holds a feed after its last renewal: past it,
/// another instance takes the feed over.
pub(crate) fn feed_lease(poll: Duration) -> Duration {
    (poll * 4).max(Duration::from_secs(5))
}

/// Runs a source until `stop`: on every `poll` tick, `wake` or change
/// `received` into the inbox, claims the feed (one instance reads each feed; the others stand by), then reads it
/// and ingests what is due.
pub(crate) async fn run<S: Source>(
    source: Arc<S>,
    store: Arc<dyn Inbox>,
    policy: RetryPolicy,
    poll: Duration,
    wake: Arc<Notify>,
    mut received: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let name = source.name();
    let lease = feed_lease(poll);
    let mut reading = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match store.claim_feed(name, lease).await {
            Ok(mine) => {
                if mine != reading {
                    if mine {
                        tracing::info!(source = name, "this instance reads the feed now");
                    } else {
                        tracing::info!(source = name, "another instance reads the feed now; standing by");
                    }
                    reading = mine;
                }
            }
            Err(e) => {
                tracing::warn!(source = name, error = %e, "cannot claim the feed; trying again at the next poll");
                reading = false;
            }
        }
        if reading {
            let work = async {
                match source.fetch().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(source = name, changes = n, "received changes"),
                    Err(e) => {
                        tracing::warn!(source = name, error = %e, "cannot read the change feed; trying again at the next poll")
                    }
                }
                ingest_due(&*source, &*store, &policy).await;
            };
            // A long round keeps the feed: the claim is renewed while it
            // runs, and a round whose claim was lost stops (what it settled
            // is kept; the new reader carries on from there).
            let keep = async {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match store.claim_feed(name, lease).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => tracing::warn!(source = name, error = %e, "cannot renew the claim on the feed"),
                    }
                }
            };
            tokio::select! {
                () = work => {}
                () = keep => {
                    tracing::warn!(source = name, "another instance took the feed over during a round; this one stops reading");
                    reading = false;
                }
                _ = stop.changed() => return,
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            // Kept in the inbox by any instance (a webhook): ingest now.
            Ok(()) = received.changed() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Handles every due entry, in feed order, until none is left.
pub(crate) async fn ingest_due<S: Source>(source: &S, store: &dyn Inbox, policy: &RetryPolicy) {
    let name = source.name();
    loop {
        let due = match store.due_inbound(name, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(source = name, error = %e, "cannot read the inbox");
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        let mut progressed = false;
        for item in &due {
            let outcome = match source.handle(item).await {
                Ok(settle) => settle,
                Err(e) => retry(item, e, policy),
            };
            let settled = match store.settle_inbound(name, &item.position, outcome).await {
                Ok(s) => s,
                // The database is away: try the whole round again later.
                Err(e @ crate::error::Error::Unavailable(_)) => {
                    tracing::warn!(source = name, error = %e, "cannot settle an inbox entry; it is tried again");
                    return;
                }
                // Something went wrong with this entry alone: it counts as
                // an attempt, so the source does not stall on it.
                Err(e @ crate::error::Error::Internal(_)) => {
                    let again = retry(item, TargetError::Transient(e.to_string()), policy);
                    store.settle_inbound(name, &item.position, again).await.unwrap_or(Settled::Gone)
                }
                // The record refused the change (it no longer fits): that
                // is for a person to look at.
                Err(e) => {
                    let fail = Settle::Fail { error: format!("the record refused the change: {e}") };
                    store.settle_inbound(name, &item.position, fail).await.unwrap_or(Settled::Gone)
                }
            };
            progressed |= !matches!(settled, Settled::Retry);
            match settled {
                Settled::Failed => tracing::warn!(
                    source = name, position = %item.position,
                    "an inbound change failed; fix the cause, then re-ingest it with SyncService.ReingestInboundChanges"
                ),
                Settled::Handled(Some(version)) => tracing::info!(
                    source = name, position = %item.position, version, "applied an inbound change"
                ),
                _ => {}
            }
        }
        // Entries waiting for a retry are left for a later round.
        if !progressed || due.len() < BATCH {
            return;
        }
    }
}

fn retry(item: &InboxItem, error: TargetError, policy: &RetryPolicy) -> Settle {
    if let TargetError::Permanent(reason) = error {
        return Settle::Fail { error: reason };
    }
    // A source that asks us to wait is waited for (within the cap).
    let asked = match &error {
        TargetError::RetryAfter(wait) => *wait,
        _ => std::time::Duration::ZERO,
    };
    let error = error.to_string();
    if item.attempts + 1 >= policy.max_attempts {
        return Settle::Fail { error: format!("gave up after {} attempts: {error}", item.attempts + 1) };
    }
    let delay = policy.delay(item.attempts).max(asked.min(policy.max_delay));
    Settle::Retry { error, at: policy.after(delay) }
}

/// The gateway's own database failing is a passing failure of the feed.
pub(crate) fn store_error(e: crate::error::Error) -> TargetError {
    TargetError::Transient(format!("the gateway's database: {e}"))
}

/// A 20-digit position, so that text order is feed order.
pub(crate) fn padded(position: u64) -> String {
    format!("{position:020}")
}

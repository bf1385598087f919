//! `hurtigspor.v1.SyncService`.

use super::parse_name;
use crate::{
    error::Error,
    store::{ChangeRecord, Store, resource_name},
};
use hurtigspor_proto::v1::{
    ChangeEvent, FailedDelivery, GetSyncStatusRequest, ListFailedDeliveriesRequest, ListFailedDeliveriesResponse,
    RetryDeliveriesRequest, RetryDeliveriesResponse, SyncState, SyncStatus, TargetSyncStatus, WatchChangesRequest,
    sync_service_server::SyncService,
};
use std::{pin::Pin, sync::Arc, time::Duration};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// How many changes one read of the log takes.
const PAGE: usize = 100;
/// How often a caught-up stream looks for new changes.
const POLL: Duration = Duration::from_millis(100);

pub struct SyncApi {
    store: Arc<dyn Store>,
}

impl SyncApi {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn state(s: &str) -> SyncState {
    match s {
        "pending" => SyncState::Pending,
        "delivered" => SyncState::Delivered,
        "failed" => SyncState::Failed,
        _ => SyncState::Unspecified,
    }
}

fn parse_cursor(cursor: &str) -> Result<i64, Error> {
    if cursor.is_empty() {
        return Ok(0);
    }
    cursor.parse::<i64>().ok().filter(|c| *c >= 0).ok_or_else(|| {
        Error::invalid(
            "cursor",
            "INVALID_CURSOR",
            "is not a cursor from a ChangeEvent; send an event's cursor, or none to start from the beginning",
        )
    })
}

fn event(c: ChangeRecord) -> ChangeEvent {
    let mut participant = c.snapshot;
    participant.national_id.clear();
    ChangeEvent {
        cursor: c.sequence.to_string(),
        name: resource_name(&c.participant_id),
        version: c.version,
        kind: c.kind,
        origin: c.origin,
        participant: Some(participant),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ChangeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SyncService for SyncApi {
    async fn get_sync_status(&self, request: Request<GetSyncStatusRequest>) -> Result<Response<SyncStatus>, Status> {
        let id = parse_name(&request.get_ref().name, "name")?;
        if self.store.get(&id).await?.is_none() {
            return Err(Error::not_found(resource_name(&id)).into());
        }
        let targets = self
            .store
            .sync_status(&id)
            .await?
            .into_iter()
            .map(|s| TargetSyncStatus {
                target: s.target,
                desired_version: s.desired_version,
                delivered_version: s.delivered_version,
                state: state(&s.state) as i32,
                last_error: s.last_error.unwrap_or_default(),
                attempts: s.attempts as i32,
            })
            .collect();
        Ok(Response::new(SyncStatus { name: resource_name(&id), targets }))
    }

    async fn list_failed_deliveries(
        &self,
        request: Request<ListFailedDeliveriesRequest>,
    ) -> Result<Response<ListFailedDeliveriesResponse>, Status> {
        let size = request.get_ref().page_size;
        if size < 0 {
            return Err(Error::invalid("page_size", "OUT_OF_RANGE", "must not be negative").into());
        }
        let limit = if size == 0 { 50 } else { size.min(500) } as usize;
        let deliveries = self
            .store
            .failed_syncs(limit)
            .await?
            .into_iter()
            .map(|s| FailedDelivery {
                name: resource_name(&s.participant_id),
                target: s.target,
                desired_version: s.desired_version,
                delivered_version: s.delivered_version,
                reason: s.last_error.unwrap_or_default(),
                attempts: s.attempts as i32,
            })
            .collect();
        Ok(Response::new(ListFailedDeliveriesResponse { deliveries }))
    }

    async fn retry_deliveries(
        &self,
        request: Request<RetryDeliveriesRequest>,
    ) -> Result<Response<RetryDeliveriesResponse>, Status> {
        let name = &request.get_ref().name;
        let id = if name.is_empty() { None } else { Some(parse_name(name, "name")?) };
        let retried = self.store.retry_failed_syncs(id.clone()).await?;
        tracing::info!(participant = ?id, retried, "failed deliveries made due again");
        Ok(Response::new(RetryDeliveriesResponse { retried: retried as i32 }))
    }

    type WatchChangesStream = EventStream;

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let mut after = parse_cursor(&request.get_ref().cursor)?;
        let store = Arc::clone(&self.store);
        let (tx, rx) = tokio::sync::mpsc::channel(PAGE);
        tokio::spawn(async move {
            loop {
                let page = match store.changes(after, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let caught_up = page.len() < PAGE;
                for change in page {
                    after = change.sequence;
                    if tx.send(Ok(event(change))).await.is_err() {
                        return; // the client went away
                    }
                }
                if caught_up {
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor("").unwrap(), 0);
        assert_eq!(parse_cursor("42").unwrap(), 42);
        for bad in ["-1", "abc", "1.5"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}

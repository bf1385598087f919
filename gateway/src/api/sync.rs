//! `hurtigspor.v1.SyncService`.

use super::{RequestAudit, begin, parse_name};
use crate::{
    audit::{parse_purpose, require_purpose},
    auth::{Scope, administrator, caller},
    error::Error,
    store::{ChangeCursor, ChangeRecord, ChangeSignal, InboxFilter, InboxItem, Store, resource_name},
};
use hurtigspor_proto::v1::{
    ChangeEvent, FailedDelivery, GetSyncStatusRequest, InboundChange, InboundStatus, ListFailedDeliveriesRequest,
    ListFailedDeliveriesResponse, ListInboundChangesRequest, ListInboundChangesResponse, ReingestInboundChangesRequest,
    ReingestInboundChangesResponse, RetryDeliveriesRequest, RetryDeliveriesResponse, SyncState, SyncStatus,
    TargetSyncStatus, WatchChangesRequest, sync_service_server::SyncService,
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
    /// Changed whenever a change commits: streams that caught up wait on it.
    changes: ChangeSignal,
    max_streams: u32,
    /// Open `WatchChanges` streams per client organisation.
    streams: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
}

impl SyncApi {
    pub fn new(store: Arc<dyn Store>, changes: ChangeSignal, max_streams_per_client: u32) -> Self {
        Self { store, changes, max_streams: max_streams_per_client, streams: Arc::default() }
    }

    /// Counts a new stream for `client`, or refuses it over the cap.
    fn open_stream(&self, client: &str) -> Result<StreamSlot, Error> {
        let mut open = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(client.to_owned()).or_default();
        if *n >= self.max_streams {
            return Err(Error::ResourceExhausted {
                reason: "TOO_MANY_STREAMS",
                message: format!(
                    "this client already holds {} WatchChanges streams; close one, or resume one with its last cursor",
                    self.max_streams
                ),
                retry_after: Duration::from_secs(1),
            });
        }
        *n += 1;
        Ok(StreamSlot { streams: Arc::clone(&self.streams), client: client.to_owned() })
    }
}

/// One open stream; gives its place back when the stream ends.
struct StreamSlot {
    streams: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    client: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
        }
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

fn parse_cursor(cursor: &str) -> Result<ChangeCursor, Error> {
    if cursor.is_empty() {
        return Ok(ChangeCursor::default());
    }
    cursor.parse::<ChangeCursor>().map_err(|()| {
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
        cursor: c.cursor.to_string(),
        name: resource_name(&c.participant_id),
        version: c.version,
        kind: c.kind,
        origin: c.origin,
        participant: Some(participant),
    }
}

const WATCH: &str = "SyncService/WatchChanges";

type EventStream = Pin<Box<dyn Stream<Item = Result<ChangeEvent, Status>> + Send>>;

impl SyncApi {
    /// An operator's call under its audit entry: the administrator check,
    /// the purpose (required when the call shows participants: `reads`),
    /// the participant it names, and those its answer shows.
    async fn operated<Q, R, F>(
        &self,
        request: Request<Q>,
        method: &'static str,
        reads: bool,
        named: Option<String>,
        body: impl FnOnce(Request<Q>) -> F,
        shown: impl FnOnce(&R) -> Vec<String>,
    ) -> Result<Response<R>, Status>
    where
        F: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        let (_, mut audit) = begin(&*self.store, &request, method, administrator).await?;
        if let Some(id) = named.and_then(|n| parse_name(&n, "name").ok()) {
            audit.about(&id);
        }
        let purpose =
            if reads { require_purpose(request.metadata()).map(Some) } else { parse_purpose(request.metadata()) };
        let result = match purpose {
            Ok(purpose) => {
                audit.purpose(purpose);
                body(request).await
            }
            Err(e) => Err(e.into()),
        };
        if let Ok(r) = &result {
            for name in shown(r.get_ref()).iter().filter(|n| !n.is_empty()) {
                audit.about(name.trim_start_matches("participants/"));
            }
        }
        audit.finish_status(&*self.store, result).await
    }

    async fn list_failed_deliveries_unaudited(
        &self,
        request: Request<ListFailedDeliveriesRequest>,
    ) -> Result<Response<ListFailedDeliveriesResponse>, Status> {
        let req = request.into_inner();
        if req.page_size < 0 {
            return Err(Error::invalid("page_size", "OUT_OF_RANGE", "must not be negative").into());
        }
        let limit = if req.page_size == 0 { 50 } else { req.page_size.min(500) } as usize;
        let after = parse_failed_token(&req.page_token)?;
        let mut rows = self.store.failed_syncs(after, limit + 1).await?;
        let next_page_token = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|s| format!("{}|{}|{}", s.update_time, s.target, s.participant_id)).unwrap_or_default()
        } else {
            String::new()
        };
        let deliveries = rows
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
        Ok(Response::new(ListFailedDeliveriesResponse { deliveries, next_page_token }))
    }

    async fn retry_deliveries_unaudited(
        &self,
        request: Request<RetryDeliveriesRequest>,
    ) -> Result<Response<RetryDeliveriesResponse>, Status> {
        let name = &request.get_ref().name;
        let id = if name.is_empty() { None } else { Some(parse_name(name, "name")?) };
        let retried = self.store.retry_failed_syncs(id.clone()).await?;
        tracing::info!(participant = ?id, retried, "failed deliveries made due again");
        Ok(Response::new(RetryDeliveriesResponse { retried: retried as i32 }))
    }

    async fn list_inbound_changes_unaudited(
        &self,
        request: Request<ListInboundChangesRequest>,
    ) -> Result<Response<ListInboundChangesResponse>, Status> {
        let req = request.into_inner();
        let source = parse_source(&req.source, false)?;
        let status = match InboundStatus::try_from(req.status) {
            Ok(InboundStatus::Unspecified) => None,
            Ok(s) => Some(status_text(s).to_owned()),
            Err(_) => return Err(Error::invalid("status", "UNKNOWN_ENUM_VALUE", "is not an InboundStatus").into()),
        };
        if req.page_size < 0 {
            return Err(Error::invalid("page_size", "OUT_OF_RANGE", "must not be negative").into());
        }
        let limit = if req.page_size == 0 { 50 } else { req.page_size.min(500) } as usize;
        let after = parse_inbound_token(&req.page_token)?;
        let filter = InboxFilter { source, status, after, limit: limit + 1 };
        let mut items = self.store.list_inbound(filter).await?;
        let next_page_token = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|i| format!("{}/{}", i.source, i.position)).unwrap_or_default()
        } else {
            String::new()
        };
        let changes = items.into_iter().map(inbound_change).collect();
        Ok(Response::new(ListInboundChangesResponse { changes, next_page_token }))
    }

    async fn reingest_inbound_changes_unaudited(
        &self,
        request: Request<ReingestInboundChangesRequest>,
    ) -> Result<Response<ReingestInboundChangesResponse>, Status> {
        let req = request.into_inner();
        let position = req.position.trim();
        let source = parse_source(&req.source, !position.is_empty())?;
        let position = if position.is_empty() {
            None
        } else {
            Some(position.parse::<u64>().map(crate::inbound::padded).map_err(|_| {
                Error::invalid(
                    "position",
                    "INVALID_FORMAT",
                    "must be a change's position, as ListInboundChanges gives it",
                )
            })?)
        };
        let reingested = self.store.reingest_inbound(source.clone(), position.clone()).await?;
        if position.is_some() && reingested == 0 {
            return Err(
                Error::not_found(format!("inbound/{}/{}", source.unwrap_or_default(), req.position.trim())).into()
            );
        }
        tracing::info!(source = ?source, reingested, "inbound changes made due again");
        Ok(Response::new(ReingestInboundChangesResponse { reingested: reingested as i32 }))
    }
}

#[tonic::async_trait]
impl SyncService for SyncApi {
    async fn get_sync_status(&self, request: Request<GetSyncStatusRequest>) -> Result<Response<SyncStatus>, Status> {
        let (who, mut audit) =
            begin(&*self.store, &request, "SyncService/GetSyncStatus", |r| caller(r, Scope::ParticipantsRead)).await?;
        let result = async {
            let id = parse_name(&request.get_ref().name, "name")?;
            audit.about(&id);
            audit.purpose(Some(require_purpose(request.metadata())?));
            if !self.store.get(&id).await?.is_some_and(|p| who.sees(&p.kommunenummer)) {
                return Err(Error::not_found(resource_name(&id)));
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
            Ok(SyncStatus { name: resource_name(&id), targets })
        }
        .await;
        Ok(Response::new(audit.finish(&*self.store, result).await?))
    }

    async fn list_failed_deliveries(
        &self,
        request: Request<ListFailedDeliveriesRequest>,
    ) -> Result<Response<ListFailedDeliveriesResponse>, Status> {
        self.operated(
            request,
            "SyncService/ListFailedDeliveries",
            true,
            None,
            |r| self.list_failed_deliveries_unaudited(r),
            |r| r.deliveries.iter().map(|d| d.name.clone()).collect(),
        )
        .await
    }

    async fn retry_deliveries(
        &self,
        request: Request<RetryDeliveriesRequest>,
    ) -> Result<Response<RetryDeliveriesResponse>, Status> {
        let named = request.get_ref().name.clone();
        self.operated(
            request,
            "SyncService/RetryDeliveries",
            false,
            Some(named),
            |r| self.retry_deliveries_unaudited(r),
            |_| Vec::new(),
        )
        .await
    }

    async fn list_inbound_changes(
        &self,
        request: Request<ListInboundChangesRequest>,
    ) -> Result<Response<ListInboundChangesResponse>, Status> {
        self.operated(
            request,
            "SyncService/ListInboundChanges",
            true,
            None,
            |r| self.list_inbound_changes_unaudited(r),
            |r| r.changes.iter().map(|c| c.name.clone()).collect(),
        )
        .await
    }

    async fn reingest_inbound_changes(
        &self,
        request: Request<ReingestInboundChangesRequest>,
    ) -> Result<Response<ReingestInboundChangesResponse>, Status> {
        self.operated(
            request,
            "SyncService/ReingestInboundChanges",
            false,
            None,
            |r| self.reingest_inbound_changes_unaudited(r),
            |_| Vec::new(),
        )
        .await
    }

    type WatchChangesStream = EventStream;

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        // Opening the stream is audited; so is every page of changes sent.
        let (who, mut opening) = begin(&*self.store, &request, WATCH, |r| caller(r, Scope::ParticipantsRead)).await?;
        let opened = async {
            let purpose = require_purpose(request.metadata())?;
            opening.purpose(Some(purpose.clone()));
            let after = parse_cursor(&request.get_ref().cursor)?;
            let slot = self.open_stream(&who.organisation)?;
            Ok((purpose, after, slot))
        }
        .await;
        let (purpose, mut after, slot) = opening.finish(&*self.store, opened).await?;
        let store = Arc::clone(&self.store);
        // Subscribed before the first read: no commit after it goes unheard.
        let mut committed = self.changes.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(PAGE);
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let page = match store.changes(after, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                // A client that went away while catching up frees its slot now.
                if tx.is_closed() {
                    return;
                }
                let caught_up = page.len() < PAGE;
                let first = page.first().map_or(after, |c| c.cursor);
                if let Some(last) = page.last() {
                    after = last.cursor;
                }
                // A kommune's stream carries its own participants only.
                let visible: Vec<ChangeRecord> =
                    page.into_iter().filter(|c| who.sees(&c.snapshot.kommunenummer)).collect();
                // Each participant a page shows is audited before it is sent.
                let mut audit = RequestAudit::begin(&who, WATCH);
                audit.purpose(Some(purpose.clone()));
                let mut shown: Vec<&str> = visible.iter().map(|c| c.participant_id.as_str()).collect();
                shown.sort_unstable();
                shown.dedup();
                for id in shown {
                    audit.about(id);
                }
                if !visible.is_empty() {
                    let sent = Ok(format!("cursor {first} to {after}"));
                    if let Err(e) = audit.finish_with_detail(&*store, sent).await {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                for change in visible {
                    if tx.send(Ok(event(change))).await.is_err() {
                        return; // the client went away
                    }
                }
                if caught_up {
                    tokio::select! {
                        Ok(()) = committed.changed() => {}
                        _ = tokio::time::sleep(POLL) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

const SOURCES: [&str; 2] = ["arena", "nokut"];

fn parse_source(source: &str, required: bool) -> Result<Option<String>, Error> {
    match source.trim() {
        "" if !required => Ok(None),
        "" => Err(Error::invalid("source", "REQUIRED", "is required with a position: arena or nokut")),
        s if SOURCES.contains(&s) => Ok(Some(s.to_owned())),
        _ => Err(Error::invalid("source", "UNKNOWN_SOURCE", "must be arena or nokut")),
    }
}

fn parse_inbound_token(token: &str) -> Result<Option<(String, String)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .split_once('/')
        .filter(|(s, p)| SOURCES.contains(s) && p.len() == 20 && p.bytes().all(|b| b.is_ascii_digit()))
        .map(|(s, p)| Some((s.to_owned(), p.to_owned())))
        .ok_or_else(|| {
            Error::invalid("page_token", "INVALID_PAGE_TOKEN", "is not a next_page_token from ListInboundChanges")
        })
}

/// A failed-deliveries page token: `<update time>|<target>|<participant>`.
fn parse_failed_token(token: &str) -> Result<Option<(String, String, String)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let mut parts = token.splitn(3, '|');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(time), Some(target), Some(participant))
            if chrono::DateTime::parse_from_rfc3339(time).is_ok()
                && !target.is_empty()
                && participant.len() == 32
                && participant.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(Some((time.to_owned(), target.to_owned(), participant.to_owned())))
        }
        _ => Err(Error::invalid(
            "page_token",
            "INVALID_PAGE_TOKEN",
            "is not a next_page_token from ListFailedDeliveries",
        )),
    }
}

fn status_text(s: InboundStatus) -> &'static str {
    match s {
        InboundStatus::Unspecified => "",
        InboundStatus::New => "new",
        InboundStatus::Handled => "handled",
        InboundStatus::Retry => "retry",
        InboundStatus::Failed => "failed",
        InboundStatus::Ignored => "ignored",
    }
}

fn inbound_change(i: InboxItem) -> InboundChange {
    let status = [
        InboundStatus::New,
        InboundStatus::Handled,
        InboundStatus::Retry,
        InboundStatus::Failed,
        InboundStatus::Ignored,
    ]
    .into_iter()
    .find(|s| status_text(*s) == i.status)
    .unwrap_or(InboundStatus::Unspecified);
    let receive_time = chrono::DateTime::parse_from_rfc3339(&i.received_time)
        .ok()
        .map(|t| prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 });
    InboundChange {
        source: i.source,
        position: i.position,
        kind: i.kind,
        status: status as i32,
        attempts: i.attempts as i32,
        name: i.participant_id.as_deref().map(resource_name).unwrap_or_default(),
        note: i.note.unwrap_or_default(),
        receive_time,
        body: i.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_tokens_and_sources() {
        assert_eq!(parse_inbound_token("").unwrap(), None);
        let p = "0".repeat(19) + "7";
        assert_eq!(parse_inbound_token(&format!("arena/{p}")).unwrap(), Some(("arena".into(), p.clone())));
        for bad in ["arena", "nir/00000000000000000007", "arena/7", "arena/0000000000000000000x"] {
            assert!(parse_inbound_token(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_source("", false).unwrap(), None);
        assert!(parse_source("", true).is_err());
        assert!(parse_source("nir", false).is_err());
    }

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor("").unwrap(), ChangeCursor::default());
        assert_eq!(parse_cursor("42").unwrap(), ChangeCursor { transaction: 0, sequence: 42 });
        let late = ChangeCursor { transaction: 7031, sequence: 42 };
        assert_eq!(parse_cursor(&late.to_string()).unwrap(), late, "a cursor reads back as it was written");
        for bad in ["-1", "abc", "1.5", "7031-", "-42", "1-2-3", "7031--42"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}

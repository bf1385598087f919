//! The gateway's HTTP listener beside gRPC: NOKUT's webhooks come in here,
//! and Prometheus reads the targets' metrics from `/metrics`.
//!
//! A webhook is answered 202 only once its change is kept in the inbox, so
//! NOKUT's retry (or the gateway's polling) covers any failure before that.
//! Refusals say why without echoing anything from the request.

use crate::{
    inbound::nokut::{WebhookError, entry, verify_webhook},
    store::Inbox,
};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hurtigspor_adapters::nokut::CaseChange;
use std::sync::Arc;
use tokio::sync::Notify;

/// How far a webhook's timestamp may be from our clock, in seconds.
pub const WEBHOOK_WINDOW_SECS: i64 = 300;
/// Largest webhook body accepted.
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Inbox>,
    /// The time a webhook's timestamp is checked against.
    pub clock: crate::clock::Clock,
    /// NOKUT's webhook secret; without one, webhooks are refused.
    pub nokut_secret: Option<Arc<[u8]>>,
    /// Wakes the NOKUT ingester.
    pub nokut_wake: Arc<Notify>,
    /// The targets' metrics, served on `/metrics`.
    pub metrics: Arc<hurtigspor_adapters::resilience::Metrics>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/webhooks/nokut", post(nokut_webhook))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move {
                ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "application/json")], serde_json::json!({ "error": message }).to_string())
        .into_response()
}

async fn nokut_webhook(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &s.nokut_secret else {
        return refuse(StatusCode::NOT_FOUND, "NOKUT webhooks are not configured on this gateway");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = s.clock.now().timestamp();
    match verify_webhook(
        secret,
        header("x-nokut-timestamp"),
        header("x-nokut-signature"),
        &body,
        now,
        WEBHOOK_WINDOW_SECS,
    ) {
        Ok(()) => {}
        Err(e) => {
            tracing::warn!(reason = %e, "refused a NOKUT webhook");
            let status = if e == WebhookError::Missing { StatusCode::BAD_REQUEST } else { StatusCode::UNAUTHORIZED };
            return refuse(status, &e.to_string());
        }
    }
    let change: CaseChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "the body is not a NOKUT change"),
    };
    match s.store.receive_inbound("nokut", vec![entry(change)], None).await {
        Ok(_) => {
            s.nokut_wake.notify_one();
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a NOKUT webhook; NOKUT or polling brings it again");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "cannot keep the change now; send it again")
        }
    }
}

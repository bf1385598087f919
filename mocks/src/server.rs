//! Serving a mock: an accept loop that puts fault injection in front of the
//! mock's routes, plus the admin routes every mock shares.
//!
//! The loop is hyper's own (not `axum::serve`) so that a fault can close a
//! connection without any answer at all, before or after the write applied.

use crate::{
    clock::VirtualClock,
    effects::EffectLog,
    faults::{Fault, FaultRule, Faults},
};
use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderValue, Request, Response, StatusCode, header},
    routing::{delete, get, post},
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower::ServiceExt;

/// What every mock has: a clock, faults and an effect log.
#[derive(Clone)]
pub struct Common {
    pub clock: VirtualClock,
    pub faults: Arc<Faults>,
    pub effects: EffectLog,
}

impl Common {
    pub fn new(seed: u64) -> Self {
        let clock = VirtualClock::new();
        Self { faults: Arc::new(Faults::new(seed, clock.clone())), clock, effects: EffectLog::default() }
    }

    /// Forgets effects and faults and puts the clock back to real time.
    pub fn reset(&self) {
        self.effects.clear();
        self.faults.clear();
        self.clock.reset();
    }
}

/// What every mock system offers: its routes, its tables for inspection,
/// and a reset.
pub trait MockSystem: Clone + Send + Sync + 'static {
    fn common(&self) -> &Common;

    /// The system's own routes (admin routes are added by [`MockSystem::app`]).
    fn routes(&self) -> Router;

    /// Every table, as `/admin/state` shows it.
    fn state(&self) -> serde_json::Value;

    /// Forgets the tables.
    fn clear_tables(&self);

    /// Forgets everything: tables, effects, faults, clock offset.
    fn reset(&self) {
        self.clear_tables();
        self.common().reset();
    }

    /// The routes plus `/admin/state`, `/admin/reset` and the shared admin API.
    fn app(&self) -> Router {
        let inspect = Router::new()
            .route("/admin/state", get(|State(m): State<Self>| async move { Json(m.state()) }))
            .route(
                "/admin/reset",
                post(|State(m): State<Self>| async move {
                    m.reset();
                    StatusCode::NO_CONTENT
                }),
            )
            .with_state(self.clone());
        self.routes().merge(inspect).merge(admin_routes(self.common().clone()))
    }

    /// Serves the system on `addr` (port 0 picks a free port).
    fn spawn(&self, addr: &str) -> impl std::future::Future<Output = std::io::Result<RunningMock>> + Send {
        let (app, common, addr) = (self.app(), self.common().clone(), addr.to_owned());
        async move { serve(TcpListener::bind(addr).await?, app, common) }
    }
}

/// A mock serving on a port until stopped (or dropped).
pub struct RunningMock {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningMock {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes every open connection.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The connection was closed on purpose (a fault), with no answer.
#[derive(Debug, thiserror::Error)]
#[error("connection closed by fault injection")]
struct Dropped;

/// Serves `app` on `listener` with faults from `common` in front of it.
pub fn serve(listener: TcpListener, app: Router, common: Common) -> std::io::Result<RunningMock> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let (app, faults) = (app.clone(), common.faults.clone());
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(app.clone(), faults.clone(), req));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
    });
    Ok(RunningMock { addr, stop, task: Some(task) })
}

async fn handle(
    app: Router,
    faults: Arc<Faults>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Dropped> {
    let req = req.map(Body::new);
    let path = req.uri().path().to_owned();
    if path.starts_with("/admin") {
        return Ok(call(app, req).await);
    }
    let decision = faults.decide(req.method().as_str(), &path);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let Some(fault) = decision.fault else {
        return Ok(call(app, req).await);
    };
    tracing::debug!(?fault, %path, "injecting fault");
    match fault {
        Fault::Latency { .. } => Ok(call(app, req).await),
        Fault::Error { status } => {
            Ok(gateway_page(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)))
        }
        Fault::TooManyRequests { retry_after_secs } => {
            let mut r = gateway_page(StatusCode::TOO_MANY_REQUESTS);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            Ok(r)
        }
        Fault::Outage { .. } => Ok(gateway_page(StatusCode::SERVICE_UNAVAILABLE)),
        Fault::ResetConnection => Err(Dropped),
        Fault::ApplyThenDrop => {
            let _ = call(app, req).await;
            Err(Dropped)
        }
        Fault::MalformedBody => {
            let (parts, body) = call(app, req).await.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut garbled = bytes[..bytes.len() / 2].to_vec();
            garbled.extend_from_slice(b"\x00<<garbled");
            let mut r = Response::from_parts(parts, Body::from(garbled));
            r.headers_mut().remove(header::CONTENT_LENGTH);
            Ok(r)
        }
        Fault::SlowDrip { chunk_bytes, interval_millis } => {
            let (parts, body) = call(app, req).await.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let chunks: Vec<Bytes> = bytes.chunks(chunk_bytes.max(1)).map(Bytes::copy_from_slice).collect();
            let interval = Duration::from_millis(interval_millis);
            let stream = futures::stream::iter(chunks).then(move |chunk| async move {
                tokio::time::sleep(interval).await;
                Ok::<_, std::io::Error>(chunk)
            });
            let mut r = Response::from_parts(parts, Body::from_stream(stream));
            r.headers_mut().remove(header::CONTENT_LENGTH);
            Ok(r)
        }
        Fault::InvalidTokenStorm => {
            let mut r = Response::new(Body::from(r#"{"error":"invalid_token","error_description":"token rejected"}"#));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#));
            Ok(r)
        }
    }
}

async fn call(app: Router, req: Request<Body>) -> Response<Body> {
    match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// What a load balancer in front of a real system answers.
fn gateway_page(status: StatusCode) -> Response<Body> {
    let text = format!(
        "<html><head><title>{0}</title></head><body><h1>{0}</h1></body></html>",
        status.canonical_reason().map_or_else(|| status.as_str().to_owned(), |r| format!("{} {r}", status.as_str()))
    );
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

#[derive(Deserialize)]
struct Seed {
    seed: u64,
}

/// `/admin/faults`, `/admin/effects`, `/admin/clock`: the same on every mock.
pub fn admin_routes(common: Common) -> Router {
    Router::new()
        .route(
            "/admin/faults",
            get(|State(c): State<Common>| async move { Json(c.faults.list()) })
                .post(|State(c): State<Common>, Json(rule): Json<FaultRule>| async move {
                    let id = c.faults.add(rule);
                    (StatusCode::CREATED, Json(serde_json::json!({ "id": id })))
                })
                .delete(|State(c): State<Common>| async move {
                    c.faults.clear();
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/admin/faults/{id}",
            delete(|State(c): State<Common>, Path(id): Path<u64>| async move {
                if c.faults.remove(id) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
            }),
        )
        .route(
            "/admin/faults/seed",
            post(|State(c): State<Common>, Json(s): Json<Seed>| async move {
                c.faults.reseed(s.seed);
                StatusCode::NO_CONTENT
            }),
        )
        .route("/admin/effects", get(|State(c): State<Common>| async move { Json(c.effects.all()) }))
        .route(
            "/admin/clock",
            get(|State(c): State<Common>| async move { Json(serde_json::json!({ "now": c.clock.now() })) }),
        )
        .route(
            "/admin/clock/advance",
            post(|State(c): State<Common>, Json(a): Json<Advance>| async move {
                c.clock.advance(chrono::Duration::seconds(a.seconds));
                Json(serde_json::json!({ "now": c.clock.now() }))
            }),
        )
        .with_state(common)
}

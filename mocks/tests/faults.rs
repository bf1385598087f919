//! Every fault mode over real HTTP, through the admin API and in-process.

mod common;

use hurtigspor_mocks::{
    arena::{Arena, ArenaConfig, BASE},
    faults::{Fault, FaultRule},
    server::{MockSystem, RunningMock},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const FNR: &str = "15838510075";

struct Mock {
    arena: Arena,
    running: RunningMock,
    http: Client,
    token: String,
}

impl Mock {
    async fn start() -> Self {
        let arena = Arena::new(ArenaConfig::default());
        let running = arena.spawn("127.0.0.1:0").await.unwrap();
        let http = Client::new();
        let token = common::arena_token(&http, &running.url()).await;
        Self { arena, running, http, token }
    }

    fn inject(&self, rule: FaultRule) {
        self.arena.common.faults.add(rule);
    }

    async fn register(&self) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .post(format!("{}{BASE}/personforhold", self.running.url()))
            .bearer_auth(&self.token)
            .json(&json!({ "FODSELSNR": FNR, "PERSONFORHOLDKODE": "INTRO", "AETATENHET": "0314", "DATO_FRA": "2026-01-05 00:00:00" }))
            .send()
            .await
    }

    async fn feed(&self) -> Result<reqwest::Response, reqwest::Error> {
        self.http.get(format!("{}{BASE}/endringer", self.running.url())).bearer_auth(&self.token).send().await
    }

    fn applied(&self) -> usize {
        self.arena.common.effects.count("personforhold.created")
    }
}

const PERSONFORHOLD: &str = "/ords/arena/api/v1/personforhold";

#[tokio::test]
async fn error_statuses_apply_nothing() {
    let m = Mock::start().await;
    for status in [500u16, 502, 503] {
        m.inject(FaultRule::new(Fault::Error { status }).times(1));
        let r = m.register().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        assert!(r.text().await.unwrap().contains(&status.to_string()));
    }
    assert_eq!(m.applied(), 0);
    assert_eq!(m.register().await.unwrap().status(), StatusCode::CREATED, "rules used up");
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let m = Mock::start().await;
    m.inject(FaultRule::new(Fault::TooManyRequests { retry_after_secs: 7 }).times(1));
    let r = m.register().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(m.applied(), 0);
}

#[tokio::test]
async fn an_outage_lasts_its_window_of_virtual_time() {
    let mut m = Mock::start().await;
    m.inject(FaultRule::new(Fault::Outage { seconds: 600 }));
    for _ in 0..3 {
        assert_eq!(m.register().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    m.arena.common.clock.advance(chrono::Duration::seconds(599));
    assert_eq!(m.feed().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    // Past the window; the token has expired by then, so take a new one.
    m.arena.common.clock.advance(chrono::Duration::seconds(2));
    m.token = common::arena_token(&m.http, &m.running.url()).await;
    assert_eq!(m.feed().await.unwrap().status(), StatusCode::OK, "the outage is over");
}

#[tokio::test]
async fn reset_connection_answers_nothing_and_applies_nothing() {
    let m = Mock::start().await;
    m.inject(FaultRule::new(Fault::ResetConnection).times(1));
    let err = m.register().await.unwrap_err();
    assert!(err.is_request() || err.is_connect() || err.to_string().contains("connection"), "{err:?}");
    assert_eq!(m.applied(), 0);
}

#[tokio::test]
async fn apply_then_drop_applies_but_never_answers() {
    let m = Mock::start().await;
    m.inject(FaultRule::new(Fault::ApplyThenDrop).on(PERSONFORHOLD).method("POST").times(1));
    assert!(m.register().await.is_err(), "the caller sees no answer");
    assert_eq!(m.applied(), 1, "but the write took effect");
    // A blind retry now makes the duplicate Arena is known for.
    assert_eq!(m.register().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(m.applied(), 2);
}

#[tokio::test]
async fn malformed_bodies_do_not_parse() {
    let m = Mock::start().await;
    m.inject(FaultRule::new(Fault::MalformedBody).on(PERSONFORHOLD).times(1));
    let r = m.register().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.json::<Value>().await.is_err());
    assert_eq!(m.applied(), 1);
}

#[tokio::test]
async fn slow_drip_delivers_the_whole_body_slowly() {
    let m = Mock::start().await;
    let plain = m.feed().await.unwrap().text().await.unwrap();
    m.inject(FaultRule::new(Fault::SlowDrip { chunk_bytes: 8, interval_millis: 5 }).on("/ords/arena/api/v1/endringer"));
    let started = Instant::now();
    let dripped = m.feed().await.unwrap().text().await.unwrap();
    let chunks = plain.len().div_ceil(8) as u32;
    assert!(started.elapsed() >= Duration::from_millis(5) * chunks, "{} chunks in {:?}", chunks, started.elapsed());
    assert_eq!(dripped, plain);
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let m = Mock::start().await;
    m.inject(FaultRule::new(Fault::Latency { millis: 150 }).times(1));
    let started = Instant::now();
    assert_eq!(m.feed().await.unwrap().status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn an_invalid_token_storm_rejects_good_tokens() {
    let m = Mock::start().await;
    m.inject(FaultRule::new(Fault::InvalidTokenStorm).times(2));
    for _ in 0..2 {
        let r = m.feed().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_token");
    }
    assert_eq!(m.feed().await.unwrap().status(), StatusCode::OK, "the storm has passed");
}

#[tokio::test]
async fn faults_target_one_route_and_method() {
    let m = Mock::start().await;
    m.inject(FaultRule::new(Fault::Error { status: 503 }).on(PERSONFORHOLD).method("POST"));
    assert_eq!(m.feed().await.unwrap().status(), StatusCode::OK, "other route");
    let list = m
        .http
        .get(format!("{}{PERSONFORHOLD}?person_id=1", m.running.url()))
        .bearer_auth(&m.token)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK, "same route, other method");
    assert_eq!(m.register().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn the_admin_api_manages_faults_and_is_never_faulted() {
    let m = Mock::start().await;
    let admin = |path: &str| format!("{}{path}", m.running.url());
    let created: Value = m
        .http
        .post(admin("/admin/faults"))
        .json(&json!({ "kind": "error", "status": 502, "route": PERSONFORHOLD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    m.http.post(admin("/admin/faults")).json(&json!({ "kind": "reset_connection" })).send().await.unwrap();
    let listed: Value = m.http.get(admin("/admin/faults")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["kind"], "error");
    assert_eq!(listed[0]["injected"], 0);
    // Admin routes still answer although every other request is reset.
    assert!(m.feed().await.is_err());
    assert_eq!(
        m.http.delete(admin(&format!("/admin/faults/{id}"))).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(m.http.delete(admin("/admin/faults")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(m.feed().await.unwrap().status(), StatusCode::OK);
    let bad = m.http.post(admin("/admin/faults")).json(&json!({ "kind": "meteor" })).send().await.unwrap();
    assert!(bad.status().is_client_error());
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    async fn run(seed: u64) -> Vec<u16> {
        let m = Mock::start().await;
        let admin = format!("{}/admin/faults", m.running.url());
        m.http.post(format!("{admin}/seed")).json(&json!({ "seed": seed })).send().await.unwrap();
        m.http.post(&admin).json(&json!({ "kind": "error", "status": 500, "probability": 0.5 })).send().await.unwrap();
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(m.feed().await.unwrap().status().as_u16());
        }
        statuses
    }
    let a = run(11).await;
    assert_eq!(a, run(11).await);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
}

//! The NOKUT mock over real HTTP: API key, idempotent case creation, the
//! lifecycle on the virtual clock, signed webhooks and the changes feed.

use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
use hmac::{Hmac, Mac};
use hurtigspor_mocks::{
    nokut::{BASE, Nokut, NokutConfig},
    server::{MockSystem, RunningMock},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::{Arc, Mutex};

const KEY: &str = "nokut-dev-key";

struct Mock {
    nokut: Nokut,
    running: RunningMock,
    http: Client,
}

impl Mock {
    async fn start() -> Self {
        let nokut = Nokut::new(NokutConfig::default());
        let running = nokut.spawn("127.0.0.1:0").await.unwrap();
        Self { nokut, running, http: Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{BASE}{path}", self.running.url())
    }

    async fn open(&self, body: Value, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url("/saker")).header("x-api-key", KEY).json(&body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn case(&self, nr: &str) -> Value {
        self.http
            .get(self.url(&format!("/saker/{nr}")))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Moves the virtual clock and lets due transitions happen.
    async fn days(&self, days: i64) {
        self.nokut.common.clock.advance(chrono::Duration::days(days));
        self.nokut.tick().await;
    }
}

fn application(ordning: &str, land: &str, complete: bool) -> Value {
    json!({
        "ordning": ordning,
        "soker": { "fodselsnummer": "15838510075" },
        "utdanning": { "beskrivelse": "Bachelor i sykepleie", "land": land },
        "dokumentasjon_komplett": complete,
    })
}

async fn opened(m: &Mock, body: Value) -> String {
    let (status, case) = m.open(body, None).await;
    assert_eq!(status, StatusCode::CREATED, "{case}");
    assert_eq!(case["status"], "MOTTATT");
    case["saksnummer"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_api_key_is_required() {
    let m = Mock::start().await;
    let r = m.http.post(m.url("/saker")).json(&application("FAGSKOLE", "UA", true)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["feil"], "ugyldig_api_nokkel");
    let r = m.http.get(m.url("/endringer")).header("x-api-key", "guess").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn opening_validates_and_accepts_applicants_without_a_national_id() {
    let m = Mock::start().await;
    let (status, body) = m.open(application("ASTROLOGI", "UA", true), None).await;
    assert_eq!((status, body["feil"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("ukjent_ordning")));
    let anonymous = json!({ "ordning": "UVD", "soker": {}, "utdanning": { "beskrivelse": "x", "land": "SY" } });
    let (status, body) = m.open(anonymous, None).await;
    assert_eq!((status, body["feil"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("soker_mangler")));
    let by_name = json!({
        "ordning": "UVD", "soker": { "navn": "Yxmirra Qzvarnes", "fodselsdato": "1985-03-15" },
        "utdanning": { "beskrivelse": "ingeniør", "land": "SY" },
    });
    let (status, _) = m.open(by_name, None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        m.http
            .post(m.url("/saker"))
            .header("x-api-key", KEY)
            .body("{")
            .send()
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
}

#[tokio::test]
async fn the_idempotency_key_makes_a_retry_return_the_same_case() {
    let m = Mock::start().await;
    let body = application("HOYERE_UTDANNING", "UA", true);
    let (s1, first) = m.open(body.clone(), Some("k-1")).await;
    let (s2, again) = m.open(body.clone(), Some("k-1")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(first["saksnummer"], again["saksnummer"]);
    let (status, reused) = m.open(application("FAGSKOLE", "UA", true), Some("k-1")).await;
    assert_eq!(
        (status, reused["feil"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_gjenbrukt"))
    );
    // Without the header every call is a new case.
    m.open(body.clone(), None).await;
    m.open(body, None).await;
    assert_eq!(m.nokut.common.effects.count("sak.opened"), 3);
}

#[tokio::test]
async fn a_complete_application_is_decided_on_the_virtual_clock() {
    let m = Mock::start().await;
    let approved = opened(&m, application("HOYERE_UTDANNING", "UA", true)).await;
    let refused = opened(&m, application("HOYERE_UTDANNING", "UA", true)).await;
    m.http
        .post(format!("{}/admin/saker/{refused}/utfall", m.running.url()))
        .json(&json!({ "utfall": "AVSLAG" }))
        .send()
        .await
        .unwrap();
    m.days(1).await;
    assert_eq!(m.case(&approved).await["status"], "MOTTATT");
    m.days(1).await;
    assert_eq!(m.case(&approved).await["status"], "UNDER_BEHANDLING");
    m.days(58).await;
    let case = m.case(&approved).await;
    assert_eq!(case["status"], "VEDTAK");
    assert_eq!(case["vedtak"]["utfall"], "GODKJENT");
    assert_eq!(case["vedtak"]["nivaa"], "BACHELOR");
    assert_eq!(case["vedtak"]["studiepoeng"], 180);
    let case = m.case(&refused).await;
    assert_eq!(case["vedtak"]["utfall"], "AVSLAG");
    assert_eq!(case["vedtak"]["studiepoeng"], Value::Null);
}

#[tokio::test]
async fn missing_documents_lead_to_rejection_unless_they_arrive() {
    let m = Mock::start().await;
    let rejected = opened(&m, application("FAG_OG_YRKESOPPLAERING", "PL", false)).await;
    let rescued = opened(&m, application("FAG_OG_YRKESOPPLAERING", "PL", false)).await;
    m.days(7).await;
    assert_eq!(m.case(&rejected).await["status"], "VENTER_PAA_DOKUMENTASJON");
    let r =
        m.http.post(m.url(&format!("/saker/{rescued}/dokumentasjon"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    m.days(30).await;
    let case = m.case(&rejected).await;
    assert_eq!(case["status"], "AVVIST");
    assert_eq!(case["avvisningsgrunn"], "MANGLENDE_DOKUMENTASJON");
    assert_eq!(m.case(&rescued).await["status"], "UNDER_BEHANDLING");
    m.days(30).await;
    assert_eq!(m.case(&rescued).await["status"], "VEDTAK");
    let closed =
        m.http.post(m.url(&format!("/saker/{rejected}/dokumentasjon"))).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(closed.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn uvd_referral_uvd_decisions_and_statements() {
    let m = Mock::start().await;
    let referred = opened(&m, application("HOYERE_UTDANNING", "AF", true)).await;
    let uvd = opened(&m, application("UVD", "SY", false)).await;
    let assessment = opened(&m, application("KVALIFIKASJONSVURDERING", "SY", false)).await;
    m.days(2).await;
    assert_eq!(m.case(&referred).await["status"], "HENVIST_UVD");
    m.days(28).await;
    let statement = m.case(&assessment).await;
    assert_eq!(statement["status"], "UTTALELSE");
    assert_eq!(statement["vedtak"], Value::Null, "a statement, not a decision");
    assert!(statement["uttalelse"].as_str().unwrap().contains("ikke et vedtak"));
    assert_eq!(m.case(&uvd).await["status"], "UNDER_BEHANDLING");
    m.days(90).await;
    assert_eq!(m.case(&uvd).await["vedtak"]["utfall"], "GODKJENT");
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A callback receiver on port 0 that keeps what it is sent.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test]
async fn webhooks_are_signed_and_the_feed_covers_missed_ones() {
    let m = Mock::start().await;
    let (url, received) = receiver().await;
    let registered: Value = m
        .http
        .post(m.url("/webhooks"))
        .header("x-api-key", KEY)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = registered["hemmelighet"].as_str().unwrap().to_owned();
    let nr = opened(&m, application("FAGSKOLE", "UA", true)).await;
    m.days(60).await;

    let got = received.lock().unwrap().clone();
    let statuses: Vec<String> = got
        .iter()
        .map(|(headers, body)| {
            // Verify as a receiver would: HMAC-SHA256 over "<timestamp>.<body>".
            let timestamp = headers["x-nokut-timestamp"].to_str().unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{timestamp}.").as_bytes());
            mac.update(body);
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(headers["x-nokut-signature"].to_str().unwrap(), expected);
            let event: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(event["saksnummer"], nr.as_str());
            event["status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(statuses, ["UNDER_BEHANDLING", "VEDTAK"]);

    // The feed has the same changes, from any sequence on.
    let all: Value =
        m.http.get(m.url("/endringer?etter=0")).header("x-api-key", KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["endringer"].as_array().unwrap().len(), 2);
    assert_eq!(all["siste_sekvens"], 2);
    let rest: Value =
        m.http.get(m.url("/endringer?etter=1")).header("x-api-key", KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(rest["endringer"][0]["status"], "VEDTAK");
    assert_eq!(rest["endringer"][0]["sak"]["vedtak"]["utfall"], "GODKJENT");
    let state = m.nokut.state();
    assert!(state["leveringer"].as_array().unwrap().iter().all(|l| l["status"] == 200));
}

#[tokio::test]
async fn a_failing_callback_is_recorded_and_polling_still_sees_the_change() {
    let m = Mock::start().await;
    m.http
        .post(m.url("/webhooks"))
        .header("x-api-key", KEY)
        .json(&json!({ "url": "http://127.0.0.1:1/unreachable" }))
        .send()
        .await
        .unwrap();
    opened(&m, application("FAGSKOLE", "UA", true)).await;
    m.days(2).await;
    let state = m.nokut.state();
    assert!(state["leveringer"][0]["feil"].is_string(), "{state}");
    let feed: Value =
        m.http.get(m.url("/endringer")).header("x-api-key", KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(feed["endringer"][0]["status"], "UNDER_BEHANDLING");
}

#[tokio::test]
async fn documents_change_course_only_for_a_case_waiting_for_them() {
    let m = Mock::start().await;
    let statement = opened(&m, application("KVALIFIKASJONSVURDERING", "SY", false)).await;
    let complete = opened(&m, application("FAGSKOLE", "UA", true)).await;
    for nr in [&statement, &complete] {
        let r =
            m.http.post(m.url(&format!("/saker/{nr}/dokumentasjon"))).header("x-api-key", KEY).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    m.days(30).await;
    let s = m.case(&statement).await;
    assert_eq!((s["status"].as_str(), &s["vedtak"]), (Some("UTTALELSE"), &Value::Null), "still a statement");
    m.days(30).await;
    assert_eq!(m.case(&complete).await["status"], "VEDTAK", "not postponed by the documents call");
}

#[tokio::test]
async fn a_receiver_may_call_back_while_its_webhook_is_in_flight() {
    // The receiver reads the case before it answers the webhook.
    let m = Mock::start().await;
    let api = m.url("");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let (api, sink) = (api.clone(), sink.clone());
            async move {
                let event: Value = serde_json::from_slice(&body).unwrap();
                let nr = event["saksnummer"].as_str().unwrap();
                let case: Value = Client::new()
                    .get(format!("{api}/saker/{nr}"))
                    .header("x-api-key", KEY)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                sink.lock().unwrap().push(case["status"].as_str().unwrap().to_owned());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    m.http.post(m.url("/webhooks")).header("x-api-key", KEY).json(&json!({ "url": hook })).send().await.unwrap();
    opened(&m, application("FAGSKOLE", "UA", true)).await;
    let started = std::time::Instant::now();
    m.days(2).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "no wait for a lock");
    assert_eq!(*seen.lock().unwrap(), ["UNDER_BEHANDLING"]);
    assert_eq!(m.nokut.state()["leveringer"][0]["status"], 200);
}

#[tokio::test]
async fn unknown_cases_bad_outcomes_and_bad_callback_urls() {
    let m = Mock::start().await;
    let r = m.http.get(m.url("/saker/2026-999999")).header("x-api-key", KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["feil"], "ukjent_sak");
    let nr = opened(&m, application("FAGSKOLE", "UA", true)).await;
    let admin = format!("{}/admin/saker/{nr}/utfall", m.running.url());
    assert_eq!(
        m.http.post(&admin).json(&json!({ "utfall": "KANSKJE" })).send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let r = m
        .http
        .post(m.url("/webhooks"))
        .header("x-api-key", KEY)
        .json(&json!({ "url": "ftp://x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["feil"], "ugyldig_url");
}

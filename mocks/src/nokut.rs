//! A NOKUT/HK-dir-style mock (recognition of foreign education): a JSON API
//! with an API key, `Idempotency-Key` on case creation, a case lifecycle on
//! the virtual clock, HMAC-signed webhooks and a changes-since feed.
//!
//! Lifecycle (days on the virtual clock after receipt):
//! - higher education, fagskole, vocational: MOTTATT, UNDER_BEHANDLING (2),
//!   then VEDTAK (60, GODKJENT with level and credits unless the admin API
//!   presets AVSLAG); incomplete documentation goes VENTER_PAA_DOKUMENTASJON
//!   (7) and AVVIST (37) unless documents arrive; higher education from a
//!   referral country goes HENVIST_UVD (2).
//! - UVD: MOTTATT, UNDER_BEHANDLING (2), VEDTAK (120).
//! - qualifications assessment: MOTTATT, UNDER_BEHANDLING (2), UTTALELSE (30),
//!   a statement and not a decision.

use crate::server::{Common, MockSystem, RunningMock};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub const BASE: &str = "/api/v1";
pub const SIGNATURE_HEADER: &str = "X-Nokut-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Nokut-Timestamp";

#[derive(Clone, Debug)]
pub struct NokutConfig {
    pub api_key: String,
    pub webhook_secret: String,
    /// Countries (ISO alpha-2) whose higher-education applicants are
    /// referred to the UVD scheme.
    pub uvd_countries: Vec<String>,
    pub seed: u64,
}

impl Default for NokutConfig {
    fn default() -> Self {
        Self {
            api_key: "nokut-dev-key".to_owned(),
            webhook_secret: "nokut-dev-webhook-secret".to_owned(),
            uvd_countries: vec!["AF".to_owned(), "ER".to_owned(), "SO".to_owned()],
            seed: 1,
        }
    }
}

pub const ORDNINGER: &[&str] =
    &["HOYERE_UTDANNING", "FAGSKOLE", "FAG_OG_YRKESOPPLAERING", "UVD", "KVALIFIKASJONSVURDERING"];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Soker {
    /// Optional: applicants may have no Norwegian national id.
    #[serde(default)]
    pub fodselsnummer: Option<String>,
    #[serde(default)]
    pub navn: Option<String>,
    #[serde(default)]
    pub fodselsdato: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Utdanning {
    pub beskrivelse: String,
    /// ISO 3166-1 alpha-2.
    pub land: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NySak {
    pub ordning: String,
    pub soker: Soker,
    pub utdanning: Utdanning,
    #[serde(default)]
    pub dokumentasjon_komplett: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Vedtak {
    pub utfall: String,
    pub nivaa: Option<String>,
    pub studiepoeng: Option<u32>,
    pub dato: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sak {
    pub saksnummer: String,
    pub ordning: String,
    pub status: String,
    pub soker: Soker,
    pub utdanning: Utdanning,
    pub dokumentasjon_komplett: bool,
    pub mottatt: DateTime<Utc>,
    pub sist_endret: DateTime<Utc>,
    pub vedtak: Option<Vedtak>,
    pub uttalelse: Option<String>,
    pub avvisningsgrunn: Option<String>,
    /// The outcome the lifecycle will reach (admin presets it).
    #[serde(skip)]
    planlagt_utfall: String,
    /// Pending transitions: when, and to which status.
    #[serde(skip)]
    plan: Vec<(DateTime<Utc>, &'static str)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Endring {
    pub sekvens: u64,
    pub saksnummer: String,
    pub status: String,
    pub tidspunkt: DateTime<Utc>,
    pub sak: Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct Levering {
    pub sekvens: u64,
    pub url: String,
    pub status: Option<u16>,
    pub feil: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct NokutState {
    pub saker: Vec<Sak>,
    pub endringer: Vec<Endring>,
    pub webhook_url: Option<String>,
    pub leveringer: Vec<Levering>,
    /// Changes whose webhook has not been sent yet.
    #[serde(skip)]
    undelivered: Vec<Endring>,
    #[serde(skip)]
    idempotency: HashMap<String, ([u8; 32], String)>,
}

#[derive(Clone)]
pub struct Nokut {
    db: Arc<Mutex<NokutState>>,
    config: Arc<NokutConfig>,
    http: reqwest::Client,
    /// One tick at a time, so a tick returns only after every change due
    /// by then has been delivered, whoever started the delivery.
    ticking: Arc<tokio::sync::Mutex<()>>,
    pub common: Common,
}

fn error(status: StatusCode, feil: &str, melding: impl Into<String>) -> Response {
    (status, Json(json!({ "feil": feil, "melding": melding.into() }))).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "ugyldig_api_nokkel", "X-Api-Key mangler eller er ugyldig")
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Nokut {
    pub fn new(config: NokutConfig) -> Self {
        Self {
            db: Arc::new(Mutex::new(NokutState::default())),
            common: Common::new(config.seed),
            config: Arc::new(config),
            http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().expect("client"),
            ticking: Arc::default(),
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, NokutState> {
        self.db.lock().expect("nokut state lock")
    }
}

impl MockSystem for Nokut {
    fn common(&self) -> &Common {
        &self.common
    }

    fn state(&self) -> Value {
        serde_json::to_value(&*self.db()).expect("state serialises")
    }

    fn clear_tables(&self) {
        *self.db() = NokutState::default();
    }

    fn routes(&self) -> Router {
        Router::new()
            .route(&format!("{BASE}/saker"), post(open_case))
            .route(&format!("{BASE}/saker/{{nr}}"), get(get_case))
            .route(&format!("{BASE}/saker/{{nr}}/dokumentasjon"), post(documents))
            .route(&format!("{BASE}/endringer"), get(changes))
            .route(&format!("{BASE}/webhooks"), post(register_webhook))
            .route("/admin/saker/{nr}/utfall", post(preset_outcome))
            .route(
                "/admin/tick",
                post(|State(n): State<Nokut>| async move {
                    n.tick().await;
                    StatusCode::NO_CONTENT
                }),
            )
            .with_state(self.clone())
    }
}

impl Nokut {
    /// Serves the mock and moves cases along the virtual clock in the
    /// background (every 200 ms), delivering webhooks as they change.
    pub async fn spawn(&self, addr: &str) -> std::io::Result<RunningMock> {
        let running = MockSystem::spawn(self, addr).await?;
        let ticker = self.clone();
        let weak = Arc::downgrade(&self.db);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(std::time::Duration::from_millis(200));
            while weak.strong_count() > 1 {
                interval.tick().await;
                ticker.tick().await;
            }
        });
        Ok(running)
    }

    /// Applies every transition that is due on the virtual clock and delivers
    /// the webhooks for them. Tests call it after advancing the clock.
    pub async fn tick(&self) {
        let _one_at_a_time = self.ticking.lock().await;
        self.advance();
        let due = std::mem::take(&mut self.db().undelivered);
        for change in due {
            self.deliver(change).await;
        }
    }

    /// Moves due cases on (requests do this before they answer, so reads are
    /// current); returns the new change records, queued for delivery.
    fn advance(&self) -> Vec<Endring> {
        let now = self.common.clock.now();
        let mut db = self.db();
        let mut new = Vec::new();
        let mut seq = db.endringer.len() as u64;
        for sak in &mut db.saker {
            while let Some(&(at, status)) = sak.plan.first() {
                if at > now {
                    break;
                }
                sak.plan.remove(0);
                apply(sak, status, at);
                seq += 1;
                new.push(Endring {
                    sekvens: seq,
                    saksnummer: sak.saksnummer.clone(),
                    status: sak.status.clone(),
                    tidspunkt: at,
                    sak: serde_json::to_value(&*sak).expect("serialises"),
                });
            }
        }
        new.sort_by_key(|e| (e.tidspunkt, e.sekvens));
        let first = db.endringer.len() as u64;
        for (i, e) in new.iter_mut().enumerate() {
            e.sekvens = first + i as u64 + 1;
        }
        db.endringer.extend(new.iter().cloned());
        db.undelivered.extend(new.iter().cloned());
        drop(db);
        for e in &new {
            self.common.effects.record(
                e.tidspunkt,
                "sak.status_changed",
                json!({ "saksnummer": e.saksnummer, "status": e.status }),
            );
        }
        new
    }

    async fn deliver(&self, change: Endring) {
        let Some(url) = self.db().webhook_url.clone() else { return };
        let body = serde_json::to_vec(&json!({
            "hendelse_id": change.sekvens, "saksnummer": change.saksnummer, "status": change.status,
            "tidspunkt": change.tidspunkt, "sak": change.sak,
        }))
        .expect("serialises");
        // Real time, not the virtual clock: receivers check freshness
        // against their own clock.
        let timestamp = Utc::now().timestamp();
        let signature = sign(&self.config.webhook_secret, timestamp, &body);
        let result = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let (status, feil) = match result {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        self.db().leveringer.push(Levering { sekvens: change.sekvens, url, status, feil });
    }

    fn key_ok(&self, headers: &HeaderMap) -> bool {
        headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(self.config.api_key.as_str())
    }
}

/// Moves a case to `status` at time `at`.
fn apply(sak: &mut Sak, status: &'static str, at: DateTime<Utc>) {
    sak.status = status.to_owned();
    sak.sist_endret = at;
    let date = at.format("%Y-%m-%d").to_string();
    match status {
        "VEDTAK" => {
            let approved = sak.planlagt_utfall == "GODKJENT";
            let (nivaa, poeng) = match (approved, sak.ordning.as_str()) {
                (false, _) => (None, None),
                (true, "HOYERE_UTDANNING" | "UVD") => (Some("BACHELOR".to_owned()), Some(180)),
                (true, "FAGSKOLE") => (Some("FAGSKOLE".to_owned()), Some(120)),
                (true, _) => (Some("FAGBREV".to_owned()), None),
            };
            sak.vedtak = Some(Vedtak { utfall: sak.planlagt_utfall.clone(), nivaa, studiepoeng: poeng, dato: date });
        }
        "UTTALELSE" => {
            sak.uttalelse = Some("Kvalifikasjonsvurdering gjennomført; uttalelsen er ikke et vedtak".to_owned());
        }
        "AVVIST" => sak.avvisningsgrunn = Some("MANGLENDE_DOKUMENTASJON".to_owned()),
        _ => {}
    }
}

/// The transitions a new case will go through.
fn plan_for(
    ordning: &str,
    complete: bool,
    uvd_referral: bool,
    received: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, &'static str)> {
    let at = |days| received + Duration::days(days);
    let mut plan = vec![(at(2), "UNDER_BEHANDLING")];
    match ordning {
        "UVD" => plan.push((at(120), "VEDTAK")),
        "KVALIFIKASJONSVURDERING" => plan.push((at(30), "UTTALELSE")),
        _ if uvd_referral => plan.push((at(2), "HENVIST_UVD")),
        _ if !complete => plan.extend([(at(7), "VENTER_PAA_DOKUMENTASJON"), (at(37), "AVVIST")]),
        _ => plan.push((at(60), "VEDTAK")),
    }
    plan
}

async fn open_case(State(n): State<Nokut>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !n.key_ok(&headers) {
        return unauthorized();
    }
    n.advance();
    let req: NySak = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "ugyldig_json", e.to_string()),
    };
    if !ORDNINGER.contains(&req.ordning.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ukjent_ordning",
            format!("ordning må være en av {}", ORDNINGER.join(", ")),
        );
    }
    let identified =
        req.soker.fodselsnummer.as_deref().is_some_and(|f| f.len() == 11 && f.bytes().all(|b| b.is_ascii_digit()));
    if req.soker.fodselsnummer.is_some() && !identified {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "ugyldig_fodselsnummer", "fodselsnummer må ha 11 siffer");
    }
    if !identified && (req.soker.navn.is_none() || req.soker.fodselsdato.is_none()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "soker_mangler",
            "uten fodselsnummer kreves navn og fodselsdato",
        );
    }
    if req.utdanning.land.len() != 2 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "ugyldig_land", "land må være en ISO 3166-1 alfa-2-kode");
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let fingerprint: [u8; 32] = Sha256::digest(&body).into();
    let now = n.common.clock.now();
    let mut db = n.db();
    if let Some(key) = &key
        && let Some((seen, saksnummer)) = db.idempotency.get(key)
    {
        if *seen != fingerprint {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_gjenbrukt",
                "Idempotency-Key er brukt for en annen forespørsel",
            );
        }
        let sak = db.saker.iter().find(|s| s.saksnummer == *saksnummer).expect("remembered case exists");
        return (StatusCode::OK, Json(serde_json::to_value(sak).expect("serialises"))).into_response();
    }
    let saksnummer = format!("{}-{:06}", now.format("%Y"), db.saker.len() + 1);
    let referral = req.ordning == "HOYERE_UTDANNING" && n.config.uvd_countries.contains(&req.utdanning.land);
    let sak = Sak {
        saksnummer: saksnummer.clone(),
        ordning: req.ordning.clone(),
        status: "MOTTATT".to_owned(),
        soker: req.soker,
        utdanning: req.utdanning,
        dokumentasjon_komplett: req.dokumentasjon_komplett,
        mottatt: now,
        sist_endret: now,
        vedtak: None,
        uttalelse: None,
        avvisningsgrunn: None,
        planlagt_utfall: "GODKJENT".to_owned(),
        plan: plan_for(&req.ordning, req.dokumentasjon_komplett, referral, now),
    };
    let value = serde_json::to_value(&sak).expect("serialises");
    db.saker.push(sak);
    if let Some(key) = key {
        db.idempotency.insert(key, (fingerprint, saksnummer.clone()));
    }
    drop(db);
    n.common.effects.record(now, "sak.opened", json!({ "saksnummer": saksnummer }));
    (StatusCode::CREATED, Json(value)).into_response()
}

async fn get_case(State(n): State<Nokut>, headers: HeaderMap, Path(nr): Path<String>) -> Response {
    if !n.key_ok(&headers) {
        return unauthorized();
    }
    n.advance();
    match n.db().saker.iter().find(|s| s.saksnummer == nr) {
        Some(s) => Json(serde_json::to_value(s).expect("serialises")).into_response(),
        None => error(StatusCode::NOT_FOUND, "ukjent_sak", format!("sak {nr} finnes ikke")),
    }
}

/// The missing documents arrived: the case goes back to processing.
async fn documents(State(n): State<Nokut>, headers: HeaderMap, Path(nr): Path<String>) -> Response {
    if !n.key_ok(&headers) {
        return unauthorized();
    }
    n.advance();
    let now = n.common.clock.now();
    let mut db = n.db();
    let Some(sak) = db.saker.iter_mut().find(|s| s.saksnummer == nr) else {
        return error(StatusCode::NOT_FOUND, "ukjent_sak", format!("sak {nr} finnes ikke"));
    };
    if !matches!(sak.status.as_str(), "MOTTATT" | "UNDER_BEHANDLING" | "VENTER_PAA_DOKUMENTASJON") {
        return error(StatusCode::CONFLICT, "sak_avsluttet", "saken er avsluttet");
    }
    // Only a documentation-dependent case that was still incomplete changes
    // course: the waiting and the rejection are cancelled and a decision is
    // planned. Other schemes, referrals and repeat calls just keep their plan.
    let documentation_dependent =
        matches!(sak.ordning.as_str(), "HOYERE_UTDANNING" | "FAGSKOLE" | "FAG_OG_YRKESOPPLAERING")
            && !sak.plan.iter().any(|(_, s)| *s == "HENVIST_UVD");
    if documentation_dependent && !sak.dokumentasjon_komplett {
        sak.plan.retain(|(_, s)| *s == "UNDER_BEHANDLING");
        if sak.status == "VENTER_PAA_DOKUMENTASJON" {
            sak.plan.push((now, "UNDER_BEHANDLING"));
        }
        sak.plan.push((now + Duration::days(60), "VEDTAK"));
    }
    sak.dokumentasjon_komplett = true;
    let value = serde_json::to_value(&*sak).expect("serialises");
    drop(db);
    n.common.effects.record(now, "sak.documents_received", json!({ "saksnummer": nr }));
    Json(value).into_response()
}

#[derive(Deserialize)]
struct ChangesQuery {
    etter: Option<u64>,
    antall: Option<usize>,
}

async fn changes(State(n): State<Nokut>, headers: HeaderMap, Query(q): Query<ChangesQuery>) -> Response {
    if !n.key_ok(&headers) {
        return unauthorized();
    }
    n.advance();
    let after = q.etter.unwrap_or(0);
    let limit = q.antall.unwrap_or(100).clamp(1, 1000);
    let db = n.db();
    let items: Vec<_> = db.endringer.iter().filter(|e| e.sekvens > after).take(limit).cloned().collect();
    let last = items.last().map_or(after, |e| e.sekvens);
    Json(json!({ "endringer": items, "siste_sekvens": last })).into_response()
}

#[derive(Deserialize)]
struct Webhook {
    url: String,
}

async fn register_webhook(State(n): State<Nokut>, headers: HeaderMap, Json(w): Json<Webhook>) -> Response {
    if !n.key_ok(&headers) {
        return unauthorized();
    }
    if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "ugyldig_url", "url må være http(s)");
    }
    n.db().webhook_url = Some(w.url.clone());
    (
        StatusCode::CREATED,
        Json(json!({
            "url": w.url, "hemmelighet": n.config.webhook_secret,
            "signatur": format!("{SIGNATURE_HEADER}: sha256=hex(HMAC-SHA256(hemmelighet, {TIMESTAMP_HEADER} + \".\" + body))"),
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Outcome {
    utfall: String,
}

/// Presets what the case's decision will be (GODKJENT or AVSLAG).
async fn preset_outcome(State(n): State<Nokut>, Path(nr): Path<String>, Json(o): Json<Outcome>) -> Response {
    if !matches!(o.utfall.as_str(), "GODKJENT" | "AVSLAG") {
        return error(StatusCode::BAD_REQUEST, "ugyldig_utfall", "utfall må være GODKJENT eller AVSLAG");
    }
    match n.db().saker.iter_mut().find(|s| s.saksnummer == nr) {
        Some(s) => {
            s.planlagt_utfall = o.utfall;
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "ukjent_sak", format!("sak {nr} finnes ikke")),
    }
}

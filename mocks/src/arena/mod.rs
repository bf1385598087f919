//! An Arena-style mock (NAV): an ORDS-flavoured REST layer with its own
//! OAuth client-credentials token endpoint, person lookup, a write API for the
//! introduction-scheme person relation and the activity plan, and the
//! `SIAMO.*` change feed.
//!
//! Like Arena, writes carry no idempotency key: a blind retry makes a
//! duplicate. Clients must read before they write.

mod caseworker;
pub mod state;

use crate::server::{Common, MockSystem};
use axum::{
    Form, Json, Router,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Duration;
use serde::Deserialize;
use serde_json::{Value, json};
use state::{AKTIVITET_STATUSES, ANSVARLIG, Aktivitet, ArenaState, Personforhold, arena_date, parse_arena_date};
use std::sync::{Arc, Mutex};

/// The base path of the REST layer.
pub const BASE: &str = "/ords/arena/api/v1";

#[derive(Clone, Debug)]
pub struct ArenaConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token, on the virtual clock.
    pub token_ttl: Duration,
    /// Seed for fault-injection randomness.
    pub seed: u64,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        Self {
            client_id: "hurtigspor-gateway".to_owned(),
            client_secret: "arena-dev-secret".to_owned(),
            token_ttl: Duration::seconds(300),
            seed: 1,
        }
    }
}

/// The mock's shared state; clone freely.
#[derive(Clone)]
pub struct Arena {
    pub(crate) db: Arc<Mutex<ArenaState>>,
    pub(crate) config: Arc<ArenaConfig>,
    pub common: Common,
}

impl Arena {
    pub fn new(config: ArenaConfig) -> Self {
        let common = Common::new(config.seed);
        Self { db: Arc::new(Mutex::new(ArenaState::default())), config: Arc::new(config), common }
    }

    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, ArenaState> {
        self.db.lock().expect("arena state lock")
    }

    fn record(&self, kind: &str, detail: Value) {
        self.common.effects.record(self.common.clock.now(), kind, detail);
    }
}

impl MockSystem for Arena {
    fn common(&self) -> &Common {
        &self.common
    }

    /// A snapshot of every table and the feed.
    fn state(&self) -> Value {
        serde_json::to_value(&*self.db()).expect("state serialises")
    }

    /// Forgets tables, feed and tokens.
    fn clear_tables(&self) {
        *self.db() = ArenaState::default();
    }

    fn routes(&self) -> Router {
        let api = Router::new()
            .route(&format!("{BASE}/personer/sok"), post(search_person))
            .route(&format!("{BASE}/personer/{{person_id}}"), get(get_person))
            .route(&format!("{BASE}/personforhold"), get(list_personforhold).post(create_personforhold))
            .route(&format!("{BASE}/personforhold/{{id}}/avslutt"), put(end_personforhold))
            .route(
                &format!("{BASE}/aktivitetsplan/{{person_id}}/aktiviteter"),
                get(list_aktiviteter).post(create_aktivitet),
            )
            .route(&format!("{BASE}/aktivitetsplan/{{person_id}}/aktiviteter/{{id}}"), put(update_aktivitet))
            .route(&format!("{BASE}/arbeidsgivere/{{id}}"), get(get_arbeidsgiver))
            .route(&format!("{BASE}/endringer"), get(feed))
            .route_layer(middleware::from_fn_with_state(self.clone(), require_token));
        Router::new().route("/oauth/token", post(token)).merge(api).merge(caseworker::routes()).with_state(self.clone())
    }
}

/// An ORDS-style error body.
pub(crate) fn ords_error(status: StatusCode, message: impl Into<String>) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::CONFLICT => "Conflict",
        _ => "InternalServerError",
    };
    let body = json!({
        "code": code,
        "message": message.into(),
        "type": format!("tag:oracle.com,2020:error/{code}"),
        "instance": format!("tag:oracle.com,2020:ecid/{:016x}", rand::random::<u64>()),
    });
    (status, Json(body)).into_response()
}

fn collection<T: serde::Serialize>(items: Vec<T>) -> Json<Value> {
    let count = items.len();
    Json(json!({ "items": items, "hasMore": false, "limit": 25, "offset": 0, "count": count }))
}

// ---- OAuth -----------------------------------------------------------------

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({ "error": error, "error_description": description }))).into_response()
}

async fn token(State(arena): State<Arena>, headers: HeaderMap, Form(form): Form<TokenRequest>) -> Response {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let Some((id, secret)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "HTTP Basic client credentials required");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"arena\""));
        return r;
    };
    if id != arena.config.client_id || secret != arena.config.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client or wrong secret");
    }
    if form.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only client_credentials is supported");
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    let expires = arena.common.clock.now() + arena.config.token_ttl;
    arena.db().tokens.insert(token.clone(), expires);
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": arena.config.token_ttl.num_seconds(),
    }))
    .into_response()
}

async fn require_token(State(arena): State<Arena>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let now = arena.common.clock.now();
    let valid = token.as_ref().and_then(|t| arena.db().tokens.get(t).copied()).is_some_and(|exp| now < exp);
    if !valid {
        let description = if token.is_none() { "bearer token required" } else { "token unknown or expired" };
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        return r;
    }
    next.run(req).await
}

// ---- Persons ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct PersonSearch {
    fodselsnr: String,
}

async fn search_person(State(arena): State<Arena>, Json(q): Json<PersonSearch>) -> Response {
    let found: Vec<_> = arena.db().person_by_fnr(&q.fodselsnr).cloned().into_iter().collect();
    collection(found).into_response()
}

async fn get_person(State(arena): State<Arena>, Path(person_id): Path<i64>) -> Response {
    match arena.db().persons.iter().find(|p| p.person_id == person_id) {
        Some(p) => Json(p.clone()).into_response(),
        None => ords_error(StatusCode::NOT_FOUND, format!("PERSON_ID {person_id} finnes ikke")),
    }
}

// ---- Person relation (personforhold) ---------------------------------------

#[derive(Deserialize)]
struct ByPerson {
    person_id: i64,
}

async fn list_personforhold(State(arena): State<Arena>, Query(q): Query<ByPerson>) -> Response {
    let rows: Vec<_> = arena.db().personforhold.iter().filter(|r| r.person_id == q.person_id).cloned().collect();
    collection(rows).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct NewPersonforhold {
    fodselsnr: Option<String>,
    person_id: Option<i64>,
    personforholdkode: String,
    aetatenhet: String,
    dato_fra: String,
    reg_user: Option<String>,
}

async fn create_personforhold(State(arena): State<Arena>, Json(body): Json<NewPersonforhold>) -> Response {
    if body.personforholdkode != "INTRO" {
        return ords_error(StatusCode::BAD_REQUEST, "ORA-20010: ugyldig PERSONFORHOLDKODE (gyldig: INTRO)");
    }
    if body.aetatenhet.len() != 4 || !body.aetatenhet.bytes().all(|b| b.is_ascii_digit()) {
        return ords_error(StatusCode::BAD_REQUEST, "ORA-20011: AETATENHET må være fire siffer");
    }
    if let Err(e) = parse_arena_date(&body.dato_fra) {
        return ords_error(StatusCode::BAD_REQUEST, e);
    }
    let now = arena.common.clock.now();
    let mut db = arena.db();
    let person_id = match (body.person_id, body.fodselsnr.as_deref()) {
        (Some(id), _) if db.persons.iter().any(|p| p.person_id == id) => id,
        (Some(id), _) => return ords_error(StatusCode::NOT_FOUND, format!("PERSON_ID {id} finnes ikke")),
        (None, Some(fnr)) if fnr.len() == 11 && fnr.bytes().all(|b| b.is_ascii_digit()) => db.ensure_person(fnr, now).0,
        _ => return ords_error(StatusCode::BAD_REQUEST, "ORA-20012: FODSELSNR (11 siffer) eller PERSON_ID må oppgis"),
    };
    let user = body.reg_user.unwrap_or_else(|| "SIAMO".to_owned());
    let row = Personforhold {
        personforhold_id: db.next_id(),
        person_id,
        personforholdkode: body.personforholdkode,
        aetatenhet: body.aetatenhet,
        dato_fra: body.dato_fra,
        dato_til: None,
        er_aktiv: "J".to_owned(),
        reg_dato: arena_date(now),
        reg_user: user.clone(),
        mod_dato: arena_date(now),
        mod_user: user,
    };
    db.personforhold.push(row.clone());
    drop(db);
    arena.record("personforhold.created", json!(row));
    (StatusCode::CREATED, Json(row)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct EndPersonforhold {
    dato_til: String,
    mod_user: Option<String>,
}

async fn end_personforhold(
    State(arena): State<Arena>,
    Path(id): Path<i64>,
    Json(body): Json<EndPersonforhold>,
) -> Response {
    let til = match parse_arena_date(&body.dato_til) {
        Ok(d) => d,
        Err(e) => return ords_error(StatusCode::BAD_REQUEST, e),
    };
    let now = arena.common.clock.now();
    let mut db = arena.db();
    let Some(row) = db.personforhold.iter_mut().find(|r| r.personforhold_id == id) else {
        return ords_error(StatusCode::NOT_FOUND, format!("PERSONFORHOLD_ID {id} finnes ikke"));
    };
    if row.er_aktiv == "N" {
        return ords_error(StatusCode::CONFLICT, "ORA-20020: personforholdet er allerede avsluttet");
    }
    if parse_arena_date(&row.dato_fra).is_ok_and(|fra| til < fra) {
        return ords_error(StatusCode::BAD_REQUEST, "ORA-20021: DATO_TIL kan ikke være før DATO_FRA");
    }
    row.dato_til = Some(body.dato_til);
    row.er_aktiv = "N".to_owned();
    row.mod_dato = arena_date(now);
    row.mod_user = body.mod_user.unwrap_or_else(|| "SIAMO".to_owned());
    let row = row.clone();
    drop(db);
    arena.record("personforhold.ended", json!(row));
    Json(row).into_response()
}

// ---- Activity plan ---------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct AktivitetBody {
    tittel: String,
    beskrivelse: Option<String>,
    fra_dato: String,
    til_dato: Option<String>,
    status: String,
    ansvarlig: String,
    /// On create: REG_USER. On update Arena records MOD_USER.
    #[serde(alias = "MOD_USER")]
    reg_user: Option<String>,
}

/// Checks an activity like Arena's constraints do; the error is the message.
fn check_aktivitet(b: &AktivitetBody) -> Result<(), String> {
    if b.tittel.trim().is_empty() || b.tittel.chars().count() > 255 {
        return Err("ORA-20030: TITTEL må ha 1-255 tegn".into());
    }
    if !AKTIVITET_STATUSES.contains(&b.status.as_str()) {
        return Err("ORA-20031: ugyldig STATUS (PLANLAGT, GJENNOMFORES, FULLFORT, AVBRUTT)".into());
    }
    if !ANSVARLIG.contains(&b.ansvarlig.as_str()) {
        return Err("ORA-20032: ugyldig ANSVARLIG (KOMMUNE, NAV, DELTAKER, ANNEN)".into());
    }
    let fra = parse_arena_date(&b.fra_dato)?;
    if let Some(til) = &b.til_dato
        && parse_arena_date(til)? < fra
    {
        return Err("ORA-20033: TIL_DATO kan ikke være før FRA_DATO".into());
    }
    Ok(())
}

async fn list_aktiviteter(State(arena): State<Arena>, Path(person_id): Path<i64>) -> Response {
    let db = arena.db();
    if !db.persons.iter().any(|p| p.person_id == person_id) {
        return ords_error(StatusCode::NOT_FOUND, format!("PERSON_ID {person_id} finnes ikke"));
    }
    collection(db.aktiviteter.iter().filter(|a| a.person_id == person_id).cloned().collect()).into_response()
}

async fn create_aktivitet(
    State(arena): State<Arena>,
    Path(person_id): Path<i64>,
    Json(body): Json<AktivitetBody>,
) -> Response {
    if let Err(message) = check_aktivitet(&body) {
        return ords_error(StatusCode::BAD_REQUEST, message);
    }
    let now = arena.common.clock.now();
    let mut db = arena.db();
    if !db.persons.iter().any(|p| p.person_id == person_id) {
        return ords_error(StatusCode::NOT_FOUND, format!("PERSON_ID {person_id} finnes ikke"));
    }
    let user = body.reg_user.unwrap_or_else(|| "SIAMO".to_owned());
    let row = Aktivitet {
        aktivitet_id: db.next_id(),
        person_id,
        tittel: body.tittel,
        beskrivelse: body.beskrivelse,
        fra_dato: body.fra_dato,
        til_dato: body.til_dato,
        status: body.status,
        ansvarlig: body.ansvarlig,
        reg_dato: arena_date(now),
        reg_user: user.clone(),
        mod_dato: arena_date(now),
        mod_user: user,
    };
    db.aktiviteter.push(row.clone());
    drop(db);
    arena.record("aktivitet.created", json!(row));
    (StatusCode::CREATED, Json(row)).into_response()
}

async fn update_aktivitet(
    State(arena): State<Arena>,
    Path((person_id, id)): Path<(i64, i64)>,
    Json(body): Json<AktivitetBody>,
) -> Response {
    if let Err(message) = check_aktivitet(&body) {
        return ords_error(StatusCode::BAD_REQUEST, message);
    }
    let now = arena.common.clock.now();
    let mut db = arena.db();
    let Some(row) = db.aktiviteter.iter_mut().find(|a| a.aktivitet_id == id && a.person_id == person_id) else {
        return ords_error(StatusCode::NOT_FOUND, format!("AKTIVITET_ID {id} finnes ikke for PERSON_ID {person_id}"));
    };
    row.tittel = body.tittel;
    row.beskrivelse = body.beskrivelse;
    row.fra_dato = body.fra_dato;
    row.til_dato = body.til_dato;
    row.status = body.status;
    row.ansvarlig = body.ansvarlig;
    row.mod_dato = arena_date(now);
    row.mod_user = body.reg_user.unwrap_or_else(|| "SIAMO".to_owned());
    let row = row.clone();
    drop(db);
    arena.record("aktivitet.updated", json!(row));
    Json(row).into_response()
}

async fn get_arbeidsgiver(State(arena): State<Arena>, Path(id): Path<i64>) -> Response {
    match arena.db().arbeidsgivere.iter().find(|a| a.arbgiv_id == id) {
        Some(a) => Json(a.clone()).into_response(),
        None => ords_error(StatusCode::NOT_FOUND, format!("ARBGIV_ID {id} finnes ikke")),
    }
}

// ---- Change feed -----------------------------------------------------------

#[derive(Deserialize)]
struct FeedQuery {
    fra_pos: Option<String>,
    antall: Option<usize>,
}

/// Changes after `fra_pos` (exclusive), oldest first, at most `antall`.
async fn feed(State(arena): State<Arena>, Query(q): Query<FeedQuery>) -> Response {
    let after = match q.fra_pos.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(p)) => p,
        Some(Err(_)) => return ords_error(StatusCode::BAD_REQUEST, "fra_pos må være en posisjon (20 siffer)"),
    };
    let limit = q.antall.unwrap_or(100).clamp(1, 1000);
    let db = arena.db();
    let rest: Vec<_> = db.feed.iter().filter(|e| e.pos.parse::<u64>().is_ok_and(|p| p > after)).collect();
    let items: Vec<_> = rest.iter().take(limit).map(|e| (*e).clone()).collect();
    let last = items.last().map(|e| e.pos.clone()).unwrap_or_else(|| format!("{after:020}"));
    Json(json!({ "items": items, "hasMore": rest.len() > limit, "siste_pos": last })).into_response()
}

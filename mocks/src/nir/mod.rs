//! A NIR-style mock (IMDi's national introduction register): XML over HTTP,
//! HTTP Basic users with roles, idempotent by natural key (person +
//! programme period), validating like a register does, with its own error
//! codes in an XML body.
//!
//! Roles: `kommuneintrobruker` may register the introduction programme;
//! `kommunenorskbruker` (Norwegian training only) may not. A user may be tied
//! to one kommune.

pub mod xml;

use crate::server::{Common, MockSystem};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::NaiveDate;
use serde::Serialize;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};
use xml::{
    Avslutning, Deltakelse, Deltakelser, Feil, Hurtigspor, NAMESPACE, Permisjoner, Sok, Stans, Stansliste,
    Tiltaksliste, from_xml, to_xml,
};

pub const BASE: &str = "/nir/ws4/v1";

/// The current municipality codes (SSB classification 131).
const KOMMUNER_CSV: &str = include_str!("../../../gateway/data/kommuner.csv");

pub const ROLE_INTRO: &str = "kommuneintrobruker";
pub const ROLE_NORSK: &str = "kommunenorskbruker";

#[derive(Clone, Debug)]
pub struct NirUser {
    pub username: String,
    pub password: String,
    pub role: String,
    /// The kommune the user reports for; `None` for any.
    pub kommunenummer: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NirConfig {
    pub users: Vec<NirUser>,
    pub seed: u64,
}

impl Default for NirConfig {
    fn default() -> Self {
        let user = |username: &str, role: &str| NirUser {
            username: username.to_owned(),
            password: "nir-dev-secret".to_owned(),
            role: role.to_owned(),
            kommunenummer: None,
        };
        Self { users: vec![user("intro", ROLE_INTRO), user("norsk", ROLE_NORSK)], seed: 1 }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct NirState {
    pub deltakelser: Vec<Deltakelse>,
    #[serde(skip)]
    next_id: u64,
}

#[derive(Clone)]
pub struct Nir {
    db: Arc<Mutex<NirState>>,
    config: Arc<NirConfig>,
    kommuner: Arc<HashSet<String>>,
    pub common: Common,
}

/// A refusal in NIR's terms.
struct Refusal {
    status: StatusCode,
    kode: &'static str,
    melding: String,
    felt: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, kode: &'static str, melding: impl Into<String>, felt: Option<&'static str>) -> Self {
        Self { status, kode, melding: melding.into(), felt }
    }

    fn invalid(kode: &'static str, melding: impl Into<String>, felt: &'static str) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, kode, melding, Some(felt))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let doc = Feil {
            xmlns: NAMESPACE.to_owned(),
            kode: self.kode.to_owned(),
            melding: self.melding,
            felt: self.felt.map(str::to_owned),
        };
        let mut r = (self.status, to_xml(&doc)).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"NIR\""));
        }
        r
    }
}

fn xml_response<T: Serialize>(status: StatusCode, doc: &T) -> Response {
    let mut r = (status, to_xml(doc)).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    r
}

fn date(value: &str, felt: &'static str) -> Result<NaiveDate, Refusal> {
    // xs:date without a time zone: exactly ÅÅÅÅ-MM-DD, zero-padded.
    Some(value)
        .filter(|v| v.len() == 10)
        .and_then(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
        .ok_or(())
        .map_err(|_| Refusal::invalid("NIR-E100", format!("Ugyldig dato i {felt}; bruk formatet ÅÅÅÅ-MM-DD"), felt))
}

/// Reads a period's end and checks it does not come before `fra` (NIR-E106).
fn not_before(fra: NaiveDate, til: &str, felt: &'static str) -> Result<NaiveDate, Refusal> {
    let til = date(til, felt)?;
    if til < fra {
        return Err(Refusal::invalid("NIR-E106", "Til-dato er før fra-dato", felt));
    }
    Ok(til)
}

fn one_of(value: &str, allowed: &[&str], felt: &'static str) -> Result<(), Refusal> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Refusal::invalid(
            "NIR-E103",
            format!("Ugyldig verdi i {felt}; gyldige verdier: {}", allowed.join(", ")),
            felt,
        ))
    }
}

impl Nir {
    pub fn new(config: NirConfig) -> Self {
        let kommuner =
            KOMMUNER_CSV.lines().skip(1).filter_map(|l| l.split_once(',')).map(|(k, _)| k.to_owned()).collect();
        Self {
            db: Arc::new(Mutex::new(NirState::default())),
            common: Common::new(config.seed),
            config: Arc::new(config),
            kommuner: Arc::new(kommuner),
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, NirState> {
        self.db.lock().expect("nir state lock")
    }
}

impl MockSystem for Nir {
    fn common(&self) -> &Common {
        &self.common
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(&*self.db()).expect("state serialises")
    }

    fn clear_tables(&self) {
        *self.db() = NirState::default();
    }

    fn routes(&self) -> Router {
        Router::new()
            .route(&format!("{BASE}/deltakelser"), post(register))
            .route(&format!("{BASE}/deltakelser/sok"), post(search))
            .route(&format!("{BASE}/deltakelser/{{id}}"), get(get_one))
            .route(&format!("{BASE}/deltakelser/{{id}}/hurtigspor"), put(put_hurtigspor))
            .route(&format!("{BASE}/deltakelser/{{id}}/tiltak"), put(put_tiltak))
            .route(&format!("{BASE}/deltakelser/{{id}}/permisjoner"), put(put_permisjoner))
            .route(&format!("{BASE}/deltakelser/{{id}}/stans"), post(add_stans))
            .route(&format!("{BASE}/deltakelser/{{id}}/avslutning"), put(put_avslutning))
            .with_state(self.clone())
    }
}

impl Nir {
    /// The caller, if the credentials match a user.
    fn authenticate(&self, headers: &HeaderMap) -> Result<NirUser, Refusal> {
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let unauthorized = || Refusal::new(StatusCode::UNAUTHORIZED, "NIR-E000", "Pålogging kreves", None);
        let (user, password) = credentials.as_deref().and_then(|c| c.split_once(':')).ok_or_else(unauthorized)?;
        self.config
            .users
            .iter()
            .find(|u| u.username == user && u.password == password)
            .cloned()
            .ok_or_else(unauthorized)
    }

    /// The caller, if allowed to register the introduction programme for `kommune`.
    fn authorize(&self, headers: &HeaderMap, kommune: Option<&str>) -> Result<NirUser, Refusal> {
        let user = self.authenticate(headers)?;
        if user.role != ROLE_INTRO {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "NIR-E001",
                "Brukeren har ikke tilgang til introduksjonsordningen (rolle kommuneintrobruker kreves)",
                None,
            ));
        }
        if let (Some(own), Some(k)) = (&user.kommunenummer, kommune)
            && own != k
        {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "NIR-E002",
                "Brukeren kan ikke registrere for denne kommunen",
                Some("Kommunenummer"),
            ));
        }
        Ok(user)
    }

    fn record(&self, kind: &str, d: &Deltakelse) {
        self.common.effects.record(self.common.clock.now(), kind, serde_json::to_value(d).expect("serialises"));
    }

    /// Runs `change` on participation `id` after the caller is authorised.
    fn change(
        &self,
        headers: &HeaderMap,
        id: u64,
        kind: &str,
        change: impl FnOnce(&mut Deltakelse) -> Result<(), Refusal>,
    ) -> Result<Response, Refusal> {
        let kommune =
            self.db().deltakelser.iter().find(|d| d.deltakelse_id == Some(id)).map(|d| d.kommunenummer.clone());
        let Some(kommune) = kommune else {
            return Err(Refusal::new(StatusCode::NOT_FOUND, "NIR-E404", format!("Deltakelse {id} finnes ikke"), None));
        };
        self.authorize(headers, Some(&kommune))?;
        let now = self.common.clock.now().format("%Y-%m-%dT%H:%M:%S").to_string();
        let mut db = self.db();
        let d = db.deltakelser.iter_mut().find(|d| d.deltakelse_id == Some(id)).expect("checked above");
        let mut updated = d.clone();
        change(&mut updated)?;
        updated.sist_endret = Some(now);
        *d = updated.clone();
        drop(db);
        self.record(kind, &updated);
        Ok(xml_response(StatusCode::OK, &updated))
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "NIR-E010", "Meldingen er ikke UTF-8", None))?;
    from_xml(text)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "NIR-E010", format!("Meldingen kan ikke leses: {e}"), None))
}

/// The period as dates: start and (planned) end, open-ended when unknown.
fn span(d: &Deltakelse) -> (NaiveDate, NaiveDate) {
    let start = NaiveDate::parse_from_str(&d.periode.startdato, "%Y-%m-%d").unwrap_or(NaiveDate::MIN);
    let end = d
        .avslutning
        .as_ref()
        .map(|a| a.sluttdato.as_str())
        .or(d.periode.planlagt_sluttdato.as_deref())
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .unwrap_or(NaiveDate::MAX);
    (start, end)
}

/// Registers a participation, or updates it when the natural key (person +
/// period start) is already registered.
async fn register(State(nir): State<Nir>, headers: HeaderMap, body: Bytes) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let mut d: Deltakelse = parse(&body)?;
    nir.authorize(&headers, Some(&d.kommunenummer))?;
    let fnr = &d.person.fodselsnummer;
    if fnr.len() != 11 || !fnr.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::invalid("NIR-E105", "Fødselsnummer må ha 11 siffer", "Person/Fodselsnummer"));
    }
    if !nir.kommuner.contains(&d.kommunenummer) {
        return Err(Refusal::invalid("NIR-E101", "Ukjent kommunenummer", "Kommunenummer"));
    }
    date(&d.vedtak.vedtaksdato, "Vedtak/Vedtaksdato")?;
    one_of(&d.vedtak.utfall, &["INNVILGET", "AVSLATT"], "Vedtak/Utfall")?;
    one_of(
        &d.vedtak.lovgrunnlag,
        &["INTRODUKSJONSLOVEN", "INTEGRERINGSLOVEN", "INTEGRERINGSLOVEN_KAP6A"],
        "Vedtak/Lovgrunnlag",
    )?;
    one_of(&d.vedtak.kategori, &["RETT_OG_PLIKT", "KAN_TILBYS"], "Vedtak/Kategori")?;
    let start = date(&d.periode.startdato, "Periode/Startdato")?;
    if let Some(end) = &d.periode.planlagt_sluttdato
        && date(end, "Periode/PlanlagtSluttdato")? < start
    {
        return Err(Refusal::invalid("NIR-E106", "Planlagt sluttdato er før startdato", "Periode/PlanlagtSluttdato"));
    }
    if let Some(h) = &d.hurtigspor {
        one_of(&h.status, HURTIGSPOR_STATUSES, "Hurtigspor/Status")?;
        if let Some(fra) = &h.fra {
            date(fra, "Hurtigspor/Fra")?;
        }
    }
    // Measures, leave, stops and the end are registered through their own
    // resources, where they are validated; here they are ignored.
    d.tiltaksliste = None;
    d.permisjoner = None;
    d.stansliste = None;
    d.avslutning = None;
    let now = nir.common.clock.now().format("%Y-%m-%dT%H:%M:%S").to_string();
    let mut db = nir.db();
    let existing = db
        .deltakelser
        .iter()
        .position(|x| x.person.fodselsnummer == *fnr && x.periode.startdato == d.periode.startdato);
    let (new_start, new_end) = span(&d);
    let overlaps = db.deltakelser.iter().enumerate().any(|(i, x)| {
        let (s, e) = span(x);
        Some(i) != existing && x.person.fodselsnummer == *fnr && new_start <= e && s <= new_end
    });
    if overlaps {
        return Err(Refusal::invalid(
            "NIR-E102",
            "Perioden overlapper en annen registrert periode for personen",
            "Periode",
        ));
    }
    if let Some(i) = existing {
        // An update must be allowed for the kommune that holds it, too.
        let held_by = db.deltakelser[i].kommunenummer.clone();
        drop(db);
        nir.authorize(&headers, Some(&held_by))?;
        db = nir.db();
    }
    let (status, kind) = match existing {
        Some(i) => {
            let old = &db.deltakelser[i];
            // Sub-resources are kept; the registration fields are replaced.
            d.deltakelse_id = old.deltakelse_id;
            d.registrert = old.registrert.clone();
            d.tiltaksliste = old.tiltaksliste.clone();
            d.permisjoner = old.permisjoner.clone();
            d.stansliste = old.stansliste.clone();
            d.avslutning = old.avslutning.clone();
            d.hurtigspor = d.hurtigspor.or(old.hurtigspor.clone());
            d.sist_endret = Some(now);
            d.xmlns = NAMESPACE.to_owned();
            db.deltakelser[i] = d.clone();
            (StatusCode::OK, "deltakelse.updated")
        }
        None => {
            db.next_id += 1;
            d.deltakelse_id = Some(db.next_id);
            d.registrert = Some(now.clone());
            d.sist_endret = Some(now);
            d.xmlns = NAMESPACE.to_owned();
            db.deltakelser.push(d.clone());
            (StatusCode::CREATED, "deltakelse.registered")
        }
    };
    drop(db);
    nir.record(kind, &d);
    Ok(xml_response(status, &d))
}

async fn search(State(nir): State<Nir>, headers: HeaderMap, body: Bytes) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let q: Sok = parse(&body)?;
    let found = nir.db().deltakelser.iter().filter(|d| d.person.fodselsnummer == q.fodselsnummer).cloned().collect();
    Ok(xml_response(StatusCode::OK, &Deltakelser { xmlns: NAMESPACE.to_owned(), deltakelse: found }))
}

async fn get_one(State(nir): State<Nir>, headers: HeaderMap, Path(id): Path<u64>) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let d = nir.db().deltakelser.iter().find(|d| d.deltakelse_id == Some(id)).cloned();
    d.map(|d| xml_response(StatusCode::OK, &d))
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "NIR-E404", format!("Deltakelse {id} finnes ikke"), None))
}

const HURTIGSPOR_STATUSES: &[&str] = &[
    "KANDIDAT",
    "BEKREFTET",
    "AVSLATT",
    "KVALIFISERING",
    "JOBBMATCHING",
    "ANSATT_MED_TILSKUDD",
    "ANSATT",
    "TILBAKE_TIL_ORDINAERT",
    "AVSLUTTET_UTEN_RESULTAT",
];

async fn put_hurtigspor(
    State(nir): State<Nir>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let h: Hurtigspor = parse(&body)?;
    one_of(&h.status, HURTIGSPOR_STATUSES, "Hurtigspor/Status")?;
    if let Some(fra) = &h.fra {
        date(fra, "Hurtigspor/Fra")?;
    }
    nir.change(&headers, id, "hurtigspor.set", |d| {
        d.hurtigspor = Some(h);
        Ok(())
    })
}

const TILTAKSTYPER: &[&str] = &[
    "NORSKOPPLAERING",
    "SPRAKPRAKSIS",
    "ARBEIDSTRENING",
    "LONNSTILSKUDD",
    "MENTOR",
    "KURS",
    "UTDANNING",
    "GODKJENNING",
    "ANNET",
];

async fn put_tiltak(
    State(nir): State<Nir>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let list: Tiltaksliste = parse(&body)?;
    for t in &list.tiltak {
        one_of(&t.type_, TILTAKSTYPER, "Tiltak/Type")?;
        let fra = date(&t.fra, "Tiltak/Fra")?;
        if let Some(til) = &t.til {
            not_before(fra, til, "Tiltak/Til")?;
        }
    }
    nir.change(&headers, id, "tiltak.replaced", |d| {
        d.tiltaksliste = Some(list);
        Ok(())
    })
}

async fn put_permisjoner(
    State(nir): State<Nir>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let list: Permisjoner = parse(&body)?;
    let mut periods = Vec::new();
    for p in &list.permisjon {
        date(&p.vedtaksdato, "Permisjon/Vedtaksdato")?;
        one_of(&p.arsak, &["FODSEL_OMSORG", "SYKDOM", "VELFERD", "ANNET"], "Permisjon/Arsak")?;
        let fra = date(&p.fra, "Permisjon/Fra")?;
        periods.push((fra, not_before(fra, &p.til, "Permisjon/Til")?));
    }
    periods.sort();
    if periods.windows(2).any(|w| w[1].0 <= w[0].1) {
        return Err(Refusal::invalid("NIR-E104", "Permisjonsperiodene overlapper", "Permisjon"));
    }
    nir.change(&headers, id, "permisjoner.replaced", |d| {
        let (start, end) = span(d);
        if periods.iter().any(|(f, t)| *f < start || *t > end) {
            return Err(Refusal::invalid("NIR-E107", "Permisjonen ligger utenfor programperioden", "Permisjon"));
        }
        d.permisjoner = Some(list);
        Ok(())
    })
}

async fn add_stans(
    State(nir): State<Nir>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let s: Stans = parse(&body)?;
    one_of(&s.type_, &["MIDLERTIDIG", "PERMANENT"], "Stans/Type")?;
    let fra = date(&s.fra, "Stans/Fra")?;
    if s.type_ == "MIDLERTIDIG" {
        let Some(til) = &s.til else {
            return Err(Refusal::invalid("NIR-E108", "Midlertidig stans krever til-dato", "Stans/Til"));
        };
        let til = not_before(fra, til, "Stans/Til")?;
        if til > fra.checked_add_months(chrono::Months::new(3)).unwrap_or(NaiveDate::MAX) {
            return Err(Refusal::invalid("NIR-E109", "Midlertidig stans kan vare høyst tre måneder", "Stans/Til"));
        }
    }
    nir.change(&headers, id, "stans.added", |d| {
        // Idempotent by natural key (type and start): a retry replaces.
        let list = &mut d.stansliste.get_or_insert_with(Stansliste::default).stans;
        match list.iter_mut().find(|x| x.type_ == s.type_ && x.fra == s.fra) {
            Some(existing) => *existing = s,
            None => list.push(s),
        }
        Ok(())
    })
}

const AVSLUTNINGSARSAKER: &[&str] = &["FULLFORT", "ARBEID", "UTDANNING", "FLYTTET", "STANSET", "EGET_ONSKE", "ANNET"];
const HOVEDAKTIVITETER: &[&str] = &["ARBEID", "UTDANNING", "ARBEID_OG_UTDANNING", "INGEN", "ANNET"];

async fn put_avslutning(
    State(nir): State<Nir>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    nir.authorize(&headers, None)?;
    let a: Avslutning = parse(&body)?;
    let slutt = date(&a.sluttdato, "Avslutning/Sluttdato")?;
    let Some(arsak) = a.avslutningsarsak.as_deref() else {
        return Err(Refusal::invalid("NIR-E110", "Avslutningsaarsak ikke registrert", "Avslutning/Avslutningsarsak"));
    };
    one_of(arsak, AVSLUTNINGSARSAKER, "Avslutning/Avslutningsarsak")?;
    if let Some(h) = a.hovedaktivitet_etter_avslutning.as_deref() {
        one_of(h, HOVEDAKTIVITETER, "Avslutning/HovedaktivitetEtterAvslutning")?;
    }
    nir.change(&headers, id, "avslutning.set", |d| {
        if slutt < span(d).0 {
            return Err(Refusal::invalid("NIR-E106", "Sluttdato er før startdato", "Avslutning/Sluttdato"));
        }
        d.avslutning = Some(a);
        Ok(())
    })
}

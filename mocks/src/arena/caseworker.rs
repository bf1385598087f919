//! Admin routes of the Arena mock: inspection, reset, known persons, and
//! caseworker actions (NAV starts, changes and ends a measure) that appear in
//! the change feed as Arena's CDC would publish them.

use super::{
    Arena, ords_error,
    state::{AARSAKER, Arbeidsgiver, DELTAKERSTATUSKODER, TILTAKSKODER, arena_date, parse_arena_date},
};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::Datelike;
use serde::Deserialize;
use serde_json::{Value, json};

pub(super) fn routes() -> Router<Arena> {
    Router::new()
        .route("/admin/persons", post(add_person))
        .route("/admin/caseworker/tiltak", post(start_measure))
        .route("/admin/caseworker/tiltakdeltaker/{id}/status", post(change_status))
        .route("/admin/caseworker/tiltakdeltaker/{id}/avslutt", post(end_measure))
        .route("/admin/caseworker/tiltakdeltaker/{id}/republiser", post(republish))
        .route("/admin/caseworker/tiltakdeltaker/{id}/slett", post(delete_measure))
}

fn bad(message: impl Into<String>) -> Response {
    ords_error(StatusCode::BAD_REQUEST, message)
}

#[derive(Deserialize)]
struct NewPerson {
    fodselsnr: String,
    fornavn: Option<String>,
    etternavn: Option<String>,
}

/// A person NAV already knows (before anyone registers them).
async fn add_person(State(arena): State<Arena>, Json(p): Json<NewPerson>) -> Response {
    if p.fodselsnr.len() != 11 || !p.fodselsnr.bytes().all(|b| b.is_ascii_digit()) {
        return bad("fodselsnr must be 11 digits");
    }
    let now = arena.common.clock.now();
    let mut db = arena.db();
    let (person_id, created) = db.ensure_person(&p.fodselsnr, now);
    if let Some(row) = db.persons.iter_mut().find(|r| r.person_id == person_id) {
        row.fornavn = p.fornavn.or(row.fornavn.take());
        row.etternavn = p.etternavn.or(row.etternavn.take());
    }
    drop(db);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, Json(json!({ "PERSON_ID": person_id }))).into_response()
}

#[derive(Deserialize)]
struct StartMeasure {
    fodselsnr: Option<String>,
    person_id: Option<i64>,
    tiltakskode: String,
    arbgiv_orgnr: Option<String>,
    arbgiv_navn: Option<String>,
    dato_fra: String,
    dato_til: Option<String>,
    prosent_deltid: Option<f64>,
    deltakerstatuskode: Option<String>,
    aetatenhet: Option<String>,
    reg_user: Option<String>,
}

/// NAV starts a measure: a case (SAK), a measure instance
/// (TILTAKGJENNOMFORING) and the person's participation (TILTAKDELTAKER),
/// each published as an insert.
async fn start_measure(State(arena): State<Arena>, Json(m): Json<StartMeasure>) -> Response {
    if !TILTAKSKODER.contains(&m.tiltakskode.as_str()) {
        return bad(format!("unknown TILTAKSKODE; one of {}", TILTAKSKODER.join(", ")));
    }
    let status = m.deltakerstatuskode.unwrap_or_else(|| "GJENN".to_owned());
    if !DELTAKERSTATUSKODER.contains(&status.as_str()) {
        return bad("unknown DELTAKERSTATUSKODE");
    }
    let fra = match parse_arena_date(&m.dato_fra) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    if let Some(Err(e)) = m.dato_til.as_deref().map(parse_arena_date) {
        return bad(e);
    }
    let now = arena.common.clock.now();
    let user = m.reg_user.unwrap_or_else(|| "USR1234".to_owned());
    let unit = m.aetatenhet.unwrap_or_else(|| "0314".to_owned());
    let mut db = arena.db();
    let person_id = match (m.person_id, m.fodselsnr.as_deref()) {
        (Some(id), _) if db.persons.iter().any(|p| p.person_id == id) => id,
        (None, Some(fnr)) if fnr.len() == 11 => db.ensure_person(fnr, now).0,
        _ => return bad("an existing person_id or an 11-digit fodselsnr is required"),
    };
    let arbgiv_id = match m.arbgiv_orgnr {
        Some(orgnr) => Some(match db.arbeidsgivere.iter().find(|a| a.orgnr == orgnr) {
            Some(a) => a.arbgiv_id,
            None => {
                let id = db.next_id();
                let navn = m.arbgiv_navn.unwrap_or_else(|| format!("ARBEIDSGIVER {orgnr}"));
                db.arbeidsgivere.push(Arbeidsgiver { arbgiv_id: id, orgnr, navn });
                id
            }
        }),
        None => None,
    };
    let sak_id = db.next_id();
    let lopenr = db.saker.len() as i64 + 1;
    let sak = json!({
        "SAK_ID": sak_id, "AAR": fra.year(), "LOPENRSAK": lopenr, "SAKSTATUSKODE": "AKTIV",
        "AETATENHET_ANSVARLIG": unit,
    });
    let gjennomforing_id = db.next_id();
    let gjennomforing = json!({
        "TILTAKGJENNOMFORING_ID": gjennomforing_id, "SAK_ID": sak_id, "TILTAKSKODE": m.tiltakskode,
        "DATO_FRA": m.dato_fra, "DATO_TIL": m.dato_til, "TILTAKSTATUSKODE": "GJENNOMFOR",
        "ARBGIV_ID_ARRANGOR": arbgiv_id,
    });
    let deltaker_id = db.next_id();
    let deltaker = json!({
        "TILTAKDELTAKER_ID": deltaker_id, "PERSON_ID": person_id, "TILTAKGJENNOMFORING_ID": gjennomforing_id,
        "DELTAKERSTATUSKODE": status, "AARSAKVERDIKODE_STATUS": null, "DATO_FRA": m.dato_fra,
        "DATO_TIL": m.dato_til, "PROSENT_DELTID": m.prosent_deltid.unwrap_or(100.0),
        "REG_DATO": arena_date(now), "REG_USER": user, "MOD_DATO": arena_date(now), "MOD_USER": user,
    });
    db.saker.push(sak.clone());
    db.tiltakgjennomforinger.push(gjennomforing.clone());
    db.tiltakdeltakere.push(deltaker.clone());
    db.publish("SIAMO.SAK", "I", None, Some(sak), now);
    db.publish("SIAMO.TILTAKGJENNOMFORING", "I", None, Some(gjennomforing), now);
    db.publish("SIAMO.TILTAKDELTAKER", "I", None, Some(deltaker.clone()), now);
    drop(db);
    arena.record("tiltak.started", deltaker);
    (
        StatusCode::CREATED,
        Json(json!({
            "PERSON_ID": person_id, "SAK_ID": sak_id, "TILTAKGJENNOMFORING_ID": gjennomforing_id,
            "TILTAKDELTAKER_ID": deltaker_id, "ARBGIV_ID_ARRANGOR": arbgiv_id,
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct StatusChange {
    deltakerstatuskode: String,
    aarsakverdikode: Option<String>,
    dato_til: Option<String>,
    mod_user: Option<String>,
}

/// Changes a participation's row and publishes the update.
fn update_deltaker(arena: &Arena, id: i64, change: StatusChange, kind: &str) -> Response {
    if !DELTAKERSTATUSKODER.contains(&change.deltakerstatuskode.as_str()) {
        return bad("unknown DELTAKERSTATUSKODE");
    }
    if change.aarsakverdikode.as_deref().is_some_and(|a| !AARSAKER.contains(&a)) {
        return bad(format!("unknown AARSAKVERDIKODE_STATUS; one of {}", AARSAKER.join(", ")));
    }
    if let Some(Err(e)) = change.dato_til.as_deref().map(parse_arena_date) {
        return bad(e);
    }
    let now = arena.common.clock.now();
    let mut db = arena.db();
    let Some(row) = db.tiltakdeltaker_mut(id) else {
        return ords_error(StatusCode::NOT_FOUND, format!("TILTAKDELTAKER_ID {id} finnes ikke"));
    };
    let before = row.clone();
    row["DELTAKERSTATUSKODE"] = json!(change.deltakerstatuskode);
    row["AARSAKVERDIKODE_STATUS"] = json!(change.aarsakverdikode);
    if let Some(til) = change.dato_til {
        row["DATO_TIL"] = json!(til);
    }
    row["MOD_DATO"] = json!(arena_date(now));
    row["MOD_USER"] = json!(change.mod_user.unwrap_or_else(|| "USR1234".to_owned()));
    let after = row.clone();
    db.publish("SIAMO.TILTAKDELTAKER", "U", Some(before), Some(after.clone()), now);
    drop(db);
    arena.record(kind, after.clone());
    Json(after).into_response()
}

async fn change_status(State(arena): State<Arena>, Path(id): Path<i64>, Json(c): Json<StatusChange>) -> Response {
    update_deltaker(&arena, id, c, "tiltak.status_changed")
}

/// Ends a participation, e.g. FULLF or DELAVB with reason BEGA (began in work).
async fn end_measure(State(arena): State<Arena>, Path(id): Path<i64>, Json(c): Json<StatusChange>) -> Response {
    const ENDING: &[&str] = &["FULLF", "DELAVB", "GJENN_AVB", "GJENN_AVL", "IKKEM"];
    let current = arena.db().tiltakdeltaker_mut(id).map(|r| r["DELTAKERSTATUSKODE"].as_str().unwrap_or("").to_owned());
    if current.as_deref().is_some_and(|s| ENDING.contains(&s)) {
        return ords_error(StatusCode::CONFLICT, "ORA-20040: deltakelsen er allerede avsluttet");
    }
    if !ENDING.contains(&c.deltakerstatuskode.as_str()) {
        return bad(format!("an ending DELTAKERSTATUSKODE is required: {}", ENDING.join(", ")));
    }
    if c.dato_til.is_none() {
        return bad("dato_til is required when a measure ends");
    }
    update_deltaker(&arena, id, c, "tiltak.ended")
}

/// Publishes the row again unchanged: an U with identical before and after,
/// as real feeds sometimes carry.
async fn republish(State(arena): State<Arena>, Path(id): Path<i64>) -> Response {
    let now = arena.common.clock.now();
    let mut db = arena.db();
    let Some(row) = db.tiltakdeltaker_mut(id).map(|r| r.clone()) else {
        return ords_error(StatusCode::NOT_FOUND, format!("TILTAKDELTAKER_ID {id} finnes ikke"));
    };
    db.publish("SIAMO.TILTAKDELTAKER", "U", Some(row.clone()), Some(row.clone()), now);
    Json(row).into_response()
}

/// Deletes a participation registered in error: a D with no after image.
async fn delete_measure(State(arena): State<Arena>, Path(id): Path<i64>) -> Response {
    let now = arena.common.clock.now();
    let mut db = arena.db();
    let Some(index) = db.tiltakdeltakere.iter().position(|r| r["TILTAKDELTAKER_ID"] == id) else {
        return ords_error(StatusCode::NOT_FOUND, format!("TILTAKDELTAKER_ID {id} finnes ikke"));
    };
    let row: Value = db.tiltakdeltakere.remove(index);
    db.publish("SIAMO.TILTAKDELTAKER", "D", Some(row.clone()), None, now);
    drop(db);
    arena.record("tiltak.deleted", row);
    StatusCode::NO_CONTENT.into_response()
}

//! The Arena mock over real HTTP: tokens, lookups, writes without idempotency,
//! the change feed and the caseworker actions that feed it.

mod common;

use hurtigspor_mocks::{
    arena::{Arena, ArenaConfig, BASE},
    server::{MockSystem, RunningMock},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const FNR: &str = "15838510075"; // synthetic (Tenor, month + 80)

struct Mock {
    arena: Arena,
    running: RunningMock,
    http: Client,
}

impl Mock {
    async fn start() -> Self {
        let arena = Arena::new(ArenaConfig::default());
        let running = arena.spawn("127.0.0.1:0").await.unwrap();
        Self { arena, running, http: Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    fn api(&self, path: &str) -> String {
        self.url(&format!("{BASE}{path}"))
    }

    async fn token(&self) -> String {
        common::arena_token(&self.http, &self.running.url()).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> reqwest::Response {
        self.http.post(self.api(path)).bearer_auth(token).json(&body).send().await.unwrap()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http.get(self.api(path)).bearer_auth(token).send().await.unwrap()
    }

    async fn admin(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).json(&body).send().await.unwrap()
    }

    async fn feed(&self, token: &str, from: &str, limit: usize) -> Value {
        self.get(token, &format!("/endringer?fra_pos={from}&antall={limit}")).await.json().await.unwrap()
    }
}

fn relation(fnr: &str) -> Value {
    json!({ "FODSELSNR": fnr, "PERSONFORHOLDKODE": "INTRO", "AETATENHET": "0314", "DATO_FRA": "2026-01-05 00:00:00" })
}

#[tokio::test]
async fn the_token_endpoint_checks_client_and_grant() {
    let m = Mock::start().await;
    let no_auth =
        m.http.post(m.url("/oauth/token")).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    assert_eq!(no_auth.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(no_auth.json::<Value>().await.unwrap()["error"], "invalid_client");
    let wrong = m
        .http
        .post(m.url("/oauth/token"))
        .basic_auth("hurtigspor-gateway", Some("guess"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let grant = m
        .http
        .post(m.url("/oauth/token"))
        .basic_auth("hurtigspor-gateway", Some("arena-dev-secret"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), StatusCode::BAD_REQUEST);
    assert_eq!(grant.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn every_call_needs_a_valid_unexpired_token() {
    let m = Mock::start().await;
    let none = m.http.get(m.api("/endringer")).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let forged = m.get("not-a-token", "/endringer").await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let token = m.token().await;
    assert_eq!(m.get(&token, "/endringer").await.status(), StatusCode::OK);
    m.arena.common.clock.advance(chrono::Duration::seconds(299));
    assert_eq!(m.get(&token, "/endringer").await.status(), StatusCode::OK, "still valid");
    m.arena.common.clock.advance(chrono::Duration::seconds(2));
    let expired = m.get(&token, "/endringer").await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json::<Value>().await.unwrap()["error_description"], "token unknown or expired");
}

#[tokio::test]
async fn person_lookup_maps_national_id_to_person_id() {
    let m = Mock::start().await;
    let token = m.token().await;
    let empty: Value = m.post(&token, "/personer/sok", json!({ "FODSELSNR": FNR })).await.json().await.unwrap();
    assert_eq!(empty["items"], json!([]));
    assert_eq!(empty["count"], 0);

    let created = m.admin("/admin/persons", json!({ "fodselsnr": FNR, "fornavn": "KARI" })).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let person_id = created.json::<Value>().await.unwrap()["PERSON_ID"].as_i64().unwrap();
    let found: Value = m.post(&token, "/personer/sok", json!({ "FODSELSNR": FNR })).await.json().await.unwrap();
    assert_eq!(found["items"][0]["PERSON_ID"], person_id);
    assert_eq!(found["items"][0]["FODSELSNR"], FNR);
    let by_id: Value = m.get(&token, &format!("/personer/{person_id}")).await.json().await.unwrap();
    assert_eq!(by_id["FODSELSNR"], FNR);
    let missing = m.get(&token, "/personer/1").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "NotFound");
}

#[tokio::test]
async fn a_blind_retry_of_a_write_creates_a_duplicate() {
    let m = Mock::start().await;
    let token = m.token().await;
    let first = m.post(&token, "/personforhold", relation(FNR)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["ER_AKTIV"], "J");
    assert_eq!(first["DATO_TIL"], Value::Null);
    let second: Value = m.post(&token, "/personforhold", relation(FNR)).await.json().await.unwrap();
    assert_ne!(first["PERSONFORHOLD_ID"], second["PERSONFORHOLD_ID"]);
    assert_eq!(first["PERSON_ID"], second["PERSON_ID"], "the person was registered once");

    let list: Value =
        m.get(&token, &format!("/personforhold?person_id={}", first["PERSON_ID"])).await.json().await.unwrap();
    assert_eq!(list["count"], 2, "no idempotency: two relations");
    assert_eq!(m.arena.common.effects.count("personforhold.created"), 2);
}

#[tokio::test]
async fn person_relation_validation_and_deregistration() {
    let m = Mock::start().await;
    let token = m.token().await;
    for (body, fragment) in [
        (
            json!({ "FODSELSNR": FNR, "PERSONFORHOLDKODE": "ARBS", "AETATENHET": "0314", "DATO_FRA": "2026-01-05 00:00:00" }),
            "PERSONFORHOLDKODE",
        ),
        (
            json!({ "FODSELSNR": FNR, "PERSONFORHOLDKODE": "INTRO", "AETATENHET": "314", "DATO_FRA": "2026-01-05 00:00:00" }),
            "AETATENHET",
        ),
        (
            json!({ "FODSELSNR": FNR, "PERSONFORHOLDKODE": "INTRO", "AETATENHET": "0314", "DATO_FRA": "2026-01-05" }),
            "ORA-01861",
        ),
        (json!({ "PERSONFORHOLDKODE": "INTRO", "AETATENHET": "0314", "DATO_FRA": "2026-01-05 00:00:00" }), "ORA-20012"),
    ] {
        let r = m.post(&token, "/personforhold", body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "BadRequest");
        assert!(e["message"].as_str().unwrap().contains(fragment), "{e}");
    }
    assert_eq!(m.arena.common.effects.count("personforhold.created"), 0, "nothing applied");

    let row: Value = m.post(&token, "/personforhold", relation(FNR)).await.json().await.unwrap();
    let id = row["PERSONFORHOLD_ID"].as_i64().unwrap();
    let end = |til: &str| {
        m.http
            .put(m.api(&format!("/personforhold/{id}/avslutt")))
            .bearer_auth(&token)
            .json(&json!({ "DATO_TIL": til }))
            .send()
    };
    assert_eq!(end("2025-12-31 00:00:00").await.unwrap().status(), StatusCode::BAD_REQUEST, "before DATO_FRA");
    let ended = end("2026-10-30 00:00:00").await.unwrap();
    assert_eq!(ended.status(), StatusCode::OK);
    let ended: Value = ended.json().await.unwrap();
    assert_eq!((ended["ER_AKTIV"].as_str(), ended["DATO_TIL"].as_str()), (Some("N"), Some("2026-10-30 00:00:00")));
    assert_eq!(end("2026-10-31 00:00:00").await.unwrap().status(), StatusCode::CONFLICT);
    let missing = m
        .http
        .put(m.api("/personforhold/1/avslutt"))
        .bearer_auth(&token)
        .json(&json!({ "DATO_TIL": "2026-10-31 00:00:00" }))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_activity_plan() {
    let m = Mock::start().await;
    let token = m.token().await;
    let row: Value = m.post(&token, "/personforhold", relation(FNR)).await.json().await.unwrap();
    let person = row["PERSON_ID"].as_i64().unwrap();
    let activity = json!({
        "TITTEL": "Norskopplæring B1", "BESKRIVELSE": "språkpraksis", "FRA_DATO": "2026-02-01 00:00:00",
        "TIL_DATO": "2026-06-30 00:00:00", "STATUS": "PLANLAGT", "ANSVARLIG": "KOMMUNE",
    });
    let created = m.post(&token, &format!("/aktivitetsplan/{person}/aktiviteter"), activity.clone()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let id = created["AKTIVITET_ID"].as_i64().unwrap();

    let mut changed = activity.clone();
    changed["STATUS"] = json!("GJENNOMFORES");
    let updated = m
        .http
        .put(m.api(&format!("/aktivitetsplan/{person}/aktiviteter/{id}")))
        .bearer_auth(&token)
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let plan: Value = m.get(&token, &format!("/aktivitetsplan/{person}/aktiviteter")).await.json().await.unwrap();
    assert_eq!(plan["count"], 1);
    assert_eq!(plan["items"][0]["STATUS"], "GJENNOMFORES");

    let mut bad = activity.clone();
    bad["STATUS"] = json!("DONE");
    assert_eq!(
        m.post(&token, &format!("/aktivitetsplan/{person}/aktiviteter"), bad).await.status(),
        StatusCode::BAD_REQUEST
    );
    let mut backwards = activity.clone();
    backwards["TIL_DATO"] = json!("2026-01-01 00:00:00");
    assert_eq!(
        m.post(&token, &format!("/aktivitetsplan/{person}/aktiviteter"), backwards).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(m.post(&token, "/aktivitetsplan/1/aktiviteter", activity).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(m.arena.common.effects.count("aktivitet.created"), 1);
}

#[tokio::test]
async fn caseworker_actions_appear_in_the_change_feed() {
    let m = Mock::start().await;
    let token = m.token().await;
    let started = m
        .admin(
            "/admin/caseworker/tiltak",
            json!({ "fodselsnr": FNR, "tiltakskode": "ARBTREN", "arbgiv_orgnr": "889640782", "dato_fra": "2026-03-01 00:00:00", "prosent_deltid": 60.0 }),
        )
        .await;
    assert_eq!(started.status(), StatusCode::CREATED);
    let ids: Value = started.json().await.unwrap();
    let deltaker = ids["TILTAKDELTAKER_ID"].as_i64().unwrap();

    let feed = m.feed(&token, "0", 100).await;
    let items = feed["items"].as_array().unwrap();
    let tables: Vec<_> = items.iter().map(|e| (e["table"].as_str().unwrap(), e["op_type"].as_str().unwrap())).collect();
    assert_eq!(tables, [("SIAMO.SAK", "I"), ("SIAMO.TILTAKGJENNOMFORING", "I"), ("SIAMO.TILTAKDELTAKER", "I")]);
    let insert = &items[2];
    assert!(insert.get("before").is_none(), "no before image on I");
    assert_eq!(insert["after"]["DELTAKERSTATUSKODE"], "GJENN");
    assert_eq!(insert["after"]["PERSON_ID"], ids["PERSON_ID"]);
    assert_eq!(insert["pos"].as_str().unwrap().len(), 20);
    assert!(chrono::NaiveDateTime::parse_from_str(insert["op_ts"].as_str().unwrap(), "%Y-%m-%d %H:%M:%S%.6f").is_ok());
    assert_eq!(items[1]["after"]["TILTAKSKODE"], "ARBTREN");

    // The employer is Arena's own number; a lookup gives the orgnr.
    let arbgiv = items[1]["after"]["ARBGIV_ID_ARRANGOR"].as_i64().unwrap();
    let employer: Value = m.get(&token, &format!("/arbeidsgivere/{arbgiv}")).await.json().await.unwrap();
    assert_eq!(employer["ORGNR"], "889640782");

    // Status change, end with BEGA, an identical republish, a deletion.
    let last = feed["siste_pos"].as_str().unwrap().to_owned();
    m.admin(&format!("/admin/caseworker/tiltakdeltaker/{deltaker}/status"), json!({ "deltakerstatuskode": "GJENN" }))
        .await;
    let ended = m
        .admin(
            &format!("/admin/caseworker/tiltakdeltaker/{deltaker}/avslutt"),
            json!({ "deltakerstatuskode": "FULLF", "aarsakverdikode": "BEGA", "dato_til": "2026-05-31 00:00:00" }),
        )
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    m.admin(&format!("/admin/caseworker/tiltakdeltaker/{deltaker}/republiser"), json!({})).await;
    let deleted = m.admin(&format!("/admin/caseworker/tiltakdeltaker/{deltaker}/slett"), json!({})).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let next = m.feed(&token, &last, 100).await;
    let items = next["items"].as_array().unwrap();
    let ops: Vec<_> = items.iter().map(|e| e["op_type"].as_str().unwrap()).collect();
    assert_eq!(ops, ["U", "U", "U", "D"]);
    assert_eq!(items[1]["before"]["DELTAKERSTATUSKODE"], "GJENN");
    assert_eq!(items[1]["after"]["DELTAKERSTATUSKODE"], "FULLF");
    assert_eq!(items[1]["after"]["AARSAKVERDIKODE_STATUS"], "BEGA");
    assert_eq!(items[2]["before"], items[2]["after"], "identical-row U");
    assert_eq!(items[3]["after"], Value::Null);
    assert_eq!(items[3]["before"]["TILTAKDELTAKER_ID"], deltaker);
}

#[tokio::test]
async fn the_feed_pages_by_position() {
    let m = Mock::start().await;
    let token = m.token().await;
    for code in ["ARBTREN", "MIDLONTIL", "MENTOR"] {
        let body = json!({ "fodselsnr": FNR, "tiltakskode": code, "arbgiv_orgnr": "889640782", "dato_fra": "2026-03-01 00:00:00" });
        assert_eq!(m.admin("/admin/caseworker/tiltak", body).await.status(), StatusCode::CREATED);
    }
    let mut from = "00000000000000000000".to_owned();
    let mut seen = Vec::new();
    loop {
        let page = m.feed(&token, &from, 4).await;
        let items = page["items"].as_array().unwrap();
        seen.extend(items.iter().map(|e| e["pos"].as_str().unwrap().to_owned()));
        from = page["siste_pos"].as_str().unwrap().to_owned();
        if !page["hasMore"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen.len(), 9);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "increasing, no repeats");
    let past_end = m.feed(&token, &from, 4).await;
    assert_eq!(past_end["items"], json!([]));
    assert_eq!(past_end["siste_pos"], from);
    assert_eq!(m.get(&token, "/endringer?fra_pos=abc").await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn caseworker_input_is_checked() {
    let m = Mock::start().await;
    let bad_code = json!({ "fodselsnr": FNR, "tiltakskode": "KAFFE", "dato_fra": "2026-03-01 00:00:00" });
    assert_eq!(m.admin("/admin/caseworker/tiltak", bad_code).await.status(), StatusCode::BAD_REQUEST);
    let ok = json!({ "fodselsnr": FNR, "tiltakskode": "ENKELAMO", "dato_fra": "2026-03-01 00:00:00" });
    let id = m.admin("/admin/caseworker/tiltak", ok).await.json::<Value>().await.unwrap()["TILTAKDELTAKER_ID"]
        .as_i64()
        .unwrap();
    let not_ending = json!({ "deltakerstatuskode": "GJENN", "dato_til": "2026-05-31 00:00:00" });
    assert_eq!(
        m.admin(&format!("/admin/caseworker/tiltakdeltaker/{id}/avslutt"), not_ending).await.status(),
        StatusCode::BAD_REQUEST
    );
    let bad_reason =
        json!({ "deltakerstatuskode": "FULLF", "aarsakverdikode": "LOTTO", "dato_til": "2026-05-31 00:00:00" });
    assert_eq!(
        m.admin(&format!("/admin/caseworker/tiltakdeltaker/{id}/avslutt"), bad_reason).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        m.admin("/admin/caseworker/tiltakdeltaker/1/status", json!({ "deltakerstatuskode": "GJENN" })).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn state_and_reset() {
    let m = Mock::start().await;
    let token = m.token().await;
    m.post(&token, "/personforhold", relation(FNR)).await;
    let state: Value = m.http.get(m.url("/admin/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["personforhold"].as_array().unwrap().len(), 1);
    assert_eq!(state["persons"][0]["FODSELSNR"], FNR);
    let effects: Value = m.http.get(m.url("/admin/effects")).send().await.unwrap().json().await.unwrap();
    assert_eq!(effects[0]["kind"], "personforhold.created");
    assert_eq!(m.admin("/admin/reset", json!({})).await.status(), StatusCode::NO_CONTENT);
    let state: Value = m.http.get(m.url("/admin/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["personforhold"], json!([]));
    assert_eq!(m.get(&token, "/endringer").await.status(), StatusCode::UNAUTHORIZED, "tokens are forgotten too");
}

#[tokio::test]
async fn dates_must_be_zero_padded_and_an_ended_measure_stays_ended() {
    let m = Mock::start().await;
    let token = m.token().await;
    let mut unpadded = relation(FNR);
    unpadded["DATO_FRA"] = json!("2026-1-5 0:0:0");
    let r = m.post(&token, "/personforhold", unpadded).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().starts_with("ORA-01861"));

    let body = json!({ "fodselsnr": FNR, "tiltakskode": "ARBTREN", "arbgiv_orgnr": "889640782", "dato_fra": "2026-03-01 00:00:00" });
    let id = m.admin("/admin/caseworker/tiltak", body).await.json::<Value>().await.unwrap()["TILTAKDELTAKER_ID"]
        .as_i64()
        .unwrap();
    let end = json!({ "deltakerstatuskode": "FULLF", "aarsakverdikode": "BEGA", "dato_til": "2026-05-31 00:00:00" });
    assert_eq!(
        m.admin(&format!("/admin/caseworker/tiltakdeltaker/{id}/avslutt"), end.clone()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        m.admin(&format!("/admin/caseworker/tiltakdeltaker/{id}/avslutt"), end).await.status(),
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found_in_ords_style() {
    let m = Mock::start().await;
    let token = m.token().await;
    for path in ["/arbeidsgivere/1", "/aktivitetsplan/1/aktiviteter", "/personer/1"] {
        let r = m.get(&token, path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "NotFound");
        assert!(body["type"].as_str().unwrap().starts_with("tag:oracle.com"));
    }
    let row: Value = m.post(&token, "/personforhold", relation(FNR)).await.json().await.unwrap();
    let activity =
        json!({ "TITTEL": "x", "FRA_DATO": "2026-02-01 00:00:00", "STATUS": "PLANLAGT", "ANSVARLIG": "NAV" });
    let r = m
        .http
        .put(m.api(&format!("/aktivitetsplan/{}/aktiviteter/1", row["PERSON_ID"])))
        .bearer_auth(&token)
        .json(&activity)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

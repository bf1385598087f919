//! The NIR mock over real HTTP: XML, roles, natural-key idempotency and the
//! register's validations with its own error codes.

use hurtigspor_mocks::{
    nir::{BASE, Nir, NirConfig, NirUser, ROLE_INTRO},
    server::{MockSystem, RunningMock},
};
use reqwest::{Client, StatusCode};

const FNR: &str = "15838510075";

struct Mock {
    nir: Nir,
    running: RunningMock,
    http: Client,
}

impl Mock {
    async fn start() -> Self {
        let mut config = NirConfig::default();
        config.users.push(NirUser {
            username: "bergen".into(),
            password: "pw".into(),
            role: ROLE_INTRO.into(),
            kommunenummer: Some("4601".into()),
        });
        let nir = Nir::new(config);
        let running = nir.spawn("127.0.0.1:0").await.unwrap();
        Self { nir, running, http: Client::new() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, user: (&str, &str), xml: &str) -> (StatusCode, String) {
        let r = self
            .http
            .request(method, format!("{}{BASE}{path}", self.running.url()))
            .basic_auth(user.0, Some(user.1))
            .header("content-type", "application/xml")
            .body(xml.to_owned())
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, xml: &str) -> (StatusCode, String) {
        self.send(reqwest::Method::POST, path, INTRO, xml).await
    }

    async fn put(&self, path: &str, xml: &str) -> (StatusCode, String) {
        self.send(reqwest::Method::PUT, path, INTRO, xml).await
    }
}

const INTRO: (&str, &str) = ("intro", "nir-dev-secret");

fn deltakelse(kommune: &str, start: &str, end: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Deltakelse xmlns="urn:no:imdi:nir:ws4:v1">
  <Person><Fodselsnummer>{FNR}</Fodselsnummer></Person>
  <Kommunenummer>{kommune}</Kommunenummer>
  <Vedtak><Vedtaksdato>2026-01-02</Vedtaksdato><Utfall>INNVILGET</Utfall><Lovgrunnlag>INTEGRERINGSLOVEN</Lovgrunnlag><Kategori>RETT_OG_PLIKT</Kategori></Vedtak>
  <Periode><Startdato>{start}</Startdato><PlanlagtSluttdato>{end}</PlanlagtSluttdato></Periode>
</Deltakelse>"#
    )
}

/// The text of element `tag` in `xml`.
fn element(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_owned())
}

async fn registered(m: &Mock) -> u64 {
    let (status, body) = m.post("/deltakelser", &deltakelse("0301", "2026-01-05", "2028-01-04")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    element(&body, "DeltakelseId").unwrap().parse().unwrap()
}

#[tokio::test]
async fn registration_is_idempotent_by_person_and_period() {
    let m = Mock::start().await;
    let id = registered(&m).await;
    let (status, body) = m.post("/deltakelser", &deltakelse("0301", "2026-01-05", "2027-12-31")).await;
    assert_eq!(status, StatusCode::OK, "same natural key: an update");
    assert_eq!(element(&body, "DeltakelseId").unwrap(), id.to_string());
    assert_eq!(element(&body, "PlanlagtSluttdato").unwrap(), "2027-12-31");
    assert!(body.starts_with("<?xml") && body.contains("xmlns=\"urn:no:imdi:nir:ws4:v1\""));
    let state = m.nir.state();
    assert_eq!(state["deltakelser"].as_array().unwrap().len(), 1);
    assert_eq!(m.nir.common.effects.count("deltakelse.registered"), 1);
    assert_eq!(m.nir.common.effects.count("deltakelse.updated"), 1);

    let (status, body) = m.post("/deltakelser/sok", &format!("<Sok><Fodselsnummer>{FNR}</Fodselsnummer></Sok>")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.matches("<Deltakelse>").count() + body.matches("<Deltakelse ").count(), 1, "{body}");
}

#[tokio::test]
async fn overlapping_periods_are_refused() {
    let m = Mock::start().await;
    registered(&m).await;
    let (status, body) = m.post("/deltakelser", &deltakelse("0301", "2027-06-01", "2029-01-01")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(element(&body, "Kode").unwrap(), "NIR-E102");
    assert_eq!(element(&body, "Felt").unwrap(), "Periode");
    // A later period that does not overlap is a second registration.
    let (status, _) = m.post("/deltakelser", &deltakelse("0301", "2028-02-01", "2029-01-01")).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn register_validations_answer_with_nir_codes() {
    let m = Mock::start().await;
    let cases = [
        (deltakelse("3004", "2026-01-05", "2028-01-04"), "NIR-E101"),
        (deltakelse("0301", "05.01.2026", "2028-01-04"), "NIR-E100"),
        (deltakelse("0301", "2026-01-05", "2025-01-04"), "NIR-E106"),
        (deltakelse("0301", "2026-01-05", "2028-01-04").replace("RETT_OG_PLIKT", "KANSKJE"), "NIR-E103"),
        (deltakelse("0301", "2026-01-05", "2028-01-04").replace(FNR, "123"), "NIR-E105"),
    ];
    for (xml, code) in cases {
        let (status, body) = m.post("/deltakelser", &xml).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(element(&body, "Kode").as_deref(), Some(code), "{body}");
    }
    let (status, body) = m.post("/deltakelser", "<Deltakelse><Oops>").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(element(&body, "Kode").unwrap(), "NIR-E010");
    assert!(m.nir.common.effects.all().is_empty(), "nothing registered");
}

#[tokio::test]
async fn roles_and_kommune_bound_users() {
    let m = Mock::start().await;
    let xml = deltakelse("0301", "2026-01-05", "2028-01-04");
    let (status, body) = m.send(reqwest::Method::POST, "/deltakelser", ("norsk", "nir-dev-secret"), &xml).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(element(&body, "Kode").unwrap(), "NIR-E001");
    let (status, body) = m.send(reqwest::Method::POST, "/deltakelser", ("bergen", "pw"), &xml).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(element(&body, "Kode").unwrap(), "NIR-E002");
    let (status, _) = m.send(reqwest::Method::POST, "/deltakelser", ("intro", "wrong"), &xml).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = m.http.post(format!("{}{BASE}/deltakelser", m.running.url())).body(xml.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert!(m.nir.common.effects.all().is_empty());
}

#[tokio::test]
async fn measures_with_the_hurtigspor_marker_leave_and_stop() {
    let m = Mock::start().await;
    let id = registered(&m).await;
    let (status, body) = m
        .put(
            &format!("/deltakelser/{id}/tiltak"),
            "<Tiltaksliste><Tiltak><Type>SPRAKPRAKSIS</Type><Fra>2026-02-01</Fra><Hurtigspor>true</Hurtigspor></Tiltak>\
             <Tiltak><Type>NORSKOPPLAERING</Type><Fra>2026-01-05</Fra><Til>2026-12-31</Til></Tiltak></Tiltaksliste>",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<Hurtigspor>true</Hurtigspor>"), "{body}");
    let (status, body) = m
        .put(
            &format!("/deltakelser/{id}/hurtigspor"),
            "<Hurtigspor><Markert>true</Markert><Status>KANDIDAT</Status><Fra>2026-02-10</Fra></Hurtigspor>",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = m
        .put(
            &format!("/deltakelser/{id}/hurtigspor"),
            "<Hurtigspor><Markert>true</Markert><Status>SUPERSTAR</Status></Hurtigspor>",
        )
        .await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E103")));

    let leave = |a: &str, b: &str, c: &str, d: &str| {
        format!(
            "<Permisjoner><Permisjon><Vedtaksdato>2026-03-01</Vedtaksdato><Fra>{a}</Fra><Til>{b}</Til><Arsak>SYKDOM</Arsak></Permisjon>\
             <Permisjon><Vedtaksdato>2026-03-01</Vedtaksdato><Fra>{c}</Fra><Til>{d}</Til><Arsak>VELFERD</Arsak></Permisjon></Permisjoner>"
        )
    };
    let (status, body) = m
        .put(&format!("/deltakelser/{id}/permisjoner"), &leave("2026-03-01", "2026-03-31", "2026-03-31", "2026-04-10"))
        .await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E104")));
    let (status, body) = m
        .put(&format!("/deltakelser/{id}/permisjoner"), &leave("2025-03-01", "2025-03-31", "2026-04-01", "2026-04-10"))
        .await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E107")));
    let (status, _) = m
        .put(&format!("/deltakelser/{id}/permisjoner"), &leave("2026-03-01", "2026-03-31", "2026-04-01", "2026-04-10"))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = m
        .post(
            &format!("/deltakelser/{id}/stans"),
            "<Stans><Type>MIDLERTIDIG</Type><Fra>2026-05-01</Fra><Til>2026-09-01</Til></Stans>",
        )
        .await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E109")));
    let (status, body) = m
        .post(&format!("/deltakelser/{id}/stans"), "<Stans><Type>MIDLERTIDIG</Type><Fra>2026-05-01</Fra></Stans>")
        .await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E108")));
    let (status, _) = m
        .post(
            &format!("/deltakelser/{id}/stans"),
            "<Stans><Type>MIDLERTIDIG</Type><Fra>2026-05-01</Fra><Til>2026-06-01</Til></Stans>",
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = m.send(reqwest::Method::GET, &format!("/deltakelser/{id}"), INTRO, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<Status>KANDIDAT</Status>")
            && body.contains("<Arsak>VELFERD</Arsak>")
            && body.contains("<Type>MIDLERTIDIG</Type>"),
        "{body}"
    );
}

#[tokio::test]
async fn an_end_needs_its_reason() {
    let m = Mock::start().await;
    let id = registered(&m).await;
    let (status, body) = m
        .put(&format!("/deltakelser/{id}/avslutning"), "<Avslutning><Sluttdato>2026-10-30</Sluttdato></Avslutning>")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(element(&body, "Kode").unwrap(), "NIR-E110");
    assert_eq!(element(&body, "Melding").unwrap(), "Avslutningsaarsak ikke registrert");
    let end = "<Avslutning><Sluttdato>2026-10-30</Sluttdato><Avslutningsarsak>ARBEID</Avslutningsarsak>\
               <HovedaktivitetEtterAvslutning>ARBEID</HovedaktivitetEtterAvslutning></Avslutning>";
    let (status, body) = m.put(&format!("/deltakelser/{id}/avslutning"), end).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Idempotent: the same end again changes nothing but the timestamp.
    let (status, _) = m.put(&format!("/deltakelser/{id}/avslutning"), end).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        m.put(&format!("/deltakelser/{id}/avslutning"), &end.replace("2026-10-30", "2025-01-01")).await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E106")));
    let (status, body) = m.put("/deltakelser/999/avslutning", end).await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::NOT_FOUND, Some("NIR-E404")));
}

#[tokio::test]
async fn stops_are_idempotent_and_dates_are_strict() {
    let m = Mock::start().await;
    let id = registered(&m).await;
    let stop = "<Stans><Type>MIDLERTIDIG</Type><Fra>2026-05-01</Fra><Til>2026-06-01</Til></Stans>";
    m.post(&format!("/deltakelser/{id}/stans"), stop).await;
    let (status, body) = m.post(&format!("/deltakelser/{id}/stans"), stop).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.matches("<Stans>").count(), 1, "a retry replaces: {body}");
    let (status, body) = m
        .post(
            &format!("/deltakelser/{id}/stans"),
            "<Stans><Type>MIDLERTIDIG</Type><Fra>2026-05-01</Fra><Til>2026-04-01</Til></Stans>",
        )
        .await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E106")));
    let (status, body) = m.post("/deltakelser", &deltakelse("0301", "2026-1-5", "2028-01-04")).await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("NIR-E100")));
}

#[tokio::test]
async fn a_kommune_bound_user_cannot_take_over_another_kommunes_registration() {
    let m = Mock::start().await;
    registered(&m).await; // held by 0301
    let takeover = deltakelse("4601", "2026-01-05", "2028-01-04");
    let (status, body) = m.send(reqwest::Method::POST, "/deltakelser", ("bergen", "pw"), &takeover).await;
    assert_eq!((status, element(&body, "Kode").as_deref()), (StatusCode::FORBIDDEN, Some("NIR-E002")));
    assert_eq!(m.nir.state()["deltakelser"][0]["Kommunenummer"], "0301");
}

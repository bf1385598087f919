//! Changes made in Arena and NOKUT come back: NAV's measures and BEGA from
//! Arena's change feed, recognition decisions from NOKUT's webhooks (and
//! polling), into the canonical record, NIR and `WatchChanges`, without
//! anyone typing them again.

use crate::helpers::*;
use futures::StreamExt;
use hurtigspor_proto::v1::{
    ChangeEvent, CompetenceMapping, DecisionMaker, Education, EducationLevel, EndMeasureRequest, EndProgrammeRequest,
    HurtigsporStatus as S, InboundStatus, IndividualPlan, ListInboundChangesRequest, MainActivity, MeasureEndReason,
    MeasureKind, MeasureStatus, OpenRecognitionCaseRequest, Participant, PlanGoal, ProgrammeEndReason, RecognitionCase,
    RecognitionDecision, RecognitionScheme, RecognitionStatus, RecordCompetenceMappingRequest,
    ReingestInboundChangesRequest, ResponsibleParty, TransitionHurtigsporRequest, UpdateIndividualPlanRequest,
    WatchChangesRequest,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tonic::Code;

const EMPLOYER: &str = "889640782";

/// A caseworker action in the Arena mock (NAV working in Arena).
async fn caseworker(app: &TestApp, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/admin/caseworker/{path}", app.mocks["arena"]))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "caseworker {path}: {}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

/// Moves NOKUT's virtual clock on and lets due cases change (webhooks go
/// out before this returns).
async fn advance_nokut(app: &TestApp, days: i64) {
    let http = reqwest::Client::new();
    let base = &app.mocks["nokut"];
    http.post(format!("{base}/admin/clock/advance")).json(&json!({ "seconds": days * 86_400 })).send().await.unwrap();
    http.post(format!("{base}/admin/tick")).send().await.unwrap();
}

/// Collects every change event from the start, in the background.
fn watch(app: &TestApp) -> Arc<Mutex<Vec<ChangeEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (sink, addr, token) = (events.clone(), app.addr, app.token.clone());
    tokio::spawn(async move {
        let mut client = hurtigspor_proto::v1::sync_service_client::SyncServiceClient::new(channel(addr, &token).await);
        let mut stream = client.watch_changes(WatchChangesRequest::default()).await.unwrap().into_inner();
        while let Some(Ok(event)) = stream.next().await {
            sink.lock().unwrap().push(event);
        }
    });
    events
}

/// Waits until the stream has an event that satisfies `check`; returns its
/// participant.
async fn event_where(
    events: &Arc<Mutex<Vec<ChangeEvent>>>,
    what: &str,
    check: impl Fn(&ChangeEvent) -> bool,
) -> Participant {
    until(
        what,
        || {
            let found = events.lock().unwrap().iter().find(|e| check(e)).cloned();
            async move { found }
        },
        Option::is_some,
    )
    .await
    .and_then(|e| e.participant)
    .unwrap()
}

async fn record_until(app: &TestApp, name: &str, check: impl Fn(&Participant) -> bool) -> Participant {
    until("the canonical record", || app.client.clone().get_participant_owned(name), check).await
}

trait GetOwned {
    fn get_participant_owned(self, name: &str) -> impl std::future::Future<Output = Participant> + Send;
}

impl GetOwned for Client {
    async fn get_participant_owned(mut self, name: &str) -> Participant {
        let request = hurtigspor_proto::v1::GetParticipantRequest { name: name.to_owned() };
        self.get_participant(request).await.unwrap().into_inner()
    }
}

fn status(p: &Participant) -> S {
    S::try_from(p.hurtigspor.as_ref().map_or(0, |h| h.status)).unwrap()
}

fn version(p: &Participant) -> i64 {
    p.etag.trim_start_matches("W/").trim_matches('"').parse().unwrap()
}

fn nir_tiltak(nir: &Value) -> Vec<Value> {
    nir["deltakelser"][0]["Tiltaksliste"]["Tiltak"].as_array().cloned().unwrap_or_default()
}

fn intro_relation(arena: &Value) -> Option<Value> {
    arena["personforhold"].as_array()?.iter().find(|r| r["PERSONFORHOLDKODE"] == "INTRO").cloned()
}

/// A kommune (or joint) decision that took effect on `on`.
async fn kommune_moves(app: &TestApp, name: &str, to: S, on: (i32, i32, i32)) -> Participant {
    app.client
        .clone()
        .transition_hurtigspor(TransitionHurtigsporRequest {
            name: name.to_owned(),
            status: to as i32,
            effective_date: date(on.0, on.1, on.2),
            decided_by: if to == S::Confirmed { DecisionMaker::Joint } else { DecisionMaker::Kommune } as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The journey from the guidance, step by step, with every system's state
/// asserted at each step.
#[tokio::test]
async fn the_journey_from_the_guidance() {
    let app = spawn_app().await;
    let events = watch(&app);
    let mut c = app.client.clone();

    // 1. Registered with a competence mapping: NIR has the programme, Arena
    //    nothing yet (not a candidate).
    let mut input = minimal_participant();
    input.nav_office = "0314".into();
    let p = app.create(input).await;
    let p = c
        .record_competence_mapping(RecordCompetenceMappingRequest {
            name: p.name.clone(),
            competence: Some(CompetenceMapping {
                mapped_date: date(2026, 2, 1),
                educations: vec![Education {
                    level: EducationLevel::Bachelor as i32,
                    field: "nursing".into(),
                    country_code: "SY".into(),
                    documented: true,
                    completed_year: 2015,
                }],
                ..Default::default()
            }),
            etag: p.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let name = p.name.clone();
    let nir = app.eventually("nir", |s| s["deltakelser"].as_array().is_some_and(|d| d.len() == 1)).await;
    assert!(nir["deltakelser"][0].get("Hurtigspor").is_none_or(Value::is_null), "no mark before candidacy");
    assert!(intro_relation(&app.mock_state("arena").await).is_none(), "Arena needs nothing yet");

    // 2. CANDIDATE: Arena has the person with the INTRO relation; NIR the mark.
    kommune_moves(&app, &name, S::Candidate, (2026, 2, 10)).await;
    let arena = app.eventually("arena", |s| intro_relation(s).is_some()).await;
    assert_eq!(intro_relation(&arena).unwrap()["ER_AKTIV"], "J");
    assert_eq!(intro_relation(&arena).unwrap()["AETATENHET"], "0314");
    let nir = app.eventually("nir", |s| s["deltakelser"][0]["Hurtigspor"]["Status"] == "KANDIDAT").await;
    assert_eq!(nir["deltakelser"][0]["Hurtigspor"]["Markert"], true);

    // 3. CONFIRMED in the joint meeting.
    kommune_moves(&app, &name, S::Confirmed, (2026, 3, 1)).await;
    app.eventually("nir", |s| s["deltakelser"][0]["Hurtigspor"]["Status"] == "BEKREFTET").await;
    let arena = app.mock_state("arena").await;
    assert_eq!(intro_relation(&arena).unwrap()["ER_AKTIV"], "J", "still registered, once");
    assert_eq!(arena["personforhold"].as_array().unwrap().len(), 1);
    assert!(app.mock_state("nokut").await["saker"].as_array().unwrap().is_empty(), "no case opened yet");

    // 4. The plan appears as Arena activities.
    let plan = IndividualPlan {
        main_goal: "work as a nurse".into(),
        goals: vec![
            PlanGoal {
                description: "authorisation as a nurse".into(),
                measure: "recognition and language course".into(),
                start_date: date(2026, 3, 1),
                end_date: date(2026, 9, 30),
                responsible: ResponsibleParty::Kommune as i32,
                ..Default::default()
            },
            PlanGoal {
                description: "work practice at a nursing home".into(),
                measure: "work training".into(),
                start_date: date(2026, 9, 1),
                responsible: ResponsibleParty::Nav as i32,
                ..Default::default()
            },
        ],
    };
    c.update_individual_plan(UpdateIndividualPlanRequest { name: name.clone(), plan: Some(plan), etag: String::new() })
        .await
        .unwrap();
    let arena = app.eventually("arena", |s| s["aktiviteter"].as_array().is_some_and(|a| a.len() == 2)).await;
    let titles: Vec<_> = arena["aktiviteter"].as_array().unwrap().iter().map(|a| a["TITTEL"].clone()).collect();
    assert!(titles.contains(&json!("authorisation as a nurse")), "{titles:?}");
    assert!(arena["aktiviteter"].as_array().unwrap().iter().any(|a| a["ANSVARLIG"] == "NAV"));

    // 5. A recognition case reaches NOKUT; its decision (60 days on NOKUT's
    //    clock) comes back into the record, NIR and the stream.
    c.open_recognition_case(nursing_case(&name)).await.unwrap();
    let nokut = app.eventually("nokut", |s| s["saker"].as_array().is_some_and(|v| v.len() == 1)).await;
    let number = nokut["saker"][0]["saksnummer"].as_str().unwrap().to_owned();
    record_until(&app, &name, |p| p.recognition_cases[0].case_number == number).await;
    app.eventually("nir", |s| nir_tiltak(s).iter().any(|t| t["Type"] == "GODKJENNING" && t.get("Til").is_none())).await;
    advance_nokut(&app, 61).await;
    event_where(&events, "NOKUT's decision on the stream", |e| {
        e.origin == "nokut"
            && e.kind == "recognition.updated"
            && e.participant
                .as_ref()
                .is_some_and(|p| p.recognition_cases[0].status == RecognitionStatus::Decided as i32)
    })
    .await;
    let record =
        record_until(&app, &name, |p| p.recognition_cases[0].status == RecognitionStatus::Decided as i32).await;
    let case = &record.recognition_cases[0];
    assert_eq!(case.decision, RecognitionDecision::Approved as i32);
    let decision_date = case.decision_date.unwrap();
    let til = format!("{:04}-{:02}-{:02}", decision_date.year, decision_date.month, decision_date.day);
    assert_eq!(nokut_decision_date(&app).await, til, "the decision date is NOKUT's");
    app.eventually("nir", |s| nir_tiltak(s).iter().any(|t| t["Type"] == "GODKJENNING" && t["Til"] == til.as_str()))
        .await;

    // 6. Qualifying, then job matching; NAV starts work training in Arena
    //    and it appears everywhere without anyone typing it.
    kommune_moves(&app, &name, S::Qualifying, (2026, 3, 2)).await;
    let matching = kommune_moves(&app, &name, S::JobMatching, (2026, 8, 15)).await;
    let training = caseworker(
        &app,
        "tiltak",
        json!({ "fodselsnr": p.national_id, "tiltakskode": "ARBTREN", "arbgiv_orgnr": EMPLOYER,
                "dato_fra": "2026-09-01 00:00:00", "prosent_deltid": 60.0 }),
    )
    .await;
    let training_id = format!("arena-{}", training["TILTAKDELTAKER_ID"]);
    let after = version(&matching);
    event_where(&events, "NAV's work training on the stream", |e| {
        e.origin == "arena"
            && e.version > after
            && e.participant.as_ref().is_some_and(|p| p.measures.iter().any(|m| m.id == training_id))
    })
    .await;
    let record = record_until(&app, &name, |p| p.measures.iter().any(|m| m.id == training_id)).await;
    let m = record.measures.iter().find(|m| m.id == training_id).unwrap();
    assert_eq!(
        (m.kind, m.status, m.employer_orgnr.as_str(), m.position_percent),
        (MeasureKind::WorkTraining as i32, MeasureStatus::Active as i32, EMPLOYER, 60)
    );
    assert_eq!(status(&record), S::JobMatching, "work training moves nothing");
    app.eventually("nir", |s| {
        nir_tiltak(s)
            .iter()
            .any(|t| t["Type"] == "ARBEIDSTRENING" && t["Fra"] == "2026-09-01" && t["Hurtigspor"] == true)
    })
    .await;

    // 7. The work training ends and a wage subsidy starts: hurtigspor moves to
    //    EMPLOYED_WITH_SUBSIDY, decided by NAV.
    caseworker(
        &app,
        &format!("tiltakdeltaker/{}/avslutt", training["TILTAKDELTAKER_ID"]),
        json!({ "deltakerstatuskode": "FULLF", "dato_til": "2026-09-30 00:00:00" }),
    )
    .await;
    let subsidy = caseworker(
        &app,
        "tiltak",
        json!({ "fodselsnr": p.national_id, "tiltakskode": "MIDLONTIL", "arbgiv_orgnr": EMPLOYER,
                "dato_fra": "2026-10-01 00:00:00", "prosent_deltid": 100.0 }),
    )
    .await;
    let subsidy_id = format!("arena-{}", subsidy["TILTAKDELTAKER_ID"]);
    let record = record_until(&app, &name, |p| status(p) == S::EmployedWithSubsidy).await;
    event_where(&events, "NAV's wage subsidy on the stream", |e| {
        e.origin == "arena"
            && e.participant.as_ref().is_some_and(|p| {
                p.measures.iter().any(|m| m.id == subsidy_id)
                    && p.hurtigspor.as_ref().is_some_and(|h| h.status == S::EmployedWithSubsidy as i32)
            })
    })
    .await;
    let h = record.hurtigspor.as_ref().unwrap();
    assert_eq!(h.decided_by, DecisionMaker::Nav as i32);
    let by_id = |id: &str| record.measures.iter().find(|m| m.id == id).cloned().unwrap();
    assert_eq!(by_id(&training_id).status, MeasureStatus::Completed as i32);
    assert_eq!(by_id(&training_id).end_date, date(2026, 9, 30));
    assert_eq!(by_id(&subsidy_id).kind, MeasureKind::TemporaryWageSubsidy as i32);
    let nir = app
        .eventually("nir", |s| {
            s["deltakelser"][0]["Hurtigspor"]["Status"] == "ANSATT_MED_TILSKUDD"
                && nir_tiltak(s).iter().any(|t| t["Type"] == "LONNSTILSKUDD")
        })
        .await;
    assert!(nir_tiltak(&nir).iter().any(|t| t["Type"] == "ARBEIDSTRENING" && t["Til"] == "2026-09-30"));

    // 8. The participant gets work: NAV ends the subsidy with BEGA.
    caseworker(
        &app,
        &format!("tiltakdeltaker/{}/avslutt", subsidy["TILTAKDELTAKER_ID"]),
        json!({ "deltakerstatuskode": "FULLF", "aarsakverdikode": "BEGA", "dato_til": "2026-11-15 00:00:00" }),
    )
    .await;
    let record = record_until(&app, &name, |p| status(p) == S::Employed).await;
    let subsidy_now = record.measures.iter().find(|m| m.id == subsidy_id).unwrap();
    assert_eq!(subsidy_now.end_reason, MeasureEndReason::BeganWork as i32);
    assert!(record.hurtigspor.as_ref().unwrap().end_date.is_some(), "EMPLOYED ends hurtigspor");
    app.eventually("nir", |s| s["deltakelser"][0]["Hurtigspor"]["Status"] == "ANSATT").await;
    let arena = app.mock_state("arena").await;
    assert_eq!(intro_relation(&arena).unwrap()["ER_AKTIV"], "J", "still in the programme: still registered");
    let nokut = app.mock_state("nokut").await;
    assert_eq!(nokut["saker"].as_array().unwrap().len(), 1, "one case, never reopened");
    assert_eq!(nokut["saker"][0]["status"], "VEDTAK");

    // 9. Leaving the programme for work deregisters the Arena relation.
    c.end_programme(EndProgrammeRequest {
        name: name.clone(),
        end_date: date(2026, 11, 20),
        end_reason: ProgrammeEndReason::Employment as i32,
        main_activity: MainActivity::Work as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let arena = app.eventually("arena", |s| intro_relation(s).is_some_and(|r| r["ER_AKTIV"] == "N")).await;
    assert_eq!(intro_relation(&arena).unwrap()["DATO_TIL"], "2026-11-20 00:00:00");
    let nir = app.eventually("nir", |s| s["deltakelser"][0]["Avslutning"]["Avslutningsarsak"] == "ARBEID").await;
    assert_eq!(nir["deltakelser"][0]["Avslutning"]["HovedaktivitetEtterAvslutning"], "ARBEID");

    // Nobody typed NAV's or NOKUT's facts: they came from those systems.
    let origins: Vec<(String, String)> =
        events.lock().unwrap().iter().map(|e| (e.origin.clone(), e.kind.clone())).collect();
    assert!(origins.iter().any(|(o, _)| o == "arena"), "{origins:?}");
    assert!(origins.iter().any(|(o, k)| o == "nokut" && k == "recognition.updated"), "{origins:?}");
    assert!(
        origins.iter().filter(|(o, _)| o == "api").all(|(_, k)| !k.starts_with("measure")),
        "no measure was typed into the gateway: {origins:?}"
    );
}

async fn nokut_decision_date(app: &TestApp) -> String {
    let s = app.mock_state("nokut").await;
    s["saker"][0]["vedtak"]["dato"].as_str().unwrap().to_owned()
}

async fn inbox(app: &TestApp, source: &str) -> Vec<hurtigspor_proto::v1::InboundChange> {
    let mut client = app.sync_client().await;
    client
        .list_inbound_changes(ListInboundChangesRequest { source: source.into(), page_size: 500, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .changes
}

fn is(change: &hurtigspor_proto::v1::InboundChange, s: InboundStatus) -> bool {
    change.status == s as i32
}

/// Every kind of Arena change gets its ingest status, and nothing of
/// Arena's reaches fields it does not own.
#[tokio::test]
async fn arena_changes_are_kept_with_their_ingest_status() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let stranger = fresh_national_id();

    // A person who is not a participant: kept, ignored.
    caseworker(
        &app,
        "tiltak",
        json!({ "fodselsnr": stranger, "tiltakskode": "ENKELAMO", "dato_fra": "2026-03-02 00:00:00" }),
    )
    .await;
    // A course for our participant, republished unchanged, then FEILREG.
    let course = caseworker(
        &app,
        "tiltak",
        json!({ "fodselsnr": p.national_id, "tiltakskode": "GRUPPEAMO", "dato_fra": "2026-03-02 00:00:00" }),
    )
    .await;
    let course_id = course["TILTAKDELTAKER_ID"].as_i64().unwrap();
    caseworker(&app, &format!("tiltakdeltaker/{course_id}/republiser"), json!({})).await;
    let record = record_until(&app, &p.name, |r| r.measures.len() == 1).await;
    assert_eq!(record.measures[0].kind, MeasureKind::LabourMarketCourse as i32);
    assert_eq!(record.measures[0].status, MeasureStatus::Active as i32);
    assert_eq!(record.given_name, p.given_name, "Arena touches only measures");
    caseworker(&app, &format!("tiltakdeltaker/{course_id}/status"), json!({ "deltakerstatuskode": "FEILREG" })).await;
    let record = record_until(&app, &p.name, |r| r.measures[0].status == MeasureStatus::RegisteredInError as i32).await;
    app.eventually("nir", |s| nir_tiltak(s).is_empty()).await;

    // A deleted row of a measure the gateway never saw running: ignored.
    let mentor = caseworker(
        &app,
        "tiltak",
        json!({ "fodselsnr": p.national_id, "tiltakskode": "MENTOR", "arbgiv_orgnr": EMPLOYER,
                "dato_fra": "2026-04-01 00:00:00", "deltakerstatuskode": "AKTUELL" }),
    )
    .await;
    caseworker(&app, &format!("tiltakdeltaker/{}/slett", mentor["TILTAKDELTAKER_ID"]), json!({})).await;

    let settled = until(
        "every Arena change settled",
        || inbox(&app, "arena"),
        |changes| {
            changes.len() >= 12 && changes.iter().all(|c| !is(c, InboundStatus::New) && !is(c, InboundStatus::Retry))
        },
    )
    .await;
    let notes = |kind: &str, s: InboundStatus| -> Vec<String> {
        settled.iter().filter(|c| c.kind == kind && is(c, s)).map(|c| c.note.clone()).collect()
    };
    assert_eq!(notes("SIAMO.SAK I", InboundStatus::Ignored).len(), 3, "cases are not read");
    assert_eq!(notes("SIAMO.TILTAKGJENNOMFORING I", InboundStatus::Handled).len(), 3);
    let ignored = notes("SIAMO.TILTAKDELTAKER I", InboundStatus::Ignored);
    assert!(ignored.iter().any(|n| n.contains("not a participant")), "{ignored:?}");
    assert!(ignored.iter().any(|n| n.contains("applied for")), "{ignored:?}");
    let updates = notes("SIAMO.TILTAKDELTAKER U", InboundStatus::Ignored);
    assert!(updates.iter().any(|n| n.contains("republished unchanged")), "{updates:?}");
    assert_eq!(notes("SIAMO.TILTAKDELTAKER D", InboundStatus::Ignored).len(), 1);
    assert!(settled.iter().all(|c| !is(c, InboundStatus::Failed)), "{settled:?}");
    assert!(
        settled.iter().filter(|c| !c.name.is_empty()).all(|c| c.name == p.name),
        "only our participant's changes name a participant"
    );
    assert_eq!(app.get(&p.name).await.measures, record.measures, "nothing else changed");

    // Re-ingesting an older change cannot roll the record back.
    let first_insert = settled
        .iter()
        .find(|c| c.kind == "SIAMO.TILTAKDELTAKER I" && c.name == p.name && is(c, InboundStatus::Handled))
        .unwrap()
        .position
        .clone();
    let mut sync = app.sync_client().await;
    let again = sync
        .reingest_inbound_changes(ReingestInboundChangesRequest {
            source: "arena".into(),
            position: first_insert.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.reingested, 1);
    let redone = until(
        "the re-ingested change",
        || inbox(&app, "arena"),
        |changes| changes.iter().any(|c| c.position == first_insert && is(c, InboundStatus::Ignored)),
    )
    .await;
    let note = &redone.iter().find(|c| c.position == first_insert).unwrap().note;
    assert!(note.contains("superseded"), "{note}");
    assert_eq!(app.get(&p.name).await.measures[0].status, MeasureStatus::RegisteredInError as i32);

    // The API cannot end a measure Arena owns.
    let status = expect_error(
        app.client
            .clone()
            .end_measure(EndMeasureRequest {
                name: p.name.clone(),
                measure_id: format!("arena-{course_id}"),
                status: MeasureStatus::Completed as i32,
                end_date: date(2026, 6, 1),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "MEASURE_OWNED_BY_ARENA",
    );
    assert!(status.message().contains("Arena"), "{status:?}");
    let unknown = expect_error(
        sync.reingest_inbound_changes(ReingestInboundChangesRequest {
            source: "arena".into(),
            position: "99999999".into(),
        })
        .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    assert!(unknown.message().contains("inbound/arena"), "{unknown:?}");
}

/// Opens a recognition case and waits until NOKUT has numbered it.
async fn numbered_case(app: &TestApp, scheme: RecognitionScheme) -> (Participant, String) {
    let p = app.create(minimal_participant()).await;
    app.client
        .clone()
        .open_recognition_case(OpenRecognitionCaseRequest {
            name: p.name.clone(),
            recognition_case: Some(RecognitionCase {
                scheme: scheme as i32,
                country_code: "UA".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let p = record_until(app, &p.name, |r| !r.recognition_cases[0].case_number.is_empty()).await;
    let number = p.recognition_cases[0].case_number.clone();
    (p, number)
}

#[tokio::test]
async fn polling_covers_webhooks_that_never_arrive() {
    let app = spawn_app().await;
    let (p, _) = numbered_case(&app, RecognitionScheme::QualificationsAssessment).await;
    // NOKUT's webhooks now go nowhere.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks", app.mocks["nokut"]))
        .header("x-api-key", "nokut-dev-key")
        .json(&json!({ "url": "http://127.0.0.1:9/nowhere" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    advance_nokut(&app, 31).await;
    let nokut = app.mock_state("nokut").await;
    assert!(nokut["leveringer"].as_array().unwrap().iter().any(|l| l["feil"].is_string()), "the webhook was lost");
    let record =
        record_until(&app, &p.name, |r| r.recognition_cases[0].status == RecognitionStatus::StatementIssued as i32)
            .await;
    assert_eq!(record.recognition_cases[0].decision, RecognitionDecision::Unspecified as i32, "a statement");
    assert!(record.recognition_cases[0].decision_date.is_some());
}

#[tokio::test]
async fn webhooks_are_refused_unless_signed_and_fresh() {
    let app = spawn_app().await;
    let (p, number) = numbered_case(&app, RecognitionScheme::Uvd).await;
    let url = format!("http://{}/webhooks/nokut", app.http.expect("dev mode listens for webhooks"));
    let body =
        json!({ "hendelse_id": 999, "saksnummer": number, "status": "VEDTAK", "tidspunkt": "2026-05-01T10:00:00Z",
                       "sak": { "vedtak": { "utfall": "AVSLAG", "dato": "2026-05-01" } } })
        .to_string();
    let http = reqwest::Client::new();
    let post = |ts: i64, signature: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("X-Nokut-Timestamp", ts.to_string())
            .header("X-Nokut-Signature", signature)
            .body(body.clone())
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    let secret = "nokut-dev-webhook-secret";
    let forged = post(now, hurtigspor_mocks_sign("not-the-secret", now, &body)).await.unwrap();
    assert_eq!(forged.status(), 401);
    let stale = post(now - 3_600, hurtigspor_mocks_sign(secret, now - 3_600, &body)).await.unwrap();
    assert_eq!(stale.status(), 401);
    let unsigned = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 400);
    assert!(inbox(&app, "nokut").await.iter().all(|c| c.position != format!("{:020}", 999)), "nothing was kept");
    assert_eq!(app.get(&p.name).await.recognition_cases[0].status, p.recognition_cases[0].status);

    // Signed with the secret and fresh: kept and applied, once.
    for _ in 0..2 {
        let good = post(now, hurtigspor_mocks_sign(secret, now, &body)).await.unwrap();
        assert_eq!(good.status(), 202);
    }
    let record =
        record_until(&app, &p.name, |r| r.recognition_cases[0].status == RecognitionStatus::Decided as i32).await;
    assert_eq!(record.recognition_cases[0].decision, RecognitionDecision::Refused as i32);
    let kept: Vec<_> =
        inbox(&app, "nokut").await.into_iter().filter(|c| c.position == format!("{:020}", 999)).collect();
    assert_eq!(kept.len(), 1, "a repeated webhook is kept once");
    assert!(!kept[0].body.contains("fodselsnummer"), "no personal data in the inbox");
}

/// NOKUT's signature, computed as the mock documents it.
fn hurtigspor_mocks_sign(secret: &str, ts: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn fault(app: &TestApp, system: &str, rule: Value) {
    let response =
        reqwest::Client::new().post(format!("{}/admin/faults", app.mocks[system])).json(&rule).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Arena's feed and lookups failing, and NOKUT's feed answering garbage,
/// delay what comes back but lose and repeat nothing.
#[tokio::test]
async fn inbound_changes_survive_a_failing_feed_and_lookups() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let (q, number) = numbered_case(&app, RecognitionScheme::QualificationsAssessment).await;
    let feed = "/ords/arena/api/v1/endringer";
    fault(&app, "arena", json!({ "kind": "error", "status": 503, "route": feed, "method": "GET", "times": 3 })).await;
    fault(
        &app,
        "arena",
        json!({ "kind": "reset_connection", "route": "/ords/arena/api/v1/personer", "method": "GET", "times": 2 }),
    )
    .await;
    fault(&app, "arena", json!({ "kind": "malformed_body", "route": "/ords/arena/api/v1/arbeidsgivere", "times": 2 }))
        .await;
    fault(&app, "nokut", json!({ "kind": "malformed_body", "route": "/api/v1/endringer", "times": 3 })).await;
    // Webhooks go nowhere: only the (failing) feed can bring NOKUT's change.
    reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks", app.mocks["nokut"]))
        .header("x-api-key", "nokut-dev-key")
        .json(&json!({ "url": "http://127.0.0.1:9/nowhere" }))
        .send()
        .await
        .unwrap();

    let training = caseworker(
        &app,
        "tiltak",
        json!({ "fodselsnr": p.national_id, "tiltakskode": "ARBTREN", "arbgiv_orgnr": EMPLOYER,
                "dato_fra": "2026-09-01 00:00:00" }),
    )
    .await;
    advance_nokut(&app, 31).await;

    let record = record_until(&app, &p.name, |r| r.measures.len() == 1).await;
    assert_eq!(record.measures[0].id, format!("arena-{}", training["TILTAKDELTAKER_ID"]));
    assert_eq!(record.measures[0].employer_orgnr, EMPLOYER, "the employer lookup was retried, not skipped");
    record_until(&app, &q.name, |r| {
        r.recognition_cases[0].case_number == number
            && r.recognition_cases[0].status == RecognitionStatus::StatementIssued as i32
    })
    .await;
    let injected = |s: &Value| s.as_array().map_or(0, |f| f.iter().map(|r| r["injected"].as_u64().unwrap_or(0)).sum());
    let arena_faults: Value =
        reqwest::get(format!("{}/admin/faults", app.mocks["arena"])).await.unwrap().json().await.unwrap();
    assert!(injected(&arena_faults) >= 5, "the faults did fire: {arena_faults}");
    let settled = until(
        "every change settled",
        || inbox(&app, ""),
        |c| c.iter().all(|c| is(c, InboundStatus::Handled) || is(c, InboundStatus::Ignored)),
    )
    .await;
    assert_eq!(
        settled.iter().filter(|c| c.source == "arena" && c.kind == "SIAMO.TILTAKDELTAKER I").count(),
        1,
        "kept once"
    );
    assert_eq!(app.get(&p.name).await.measures.len(), 1, "applied once");
}

/// A change the gateway cannot place yet (NOKUT's case number is not on any
/// record) retries, then fails with the reason; once the cause is fixed, a
/// re-ingest applies it.
#[tokio::test]
async fn a_failed_inbound_change_is_applied_after_the_fix_and_a_reingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dev_config(dir.path());
    config.sync.max_attempts = 2;
    let app = spawn_with(dir, config).await;
    let url = format!("http://{}/webhooks/nokut", app.http.unwrap());
    // NOKUT numbers cases from 1 each year on its clock; the first case the
    // gateway opens will get this number.
    let year = chrono::Utc::now().format("%Y");
    let number = format!("{year}-000001");
    let body =
        json!({ "hendelse_id": 41, "saksnummer": number, "status": "VEDTAK", "tidspunkt": "2026-05-01T10:00:00Z",
                       "sak": { "vedtak": { "utfall": "GODKJENT", "dato": "2026-05-01" } } })
        .to_string();
    let now = chrono::Utc::now().timestamp();
    let sent = reqwest::Client::new()
        .post(&url)
        .header("X-Nokut-Timestamp", now.to_string())
        .header("X-Nokut-Signature", hurtigspor_mocks_sign("nokut-dev-webhook-secret", now, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let position = format!("{:020}", 41);
    let failed = until(
        "the change failed",
        || inbox(&app, "nokut"),
        |c| c.iter().any(|c| c.position == position && is(c, InboundStatus::Failed)),
    )
    .await;
    let entry = failed.iter().find(|c| c.position == position).unwrap();
    assert!(entry.note.contains("gave up after 2 attempts") && entry.note.contains("case number"), "{}", entry.note);
    let mut sync = app.sync_client().await;
    let listed = sync
        .list_inbound_changes(ListInboundChangesRequest { status: InboundStatus::Failed as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.changes.len(), 1, "visible in SyncService");

    // The fix: the case is opened and NOKUT's number reaches the record.
    let (p, got) = numbered_case(&app, RecognitionScheme::HigherEducation).await;
    assert_eq!(got, number);
    let again = sync.reingest_inbound_changes(ReingestInboundChangesRequest::default()).await.unwrap().into_inner();
    assert_eq!(again.reingested, 1);
    let record =
        record_until(&app, &p.name, |r| r.recognition_cases[0].status == RecognitionStatus::Decided as i32).await;
    assert_eq!(record.recognition_cases[0].decision, RecognitionDecision::Approved as i32);
    let done = inbox(&app, "nokut").await;
    assert!(done.iter().any(|c| c.position == position && is(c, InboundStatus::Handled)));
}

//! Typed once, every system in step: the gateway against the real Arena,
//! NIR and NOKUT mocks (in-process, over HTTP).

use crate::helpers::*;
use hurtigspor_gateway::domain::national_id::testing::complete;
use hurtigspor_proto::v1::{
    CompetenceMapping, DecisionMaker, EndProgrammeRequest, GetParticipantRequest, HurtigsporStatus, ProgrammeEndReason,
    RecordCompetenceMappingRequest, TransitionHurtigsporRequest,
};
use serde_json::Value;

fn intro_relations(arena: &Value) -> Vec<Value> {
    arena["personforhold"].as_array().unwrap().iter().filter(|r| r["PERSONFORHOLDKODE"] == "INTRO").cloned().collect()
}

#[tokio::test]
async fn a_candidate_reaches_arena_and_nir_and_a_recognition_case_reaches_nokut() {
    let app = spawn_app().await;
    let mut input = minimal_participant();
    input.nav_office = "0314".into();
    let p = app.create(input).await;
    let mut c = app.client.clone();

    // Registered: NIR has the programme; Arena needs nothing yet.
    app.eventually("nir", |s| s["deltakelser"].as_array().is_some_and(|d| d.len() == 1)).await;
    become_candidate(&app, &p.name).await;

    // CANDIDATE: Arena registers the INTRO relation, NIR shows the mark.
    let arena = app.eventually("arena", |s| intro_relations(s).len() == 1).await;
    assert_eq!(intro_relations(&arena)[0]["ER_AKTIV"], "J");
    assert_eq!(arena["persons"][0]["FODSELSNR"], p.national_id.as_str());
    let nir = app.eventually("nir", |s| s["deltakelser"][0]["Hurtigspor"]["Status"] == "KANDIDAT").await;
    assert_eq!(nir["deltakelser"][0]["Hurtigspor"]["Markert"], true);

    // A recognition case goes to NOKUT at once; its case number comes back.
    c.open_recognition_case(nursing_case(&p.name)).await.unwrap();
    let nokut = app.eventually("nokut", |s| s["saker"].as_array().is_some_and(|v| v.len() == 1)).await;
    let number = nokut["saker"][0]["saksnummer"].as_str().unwrap().to_owned();
    until(
        "the case number",
        || {
            let (mut c, name) = (c.clone(), p.name.clone());
            async move { c.get_participant(GetParticipantRequest { name }).await.unwrap().into_inner() }
        },
        |now| now.recognition_cases[0].case_number == number,
    )
    .await;

    // Rejected and leaving the programme: Arena's relation is ended, NIR has the end.
    c.transition_hurtigspor(TransitionHurtigsporRequest {
        name: p.name.clone(),
        status: HurtigsporStatus::Rejected as i32,
        decided_by: DecisionMaker::Joint as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    c.end_programme(EndProgrammeRequest {
        name: p.name.clone(),
        end_date: date(2026, 10, 30),
        end_reason: ProgrammeEndReason::Moved as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let arena = app.eventually("arena", |s| intro_relations(s).first().is_some_and(|r| r["ER_AKTIV"] == "N")).await;
    assert_eq!(intro_relations(&arena).len(), 1, "registered once, then ended");
    assert_eq!(intro_relations(&arena)[0]["DATO_TIL"], "2026-10-30 00:00:00");
    app.eventually("nir", |s| s["deltakelser"][0]["Avslutning"]["Avslutningsarsak"] == "FLYTTET").await;
}

/// A production gateway (real `[auth]`, production identities only) is
/// carried to every system like a dev one: the harness starts the mocks for
/// it and configures them as its targets.
#[tokio::test]
async fn a_production_gateway_delivers_a_created_participant_to_all_three_mocks() {
    let dir = tempfile::tempdir().unwrap();
    let config = production_config(dir.path());
    let app = spawn_with(dir, config).await;
    let mut input = minimal_participant();
    // Production refuses synthetic numbers: an ordinary one that no living
    // person can hold (born 1855: individual number 500-749, year 54-99).
    input.national_id = (500..750).find_map(|i| complete(&format!("150355{i:03}"))).unwrap();
    remember(&input.national_id);
    input.nav_office = "0314".into();
    let p = app.create(input).await;
    app.eventually("nir", |s| s["deltakelser"].as_array().is_some_and(|d| d.len() == 1)).await;
    become_candidate(&app, &p.name).await;
    app.client.clone().open_recognition_case(nursing_case(&p.name)).await.unwrap();

    let targets = app.sync_until(&p.name, all_delivered).await;
    assert_eq!(targets.iter().map(|t| t.target.as_str()).collect::<Vec<_>>(), ["arena", "nir", "nokut"]);
    let arena = app.eventually("arena", |s| intro_relations(s).len() == 1).await;
    assert_eq!(arena["persons"][0]["FODSELSNR"], p.national_id.as_str());
    let nir = app.eventually("nir", |s| s["deltakelser"][0]["Hurtigspor"]["Status"] == "KANDIDAT").await;
    assert_eq!(nir["deltakelser"][0]["Person"]["Fodselsnummer"], p.national_id.as_str());
    app.eventually("nokut", |s| s["saker"].as_array().is_some_and(|v| v.len() == 1)).await;
}

use hurtigspor_proto::v1::{
    GetSyncStatusRequest, ListFailedDeliveriesRequest, Participant, RetryDeliveriesRequest, SyncState,
    UpdateParticipantRequest, WatchChangesRequest,
};
use tonic::Code;

async fn make_candidate(app: &TestApp, nav_office: &str) -> Participant {
    let mut input = minimal_participant();
    input.nav_office = nav_office.into();
    let p = app.create(input).await;
    become_candidate(app, &p.name).await
}

/// Records a competence mapping and moves the participant to CANDIDATE.
async fn become_candidate(app: &TestApp, name: &str) -> Participant {
    let mut c = app.client.clone();
    c.record_competence_mapping(RecordCompetenceMappingRequest {
        name: name.to_owned(),
        competence: Some(CompetenceMapping { mapped_date: date(2026, 2, 1), ..Default::default() }),
        etag: String::new(),
    })
    .await
    .unwrap();
    c.transition_hurtigspor(TransitionHurtigsporRequest {
        name: name.to_owned(),
        status: HurtigsporStatus::Candidate as i32,
        decided_by: DecisionMaker::Kommune as i32,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

fn all_delivered(targets: &[hurtigspor_proto::v1::TargetSyncStatus]) -> bool {
    targets.len() == 3
        && targets.iter().all(|t| t.state == SyncState::Delivered as i32 && t.delivered_version == t.desired_version)
}

#[tokio::test]
async fn deliveries_are_counted_on_the_metrics_endpoint_without_personal_data() {
    let app = spawn_app().await;
    let p = make_candidate(&app, "0314").await;
    app.sync_until(&p.name, all_delivered).await;
    let url = format!("http://{}/metrics", app.http.unwrap());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let changed = text
        .lines()
        .find(|l| l.starts_with(r#"hurtigspor_target_reconciles_total{target="arena",outcome="delivered_changed"}"#))
        .unwrap_or_else(|| panic!("no Arena deliveries counted in\n{text}"));
    assert!(changed.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 1.0, "{changed}");
    assert!(text.contains(r#"hurtigspor_target_circuit_state{target="nir"} 0"#), "{text}");
    let id = p.name.trim_start_matches("participants/");
    assert!(!text.contains(id) && !text.contains(&p.national_id), "no participant in any label");
}

#[tokio::test]
async fn sync_status_shows_each_target_reaching_the_latest_version() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let targets = app.sync_until(&p.name, all_delivered).await;
    let names: Vec<_> = targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(names, ["arena", "nir", "nokut"]);
    assert!(targets.iter().all(|t| t.desired_version == 1));
    let status = app
        .sync_client()
        .await
        .get_sync_status(GetSyncStatusRequest { name: "participants/0123456789abcdef0123456789abcdef".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_poison_participant_fails_alone_with_the_reason_and_heals_on_the_fix() {
    let app = spawn_app().await;
    let poison = make_candidate(&app, "").await; // Arena needs a NAV office
    let healthy = make_candidate(&app, "0314").await;
    app.sync_until(&healthy.name, all_delivered).await;
    let targets = app
        .sync_until(&poison.name, |t| t.iter().any(|t| t.target == "arena" && t.state == SyncState::Failed as i32))
        .await;
    let arena = targets.iter().find(|t| t.target == "arena").unwrap();
    assert!(arena.last_error.contains("nav_office"), "{}", arena.last_error);
    let failed = app
        .sync_client()
        .await
        .list_failed_deliveries(ListFailedDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.deliveries.len(), 1);
    assert_eq!(
        (failed.deliveries[0].name.as_str(), failed.deliveries[0].target.as_str()),
        (poison.name.as_str(), "arena")
    );

    // The kommune adds the NAV office: the new version goes through.
    app.client
        .clone()
        .update_participant(UpdateParticipantRequest {
            participant: Some(Participant {
                name: poison.name.clone(),
                nav_office: "0314".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["nav_office".into()] }),
        })
        .await
        .unwrap();
    app.sync_until(&poison.name, all_delivered).await;
    let arena = app.eventually("arena", |s| intro_relations(s).len() == 2).await;
    assert_eq!(intro_relations(&arena).len(), 2, "one relation per participant");
}

#[tokio::test]
async fn a_refused_delivery_is_replayed_after_the_cause_is_fixed() {
    let app = spawn_app().await;
    // Arena refuses registrations (the cause) until it is fixed. (Refused
    // once only, a refusal of an older version while a newer one is queued
    // would rightly be retried with the newer one at once.)
    let http = reqwest::Client::new();
    http.post(format!("{}/admin/faults", app.mocks["arena"]))
        .json(&serde_json::json!({ "kind": "error", "status": 400, "route": "/ords/arena/api/v1/personforhold", "method": "POST" }))
        .send()
        .await
        .unwrap();
    let p = make_candidate(&app, "0314").await;
    app.sync_until(&p.name, |t| t.iter().any(|t| t.target == "arena" && t.state == SyncState::Failed as i32)).await;
    assert!(intro_relations(&app.mock_state("arena").await).is_empty());
    http.delete(format!("{}/admin/faults", app.mocks["arena"])).send().await.unwrap();
    let mut sync = app.sync_client().await;
    let retried = sync.retry_deliveries(RetryDeliveriesRequest { name: p.name.clone() }).await.unwrap().into_inner();
    assert_eq!(retried.retried, 1);
    app.sync_until(&p.name, all_delivered).await;
    assert_eq!(intro_relations(&app.mock_state("arena").await).len(), 1);
}

#[tokio::test]
async fn watch_changes_resumes_from_a_cursor_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(app.create(minimal_participant()).await.name);
    }
    let mut sync = app.sync_client().await;
    let mut stream = sync.watch_changes(WatchChangesRequest::default()).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..3 {
        let e = stream.message().await.unwrap().unwrap();
        assert!(e.participant.as_ref().unwrap().national_id.is_empty(), "no national id on the stream");
        seen.push(e.name.clone());
        cursor = e.cursor;
    }
    assert_eq!(seen, names);
    drop(stream); // the vendor disconnects

    for _ in 0..2 {
        names.push(app.create(minimal_participant()).await.name);
    }
    let mut resumed = sync.watch_changes(WatchChangesRequest { cursor }).await.unwrap().into_inner();
    for expected in &names[3..] {
        let e =
            tokio::time::timeout(std::time::Duration::from_secs(5), resumed.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(&e.name, expected);
        assert_eq!(e.kind, "participant.created");
    }
    // And a change made while watching arrives live.
    let live = app.create(minimal_participant()).await;
    let e = tokio::time::timeout(std::time::Duration::from_secs(5), resumed.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(e.name, live.name);
    let bad = sync.watch_changes(WatchChangesRequest { cursor: "yesterday".into() }).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn failed_deliveries_are_listed_page_by_page() {
    let app = spawn_app().await;
    let mut poisoned = Vec::new();
    for _ in 0..3 {
        poisoned.push(make_candidate(&app, "").await.name);
    }
    for name in &poisoned {
        app.sync_until(name, |t| t.iter().any(|t| t.target == "arena" && t.state == SyncState::Failed as i32)).await;
    }
    let mut client = app.sync_client().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_failed_deliveries(ListFailedDeliveriesRequest { page_size: 2, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(page.deliveries.len() <= 2);
        seen.extend(page.deliveries.into_iter().map(|d| d.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected = poisoned.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every failed delivery once, over two pages");
    let bad =
        client.list_failed_deliveries(ListFailedDeliveriesRequest { page_size: 2, page_token: "garbage".into() }).await;
    expect_error(bad, Code::InvalidArgument, "INVALID_ARGUMENT");
}

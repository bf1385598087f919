//! Typed once, every system in step: the gateway against the real Arena,
//! NIR and NOKUT mocks (in-process, over HTTP).

use crate::helpers::*;
use hurtigspor_proto::v1::{
    CompetenceMapping, DecisionMaker, EndProgrammeRequest, GetParticipantRequest, HurtigsporStatus,
    OpenRecognitionCaseRequest, ProgrammeEndReason, RecognitionCase, RecognitionScheme, RecordCompetenceMappingRequest,
    TransitionHurtigsporRequest,
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
    c.record_competence_mapping(RecordCompetenceMappingRequest {
        name: p.name.clone(),
        competence: Some(CompetenceMapping { mapped_date: date(2026, 2, 1), ..Default::default() }),
        etag: String::new(),
    })
    .await
    .unwrap();
    c.transition_hurtigspor(TransitionHurtigsporRequest {
        name: p.name.clone(),
        status: HurtigsporStatus::Candidate as i32,
        decided_by: DecisionMaker::Kommune as i32,
        ..Default::default()
    })
    .await
    .unwrap();

    // CANDIDATE: Arena registers the INTRO relation, NIR shows the mark.
    let arena = app.eventually("arena", |s| intro_relations(s).len() == 1).await;
    assert_eq!(intro_relations(&arena)[0]["ER_AKTIV"], "J");
    assert_eq!(arena["persons"][0]["FODSELSNR"], p.national_id.as_str());
    let nir = app.eventually("nir", |s| s["deltakelser"][0]["Hurtigspor"]["Status"] == "KANDIDAT").await;
    assert_eq!(nir["deltakelser"][0]["Hurtigspor"]["Markert"], true);

    // A recognition case goes to NOKUT at once; its case number comes back.
    c.open_recognition_case(OpenRecognitionCaseRequest {
        name: p.name.clone(),
        recognition_case: Some(RecognitionCase {
            scheme: RecognitionScheme::HigherEducation as i32,
            education_description: "bachelor in nursing".into(),
            country_code: "SY".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let nokut = app.eventually("nokut", |s| s["saker"].as_array().is_some_and(|v| v.len() == 1)).await;
    let number = nokut["saker"][0]["saksnummer"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = c.get_participant(GetParticipantRequest { name: p.name.clone() }).await.unwrap().into_inner();
        if now.recognition_cases[0].case_number == number {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the case number never came back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

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

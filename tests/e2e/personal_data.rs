//! No national id and no name in any log line, at any level.

use crate::helpers::*;
use hurtigspor_proto::v1::{
    CompetenceMapping, CreateParticipantRequest, DecisionMaker, EndProgrammeRequest, GetParticipantRequest,
    HurtigsporStatus, ListParticipantsRequest, LookupParticipantRequest, Participant, ProgrammeEndReason,
    RecordCompetenceMappingRequest, TransitionHurtigsporRequest, UpdateParticipantRequest,
};
use prost_types::FieldMask;

/// Exercises every path that sees a national id or a name, successful and
/// failing. Every log line of every test is scanned as it is written.
#[tokio::test]
async fn no_national_id_or_name_reaches_the_logs() {
    let app = spawn_app().await;
    let mut c = app.client.clone();
    let p = app.create(minimal_participant()).await;

    // Reads, lookups and lists.
    c.get_participant(GetParticipantRequest { name: p.name.clone() }).await.unwrap();
    c.lookup_participant(LookupParticipantRequest { national_id: p.national_id.clone() }).await.unwrap();
    c.list_participants(ListParticipantsRequest::default()).await.unwrap();

    // Failures that carry the number: duplicate, unknown lookup, number as name,
    // bad check digits, retried request id with another body.
    let _ = c
        .create_participant(create_request(Participant { family_name: fresh_family_name(), ..p.clone() }))
        .await
        .unwrap_err();
    let _ = c.lookup_participant(LookupParticipantRequest { national_id: fresh_national_id() }).await.unwrap_err();
    let _ = c
        .get_participant(GetParticipantRequest { name: format!("participants/{}", fresh_national_id()) })
        .await
        .unwrap_err();
    let mut typo = fresh_national_id().into_bytes();
    typo[10] = b'0' + (typo[10] - b'0' + 3) % 10;
    let typo = String::from_utf8(typo).unwrap();
    remember(&typo);
    let mut bad = minimal_participant();
    bad.national_id = typo.clone();
    let _ = c.create_participant(create_request(bad)).await.unwrap_err();
    let req = CreateParticipantRequest { participant: Some(minimal_participant()), request_id: "pii-1".into() };
    c.create_participant(req).await.unwrap();
    let _ = c
        .create_participant(CreateParticipantRequest {
            participant: Some(minimal_participant()),
            request_id: "pii-1".into(),
        })
        .await
        .unwrap_err();

    // Writes that carry names.
    let renamed = Participant { name: p.name.clone(), family_name: fresh_family_name(), ..Default::default() };
    c.update_participant(UpdateParticipantRequest {
        participant: Some(renamed),
        update_mask: Some(FieldMask { paths: vec!["family_name".into()] }),
    })
    .await
    .unwrap();
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
    let _ = c
        .end_programme(EndProgrammeRequest {
            name: p.name.clone(),
            end_date: date(2026, 6, 1),
            end_reason: ProgrammeEndReason::Other as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();

    let logs = captured_logs();
    // The capture works: the opaque id of the participant is there.
    let id = p.name.trim_start_matches("participants/");
    assert!(logs.contains(id), "the log capture must see the gateway's lines");
    assert!(logs.contains("TRACE"), "logs are captured at TRACE level");
    // The scanner itself finds what it looks for.
    assert!(super::helpers::scan_finds(&format!("x {} y", p.national_id)));
    assert!(super::helpers::scan_finds(&format!("name={}", p.family_name)));
    assert!(!super::helpers::scan_finds(&format!("participant={id}")));

    // Scanned line by line as written, for every test of this binary; each
    // test also checks when its gateway is dropped.
    assert!(leaks().is_empty(), "personal data reached the logs in: {:?}", leaks());
}

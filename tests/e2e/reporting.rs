//! ReportingService over gRPC: figures derived from what was recorded, and
//! each kommune sees only its own.

use crate::helpers::*;
use hurtigspor_proto::v1::{
    CompetenceMapping, DecisionMaker, GetHurtigsporReportRequest, HurtigsporStatus, ListAuditEntriesRequest,
    RecordCompetenceMappingRequest, TransitionHurtigsporRequest, WorkExperience,
    audit_service_client::AuditServiceClient, reporting_service_client::ReportingServiceClient,
};
use tonic::Code;

fn dev_token(app: &TestApp, who: &str) -> String {
    let text = std::fs::read_to_string(app.dir.path().join("dev-tokens.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()[who].as_str().unwrap().to_owned()
}

async fn reports(app: &TestApp, who: &str) -> ReportingServiceClient<Authed> {
    ReportingServiceClient::new(channel(app.addr, &dev_token(app, who)).await)
}

fn ask(kommunenummer: &str, year: i32) -> GetHurtigsporReportRequest {
    GetHurtigsporReportRequest { kommunenummer: kommunenummer.into(), year }
}

/// Maps the competence of `name`, and moves it to CANDIDATE on 1 March and
/// CONFIRMED on 2 March 2026.
async fn confirm(app: &TestApp, name: &str) {
    let mut c = app.client.clone();
    c.record_competence_mapping(RecordCompetenceMappingRequest {
        name: name.into(),
        competence: Some(CompetenceMapping {
            mapped_date: date(2026, 2, 1),
            work_experiences: vec![WorkExperience {
                occupation: "welder".into(),
                styrk08_code: "7212".into(),
                years: 5.0,
                country_code: "UA".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    for (status, day) in [(HurtigsporStatus::Candidate, 1), (HurtigsporStatus::Confirmed, 2)] {
        c.transition_hurtigspor(TransitionHurtigsporRequest {
            name: name.into(),
            status: status as i32,
            decided_by: DecisionMaker::Joint as i32,
            effective_date: date(2026, 3, day),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_kommune_gets_its_own_figures_and_nav_the_country() {
    let app = spawn_app().await;
    let in_hurtigspor = app.create(minimal_participant()).await;
    app.create(minimal_participant()).await;
    let mut bergen_input = minimal_participant();
    bergen_input.kommunenummer = "4601".into();
    app.create(bergen_input).await;
    confirm(&app, &in_hurtigspor.name).await;

    // Oslo: one of its two programme participants is in hurtigspor, since
    // 2 March, 56 days after the programme began on 5 January.
    let mut oslo = reports(&app, "kommune_0301").await;
    let r = oslo.get_hurtigspor_report(ask("0301", 2026)).await.unwrap().into_inner();
    assert_eq!((r.kommunenummer.as_str(), r.year), ("0301", 2026));
    assert_eq!((r.participants_in_hurtigspor, r.programme_participants), (1, 2));
    assert_eq!(r.share_in_hurtigspor, 0.5);
    assert_eq!((r.hurtigspor_started, r.mean_days_programme_to_hurtigspor), (1, 56.0));
    assert_eq!(oslo.get_hurtigspor_report(ask("0301", 2025)).await.unwrap().into_inner().programme_participants, 0);

    // Another kommune's figures, or the country's, are not Oslo's to see.
    expect_error(oslo.get_hurtigspor_report(ask("4601", 2026)).await, Code::PermissionDenied, "KOMMUNE_NOT_ALLOWED");
    expect_error(
        oslo.get_hurtigspor_report(ask("", 2026)).await,
        Code::PermissionDenied,
        "NATIONAL_REPORT_NOT_ALLOWED",
    );
    let status =
        expect_error(oslo.get_hurtigspor_report(ask("03", 0)).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_violation(&status, "kommunenummer", "INVALID_KOMMUNENUMMER");
    assert_violation(&status, "year", "REQUIRED");

    let mut bergen = reports(&app, "kommune_4601").await;
    let r = bergen.get_hurtigspor_report(ask("4601", 2026)).await.unwrap().into_inner();
    assert_eq!((r.participants_in_hurtigspor, r.programme_participants), (0, 1));

    let mut nav = reports(&app, "nav").await;
    let r = nav.get_hurtigspor_report(ask("", 2026)).await.unwrap().into_inner();
    assert_eq!((r.kommunenummer.as_str(), r.participants_in_hurtigspor, r.programme_participants), ("", 1, 3));
    let r = nav.get_hurtigspor_report(ask("4601", 2026)).await.unwrap().into_inner();
    assert_eq!(r.programme_participants, 1);

    // Every call was audited with its purpose, naming no participant.
    let entries = AuditServiceClient::new(channel(app.addr, &app.token).await)
        .list_audit_entries(ListAuditEntriesRequest {
            method: "ReportingService/GetHurtigsporReport".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["OK", "OK", "PERMISSION_DENIED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "OK", "OK", "OK"]);
    assert!(entries.iter().all(|e| e.purpose == PURPOSE && e.participant.is_empty()), "{entries:?}");
}

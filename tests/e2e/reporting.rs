//! ReportingService over gRPC: figures derived from what was recorded, and
//! each kommune sees only its own.

use crate::helpers::*;
use hurtigspor_proto::v1::{
    CompetenceMapping, DecisionMaker, GetHurtigsporReportRequest, HurtigsporStatus, ListAuditEntriesRequest,
    ListHurtigsporParticipantsRequest, RecordCompetenceMappingRequest, TransitionHurtigsporRequest, WorkExperience,
    audit_service_client::AuditServiceClient, reporting_service_client::ReportingServiceClient,
};
use tonic::Code;

async fn reports(app: &TestApp, who: &str) -> ReportingServiceClient<Authed> {
    ReportingServiceClient::new(channel(app.addr, &dev_token(app, who)).await)
}

/// The audit log's entries for `method`, oldest first.
async fn audit_entries(app: &TestApp, method: &str) -> Vec<hurtigspor_proto::v1::AuditEntry> {
    AuditServiceClient::new(channel(app.addr, &app.token).await)
        .list_audit_entries(ListAuditEntriesRequest { method: method.into(), page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .entries
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
    let entries = audit_entries(&app, "ReportingService/GetHurtigsporReport").await;
    let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["OK", "OK", "PERMISSION_DENIED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "OK", "OK", "OK"]);
    assert!(entries.iter().all(|e| e.purpose == PURPOSE && e.participant.is_empty()), "{entries:?}");
}

fn list(kommunenummer: &str, year: i32, page_size: i32, page_token: &str) -> ListHurtigsporParticipantsRequest {
    ListHurtigsporParticipantsRequest {
        kommunenummer: kommunenummer.into(),
        year,
        page_size,
        page_token: page_token.into(),
    }
}

#[tokio::test]
async fn the_dates_per_participant_page_by_page_each_read_audited() {
    let app = spawn_app().await;
    let mut oslo_ids = Vec::new();
    for _ in 0..3 {
        let p = app.create(minimal_participant()).await;
        confirm(&app, &p.name).await;
        oslo_ids.push(p.name);
    }
    // In the programme only: counted in the share, not listed.
    app.create(minimal_participant()).await;
    let mut bergen_input = minimal_participant();
    bergen_input.kommunenummer = "4601".into();
    let bergen_participant = app.create(bergen_input).await;
    confirm(&app, &bergen_participant.name).await;
    oslo_ids.sort();

    // Oslo's three, two a page, in id order, with the dates of the form.
    let mut oslo = reports(&app, "kommune_0301").await;
    let first = oslo.list_hurtigspor_participants(list("0301", 2026, 2, "")).await.unwrap().into_inner();
    assert_eq!(first.participants.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second =
        oslo.list_hurtigspor_participants(list("0301", 2026, 2, &first.next_page_token)).await.unwrap().into_inner();
    assert_eq!(second.participants.len(), 1);
    assert_eq!(second.next_page_token, "", "the last page");
    let listed: Vec<&str> =
        first.participants.iter().chain(&second.participants).map(|p| p.participant.as_str()).collect();
    assert_eq!(listed, oslo_ids);
    let dates = &first.participants[0];
    assert_eq!(dates.kommunenummer, "0301");
    assert_eq!((dates.programme_start, dates.hurtigspor_start), (date(2026, 1, 5), date(2026, 3, 2)));
    assert_eq!((dates.hurtigspor_end, dates.work_full_start, dates.first_wage_subsidy_start), (None, None, None));

    // The listing agrees with the figures.
    let r = oslo.get_hurtigspor_report(ask("0301", 2026)).await.unwrap().into_inner();
    assert_eq!(r.participants_in_hurtigspor, 3);

    // A token continues only the listing it came from.
    let status = expect_error(
        oslo.list_hurtigspor_participants(list("0301", 2027, 2, &first.next_page_token)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "page_token", "PAGE_TOKEN_FILTER_MISMATCH");
    let status = expect_error(
        oslo.list_hurtigspor_participants(list("0301", 2026, 2, "forged")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "page_token", "INVALID_PAGE_TOKEN");
    let status = expect_error(
        oslo.list_hurtigspor_participants(list("03", 0, -1, "")).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "kommunenummer", "INVALID_KOMMUNENUMMER");
    assert_violation(&status, "year", "REQUIRED");
    assert_violation(&status, "page_size", "OUT_OF_RANGE");

    // Tenancy as for the figures; NAV sees the country.
    expect_error(
        oslo.list_hurtigspor_participants(list("4601", 2026, 0, "")).await,
        Code::PermissionDenied,
        "KOMMUNE_NOT_ALLOWED",
    );
    let mut nav = reports(&app, "nav").await;
    let all = nav.list_hurtigspor_participants(list("", 2026, 0, "")).await.unwrap().into_inner();
    assert_eq!(all.participants.len(), 4);
    assert!(all.participants.iter().any(|p| p.participant == bergen_participant.name && p.kommunenummer == "4601"));

    // Figures alone do not open the dates about persons.
    let statistics =
        token_for(app.dir.path(), hurtigspor_gateway::auth::dev::ISSUER, "kommune_0301", &["hurtigspor:reports.read"]);
    let mut statistics = ReportingServiceClient::new(channel(app.addr, &statistics).await);
    assert!(statistics.get_hurtigspor_report(ask("0301", 2026)).await.is_ok());
    expect_error(
        statistics.list_hurtigspor_participants(list("0301", 2026, 0, "")).await,
        Code::PermissionDenied,
        "SCOPE_MISSING",
    );

    // One audit entry per participant listed, with the purpose.
    let entries = audit_entries(&app, "ReportingService/ListHurtigsporParticipants").await;
    let read: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.outcome == "OK")
        .map(|e| (e.organisation.as_str(), e.participant.as_str()))
        .collect();
    assert_eq!(read.len(), 3 + 4, "Oslo's three and NAV's four: {read:?}");
    for id in &oslo_ids {
        assert!(read.contains(&("0192:900000014", id.as_str())), "{id} read by Oslo is audited");
    }
    assert!(read.contains(&("0192:900000030", bergen_participant.name.as_str())));
    // The refusal for the missing scope comes before the purpose is read.
    assert!(entries.iter().filter(|e| e.detail != "SCOPE_MISSING").all(|e| e.purpose == PURPOSE), "{entries:?}");
    assert!(entries.iter().any(|e| e.outcome == "PERMISSION_DENIED" && e.detail == "SCOPE_MISSING"));
}

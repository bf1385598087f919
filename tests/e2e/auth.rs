//! Who may call: every method over the real gRPC port, with every kind of
//! bad credential, and the allowed case.

use crate::helpers::*;
use hurtigspor_gateway::auth::{BearerToken, Claims, OrgClaim, dev};
use hurtigspor_proto::v1::{
    CreateParticipantRequest, EndMeasureRequest, EndProgrammeRequest, GetHurtigsporReportRequest,
    GetParticipantRequest, GetSyncStatusRequest, ListAuditEntriesRequest, ListFailedDeliveriesRequest,
    ListHurtigsporParticipantsRequest, ListInboundChangesRequest, ListParticipantsRequest, LookupParticipantRequest,
    OpenRecognitionCaseRequest, RecordCompetenceMappingRequest, RecordMeasureRequest, ReingestInboundChangesRequest,
    RetryDeliveriesRequest, TransitionHurtigsporRequest, UpdateIndividualPlanRequest, UpdateParticipantRequest,
    WatchChangesRequest, audit_service_client::AuditServiceClient,
    participant_service_client::ParticipantServiceClient, reporting_service_client::ReportingServiceClient,
    sync_service_client::SyncServiceClient,
};
use std::path::Path;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Claims like a dev admin token's, to be spoiled one way at a time.
fn claims(org: &str, scopes: &[&str]) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: dev::ISSUER.into(),
        aud: Some(dev::AUDIENCE.into()),
        exp: now + 600,
        nbf: Some(now - 60),
        iat: now,
        scope: scopes.join(" "),
        consumer: OrgClaim { authority: String::new(), id: format!("0192:{org}") },
        supplier: None,
        jti: "matrix".into(),
    }
}

fn signed(data_dir: &Path, claims: &Claims) -> String {
    dev::sign(&dev::signing_key(data_dir).unwrap(), claims).unwrap()
}

const ADMIN: &str = "900000049";

/// Calls every method once as `token` (none for `None`) and returns each
/// method's name with its result.
async fn call_every_method(app: &TestApp, token: Option<&str>, name: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let ch = match token {
        Some(t) => channel(app.addr, t).await,
        None => {
            let plain = tonic::transport::Channel::from_shared(format!("http://{}", app.addr)).unwrap();
            tonic::service::interceptor::InterceptedService::new(plain.connect().await.unwrap(), BearerToken::none())
        }
    };
    let mut p = ParticipantServiceClient::new(ch.clone());
    let mut s = SyncServiceClient::new(ch.clone());
    let mut a = AuditServiceClient::new(ch.clone());
    let mut r = ReportingServiceClient::new(ch);
    let n = || name.to_owned();
    fn unit<T>(r: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
        r.map(|_| ())
    }
    vec![
        ("CreateParticipant", unit(p.create_participant(CreateParticipantRequest::default()).await)),
        ("GetParticipant", unit(p.get_participant(GetParticipantRequest { name: n() }).await)),
        ("ListParticipants", unit(p.list_participants(ListParticipantsRequest::default()).await)),
        ("UpdateParticipant", unit(p.update_participant(UpdateParticipantRequest::default()).await)),
        ("LookupParticipant", unit(p.lookup_participant(LookupParticipantRequest::default()).await)),
        (
            "TransitionHurtigspor",
            unit(p.transition_hurtigspor(TransitionHurtigsporRequest { name: n(), ..Default::default() }).await),
        ),
        ("EndProgramme", unit(p.end_programme(EndProgrammeRequest { name: n(), ..Default::default() }).await)),
        ("RecordMeasure", unit(p.record_measure(RecordMeasureRequest { name: n(), ..Default::default() }).await)),
        ("EndMeasure", unit(p.end_measure(EndMeasureRequest { name: n(), ..Default::default() }).await)),
        (
            "OpenRecognitionCase",
            unit(p.open_recognition_case(OpenRecognitionCaseRequest { name: n(), ..Default::default() }).await),
        ),
        (
            "RecordCompetenceMapping",
            unit(p.record_competence_mapping(RecordCompetenceMappingRequest { name: n(), ..Default::default() }).await),
        ),
        (
            "UpdateIndividualPlan",
            unit(p.update_individual_plan(UpdateIndividualPlanRequest { name: n(), ..Default::default() }).await),
        ),
        ("GetSyncStatus", unit(s.get_sync_status(GetSyncStatusRequest { name: n() }).await)),
        ("ListFailedDeliveries", unit(s.list_failed_deliveries(ListFailedDeliveriesRequest::default()).await)),
        ("RetryDeliveries", unit(s.retry_deliveries(RetryDeliveriesRequest { name: n() }).await)),
        ("WatchChanges", unit(s.watch_changes(WatchChangesRequest::default()).await)),
        ("ListInboundChanges", unit(s.list_inbound_changes(ListInboundChangesRequest::default()).await)),
        ("ReingestInboundChanges", unit(s.reingest_inbound_changes(ReingestInboundChangesRequest::default()).await)),
        ("ListAuditEntries", unit(a.list_audit_entries(ListAuditEntriesRequest::default()).await)),
        (
            "GetHurtigsporReport",
            unit(
                r.get_hurtigspor_report(GetHurtigsporReportRequest { kommunenummer: "0301".into(), year: 2026 }).await,
            ),
        ),
        (
            "ListHurtigsporParticipants",
            unit(
                r.list_hurtigspor_participants(ListHurtigsporParticipantsRequest {
                    kommunenummer: "0301".into(),
                    year: 2026,
                    ..Default::default()
                })
                .await,
            ),
        ),
    ]
}

#[tokio::test]
async fn every_method_refuses_every_kind_of_bad_credential_and_changes_nothing() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let dir = app.dir.path();
    let now = chrono::Utc::now().timestamp();
    let all = ALL_SCOPES;
    let other_key = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Option<String>, Code, &str)> = vec![
        ("no token", None, Code::Unauthenticated, "TOKEN_MISSING"),
        ("malformed", Some("not.a.jwt".into()), Code::Unauthenticated, "TOKEN_MALFORMED"),
        (
            "wrong signature",
            Some(signed(other_key.path(), &claims(ADMIN, &all))),
            Code::Unauthenticated,
            "TOKEN_SIGNATURE_INVALID",
        ),
        (
            "expired",
            Some(signed(dir, &Claims { exp: now - 3600, ..claims(ADMIN, &all) })),
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
        ),
        (
            "not yet valid",
            Some(signed(dir, &Claims { nbf: Some(now + 3600), ..claims(ADMIN, &all) })),
            Code::Unauthenticated,
            "TOKEN_NOT_YET_VALID",
        ),
        (
            "wrong issuer",
            Some(signed(dir, &Claims { iss: "https://maskinporten.example/".into(), ..claims(ADMIN, &all) })),
            Code::Unauthenticated,
            "TOKEN_WRONG_ISSUER",
        ),
        (
            "wrong audience",
            Some(signed(dir, &Claims { aud: Some("another-api".into()), ..claims(ADMIN, &all) })),
            Code::Unauthenticated,
            "TOKEN_WRONG_AUDIENCE",
        ),
        ("missing scope", Some(signed(dir, &claims(ADMIN, &[]))), Code::PermissionDenied, "SCOPE_MISSING"),
        (
            "unknown organisation",
            Some(signed(dir, &claims("974760673", &all))),
            Code::PermissionDenied,
            "ORGANISATION_UNKNOWN",
        ),
    ];
    let before = app.get(&p.name).await;
    for (case, token, code, reason) in &cases {
        for (method, result) in call_every_method(&app, token.as_deref(), &p.name).await {
            let status = result.expect_err(&format!("{case}: {method} must be refused"));
            assert_eq!(status.code(), *code, "{case}: {method}: {status:?}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, *reason, "{case}: {method}");
            if let Some(t) = token {
                assert!(!status.message().contains(t.as_str()), "{case}: {method} echoed the token");
            }
        }
    }
    assert_eq!(app.get(&p.name).await, before, "no refused request changed anything");
    let listed = app.client.clone().list_participants(ListParticipantsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.participants.len(), 1, "and nothing was created");

    // The allowed case: no method is refused for who is calling.
    for (method, result) in call_every_method(&app, Some(&app.token), &p.name).await {
        if let Err(status) = result {
            assert!(
                !matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied),
                "{method} refused an administrator: {status:?}"
            );
        }
    }
}

#[tokio::test]
async fn scopes_decide_what_a_valid_token_may_do() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let dir = app.dir.path();
    let read_only = signed(dir, &claims(ADMIN, &["hurtigspor:participants.read"]));
    let results = call_every_method(&app, Some(&read_only), &p.name).await;
    let reads = ["GetParticipant", "ListParticipants", "LookupParticipant", "GetSyncStatus", "WatchChanges"];
    for (method, result) in results {
        let denied = matches!(&result, Err(s) if s.code() == Code::PermissionDenied);
        assert_eq!(denied, !reads.contains(&method), "{method}: {result:?}");
    }
    // The reports scope gives the figures and nothing else; with the
    // participants scope too, the dates per participant.
    let reports_only = signed(dir, &claims(ADMIN, &["hurtigspor:reports.read"]));
    for (method, result) in call_every_method(&app, Some(&reports_only), &p.name).await {
        let denied = matches!(&result, Err(s) if s.code() == Code::PermissionDenied);
        assert_eq!(denied, method != "GetHurtigsporReport", "{method}: {result:?}");
    }
    let both = signed(dir, &claims(ADMIN, &["hurtigspor:reports.read", "hurtigspor:participants.read"]));
    let reports = ["GetHurtigsporReport", "ListHurtigsporParticipants"];
    for (method, result) in call_every_method(&app, Some(&both), &p.name).await {
        let denied = matches!(&result, Err(s) if s.code() == Code::PermissionDenied);
        assert_eq!(denied, !reads.contains(&method) && !reports.contains(&method), "{method}: {result:?}");
    }
    // Health needs no token at all.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr)).unwrap().connect().await.unwrap(),
    );
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
}

#[tokio::test]
async fn dev_tokens_are_written_for_scripts() {
    let app = spawn_app().await;
    let text = std::fs::read_to_string(app.dir.path().join("dev-tokens.json")).unwrap();
    let tokens: serde_json::Value = serde_json::from_str(&text).unwrap();
    for who in ["kommune_0301", "kommune_4601", "nav", "admin"] {
        let token = tokens[who].as_str().unwrap_or_else(|| panic!("no {who} token"));
        let mut c = connect(app.addr, token).await;
        c.list_participants(ListParticipantsRequest::default()).await.unwrap_or_else(|s| panic!("{who}: {s:?}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.dir.path().join("dev-tokens.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read the tokens");
    }
}

/// Each kommune sees, lists, looks up, streams and changes only its own
/// participants; another kommune's is NOT_FOUND, so its existence does not
/// leak. NAV sees all, and changes only what NAV owns.
#[tokio::test]
async fn a_kommune_sees_and_changes_only_its_own_participants() {
    let app = spawn_app().await;
    let (oslo_token, bergen_token, nav_token) =
        (dev_token(&app, "kommune_0301"), dev_token(&app, "kommune_4601"), dev_token(&app, "nav"));
    let mut oslo = connect(app.addr, &oslo_token).await;
    let mut bergen = connect(app.addr, &bergen_token).await;
    let mut nav = connect(app.addr, &nav_token).await;
    let a = oslo.create_participant(create_request(minimal_participant())).await.unwrap().into_inner();
    let mut input = minimal_participant();
    input.kommunenummer = "4601".into();
    let b = bergen.create_participant(create_request(input)).await.unwrap().into_inner();

    // Oslo's participant does not exist for Bergen.
    expect_error(
        bergen.get_participant(GetParticipantRequest { name: a.name.clone() }).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    expect_error(
        bergen.lookup_participant(LookupParticipantRequest { national_id: a.national_id.clone() }).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let names = |r: hurtigspor_proto::v1::ListParticipantsResponse| -> Vec<String> {
        r.participants.into_iter().map(|p| p.name).collect()
    };
    let all = bergen.list_participants(ListParticipantsRequest::default()).await.unwrap().into_inner();
    assert_eq!(names(all), vec![b.name.clone()]);
    let asked = ListParticipantsRequest { kommunenummer: "0301".into(), ..Default::default() };
    assert!(names(bergen.list_participants(asked).await.unwrap().into_inner()).is_empty());
    let update = UpdateParticipantRequest {
        participant: Some(hurtigspor_proto::v1::Participant {
            name: a.name.clone(),
            given_name: fresh_given_name(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["given_name".into()] }),
    };
    expect_error(bergen.update_participant(update.clone()).await, Code::NotFound, "NOT_FOUND");
    let status = SyncServiceClient::new(channel(app.addr, &bergen_token).await)
        .get_sync_status(GetSyncStatusRequest { name: a.name.clone() })
        .await;
    expect_error(status, Code::NotFound, "NOT_FOUND");
    // Every other write, with valid input, finds nothing of Oslo's either.
    let n = || a.name.clone();
    let writes = [
        (
            "EndProgramme",
            bergen
                .end_programme(EndProgrammeRequest {
                    name: n(),
                    end_date: date(2026, 6, 1),
                    end_reason: 1,
                    main_activity: 1,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "EndMeasure",
            bergen
                .end_measure(EndMeasureRequest {
                    name: n(),
                    measure_id: "m-0123456789abcdef".into(),
                    status: hurtigspor_proto::v1::MeasureStatus::Completed as i32,
                    end_date: date(2026, 6, 1),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        ("OpenRecognitionCase", bergen.open_recognition_case(nursing_case(&a.name)).await.map(|_| ())),
        (
            "RecordCompetenceMapping",
            bergen
                .record_competence_mapping(RecordCompetenceMappingRequest {
                    name: n(),
                    competence: Some(hurtigspor_proto::v1::CompetenceMapping {
                        mapped_date: date(2026, 2, 1),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "UpdateIndividualPlan",
            bergen
                .update_individual_plan(UpdateIndividualPlanRequest { name: n(), ..Default::default() })
                .await
                .map(|_| ()),
        ),
    ];
    for (method, result) in writes {
        let status = result.expect_err(method);
        assert_eq!(status.code(), Code::NotFound, "{method}: {status:?}");
    }
    assert_eq!(app.get(&a.name).await, a, "Bergen changed nothing of Oslo's");

    // A kommune registers in its own kommune only, and learns of a person
    // registered elsewhere without learning where.
    let mut elsewhere = minimal_participant();
    elsewhere.kommunenummer = "4601".into();
    expect_error(oslo.create_participant(create_request(elsewhere)).await, Code::PermissionDenied, "KOMMUNE_NOT_YOURS");
    let mut again = minimal_participant();
    again.national_id = a.national_id.clone();
    again.kommunenummer = "4601".into();
    let exists = expect_error(
        bergen.create_participant(create_request(again)).await,
        Code::AlreadyExists,
        "PARTICIPANT_ALREADY_EXISTS",
    );
    let id = a.name.trim_start_matches("participants/");
    assert!(!format!("{exists:?}").contains(id), "the other kommune's participant is not named: {exists:?}");

    // Bergen's stream carries Bergen's changes only.
    let mut stream = SyncServiceClient::new(channel(app.addr, &bergen_token).await)
        .watch_changes(WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.name, b.name);
    bergen
        .update_participant(UpdateParticipantRequest {
            participant: Some(hurtigspor_proto::v1::Participant {
                name: b.name.clone(),
                nav_office: "1201".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["nav_office".into()] }),
        })
        .await
        .unwrap();
    let second = stream.message().await.unwrap().unwrap();
    assert_eq!((second.name.as_str(), second.version), (b.name.as_str(), 2), "Oslo's changes were skipped");

    // NAV sees every kommune's participants, and may not rewrite kommune-owned fields.
    nav.get_participant(GetParticipantRequest { name: a.name.clone() }).await.unwrap();
    expect_error(nav.update_participant(update).await, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    expect_error(
        nav.create_participant(create_request(minimal_participant())).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let moved = nav
        .transition_hurtigspor(TransitionHurtigsporRequest {
            name: a.name.clone(),
            status: hurtigspor_proto::v1::HurtigsporStatus::Rejected as i32,
            ..Default::default()
        })
        .await;
    assert!(!matches!(&moved, Err(s) if s.code() == Code::PermissionDenied), "NAV may move the status: {moved:?}");
}

#[tokio::test]
async fn a_client_over_its_rate_or_stream_cap_is_told_when_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dev_config(dir.path());
    config.limits.requests_per_second = 1;
    config.limits.burst = 3;
    config.limits.max_streams_per_client = 1;
    let app = spawn_with(dir, config).await;
    let mut oslo = connect(app.addr, &dev_token(&app, "kommune_0301")).await;
    for _ in 0..3 {
        oslo.list_participants(ListParticipantsRequest::default()).await.unwrap();
    }
    let status = expect_error(
        oslo.list_participants(ListParticipantsRequest::default()).await,
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
    let retry = status.get_details_retry_info().expect("RetryInfo").retry_delay.expect("a delay");
    assert!(retry <= std::time::Duration::from_secs(1), "{retry:?}");
    let mut bergen = connect(app.addr, &dev_token(&app, "kommune_4601")).await;
    bergen.list_participants(ListParticipantsRequest::default()).await.expect("other clients are not held up");
    tokio::time::sleep(retry).await;
    oslo.list_participants(ListParticipantsRequest::default()).await.expect("after the wait it goes through");

    let nav = dev_token(&app, "nav");
    let mut sync = SyncServiceClient::new(channel(app.addr, &nav).await);
    let first = sync.watch_changes(WatchChangesRequest::default()).await.unwrap();
    expect_error(sync.watch_changes(WatchChangesRequest::default()).await, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    drop(first);
    until(
        "a stream after the first closed",
        || {
            let mut sync = sync.clone();
            async move { sync.watch_changes(WatchChangesRequest::default()).await.map(|_| ()).map_err(|s| s.code()) }
        },
        Result::is_ok,
    )
    .await
    .expect("a stream opens once the first is closed");
}

/// The gaps a review found: a stale etag, a moved participant, a replayed
/// request id and an operator's method in another role's hands.
#[tokio::test]
async fn tenancy_holds_for_etags_moves_request_ids_and_operator_methods() {
    let app = spawn_app().await;
    let mut oslo = connect(app.addr, &dev_token(&app, "kommune_0301")).await;
    let mut bergen = connect(app.addr, &dev_token(&app, "kommune_4601")).await;
    let a = oslo.create_participant(create_request(minimal_participant())).await.unwrap().into_inner();

    // A wrong etag on another kommune's participant is NOT_FOUND, not ABORTED.
    let stale = TransitionHurtigsporRequest {
        name: a.name.clone(),
        etag: "W/\"99\"".into(),
        status: hurtigspor_proto::v1::HurtigsporStatus::Rejected as i32,
        ..Default::default()
    };
    expect_error(bergen.transition_hurtigspor(stale).await, Code::NotFound, "NOT_FOUND");

    // A kommune cannot hand its participant to another kommune.
    let mv = UpdateParticipantRequest {
        participant: Some(hurtigspor_proto::v1::Participant {
            name: a.name.clone(),
            kommunenummer: "4601".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["kommunenummer".into()] }),
    };
    expect_error(oslo.update_participant(mv).await, Code::PermissionDenied, "KOMMUNE_NOT_YOURS");
    assert_eq!(app.get(&a.name).await, a, "nothing moved");

    // Request ids are each client's own: Bergen repeating Oslo's request
    // gets no replay of Oslo's answer.
    let request = RecordMeasureRequest {
        name: a.name.clone(),
        measure: Some(hurtigspor_proto::v1::Measure {
            kind: hurtigspor_proto::v1::MeasureKind::LabourMarketCourse as i32,
            start_date: date(2026, 3, 1),
            ..Default::default()
        }),
        request_id: "shared-1".into(),
        ..Default::default()
    };
    oslo.record_measure(request.clone()).await.unwrap();
    expect_error(bergen.record_measure(request).await, Code::NotFound, "NOT_FOUND");

    // The operator's methods want the administrator's role, not just the scope.
    let nav_admin_scope = token_for(app.dir.path(), dev::ISSUER, "nav", &["hurtigspor:sync.admin"]);
    let mut sync = SyncServiceClient::new(channel(app.addr, &nav_admin_scope).await);
    expect_error(
        sync.list_failed_deliveries(ListFailedDeliveriesRequest::default()).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
}

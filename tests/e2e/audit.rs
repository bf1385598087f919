//! The audit log over the real gRPC port: each method leaves the entries it
//! should, refusals included; administrators query it; the chain verifies.

use crate::helpers::*;
use hurtigspor_gateway::{
    audit::code_name,
    auth::BearerToken,
    keys::Keys,
    store::{Location, verify_audit_log},
};
use hurtigspor_proto::v1::{
    AuditEntry, EndMeasureRequest, GetParticipantRequest, GetSyncStatusRequest, ListAuditEntriesRequest,
    ListParticipantsRequest, LookupParticipantRequest, RecordCompetenceMappingRequest, RecordMeasureRequest,
    TransitionHurtigsporRequest, UpdateIndividualPlanRequest, UpdateParticipantRequest, WatchChangesRequest,
    audit_service_client::AuditServiceClient, participant_service_client::ParticipantServiceClient,
    sync_service_client::SyncServiceClient,
};
use tonic::Code;

const OSLO: &str = "0192:900000014";
const BERGEN: &str = "0192:900000022";
const VENDOR: &str = "0192:900000103";

async fn audit_client(app: &TestApp) -> AuditServiceClient<Authed> {
    AuditServiceClient::new(channel(app.addr, &app.token).await)
}

/// Every entry matching `request`, following the pages.
async fn all_entries(app: &TestApp, request: ListAuditEntriesRequest) -> Vec<AuditEntry> {
    let mut client = audit_client(app).await;
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit_entries(ListAuditEntriesRequest { page_token, ..request.clone() })
            .await
            .unwrap()
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// (method, organisation, outcome) of a participant's entries from the API.
fn api_view(entries: &[AuditEntry]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .filter(|e| e.organisation.starts_with("0192:"))
        .map(|e| (e.method.clone(), e.organisation.clone(), e.outcome.clone()))
        .collect()
}

fn outcome<T>(r: &Result<T, tonic::Status>) -> String {
    code_name(r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)).to_owned()
}

#[tokio::test]
async fn each_method_leaves_its_entries_refusals_included_and_the_chain_verifies() {
    let app = spawn_app().await;
    let oslo_token = dev_token(&app, "kommune_0301");
    let mut oslo = connect(app.addr, &oslo_token).await;
    let mut bergen = connect(app.addr, &dev_token(&app, "kommune_4601")).await;
    let p = oslo.create_participant(create_request(minimal_participant())).await.unwrap().into_inner();
    let name = p.name.clone();
    let id = name.trim_start_matches("participants/").to_owned();
    let mut expected = vec![("ParticipantService/CreateParticipant", OSLO, "OK".to_owned())];

    let get = oslo.get_participant(GetParticipantRequest { name: name.clone() }).await;
    expected.push(("ParticipantService/GetParticipant", OSLO, outcome(&get)));
    let list = oslo.list_participants(ListParticipantsRequest::default()).await;
    expected.push(("ParticipantService/ListParticipants", OSLO, outcome(&list)));
    let lookup = oslo.lookup_participant(LookupParticipantRequest { national_id: p.national_id.clone() }).await;
    expected.push(("ParticipantService/LookupParticipant", OSLO, outcome(&lookup)));
    let update = oslo
        .update_participant(UpdateParticipantRequest {
            participant: Some(hurtigspor_proto::v1::Participant {
                name: name.clone(),
                given_name: fresh_given_name(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["given_name".into()] }),
        })
        .await;
    expected.push(("ParticipantService/UpdateParticipant", OSLO, outcome(&update)));
    // Writes that are refused are audited as refused.
    let transition =
        oslo.transition_hurtigspor(TransitionHurtigsporRequest { name: name.clone(), ..Default::default() }).await;
    expected.push(("ParticipantService/TransitionHurtigspor", OSLO, outcome(&transition)));
    let measure = oslo.record_measure(RecordMeasureRequest { name: name.clone(), ..Default::default() }).await;
    expected.push(("ParticipantService/RecordMeasure", OSLO, outcome(&measure)));
    let end_measure = oslo
        .end_measure(EndMeasureRequest {
            name: name.clone(),
            measure_id: "no-such-measure".into(),
            ..Default::default()
        })
        .await;
    expected.push(("ParticipantService/EndMeasure", OSLO, outcome(&end_measure)));
    let recognition = oslo.open_recognition_case(nursing_case(&name)).await;
    expected.push(("ParticipantService/OpenRecognitionCase", OSLO, outcome(&recognition)));
    let competence = oslo
        .record_competence_mapping(RecordCompetenceMappingRequest { name: name.clone(), ..Default::default() })
        .await;
    expected.push(("ParticipantService/RecordCompetenceMapping", OSLO, outcome(&competence)));
    let plan =
        oslo.update_individual_plan(UpdateIndividualPlanRequest { name: name.clone(), ..Default::default() }).await;
    expected.push(("ParticipantService/UpdateIndividualPlan", OSLO, outcome(&plan)));
    let status = SyncServiceClient::new(channel(app.addr, &oslo_token).await)
        .get_sync_status(GetSyncStatusRequest { name: name.clone() })
        .await;
    expected.push(("SyncService/GetSyncStatus", OSLO, outcome(&status)));
    // Another kommune asking for the participant: refused, and on record.
    let probe = bergen.get_participant(GetParticipantRequest { name: name.clone() }).await;
    assert_eq!(probe.as_ref().unwrap_err().code(), Code::NotFound);
    expected.push(("ParticipantService/GetParticipant", BERGEN, "NOT_FOUND".into()));
    // Bergen looking Oslo's participant up by national id: on record as
    // about that participant, though Bergen learns nothing.
    let lookup_probe = bergen.lookup_participant(LookupParticipantRequest { national_id: p.national_id.clone() }).await;
    assert_eq!(lookup_probe.unwrap_err().code(), Code::NotFound);
    expected.push(("ParticipantService/LookupParticipant", BERGEN, "NOT_FOUND".into()));
    // NAV may not rewrite the kommune's fields: refused before the body is
    // read, and on record (without the participant, which was not read).
    let mut nav = connect(app.addr, &dev_token(&app, "nav")).await;
    let nav_update = nav.update_participant(UpdateParticipantRequest::default()).await;
    expect_error(nav_update, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    // A read without a purpose is refused, and on record.
    let plain =
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr)).unwrap().connect().await.unwrap();
    let mut no_purpose = ParticipantServiceClient::with_interceptor(plain, BearerToken::new(&oslo_token).unwrap());
    let refused = no_purpose.get_participant(GetParticipantRequest { name: name.clone() }).await;
    let refused = expect_error(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_violation(&refused, "purpose", "PURPOSE_REQUIRED");
    expected.push(("ParticipantService/GetParticipant", OSLO, "INVALID_ARGUMENT".into()));
    // So is a write: it answers with the record, a read too.
    let unexplained = no_purpose.open_recognition_case(nursing_case(&name)).await;
    assert_violation(
        &expect_error(unexplained, Code::InvalidArgument, "INVALID_ARGUMENT"),
        "purpose",
        "PURPOSE_REQUIRED",
    );
    expected.push(("ParticipantService/OpenRecognitionCase", OSLO, "INVALID_ARGUMENT".into()));

    // The stream: the participant is on record as shown to Oslo.
    let mut stream = SyncServiceClient::new(channel(app.addr, &oslo_token).await)
        .watch_changes(WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("the creation is streamed");
    assert_eq!(first.name, name);
    drop(stream);
    expected.push(("SyncService/WatchChanges", OSLO, "OK".into()));

    // The allowed calls went through: their entries say OK because they were.
    for (what, ok) in
        [("get", get.is_ok()), ("list", list.is_ok()), ("lookup", lookup.is_ok()), ("update", update.is_ok())]
    {
        assert!(ok, "{what} succeeds for Oslo");
    }
    assert!(recognition.is_ok() && status.is_ok());
    let expected: Vec<(String, String, String)> =
        expected.into_iter().map(|(m, o, r)| (m.to_owned(), o.to_owned(), r)).collect();
    let entries = until(
        "the participant's audit entries",
        || all_entries(&app, ListAuditEntriesRequest { participant: name.clone(), ..Default::default() }),
        |entries| api_view(entries).len() >= expected.len(),
    )
    .await;
    assert_eq!(api_view(&entries), expected);
    for e in entries.iter().filter(|e| e.organisation.starts_with("0192:")) {
        assert_eq!(e.participant, name);
        if e.organisation == OSLO {
            assert_eq!(e.vendor, VENDOR, "{e:?}");
        }
        let refused_purpose = e.detail == "purpose PURPOSE_REQUIRED";
        if !refused_purpose {
            assert_eq!(e.purpose, PURPOSE, "{e:?}");
        }
    }
    assert_eq!(entries.iter().filter(|e| e.detail == "purpose PURPOSE_REQUIRED").count(), 2);
    // NAV's refused write is on record under NAV, with its reason.
    let nav_entries =
        all_entries(&app, ListAuditEntriesRequest { organisation: "900000030".into(), ..Default::default() }).await;
    assert!(
        nav_entries.iter().any(|e| e.method == "ParticipantService/UpdateParticipant"
            && e.outcome == "PERMISSION_DENIED"
            && e.detail == "ROLE_NOT_ALLOWED"),
        "{nav_entries:?}"
    );
    let stream_entry = entries.iter().find(|e| e.method == "SyncService/WatchChanges").unwrap();
    assert!(stream_entry.detail.starts_with("cursor "), "{stream_entry:?}");

    // Deliveries to the target systems are on record for the participant.
    app.sync_until(&name, |t| t.iter().all(|s| s.state == hurtigspor_proto::v1::SyncState::Delivered as i32)).await;
    let deliveries = until(
        "delivery entries",
        || {
            all_entries(
                &app,
                ListAuditEntriesRequest {
                    participant: name.clone(),
                    organisation: "gateway".into(),
                    ..Default::default()
                },
            )
        },
        |entries| {
            ["deliver/arena", "deliver/nir", "deliver/nokut"]
                .iter()
                .all(|m| entries.iter().any(|e| e.method == *m && e.outcome == "delivered"))
        },
    )
    .await;
    assert!(deliveries.iter().all(|e| e.participant == name && e.purpose == "sync"));

    // Entries never hold the national id or the name.
    let everything = all_entries(&app, ListAuditEntriesRequest::default()).await;
    let text = format!("{everything:?}");
    assert!(!text.contains(&p.national_id) && !text.contains(&p.family_name));
    assert!(everything.windows(2).all(|w| w[1].sequence == w[0].sequence + 1 && w[1].previous_hash == w[0].hash));

    // Only administrators read the audit log; reading it is audited too.
    let denied = AuditServiceClient::new(channel(app.addr, &oslo_token).await)
        .list_audit_entries(ListAuditEntriesRequest::default())
        .await;
    expect_error(denied, Code::PermissionDenied, "SCOPE_MISSING");
    let refusals = all_entries(
        &app,
        ListAuditEntriesRequest {
            organisation: OSLO.into(),
            method: "AuditService/ListAuditEntries".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        refusals.iter().map(|e| (e.outcome.as_str(), e.detail.as_str())).collect::<Vec<_>>(),
        [("PERMISSION_DENIED", "SCOPE_MISSING")],
        "a known caller's refusal is on record"
    );
    let reads = all_entries(
        &app,
        ListAuditEntriesRequest { method: "AuditService/ListAuditEntries".into(), ..Default::default() },
    )
    .await;
    assert!(!reads.is_empty());

    // After a clean stop, the chain verifies with the gateway's key.
    let dir = app.stop().await;
    let config = dev_config(dir.path());
    let key = Keys::load(&config).unwrap().audit_key();
    let head =
        verify_audit_log(&Location::of(&config), &key, None, 0, |_, _| {}).await.unwrap().expect("an intact chain");
    forget_database(dir.path());
    assert!(head.entries as usize >= everything.len());
    let _ = id;
}

#[tokio::test]
async fn the_audit_log_pages_and_filters_and_refuses_a_foreign_page_token() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let p = app.create(minimal_participant()).await;
        app.get(&p.name).await;
    }
    let reads = ListAuditEntriesRequest { method: "ParticipantService/GetParticipant".into(), ..Default::default() };
    let mut client = audit_client(&app).await;
    let first = client
        .list_audit_entries(ListAuditEntriesRequest { page_size: 2, ..reads.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.entries.len(), 2);
    assert!(first.entries.iter().all(|e| e.method == reads.method && e.outcome == "OK"));
    let rest = client
        .list_audit_entries(ListAuditEntriesRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..reads.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.entries.len(), 1);
    assert!(rest.next_page_token.is_empty());
    assert!(rest.entries[0].sequence > first.entries[1].sequence);
    // A page token is good for the filters it was issued for only.
    let other = client
        .list_audit_entries(ListAuditEntriesRequest { page_token: first.next_page_token, ..Default::default() })
        .await;
    let status = expect_error(other, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_violation(&status, "page_token", "PAGE_TOKEN_FILTER_MISMATCH");
    let bad =
        client.list_audit_entries(ListAuditEntriesRequest { organisation: "12".into(), ..Default::default() }).await;
    assert_violation(
        &expect_error(bad, Code::InvalidArgument, "INVALID_ARGUMENT"),
        "organisation",
        "INVALID_ORGANISATION",
    );
    // A time window.
    let future = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 3600, nanos: 0 };
    let none = client
        .list_audit_entries(ListAuditEntriesRequest { start_time: Some(future), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());
}

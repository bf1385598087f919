//! Create, read and lookup: success and every error code with its details.

use crate::helpers::*;
use hurtigspor_gateway::domain::national_id::testing::complete;
use hurtigspor_proto::v1::{
    CreateParticipantRequest, GetParticipantRequest, HurtigsporStatus, ListParticipantsRequest,
    LookupParticipantRequest, NationalIdKind, Participant, ProgrammeStatus,
};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn create_with_only_the_required_fields_then_get_and_lookup() {
    let app = spawn_app().await;
    let input = minimal_participant();
    let created = app.create(input.clone()).await;

    assert!(created.name.starts_with("participants/"), "{}", created.name);
    assert_eq!(created.name.len(), "participants/".len() + 32);
    assert_eq!(created.national_id, input.national_id);
    assert_eq!(created.family_name, input.family_name);
    assert_eq!(created.national_id_kind, NationalIdKind::Fodselsnummer as i32);
    assert!(created.birth_date.is_some());
    assert!(!created.etag.is_empty());
    assert!(created.create_time.is_some() && created.update_time.is_some());
    assert_eq!(created.hurtigspor.as_ref().unwrap().status, HurtigsporStatus::NotAssessed as i32);
    assert_eq!(created.programme.as_ref().unwrap().status, ProgrammeStatus::Active as i32);
    assert!(created.warnings.is_empty(), "{:?}", created.warnings);

    let got = app.get(&created.name).await;
    assert_eq!(got, created);

    let looked_up = app
        .client
        .clone()
        .lookup_participant(LookupParticipantRequest { national_id: input.national_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(looked_up, created);
}

#[tokio::test]
async fn output_only_fields_in_a_create_are_ignored() {
    let app = spawn_app().await;
    let mut input = minimal_participant();
    input.name = "participants/00000000000000000000000000000000".into();
    input.etag = "W/\"99\"".into();
    input.hurtigspor =
        Some(hurtigspor_proto::v1::Hurtigspor { status: HurtigsporStatus::Employed as i32, ..Default::default() });
    let created = app.create(input).await;
    assert_ne!(created.name, "participants/00000000000000000000000000000000");
    assert_eq!(created.etag, "W/\"1\"");
    assert_eq!(created.hurtigspor.unwrap().status, HurtigsporStatus::NotAssessed as i32);
}

#[tokio::test]
async fn every_bad_field_is_named_at_once() {
    let app = spawn_app().await;
    let mut bad_checksum = fresh_national_id().into_bytes();
    bad_checksum[10] = b'0' + (bad_checksum[10] - b'0' + 1) % 10;
    let bad_checksum = String::from_utf8(bad_checksum).unwrap();
    remember(&bad_checksum);
    let input = Participant {
        national_id: bad_checksum,
        given_name: "  ".into(),
        family_name: fresh_family_name(),
        kommunenummer: "3004".into(), // Fredrikstad's code before 2024
        programme: Some(hurtigspor_proto::v1::Programme::default()),
        ..Default::default()
    };
    let status = expect_error(
        app.client.clone().create_participant(create_request(input)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violations(&status),
        [
            ("participant.national_id".into(), "INVALID_CHECK_DIGITS".into()),
            ("participant.given_name".into(), "REQUIRED".into()),
            ("participant.kommunenummer".into(), "UNKNOWN_KOMMUNE".into()),
            ("participant.programme.start_date".into(), "REQUIRED".into()),
        ]
    );
    // Nothing was stored.
    let list = app.client.clone().list_participants(ListParticipantsRequest::default()).await.unwrap().into_inner();
    assert!(list.participants.is_empty());
}

#[tokio::test]
async fn missing_participant_and_programme() {
    let app = spawn_app().await;
    let status = expect_error(
        app.client.clone().create_participant(CreateParticipantRequest::default()).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant", "REQUIRED");

    let mut input = minimal_participant();
    input.programme = None;
    let status = expect_error(
        app.client.clone().create_participant(create_request(input)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant.programme", "REQUIRED");
}

#[tokio::test]
async fn identifier_kinds_that_cannot_identify_a_participant() {
    let app = spawn_app().await;
    let fh = (0..1000).find_map(|i| complete(&format!("8{i:03}00000"))).unwrap();
    let future = (500..999).find_map(|i| complete(&format!("010139{i:03}"))).unwrap(); // born 2039
    for (number, reason) in
        [(fh, "FH_NUMBER_NOT_ALLOWED"), (future, "FUTURE_BIRTH_DATE"), ("1234".into(), "INVALID_FORMAT")]
    {
        let mut input = minimal_participant();
        input.national_id = number;
        let status = expect_error(
            app.client.clone().create_participant(create_request(input)).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_violation(&status, "participant.national_id", reason);
    }
}

#[tokio::test]
async fn d_number_is_accepted() {
    let app = spawn_app().await;
    // Synthetic D-nummer: day + 40, month + 80.
    let d_number = (100..300).find_map(|i| complete(&format!("558390{i:03}"))).unwrap();
    remember(&d_number);
    let mut input = minimal_participant();
    input.national_id = d_number;
    let created = app.create(input).await;
    assert_eq!(created.national_id_kind, NationalIdKind::DNummer as i32);
    assert_eq!(created.birth_date, date(1990, 3, 15));
}

#[tokio::test]
async fn synthetic_numbers_are_refused_in_production_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = production_config(dir.path());
    let app = spawn_with(dir, config).await;
    let status = expect_error(
        app.client.clone().create_participant(create_request(minimal_participant())).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant.national_id", "SYNTHETIC_NUMBER_NOT_ALLOWED");
    // NAV's synthetic numbers (month + 40) read as H-numbers there.
    let nav_synthetic = (100..300).find_map(|i| complete(&format!("154385{i:03}"))).unwrap();
    remember(&nav_synthetic);
    let mut input = minimal_participant();
    input.national_id = nav_synthetic;
    let status = expect_error(
        app.client.clone().create_participant(create_request(input)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant.national_id", "H_NUMBER_NOT_ALLOWED");
}

#[tokio::test]
async fn the_same_national_id_twice_is_already_exists_naming_the_first() {
    let app = spawn_app().await;
    let input = minimal_participant();
    let first = app.create(input.clone()).await;
    let mut again = input.clone();
    again.family_name = fresh_family_name();
    let status = expect_error(
        app.client.clone().create_participant(create_request(again)).await,
        Code::AlreadyExists,
        "PARTICIPANT_ALREADY_EXISTS",
    );
    assert_eq!(status.get_details_resource_info().unwrap().resource_name, first.name);
    assert_eq!(status.get_details_error_info().unwrap().metadata["existing_participant"], first.name);
    assert!(!status.message().contains(&input.national_id));
}

#[tokio::test]
async fn create_retried_with_the_same_request_id_returns_the_original() {
    let app = spawn_app().await;
    let request = CreateParticipantRequest { participant: Some(minimal_participant()), request_id: "req-1".into() };
    let first = app.client.clone().create_participant(request.clone()).await.unwrap().into_inner();

    // Sequential and concurrent retries all get the original answer.
    let second = app.client.clone().create_participant(request.clone()).await.unwrap().into_inner();
    assert_eq!(second, first);
    let retries = futures::future::join_all((0..8).map(|_| {
        let mut c = app.client.clone();
        let r = request.clone();
        async move { c.create_participant(r).await.unwrap().into_inner() }
    }))
    .await;
    assert!(retries.iter().all(|p| p.name == first.name && p.etag == first.etag));

    let list = app.client.clone().list_participants(ListParticipantsRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.participants.len(), 1);

    // The same id with another body is refused, and stores nothing.
    let other = CreateParticipantRequest { participant: Some(minimal_participant()), request_id: "req-1".into() };
    let status =
        expect_error(app.client.clone().create_participant(other).await, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert_violation(&status, "request_id", "REQUEST_ID_REUSED");
    let list = app.client.clone().list_participants(ListParticipantsRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.participants.len(), 1);
}

#[tokio::test]
async fn concurrent_creates_of_one_person_store_one() {
    let app = spawn_app().await;
    let input = minimal_participant();
    let results = futures::future::join_all((0..10).map(|_| {
        let mut c = app.client.clone();
        let r = create_request(input.clone());
        async move { c.create_participant(r).await }
    }))
    .await;
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1, "exactly one create wins");
    for r in &results {
        if let Err(s) = r {
            assert_eq!(s.code(), Code::AlreadyExists);
            assert_eq!(s.get_details_resource_info().unwrap().resource_name, ok[0].get_ref().name);
        }
    }
}

#[tokio::test]
async fn unknown_and_malformed_names() {
    let app = spawn_app().await;
    let status = expect_error(
        app.client
            .clone()
            .get_participant(GetParticipantRequest { name: "participants/0123456789abcdef0123456789abcdef".into() })
            .await,
        Code::NotFound,
        "NOT_FOUND",
    );
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_name,
        "participants/0123456789abcdef0123456789abcdef"
    );
    // A national id where a name belongs is refused without being echoed.
    let national_id = fresh_national_id();
    let status = expect_error(
        app.client.clone().get_participant(GetParticipantRequest { name: format!("participants/{national_id}") }).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "name", "INVALID_RESOURCE_NAME");
    assert!(!format!("{status:?}").contains(&national_id));
    let status = expect_error(
        app.client.clone().get_participant(GetParticipantRequest::default()).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "name", "REQUIRED");
}

#[tokio::test]
async fn lookup_errors() {
    let app = spawn_app().await;
    let national_id = fresh_national_id();
    let status = expect_error(
        app.client.clone().lookup_participant(LookupParticipantRequest { national_id: national_id.clone() }).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    assert!(!status.message().contains(&national_id));
    let status = expect_error(
        app.client.clone().lookup_participant(LookupParticipantRequest { national_id: "123".into() }).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "national_id", "INVALID_FORMAT");
}

#[tokio::test]
async fn age_outside_the_target_group_is_a_warning_not_a_rejection() {
    let app = spawn_app().await;
    let mut input = minimal_participant();
    input.national_id = national_id_born(1960, 6, 1); // 65 at programme start
    let created = app.create(input).await;
    assert_eq!(created.warnings.len(), 1, "{:?}", created.warnings);
    assert_eq!(created.warnings[0].code, "AGE_OUTSIDE_TARGET_GROUP");
    assert_eq!(app.get(&created.name).await.warnings, created.warnings);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = spawn_app().await;
    let mut input = minimal_participant();
    input.given_name = "x".repeat(2 * 1024 * 1024);
    let status = app.client.clone().create_participant(create_request(input)).await.unwrap_err();
    // tonic answers an over-limit message with OUT_OF_RANGE before any handler runs.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    let list = app.client.clone().list_participants(ListParticipantsRequest::default()).await.unwrap().into_inner();
    assert!(list.participants.is_empty());
}

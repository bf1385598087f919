//! ListParticipants: pages, filters and page tokens.

use crate::helpers::*;
use hurtigspor_proto::v1::{ListParticipantsRequest, ListParticipantsResponse};
use std::collections::HashSet;
use tonic::Code;

async fn list(app: &TestApp, req: ListParticipantsRequest) -> Result<ListParticipantsResponse, tonic::Status> {
    app.client.clone().list_participants(req).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn pages_cover_everything_once_in_registration_order() {
    let app = spawn_app().await;
    let mut names = Vec::new();
    for i in 0..7 {
        let mut p = minimal_participant();
        p.kommunenummer = if i % 2 == 0 { "0301" } else { "4601" }.into();
        names.push(app.create(p).await.name);
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&app, ListParticipantsRequest { page_size: 3, page_token: token, ..Default::default() })
            .await
            .unwrap();
        assert!(page.participants.len() <= 3);
        seen.extend(page.participants.into_iter().map(|p| p.name));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names, "every participant once, oldest first");

    // Filtered by kommune.
    let oslo = list(&app, ListParticipantsRequest { kommunenummer: "0301".into(), page_size: 2, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(oslo.participants.len(), 2);
    assert!(oslo.participants.iter().all(|p| p.kommunenummer == "0301"));
    let rest = list(
        &app,
        ListParticipantsRequest {
            kommunenummer: "0301".into(),
            page_size: 2,
            page_token: oslo.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rest.participants.len(), 2);
    assert!(rest.next_page_token.is_empty());
    let all: HashSet<_> = oslo.participants.iter().chain(&rest.participants).map(|p| p.name.clone()).collect();
    assert_eq!(all.len(), 4);

    // The token from the kommune filter cannot continue another listing.
    let status = expect_error(
        list(
            &app,
            ListParticipantsRequest {
                kommunenummer: "4601".into(),
                page_size: 2,
                page_token: oslo.next_page_token.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "page_token", "PAGE_TOKEN_FILTER_MISMATCH");
    let status = expect_error(
        list(
            &app,
            ListParticipantsRequest {
                hurtigspor_status: 2,
                kommunenummer: "0301".into(),
                page_token: oslo.next_page_token,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "page_token", "PAGE_TOKEN_FILTER_MISMATCH");
}

#[tokio::test]
async fn status_filter() {
    let app = spawn_app().await;
    app.create(minimal_participant()).await;
    let not_assessed =
        list(&app, ListParticipantsRequest { hurtigspor_status: 1, ..Default::default() }).await.unwrap();
    assert_eq!(not_assessed.participants.len(), 1);
    let candidates = list(&app, ListParticipantsRequest { hurtigspor_status: 2, ..Default::default() }).await.unwrap();
    assert!(candidates.participants.is_empty());
}

#[tokio::test]
async fn bad_list_requests() {
    let app = spawn_app().await;
    let status = expect_error(
        list(
            &app,
            ListParticipantsRequest {
                page_size: -1,
                kommunenummer: "12".into(),
                hurtigspor_status: 99,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "page_size", "OUT_OF_RANGE");
    assert_violation(&status, "kommunenummer", "INVALID_KOMMUNE");
    assert_violation(&status, "hurtigspor_status", "UNKNOWN_ENUM_VALUE");
    let status = expect_error(
        list(&app, ListParticipantsRequest { page_token: "forged".into(), ..Default::default() }).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "page_token", "INVALID_PAGE_TOKEN");
}

#[tokio::test]
async fn page_size_is_capped_and_defaulted_by_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dev_config(dir.path());
    config.limits.default_page_size = 2;
    config.limits.max_page_size = 3;
    let app = spawn_with(dir, config).await;
    for _ in 0..5 {
        app.create(minimal_participant()).await;
    }
    let capped = list(&app, ListParticipantsRequest { page_size: 100_000, ..Default::default() }).await.unwrap();
    assert_eq!(capped.participants.len(), 3);
    assert!(!capped.next_page_token.is_empty());
    let defaulted = list(&app, ListParticipantsRequest::default()).await.unwrap();
    assert_eq!(defaulted.participants.len(), 2);
}

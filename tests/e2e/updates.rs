//! UpdateParticipant: masks, etags, validation of the result.

use crate::helpers::*;
use hurtigspor_proto::v1::{LeavePeriod, LeaveReason, Participant, Programme, UpdateParticipantRequest};
use prost_types::FieldMask;
use tonic::Code;

fn update(p: Participant, paths: &[&str]) -> UpdateParticipantRequest {
    UpdateParticipantRequest {
        participant: Some(p),
        update_mask: Some(FieldMask { paths: paths.iter().map(|s| s.to_string()).collect() }),
    }
}

#[tokio::test]
async fn masked_fields_change_and_nothing_else() {
    let app = spawn_app().await;
    let created = app.create(minimal_participant()).await;
    let (new_name, newer_name) = (fresh_given_name(), fresh_given_name());
    let mut change = Participant {
        name: created.name.clone(),
        etag: created.etag.clone(),
        given_name: new_name.clone(),
        family_name: "not in the mask".into(),
        kommunenummer: "4601".into(),
        programme: Some(Programme { planned_end_date: date(2027, 12, 31), ..Default::default() }),
        ..Default::default()
    };
    let updated = app
        .client
        .clone()
        .update_participant(update(change.clone(), &["given_name", "kommunenummer", "programme.planned_end_date"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.given_name, new_name);
    assert_eq!(updated.kommunenummer, "4601");
    assert_eq!(updated.family_name, created.family_name, "not in the mask");
    assert_eq!(updated.programme.as_ref().unwrap().planned_end_date, date(2027, 12, 31));
    assert_eq!(updated.programme.as_ref().unwrap().start_date, created.programme.as_ref().unwrap().start_date);
    assert_ne!(updated.etag, created.etag);
    assert_eq!(updated.create_time, created.create_time);
    assert_eq!(app.get(&created.name).await, updated);

    // Without an etag the update is unconditional.
    change.etag.clear();
    change.given_name = newer_name.clone();
    let again = app.client.clone().update_participant(update(change, &["given_name"])).await.unwrap().into_inner();
    assert_eq!(again.given_name, newer_name);
}

#[tokio::test]
async fn a_stale_etag_is_aborted_and_changes_nothing() {
    let app = spawn_app().await;
    let created = app.create(minimal_participant()).await;
    let first_name = fresh_given_name();
    let first = Participant {
        name: created.name.clone(),
        etag: created.etag.clone(),
        given_name: first_name.clone(),
        ..Default::default()
    };
    app.client.clone().update_participant(update(first, &["given_name"])).await.unwrap();

    let stale = Participant {
        name: created.name.clone(),
        etag: created.etag.clone(),
        given_name: fresh_given_name(),
        ..Default::default()
    };
    expect_error(
        app.client.clone().update_participant(update(stale, &["given_name"])).await,
        Code::Aborted,
        "STALE_ETAG",
    );
    assert_eq!(app.get(&created.name).await.given_name, first_name);
}

#[tokio::test]
async fn mask_errors_name_the_path() {
    let app = spawn_app().await;
    let created = app.create(minimal_participant()).await;
    let p = Participant { name: created.name.clone(), national_id: fresh_national_id(), ..Default::default() };
    let status = expect_error(
        app.client.clone().update_participant(update(p.clone(), &["national_id", "no_such_field"])).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "update_mask.paths[0]", "FIELD_NOT_UPDATABLE");
    assert_violation(&status, "update_mask.paths[1]", "FIELD_NOT_UPDATABLE");
    let status = expect_error(
        app.client.clone().update_participant(update(p.clone(), &[])).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "update_mask", "REQUIRED");
    let status = expect_error(
        app.client.clone().update_participant(update(p, &["hurtigspor.status"])).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(status.get_details_bad_request_descriptions().iter().any(|d| d.contains("TransitionHurtigspor")));
    assert_eq!(app.get(&created.name).await, created);
}

trait Descriptions {
    fn get_details_bad_request_descriptions(&self) -> Vec<String>;
}

impl Descriptions for tonic::Status {
    fn get_details_bad_request_descriptions(&self) -> Vec<String> {
        use tonic_types::StatusExt;
        self.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.description).collect()
    }
}

#[tokio::test]
async fn an_invalid_result_is_refused_and_the_record_kept() {
    let app = spawn_app().await;
    let created = app.create(minimal_participant()).await;
    let p = Participant {
        name: created.name.clone(),
        kommunenummer: "9999".into(),
        given_name: String::new(),
        ..Default::default()
    };
    let status = expect_error(
        app.client.clone().update_participant(update(p, &["kommunenummer", "given_name"])).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant.kommunenummer", "UNKNOWN_KOMMUNE");
    assert_violation(&status, "participant.given_name", "REQUIRED");
    assert_eq!(app.get(&created.name).await, created);
}

#[tokio::test]
async fn programme_length_follows_the_configured_limits() {
    let app = spawn_app().await;
    let created = app.create(minimal_participant()).await; // starts 2026-01-05
    let name = created.name.clone();
    let planned = |end, extended, leave: Vec<LeavePeriod>| Participant {
        name: name.clone(),
        programme: Some(Programme {
            planned_end_date: end,
            extended_for_special_reasons: extended,
            leave_periods: leave,
            ..Default::default()
        }),
        ..Default::default()
    };
    let paths = ["programme.planned_end_date", "programme.extended_for_special_reasons", "programme.leave_periods"];

    // 24 months: the last allowed day is 2028-01-04.
    app.client.clone().update_participant(update(planned(date(2028, 1, 4), false, vec![]), &paths)).await.unwrap();
    let status = expect_error(
        app.client.clone().update_participant(update(planned(date(2028, 1, 5), false, vec![]), &paths)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant.programme.planned_end_date", "PROGRAMME_TOO_LONG");

    // Approved leave of 10 days extends it by 10 days.
    let leave = vec![LeavePeriod {
        start_date: date(2026, 6, 1),
        end_date: date(2026, 6, 10),
        reason: LeaveReason::Illness as i32,
    }];
    app.client
        .clone()
        .update_participant(update(planned(date(2028, 1, 14), false, leave.clone()), &paths))
        .await
        .unwrap();
    expect_error(
        app.client.clone().update_participant(update(planned(date(2028, 1, 15), false, leave), &paths)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // Special reasons allow 36 months.
    app.client.clone().update_participant(update(planned(date(2029, 1, 4), true, vec![]), &paths)).await.unwrap();
    expect_error(
        app.client.clone().update_participant(update(planned(date(2029, 1, 5), true, vec![]), &paths)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // An end before the start.
    let status = expect_error(
        app.client.clone().update_participant(update(planned(date(2025, 1, 1), false, vec![]), &paths)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant.programme.planned_end_date", "END_BEFORE_START");
}

#[tokio::test]
async fn overlapping_leave_is_refused() {
    let app = spawn_app().await;
    let created = app.create(minimal_participant()).await;
    let leave = |s, e| LeavePeriod { start_date: s, end_date: e, reason: LeaveReason::Parental as i32 };
    let p = Participant {
        name: created.name.clone(),
        programme: Some(Programme {
            leave_periods: vec![
                leave(date(2026, 3, 1), date(2026, 3, 31)),
                leave(date(2026, 3, 31), date(2026, 4, 15)),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = expect_error(
        app.client.clone().update_participant(update(p, &["programme.leave_periods"])).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "participant.programme.leave_periods[1]", "OVERLAPPING_LEAVE");
}

#[tokio::test]
async fn updating_an_unknown_participant_is_not_found() {
    let app = spawn_app().await;
    let p = Participant {
        name: "participants/0123456789abcdef0123456789abcdef".into(),
        given_name: "X".into(),
        ..Default::default()
    };
    expect_error(app.client.clone().update_participant(update(p, &["given_name"])).await, Code::NotFound, "NOT_FOUND");
}

//! The domain's verbs: competence mapping, hurtigspor transitions, measures,
//! recognition cases, the plan and the end of the programme.

use crate::helpers::*;
use hurtigspor_proto::v1::{
    CompetenceMapping, DecisionMaker, EndMeasureRequest, EndProgrammeRequest, HurtigsporStatus as S, IndividualPlan,
    MainActivity, Measure, MeasureKind, MeasureStatus, OpenRecognitionCaseRequest, Participant, PlanGoal,
    ProgrammeEndReason, ProgrammeStatus, RecognitionCase, RecognitionScheme, RecognitionStatus,
    RecordCompetenceMappingRequest, RecordMeasureRequest, ResponsibleParty, TransitionHurtigsporRequest,
    UpdateIndividualPlanRequest, WorkExperience,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const EMPLOYER: &str = "889640782";

fn transition(name: &str, status: S) -> TransitionHurtigsporRequest {
    TransitionHurtigsporRequest {
        name: name.to_owned(),
        status: status as i32,
        decided_by: if status == S::Confirmed { DecisionMaker::Joint as i32 } else { DecisionMaker::Kommune as i32 },
        ..Default::default()
    }
}

async fn move_to(app: &TestApp, name: &str, status: S) -> Result<Participant, Status> {
    app.client.clone().transition_hurtigspor(transition(name, status)).await.map(|r| r.into_inner())
}

async fn mapped_participant(app: &TestApp) -> Participant {
    let created = app.create(minimal_participant()).await;
    app.client
        .clone()
        .record_competence_mapping(RecordCompetenceMappingRequest {
            name: created.name.clone(),
            competence: Some(CompetenceMapping {
                mapped_date: date(2026, 2, 1),
                work_experiences: vec![WorkExperience {
                    occupation: "nurse".into(),
                    styrk08_code: "2223".into(),
                    years: 6.0,
                    country_code: "SY".into(),
                }],
                ..Default::default()
            }),
            etag: created.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn status_of(p: &Participant) -> S {
    S::try_from(p.hurtigspor.as_ref().unwrap().status).unwrap()
}

#[tokio::test]
async fn the_whole_hurtigspor_path() {
    let app = spawn_app().await;
    let p = mapped_participant(&app).await;
    let name = p.name.clone();
    for status in [S::Candidate, S::Confirmed, S::Qualifying, S::JobMatching, S::EmployedWithSubsidy] {
        let moved = move_to(&app, &name, status).await.unwrap();
        assert_eq!(status_of(&moved), status);
    }
    let p = app.get(&name).await;
    let h = p.hurtigspor.as_ref().unwrap();
    assert!(h.candidate_date.is_some() && h.start_date.is_some() && h.end_date.is_none());
    assert_eq!(h.history.len(), 5);
    assert_eq!(h.history[1].decided_by, DecisionMaker::Joint as i32);
    assert!(p.warnings.iter().any(|w| w.code == "SUBSIDY_MEASURE_MISSING"), "{:?}", p.warnings);

    // NAV records the wage subsidy: the warning goes away.
    let with_measure = app
        .client
        .clone()
        .record_measure(RecordMeasureRequest {
            name: name.clone(),
            measure: Some(Measure {
                kind: MeasureKind::TemporaryWageSubsidy as i32,
                employer_orgnr: EMPLOYER.into(),
                position_percent: 100,
                start_date: date(2026, 9, 1),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(with_measure.warnings.is_empty(), "{:?}", with_measure.warnings);

    let employed = move_to(&app, &name, S::Employed).await.unwrap();
    assert!(employed.hurtigspor.as_ref().unwrap().end_date.is_some());
    // Employed ends hurtigspor: nothing follows.
    let status =
        expect_error(move_to(&app, &name, S::JobMatching).await, Code::FailedPrecondition, "ILLEGAL_TRANSITION");
    assert!(status.message().contains("allowed next: none"), "{}", status.message());
}

#[tokio::test]
async fn an_illegal_transition_changes_nothing() {
    let app = spawn_app().await;
    let p = mapped_participant(&app).await;
    let status =
        expect_error(move_to(&app, &p.name, S::Confirmed).await, Code::FailedPrecondition, "ILLEGAL_TRANSITION");
    assert!(
        status.message().contains("NOT_ASSESSED") && status.message().contains("CANDIDATE"),
        "{}",
        status.message()
    );
    let pf = status.get_details_precondition_failure().unwrap();
    assert_eq!(pf.violations[0].subject, "hurtigspor.status");
    assert_eq!(app.get(&p.name).await, p, "record, etag and history unchanged");
}

#[tokio::test]
async fn candidate_needs_the_competence_mapping() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    expect_error(move_to(&app, &p.name, S::Candidate).await, Code::FailedPrecondition, "COMPETENCE_MAPPING_MISSING");
    assert_eq!(app.get(&p.name).await, p);
}

#[tokio::test]
async fn confirmation_needs_the_joint_decision() {
    let app = spawn_app().await;
    let p = mapped_participant(&app).await;
    move_to(&app, &p.name, S::Candidate).await.unwrap();
    let mut req = transition(&p.name, S::Confirmed);
    req.decided_by = DecisionMaker::Kommune as i32;
    expect_error(
        app.client.clone().transition_hurtigspor(req).await,
        Code::FailedPrecondition,
        "JOINT_DECISION_REQUIRED",
    );
    // Unset means the joint meeting.
    let mut req = transition(&p.name, S::Confirmed);
    req.decided_by = 0;
    let confirmed = app.client.clone().transition_hurtigspor(req).await.unwrap().into_inner();
    assert_eq!(confirmed.hurtigspor.unwrap().decided_by, DecisionMaker::Joint as i32);
}

#[tokio::test]
async fn transition_input_errors() {
    let app = spawn_app().await;
    let p = mapped_participant(&app).await;
    let mut req = transition(&p.name, S::Candidate);
    req.status = 0;
    req.effective_date = date(2099, 1, 1);
    let status =
        expect_error(app.client.clone().transition_hurtigspor(req).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_violation(&status, "status", "REQUIRED");
    assert_violation(&status, "effective_date", "FUTURE_DATE");

    let mut req = transition(&p.name, S::Candidate);
    req.effective_date = date(2025, 12, 1); // before the programme started
    let status =
        expect_error(app.client.clone().transition_hurtigspor(req).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_violation(&status, "effective_date", "BEFORE_PROGRAMME_START");

    let req = transition("participants/0123456789abcdef0123456789abcdef", S::Candidate);
    expect_error(app.client.clone().transition_hurtigspor(req).await, Code::NotFound, "NOT_FOUND");
}

#[tokio::test]
async fn transitions_honour_etags_and_request_ids() {
    let app = spawn_app().await;
    let p = mapped_participant(&app).await;
    let mut req = transition(&p.name, S::Candidate);
    req.etag = p.etag.clone();
    req.request_id = "move-1".into();
    let first = app.client.clone().transition_hurtigspor(req.clone()).await.unwrap().into_inner();
    // A retry (even with the now stale etag) replays the original answer.
    let replay = app.client.clone().transition_hurtigspor(req.clone()).await.unwrap().into_inner();
    assert_eq!(replay, first);
    assert_eq!(app.get(&p.name).await.hurtigspor.unwrap().history.len(), 1, "applied once");

    // A new request with the stale etag is aborted.
    let mut stale = transition(&p.name, S::Rejected);
    stale.etag = p.etag.clone();
    expect_error(app.client.clone().transition_hurtigspor(stale).await, Code::Aborted, "STALE_ETAG");
    assert_eq!(status_of(&app.get(&p.name).await), S::Candidate);
}

#[tokio::test]
async fn ending_the_programme() {
    let app = spawn_app().await;
    let p = mapped_participant(&app).await;
    move_to(&app, &p.name, S::Candidate).await.unwrap();
    let end = EndProgrammeRequest {
        name: p.name.clone(),
        end_date: date(2026, 10, 30),
        end_reason: ProgrammeEndReason::Employment as i32,
        main_activity: MainActivity::Work as i32,
        ..Default::default()
    };
    let status = expect_error(
        app.client.clone().end_programme(end.clone()).await,
        Code::FailedPrecondition,
        "HURTIGSPOR_STILL_OPEN",
    );
    assert!(status.message().contains("CANDIDATE"));

    move_to(&app, &p.name, S::Rejected).await.unwrap();
    let ended = app.client.clone().end_programme(end.clone()).await.unwrap().into_inner();
    let programme = ended.programme.unwrap();
    assert_eq!(programme.end_date, date(2026, 10, 30));
    assert_eq!(programme.status, ProgrammeStatus::Interrupted as i32);
    assert_eq!(programme.main_activity_at_exit, MainActivity::Work as i32);

    expect_error(app.client.clone().end_programme(end).await, Code::FailedPrecondition, "PROGRAMME_ALREADY_ENDED");
    // Hurtigspor cannot restart after the end... nor move at all.
    let other = mapped_participant(&app).await;
    let done = app
        .client
        .clone()
        .end_programme(EndProgrammeRequest {
            name: other.name.clone(),
            end_date: date(2026, 10, 30),
            end_reason: ProgrammeEndReason::Completed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.programme.unwrap().status, ProgrammeStatus::Completed as i32);
    expect_error(move_to(&app, &other.name, S::Candidate).await, Code::FailedPrecondition, "PROGRAMME_ENDED");
}

#[tokio::test]
async fn end_programme_input_errors() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let status = expect_error(
        app.client.clone().end_programme(EndProgrammeRequest { name: p.name.clone(), ..Default::default() }).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "end_date", "REQUIRED");
    assert_violation(&status, "end_reason", "REQUIRED");
    let status = expect_error(
        app.client
            .clone()
            .end_programme(EndProgrammeRequest {
                name: p.name.clone(),
                end_date: date(2025, 1, 1),
                end_reason: ProgrammeEndReason::Other as i32,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "end_date", "END_BEFORE_START");
    assert_eq!(app.get(&p.name).await, p);
}

#[tokio::test]
async fn measures_are_recorded_and_ended() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let record = |m: Measure| RecordMeasureRequest { name: p.name.clone(), measure: Some(m), ..Default::default() };

    let status = expect_error(
        app.client
            .clone()
            .record_measure(record(Measure {
                kind: MeasureKind::WorkTraining as i32,
                employer_orgnr: "889640781".into(),
                start_date: date(2026, 3, 1),
                end_date: date(2026, 2, 1),
                position_percent: 120,
                ..Default::default()
            }))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "measure.employer_orgnr", "INVALID_ORGNR");
    assert_violation(&status, "measure.end_date", "END_BEFORE_START");
    assert_violation(&status, "measure.position_percent", "OUT_OF_RANGE");
    let status = expect_error(
        app.client
            .clone()
            .record_measure(record(Measure {
                kind: MeasureKind::Mentor as i32,
                start_date: date(2026, 3, 1),
                ..Default::default()
            }))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "measure.employer_orgnr", "REQUIRED");

    let with = app
        .client
        .clone()
        .record_measure(record(Measure {
            kind: MeasureKind::WorkTraining as i32,
            employer_orgnr: EMPLOYER.into(),
            start_date: date(2026, 3, 1),
            position_percent: 60,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let m = &with.measures[0];
    assert!(!m.id.is_empty());
    assert_eq!(m.status, MeasureStatus::Active as i32);

    let end = |id: &str, status: MeasureStatus, end| EndMeasureRequest {
        name: p.name.clone(),
        measure_id: id.to_owned(),
        status: status as i32,
        end_date: end,
        ..Default::default()
    };
    expect_error(
        app.client.clone().end_measure(end("m-0000000000000000", MeasureStatus::Completed, date(2026, 6, 1))).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    let ended = app
        .client
        .clone()
        .end_measure(end(&m.id, MeasureStatus::Completed, date(2026, 6, 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.measures[0].status, MeasureStatus::Completed as i32);
    assert_eq!(ended.measures[0].end_date, date(2026, 6, 1));
    expect_error(
        app.client.clone().end_measure(end(&m.id, MeasureStatus::Discontinued, date(2026, 6, 2))).await,
        Code::FailedPrecondition,
        "MEASURE_ALREADY_ENDED",
    );
    // Registered in error is still possible, as a correction.
    let corrected =
        app.client.clone().end_measure(end(&m.id, MeasureStatus::RegisteredInError, None)).await.unwrap().into_inner();
    assert_eq!(corrected.measures[0].status, MeasureStatus::RegisteredInError as i32);
    let status = expect_error(
        app.client.clone().end_measure(end(&m.id, MeasureStatus::Active, None)).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "status", "INVALID_END_STATUS");
}

#[tokio::test]
async fn recognition_cases() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let open = |scheme: RecognitionScheme| OpenRecognitionCaseRequest {
        name: p.name.clone(),
        recognition_case: Some(RecognitionCase {
            scheme: scheme as i32,
            education_description: "bachelor in nursing".into(),
            country_code: "SY".into(),
            ..Default::default()
        }),
        request_id: format!("open-{}", scheme as i32),
        ..Default::default()
    };
    let opened =
        app.client.clone().open_recognition_case(open(RecognitionScheme::HigherEducation)).await.unwrap().into_inner();
    let case = &opened.recognition_cases[0];
    assert_eq!(case.status, RecognitionStatus::Submitted as i32);
    assert!(case.submitted_date.is_some() && !case.id.is_empty());
    // A retry is a replay; a new case under the same open scheme is refused.
    let replay =
        app.client.clone().open_recognition_case(open(RecognitionScheme::HigherEducation)).await.unwrap().into_inner();
    assert_eq!(replay.recognition_cases.len(), 1);
    let mut second = open(RecognitionScheme::HigherEducation);
    second.request_id = "another".into();
    expect_error(
        app.client.clone().open_recognition_case(second).await,
        Code::FailedPrecondition,
        "RECOGNITION_CASE_OPEN",
    );
    // Another scheme is fine.
    let two = app.client.clone().open_recognition_case(open(RecognitionScheme::Uvd)).await.unwrap().into_inner();
    assert_eq!(two.recognition_cases.len(), 2);

    let mut bad = open(RecognitionScheme::Unspecified);
    bad.recognition_case.as_mut().unwrap().country_code = "Syria".into();
    let status =
        expect_error(app.client.clone().open_recognition_case(bad).await, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_violation(&status, "recognition_case.scheme", "REQUIRED");
    assert_violation(&status, "recognition_case.country_code", "INVALID_COUNTRY_CODE");
}

#[tokio::test]
async fn competence_mapping_validation() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let status = expect_error(
        app.client
            .clone()
            .record_competence_mapping(RecordCompetenceMappingRequest {
                name: p.name.clone(),
                competence: Some(CompetenceMapping {
                    work_experiences: vec![WorkExperience {
                        occupation: "welder".into(),
                        styrk08_code: "72".into(),
                        years: 80.0,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                etag: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "competence.work_experiences[0].styrk08_code", "INVALID_FORMAT");
    assert_violation(&status, "competence.work_experiences[0].years", "OUT_OF_RANGE");
    let status = expect_error(
        app.client
            .clone()
            .record_competence_mapping(RecordCompetenceMappingRequest { name: p.name.clone(), ..Default::default() })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "competence", "REQUIRED");
}

#[tokio::test]
async fn the_individual_plan_keeps_goal_ids() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let goal = |id: &str, description: &str| PlanGoal {
        id: id.to_owned(),
        description: description.to_owned(),
        measure: "language practice".into(),
        responsible: ResponsibleParty::Kommune as i32,
        ..Default::default()
    };
    let set = |goals: Vec<PlanGoal>| UpdateIndividualPlanRequest {
        name: p.name.clone(),
        plan: Some(IndividualPlan { main_goal: "work as a nurse".into(), goals }),
        etag: String::new(),
    };
    let first =
        app.client.clone().update_individual_plan(set(vec![goal("", "B1 Norwegian")])).await.unwrap().into_inner();
    let id = first.plan.as_ref().unwrap().goals[0].id.clone();
    assert!(!id.is_empty());
    let second = app
        .client
        .clone()
        .update_individual_plan(set(vec![goal(&id, "B2 Norwegian"), goal("", "authorisation")]))
        .await
        .unwrap()
        .into_inner();
    let goals = &second.plan.as_ref().unwrap().goals;
    assert_eq!(goals[0].id, id, "kept");
    assert_ne!(goals[1].id, id);

    let status = expect_error(
        app.client.clone().update_individual_plan(set(vec![goal("g-unknown", "x")])).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "plan.goals[0].id", "UNKNOWN_GOAL");
    let mut no_responsible = goal("", "x");
    no_responsible.responsible = 0;
    let status = expect_error(
        app.client.clone().update_individual_plan(set(vec![no_responsible])).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "plan.goals[0].responsible", "REQUIRED");
    assert_eq!(app.get(&p.name).await.plan, second.plan);
}

/// Every method that changes a participant: NOT_FOUND for an unknown one,
/// ABORTED for a stale etag (leaving the record as it was).
#[tokio::test]
async fn every_write_method_checks_existence_and_etag() {
    let app = spawn_app().await;
    let p = mapped_participant(&app).await;
    let current = p.etag.clone();
    // Make the first etag stale.
    move_to(&app, &p.name, S::Candidate).await.unwrap();
    let p = app.get(&p.name).await;

    let unknown = "participants/0123456789abcdef0123456789abcdef".to_owned();
    for (name, etag, code, reason) in [
        (unknown.as_str(), "", Code::NotFound, "NOT_FOUND"),
        (p.name.as_str(), current.as_str(), Code::Aborted, "STALE_ETAG"),
    ] {
        let mut c = app.client.clone();
        let (name, etag) = (name.to_owned(), etag.to_owned());
        let results = vec![
            c.end_programme(EndProgrammeRequest {
                name: name.clone(),
                etag: etag.clone(),
                end_date: date(2026, 10, 1),
                end_reason: ProgrammeEndReason::Other as i32,
                ..Default::default()
            })
            .await
            .map(|_| ()),
            c.record_measure(RecordMeasureRequest {
                name: name.clone(),
                etag: etag.clone(),
                measure: Some(Measure {
                    kind: MeasureKind::LabourMarketCourse as i32,
                    start_date: date(2026, 3, 1),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            c.end_measure(EndMeasureRequest {
                name: name.clone(),
                etag: etag.clone(),
                measure_id: "m-0123456789abcdef".into(),
                status: MeasureStatus::Completed as i32,
                end_date: date(2026, 6, 1),
            })
            .await
            .map(|_| ()),
            c.open_recognition_case(OpenRecognitionCaseRequest {
                name: name.clone(),
                etag: etag.clone(),
                recognition_case: Some(RecognitionCase {
                    scheme: RecognitionScheme::Vocational as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            c.record_competence_mapping(RecordCompetenceMappingRequest {
                name: name.clone(),
                etag: etag.clone(),
                competence: Some(CompetenceMapping::default()),
            })
            .await
            .map(|_| ()),
            c.update_individual_plan(UpdateIndividualPlanRequest {
                name: name.clone(),
                etag: etag.clone(),
                plan: Some(IndividualPlan::default()),
            })
            .await
            .map(|_| ()),
            c.transition_hurtigspor(TransitionHurtigsporRequest {
                name: name.clone(),
                etag: etag.clone(),
                status: S::Rejected as i32,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ];
        for (i, r) in results.into_iter().enumerate() {
            expect_error(r, code, reason);
            let _ = i;
        }
    }
    assert_eq!(app.get(&p.name).await, p, "nothing changed");
}

#[tokio::test]
async fn measure_and_end_retries_apply_once() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let record = RecordMeasureRequest {
        name: p.name.clone(),
        measure: Some(Measure {
            kind: MeasureKind::WorkTraining as i32,
            employer_orgnr: EMPLOYER.into(),
            start_date: date(2026, 3, 1),
            ..Default::default()
        }),
        request_id: "nav-4711".into(),
        ..Default::default()
    };
    let first = app.client.clone().record_measure(record.clone()).await.unwrap().into_inner();
    let again = app.client.clone().record_measure(record).await.unwrap().into_inner();
    assert_eq!(again, first);
    assert_eq!(app.get(&p.name).await.measures.len(), 1, "a retry adds no second measure");

    let end = EndProgrammeRequest {
        name: p.name.clone(),
        end_date: date(2026, 10, 1),
        end_reason: ProgrammeEndReason::Completed as i32,
        request_id: "end-1".into(),
        ..Default::default()
    };
    let ended = app.client.clone().end_programme(end.clone()).await.unwrap().into_inner();
    // Without the request id a second end would be PROGRAMME_ALREADY_ENDED.
    assert_eq!(app.client.clone().end_programme(end).await.unwrap().into_inner(), ended);
}

#[tokio::test]
async fn malformed_measure_ids_are_not_echoed() {
    let app = spawn_app().await;
    let p = app.create(minimal_participant()).await;
    let national_id = fresh_national_id();
    let status = expect_error(
        app.client
            .clone()
            .end_measure(EndMeasureRequest {
                name: p.name.clone(),
                measure_id: national_id.clone(),
                status: MeasureStatus::Completed as i32,
                end_date: date(2026, 6, 1),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_violation(&status, "measure_id", "INVALID_FORMAT");
    assert!(!format!("{status:?}").contains(&national_id));
}

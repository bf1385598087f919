//! The NIR adapter against the real NIR mock over HTTP.

use hurtigspor_adapters::{
    Delivery, Target, TargetError,
    nir::{NirConfig, NirTarget},
};
use hurtigspor_mocks::{
    faults::{Fault, FaultRule},
    nir::{Nir, NirConfig as MockConfig},
    server::{MockSystem, RunningMock},
};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        Hurtigspor, HurtigsporStatus, LeavePeriod, LeaveReason, MainActivity, Measure, MeasureKind, Participant,
        Programme, ProgrammeEndReason,
    },
};
use std::time::Duration;

fn date(y: i32, m: i32, d: i32) -> Option<Date> {
    Some(Date { year: y, month: m, day: d })
}

async fn setup(user: &str) -> (Nir, RunningMock, NirTarget) {
    let mock = Nir::new(MockConfig::default());
    let running = mock.spawn("127.0.0.1:0").await.unwrap();
    let target = NirTarget::new(NirConfig {
        base_url: running.url(),
        username: user.into(),
        password: "nir-dev-secret".into(),
        timeout: Duration::from_secs(2),
    });
    (mock, running, target)
}

fn participant() -> Participant {
    Participant {
        national_id: "15838510075".into(),
        kommunenummer: "0301".into(),
        programme: Some(Programme {
            start_date: date(2026, 1, 5),
            planned_end_date: date(2028, 1, 4),
            leave_periods: vec![LeavePeriod {
                start_date: date(2026, 6, 1),
                end_date: date(2026, 6, 10),
                reason: LeaveReason::Parental as i32,
            }],
            ..Default::default()
        }),
        hurtigspor: Some(Hurtigspor {
            status: HurtigsporStatus::Candidate as i32,
            candidate_date: date(2026, 2, 10),
            ..Default::default()
        }),
        measures: vec![Measure {
            kind: MeasureKind::WorkTraining as i32,
            start_date: date(2026, 4, 1),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn delivery() -> Delivery {
    Delivery { participant_id: "p".into(), version: 1, correlation_id: "c".into() }
}

#[tokio::test]
async fn the_programme_the_mark_measures_and_leave_reach_nir_once() {
    let (mock, _r, target) = setup("intro").await;
    let applied = target.reconcile(&participant(), &delivery()).await.unwrap();
    assert_eq!(applied.operations, ["deltakelse.register", "hurtigspor.set", "tiltak.set", "permisjoner.set"]);
    let state = mock.state();
    let d = &state["deltakelser"][0];
    assert_eq!(d["Hurtigspor"]["Status"], "KANDIDAT");
    assert_eq!(d["Hurtigspor"]["Markert"], true);
    assert_eq!(d["Tiltaksliste"]["Tiltak"][0]["Type"], "ARBEIDSTRENING");
    assert_eq!(d["Permisjoner"]["Permisjon"][0]["Arsak"], "FODSEL_OMSORG");
    assert!(target.reconcile(&participant(), &delivery()).await.unwrap().operations.is_empty(), "converged");

    // The end, with its reason and the main activity at exit.
    let mut ended = participant();
    let programme = ended.programme.as_mut().unwrap();
    programme.end_date = date(2026, 10, 30);
    programme.end_reason = ProgrammeEndReason::Employment as i32;
    programme.main_activity_at_exit = MainActivity::Work as i32;
    let applied = target.reconcile(&ended, &delivery()).await.unwrap();
    assert_eq!(applied.operations, ["avslutning.set"]);
    assert_eq!(mock.state()["deltakelser"][0]["Avslutning"]["Avslutningsarsak"], "ARBEID");
    assert_eq!(mock.common.effects.count("deltakelse.registered"), 1);
}

#[tokio::test]
async fn nir_refusals_are_permanent_with_nir_codes() {
    let (_mock, _r, target) = setup("norsk").await;
    let err = target.reconcile(&participant(), &delivery()).await.unwrap_err();
    let TargetError::Permanent(reason) = err else { panic!("{err:?}") };
    assert!(reason.contains("NIR-E001"), "{reason}");

    let (_mock, _r, target) = setup("intro").await;
    let mut p = participant();
    p.kommunenummer = "3004".into();
    let TargetError::Permanent(reason) = target.reconcile(&p, &delivery()).await.unwrap_err() else { panic!() };
    assert!(reason.contains("NIR-E101") && reason.contains("Kommunenummer"), "{reason}");
}

#[tokio::test]
async fn faults_are_transient_and_a_lost_answer_is_harmless() {
    let (mock, _r, target) = setup("intro").await;
    mock.common.faults.add(FaultRule::new(Fault::Error { status: 502 }).times(1));
    assert!(matches!(target.reconcile(&participant(), &delivery()).await, Err(TargetError::Transient(_))));
    mock.common.faults.add(FaultRule::new(Fault::InvalidTokenStorm).times(1));
    assert!(matches!(target.reconcile(&participant(), &delivery()).await, Err(TargetError::Transient(_))));
    mock.common.faults.add(FaultRule::new(Fault::ApplyThenDrop).on("/nir/ws4/v1/deltakelser").method("POST").times(1));
    assert!(target.reconcile(&participant(), &delivery()).await.is_err());
    target.reconcile(&participant(), &delivery()).await.unwrap();
    assert_eq!(mock.state()["deltakelser"].as_array().unwrap().len(), 1);
    assert_eq!(mock.common.effects.count("deltakelse.registered"), 1, "registered once");
    assert_eq!(mock.common.effects.count("deltakelse.updated"), 0, "no write repeated");
}

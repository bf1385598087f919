//! The Arena adapter against the real Arena mock over HTTP: registration,
//! plan mirroring, deregistration, and every failure a real Arena has.

use hurtigspor_adapters::{
    Delivery, Target, TargetError,
    arena::{ArenaConfig, ArenaTarget},
};
use hurtigspor_mocks::{
    arena::{Arena, ArenaConfig as MockConfig},
    faults::{Fault, FaultRule},
    server::{MockSystem, RunningMock},
};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{Hurtigspor, IndividualPlan, Participant, PlanGoal, Programme, ResponsibleParty},
};
use serde_json::Value;
use std::time::Duration;

const FNR: &str = "15838510075";

struct Setup {
    mock: Arena,
    _running: RunningMock,
    target: ArenaTarget,
}

async fn setup() -> Setup {
    let mock = Arena::new(MockConfig::default());
    let running = mock.spawn("127.0.0.1:0").await.unwrap();
    let target = ArenaTarget::new(ArenaConfig {
        base_url: running.url(),
        client_id: "hurtigspor-gateway".into(),
        client_secret: "arena-dev-secret".into(),
        timeout: Duration::from_secs(2),
    });
    Setup { mock, _running: running, target }
}

fn date(y: i32, m: i32, d: i32) -> Option<Date> {
    Some(Date { year: y, month: m, day: d })
}

fn candidate() -> Participant {
    Participant {
        name: "participants/0123456789abcdef0123456789abcdef".into(),
        national_id: FNR.into(),
        nav_office: "0314".into(),
        programme: Some(Programme { start_date: date(2026, 1, 5), ..Default::default() }),
        hurtigspor: Some(Hurtigspor { status: 2, candidate_date: date(2026, 2, 10), ..Default::default() }),
        plan: Some(IndividualPlan {
            main_goal: "nurse".into(),
            goals: vec![PlanGoal {
                id: "g-1".into(),
                description: "Norsk B2".into(),
                measure: "språkpraksis".into(),
                start_date: date(2026, 2, 1),
                end_date: None,
                responsible: ResponsibleParty::Kommune as i32,
            }],
        }),
        ..Default::default()
    }
}

fn delivery(version: i64) -> Delivery {
    Delivery {
        participant_id: "0123456789abcdef0123456789abcdef".into(),
        version,
        correlation_id: format!("test-{version}"),
    }
}

fn relations(mock: &Arena) -> Vec<Value> {
    mock.state()["personforhold"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_candidate_is_registered_with_the_intro_relation_and_the_plan() {
    let s = setup().await;
    let applied = s.target.reconcile(&candidate(), &delivery(1)).await.unwrap();
    assert_eq!(applied.operations, ["personforhold.create", "aktivitet.create"]);
    let rel = relations(&s.mock);
    assert_eq!(rel.len(), 1);
    assert_eq!(rel[0]["PERSONFORHOLDKODE"], "INTRO");
    assert_eq!(rel[0]["AETATENHET"], "0314");
    assert_eq!(rel[0]["ER_AKTIV"], "J");
    let activities = s.mock.state()["aktiviteter"].as_array().unwrap().clone();
    assert_eq!(activities[0]["TITTEL"], "Norsk B2");
    assert_eq!(activities[0]["ANSVARLIG"], "KOMMUNE");

    // Reconciling the same record again changes nothing.
    let again = s.target.reconcile(&candidate(), &delivery(1)).await.unwrap();
    assert!(again.operations.is_empty(), "{again:?}");
    assert_eq!(s.mock.common.effects.all().len(), 2);
}

#[tokio::test]
async fn a_participant_who_was_never_a_candidate_is_not_sent() {
    let s = setup().await;
    let mut p = candidate();
    p.hurtigspor = Some(Hurtigspor { status: 1, ..Default::default() });
    assert!(s.target.reconcile(&p, &delivery(1)).await.unwrap().operations.is_empty());
    assert!(s.mock.common.effects.all().is_empty());
}

#[tokio::test]
async fn a_lost_answer_does_not_make_a_duplicate() {
    let s = setup().await;
    s.mock
        .common
        .faults
        .add(FaultRule::new(Fault::ApplyThenDrop).on("/ords/arena/api/v1/personforhold").method("POST").times(1));
    let first = s.target.reconcile(&candidate(), &delivery(1)).await.unwrap_err();
    assert!(matches!(first, TargetError::Transient(_)), "{first:?}");
    assert_eq!(relations(&s.mock).len(), 1, "Arena applied it although we never heard");
    // The retry reads first, finds the relation and goes on with the plan.
    let retry = s.target.reconcile(&candidate(), &delivery(1)).await.unwrap();
    assert_eq!(retry.operations, ["aktivitet.create"]);
    assert_eq!(s.mock.common.effects.count("personforhold.created"), 1, "applied once");
}

#[tokio::test]
async fn an_expired_token_is_renewed_and_a_token_storm_is_transient() {
    let s = setup().await;
    s.target.reconcile(&candidate(), &delivery(1)).await.unwrap();
    s.mock.common.clock.advance(chrono::Duration::seconds(400)); // past the token's life
    let mut p = candidate();
    p.plan.as_mut().unwrap().goals[0].description = "Norsk C1".into();
    let applied = s.target.reconcile(&p, &delivery(2)).await.unwrap();
    assert_eq!(applied.operations, ["aktivitet.update"]);

    s.mock.common.faults.add(FaultRule::new(Fault::InvalidTokenStorm).times(2));
    let err = s.target.reconcile(&p, &delivery(3)).await.unwrap_err();
    assert!(matches!(err, TargetError::Transient(_)), "{err:?}");
    assert!(s.target.reconcile(&p, &delivery(3)).await.unwrap().operations.is_empty(), "the storm passed");
}

#[tokio::test]
async fn server_errors_throttling_and_garbage_are_transient() {
    let s = setup().await;
    s.mock.common.faults.add(FaultRule::new(Fault::Error { status: 503 }).times(1));
    assert!(matches!(s.target.reconcile(&candidate(), &delivery(1)).await, Err(TargetError::Transient(_))));
    s.mock.common.faults.add(FaultRule::new(Fault::TooManyRequests { retry_after_secs: 7 }).times(1));
    assert_eq!(
        s.target.reconcile(&candidate(), &delivery(1)).await,
        Err(TargetError::RetryAfter(Duration::from_secs(7)))
    );
    s.mock.common.faults.add(FaultRule::new(Fault::MalformedBody).on("/ords/arena/api/v1/personer").times(1));
    assert!(matches!(s.target.reconcile(&candidate(), &delivery(1)).await, Err(TargetError::Transient(_))));
    s.mock.common.faults.add(FaultRule::new(Fault::ResetConnection).times(1));
    assert!(matches!(s.target.reconcile(&candidate(), &delivery(1)).await, Err(TargetError::Transient(_))));
    assert!(s.mock.common.effects.all().is_empty(), "nothing was applied");
    // Once the faults are gone, the record arrives whole.
    s.target.reconcile(&candidate(), &delivery(1)).await.unwrap();
    assert_eq!(relations(&s.mock).len(), 1);
}

#[tokio::test]
async fn data_arena_refuses_is_a_permanent_rejection_with_its_reason() {
    let s = setup().await;
    let mut p = candidate();
    p.nav_office = "03a4".into();
    let err = s.target.reconcile(&p, &delivery(1)).await.unwrap_err();
    let TargetError::Permanent(reason) = err else { panic!("{err:?}") };
    assert!(reason.contains("400") && reason.contains("AETATENHET"), "{reason}");
    p.nav_office.clear();
    assert!(s.target.reconcile(&p, &delivery(1)).await.unwrap_err().is_permanent());
}

#[tokio::test]
async fn wrong_credentials_are_permanent() {
    let s = setup().await;
    let target = ArenaTarget::new(ArenaConfig {
        base_url: s._running.url(),
        client_id: "hurtigspor-gateway".into(),
        client_secret: "wrong".into(),
        timeout: Duration::from_secs(2),
    });
    let err = target.reconcile(&candidate(), &delivery(1)).await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
}

#[tokio::test]
async fn leaving_the_programme_deregisters_the_relation() {
    let s = setup().await;
    s.target.reconcile(&candidate(), &delivery(1)).await.unwrap();
    let mut ended = candidate();
    ended.programme.as_mut().unwrap().end_date = date(2026, 10, 30);
    let applied = s.target.reconcile(&ended, &delivery(2)).await.unwrap();
    assert_eq!(applied.operations, ["personforhold.end"]);
    let rel = relations(&s.mock);
    assert_eq!((rel[0]["ER_AKTIV"].as_str(), rel[0]["DATO_TIL"].as_str()), (Some("N"), Some("2026-10-30 00:00:00")));
    assert!(s.target.reconcile(&ended, &delivery(2)).await.unwrap().operations.is_empty());
}

/// A plan goal that starts on New Year's Day, reconciled half an hour
/// before midnight UTC: in Oslo the new year has begun, so the activity is
/// under way, not planned. An hour earlier it is still planned.
#[tokio::test]
async fn an_activity_starts_at_midnight_in_oslo_not_at_midnight_utc() {
    use hurtigspor_adapters::clock::Clock;
    let status_at = |instant: &str| {
        let instant = instant.to_owned();
        async move {
            let s = setup().await;
            let target = s.target.with_clock(Clock::fixed(instant.parse().unwrap()));
            let mut p = candidate();
            p.plan.as_mut().unwrap().goals[0].start_date = date(2027, 1, 1);
            target.reconcile(&p, &delivery(1)).await.unwrap();
            let activities = s.mock.state()["aktiviteter"].as_array().unwrap().clone();
            activities[0]["STATUS"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(status_at("2026-12-31T22:30:00Z").await, "PLANLAGT", "23:30 in Oslo on New Year's Eve");
    assert_eq!(status_at("2026-12-31T23:30:00Z").await, "GJENNOMFORES", "00:30 in Oslo, 23:30 UTC");
}

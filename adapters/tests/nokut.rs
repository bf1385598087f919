//! The NOKUT adapter against the real NOKUT mock over HTTP.

use hurtigspor_adapters::{
    Delivery, Target, TargetError,
    nokut::{NokutConfig, NokutTarget},
};
use hurtigspor_mocks::{
    faults::{Fault, FaultRule},
    nokut::{Nokut, NokutConfig as MockConfig},
    server::RunningMock,
};
use hurtigspor_proto::v1::{Participant, RecognitionCase, RecognitionScheme};
use std::time::Duration;

async fn setup(key: &str) -> (Nokut, RunningMock, NokutTarget) {
    let mock = Nokut::new(MockConfig::default());
    let running = mock.spawn("127.0.0.1:0").await.unwrap();
    let target =
        NokutTarget::new(NokutConfig { base_url: running.url(), api_key: key.into(), timeout: Duration::from_secs(2) });
    (mock, running, target)
}

fn participant() -> Participant {
    Participant {
        national_id: "15838510075".into(),
        recognition_cases: vec![RecognitionCase {
            id: "r-1".into(),
            scheme: RecognitionScheme::Uvd as i32,
            education_description: "ingeniør".into(),
            country_code: "SY".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn delivery() -> Delivery {
    Delivery { participant_id: "0123456789abcdef0123456789abcdef".into(), version: 1, correlation_id: "c".into() }
}

#[tokio::test]
async fn a_case_is_opened_once_however_often_it_is_delivered() {
    let (mock, _r, target) = setup("nokut-dev-key").await;
    let first = target.reconcile(&participant(), &delivery()).await.unwrap();
    assert_eq!(first.operations, ["sak.open"]);
    let number = first.references[0].remote_id.clone();
    assert_eq!(first.references[0].local_id, "r-1");
    // A retry before the number is stored: the key returns the same case.
    let again = target.reconcile(&participant(), &delivery()).await.unwrap();
    assert_eq!(again.references[0].remote_id, number);
    assert_eq!(mock.common.effects.count("sak.opened"), 1);
    // Once the canonical record keeps the number, nothing is sent.
    let mut stored = participant();
    stored.recognition_cases[0].case_number = number;
    assert!(target.reconcile(&stored, &delivery()).await.unwrap().operations.is_empty());
}

#[tokio::test]
async fn a_lost_answer_opens_no_second_case() {
    let (mock, _r, target) = setup("nokut-dev-key").await;
    mock.common.faults.add(FaultRule::new(Fault::ApplyThenDrop).on("/api/v1/saker").times(1));
    assert!(matches!(target.reconcile(&participant(), &delivery()).await, Err(TargetError::Transient(_))));
    let retry = target.reconcile(&participant(), &delivery()).await.unwrap();
    assert_eq!(retry.references.len(), 1);
    assert_eq!(mock.common.effects.count("sak.opened"), 1);
}

#[tokio::test]
async fn a_wrong_api_key_is_permanent_and_outages_are_transient() {
    let (_mock, _r, target) = setup("guess").await;
    let TargetError::Permanent(reason) = target.reconcile(&participant(), &delivery()).await.unwrap_err() else {
        panic!()
    };
    assert!(reason.contains("ugyldig_api_nokkel"), "{reason}");
    let (mock, _r, target) = setup("nokut-dev-key").await;
    mock.common.faults.add(FaultRule::new(Fault::Outage { seconds: 60 }));
    assert!(matches!(target.reconcile(&participant(), &delivery()).await, Err(TargetError::Transient(_))));
}

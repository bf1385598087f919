//! `dev --seed N`: synthetic participants, created through the API and
//! followed until every system holds them.

use crate::{client::Authed, error::Described};
use hurtigspor_gateway::auth::BearerToken;
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        CreateParticipantRequest, HurtigsporStatus, Participant, Programme,
        participant_service_client::ParticipantServiceClient,
    },
};

/// Creates `n` synthetic participants through the API, makes every third a
/// candidate and takes every sixth through hurtigspor (`journey`),
/// then follows them until every target holds them.
pub(crate) async fn participants(server: &str, token: &str, n: u32) -> anyhow::Result<()> {
    use hurtigspor_proto::v1::{
        CompetenceMapping, DecisionMaker, GetSyncStatusRequest, RecordCompetenceMappingRequest, SyncState,
        TransitionHurtigsporRequest, sync_service_client::SyncServiceClient,
    };
    use indicatif::{ProgressBar, ProgressStyle};
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())?.connect().await?;
    let bearer = BearerToken::new(token)?.with_purpose("seeding")?;
    let mut client = ParticipantServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut sync = SyncServiceClient::with_interceptor(channel, bearer);
    let style = ProgressStyle::with_template("  {msg:<24} [{bar:30}] {pos}/{len} ({elapsed})")?.progress_chars("=> ");
    let created = ProgressBar::new(u64::from(n)).with_style(style.clone()).with_message("creating participants");
    let kommuner = ["0301", "4601", "5001", "3107", "5501", "1103"];
    let mut names = Vec::new();
    for i in 0..n {
        let born = (1970 + (i / 336 % 36) as i32, 1 + i / 28 % 12, 1 + i % 28);
        let national_id =
            hurtigspor_gateway::domain::national_id::testing::synthetic_fnr(born.0, born.1, born.2, i / 12096 * 37);
        let request = CreateParticipantRequest {
            participant: Some(Participant {
                national_id,
                given_name: format!("Seed{i}"),
                family_name: "Testperson".into(),
                // Shifted every sixth, so the journeys (every sixth) reach
                // every kommune.
                kommunenummer: kommuner[(i + i / 6) as usize % kommuner.len()].into(),
                nav_office: "0314".into(),
                programme: Some(Programme {
                    start_date: Some(Date { year: 2026, month: 1, day: 5 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            request_id: format!("seed-{i}"),
        };
        let p = match client.create_participant(request).await {
            // Seeded before: it is there already.
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                created.inc(1);
                continue;
            }
            created_or_not => created_or_not.described()?.into_inner(),
        };
        if i % 3 == 0 {
            client
                .record_competence_mapping(RecordCompetenceMappingRequest {
                    name: p.name.clone(),
                    competence: Some(CompetenceMapping {
                        mapped_date: Some(Date { year: 2026, month: 2, day: 1 }),
                        ..Default::default()
                    }),
                    etag: String::new(),
                })
                .await
                .described()?;
            client
                .transition_hurtigspor(TransitionHurtigsporRequest {
                    name: p.name.clone(),
                    status: HurtigsporStatus::Candidate as i32,
                    decided_by: DecisionMaker::Kommune as i32,
                    effective_date: Some(Date { year: 2026, month: 2, day: 15 }),
                    ..Default::default()
                })
                .await
                .described()?;
            if i % 6 == 0 {
                journey(&client, &p.name, i / 6).await?;
            }
        }
        names.push(p.name);
        created.inc(1);
    }
    created.finish();
    let delivered = ProgressBar::new(names.len() as u64).with_style(style).with_message("in every system");
    while !names.is_empty() {
        let mut waiting = Vec::new();
        for name in names {
            let status = sync.get_sync_status(GetSyncStatusRequest { name: name.clone() }).await.described()?;
            let done = status.into_inner().targets.iter().all(|t| t.state != SyncState::Pending as i32);
            if done { delivered.inc(1) } else { waiting.push(name) }
        }
        names = waiting;
        if !names.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    delivered.finish();
    println!("  seeded {n} participants; failed deliveries, if any: SyncService/ListFailedDeliveries");
    Ok(())
}

/// A confirmed candidate's way through hurtigspor in 2026, so that the
/// dev gateway's report has something to show: by `k`, work training and
/// then work of 100 %, a wage subsidy, back to the ordinary programme, or
/// still in job matching.
async fn journey(client: &ParticipantServiceClient<Authed>, name: &str, k: u32) -> anyhow::Result<()> {
    use hurtigspor_proto::v1::{
        DecisionMaker, EndMeasureRequest, Measure, MeasureKind, MeasureStatus, Outcome, OutcomeKind,
        RecordMeasureRequest, TransitionHurtigsporRequest, UpdateParticipantRequest,
    };
    let day = |month, day| Some(Date { year: 2026, month, day });
    // Synthetic organisation numbers (mod 11 valid).
    let employer = ["910000012", "910000020", "910000039", "910000047"][(k / 4) as usize % 4];
    let steps: &[(HurtigsporStatus, Option<Date>)] = &[
        (HurtigsporStatus::Confirmed, day(3, 2)),
        (HurtigsporStatus::Qualifying, day(3, 16)),
        (HurtigsporStatus::JobMatching, day(6, 1)),
    ];
    let to = |status: HurtigsporStatus, effective_date: Option<Date>| {
        let mut client = client.clone();
        let name = name.to_owned();
        async move {
            client
                .transition_hurtigspor(TransitionHurtigsporRequest {
                    name,
                    status: status as i32,
                    decided_by: DecisionMaker::Joint as i32,
                    effective_date,
                    ..Default::default()
                })
                .await
                .described()
        }
    };
    for (status, date) in steps {
        to(*status, *date).await?;
    }
    let mut writes = client.clone();
    let measure = |kind: MeasureKind, start: Option<Date>| RecordMeasureRequest {
        name: name.to_owned(),
        measure: Some(Measure {
            kind: kind as i32,
            employer_orgnr: employer.into(),
            position_percent: 100,
            start_date: start,
            ..Default::default()
        }),
        ..Default::default()
    };
    // Participant 6k is in kommune k % 6; shifting the journey by k / 6
    // gives every kommune each journey, and the first four take all four.
    match (k + k / 6) % 4 {
        0 => {
            let recorded =
                writes.record_measure(measure(MeasureKind::WorkTraining, day(4, 1))).await.described()?.into_inner();
            let id = recorded.measures.last().map(|m| m.id.clone()).unwrap_or_default();
            writes
                .end_measure(EndMeasureRequest {
                    name: name.to_owned(),
                    measure_id: id,
                    status: MeasureStatus::Completed as i32,
                    end_date: day(8, 31),
                    ..Default::default()
                })
                .await
                .described()?;
            to(HurtigsporStatus::Employed, day(9, 1)).await?;
            let outcome = Outcome {
                kind: OutcomeKind::EmploymentFull as i32,
                date: day(9, 1),
                employer_orgnr: employer.into(),
                position_percent: 100,
            };
            writes
                .update_participant(UpdateParticipantRequest {
                    participant: Some(Participant {
                        name: name.to_owned(),
                        outcome: Some(outcome),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["outcome".into()] }),
                })
                .await
                .described()?;
        }
        1 => {
            writes.record_measure(measure(MeasureKind::TemporaryWageSubsidy, day(7, 1))).await.described()?;
            to(HurtigsporStatus::EmployedWithSubsidy, day(7, 1)).await?;
        }
        2 => {
            to(HurtigsporStatus::BackToOrdinary, day(8, 15)).await?;
        }
        _ => {}
    }
    Ok(())
}

//! Arena's change feed: NAV's measures and the start of work (BEGA) become
//! canonical facts owned by NAV.
//!
//! Arena owns the participant's measures that NAV registers there (ids
//! `arena-<TILTAKDELTAKER_ID>`); nothing else of the record is touched,
//! except the hurtigspor status, which NAV may move: a participation ended
//! with BEGA moves an active hurtigspor to EMPLOYED, and a wage subsidy that
//! starts during job matching moves it to EMPLOYED_WITH_SUBSIDY. A move the
//! rules do not allow is left out (the measure is still recorded) and the
//! inbox entry says why.

use super::{Source, padded, store_error};
use crate::{
    clock::Clock,
    domain::{
        dates,
        national_id::{IdMode, NationalId},
        orgnr::Orgnr,
        participant::{TransitionInput, transition},
    },
    keys::Keys,
    store::{ChangeKind, Inbox, InboxEntry, InboxItem, MeasureInstance, Mutation, Origin, Participants, Settle},
};
use chrono::NaiveDate;
use hurtigspor_adapters::{
    TargetError,
    arena::{
        ArenaTarget,
        inbound::{Change, Envelope, MeasureFact, Participation, measure, measure_id},
    },
};
use hurtigspor_proto::v1::{DecisionMaker, HurtigsporStatus, Measure, MeasureKind, MeasureStatus, Participant};
use std::sync::Arc;

/// Changes read per feed request.
const PAGE: usize = 200;
/// The `external_refs` system of Arena's person numbers.
const PERSON_REF: &str = "arena_person";

pub struct ArenaFeed {
    pub arena: Arc<ArenaTarget>,
    pub inbox: Arc<dyn Inbox>,
    pub participants: Arc<dyn Participants>,
    pub keys: Keys,
    pub id_mode: IdMode,
    pub clock: Clock,
}

impl Source for ArenaFeed {
    fn name(&self) -> &'static str {
        "arena"
    }

    async fn fetch(&self) -> Result<usize, TargetError> {
        let mut added = 0;
        let mut after = self.inbox.inbound_cursor("arena").await.map_err(store_error)?.unwrap_or_default();
        loop {
            let page = self.arena.changes(&after, PAGE).await?;
            let entries = page
                .items
                .iter()
                .map(|e| {
                    Ok(InboxEntry {
                        position: normalise(&e.pos)?,
                        kind: e.kind(),
                        body: serde_json::to_string(&e.redacted()).expect("an envelope serialises"),
                    })
                })
                .collect::<Result<Vec<_>, TargetError>>()?;
            let cursor = (!page.items.is_empty()).then(|| normalise(&page.siste_pos)).transpose()?;
            added += self.inbox.receive_inbound("arena", entries, cursor.clone()).await.map_err(store_error)?;
            match cursor {
                Some(next) if page.has_more => after = next,
                _ => return Ok(added),
            }
        }
    }

    async fn handle(&self, item: &InboxItem) -> Result<Settle, TargetError> {
        let envelope: Envelope = match serde_json::from_str(&item.body) {
            Ok(e) => e,
            Err(e) => return Ok(Settle::Fail { error: format!("unreadable envelope: {e}") }),
        };
        match hurtigspor_adapters::arena::inbound::parse(&envelope) {
            Err(e) => Ok(Settle::Fail { error: e }),
            Ok(Change::Other) => {
                Ok(Settle::Ignore { reason: format!("{} is not read by the gateway", envelope.table), entity: None })
            }
            Ok(Change::Instance { id, code, employer_id }) => {
                Ok(Settle::Instance(MeasureInstance { instance_id: id, code, employer_id }))
            }
            Ok(Change::Participation { unchanged: true, .. }) => Ok(Settle::Ignore {
                reason: "republished unchanged (identical before and after images, as far as the gateway reads them)"
                    .into(),
                entity: None,
            }),
            Ok(Change::Participation { row, .. }) => self.participation(row, false).await,
            Ok(Change::Deleted(row)) => self.participation(row, true).await,
        }
    }
}

/// Positions are compared as text: pad them the same way whatever Arena sends.
fn normalise(pos: &str) -> Result<String, TargetError> {
    pos.trim()
        .parse::<u64>()
        .map(padded)
        .map_err(|_| TargetError::Transient("the feed sent a position that is not a number".into()))
}

impl ArenaFeed {
    /// The participant Arena's person number stands for, if any.
    async fn participant_of(&self, person_id: i64) -> Result<Option<String>, TargetError> {
        if let Some(id) =
            self.inbox.participant_by_ref(PERSON_REF, &person_id.to_string()).await.map_err(store_error)?
        {
            return Ok(Some(id));
        }
        let Some(fnr) = self.arena.national_id_of(person_id).await? else { return Ok(None) };
        let today = self.clock.today();
        let Ok(id) = NationalId::parse(&fnr, self.id_mode, today) else { return Ok(None) };
        let found =
            self.participants.get_by_national_id_hash(&self.keys.national_id_hash(&id)).await.map_err(store_error)?;
        Ok(found.and_then(|p| p.name.strip_prefix("participants/").map(str::to_owned)))
    }

    async fn participation(&self, row: Participation, deleted: bool) -> Result<Settle, TargetError> {
        let entity = format!("TILTAKDELTAKER {}", row.id);
        let Some(id) = self.participant_of(row.person_id).await? else {
            return Ok(Settle::Ignore {
                reason: "the person is not a participant of the gateway".into(),
                entity: Some(entity),
            });
        };
        let Some(instance) = self.inbox.measure_instance(row.instance_id).await.map_err(store_error)? else {
            return Err(TargetError::Transient(format!(
                "measure instance {} has not come through the feed yet",
                row.instance_id
            )));
        };
        let record = self.participants.get(&id).await.map_err(store_error)?;
        let known = record.as_ref().is_some_and(|p| p.measures.iter().any(|m| m.id == measure_id(row.id)));
        let employer = match instance.employer_id {
            Some(e) => self.arena.employer_orgnr(e).await?.filter(|o| Orgnr::parse(o).is_ok()),
            None => None,
        };
        let today = self.clock.today();
        let fact = match measure(&row, &instance.code, employer.as_deref(), deleted, known, today) {
            Ok(f) => f,
            Err(e) => return Ok(Settle::Fail { error: e }),
        };
        let (measure, began_work) = match fact {
            MeasureFact::NotTaken(reason) => return Ok(Settle::Ignore { reason: reason.into(), entity: Some(entity) }),
            MeasureFact::Measure { measure, began_work } => (measure, began_work),
        };
        let now = self.clock.now();
        Ok(Settle::Apply {
            entity,
            refs: vec![(PERSON_REF.to_owned(), row.person_id.to_string())],
            mutation: Box::new(Mutation {
                id,
                expected_etag: None,
                idempotency: None,
                kind: ChangeKind("measure.from_arena"),
                origin: Origin::Arena,
                actor: "arena".into(),
                kommuner: None,
                audit: None,
                apply: Box::new(move |p| {
                    apply_measure(p, measure, began_work, today, now);
                    Ok(())
                }),
            }),
        })
    }
}

/// Puts Arena's measure into the record and moves hurtigspor where NAV's
/// facts say it has moved.
pub fn apply_measure(
    p: &mut Participant,
    measure: Measure,
    began_work: bool,
    today: NaiveDate,
    now: chrono::DateTime<chrono::Utc>,
) {
    let start = measure.start_date.as_ref().and_then(dates::from_proto);
    let end = measure.end_date.as_ref().and_then(dates::from_proto);
    let subsidy_running = matches!(
        MeasureKind::try_from(measure.kind),
        Ok(MeasureKind::TemporaryWageSubsidy | MeasureKind::PermanentWageSubsidy)
    ) && measure.status == MeasureStatus::Active as i32;
    match p.measures.iter_mut().find(|m| m.id == measure.id) {
        Some(existing) => *existing = measure,
        None => p.measures.push(measure),
    }
    let status = p.hurtigspor.as_ref().map_or(HurtigsporStatus::NotAssessed as i32, |h| h.status);
    let move_to = if began_work {
        Some((HurtigsporStatus::Employed, end.unwrap_or(today), "Arena: the participant began in work (BEGA)"))
    } else if subsidy_running && status == HurtigsporStatus::JobMatching as i32 {
        Some((HurtigsporStatus::EmployedWithSubsidy, start.unwrap_or(today), "Arena: a wage subsidy started"))
    } else {
        None
    };
    let Some((to, date, reason)) = move_to else { return };
    // The rules decide: a move they refuse (hurtigspor not active, the
    // programme ended) leaves the status as it is.
    let last = p
        .hurtigspor
        .as_ref()
        .and_then(|h| h.history.iter().filter_map(|t| t.effective_date.as_ref().and_then(dates::from_proto)).max());
    let effective_date = date.min(today).max(last.unwrap_or(NaiveDate::MIN));
    let mut moved = p.clone();
    let input = TransitionInput { to, decided_by: DecisionMaker::Nav, reason: reason.into(), effective_date };
    let stamp = prost_types::Timestamp { seconds: now.timestamp(), nanos: 0 };
    if transition(&mut moved, &input, stamp).is_ok() {
        *p = moved;
    }
}

//! `hurtigspor.v1.ParticipantService`.

use super::{RequestAudit, begin, check_request_id, new_participant_id, pagination, parse_name};
use crate::{
    audit::require_purpose,
    auth::{Caller, Role, Scope, caller, writer},
    config::Limits,
    domain::{
        kommune::Kommunenummer,
        participant::{self as rules, Rules},
    },
    error::Error,
    keys::Keys,
    store::{AuditLog, ChangeKind, IdempotencyKey, ListQuery, Mutation, NewParticipant, Origin, Participants},
};
use chrono::NaiveDate;
use hurtigspor_proto::v1::{
    CreateParticipantRequest, EndMeasureRequest, EndProgrammeRequest, GetParticipantRequest, HurtigsporStatus,
    ListParticipantsRequest, ListParticipantsResponse, LookupParticipantRequest, OpenRecognitionCaseRequest,
    Participant, RecordCompetenceMappingRequest, RecordMeasureRequest, TransitionHurtigsporRequest,
    UpdateIndividualPlanRequest, UpdateParticipantRequest, participant_service_server::ParticipantService,
};
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::clock::Clock;

pub struct ParticipantApi {
    participants: Arc<dyn Participants>,
    audit_log: Arc<dyn AuditLog>,
    rules: Rules,
    keys: Keys,
    limits: Limits,
    clock: Clock,
}

impl ParticipantApi {
    pub fn new(
        participants: Arc<dyn Participants>,
        audit_log: Arc<dyn AuditLog>,
        rules: Rules,
        keys: Keys,
        limits: Limits,
        clock: Clock,
    ) -> Self {
        Self { participants, audit_log, rules, keys, limits, clock }
    }

    fn today(&self) -> NaiveDate {
        self.clock.today()
    }

    fn now_timestamp(&self) -> prost_types::Timestamp {
        let now = self.clock.now();
        prost_types::Timestamp { seconds: now.timestamp(), nanos: now.timestamp_subsec_nanos() as i32 }
    }

    /// The idempotency key of a request with a `request_id`, if it has one.
    /// Request ids are each client organisation's own: the same id from
    /// another client is another request, and never replays its answer.
    fn idempotency<M: Message>(
        &self,
        who: &Caller,
        method: &'static str,
        request_id: &str,
        request: &M,
    ) -> Result<Option<IdempotencyKey>, Error> {
        check_request_id(request_id)?;
        if request_id.is_empty() {
            return Ok(None);
        }
        Ok(Some(IdempotencyKey {
            method,
            request_id: format!("{}/{request_id}", who.organisation),
            fingerprint: self.keys.fingerprint(method, &request.encode_to_vec()),
        }))
    }

    /// A kommune learns that the person is registered, but not where: the
    /// resource name of another kommune's participant is not given.
    async fn already_exists(&self, existing: String, who: &Caller) -> Error {
        let id = existing.trim_start_matches("participants/");
        let visible = match self.participants.get(id).await {
            Ok(Some(p)) => who.sees(&p.kommunenummer),
            _ => false,
        };
        if visible {
            Error::AlreadyExists { existing }
        } else {
            Error::AlreadyExists {
                existing: "a participant of another kommune (ask that kommune to transfer it)".into(),
            }
        }
    }

    /// What every response carries: derived status and warnings.
    fn present(&self, mut p: Participant) -> Participant {
        rules::present(&mut p, &self.rules.programme, self.today());
        p
    }

    /// Parses the participant a request names, and notes it for the audit.
    fn target(audit: &mut RequestAudit, name: &str) -> Result<String, Error> {
        let id = parse_name(name, "name")?;
        audit.about(&id);
        Ok(id)
    }

    /// Writes the request's audit entries, then answers.
    async fn respond<T>(&self, audit: RequestAudit, result: Result<T, Error>) -> Result<Response<T>, Status> {
        Ok(Response::new(audit.finish(&*self.audit_log, result).await?))
    }

    #[allow(clippy::too_many_arguments)]
    async fn mutate(
        &self,
        who: &Caller,
        audit: &mut RequestAudit,
        id: String,
        etag: &str,
        idempotency: Option<IdempotencyKey>,
        kind: &'static str,
        apply: impl FnOnce(&mut Participant) -> Result<(), Error> + Send + 'static,
    ) -> Result<Participant, Error> {
        let committed = self
            .participants
            .mutate(Mutation {
                id: id.clone(),
                expected_etag: (!etag.is_empty()).then(|| etag.to_owned()),
                idempotency,
                kind: ChangeKind(kind),
                origin: Origin::Api,
                actor: who.actor(),
                // A kommune writes its own participants only.
                kommuner: (who.role == Role::Kommune).then(|| who.kommuner.clone()),
                audit: audit.hand_over(),
                apply: Box::new(apply),
            })
            .await?;
        tracing::info!(participant = %id, version = committed.version, replayed = committed.replayed, change = kind, "participant changed");
        Ok(self.present(committed.participant))
    }
}

fn required<'a, T>(value: Option<&'a T>, field: &str, what: &str) -> Result<&'a T, Error> {
    value.ok_or_else(|| Error::invalid(field, "REQUIRED", format!("is required: {what}")))
}

/// The audit method name of a ParticipantService method.
macro_rules! method {
    ($name:literal) => {
        concat!("ParticipantService/", $name)
    };
}

/// Runs a handler's body (an async block in which `$audit` is the
/// request's `&mut RequestAudit`), then writes the audit entries and answers.
macro_rules! audited {
    ($self:ident, $audit:ident, $body:block) => {{
        let result = {
            let $audit = &mut $audit;
            async move $body
        }
        .await;
        $self.respond($audit, result).await
    }};
}

#[tonic::async_trait]
impl ParticipantService for ParticipantApi {
    async fn create_participant(
        &self,
        request: Request<CreateParticipantRequest>,
    ) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("CreateParticipant"), |r| writer(r, false)).await?;
        audited!(self, audit, {
            audit.purpose(Some(require_purpose(request.metadata())?));
            let req = request.into_inner();
            let input = required(req.participant.as_ref(), "participant", "the participant to register")?;
            let idempotency = self.idempotency(&who, "CreateParticipant", &req.request_id, &req)?;
            let valid = rules::validate_new(input, &self.rules, self.today())?;
            if !who.sees(&valid.record.kommunenummer) {
                return Err(Error::PermissionDenied {
                    reason: "KOMMUNE_NOT_YOURS",
                    message:
                        "a kommune registers participants of its own kommune(s) only; check participant.kommunenummer"
                            .into(),
                });
            }
            let id = new_participant_id();
            let committed = self
                .participants
                .create(NewParticipant {
                    id: id.clone(),
                    national_id_hash: self.keys.national_id_hash(&valid.national_id),
                    national_id: valid.national_id.expose().to_owned(),
                    record: valid.record,
                    idempotency,
                    origin: Origin::Api,
                    actor: who.actor(),
                    audit: audit.hand_over(),
                })
                .await;
            let committed = match committed {
                Err(Error::AlreadyExists { existing }) => return Err(self.already_exists(existing, &who).await),
                other => other?,
            };
            tracing::info!(participant = %committed.participant.name, replayed = committed.replayed, "participant created");
            Ok(self.present(committed.participant))
        })
    }

    async fn get_participant(&self, request: Request<GetParticipantRequest>) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("GetParticipant"), |r| caller(r, Scope::ParticipantsRead))
                .await?;
        audited!(self, audit, {
            let id = Self::target(audit, &request.get_ref().name)?;
            audit.purpose(Some(require_purpose(request.metadata())?));
            let p = self
                .participants
                .get(&id)
                .await?
                .filter(|p| who.sees(&p.kommunenummer))
                .ok_or_else(|| Error::not_found(crate::store::resource_name(&id)))?;
            tracing::info!(participant = %id, "participant read");
            Ok(self.present(p))
        })
    }

    async fn list_participants(
        &self,
        request: Request<ListParticipantsRequest>,
    ) -> Result<Response<ListParticipantsResponse>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("ListParticipants"), |r| caller(r, Scope::ParticipantsRead))
                .await?;
        audited!(self, audit, {
            audit.purpose(Some(require_purpose(request.metadata())?));
            let req = request.into_inner();
            let mut v = crate::error::Violations::new();
            let limit = pagination::page_size(&self.limits, req.page_size, &mut v);
            let kommune = if req.kommunenummer.is_empty() {
                None
            } else {
                match Kommunenummer::parse(&req.kommunenummer) {
                    Ok(k) => Some(k.as_str().to_owned()),
                    Err(e) => {
                        v.add("kommunenummer", "INVALID_KOMMUNE", e.to_string());
                        None
                    }
                }
            };
            let status = match HurtigsporStatus::try_from(req.hurtigspor_status) {
                Ok(HurtigsporStatus::Unspecified) => None,
                Ok(s) => Some(s as i32),
                Err(_) => {
                    v.add("hurtigspor_status", "UNKNOWN_ENUM_VALUE", "is not a known HurtigsporStatus");
                    None
                }
            };
            v.check()?;
            let status_text = status.map(|s| s.to_string()).unwrap_or_default();
            // A page token is good only for the caller it was given to.
            let filter =
                pagination::filter_digest(&[kommune.as_deref().unwrap_or(""), &status_text, &who.organisation]);
            let after = if req.page_token.is_empty() {
                None
            } else {
                Some(pagination::decode(&self.keys, &req.page_token, filter)?)
            };
            // A kommune lists its own kommuner only, whatever it asks for.
            let kommuner = match (who.role, kommune) {
                (Role::Kommune, Some(k)) => Some(who.kommuner.iter().filter(|o| **o == k).cloned().collect()),
                (Role::Kommune, None) => Some(who.kommuner.clone()),
                (_, k) => k.map(|k| vec![k]),
            };
            let page = self.participants.list(ListQuery { kommuner, hurtigspor_status: status, after, limit }).await?;
            let next_page_token = match (page.more, page.last_position) {
                (true, Some(last)) => pagination::encode(&self.keys, last, filter),
                _ => String::new(),
            };
            for p in &page.participants {
                audit.about(p.name.trim_start_matches("participants/"));
            }
            tracing::info!(count = page.participants.len(), "participants listed");
            Ok(ListParticipantsResponse {
                participants: page.participants.into_iter().map(|p| self.present(p)).collect(),
                next_page_token,
            })
        })
    }

    async fn update_participant(
        &self,
        request: Request<UpdateParticipantRequest>,
    ) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("UpdateParticipant"), |r| writer(r, false)).await?;
        audited!(self, audit, {
            audit.purpose(Some(require_purpose(request.metadata())?));
            let req = request.into_inner();
            let input =
                required(req.participant.as_ref(), "participant", "the participant with its name and the new values")?
                    .clone();
            let id = parse_name(&input.name, "participant.name")?;
            audit.about(&id);
            let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
            let (rules, today) = (self.rules.clone(), self.today());
            let etag = input.etag.clone();
            self.mutate(&who, audit, id, &etag, None, "participant.updated", move |p| {
                rules::apply_update(p, &input, &paths, &rules, today)
            })
            .await
        })
    }

    async fn lookup_participant(
        &self,
        request: Request<LookupParticipantRequest>,
    ) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("LookupParticipant"), |r| caller(r, Scope::ParticipantsRead))
                .await?;
        audited!(self, audit, {
            audit.purpose(Some(require_purpose(request.metadata())?));
            let id =
                rules::parse_national_id(&request.get_ref().national_id, "national_id", &self.rules, self.today())?;
            let found = self.participants.get_by_national_id_hash(&self.keys.national_id_hash(&id)).await?;
            // A probe for someone else's participant is on record as about them.
            if let Some(p) = &found {
                audit.about(p.name.trim_start_matches("participants/"));
            }
            let p = found
                .filter(|p| who.sees(&p.kommunenummer))
                .ok_or_else(|| Error::not_found("participant with this national id"))?;
            tracing::info!(participant = %p.name, "participant looked up");
            Ok(self.present(p))
        })
    }

    async fn transition_hurtigspor(
        &self,
        request: Request<TransitionHurtigsporRequest>,
    ) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("TransitionHurtigspor"), |r| writer(r, true)).await?;
        audited!(self, audit, {
            let purpose = require_purpose(request.metadata());
            let req = request.into_inner();
            let id = Self::target(audit, &req.name)?;
            audit.purpose(Some(purpose?));
            let idempotency = self.idempotency(&who, "TransitionHurtigspor", &req.request_id, &req)?;
            let input = rules::validate_transition_input(
                req.status,
                req.decided_by,
                &req.reason,
                req.effective_date.as_ref(),
                self.today(),
            )?;
            let now = self.now_timestamp();
            self.mutate(&who, audit, id, &req.etag, idempotency, "hurtigspor.transitioned", move |p| {
                rules::transition(p, &input, now)
            })
            .await
        })
    }

    async fn end_programme(&self, request: Request<EndProgrammeRequest>) -> Result<Response<Participant>, Status> {
        let (who, mut audit) = begin(&*self.audit_log, &request, method!("EndProgramme"), |r| writer(r, false)).await?;
        audited!(self, audit, {
            let purpose = require_purpose(request.metadata());
            let req = request.into_inner();
            let id = Self::target(audit, &req.name)?;
            audit.purpose(Some(purpose?));
            let idempotency = self.idempotency(&who, "EndProgramme", &req.request_id, &req)?;
            let input = rules::validate_end_input(req.end_date.as_ref(), req.end_reason, req.main_activity)?;
            self.mutate(&who, audit, id, &req.etag, idempotency, "programme.ended", move |p| {
                rules::end_programme(p, &input)
            })
            .await
        })
    }

    async fn record_measure(&self, request: Request<RecordMeasureRequest>) -> Result<Response<Participant>, Status> {
        let (who, mut audit) = begin(&*self.audit_log, &request, method!("RecordMeasure"), |r| writer(r, true)).await?;
        audited!(self, audit, {
            let purpose = require_purpose(request.metadata());
            let req = request.into_inner();
            let id = Self::target(audit, &req.name)?;
            audit.purpose(Some(purpose?));
            let idempotency = self.idempotency(&who, "RecordMeasure", &req.request_id, &req)?;
            let input = required(req.measure.as_ref(), "measure", "the measure to record")?;
            let measure = rules::new_measure(input, self.today())?;
            self.mutate(&who, audit, id, &req.etag, idempotency, "measure.recorded", move |p| {
                p.measures.push(measure);
                Ok(())
            })
            .await
        })
    }

    async fn end_measure(&self, request: Request<EndMeasureRequest>) -> Result<Response<Participant>, Status> {
        let (who, mut audit) = begin(&*self.audit_log, &request, method!("EndMeasure"), |r| writer(r, true)).await?;
        audited!(self, audit, {
            let purpose = require_purpose(request.metadata());
            let req = request.into_inner();
            let id = Self::target(audit, &req.name)?;
            audit.purpose(Some(purpose?));
            let input = rules::validate_end_measure(&req.measure_id, req.status, req.end_date.as_ref())?;
            self.mutate(&who, audit, id, &req.etag, None, "measure.ended", move |p| rules::end_measure(p, &input)).await
        })
    }

    async fn open_recognition_case(
        &self,
        request: Request<OpenRecognitionCaseRequest>,
    ) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("OpenRecognitionCase"), |r| writer(r, false)).await?;
        audited!(self, audit, {
            let purpose = require_purpose(request.metadata());
            let req = request.into_inner();
            let id = Self::target(audit, &req.name)?;
            audit.purpose(Some(purpose?));
            let idempotency = self.idempotency(&who, "OpenRecognitionCase", &req.request_id, &req)?;
            let input =
                required(req.recognition_case.as_ref(), "recognition_case", "the case to open, with its scheme")?;
            let case = rules::new_recognition_case(input, self.today())?;
            self.mutate(&who, audit, id, &req.etag, idempotency, "recognition.opened", move |p| {
                rules::open_recognition_case(p, case)
            })
            .await
        })
    }

    async fn record_competence_mapping(
        &self,
        request: Request<RecordCompetenceMappingRequest>,
    ) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("RecordCompetenceMapping"), |r| writer(r, false)).await?;
        audited!(self, audit, {
            let purpose = require_purpose(request.metadata());
            let req = request.into_inner();
            let id = Self::target(audit, &req.name)?;
            audit.purpose(Some(purpose?));
            let competence = rules::validate_competence_input(req.competence.as_ref(), self.today())?;
            self.mutate(&who, audit, id, &req.etag, None, "competence.recorded", move |p| {
                p.competence = Some(competence);
                Ok(())
            })
            .await
        })
    }

    async fn update_individual_plan(
        &self,
        request: Request<UpdateIndividualPlanRequest>,
    ) -> Result<Response<Participant>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, method!("UpdateIndividualPlan"), |r| writer(r, false)).await?;
        audited!(self, audit, {
            let purpose = require_purpose(request.metadata());
            let req = request.into_inner();
            let id = Self::target(audit, &req.name)?;
            audit.purpose(Some(purpose?));
            let plan = req.plan.clone();
            self.mutate(&who, audit, id, &req.etag, None, "plan.updated", move |p| {
                rules::replace_plan(p, plan.as_ref())
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::ProgrammeRules,
        domain::{national_id::IdMode, national_id::testing::synthetic_fnr},
        store::Committed,
    };
    use hurtigspor_proto::{google::r#type::Date, v1::Programme};
    use tonic::Code;
    use tonic_types::StatusExt;

    mockall::mock! {
        /// A store with the two roles the participant API uses.
        Store {}
        #[async_trait::async_trait]
        impl Participants for Store {
            async fn create(&self, new: NewParticipant) -> Result<Committed, Error>;
            async fn mutate(&self, mutation: Mutation) -> Result<Committed, Error>;
            async fn get(&self, id: &str) -> Result<Option<Participant>, Error>;
            async fn get_by_national_id_hash(&self, hash: &[u8]) -> Result<Option<Participant>, Error>;
            async fn list(&self, query: ListQuery) -> Result<crate::store::ListPage, Error>;
        }
        #[async_trait::async_trait]
        impl AuditLog for Store {
            async fn audit(&self, entries: Vec<crate::audit::AuditEntry>) -> Result<(), Error>;
            async fn audit_log(&self, query: crate::audit::AuditQuery) -> Result<Vec<crate::audit::AuditRecord>, Error>;
        }
    }

    /// A request from an administrator with every scope.
    fn authed<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(crate::auth::Caller {
            organisation: "900000049".into(),
            vendor: None,
            role: crate::auth::Role::Admin,
            kommuner: vec![],
            scopes: crate::auth::Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
        });
        request.metadata_mut().insert(crate::audit::PURPOSE_HEADER, "case-processing".parse().unwrap());
        request
    }

    /// A store that takes any audit entries.
    fn auditing() -> MockStore {
        let mut store = MockStore::new();
        store.expect_audit().returning(|_| Ok(()));
        store
    }

    #[tokio::test]
    async fn a_request_without_a_caller_or_its_scope_is_refused_before_the_store() {
        let api = api(auditing());
        let status = api.create_participant(Request::new(valid_request())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut read_only = authed(valid_request());
        read_only.extensions_mut().get_mut::<crate::auth::Caller>().unwrap().scopes =
            vec!["hurtigspor:participants.read".into()];
        let status = api.create_participant(read_only).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("hurtigspor:participants.write"), "{status:?}");
    }

    fn api(store: MockStore) -> ParticipantApi {
        let store = Arc::new(store);
        ParticipantApi::new(
            store.clone(),
            store,
            Rules { id_mode: IdMode::Test, programme: ProgrammeRules::default() },
            Keys::from_master(&[3; 32]),
            Limits::default(),
            Clock::fixed("2026-11-23T12:00:00Z".parse().unwrap()),
        )
    }

    fn valid_request() -> CreateParticipantRequest {
        CreateParticipantRequest {
            participant: Some(Participant {
                national_id: synthetic_fnr(1990, 4, 12, 3),
                given_name: "Amina".into(),
                family_name: "Haddad".into(),
                kommunenummer: "0301".into(),
                programme: Some(Programme {
                    start_date: Some(Date { year: 2026, month: 1, day: 5 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        }
    }

    #[tokio::test]
    async fn invalid_input_never_reaches_the_store() {
        let mut store = MockStore::new();
        store.expect_create().never();
        store.expect_mutate().never();
        // The refusals are audited, with the fields refused and never their values.
        let audited = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = audited.clone();
        store.expect_audit().times(2).returning(move |entries| {
            seen.lock().unwrap().extend(entries);
            Ok(())
        });
        let api = api(store);
        let mut req = valid_request();
        req.participant.as_mut().unwrap().kommunenummer = "0000".into();
        let status = api.create_participant(authed(req)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let transition = TransitionHurtigsporRequest {
            name: "participants/0123456789abcdef0123456789abcdef".into(),
            status: 0,
            ..Default::default()
        };
        assert_eq!(api.transition_hurtigspor(authed(transition)).await.unwrap_err().code(), Code::InvalidArgument);
        let audited = audited.lock().unwrap();
        let seen: Vec<_> = audited
            .iter()
            .map(|e| (e.method.as_str(), e.participant_id.as_deref(), e.outcome.as_str(), e.detail.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "ParticipantService/CreateParticipant",
                    None,
                    "INVALID_ARGUMENT",
                    Some("participant.kommunenummer UNKNOWN_KOMMUNE")
                ),
                (
                    "ParticipantService/TransitionHurtigspor",
                    Some("0123456789abcdef0123456789abcdef"),
                    "INVALID_ARGUMENT",
                    Some("status REQUIRED")
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_read_that_cannot_be_audited_returns_no_data() {
        let mut store = MockStore::new();
        store.expect_get().returning(|_| Ok(Some(Participant { kommunenummer: "0301".into(), ..Default::default() })));
        store.expect_audit().returning(|_| Err(Error::Unavailable("disk full".into())));
        let api = api(store);
        let mut req = authed(GetParticipantRequest { name: "participants/0123456789abcdef0123456789abcdef".into() });
        req.metadata_mut().insert(crate::audit::PURPOSE_HEADER, "case-processing".parse().unwrap());
        let status = api.get_participant(req).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.get_details_error_info().unwrap().reason, "STORAGE_UNAVAILABLE");
        assert!(status.get_details_retry_info().is_some(), "a retry may succeed");
    }

    #[tokio::test]
    async fn the_store_gets_an_opaque_id_a_keyed_hash_and_no_number_in_the_record() {
        let req = valid_request();
        let number = req.participant.as_ref().unwrap().national_id.clone();
        let expected_hash = {
            let id =
                crate::domain::national_id::NationalId::parse(&number, IdMode::Test, chrono::NaiveDate::MAX).unwrap();
            Keys::from_master(&[3; 32]).national_id_hash(&id)
        };
        let mut store = auditing();
        store
            .expect_create()
            .withf(move |n| {
                n.id.len() == 32
                    && !n.id.contains(&number[..6])
                    && n.national_id_hash == expected_hash
                    && n.record.national_id.is_empty()
                    && n.idempotency.is_none()
            })
            .times(1)
            .returning(|n| Ok(Committed { participant: n.record, version: 1, replayed: false }));
        api(store).create_participant(authed(req)).await.unwrap();
    }

    #[tokio::test]
    async fn a_storage_outage_is_unavailable_with_retry_info() {
        let mut store = auditing();
        store.expect_create().returning(|_| Err(Error::Unavailable("disk I/O error on /var/lib/x".into())));
        let status = api(store).create_participant(authed(valid_request())).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_details_retry_info().is_some());
        assert!(!status.message().contains("/var/lib"), "internals stay in the log");
    }

    #[tokio::test]
    async fn request_ids_are_fingerprinted_per_method_and_body() {
        let mut store = auditing();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        store.expect_create().times(2).returning(move |n| {
            s.lock().unwrap().push(n.idempotency.clone().unwrap());
            Ok(Committed { participant: n.record, version: 1, replayed: false })
        });
        let api = api(store);
        let mut a = valid_request();
        a.request_id = "r1".into();
        let mut b = a.clone();
        b.participant.as_mut().unwrap().given_name = "Other".into();
        api.create_participant(authed(a)).await.unwrap();
        api.create_participant(authed(b)).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].method, "CreateParticipant");
        assert_eq!(seen[0].request_id, "900000049/r1", "request ids are scoped to the calling organisation");
        assert_ne!(seen[0].fingerprint, seen[1].fingerprint, "another body, another fingerprint");
    }

    /// The "not in the future" rule of a competence mapping, decided by the
    /// injected clock at the turn of the year: 23:30 UTC on New Year's Eve
    /// is already New Year's Day in Oslo.
    #[tokio::test]
    async fn a_date_rule_turns_at_midnight_in_oslo() {
        use hurtigspor_proto::v1::{CompetenceMapping, RecordCompetenceMappingRequest};
        let mapped_on_new_years_day = || RecordCompetenceMappingRequest {
            name: "participants/0123456789abcdef0123456789abcdef".into(),
            competence: Some(CompetenceMapping {
                mapped_date: Some(Date { year: 2027, month: 1, day: 1 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        for (instant, accepted) in [("2026-12-31T22:59:59Z", false), ("2026-12-31T23:00:00Z", true)] {
            let mut store = auditing();
            store.expect_mutate().times(usize::from(accepted)).returning(|m| {
                let mut p = Participant { kommunenummer: "0301".into(), ..Default::default() };
                (m.apply)(&mut p)?;
                Ok(Committed { participant: p, version: 2, replayed: false })
            });
            let mut api = api(store);
            api.clock = Clock::fixed(instant.parse().unwrap());
            let result = api.record_competence_mapping(authed(mapped_on_new_years_day())).await;
            match (accepted, result) {
                (true, Ok(_)) => {}
                (false, Err(status)) => {
                    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                    let violations = status.get_details_bad_request().unwrap().field_violations;
                    assert_eq!(violations[0].field, "competence.mapped_date", "{violations:?}");
                }
                (_, other) => panic!("at {instant}: {other:?}"),
            }
        }
    }
}

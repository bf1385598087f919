//! `hurtigspor.v1.ReportingService`: the hurtigspor reporting form, derived
//! from the change log (see [`crate::report`]).
//!
//! Who sees what: the `hurtigspor:reports.read` scope; a kommune its own
//! kommuner only (another kommune, or the whole country, is
//! PERMISSION_DENIED: a report holds figures, not people, so there is no
//! existence to hide as NOT_FOUND does for a participant); NAV and
//! administrators any kommune and the country. Every call is audited with
//! its purpose.
//!
//! The per-participant dates (`ListHurtigsporParticipants`) are dates
//! about persons: they need the `hurtigspor:participants.read` scope too,
//! and every participant listed gets its own audit entry.

use super::{begin, pagination};
use crate::clock::Clock;
use crate::{
    audit::require_purpose,
    auth::{Caller, Role, Scope, caller},
    config::Limits,
    domain::kommune::Kommunenummer,
    error::{Error, Violations},
    keys::Keys,
    report,
    store::{AuditLog, ChangeLog},
};
use hurtigspor_proto::v1::{
    GetHurtigsporReportRequest, HurtigsporReport, ListHurtigsporParticipantsRequest,
    ListHurtigsporParticipantsResponse, reporting_service_server::ReportingService,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The years a report may be asked for.
pub const YEARS: std::ops::RangeInclusive<i32> = 2000..=2100;

pub struct ReportingApi {
    history: Arc<dyn ChangeLog>,
    audit_log: Arc<dyn AuditLog>,
    keys: Keys,
    limits: Limits,
    clock: Clock,
}

impl ReportingApi {
    pub fn new(
        history: Arc<dyn ChangeLog>,
        audit_log: Arc<dyn AuditLog>,
        keys: Keys,
        limits: Limits,
        clock: Clock,
    ) -> Self {
        Self { history, audit_log, keys, limits, clock }
    }
}

/// The kommune asked for (`None`: the country) and the year, or every bad
/// field at once.
fn parse(req: &GetHurtigsporReportRequest) -> Result<(Option<String>, i32), Error> {
    let mut v = Violations::new();
    let asked = parse_into(&req.kommunenummer, req.year, &mut v);
    v.check()?;
    Ok(asked)
}

/// The kommune and year, with their violations added to `v`.
fn parse_into(kommunenummer: &str, year: i32, v: &mut Violations) -> (Option<String>, i32) {
    let kommune = match kommunenummer.trim() {
        "" => None,
        k => match Kommunenummer::parse(k) {
            Ok(k) => Some(k.as_str().to_owned()),
            Err(e) => {
                v.add("kommunenummer", "INVALID_KOMMUNENUMMER", format!("{e}; leave it empty for the whole country"));
                None
            }
        },
    };
    if year == 0 {
        v.add("year", "REQUIRED", "is required: the calendar year of the report, e.g. 2026");
    } else if !YEARS.contains(&year) {
        v.add("year", "OUT_OF_RANGE", format!("must be a calendar year from {} to {}", YEARS.start(), YEARS.end()));
    }
    (kommune, year)
}

/// The caller of the per-participant listing: reports, and participants
/// (the dates are about persons).
fn person_reader<T>(request: &Request<T>) -> Result<Caller, Status> {
    let who = caller(request, Scope::ReportsRead)?;
    who.require(Scope::ParticipantsRead)?;
    Ok(who)
}

/// Whether `who` may see the figures of `kommune` (`None`: the country).
fn allowed(who: &Caller, kommune: Option<&str>) -> Result<(), Error> {
    match kommune {
        Some(k) if who.sees(k) => Ok(()),
        Some(_) => Err(Error::PermissionDenied {
            reason: "KOMMUNE_NOT_ALLOWED",
            message: "a kommune may see the report of its own kommuner only; ask for one of those".into(),
        }),
        None if who.role == Role::Kommune => Err(Error::PermissionDenied {
            reason: "NATIONAL_REPORT_NOT_ALLOWED",
            message: "the national figures are for NAV and the gateway's administrators; give your kommunenummer"
                .into(),
        }),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl ReportingService for ReportingApi {
    async fn get_hurtigspor_report(
        &self,
        request: Request<GetHurtigsporReportRequest>,
    ) -> Result<Response<HurtigsporReport>, Status> {
        let (who, mut audit) = begin(&*self.audit_log, &request, "ReportingService/GetHurtigsporReport", |r| {
            caller(r, Scope::ReportsRead)
        })
        .await?;
        let result = async {
            audit.purpose(Some(require_purpose(request.metadata())?));
            let (kommune, year) = parse(request.get_ref())?;
            allowed(&who, kommune.as_deref())?;
            let as_of = self.clock.today();
            report::compute(&*self.history, kommune.as_deref(), year, as_of, report::PAGE)
                .await?
                .ok_or_else(|| Error::invalid("year", "OUT_OF_RANGE", "is not a calendar year"))
        }
        .await;
        Ok(Response::new(audit.finish(&*self.audit_log, result).await?))
    }

    async fn list_hurtigspor_participants(
        &self,
        request: Request<ListHurtigsporParticipantsRequest>,
    ) -> Result<Response<ListHurtigsporParticipantsResponse>, Status> {
        let (who, mut audit) =
            begin(&*self.audit_log, &request, "ReportingService/ListHurtigsporParticipants", person_reader).await?;
        let result = async {
            audit.purpose(Some(require_purpose(request.metadata())?));
            let req = request.get_ref();
            let mut v = Violations::new();
            let (kommune, year) = parse_into(&req.kommunenummer, req.year, &mut v);
            let limit = pagination::page_size(&self.limits, req.page_size, &mut v);
            v.check()?;
            allowed(&who, kommune.as_deref())?;
            // A page token continues the same listing for the same caller.
            let filter = pagination::filter_digest(&[
                "hurtigspor-participants",
                kommune.as_deref().unwrap_or(""),
                &year.to_string(),
                &who.organisation,
            ]);
            let after = match req.page_token.as_str() {
                "" => None,
                token => Some(pagination::decode_key(&self.keys, token, filter)?),
            };
            let as_of = self.clock.today();
            let (found, more) = report::participants(&*self.history, kommune.as_deref(), year, as_of, after, limit)
                .await?
                .ok_or_else(|| Error::invalid("year", "OUT_OF_RANGE", "is not a calendar year"))?;
            let next_page_token = match (more, found.last()) {
                (true, Some(last)) => pagination::encode_key(&self.keys, &last.id, filter),
                _ => String::new(),
            };
            for d in &found {
                audit.about(&d.id);
            }
            tracing::info!(count = found.len(), "hurtigspor participants listed");
            Ok(ListHurtigsporParticipantsResponse {
                participants: found.iter().map(|d| d.dates(year)).collect(),
                next_page_token,
            })
        }
        .await;
        Ok(Response::new(audit.finish(&*self.audit_log, result).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChangeRecord;

    mockall::mock! {
        /// A store with the two roles the reporting API uses.
        Store {}
        #[async_trait::async_trait]
        impl ChangeLog for Store {
            async fn changes(&self, after: crate::store::ChangeCursor, limit: usize) -> Result<Vec<ChangeRecord>, Error>;
            async fn histories(&self, after: Option<(String, i64)>, limit: usize) -> Result<Vec<ChangeRecord>, Error>;
        }
        #[async_trait::async_trait]
        impl AuditLog for Store {
            async fn audit(&self, entries: Vec<crate::audit::AuditEntry>) -> Result<(), Error>;
            async fn audit_log(&self, query: crate::audit::AuditQuery) -> Result<Vec<crate::audit::AuditRecord>, Error>;
        }
    }

    fn who(role: Role, kommuner: &[&str]) -> Caller {
        Caller {
            organisation: "900000014".into(),
            vendor: None,
            role,
            kommuner: kommuner.iter().map(|k| (*k).to_owned()).collect(),
            scopes: vec![Scope::ReportsRead.as_str().into()],
        }
    }

    fn request(kommunenummer: &str, year: i32, purpose: bool) -> Request<GetHurtigsporReportRequest> {
        let mut r = Request::new(GetHurtigsporReportRequest { kommunenummer: kommunenummer.into(), year });
        if purpose {
            r.metadata_mut().insert(crate::audit::PURPOSE_HEADER, "statistics".parse().unwrap());
        }
        r
    }

    #[test]
    fn every_bad_field_is_named() {
        let Err(Error::InvalidArgument(v)) = parse(&GetHurtigsporReportRequest { kommunenummer: "03".into(), year: 0 })
        else {
            panic!("must be refused")
        };
        let fields: Vec<_> = v.iter().map(|v| (v.field.as_str(), v.reason)).collect();
        assert_eq!(fields, [("kommunenummer", "INVALID_KOMMUNENUMMER"), ("year", "REQUIRED")]);
        let err = parse(&GetHurtigsporReportRequest { kommunenummer: "9999".into(), year: 1999 }).unwrap_err();
        let Error::InvalidArgument(v) = err else { panic!() };
        assert_eq!(v.iter().map(|v| v.reason).collect::<Vec<_>>(), ["INVALID_KOMMUNENUMMER", "OUT_OF_RANGE"]);
        assert_eq!(
            parse(&GetHurtigsporReportRequest { kommunenummer: " 0301 ".into(), year: 2026 }).unwrap(),
            (Some("0301".into()), 2026)
        );
        assert_eq!(parse(&GetHurtigsporReportRequest { kommunenummer: "".into(), year: 2100 }).unwrap(), (None, 2100));
    }

    #[test]
    fn a_kommune_sees_its_own_figures_only() {
        let oslo = who(Role::Kommune, &["0301"]);
        assert!(allowed(&oslo, Some("0301")).is_ok());
        assert_eq!(allowed(&oslo, Some("4601")).unwrap_err().reason(), "KOMMUNE_NOT_ALLOWED");
        assert_eq!(allowed(&oslo, None).unwrap_err().reason(), "NATIONAL_REPORT_NOT_ALLOWED");
        for role in [Role::Nav, Role::Admin] {
            assert!(allowed(&who(role, &[]), Some("4601")).is_ok());
            assert!(allowed(&who(role, &[]), None).is_ok());
        }
    }

    #[tokio::test]
    async fn a_call_is_audited_with_its_purpose_and_refused_without_one() {
        let mut store = MockStore::new();
        store.expect_histories().returning(|_, _| Ok(Vec::new()));
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = written.clone();
        store.expect_audit().returning(move |entries| {
            w.lock().unwrap().extend(entries);
            Ok(())
        });
        let store = Arc::new(store);
        let api = ReportingApi::new(
            store.clone(),
            store,
            Keys::from_master(&[7; 32]),
            Limits::default(),
            Clock::fixed("2026-11-23T12:00:00Z".parse().unwrap()),
        );
        let mut ok = request("0301", 2026, true);
        ok.extensions_mut().insert(who(Role::Kommune, &["0301"]));
        let r = api.get_hurtigspor_report(ok).await.unwrap().into_inner();
        assert_eq!((r.kommunenummer.as_str(), r.year, r.participants_in_hurtigspor), ("0301", 2026, 0));

        let mut no_purpose = request("0301", 2026, false);
        no_purpose.extensions_mut().insert(who(Role::Kommune, &["0301"]));
        let status = api.get_hurtigspor_report(no_purpose).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        let mut other = request("4601", 2026, true);
        other.extensions_mut().insert(who(Role::Kommune, &["0301"]));
        assert_eq!(api.get_hurtigspor_report(other).await.unwrap_err().code(), tonic::Code::PermissionDenied);

        let entries = written.lock().unwrap();
        let seen: Vec<_> =
            entries.iter().map(|e| (e.method.as_str(), e.outcome.as_str(), e.purpose.as_deref())).collect();
        assert_eq!(
            seen,
            [
                ("ReportingService/GetHurtigsporReport", "OK", Some("statistics")),
                ("ReportingService/GetHurtigsporReport", "INVALID_ARGUMENT", None),
                ("ReportingService/GetHurtigsporReport", "PERMISSION_DENIED", Some("statistics")),
            ]
        );
        assert!(entries.iter().all(|e| e.participant_id.is_none()), "a report names no participant");
    }
}

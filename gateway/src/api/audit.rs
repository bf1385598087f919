//! `hurtigspor.v1.AuditService`: the audit log, for administrators.

use super::{begin, pagination, parse_name};
use crate::{
    audit::{AuditQuery, AuditRecord, parse_purpose},
    auth::auditor,
    config::Limits,
    error::Error,
    keys::Keys,
    store::{AuditLog, resource_name},
};
use chrono::{DateTime, SecondsFormat, Utc};
use hurtigspor_proto::v1::{
    AuditEntry, ListAuditEntriesRequest, ListAuditEntriesResponse, audit_service_server::AuditService,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    store: Arc<dyn AuditLog>,
    keys: Keys,
    limits: Limits,
}

impl AuditApi {
    pub fn new(store: Arc<dyn AuditLog>, keys: Keys, limits: Limits) -> Self {
        Self { store, keys, limits }
    }
}

fn rfc3339(t: &prost_types::Timestamp, field: &str) -> Result<String, Error> {
    DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .ok_or_else(|| Error::invalid(field, "INVALID_TIMESTAMP", "is not a valid timestamp"))
}

fn timestamp(text: &str) -> Option<prost_types::Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 })
}

/// An organisation filter: a 9-digit organisation number (as `0192:<orgnr>`)
/// or a system's name.
fn organisation(text: &str) -> Result<Option<String>, Error> {
    match text.trim() {
        "" => Ok(None),
        s @ ("arena" | "nokut" | "gateway") => Ok(Some(s.to_owned())),
        s => {
            let digits = s.strip_prefix("0192:").unwrap_or(s);
            if digits.len() == 9 && digits.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Some(format!("0192:{digits}")))
            } else {
                Err(Error::invalid(
                    "organisation",
                    "INVALID_ORGANISATION",
                    "must be a 9-digit organisation number, or arena, nokut or gateway",
                ))
            }
        }
    }
}

fn entry(r: AuditRecord) -> AuditEntry {
    AuditEntry {
        sequence: r.sequence,
        time: timestamp(&r.time),
        organisation: r.entry.organisation,
        vendor: r.entry.vendor.unwrap_or_default(),
        method: r.entry.method,
        participant: r.entry.participant_id.map(|p| resource_name(&p)).unwrap_or_default(),
        purpose: r.entry.purpose.unwrap_or_default(),
        outcome: r.entry.outcome,
        detail: r.entry.detail.unwrap_or_default(),
        hash: hex::encode(r.hash),
        previous_hash: hex::encode(r.previous_hash),
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        request: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        // Reading the audit log is audited too, and so is a refusal.
        let (who, mut audit) = begin(&*self.store, &request, "AuditService/ListAuditEntries", auditor).await?;
        let result = async {
            audit.purpose(parse_purpose(request.metadata())?);
            let req = request.into_inner();
            let participant_id = match req.participant.as_str() {
                "" => None,
                name => Some(parse_name(name, "participant")?),
            };
            if let Some(id) = &participant_id {
                audit.about(id);
            }
            let organisation = organisation(&req.organisation)?;
            let method = Some(req.method.trim().to_owned()).filter(|m| !m.is_empty());
            let from = req.start_time.as_ref().map(|t| rfc3339(t, "start_time")).transpose()?;
            let to = req.end_time.as_ref().map(|t| rfc3339(t, "end_time")).transpose()?;
            let mut v = crate::error::Violations::new();
            let limit = pagination::page_size(&self.limits, req.page_size, &mut v);
            v.check()?;
            let filter = pagination::filter_digest(&[
                "audit",
                participant_id.as_deref().unwrap_or(""),
                organisation.as_deref().unwrap_or(""),
                method.as_deref().unwrap_or(""),
                from.as_deref().unwrap_or(""),
                to.as_deref().unwrap_or(""),
                &who.organisation,
            ]);
            let after = match req.page_token.as_str() {
                "" => 0,
                token => pagination::decode(&self.keys, token, filter)?,
            };
            let mut records = self
                .store
                .audit_log(AuditQuery { participant_id, organisation, method, from, to, after, limit: limit + 1 })
                .await?;
            let more = records.len() > limit;
            records.truncate(limit);
            let next_page_token = match (more, records.last()) {
                (true, Some(last)) => pagination::encode(&self.keys, last.sequence, filter),
                _ => String::new(),
            };
            Ok(ListAuditEntriesResponse { entries: records.into_iter().map(entry).collect(), next_page_token })
        }
        .await;
        Ok(Response::new(audit.finish(&*self.store, result).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisation_filters() {
        assert_eq!(organisation("").unwrap(), None);
        assert_eq!(organisation("900000014").unwrap().as_deref(), Some("0192:900000014"));
        assert_eq!(organisation("0192:900000014").unwrap().as_deref(), Some("0192:900000014"));
        assert_eq!(organisation("arena").unwrap().as_deref(), Some("arena"));
        assert_eq!(organisation("12345").unwrap_err().reason(), "INVALID_ARGUMENT");
    }

    #[test]
    fn times_round_trip() {
        let t = prost_types::Timestamp { seconds: 1_795_000_000, nanos: 123_000 };
        let text = rfc3339(&t, "start_time").unwrap();
        assert_eq!(timestamp(&text), Some(t));
        assert!(rfc3339(&prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }, "end_time").is_err());
    }
}

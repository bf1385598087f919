//! The gRPC API: request handling on top of the domain rules and the store.

pub mod audit;
pub mod pagination;
pub mod participants;
pub mod reporting;
pub mod sync;

use crate::{audit::AuditEntry, auth::Caller, error::Error, store::AuditLog};

/// The request's caller and audit entry. The entry is begun as soon as the
/// caller is known, before `check` (scope and role): a refusal of a known
/// caller is audited too.
pub async fn begin<T>(
    store: &dyn AuditLog,
    request: &tonic::Request<T>,
    method: &'static str,
    check: impl FnOnce(&tonic::Request<T>) -> Result<Caller, tonic::Status>,
) -> Result<(Caller, RequestAudit), tonic::Status> {
    match check(request) {
        Ok(who) => {
            let audit = RequestAudit::begin(&who, method);
            Ok((who, audit))
        }
        // A known caller's refusal is recorded like any other outcome.
        Err(status) => match request.extensions().get::<Caller>() {
            Some(known) => {
                let audit = RequestAudit::begin(known, method);
                Err(audit.finish_status::<()>(store, Err(status)).await.expect_err("a refusal stays one"))
            }
            None => Err(status),
        },
    }
}

/// One request's audit entry: begun once the caller is known, completed
/// with the participants it concerned and how it ended. A write hands the
/// entry to the store, which appends it in the write's own transaction.
pub struct RequestAudit {
    entry: Option<AuditEntry>,
    participants: Vec<String>,
}

impl RequestAudit {
    /// `method` as `Service/Method`, e.g. `ParticipantService/GetParticipant`.
    pub fn begin(who: &Caller, method: &'static str) -> Self {
        let entry = AuditEntry {
            organisation: format!("0192:{}", who.organisation),
            vendor: who.vendor.as_ref().map(|v| format!("0192:{v}")),
            method: method.to_owned(),
            ..Default::default()
        };
        Self { entry: Some(entry), participants: Vec::new() }
    }

    pub fn purpose(&mut self, purpose: Option<String>) {
        if let Some(e) = &mut self.entry {
            e.purpose = purpose;
        }
    }

    /// A participant the request concerns: one entry is written per
    /// participant (one without a participant when there is none).
    pub fn about(&mut self, participant_id: &str) {
        self.participants.push(participant_id.to_owned());
    }

    /// Gives the entry to the store, which completes and appends it with
    /// the write; `finish` then has nothing left to write.
    pub fn hand_over(&mut self) -> Option<AuditEntry> {
        self.entry.take()
    }

    /// Like `finish`, for a success whose detail says what was shown (e.g.
    /// a stream's cursor range).
    pub async fn finish_with_detail(
        mut self,
        store: &dyn AuditLog,
        detail: Result<String, Error>,
    ) -> Result<(), Error> {
        if let (Some(e), Ok(d)) = (&mut self.entry, &detail) {
            e.detail = Some(d.clone());
        }
        self.finish(store, detail).await.map(|_| ())
    }

    /// Writes the entries and returns the request's result. A request that
    /// succeeded but cannot be audited is answered UNAVAILABLE: no one reads
    /// a person without a trace.
    pub async fn finish<T>(self, store: &dyn AuditLog, result: Result<T, Error>) -> Result<T, Error> {
        let Some(mut entry) = self.entry else { return result };
        let detail = entry.detail.take();
        crate::audit::settle(&mut entry, &result);
        if result.is_ok() {
            entry.detail = detail;
        }
        let audit = RequestAudit { entry: Some(entry), participants: self.participants };
        match audit.write(store).await {
            Ok(()) => result,
            Err(e) => result.and(Err(e)),
        }
    }

    /// Like `finish`, for a result already in gRPC terms: the outcome is
    /// its code, the detail its ErrorInfo reason.
    pub async fn finish_status<T>(
        self,
        store: &dyn AuditLog,
        result: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let Some(mut entry) = self.entry else { return result };
        match &result {
            Ok(_) => entry.outcome = "OK".into(),
            Err(status) => {
                entry.outcome = crate::audit::code_name(status.code()).into();
                entry.detail = tonic_types::StatusExt::get_details_error_info(status).map(|i| i.reason);
            }
        }
        let audit = RequestAudit { entry: Some(entry), participants: self.participants };
        match audit.write(store).await {
            Ok(()) => result,
            Err(e) => result.and(Err(e.into())),
        }
    }

    /// Writes the entries as they stand: one per participant, or one
    /// without a participant.
    async fn write(self, store: &dyn AuditLog) -> Result<(), Error> {
        let Some(entry) = self.entry else { return Ok(()) };
        let method = entry.method.clone();
        let entries = if self.participants.is_empty() {
            vec![entry]
        } else {
            self.participants.into_iter().map(|p| AuditEntry { participant_id: Some(p), ..entry.clone() }).collect()
        };
        store.audit(entries).await.map_err(|e| {
            tracing::error!(error = %e, method = %method, "the audit log could not be written; the request is refused");
            Error::Unavailable("the audit log cannot be written now, so no data is returned".into())
        })
    }
}

/// The opaque part of `participants/{id}`: 32 lowercase hex characters.
pub fn new_participant_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Parses `participants/{id}`. The value is never echoed back: a caller that
/// puts a national id here by mistake must not see it in errors or logs.
pub fn parse_name(name: &str, field: &str) -> Result<String, Error> {
    let id = name.strip_prefix("participants/").unwrap_or("");
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(id.to_owned())
    } else if name.is_empty() {
        Err(Error::invalid(field, "REQUIRED", "is required: a resource name of the form participants/{participant}"))
    } else {
        Err(Error::invalid(
            field,
            "INVALID_RESOURCE_NAME",
            "must be a resource name of the form participants/{participant}, as returned by CreateParticipant; national ids never go in names (use LookupParticipant)",
        ))
    }
}

/// Checks a client request id: 1-128 characters of letters, digits and `-_.:`.
pub fn check_request_id(request_id: &str) -> Result<(), Error> {
    let ok = request_id.len() <= 128 && request_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "request_id",
            "INVALID_REQUEST_ID",
            "must be at most 128 characters of letters, digits, '-', '_', '.' and ':', e.g. a UUID",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let id = new_participant_id();
        assert_eq!(parse_name(&format!("participants/{id}"), "name").unwrap(), id);
        for bad in [
            "",
            "participants/",
            "participants/15038512363",
            "people/abc",
            &format!("participants/{}", id.to_uppercase()),
        ] {
            let err = parse_name(bad, "name").unwrap_err();
            assert!(!err.to_string().contains("15038512363"));
            let crate::error::Error::InvalidArgument(v) = err else { panic!("{bad}") };
            assert_eq!(v[0].field, "name");
            assert!(!v[0].description.contains("15038512363"));
        }
    }

    #[test]
    fn request_ids() {
        assert!(check_request_id("").is_ok());
        assert!(check_request_id("3f1c-aa:1.b_2").is_ok());
        assert!(check_request_id("has space").is_err());
        assert!(check_request_id(&"a".repeat(129)).is_err());
    }
}

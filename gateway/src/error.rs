//! The gateway's one error type and its one mapping to `tonic::Status`.
//!
//! Every error carries a stable `reason` (sent as `google.rpc.ErrorInfo`), and
//! input errors carry one field violation per bad field. Messages say what to
//! do next and never contain personal data: they are built from field names
//! and opaque ids only.

use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `google.rpc.ErrorInfo.domain` of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "hurtigspor.gateway";

/// One bad field in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dot-separated path in the request, e.g. `participant.national_id`.
    pub field: String,
    /// SCREAMING_SNAKE_CASE reason, e.g. `INVALID_CHECK_DIGITS`.
    pub reason: &'static str,
    /// What is wrong and how to fix it. Never contains the field's value.
    pub description: String,
}

/// Collects violations while a request is validated, so that the caller learns
/// of every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, reason: &'static str, description: impl Into<String>) {
        self.0.push(Violation { field: field.into(), reason, description: description.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was found, else an INVALID_ARGUMENT error.
    pub fn check(self) -> Result<(), Error> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing was changed.
    #[error("the request has {} invalid field(s)", .0.len())]
    InvalidArgument(Vec<Violation>),

    #[error("{resource} was not found")]
    NotFound { resource: String },

    /// The national id is already registered, as `existing`.
    #[error(
        "a participant with this national id is already registered as {existing}; use that participant instead of creating a new one"
    )]
    AlreadyExists { existing: String },

    /// A domain rule forbids the change in the record's current state.
    #[error("{message}")]
    FailedPrecondition { reason: &'static str, subject: String, message: String },

    /// The caller's etag is not the current one.
    #[error("the etag is stale: {resource} was changed since it was read; read it again and reapply your change")]
    StaleEtag { resource: String },

    /// The request id was used before with a different request body.
    #[error("request_id was already used for a different request; use a new request_id for a new request")]
    RequestIdReused,

    /// No valid credentials: no token, or one that does not verify.
    #[error("{message}")]
    Unauthenticated { reason: &'static str, message: String },

    /// Valid credentials that do not allow this call.
    #[error("{message}")]
    PermissionDenied { reason: &'static str, message: String },

    /// The caller is over a limit; retry after `retry_after`.
    #[error("{message}")]
    ResourceExhausted { reason: &'static str, message: String, retry_after: std::time::Duration },

    /// The store cannot take the request now; retrying later may succeed.
    #[error("storage is unavailable: {0}; retry with backoff")]
    Unavailable(String),

    /// A bug or corrupt data. Details go to the log, not to the caller.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation { field: field.into(), reason, description: description.into() }])
    }

    pub fn precondition(reason: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self::FailedPrecondition { reason, subject: subject.into(), message: message.into() }
    }

    pub fn not_found(resource: impl Into<String>) -> Self {
        Self::NotFound { resource: resource.into() }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) | Self::RequestIdReused => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::StaleEtag { .. } => Code::Aborted,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The stable `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::RequestIdReused => "REQUEST_ID_REUSED",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::AlreadyExists { .. } => "PARTICIPANT_ALREADY_EXISTS",
            Self::FailedPrecondition { reason, .. } => reason,
            Self::StaleEtag { .. } => "STALE_ETAG",
            Self::Unauthenticated { reason, .. }
            | Self::PermissionDenied { reason, .. }
            | Self::ResourceExhausted { reason, .. } => reason,
            Self::Unavailable(_) => "STORAGE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        let message = match &e {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; the gateway logged the details, retrying will not help until it is fixed".to_owned()
            }
            Error::Unavailable(detail) => {
                tracing::warn!(error = %detail, "storage unavailable");
                details.set_retry_info(Some(std::time::Duration::from_secs(1)));
                "storage is unavailable; retry with backoff".to_owned()
            }
            other => other.to_string(),
        };
        match &e {
            Error::InvalidArgument(violations) => {
                let fvs: Vec<FieldViolation> = violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                        reason: v.reason.to_owned(),
                        localized_message: None,
                    })
                    .collect();
                if let Some(first) = violations.first() {
                    metadata.insert("field".to_owned(), first.field.clone());
                }
                details.set_bad_request(fvs);
            }
            Error::RequestIdReused => {
                details.set_bad_request(vec![FieldViolation {
                    field: "request_id".to_owned(),
                    description: "was already used for a different request; use a new request_id".to_owned(),
                    reason: "REQUEST_ID_REUSED".to_owned(),
                    localized_message: None,
                }]);
            }
            Error::NotFound { resource } => {
                details.set_resource_info("hurtigspor.v1.Participant", resource.clone(), "", "not found");
                metadata.insert("resource".to_owned(), resource.clone());
            }
            Error::AlreadyExists { existing } => {
                details.set_resource_info(
                    "hurtigspor.v1.Participant",
                    existing.clone(),
                    "",
                    "already registered with this national id",
                );
                metadata.insert("existing_participant".to_owned(), existing.clone());
            }
            Error::FailedPrecondition { reason, subject, message } => {
                details.add_precondition_failure_violation(*reason, subject.clone(), message.clone());
            }
            Error::StaleEtag { resource } => {
                metadata.insert("resource".to_owned(), resource.clone());
            }
            Error::Unauthenticated { .. } | Error::PermissionDenied { .. } => {}
            Error::ResourceExhausted { retry_after, .. } => {
                details.set_retry_info(Some(*retry_after));
            }
            Error::Unavailable(_) | Error::Internal(_) => {}
        }
        details.set_error_info(e.reason(), ERROR_DOMAIN, metadata);
        if !matches!(e, Error::Internal(_) | Error::Unavailable(_)) {
            tracing::debug!(code = ?code, reason = e.reason(), "request refused");
        }
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_violation() {
        let mut v = Violations::new();
        v.add("participant.given_name", "REQUIRED", "is required");
        v.add("participant.kommunenummer", "UNKNOWN_KOMMUNE", "is unknown");
        let status: Status = v.check().unwrap_err().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        let fields: Vec<_> = bad.field_violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["participant.given_name", "participant.kommunenummer"]);
        assert_eq!(bad.field_violations[1].reason, "UNKNOWN_KOMMUNE");
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
    }

    #[test]
    fn every_variant_has_error_info_and_its_code() {
        let cases = [
            (Error::not_found("participants/x"), Code::NotFound),
            (Error::AlreadyExists { existing: "participants/y".into() }, Code::AlreadyExists),
            (Error::precondition("ILLEGAL_TRANSITION", "hurtigspor.status", "no"), Code::FailedPrecondition),
            (Error::StaleEtag { resource: "participants/x".into() }, Code::Aborted),
            (Error::RequestIdReused, Code::InvalidArgument),
            (Error::Unavailable("disk".into()), Code::Unavailable),
            (Error::Internal("bug".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let reason = e.reason();
            let status: Status = e.into();
            assert_eq!(status.code(), code);
            assert_eq!(status.get_details_error_info().unwrap().reason, reason);
        }
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let status: Status = Error::Internal("SELECT secret FROM table".into()).into();
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn already_exists_names_the_existing_participant() {
        let status: Status = Error::AlreadyExists { existing: "participants/abc".into() }.into();
        assert_eq!(status.get_details_resource_info().unwrap().resource_name, "participants/abc");
        assert_eq!(status.get_details_error_info().unwrap().metadata["existing_participant"], "participants/abc");
    }
}

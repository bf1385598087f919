//! How a gRPC error is told to the user.

use tonic_types::StatusExt;

/// A gRPC call's error as the user reads it; every call the client makes
/// goes through here.
pub(crate) trait Described<T> {
    fn described(self) -> anyhow::Result<T>;
}

impl<T> Described<T> for Result<T, tonic::Status> {
    fn described(self) -> anyhow::Result<T> {
        self.map_err(|s| describe(&s))
    }
}

/// A gRPC error as the user reads it: the code, the message, and every
/// field violation and failed precondition.
fn describe(status: &tonic::Status) -> anyhow::Error {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(pf) = status.get_details_precondition_failure() {
        for v in pf.violations {
            out.push_str(&format!("\n  {} ({})", v.subject, v.r#type));
        }
    }
    anyhow::anyhow!(out)
}

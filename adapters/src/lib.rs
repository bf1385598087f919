//! Adapters: one module per target system, each with its wire types, its
//! translation from the canonical `hurtigspor.v1` model (pure functions,
//! golden-tested) and its HTTP client. The gateway drives them through the
//! [`Target`] trait; retry, backoff and circuit breaking wrap a target
//! instead of being written into each.

pub mod arena;
pub mod clock;
pub mod nir;
pub mod nokut;
pub mod resilience;

use async_trait::async_trait;
use hurtigspor_proto::v1::Participant;
use std::time::Duration;

/// One delivery of a participant's state to a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The opaque participant id (never the national id).
    pub participant_id: String,
    /// The canonical version being delivered.
    pub version: i64,
    /// Sent to the target as `X-Correlation-ID`, to trace a delivery across
    /// systems.
    pub correlation_id: String,
}

/// What a reconcile did to the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The operations applied, e.g. `personforhold.create`; empty when the
    /// target already held the desired state.
    pub operations: Vec<String>,
    /// Identifiers the target assigned to our records, for the canonical
    /// record to keep (e.g. NOKUT's case number of a recognition case).
    pub references: Vec<Reference>,
}

/// A target's identifier for one of our records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// What kind of record, e.g. `recognition_case`.
    pub kind: &'static str,
    /// Our id of it (e.g. the recognition case's `id`).
    pub local_id: String,
    /// The target's id of it (e.g. NOKUT's case number).
    pub remote_id: String,
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target could not take it now (5xx, timeout, dropped connection,
    /// unreadable answer, a token storm): try again with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The target asked us to wait (429 with Retry-After).
    #[error("throttled: retry after {0:?}")]
    RetryAfter(Duration),
    /// The target refuses the data itself: retrying the same data will fail
    /// the same way. Needs a fix in the record or the target.
    #[error("rejected: {0}")]
    Permanent(String),
    /// Not tried: the target is known to be failing (its circuit breaker is
    /// open). Try again after `wait`; this was no attempt of the delivery.
    #[error("deferred: {reason}")]
    Deferred { wait: Duration, reason: String },
}

impl TargetError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }
}

/// A system the gateway keeps in step with the canonical record.
#[cfg_attr(any(test, feature = "testsuite"), mockall::automock)]
#[async_trait]
pub trait Target: Send + Sync {
    /// `"arena"`, `"nir"` or `"nokut"`.
    fn name(&self) -> &'static str;

    /// Reads what the target holds for this participant, and applies the
    /// operations that bring it to what the canonical record implies. Safe to
    /// repeat: a second call with the same record applies nothing.
    async fn reconcile(&self, participant: &Participant, delivery: &Delivery) -> Result<Applied, TargetError>;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_targets_config_never_shows_its_secret() {
        let arena = crate::arena::ArenaConfig {
            base_url: "http://arena".into(),
            client_id: "gateway".into(),
            client_secret: "s3cret-arena".into(),
            timeout: Duration::from_secs(1),
        };
        let nir = crate::nir::NirConfig {
            base_url: "http://nir".into(),
            username: "intro".into(),
            password: "s3cret-nir".into(),
            timeout: Duration::from_secs(1),
        };
        let nokut = crate::nokut::NokutConfig {
            base_url: "http://nokut".into(),
            api_key: "s3cret-nokut".into(),
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{arena:?} {nir:?} {nokut:#?}");
        assert!(shown.contains("http://arena") && shown.contains("intro"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

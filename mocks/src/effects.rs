//! The log of every effect a mock applied to its state, so a test can prove
//! that nothing was applied twice (or at all).

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Effect {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// What happened, e.g. `personforhold.created`.
    pub kind: String,
    /// The affected record, in the mock's own vocabulary.
    pub detail: serde_json::Value,
}

#[derive(Clone, Default)]
pub struct EffectLog {
    entries: Arc<Mutex<Vec<Effect>>>,
}

impl EffectLog {
    pub fn record(&self, at: DateTime<Utc>, kind: &str, detail: serde_json::Value) {
        let mut entries = self.entries.lock().expect("effects lock");
        let seq = entries.len() as u64 + 1;
        entries.push(Effect { seq, at, kind: kind.to_owned(), detail });
    }

    pub fn all(&self) -> Vec<Effect> {
        self.entries.lock().expect("effects lock").clone()
    }

    /// How many effects of `kind` were applied.
    pub fn count(&self, kind: &str) -> usize {
        self.entries.lock().expect("effects lock").iter().filter(|e| e.kind == kind).count()
    }

    pub fn clear(&self) {
        self.entries.lock().expect("effects lock").clear();
    }
}

//! Fault injection: the failures real systems have, on demand and
//! deterministic under a seed.
//!
//! Rules are added through `POST /admin/faults` (JSON, see [`FaultRule`]) or
//! in-process through [`Faults::add`]. A rule may target one route (a path
//! prefix) and one method, fire with a probability, and stop after a number
//! of injections. Admin routes are never faulted.

use crate::clock::VirtualClock;
use chrono::{DateTime, Duration, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// One kind of failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer only after this delay (adds up with other latency rules).
    Latency { millis: u64 },
    /// Answer with this status (500, 502, 503...) without applying anything.
    Error { status: u16 },
    /// 429 with `Retry-After`, without applying anything.
    TooManyRequests { retry_after_secs: u64 },
    /// 503 for every matching request during a window of virtual time that
    /// starts when the rule is added.
    Outage { seconds: i64 },
    /// Close the connection without answering and without applying.
    ResetConnection,
    /// Apply the request, then close the connection without answering: the
    /// caller never learns that its write took effect.
    ApplyThenDrop,
    /// Apply the request, then send a body that does not parse.
    MalformedBody,
    /// Apply the request, then send the body a few bytes at a time.
    SlowDrip { chunk_bytes: usize, interval_millis: u64 },
    /// 401 `invalid_token` however good the token is.
    InvalidTokenStorm,
}

/// A fault and where and how often it strikes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(flatten)]
    pub fault: Fault,
    /// Only requests whose path starts with this.
    #[serde(default)]
    pub route: Option<String>,
    /// Only requests with this method (GET, POST...).
    #[serde(default)]
    pub method: Option<String>,
    /// Chance that a matching request is hit, 0.0-1.0 (default 1.0).
    #[serde(default = "always")]
    pub probability: f64,
    /// Stop after this many injections (default: never).
    #[serde(default)]
    pub times: Option<u32>,
}

fn always() -> f64 {
    1.0
}

impl FaultRule {
    pub fn new(fault: Fault) -> Self {
        Self { fault, route: None, method: None, probability: 1.0, times: None }
    }

    pub fn on(mut self, route: &str) -> Self {
        self.route = Some(route.to_owned());
        self
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// A rule as installed, with its bookkeeping.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveRule {
    pub id: u64,
    #[serde(flatten)]
    pub rule: FaultRule,
    pub added_at: DateTime<Utc>,
    pub injected: u32,
}

impl ActiveRule {
    fn live(&self, now: DateTime<Utc>) -> bool {
        let exhausted = self.rule.times.is_some_and(|n| self.injected >= n);
        let window_over = match self.rule.fault {
            Fault::Outage { seconds } => now >= self.added_at + Duration::seconds(seconds),
            _ => false,
        };
        !exhausted && !window_over
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.rule.route.as_deref().is_none_or(|r| path.starts_with(r))
            && self.rule.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// What to do with one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub latency: std::time::Duration,
    /// The fault to inject, if any (other than latency).
    pub fault: Option<Fault>,
}

pub struct Faults {
    rules: Mutex<Vec<ActiveRule>>,
    rng: Mutex<StdRng>,
    next_id: Mutex<u64>,
    clock: VirtualClock,
}

impl Faults {
    pub fn new(seed: u64, clock: VirtualClock) -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            next_id: Mutex::new(1),
            clock,
        }
    }

    /// Installs a rule; returns its id.
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut next = self.next_id.lock().expect("faults lock");
        let id = *next;
        *next += 1;
        self.rules.lock().expect("faults lock").push(ActiveRule { id, rule, added_at: self.clock.now(), injected: 0 });
        id
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.lock().expect("faults lock");
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    pub fn clear(&self) {
        self.rules.lock().expect("faults lock").clear();
    }

    /// Restarts the random sequence, for reproducible runs.
    pub fn reseed(&self, seed: u64) {
        *self.rng.lock().expect("faults lock") = StdRng::seed_from_u64(seed);
    }

    pub fn list(&self) -> Vec<ActiveRule> {
        self.rules.lock().expect("faults lock").clone()
    }

    /// Decides the fate of a request. Latency rules add up; the first other
    /// rule that strikes decides the fault.
    pub fn decide(&self, method: &str, path: &str) -> Decision {
        let now = self.clock.now();
        let mut rules = self.rules.lock().expect("faults lock");
        let mut rng = self.rng.lock().expect("faults lock");
        let mut decision = Decision::default();
        for rule in rules.iter_mut() {
            if !rule.live(now) || !rule.matches(method, path) {
                continue;
            }
            let is_latency = matches!(rule.rule.fault, Fault::Latency { .. });
            if !is_latency && decision.fault.is_some() {
                continue;
            }
            let p = rule.rule.probability.clamp(0.0, 1.0);
            if p < 1.0 && rng.random::<f64>() >= p {
                continue;
            }
            rule.injected += 1;
            match &rule.rule.fault {
                Fault::Latency { millis } => decision.latency += std::time::Duration::from_millis(*millis),
                other => decision.fault = Some(other.clone()),
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        Faults::new(7, VirtualClock::new())
    }

    #[test]
    fn route_method_and_times() {
        let f = faults();
        f.add(FaultRule::new(Fault::Error { status: 503 }).on("/a").method("post").times(2));
        assert_eq!(f.decide("GET", "/a/x").fault, None, "other method");
        assert_eq!(f.decide("POST", "/b").fault, None, "other route");
        assert_eq!(f.decide("POST", "/a/x").fault, Some(Fault::Error { status: 503 }));
        assert_eq!(f.decide("POST", "/a").fault, Some(Fault::Error { status: 503 }));
        assert_eq!(f.decide("POST", "/a").fault, None, "used up");
        assert_eq!(f.list()[0].injected, 2);
    }

    #[test]
    fn latency_adds_up_and_the_first_fault_wins() {
        let f = faults();
        f.add(FaultRule::new(Fault::Latency { millis: 10 }));
        f.add(FaultRule::new(Fault::TooManyRequests { retry_after_secs: 3 }));
        f.add(FaultRule::new(Fault::Latency { millis: 5 }));
        f.add(FaultRule::new(Fault::Error { status: 500 }));
        let d = f.decide("GET", "/x");
        assert_eq!(d.latency, std::time::Duration::from_millis(15));
        assert_eq!(d.fault, Some(Fault::TooManyRequests { retry_after_secs: 3 }));
    }

    #[test]
    fn outage_window_follows_the_virtual_clock() {
        let clock = VirtualClock::new();
        let f = Faults::new(1, clock.clone());
        f.add(FaultRule::new(Fault::Outage { seconds: 60 }));
        assert!(f.decide("GET", "/").fault.is_some());
        clock.advance(Duration::seconds(61));
        assert_eq!(f.decide("GET", "/").fault, None);
    }

    #[test]
    fn probability_is_deterministic_under_a_seed() {
        let run = |seed| {
            let f = Faults::new(seed, VirtualClock::new());
            f.add(FaultRule::new(Fault::Error { status: 500 }).probability(0.3));
            (0..200).map(|_| f.decide("GET", "/").fault.is_some()).collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same sequence");
        assert_ne!(a, run(43));
        let hits = a.iter().filter(|h| **h).count();
        assert!((30..90).contains(&hits), "about 30% of 200: {hits}");
    }

    #[test]
    fn rules_parse_from_admin_json() {
        let rule: FaultRule =
            serde_json::from_str(r#"{"kind":"slow_drip","chunk_bytes":4,"interval_millis":20,"route":"/ords"}"#)
                .unwrap();
        assert_eq!(rule.fault, Fault::SlowDrip { chunk_bytes: 4, interval_millis: 20 });
        assert_eq!(rule.probability, 1.0);
        assert!(serde_json::from_str::<FaultRule>(r#"{"kind":"meteor"}"#).is_err());
    }
}

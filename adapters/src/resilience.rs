//! Resilience around any [`Target`]: a circuit breaker per target and
//! Prometheus metrics of every reconcile.
//!
//! The dispatcher already retries each delivery with backoff; what it cannot
//! see is that a whole system is down. Without a breaker, every due row of a
//! dead target still costs a request that waits for its timeout, holding a
//! batch slot and the target's connection pool. [`Resilient`] counts
//! consecutive failures per target and, once the target is plainly down,
//! answers at once without calling it until a cool-down has passed; then one
//! trial call decides whether it is back.
//!
//! # The breaker
//!
//! * **Closed** (normal): calls go through. `failure_threshold` transient
//!   failures in a row ([`TargetError::Transient`] or
//!   [`TargetError::RetryAfter`]) open it. A success resets the count.
//! * **Open**: every reconcile fails fast with
//!   `TargetError::Deferred { wait, reason: "circuit open: <target> failed N times in a row; next trial in …" }`
//!   (no attempt of the delivery: it is scheduled for the trial time)
//!   without calling the target, so the dispatcher backs the row off as for
//!   any transient failure. The cool-down is `cool_down` the first time (or
//!   the target's `Retry-After`, if longer).
//! * **Half-open**: the first call after the cool-down is the one trial;
//!   calls made while it runs still fail fast. Success closes the breaker
//!   (and resets the cool-down); failure re-opens it with the cool-down
//!   doubled, capped at `max_cool_down`. A trial that ends otherwise (a
//!   permanent rejection, or its future dropped at shutdown) decides nothing:
//!   the next call becomes the trial.
//!
//! **Permanent rejections neither count nor reset.** They are about the data,
//! not the system's health, so they never trip the breaker. Nor do they
//! reset the count of failures: several are raised by the translation before
//! any request is made (Arena without a NAV office, a recognition case
//! without a scheme), so they say nothing about whether the system answers,
//! and a run of poison records must not hide an outage of the system.
//!
//! A success that made no request (NOKUT with no case to open, Arena before
//! the participant is a candidate) cannot be told apart from one that did,
//! so it resets the count and may close a half-open breaker. The `Target`
//! trait does not say whether a reconcile reached the system.
//!
//! Only calls admitted while closed move a closed breaker, and only the trial
//! moves a half-open one: a slow call that started before the breaker opened
//! does not close it when it finally succeeds.
//!
//! Time is [`tokio::time::Instant`], so tests drive the cool-down with
//! `tokio::time::pause()` and `advance()`.
//!
//! # Metrics
//!
//! [`Metrics`] is one registry shared by every wrapped target; it renders the
//! OpenMetrics text format with [`Metrics::render`] (serve it with
//! [`Metrics::CONTENT_TYPE`]). Every series is labelled by the target's
//! static name, and the reconcile counter also by its outcome: the label
//! types are `&'static str` and a closed enum, so no participant id or
//! personal data can become a label.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hurtigspor_target_reconciles_total` | counter | `target`, `outcome`: `delivered_noop`, `delivered_changed`, `transient`, `throttled`, `rejected`, `short_circuited` |
//! | `hurtigspor_target_operations_applied_total` | counter | `target` |
//! | `hurtigspor_target_reconcile_duration_seconds` | histogram (1 ms to 33 s) | `target` |
//! | `hurtigspor_target_circuit_state` | gauge: 0 closed, 1 open, 2 half-open | `target` |
//!
//! The duration histogram observes the calls that reached the inner target;
//! short-circuited ones take no time and are only counted.

use crate::{Applied, Delivery, Target, TargetError};
use async_trait::async_trait;
use hurtigspor_proto::v1::Participant;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;

/// When the breaker opens and how long it stays open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Transient failures in a row that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open the first time.
    pub cool_down: Duration,
    /// Each failed trial doubles the cool-down, up to this.
    pub max_cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cool_down: Duration::from_secs(5), max_cool_down: Duration::from_secs(60) }
    }
}

/// What the breaker lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of `hurtigspor_target_circuit_state`.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// How one reconcile ended, as counted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded; the target already held the desired state.
    DeliveredNoop,
    /// Succeeded and applied at least one operation.
    DeliveredChanged,
    /// [`TargetError::Transient`] from the target.
    Transient,
    /// [`TargetError::RetryAfter`] from the target.
    Throttled,
    /// [`TargetError::Permanent`].
    Rejected,
    /// Failed fast by the open breaker; the target was not called.
    ShortCircuited,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Self::DeliveredNoop,
        Self::DeliveredChanged,
        Self::Transient,
        Self::Throttled,
        Self::Rejected,
        Self::ShortCircuited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeliveredNoop => "delivered_noop",
            Self::DeliveredChanged => "delivered_changed",
            Self::Transient => "transient",
            Self::Throttled => "throttled",
            Self::Rejected => "rejected",
            Self::ShortCircuited => "short_circuited",
        }
    }

    fn of(result: &Result<Applied, TargetError>) -> Self {
        match result {
            Ok(applied) if applied.operations.is_empty() => Self::DeliveredNoop,
            Ok(_) => Self::DeliveredChanged,
            Err(TargetError::Transient(_)) => Self::Transient,
            Err(TargetError::RetryAfter(_)) => Self::Throttled,
            Err(TargetError::Permanent(_)) => Self::Rejected,
            Err(TargetError::Deferred { .. }) => Self::ShortCircuited,
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels are static names only: never a participant id or personal data.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    target: &'static str,
    outcome: Outcome,
}

fn duration_histogram() -> Histogram {
    // 1 ms, 2 ms, ... 32.8 s: a loopback mock to a target at its timeout.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics of every wrapped target, in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    operations: Family<TargetLabels, Counter>,
    duration: Family<TargetLabels, Histogram, fn() -> Histogram>,
    circuit: Family<TargetLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hurtigspor_target");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let operations = Family::<TargetLabels, Counter>::default();
        let duration = Family::<TargetLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let circuit = Family::<TargetLabels, Gauge>::default();
        registry.register("reconciles", "Reconcile calls to a target, by outcome", reconciles.clone());
        registry.register("operations_applied", "Operations applied to a target by reconciles", operations.clone());
        registry.register_with_unit(
            "reconcile_duration",
            "Time of the reconcile calls that reached the target",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "circuit_state",
            "The target's circuit breaker: 0 closed, 1 open, 2 half-open",
            circuit.clone(),
        );
        Self { registry, reconciles, operations, duration, circuit }
    }

    /// Every series in the OpenMetrics text format (`# EOF` at the end).
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    /// Creates a target's series at zero, so that they exist before the
    /// first call (rates and alerts need a starting point).
    fn register_target(&self, target: &'static str) {
        for outcome in Outcome::ALL {
            let _ = self.reconciles.get_or_create(&ReconcileLabels { target, outcome });
        }
        let _ = self.operations.get_or_create(&TargetLabels { target });
        let _ = self.duration.get_or_create(&TargetLabels { target });
        self.circuit.get_or_create(&TargetLabels { target }).set(BreakerState::Closed.gauge());
    }

    fn count(&self, target: &'static str, outcome: Outcome) {
        self.reconciles.get_or_create(&ReconcileLabels { target, outcome }).inc();
    }

    fn applied(&self, target: &'static str, operations: usize) {
        if operations > 0 {
            self.operations.get_or_create(&TargetLabels { target }).inc_by(operations as u64);
        }
    }

    fn observe(&self, target: &'static str, took: Duration) {
        self.duration.get_or_create(&TargetLabels { target }).observe(took.as_secs_f64());
    }

    fn breaker(&self, target: &'static str, state: BreakerState) {
        self.circuit.get_or_create(&TargetLabels { target }).set(state.gauge());
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed { failures: u32 },
    Open { failures: u32, until: Instant, cool_down: Duration },
    HalfOpen { failures: u32, cool_down: Duration, trial_running: bool },
}

impl State {
    fn kind(&self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// How a call was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    /// While closed.
    Normal,
    /// The one trial of a half-open breaker.
    Trial,
}

/// What a call's result says about the target's health.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Healthy,
    Failing {
        retry_after: Option<Duration>,
    },
    /// Says nothing: a permanent rejection, or a call that did not finish.
    Neutral,
}

/// A target behind a circuit breaker, with metrics. See the module docs.
pub struct Resilient {
    inner: Arc<dyn Target>,
    name: &'static str,
    config: BreakerConfig,
    state: Mutex<State>,
    /// The last failure that counted against the target, so that a call
    /// failing fast still says what is wrong with it.
    last_failure: Mutex<String>,
    metrics: Arc<Metrics>,
}

impl Resilient {
    pub fn new(inner: Arc<dyn Target>, config: BreakerConfig, metrics: Arc<Metrics>) -> Self {
        let name = inner.name();
        metrics.register_target(name);
        Self {
            inner,
            name,
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
            last_failure: Mutex::new(String::new()),
            metrics,
        }
    }

    /// Wraps `inner` and hands it back as a target.
    pub fn wrap(inner: Arc<dyn Target>, config: BreakerConfig, metrics: Arc<Metrics>) -> Arc<dyn Target> {
        Arc::new(Self::new(inner, config, metrics))
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.lock().kind()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, consistent after every assignment.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets a call through, or says why not.
    fn admit(&self) -> Result<Admission, (String, Duration)> {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => Ok(Admission::Normal),
            State::Open { failures, until, cool_down } if now >= until => {
                *state = State::HalfOpen { failures, cool_down, trial_running: true };
                self.metrics.breaker(self.name, BreakerState::HalfOpen);
                tracing::info!(target = self.name, failures, "circuit half-open: one trial call goes through");
                Ok(Admission::Trial)
            }
            State::Open { failures, until, .. } => {
                // Whole milliseconds read better than nanoseconds.
                let wait = Duration::from_millis((until - now).as_millis().try_into().unwrap_or(u64::MAX));
                Err((
                    format!("circuit open: {} failed {failures} times in a row; next trial in {wait:?}", self.name),
                    wait,
                ))
            }
            State::HalfOpen { failures, cool_down, trial_running: false } => {
                *state = State::HalfOpen { failures, cool_down, trial_running: true };
                Ok(Admission::Trial)
            }
            State::HalfOpen { failures, trial_running: true, cool_down } => Err((
                format!(
                    "circuit open: {} failed {failures} times in a row; next trial in 0ms, after the trial call under way",
                    self.name
                ),
                // Look again soon: the trial decides.
                cool_down.min(Duration::from_millis(100)),
            )),
        }
    }

    /// Moves the breaker on a call's result.
    fn settle(&self, admission: Admission, verdict: Verdict) {
        let mut state = self.lock();
        let before = state.kind();
        let now = Instant::now();
        let base = self.config.cool_down.min(self.config.max_cool_down);
        let open_for = |cool_down: Duration, retry_after: Option<Duration>| {
            cool_down.max(retry_after.unwrap_or_default()).min(self.config.max_cool_down)
        };
        match (admission, *state, verdict) {
            (Admission::Normal, State::Closed { .. }, Verdict::Healthy) => *state = State::Closed { failures: 0 },
            (Admission::Normal, State::Closed { failures }, Verdict::Failing { retry_after }) => {
                let failures = failures.saturating_add(1);
                *state = if failures >= self.config.failure_threshold.max(1) {
                    State::Open { failures, until: now + open_for(base, retry_after), cool_down: base }
                } else {
                    State::Closed { failures }
                };
            }
            (Admission::Trial, State::HalfOpen { .. }, Verdict::Healthy) => *state = State::Closed { failures: 0 },
            (Admission::Trial, State::HalfOpen { failures, cool_down, .. }, Verdict::Failing { retry_after }) => {
                let cool_down = cool_down.saturating_mul(2).min(self.config.max_cool_down);
                *state = State::Open {
                    failures: failures.saturating_add(1),
                    until: now + open_for(cool_down, retry_after),
                    cool_down,
                };
            }
            (Admission::Trial, State::HalfOpen { failures, cool_down, .. }, Verdict::Neutral) => {
                *state = State::HalfOpen { failures, cool_down, trial_running: false };
            }
            // A permanent rejection while closed, or a call admitted in an
            // earlier state: nothing to learn.
            _ => {}
        }
        let after = state.kind();
        if after != before {
            self.metrics.breaker(self.name, after);
            match *state {
                State::Open { failures, until, .. } => tracing::warn!(
                    target = self.name,
                    failures,
                    cool_down_ms = (until - now).as_millis() as u64,
                    "circuit open: calls fail fast until the cool-down ends"
                ),
                State::Closed { .. } => tracing::info!(target = self.name, "circuit closed: the target answers again"),
                State::HalfOpen { .. } => {}
            }
        }
    }
}

/// Settles a call admitted by the breaker, also when its future is dropped
/// mid-call (shutdown aborts deliveries): a trial must not stay "running"
/// forever.
struct Admitted<'a> {
    breaker: &'a Resilient,
    admission: Admission,
    settled: bool,
}

impl Admitted<'_> {
    fn settle(mut self, verdict: Verdict) {
        self.settled = true;
        self.breaker.settle(self.admission, verdict);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.settle(self.admission, Verdict::Neutral);
        }
    }
}

#[async_trait]
impl Target for Resilient {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn reconcile(&self, participant: &Participant, delivery: &Delivery) -> Result<Applied, TargetError> {
        let admission = match self.admit() {
            Ok(admission) => admission,
            Err((reason, wait)) => {
                self.metrics.count(self.name, Outcome::ShortCircuited);
                let last = self.last_failure.lock().map(|l| l.clone()).unwrap_or_default();
                let reason = if last.is_empty() { reason } else { format!("{reason}; last failure: {last}") };
                return Err(TargetError::Deferred { wait, reason });
            }
        };
        let admitted = Admitted { breaker: self, admission, settled: false };
        let start = Instant::now();
        let result = self.inner.reconcile(participant, delivery).await;
        self.metrics.observe(self.name, start.elapsed());
        let outcome = Outcome::of(&result);
        self.metrics.count(self.name, outcome);
        if let Ok(applied) = &result {
            self.metrics.applied(self.name, applied.operations.len());
        }
        if let Err(e @ (TargetError::Transient(_) | TargetError::RetryAfter(_))) = &result
            && let Ok(mut last) = self.last_failure.lock()
        {
            *last = e.to_string();
        }
        admitted.settle(match &result {
            Ok(_) => Verdict::Healthy,
            Err(TargetError::Transient(_)) => Verdict::Failing { retry_after: None },
            Err(TargetError::RetryAfter(wait)) => Verdict::Failing { retry_after: Some(*wait) },
            Err(TargetError::Permanent(_) | TargetError::Deferred { .. }) => Verdict::Neutral,
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockTarget;
    use mockall::Sequence;
    use tokio::sync::Semaphore;

    const PARTICIPANT_ID: &str = "0123456789abcdef0123456789abcdef";
    const NATIONAL_ID: &str = "15838510075";
    /// Deliveries of this version wait at the [`Gated`] target's gate.
    const SLOW: i64 = 99;

    fn participant() -> Participant {
        Participant { national_id: NATIONAL_ID.into(), given_name: "Yxmirra".into(), ..Default::default() }
    }

    fn delivery(version: i64) -> Delivery {
        Delivery {
            participant_id: PARTICIPANT_ID.into(),
            version,
            correlation_id: format!("{PARTICIPANT_ID}-nir-v{version}"),
        }
    }

    fn transient() -> Result<Applied, TargetError> {
        Err(TargetError::Transient("NIR answered 503 Service Unavailable".into()))
    }

    fn rejected() -> Result<Applied, TargetError> {
        Err(TargetError::Permanent("NIR answered 400: NIR-E106".into()))
    }

    fn changed(ops: &[&str]) -> Result<Applied, TargetError> {
        Ok(Applied { operations: ops.iter().map(|o| o.to_string()).collect(), references: Vec::new() })
    }

    fn mock() -> MockTarget {
        let mut mock = MockTarget::new();
        mock.expect_name().return_const("nir");
        mock
    }

    /// Each result once, in this order; any further call panics.
    fn mock_answering(results: Vec<Result<Applied, TargetError>>) -> MockTarget {
        let mut inner = mock();
        let mut seq = Sequence::new();
        for result in results {
            inner.expect_reconcile().times(1).in_sequence(&mut seq).return_once(move |_, _| result);
        }
        inner
    }

    fn config(threshold: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(60),
        }
    }

    fn wrap(inner: impl Target + 'static, config: BreakerConfig) -> (Arc<Resilient>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Arc::new(Resilient::new(Arc::new(inner), config, metrics.clone())), metrics)
    }

    async fn call(target: &Resilient) -> Result<Applied, TargetError> {
        target.reconcile(&participant(), &delivery(3)).await
    }

    /// A call that waits at the gate (if the target is [`Gated`]), spawned.
    fn spawn_slow(target: &Arc<Resilient>) -> tokio::task::JoinHandle<Result<Applied, TargetError>> {
        let target = target.clone();
        tokio::spawn(async move { target.reconcile(&participant(), &delivery(SLOW)).await })
    }

    fn short_circuited(result: Result<Applied, TargetError>) -> String {
        match result {
            Err(TargetError::Deferred { reason, .. }) if reason.starts_with("circuit open: ") => reason,
            other => panic!("expected a short circuit, got {other:?}"),
        }
    }

    fn from_target(result: Result<Applied, TargetError>) {
        if let Err(TargetError::Transient(reason)) = &result {
            assert!(!reason.starts_with("circuit"), "short-circuited: {reason}");
        }
    }

    /// A target whose [`SLOW`] deliveries wait for a permit before calling
    /// `inner`, so that a test can hold a call in flight.
    struct Gated {
        inner: MockTarget,
        gate: Arc<Semaphore>,
    }

    fn gated(inner: MockTarget) -> (Gated, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        (Gated { inner, gate: gate.clone() }, gate)
    }

    #[async_trait]
    impl Target for Gated {
        fn name(&self) -> &'static str {
            self.inner.name()
        }

        async fn reconcile(&self, participant: &Participant, delivery: &Delivery) -> Result<Applied, TargetError> {
            if delivery.version == SLOW {
                self.gate.acquire().await.expect("gate open").forget();
            }
            self.inner.reconcile(participant, delivery).await
        }
    }

    /// Lets spawned tasks run until `done` holds.
    async fn run_until(done: impl Fn() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the spawned call never got there");
    }

    /// `n` calls that the inner target fails; the breaker is open after them.
    async fn open(target: &Resilient, n: u32) {
        for _ in 0..n {
            assert_eq!(target.breaker_state(), BreakerState::Closed);
            let result = call(target).await;
            assert!(result.is_err());
            from_target(result);
        }
        assert_eq!(target.breaker_state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_transient_failures_and_then_does_not_call_the_target() {
        // Throttling counts as a failure too. Exactly five calls: a sixth panics.
        let throttled = || Err(TargetError::RetryAfter(Duration::from_secs(1)));
        let inner = mock_answering(vec![transient(), transient(), transient(), throttled(), throttled()]);
        let (target, _) = wrap(inner, BreakerConfig::default());
        open(&target, 5).await;
        for _ in 0..10 {
            let reason = short_circuited(call(&target).await);
            assert_eq!(
                reason,
                "circuit open: nir failed 5 times in a row; next trial in 5s; last failure: throttled: retry after 1s",
                "a call failing fast still tells what is wrong with the target"
            );
        }
        tokio::time::advance(Duration::from_millis(4_200)).await;
        let reason = short_circuited(call(&target).await);
        assert!(reason.contains("next trial in 800ms;"), "{reason}");
        assert_eq!(target.breaker_state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_retry_after_keeps_it_open_longer() {
        let inner = mock_answering(vec![transient(), Err(TargetError::RetryAfter(Duration::from_secs(30)))]);
        let (target, _) = wrap(inner, config(2));
        open(&target, 2).await;
        let reason = short_circuited(call(&target).await);
        assert!(reason.contains("next trial in 30s;"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_trial_through_and_its_success_closes() {
        // After closing, the count starts again: two failures do not open it.
        let inner = mock_answering(vec![
            transient(),
            transient(),
            transient(),
            changed(&["hurtigspor.set"]),
            transient(),
            transient(),
        ]);
        let (inner, gate) = gated(inner);
        let (target, _) = wrap(inner, config(3));
        open(&target, 3).await;

        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = spawn_slow(&target);
        run_until(|| target.breaker_state() == BreakerState::HalfOpen).await;
        // The trial waits at the gate; every other call fails fast meanwhile.
        for _ in 0..3 {
            let reason = short_circuited(call(&target).await);
            assert!(reason.contains("after the trial call under way"), "{reason}");
        }
        assert_eq!(target.breaker_state(), BreakerState::HalfOpen);
        gate.add_permits(1);
        assert_eq!(trial.await.unwrap(), changed(&["hurtigspor.set"]));
        assert_eq!(target.breaker_state(), BreakerState::Closed);

        for _ in 0..2 {
            from_target(call(&target).await);
        }
        assert_eq!(target.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_with_a_longer_cool_down_up_to_the_cap() {
        let mut inner = mock();
        inner.expect_reconcile().times(2 + 5).returning(|_, _| transient());
        let config = BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(30),
        };
        let (target, _) = wrap(inner, config);
        open(&target, 2).await;
        // Cool-downs: 5 s, then each failed trial doubles it, up to 30 s.
        for (n, cool_down) in [5u64, 10, 20, 30, 30].into_iter().enumerate() {
            tokio::time::advance(Duration::from_secs(cool_down) - Duration::from_millis(1)).await;
            short_circuited(call(&target).await);
            tokio::time::advance(Duration::from_millis(1)).await;
            from_target(call(&target).await);
            assert_eq!(target.breaker_state(), BreakerState::Open);
            let reason = short_circuited(call(&target).await);
            let next = (cool_down * 2).min(30);
            assert_eq!(
                reason,
                format!(
                    "circuit open: nir failed {} times in a row; next trial in {next}s; last failure: transient: NIR answered 503 Service Unavailable",
                    n + 3
                )
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_trial_lets_the_next_call_try() {
        let inner = mock_answering(vec![transient(), transient(), changed(&[])]);
        let (inner, _gate) = gated(inner);
        let (target, _) = wrap(inner, config(2));
        open(&target, 2).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = spawn_slow(&target);
        run_until(|| target.breaker_state() == BreakerState::HalfOpen).await;
        short_circuited(call(&target).await);
        // Shutdown aborts the delivery mid-call.
        trial.abort();
        assert!(trial.await.unwrap_err().is_cancelled());
        assert_eq!(target.breaker_state(), BreakerState::HalfOpen);
        assert_eq!(call(&target).await, changed(&[]));
        assert_eq!(target.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_rejections_neither_trip_the_breaker_nor_hide_an_outage() {
        let mut results: Vec<_> = (0..20).map(|_| rejected()).collect();
        // Four failures, a rejection, one failure: five in a row all the same.
        results.extend([transient(), transient(), transient(), transient(), rejected(), transient()]);
        let (target, _) = wrap(mock_answering(results), BreakerConfig::default());
        for _ in 0..20 {
            assert!(matches!(call(&target).await, Err(TargetError::Permanent(_))));
        }
        assert_eq!(target.breaker_state(), BreakerState::Closed);
        for _ in 0..6 {
            from_target(call(&target).await);
        }
        assert_eq!(target.breaker_state(), BreakerState::Open);
        let reason = short_circuited(call(&target).await);
        assert!(reason.contains("failed 5 times in a row"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_trial_decides_nothing() {
        let (target, _) = wrap(mock_answering(vec![transient(), transient(), rejected(), changed(&[])]), config(2));
        open(&target, 2).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(call(&target).await, Err(TargetError::Permanent(_))));
        assert_eq!(target.breaker_state(), BreakerState::HalfOpen);
        assert_eq!(call(&target).await, changed(&[]));
        assert_eq!(target.breaker_state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_that_started_before_the_breaker_opened_does_not_close_it() {
        let mut inner = mock();
        inner.expect_reconcile().times(3).returning(|_, d| if d.version == SLOW { changed(&[]) } else { transient() });
        let (inner, gate) = gated(inner);
        let (target, _) = wrap(inner, config(2));
        let slow = spawn_slow(&target);
        tokio::task::yield_now().await;
        // Admitted while closed, the slow call waits; meanwhile two fail.
        open(&target, 2).await;
        gate.add_permits(1);
        assert_eq!(slow.await.unwrap(), changed(&[]));
        assert_eq!(target.breaker_state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_count_every_outcome_by_target_without_personal_data() {
        let inner = mock_answering(vec![
            changed(&[]),
            changed(&["deltakelse.register", "hurtigspor.set"]),
            changed(&["tiltak.set"]),
            rejected(),
            transient(),
            Err(TargetError::RetryAfter(Duration::from_secs(2))),
        ]);
        let (target, metrics) = wrap(inner, config(2));
        let mut other = MockTarget::new();
        other.expect_name().return_const("nokut");
        let _nokut = Resilient::new(Arc::new(other), BreakerConfig::default(), metrics.clone());

        for _ in 0..6 {
            let _ = call(&target).await;
        }
        short_circuited(call(&target).await);
        short_circuited(call(&target).await);

        let text = metrics.render();
        for line in [
            r#"hurtigspor_target_reconciles_total{target="nir",outcome="delivered_noop"} 1"#,
            r#"hurtigspor_target_reconciles_total{target="nir",outcome="delivered_changed"} 2"#,
            r#"hurtigspor_target_reconciles_total{target="nir",outcome="rejected"} 1"#,
            r#"hurtigspor_target_reconciles_total{target="nir",outcome="transient"} 1"#,
            r#"hurtigspor_target_reconciles_total{target="nir",outcome="throttled"} 1"#,
            r#"hurtigspor_target_reconciles_total{target="nir",outcome="short_circuited"} 2"#,
            r#"hurtigspor_target_operations_applied_total{target="nir"} 3"#,
            // Short circuits are not timed: six calls reached the target.
            r#"hurtigspor_target_reconcile_duration_seconds_count{target="nir"} 6"#,
            r#"hurtigspor_target_reconcile_duration_seconds_bucket{le="0.001",target="nir"} 6"#,
            r#"hurtigspor_target_circuit_state{target="nir"} 1"#,
            // The other target's series exist from the start, at zero.
            r#"hurtigspor_target_reconciles_total{target="nokut",outcome="transient"} 0"#,
            r#"hurtigspor_target_operations_applied_total{target="nokut"} 0"#,
            r#"hurtigspor_target_circuit_state{target="nokut"} 0"#,
            "# TYPE hurtigspor_target_reconciles counter",
            "# TYPE hurtigspor_target_reconcile_duration_seconds histogram",
            "# TYPE hurtigspor_target_circuit_state gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        for personal in [PARTICIPANT_ID, NATIONAL_ID, "Yxmirra", "NIR-E106"] {
            assert!(!text.contains(personal), "{personal} in the metrics");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_state_gauge_follows_the_breaker() {
        let (inner, gate) = gated(mock_answering(vec![transient(), changed(&[])]));
        let (target, metrics) = wrap(inner, config(1));
        let gauge = |value: i64| {
            let line = format!(r#"hurtigspor_target_circuit_state{{target="nir"}} {value}"#);
            metrics.render().lines().any(|l| l == line)
        };
        assert!(gauge(0));
        open(&target, 1).await;
        assert!(gauge(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(gauge(1), "open until a call comes");
        let trial = spawn_slow(&target);
        run_until(|| target.breaker_state() == BreakerState::HalfOpen).await;
        assert!(gauge(2));
        gate.add_permits(1);
        trial.await.unwrap().unwrap();
        assert!(gauge(0));
    }
}

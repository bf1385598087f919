//! Outbound sync: dispatchers claim due (target, participant) rows, read the
//! *current* canonical record, and let the target's adapter reconcile it.
//! Bursts coalesce (a row is claimed for the latest version), order per
//! person holds (each reconcile sends the latest state), a transient failure
//! backs off with jitter, a permanent one stays failed with the target's
//! reason until replayed, and one participant's trouble holds up no other.

use crate::{
    clock::Clock,
    config::SyncSettings,
    error::Error,
    store::{ChangeKind, Mutation, Origin, Participants, SyncOutcome, SyncQueue, SyncTask},
};
use hurtigspor_adapters::{Applied, Delivery, Target, TargetError};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::{Notify, watch};

/// How often and how long to try.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_delay: Duration,
    /// Transient failures in a row before a delivery is marked failed.
    pub max_attempts: i64,
    /// What "now" is when a retry is scheduled.
    pub clock: Clock,
}

impl RetryPolicy {
    pub fn from_settings(s: &SyncSettings, clock: Clock) -> Self {
        Self {
            base: Duration::from_millis(s.retry_base_ms),
            max_delay: Duration::from_millis(s.retry_max_delay_ms),
            max_attempts: s.max_attempts,
            clock,
        }
    }

    /// The instant `wait` from now.
    pub fn after(&self, wait: Duration) -> chrono::DateTime<chrono::Utc> {
        self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default()
    }
}

impl RetryPolicy {
    /// Capped exponential backoff with jitter (50-150 %).
    pub fn delay(&self, attempts: i64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempts.clamp(0, 20) as u32).min(self.max_delay);
        exp.mul_f64(0.5 + rand::random::<f64>())
    }
}

pub struct Dispatcher {
    queue: Arc<dyn SyncQueue>,
    /// Reads the record to deliver; keeps what a target assigned.
    participants: Arc<dyn Participants>,
    targets: HashMap<String, Arc<dyn Target>>,
    wake: Arc<Notify>,
    policy: RetryPolicy,
    /// Rows claimed at a time; they are delivered concurrently.
    batch: usize,
    lease: Duration,
}

/// The version an etag stands for.
fn version_of(etag: &str) -> Option<i64> {
    etag.trim_start_matches("W/").trim_matches('"').parse().ok()
}

impl Dispatcher {
    pub fn new(
        queue: Arc<dyn SyncQueue>,
        participants: Arc<dyn Participants>,
        targets: Vec<Arc<dyn Target>>,
        wake: Arc<Notify>,
        settings: &SyncSettings,
        clock: Clock,
    ) -> Self {
        let targets = targets.into_iter().map(|t| (t.name().to_owned(), t)).collect();
        Self {
            queue,
            participants,
            targets,
            wake,
            policy: RetryPolicy::from_settings(settings, clock),
            batch: settings.batch,
            lease: Duration::from_secs(settings.lease_secs),
        }
    }

    /// Delivers until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let tasks = match self.queue.claim_sync(self.batch, self.lease).await {
                Ok(tasks) => tasks,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim sync work; retrying");
                    Vec::new()
                }
            };
            if tasks.is_empty() {
                // New work wakes us; backoffs that come due are found by the poll.
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            let mut running = tokio::task::JoinSet::new();
            for task in tasks {
                let me = Arc::clone(&self);
                running.spawn(async move { me.deliver(task).await });
            }
            // Shutdown does not wait for slow targets: an aborted delivery's
            // lease runs out and the next reconcile reads before it writes.
            loop {
                tokio::select! {
                    next = running.join_next() => if next.is_none() { break },
                    _ = stop.changed() => {
                        running.abort_all();
                        return;
                    }
                }
            }
        }
    }

    async fn deliver(&self, task: SyncTask) {
        // A slow target keeps the lease: it is renewed while the attempt
        // runs, so no other instance takes the row over meanwhile.
        let renew_every = self.lease / 3;
        let mut attempt = Box::pin(self.attempt(&task));
        let outcome = loop {
            tokio::select! {
                outcome = &mut attempt => break outcome,
                _ = tokio::time::sleep(renew_every) => {
                    match self.queue.renew_sync(&task, self.lease).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(participant = %task.participant_id, target = %task.target, "a delivery's lease was taken over; its outcome will not be recorded over the new holder's"),
                        Err(e) => tracing::warn!(error = %e, "cannot renew a delivery's lease"),
                    }
                }
            }
        };
        drop(attempt);
        let failed = matches!(outcome, SyncOutcome::Failed { .. });
        if failed {
            tracing::warn!(participant = %task.participant_id, target = %task.target, "delivery failed; replay it with RetryDeliveries once the cause is fixed");
        }
        if let Err(e) = self.queue.finish_sync(task, outcome).await {
            tracing::warn!(error = %e, "cannot record a delivery's outcome; it will be tried again");
        }
    }

    async fn attempt(&self, task: &SyncTask) -> SyncOutcome {
        let Some(target) = self.targets.get(&task.target) else {
            return SyncOutcome::Failed { error: format!("no target named {} is configured", task.target) };
        };
        let participant = match self.participants.get(&task.participant_id).await {
            Ok(Some(p)) => p,
            Ok(None) => return SyncOutcome::Failed { error: "the participant no longer exists".into() },
            Err(e) => return self.retry(task, e.to_string()),
        };
        let Some(version) = version_of(&participant.etag) else {
            return SyncOutcome::Failed { error: "the stored record has no version".into() };
        };
        let delivery = Delivery {
            participant_id: task.participant_id.clone(),
            version,
            correlation_id: format!("{}-{}-v{version}", task.participant_id, task.target),
        };
        match target.reconcile(&participant, &delivery).await {
            Ok(applied) => {
                if !applied.operations.is_empty() {
                    tracing::info!(participant = %task.participant_id, target = %task.target, version, operations = ?applied.operations, "delivered");
                }
                if let Err(e) = self.keep_references(&task.participant_id, &applied).await {
                    return self.retry(task, format!("cannot store the target's references: {e}"));
                }
                SyncOutcome::Delivered { version }
            }
            Err(TargetError::Permanent(reason)) => SyncOutcome::Failed { error: reason },
            Err(TargetError::RetryAfter(wait)) => {
                let wait = wait.min(self.policy.max_delay);
                SyncOutcome::Retry {
                    error: format!("{} asked us to wait {wait:?}", task.target),
                    at: self.policy.after(wait),
                }
            }
            Err(TargetError::Transient(reason)) => self.retry(task, reason),
            Err(TargetError::Deferred { wait, reason }) => {
                SyncOutcome::Deferred { error: reason, at: self.policy.after(wait.min(self.policy.max_delay)) }
            }
        }
    }

    fn retry(&self, task: &SyncTask, error: String) -> SyncOutcome {
        if task.attempts + 1 >= self.policy.max_attempts {
            return SyncOutcome::Failed { error: format!("gave up after {} attempts: {error}", task.attempts + 1) };
        }
        let delay = self.policy.delay(task.attempts);
        SyncOutcome::Retry { error, at: self.policy.after(delay) }
    }

    /// Stores identifiers a target assigned (NOKUT's case numbers) on the
    /// canonical record, as a change whose origin is that target.
    async fn keep_references(&self, participant_id: &str, applied: &Applied) -> Result<(), Error> {
        let numbers: Vec<(String, String)> = applied
            .references
            .iter()
            .filter(|r| r.kind == "recognition_case")
            .map(|r| (r.local_id.clone(), r.remote_id.clone()))
            .collect();
        if numbers.is_empty() {
            return Ok(());
        }
        self.participants
            .mutate(Mutation {
                id: participant_id.to_owned(),
                expected_etag: None,
                idempotency: None,
                kind: ChangeKind("recognition.numbered"),
                origin: Origin::Nokut,
                actor: "nokut".to_owned(),
                kommuner: None,
                audit: Some(crate::audit::AuditEntry {
                    organisation: "nokut".into(),
                    method: "reference/nokut".into(),
                    purpose: Some("sync".into()),
                    ..Default::default()
                }),
                apply: Box::new(move |p| {
                    for (case_id, number) in numbers {
                        if let Some(case) = p.recognition_cases.iter_mut().find(|c| c.id == case_id) {
                            case.case_number = number;
                            if case.status == hurtigspor_proto::v1::RecognitionStatus::Submitted as i32 {
                                case.status = hurtigspor_proto::v1::RecognitionStatus::Received as i32;
                            }
                        }
                    }
                    Ok(())
                }),
            })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts: 5,
            clock: Clock::system(),
        };
        for attempts in 0..10 {
            let d = p.delay(attempts);
            let nominal = Duration::from_millis(100 * (1 << attempts)).min(Duration::from_secs(2));
            assert!(d >= nominal.mul_f64(0.5) && d <= nominal.mul_f64(1.5), "{attempts}: {d:?}");
        }
    }

    #[test]
    fn versions_from_etags() {
        assert_eq!(version_of("W/\"7\""), Some(7));
        assert_eq!(version_of("garbage"), None);
    }
}

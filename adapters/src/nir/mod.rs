//! The NIR adapter: XML over HTTP with HTTP Basic credentials. NIR is
//! idempotent by natural key, but the adapter still reads first and writes
//! only the parts that differ, so a converged record costs one read.

pub mod translate;
pub mod wire;

use crate::{Applied, Delivery, Target, TargetError};
use async_trait::async_trait;
use hurtigspor_proto::v1::Participant;
use reqwest::{Method, StatusCode};
use std::time::Duration;
use translate::Operation;
use wire::{Deltakelse, Deltakelser, Feil, NAMESPACE, Sok, from_xml, to_xml};

const BASE: &str = "/nir/ws4/v1";
const MAX_ROUNDS: usize = 3;

/// `Debug` leaves out the password: a config is logged, a secret never.
#[derive(Clone)]
pub struct NirConfig {
    /// e.g. `http://127.0.0.1:8082`
    pub base_url: String,
    /// A user with the role `kommuneintrobruker`.
    pub username: String,
    pub password: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for NirConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NirConfig")
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub struct NirTarget {
    http: reqwest::Client,
    config: NirConfig,
}

impl NirTarget {
    pub fn new(config: NirConfig) -> Self {
        let http = reqwest::Client::builder().timeout(config.timeout).build().expect("HTTP client builds");
        Self { http, config }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        delivery: &Delivery,
    ) -> Result<String, TargetError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{BASE}{path}", self.config.base_url))
            .basic_auth(&self.config.username, Some(&self.config.password))
            .header("X-Correlation-ID", &delivery.correlation_id);
        if let Some(body) = body {
            request = request.header("content-type", "application/xml; charset=utf-8").body(body);
        }
        let response = request.send().await.map_err(|e| TargetError::Transient(format!("{method} {path}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| TargetError::Transient(format!("{method} {path}: {e}")))?;
        if status.is_success() {
            return Ok(text);
        }
        Err(classify(status, &text))
    }

    /// NIR's registration for this person and period, if it has one.
    async fn read(&self, desired: &Deltakelse, delivery: &Delivery) -> Result<Option<Deltakelse>, TargetError> {
        let query = to_xml(&Sok { xmlns: NAMESPACE.to_owned(), fodselsnummer: desired.person.fodselsnummer.clone() });
        let text = self.call(Method::POST, "/deltakelser/sok", Some(query), delivery).await?;
        let found: Deltakelser =
            from_xml(&text).map_err(|e| TargetError::Transient(format!("unreadable answer from NIR: {e}")))?;
        Ok(found.deltakelse.into_iter().find(|d| d.periode.startdato == desired.periode.startdato))
    }

    async fn apply(&self, op: &Operation, id: Option<u64>, delivery: &Delivery) -> Result<(), TargetError> {
        let id = || id.ok_or_else(|| TargetError::Transient("the registration has no id yet".into()));
        match op {
            Operation::Register(d) => {
                self.call(Method::POST, "/deltakelser", Some(to_xml(d.as_ref())), delivery).await?
            }
            Operation::SetHurtigspor(h) => {
                self.call(Method::PUT, &format!("/deltakelser/{}/hurtigspor", id()?), Some(to_xml(h)), delivery).await?
            }
            Operation::SetTiltak(t) => {
                self.call(Method::PUT, &format!("/deltakelser/{}/tiltak", id()?), Some(to_xml(t)), delivery).await?
            }
            Operation::SetPermisjoner(p) => {
                self.call(Method::PUT, &format!("/deltakelser/{}/permisjoner", id()?), Some(to_xml(p)), delivery)
                    .await?
            }
            Operation::SetAvslutning(a) => {
                self.call(Method::PUT, &format!("/deltakelser/{}/avslutning", id()?), Some(to_xml(a)), delivery).await?
            }
        };
        Ok(())
    }
}

/// An HTTP failure in terms of whether trying again can help. NIR's own
/// refusals come as a `Feil` document with its code.
fn classify(status: StatusCode, body: &str) -> TargetError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return TargetError::RetryAfter(Duration::from_secs(1));
    }
    if status.is_server_error() {
        return TargetError::Transient(format!("NIR answered {status}"));
    }
    match from_xml::<Feil>(body) {
        Ok(f) => TargetError::Permanent(format!(
            "NIR answered {status}: {} {}{}",
            f.kode,
            f.melding,
            f.felt.map(|felt| format!(" ({felt})")).unwrap_or_default()
        )),
        // Not NIR speaking (a proxy, a passing token storm): try again.
        Err(_) => TargetError::Transient(format!("NIR answered {status} without a NIR error document")),
    }
}

#[async_trait]
impl Target for NirTarget {
    fn name(&self) -> &'static str {
        "nir"
    }

    async fn reconcile(&self, participant: &Participant, delivery: &Delivery) -> Result<crate::Applied, TargetError> {
        let desired = translate::desired(participant)?;
        let mut applied = Applied::default();
        for _ in 0..MAX_ROUNDS {
            let current = self.read(&desired.registration, delivery).await?;
            let ops = translate::plan(&desired, current.as_ref());
            if ops.is_empty() {
                return Ok(applied);
            }
            let id = current.and_then(|c| c.deltakelse_id);
            for op in &ops {
                self.apply(op, id, delivery).await?;
                applied.operations.push(op.name().to_owned());
            }
        }
        Err(TargetError::Transient(format!("NIR did not converge in {MAX_ROUNDS} rounds")))
    }
}

//! The Arena adapter: OAuth client credentials with a cached token, person
//! lookup, and read-before-write reconciliation of the introduction-scheme
//! person relation and the activity plan (Arena's writes have no idempotency
//! key, so every write is decided from a fresh read).

pub mod inbound;
pub mod translate;
pub mod wire;

use crate::clock::Clock;
use crate::{Applied, Delivery, Target, TargetError};
use async_trait::async_trait;
use hurtigspor_proto::v1::Participant;
use reqwest::{Method, StatusCode};
use serde::{Serialize, de::DeserializeOwned};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use translate::{Current, Operation};
use wire::{Aktivitet, Collection, OrdsError, Person, Personforhold, Token};

/// The REST layer's base path.
const BASE: &str = "/ords/arena/api/v1";
/// Renew the token this long before it expires.
const RENEW_MARGIN: Duration = Duration::from_secs(30);
/// Read-plan-apply rounds before a reconcile gives up (a registration needs two).
const MAX_ROUNDS: usize = 4;

/// `Debug` leaves out the client secret: a config is logged, a secret never.
#[derive(Clone)]
pub struct ArenaConfig {
    /// e.g. `http://127.0.0.1:8081`
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Per request.
    pub timeout: Duration,
}

impl std::fmt::Debug for ArenaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub struct ArenaTarget {
    http: reqwest::Client,
    config: ArenaConfig,
    token: Mutex<Option<(String, Instant)>>,
    /// Decides whether a measure has started or ended: Norwegian today.
    clock: Clock,
}

fn transient(e: impl std::fmt::Display) -> TargetError {
    TargetError::Transient(e.to_string())
}

impl ArenaTarget {
    pub fn new(config: ArenaConfig) -> Self {
        let http = reqwest::Client::builder().timeout(config.timeout).build().expect("HTTP client builds");
        Self { http, config, token: Mutex::new(None), clock: Clock::system() }
    }

    /// The same target, deciding dates by `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A valid access token, fetched when the cached one is missing or about
    /// to expire.
    async fn token(&self, renew: bool) -> Result<String, TargetError> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && !renew
            && Instant::now() + RENEW_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let response = self
            .http
            .post(format!("{}/oauth/token", self.config.base_url))
            .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| transient(format!("token endpoint unreachable: {e}")))?;
        match response.status() {
            s if s.is_success() => {}
            status @ (StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST) => {
                // OAuth says which: our credentials (fix the config) or a
                // passing refusal (try again).
                let error = response.json::<serde_json::Value>().await.ok();
                let code = error.as_ref().and_then(|e| e["error"].as_str()).unwrap_or("");
                return Err(match code {
                    "invalid_client" | "unauthorized_client" | "invalid_grant" | "unsupported_grant_type" => {
                        TargetError::Permanent(format!(
                            "Arena refused our client credentials ({status}, {code}); check the Arena client id and secret"
                        ))
                    }
                    _ => TargetError::Transient(format!("token endpoint answered {status}")),
                });
            }
            s => return Err(classify(s, response).await),
        }
        let token: Token = response.json().await.map_err(|e| transient(format!("unreadable token answer: {e}")))?;
        let expires = Instant::now() + Duration::from_secs(token.expires_in.max(0) as u64);
        *cached = Some((token.access_token.clone(), expires));
        Ok(token.access_token)
    }

    /// One call to the REST layer; renews the token once on 401.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        correlation_id: &str,
    ) -> Result<T, TargetError> {
        self.call_found(method.clone(), path, body, correlation_id, false)
            .await?
            .ok_or_else(|| transient(format!("{method} {path}: no answer")))
    }

    /// Like `call`; with `absent_is_none`, a 404 answers `None`.
    async fn call_found<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        correlation_id: &str,
        absent_is_none: bool,
    ) -> Result<Option<T>, TargetError> {
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await?;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{BASE}{path}", self.config.base_url))
                .bearer_auth(&token)
                .header("X-Correlation-ID", correlation_id);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| transient(format!("{method} {path}: {e}")))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                continue;
            }
            if status == StatusCode::NOT_FOUND && absent_is_none {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(classify(status, response).await);
            }
            return response
                .json()
                .await
                .map(Some)
                .map_err(|e| transient(format!("unreadable answer to {method} {path}: {e}")));
        }
    }

    async fn read(&self, national_id: &str, delivery: &Delivery) -> Result<Current, TargetError> {
        let delivery = delivery.correlation_id.as_str();
        let found: Collection<Person> = self
            .call(Method::POST, "/personer/sok", Some(&serde_json::json!({ "FODSELSNR": national_id })), delivery)
            .await?;
        let Some(person) = found.items.first() else { return Ok(Current::default()) };
        let id = person.person_id;
        let relations: Collection<Personforhold> =
            self.call(Method::GET, &format!("/personforhold?person_id={id}"), None::<&()>, delivery).await?;
        let activities: Collection<Aktivitet> =
            self.call(Method::GET, &format!("/aktivitetsplan/{id}/aktiviteter"), None::<&()>, delivery).await?;
        Ok(Current { person_id: Some(id), relations: relations.items, activities: activities.items })
    }

    async fn apply(&self, op: &Operation, person_id: Option<i64>, delivery: &Delivery) -> Result<(), TargetError> {
        let delivery = delivery.correlation_id.as_str();
        let person = || person_id.ok_or_else(|| transient("the person is not in Arena yet"));
        let _: serde_json::Value = match op {
            Operation::CreateRelation(body) => self.call(Method::POST, "/personforhold", Some(body), delivery).await?,
            Operation::EndRelation { id, body } => {
                self.call(Method::PUT, &format!("/personforhold/{id}/avslutt"), Some(body), delivery).await?
            }
            Operation::CreateActivity(body) => {
                self.call(Method::POST, &format!("/aktivitetsplan/{}/aktiviteter", person()?), Some(body), delivery)
                    .await?
            }
            Operation::UpdateActivity { id, body } => {
                self.call(Method::PUT, &format!("/aktivitetsplan/{}/aktiviteter/{id}", person()?), Some(body), delivery)
                    .await?
            }
        };
        Ok(())
    }
}

/// An HTTP failure in terms of whether trying again can help.
async fn classify(status: StatusCode, response: reqwest::Response) -> TargetError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        return TargetError::RetryAfter(Duration::from_secs(secs));
    }
    // 409: Arena says it is already done (someone ended the relation); the
    // next round reads that and has nothing left to do.
    if status.is_server_error()
        || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT)
    {
        return TargetError::Transient(format!("Arena answered {status}"));
    }
    // A 4xx: Arena refuses the data. Its ORDS body says why.
    let message = response.json::<OrdsError>().await.ok().and_then(|e| e.message);
    TargetError::Permanent(format!("Arena answered {status}: {}", message.unwrap_or_else(|| "no reason given".into())))
}

#[async_trait]
impl Target for ArenaTarget {
    fn name(&self) -> &'static str {
        "arena"
    }

    async fn reconcile(&self, participant: &Participant, delivery: &Delivery) -> Result<Applied, TargetError> {
        let desired = translate::desired(participant, self.clock.today())?;
        if desired.relation == translate::Relation::NotNeeded {
            return Ok(Applied::default());
        }
        let mut applied = Applied::default();
        for _ in 0..MAX_ROUNDS {
            let current = self.read(&participant.national_id, delivery).await?;
            let ops = translate::plan(&desired, &current, &participant.national_id);
            if ops.is_empty() {
                return Ok(applied);
            }
            for op in &ops {
                self.apply(op, current.person_id, delivery).await?;
                applied.operations.push(op.name().to_owned());
            }
        }
        Err(TargetError::Transient(format!("Arena did not converge in {MAX_ROUNDS} rounds")))
    }
}

/// Reads of Arena's change feed and of the lookups its rows need.
impl ArenaTarget {
    /// Changes after `after` (a 20-digit position; empty for the start).
    pub async fn changes(&self, after: &str, limit: usize) -> Result<inbound::FeedPage, TargetError> {
        let path = if after.is_empty() {
            format!("/endringer?antall={limit}")
        } else {
            format!("/endringer?fra_pos={after}&antall={limit}")
        };
        self.call(Method::GET, &path, None::<&()>, "hurtigspor-arena-feed").await
    }

    /// The national id Arena holds for its person number, if the person
    /// exists. The answer is personal data: keep it out of logs.
    pub async fn national_id_of(&self, person_id: i64) -> Result<Option<String>, TargetError> {
        let path = format!("/personer/{person_id}");
        let found: Option<inbound::PersonRow> =
            self.call_found(Method::GET, &path, None::<&()>, "hurtigspor-arena-feed", true).await?;
        Ok(found.map(|p| p.fodselsnr))
    }

    /// The organisation number of an employer Arena knows by its own number.
    pub async fn employer_orgnr(&self, employer_id: i64) -> Result<Option<String>, TargetError> {
        let path = format!("/arbeidsgivere/{employer_id}");
        let found: Option<inbound::EmployerRow> =
            self.call_found(Method::GET, &path, None::<&()>, "hurtigspor-arena-feed", true).await?;
        Ok(found.map(|e| e.orgnr))
    }
}

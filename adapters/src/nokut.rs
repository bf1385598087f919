//! The NOKUT adapter: opens recognition cases with an API key and an
//! `Idempotency-Key` made from the participant and the case, so a retry
//! never opens a second case; returns NOKUT's case numbers for the
//! canonical record to keep.

use crate::{Applied, Delivery, Reference, Target, TargetError};
use async_trait::async_trait;
use hurtigspor_proto::v1::{Participant, RecognitionCase, RecognitionDecision, RecognitionScheme, RecognitionStatus};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const BASE: &str = "/api/v1";
/// The correlation id of the gateway's reads of NOKUT's changes.
const FEED_CORRELATION: &str = "hurtigspor-nokut-feed";

/// `Debug` leaves out the API key: a config is logged, a secret never.
#[derive(Clone)]
pub struct NokutConfig {
    /// e.g. `http://127.0.0.1:8083`
    pub base_url: String,
    pub api_key: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for NokutConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NokutConfig")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A case as NOKUT takes it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NewCase {
    pub ordning: &'static str,
    pub soker: Applicant,
    pub utdanning: Education,
    pub dokumentasjon_komplett: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Applicant {
    pub fodselsnummer: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Education {
    pub beskrivelse: String,
    pub land: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Opened {
    saksnummer: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Refusal {
    feil: String,
    melding: String,
}

/// NOKUT's name for a scheme.
pub fn scheme(s: i32) -> Option<&'static str> {
    Some(match RecognitionScheme::try_from(s).ok()? {
        RecognitionScheme::HigherEducation => "HOYERE_UTDANNING",
        RecognitionScheme::HigherVocational => "FAGSKOLE",
        RecognitionScheme::Vocational => "FAG_OG_YRKESOPPLAERING",
        RecognitionScheme::Uvd => "UVD",
        RecognitionScheme::QualificationsAssessment => "KVALIFIKASJONSVURDERING",
        RecognitionScheme::Unspecified => return None,
    })
}

/// The case to open for `case`. Only what the case fixed when it was opened
/// goes in (never the current competence mapping), so a retry under the same
/// `Idempotency-Key` sends the same body whatever changed since.
pub fn new_case(p: &Participant, case: &RecognitionCase) -> Result<NewCase, TargetError> {
    let ordning = scheme(case.scheme)
        .ok_or_else(|| TargetError::Permanent(format!("recognition case {} has no scheme", case.id)))?;
    let documented = case.documentation_complete;
    Ok(NewCase {
        ordning,
        soker: Applicant { fodselsnummer: p.national_id.clone() },
        utdanning: Education {
            beskrivelse: case.education_description.clone(),
            land: if case.country_code.is_empty() { "XX".to_owned() } else { case.country_code.clone() },
        },
        dokumentasjon_komplett: documented,
    })
}

/// The idempotency key of a case: the same for every retry of it.
pub fn idempotency_key(delivery: &Delivery, case: &RecognitionCase) -> String {
    format!("hurtigspor-{}-{}", delivery.participant_id, case.id)
}

pub struct NokutTarget {
    http: reqwest::Client,
    config: NokutConfig,
}

impl NokutTarget {
    pub fn new(config: NokutConfig) -> Self {
        let http = reqwest::Client::builder().timeout(config.timeout).build().expect("HTTP client builds");
        Self { http, config }
    }

    async fn open(&self, body: &NewCase, key: &str, delivery: &Delivery) -> Result<String, TargetError> {
        let request =
            self.http.post(format!("{}{BASE}/saker", self.config.base_url)).header("idempotency-key", key).json(body);
        let opened: Opened = self.call(request, &delivery.correlation_id, "POST /saker").await?;
        Ok(opened.saksnummer)
    }

    /// Sends one request with the API key and reads NOKUT's answer: 429 and
    /// 5xx are passing, a refusal with NOKUT's error body is permanent.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        correlation_id: &str,
        what: &str,
    ) -> Result<T, TargetError> {
        let response = request
            .header("x-api-key", &self.config.api_key)
            .header("x-correlation-id", correlation_id)
            .send()
            .await
            .map_err(|e| TargetError::Transient(format!("{what}: {e}")))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(TargetError::RetryAfter(Duration::from_secs(1)));
        }
        if status.is_server_error() {
            return Err(TargetError::Transient(format!("{what}: NOKUT answered {status}")));
        }
        if !status.is_success() {
            return Err(match response.json::<Refusal>().await {
                Ok(r) => TargetError::Permanent(format!("{what}: NOKUT answered {status}: {} ({})", r.melding, r.feil)),
                Err(_) => TargetError::Transient(format!("{what}: NOKUT answered {status} without its error body")),
            });
        }
        response.json().await.map_err(|e| TargetError::Transient(format!("{what}: unreadable answer: {e}")))
    }
}

/// One change NOKUT published: an item of its changes feed, or a webhook's
/// body (which calls the sequence number `hendelse_id`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct CaseChange {
    #[serde(alias = "hendelse_id")]
    pub sekvens: u64,
    pub saksnummer: String,
    pub status: String,
    pub tidspunkt: chrono::DateTime<chrono::Utc>,
    /// The whole case after the change.
    #[serde(default)]
    pub sak: serde_json::Value,
}

impl CaseChange {
    /// The change without the applicant's personal data, to keep.
    pub fn redacted(mut self) -> Self {
        if let Some(sak) = self.sak.as_object_mut() {
            sak.remove("soker");
        }
        self
    }
}

/// A page of NOKUT's changes feed.
#[derive(Clone, Debug, Deserialize)]
pub struct ChangesPage {
    pub endringer: Vec<CaseChange>,
    pub siste_sekvens: u64,
}

/// What a change means for the canonical recognition case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseUpdate {
    pub status: RecognitionStatus,
    pub decision: RecognitionDecision,
    /// The date of the decision, the statement or the rejection.
    pub decision_date: Option<chrono::NaiveDate>,
}

/// Translates NOKUT's status (and decision) into the canonical case's.
pub fn case_update(change: &CaseChange) -> Result<CaseUpdate, String> {
    use RecognitionStatus as S;
    let status = match change.status.as_str() {
        "MOTTATT" => S::Received,
        "UNDER_BEHANDLING" => S::InProcess,
        "VENTER_PAA_DOKUMENTASJON" => S::AwaitingDocumentation,
        "VEDTAK" => S::Decided,
        "AVVIST" => S::Rejected,
        "HENVIST_UVD" => S::ReferredToUvd,
        "UTTALELSE" => S::StatementIssued,
        other => return Err(format!("unknown case status {other}")),
    };
    let vedtak = &change.sak["vedtak"];
    let decision = match (status, vedtak["utfall"].as_str()) {
        (S::Decided, Some("GODKJENT")) => RecognitionDecision::Approved,
        (S::Decided, Some("AVSLAG")) => RecognitionDecision::Refused,
        (S::Decided, other) => return Err(format!("a VEDTAK with utfall {other:?}")),
        _ => RecognitionDecision::Unspecified,
    };
    let concluded = matches!(status, S::Decided | S::Rejected | S::StatementIssued);
    let decision_date = if !concluded {
        None
    } else if let Some(d) = vedtak["dato"].as_str() {
        Some(chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| "vedtak.dato is not yyyy-MM-dd".to_owned())?)
    } else {
        // A statement or a rejection is dated by when NOKUT published it,
        // as a date in Norway.
        Some(crate::clock::oslo_date(change.tidspunkt))
    };
    Ok(CaseUpdate { status, decision, decision_date })
}

/// Reads of NOKUT's changes, and the webhook subscription.
impl NokutTarget {
    /// Changes after sequence number `after`, oldest first.
    pub async fn changes(&self, after: u64, limit: usize) -> Result<ChangesPage, TargetError> {
        let url = format!("{}{BASE}/endringer?etter={after}&antall={limit}", self.config.base_url);
        self.call(self.http.get(url), FEED_CORRELATION, "GET /endringer").await
    }

    /// Asks NOKUT to send each change to `url` as a signed webhook.
    pub async fn subscribe(&self, url: &str) -> Result<(), TargetError> {
        let request =
            self.http.post(format!("{}{BASE}/webhooks", self.config.base_url)).json(&serde_json::json!({ "url": url }));
        let _: serde_json::Value = self.call(request, FEED_CORRELATION, "POST /webhooks").await?;
        Ok(())
    }
}

#[async_trait]
impl Target for NokutTarget {
    fn name(&self) -> &'static str {
        "nokut"
    }

    async fn reconcile(&self, participant: &Participant, delivery: &Delivery) -> Result<Applied, TargetError> {
        let mut applied = Applied::default();
        // Cases NOKUT has not numbered for us yet; the key makes a repeat of
        // one whose answer was lost return the same case.
        for case in participant.recognition_cases.iter().filter(|c| c.case_number.is_empty()) {
            let body = new_case(participant, case)?;
            let number = self.open(&body, &idempotency_key(delivery, case), delivery).await?;
            applied.operations.push("sak.open".to_owned());
            applied.references.push(Reference {
                kind: "recognition_case",
                local_id: case.id.clone(),
                remote_id: number,
            });
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hurtigspor_proto::v1::{CompetenceMapping, Education as CanonicalEducation};
    use serde_json::json;

    #[test]
    fn golden_case_body() {
        let mut p = Participant { national_id: "15838510075".into(), ..Default::default() };
        let case = RecognitionCase {
            id: "r-1".into(),
            scheme: RecognitionScheme::HigherEducation as i32,
            education_description: "Bachelor i sykepleie".into(),
            country_code: "SY".into(),
            documentation_complete: true,
            ..Default::default()
        };
        let body = new_case(&p, &case).unwrap();
        p.competence = Some(CompetenceMapping {
            educations: vec![CanonicalEducation { documented: false, ..Default::default() }],
            ..Default::default()
        });
        assert_eq!(new_case(&p, &case).unwrap(), body, "a later mapping does not change the application");
        assert_eq!(
            serde_json::to_value(new_case(&p, &case).unwrap()).unwrap(),
            json!({
                "ordning": "HOYERE_UTDANNING",
                "soker": { "fodselsnummer": "15838510075" },
                "utdanning": { "beskrivelse": "Bachelor i sykepleie", "land": "SY" },
                "dokumentasjon_komplett": true,
            })
        );
        let d = Delivery { participant_id: "abc".into(), version: 3, correlation_id: "c".into() };
        assert_eq!(idempotency_key(&d, &case), "hurtigspor-abc-r-1", "the same for every version");
    }

    fn change(body: serde_json::Value) -> CaseChange {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn golden_changes_from_feed_and_webhook() {
        let decided = change(json!({
            "hendelse_id": 7, "saksnummer": "2026-000001", "status": "VEDTAK", "tidspunkt": "2026-03-06T09:00:00Z",
            "sak": { "saksnummer": "2026-000001", "soker": { "fodselsnummer": "15838510075" },
                     "vedtak": { "utfall": "GODKJENT", "nivaa": "BACHELOR", "studiepoeng": 180, "dato": "2026-03-05" } },
        }));
        assert_eq!(decided.sekvens, 7, "a webhook's hendelse_id is the feed's sekvens");
        assert_eq!(
            case_update(&decided).unwrap(),
            CaseUpdate {
                status: RecognitionStatus::Decided,
                decision: RecognitionDecision::Approved,
                decision_date: chrono::NaiveDate::from_ymd_opt(2026, 3, 5),
            }
        );
        let kept = decided.redacted();
        assert!(kept.sak.get("soker").is_none(), "the applicant is not kept");
        assert_eq!(kept.sak["vedtak"]["utfall"], "GODKJENT");

        let refused =
            change(json!({"sekvens": 8, "saksnummer": "n", "status": "VEDTAK", "tidspunkt": "2026-03-06T09:00:00Z",
            "sak": {"vedtak": {"utfall": "AVSLAG", "dato": "2026-03-06"}}}));
        assert_eq!(case_update(&refused).unwrap().decision, RecognitionDecision::Refused);
        let statement = change(
            json!({"sekvens": 9, "saksnummer": "n", "status": "UTTALELSE", "tidspunkt": "2026-04-01T12:00:00Z", "sak": {}}),
        );
        assert_eq!(
            case_update(&statement).unwrap(),
            CaseUpdate {
                status: RecognitionStatus::StatementIssued,
                decision: RecognitionDecision::Unspecified,
                decision_date: chrono::NaiveDate::from_ymd_opt(2026, 4, 1),
            },
            "a statement is not a decision, but it concludes the case"
        );
        for (nokut, canonical) in [
            ("MOTTATT", RecognitionStatus::Received),
            ("UNDER_BEHANDLING", RecognitionStatus::InProcess),
            ("VENTER_PAA_DOKUMENTASJON", RecognitionStatus::AwaitingDocumentation),
            ("AVVIST", RecognitionStatus::Rejected),
            ("HENVIST_UVD", RecognitionStatus::ReferredToUvd),
        ] {
            let c =
                change(json!({"sekvens": 1, "saksnummer": "n", "status": nokut, "tidspunkt": "2026-04-01T12:00:00Z"}));
            assert_eq!(case_update(&c).unwrap().status, canonical, "{nokut}");
        }
        let unknown =
            change(json!({"sekvens": 1, "saksnummer": "n", "status": "ARKIVERT", "tidspunkt": "2026-04-01T12:00:00Z"}));
        assert!(case_update(&unknown).unwrap_err().contains("ARKIVERT"));
    }

    #[test]
    fn a_statement_published_late_on_new_years_eve_utc_is_dated_new_years_day() {
        let statement = change(
            json!({"sekvens": 9, "saksnummer": "n", "status": "UTTALELSE", "tidspunkt": "2026-12-31T23:30:00Z", "sak": {}}),
        );
        assert_eq!(case_update(&statement).unwrap().decision_date, chrono::NaiveDate::from_ymd_opt(2027, 1, 1));
    }
}

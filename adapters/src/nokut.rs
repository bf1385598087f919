//! The NOKUT adapter: opens recognition cases with an API key and an
//! `Idempotency-Key` made from the participant and the case, so a retry
//! never opens a second case; returns NOKUT's case numbers for the
//! canonical record to keep.

use crate::{Applied, Delivery, Reference, Target, TargetError};
use async_trait::async_trait;
use hurtigspor_proto::v1::{Participant, RecognitionCase, RecognitionScheme};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const BASE: &str = "/api/v1";

#[derive(Clone, Debug)]
pub struct NokutConfig {
    /// e.g. `http://127.0.0.1:8083`
    pub base_url: String,
    pub api_key: String,
    pub timeout: Duration,
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

/// The case to open for `case`. The canonical record does not yet say
/// whether the documents are complete; the competence mapping's
/// "documented" educations stand in for it.
pub fn new_case(p: &Participant, case: &RecognitionCase) -> Result<NewCase, TargetError> {
    let ordning = scheme(case.scheme)
        .ok_or_else(|| TargetError::Permanent(format!("recognition case {} has no scheme", case.id)))?;
    let documented = p.competence.as_ref().is_some_and(|c| c.educations.iter().any(|e| e.documented));
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
        let response = self
            .http
            .post(format!("{}{BASE}/saker", self.config.base_url))
            .header("x-api-key", &self.config.api_key)
            .header("idempotency-key", key)
            .header("x-correlation-id", &delivery.correlation_id)
            .json(body)
            .send()
            .await
            .map_err(|e| TargetError::Transient(format!("POST /saker: {e}")))?;
        let status = response.status();
        if status.is_success() {
            let opened: Opened = response
                .json()
                .await
                .map_err(|e| TargetError::Transient(format!("unreadable answer from NOKUT: {e}")))?;
            return Ok(opened.saksnummer);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(TargetError::RetryAfter(Duration::from_secs(1)));
        }
        if status.is_server_error() {
            return Err(TargetError::Transient(format!("NOKUT answered {status}")));
        }
        match response.json::<Refusal>().await {
            Ok(r) => Err(TargetError::Permanent(format!("NOKUT answered {status}: {} ({})", r.melding, r.feil))),
            Err(_) => Err(TargetError::Transient(format!("NOKUT answered {status} without its error body"))),
        }
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
        let p = Participant {
            national_id: "15838510075".into(),
            competence: Some(CompetenceMapping {
                educations: vec![CanonicalEducation { documented: true, ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let case = RecognitionCase {
            id: "r-1".into(),
            scheme: RecognitionScheme::HigherEducation as i32,
            education_description: "Bachelor i sykepleie".into(),
            country_code: "SY".into(),
            ..Default::default()
        };
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
}

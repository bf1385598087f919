//! Arena's wire shapes, as this adapter reads and writes them. Deliberately
//! our own types: the mocks keep theirs, so a translation bug shows.

use serde::{Deserialize, Serialize};

/// An ORDS collection answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Collection<T> {
    pub items: Vec<T>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Person {
    pub person_id: i64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Personforhold {
    pub personforhold_id: i64,
    pub person_id: i64,
    pub personforholdkode: String,
    pub dato_fra: String,
    pub dato_til: Option<String>,
    /// `"J"` or `"N"`.
    pub er_aktiv: String,
}

impl Personforhold {
    pub fn is_active_intro(&self) -> bool {
        self.personforholdkode == INTRO && self.er_aktiv == "J"
    }
}

/// The person relation for the introduction scheme.
pub const INTRO: &str = "INTRO";

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct NewPersonforhold {
    pub fodselsnr: String,
    pub personforholdkode: String,
    pub aetatenhet: String,
    pub dato_fra: String,
    pub reg_user: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct EndPersonforhold {
    pub dato_til: String,
    pub mod_user: String,
}

/// An activity in Arena's activity plan, as read.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Aktivitet {
    pub aktivitet_id: i64,
    pub tittel: String,
    pub beskrivelse: Option<String>,
    pub fra_dato: String,
    pub til_dato: Option<String>,
    pub status: String,
    pub ansvarlig: String,
}

/// An activity as written (create or full update).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct AktivitetBody {
    pub tittel: String,
    pub beskrivelse: Option<String>,
    pub fra_dato: String,
    pub til_dato: Option<String>,
    pub status: String,
    pub ansvarlig: String,
    pub reg_user: String,
}

impl AktivitetBody {
    /// Whether `current` already says what this body would write.
    pub fn matches(&self, current: &Aktivitet) -> bool {
        self.tittel == current.tittel
            && self.beskrivelse == current.beskrivelse
            && self.fra_dato == current.fra_dato
            && self.til_dato == current.til_dato
            && self.status == current.status
            && self.ansvarlig == current.ansvarlig
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct OrdsError {
    pub message: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Token {
    pub access_token: String,
    pub expires_in: i64,
}

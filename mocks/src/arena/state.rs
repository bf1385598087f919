//! Arena's tables as the mock keeps them, in Arena's vocabulary: UPPER_SNAKE
//! columns, `"J"`/`"N"` booleans, `yyyy-MM-dd HH:mm:ss` dates, numeric ids.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// Arena's date format, used even for date-only columns.
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// The change feed's timestamp format.
pub const TS_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

pub fn arena_date(t: DateTime<Utc>) -> String {
    t.format(DATE_FORMAT).to_string()
}

/// Parses an Arena date, answering like Oracle when it does not fit.
pub fn parse_arena_date(s: &str) -> Result<NaiveDateTime, String> {
    // Oracle's TO_DATE with this mask wants every field zero-padded.
    Some(s)
        .filter(|s| s.len() == 19)
        .and_then(|s| NaiveDateTime::parse_from_str(s, DATE_FORMAT).ok())
        .ok_or(())
        .map_err(|_| "ORA-01861: literal does not match format string (expected yyyy-MM-dd HH:mm:ss)".to_owned())
}

/// A person as Arena knows them. `PERSON_ID` is Arena's own number.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Person {
    pub person_id: i64,
    pub fodselsnr: String,
    pub fornavn: Option<String>,
    pub etternavn: Option<String>,
    pub reg_dato: String,
}

/// A person relation (personforhold), e.g. under the introduction scheme.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Personforhold {
    pub personforhold_id: i64,
    pub person_id: i64,
    /// `INTRO`: the introduction scheme.
    pub personforholdkode: String,
    /// The NAV unit following the person (4 digits).
    pub aetatenhet: String,
    pub dato_fra: String,
    pub dato_til: Option<String>,
    /// `"J"` while the relation is in force.
    pub er_aktiv: String,
    pub reg_dato: String,
    pub reg_user: String,
    pub mod_dato: String,
    pub mod_user: String,
}

/// An activity in the person's activity plan (aktivitetsplan).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Aktivitet {
    pub aktivitet_id: i64,
    pub person_id: i64,
    pub tittel: String,
    pub beskrivelse: Option<String>,
    pub fra_dato: String,
    pub til_dato: Option<String>,
    /// PLANLAGT, GJENNOMFORES, FULLFORT, AVBRUTT.
    pub status: String,
    /// KOMMUNE, NAV, DELTAKER, ANNEN.
    pub ansvarlig: String,
    pub reg_dato: String,
    pub reg_user: String,
    pub mod_dato: String,
    pub mod_user: String,
}

pub const AKTIVITET_STATUSES: &[&str] = &["PLANLAGT", "GJENNOMFORES", "FULLFORT", "AVBRUTT"];
pub const ANSVARLIG: &[&str] = &["KOMMUNE", "NAV", "DELTAKER", "ANNEN"];

/// An employer known to Arena, by Arena's own number.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Arbeidsgiver {
    pub arbgiv_id: i64,
    pub orgnr: String,
    pub navn: String,
}

pub const TILTAKSKODER: &[&str] = &[
    "ARBTREN",
    "MIDLONTIL",
    "VARLONTIL",
    "MENTOR",
    "INKLUTILS",
    "ENKELAMO",
    "GRUPPEAMO",
    "ENKFAGYRKE",
    "GRUFAGYRKE",
    "HOYEREUTD",
    "AVKLARAG",
    "INDOPPFAG",
    "ARBFORB",
    "JOBBK",
];

pub const DELTAKERSTATUSKODER: &[&str] = &[
    "AKTUELL",
    "INFOMOETE",
    "VENTELISTE",
    "TILBUD",
    "JATAKK",
    "GJENN",
    "FULLF",
    "DELAVB",
    "GJENN_AVB",
    "GJENN_AVL",
    "IKKEM",
    "IKKAKTUELL",
    "AVSLAG",
    "NEITAKK",
    "FEILREG",
];

pub const AARSAKER: &[&str] = &["HENLU", "SYK", "FRISM", "ANN", "BEGA", "UTV", "FTOAT"];

/// One change-data-capture envelope of the change feed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub table: String,
    pub op_type: String,
    pub op_ts: String,
    pub current_ts: String,
    pub pos: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The whole mock database.
#[derive(Debug, Default, Serialize)]
pub struct ArenaState {
    pub persons: Vec<Person>,
    pub personforhold: Vec<Personforhold>,
    pub aktiviteter: Vec<Aktivitet>,
    pub arbeidsgivere: Vec<Arbeidsgiver>,
    /// SIAMO.SAK rows.
    pub saker: Vec<Value>,
    /// SIAMO.TILTAKGJENNOMFORING rows.
    pub tiltakgjennomforinger: Vec<Value>,
    /// SIAMO.TILTAKDELTAKER rows.
    pub tiltakdeltakere: Vec<Value>,
    pub feed: Vec<Envelope>,
    #[serde(skip)]
    pub tokens: HashMap<String, DateTime<Utc>>,
    #[serde(skip)]
    next_id: i64,
}

impl ArenaState {
    /// Arena's ids come from one sequence per table; one shared sequence
    /// keeps them unique and numeric.
    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        1000 + self.next_id
    }

    pub fn person_by_fnr(&self, fnr: &str) -> Option<&Person> {
        self.persons.iter().find(|p| p.fodselsnr == fnr)
    }

    /// The person with this national id, registered if Arena has not seen them.
    pub fn ensure_person(&mut self, fnr: &str, now: DateTime<Utc>) -> (i64, bool) {
        if let Some(p) = self.person_by_fnr(fnr) {
            return (p.person_id, false);
        }
        let person_id = self.next_id();
        self.persons.push(Person {
            person_id,
            fodselsnr: fnr.to_owned(),
            fornavn: None,
            etternavn: None,
            reg_dato: arena_date(now),
        });
        (person_id, true)
    }

    /// Appends a change to the feed, as Arena's CDC would publish it.
    pub fn publish(&mut self, table: &str, op: &str, before: Option<Value>, after: Option<Value>, now: DateTime<Utc>) {
        let pos = format!("{:020}", self.feed.len() as u64 + 1);
        let op_ts = now.format(TS_FORMAT).to_string();
        let current_ts = (now + chrono::Duration::milliseconds(37)).format(TS_FORMAT).to_string();
        self.feed.push(Envelope {
            table: table.to_owned(),
            op_type: op.to_owned(),
            op_ts,
            current_ts,
            pos,
            before,
            after,
        });
    }

    pub fn tiltakdeltaker_mut(&mut self, id: i64) -> Option<&mut Value> {
        self.tiltakdeltakere.iter_mut().find(|r| r["TILTAKDELTAKER_ID"] == id)
    }
}

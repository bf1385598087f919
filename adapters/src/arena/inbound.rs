//! Arena's change feed, read the other way: its `SIAMO.*` envelopes parsed
//! into what they say about a person's measures, and a participation row
//! translated into a canonical `Measure` (pure functions, golden-tested).
//!
//! Arena owns NAV's measures. A measure that came from Arena has the id
//! `arena-<TILTAKDELTAKER_ID>`, so the same participation always lands on
//! the same canonical measure however often its rows are published.

use chrono::{NaiveDate, NaiveDateTime};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{Measure, MeasureEndReason, MeasureKind, MeasureStatus},
};
use serde::Deserialize;
use serde_json::Value;

/// One page of the change feed.
#[derive(Clone, Debug, Deserialize)]
pub struct FeedPage {
    pub items: Vec<Envelope>,
    #[serde(rename = "hasMore", default)]
    pub has_more: bool,
    /// The position to read on from.
    pub siste_pos: String,
}

/// One change-data-capture envelope.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
pub struct Envelope {
    pub table: String,
    pub op_type: String,
    pub op_ts: String,
    pub pos: String,
    #[serde(default)]
    pub before: Option<Value>,
    #[serde(default)]
    pub after: Option<Value>,
}

/// The columns the gateway reads, per table; everything else (caseworker
/// idents, registration stamps, tables it does not read) is not kept.
fn kept_columns(table: &str) -> &'static [&'static str] {
    match table {
        "SIAMO.TILTAKDELTAKER" => &[
            "TILTAKDELTAKER_ID",
            "PERSON_ID",
            "TILTAKGJENNOMFORING_ID",
            "DELTAKERSTATUSKODE",
            "AARSAKVERDIKODE_STATUS",
            "DATO_FRA",
            "DATO_TIL",
            "PROSENT_DELTID",
        ],
        "SIAMO.TILTAKGJENNOMFORING" => &[
            "TILTAKGJENNOMFORING_ID",
            "SAK_ID",
            "TILTAKSKODE",
            "DATO_FRA",
            "DATO_TIL",
            "TILTAKSTATUSKODE",
            "ARBGIV_ID_ARRANGOR",
        ],
        _ => &[],
    }
}

impl Envelope {
    /// `SIAMO.TILTAKDELTAKER U`: what the inbox lists it as.
    pub fn kind(&self) -> String {
        format!("{} {}", self.table, self.op_type)
    }

    /// The envelope with only the columns the gateway reads, to keep.
    pub fn redacted(&self) -> Self {
        let keep = kept_columns(&self.table);
        let image = |v: &Option<Value>| {
            v.as_ref().and_then(Value::as_object).map(|row| {
                Value::Object(
                    row.iter()
                        .filter(|(k, _)| keep.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            })
        };
        Self { before: image(&self.before), after: image(&self.after), ..self.clone() }
    }
}

/// `GET /personer/{id}`: only the columns the feed reader needs.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct PersonRow {
    pub fodselsnr: String,
}

impl std::fmt::Debug for PersonRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonRow { fodselsnr: [redacted] }")
    }
}

/// `GET /arbeidsgivere/{id}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct EmployerRow {
    pub orgnr: String,
}

/// A person's participation in a measure (SIAMO.TILTAKDELTAKER).
#[derive(Clone, Debug, PartialEq)]
pub struct Participation {
    pub id: i64,
    pub person_id: i64,
    pub instance_id: i64,
    /// DELTAKERSTATUSKODE.
    pub status: String,
    /// AARSAKVERDIKODE_STATUS.
    pub reason: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub percent: Option<f64>,
}

/// What one envelope says.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A measure instance (SIAMO.TILTAKGJENNOMFORING) was published.
    Instance { id: i64, code: String, employer_id: Option<i64> },
    /// A participation was inserted or updated (`unchanged`: an U whose
    /// before and after are the same row).
    Participation { row: Participation, unchanged: bool },
    /// A participation was deleted.
    Deleted(Participation),
    /// A table the gateway does not read (e.g. SIAMO.SAK).
    Other,
}

/// An Arena date (`yyyy-MM-dd HH:mm:ss`, also for date-only columns).
pub fn arena_date(v: &Value) -> Result<Option<NaiveDate>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .map(|d| Some(d.date()))
            .map_err(|_| "a date column is not yyyy-MM-dd HH:mm:ss".to_owned()),
        _ => Err("a date column is not a string".to_owned()),
    }
}

fn id(row: &Value, column: &str) -> Result<i64, String> {
    row[column].as_i64().ok_or_else(|| format!("{column} is missing or not a number"))
}

fn optional_text(row: &Value, column: &str) -> Option<String> {
    row[column].as_str().map(str::to_owned)
}

fn participation(row: &Value) -> Result<Participation, String> {
    Ok(Participation {
        id: id(row, "TILTAKDELTAKER_ID")?,
        person_id: id(row, "PERSON_ID")?,
        instance_id: id(row, "TILTAKGJENNOMFORING_ID")?,
        status: optional_text(row, "DELTAKERSTATUSKODE").ok_or("DELTAKERSTATUSKODE is missing")?,
        reason: optional_text(row, "AARSAKVERDIKODE_STATUS"),
        from: arena_date(&row["DATO_FRA"])?,
        to: arena_date(&row["DATO_TIL"])?,
        percent: row["PROSENT_DELTID"].as_f64(),
    })
}

/// Reads one envelope; an error means it cannot be understood (malformed).
pub fn parse(e: &Envelope) -> Result<Change, String> {
    fn image<'a>(e: &Envelope, which: &'a Option<Value>, name: &str) -> Result<&'a Value, String> {
        which.as_ref().filter(|v| !v.is_null()).ok_or_else(|| format!("{} {} has no {name} image", e.table, e.op_type))
    }
    match (e.table.as_str(), e.op_type.as_str()) {
        ("SIAMO.TILTAKGJENNOMFORING", "I" | "U") => {
            let row = image(e, &e.after, "after")?;
            Ok(Change::Instance {
                id: id(row, "TILTAKGJENNOMFORING_ID")?,
                code: optional_text(row, "TILTAKSKODE").ok_or("TILTAKSKODE is missing")?,
                employer_id: row["ARBGIV_ID_ARRANGOR"].as_i64(),
            })
        }
        ("SIAMO.TILTAKDELTAKER", "I" | "U") => {
            let after = image(e, &e.after, "after")?;
            let unchanged = e.op_type == "U" && e.before.as_ref() == Some(after);
            Ok(Change::Participation { row: participation(after)?, unchanged })
        }
        ("SIAMO.TILTAKDELTAKER", "D") => Ok(Change::Deleted(participation(image(e, &e.before, "before")?)?)),
        (_, "I" | "U" | "D") => Ok(Change::Other),
        (_, op) => Err(format!("unknown op_type {op}")),
    }
}

/// The canonical kind of an Arena measure code.
pub fn measure_kind(code: &str) -> MeasureKind {
    match code {
        "ARBTREN" => MeasureKind::WorkTraining,
        "MIDLONTIL" => MeasureKind::TemporaryWageSubsidy,
        "VARLONTIL" => MeasureKind::PermanentWageSubsidy,
        "MENTOR" => MeasureKind::Mentor,
        "ENKELAMO" | "GRUPPEAMO" => MeasureKind::LabourMarketCourse,
        "ENKFAGYRKE" | "GRUFAGYRKE" => MeasureKind::VocationalTraining,
        "HOYEREUTD" => MeasureKind::HigherEducation,
        "INKLUTILS" => MeasureKind::InclusionGrant,
        _ => MeasureKind::Other,
    }
}

/// The canonical id of the measure a participation is.
pub fn measure_id(participation_id: i64) -> String {
    format!("arena-{participation_id}")
}

/// What a participation row means for the canonical record.
#[derive(Clone, Debug, PartialEq)]
pub enum MeasureFact {
    /// The measure as it stands; `began_work` when it ended with BEGA.
    Measure { measure: Measure, began_work: bool },
    /// Not (yet) a measure the participant takes part in: applied for,
    /// refused, declined, withdrawn or registered in error, and never seen
    /// as running. Nothing to record unless the record already has it.
    NotTaken(&'static str),
}

fn date(d: NaiveDate) -> Date {
    use chrono::Datelike;
    Date { year: d.year(), month: d.month() as i32, day: d.day() as i32 }
}

fn end_reason(code: Option<&str>) -> MeasureEndReason {
    match code {
        None => MeasureEndReason::Unspecified,
        Some("BEGA") => MeasureEndReason::BeganWork,
        Some("SYK") => MeasureEndReason::Illness,
        Some("FTOAT") => MeasureEndReason::OtherMeasure,
        Some(_) => MeasureEndReason::Other,
    }
}

/// Translates a participation (with its instance's measure code and the
/// employer's organisation number) into the canonical measure. `deleted`:
/// the row was deleted from Arena, which only happens to rows registered in
/// error. `known`: the record already has this measure.
pub fn measure(
    row: &Participation,
    code: &str,
    employer_orgnr: Option<&str>,
    deleted: bool,
    known: bool,
    today: NaiveDate,
) -> Result<MeasureFact, String> {
    use MeasureStatus as S;
    let status = match (deleted, row.status.as_str()) {
        (true, _) | (false, "FEILREG") => S::RegisteredInError,
        // Applied for: not a measure yet.
        (_, "AKTUELL" | "INFOMOETE" | "VENTELISTE") => S::Planned,
        (_, "TILBUD" | "JATAKK") => S::Planned,
        (_, "GJENN") if row.from.is_some_and(|f| f > today) => S::Planned,
        (_, "GJENN") => S::Active,
        (_, "FULLF") => S::Completed,
        (_, "DELAVB" | "GJENN_AVB" | "GJENN_AVL" | "IKKEM") => S::Discontinued,
        // Refused, not relevant, declined: it never ran.
        (_, "IKKAKTUELL" | "AVSLAG" | "NEITAKK") => S::RegisteredInError,
        (_, other) => return Err(format!("unknown DELTAKERSTATUSKODE {other}")),
    };
    let applied_only = matches!(row.status.as_str(), "AKTUELL" | "INFOMOETE" | "VENTELISTE");
    if !known && (status == S::RegisteredInError || applied_only) {
        return Ok(MeasureFact::NotTaken(if applied_only {
            "applied for, not started: recorded once NAV offers or starts it"
        } else {
            "registered in error, refused or withdrawn before the gateway saw it run"
        }));
    }
    let start = row.from.ok_or("DATO_FRA is missing")?;
    let percent = row.percent.map(|p| p.round().clamp(1.0, 100.0) as i32).unwrap_or(100);
    let ended = matches!(status, S::Completed | S::Discontinued);
    Ok(MeasureFact::Measure {
        measure: Measure {
            id: measure_id(row.id),
            kind: measure_kind(code) as i32,
            employer_orgnr: employer_orgnr.unwrap_or_default().to_owned(),
            position_percent: percent,
            start_date: Some(date(start)),
            end_date: row.to.map(date),
            status: status as i32,
            end_reason: if ended { end_reason(row.reason.as_deref()) as i32 } else { 0 },
        },
        began_work: ended && row.reason.as_deref() == Some("BEGA"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn row(status: &str, reason: Option<&str>) -> Value {
        json!({
            "TILTAKDELTAKER_ID": 1017, "PERSON_ID": 1001, "TILTAKGJENNOMFORING_ID": 1016,
            "DELTAKERSTATUSKODE": status, "AARSAKVERDIKODE_STATUS": reason,
            "DATO_FRA": "2026-03-02 00:00:00", "DATO_TIL": "2026-06-30 00:00:00", "PROSENT_DELTID": 80.0,
            "REG_DATO": "2026-02-20 10:11:12", "REG_USER": "USR1234", "MOD_DATO": "2026-02-20 10:11:12", "MOD_USER": "USR1234",
        })
    }

    fn envelope(table: &str, op: &str, before: Option<Value>, after: Option<Value>) -> Envelope {
        Envelope {
            table: table.into(),
            op_type: op.into(),
            op_ts: "2026-02-20 10:11:12.000000".into(),
            pos: "00000000000000000003".into(),
            before,
            after,
        }
    }

    #[test]
    fn envelopes_are_read_by_table_and_operation() {
        let instance = json!({"TILTAKGJENNOMFORING_ID": 1016, "SAK_ID": 1015, "TILTAKSKODE": "ARBTREN",
            "DATO_FRA": "2026-03-02 00:00:00", "DATO_TIL": null, "TILTAKSTATUSKODE": "GJENNOMFOR", "ARBGIV_ID_ARRANGOR": 1014});
        assert_eq!(
            parse(&envelope("SIAMO.TILTAKGJENNOMFORING", "I", None, Some(instance))).unwrap(),
            Change::Instance { id: 1016, code: "ARBTREN".into(), employer_id: Some(1014) }
        );
        let expected = Participation {
            id: 1017,
            person_id: 1001,
            instance_id: 1016,
            status: "GJENN".into(),
            reason: None,
            from: Some(day(2026, 3, 2)),
            to: Some(day(2026, 6, 30)),
            percent: Some(80.0),
        };
        assert_eq!(
            parse(&envelope("SIAMO.TILTAKDELTAKER", "I", None, Some(row("GJENN", None)))).unwrap(),
            Change::Participation { row: expected.clone(), unchanged: false }
        );
        assert_eq!(
            parse(&envelope("SIAMO.TILTAKDELTAKER", "U", Some(row("GJENN", None)), Some(row("GJENN", None)))).unwrap(),
            Change::Participation { row: expected.clone(), unchanged: true },
            "an U with identical images is recognised"
        );
        assert_eq!(
            parse(&envelope("SIAMO.TILTAKDELTAKER", "D", Some(row("GJENN", None)), None)).unwrap(),
            Change::Deleted(expected)
        );
        assert_eq!(parse(&envelope("SIAMO.SAK", "I", None, Some(json!({"SAK_ID": 1}))),).unwrap(), Change::Other);
    }

    #[test]
    fn only_the_columns_the_gateway_reads_are_kept() {
        let e = envelope("SIAMO.TILTAKDELTAKER", "U", Some(row("GJENN", None)), Some(row("FULLF", Some("BEGA"))));
        let kept = e.redacted();
        let after = kept.after.as_ref().unwrap();
        assert!(after.get("REG_USER").is_none() && after.get("MOD_USER").is_none(), "no caseworker idents");
        assert_eq!(after["AARSAKVERDIKODE_STATUS"], "BEGA");
        assert_eq!(parse(&kept).unwrap(), parse(&e).unwrap(), "reads the same");
        let sak = envelope("SIAMO.SAK", "I", None, Some(json!({"SAK_ID": 1, "AETATENHET_ANSVARLIG": "0314"})));
        assert_eq!(sak.redacted().after, Some(json!({})), "tables the gateway does not read keep nothing");
    }

    #[test]
    fn malformed_envelopes_say_what_is_wrong() {
        let no_after = parse(&envelope("SIAMO.TILTAKDELTAKER", "I", None, None)).unwrap_err();
        assert!(no_after.contains("no after image"), "{no_after}");
        let mut bad_date = row("GJENN", None);
        bad_date["DATO_FRA"] = json!("2026-3-2");
        let e = parse(&envelope("SIAMO.TILTAKDELTAKER", "I", None, Some(bad_date))).unwrap_err();
        assert!(e.contains("yyyy-MM-dd HH:mm:ss"), "{e}");
        let e = parse(&envelope("SIAMO.TILTAKDELTAKER", "X", None, Some(row("GJENN", None)))).unwrap_err();
        assert!(e.contains("op_type X"), "{e}");
    }

    fn fact(status: &str, reason: Option<&str>, known: bool, today: NaiveDate) -> MeasureFact {
        let Change::Participation { row, .. } =
            parse(&envelope("SIAMO.TILTAKDELTAKER", "I", None, Some(row(status, reason)))).unwrap()
        else {
            unreachable!()
        };
        measure(&row, "MIDLONTIL", Some("974760673"), false, known, today).unwrap()
    }

    #[test]
    fn a_running_participation_is_an_active_measure_owned_by_nav() {
        let MeasureFact::Measure { measure, began_work } = fact("GJENN", None, false, day(2026, 3, 10)) else {
            panic!("a running participation is a measure")
        };
        assert_eq!(
            measure,
            Measure {
                id: "arena-1017".into(),
                kind: MeasureKind::TemporaryWageSubsidy as i32,
                employer_orgnr: "974760673".into(),
                position_percent: 80,
                start_date: Some(Date { year: 2026, month: 3, day: 2 }),
                end_date: Some(Date { year: 2026, month: 6, day: 30 }),
                status: MeasureStatus::Active as i32,
                end_reason: 0,
            }
        );
        assert!(!began_work);
        let MeasureFact::Measure { measure, .. } = fact("GJENN", None, false, day(2026, 2, 1)) else { panic!() };
        assert_eq!(measure.status, MeasureStatus::Planned as i32, "GJENN with a future start has not started");
    }

    #[test]
    fn bega_ends_the_measure_and_says_work_began() {
        let MeasureFact::Measure { measure, began_work } = fact("FULLF", Some("BEGA"), true, day(2026, 7, 1)) else {
            panic!()
        };
        assert_eq!(measure.status, MeasureStatus::Completed as i32);
        assert_eq!(measure.end_reason, MeasureEndReason::BeganWork as i32);
        assert!(began_work);
        let MeasureFact::Measure { measure, began_work } = fact("DELAVB", Some("SYK"), true, day(2026, 7, 1)) else {
            panic!()
        };
        assert_eq!(measure.status, MeasureStatus::Discontinued as i32);
        assert_eq!(measure.end_reason, MeasureEndReason::Illness as i32);
        assert!(!began_work);
    }

    #[test]
    fn feilreg_and_refusals_count_nowhere() {
        let MeasureFact::Measure { measure: known, .. } = fact("FEILREG", None, true, day(2026, 3, 10)) else {
            panic!()
        };
        assert_eq!(known.status, MeasureStatus::RegisteredInError as i32, "a known measure is kept for history");
        assert!(matches!(fact("FEILREG", None, false, day(2026, 3, 10)), MeasureFact::NotTaken(_)));
        assert!(matches!(fact("AVSLAG", None, false, day(2026, 3, 10)), MeasureFact::NotTaken(_)));
        assert!(matches!(fact("AKTUELL", None, false, day(2026, 3, 10)), MeasureFact::NotTaken(_)));
        let Change::Participation { row, .. } =
            parse(&envelope("SIAMO.TILTAKDELTAKER", "I", None, Some(row("GJENN", None)))).unwrap()
        else {
            unreachable!()
        };
        let MeasureFact::Measure { measure: deleted, .. } =
            measure(&row, "ARBTREN", None, true, true, day(2026, 3, 10)).unwrap()
        else {
            panic!()
        };
        assert_eq!(deleted.status, MeasureStatus::RegisteredInError as i32, "a deleted row was registered in error");
    }

    #[test]
    fn measure_codes_map_to_kinds() {
        for (code, kind) in [
            ("ARBTREN", MeasureKind::WorkTraining),
            ("MIDLONTIL", MeasureKind::TemporaryWageSubsidy),
            ("VARLONTIL", MeasureKind::PermanentWageSubsidy),
            ("MENTOR", MeasureKind::Mentor),
            ("ENKELAMO", MeasureKind::LabourMarketCourse),
            ("GRUPPEAMO", MeasureKind::LabourMarketCourse),
            ("ENKFAGYRKE", MeasureKind::VocationalTraining),
            ("HOYEREUTD", MeasureKind::HigherEducation),
            ("INKLUTILS", MeasureKind::InclusionGrant),
            ("JOBBK", MeasureKind::Other),
        ] {
            assert_eq!(measure_kind(code), kind, "{code}");
        }
    }
}

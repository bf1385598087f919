//! The rules of the canonical participant record: what a valid record is and
//! how each of the domain's verbs changes it. Pure functions over the
//! `hurtigspor.v1` messages; the API layer calls them, the store runs the
//! mutating ones inside the write transaction.

use super::{
    dates::{self, days_inclusive},
    hurtigspor,
    kommune::{Kommunenummer, KommunenummerError},
    national_id::{IdKind, IdMode, NationalId},
    orgnr::{NavOffice, Orgnr},
};
use crate::{
    config::ProgrammeRules,
    error::{Error, Violations},
};
use chrono::{Datelike, Months, NaiveDate};
use hurtigspor_proto::v1::Hurtigspor;
use hurtigspor_proto::v1::{
    CompetenceMapping, DecisionMaker, HurtigsporStatus, HurtigsporTransition, IndividualPlan, LeaveReason,
    MainActivity, Measure, MeasureKind, MeasureStatus, NationalIdKind, Outcome, OutcomeKind, Participant, Programme,
    ProgrammeEndReason, ProgrammeStatus, RecognitionCase, RecognitionScheme, RecognitionStatus, ResponsibleParty,
    Warning,
};

/// Everything the rules depend on besides the record.
#[derive(Clone, Debug)]
pub struct Rules {
    pub id_mode: IdMode,
    pub programme: ProgrammeRules,
}

const MAX_NAME_CHARS: usize = 200;
const MAX_TEXT_CHARS: usize = 2000;

/// A short random id for sub-resources (measures, cases, plan goals).
pub fn new_sub_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}-{n:016x}")
}

/// Whether `id` has the shape `new_sub_id(prefix)` gives.
fn is_sub_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn text(value: &str, field: &str, required: bool, max: usize, v: &mut Violations) {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        if required {
            v.add(field, "REQUIRED", "is required and must not be blank");
        }
        return;
    }
    if value.chars().count() > max {
        v.add(field, "TOO_LONG", format!("must be at most {max} characters"));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        v.add(field, "CONTROL_CHARACTERS", "must not contain control characters");
    }
}

fn country_code(value: &str, field: &str, v: &mut Violations) {
    let valid = value.is_empty() || (value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()));
    if !valid {
        v.add(field, "INVALID_COUNTRY_CODE", "must be an ISO 3166-1 alpha-2 code in capitals, e.g. SY or UA");
    }
}

fn enum_value<E: TryFrom<i32>>(value: i32, field: &str, required: bool, v: &mut Violations) {
    if E::try_from(value).is_err() {
        v.add(field, "UNKNOWN_ENUM_VALUE", "is not a known value of its enum; check the contract version");
    } else if required && value == 0 {
        v.add(field, "REQUIRED", "is required: choose a value other than UNSPECIFIED");
    }
}

fn orgnr(value: &str, field: &str, required: bool, v: &mut Violations) {
    if value.is_empty() {
        if required {
            v.add(field, "REQUIRED", "is required: the employer's 9-digit organisation number");
        }
        return;
    }
    if let Err(e) = Orgnr::parse(value) {
        v.add(field, "INVALID_ORGNR", e.to_string());
    }
}

fn percent(value: i32, field: &str, v: &mut Violations) {
    if !(0..=100).contains(&value) {
        v.add(field, "OUT_OF_RANGE", "must be between 1 and 100 (0 means not given)");
    }
}

/// A validated new participant, ready to store.
#[derive(Debug)]
pub struct NewRecord {
    pub national_id: NationalId,
    pub record: Participant,
}

/// Validates a create request's participant into a clean record. Output-only
/// fields in the input are ignored.
pub fn validate_new(input: &Participant, rules: &Rules, today: NaiveDate) -> Result<NewRecord, Error> {
    let mut v = Violations::new();
    let national_id = if input.national_id.trim().is_empty() {
        v.add("participant.national_id", "REQUIRED", "is required: the participant's fodselsnummer or D-nummer");
        None
    } else {
        match NationalId::parse(&input.national_id, rules.id_mode, today) {
            Ok(id) => Some(id),
            Err(e) => {
                v.add("participant.national_id", national_id_reason(e), e.to_string());
                None
            }
        }
    };
    let input_programme = input.programme.clone().unwrap_or_default();
    let mut record = Participant {
        given_name: input.given_name.trim().to_owned(),
        family_name: input.family_name.trim().to_owned(),
        kommunenummer: input.kommunenummer.trim().to_owned(),
        nav_office: input.nav_office.trim().to_owned(),
        programme: Some(Programme {
            start_date: input_programme.start_date,
            planned_end_date: input_programme.planned_end_date,
            status: ProgrammeStatus::Active as i32,
            direction: input_programme.direction,
            leave_periods: input_programme.leave_periods,
            extended_for_special_reasons: input_programme.extended_for_special_reasons,
            end_date: None,
            end_reason: 0,
            main_activity_at_exit: 0,
        }),
        hurtigspor: Some(Hurtigspor { status: HurtigsporStatus::NotAssessed as i32, ..Default::default() }),
        competence: input.competence.clone(),
        plan: input.plan.clone(),
        outcome: input.outcome.clone(),
        ..Default::default()
    };
    if input.programme.is_none() {
        v.add("participant.programme", "REQUIRED", "is required, with at least programme.start_date");
    }
    if let Some(id) = &national_id {
        record.birth_date = Some(dates::to_proto(id.birth_date()));
        record.national_id_kind = match id.kind() {
            IdKind::Fodselsnummer => NationalIdKind::Fodselsnummer,
            IdKind::DNummer => NationalIdKind::DNummer,
        } as i32;
    }
    if let Some(plan) = record.plan.as_mut() {
        assign_goal_ids(plan, None, "participant.plan", &mut v);
    }
    validate_record(&record, "participant", &rules.programme, today, &mut v);
    v.check()?;
    Ok(NewRecord { national_id: national_id.expect("checked above"), record })
}

fn national_id_reason(e: super::national_id::NationalIdError) -> &'static str {
    use super::national_id::NationalIdError::*;
    match e {
        Format => "INVALID_FORMAT",
        Checksum => "INVALID_CHECK_DIGITS",
        Date => "INVALID_BIRTH_DATE",
        FutureBirthDate => "FUTURE_BIRTH_DATE",
        FhNumber => "FH_NUMBER_NOT_ALLOWED",
        HNumber => "H_NUMBER_NOT_ALLOWED",
        SyntheticInProduction => "SYNTHETIC_NUMBER_NOT_ALLOWED",
    }
}

/// Validates a national id for lookups, with the same rules as on create.
pub fn parse_national_id(value: &str, field: &str, rules: &Rules, today: NaiveDate) -> Result<NationalId, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "REQUIRED", "is required: a fodselsnummer or D-nummer"));
    }
    NationalId::parse(value, rules.id_mode, today)
        .map_err(|e| Error::invalid(field, national_id_reason(e), e.to_string()))
}

/// Checks a whole record (after create or update); `prefix` is the request
/// field that holds it.
pub fn validate_record(p: &Participant, prefix: &str, rules: &ProgrammeRules, today: NaiveDate, v: &mut Violations) {
    text(&p.given_name, &format!("{prefix}.given_name"), true, MAX_NAME_CHARS, v);
    text(&p.family_name, &format!("{prefix}.family_name"), true, MAX_NAME_CHARS, v);
    let kommune_field = format!("{prefix}.kommunenummer");
    if p.kommunenummer.is_empty() {
        v.add(kommune_field, "REQUIRED", "is required: the 4-digit municipality code, e.g. 0301");
    } else if let Err(e) = Kommunenummer::parse(&p.kommunenummer) {
        let reason = match e {
            KommunenummerError::Format => "INVALID_FORMAT",
            KommunenummerError::Unknown => "UNKNOWN_KOMMUNE",
        };
        v.add(kommune_field, reason, e.to_string());
    }
    if !p.nav_office.is_empty()
        && let Err(e) = NavOffice::parse(&p.nav_office)
    {
        v.add(format!("{prefix}.nav_office"), "INVALID_FORMAT", e.to_string());
    }
    if let Some(programme) = &p.programme {
        validate_programme(programme, &format!("{prefix}.programme"), rules, v);
    }
    if let Some(c) = &p.competence {
        validate_competence(c, &format!("{prefix}.competence"), today, v);
    }
    if let Some(plan) = &p.plan {
        validate_plan(plan, &format!("{prefix}.plan"), v);
    }
    if let Some(o) = &p.outcome {
        validate_outcome(o, &format!("{prefix}.outcome"), today, v);
    }
}

fn validate_programme(p: &Programme, prefix: &str, rules: &ProgrammeRules, v: &mut Violations) {
    let start = dates::required(p.start_date.as_ref(), &format!("{prefix}.start_date"), v);
    let planned_field = format!("{prefix}.planned_end_date");
    let planned_end = dates::optional(p.planned_end_date.as_ref(), &planned_field, v);
    enum_value::<hurtigspor_proto::v1::ProgrammeDirection>(p.direction, &format!("{prefix}.direction"), false, v);

    let mut leave: Vec<(NaiveDate, NaiveDate, usize)> = Vec::new();
    for (i, l) in p.leave_periods.iter().enumerate() {
        let f = format!("{prefix}.leave_periods[{i}]");
        let ls = dates::required(l.start_date.as_ref(), &format!("{f}.start_date"), v);
        let le = dates::required(l.end_date.as_ref(), &format!("{f}.end_date"), v);
        enum_value::<LeaveReason>(l.reason, &format!("{f}.reason"), true, v);
        if let (Some(ls), Some(le)) = (ls, le) {
            if le < ls {
                v.add(format!("{f}.end_date"), "END_BEFORE_START", "must not be before the leave's start_date");
                continue;
            }
            if start.is_some_and(|s| ls < s) {
                v.add(format!("{f}.start_date"), "OUTSIDE_PROGRAMME", "must not be before the programme's start_date");
            }
            let programme_end = p.end_date.as_ref().and_then(dates::from_proto).or(planned_end);
            if programme_end.is_some_and(|e| le > e) {
                v.add(format!("{f}.end_date"), "OUTSIDE_PROGRAMME", "must not be after the programme's (planned) end");
            }
            leave.push((ls, le, i));
        }
    }
    leave.sort();
    for w in leave.windows(2) {
        if w[1].0 <= w[0].1 {
            v.add(
                format!("{prefix}.leave_periods[{}]", w[1].2),
                "OVERLAPPING_LEAVE",
                format!("overlaps leave_periods[{}]; merge or shorten them", w[0].2),
            );
        }
    }

    if let (Some(start), Some(end)) = (start, planned_end) {
        if end < start {
            v.add(planned_field, "END_BEFORE_START", "must not be before programme.start_date");
        } else {
            let leave_days: i64 = leave.iter().map(|(s, e, _)| days_inclusive(*s, *e)).sum();
            let months =
                if p.extended_for_special_reasons { rules.extended_max_months } else { rules.normal_max_months };
            let last_allowed = start
                .checked_add_months(Months::new(months))
                .and_then(|d| d.checked_add_signed(chrono::Duration::days(leave_days - 1)));
            if last_allowed.is_none_or(|last| end > last) {
                let hint = if p.extended_for_special_reasons {
                    String::new()
                } else {
                    format!(
                        "; with special reasons set programme.extended_for_special_reasons to allow up to {} months",
                        rules.extended_max_months
                    )
                };
                v.add(
                    planned_field,
                    "PROGRAMME_TOO_LONG",
                    format!(
                        "makes the programme longer than {months} months plus approved leave (last allowed day {}){hint}",
                        last_allowed.map_or_else(|| "-".to_owned(), |d| d.to_string())
                    ),
                );
            }
        }
    }
}

fn validate_competence(c: &CompetenceMapping, prefix: &str, today: NaiveDate, v: &mut Violations) {
    let mapped_field = format!("{prefix}.mapped_date");
    if dates::optional(c.mapped_date.as_ref(), &mapped_field, v).is_some_and(|d| d > today) {
        v.add(mapped_field, "FUTURE_DATE", "must not be in the future");
    }
    for (i, e) in c.educations.iter().enumerate() {
        let f = format!("{prefix}.educations[{i}]");
        enum_value::<hurtigspor_proto::v1::EducationLevel>(e.level, &format!("{f}.level"), true, v);
        text(&e.field, &format!("{f}.field"), false, MAX_NAME_CHARS, v);
        country_code(&e.country_code, &format!("{f}.country_code"), v);
        if e.completed_year != 0 && !(1900..=today.year()).contains(&e.completed_year) {
            v.add(
                format!("{f}.completed_year"),
                "OUT_OF_RANGE",
                "must be a year from 1900 to this year, or 0 if unknown",
            );
        }
    }
    for (i, w) in c.work_experiences.iter().enumerate() {
        let f = format!("{prefix}.work_experiences[{i}]");
        text(&w.occupation, &format!("{f}.occupation"), true, MAX_NAME_CHARS, v);
        let styrk = &w.styrk08_code;
        if !(styrk.is_empty() || (styrk.len() == 4 && styrk.bytes().all(|b| b.is_ascii_digit()))) {
            v.add(format!("{f}.styrk08_code"), "INVALID_FORMAT", "must be a 4-digit STYRK-08 code, e.g. 2221");
        }
        if !(0.0..=60.0).contains(&w.years) {
            v.add(format!("{f}.years"), "OUT_OF_RANGE", "must be between 0 and 60");
        }
        country_code(&w.country_code, &format!("{f}.country_code"), v);
    }
    enum_value::<hurtigspor_proto::v1::CefrLevel>(c.norwegian_level, &format!("{prefix}.norwegian_level"), false, v);
    enum_value::<hurtigspor_proto::v1::CefrLevel>(c.english_level, &format!("{prefix}.english_level"), false, v);
    text(&c.own_goal, &format!("{prefix}.own_goal"), false, MAX_TEXT_CHARS, v);
}

fn validate_plan(plan: &IndividualPlan, prefix: &str, v: &mut Violations) {
    text(&plan.main_goal, &format!("{prefix}.main_goal"), false, MAX_TEXT_CHARS, v);
    for (i, g) in plan.goals.iter().enumerate() {
        let f = format!("{prefix}.goals[{i}]");
        text(&g.description, &format!("{f}.description"), true, MAX_TEXT_CHARS, v);
        text(&g.measure, &format!("{f}.measure"), true, MAX_TEXT_CHARS, v);
        let s = dates::optional(g.start_date.as_ref(), &format!("{f}.start_date"), v);
        let e = dates::optional(g.end_date.as_ref(), &format!("{f}.end_date"), v);
        if let (Some(s), Some(e)) = (s, e)
            && e < s
        {
            v.add(format!("{f}.end_date"), "END_BEFORE_START", "must not be before start_date");
        }
        enum_value::<ResponsibleParty>(g.responsible, &format!("{f}.responsible"), true, v);
    }
}

/// Gives new goals an id and checks that given ids belong to `current`.
fn assign_goal_ids(plan: &mut IndividualPlan, current: Option<&IndividualPlan>, prefix: &str, v: &mut Violations) {
    let mut seen = std::collections::HashSet::new();
    for (i, g) in plan.goals.iter_mut().enumerate() {
        if g.id.is_empty() {
            g.id = new_sub_id("g");
        } else if !current.is_some_and(|c| c.goals.iter().any(|cg| cg.id == g.id)) {
            v.add(
                format!("{prefix}.goals[{i}].id"),
                "UNKNOWN_GOAL",
                "is not a goal of the current plan; leave id empty for a new goal",
            );
        }
        if !seen.insert(g.id.clone()) {
            v.add(format!("{prefix}.goals[{i}].id"), "DUPLICATE_GOAL", "appears twice in the plan");
        }
    }
}

fn validate_outcome(o: &Outcome, prefix: &str, today: NaiveDate, v: &mut Violations) {
    enum_value::<OutcomeKind>(o.kind, &format!("{prefix}.kind"), true, v);
    let date_field = format!("{prefix}.date");
    if dates::required(o.date.as_ref(), &date_field, v).is_some_and(|d| d > today) {
        v.add(date_field, "FUTURE_DATE", "must not be in the future");
    }
    let employment =
        matches!(OutcomeKind::try_from(o.kind), Ok(OutcomeKind::EmploymentFull | OutcomeKind::EmploymentPart));
    orgnr(&o.employer_orgnr, &format!("{prefix}.employer_orgnr"), false, v);
    percent(o.position_percent, &format!("{prefix}.position_percent"), v);
    if employment && o.position_percent != 0 {
        let full = o.kind == OutcomeKind::EmploymentFull as i32;
        if full != (o.position_percent >= 70) {
            v.add(
                format!("{prefix}.position_percent"),
                "INCONSISTENT_WITH_KIND",
                "EMPLOYMENT_FULL needs at least 70 percent, EMPLOYMENT_PART less than 70",
            );
        }
    }
}

/// Paths `UpdateParticipant` accepts, and the ones it refuses with a hint.
pub const UPDATABLE_PATHS: &[&str] = &[
    "given_name",
    "family_name",
    "kommunenummer",
    "nav_office",
    "programme.start_date",
    "programme.planned_end_date",
    "programme.direction",
    "programme.leave_periods",
    "programme.extended_for_special_reasons",
    "competence",
    "plan",
    "outcome",
];

fn refused_path_hint(path: &str) -> Option<&'static str> {
    Some(match path {
        "name" | "etag" | "create_time" | "update_time" | "birth_date" | "national_id_kind" | "warnings" => {
            "is output only"
        }
        "national_id" => "cannot change; register a new participant if the number was wrong",
        "hurtigspor" | "hurtigspor.status" => "is changed with TransitionHurtigspor",
        "measures" => "is changed with RecordMeasure and EndMeasure",
        "recognition_cases" => "is changed with OpenRecognitionCase",
        "programme"
        | "programme.status"
        | "programme.end_date"
        | "programme.end_reason"
        | "programme.main_activity_at_exit" => {
            "cannot be updated as a whole or is set by EndProgramme; name the programme fields to change, e.g. programme.planned_end_date"
        }
        _ => return None,
    })
}

/// Applies an update mask to `current`, then validates the result.
pub fn apply_update(
    current: &mut Participant,
    input: &Participant,
    paths: &[String],
    rules: &Rules,
    today: NaiveDate,
) -> Result<(), Error> {
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add(
            "update_mask",
            "REQUIRED",
            format!("is required: name the fields to change, from {}", UPDATABLE_PATHS.join(", ")),
        );
    }
    for (i, path) in paths.iter().enumerate() {
        if UPDATABLE_PATHS.contains(&path.as_str()) {
            continue;
        }
        let hint = refused_path_hint(path).map_or_else(
            || format!("is not a field of Participant; updatable fields are {}", UPDATABLE_PATHS.join(", ")),
            |h| format!("`{path}` {h}"),
        );
        v.add(format!("update_mask.paths[{i}]"), "FIELD_NOT_UPDATABLE", hint);
    }
    v.check()?;

    let mut v = Violations::new();
    let input_programme = input.programme.clone().unwrap_or_default();
    for path in paths {
        match path.as_str() {
            "given_name" => current.given_name = input.given_name.trim().to_owned(),
            "family_name" => current.family_name = input.family_name.trim().to_owned(),
            "kommunenummer" => current.kommunenummer = input.kommunenummer.trim().to_owned(),
            "nav_office" => current.nav_office = input.nav_office.trim().to_owned(),
            "competence" => current.competence = input.competence.clone(),
            "plan" => {
                let mut plan = input.plan.clone();
                if let Some(plan) = plan.as_mut() {
                    assign_goal_ids(plan, current.plan.as_ref(), "participant.plan", &mut v);
                }
                current.plan = plan;
            }
            "outcome" => current.outcome = input.outcome.clone(),
            programme_path => {
                let programme = current.programme.get_or_insert_with(Default::default);
                match programme_path {
                    "programme.start_date" => programme.start_date = input_programme.start_date,
                    "programme.planned_end_date" => programme.planned_end_date = input_programme.planned_end_date,
                    "programme.direction" => programme.direction = input_programme.direction,
                    "programme.leave_periods" => programme.leave_periods = input_programme.leave_periods.clone(),
                    "programme.extended_for_special_reasons" => {
                        programme.extended_for_special_reasons = input_programme.extended_for_special_reasons;
                    }
                    _ => unreachable!("paths were checked against UPDATABLE_PATHS"),
                }
            }
        }
    }
    validate_record(current, "participant", &rules.programme, today, &mut v);
    check_history_still_fits(current, &mut v);
    v.check()
}

/// After a corrected programme start, earlier facts must not predate it.
fn check_history_still_fits(p: &Participant, v: &mut Violations) {
    let Some(start) = p.programme.as_ref().and_then(|pr| pr.start_date.as_ref()).and_then(dates::from_proto) else {
        return;
    };
    let first_transition = p
        .hurtigspor
        .as_ref()
        .and_then(|h| h.history.iter().filter_map(|t| t.effective_date.as_ref().and_then(dates::from_proto)).min());
    if first_transition.is_some_and(|d| d < start) {
        v.add(
            "participant.programme.start_date",
            "AFTER_RECORDED_FACTS",
            "is after the first hurtigspor transition; a programme cannot start after facts recorded in it",
        );
    }
}

fn current_status(p: &Participant) -> HurtigsporStatus {
    p.hurtigspor
        .as_ref()
        .and_then(|h| HurtigsporStatus::try_from(h.status).ok())
        .filter(|s| *s != HurtigsporStatus::Unspecified)
        .unwrap_or(HurtigsporStatus::NotAssessed)
}

fn programme_ended(p: &Participant) -> bool {
    p.programme.as_ref().is_some_and(|pr| pr.end_date.is_some())
}

/// A validated hurtigspor transition request.
#[derive(Clone, Debug)]
pub struct TransitionInput {
    pub to: HurtigsporStatus,
    pub decided_by: DecisionMaker,
    pub reason: String,
    pub effective_date: NaiveDate,
}

/// Checks the request fields of a transition (before any record is read).
pub fn validate_transition_input(
    status: i32,
    decided_by: i32,
    reason: &str,
    effective: Option<&hurtigspor_proto::google::r#type::Date>,
    today: NaiveDate,
) -> Result<TransitionInput, Error> {
    let mut v = Violations::new();
    enum_value::<HurtigsporStatus>(status, "status", true, &mut v);
    enum_value::<DecisionMaker>(decided_by, "decided_by", false, &mut v);
    text(reason, "reason", false, MAX_TEXT_CHARS, &mut v);
    let effective_date = dates::optional(effective, "effective_date", &mut v).unwrap_or(today);
    if effective_date > today {
        v.add("effective_date", "FUTURE_DATE", "must not be in the future; record the transition when it has happened");
    }
    v.check()?;
    Ok(TransitionInput {
        to: HurtigsporStatus::try_from(status).expect("checked"),
        decided_by: DecisionMaker::try_from(decided_by).expect("checked"),
        reason: reason.trim().to_owned(),
        effective_date,
    })
}

/// Moves the hurtigspor status, or refuses and changes nothing.
pub fn transition(p: &mut Participant, t: &TransitionInput, now: prost_types::Timestamp) -> Result<(), Error> {
    let from = current_status(p);
    if programme_ended(p) {
        return Err(Error::precondition(
            "PROGRAMME_ENDED",
            "programme.end_date",
            "the introduction programme has ended; hurtigspor can no longer change",
        ));
    }
    if !hurtigspor::allowed(from, t.to) {
        let next: Vec<_> = hurtigspor::next_statuses(from).into_iter().map(hurtigspor::short_name).collect();
        let allowed = if next.is_empty() { "none: it has ended".to_owned() } else { next.join(", ") };
        return Err(Error::precondition(
            "ILLEGAL_TRANSITION",
            "hurtigspor.status",
            format!(
                "hurtigspor cannot move from {} to {}; allowed next: {allowed}",
                hurtigspor::short_name(from),
                hurtigspor::short_name(t.to)
            ),
        ));
    }
    if t.to == HurtigsporStatus::Candidate && p.competence.as_ref().is_none_or(|c| c.mapped_date.is_none()) {
        return Err(Error::precondition(
            "COMPETENCE_MAPPING_MISSING",
            "competence.mapped_date",
            "a candidate needs a competence mapping that found skills employers want; record it with RecordCompetenceMapping first",
        ));
    }
    let decided_by = match (t.to, t.decided_by) {
        (HurtigsporStatus::Confirmed, DecisionMaker::Unspecified | DecisionMaker::Joint) => DecisionMaker::Joint,
        (HurtigsporStatus::Confirmed, _) => {
            return Err(Error::precondition(
                "JOINT_DECISION_REQUIRED",
                "decided_by",
                "hurtigspor is confirmed only by kommune and NAV together in a joint meeting; send decided_by DECISION_MAKER_JOINT",
            ));
        }
        (_, d) => d,
    };
    let programme_start = p.programme.as_ref().and_then(|pr| pr.start_date.as_ref()).and_then(dates::from_proto);
    if programme_start.is_some_and(|s| t.effective_date < s) {
        return Err(Error::invalid(
            "effective_date",
            "BEFORE_PROGRAMME_START",
            "must not be before the programme's start_date",
        ));
    }
    let h = p.hurtigspor.get_or_insert_with(Default::default);
    let last = h.history.iter().filter_map(|x| x.effective_date.as_ref().and_then(dates::from_proto)).max();
    if last.is_some_and(|l| t.effective_date < l) {
        return Err(Error::invalid(
            "effective_date",
            "BEFORE_PREVIOUS_TRANSITION",
            "must not be before the previous hurtigspor transition's effective_date",
        ));
    }
    let date = Some(dates::to_proto(t.effective_date));
    match t.to {
        HurtigsporStatus::Candidate => h.candidate_date = date,
        HurtigsporStatus::Confirmed => h.start_date = date,
        s if hurtigspor::is_terminal(s) => h.end_date = date,
        _ => {}
    }
    h.status = t.to as i32;
    h.decided_by = decided_by as i32;
    h.history.push(HurtigsporTransition {
        from_status: from as i32,
        to_status: t.to as i32,
        effective_date: date,
        decided_by: decided_by as i32,
        reason: t.reason.clone(),
        record_time: Some(now),
    });
    Ok(())
}

/// A validated end-of-programme request.
#[derive(Clone, Debug)]
pub struct EndInput {
    pub end_date: NaiveDate,
    pub reason: ProgrammeEndReason,
    pub main_activity: MainActivity,
}

pub fn validate_end_input(
    end_date: Option<&hurtigspor_proto::google::r#type::Date>,
    reason: i32,
    main_activity: i32,
) -> Result<EndInput, Error> {
    let mut v = Violations::new();
    let end = dates::required(end_date, "end_date", &mut v);
    enum_value::<ProgrammeEndReason>(reason, "end_reason", true, &mut v);
    enum_value::<MainActivity>(main_activity, "main_activity", false, &mut v);
    v.check()?;
    Ok(EndInput {
        end_date: end.expect("checked"),
        reason: ProgrammeEndReason::try_from(reason).expect("checked"),
        main_activity: MainActivity::try_from(main_activity).expect("checked"),
    })
}

/// Ends the introduction programme, or refuses and changes nothing.
pub fn end_programme(p: &mut Participant, e: &EndInput) -> Result<(), Error> {
    if programme_ended(p) {
        return Err(Error::precondition(
            "PROGRAMME_ALREADY_ENDED",
            "programme.end_date",
            "the programme has already ended; correct its dates with UpdateParticipant if they were wrong",
        ));
    }
    let status = current_status(p);
    if status == HurtigsporStatus::Candidate || hurtigspor::is_active(status) {
        let what = if status == HurtigsporStatus::Candidate {
            "confirm or reject the candidacy (TransitionHurtigspor) first".to_owned()
        } else {
            "move it to EMPLOYED, BACK_TO_ORDINARY or ENDED_WITHOUT_RESULT (TransitionHurtigspor) first".to_owned()
        };
        return Err(Error::precondition(
            "HURTIGSPOR_STILL_OPEN",
            "hurtigspor.status",
            format!("hurtigspor is {}; {what}", hurtigspor::short_name(status)),
        ));
    }
    let programme = p.programme.get_or_insert_with(Default::default);
    if programme.start_date.as_ref().and_then(dates::from_proto).is_some_and(|s| e.end_date < s) {
        return Err(Error::invalid("end_date", "END_BEFORE_START", "must not be before the programme's start_date"));
    }
    programme.end_date = Some(dates::to_proto(e.end_date));
    programme.end_reason = e.reason as i32;
    programme.main_activity_at_exit = e.main_activity as i32;
    programme.status = match e.reason {
        ProgrammeEndReason::Completed => ProgrammeStatus::Completed,
        ProgrammeEndReason::PermanentStop => ProgrammeStatus::Terminated,
        _ => ProgrammeStatus::Interrupted,
    } as i32;
    Ok(())
}

/// Validates a new measure and fills in what the gateway assigns.
pub fn new_measure(input: &Measure, today: NaiveDate) -> Result<Measure, Error> {
    let mut v = Violations::new();
    enum_value::<MeasureKind>(input.kind, "measure.kind", true, &mut v);
    let kind = MeasureKind::try_from(input.kind).unwrap_or_default();
    let needs_employer = matches!(
        kind,
        MeasureKind::WorkTraining
            | MeasureKind::TemporaryWageSubsidy
            | MeasureKind::PermanentWageSubsidy
            | MeasureKind::Mentor
    );
    orgnr(&input.employer_orgnr, "measure.employer_orgnr", needs_employer, &mut v);
    percent(input.position_percent, "measure.position_percent", &mut v);
    let start = dates::required(input.start_date.as_ref(), "measure.start_date", &mut v);
    let end = dates::optional(input.end_date.as_ref(), "measure.end_date", &mut v);
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        v.add("measure.end_date", "END_BEFORE_START", "must not be before measure.start_date");
    }
    v.check()?;
    let start = start.expect("checked");
    Ok(Measure {
        id: new_sub_id("m"),
        kind: input.kind,
        employer_orgnr: input.employer_orgnr.trim().to_owned(),
        position_percent: input.position_percent,
        start_date: input.start_date,
        end_date: input.end_date,
        status: if start > today { MeasureStatus::Planned } else { MeasureStatus::Active } as i32,
        end_reason: 0,
    })
}

/// A validated end-of-measure request.
#[derive(Clone, Debug)]
pub struct EndMeasureInput {
    pub measure_id: String,
    pub status: MeasureStatus,
    pub end_date: Option<NaiveDate>,
}

pub fn validate_end_measure(
    measure_id: &str,
    status: i32,
    end_date: Option<&hurtigspor_proto::google::r#type::Date>,
) -> Result<EndMeasureInput, Error> {
    let mut v = Violations::new();
    let id = measure_id.trim();
    if id.starts_with("arena-") {
        return Err(Error::precondition(
            "MEASURE_OWNED_BY_ARENA",
            "measure_id",
            "this measure comes from Arena, which owns it: NAV ends it in Arena and the change reaches the gateway from Arena's change feed",
        ));
    }
    if id.is_empty() {
        v.add("measure_id", "REQUIRED", "is required: the id of one of the participant's measures");
    } else if !is_sub_id(id, "m") {
        v.add(
            "measure_id",
            "INVALID_FORMAT",
            "must be a measure id as returned by RecordMeasure, e.g. m-0123456789abcdef",
        );
    }
    let s = MeasureStatus::try_from(status).unwrap_or_default();
    if !matches!(s, MeasureStatus::Completed | MeasureStatus::Discontinued | MeasureStatus::RegisteredInError) {
        v.add(
            "status",
            "INVALID_END_STATUS",
            "must be MEASURE_STATUS_COMPLETED, _DISCONTINUED or _REGISTERED_IN_ERROR",
        );
    }
    let end = if s == MeasureStatus::RegisteredInError {
        dates::optional(end_date, "end_date", &mut v)
    } else {
        dates::required(end_date, "end_date", &mut v)
    };
    v.check()?;
    Ok(EndMeasureInput { measure_id: measure_id.trim().to_owned(), status: s, end_date: end })
}

pub fn end_measure(p: &mut Participant, e: &EndMeasureInput) -> Result<(), Error> {
    let resource = format!("{}/measures/{}", p.name, e.measure_id);
    let m = p.measures.iter_mut().find(|m| m.id == e.measure_id).ok_or(Error::NotFound { resource })?;
    let current = MeasureStatus::try_from(m.status).unwrap_or_default();
    let open = matches!(current, MeasureStatus::Planned | MeasureStatus::Active);
    if current == MeasureStatus::RegisteredInError || (!open && e.status != MeasureStatus::RegisteredInError) {
        return Err(Error::precondition(
            "MEASURE_ALREADY_ENDED",
            "measure.status",
            "the measure has already ended; only marking it REGISTERED_IN_ERROR is still possible",
        ));
    }
    if let Some(end) = e.end_date {
        if m.start_date.as_ref().and_then(dates::from_proto).is_some_and(|s| end < s) {
            return Err(Error::invalid("end_date", "END_BEFORE_START", "must not be before the measure's start_date"));
        }
        m.end_date = Some(dates::to_proto(end));
    }
    m.status = e.status as i32;
    Ok(())
}

/// Validates a new recognition case and fills in what the gateway assigns.
pub fn new_recognition_case(input: &RecognitionCase, today: NaiveDate) -> Result<RecognitionCase, Error> {
    let mut v = Violations::new();
    enum_value::<RecognitionScheme>(input.scheme, "recognition_case.scheme", true, &mut v);
    text(&input.education_description, "recognition_case.education_description", false, MAX_TEXT_CHARS, &mut v);
    country_code(&input.country_code, "recognition_case.country_code", &mut v);
    v.check()?;
    Ok(RecognitionCase {
        id: new_sub_id("r"),
        scheme: input.scheme,
        education_description: input.education_description.trim().to_owned(),
        country_code: input.country_code.clone(),
        submitted_date: Some(dates::to_proto(today)),
        status: RecognitionStatus::Submitted as i32,
        documentation_complete: input.documentation_complete,
        ..Default::default()
    })
}

pub fn open_recognition_case(p: &mut Participant, mut case: RecognitionCase) -> Result<(), Error> {
    let open_same_scheme = p.recognition_cases.iter().any(|c| {
        c.scheme == case.scheme
            && matches!(
                RecognitionStatus::try_from(c.status).unwrap_or_default(),
                RecognitionStatus::Submitted
                    | RecognitionStatus::Received
                    | RecognitionStatus::InProcess
                    | RecognitionStatus::AwaitingDocumentation
            )
    });
    if open_same_scheme {
        return Err(Error::precondition(
            "RECOGNITION_CASE_OPEN",
            "recognition_cases",
            "a case under the same scheme is still open; wait for its decision before opening another",
        ));
    }
    // What the application says about its documents is fixed now.
    case.documentation_complete |= p.competence.as_ref().is_some_and(|c| c.educations.iter().any(|e| e.documented));
    p.recognition_cases.push(case);
    Ok(())
}

/// Validates a competence mapping for `RecordCompetenceMapping`.
pub fn validate_competence_input(c: Option<&CompetenceMapping>, today: NaiveDate) -> Result<CompetenceMapping, Error> {
    let Some(c) = c else {
        return Err(Error::invalid("competence", "REQUIRED", "is required: the competence mapping to record"));
    };
    let mut c = c.clone();
    if c.mapped_date.is_none() {
        c.mapped_date = Some(dates::to_proto(today));
    }
    let mut v = Violations::new();
    validate_competence(&c, "competence", today, &mut v);
    v.check()?;
    Ok(c)
}

/// Replaces the plan, keeping goal ids stable.
pub fn replace_plan(p: &mut Participant, plan: Option<&IndividualPlan>) -> Result<(), Error> {
    let Some(plan) = plan else {
        return Err(Error::invalid("plan", "REQUIRED", "is required: the whole individual plan"));
    };
    let mut plan = plan.clone();
    let mut v = Violations::new();
    assign_goal_ids(&mut plan, p.plan.as_ref(), "plan", &mut v);
    validate_plan(&plan, "plan", &mut v);
    v.check()?;
    p.plan = Some(plan);
    Ok(())
}

/// Fills in what is derived on every response: today's programme status and
/// the warnings.
pub fn present(p: &mut Participant, rules: &ProgrammeRules, today: NaiveDate) {
    for m in &mut p.measures {
        let started = m.start_date.as_ref().and_then(dates::from_proto).is_some_and(|s| s <= today);
        if m.status == MeasureStatus::Planned as i32 && started {
            m.status = MeasureStatus::Active as i32;
        }
    }
    if let Some(pr) = p.programme.as_mut()
        && pr.end_date.is_none()
    {
        let on_leave = pr.leave_periods.iter().any(|l| {
            let s = l.start_date.as_ref().and_then(dates::from_proto);
            let e = l.end_date.as_ref().and_then(dates::from_proto);
            matches!((s, e), (Some(s), Some(e)) if s <= today && today <= e)
        });
        pr.status = if on_leave { ProgrammeStatus::OnLeave } else { ProgrammeStatus::Active } as i32;
    }
    p.warnings = warnings(p, rules);
}

fn warnings(p: &Participant, rules: &ProgrammeRules) -> Vec<Warning> {
    let mut out = Vec::new();
    let birth = p.birth_date.as_ref().and_then(dates::from_proto);
    let start = p.programme.as_ref().and_then(|pr| pr.start_date.as_ref()).and_then(dates::from_proto);
    if let (Some(b), Some(s)) = (birth, start) {
        let mut age = s.year() - b.year();
        if (s.month(), s.day()) < (b.month(), b.day()) {
            age -= 1;
        }
        let (min, max) = (rules.target_age_min as i32, rules.target_age_max as i32);
        if age < min || age > max {
            out.push(Warning {
                code: "AGE_OUTSIDE_TARGET_GROUP".to_owned(),
                field: "programme.start_date".to_owned(),
                message: format!(
                    "the participant is outside the main target group ({min}-{max} years at programme start); check that the programme is the right offer"
                ),
            });
        }
    }
    if p.hurtigspor.as_ref().is_some_and(|h| h.status == HurtigsporStatus::EmployedWithSubsidy as i32)
        && !p.measures.iter().any(|m| {
            m.status == MeasureStatus::Active as i32
                && matches!(
                    MeasureKind::try_from(m.kind),
                    Ok(MeasureKind::TemporaryWageSubsidy | MeasureKind::PermanentWageSubsidy | MeasureKind::Mentor)
                )
        })
    {
        out.push(Warning {
            code: "SUBSIDY_MEASURE_MISSING".to_owned(),
            field: "measures".to_owned(),
            message: "hurtigspor is EMPLOYED_WITH_SUBSIDY but no active wage subsidy or mentor measure is recorded; NAV should record it".to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hurtigspor_proto::{google::r#type::Date, v1::LeavePeriod};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn pd(y: i32, m: u32, day: u32) -> Option<Date> {
        Some(dates::to_proto(d(y, m, day)))
    }

    fn record() -> Participant {
        Participant {
            name: "participants/x".into(),
            given_name: "A".into(),
            family_name: "B".into(),
            kommunenummer: "0301".into(),
            birth_date: pd(1990, 6, 15),
            programme: Some(Programme { start_date: pd(2026, 1, 5), ..Default::default() }),
            hurtigspor: Some(Hurtigspor { status: HurtigsporStatus::NotAssessed as i32, ..Default::default() }),
            ..Default::default()
        }
    }

    fn rules() -> ProgrammeRules {
        ProgrammeRules::default()
    }

    fn input(to: HurtigsporStatus, on: NaiveDate) -> TransitionInput {
        TransitionInput { to, decided_by: DecisionMaker::Kommune, reason: String::new(), effective_date: on }
    }

    #[test]
    fn leave_covering_today_reads_as_on_leave() {
        let mut p = record();
        p.programme.as_mut().unwrap().leave_periods = vec![LeavePeriod {
            start_date: pd(2026, 11, 1),
            end_date: pd(2026, 11, 30),
            reason: LeaveReason::Illness as i32,
        }];
        present(&mut p, &rules(), d(2026, 11, 23));
        assert_eq!(p.programme.as_ref().unwrap().status, ProgrammeStatus::OnLeave as i32);
        present(&mut p, &rules(), d(2026, 12, 1));
        assert_eq!(p.programme.as_ref().unwrap().status, ProgrammeStatus::Active as i32);
    }

    #[test]
    fn planned_measures_read_as_active_from_their_start() {
        let mut p = record();
        p.measures.push(Measure {
            status: MeasureStatus::Planned as i32,
            start_date: pd(2026, 12, 1),
            ..Default::default()
        });
        present(&mut p, &rules(), d(2026, 11, 30));
        assert_eq!(p.measures[0].status, MeasureStatus::Planned as i32);
        present(&mut p, &rules(), d(2026, 12, 1));
        assert_eq!(p.measures[0].status, MeasureStatus::Active as i32);
    }

    #[test]
    fn age_warning_boundaries_follow_configuration() {
        // Born 1990-06-15; programme starts 2026-01-05: 35 years old.
        let mut p = record();
        present(&mut p, &rules(), d(2026, 11, 23));
        assert!(p.warnings.is_empty());
        let narrow = ProgrammeRules { target_age_min: 36, ..rules() };
        present(&mut p, &narrow, d(2026, 11, 23));
        assert_eq!(p.warnings[0].code, "AGE_OUTSIDE_TARGET_GROUP");
        let exact = ProgrammeRules { target_age_min: 35, target_age_max: 35, ..rules() };
        present(&mut p, &exact, d(2026, 11, 23));
        assert!(p.warnings.is_empty(), "35 is inside 35-35");
    }

    #[test]
    fn transitions_record_dates_and_history() {
        let mut p = record();
        p.competence = Some(CompetenceMapping { mapped_date: pd(2026, 2, 1), ..Default::default() });
        let now = prost_types::Timestamp::default();
        transition(&mut p, &input(HurtigsporStatus::Candidate, d(2026, 2, 10)), now).unwrap();
        transition(&mut p, &input(HurtigsporStatus::Confirmed, d(2026, 3, 1)), now).unwrap_err();
        let joint =
            TransitionInput { decided_by: DecisionMaker::Joint, ..input(HurtigsporStatus::Confirmed, d(2026, 3, 1)) };
        transition(&mut p, &joint, now).unwrap();
        // Not before the previous transition.
        let before = input(HurtigsporStatus::Qualifying, d(2026, 2, 20));
        let err = transition(&mut p, &before, now).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(ref v) if v[0].reason == "BEFORE_PREVIOUS_TRANSITION"));
        transition(&mut p, &input(HurtigsporStatus::BackToOrdinary, d(2026, 5, 1)), now).unwrap();
        let h = p.hurtigspor.unwrap();
        assert_eq!(h.candidate_date, pd(2026, 2, 10));
        assert_eq!(h.start_date, pd(2026, 3, 1));
        assert_eq!(h.end_date, pd(2026, 5, 1));
        let path: Vec<_> = h.history.iter().map(|t| (t.from_status, t.to_status)).collect();
        use HurtigsporStatus::*;
        assert_eq!(
            path,
            [
                (NotAssessed as i32, Candidate as i32),
                (Candidate as i32, Confirmed as i32),
                (Confirmed as i32, BackToOrdinary as i32)
            ]
        );
    }

    #[test]
    fn a_refused_transition_leaves_the_record_untouched() {
        let original = record();
        for to in [HurtigsporStatus::Confirmed, HurtigsporStatus::Employed, HurtigsporStatus::Candidate] {
            let mut p = original.clone();
            assert!(transition(&mut p, &input(to, d(2026, 3, 1)), prost_types::Timestamp::default()).is_err());
            assert_eq!(p, original, "{to:?}");
        }
    }

    #[test]
    fn a_corrected_start_may_not_postdate_recorded_transitions() {
        let mut p = record();
        p.competence = Some(CompetenceMapping { mapped_date: pd(2026, 2, 1), ..Default::default() });
        transition(&mut p, &input(HurtigsporStatus::Candidate, d(2026, 2, 10)), prost_types::Timestamp::default())
            .unwrap();
        let later = Participant {
            programme: Some(Programme { start_date: pd(2026, 3, 1), ..Default::default() }),
            ..Default::default()
        };
        let rules = Rules { id_mode: crate::domain::national_id::IdMode::Test, programme: rules() };
        let err = apply_update(&mut p, &later, &["programme.start_date".into()], &rules, d(2026, 11, 23)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(ref v) if v[0].reason == "AFTER_RECORDED_FACTS"));
    }

    #[test]
    fn sub_ids() {
        let id = new_sub_id("m");
        assert!(is_sub_id(&id, "m"));
        assert!(!is_sub_id(&id, "g"));
        assert!(!is_sub_id("m-123", "m"));
        assert!(!is_sub_id("m-0123456789ABCDEF", "m"));
    }
}

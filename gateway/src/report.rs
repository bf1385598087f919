//! The hurtigspor reporting form, derived from the change log.
//!
//! Nothing here is typed by anyone for the report: each participant's
//! history (every stored version, oldest first) is folded into the dates of
//! the form ([`Derived`]), and the dates of many participants are tallied
//! into the figures of one kommune (or the country) and one year
//! ([`Tally`]). [`compute`] streams the change log one participant at a
//! time, so only one participant's history is held at once.
//!
//! The rules (also in the README, "Reporting"):
//! - Facts come from the latest version: a corrected programme start or
//!   measure start replaces the earlier one; a measure registered in error
//!   (Arena FEILREG), or no longer in the record, counts nowhere.
//! - Hurtigspor starts on the effective date of the transition to CONFIRMED
//!   and ends on the effective date of the first transition to EMPLOYED,
//!   BACK_TO_ORDINARY or ENDED_WITHOUT_RESULT, or when the programme ends,
//!   whichever is first.
//! - A period counts for a year if it overlaps it; an open period runs to
//!   the day the report is made (`as_of`), so a period starting after that
//!   counts nowhere yet.
//! - Which kommune a participant counts for in a year is the kommune of the
//!   last version stored by the end of that year (Norwegian time); when
//!   every version was stored later (a back-dated registration), the first
//!   version's kommune. A move in 2027 leaves the 2026 figures as they were.

use crate::{
    domain::dates::{from_proto, oslo_date, to_proto},
    error::Error,
    store::{ChangeLog, ChangeRecord},
};
use chrono::{DateTime, NaiveDate, Utc};
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        HurtigsporParticipantDates, HurtigsporReport, HurtigsporStatus, MeasureKind, MeasureStatus, OutcomeKind,
        Participant,
    },
};
use std::{collections::HashSet, ops::ControlFlow};

/// A measure that counts: not registered in error, with a start date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountedMeasure {
    pub kind: MeasureKind,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
    pub employer: String,
}

impl CountedMeasure {
    fn is_wage_subsidy(&self) -> bool {
        matches!(self.kind, MeasureKind::TemporaryWageSubsidy | MeasureKind::PermanentWageSubsidy)
    }

    fn is_work_training(&self) -> bool {
        self.kind == MeasureKind::WorkTraining
    }
}

/// One participant's dates for the form, and what the figures need besides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    /// The opaque participant id.
    pub id: String,
    pub programme_start: Option<NaiveDate>,
    pub programme_end: Option<NaiveDate>,
    pub hurtigspor_start: Option<NaiveDate>,
    /// The end of hurtigspor: its closing transition, or the programme's end.
    pub hurtigspor_end: Option<NaiveDate>,
    pub first_wage_subsidy_start: Option<NaiveDate>,
    pub first_work_training_start: Option<NaiveDate>,
    /// Began work of at least 70 % of full time (the employment outcome).
    pub work_full: Option<NaiveDate>,
    /// Began work under 70 % of full time.
    pub work_part: Option<NaiveDate>,
    /// Moved to EMPLOYED with no employment outcome recorded (e.g. NAV's
    /// BEGA from Arena): in work, extent not known.
    pub work_unknown: Option<NaiveDate>,
    /// Hurtigspor ended back in the ordinary programme.
    pub back_to_ordinary: Option<NaiveDate>,
    /// Hurtigspor (or the programme) ended without result.
    pub without_result: Option<NaiveDate>,
    /// The employer of the work begun, if recorded.
    pub work_employer: Option<String>,
    pub measures: Vec<CountedMeasure>,
    /// (first day, kommunenummer) from each version that changed the
    /// kommune, oldest first; the day is the Norwegian date it was stored.
    pub kommuner: Vec<(NaiveDate, String)>,
}

fn date(d: Option<&Date>) -> Option<NaiveDate> {
    d.and_then(from_proto)
}

fn stored_on(p: &Participant) -> NaiveDate {
    p.update_time
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map_or(NaiveDate::MIN, oslo_date)
}

/// Folds one participant's versions, oldest first, keeping only the latest
/// record and the kommune each version was stored under.
#[derive(Debug, Default)]
pub struct Fold {
    id: String,
    latest: Option<Participant>,
    kommuner: Vec<(NaiveDate, String)>,
}

impl Fold {
    pub fn new(id: &str) -> Self {
        Self { id: id.to_owned(), ..Default::default() }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next version of the participant.
    pub fn push(&mut self, snapshot: Participant) {
        if self.kommuner.last().is_none_or(|(_, k)| *k != snapshot.kommunenummer) {
            self.kommuner.push((stored_on(&snapshot), snapshot.kommunenummer.clone()));
        }
        self.latest = Some(snapshot);
    }

    pub fn finish(self) -> Derived {
        let Some(p) = self.latest else { return Derived { id: self.id, ..Default::default() } };
        let programme = p.programme.clone().unwrap_or_default();
        let programme_start = date(programme.start_date.as_ref());
        let programme_end = date(programme.end_date.as_ref());

        let hurtigspor = p.hurtigspor.clone().unwrap_or_default();
        let confirmed = hurtigspor
            .history
            .iter()
            .find(|t| t.to_status == HurtigsporStatus::Confirmed as i32)
            .and_then(|t| date(t.effective_date.as_ref()));
        let hurtigspor_start = confirmed.or_else(|| {
            // A record without transitions (e.g. migrated): the start field.
            let started = !matches!(
                HurtigsporStatus::try_from(hurtigspor.status).unwrap_or_default(),
                HurtigsporStatus::Unspecified
                    | HurtigsporStatus::NotAssessed
                    | HurtigsporStatus::Candidate
                    | HurtigsporStatus::Rejected
            );
            if started && hurtigspor.history.is_empty() { date(hurtigspor.start_date.as_ref()) } else { None }
        });
        let closing =
            [HurtigsporStatus::Employed, HurtigsporStatus::BackToOrdinary, HurtigsporStatus::EndedWithoutResult];
        let closed = hurtigspor
            .history
            .iter()
            .find(|t| closing.iter().any(|c| *c as i32 == t.to_status))
            .and_then(|t| Some((HurtigsporStatus::try_from(t.to_status).ok()?, date(t.effective_date.as_ref())?)));
        let hurtigspor_end = hurtigspor_start.and_then(|_| match (closed.map(|(_, d)| d), programme_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        });

        let measures: Vec<CountedMeasure> = p
            .measures
            .iter()
            .filter(|m| m.status != MeasureStatus::RegisteredInError as i32)
            .filter_map(|m| {
                Some(CountedMeasure {
                    kind: MeasureKind::try_from(m.kind).unwrap_or_default(),
                    start: date(m.start_date.as_ref())?,
                    end: date(m.end_date.as_ref()),
                    employer: m.employer_orgnr.clone(),
                })
            })
            .collect();
        let first = |f: fn(&CountedMeasure) -> bool| measures.iter().filter(|m| f(m)).map(|m| m.start).min();

        let outcome = p.outcome.clone().unwrap_or_default();
        let outcome_date = date(outcome.date.as_ref());
        let kind = OutcomeKind::try_from(outcome.kind).unwrap_or_default();
        let employed = matches!(kind, OutcomeKind::EmploymentFull | OutcomeKind::EmploymentPart);
        // The percentage decides when given; the kind otherwise.
        let full = match outcome.position_percent {
            1..=100 => outcome.position_percent >= 70,
            _ => kind == OutcomeKind::EmploymentFull,
        };
        let work = if employed { outcome_date } else { None };
        let ended_as = |s: HurtigsporStatus| closed.filter(|(c, _)| *c == s).map(|(_, d)| d);
        // EMPLOYED without an employment outcome: the work began on the
        // transition's date, but how much of full time it is, is not known.
        let work_unknown = ended_as(HurtigsporStatus::Employed).filter(|_| !employed);

        Derived {
            id: self.id,
            programme_start,
            programme_end,
            hurtigspor_start,
            hurtigspor_end,
            first_wage_subsidy_start: first(CountedMeasure::is_wage_subsidy),
            first_work_training_start: first(CountedMeasure::is_work_training),
            work_full: work.filter(|_| full),
            work_part: work.filter(|_| !full),
            work_unknown,
            back_to_ordinary: ended_as(HurtigsporStatus::BackToOrdinary),
            without_result: ended_as(HurtigsporStatus::EndedWithoutResult)
                .or(outcome_date.filter(|_| kind == OutcomeKind::NoResult)),
            work_employer: Some(outcome.employer_orgnr).filter(|e| employed && !e.is_empty()),
            measures,
            kommuner: self.kommuner,
        }
    }
}

/// 31 December of `year`; `None` for a year chrono cannot represent.
fn last_day(year: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, 12, 31)
}

/// Folds a whole history, oldest version first.
pub fn derive(id: &str, history: impl IntoIterator<Item = Participant>) -> Derived {
    let mut fold = Fold::new(id);
    for p in history {
        fold.push(p);
    }
    fold.finish()
}

impl Derived {
    /// The day work began, whatever its extent.
    pub fn work(&self) -> Option<NaiveDate> {
        self.work_full.or(self.work_part).or(self.work_unknown)
    }

    /// The participant's dates as the API gives them, for the kommune it
    /// counts for in `year`, as they stood at the end of that year: a date
    /// after it belongs to a later year's form (and, after a move, to
    /// another kommune), so it is left out, and a period open then is open.
    pub fn dates(&self, year: i32) -> HurtigsporParticipantDates {
        let last = last_day(year).unwrap_or(NaiveDate::MAX);
        let d = |d: Option<NaiveDate>| d.filter(|d| *d <= last).map(to_proto);
        HurtigsporParticipantDates {
            participant: crate::store::resource_name(&self.id),
            kommunenummer: self.kommune_in(year).unwrap_or_default().to_owned(),
            programme_start: d(self.programme_start),
            hurtigspor_start: d(self.hurtigspor_start),
            hurtigspor_end: d(self.hurtigspor_end),
            first_wage_subsidy_start: d(self.first_wage_subsidy_start),
            first_work_training_start: d(self.first_work_training_start),
            work_full_start: d(self.work_full),
            work_part_start: d(self.work_part),
            work_extent_unknown_start: d(self.work_unknown),
            back_to_ordinary: d(self.back_to_ordinary),
            ended_without_result: d(self.without_result),
        }
    }

    /// The kommune the participant counts for in `year`.
    pub fn kommune_in(&self, year: i32) -> Option<&str> {
        let end = last_day(year)?;
        self.kommuner.iter().rev().find(|(day, _)| *day <= end).or(self.kommuner.first()).map(|(_, k)| k.as_str())
    }
}

/// A calendar year, and the day open periods run to.
#[derive(Clone, Copy, Debug)]
struct Year {
    first: NaiveDate,
    last: NaiveDate,
    as_of: NaiveDate,
}

impl Year {
    fn contains(&self, d: Option<NaiveDate>) -> bool {
        d.is_some_and(|d| self.first <= d && d <= self.last && d <= self.as_of)
    }

    /// Whether `start..=end` (open: to `as_of`) overlaps the year.
    fn overlaps(&self, start: Option<NaiveDate>, end: Option<NaiveDate>) -> bool {
        let Some(start) = start else { return false };
        let end = end.unwrap_or(self.as_of).min(self.as_of);
        start <= end && start <= self.last && end >= self.first
    }
}

/// The figures of one kommune (`None`: the country) and one year, added to
/// one participant at a time.
#[derive(Debug)]
pub struct Tally {
    kommune: Option<String>,
    year: i32,
    span: Year,
    in_hurtigspor: i64,
    programme: i64,
    started: i64,
    days_to_start: i64,
    wage_subsidy: i64,
    work_training: i64,
    ended: i64,
    hurtigspor_days: i64,
    after_measure: i64,
    measure_days: i64,
    work_full: i64,
    work_part: i64,
    work_unknown: i64,
    back_to_ordinary: i64,
    without_result: i64,
    employers: HashSet<String>,
}

impl Tally {
    /// `None` for a year chrono cannot represent.
    pub fn new(kommune: Option<&str>, year: i32, as_of: NaiveDate) -> Option<Self> {
        let span = Year { first: NaiveDate::from_ymd_opt(year, 1, 1)?, last: last_day(year)?, as_of };
        Some(Self {
            kommune: kommune.map(str::to_owned),
            year,
            span,
            in_hurtigspor: 0,
            programme: 0,
            started: 0,
            days_to_start: 0,
            wage_subsidy: 0,
            work_training: 0,
            ended: 0,
            hurtigspor_days: 0,
            after_measure: 0,
            measure_days: 0,
            work_full: 0,
            work_part: 0,
            work_unknown: 0,
            back_to_ordinary: 0,
            without_result: 0,
            employers: HashSet::new(),
        })
    }

    /// Adds one participant; whether it counts in a hurtigspor figure (its
    /// hurtigspor overlaps the year, or a date of the form falls in it):
    /// the participants whose dates the per-participant listing gives.
    pub fn add(&mut self, d: &Derived) -> bool {
        if let Some(k) = &self.kommune
            && d.kommune_in(self.year) != Some(k.as_str())
        {
            return false;
        }
        let y = self.span;
        let in_hurtigspor = y.overlaps(d.hurtigspor_start, d.hurtigspor_end);
        if in_hurtigspor || y.overlaps(d.programme_start, d.programme_end) {
            self.programme += 1;
        }
        if d.hurtigspor_start.is_none() {
            return false;
        }
        let overlapping = |f: fn(&CountedMeasure) -> bool| {
            d.measures.iter().filter(move |m| f(m) && y.overlaps(Some(m.start), m.end))
        };
        if in_hurtigspor {
            self.in_hurtigspor += 1;
            self.wage_subsidy += i64::from(overlapping(CountedMeasure::is_wage_subsidy).next().is_some());
            self.work_training += i64::from(overlapping(CountedMeasure::is_work_training).next().is_some());
            let employing =
                |m: &CountedMeasure| m.is_wage_subsidy() || m.is_work_training() || m.kind == MeasureKind::Mentor;
            for m in overlapping(employing) {
                if !m.employer.is_empty() {
                    self.employers.insert(m.employer.clone());
                }
            }
        }
        if let (true, Some(start), Some(programme)) =
            (y.contains(d.hurtigspor_start), d.hurtigspor_start, d.programme_start)
        {
            self.started += 1;
            self.days_to_start += (start - programme).num_days();
        }
        if let (true, Some(start), Some(end)) = (y.contains(d.hurtigspor_end), d.hurtigspor_start, d.hurtigspor_end) {
            self.ended += 1;
            self.hurtigspor_days += (end - start).num_days();
        }
        let work = d.work();
        if y.contains(work) {
            if let Some(e) = &d.work_employer {
                self.employers.insert(e.clone());
            }
            let before = [d.first_wage_subsidy_start, d.first_work_training_start]
                .into_iter()
                .flatten()
                .filter(|s| Some(*s) <= work)
                .min();
            if let (Some(start), Some(work)) = (before, work) {
                self.after_measure += 1;
                self.measure_days += (work - start).num_days();
            }
        }
        self.work_full += i64::from(y.contains(d.work_full));
        self.work_part += i64::from(y.contains(d.work_part));
        self.work_unknown += i64::from(y.contains(d.work_unknown));
        self.back_to_ordinary += i64::from(y.contains(d.back_to_ordinary));
        self.without_result += i64::from(y.contains(d.without_result));
        in_hurtigspor
            || [d.hurtigspor_start, d.hurtigspor_end, work, d.back_to_ordinary, d.without_result]
                .into_iter()
                .any(|day| y.contains(day))
    }

    pub fn finish(self) -> HurtigsporReport {
        let mean = |sum: i64, n: i64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
        HurtigsporReport {
            kommunenummer: self.kommune.unwrap_or_default(),
            year: self.year,
            participants_in_hurtigspor: self.in_hurtigspor,
            programme_participants: self.programme,
            share_in_hurtigspor: mean(self.in_hurtigspor, self.programme),
            hurtigspor_started: self.started,
            mean_days_programme_to_hurtigspor: mean(self.days_to_start, self.started),
            with_wage_subsidy: self.wage_subsidy,
            in_work_training: self.work_training,
            hurtigspor_ended: self.ended,
            mean_hurtigspor_days: mean(self.hurtigspor_days, self.ended),
            work_after_measure: self.after_measure,
            mean_measure_days_before_work: mean(self.measure_days, self.after_measure),
            outcome_work_full: self.work_full,
            outcome_work_part: self.work_part,
            outcome_back_to_ordinary: self.back_to_ordinary,
            outcome_without_result: self.without_result,
            distinct_employers: self.employers.len() as i64,
            outcome_work_extent_unknown: self.work_unknown,
        }
    }
}

/// Change log entries read per page by [`compute`].
pub const PAGE: usize = 500;

/// Folds the change log one participant at a time, in participant id
/// order, starting after participant `after`, reading `page` entries at a
/// time; calls `each` with each participant's dates until it breaks. Only
/// one participant's history is held at once.
pub async fn each_participant(
    store: &dyn ChangeLog,
    after: Option<String>,
    page: usize,
    mut each: impl FnMut(Derived) -> ControlFlow<()>,
) -> Result<(), Error> {
    let mut fold: Option<Fold> = None;
    // Every version of `after` is behind the position (id, MAX).
    let mut position = after.map(|id| (id, i64::MAX));
    loop {
        let records: Vec<ChangeRecord> = store.histories(position.take(), page.max(1)).await?;
        let Some(last) = records.last() else { break };
        position = Some((last.participant_id.clone(), last.version));
        for r in records {
            let same = fold.as_ref().is_some_and(|f| f.id() == r.participant_id);
            if !same {
                // The previous participant's history is complete.
                let done = fold.replace(Fold::new(&r.participant_id));
                if let Some(done) = done
                    && each(done.finish()).is_break()
                {
                    return Ok(());
                }
            }
            if let Some(f) = &mut fold {
                f.push(r.snapshot);
            }
        }
    }
    if let Some(done) = fold {
        let _ = each(done.finish());
    }
    Ok(())
}

/// The report of `kommune` (`None`: the country) for `year`, reading the
/// change log `page` entries at a time, one participant's history at a
/// time. `None` if the year cannot be represented.
pub async fn compute(
    store: &dyn ChangeLog,
    kommune: Option<&str>,
    year: i32,
    as_of: NaiveDate,
    page: usize,
) -> Result<Option<HurtigsporReport>, Error> {
    let Some(mut tally) = Tally::new(kommune, year, as_of) else { return Ok(None) };
    each_participant(store, None, page, |d| {
        tally.add(&d);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(Some(tally.finish()))
}

/// One page of the participants who count in a hurtigspor figure of
/// `kommune` (`None`: the country) and `year`, after participant `after`:
/// at most `limit`, and whether more follow. `None` if the year cannot be
/// represented.
pub async fn participants(
    store: &dyn ChangeLog,
    kommune: Option<&str>,
    year: i32,
    as_of: NaiveDate,
    after: Option<String>,
    limit: usize,
) -> Result<Option<(Vec<Derived>, bool)>, Error> {
    let Some(mut tally) = Tally::new(kommune, year, as_of) else { return Ok(None) };
    let limit = limit.max(1);
    let mut found = Vec::new();
    // One more than asked for tells whether another page follows.
    each_participant(store, after, PAGE, |d| {
        if tally.add(&d) {
            found.push(d);
        }
        if found.len() > limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })
    .await?;
    let more = found.len() > limit;
    found.truncate(limit);
    Ok(Some((found, more)))
}

/// The per-participant dates as CSV columns, in a fixed order.
pub const PARTICIPANT_COLUMNS: [&str; 12] = [
    "participant",
    "kommunenummer",
    "programme_start",
    "hurtigspor_start",
    "hurtigspor_end",
    "first_wage_subsidy_start",
    "first_work_training_start",
    "work_full_start",
    "work_part_start",
    "work_extent_unknown_start",
    "back_to_ordinary",
    "ended_without_result",
];

/// One CSV row of [`PARTICIPANT_COLUMNS`]: dates as YYYY-MM-DD, empty when
/// unset (no value needs quoting: ids, kommunenummer and dates).
pub fn participant_row(p: &HurtigsporParticipantDates) -> String {
    let d = |d: &Option<Date>| d.as_ref().and_then(from_proto).map(|d| d.to_string()).unwrap_or_default();
    [
        p.participant.trim_start_matches("participants/").to_owned(),
        p.kommunenummer.clone(),
        d(&p.programme_start),
        d(&p.hurtigspor_start),
        d(&p.hurtigspor_end),
        d(&p.first_wage_subsidy_start),
        d(&p.first_work_training_start),
        d(&p.work_full_start),
        d(&p.work_part_start),
        d(&p.work_extent_unknown_start),
        d(&p.back_to_ordinary),
        d(&p.ended_without_result),
    ]
    .join(",")
}

/// The report as (column, value) pairs, in a fixed order: the CSV header
/// and row, and the CLI's table. Figures only.
pub fn columns(r: &HurtigsporReport) -> Vec<(&'static str, String)> {
    let mean = |v: f64| format!("{v:.2}");
    vec![
        ("kommunenummer", if r.kommunenummer.is_empty() { "all".to_owned() } else { r.kommunenummer.clone() }),
        ("year", r.year.to_string()),
        ("participants_in_hurtigspor", r.participants_in_hurtigspor.to_string()),
        ("programme_participants", r.programme_participants.to_string()),
        ("share_in_hurtigspor", format!("{:.4}", r.share_in_hurtigspor)),
        ("hurtigspor_started", r.hurtigspor_started.to_string()),
        ("mean_days_programme_to_hurtigspor", mean(r.mean_days_programme_to_hurtigspor)),
        ("with_wage_subsidy", r.with_wage_subsidy.to_string()),
        ("in_work_training", r.in_work_training.to_string()),
        ("hurtigspor_ended", r.hurtigspor_ended.to_string()),
        ("mean_hurtigspor_days", mean(r.mean_hurtigspor_days)),
        ("work_after_measure", r.work_after_measure.to_string()),
        ("mean_measure_days_before_work", mean(r.mean_measure_days_before_work)),
        ("outcome_work_full", r.outcome_work_full.to_string()),
        ("outcome_work_part", r.outcome_work_part.to_string()),
        ("outcome_back_to_ordinary", r.outcome_back_to_ordinary.to_string()),
        ("outcome_without_result", r.outcome_without_result.to_string()),
        ("distinct_employers", r.distinct_employers.to_string()),
        ("outcome_work_extent_unknown", r.outcome_work_extent_unknown.to_string()),
    ]
}

/// A header row and one row of figures (no value needs quoting: numbers and
/// a kommunenummer).
pub fn csv(r: &HurtigsporReport) -> String {
    let cols = columns(r);
    let header: Vec<&str> = cols.iter().map(|(k, _)| *k).collect();
    let row: Vec<&str> = cols.iter().map(|(_, v)| v.as_str()).collect();
    format!("{}\n{}\n", header.join(","), row.join(","))
}

/// The report as a table for people: one figure a line.
pub fn table(r: &HurtigsporReport) -> String {
    let cols = columns(r);
    let width = cols.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    cols.iter().map(|(k, v)| format!("{k:<width$}  {v:>10}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MockChangeLog as MockStore;
    use hurtigspor_proto::v1::{Hurtigspor, HurtigsporTransition, Measure, Outcome, Programme};

    const E1: &str = "910000001";
    const E2: &str = "910000002";
    const E3: &str = "910000003";
    const E4: &str = "910000004";
    const E5: &str = "910000005";
    const E6: &str = "910000006";

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn pd(y: i32, m: u32, d: u32) -> Option<Date> {
        Some(crate::domain::dates::to_proto(day(y, m, d)))
    }

    /// The building blocks of a hand-made history: each step changes the
    /// previous version and is stored on the given day (noon UTC).
    struct History {
        current: Participant,
        versions: Vec<Participant>,
    }

    impl History {
        fn new(kommune: &str, programme_start: (i32, u32, u32), stored: (i32, u32, u32)) -> Self {
            let (y, m, d) = programme_start;
            let current = Participant {
                kommunenummer: kommune.into(),
                programme: Some(Programme { start_date: pd(y, m, d), ..Default::default() }),
                hurtigspor: Some(Hurtigspor { status: HurtigsporStatus::NotAssessed as i32, ..Default::default() }),
                ..Default::default()
            };
            let mut h = Self { current, versions: Vec::new() };
            h.store(stored);
            h
        }

        fn store(&mut self, (y, m, d): (i32, u32, u32)) {
            let t = day(y, m, d).and_hms_opt(12, 0, 0).unwrap().and_utc();
            self.current.update_time = Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 });
            self.versions.push(self.current.clone());
        }

        fn then(mut self, stored: (i32, u32, u32), change: impl FnOnce(&mut Participant)) -> Self {
            change(&mut self.current);
            self.store(stored);
            self
        }

        fn derive(self, id: &str) -> Derived {
            derive(id, self.versions)
        }
    }

    fn transition(p: &mut Participant, to: HurtigsporStatus, (y, m, d): (i32, u32, u32)) {
        let h = p.hurtigspor.get_or_insert_with(Default::default);
        h.history.push(HurtigsporTransition {
            from_status: h.status,
            to_status: to as i32,
            effective_date: pd(y, m, d),
            ..Default::default()
        });
        h.status = to as i32;
    }

    /// Candidate, then confirmed on `start`.
    fn confirm(p: &mut Participant, start: (i32, u32, u32)) {
        transition(p, HurtigsporStatus::Candidate, start);
        transition(p, HurtigsporStatus::Confirmed, start);
        p.hurtigspor.as_mut().unwrap().start_date = pd(start.0, start.1, start.2);
    }

    fn measure(
        id: &str,
        kind: MeasureKind,
        employer: &str,
        (y, m, d): (i32, u32, u32),
        end: Option<(i32, u32, u32)>,
    ) -> Measure {
        Measure {
            id: id.into(),
            kind: kind as i32,
            employer_orgnr: employer.into(),
            start_date: pd(y, m, d),
            end_date: end.and_then(|(y, m, d)| pd(y, m, d)),
            status: MeasureStatus::Active as i32,
            ..Default::default()
        }
    }

    fn outcome(kind: OutcomeKind, (y, m, d): (i32, u32, u32), employer: &str, percent: i32) -> Option<Outcome> {
        Some(Outcome {
            kind: kind as i32,
            date: pd(y, m, d),
            employer_orgnr: employer.into(),
            position_percent: percent,
        })
    }

    /// A: programme start corrected from 5 to 12 January 2026; confirmed
    /// 2 March; a wage subsidy whose start was corrected from 20 April to
    /// 4 May; work of 100 % from 2 November 2026 with the subsidy's employer.
    fn a() -> Derived {
        History::new("0301", (2026, 1, 5), (2026, 1, 5))
            .then((2026, 1, 20), |p| p.programme.as_mut().unwrap().start_date = pd(2026, 1, 12))
            .then((2026, 3, 2), |p| confirm(p, (2026, 3, 2)))
            .then((2026, 4, 20), |p| {
                p.measures.push(measure("m1", MeasureKind::TemporaryWageSubsidy, E1, (2026, 4, 20), None))
            })
            .then((2026, 5, 6), |p| p.measures[0].start_date = pd(2026, 5, 4))
            .then((2026, 10, 30), |p| {
                p.measures[0].end_date = pd(2026, 10, 30);
                p.measures[0].status = MeasureStatus::Completed as i32;
            })
            .then((2026, 11, 2), |p| {
                transition(p, HurtigsporStatus::Employed, (2026, 11, 2));
                p.outcome = outcome(OutcomeKind::EmploymentFull, (2026, 11, 2), E1, 100);
            })
            .derive("a")
    }

    /// B: programme from 1 September 2025; confirmed 1 February 2026; a
    /// work training with E2 registered in error (Arena FEILREG), one with
    /// E3 from 1 June to 31 August; back to the ordinary programme 15
    /// September 2026.
    fn b() -> Derived {
        History::new("0301", (2025, 9, 1), (2025, 9, 1))
            .then((2026, 2, 1), |p| confirm(p, (2026, 2, 1)))
            .then((2026, 4, 1), |p| p.measures.push(measure("m1", MeasureKind::WorkTraining, E2, (2026, 4, 1), None)))
            .then((2026, 4, 3), |p| p.measures[0].status = MeasureStatus::RegisteredInError as i32)
            .then((2026, 6, 1), |p| {
                p.measures.push(measure("m2", MeasureKind::WorkTraining, E3, (2026, 6, 1), Some((2026, 8, 31))))
            })
            .then((2026, 9, 15), |p| transition(p, HurtigsporStatus::BackToOrdinary, (2026, 9, 15)))
            .derive("b")
    }

    /// C: in Bergen (4601) from 1 February 2026, confirmed 1 April, work
    /// training with E4; moves to Oslo (0301), stored 1 February 2027.
    fn c() -> Derived {
        History::new("4601", (2026, 2, 1), (2026, 2, 10))
            .then((2026, 4, 1), |p| confirm(p, (2026, 4, 1)))
            .then((2026, 5, 1), |p| p.measures.push(measure("m1", MeasureKind::WorkTraining, E4, (2026, 5, 1), None)))
            .then((2027, 2, 1), |p| p.kommunenummer = "0301".into())
            .derive("c")
    }

    /// D: across the year boundary: programme from 1 June 2025, confirmed
    /// 1 October 2025, a permanent wage subsidy with E5 from 1 November 2025
    /// (open), ended without result 1 March 2027.
    fn d() -> Derived {
        History::new("0301", (2025, 6, 1), (2025, 6, 1))
            .then((2025, 10, 1), |p| confirm(p, (2025, 10, 1)))
            .then((2025, 11, 1), |p| {
                p.measures.push(measure("m1", MeasureKind::PermanentWageSubsidy, E5, (2025, 11, 1), None))
            })
            .then((2027, 3, 1), |p| transition(p, HurtigsporStatus::EndedWithoutResult, (2027, 3, 1)))
            .derive("d")
    }

    /// E: the ordinary programme only, from 1 August 2026.
    fn e() -> Derived {
        History::new("0301", (2026, 8, 1), (2026, 8, 1)).derive("e")
    }

    /// F: rejected for hurtigspor; the programme ended 20 December 2025.
    fn f() -> Derived {
        History::new("0301", (2024, 1, 8), (2024, 1, 8))
            .then((2024, 3, 1), |p| {
                transition(p, HurtigsporStatus::Candidate, (2024, 3, 1));
                transition(p, HurtigsporStatus::Rejected, (2024, 3, 15));
            })
            .then((2025, 12, 20), |p| p.programme.as_mut().unwrap().end_date = pd(2025, 12, 20))
            .derive("f")
    }

    /// G: programme from 5 January 2026, confirmed 1 September, work of
    /// 50 % with E1 from 1 December 2026 (no measure before it).
    fn g() -> Derived {
        History::new("0301", (2026, 1, 5), (2026, 1, 5))
            .then((2026, 9, 1), |p| confirm(p, (2026, 9, 1)))
            .then((2026, 12, 1), |p| {
                transition(p, HurtigsporStatus::Employed, (2026, 12, 1));
                // The kind says full time; the percentage decides.
                p.outcome = outcome(OutcomeKind::EmploymentFull, (2026, 12, 1), E1, 50);
            })
            .derive("g")
    }

    /// H, in Trondheim (5001): programme from 5 January 2026, confirmed
    /// 1 February, work training with E6 from 1 March; NAV's BEGA moves it
    /// to EMPLOYED on 1 October 2026 with no outcome recorded.
    fn h_before_the_outcome() -> History {
        History::new("5001", (2026, 1, 5), (2026, 1, 5))
            .then((2026, 2, 1), |p| confirm(p, (2026, 2, 1)))
            .then((2026, 3, 1), |p| p.measures.push(measure("m1", MeasureKind::WorkTraining, E6, (2026, 3, 1), None)))
            .then((2026, 10, 1), |p| {
                p.measures[0].end_date = pd(2026, 9, 30);
                transition(p, HurtigsporStatus::Employed, (2026, 10, 1));
            })
    }

    /// H, once the kommune recorded the outcome in January 2027: work of
    /// 60 % with E6 from 1 October 2026.
    fn h() -> Derived {
        h_before_the_outcome()
            .then((2027, 1, 10), |p| p.outcome = outcome(OutcomeKind::EmploymentPart, (2026, 10, 1), E6, 60))
            .derive("h")
    }

    fn everyone() -> Vec<Derived> {
        vec![a(), b(), c(), d(), e(), f(), g(), h()]
    }

    const AS_OF: (i32, u32, u32) = (2027, 6, 30);

    fn report(kommune: Option<&str>, year: i32) -> HurtigsporReport {
        let mut t = Tally::new(kommune, year, day(AS_OF.0, AS_OF.1, AS_OF.2)).unwrap();
        for p in everyone() {
            t.add(&p);
        }
        t.finish()
    }

    #[test]
    fn corrected_dates_win_over_the_ones_first_typed() {
        let a = a();
        assert_eq!(a.programme_start, Some(day(2026, 1, 12)));
        assert_eq!(a.hurtigspor_start, Some(day(2026, 3, 2)));
        assert_eq!(a.hurtigspor_end, Some(day(2026, 11, 2)));
        assert_eq!(a.first_wage_subsidy_start, Some(day(2026, 5, 4)));
        assert_eq!(a.first_work_training_start, None);
        assert_eq!((a.work_full, a.work_part), (Some(day(2026, 11, 2)), None));
        assert_eq!((a.back_to_ordinary, a.without_result), (None, None));
        assert_eq!(a.kommune_in(2026), Some("0301"));
    }

    #[test]
    fn a_measure_registered_in_error_counts_nowhere() {
        let b = b();
        assert_eq!(b.first_work_training_start, Some(day(2026, 6, 1)));
        assert_eq!(b.measures.len(), 1);
        assert_eq!(b.measures[0].employer, E3);
        assert_eq!(b.back_to_ordinary, Some(day(2026, 9, 15)));
        assert_eq!(b.hurtigspor_end, Some(day(2026, 9, 15)));
        assert_eq!((b.work_full, b.work_part, b.without_result), (None, None, None));
    }

    #[test]
    fn a_move_counts_for_the_kommune_of_the_time() {
        let c = c();
        assert_eq!(c.kommune_in(2025), Some("4601"), "before any version: the first version's kommune");
        assert_eq!(c.kommune_in(2026), Some("4601"));
        assert_eq!(c.kommune_in(2027), Some("0301"));
        assert_eq!(c.hurtigspor_end, None, "still open");
    }

    #[test]
    fn a_period_across_the_year_boundary() {
        let d = d();
        assert_eq!(d.hurtigspor_start, Some(day(2025, 10, 1)));
        assert_eq!(d.hurtigspor_end, Some(day(2027, 3, 1)));
        assert_eq!(d.without_result, Some(day(2027, 3, 1)));
        assert_eq!(d.first_wage_subsidy_start, Some(day(2025, 11, 1)));
        let f = f();
        assert_eq!(f.hurtigspor_start, None, "rejected: never in hurtigspor");
        assert_eq!(f.programme_end, Some(day(2025, 12, 20)));
        let g = g();
        assert_eq!((g.work_full, g.work_part), (None, Some(day(2026, 12, 1))), "50 % is under 70 %");
    }

    #[test]
    fn oslo_2026_by_hand() {
        let r = report(Some("0301"), 2026);
        // In hurtigspor during 2026: A, B, D (since 2025), G; C was in 4601.
        assert_eq!(r.participants_in_hurtigspor, 4);
        // In the programme: those and E; F's programme ended in 2025.
        assert_eq!(r.programme_participants, 5);
        assert_eq!(r.share_in_hurtigspor, 0.8);
        // Started in 2026: A 12 Jan -> 2 Mar = 49, B 1 Sep 2025 -> 1 Feb =
        // 153, G 5 Jan -> 1 Sep = 239 days.
        assert_eq!(r.hurtigspor_started, 3);
        assert_eq!(r.mean_days_programme_to_hurtigspor, (49.0 + 153.0 + 239.0) / 3.0);
        // Wage subsidy: A (temporary), D (permanent, open since 2025).
        assert_eq!(r.with_wage_subsidy, 2);
        // Work training: B's E3 one; its FEILREG one would not count alone.
        assert_eq!(r.in_work_training, 1);
        // Ended in 2026: A 245, B 226, G 91 days; D ends in 2027.
        assert_eq!(r.hurtigspor_ended, 3);
        assert_eq!(r.mean_hurtigspor_days, (245.0 + 226.0 + 91.0) / 3.0);
        // Work after a measure: A, 4 May (corrected) -> 2 Nov = 182 days.
        assert_eq!(r.work_after_measure, 1);
        assert_eq!(r.mean_measure_days_before_work, 182.0);
        assert_eq!(
            (r.outcome_work_full, r.outcome_work_part, r.outcome_back_to_ordinary, r.outcome_without_result),
            (1, 1, 1, 0)
        );
        // E1 (A's subsidy and work, G's work), E3 (B), E5 (D); not E2
        // (registered in error) nor E4 (C, in Bergen).
        assert_eq!(r.distinct_employers, 3);
        assert_eq!((r.kommunenummer.as_str(), r.year), ("0301", 2026));
    }

    #[test]
    fn bergen_2026_and_oslo_2027_after_the_move() {
        let r = report(Some("4601"), 2026);
        assert_eq!((r.participants_in_hurtigspor, r.programme_participants, r.share_in_hurtigspor), (1, 1, 1.0));
        assert_eq!((r.hurtigspor_started, r.mean_days_programme_to_hurtigspor), (1, 59.0));
        assert_eq!((r.in_work_training, r.with_wage_subsidy, r.distinct_employers), (1, 0, 1));
        assert_eq!(r.hurtigspor_ended, 0);

        // 2027, up to 30 June: C (moved in) and D are in hurtigspor; A, B
        // and G left hurtigspor in 2026 but no programme end is recorded, so
        // they, and E, are still programme participants.
        let r = report(Some("0301"), 2027);
        assert_eq!((r.participants_in_hurtigspor, r.programme_participants), (2, 6));
        assert_eq!(r.outcome_without_result, 1);
        assert_eq!((r.hurtigspor_ended, r.mean_hurtigspor_days), (1, 516.0));
        // C's work training (E4) and D's subsidy (E5) are still running.
        assert_eq!((r.in_work_training, r.with_wage_subsidy, r.distinct_employers), (1, 1, 2));
        assert_eq!(report(Some("4601"), 2027).participants_in_hurtigspor, 0);
    }

    #[test]
    fn work_whose_extent_is_not_recorded_counts_apart_until_it_is() {
        let before = h_before_the_outcome().derive("h");
        assert_eq!((before.work_full, before.work_part, before.work_unknown), (None, None, Some(day(2026, 10, 1))));
        assert_eq!(before.hurtigspor_end, Some(day(2026, 10, 1)));
        let mut t = Tally::new(Some("5001"), 2026, day(AS_OF.0, AS_OF.1, AS_OF.2)).unwrap();
        assert!(t.add(&before));
        let r = t.finish();
        assert_eq!((r.participants_in_hurtigspor, r.programme_participants), (1, 1));
        // 5 Jan -> 1 Feb: 27 days; 1 Feb -> 1 Oct: 242 days.
        assert_eq!((r.hurtigspor_started, r.mean_days_programme_to_hurtigspor), (1, 27.0));
        assert_eq!((r.hurtigspor_ended, r.mean_hurtigspor_days), (1, 242.0));
        // Work after work training: 1 Mar -> 1 Oct, 214 days, whatever its extent.
        assert_eq!((r.in_work_training, r.work_after_measure, r.mean_measure_days_before_work), (1, 1, 214.0));
        assert_eq!((r.outcome_work_full, r.outcome_work_part, r.outcome_work_extent_unknown), (0, 0, 1));
        // E6 through the work training; the work's employer is not known yet.
        assert_eq!(r.distinct_employers, 1);

        // The outcome recorded in 2027 moves it to work under 70 % in the
        // 2026 figures: recomputed, not typed again.
        let r = report(Some("5001"), 2026);
        assert_eq!((r.outcome_work_full, r.outcome_work_part, r.outcome_work_extent_unknown), (0, 1, 0));
        assert_eq!((r.work_after_measure, r.mean_measure_days_before_work, r.distinct_employers), (1, 214.0, 1));
    }

    /// The ids of the participants `Tally::add` says count in a hurtigspor
    /// figure: those the per-participant listing gives.
    fn listed(kommune: Option<&str>, year: i32) -> Vec<String> {
        let mut t = Tally::new(kommune, year, day(AS_OF.0, AS_OF.1, AS_OF.2)).unwrap();
        everyone().into_iter().filter(|p| t.add(p)).map(|p| p.id).collect()
    }

    #[test]
    fn the_listing_holds_who_counts_in_a_hurtigspor_figure() {
        // Not E (programme only), F (rejected), C (Bergen's in 2026).
        assert_eq!(listed(Some("0301"), 2026), ["a", "b", "d", "g"]);
        // A, B and G left hurtigspor in 2026 with nothing dated in 2027.
        assert_eq!(listed(Some("0301"), 2027), ["c", "d"]);
        assert_eq!(listed(Some("4601"), 2026), ["c"]);
        assert_eq!(listed(None, 2026), ["a", "b", "c", "d", "g", "h"]);
        assert_eq!(listed(None, 2026).len() as i64, report(None, 2026).participants_in_hurtigspor);
        assert_eq!(listed(None, 2024), Vec::<String>::new(), "F was assessed in 2024 but never in hurtigspor");

        let dates = a().dates(2026);
        assert_eq!((dates.participant.as_str(), dates.kommunenummer.as_str()), ("participants/a", "0301"));
        assert_eq!(
            participant_row(&dates),
            "a,0301,2026-01-12,2026-03-02,2026-11-02,2026-05-04,,2026-11-02,,,,",
            "A's corrected dates"
        );
        assert_eq!(
            participant_row(&b().dates(2026)),
            "b,0301,2025-09-01,2026-02-01,2026-09-15,,2026-06-01,,,,2026-09-15,"
        );
        assert_eq!(participant_row(&c().dates(2027)).split(',').nth(1), Some("0301"), "C after the move");
        // As the dates stood at the end of the year: D ended without
        // result in 2027, so in 2026's listing its hurtigspor is open.
        assert_eq!(participant_row(&d().dates(2026)), "d,0301,2025-06-01,2025-10-01,,2025-11-01,,,,,,");
        assert_eq!(
            participant_row(&d().dates(2027)),
            "d,0301,2025-06-01,2025-10-01,2027-03-01,2025-11-01,,,,,,2027-03-01"
        );
        // Nothing of the future shows in an earlier year's form.
        assert_eq!(participant_row(&a().dates(2025)), "a,0301,,,,,,,,,,");
        let unknown = h_before_the_outcome().derive("h").dates(2026);
        assert_eq!(participant_row(&unknown), "h,5001,2026-01-05,2026-02-01,2026-10-01,,2026-03-01,,,2026-10-01,,");
        assert_eq!(PARTICIPANT_COLUMNS.len(), participant_row(&unknown).split(',').count());
    }

    #[test]
    fn the_country_is_every_kommune() {
        let r = report(None, 2026);
        assert_eq!((r.participants_in_hurtigspor, r.programme_participants), (6, 7));
        // E1, E3, E5 (Oslo), E4 (Bergen), E6 (Trondheim).
        assert_eq!(r.distinct_employers, 5);
        assert_eq!(r.kommunenummer, "");
        // Nothing yet in a year after the report's day.
        let r = report(None, 2028);
        assert_eq!((r.participants_in_hurtigspor, r.programme_participants), (0, 0));
        assert_eq!(r.share_in_hurtigspor, 0.0);
    }

    #[test]
    fn csv_has_a_header_and_one_row_of_figures() {
        let text = csv(&report(Some("0301"), 2026));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("kommunenummer,year,participants_in_hurtigspor,programme_participants,"));
        assert!(lines[1].starts_with("0301,2026,4,5,0.8000,3,147.00,"), "{}", lines[1]);
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(csv(&report(None, 2026)).lines().nth(1).unwrap().starts_with("all,2026,6,7,"));
        let table = table(&report(Some("0301"), 2026));
        assert_eq!(table.lines().count(), lines[0].split(',').count());
        assert!(table.lines().any(|l| l.starts_with("participants_in_hurtigspor ") && l.ends_with(" 4")), "{table}");
    }

    /// The change log of the hand-made histories, as the store pages it
    /// (by participant, then version).
    fn change_log() -> Vec<ChangeRecord> {
        let histories: Vec<(&str, History)> = vec![
            ("a", History::new("0301", (2026, 1, 5), (2026, 1, 5)).then((2026, 3, 2), |p| confirm(p, (2026, 3, 2)))),
            ("b", History::new("0301", (2026, 2, 2), (2026, 2, 2))),
            (
                "c",
                History::new("4601", (2026, 2, 1), (2026, 2, 1))
                    .then((2026, 4, 1), |p| confirm(p, (2026, 4, 1)))
                    .then((2026, 6, 1), |p| p.kommunenummer = "0301".into()),
            ),
        ];
        let mut out = Vec::new();
        for (id, h) in histories {
            for (i, snapshot) in h.versions.into_iter().enumerate() {
                out.push(ChangeRecord {
                    cursor: Default::default(),
                    participant_id: id.into(),
                    version: i as i64 + 1,
                    kind: "x".into(),
                    origin: "api".into(),
                    actor: "x".into(),
                    snapshot,
                });
            }
        }
        out
    }

    #[tokio::test]
    async fn compute_folds_the_change_log_page_by_page() {
        let log = change_log();
        let mut store = MockStore::new();
        let served = log.clone();
        store.expect_histories().returning(move |after, limit| {
            // As the store's query: entries after (id, version) in that order.
            let after = |r: &ChangeRecord| {
                after.as_ref().is_none_or(|(id, v)| (r.participant_id.as_str(), r.version) > (id.as_str(), *v))
            };
            Ok(served.iter().filter(|r| after(r)).take(limit).cloned().collect())
        });
        // Pages of 2 split c's history across pages.
        for page in [1, 2, 3, 100] {
            let r = compute(&store, Some("0301"), 2026, day(2026, 12, 31), page).await.unwrap().unwrap();
            // a; and c, who moved to Oslo in June 2026 (the kommune by the
            // end of the year); b is in the programme only.
            assert_eq!((r.participants_in_hurtigspor, r.programme_participants), (2, 3), "page {page}");
        }
        let r = compute(&store, Some("4601"), 2026, day(2026, 12, 31), 2).await.unwrap().unwrap();
        assert_eq!(r.participants_in_hurtigspor, 0);
        assert!(compute(&store, None, i32::MAX, day(2026, 12, 31), 2).await.unwrap().is_none());

        // The listing, a participant a page: a, then c after a; b (the
        // programme only) is passed over.
        let page = |after: Option<&str>, limit| {
            let store = &store;
            let after = after.map(str::to_owned);
            async move {
                let (found, more) =
                    participants(store, Some("0301"), 2026, day(2026, 12, 31), after, limit).await.unwrap().unwrap();
                (found.into_iter().map(|d| d.id).collect::<Vec<_>>(), more)
            }
        };
        assert_eq!(page(None, 1).await, (vec!["a".to_owned()], true));
        assert_eq!(page(Some("a"), 1).await, (vec!["c".to_owned()], false));
        assert_eq!(page(None, 10).await, (vec!["a".to_owned(), "c".to_owned()], false));
        assert_eq!(page(Some("c"), 10).await, (vec![], false));
        // Resuming after a participant, a store page a row: none of a's
        // versions again, b's and c's histories whole across pages.
        for page in [1, 2] {
            let mut seen = Vec::new();
            each_participant(&store, Some("a".into()), page, |d| {
                seen.push((d.id.clone(), d.kommuner.len(), d.hurtigspor_start));
                ControlFlow::Continue(())
            })
            .await
            .unwrap();
            assert_eq!(
                seen,
                [("b".to_owned(), 1, None), ("c".to_owned(), 2, Some(day(2026, 4, 1)))],
                "page {page}: c moved from 4601 to 0301"
            );
        }
    }
}

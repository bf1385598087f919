//! From the canonical record to what Arena should hold, and from what Arena
//! holds to the operations that close the gap. Pure functions.
//!
//! The guidance's rules, as Arena sees them:
//! - a hurtigspor candidate is registered with the person relation for the
//!   introduction scheme (INTRO) as soon as possible: from the moment the
//!   participant has been a CANDIDATE, Arena must hold an active relation;
//! - the relation is ended (deregistered) when the participant leaves the
//!   programme;
//! - NAV's activity plan mirrors the individual plan: one activity per plan
//!   goal, found again by a marker in its description, since Arena's writes
//!   have no idempotency key.

use super::wire::{Aktivitet, AktivitetBody, EndPersonforhold, INTRO, NewPersonforhold, Personforhold};
use crate::TargetError;
use chrono::NaiveDate;
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{Participant, ResponsibleParty},
};

/// The user Arena records for our writes.
pub const ARENA_USER: &str = "HURTIGSPOR";

/// The person relation Arena should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relation {
    /// Never a candidate: Arena needs nothing.
    NotNeeded,
    /// Registered and in force.
    Active { aetatenhet: String, dato_fra: String },
    /// Registered, and ended when the programme ended.
    Ended { aetatenhet: String, dato_fra: String, dato_til: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub relation: Relation,
    /// Activities by plan-goal id.
    pub activities: Vec<(String, AktivitetBody)>,
}

/// What Arena holds for the person now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Current {
    pub person_id: Option<i64>,
    pub relations: Vec<Personforhold>,
    pub activities: Vec<Aktivitet>,
}

/// One write to Arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateRelation(NewPersonforhold),
    EndRelation { id: i64, body: EndPersonforhold },
    CreateActivity(AktivitetBody),
    UpdateActivity { id: i64, body: AktivitetBody },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateRelation(_) => "personforhold.create",
            Self::EndRelation { .. } => "personforhold.end",
            Self::CreateActivity(_) => "aktivitet.create",
            Self::UpdateActivity { .. } => "aktivitet.update",
        }
    }
}

fn naive(d: Option<&Date>) -> Option<NaiveDate> {
    let d = d?;
    NaiveDate::from_ymd_opt(d.year, u32::try_from(d.month).ok()?, u32::try_from(d.day).ok()?)
}

/// Arena's date format, for a date-only value.
pub fn arena_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d 00:00:00").to_string()
}

/// The marker that ties an Arena activity to a plan goal.
pub fn goal_marker(goal_id: &str) -> String {
    format!("[hurtigspor-mål {goal_id}]")
}

fn marked_goal(a: &Aktivitet) -> Option<&str> {
    let text = a.beskrivelse.as_deref()?;
    let start = text.find("[hurtigspor-mål ")? + "[hurtigspor-mål ".len();
    let end = text[start..].find(']')? + start;
    Some(&text[start..end])
}

fn responsible(r: i32) -> &'static str {
    match ResponsibleParty::try_from(r) {
        Ok(ResponsibleParty::Kommune) => "KOMMUNE",
        Ok(ResponsibleParty::Nav) => "NAV",
        Ok(ResponsibleParty::Participant) => "DELTAKER",
        _ => "ANNEN",
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// What Arena should hold for `p` on `today`.
pub fn desired(p: &Participant, today: NaiveDate) -> Result<Desired, TargetError> {
    let programme = p.programme.clone().unwrap_or_default();
    let was_candidate = p.hurtigspor.as_ref().is_some_and(|h| h.candidate_date.is_some());
    if !was_candidate {
        return Ok(Desired { relation: Relation::NotNeeded, activities: Vec::new() });
    }
    if p.nav_office.len() != 4 {
        return Err(TargetError::Permanent(
            "Arena needs the participant's NAV office (nav_office, 4 digits) to register the person relation".into(),
        ));
    }
    let start = naive(programme.start_date.as_ref())
        .ok_or_else(|| TargetError::Permanent("the programme has no start date".into()))?;
    let dato_fra = arena_date(start);
    let relation = match naive(programme.end_date.as_ref()) {
        Some(end) => Relation::Ended { aetatenhet: p.nav_office.clone(), dato_fra, dato_til: arena_date(end) },
        None => Relation::Active { aetatenhet: p.nav_office.clone(), dato_fra },
    };
    let activities = p
        .plan
        .iter()
        .flat_map(|plan| &plan.goals)
        .map(|g| {
            let from = naive(g.start_date.as_ref()).unwrap_or(start);
            let to = naive(g.end_date.as_ref());
            let status = match (from > today, to.is_some_and(|t| t < today)) {
                (true, _) => "PLANLAGT",
                (false, true) => "FULLFORT",
                (false, false) => "GJENNOMFORES",
            };
            let body = AktivitetBody {
                tittel: truncate(&g.description, 255),
                beskrivelse: Some(format!("{}\n{}", truncate(&g.measure, 1500), goal_marker(&g.id))),
                fra_dato: arena_date(from),
                til_dato: to.map(arena_date),
                status: status.to_owned(),
                ansvarlig: responsible(g.responsible).to_owned(),
                reg_user: ARENA_USER.to_owned(),
            };
            (g.id.clone(), body)
        })
        .collect();
    Ok(Desired { relation, activities })
}

/// The writes that bring `current` to `desired`, given the participant's
/// national id for a registration. Run again after applying them: the
/// second run of a converged pair is empty.
pub fn plan(desired: &Desired, current: &Current, national_id: &str) -> Vec<Operation> {
    let mut ops = Vec::new();
    let intro: Vec<&Personforhold> = current.relations.iter().filter(|r| r.personforholdkode == INTRO).collect();
    let active: Vec<&&Personforhold> = intro.iter().filter(|r| r.is_active_intro()).collect();
    match &desired.relation {
        Relation::NotNeeded => return ops,
        Relation::Active { aetatenhet, dato_fra } | Relation::Ended { aetatenhet, dato_fra, .. }
            if intro.is_empty() =>
        {
            ops.push(Operation::CreateRelation(NewPersonforhold {
                fodselsnr: national_id.to_owned(),
                personforholdkode: INTRO.to_owned(),
                aetatenhet: aetatenhet.clone(),
                dato_fra: dato_fra.clone(),
                reg_user: ARENA_USER.to_owned(),
            }));
            // The rest needs the person and the relation's id: next round.
            return ops;
        }
        Relation::Ended { dato_til, .. } => {
            for r in active {
                ops.push(Operation::EndRelation {
                    id: r.personforhold_id,
                    body: EndPersonforhold { dato_til: dato_til.clone(), mod_user: ARENA_USER.to_owned() },
                });
            }
        }
        Relation::Active { .. } => {}
    }
    for (goal, body) in &desired.activities {
        match current.activities.iter().find(|a| marked_goal(a) == Some(goal.as_str())) {
            Some(existing) if body.matches(existing) => {}
            Some(existing) => ops.push(Operation::UpdateActivity { id: existing.aktivitet_id, body: body.clone() }),
            None => ops.push(Operation::CreateActivity(body.clone())),
        }
    }
    // Goals that left the plan: their open activities are cancelled.
    for a in &current.activities {
        let Some(goal) = marked_goal(a) else { continue };
        let still_planned = desired.activities.iter().any(|(g, _)| g == goal);
        if !still_planned && !matches!(a.status.as_str(), "AVBRUTT" | "FULLFORT") {
            ops.push(Operation::UpdateActivity {
                id: a.aktivitet_id,
                body: AktivitetBody {
                    tittel: a.tittel.clone(),
                    beskrivelse: a.beskrivelse.clone(),
                    fra_dato: a.fra_dato.clone(),
                    til_dato: a.til_dato.clone(),
                    status: "AVBRUTT".to_owned(),
                    ansvarlig: a.ansvarlig.clone(),
                    reg_user: ARENA_USER.to_owned(),
                },
            });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use hurtigspor_proto::v1::{Hurtigspor, IndividualPlan, PlanGoal, Programme};
    use serde_json::json;

    fn d(y: i32, m: i32, day: i32) -> Option<Date> {
        Some(Date { year: y, month: m, day })
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    fn candidate() -> Participant {
        Participant {
            name: "participants/x".into(),
            national_id: "15838510075".into(),
            nav_office: "0314".into(),
            programme: Some(Programme { start_date: d(2026, 1, 5), ..Default::default() }),
            hurtigspor: Some(Hurtigspor { status: 2, candidate_date: d(2026, 2, 10), ..Default::default() }),
            plan: Some(IndividualPlan {
                main_goal: "nurse".into(),
                goals: vec![
                    PlanGoal {
                        id: "g-1".into(),
                        description: "Norsk B2".into(),
                        measure: "språkpraksis".into(),
                        start_date: d(2026, 2, 1),
                        end_date: d(2026, 6, 30),
                        responsible: ResponsibleParty::Kommune as i32,
                    },
                    PlanGoal {
                        id: "g-2".into(),
                        description: "Autorisasjon".into(),
                        measure: "søknad til HPR".into(),
                        start_date: d(2027, 1, 1),
                        end_date: None,
                        responsible: ResponsibleParty::Participant as i32,
                    },
                ],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn golden_desired_state_of_a_candidate() {
        let desired = desired(&candidate(), today()).unwrap();
        assert_eq!(
            desired.relation,
            Relation::Active { aetatenhet: "0314".into(), dato_fra: "2026-01-05 00:00:00".into() }
        );
        let bodies: Vec<_> = desired.activities.iter().map(|(_, b)| serde_json::to_value(b).unwrap()).collect();
        assert_eq!(
            bodies,
            [
                json!({
                    "TITTEL": "Norsk B2", "BESKRIVELSE": "språkpraksis\n[hurtigspor-mål g-1]",
                    "FRA_DATO": "2026-02-01 00:00:00", "TIL_DATO": "2026-06-30 00:00:00",
                    "STATUS": "FULLFORT", "ANSVARLIG": "KOMMUNE", "REG_USER": "HURTIGSPOR",
                }),
                json!({
                    "TITTEL": "Autorisasjon", "BESKRIVELSE": "søknad til HPR\n[hurtigspor-mål g-2]",
                    "FRA_DATO": "2027-01-01 00:00:00", "TIL_DATO": null,
                    "STATUS": "PLANLAGT", "ANSVARLIG": "DELTAKER", "REG_USER": "HURTIGSPOR",
                }),
            ]
        );
    }

    #[test]
    fn a_participant_never_a_candidate_needs_nothing_in_arena() {
        let mut p = candidate();
        p.hurtigspor = Some(Hurtigspor { status: 1, ..Default::default() });
        let desired = desired(&p, today()).unwrap();
        assert_eq!(desired.relation, Relation::NotNeeded);
        assert!(plan(&desired, &Current::default(), "x").is_empty());
    }

    #[test]
    fn a_missing_nav_office_is_a_permanent_rejection() {
        let mut p = candidate();
        p.nav_office.clear();
        assert!(desired(&p, today()).unwrap_err().is_permanent());
    }

    fn relation(id: i64, active: bool) -> Personforhold {
        Personforhold {
            personforhold_id: id,
            person_id: 7,
            personforholdkode: "INTRO".into(),
            dato_fra: "2026-01-05 00:00:00".into(),
            dato_til: None,
            er_aktiv: if active { "J" } else { "N" }.into(),
        }
    }

    #[test]
    fn golden_first_registration() {
        let desired = desired(&candidate(), today()).unwrap();
        let ops = plan(&desired, &Current::default(), "15838510075");
        assert_eq!(ops.len(), 1, "the relation first; activities need the person");
        let Operation::CreateRelation(body) = &ops[0] else { panic!("{ops:?}") };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            json!({
                "FODSELSNR": "15838510075", "PERSONFORHOLDKODE": "INTRO", "AETATENHET": "0314",
                "DATO_FRA": "2026-01-05 00:00:00", "REG_USER": "HURTIGSPOR",
            })
        );
    }

    #[test]
    fn read_before_write_converges() {
        let desired = desired(&candidate(), today()).unwrap();
        let mut current = Current { person_id: Some(7), relations: vec![relation(1, true)], activities: vec![] };
        let ops = plan(&desired, &current, "x");
        assert_eq!(ops.iter().map(Operation::name).collect::<Vec<_>>(), ["aktivitet.create", "aktivitet.create"]);
        // Arena now holds both activities: nothing more to do.
        current.activities = desired
            .activities
            .iter()
            .enumerate()
            .map(|(i, (_, b))| Aktivitet {
                aktivitet_id: i as i64,
                tittel: b.tittel.clone(),
                beskrivelse: b.beskrivelse.clone(),
                fra_dato: b.fra_dato.clone(),
                til_dato: b.til_dato.clone(),
                status: b.status.clone(),
                ansvarlig: b.ansvarlig.clone(),
            })
            .collect();
        assert!(plan(&desired, &current, "x").is_empty());
        // A duplicate relation (someone's blind retry) is left alone, not multiplied.
        current.relations.push(relation(2, true));
        assert!(plan(&desired, &current, "x").is_empty());
    }

    #[test]
    fn leaving_the_programme_ends_every_active_relation_and_removed_goals_are_cancelled() {
        let mut p = candidate();
        p.programme.as_mut().unwrap().end_date = d(2026, 10, 30);
        let goal_2_activity = Aktivitet {
            aktivitet_id: 9,
            tittel: "Autorisasjon".into(),
            beskrivelse: Some("x\n[hurtigspor-mål g-2]".into()),
            fra_dato: "2027-01-01 00:00:00".into(),
            til_dato: None,
            status: "PLANLAGT".into(),
            ansvarlig: "DELTAKER".into(),
        };
        let nav_activity = Aktivitet { aktivitet_id: 10, beskrivelse: None, ..goal_2_activity.clone() };
        p.plan.as_mut().unwrap().goals.truncate(1);
        let desired = desired(&p, today()).unwrap();
        let current = Current {
            person_id: Some(7),
            relations: vec![relation(1, true), relation(2, false)],
            activities: vec![goal_2_activity, nav_activity],
        };
        let ops = plan(&desired, &current, "x");
        assert_eq!(
            ops[0],
            Operation::EndRelation {
                id: 1,
                body: EndPersonforhold { dato_til: "2026-10-30 00:00:00".into(), mod_user: "HURTIGSPOR".into() }
            }
        );
        let cancelled: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Operation::UpdateActivity { id, body } if body.status == "AVBRUTT" => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, [9], "only the activity we own, not NAV's own");
    }
}

//! From the canonical record to NIR's registration, and the writes that
//! bring NIR's copy there. Pure functions.
//!
//! NIR gets the programme (its period and the kommune's decision), the
//! hurtigspor marker and status, the measures, the leave and the end with
//! its reason and the main activity at exit.
//!
//! The canonical model does not hold the kommune's decision details
//! (decision date, legal basis, category); until it does, the registration
//! states the common case: granted under integreringsloven, "rett og plikt",
//! decided on the programme's start date.

use super::wire::{
    Avslutning, Deltakelse, Hurtigspor, NAMESPACE, Periode, Permisjon, Permisjoner, Person, Tiltak, Tiltaksliste,
    Vedtak,
};
use crate::TargetError;
use hurtigspor_proto::{
    google::r#type::Date,
    v1::{
        HurtigsporStatus as S, LeaveReason, MainActivity, MeasureKind, MeasureStatus, Participant, ProgrammeEndReason,
    },
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub registration: Deltakelse,
    pub hurtigspor: Option<Hurtigspor>,
    pub tiltak: Tiltaksliste,
    pub permisjoner: Permisjoner,
    pub avslutning: Option<Avslutning>,
}

/// One write to NIR. Every one is idempotent: a registration by natural key,
/// the rest replace a part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Register(Box<Deltakelse>),
    SetHurtigspor(Hurtigspor),
    SetTiltak(Tiltaksliste),
    SetPermisjoner(Permisjoner),
    SetAvslutning(Avslutning),
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register(_) => "deltakelse.register",
            Self::SetHurtigspor(_) => "hurtigspor.set",
            Self::SetTiltak(_) => "tiltak.set",
            Self::SetPermisjoner(_) => "permisjoner.set",
            Self::SetAvslutning(_) => "avslutning.set",
        }
    }
}

fn date(d: Option<&Date>) -> Option<String> {
    d.filter(|d| d.year > 0).map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
}

fn hurtigspor_status(s: S) -> Option<&'static str> {
    Some(match s {
        S::Unspecified | S::NotAssessed => return None,
        S::Candidate => "KANDIDAT",
        S::Confirmed => "BEKREFTET",
        S::Rejected => "AVSLATT",
        S::Qualifying => "KVALIFISERING",
        S::JobMatching => "JOBBMATCHING",
        S::EmployedWithSubsidy => "ANSATT_MED_TILSKUDD",
        S::Employed => "ANSATT",
        S::BackToOrdinary => "TILBAKE_TIL_ORDINAERT",
        S::EndedWithoutResult => "AVSLUTTET_UTEN_RESULTAT",
    })
}

fn measure_type(kind: MeasureKind) -> &'static str {
    match kind {
        MeasureKind::WorkTraining => "ARBEIDSTRENING",
        MeasureKind::TemporaryWageSubsidy | MeasureKind::PermanentWageSubsidy => "LONNSTILSKUDD",
        MeasureKind::Mentor => "MENTOR",
        MeasureKind::LabourMarketCourse => "KURS",
        MeasureKind::VocationalTraining | MeasureKind::HigherEducation => "UTDANNING",
        MeasureKind::InclusionGrant | MeasureKind::Other | MeasureKind::Unspecified => "ANNET",
    }
}

fn leave_reason(r: i32) -> &'static str {
    match LeaveReason::try_from(r) {
        Ok(LeaveReason::Parental) => "FODSEL_OMSORG",
        Ok(LeaveReason::Illness) => "SYKDOM",
        Ok(LeaveReason::Welfare) => "VELFERD",
        _ => "ANNET",
    }
}

fn end_reason(r: i32) -> &'static str {
    match ProgrammeEndReason::try_from(r) {
        Ok(ProgrammeEndReason::Completed) => "FULLFORT",
        Ok(ProgrammeEndReason::Employment) => "ARBEID",
        Ok(ProgrammeEndReason::Education) => "UTDANNING",
        Ok(ProgrammeEndReason::Moved) => "FLYTTET",
        Ok(ProgrammeEndReason::PermanentStop) => "STANSET",
        Ok(ProgrammeEndReason::OwnRequest) => "EGET_ONSKE",
        _ => "ANNET",
    }
}

fn main_activity(a: i32) -> Option<&'static str> {
    Some(match MainActivity::try_from(a) {
        Ok(MainActivity::Work) => "ARBEID",
        Ok(MainActivity::Education) => "UTDANNING",
        Ok(MainActivity::WorkAndEducation) => "ARBEID_OG_UTDANNING",
        Ok(MainActivity::None) => "INGEN",
        Ok(MainActivity::Other) => "ANNET",
        _ => return None,
    })
}

/// What NIR should hold for `p`.
pub fn desired(p: &Participant) -> Result<Desired, TargetError> {
    let programme = p.programme.clone().unwrap_or_default();
    let start = date(programme.start_date.as_ref())
        .ok_or_else(|| TargetError::Permanent("NIR needs the programme's start date".into()))?;
    let h = p.hurtigspor.clone().unwrap_or_default();
    let status = S::try_from(h.status).unwrap_or_default();
    let hurtigspor_start = date(h.start_date.as_ref());
    let registration = Deltakelse {
        xmlns: NAMESPACE.to_owned(),
        deltakelse_id: None,
        person: Person { fodselsnummer: p.national_id.clone() },
        kommunenummer: p.kommunenummer.clone(),
        vedtak: Vedtak {
            vedtaksdato: start.clone(),
            utfall: "INNVILGET".to_owned(),
            lovgrunnlag: "INTEGRERINGSLOVEN".to_owned(),
            kategori: "RETT_OG_PLIKT".to_owned(),
        },
        periode: Periode { startdato: start, planlagt_sluttdato: date(programme.planned_end_date.as_ref()) },
        hurtigspor: None,
        tiltaksliste: None,
        permisjoner: None,
        avslutning: None,
    };
    let hurtigspor = hurtigspor_status(status).map(|s| Hurtigspor {
        xmlns: NAMESPACE.to_owned(),
        markert: status != S::Rejected,
        status: s.to_owned(),
        fra: date(h.candidate_date.as_ref()),
    });
    let tiltak = p
        .measures
        .iter()
        .filter(|m| m.status != MeasureStatus::RegisteredInError as i32)
        .filter_map(|m| {
            let fra = date(m.start_date.as_ref())?;
            let in_hurtigspor = hurtigspor_start.as_ref().is_some_and(|hs| fra >= *hs);
            Some(Tiltak {
                kind: measure_type(MeasureKind::try_from(m.kind).unwrap_or_default()).to_owned(),
                fra,
                til: date(m.end_date.as_ref()),
                hurtigspor: in_hurtigspor,
            })
        })
        .chain(p.recognition_cases.iter().filter_map(|c| {
            // Recognition of education is a measure of the programme too:
            // from the day it was opened until NOKUT concluded it.
            let fra = date(c.submitted_date.as_ref())?;
            let in_hurtigspor = hurtigspor_start.as_ref().is_some_and(|hs| fra >= *hs);
            Some(Tiltak {
                kind: "GODKJENNING".to_owned(),
                fra,
                til: date(c.decision_date.as_ref()),
                hurtigspor: in_hurtigspor,
            })
        }))
        .collect();
    let permisjon = programme
        .leave_periods
        .iter()
        .filter_map(|l| {
            let fra = date(l.start_date.as_ref())?;
            Some(Permisjon {
                vedtaksdato: fra.clone(),
                fra,
                til: date(l.end_date.as_ref())?,
                arsak: leave_reason(l.reason).to_owned(),
            })
        })
        .collect();
    let avslutning = date(programme.end_date.as_ref()).map(|sluttdato| Avslutning {
        xmlns: NAMESPACE.to_owned(),
        sluttdato,
        avslutningsarsak: Some(end_reason(programme.end_reason).to_owned()),
        hovedaktivitet_etter_avslutning: main_activity(programme.main_activity_at_exit).map(str::to_owned),
    });
    Ok(Desired {
        registration,
        hurtigspor,
        tiltak: Tiltaksliste { xmlns: NAMESPACE.to_owned(), tiltak },
        permisjoner: Permisjoner { xmlns: NAMESPACE.to_owned(), permisjon },
        avslutning,
    })
}

fn same_registration(a: &Deltakelse, b: &Deltakelse) -> bool {
    a.person == b.person && a.kommunenummer == b.kommunenummer && a.vedtak == b.vedtak && a.periode == b.periode
}

/// The writes that bring `current` (NIR's registration for this person and
/// period, if any) to `desired`.
pub fn plan(desired: &Desired, current: Option<&Deltakelse>) -> Vec<Operation> {
    let mut ops = Vec::new();
    let Some(current) = current.filter(|c| same_registration(c, &desired.registration)) else {
        ops.push(Operation::Register(Box::new(desired.registration.clone())));
        return ops; // the parts need the registration's id: next round
    };
    if let Some(h) = &desired.hurtigspor {
        let held = current.hurtigspor.as_ref().map(|c| (c.markert, &c.status, &c.fra));
        if held != Some((h.markert, &h.status, &h.fra)) {
            ops.push(Operation::SetHurtigspor(h.clone()));
        }
    }
    let held_tiltak = current.tiltaksliste.as_ref().map(|t| t.tiltak.as_slice()).unwrap_or_default();
    if held_tiltak != desired.tiltak.tiltak.as_slice() {
        ops.push(Operation::SetTiltak(desired.tiltak.clone()));
    }
    // The end first: a corrected later end may be what makes room for leave.
    if let Some(a) = &desired.avslutning {
        let held = current
            .avslutning
            .as_ref()
            .map(|c| (&c.sluttdato, &c.avslutningsarsak, &c.hovedaktivitet_etter_avslutning));
        if held != Some((&a.sluttdato, &a.avslutningsarsak, &a.hovedaktivitet_etter_avslutning)) {
            ops.push(Operation::SetAvslutning(a.clone()));
        }
    }
    let held_leave = current.permisjoner.as_ref().map(|p| p.permisjon.as_slice()).unwrap_or_default();
    if held_leave != desired.permisjoner.permisjon.as_slice() {
        ops.push(Operation::SetPermisjoner(desired.permisjoner.clone()));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nir::wire::to_xml;
    use hurtigspor_proto::v1::{Hurtigspor as H, LeavePeriod, Measure, Programme};

    fn d(y: i32, m: i32, day: i32) -> Option<Date> {
        Some(Date { year: y, month: m, day })
    }

    fn participant() -> Participant {
        Participant {
            national_id: "15838510075".into(),
            kommunenummer: "0301".into(),
            programme: Some(Programme {
                start_date: d(2026, 1, 5),
                planned_end_date: d(2028, 1, 4),
                leave_periods: vec![LeavePeriod {
                    start_date: d(2026, 6, 1),
                    end_date: d(2026, 6, 10),
                    reason: LeaveReason::Illness as i32,
                }],
                end_date: d(2026, 10, 30),
                end_reason: ProgrammeEndReason::Employment as i32,
                main_activity_at_exit: MainActivity::Work as i32,
                ..Default::default()
            }),
            hurtigspor: Some(H {
                status: S::Employed as i32,
                candidate_date: d(2026, 2, 10),
                start_date: d(2026, 3, 1),
                ..Default::default()
            }),
            measures: vec![
                Measure {
                    kind: MeasureKind::WorkTraining as i32,
                    start_date: d(2026, 4, 1),
                    end_date: d(2026, 6, 30),
                    ..Default::default()
                },
                Measure {
                    kind: MeasureKind::LabourMarketCourse as i32,
                    start_date: d(2026, 2, 1),
                    ..Default::default()
                },
                Measure {
                    kind: MeasureKind::Mentor as i32,
                    start_date: d(2026, 7, 1),
                    status: MeasureStatus::RegisteredInError as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn golden_registration_xml() {
        let desired = desired(&participant()).unwrap();
        assert_eq!(
            to_xml(&desired.registration),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Deltakelse xmlns=\"urn:no:imdi:nir:ws4:v1\"><Person><Fodselsnummer>15838510075</Fodselsnummer></Person><Kommunenummer>0301</Kommunenummer><Vedtak><Vedtaksdato>2026-01-05</Vedtaksdato><Utfall>INNVILGET</Utfall><Lovgrunnlag>INTEGRERINGSLOVEN</Lovgrunnlag><Kategori>RETT_OG_PLIKT</Kategori></Vedtak><Periode><Startdato>2026-01-05</Startdato><PlanlagtSluttdato>2028-01-04</PlanlagtSluttdato></Periode></Deltakelse>"
        );
    }

    #[test]
    fn golden_parts() {
        let desired = desired(&participant()).unwrap();
        assert_eq!(
            to_xml(&desired.tiltak),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Tiltaksliste xmlns=\"urn:no:imdi:nir:ws4:v1\"><Tiltak><Type>ARBEIDSTRENING</Type><Fra>2026-04-01</Fra><Til>2026-06-30</Til><Hurtigspor>true</Hurtigspor></Tiltak><Tiltak><Type>KURS</Type><Fra>2026-02-01</Fra><Hurtigspor>false</Hurtigspor></Tiltak></Tiltaksliste>",
            "a measure registered in error is left out; one begun before hurtigspor is not marked"
        );
        assert_eq!(
            to_xml(desired.hurtigspor.as_ref().unwrap()),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Hurtigspor xmlns=\"urn:no:imdi:nir:ws4:v1\"><Markert>true</Markert><Status>ANSATT</Status><Fra>2026-02-10</Fra></Hurtigspor>"
        );
        assert_eq!(
            to_xml(desired.avslutning.as_ref().unwrap()),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Avslutning xmlns=\"urn:no:imdi:nir:ws4:v1\"><Sluttdato>2026-10-30</Sluttdato><Avslutningsarsak>ARBEID</Avslutningsarsak><HovedaktivitetEtterAvslutning>ARBEID</HovedaktivitetEtterAvslutning></Avslutning>"
        );
        assert_eq!(desired.permisjoner.permisjon[0].arsak, "SYKDOM");
    }

    #[test]
    fn a_recognition_case_is_a_godkjenning_measure_until_nokut_concludes_it() {
        let mut p = participant();
        p.measures.clear();
        p.recognition_cases
            .push(hurtigspor_proto::v1::RecognitionCase { submitted_date: d(2026, 3, 2), ..Default::default() });
        let open = desired(&p).unwrap();
        assert_eq!(
            to_xml(&open.tiltak),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Tiltaksliste xmlns=\"urn:no:imdi:nir:ws4:v1\"><Tiltak><Type>GODKJENNING</Type><Fra>2026-03-02</Fra><Hurtigspor>true</Hurtigspor></Tiltak></Tiltaksliste>"
        );
        p.recognition_cases[0].decision_date = d(2026, 5, 1);
        let decided = desired(&p).unwrap();
        assert_eq!(decided.tiltak.tiltak[0].til.as_deref(), Some("2026-05-01"), "the decision ends it");
    }

    #[test]
    fn not_assessed_sends_no_hurtigspor_part_and_nothing_twice() {
        let mut p = participant();
        p.hurtigspor = Some(H { status: S::NotAssessed as i32, ..Default::default() });
        p.measures.clear();
        p.programme.as_mut().unwrap().leave_periods.clear();
        p.programme.as_mut().unwrap().end_date = None;
        let desired = desired(&p).unwrap();
        assert!(desired.hurtigspor.is_none());
        assert_eq!(plan(&desired, None).iter().map(Operation::name).collect::<Vec<_>>(), ["deltakelse.register"]);
        let held = Deltakelse { deltakelse_id: Some(1), ..desired.registration.clone() };
        assert!(plan(&desired, Some(&held)).is_empty(), "converged");
    }
}

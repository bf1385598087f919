//! The hurtigspor status machine (DESIGN.md section 5).

use hurtigspor_proto::v1::HurtigsporStatus as S;

/// Statuses in which hurtigspor is running: the three exits are allowed from
/// each of them.
pub const ACTIVE: [S; 4] = [S::Confirmed, S::Qualifying, S::JobMatching, S::EmployedWithSubsidy];

/// Statuses that end hurtigspor.
pub const TERMINAL: [S; 4] = [S::Rejected, S::Employed, S::BackToOrdinary, S::EndedWithoutResult];

/// Whether `from -> to` is an allowed transition.
pub fn allowed(from: S, to: S) -> bool {
    use S::*;
    // A new participant has NOT_ASSESSED; an unset status means the same.
    let from = if from == Unspecified { NotAssessed } else { from };
    match (from, to) {
        (NotAssessed, Candidate) => true,
        (Candidate, Confirmed | Rejected) => true,
        (Confirmed, Qualifying) => true,
        (Qualifying, JobMatching) => true,
        (JobMatching, EmployedWithSubsidy) => true,
        (f, Employed | BackToOrdinary | EndedWithoutResult) => ACTIVE.contains(&f),
        _ => false,
    }
}

/// The statuses reachable from `from`, for error messages.
pub fn next_statuses(from: S) -> Vec<S> {
    ALL.into_iter().filter(|to| allowed(from, *to)).collect()
}

pub fn is_active(s: S) -> bool {
    ACTIVE.contains(&s)
}

pub fn is_terminal(s: S) -> bool {
    TERMINAL.contains(&s)
}

/// Every status a participant can be in.
pub const ALL: [S; 10] = [
    S::NotAssessed,
    S::Candidate,
    S::Confirmed,
    S::Rejected,
    S::Qualifying,
    S::JobMatching,
    S::EmployedWithSubsidy,
    S::Employed,
    S::BackToOrdinary,
    S::EndedWithoutResult,
];

/// Short name without the enum prefix, for messages: `CANDIDATE`.
pub fn short_name(s: S) -> &'static str {
    s.as_str_name().trim_start_matches("HURTIGSPOR_STATUS_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use S::*;

    /// The full table, written out once by hand from DESIGN.md section 5: every
    /// pair not listed here must be refused.
    const EXPECTED: &[(S, S)] = &[
        (NotAssessed, Candidate),
        (Candidate, Confirmed),
        (Candidate, Rejected),
        (Confirmed, Qualifying),
        (Qualifying, JobMatching),
        (JobMatching, EmployedWithSubsidy),
        (Confirmed, Employed),
        (Confirmed, BackToOrdinary),
        (Confirmed, EndedWithoutResult),
        (Qualifying, Employed),
        (Qualifying, BackToOrdinary),
        (Qualifying, EndedWithoutResult),
        (JobMatching, Employed),
        (JobMatching, BackToOrdinary),
        (JobMatching, EndedWithoutResult),
        (EmployedWithSubsidy, Employed),
        (EmployedWithSubsidy, BackToOrdinary),
        (EmployedWithSubsidy, EndedWithoutResult),
    ];

    #[test]
    fn every_pair_matches_the_table() {
        let mut allowed_count = 0;
        for from in ALL {
            for to in ALL.into_iter().chain([Unspecified]) {
                let expected = EXPECTED.contains(&(from, to));
                assert_eq!(allowed(from, to), expected, "{from:?} -> {to:?}");
                allowed_count += usize::from(expected);
            }
        }
        assert_eq!(allowed_count, EXPECTED.len());
    }

    #[test]
    fn unspecified_behaves_as_not_assessed() {
        assert!(allowed(Unspecified, Candidate));
        assert!(!allowed(Unspecified, Confirmed));
    }

    #[test]
    fn terminal_statuses_lead_nowhere() {
        for t in TERMINAL {
            assert!(next_statuses(t).is_empty(), "{t:?}");
        }
    }

    #[test]
    fn no_self_transitions() {
        for s in ALL {
            assert!(!allowed(s, s), "{s:?}");
        }
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name(EmployedWithSubsidy), "EMPLOYED_WITH_SUBSIDY");
    }
}

//! Norwegian national identity numbers: fodselsnummer and D-nummer.
//!
//! The only way to get a [`NationalId`] is [`NationalId::parse`], which checks
//! the form, both check digits (the classic rule and the rule for numbers
//! issued from 2032), the embedded date and the kind of number. `Debug` and
//! `Display` mask the number so that it cannot reach a log by accident.

use chrono::{Datelike, NaiveDate};
use std::fmt;

const WEIGHTS_1: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const WEIGHTS_2: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

/// Whether synthetic test numbers are acceptable, which depends on how the
/// gateway runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMode {
    /// Real numbers only: synthetic test numbers are refused.
    Production,
    /// Dev/test: synthetic numbers (NAV's +40 and Tenor's +80 month) are
    /// accepted as well as real ones.
    Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdKind {
    Fodselsnummer,
    DNummer,
}

/// Where a synthetic number comes from, if it is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Synthetic {
    /// NAV's test data: month + 40.
    Nav,
    /// Skatteetaten's test population (Tenor): month + 80.
    Tenor,
}

/// Why a number is not acceptable. The variants never carry the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NationalIdError {
    #[error("must be exactly 11 digits")]
    Format,
    #[error("check digits do not match; check the number for typing errors")]
    Checksum,
    #[error("does not contain a valid date of birth")]
    Date,
    #[error("date of birth lies in the future")]
    FutureBirthDate,
    #[error(
        "is an FH-number (first digit 8 or 9), which cannot identify a participant; use the person's fodselsnummer or D-nummer"
    )]
    FhNumber,
    #[error(
        "is an H-number (month + 40), which cannot identify a participant; use the person's fodselsnummer or D-nummer"
    )]
    HNumber,
    #[error("is a synthetic test number, accepted only when the gateway runs in dev/test mode")]
    SyntheticInProduction,
}

/// A validated fodselsnummer or D-nummer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NationalId {
    digits: String,
    kind: IdKind,
    synthetic: Option<Synthetic>,
    birth_date: NaiveDate,
}

impl NationalId {
    /// Parses and validates `input` (surrounding whitespace is ignored), with
    /// `today` as the limit for the date of birth.
    pub fn parse(input: &str, mode: IdMode, today: NaiveDate) -> Result<Self, NationalIdError> {
        let s = input.trim();
        if s.len() != 11 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NationalIdError::Format);
        }
        let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        if d[0] >= 8 {
            return Err(NationalIdError::FhNumber);
        }
        let classic_k1 = check_digits(&d)?;

        let mut day = d[0] * 10 + d[1];
        let mut month = d[2] * 10 + d[3];
        let yy = d[4] * 10 + d[5];
        let individual = d[6] * 100 + d[7] * 10 + d[8];

        let kind = if day > 40 {
            day -= 40;
            IdKind::DNummer
        } else {
            IdKind::Fodselsnummer
        };
        let synthetic = match month {
            41..=52 => {
                // Month + 40 is both an H-number and NAV's synthetic marker;
                // neither is a real participant's number in production.
                if mode == IdMode::Production {
                    return Err(NationalIdError::HNumber);
                }
                month -= 40;
                Some(Synthetic::Nav)
            }
            81..=92 => {
                if mode == IdMode::Production {
                    return Err(NationalIdError::SyntheticInProduction);
                }
                month -= 80;
                Some(Synthetic::Tenor)
            }
            _ => None,
        };

        let birth_date = birth_date(day, month, yy, individual, classic_k1, today).ok_or(NationalIdError::Date)?;
        if birth_date > today {
            return Err(NationalIdError::FutureBirthDate);
        }
        Ok(Self { digits: s.to_owned(), kind, synthetic, birth_date })
    }

    /// The 11 digits. Handle with care: never log them.
    pub fn expose(&self) -> &str {
        &self.digits
    }

    pub fn kind(&self) -> IdKind {
        self.kind
    }

    pub fn synthetic(&self) -> Option<Synthetic> {
        self.synthetic
    }

    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// Whole years of age on `date`.
    pub fn age_on(&self, date: NaiveDate) -> i32 {
        let b = self.birth_date;
        let mut age = date.year() - b.year();
        if (date.month(), date.day()) < (b.month(), b.day()) {
            age -= 1;
        }
        age
    }
}

/// Checks both check digits. Returns whether the first one follows the
/// classic rule (which also tells the century from the individual number).
fn check_digits(d: &[u32]) -> Result<bool, NationalIdError> {
    // First check digit: the weighted sum of digits 1-9 plus the check digit
    // itself (weight 1) must be 0 mod 11 (classic), or 0, 1, 2 or 3 mod 11
    // (numbers issued from 2032).
    let sum1: u32 = WEIGHTS_1.iter().zip(d).map(|(w, x)| w * x).sum::<u32>() + d[9];
    let rest1 = sum1 % 11;
    if rest1 > 3 {
        return Err(NationalIdError::Checksum);
    }
    // Second check digit: unchanged rule; weighted sum over digits 1-10 plus
    // the check digit must be 0 mod 11.
    let sum2: u32 = WEIGHTS_2.iter().zip(d).map(|(w, x)| w * x).sum::<u32>() + d[10];
    if !sum2.is_multiple_of(11) {
        return Err(NationalIdError::Checksum);
    }
    Ok(rest1 == 0)
}

/// The date of birth. For classic numbers the individual number tells the
/// century; numbers under the 2032 rule (and classic numbers outside the
/// century table) take the latest century that does not put the birth in the
/// future.
fn birth_date(day: u32, month: u32, yy: u32, individual: u32, classic: bool, today: NaiveDate) -> Option<NaiveDate> {
    let yy = yy as i32;
    let from_table = match (individual, yy) {
        (0..=499, _) => Some(1900),
        (500..=749, 54..=99) => Some(1800),
        (500..=999, 0..=39) => Some(2000),
        (900..=999, 40..=99) => Some(1900),
        _ => None,
    };
    match from_table {
        Some(century) if classic => NaiveDate::from_ymd_opt(century + yy, month, day),
        _ => {
            let this_century = today.year() / 100 * 100;
            NaiveDate::from_ymd_opt(this_century + yy, month, day)
                .filter(|d| *d <= today)
                .or_else(|| NaiveDate::from_ymd_opt(this_century - 100 + yy, month, day))
        }
    }
}

impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NationalId").field("kind", &self.kind).field("digits", &"***********").finish()
    }
}

impl fmt::Display for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***********")
    }
}

/// Test helpers that build valid numbers. Public so that other crates' tests
/// can make synthetic identities without hard-coding them.
pub mod testing {
    use super::{WEIGHTS_1, WEIGHTS_2};

    /// Completes 9 digits (DDMMYY + individual number) with classic check
    /// digits, or `None` if no valid number has these 9 digits.
    pub fn complete(first9: &str) -> Option<String> {
        complete_with_rest(first9, 0)
    }

    /// Like [`complete`], with the first check digit chosen so that its
    /// weighted sum is `rest` (0-3) mod 11: the 2032 rule.
    pub fn complete_with_rest(first9: &str, rest: u32) -> Option<String> {
        if first9.len() != 9 || !first9.bytes().all(|b| b.is_ascii_digit()) || rest > 3 {
            return None;
        }
        let mut d: Vec<u32> = first9.bytes().map(|b| u32::from(b - b'0')).collect();
        let s1: u32 = WEIGHTS_1.iter().zip(&d).map(|(w, x)| w * x).sum();
        let k1 = (11 + rest - s1 % 11) % 11;
        if k1 == 10 {
            return None;
        }
        d.push(k1);
        let s2: u32 = WEIGHTS_2.iter().zip(&d).map(|(w, x)| w * x).sum();
        let k2 = (11 - s2 % 11) % 11;
        if k2 == 10 {
            return None;
        }
        d.push(k2);
        Some(d.iter().map(|x| char::from(b'0' + *x as u8)).collect())
    }

    /// A valid synthetic (Tenor, month + 80) fodselsnummer for someone born on
    /// the given date, varied by `n`. Returns the first valid one from `n` on.
    pub fn synthetic_fnr(year: i32, month: u32, day: u32, n: u32) -> String {
        let yy = year.rem_euclid(100);
        for i in 0..1000 {
            let individual = (n + i) % 500; // 000-499: 1900s, with the table
            let individual = if year >= 2000 { 500 + individual % 500 } else { individual };
            let first9 = format!("{day:02}{:02}{yy:02}{individual:03}", month + 80);
            if let Some(s) = complete(&first9) {
                return s;
            }
        }
        unreachable!("some individual number always yields valid check digits")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{complete, complete_with_rest};
    use super::*;
    use proptest::prelude::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    fn parse_prod(s: &str) -> Result<NationalId, NationalIdError> {
        NationalId::parse(s, IdMode::Production, today())
    }

    fn parse_test(s: &str) -> Result<NationalId, NationalIdError> {
        NationalId::parse(s, IdMode::Test, today())
    }

    #[test]
    fn known_valid_classic_numbers() {
        // Built from their first nine digits with the classic rule and checked by
        // hand: 010190 123 -> check digits computed independently below.
        let n = (100..200).find_map(|i| complete(&format!("010190{i:03}"))).expect("valid");
        let id = parse_prod(&n).unwrap();
        assert_eq!(id.kind(), IdKind::Fodselsnummer);
        assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1990, 1, 1).unwrap());
        assert_eq!(id.synthetic(), None);
    }

    #[test]
    fn hand_computed_check_digits() {
        // 150385 123: sum1 = 1*3+5*7+0*6+3*1+8*8+5*9+1*4+2*5+3*2 = 170,
        // 170 mod 11 = 5, k1 = 6; sum2 = 1*5+5*4+0*3+3*2+8*7+5*6+1*5+2*4+3*3+6*2
        // = 151, 151 mod 11 = 8, k2 = 3.
        assert_eq!(complete("150385123").as_deref(), Some("15038512363"));
        let id = parse_prod("15038512363").unwrap();
        assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1985, 3, 15).unwrap());
    }

    #[test]
    fn d_number_adds_forty_to_the_day() {
        let n = complete("550390123").expect("valid"); // day 15 + 40
        let id = parse_prod(&n).unwrap();
        assert_eq!(id.kind(), IdKind::DNummer);
        assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1990, 3, 15).unwrap());
    }

    #[test]
    fn wrong_check_digits_are_rejected() {
        let n = complete("150385123").unwrap();
        let mut bad = n.clone().into_bytes();
        bad[10] = if bad[10] == b'9' { b'0' } else { bad[10] + 1 };
        assert_eq!(parse_prod(std::str::from_utf8(&bad).unwrap()), Err(NationalIdError::Checksum));
    }

    #[test]
    fn format_errors() {
        for s in ["", "1234567890", "123456789012", "1503851236a", "15038 12363"] {
            assert_eq!(parse_prod(s), Err(NationalIdError::Format), "{s:?}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert!(parse_prod(" 15038512363\n").is_ok());
    }

    #[test]
    fn rule_2032_first_check_digit_alternatives_are_accepted() {
        let mut accepted = 0;
        for rest in 1..=3 {
            if let Some(n) = complete_with_rest("150385123", rest) {
                let id = parse_prod(&n).unwrap();
                assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1985, 3, 15).unwrap());
                accepted += 1;
            }
        }
        assert!(accepted >= 2, "most 2032-rule alternatives exist");
    }

    #[test]
    fn rule_2032_rest_above_three_is_rejected() {
        // Build a number whose first check digit leaves rest 4 and whose second
        // check digit is right: it must fail on the first digit.
        let s = (100..300)
            .find_map(|i| {
                let d: Vec<u32> = format!("150385{i:03}").bytes().map(|b| u32::from(b - b'0')).collect();
                let s1: u32 = WEIGHTS_1.iter().zip(&d).map(|(w, x)| w * x).sum();
                let k1 = (11 + 4 - s1 % 11) % 11;
                let mut d10 = d.clone();
                d10.push(k1);
                let s2: u32 = WEIGHTS_2.iter().zip(&d10).map(|(w, x)| w * x).sum();
                let k2 = (11 - s2 % 11) % 11;
                (k1 < 10 && k2 < 10)
                    .then(|| d10.iter().chain([k2].iter()).map(|x| char::from(b'0' + *x as u8)).collect::<String>())
            })
            .expect("some individual number gives rest 4 with valid digits");
        assert_eq!(parse_prod(&s), Err(NationalIdError::Checksum));
    }

    #[test]
    fn fh_numbers_are_rejected() {
        let n = complete("812345678").or_else(|| complete("912345670")).unwrap();
        assert_eq!(parse_test(&n), Err(NationalIdError::FhNumber));
        assert_eq!(parse_prod(&n), Err(NationalIdError::FhNumber));
    }

    #[test]
    fn h_number_rejected_in_production() {
        let n = complete("154385123").or_else(|| complete("154385124")).unwrap();
        assert_eq!(parse_prod(&n), Err(NationalIdError::HNumber));
    }

    #[test]
    fn nav_synthetic_accepted_only_in_test_mode() {
        let n = (100..200).find_map(|i| complete(&format!("154385{i:03}"))).unwrap();
        let id = parse_test(&n).unwrap();
        assert_eq!(id.synthetic(), Some(Synthetic::Nav));
        assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1985, 3, 15).unwrap());
        assert!(parse_prod(&n).is_err());
    }

    #[test]
    fn tenor_synthetic_accepted_only_in_test_mode() {
        let n = testing::synthetic_fnr(1985, 3, 15, 7);
        let id = parse_test(&n).unwrap();
        assert_eq!(id.synthetic(), Some(Synthetic::Tenor));
        assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1985, 3, 15).unwrap());
        assert_eq!(parse_prod(&n), Err(NationalIdError::SyntheticInProduction));
    }

    #[test]
    fn synthetic_d_number() {
        let n = (100..200).find_map(|i| complete(&format!("558385{i:03}"))).unwrap();
        let id = parse_test(&n).unwrap();
        assert_eq!(id.kind(), IdKind::DNummer);
        assert_eq!(id.synthetic(), Some(Synthetic::Tenor));
    }

    #[test]
    fn impossible_dates_are_rejected() {
        for first9 in ["310285123", "000185123", "011385123", "320185123"] {
            if let Some(n) = complete(first9) {
                assert_eq!(parse_prod(&n), Err(NationalIdError::Date), "{first9}");
            }
        }
    }

    #[test]
    fn future_birth_date_is_rejected() {
        // 2030, individual 500-999 with yy 00-39 means the 2000s.
        let n = (500..600).find_map(|i| complete(&format!("010130{i:03}"))).unwrap();
        assert_eq!(parse_prod(&n), Err(NationalIdError::FutureBirthDate));
        // Later this year is in the future too.
        let n = (500..600).find_map(|i| complete(&format!("241126{i:03}"))).unwrap();
        assert_eq!(parse_prod(&n), Err(NationalIdError::FutureBirthDate));
        let n = (500..600).find_map(|i| complete(&format!("231126{i:03}"))).unwrap();
        assert!(parse_prod(&n).is_ok(), "born today is not in the future");
    }

    #[test]
    fn rule_2032_century_is_the_latest_date_not_in_the_future() {
        // Today is 2026-11-23. A 2032-rule number (rest 1-3) does not tell the
        // century: 24.12.26 is then 1926, 23.11.26 is 2026 and 01.01.30 is 1930.
        for (date, year) in [("241226", 1926), ("231126", 2026), ("010130", 1930), ("150385", 1985)] {
            let n = (1..=3)
                .find_map(|rest| (100..400).find_map(|i| complete_with_rest(&format!("{date}{i:03}"), rest)))
                .unwrap();
            assert_eq!(parse_prod(&n).unwrap().birth_date().year(), year, "{date}");
        }
    }

    #[test]
    fn century_from_individual_number() {
        let cases = [("010160", 100, 1960), ("010160", 950, 1960), ("010110", 600, 2010), ("010160", 600, 1860)];
        for (date, ind_start, year) in cases {
            let n = (ind_start..ind_start + 50).find_map(|i| complete(&format!("{date}{i:03}"))).unwrap();
            assert_eq!(parse_prod(&n).unwrap().birth_date().year(), year, "{date} {ind_start}");
        }
    }

    #[test]
    fn debug_and_display_mask_the_number() {
        let n = complete("150385123").unwrap();
        let id = parse_prod(&n).unwrap();
        assert!(!format!("{id:?}").contains(&n));
        assert!(!format!("{id}").contains(&n));
        assert!(!format!("{id:?}").contains("150385"));
    }

    #[test]
    fn age_on_a_date() {
        let id = parse_prod(&complete("150385123").unwrap()).unwrap();
        assert_eq!(id.age_on(NaiveDate::from_ymd_opt(2026, 3, 14).unwrap()), 40);
        assert_eq!(id.age_on(NaiveDate::from_ymd_opt(2026, 3, 15).unwrap()), 41);
    }

    proptest! {
        #[test]
        fn every_completed_number_parses_with_its_date(
            day in 1u32..=28, month in 1u32..=12, yy in 0u32..=99, individual in 0u32..=499,
        ) {
            let first9 = format!("{day:02}{month:02}{yy:02}{individual:03}");
            if let Some(n) = complete(&first9) {
                let id = parse_prod(&n).unwrap();
                prop_assert_eq!(id.birth_date(), NaiveDate::from_ymd_opt(1900 + yy as i32, month, day).unwrap());
            }
        }

        #[test]
        fn any_single_digit_change_is_caught(
            day in 1u32..=28, month in 1u32..=12, yy in 0u32..=99, individual in 0u32..=499,
            pos in 0usize..11, delta in 1u8..=9,
        ) {
            let first9 = format!("{day:02}{month:02}{yy:02}{individual:03}");
            if let Some(n) = complete(&first9) {
                let mut b = n.into_bytes();
                b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
                let s = String::from_utf8(b).unwrap();
                // A one-digit change can never pass the second check digit (weights
                // are all non-zero mod 11), so the result is never a valid number.
                prop_assert!(parse_test(&s).is_err());
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,20}") {
            let _ = parse_test(&s);
        }

        #[test]
        fn rule_2032_numbers_parse(day in 1u32..=28, month in 1u32..=12, yy in 0u32..=99, individual in 0u32..=999, rest in 0u32..=3) {
            let first9 = format!("{day:02}{month:02}{yy:02}{individual:03}");
            if let Some(n) = complete_with_rest(&first9, rest) {
                if let Ok(id) = parse_prod(&n) {
                    let b = id.birth_date();
                    prop_assert!(b <= today());
                    prop_assert_eq!((b.day(), b.month(), b.year().rem_euclid(100) as u32), (day, month, yy));
                    if rest != 0 {
                        // Without the classic table: the latest date not in the future.
                        prop_assert!(b > today() - chrono::Duration::days(36_525));
                    }
                } else {
                    // Only a future date may fail.
                    prop_assert_eq!(parse_prod(&n), Err(NationalIdError::FutureBirthDate));
                }
            }
        }
    }
}

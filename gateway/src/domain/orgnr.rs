//! Organisation numbers (organisasjonsnummer) and NAV office numbers.

use std::fmt;

const WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];

/// A 9-digit organisation number with a valid mod-11 check digit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Orgnr(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrgnrError {
    #[error("must be exactly 9 digits")]
    Format,
    #[error("check digit does not match; check the number in the Central Coordinating Register (Enhetsregisteret)")]
    Checksum,
}

impl Orgnr {
    pub fn parse(input: &str) -> Result<Self, OrgnrError> {
        let s = input.trim();
        if s.len() != 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OrgnrError::Format);
        }
        let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        match check_digit(&d[..8]) {
            Some(k) if k == d[8] => Ok(Self(s.to_owned())),
            _ => Err(OrgnrError::Checksum),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Completes 8 digits with their check digit, where one exists.
    pub fn complete(first8: &str) -> Option<String> {
        if first8.len() != 8 || !first8.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let d: Vec<u32> = first8.bytes().map(|b| u32::from(b - b'0')).collect();
        check_digit(&d).map(|k| format!("{first8}{k}"))
    }
}

fn check_digit(first8: &[u32]) -> Option<u32> {
    let sum: u32 = WEIGHTS.iter().zip(first8).map(|(w, x)| w * x).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(k),
    }
}

impl fmt::Display for Orgnr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Orgnr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Orgnr({})", self.0)
    }
}

/// A NAV office number (enhetsnummer): 4 digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NavOffice(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be a 4-digit NAV office number (enhetsnummer), e.g. 0314")]
pub struct NavOfficeError;

impl NavOffice {
    pub fn parse(input: &str) -> Result<Self, NavOfficeError> {
        let s = input.trim();
        if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) { Ok(Self(s.to_owned())) } else { Err(NavOfficeError) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_organisation_numbers() {
        // NAV (889640782) and Skatteetaten (974761076) are public numbers.
        assert!(Orgnr::parse("889640782").is_ok());
        assert!(Orgnr::parse("974761076").is_ok());
        // Hand-computed: 12345678 -> 3+4+21+24+25+24+21+16 = 138, 138 mod 11 = 6, k = 5.
        assert_eq!(Orgnr::complete("12345678").as_deref(), Some("123456785"));
    }

    #[test]
    fn wrong_check_digit() {
        assert_eq!(Orgnr::parse("889640781"), Err(OrgnrError::Checksum));
        assert_eq!(Orgnr::parse("123456789"), Err(OrgnrError::Checksum));
    }

    #[test]
    fn format() {
        for s in ["", "88964078", "8896407820", "88964078x"] {
            assert_eq!(Orgnr::parse(s), Err(OrgnrError::Format), "{s:?}");
        }
    }

    #[test]
    fn nav_office() {
        assert!(NavOffice::parse("0314").is_ok());
        assert!(NavOffice::parse("314").is_err());
        assert!(NavOffice::parse("03a4").is_err());
    }

    proptest! {
        #[test]
        fn completed_numbers_parse_and_any_digit_change_fails(first8 in "[0-9]{8}", pos in 0usize..9, delta in 1u8..=9) {
            if let Some(n) = Orgnr::complete(&first8) {
                prop_assert!(Orgnr::parse(&n).is_ok());
                let mut b = n.into_bytes();
                b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
                prop_assert!(Orgnr::parse(std::str::from_utf8(&b).unwrap()).is_err());
            }
        }
    }
}

//! Municipality codes (kommunenummer), checked against the shipped code list
//! of current municipalities (SSB classification 131, valid from 2024-01-01).
//! The list is data: `gateway/data/kommuner.csv`.

use std::{collections::HashMap, fmt, sync::OnceLock};

const KOMMUNER_CSV: &str = include_str!("../../data/kommuner.csv");

fn registry() -> &'static HashMap<&'static str, &'static str> {
    static REGISTRY: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        KOMMUNER_CSV.lines().skip(1).filter(|l| !l.trim().is_empty()).filter_map(|l| l.split_once(',')).collect()
    })
}

/// A current municipality code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kommunenummer(&'static str);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KommunenummerError {
    #[error("must be exactly 4 digits, e.g. 0301")]
    Format,
    #[error(
        "is not a current municipality code (SSB classification 131, 2024 edition); codes changed on 2024-01-01 in Østfold, Akershus, Buskerud, Vestfold, Telemark, Troms and Finnmark"
    )]
    Unknown,
}

impl Kommunenummer {
    pub fn parse(input: &str) -> Result<Self, KommunenummerError> {
        let s = input.trim();
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KommunenummerError::Format);
        }
        registry().get_key_value(s).map(|(code, _)| Self(code)).ok_or(KommunenummerError::Unknown)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The municipality's official name.
    pub fn name(&self) -> &'static str {
        registry()[self.0]
    }

    /// Number of municipalities in the shipped list.
    pub fn count() -> usize {
        registry().len()
    }
}

impl fmt::Display for Kommunenummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Kommunenummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kommunenummer({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_complete_and_well_formed() {
        assert_eq!(Kommunenummer::count(), 357);
        for line in KOMMUNER_CSV.lines().skip(1) {
            let (code, name) = line.split_once(',').unwrap();
            assert_eq!(code.len(), 4, "{line}");
            assert!(!name.is_empty(), "{line}");
        }
    }

    #[test]
    fn current_codes_are_accepted() {
        for (code, name) in [
            ("0301", "Oslo"),
            ("3107", "Fredrikstad"),
            ("3301", "Drammen"),
            ("4601", "Bergen"),
            ("5001", "Trondheim"),
            ("5501", "Tromsø"),
        ] {
            let k = Kommunenummer::parse(code).unwrap();
            assert_eq!(k.as_str(), code);
            assert!(k.name().contains(name), "{code} is {}", k.name());
        }
    }

    #[test]
    fn codes_replaced_in_2024_are_unknown() {
        // Fredrikstad was 3004, Drammen 3005, Tromsø 5401 until 2023.
        for code in ["3004", "3005", "5401", "0000", "9999"] {
            assert_eq!(Kommunenummer::parse(code), Err(KommunenummerError::Unknown), "{code}");
        }
    }

    #[test]
    fn malformed_codes() {
        for code in ["", "301", "03011", "03a1", "+301"] {
            assert_eq!(Kommunenummer::parse(code), Err(KommunenummerError::Format), "{code}");
        }
    }
}

//! `google.type.Date` <-> `chrono::NaiveDate`, with validation.

use crate::error::Violations;
use chrono::{Datelike, NaiveDate};
use hurtigspor_proto::google::r#type::Date;

pub fn to_proto(d: NaiveDate) -> Date {
    Date { year: d.year(), month: d.month() as i32, day: d.day() as i32 }
}

/// A full calendar date, or `None` for a partial or impossible one.
pub fn from_proto(d: &Date) -> Option<NaiveDate> {
    if d.year < 1 || d.month < 1 || d.day < 1 {
        return None;
    }
    NaiveDate::from_ymd_opt(d.year, d.month as u32, d.day as u32)
}

fn is_unset(d: &Date) -> bool {
    d.year == 0 && d.month == 0 && d.day == 0
}

/// An optional date field: `None` when absent (or all zero); a violation when
/// present but not a full, real date.
pub fn optional(d: Option<&Date>, field: &str, v: &mut Violations) -> Option<NaiveDate> {
    let d = d.filter(|d| !is_unset(d))?;
    let parsed = from_proto(d);
    if parsed.is_none() {
        v.add(field, "INVALID_DATE", "must be a full calendar date (year, month and day) that exists");
    }
    parsed
}

/// A required date field.
pub fn required(d: Option<&Date>, field: &str, v: &mut Violations) -> Option<NaiveDate> {
    if d.is_none_or(is_unset) {
        v.add(field, "REQUIRED", "is required: a full calendar date (year, month and day)");
        return None;
    }
    optional(d, field, v)
}

pub use hurtigspor_adapters::clock::oslo_date;

/// Inclusive number of days in `start..=end`.
pub fn days_inclusive(start: NaiveDate, end: NaiveDate) -> i64 {
    (end - start).num_days() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let d = NaiveDate::from_ymd_opt(2026, 2, 28).unwrap();
        assert_eq!(from_proto(&to_proto(d)), Some(d));
        assert_eq!(from_proto(&Date { year: 2026, month: 2, day: 29 }), None);
        assert_eq!(from_proto(&Date { year: 2026, month: 0, day: 1 }), None);
        let mut v = Violations::new();
        assert_eq!(required(None, "x", &mut v), None);
        assert_eq!(optional(Some(&Date { year: 0, month: 0, day: 0 }), "y", &mut v), None);
        assert_eq!(optional(Some(&Date { year: 2026, month: 13, day: 1 }), "z", &mut v), None);
        let err = v.check().unwrap_err();
        let crate::error::Error::InvalidArgument(list) = err else { panic!() };
        let fields: Vec<_> = list.iter().map(|x| (x.field.as_str(), x.reason)).collect();
        assert_eq!(fields, [("x", "REQUIRED"), ("z", "INVALID_DATE")]);
    }
}

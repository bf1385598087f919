//! `google.type.Date` <-> `chrono::NaiveDate`, with validation.

use crate::error::Violations;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
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

/// The calendar date in Norway (Europe/Oslo) at `now`: CET, and CEST from
/// the last Sunday of March to the last Sunday of October, switching at 01:00
/// UTC (the EU rule). "Today" in every rule means Norwegian today.
pub fn oslo_date(now: DateTime<Utc>) -> NaiveDate {
    let last_sunday = |month: u32| {
        let first_next = if month == 12 {
            NaiveDate::from_ymd_opt(now.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(now.year(), month + 1, 1)
        }
        .expect("valid date");
        let last = first_next.pred_opt().expect("valid date");
        let back = last.weekday().num_days_from_sunday();
        last - Duration::days(i64::from(back))
    };
    let switch = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).expect("valid time"));
    let summer = now >= switch(last_sunday(3)) && now < switch(last_sunday(10));
    let offset = if summer { 2 } else { 1 };
    (now + Duration::hours(offset)).date_naive()
}

/// Inclusive number of days in `start..=end`.
pub fn days_inclusive(start: NaiveDate, end: NaiveDate) -> i64 {
    (end - start).num_days() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn norwegian_today() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(oslo_date(at("2026-11-23T22:59:59Z")), d(2026, 11, 23));
        assert_eq!(oslo_date(at("2026-11-23T23:00:00Z")), d(2026, 11, 24), "CET is UTC+1");
        assert_eq!(oslo_date(at("2026-07-01T21:59:59Z")), d(2026, 7, 1));
        assert_eq!(oslo_date(at("2026-07-01T22:00:00Z")), d(2026, 7, 2), "CEST is UTC+2");
        // 2026's switches: 29 March and 25 October, at 01:00 UTC.
        assert_eq!(oslo_date(at("2026-03-28T22:30:00Z")), d(2026, 3, 28), "still CET");
        assert_eq!(oslo_date(at("2026-10-24T22:30:00Z")), d(2026, 10, 25), "still CEST");
        assert_eq!(oslo_date(at("2026-12-31T23:30:00Z")), d(2027, 1, 1));
    }

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

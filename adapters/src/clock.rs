//! The one time source of the gateway and its adapters.
//!
//! Every rule that depends on "now" or "today" asks a [`Clock`] instead of
//! the wall clock, so that tests can pin the instant a rule is decided at
//! (midnight in Oslo, the year's end, the day a leave starts). "Today"
//! always means the calendar date in Norway: a participant's day changes at
//! midnight in Oslo, not at midnight UTC.
//!
//! It lives in the adapters crate, the lowest of ours that carries
//! behaviour, so that the gateway and the adapters share one; the gateway
//! re-exports it as `hurtigspor_gateway::clock`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// A source of the current instant. Cheap to clone; clones share the source.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    /// Microseconds since the epoch, movable by tests.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands at `t` until a test moves it with [`Clock::set`]
    /// or [`Clock::advance`].
    pub fn fixed(t: DateTime<Utc>) -> Self {
        Self(Source::Manual(Arc::new(AtomicI64::new(t.timestamp_micros()))))
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Source::System => Utc::now(),
            Source::Manual(micros) => {
                DateTime::from_timestamp_micros(micros.load(Ordering::SeqCst)).expect("a pinned instant is in range")
            }
        }
    }

    /// The calendar date in Norway now.
    pub fn today(&self) -> NaiveDate {
        oslo_date(self.now())
    }

    /// Moves a pinned clock to `t`. The wall clock cannot be moved: a test
    /// that tries has a bug, so it panics.
    pub fn set(&self, t: DateTime<Utc>) {
        match &self.0 {
            Source::System => panic!("the system clock cannot be set; build the clock with Clock::fixed"),
            Source::Manual(micros) => micros.store(t.timestamp_micros(), Ordering::SeqCst),
        }
    }

    /// Moves a pinned clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.set(self.now() + by);
    }

    /// Whether this is the wall clock.
    pub fn is_system(&self) -> bool {
        matches!(self.0, Source::System)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock(system)"),
            Source::Manual(_) => write!(f, "Clock(fixed at {})", self.now()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn d(y: i32, m: u32, dd: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, dd).unwrap()
    }

    #[test]
    fn norwegian_today() {
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
    fn a_pinned_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::fixed(at("2026-12-31T22:59:59Z"));
        let shared = clock.clone();
        assert_eq!(clock.today(), d(2026, 12, 31));
        shared.advance(Duration::seconds(1));
        assert_eq!(clock.now(), at("2026-12-31T23:00:00Z"));
        assert_eq!(clock.today(), d(2027, 1, 1), "the year ends at midnight in Oslo, an hour before UTC");
        assert!(!clock.is_system());
    }

    #[test]
    #[should_panic(expected = "cannot be set")]
    fn the_wall_clock_refuses_to_be_moved() {
        Clock::system().set(at("2026-01-01T00:00:00Z"));
    }
}

//! A virtual clock: real time plus an offset that tests (or the admin API)
//! move forward. Token expiry and case lifecycles follow it, so a test can
//! jump two months ahead in a millisecond.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct VirtualClock {
    offset: Arc<Mutex<Duration>>,
}

impl VirtualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().expect("clock lock")
    }

    /// Moves the clock forward (never back).
    pub fn advance(&self, by: Duration) {
        if by > Duration::zero() {
            *self.offset.lock().expect("clock lock") += by;
        }
    }

    /// Back to real time.
    pub fn reset(&self) {
        *self.offset.lock().expect("clock lock") = Duration::zero();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_forward_only() {
        let c = VirtualClock::new();
        let before = c.now();
        c.advance(Duration::days(60));
        assert!(c.now() - before >= Duration::days(60));
        c.advance(Duration::days(-100));
        assert!(c.now() - before >= Duration::days(60));
        c.reset();
        assert!(c.now() - before < Duration::days(1));
    }
}

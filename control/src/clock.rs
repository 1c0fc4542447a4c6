//! Wall-clock time as the control plane keeps it: unix milliseconds.
//!
//! Rollout records persist when a step started, and in a fleet another replica continues that
//! step, so the rollout clock is wall time in plain numbers (`Millis`), not `Instant`s. The
//! pure rollout engine takes `now` as an argument and never reads a clock itself; only the
//! run loop calls [`now`]. Every timestamp the API shows is RFC 3339 with milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub type Millis = u64;

/// The current wall-clock time.
pub fn now() -> Millis {
    to_millis(SystemTime::now())
}

pub fn to_millis(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-28T12:00:00.123Z`: the format of every timestamp the API returns.
pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Milliseconds in a duration, saturating.
pub fn ms(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_carry_milliseconds() {
        assert_eq!(rfc3339(1_764_331_200_123), "2025-11-28T12:00:00.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}

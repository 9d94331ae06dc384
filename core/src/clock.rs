//! Injected clocks. Pure cores never read time; their shells pass a
//! [`UnixMillis`] in, taken from a [`Clock`] that tests can control.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the one time unit stored in commands,
/// records and messages (expiry deadlines, creation times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Returns this instant plus `seconds`, saturating.
    pub fn plus_seconds(self, seconds: u32) -> UnixMillis {
        UnixMillis(self.0.saturating_add(u64::from(seconds) * 1000))
    }

    /// Returns the whole seconds from `self` until `later`, rounded up, or 0
    /// when `later` has passed.
    pub fn seconds_until(self, later: UnixMillis) -> u32 {
        let ms = later.0.saturating_sub(self.0);
        u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
    }

    /// Returns the instant in RFC 3339 form, UTC, with milliseconds
    /// (`2026-11-26T12:00:00.000Z`).
    pub fn rfc3339(self) -> String {
        let (days, ms) = ((self.0 / 86_400_000) as i64, self.0 % 86_400_000);
        // Civil date from days since 1970-01-01 (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Returns the current time.
    fn now(&self) -> UnixMillis;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A number drawn once per process, from the time and the process id: it
/// tells this process from an earlier or later one of the same node
/// (a gateway's link incarnation, a router's batches of wills).
pub fn process_incarnation() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A clock that moves only when told to: for tests of expiry logic.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Returns a clock reading `start`.
    pub fn new(start: UnixMillis) -> ManualClock {
        ManualClock(AtomicU64::new(start.0))
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_print_as_rfc_3339() {
        assert_eq!(super::UnixMillis(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::UnixMillis(951_782_400_123).rfc3339(), "2000-02-29T00:00:00.123Z");
        assert_eq!(super::UnixMillis(1_795_694_399_999).rfc3339(), "2026-11-26T11:59:59.999Z");
    }

    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new(UnixMillis(1_000));
        assert_eq!(clock.now(), UnixMillis(1_000));
        clock.advance(2_500);
        assert_eq!(clock.now(), UnixMillis(3_500));
        assert_eq!(UnixMillis(1_000).seconds_until(UnixMillis(3_500)), 3);
        assert_eq!(UnixMillis(4_000).seconds_until(UnixMillis(3_500)), 0);
        assert_eq!(UnixMillis(1_000).plus_seconds(2), UnixMillis(3_000));
    }
}

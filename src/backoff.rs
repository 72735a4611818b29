//! The one backoff: capped exponential ceilings with jitter, for the İYS client's retries
//! (full jitter) and the uploader's rescheduling (equal jitter, never zero). A leaf: the
//! caller draws the randomness, so both are tested exactly.

use std::time::Duration;

/// A capped exponential backoff: the ceiling of attempt `n` is `min(cap, base · 2^(n-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First ceiling; doubles with each attempt.
    pub base: Duration,
    /// Largest ceiling; account problems always wait this long.
    pub cap: Duration,
}

impl Backoff {
    /// Equal jitter: half the ceiling plus a uniform share of the other half, where the
    /// ceiling is `min(cap, base · 2^(attempt-1))`. Never zero, so a failing upload cannot
    /// spin; jittered, so uploads that failed together do not return together. `random`
    /// is any `u64` (the caller draws it).
    pub fn delay(&self, attempt: u32, account: bool, random: u64) -> Duration {
        let ceiling = if account {
            self.cap
        } else {
            self.ceiling(attempt)
        };
        let half = ceiling / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        let jitter = Duration::from_micros(random % spread.saturating_add(1));
        (ceiling.saturating_sub(half) + jitter).max(Duration::from_millis(1))
    }

    /// Full jitter: uniform in `[0, ceiling]` (for calls retried at once, where spreading
    /// matters more than a floor). `random` is any `u64`.
    pub fn full_jitter(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(random % ceiling.saturating_add(1))
    }

    /// The ceiling of attempt `attempt` (the first is 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << shift).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_full_jitter_stays_under_them() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(250),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(250));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(250));
        for random in [0, 7, 123_456_789, u64::MAX] {
            for attempt in 1..40 {
                assert!(b.full_jitter(attempt, random) <= b.ceiling(attempt));
            }
        }
        assert_eq!(b.full_jitter(1, 0), Duration::ZERO);
    }
}

//! Per-client quotas: one tenant flooding the server gets RESOURCE_EXHAUSTED for its own
//! excess instead of taking capacity from the others.
//!
//! The limiter is GCRA (the generic cell rate algorithm), a token bucket kept as one number:
//! the theoretical arrival time (TAT) of the next unit. Taking `n` units moves the TAT `n`
//! emission intervals later; a request is refused when that would put the TAT more than the
//! burst tolerance ahead of now. One compare-and-swap per call, no lock and no timer task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A rate of decisions per second with a burst allowance, shared by every connection of one
/// API client.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    burst: u32,
    /// Nanoseconds per unit.
    interval_ns: u64,
    /// How far ahead of now the TAT may run: `burst` units.
    tolerance_ns: u64,
    epoch: Instant,
    /// Theoretical arrival time, in nanoseconds since `epoch`.
    tat: AtomicU64,
}

impl PartialEq for RateLimiter {
    /// Two limiters are the same configuration; their state is not compared.
    fn eq(&self, other: &Self) -> bool {
        (self.per_second, self.burst) == (other.per_second, other.burst)
    }
}

impl Eq for RateLimiter {}

impl RateLimiter {
    /// `per_second` units per second on average, up to `burst` at once (both at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = per_second.max(1);
        let burst = burst.max(1);
        let interval_ns = 1_000_000_000 / u64::from(per_second);
        Self {
            per_second,
            burst,
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst),
            epoch: Instant::now(),
            tat: AtomicU64::new(0),
        }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes `n` units if the quota allows them now; otherwise takes nothing and says how long
    /// until it would. More than `burst` units at once never fit: the wait is then `None`.
    pub fn try_take(&self, n: u32, now: Instant) -> Result<(), Option<Duration>> {
        if n > self.burst {
            return Err(None);
        }
        let now = self.nanos(now);
        let cost = u64::from(n) * self.interval_ns;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + cost;
            let limit = now + self.tolerance_ns;
            if next > limit {
                return Err(Some(Duration::from_nanos(next - limit)));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Takes `n` units unconditionally and returns how long the caller must wait before using
    /// them: streams are paced (HTTP/2 flow control then slows the sender) instead of failed.
    pub fn reserve(&self, n: u32, now: Instant) -> Duration {
        let now = self.nanos(now);
        let cost = u64::from(n) * self.interval_ns;
        let previous = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.max(now) + cost)
            })
            .unwrap_or_else(|tat| tat);
        let next = previous.max(now) + cost;
        Duration::from_nanos(next.saturating_sub(now + self.tolerance_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_excess_is_refused_with_the_wait() {
        let limiter = RateLimiter::new(100, 10);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.try_take(1, now), Ok(()));
        }
        let wait = limiter.try_take(1, now).unwrap_err().expect("fits later");
        // One unit every 10 ms.
        assert_eq!(wait, Duration::from_millis(10));
        // Refusals take nothing: after the wait exactly one more fits.
        let later = now + wait;
        assert_eq!(limiter.try_take(1, later), Ok(()));
        assert!(limiter.try_take(1, later).is_err());
    }

    #[test]
    fn the_rate_holds_over_time() {
        let limiter = RateLimiter::new(1_000, 1);
        let start = Instant::now();
        let mut granted = 0;
        // Ask every 100 µs for one simulated second: 10 000 asks, about 1 000 fit.
        for step in 0..10_000u64 {
            if limiter
                .try_take(1, start + Duration::from_micros(step * 100))
                .is_ok()
            {
                granted += 1;
            }
        }
        assert!((999..=1_001).contains(&granted), "{granted}");
    }

    #[test]
    fn more_than_the_burst_never_fits() {
        let limiter = RateLimiter::new(1_000, 100);
        assert_eq!(limiter.try_take(101, Instant::now()), Err(None));
        assert_eq!(limiter.try_take(100, Instant::now()), Ok(()));
    }

    #[test]
    fn reserve_paces_instead_of_refusing() {
        let limiter = RateLimiter::new(1_000, 100);
        let now = Instant::now();
        assert_eq!(limiter.reserve(100, now), Duration::ZERO);
        // The next 1 000 units are due over the next second.
        assert_eq!(limiter.reserve(1_000, now), Duration::from_secs(1));
        assert!(limiter.try_take(1, now).is_err());
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1, 1_000));
        let now = Instant::now();
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limiter = std::sync::Arc::clone(&limiter);
                    s.spawn(move || {
                        (0..1_000)
                            .filter(|_| limiter.try_take(1, now).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(granted, 1_000);
    }
}

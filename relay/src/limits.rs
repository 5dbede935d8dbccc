//! Token buckets and the violation window.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` stored. 16 bytes of state + Instant.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: now,
        }
    }

    /// Take `n` tokens if available.
    pub fn try_take(&mut self, n: u32, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Counts protocol violations in a sliding-ish 10 s window.
#[derive(Debug, Clone)]
pub struct Violations {
    max: u32,
    count: u32,
    window_start: Instant,
}

/// Window of [`Violations`].
pub const VIOLATION_WINDOW: Duration = Duration::from_secs(10);

impl Violations {
    /// Allow `max` per window.
    pub fn new(max: u32, now: Instant) -> Self {
        Violations {
            max,
            count: 0,
            window_start: now,
        }
    }

    /// Record one; returns `true` when the session has now exceeded the allowance.
    pub fn record(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) > VIOLATION_WINDOW {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            assert!(b.try_take(1, t0));
        }
        assert!(!b.try_take(1, t0));
        assert!(b.try_take(1, t0 + Duration::from_millis(110)));
        assert!(!b.try_take(1, t0 + Duration::from_millis(110)));
        assert!(b.try_take(5, t0 + Duration::from_secs(10)));
        assert!(!b.try_take(6, t0 + Duration::from_secs(20)));
    }

    #[test]
    fn violations_window() {
        let t0 = Instant::now();
        let mut v = Violations::new(2, t0);
        assert!(!v.record(t0));
        assert!(!v.record(t0));
        assert!(v.record(t0));
        assert!(!v.record(t0 + Duration::from_secs(11)));
    }
}

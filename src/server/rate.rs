//! `RateLimit`: a token bucket as GCRA (the generic cell rate algorithm).
//!
//! One atomic per bucket holds the *theoretical arrival time*: when the
//! bucket would be empty if every admitted request had arrived on schedule.
//! A request is admitted if that time is less than a burst ahead of now,
//! and moves it one interval forward. No timer thread, no refill loop.
//!
//! Used by the HTTP layer for the optional global and per-SKU limits on
//! reservation requests (peak shaving). A bucket is one atomic that every
//! request it covers updates: the cost of asking for a shared limit.

use std::sync::atomic::{AtomicU64, Ordering};

/// `rate` requests per second with bursts of up to `burst` at once.
#[derive(Debug)]
pub struct RateLimit {
    interval_ns: u64,
    burst_ns: u64,
    /// Theoretical arrival time, ns on the caller's clock.
    tat_ns: AtomicU64,
}

impl RateLimit {
    pub fn new(rate_per_second: u32, burst: u32) -> RateLimit {
        assert!(
            rate_per_second > 0 && burst > 0,
            "a rate limit needs a positive rate and burst"
        );
        let interval_ns = 1_000_000_000 / u64::from(rate_per_second);
        RateLimit {
            interval_ns,
            burst_ns: interval_ns * u64::from(burst),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// Admits one request at `now_ns` (a monotonic clock), or refuses it.
    pub fn admit(&self, now_ns: u64) -> bool {
        // Relaxed: the bucket is this one value; CAS keeps it exact.
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_ns) + self.interval_ns;
            if next.saturating_sub(now_ns) > self.burst_ns {
                return false;
            }
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}

impl RateLimit {
    /// Whether the bucket is full again at `now_ns`: it remembers nothing
    /// a fresh bucket would not, so it can be dropped.
    pub fn is_idle(&self, now_ns: u64) -> bool {
        // Relaxed: a hint for eviction, read under the owner's lock.
        self.tat_ns.load(Ordering::Relaxed) <= now_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn admits_the_burst_then_the_rate() {
        let limit = RateLimit::new(10, 3);
        let start = 100 * SECOND;
        assert!((0..3).all(|_| limit.admit(start)), "a burst of 3 at once");
        assert!(
            !limit.admit(start),
            "the fourth at the same instant is refused"
        );
        assert!(
            !limit.admit(start + SECOND / 20),
            "still within the burst's debt"
        );
        assert!(
            limit.admit(start + SECOND / 10),
            "one interval later, one more"
        );
        assert!(!limit.admit(start + SECOND / 10));
        // After a long pause the bucket is full again, not overfull.
        let later = start + 60 * SECOND;
        assert!((0..3).all(|_| limit.admit(later)));
        assert!(!limit.admit(later));
    }
}

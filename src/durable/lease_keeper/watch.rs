//! What the lease keeper knows of one SKU, and the sizes it derives:
//! the recent sales rate, the largest lease, the low-water mark.

use std::time::{Duration, Instant};

use super::RATE_PERIOD;

/// What the keeper knows of one SKU.
#[derive(Debug)]
pub(super) struct SkuWatch {
    pub(super) unleased: u64,
    pub(super) demand: u64,
    /// The demand counter the last time this node answered it.
    pub(super) demand_answered: u64,
    /// Local units sold at the last look, and when that last changed.
    pub(super) sold: u64,
    pub(super) last_sale: Instant,
    /// When the SKU first fell below its low-water mark without a refill.
    pub(super) hungry_since: Option<Instant>,
    /// When this node last asked peers for units.
    pub(super) asked: Option<Instant>,
    /// No refill before this (after giving units back for a peer).
    pub(super) hold_refills_until: Option<Instant>,
    /// Units sold per second here, smoothed, and the last look it was
    /// measured at (time, units sold then).
    pub(super) rate: f64,
    pub(super) rate_mark: (Instant, u64),
    /// Units available here at the last look.
    pub(super) available: u64,
}

impl SkuWatch {
    /// Folds the units sold since the last mark into the smoothed rate
    /// (at most every `RATE_PERIOD`, so one tick's jitter does not count).
    pub(super) fn measure(&mut self, now: Instant, sold: u64) {
        let (at, then) = self.rate_mark;
        let elapsed = now.duration_since(at);
        if elapsed < RATE_PERIOD {
            return;
        }
        let recent = sold.saturating_sub(then) as f64 / elapsed.as_secs_f64();
        self.rate = 0.5 * self.rate + 0.5 * recent;
        self.rate_mark = (now, sold);
    }

    /// The largest lease to ask for: `max_chunk`, or two runways of sales
    /// at the recent rate when that is more, so that half a lease (the
    /// low-water mark) lasts a runway (a lease still takes at most
    /// `unleased / (k × nodes)`: `lease_size`).
    pub(super) fn chunk(&self, max_chunk: u64, runway: Duration) -> u64 {
        let two_runways = (self.rate * 2.0 * runway.as_secs_f64()) as u64;
        max_chunk.max(two_runways)
    }

    /// Refill below half the next lease (whose size already follows the
    /// sales rate: `chunk`).
    pub(super) fn low_water(&self, wanted: u64) -> u64 {
        (wanted / 2).max(1)
    }
}

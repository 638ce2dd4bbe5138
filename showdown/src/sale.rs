//! One flash sale, shared by every contender: which SKU a buyer picks next,
//! when the sale is over, and what is counted while it runs.
//!
//! Every contender sells the same shape of stock to the same number of
//! concurrent buyers; only the machinery behind `buy` differs. A buyer
//! stops when it learns the sale is over: in the hot mode at its first
//! "sold out", in the uniform mode once every SKU has answered "sold out"
//! to someone. Counting happens here, at the buyer, so an oversell shows as
//! `sold > stock` whatever the contender itself believes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// A sale that has sold this many times its stock is stopped: the point
/// (it oversells) is made.
pub const OVERSOLD_STOP: u64 = 2;

/// Upper bound on the SKUs of one sale (the uniform mode uses 10 000).
pub const MAX_SKUS: usize = 100_000;

/// The workload: one hot SKU, many SKUs bought uniformly, one hot SKU
/// bought as a hold followed by a confirm, or a crowd hammering a SKU that
/// has sold out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Every buyer buys one unit of the same SKU.
    Hot,
    /// 10 000 SKUs; every buyer picks one uniformly at random.
    Uniform,
    /// One hot SKU, bought as a hold (reservation) then a confirm.
    HoldConfirm,
    /// One SKU with a single unit: after the first buyer, every answer is
    /// "sold out", and the crowd keeps asking until the time is up. What
    /// counts is answers per second (`SaleResult::answers_per_second`).
    SoldOut,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Hot => "hot",
            Mode::Uniform => "uniform",
            Mode::HoldConfirm => "hold-confirm",
            Mode::SoldOut => "sold-out",
        }
    }

    /// How many SKUs the sale spreads its stock over.
    pub fn skus(self) -> usize {
        match self {
            Mode::Hot | Mode::HoldConfirm | Mode::SoldOut => 1,
            Mode::Uniform => 10_000,
        }
    }
}

/// What one purchase attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// One unit is the buyer's.
    Sold,
    /// The SKU has nothing left.
    SoldOut,
    /// One node of a cluster had none left while others may still have
    /// some: the buyer tries again (a sale that ends by count, below).
    NotHere,
}

/// The stock of one sale: `units` spread evenly over `skus` SKUs (the
/// first `units % skus` SKUs get one more).
#[derive(Clone, Copy, Debug)]
pub struct Stock {
    pub skus: usize,
    pub units: u64,
}

impl Stock {
    pub fn new(mode: Mode, units: u64) -> Stock {
        let skus = mode.skus();
        assert!(skus > 0 && skus <= MAX_SKUS);
        // Every SKU gets at least one unit, so every SKU can sell out.
        Stock {
            skus,
            units: units.max(skus as u64),
        }
    }

    pub fn units_of(&self, sku: usize) -> u64 {
        debug_assert!(sku < self.skus);
        let base = self.units / self.skus as u64;
        base + u64::from((sku as u64) < self.units % self.skus as u64)
    }

    /// The name every contender gives SKU `index`.
    pub fn name(index: usize) -> String {
        format!("s{index}")
    }
}

/// Shared state of one running sale.
pub struct Sale {
    pub stock: Stock,
    sold: AtomicU64,
    attempts: AtomicU64,
    errors: AtomicU64,
    /// One flag per SKU: some buyer has been told it is sold out.
    sold_out: Box<[AtomicBool]>,
    sold_out_count: AtomicUsize,
    /// Set when the sale is over (all sold out) or the deadline passed.
    over: AtomicBool,
    timed_out: AtomicBool,
    /// Stopped for selling `OVERSOLD_STOP` times its stock.
    runaway: AtomicBool,
    deadline: Instant,
    started: Instant,
    /// Nanoseconds after `started` at which the last SKU sold out.
    sold_out_at_ns: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
    /// Ends when the buyers have bought the whole stock, not at the first
    /// "sold out" (a cluster's node answers it for itself only).
    ends_by_count: AtomicBool,
    /// "Sold out here" answers while the sale went on (`NotHere`).
    not_here: AtomicU64,
    /// A sold-out crowd (`Mode::SoldOut`): "sold out" does not end the
    /// sale, the deadline does, and it is the sale's normal end.
    crowd: bool,
}

impl Sale {
    pub fn new(stock: Stock, max_duration: Duration) -> Sale {
        let now = Instant::now();
        Sale {
            stock,
            sold: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sold_out: (0..stock.skus).map(|_| AtomicBool::new(false)).collect(),
            sold_out_count: AtomicUsize::new(0),
            over: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            runaway: AtomicBool::new(false),
            deadline: now + max_duration,
            started: now,
            sold_out_at_ns: AtomicU64::new(0),
            latencies: Mutex::new(new_histogram()),
            first_error: Mutex::new(None),
            ends_by_count: AtomicBool::new(false),
            not_here: AtomicU64::new(0),
            crowd: false,
        }
    }

    /// A sold-out crowd of `duration`: buyers keep asking for the one SKU
    /// after it has sold out, until the time is up.
    pub fn crowd(stock: Stock, duration: Duration) -> Sale {
        assert_eq!(stock.skus, 1, "a sold-out crowd asks for one SKU");
        Sale {
            crowd: true,
            ..Sale::new(stock, duration)
        }
    }

    /// True once buyers should stop. One load: in-process buyers ask it
    /// every attempt, so the deadline is checked by the watcher instead.
    #[inline]
    pub fn is_over(&self) -> bool {
        // Relaxed: a buyer that reads a stale `false` makes one more attempt,
        // which the contender answers "sold out"; nothing depends on it.
        self.over.load(Ordering::Relaxed)
    }

    /// Called by the watcher thread: ends the sale once its time is up, or
    /// once it has sold `OVERSOLD_STOP` times its stock (a contender that
    /// oversells may never run out).
    pub fn check_deadline(&self) {
        if self.is_over() {
            return;
        }
        if Instant::now() >= self.deadline {
            // A crowd's time is its length, not a limit it hit.
            self.timed_out.store(!self.crowd, Ordering::Relaxed);
            self.stop();
        }
        if self.ends_by_count.load(Ordering::Relaxed) && self.sold() >= self.stock.units {
            // The buyers' published counts: the watcher sees the last unit
            // within a publish interval of its sale.
            let ns = self.started.elapsed().as_nanos() as u64;
            self.sold_out_at_ns.store(ns, Ordering::Relaxed);
            self.stop();
        }
        if self.sold() > self.stock.units.saturating_mul(OVERSOLD_STOP) {
            self.runaway.store(true, Ordering::Relaxed);
            self.stop();
        }
    }

    /// Makes the sale end once the whole stock is bought (see
    /// `ends_by_count`), with `NotHere` answers counted apart.
    pub fn end_by_count(&self) {
        self.ends_by_count.store(true, Ordering::Relaxed);
    }

    /// "Sold out here" answers so far.
    pub fn not_here(&self) -> u64 {
        self.not_here.load(Ordering::Relaxed)
    }

    /// Ends the sale early (a probe's time is up, or a fatal error).
    pub fn stop(&self) {
        self.over.store(true, Ordering::Relaxed);
    }

    /// The SKU a buyer tries next: the hot SKU, or a random SKU not yet
    /// known to be sold out (probing forward from a random start). `None`
    /// when every SKU is sold out.
    pub fn pick(&self, rng: &mut Rng) -> Option<usize> {
        let n = self.stock.skus;
        if n == 1 {
            return (self.crowd || !self.sold_out[0].load(Ordering::Relaxed)).then_some(0);
        }
        let start = rng.below(n as u64) as usize;
        (0..n)
            .map(|step| (start + step) % n)
            .find(|&sku| !self.sold_out[sku].load(Ordering::Relaxed))
    }

    /// Counts one attempt's outcome; `latency_ns` is what the buyer waited.
    pub fn record(&self, sku: usize, outcome: Outcome, local: &mut Recorder, latency_ns: u64) {
        local.attempts += 1;
        local.record_latency(latency_ns);
        match outcome {
            Outcome::Sold => local.sold += 1,
            Outcome::SoldOut => self.mark_sold_out(sku),
            Outcome::NotHere => {
                self.not_here.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Publish counts often enough for the progress bar without a shared
        // write per attempt; latencies wait for the final flush (merging a
        // histogram walks all its buckets).
        if local.attempts & local.publish_mask == 0 {
            self.publish_counts(local);
        }
    }

    fn mark_sold_out(&self, sku: usize) {
        if !self.sold_out[sku].swap(true, Ordering::Relaxed) && !self.crowd {
            let marked = self.sold_out_count.fetch_add(1, Ordering::Relaxed) + 1;
            if marked == self.stock.skus {
                let ns = self.started.elapsed().as_nanos() as u64;
                self.sold_out_at_ns.store(ns, Ordering::Relaxed);
                self.over.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Counts a failed attempt (a refused connection, an unexpected status);
    /// the first one is kept for the report.
    pub fn error(&self, message: impl FnOnce() -> String) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message());
        }
    }

    fn publish_counts(&self, local: &mut Recorder) {
        self.sold
            .fetch_add(local.sold - local.published_sold, Ordering::Relaxed);
        self.attempts
            .fetch_add(local.attempts - local.published_attempts, Ordering::Relaxed);
        local.published_sold = local.sold;
        local.published_attempts = local.attempts;
    }

    /// Moves a buyer's counts and latencies into the shared totals (when
    /// the buyer is done).
    pub fn flush(&self, local: &mut Recorder) {
        self.publish_counts(local);
        if !local.latencies.is_empty() {
            let mut shared = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on both sides, so `add` cannot fail.
            let _ = shared.add(&local.latencies);
            local.latencies.reset();
        }
    }

    pub fn sold(&self) -> u64 {
        self.sold.load(Ordering::Relaxed)
    }

    /// What the sale came to, once every buyer has flushed.
    pub fn finish(&self, elapsed: Duration) -> SaleResult {
        let sold = self.sold.load(Ordering::Relaxed);
        let sold_out_at = Duration::from_nanos(self.sold_out_at_ns.load(Ordering::Relaxed));
        // Throughput counts the time until the stock was gone: the other
        // buyers' last "sold out" answers are not part of selling.
        let selling = if sold_out_at.is_zero() {
            elapsed
        } else {
            sold_out_at
        };
        SaleResult {
            stock: self.stock.units,
            sold,
            attempts: self.attempts.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            first_error: self
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            runaway: self.runaway.load(Ordering::Relaxed),
            selling,
            latencies: self
                .latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A buyer's own counts, published to the `Sale` now and then.
pub struct Recorder {
    sold: u64,
    attempts: u64,
    published_sold: u64,
    published_attempts: u64,
    latencies: Histogram<u64>,
    /// Record one latency in `sample_every` (1 records all); in-process
    /// calls take tens of nanoseconds, and reading the clock twice for each
    /// would double their cost. A power of two, kept as its mask.
    sample_mask: u64,
    /// Counts are published every this many attempts (a power of two,
    /// kept as its mask): rarely for in-process calls, often for slow ones
    /// so the watcher sees an oversell while it happens.
    publish_mask: u64,
}

impl Recorder {
    pub fn new(sample_every: u64, publish_every: u64) -> Recorder {
        assert!(sample_every.is_power_of_two() && publish_every.is_power_of_two());
        Recorder {
            sold: 0,
            attempts: 0,
            published_sold: 0,
            published_attempts: 0,
            latencies: new_histogram(),
            sample_mask: sample_every - 1,
            publish_mask: publish_every - 1,
        }
    }

    /// Whether the buyer should time the next attempt.
    pub fn should_time(&self) -> bool {
        self.attempts & self.sample_mask == 0
    }

    fn record_latency(&mut self, ns: u64) {
        if ns > 0 {
            self.latencies.saturating_record(ns.max(1));
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 100 s at three significant figures.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// What one contender's sale came to.
#[derive(Clone, Debug)]
pub struct SaleResult {
    pub stock: u64,
    pub sold: u64,
    pub attempts: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub timed_out: bool,
    pub runaway: bool,
    /// From the start until the stock was gone (or the sale stopped).
    pub selling: Duration,
    pub latencies: Histogram<u64>,
}

impl SaleResult {
    pub fn oversold(&self) -> u64 {
        self.sold.saturating_sub(self.stock)
    }

    pub fn units_per_second(&self) -> f64 {
        self.sold as f64 / self.selling.as_secs_f64().max(1e-9)
    }

    /// Every answer, sold or not, per second: a sold-out crowd's measure.
    pub fn answers_per_second(&self) -> f64 {
        self.attempts as f64 / self.selling.as_secs_f64().max(1e-9)
    }

    pub fn percentile_us(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// xorshift64*: each buyer's own, seeded by its index; no shared state.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_spreads_every_unit() {
        let stock = Stock::new(Mode::Uniform, 25_003);
        let total: u64 = (0..stock.skus).map(|s| stock.units_of(s)).sum();
        assert_eq!(total, 25_003);
        assert_eq!(stock.units_of(0), 3);
        assert_eq!(stock.units_of(9_999), 2);
        // Fewer units than SKUs: every SKU still gets one.
        assert_eq!(Stock::new(Mode::Uniform, 10).units, 10_000);
    }

    #[test]
    fn sale_ends_when_every_sku_is_sold_out() {
        let sale = Sale::new(Stock::new(Mode::Uniform, 10_000), Duration::from_secs(60));
        let mut rng = Rng::new(7);
        let mut local = Recorder::new(1, 16);
        let mut seen = 0;
        while let Some(sku) = sale.pick(&mut rng) {
            sale.record(sku, Outcome::SoldOut, &mut local, 10);
            seen += 1;
            assert!(seen <= 10_000, "a sold-out SKU was picked again");
        }
        assert_eq!(seen, 10_000);
        assert!(sale.is_over());
        sale.flush(&mut local);
        let result = sale.finish(Duration::from_secs(1));
        assert_eq!(result.attempts, 10_000);
        assert_eq!(result.sold, 0);
        assert!(!result.timed_out);
    }

    #[test]
    fn a_crowd_keeps_asking_after_sold_out_until_its_time_is_up() {
        let sale = Sale::crowd(Stock::new(Mode::SoldOut, 1), Duration::ZERO);
        let mut rng = Rng::new(3);
        let mut local = Recorder::new(1, 1);
        sale.record(0, Outcome::Sold, &mut local, 10);
        for _ in 0..5 {
            assert_eq!(sale.pick(&mut rng), Some(0), "the crowd stopped asking");
            sale.record(0, Outcome::SoldOut, &mut local, 10);
        }
        assert!(!sale.is_over(), "sold out ended a crowd");
        sale.check_deadline();
        assert!(sale.is_over());
        sale.flush(&mut local);
        let result = sale.finish(Duration::from_secs(2));
        assert_eq!((result.sold, result.attempts), (1, 6));
        assert!(!result.timed_out, "a crowd's end is not a time-out");
        assert_eq!(result.answers_per_second(), 3.0);
        // Without the crowd, the same answers end the sale.
        let sale = Sale::new(Stock::new(Mode::SoldOut, 1), Duration::from_secs(60));
        sale.record(0, Outcome::SoldOut, &mut local, 10);
        assert!(sale.is_over() && sale.pick(&mut rng).is_none());
    }

    #[test]
    fn oversold_is_what_was_sold_past_the_stock() {
        let sale = Sale::new(Stock::new(Mode::Hot, 2), Duration::from_secs(60));
        let mut local = Recorder::new(1, 16);
        for _ in 0..3 {
            sale.record(0, Outcome::Sold, &mut local, 1_000);
        }
        sale.flush(&mut local);
        let result = sale.finish(Duration::from_secs(1));
        assert_eq!((result.sold, result.oversold()), (3, 1));
        assert_eq!(result.percentile_us(0.5), 1.0);
    }
}

//! Admission control: a cap on requests in flight (per CPU, so it puts no
//! shared line on every request) and the optional token buckets for
//! reservations: all SKUs together, per SKU, and per customer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use hyper::StatusCode;

use super::error::{ApiError, Code};
use super::rate::RateLimit;
use crate::core::limits::MAX_RATE_LIMITED_CUSTOMERS;
use crate::core::types::{Line, SkuId};

/// Requests being handled, counted per CPU; each shard admits up to its
/// share of the limit.
#[derive(Debug)]
pub struct InFlight {
    shards: Arc<[CachePadded<AtomicUsize>]>,
    per_shard: usize,
}

/// A request admitted; gives its place back when dropped.
pub struct Admitted<'a> {
    shard: &'a AtomicUsize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        // Relaxed: a count; nothing is published through it.
        self.shard.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    pub fn new(limit: usize) -> InFlight {
        let shards = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 64);
        InFlight::with_shards(limit, shards)
    }

    pub fn with_shards(limit: usize, shards: usize) -> InFlight {
        InFlight {
            shards: (0..shards).map(|_| Default::default()).collect(),
            per_shard: limit.div_ceil(shards).max(1),
        }
    }

    /// The per-CPU counts, for the metrics gauge (requests admitted and not
    /// yet finished; refusals count for an instant while turned away).
    pub fn counts(&self) -> Arc<[CachePadded<AtomicUsize>]> {
        Arc::clone(&self.shards)
    }

    /// Admits a request, counting it in the shard of `hint` (the caller's
    /// `stripe_hint`, read once per request for this and the metrics).
    pub fn admit(&self, hint: usize) -> Option<Admitted<'_>> {
        let shard = &self.shards[hint % self.shards.len()];
        // Relaxed: a count; the RMW alone keeps it exact.
        let before = shard.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted { shard };
        (before < self.per_shard).then_some(admitted)
    }
}

/// The answer past the in-flight cap.
pub fn too_many_in_flight() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Code::Overloaded,
        "too many requests in flight; retry after the Retry-After delay",
    )
}

fn bucket(rate: u32) -> RateLimit {
    RateLimit::new(rate, (rate / 10).max(1))
}

/// Per-SKU buckets, created on first use, in shards by SKU id.
#[derive(Debug)]
struct SkuBuckets {
    rate: u32,
    shards: Box<[Mutex<HashMap<u32, RateLimit>>]>,
}

impl SkuBuckets {
    fn admit(&self, sku: SkuId, now_ns: u64) -> bool {
        let shard = &self.shards[sku.index() as usize % self.shards.len()];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        shard
            .entry(sku.index())
            .or_insert_with(|| bucket(self.rate))
            .admit(now_ns)
    }
}

/// Shards of the per-customer buckets.
const CUSTOMER_SHARDS: usize = 64;

/// Per-customer buckets, by customer, in shards by a hash of the name;
/// bounded by `MAX_RATE_LIMITED_CUSTOMERS`.
#[derive(Debug)]
struct CustomerBuckets {
    rate: u32,
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<CustomerShard>]>,
}

type CustomerShard = HashMap<Box<str>, RateLimit>;

impl CustomerBuckets {
    fn new(rate: u32) -> CustomerBuckets {
        CustomerBuckets {
            rate,
            hasher: Default::default(),
            shards: (0..CUSTOMER_SHARDS).map(|_| Default::default()).collect(),
        }
    }

    /// `Some(admitted)`, or `None` when the shard is full of customers
    /// that are all still within their burst.
    fn admit(&self, customer: &str, now_ns: u64) -> Option<bool> {
        use std::hash::BuildHasher;
        let at = self.hasher.hash_one(customer) as usize % self.shards.len();
        let mut shard = self.shards[at]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = shard.get(customer) {
            return Some(bucket.admit(now_ns));
        }
        let most = MAX_RATE_LIMITED_CUSTOMERS / CUSTOMER_SHARDS;
        if shard.len() >= most {
            shard.retain(|_, bucket| !bucket.is_idle(now_ns));
            if shard.len() >= most {
                return None;
            }
        }
        let bucket = bucket(self.rate);
        let admitted = bucket.admit(now_ns);
        shard.insert(customer.into(), bucket);
        Some(admitted)
    }
}

/// The optional reservation rate limits.
#[derive(Debug)]
pub struct Rates {
    global: Option<RateLimit>,
    per_sku: Option<SkuBuckets>,
    per_customer: Option<CustomerBuckets>,
    /// The monotonic clock the buckets run on.
    started: Instant,
}

impl Rates {
    pub fn new(global: Option<u32>, per_sku: Option<u32>, per_customer: Option<u32>) -> Rates {
        Rates {
            per_customer: per_customer.map(CustomerBuckets::new),
            global: global.map(bucket),
            per_sku: per_sku.map(|rate| SkuBuckets {
                rate,
                shards: (0..64).map(|_| Default::default()).collect(),
            }),
            started: Instant::now(),
        }
    }

    /// Refuses past the global rate, or past any line's SKU rate; `name`
    /// finds the SKU's name for the message. Inline for the default, both
    /// off: no clock read and no call on the purchase path.
    #[inline]
    pub fn check<'a>(
        &self,
        lines: &[Line],
        name: impl Fn(SkuId) -> Option<&'a str>,
    ) -> Result<(), ApiError> {
        if self.global.is_none() && self.per_sku.is_none() {
            return Ok(());
        }
        self.check_buckets(lines, name)
    }

    #[inline(never)]
    fn check_buckets<'a>(
        &self,
        lines: &[Line],
        name: impl Fn(SkuId) -> Option<&'a str>,
    ) -> Result<(), ApiError> {
        let now_ns = self.started.elapsed().as_nanos() as u64;
        let refused = |what: String| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::Overloaded,
                format!("{what}; retry after the Retry-After delay"),
            )
        };
        if let Some(global) = &self.global {
            if !global.admit(now_ns) {
                return Err(refused(
                    "reservation requests are over the server's rate limit".into(),
                ));
            }
        }
        if let Some(buckets) = &self.per_sku {
            for line in lines {
                if !buckets.admit(line.sku, now_ns) {
                    let name = name(line.sku).unwrap_or("");
                    let message = format!("SKU {:?} is over its rate limit", name);
                    return Err(refused(message).with("sku", name));
                }
            }
        }
        Ok(())
    }
}

impl Rates {
    /// Refuses past the customer's own rate (one buyer cannot take the
    /// whole queue); no clock read when the limit is off.
    pub fn check_customer(&self, customer: &str) -> Result<(), ApiError> {
        let Some(buckets) = &self.per_customer else {
            return Ok(());
        };
        let now_ns = self.started.elapsed().as_nanos() as u64;
        match buckets.admit(customer, now_ns) {
            Some(true) => Ok(()),
            Some(false) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::Overloaded,
                "this customer's reservation requests are over the per-customer rate limit; retry after the Retry-After delay",
            )
            .with("customer", customer)),
            None => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::Overloaded,
                "too many customers are being rate-limited at once; retry after the Retry-After delay",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_is_limited_by_name_and_others_are_not() {
        let rates = Rates::new(None, None, Some(10));
        assert!(rates.check_customer("ann").is_ok(), "the first is admitted");
        let refused = rates.check_customer("ann").unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.details["customer"], "ann");
        assert!(
            rates.check_customer("bob").is_ok(),
            "another customer has their own bucket"
        );
    }

    #[test]
    fn admission_refuses_past_the_cap_and_frees_on_drop() {
        let in_flight = InFlight::with_shards(2, 1);
        let first = in_flight.admit(0);
        let second = in_flight.admit(0);
        assert!(first.is_some() && second.is_some());
        assert!(in_flight.admit(0).is_none(), "a third request is refused");
        drop(first);
        assert!(
            in_flight.admit(0).is_some(),
            "a finished request frees its place"
        );
    }
}

//! `LimitLedger`: how many units of each limited SKU each customer has.
//!
//! "One per customer" is the article's check-then-act bug in a new place:
//! read the customer's count, compare, then take. Here the compare and the
//! increment are one step under the lock of the `(SKU, customer)` pair's
//! shard, and the increment happens *before* the stock take: a customer's
//! two racing requests cannot both pass the check. If the take then fails,
//! the units are given back to the ledger. The price is that a request can be
//! refused `LimitExceeded` while the same customer's other request is in
//! flight and later fails; the customer did have that claim at the time.
//!
//! Only SKUs with a limit are counted, and an entry is removed when its count
//! returns to zero, so the ledger holds one entry per (limited SKU, customer
//! with units) and no more.

use std::hash::BuildHasher;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;

use crate::core::limits::SHARDS;
use crate::core::sync::Mutex;
use crate::core::types::SkuId;

#[derive(Debug)]
struct LedgerEntry {
    sku: SkuId,
    customer: Arc<str>,
    units: u32,
}

/// The refusal: the customer already has `already` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverLimit {
    pub already: u32,
}

/// Per-(SKU, customer) unit counts. See the module docs.
#[derive(Debug)]
pub struct LimitLedger {
    shards: Box<[CachePadded<Mutex<HashTable<LedgerEntry>>>]>,
    hasher: foldhash::fast::RandomState,
}

impl Default for LimitLedger {
    fn default() -> LimitLedger {
        LimitLedger::new()
    }
}

impl LimitLedger {
    pub fn new() -> LimitLedger {
        LimitLedger {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashTable::new())))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Counts `units` more for `customer` on `sku` if that keeps them within
    /// `limit`; otherwise changes nothing.
    pub fn acquire(
        &self,
        sku: SkuId,
        customer: &Arc<str>,
        units: u32,
        limit: u32,
    ) -> Result<(), OverLimit> {
        let hash = self.hash(sku, customer);
        let mut shard = self.shards[shard_of(hash)].lock();
        let found = shard.find_mut(hash, |e| e.sku == sku && *e.customer == **customer);
        let already = found.as_ref().map_or(0, |e| e.units);
        if u64::from(already) + u64::from(units) > u64::from(limit) {
            return Err(OverLimit { already });
        }
        match found {
            Some(entry) => entry.units += units,
            None => {
                let entry = LedgerEntry {
                    sku,
                    customer: Arc::clone(customer),
                    units,
                };
                shard.insert_unique(hash, entry, |e| self.hash(e.sku, &e.customer));
            }
        }
        Ok(())
    }

    /// Gives back `units` previously acquired. Giving back more than was
    /// acquired is a bug in the caller: asserted in debug builds, clamped at
    /// zero in release builds so a customer is never locked out by it.
    pub fn release(&self, sku: SkuId, customer: &str, units: u32) {
        let hash = self.hash(sku, customer);
        let mut shard = self.shards[shard_of(hash)].lock();
        let Ok(mut entry) = shard.find_entry(hash, |e| e.sku == sku && *e.customer == *customer)
        else {
            debug_assert!(false, "release without acquire for SKU {sku}");
            return;
        };
        let current = entry.get().units;
        debug_assert!(
            current >= units,
            "release of {units} but only {current} acquired"
        );
        let left = current.saturating_sub(units);
        if left == 0 {
            entry.remove();
        } else {
            entry.get_mut().units = left;
        }
    }

    /// Sets a recovered count (recovery only, before serving).
    pub fn restore(&self, sku: SkuId, customer: &str, units: u32) {
        if units == 0 {
            return;
        }
        let customer: Arc<str> = Arc::from(customer);
        let hash = self.hash(sku, &customer);
        let mut shard = self.shards[shard_of(hash)].lock();
        let entry = LedgerEntry {
            sku,
            customer,
            units,
        };
        shard.insert_unique(hash, entry, |e| self.hash(e.sku, &e.customer));
    }

    /// Units `customer` currently has of `sku` (held or sold, not returned).
    pub fn used(&self, sku: SkuId, customer: &str) -> u32 {
        let hash = self.hash(sku, customer);
        let shard = self.shards[shard_of(hash)].lock();
        shard
            .find(hash, |e| e.sku == sku && *e.customer == *customer)
            .map_or(0, |e| e.units)
    }

    fn hash(&self, sku: SkuId, customer: &str) -> u64 {
        self.hasher.hash_one((sku.index(), customer))
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> 58) as usize % SHARDS
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn acquire_up_to_limit_then_refuse_then_release() {
        let ledger = LimitLedger::new();
        let sku = SkuId::from_index(3);
        let alice: Arc<str> = Arc::from("alice");
        assert_eq!(ledger.acquire(sku, &alice, 1, 2), Ok(()));
        assert_eq!(ledger.acquire(sku, &alice, 1, 2), Ok(()));
        assert_eq!(
            ledger.acquire(sku, &alice, 1, 2),
            Err(OverLimit { already: 2 })
        );
        assert_eq!(ledger.used(sku, "alice"), 2);
        // Another customer and another SKU are counted apart.
        assert_eq!(ledger.acquire(sku, &Arc::from("bob"), 2, 2), Ok(()));
        assert_eq!(ledger.acquire(SkuId::from_index(4), &alice, 2, 2), Ok(()));
        ledger.release(sku, "alice", 2);
        assert_eq!(ledger.used(sku, "alice"), 0);
        assert_eq!(ledger.acquire(sku, &alice, 2, 2), Ok(()));
    }
}

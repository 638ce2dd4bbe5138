//! The catalogue: SKU names, their ids, and their stock cells.
//!
//! # Why this shape
//!
//! - **Handles, not names, on the hot path.** A SKU is interned once into a
//!   `SkuId` (a `u32`); resolving an id is two loads into an append-only
//!   chunk table, with no hashing and no lock. Callers that serve the same
//!   SKU many times (a sale) resolve the name once.
//! - **No global lock.** The name index is split into `SHARDS` independently
//!   locked tables; creating SKU "a" never waits for a lookup of SKU "b" in
//!   another shard. Cells live in fixed-size chunks allocated on demand and
//!   never moved, so a `&StockCell` stays valid for the catalogue's life.
//! - **Small per SKU.** The index stores only the 4-byte id and finds the
//!   name through the slot, so a name is stored once. A cold SKU costs its
//!   cell, its name and about 8 bytes of index (see `docs/benchmarks.md`).
//!
//! SKUs are never removed: an id, once issued, names the same SKU for the
//! life of the engine (set its stock to zero to stop selling it).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::core::cell::StockCell;
use crate::core::error::EngineError;
use crate::core::limits::{MAX_SKUS, MAX_SKU_NAME_BYTES, SHARDS};
use crate::core::types::SkuId;

const CHUNK_BITS: u32 = 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = (MAX_SKUS as usize) / CHUNK_LEN;

/// One SKU's place: its name (set once, when the SKU is created) and cell.
#[derive(Debug, Default)]
pub struct SkuSlot {
    name: OnceLock<Box<str>>,
    cell: StockCell,
}

impl SkuSlot {
    pub fn name(&self) -> &str {
        self.name.get().map_or("", |n| n)
    }

    pub fn cell(&self) -> &StockCell {
        &self.cell
    }
}

/// Checks a SKU name against the rules in `limits`: 1 to
/// `MAX_SKU_NAME_BYTES` bytes of `[A-Za-z0-9._~:-]`, so a name is always
/// safe in a URL path segment, a CSV cell and a log line.
pub fn validate_sku_name(name: &str) -> Result<(), EngineError> {
    if name.is_empty() {
        return Err(EngineError::InvalidSkuName {
            reason: "it is empty",
        });
    }
    if name.len() > MAX_SKU_NAME_BYTES {
        return Err(EngineError::InvalidSkuName {
            reason: "it is too long",
        });
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~' | b':');
    if !name.bytes().all(allowed) {
        return Err(EngineError::InvalidSkuName {
            reason: "it contains a character that is not allowed",
        });
    }
    Ok(())
}

/// Separates a SKU's name from a location's in the name of the location's
/// own cell (`tee/berlin`). Never in a SKU name, so such a name is never a
/// SKU's.
pub const LOCATION_SEPARATOR: char = '/';

/// The name of `location`'s cell of SKU `sku`, after checking the location
/// name (`validate_sku_name`'s rules, and the whole within
/// `MAX_SKU_NAME_BYTES`). `sku` is a valid SKU name.
pub fn location_cell_name(sku: &str, location: &str) -> Result<String, EngineError> {
    let refuse = |reason| EngineError::InvalidLocationName { reason };
    match validate_sku_name(location) {
        Ok(()) => {}
        Err(EngineError::InvalidSkuName { reason }) => return Err(refuse(reason)),
        Err(other) => return Err(other),
    }
    if sku.len() + 1 + location.len() > MAX_SKU_NAME_BYTES {
        return Err(refuse("it is too long with the SKU's name"));
    }
    Ok(format!("{sku}{LOCATION_SEPARATOR}{location}"))
}

/// A catalogue name: a SKU's, or a location cell's (`sku/location`).
pub fn validate_catalogue_name(name: &str) -> Result<(), EngineError> {
    match name.split_once(LOCATION_SEPARATOR) {
        None => validate_sku_name(name),
        Some((sku, location)) => {
            validate_sku_name(sku)?;
            location_cell_name(sku, location).map(drop)
        }
    }
}

/// Name → id index and id → slot storage. See the module docs.
#[derive(Debug)]
pub struct Catalogue {
    chunks: Box<[OnceLock<Box<[SkuSlot]>>]>,
    index: Box<[CachePadded<RwLock<HashTable<SkuId>>>]>,
    hasher: foldhash::fast::RandomState,
    /// Next id to issue. Touched only when a SKU is created (cold path).
    next_id: AtomicU32,
}

impl Default for Catalogue {
    fn default() -> Catalogue {
        Catalogue::new()
    }
}

impl Catalogue {
    pub fn new() -> Catalogue {
        Catalogue {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            index: (0..SHARDS)
                .map(|_| CachePadded::new(RwLock::new(HashTable::new())))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            next_id: AtomicU32::new(0),
        }
    }

    /// The slot of a SKU this catalogue created, or `None` for an id it
    /// never issued (or is still creating).
    #[inline]
    pub fn slot(&self, id: SkuId) -> Option<&SkuSlot> {
        let index = id.0 as usize;
        let chunk = self.chunks.get(index >> CHUNK_BITS)?.get()?;
        let slot = &chunk[index & (CHUNK_LEN - 1)];
        // A slot is live once its name is set; `OnceLock::get` is an Acquire
        // load, so the name (and the creator's writes before it) are visible.
        slot.name.get()?;
        Some(slot)
    }

    /// Looks a name up. `None` if no such SKU exists.
    pub fn find(&self, name: &str) -> Option<SkuId> {
        let hash = self.hasher.hash_one(name);
        let shard = self.index[shard_of(hash)].read();
        shard.find(hash, |&id| self.name_of(id) == name).copied()
    }

    /// Returns the SKU named `name`, creating it (with zero stock) if it does
    /// not exist. The bool says whether it was created by this call.
    pub fn find_or_create(&self, name: &str) -> Result<(SkuId, bool), EngineError> {
        self.find_or_create_with(name, |_, _, _| {})
    }

    /// `find_or_create`, calling `on_create(id, name, cell)` when the SKU
    /// is created, before any other thread can see it (the journal records
    /// the creation there, so no durable event can name a SKU whose
    /// creation was lost; a kit is made a kit there, so it is one from
    /// birth).
    pub fn find_or_create_with(
        &self,
        name: &str,
        on_create: impl FnOnce(SkuId, &str, &StockCell),
    ) -> Result<(SkuId, bool), EngineError> {
        validate_catalogue_name(name)?;
        if let Some(id) = self.find(name) {
            return Ok((id, false));
        }
        let hash = self.hasher.hash_one(name);
        let mut shard = self.index[shard_of(hash)].write();
        // Check again under the write lock: another creator may have won.
        if let Some(&id) = shard.find(hash, |&id| self.name_of(id) == name) {
            return Ok((id, false));
        }
        // Relaxed: uniqueness comes from fetch_add; the slot is published
        // through its name's OnceLock (Release), not through this counter.
        let raw = self.next_id.fetch_add(1, Ordering::Relaxed);
        if raw >= MAX_SKUS {
            // Leave the counter past the limit: every later creation fails
            // the same way, and no id is ever issued twice.
            return Err(EngineError::CapacityExceeded {
                what: "SKUs in the catalogue",
                limit: u64::from(MAX_SKUS),
            });
        }
        let id = SkuId(raw);
        let index = raw as usize;
        let chunk = self.chunks[index >> CHUNK_BITS]
            .get_or_init(|| (0..CHUNK_LEN).map(|_| SkuSlot::default()).collect());
        let slot = &chunk[index & (CHUNK_LEN - 1)];
        on_create(id, name, &slot.cell);
        let fresh = slot.name.set(name.into());
        assert!(fresh.is_ok(), "SKU id {id} issued twice");
        shard.insert_unique(hash, id, |&existing| {
            self.hasher.hash_one(self.name_of(existing))
        });
        Ok((id, true))
    }

    /// Recreates SKU `id` named `name` (recovery only, before serving).
    /// Ids left out stay unused gaps.
    pub fn restore(&self, id: SkuId, name: &str) -> Result<&SkuSlot, EngineError> {
        validate_catalogue_name(name)?;
        let raw = id.0;
        if raw >= MAX_SKUS {
            return Err(EngineError::UnknownSkuId { sku: id });
        }
        let index = raw as usize;
        let chunk = self.chunks[index >> CHUNK_BITS]
            .get_or_init(|| (0..CHUNK_LEN).map(|_| SkuSlot::default()).collect());
        let slot = &chunk[index & (CHUNK_LEN - 1)];
        assert!(
            slot.name.set(name.into()).is_ok(),
            "SKU {id} restored twice"
        );
        let hash = self.hasher.hash_one(name);
        let mut shard = self.index[shard_of(hash)].write();
        assert!(
            shard
                .find(hash, |&other| self.name_of(other) == name)
                .is_none(),
            "SKU name {name:?} restored twice"
        );
        shard.insert_unique(hash, id, |&existing| {
            self.hasher.hash_one(self.name_of(existing))
        });
        self.next_id.fetch_max(raw + 1, Ordering::Relaxed);
        Ok(slot)
    }

    /// How many ids were issued (every one of them names a SKU once its
    /// creation has finished).
    pub fn len(&self) -> usize {
        (self.next_id.load(Ordering::Relaxed).min(MAX_SKUS)) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SKUs in creation order, starting after `after` (or at the first).
    /// Creation order is stable, so a caller can page with the last id seen.
    pub fn iter_after(&self, after: Option<SkuId>) -> impl Iterator<Item = (SkuId, &SkuSlot)> + '_ {
        let start = after.map_or(0, |id| id.0.saturating_add(1));
        (start..self.len() as u32).filter_map(move |raw| {
            let id = SkuId(raw);
            self.slot(id).map(|slot| (id, slot))
        })
    }

    fn name_of(&self, id: SkuId) -> &str {
        self.slot(id).map_or("", SkuSlot::name)
    }
}

fn shard_of(hash: u64) -> usize {
    // The table inside a shard uses the low bits; pick the shard by the high
    // ones so the two choices are independent.
    (hash >> 58) as usize % SHARDS
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn create_find_and_iterate_in_order() {
        let catalogue = Catalogue::new();
        let (a, created) = catalogue.find_or_create("sku-a").unwrap();
        assert!(created);
        let (b, _) = catalogue.find_or_create("sku-b").unwrap();
        assert_eq!(catalogue.find_or_create("sku-a").unwrap(), (a, false));
        assert_eq!(catalogue.find("sku-b"), Some(b));
        assert_eq!(catalogue.find("sku-c"), None);
        let names: Vec<_> = catalogue
            .iter_after(None)
            .map(|(_, s)| s.name().to_owned())
            .collect();
        assert_eq!(names, ["sku-a", "sku-b"]);
        let after_a: Vec<_> = catalogue.iter_after(Some(a)).map(|(id, _)| id).collect();
        assert_eq!(after_a, [b]);
    }

    #[test]
    fn unknown_ids_resolve_to_none() {
        let catalogue = Catalogue::new();
        assert!(catalogue.slot(SkuId::from_index(0)).is_none());
        assert!(catalogue.slot(SkuId::from_index(u32::MAX)).is_none());
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "has space",
            "slash/",
            "ünïcode",
            &"x".repeat(MAX_SKU_NAME_BYTES + 1),
        ] {
            assert!(
                matches!(
                    validate_sku_name(bad),
                    Err(EngineError::InvalidSkuName { .. })
                ),
                "{bad:?}"
            );
        }
        for good in ["a", "SKU-123_x.y~z:1", &"x".repeat(MAX_SKU_NAME_BYTES)] {
            assert_eq!(validate_sku_name(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn concurrent_creators_agree_on_one_id() {
        let catalogue = Catalogue::new();
        let ids: Vec<SkuId> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| catalogue.find_or_create("contested").unwrap().0))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(catalogue.len(), 1);
    }
}

//! `SlotTable`: a list per SKU id (a kit's components, a SKU's locations),
//! read without a lock and without a write to shared memory.
//!
//! # Why not in the cell, behind its lock
//!
//! Every order of a kit reads its components. Read under the kit cell's
//! lock, or through a shared `Arc`, each order writes the same cache line
//! (the lock word or the reference count): one hot kit then serialises its
//! buyers, the very thing the design notes forbid. Measured
//! (`cargo bench --bench engine -- hot_kit_order`, docs/benchmarks.md): on
//! 2 threads a kit order took 308 ns where the same components bought as
//! a cart took 61.
//!
//! # How
//!
//! A slot per SKU id, in chunks laid out like the catalogue's and
//! allocated only for a chunk that holds a kit; each slot an `AtomicPtr`
//! to the kit's current definition. A reader loads it (Acquire) and
//! borrows the definition for as long as it borrows the table. A new
//! definition is published with a Release swap; the old one is not freed
//! but kept until the table drops, so no reader can ever see it freed.
//! Definitions change only when an operator redefines a kit, so what is
//! kept is bounded by those changes.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::core::limits::MAX_SKUS;
use crate::core::types::{Line, SkuId};

const CHUNK_BITS: u32 = 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = (MAX_SKUS as usize) / CHUNK_LEN;

type Definition<T> = Box<[T]>;
/// A chunk's slots: the current definition of each SKU id in it, or null.
type Chunk<T> = Box<[AtomicPtr<Definition<T>>]>;

/// A definition the table owns: freed only when the table drops.
struct Owned<T>(*mut Definition<T>);

// SAFETY: an `Owned` is only a record of an allocation the table frees in
// `Drop`; it is never dereferenced through this type, so moving it between
// threads (inside the mutex) shares nothing but the `T`s it will drop,
// which are `Send`.
unsafe impl<T: Send> Send for Owned<T> {}

/// Kits' components by SKU id. See the module docs.
pub type KitTable = SlotTable<Line>;

/// A list per SKU id. See the module docs.
pub struct SlotTable<T> {
    chunks: Box<[OnceLock<Chunk<T>>]>,
    /// Every definition ever published, current or replaced.
    owned: Mutex<Vec<Owned<T>>>,
}

impl<T> std::fmt::Debug for SlotTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotTable").finish_non_exhaustive()
    }
}

impl<T: Clone + Send> Default for SlotTable<T> {
    fn default() -> SlotTable<T> {
        SlotTable::new()
    }
}

impl<T: Clone + Send> SlotTable<T> {
    pub fn new() -> SlotTable<T> {
        SlotTable {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            owned: Mutex::new(Vec::new()),
        }
    }

    /// `sku`'s list (a kit's components); `None` if it has none.
    #[inline]
    pub fn get(&self, sku: SkuId) -> Option<&[T]> {
        let index = sku.index() as usize;
        let chunk = self.chunks.get(index >> CHUNK_BITS)?.get()?;
        // Acquire: pairs with the Release swap in `set`, so the definition
        // it points at is seen fully written.
        let current = chunk[index & (CHUNK_LEN - 1)].load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `set` and
        // is freed only in `Drop`, which has `&mut self` and so cannot
        // overlap this `&self` borrow; nothing writes through it.
        (!current.is_null()).then(|| unsafe { &**current })
    }

    /// Publishes `components` as `sku`'s list. The caller serialises the
    /// sets of one SKU (its creation, or a cell's lock), so the last set
    /// is the newest definition.
    pub fn set(&self, sku: SkuId, components: &[T]) {
        let index = sku.index() as usize;
        assert!(
            index >> CHUNK_BITS < MAX_CHUNKS,
            "SKU ids stay below MAX_SKUS"
        );
        let chunk = self.chunks[index >> CHUNK_BITS]
            .get_or_init(|| (0..CHUNK_LEN).map(|_| AtomicPtr::default()).collect());
        let fresh = Box::into_raw(Box::new(Definition::<T>::from(components)));
        self.owned.lock().push(Owned(fresh));
        // Release: publishes the definition written just above (see `get`).
        // The replaced one stays owned, and readable, until `Drop`.
        chunk[index & (CHUNK_LEN - 1)].swap(fresh, Ordering::Release);
    }
}

impl<T> Drop for SlotTable<T> {
    fn drop(&mut self) {
        for Owned(definition) in self.owned.get_mut().drain(..) {
            // SAFETY: each pointer came from `Box::into_raw` in `set` and
            // was recorded once; `&mut self` proves no reader is left.
            drop(unsafe { Box::from_raw(definition) });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn line(sku: u32, quantity: u32) -> Line {
        Line {
            sku: SkuId::from_index(sku),
            quantity,
        }
    }

    #[test]
    fn a_kit_reads_its_newest_definition_and_others_read_none() {
        let table = KitTable::new();
        let kit = SkuId::from_index(5_000);
        assert_eq!(table.get(kit), None);
        table.set(kit, &[line(1, 1), line(2, 2)]);
        let first = table.get(kit).unwrap();
        table.set(kit, &[line(3, 1)]);
        // The replaced definition is still readable by whoever holds it.
        assert_eq!(first, &[line(1, 1), line(2, 2)]);
        assert_eq!(table.get(kit), Some(&[line(3, 1)][..]));
        assert_eq!(table.get(SkuId::from_index(5_001)), None);
        assert_eq!(table.get(SkuId::from_index(1)), None, "a chunk with no kit");
        assert_eq!(table.get(SkuId::from_index(u32::MAX)), None);
    }

    #[test]
    fn readers_racing_redefinitions_see_whole_definitions() {
        let table = KitTable::new();
        let kit = SkuId::from_index(7);
        table.set(kit, &[line(1, 1), line(2, 1)]);
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..2_000 {
                    table.set(kit, &[line(1, round), line(2, round)]);
                }
            });
            for _ in 0..2_000 {
                // Both lines of one definition carry the same round: a
                // reader never sees half of one and half of another.
                let definition = table.get(kit).unwrap();
                assert_eq!(definition[0].quantity, definition[1].quantity);
            }
        });
    }
}

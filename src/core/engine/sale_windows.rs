//! Sale windows (#16): per SKU, from when and until when it may be
//! reserved.
//!
//! # Why a table beside the cell, and a count
//!
//! Every purchase must know whether its SKUs are on sale, and most SKUs
//! have no window. Kept in the cell's locked metadata, the window would put
//! the lock on the purchase path; kept in the cell's lock-free words, it
//! would grow every cell (`SkuSlot` is 96 bytes, asserted). So windows live
//! in a `SlotTable` (a lock-free pointer per SKU id, its chunk allocated
//! only where a window was set), and a count of SKUs whose window is not
//! "always" lets a purchase skip the table with one load when there are
//! none: the plain purchase path pays a load and a branch.
//!
//! # Ordering
//!
//! A window is set under its SKU's cell lock, journaled before it is
//! published (`Change::SaleWindow`, then the table). The count and the
//! table are read without a lock: a purchase racing a window change is
//! ordered before or after it, as a limit change is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::Engine;
use crate::core::change::{Change, ChangeSink};
use crate::core::error::EngineError;
use crate::core::hint::stripe_hint;
use crate::core::kit_table::SlotTable;
use crate::core::limits::MAX_TIME_MS;
use crate::core::types::{Line, SkuId};

/// When a SKU may be reserved: from `starts_at_ms` (inclusive) until
/// `ends_at_ms` (exclusive), ms since the epoch; `None` is open-ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaleWindow {
    pub starts_at_ms: Option<u64>,
    pub ends_at_ms: Option<u64>,
}

impl SaleWindow {
    /// No window: on sale from its creation, as before windows existed.
    pub const ALWAYS: SaleWindow = SaleWindow {
        starts_at_ms: None,
        ends_at_ms: None,
    };

    pub fn is_always(&self) -> bool {
        *self == SaleWindow::ALWAYS
    }

    /// On sale at `now_ms`.
    #[inline]
    pub fn is_open(&self, now_ms: u64) -> bool {
        self.starts_at_ms.is_none_or(|starts| starts <= now_ms)
            && self.ends_at_ms.is_none_or(|ends| now_ms < ends)
    }

    /// Times a store can keep (signed 64-bit), and an end after the start.
    pub fn validate(&self) -> Result<(), EngineError> {
        let past_limit = [self.starts_at_ms, self.ends_at_ms]
            .into_iter()
            .flatten()
            .any(|ms| ms > MAX_TIME_MS);
        let backwards = matches!(
            (self.starts_at_ms, self.ends_at_ms),
            (Some(starts), Some(ends)) if ends <= starts
        );
        match past_limit || backwards {
            true => Err(EngineError::InvalidSaleWindow { window: *self }),
            false => Ok(()),
        }
    }
}

/// A setting of some SKUs (a sale window, a waiting room), and how many
/// SKUs have one that is not `T::default()`. See the module docs.
#[derive(Debug, Default)]
pub(super) struct SkuSettings<T: Clone + Send> {
    /// Made at the first setting: an engine whose SKUs never have one
    /// allocates nothing for them (its heap, and so the allocator's work
    /// on the purchase path, stays as it was: callgrind counted 33
    /// instructions of `malloc_consolidate` per 3-line cart when the table
    /// was made with the engine).
    table: OnceLock<SlotTable<T>>,
    /// SKUs whose setting is not the default.
    set: AtomicUsize,
}

impl<T: Clone + Copy + Default + PartialEq + Send> SkuSettings<T> {
    /// Whether any SKU has a setting. Relaxed: a purchase that misses a
    /// setting made a moment ago is ordered before that change (see the
    /// module docs); nothing else is read through it.
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.set.load(Ordering::Relaxed) != 0
    }

    pub(super) fn get(&self, sku: SkuId) -> T {
        (self.table.get())
            .and_then(|table| table.get(sku))
            .and_then(|setting| setting.first().copied())
            .unwrap_or_default()
    }

    /// Publishes `sku`'s setting. The caller serialises the sets of one
    /// SKU (its cell's lock), so the count moves once per change.
    pub(super) fn put(&self, sku: SkuId, setting: T) {
        let counted = self.count_change(sku, setting, usize::MAX);
        debug_assert!(counted.is_ok(), "no bound to refuse");
        self.write(sku, setting);
    }

    /// The first half of a `put`: counts the change, or refuses it if it
    /// would give more than `most` SKUs a setting. The count moves before
    /// the table, so two SKUs set at once cannot both pass the bound, and
    /// a reader that sees the count first reads the default (the change
    /// has not happened for it yet).
    pub(super) fn count_change(&self, sku: SkuId, setting: T, most: usize) -> Result<(), ()> {
        let before = self.get(sku);
        // Relaxed: a count (see `any`); the bound is exact because every
        // change of it is one atomic step.
        match (before == T::default(), setting == T::default()) {
            (true, false) => {
                let taken = self
                    .set
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < most).then_some(n + 1)
                    });
                taken.map(|_| ()).map_err(|_| ())
            }
            (false, true) => {
                self.set.fetch_sub(1, Ordering::Relaxed);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The second half of a `put`: publishes the setting.
    pub(super) fn write(&self, sku: SkuId, setting: T) {
        if self.get(sku) != setting {
            self.table.get_or_init(SlotTable::new).set(sku, &[setting]);
        }
    }
}

impl<S: ChangeSink> Engine<S> {
    /// Sets when `sku` may be reserved (`SaleWindow::ALWAYS`: from now on,
    /// for good). Returns the new version. Reservations already made are
    /// not touched: a window decides who may reserve, not what was sold.
    pub fn set_sale_window(&self, sku: SkuId, window: SaleWindow) -> Result<u64, EngineError> {
        window.validate()?;
        let cell = self.cell(sku)?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        Ok(cell.bump_version(|version| {
            // Journaled under the lock, before the window is visible.
            self.record(
                hint,
                Change::SaleWindow {
                    sku,
                    version,
                    window,
                },
            );
            self.sale_windows.put(sku, window);
            version
        }))
    }

    /// `sku`'s window (`ALWAYS` when none was set).
    pub fn sale_window(&self, sku: SkuId) -> SaleWindow {
        self.sale_windows.get(sku)
    }

    /// Puts a recovered window back (recovery only: records nothing).
    pub fn restore_sale_window(&self, sku: SkuId, window: SaleWindow) -> Result<(), EngineError> {
        self.cell(sku)?;
        self.sale_windows.put(sku, window);
        Ok(())
    }

    /// Refuses an order naming a SKU that is not on sale now. One load
    /// when no SKU has a window.
    #[inline]
    pub(super) fn check_sale_windows(&self, lines: &[Line]) -> Result<(), EngineError> {
        if !self.sale_windows.any() {
            return Ok(());
        }
        self.check_each_window(lines)
    }

    #[cold]
    #[inline(never)]
    fn check_each_window(&self, lines: &[Line]) -> Result<(), EngineError> {
        let now_ms = self.clock.now_ms();
        for line in lines {
            let window = self.sale_windows.get(line.sku);
            if !window.is_open(now_ms) {
                return Err(EngineError::NotOnSale {
                    sku: line.sku,
                    now_ms,
                    not_yet: window.starts_at_ms.is_some_and(|starts| now_ms < starts),
                });
            }
        }
        Ok(())
    }
}

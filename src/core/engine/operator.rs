//! Operator changes: create a SKU, set, restock and withdraw stock, set a
//! per-customer limit. Each takes the SKU's cell lock, bumps its version,
//! and reports the change as a delta computed under that lock, before the
//! units it adds can be sold (`change.rs`).

use super::Engine;
use crate::core::catalogue::validate_sku_name;
use crate::core::cell::{
    Insufficient, OperatorChange, SetError, StaleVersion, StockCell, StockLevel, TooMuchStock,
};
use crate::core::change::{Change, ChangeSink, LimitChange};
use crate::core::error::EngineError;
use crate::core::hint::stripe_hint;
use crate::core::limits::{MAX_PER_CUSTOMER_LIMIT, MAX_STOCK_PER_SKU};
use crate::core::types::SkuId;

/// An operator's put of a SKU: each field `None` leaves that setting as it
/// is (a new SKU starts with nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkuPut {
    /// The units for sale, given directly or as the units on hand.
    pub level: Option<StockLevel>,
    /// Units on hand kept back from sale.
    pub safety_stock: Option<u64>,
    /// The per-customer limit (`Some(None)`: remove it).
    pub limit: Option<Option<u32>>,
    pub expected_version: Option<u64>,
}

impl SkuPut {
    pub(super) fn validate(&self) -> Result<(), EngineError> {
        if let Some(Some(limit)) = self.limit {
            if limit == 0 || limit > MAX_PER_CUSTOMER_LIMIT {
                return Err(EngineError::InvalidLimit);
            }
        }
        // Units for sale past the limit are the cell's to refuse (it knows
        // what is already received); the safety stock is refused here, so
        // every sum the cell makes of it stays far inside a u64.
        match self.safety_stock {
            Some(safety_stock) if safety_stock > MAX_STOCK_PER_SKU => {
                Err(EngineError::InvalidSafetyStock { safety_stock })
            }
            _ => Ok(()),
        }
    }
}

impl<S: ChangeSink> Engine<S> {
    /// Creates the SKU if absent and sets its available units (and, when
    /// `limit` is given, its per-customer limit) in one versioned step. With
    /// `expected_version`, refuses with `VersionConflict` unless it matches
    /// (an absent SKU has version 0). Returns the SKU and the change.
    pub fn put_sku(
        &self,
        name: &str,
        available: u64,
        limit: Option<Option<u32>>,
        expected_version: Option<u64>,
    ) -> Result<(SkuId, OperatorChange), EngineError> {
        let put = SkuPut {
            level: Some(StockLevel::Available(available)),
            limit,
            expected_version,
            ..SkuPut::default()
        };
        self.put_stock(name, &put)
    }

    /// Creates the SKU if absent and sets what `put` names in one versioned
    /// step: the units for sale (as `available`, or as `on_hand` of which
    /// the safety stock is kept back), the safety stock, the per-customer
    /// limit. Refuses with `BelowCommitted` when fewer units would be on
    /// hand than are held plus kept back, and with `VersionConflict` when
    /// `expected_version` is not the current one (an absent SKU has
    /// version 0). A refused put changes nothing, not even a creation.
    pub fn put_stock(
        &self,
        name: &str,
        put: &SkuPut,
    ) -> Result<(SkuId, OperatorChange), EngineError> {
        validate_sku_name(name)?;
        put.validate()?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let sku = match self.catalogue.find(name) {
            Some(sku) => {
                self.refuse_kit(sku)?;
                sku
            }
            None => self.create_for_put(name, put, hint)?,
        };
        self.put_stock_at(sku, put, hint)
    }

    /// `put_stock` of an existing SKU (or location) by id.
    pub(super) fn put_stock_at(
        &self,
        sku: SkuId,
        put: &SkuPut,
        hint: usize,
    ) -> Result<(SkuId, OperatorChange), EngineError> {
        let cell = self.cell(sku)?;
        let limit_change = put.limit.map_or(LimitChange::Unchanged, LimitChange::Set);
        let publish = |change| self.record_operator(hint, sku, change, limit_change);
        let policy = &self.config.stripe_policy;
        let (level, safety) = (put.level, put.safety_stock);
        cell.set_stock(
            level,
            safety,
            put.limit,
            put.expected_version,
            hint,
            policy,
            publish,
        )
        .map(|change| (sku, change))
        .map_err(|refused| match refused {
            SetError::Stale(StaleVersion { current }) => EngineError::VersionConflict {
                sku: Some(sku),
                expected: put.expected_version.unwrap_or(current),
                current,
            },
            SetError::TooMuch(TooMuchStock { received }) => {
                EngineError::StockLimit { sku, received }
            }
            SetError::BelowCommitted(below) => EngineError::BelowCommitted {
                sku: Some(sku),
                on_hand: below.on_hand,
                held: below.held,
                safety_stock: below.safety_stock,
            },
        })
    }

    /// Creates a SKU for `put`, unless the put would be refused on a SKU
    /// with nothing yet: a refused request creates nothing.
    pub(super) fn create_for_put(
        &self,
        name: &str,
        put: &SkuPut,
        hint: usize,
    ) -> Result<SkuId, EngineError> {
        put.refuse_on_new()?;
        let on_create = |sku: SkuId, name: &str, _: &StockCell| {
            self.record(hint, Change::SkuCreated { sku, name })
        };
        Ok(self.catalogue.find_or_create_with(name, on_create)?.0)
    }
}

impl SkuPut {
    /// Refuses what this put would be refused on a SKU with nothing yet
    /// (so a refused put creates nothing).
    pub(super) fn refuse_on_new(&self) -> Result<(), EngineError> {
        let put = self;
        if let Some(expected) = put.expected_version.filter(|&v| v != 0) {
            return Err(EngineError::VersionConflict {
                sku: None,
                expected,
                current: 0,
            });
        }
        let safety = put.safety_stock.unwrap_or(0);
        let on_hand = match put.level {
            Some(StockLevel::Available(units)) => units.saturating_add(safety),
            Some(StockLevel::OnHand(units)) => units,
            None => 0,
        };
        if on_hand < safety {
            return Err(EngineError::BelowCommitted {
                sku: None,
                on_hand,
                held: 0,
                safety_stock: safety,
            });
        }
        Ok(())
    }
}

impl<S: ChangeSink> Engine<S> {
    /// Operator restock: `units` more received and available.
    pub fn restock(&self, sku: SkuId, units: u64) -> Result<OperatorChange, EngineError> {
        self.refuse_kit(sku)?;
        self.check_storage()?;
        let cell = self.cell(sku)?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let publish = |change| self.record_operator(hint, sku, change, LimitChange::Unchanged);
        let fill = |fill| self.record_fill(hint, sku, fill);
        let (change, left) = cell
            .restock(units, hint, publish, fill)
            .map_err(|TooMuchStock { received }| EngineError::StockLimit { sku, received })?;
        self.fill_backorders(cell, sku, left, hint);
        Ok(change)
    }

    /// Adds (`delta > 0`) or removes (`delta < 0`) available units. Removing
    /// more than is available is refused with `InsufficientStock`.
    pub fn adjust(&self, sku: SkuId, delta: i64) -> Result<OperatorChange, EngineError> {
        if delta >= 0 {
            return self.restock(sku, delta as u64);
        }
        self.refuse_kit(sku)?;
        self.check_storage()?;
        let cell = self.cell(sku)?;
        let units = delta.unsigned_abs();
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let publish = |change| self.record_operator(hint, sku, change, LimitChange::Unchanged);
        cell.withdraw(units, hint, &self.config.stripe_policy, publish)
            .map_err(
                |Insufficient { available }| EngineError::InsufficientStock {
                    sku,
                    available,
                    requested: units,
                },
            )
    }

    /// Sets (`Some`) or removes (`None`) the per-customer limit. Returns the
    /// new version. Units customers already have are not taken back.
    pub fn set_limit(&self, sku: SkuId, limit: Option<u32>) -> Result<u64, EngineError> {
        if limit.is_some_and(|l| l == 0 || l > MAX_PER_CUSTOMER_LIMIT) {
            return Err(EngineError::InvalidLimit);
        }
        self.refuse_kit(sku)?;
        let cell = self.cell(sku)?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let publish = |change| self.record_operator(hint, sku, change, LimitChange::Set(limit));
        Ok(cell.set_limit(limit, publish))
    }

    /// Sets (`Some`) or removes (`None`) the low-stock threshold: the change
    /// feed reports `sku.low_stock` when `available` falls below it.
    /// Returns the new version.
    pub fn set_low_stock(&self, sku: SkuId, threshold: Option<u32>) -> Result<u64, EngineError> {
        if threshold == Some(0) {
            return Err(EngineError::InvalidThreshold);
        }
        self.refuse_kit(sku)?;
        let cell = self.cell(sku)?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let publish = |change: OperatorChange| {
            let version = change.version;
            self.record(
                hint,
                Change::LowStock {
                    sku,
                    version,
                    threshold,
                },
            )
        };
        Ok(cell.set_low_stock(threshold, publish))
    }

    /// Spreads a SKU over stripes now, before contention shows: call it when
    /// a sale is about to open.
    pub fn prepare_hot(&self, sku: SkuId) -> Result<(), EngineError> {
        self.cell(sku)?
            .widen(stripe_hint(), &self.config.stripe_policy);
        Ok(())
    }

    fn record_operator(&self, hint: usize, sku: SkuId, change: OperatorChange, limit: LimitChange) {
        self.record(
            hint,
            Change::Operator {
                sku,
                delta: change.delta,
                version: change.version,
                limit,
                safety_stock: change.safety_stock,
            },
        );
    }
}

//! Operator changes: create a SKU, set, restock and withdraw stock, set a
//! per-customer limit. Each takes the SKU's cell lock, bumps its version,
//! and reports the change as a delta computed under that lock, before the
//! units it adds can be sold (`change.rs`).

use super::Engine;
use crate::core::catalogue::validate_sku_name;
use crate::core::cell::{Insufficient, OperatorChange, SetError, StaleVersion, TooMuchStock};
use crate::core::change::{Change, ChangeSink, LimitChange};
use crate::core::error::EngineError;
use crate::core::hint::stripe_hint;
use crate::core::types::SkuId;

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
        validate_sku_name(name)?;
        if let Some(Some(0)) = limit {
            return Err(EngineError::InvalidLimit);
        }
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let sku = match (self.catalogue.find(name), expected_version) {
            (Some(sku), _) => sku,
            // Refuse before creating, so a refused request changes nothing.
            (None, Some(expected)) if expected != 0 => {
                return Err(EngineError::VersionConflict {
                    sku: None,
                    expected,
                    current: 0,
                })
            }
            (None, _) => {
                let on_create =
                    |sku: SkuId, name: &str| self.record(hint, Change::SkuCreated { sku, name });
                self.catalogue.find_or_create_with(name, on_create)?.0
            }
        };
        let cell = self.cell(sku)?;
        let limit_change = limit.map_or(LimitChange::Unchanged, LimitChange::Set);
        let publish = |change| self.record_operator(hint, sku, change, limit_change);
        let policy = &self.config.stripe_policy;
        match cell.set_available(available, limit, expected_version, hint, policy, publish) {
            Ok(change) => Ok((sku, change)),
            Err(SetError::Stale(StaleVersion { current })) => Err(EngineError::VersionConflict {
                sku: Some(sku),
                expected: expected_version.unwrap_or(current),
                current,
            }),
            Err(SetError::TooMuch(TooMuchStock { received })) => {
                Err(EngineError::StockLimit { sku, received })
            }
        }
    }

    /// Operator restock: `units` more received and available.
    pub fn restock(&self, sku: SkuId, units: u64) -> Result<OperatorChange, EngineError> {
        self.check_storage()?;
        let cell = self.cell(sku)?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let publish = |change| self.record_operator(hint, sku, change, LimitChange::Unchanged);
        cell.restock(units, hint, publish)
            .map_err(|TooMuchStock { received }| EngineError::StockLimit { sku, received })
    }

    /// Adds (`delta > 0`) or removes (`delta < 0`) available units. Removing
    /// more than is available is refused with `InsufficientStock`.
    pub fn adjust(&self, sku: SkuId, delta: i64) -> Result<OperatorChange, EngineError> {
        if delta >= 0 {
            return self.restock(sku, delta as u64);
        }
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
        if limit == Some(0) {
            return Err(EngineError::InvalidLimit);
        }
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
            },
        );
    }
}

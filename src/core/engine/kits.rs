//! Kits (bundles): a sellable SKU made of other SKUs (a gift box = 1 mug +
//! 2 coasters).
//!
//! # Why a kit is a cart
//!
//! A kit has no stock of its own: an order of it takes its components.
//! The engine turns every kit line into its component lines, merged with
//! the order's other lines of the same SKUs, before anything is taken. The
//! cart machinery then does the rest: all components or none, each
//! component's per-customer limit, one take per SKU. So components sold
//! alone and in kits, concurrently, can never oversell a component, and a
//! cart of a kit and one of its components counts that component once
//! (the Medusa bug, where each line was checked against the same
//! un-decremented count). The reservation holds the component lines.
//!
//! # Why kit-ness never changes
//!
//! A SKU is a kit from its creation (`define_kit` on a new name) or never:
//! the kit's mark is set before its name is published, so a lock-free
//! `is_kit` check is exact, and no operator change can ever put stock in a
//! kit or a kit's mark on a SKU with stock. A kit's components can be
//! redefined; reservations already made keep the components they took.

use std::sync::Arc;

use super::Engine;
use crate::core::cell::StockCell;
use crate::core::change::{Change, ChangeSink};
use crate::core::error::{EngineError, KitRefusal};
use crate::core::hint::stripe_hint;
use crate::core::limits::{MAX_KIT_COMPONENTS, MAX_LINES_PER_CART, MAX_LINE_QUANTITY};
use crate::core::types::{Line, SkuId};

impl<S: ChangeSink> Engine<S> {
    /// Defines kit `name` as `components` (units of each per kit): creates
    /// it if absent, or replaces the components of an existing kit.
    /// Refused for a SKU with stock of its own, a component that is itself
    /// a kit (or the kit), an unknown component, a component named twice,
    /// no components or more than `MAX_KIT_COMPONENTS`. Returns the kit and
    /// its new version.
    pub fn define_kit(&self, name: &str, components: &[Line]) -> Result<(SkuId, u64), EngineError> {
        crate::core::catalogue::validate_sku_name(name)?;
        self.validate_components(components)?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let components: Arc<[Line]> = Arc::from(components);
        if let Some(kit) = self.catalogue.find(name) {
            // A kit among the components (itself included) was refused by
            // `validate_components`.
            return self.redefine_kit(kit, components, hint);
        }
        let on_create = |kit: SkuId, name: &str, cell: &StockCell| {
            self.record(hint, Change::SkuCreated { sku: kit, name });
            self.record(
                hint,
                Change::KitDefined {
                    kit,
                    version: 1,
                    components: &components,
                },
            );
            // Before the name is published: the SKU is a kit from birth.
            cell.make_kit(Arc::clone(&components));
        };
        let (kit, created) = self.catalogue.find_or_create_with(name, on_create)?;
        if created {
            return Ok((kit, 1));
        }
        // Another request created the name first.
        self.redefine_kit(kit, components, hint)
    }

    fn redefine_kit(
        &self,
        kit: SkuId,
        components: Arc<[Line]>,
        hint: usize,
    ) -> Result<(SkuId, u64), EngineError> {
        let cell = self.cell(kit)?;
        if !cell.is_kit() {
            return Err(kit_refused(kit, KitRefusal::HasStock));
        }
        let publish = |version| {
            let change = Change::KitDefined {
                kit,
                version,
                components: &components,
            };
            self.record(hint, change);
        };
        let version = cell.redefine_kit(Arc::clone(&components), publish);
        Ok((kit, version))
    }

    fn validate_components(&self, components: &[Line]) -> Result<(), EngineError> {
        if components.is_empty() || components.len() > MAX_KIT_COMPONENTS {
            return Err(EngineError::InvalidKit {
                components: components.len(),
            });
        }
        for (index, component) in components.iter().enumerate() {
            if component.quantity == 0 || component.quantity > MAX_LINE_QUANTITY {
                return Err(EngineError::InvalidQuantity {
                    quantity: u64::from(component.quantity),
                });
            }
            if self.cell(component.sku)?.is_kit() {
                return Err(kit_refused(component.sku, KitRefusal::ComponentIsAKit));
            }
            if components[..index].iter().any(|c| c.sku == component.sku) {
                return Err(kit_refused(component.sku, KitRefusal::NamedTwice));
            }
        }
        Ok(())
    }

    /// A kit's components, `None` for a SKU with stock of its own.
    pub fn kit_components(&self, sku: SkuId) -> Result<Option<Arc<[Line]>>, EngineError> {
        Ok(self.cell(sku)?.kit_components())
    }

    /// `lines` with every kit line replaced by its components, and lines of
    /// one SKU merged into one (so a kit and one of its components count
    /// that component once). Refused when a merged line passes
    /// `MAX_LINE_QUANTITY` or the lines pass `MAX_LINES_PER_CART`.
    pub(super) fn expand_kits(&self, lines: &[Line]) -> Result<Vec<Line>, EngineError> {
        let mut merged: Vec<Line> = Vec::with_capacity(MAX_LINES_PER_CART);
        let mut add = |sku: SkuId, quantity: u64| -> Result<(), EngineError> {
            let at = match merged.iter().position(|l| l.sku == sku) {
                Some(at) => at,
                None => {
                    merged.push(Line { sku, quantity: 0 });
                    merged.len() - 1
                }
            };
            let total = u64::from(merged[at].quantity) + quantity;
            if total > u64::from(MAX_LINE_QUANTITY) {
                return Err(EngineError::InvalidQuantity { quantity: total });
            }
            merged[at].quantity = total as u32;
            Ok(())
        };
        for line in lines {
            let Some(components) = self.cell(line.sku)?.kit_components() else {
                add(line.sku, u64::from(line.quantity))?;
                continue;
            };
            for component in components.iter() {
                // Refused at definition; a component is never made a kit
                // later (kit-ness is fixed at creation).
                debug_assert!(!self.cell(component.sku)?.is_kit());
                let units = u64::from(line.quantity) * u64::from(component.quantity);
                add(component.sku, units)?;
            }
        }
        if merged.len() > MAX_LINES_PER_CART {
            return Err(EngineError::TooManyLines {
                lines: merged.len(),
            });
        }
        Ok(merged)
    }

    /// A kit's available units: the fewest whole kits its components'
    /// available units make (each read separately: a reading, exact only
    /// at quiescence).
    pub(super) fn kit_available(&self, components: &[Line]) -> u64 {
        components
            .iter()
            .map(|c| {
                let available = self.cell(c.sku).map_or(0, |cell| cell.available_now());
                available / u64::from(c.quantity)
            })
            .min()
            .unwrap_or(0)
    }

    /// Refuses an operator change of stock or limits on a kit.
    pub(super) fn refuse_kit(&self, sku: SkuId) -> Result<(), EngineError> {
        match self.cell(sku)?.is_kit() {
            true => Err(kit_refused(sku, KitRefusal::IsAKit)),
            false => Ok(()),
        }
    }
}

fn kit_refused(sku: SkuId, reason: KitRefusal) -> EngineError {
    EngineError::KitRefused { sku, reason }
}

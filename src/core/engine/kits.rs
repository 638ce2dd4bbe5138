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

use super::locations::AllocatedBy;
use super::Engine;
use crate::core::cell::StockCell;
use crate::core::change::{Change, ChangeSink};
use crate::core::error::{EngineError, KitRefusal};
use crate::core::hint::stripe_hint;
use crate::core::limits::{MAX_KIT_COMPONENTS, MAX_LINES_PER_CART, MAX_LINE_QUANTITY};
use crate::core::types::{Line, SkuId};

/// A kit order's lines once its kits are replaced by their components: at
/// most `MAX_LINES_PER_CART`, on the stack (a kit order allocates nothing).
pub(super) struct Expanded {
    lines: [Line; MAX_LINES_PER_CART],
    len: usize,
    /// The lines a SKU kept at locations was given by `allocate`.
    allocated: AllocatedBy,
}

impl Default for Expanded {
    fn default() -> Expanded {
        let unused = Line {
            sku: SkuId::from_index(0),
            quantity: 0,
        };
        Expanded {
            lines: [unused; MAX_LINES_PER_CART],
            len: 0,
            allocated: AllocatedBy::default(),
        }
    }
}

impl Expanded {
    pub(super) fn lines(&self) -> &[Line] {
        &self.lines[..self.len]
    }

    /// Units of `sku` this order takes so far.
    pub(super) fn units_of(&self, sku: SkuId) -> u64 {
        let line = self.lines().iter().find(|l| l.sku == sku);
        line.map_or(0, |l| u64::from(l.quantity))
    }

    /// Adds `units` of location cell `cell`, chosen for a line of
    /// `requested` units of `sku`.
    pub(super) fn add_allocated(
        &mut self,
        cell: SkuId,
        units: u64,
        sku: SkuId,
        requested: u32,
    ) -> Result<(), EngineError> {
        self.add(cell, units)?;
        self.allocated.note(cell, sku, requested);
        Ok(())
    }

    pub(super) fn allocated_by(&self) -> AllocatedBy {
        self.allocated.clone()
    }

    /// Adds `units` of `sku`, merged with a line of it already there;
    /// returns the line's place.
    fn add(&mut self, sku: SkuId, units: u64) -> Result<usize, EngineError> {
        let at = match self.lines().iter().position(|l| l.sku == sku) {
            Some(at) => at,
            None if self.len == MAX_LINES_PER_CART => {
                // Counted as the line it would have been.
                return Err(EngineError::TooManyLines {
                    lines: MAX_LINES_PER_CART + 1,
                });
            }
            None => {
                self.lines[self.len] = Line { sku, quantity: 0 };
                self.len += 1;
                self.len - 1
            }
        };
        let total = u64::from(self.lines[at].quantity) + units;
        if total > u64::from(MAX_LINE_QUANTITY) {
            return Err(EngineError::InvalidQuantity { quantity: total });
        }
        self.lines[at].quantity = total as u32;
        Ok(at)
    }
}

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
        if let Some(kit) = self.catalogue.find(name) {
            // A kit among the components (itself included) was refused by
            // `validate_components`.
            return self.redefine_kit(kit, components, hint);
        }
        let on_create = |kit: SkuId, name: &str, cell: &StockCell| {
            self.record(hint, Change::SkuCreated { sku: kit, name });
            let version = 1;
            self.record(
                hint,
                Change::KitDefined {
                    kit,
                    version,
                    components,
                },
            );
            // Before the name is published: the SKU is a kit from birth.
            self.kits.set(kit, components);
            cell.make_kit();
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
        components: &[Line],
        hint: usize,
    ) -> Result<(SkuId, u64), EngineError> {
        let cell = self.cell(kit)?;
        if !cell.is_kit() {
            return Err(kit_refused(kit, KitRefusal::HasStock));
        }
        // Under the kit's lock: recorded, then published, in version order.
        let publish = |version| {
            let change = Change::KitDefined {
                kit,
                version,
                components,
            };
            self.record(hint, change);
            self.kits.set(kit, components);
        };
        Ok((kit, cell.redefine_kit(publish)))
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
            let cell = self.cell(component.sku)?;
            if cell.is_kit() {
                return Err(kit_refused(component.sku, KitRefusal::ComponentIsAKit));
            }
            if cell.is_located() || self.location_of(component.sku).is_some() {
                return Err(kit_refused(
                    component.sku,
                    KitRefusal::ComponentHasLocations,
                ));
            }
            if components[..index].iter().any(|c| c.sku == component.sku) {
                return Err(kit_refused(component.sku, KitRefusal::NamedTwice));
            }
        }
        Ok(())
    }

    /// A kit's components, `None` for a SKU with stock of its own.
    pub fn kit_components(&self, sku: SkuId) -> Result<Option<&[Line]>, EngineError> {
        Ok(self.kit_of(self.cell(sku)?, sku))
    }

    /// `cell`'s (SKU `sku`'s) components if it is a kit: lock-free, no
    /// shared write (`KitTable`).
    #[inline]
    pub(super) fn kit_of(&self, cell: &StockCell, sku: SkuId) -> Option<&[Line]> {
        if !cell.is_kit() {
            return None;
        }
        let components = self.kits.get(sku);
        debug_assert!(
            components.is_some(),
            "a kit's components are set before it is"
        );
        components
    }

    /// `lines` with every kit line replaced by its components, every line
    /// of a SKU kept at locations given its location(s) (`split`: bit `i`
    /// set lets line `i` take from several), and lines of one SKU merged
    /// into one (so a kit and one of its components count that component
    /// once). Refused when a merged line passes `MAX_LINE_QUANTITY`, the
    /// lines pass `MAX_LINES_PER_CART`, or a line cannot be allocated.
    /// `located`: some line is of a SKU kept at locations (else the
    /// allocation pass is skipped).
    pub(super) fn expand(
        &self,
        lines: &[Line],
        split: u32,
        located: bool,
    ) -> Result<Expanded, EngineError> {
        let mut merged = Expanded::default();
        // Plain and kit lines first: allocation then sees what the order
        // already takes of each location.
        for line in lines {
            let cell = self.cell(line.sku)?;
            if cell.is_located() {
                continue;
            }
            let Some(components) = self.kit_of(cell, line.sku) else {
                merged.add(line.sku, u64::from(line.quantity))?;
                continue;
            };
            for component in components {
                // Refused at definition; a component is never made a kit
                // or located later (both are fixed at creation).
                debug_assert!(!self.cell(component.sku)?.is_composite());
                let units = u64::from(line.quantity) * u64::from(component.quantity);
                merged.add(component.sku, units)?;
            }
        }
        if !located {
            return Ok(merged);
        }
        for (index, line) in lines.iter().enumerate() {
            if self.cell(line.sku)?.is_located() {
                let split = split & (1 << index) != 0;
                self.allocate(line.sku, line.quantity, split, &mut merged)?;
            }
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

    /// Refuses an operator change of stock or limits on a kit, or on a
    /// SKU kept at locations.
    pub(super) fn refuse_kit(&self, sku: SkuId) -> Result<(), EngineError> {
        match self.cell(sku)?.is_kit() {
            true => Err(kit_refused(sku, KitRefusal::IsAKit)),
            false => self.refuse_located(sku),
        }
    }
}

fn kit_refused(sku: SkuId, reason: KitRefusal) -> EngineError {
    EngineError::KitRefused { sku, reason }
}

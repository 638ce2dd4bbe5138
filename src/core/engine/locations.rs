//! Locations: a SKU whose stock is kept at several places (warehouses,
//! stores), each with its own counts and safety stock.
//!
//! # Why a location is a cell
//!
//! Each location of SKU `tee` is a cell of its own, named `tee/berlin` in
//! the catalogue (`/` is never in a SKU name). So a location's counts are
//! exact at every instant by the same rules as any SKU's: takes by CAS,
//! operator changes under its lock, the same journal events, the same
//! recovery. The SKU itself (`tee`) keeps no stock (like a kit): its
//! document sums its locations, so "the total says yes, the location says
//! no" (Medusa #14987) cannot happen, as there is no total kept apart to
//! drift.
//!
//! # How an order is allocated
//!
//! A line that names a location takes from that location's cell. A line
//! without one is given a location here, before anything is taken: the
//! location of lowest priority number that has all the units (of equal
//! priorities, the one with the most available), or, when the line allows
//! a split, units from several in that order. The take that follows is the
//! exact check: when another buyer took the units first, the order is
//! allocated again from fresh counts, at most `MAX_ALLOCATION_ATTEMPTS`
//! times. A cart is all or nothing across its locations like any cart.
//!
//! # Why located-ness never changes
//!
//! A SKU keeps its stock at locations from its creation (its first
//! location creates it) or never, as a kit is a kit from birth: a
//! lock-free check is then exact, and no SKU has stock both of its own and
//! at locations.

use super::kits::Expanded;
use super::Engine;
use crate::core::catalogue::{location_cell_name, validate_sku_name, LOCATION_SEPARATOR};
use crate::core::cell::StockCell;
use crate::core::change::{Change, ChangeSink};
use crate::core::error::{EngineError, LocationRefusal};
use crate::core::hint::stripe_hint;
use crate::core::limits::{MAX_ALLOCATION_ATTEMPTS, MAX_LOCATIONS_PER_SKU};
use crate::core::types::{Location, SkuId};

use super::SkuPut;

/// An operator's put of one location: its stock (as `SkuPut`: units for
/// sale or on hand, safety stock, expected version; never a limit) and,
/// optionally, its allocation priority (a new location starts at 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocationPut {
    pub stock: SkuPut,
    pub priority: Option<u32>,
}

/// What a location put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocationChange {
    /// The SKU kept at locations.
    pub sku: SkuId,
    /// The location's own cell.
    pub location: SkuId,
    /// The location's version after the put.
    pub version: u64,
}

fn refused(sku: SkuId, reason: LocationRefusal) -> EngineError {
    EngineError::LocationRefused { sku, reason }
}

impl<S: ChangeSink> Engine<S> {
    /// Creates SKU `sku_name` kept at locations if absent, location
    /// `location` of it if absent, and sets what `put` names there.
    /// Refused for a SKU with stock of its own or a kit, past
    /// `MAX_LOCATIONS_PER_SKU`, and as `put_stock` refuses. A put refused
    /// for what it asks (not for the state it meets) creates nothing.
    pub fn put_location(
        &self,
        sku_name: &str,
        location: &str,
        put: &LocationPut,
    ) -> Result<LocationChange, EngineError> {
        validate_sku_name(sku_name)?;
        let cell_name = location_cell_name(sku_name, location)?;
        put.stock.validate()?;
        if put.stock.limit.is_some() {
            // A limit per location would let a customer buy it once per
            // location; none is kept for SKUs with locations.
            return Err(EngineError::LimitAtLocation);
        }
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let sku = match self.catalogue.find(sku_name) {
            Some(sku) if self.cell(sku)?.is_located() => sku,
            Some(sku) => return Err(refused(sku, LocationRefusal::NotLocated)),
            None => {
                put.stock.refuse_on_new()?;
                self.create_located(sku_name, hint)?
            }
        };
        let (cell, created) = match self.catalogue.find(&cell_name) {
            Some(cell) => (cell, false),
            None => {
                put.stock.refuse_on_new()?;
                let priority = put.priority.unwrap_or(0);
                self.add_location(sku, &cell_name, priority, hint)?
            }
        };
        if let (Some(priority), false) = (put.priority, created) {
            self.set_priority(sku, cell, priority, hint)?;
        }
        let version = match put.stock {
            SkuPut {
                level: None,
                safety_stock: None,
                expected_version: None,
                ..
            } => self.cell(cell)?.snapshot().version,
            stock => self.put_stock_at(cell, &stock, hint)?.1.version,
        };
        Ok(LocationChange {
            sku,
            location: cell,
            version,
        })
    }

    /// Creates `name` as a SKU kept at locations: marked before its name
    /// is published, like a kit.
    fn create_located(&self, name: &str, hint: usize) -> Result<SkuId, EngineError> {
        let on_create = |sku: SkuId, name: &str, cell: &StockCell| {
            self.record(hint, Change::SkuCreated { sku, name });
            let located = Change::Location {
                sku,
                version: 1,
                priority: None,
            };
            self.record(hint, located);
            cell.make_located();
        };
        let (sku, _) = self.catalogue.find_or_create_with(name, on_create)?;
        match self.cell(sku)?.is_located() {
            true => Ok(sku),
            // Another request created it first, with stock of its own.
            false => Err(refused(sku, LocationRefusal::NotLocated)),
        }
    }

    /// Creates location cell `cell_name` of `sku` and lists it, under
    /// `sku`'s lock (which serialises changes to its list). Returns the
    /// cell and whether this call created it.
    fn add_location(
        &self,
        sku: SkuId,
        cell_name: &str,
        priority: u32,
        hint: usize,
    ) -> Result<(SkuId, bool), EngineError> {
        self.cell(sku)?.exclusive(|| {
            let listed = self.locations.get(sku).unwrap_or(&[]);
            if let Some(id) = self.catalogue.find(cell_name) {
                return Ok((id, false));
            }
            if listed.len() >= MAX_LOCATIONS_PER_SKU {
                return Err(refused(sku, LocationRefusal::TooManyLocations));
            }
            let on_create = |id: SkuId, name: &str, _: &StockCell| {
                self.record(hint, Change::SkuCreated { sku: id, name });
                let change = Change::Location {
                    sku: id,
                    version: 0,
                    priority: Some(priority),
                };
                self.record(hint, change);
            };
            let (id, created) = self.catalogue.find_or_create_with(cell_name, on_create)?;
            debug_assert!(created, "location cells are created under their SKU's lock");
            let mut list = listed.to_vec();
            list.push(Location { sku: id, priority });
            self.locations.set(sku, &list);
            Ok((id, created))
        })
    }

    /// Sets a location's priority (a no-op when it already has it).
    fn set_priority(
        &self,
        sku: SkuId,
        cell: SkuId,
        priority: u32,
        hint: usize,
    ) -> Result<(), EngineError> {
        let location_cell = self.cell(cell)?;
        self.cell(sku)?.exclusive(|| {
            let listed = self.locations.get(sku).unwrap_or(&[]);
            let Some(at) = listed.iter().position(|l| l.sku == cell) else {
                debug_assert!(false, "a location cell is listed before it is found");
                return;
            };
            if listed[at].priority == priority {
                return;
            }
            location_cell.bump_version(|version| {
                let change = Change::Location {
                    sku: cell,
                    version,
                    priority: Some(priority),
                };
                self.record(hint, change);
                let mut list = listed.to_vec();
                list[at].priority = priority;
                self.locations.set(sku, &list);
            });
        });
        Ok(())
    }

    /// The locations `sku` keeps its stock at, in the order they were
    /// added; `None` for a SKU with stock of its own (or a kit).
    pub fn locations(&self, sku: SkuId) -> Option<&[Location]> {
        self.locations.get(sku)
    }

    /// The cell of location `location` of `sku`.
    pub fn location(&self, sku: SkuId, location: &str) -> Result<SkuId, EngineError> {
        let unknown = || EngineError::UnknownLocation {
            sku,
            location: location.into(),
        };
        let name = self
            .sku_name(sku)
            .ok_or(EngineError::UnknownSkuId { sku })?;
        if !self.cell(sku)?.is_located() {
            return Err(unknown());
        }
        let cell_name = location_cell_name(name, location).map_err(|_| unknown())?;
        self.catalogue.find(&cell_name).ok_or_else(unknown)
    }

    /// If `cell` is a location's cell: its SKU's name and the location's.
    pub fn location_of(&self, cell: SkuId) -> Option<(&str, &str)> {
        self.sku_name(cell)?.split_once(LOCATION_SEPARATOR)
    }

    /// Adds a located line's units to `merged`: from one location, or
    /// with `split` from several (see the module docs for the order).
    pub(super) fn allocate(
        &self,
        sku: SkuId,
        quantity: u32,
        split: bool,
        merged: &mut Expanded,
    ) -> Result<(), EngineError> {
        let listed = self.locations.get(sku).unwrap_or(&[]);
        // (priority, units there not already in this order, cell).
        let mut choices: Vec<(u32, u64, SkuId)> = listed
            .iter()
            .map(|l| {
                let there = self.cell(l.sku).map_or(0, StockCell::available_now);
                let taken = merged.units_of(l.sku);
                (l.priority, there.saturating_sub(taken), l.sku)
            })
            .collect();
        choices.sort_by_key(|&(priority, there, _)| (priority, std::cmp::Reverse(there)));
        let wanted = u64::from(quantity);
        let total: u64 = choices.iter().map(|c| c.1).sum();
        if total < wanted {
            return Err(EngineError::SoldOut {
                sku,
                available: total,
                requested: wanted,
            });
        }
        if !split {
            let Some(&(_, _, cell)) = choices.iter().find(|c| c.1 >= wanted) else {
                let most_at_one = choices.iter().map(|c| c.1).max().unwrap_or(0);
                return Err(EngineError::NotAtOneLocation {
                    sku,
                    requested: wanted,
                    most_at_one,
                    total,
                });
            };
            return merged.add_allocated(cell, wanted, sku, quantity);
        }
        let mut left = wanted;
        for &(_, there, cell) in &choices {
            let units = there.min(left);
            if units > 0 {
                merged.add_allocated(cell, units, sku, quantity)?;
                left -= units;
            }
            if left == 0 {
                break;
            }
        }
        debug_assert_eq!(left, 0, "the total covered the line");
        Ok(())
    }

    /// Runs `attempt` (an allocation and its takes) until it succeeds, or
    /// fails for a reason other than a chosen location sold out under it,
    /// at most `MAX_ALLOCATION_ATTEMPTS` times. A location sold out on the
    /// last attempt is reported as its SKU sold out, with the units left
    /// across its locations.
    pub(super) fn with_reallocation<T>(
        &self,
        mut attempt: impl FnMut() -> (Result<T, EngineError>, AllocatedBy),
    ) -> Result<T, EngineError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (outcome, allocated) = attempt();
            let Err(EngineError::SoldOut { sku: cell, .. }) = &outcome else {
                return outcome;
            };
            let Some((sku, requested)) = allocated.chosen(*cell) else {
                return outcome;
            };
            if tries < MAX_ALLOCATION_ATTEMPTS {
                continue;
            }
            let available = (self.locations.get(sku).unwrap_or(&[]).iter())
                .map(|l| self.cell(l.sku).map_or(0, StockCell::available_now))
                .sum();
            return Err(EngineError::SoldOut {
                sku,
                available,
                requested,
            });
        }
    }

    /// A record-less sale of a SKU kept at locations: from one location,
    /// chosen as an order's line is.
    pub(super) fn sell_located(&self, sku: SkuId, quantity: u32) -> Result<(), EngineError> {
        self.with_reallocation(|| {
            let mut merged = Expanded::default();
            if let Err(refusal) = self.allocate(sku, quantity, false, &mut merged) {
                return (Err(refusal), AllocatedBy::default());
            }
            let line = merged.lines()[0];
            let outcome = self.sell(line.sku, quantity);
            (outcome, merged.allocated_by())
        })
    }

    /// Marks recovered SKU `sku` as kept at locations (recovery only).
    pub fn restore_located(&self, sku: SkuId) -> Result<(), EngineError> {
        self.cell(sku)?.restore_located();
        Ok(())
    }

    /// Lists recovered location cell `cell` of SKU `sku` (recovery only,
    /// in creation order).
    pub fn restore_location(
        &self,
        sku: SkuId,
        cell: SkuId,
        priority: u32,
    ) -> Result<(), EngineError> {
        if !self.cell(sku)?.is_located() {
            return Err(refused(sku, LocationRefusal::NotLocated));
        }
        let mut list = self.locations.get(sku).unwrap_or(&[]).to_vec();
        list.push(Location {
            sku: cell,
            priority,
        });
        self.locations.set(sku, &list);
        Ok(())
    }

    /// Refuses an operator change of stock or settings on a SKU kept at
    /// locations (they are the locations').
    pub(super) fn refuse_located(&self, sku: SkuId) -> Result<(), EngineError> {
        match self.cell(sku)?.is_located() {
            true => Err(refused(sku, LocationRefusal::StockAtLocations)),
            false => Ok(()),
        }
    }
}

/// The lines of an expanded order that `allocate` gave their location:
/// the line's cell, its SKU and the units the line asked. Empty (and no
/// allocation) for an order with no line of a SKU kept at locations, so a
/// kit order does not pay for it.
#[derive(Clone, Debug, Default)]
pub(super) struct AllocatedBy {
    entries: Vec<(SkuId, SkuId, u32)>,
}

impl AllocatedBy {
    pub(super) fn note(&mut self, cell: SkuId, sku: SkuId, requested: u32) {
        self.entries.push((cell, sku, requested));
    }

    /// `cell`'s SKU and the units its line asked, if `allocate` chose it.
    fn chosen(&self, cell: SkuId) -> Option<(SkuId, u64)> {
        (self.entries.iter())
            .find(|entry| entry.0 == cell)
            .map(|&(_, sku, requested)| (sku, u64::from(requested)))
    }
}

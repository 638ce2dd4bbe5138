//! `Engine`: the whole in-process stock engine behind one API.
//!
//! It composes the catalogue (names → cells), the stock cells (lock-free
//! takes), the hold table (reservation lifecycle and expiry timers), the
//! customer-limit ledger and the idempotency table, and is the only place
//! that knows the order in which they are touched:
//!
//! ```text
//! reserve:  validate ─▶ [idempotency shard lock ─▶] for each line:
//!             limit ledger (acquire) ─▶ stock cell (take)
//!           ─▶ hold table (insert)        any failure: undo the lines taken
//! confirm / cancel / refund / expiry:
//!           hold shard lock ─▶ settle each line (cell, ledger) ─▶ unlock
//! ```
//!
//! Lock order, which rules out deadlock: idempotency shard → hold shard →
//! (stock cell | ledger shard). A cart never holds two cells' locks at once:
//! lines are taken one after another, each under at most its own cell's
//! lock, and undone the same way.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::catalogue::{Catalogue, SkuSlot};
use super::cell::{CellSnapshot, StockCell, StripePolicy};
use super::change::{Change, ChangeSink, InMemory};
use super::clock::{Clock, SystemClock};
use super::error::EngineError;
use super::hint::stripe_hint;
use super::holds::{HeldFigures, HoldDocument, HoldTable, Retention, TimerWork};
use super::idempotency::IdempotencyTable;
use super::kit_table::{KitTable, SlotTable};
use super::ledger::LimitLedger;
use super::limits::{MAX_EXTENSIONS_PER_HOLD, MAX_HOLD_MS, MAX_TTL_MS};
use super::types::{HoldStatus, Line, Location, ReservationId, SkuId};
use super::waiting_room::RoomConfig;

mod backorders;
mod buying;
mod ending;
mod kits;
mod leases;
mod locations;
mod operator;
mod parts;
mod sale_windows;
mod waiting_rooms;

pub use super::cell::StockLevel;
pub use buying::validate_customer;
pub use leases::{validate_lease_id, BookedLease, LeaseReturn};
pub use locations::{LocationChange, LocationPut};
pub use operator::SkuPut;
pub use sale_windows::SaleWindow;
mod restore;
#[cfg(all(test, not(loom)))]
mod tests;

/// Engine settings. `EngineConfig::default()` suits a shop; every field is a
/// limit or a period, checked by `Engine::new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub stripe_policy: StripePolicy,
    /// Hold time-to-live when a request names none.
    pub default_ttl_ms: u64,
    /// Longest time-to-live a request may ask for (at most `MAX_TTL_MS`).
    pub max_ttl_ms: u64,
    /// Longest time-to-live one extension may give (counted from the
    /// extension; longer requests are capped to it). At most `max_ttl_ms`.
    pub max_extension_ms: u64,
    /// Most extensions of one hold (at most `MAX_EXTENSIONS_PER_HOLD`; 0
    /// turns extension off).
    pub max_extensions: u8,
    /// Latest deadline an extension may give, counted from the hold's
    /// creation (at most `MAX_HOLD_MS`).
    pub max_hold_ms: u64,
    /// Most reservation records kept at once (open, confirmed, and ended but
    /// not yet pruned). Past it, new reservations are refused with
    /// `CapacityExceeded`; nothing is dropped.
    pub max_reservations: usize,
    /// How long a cancelled, expired or refunded record stays readable.
    pub ended_retention_ms: u64,
    /// How long a confirmed sale stays refundable by its id. Then its record
    /// is pruned (the sale stands); a later refund is an operator `adjust`.
    pub refund_window_ms: u64,
    /// Most idempotency keys remembered; past it the oldest are forgotten.
    pub max_idempotency_keys: usize,
    /// How long an idempotency key is remembered.
    pub idempotency_retention_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            stripe_policy: StripePolicy::for_this_machine(),
            default_ttl_ms: 10 * 60 * 1000,
            max_ttl_ms: MAX_TTL_MS,
            max_extension_ms: 10 * 60 * 1000,
            max_extensions: 3,
            max_hold_ms: 60 * 60 * 1000,
            max_reservations: 1 << 23,
            ended_retention_ms: 60 * 60 * 1000,
            refund_window_ms: 7 * 24 * 60 * 60 * 1000,
            max_idempotency_keys: 1 << 20,
            idempotency_retention_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// A configuration the engine refuses to start with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid engine configuration: {0}")]
pub struct ConfigError(pub &'static str);

impl EngineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.stripe_policy.validate().map_err(ConfigError)?;
        if self.max_ttl_ms == 0 || self.max_ttl_ms > MAX_TTL_MS {
            return Err(ConfigError("max_ttl_ms must be between 1 and MAX_TTL_MS"));
        }
        if self.default_ttl_ms == 0 || self.default_ttl_ms > self.max_ttl_ms {
            return Err(ConfigError(
                "default_ttl_ms must be between 1 and max_ttl_ms",
            ));
        }
        if self.max_extension_ms == 0 || self.max_extension_ms > self.max_ttl_ms {
            return Err(ConfigError(
                "max_extension_ms must be between 1 and max_ttl_ms",
            ));
        }
        // The messages quote the limits (a `&'static str` cannot format).
        const _: () = assert!(MAX_EXTENSIONS_PER_HOLD == 100 && MAX_HOLD_MS == 604_800_000);
        if self.max_extensions > MAX_EXTENSIONS_PER_HOLD {
            return Err(ConfigError("max_extensions must be at most 100"));
        }
        if self.max_hold_ms == 0 || self.max_hold_ms > MAX_HOLD_MS {
            return Err(ConfigError(
                "max_hold_ms must be between 1 and 604800000 (a week)",
            ));
        }
        if self.max_reservations == 0 {
            return Err(ConfigError("max_reservations must be at least 1"));
        }
        if self.max_idempotency_keys == 0 {
            return Err(ConfigError("max_idempotency_keys must be at least 1"));
        }
        Ok(())
    }
}

/// A reservation or purchase request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Order<'a> {
    /// 1 to `MAX_LINES_PER_CART` lines, each SKU at most once.
    pub lines: &'a [Line],
    /// Required for SKUs with a per-customer limit.
    pub customer: Option<&'a str>,
    /// Hold time-to-live; the engine's default when `None`.
    pub ttl_ms: Option<u64>,
    /// `true`: buy now (the record starts confirmed).
    pub confirm: bool,
    /// A retry with the same key gets the first attempt's outcome.
    pub idempotency_key: Option<&'a str>,
    /// Bit `i` set: line `i`, of a SKU kept at locations, may take its
    /// units from several locations (otherwise all from one).
    pub split: u32,
}

/// What a successful `reserve` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub id: ReservationId,
    /// `Held`, or `Confirmed` for an immediate purchase (as created; read the
    /// reservation for its status now).
    pub status: HoldStatus,
    pub expires_at_ms: u64,
    /// `true` when this answer was replayed for an idempotency key.
    pub replayed: bool,
    /// `true` when the order named a kit: the reservation holds the kit's
    /// components, not the lines that were asked for.
    pub holds_components: bool,
    /// `true` when some line was taken past zero: read the reservation for
    /// the units it is owed.
    pub backordered: bool,
}

/// What a successful `extend` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension {
    pub id: ReservationId,
    /// The new deadline.
    pub expires_at_ms: u64,
    /// Extensions so far, this one included.
    pub extensions: u8,
    /// Extensions still allowed.
    pub extensions_left: u8,
}

/// One SKU as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuDocument {
    pub id: SkuId,
    pub name: Box<str>,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    /// Sum of restocks and adjustments: `available + held + sold` at rest.
    pub received: u64,
    pub version: u64,
    pub per_customer_limit: Option<u32>,
    /// Below this many available units the change feed reports
    /// `sku.low_stock`; `None`: no threshold.
    pub low_stock_threshold: Option<u32>,
    /// Units on hand kept back from sale (never counted in `available` or
    /// `received`).
    pub safety_stock: u64,
    /// A kit's components (units of each per kit); `None` for a SKU with
    /// stock of its own. A kit's `available` is the fewest whole kits its
    /// components' available units make; it holds and sells nothing itself
    /// (its reservations hold the components).
    pub components: Option<Vec<Line>>,
    /// Most units that may be owed at once: sold or held past zero, to be
    /// filled by the next restocks (0: nothing sells past zero).
    pub backorder_limit: u64,
    /// From this time on no new backorder is taken (`None`: no end).
    pub backorder_until_ms: Option<u64>,
    /// Units owed now: in neither `available`, `held` nor `sold` (they were
    /// never received).
    pub backordered: u64,
    /// A SKU kept at locations: each location's counts, in the order they
    /// were added; the SKU's own counts are their sums. `None` for a SKU
    /// with stock of its own.
    pub locations: Option<Vec<LocationDocument>>,
    /// When it may be reserved (`SaleWindow::ALWAYS`: no window).
    pub sale_window: SaleWindow,
    /// Its waiting room's settings; `None`: no waiting room.
    pub waiting_room: Option<RoomConfig>,
}

/// One location of a SKU kept at locations, as `SkuDocument` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationDocument {
    pub location: Box<str>,
    /// The location's own cell.
    pub cell: SkuId,
    pub priority: u32,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub received: u64,
    pub safety_stock: u64,
    /// The location's version (its puts' `expected_version`).
    pub version: u64,
}

impl SkuDocument {
    fn new(id: SkuId, slot: &SkuSlot, s: CellSnapshot) -> SkuDocument {
        SkuDocument {
            id,
            name: slot.name().into(),
            available: s.available,
            held: s.held,
            sold: s.sold,
            received: s.received,
            version: s.version,
            per_customer_limit: s.per_customer_limit,
            low_stock_threshold: s.low_stock_threshold,
            safety_stock: s.safety_stock,
            components: None,
            backorder_limit: s.backorder.limit,
            backorder_until_ms: s.backorder.until_ms,
            backordered: s.backordered,
            locations: None,
            sale_window: SaleWindow::ALWAYS,
            waiting_room: None,
        }
    }

    /// Units physically there and not yet sold: those for sale, those held
    /// for buyers and the safety stock. A sold unit has left (hotstock
    /// knows nothing of shipping; the shop's warehouse does).
    pub fn on_hand(&self) -> u64 {
        self.available + self.held + self.safety_stock
    }

    /// Invariant 2: `available + held + sold == received`. Exact only when no
    /// operation on this SKU is in flight. A kit holds nothing of its own
    /// (its `available` is its components'), so it has nothing to conserve.
    pub fn is_conserved(&self) -> bool {
        let own = u128::from(self.available) + u128::from(self.held) + u128::from(self.sold);
        match self.components {
            Some(_) => self.held == 0 && self.sold == 0 && self.received == 0,
            None => own == u128::from(self.received),
        }
    }
}

/// What one timer pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerReport {
    pub expired: usize,
    pub pruned_reservations: usize,
    pub purged_idempotency_keys: usize,
    /// Work was left for the next pass.
    pub more: bool,
}

type StoredOutcome = Result<Receipt, EngineError>;

/// The stock engine. Share it as `Arc<Engine>`; every method takes `&self`.
///
/// `S` is where changes are reported ([`InMemory`]: nowhere). The durable
/// layer plugs its journal in here; the engine never names it.
#[derive(Debug)]
pub struct Engine<S: ChangeSink = InMemory> {
    config: EngineConfig,
    catalogue: Catalogue,
    /// Kits' components, read lock-free by every kit order.
    kits: KitTable,
    /// The locations of each SKU kept at locations, read lock-free by
    /// every order of one.
    locations: SlotTable<Location>,
    holds: HoldTable,
    ledger: LimitLedger,
    idempotency: IdempotencyTable<StoredOutcome>,
    clock: Arc<dyn Clock>,
    sink: S,
    /// The next backorder ticket: the fill order of reservations owed
    /// units (`backorders.rs`).
    backorder_tickets: AtomicU64,
    /// Leases of units from a cluster's escrow (`leases.rs`); empty on a
    /// node that runs alone. Only lease steps take its lock.
    leases: parking_lot::Mutex<leases::LeaseBook>,
    /// When each SKU may be reserved (`sale_windows.rs`), read lock-free
    /// by every order once any SKU has a window.
    sale_windows: sale_windows::SkuSettings<SaleWindow>,
    /// Which SKUs have a waiting room (`waiting_rooms.rs`): its settings,
    /// read lock-free; the rooms themselves are the server's.
    waiting_rooms: sale_windows::SkuSettings<Option<RoomConfig>>,
}

impl Engine<InMemory> {
    pub fn new(config: EngineConfig) -> Result<Engine, ConfigError> {
        Engine::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Engine, ConfigError> {
        Engine::with_sink(config, clock, InMemory)
    }
}

impl<S: ChangeSink> Engine<S> {
    /// An engine that reports every change to `sink` (see `change.rs` for
    /// when). Callers that acknowledge durably ask the sink's owner when a
    /// change is recorded for good.
    pub fn with_sink(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        sink: S,
    ) -> Result<Engine<S>, ConfigError> {
        config.validate()?;
        Ok(Engine {
            catalogue: Catalogue::new(),
            kits: KitTable::new(),
            locations: SlotTable::new(),
            holds: HoldTable::new(config.max_reservations),
            ledger: LimitLedger::new(),
            idempotency: IdempotencyTable::new(
                config.max_idempotency_keys,
                config.idempotency_retention_ms,
            ),
            clock,
            config,
            sink,
            backorder_tickets: AtomicU64::new(1),
            leases: parking_lot::Mutex::default(),
            sale_windows: sale_windows::SkuSettings::default(),
            waiting_rooms: sale_windows::SkuSettings::default(),
        })
    }

    /// Where this engine reports its changes.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Refuses changes once the sink has failed: they could never be
    /// recorded, and acknowledging them would lie.
    #[inline]
    fn check_storage(&self) -> Result<(), EngineError> {
        match self.sink.failure() {
            None => Ok(()),
            Some(message) => Err(EngineError::StorageFailed { message }),
        }
    }

    /// Reports one change. A failure is kept by the sink and reaches the
    /// caller through its durability wait (and `check_storage` refuses
    /// every later change), so it is not reported twice here.
    #[inline]
    fn record(&self, hint: usize, change: Change<'_>) {
        self.sink.record(hint, &change);
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    // ---- catalogue -------------------------------------------------------

    /// Resolves a SKU name to its handle. Resolve once, then use the handle:
    /// the hot path then hashes nothing.
    /// A location's own cell is not a SKU: found through `location`.
    pub fn sku(&self, name: &str) -> Result<SkuId, EngineError> {
        let unknown = || EngineError::UnknownSku { name: name.into() };
        if name.contains(crate::core::catalogue::LOCATION_SEPARATOR) {
            return Err(unknown());
        }
        self.catalogue.find(name).ok_or_else(unknown)
    }

    /// A SKU's name, read without a lock (names are set once, at creation).
    /// `None` for an id this engine never issued.
    pub fn sku_name(&self, sku: SkuId) -> Option<&str> {
        self.catalogue.slot(sku).map(SkuSlot::name)
    }

    /// A SKU's available units read without its lock (see
    /// `StockCell::available_now`): for admission and monitoring, not for
    /// decisions that must be exact.
    pub fn available_now(&self, sku: SkuId) -> Result<u64, EngineError> {
        self.cell(sku).map(StockCell::available_now)
    }

    /// Holds `sku`'s cell lock until the guard drops (tests of paths that
    /// must never take it).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn lock_sku_for_test(&self, sku: SkuId) -> impl Drop + '_ {
        self.cell(sku)
            .expect("a SKU of this engine")
            .lock_for_test()
    }

    /// Number of SKUs.
    pub fn sku_count(&self) -> usize {
        self.catalogue.len()
    }

    /// Reads one SKU.
    pub fn sku_document(&self, sku: SkuId) -> Result<SkuDocument, EngineError> {
        let slot = self.slot(sku)?;
        Ok(self.document(sku, slot))
    }

    fn document(&self, sku: SkuId, slot: &SkuSlot) -> SkuDocument {
        let mut document = SkuDocument::new(sku, slot, slot.cell().snapshot());
        document.sale_window = self.sale_window(sku);
        document.waiting_room = self.waiting_room(sku);
        if let Some(components) = self.kit_of(slot.cell(), sku) {
            document.available = self.kit_available(components);
            document.components = Some(components.to_vec());
        }
        if slot.cell().is_located() {
            self.sum_locations(&mut document);
        }
        document
    }

    /// Fills a located SKU's document from its locations' cells (each
    /// read whole under its lock; the sums are exact at rest).
    fn sum_locations(&self, document: &mut SkuDocument) {
        let listed = self.locations.get(document.id).unwrap_or(&[]);
        let mut locations = Vec::with_capacity(listed.len());
        for location in listed {
            let Some(slot) = self.catalogue.slot(location.sku) else {
                continue;
            };
            let s = slot.cell().snapshot();
            let name = slot.name();
            let name = name.split_once(crate::core::catalogue::LOCATION_SEPARATOR);
            document.available += s.available;
            document.held += s.held;
            document.sold += s.sold;
            document.received += s.received;
            document.safety_stock += s.safety_stock;
            locations.push(LocationDocument {
                location: name.map_or("", |(_, location)| location).into(),
                cell: location.sku,
                priority: location.priority,
                available: s.available,
                held: s.held,
                sold: s.sold,
                received: s.received,
                safety_stock: s.safety_stock,
                version: s.version,
            });
        }
        document.locations = Some(locations);
    }

    /// Up to `limit` SKUs in creation order, after `after` (a cursor: pass
    /// the last id of the previous page).
    /// Locations' own cells are not listed (their SKU's document has them).
    pub fn skus_after(&self, after: Option<SkuId>, limit: usize) -> Vec<SkuDocument> {
        let separator = crate::core::catalogue::LOCATION_SEPARATOR;
        self.catalogue
            .iter_after(after)
            .filter(|(_, slot)| !slot.name().contains(separator))
            .take(limit)
            .map(|(id, slot)| self.document(id, slot))
            .collect()
    }

    // ---- reservations ----------------------------------------------------

    /// Reads a reservation (expiring it first if its deadline has passed).
    pub fn reservation(&self, id: ReservationId) -> Result<HoldDocument, EngineError> {
        let hint = stripe_hint();
        let now_ms = self.clock.now_ms();
        let make_room = || self.sink.make_room(hint);
        let mut document = self
            .holds
            .get(id, now_ms, make_room, |how, hold| {
                self.settle(how, hold, hint, now_ms)
            })
            .ok_or(EngineError::UnknownReservation { id })?;
        self.report_owed(&mut document);
        Ok(document)
    }

    /// Holds open now, and those of them whose deadline falls within
    /// `within_ms` from now (already due and not yet expired included).
    pub fn held_figures(&self, within_ms: u64) -> HeldFigures {
        let now_ms = self.clock.now_ms();
        self.holds.held_figures(now_ms.saturating_add(within_ms))
    }

    /// Calls `f` with every reservation record the engine still keeps.
    pub fn for_each_reservation(&self, mut f: impl FnMut(HoldDocument)) {
        self.holds.for_each(|mut document| {
            // Under the record's shard lock, then its SKUs' cell locks:
            // the engine's lock order.
            self.report_owed(&mut document);
            f(document)
        });
    }

    /// Units `customer` holds or bought of `sku` that count against its limit.
    pub fn customer_units(&self, sku: SkuId, customer: &str) -> u32 {
        self.ledger.used(sku, customer)
    }

    // ---- timers ----------------------------------------------------------

    /// Expires due holds, prunes ended records past their retention and
    /// forgets old idempotency keys. Bounded work per call; `TimerThread`
    /// calls it periodically.
    pub fn run_timers(&self) -> TimerReport {
        let now_ms = self.clock.now_ms();
        let hint = stripe_hint();
        let retention = Retention {
            ended_ms: self.config.ended_retention_ms,
            refund_window_ms: self.config.refund_window_ms,
        };
        let TimerWork {
            expired,
            pruned,
            more,
        } = self.holds.run_timers(
            now_ms,
            retention,
            || self.sink.make_room(hint),
            |how, hold| self.settle(how, hold, hint, now_ms),
        );
        let purged = self.idempotency.purge(now_ms);
        TimerReport {
            expired,
            pruned_reservations: pruned,
            purged_idempotency_keys: purged,
            more,
        }
    }

    // ---- internals -------------------------------------------------------

    fn slot(&self, sku: SkuId) -> Result<&SkuSlot, EngineError> {
        self.catalogue
            .slot(sku)
            .ok_or(EngineError::UnknownSkuId { sku })
    }

    #[inline]
    fn cell(&self, sku: SkuId) -> Result<&StockCell, EngineError> {
        self.slot(sku).map(SkuSlot::cell)
    }
}

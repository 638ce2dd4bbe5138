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

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex as StdMutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::catalogue::{validate_sku_name, Catalogue, SkuId, SkuSlot};
use crate::cell::{
    CellSnapshot, Insufficient, OperatorChange, SetError, SoldOut, StaleVersion, StockCell,
    StripePolicy, TakeInto, TooMuchStock,
};
use crate::clock::{Clock, SystemClock};
use crate::error::EngineError;
use crate::hint::stripe_hint;
use crate::holds::{
    HoldDocument, HoldStatus, HoldTable, HoldView, Line, NewHold, ReservationId, Retention, Settle,
    TimerWork, Transition, TransitionError,
};
use crate::idempotency::{IdempotencyTable, Origin, Reused};
use crate::journal::event::{encode_hold, Event, KeyEvent, LimitChange};
use crate::journal::{DurableFuture, Journal, JournalError, Ticket};
use crate::ledger::{LimitLedger, OverLimit};
use crate::limits::{
    MAX_CUSTOMER_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_LINES_PER_CART, MAX_LINE_QUANTITY,
    MAX_TTL_MS,
};
use crate::settled::Settled;

/// Engine settings. `EngineConfig::default()` suits a shop; every field is a
/// limit or a period, checked by `Engine::new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub stripe_policy: StripePolicy,
    /// Hold time-to-live when a request names none.
    pub default_ttl_ms: u64,
    /// Longest time-to-live a request may ask for (at most `MAX_TTL_MS`).
    pub max_ttl_ms: u64,
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
        }
    }

    /// Invariant 2: `available + held + sold == received`. Exact only when no
    /// operation on this SKU is in flight.
    pub fn is_conserved(&self) -> bool {
        u128::from(self.available) + u128::from(self.held) + u128::from(self.sold)
            == u128::from(self.received)
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
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    catalogue: Catalogue,
    holds: HoldTable,
    ledger: LimitLedger,
    idempotency: IdempotencyTable<StoredOutcome>,
    clock: Arc<dyn Clock>,
    /// Where every change is recorded; `None` for a purely in-memory engine.
    journal: Option<Arc<Journal>>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Engine, ConfigError> {
        Engine::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Engine, ConfigError> {
        Engine::with_journal(config, clock, None)
    }

    /// An engine that records every change in `journal`. Callers that
    /// acknowledge durable operations wait on `durability_ticket()` after
    /// the operation (see `wait_durable` and `durable`).
    pub fn with_journal(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        journal: Option<Arc<Journal>>,
    ) -> Result<Engine, ConfigError> {
        config.validate()?;
        Ok(Engine {
            catalogue: Catalogue::new(),
            holds: HoldTable::new(config.max_reservations),
            ledger: LimitLedger::new(),
            idempotency: IdempotencyTable::new(
                config.max_idempotency_keys,
                config.idempotency_retention_ms,
            ),
            clock,
            config,
            journal,
        })
    }

    // ---- durability ------------------------------------------------------

    /// A ticket covering every change this engine made before the call. Take
    /// it after an operation; once it is durable, so is the operation.
    pub fn durability_ticket(&self) -> Ticket {
        self.journal.as_ref().map_or(Ticket::NONE, |j| j.ticket())
    }

    /// Blocks until `ticket` is on disk (at once without a journal).
    pub fn wait_durable(&self, ticket: Ticket) -> Result<(), JournalError> {
        match &self.journal {
            Some(journal) => journal.wait_durable(ticket),
            None => Ok(()),
        }
    }

    /// Resolves when `ticket` is on disk; `None` without a journal.
    pub fn durable(&self, ticket: Ticket) -> Option<DurableFuture> {
        self.journal.as_ref().map(|j| j.durable(ticket))
    }

    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// Refuses changes once the journal has failed: they could never be made
    /// durable, and acknowledging them would lie.
    #[inline]
    fn check_storage(&self) -> Result<(), EngineError> {
        match self.journal.as_ref().and_then(|j| j.failure()) {
            None => Ok(()),
            Some(failure) => Err(EngineError::StorageFailed {
                message: failure.to_string().into(),
            }),
        }
    }

    /// Appends one event. A failure is sticky in the journal and reaches the
    /// caller through its durability wait (and `check_storage` refuses every
    /// later change), so it is not reported twice here.
    #[inline]
    fn record(&self, hint: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(journal) = &self.journal {
            let _ = journal.append(hint, write);
        }
    }

    fn record_operator(&self, sku: SkuId, change: OperatorChange, limit: LimitChange) {
        let event = Event::Operator {
            sku,
            delta: change.delta,
            version: change.version,
            limit,
        };
        self.record(stripe_hint(), |out| event.encode(out));
    }

    /// Rebuilds this (fresh, unshared) engine's state from recovered
    /// counts and records. Does not journal anything: the state came from
    /// the journal.
    pub fn restore(&self, settled: &Settled) -> Result<(), EngineError> {
        assert!(
            self.catalogue.is_empty(),
            "restore into a fresh engine only"
        );
        for (index, sku) in settled.skus.iter().enumerate() {
            let Some(sku) = sku else { continue };
            if sku.name.is_empty() {
                // Counts for a SKU whose creation event was never durable:
                // impossible by the journal's causal-prefix property.
                return Err(EngineError::StorageFailed {
                    message: format!("journal names SKU #{index} but never recorded its creation")
                        .into(),
                });
            }
            let id = SkuId::from_index(index as u32);
            let slot = self.catalogue.restore(id, &sku.name)?;
            let snapshot = CellSnapshot {
                available: u64::try_from(sku.available())
                    .map_err(|_| negative(index, "available"))?,
                held: u64::try_from(sku.held).map_err(|_| negative(index, "held"))?,
                sold: u64::try_from(sku.sold).map_err(|_| negative(index, "sold"))?,
                received: u64::try_from(sku.received).map_err(|_| negative(index, "received"))?,
                version: sku.version,
                per_customer_limit: sku.limit,
                width: 1,
            };
            slot.cell().restore(&snapshot);
        }
        for (&id, hold) in &settled.holds {
            let id = ReservationId::from_u64(id);
            let record = NewHold {
                lines: &hold.lines,
                customer: hold.customer.as_deref().map(Arc::from),
                limit_mask: hold.limit_mask,
                deadline_ms: hold.deadline_ms,
                created_ms: hold.at_ms,
                status: HoldStatus::Held,
            };
            self.holds.restore(id, record, hold.status, hold.at_ms);
        }
        // Oldest first: the table forgets keys in insertion order.
        let mut keys: Vec<&KeyEvent> = settled.keys.values().collect();
        keys.sort_by_key(|key| key.created_ms);
        for key in keys {
            let receipt = Receipt {
                id: key.reservation,
                status: key.status,
                expires_at_ms: key.expires_at_ms,
                replayed: false,
            };
            self.idempotency
                .restore(&key.key, key.fingerprint, key.created_ms, Ok(receipt));
        }
        for ((sku, customer), &units) in &settled.customer_units {
            let units =
                u32::try_from(units).map_err(|_| negative(*sku as usize, "customer units"))?;
            self.ledger
                .restore(SkuId::from_index(*sku), customer, units);
        }
        Ok(())
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
    pub fn sku(&self, name: &str) -> Result<SkuId, EngineError> {
        self.catalogue
            .find(name)
            .ok_or_else(|| EngineError::UnknownSku { name: name.into() })
    }

    /// Number of SKUs.
    pub fn sku_count(&self) -> usize {
        self.catalogue.len()
    }

    /// Reads one SKU.
    pub fn sku_document(&self, sku: SkuId) -> Result<SkuDocument, EngineError> {
        let slot = self.slot(sku)?;
        Ok(SkuDocument::new(sku, slot, slot.cell().snapshot()))
    }

    /// Up to `limit` SKUs in creation order, after `after` (a cursor: pass
    /// the last id of the previous page).
    pub fn skus_after(&self, after: Option<SkuId>, limit: usize) -> Vec<SkuDocument> {
        self.catalogue
            .iter_after(after)
            .take(limit)
            .map(|(id, slot)| SkuDocument::new(id, slot, slot.cell().snapshot()))
            .collect()
    }

    // ---- operator changes ------------------------------------------------

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
                let on_create = |sku: SkuId, name: &str| {
                    let event = Event::SkuCreated {
                        sku,
                        name: name.into(),
                    };
                    self.record(stripe_hint(), |out| event.encode(out));
                };
                self.catalogue.find_or_create_with(name, on_create)?.0
            }
        };
        let cell = self.cell(sku)?;
        let policy = &self.config.stripe_policy;
        match cell.set_available(available, limit, expected_version, stripe_hint(), policy) {
            Ok(change) => {
                self.record_operator(
                    sku,
                    change,
                    limit.map_or(LimitChange::Unchanged, LimitChange::Set),
                );
                Ok((sku, change))
            }
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
        let change = self
            .cell(sku)?
            .restock(units, stripe_hint())
            .map_err(|TooMuchStock { received }| EngineError::StockLimit { sku, received })?;
        self.record_operator(sku, change, LimitChange::Unchanged);
        Ok(change)
    }

    /// Adds (`delta > 0`) or removes (`delta < 0`) available units. Removing
    /// more than is available is refused with `InsufficientStock`.
    pub fn adjust(&self, sku: SkuId, delta: i64) -> Result<OperatorChange, EngineError> {
        if delta >= 0 {
            return self.restock(sku, delta as u64);
        }
        self.check_storage()?;
        let units = delta.unsigned_abs();
        let change = self
            .cell(sku)?
            .withdraw(units, stripe_hint(), &self.config.stripe_policy)
            .map_err(
                |Insufficient { available }| EngineError::InsufficientStock {
                    sku,
                    available,
                    requested: units,
                },
            )?;
        self.record_operator(sku, change, LimitChange::Unchanged);
        Ok(change)
    }

    /// Sets (`Some`) or removes (`None`) the per-customer limit. Returns the
    /// new version. Units customers already have are not taken back.
    pub fn set_limit(&self, sku: SkuId, limit: Option<u32>) -> Result<u64, EngineError> {
        if limit == Some(0) {
            return Err(EngineError::InvalidLimit);
        }
        let cell = self.cell(sku)?;
        self.check_storage()?;
        let version = cell.set_limit(limit);
        let change = OperatorChange { delta: 0, version };
        self.record_operator(sku, change, LimitChange::Set(limit));
        Ok(version)
    }

    /// Spreads a SKU over stripes now, before contention shows: call it when
    /// a sale is about to open.
    pub fn prepare_hot(&self, sku: SkuId) -> Result<(), EngineError> {
        self.cell(sku)?
            .widen(stripe_hint(), &self.config.stripe_policy);
        Ok(())
    }

    // ---- buying ----------------------------------------------------------

    /// Reserves (or, with `confirm`, buys) every line of `order`, or none.
    pub fn reserve(&self, order: &Order<'_>) -> Result<Receipt, EngineError> {
        let ttl_ms = self.validate(order)?;
        self.check_storage()?;
        let Some(key) = order.idempotency_key else {
            return self.reserve_once(order, ttl_ms);
        };
        let fingerprint = fingerprint(order, ttl_ms);
        let now_ms = self.clock.now_ms();
        let ran = self.idempotency.run(key, fingerprint, now_ms, || {
            let outcome = self.reserve_once(order, ttl_ms);
            // Capacity refusals are about the server, not the request: a
            // retry after capacity frees up must be allowed to run.
            let keep = !matches!(outcome, Err(EngineError::CapacityExceeded { .. }));
            if let Ok(receipt) = &outcome {
                // Journaled after the reservation's own event, under the
                // key's lock: a retry after a restart gets this receipt.
                let event = Event::Idempotency(KeyEvent {
                    key: key.into(),
                    fingerprint,
                    created_ms: now_ms,
                    reservation: receipt.id,
                    status: receipt.status,
                    expires_at_ms: receipt.expires_at_ms,
                });
                self.record(stripe_hint(), |out| event.encode(out));
            }
            (outcome, keep)
        });
        match ran {
            Ok((Ok(receipt), Origin::Replayed)) => Ok(Receipt {
                replayed: true,
                ..receipt
            }),
            Ok((outcome, _)) => outcome,
            Err(Reused) => Err(EngineError::IdempotencyKeyReused),
        }
    }

    /// Buys `quantity` units of one SKU now: a one-line, confirmed order.
    pub fn purchase(
        &self,
        sku: SkuId,
        quantity: u32,
        customer: Option<&str>,
    ) -> Result<Receipt, EngineError> {
        let lines = [Line { sku, quantity }];
        self.reserve(&Order {
            lines: &lines,
            customer,
            confirm: true,
            ..Order::default()
        })
    }

    /// Counts `quantity` units as sold without keeping a reservation record:
    /// the article's "pre-deduct", for callers that keep their own order
    /// ledger. Nothing to confirm, cancel or refund by id afterwards (an
    /// operator `adjust` puts units back). Refused on SKUs with a
    /// per-customer limit, which need a named customer and a record.
    #[inline]
    pub fn sell(&self, sku: SkuId, quantity: u32) -> Result<(), EngineError> {
        if quantity == 0 || quantity > MAX_LINE_QUANTITY {
            return Err(EngineError::InvalidQuantity {
                quantity: u64::from(quantity),
            });
        }
        let cell = self.cell(sku)?;
        if cell.per_customer_limit().is_some() {
            return Err(EngineError::CustomerRequired { sku });
        }
        self.check_storage()?;
        let units = u64::from(quantity);
        let hint = stripe_hint();
        cell.take(units, TakeInto::Sold, hint, &self.config.stripe_policy)
            .map_err(|SoldOut { available }| EngineError::SoldOut {
                sku,
                available,
                requested: units,
            })?;
        self.record(hint, |out| {
            Event::Sell {
                sku,
                units: quantity,
            }
            .encode(out)
        });
        Ok(())
    }

    /// held → confirmed. Repeating it answers `Ok(Confirmed)`.
    pub fn confirm(&self, id: ReservationId) -> Result<HoldStatus, EngineError> {
        self.transition(id, Transition::Confirm)
    }

    /// held → cancelled, units back to stock. Repeating it answers
    /// `Ok(Cancelled)`.
    pub fn cancel(&self, id: ReservationId) -> Result<HoldStatus, EngineError> {
        self.transition(id, Transition::Cancel)
    }

    /// confirmed → refunded, units back to stock (the article's order
    /// cancellation). Repeating it answers `Ok(Refunded)`.
    pub fn refund(&self, id: ReservationId) -> Result<HoldStatus, EngineError> {
        self.transition(id, Transition::Refund)
    }

    /// Reads a reservation (expiring it first if its deadline has passed).
    pub fn reservation(&self, id: ReservationId) -> Result<HoldDocument, EngineError> {
        let hint = stripe_hint();
        let now_ms = self.clock.now_ms();
        self.holds
            .get(id, now_ms, |how, hold| self.settle(how, hold, hint, now_ms))
            .ok_or(EngineError::UnknownReservation { id })
    }

    /// Calls `f` with every reservation record the engine still keeps.
    pub fn for_each_reservation(&self, f: impl FnMut(HoldDocument)) {
        self.holds.for_each(f);
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
        } = self.holds.run_timers(now_ms, retention, |how, hold| {
            self.settle(how, hold, hint, now_ms)
        });
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

    /// Checks an order against every limit before anything is touched.
    /// Returns the time-to-live to use.
    fn validate(&self, order: &Order<'_>) -> Result<u64, EngineError> {
        let lines = order.lines;
        if lines.is_empty() {
            return Err(EngineError::EmptyCart);
        }
        if lines.len() > MAX_LINES_PER_CART {
            return Err(EngineError::TooManyLines { lines: lines.len() });
        }
        for (index, line) in lines.iter().enumerate() {
            if line.quantity == 0 || line.quantity > MAX_LINE_QUANTITY {
                return Err(EngineError::InvalidQuantity {
                    quantity: u64::from(line.quantity),
                });
            }
            self.slot(line.sku)?;
            if lines[..index].iter().any(|earlier| earlier.sku == line.sku) {
                return Err(EngineError::DuplicateSku { sku: line.sku });
            }
        }
        if let Some(customer) = order.customer {
            validate_customer(customer)?;
        }
        if let Some(key) = order.idempotency_key {
            validate_idempotency_key(key)?;
        }
        match order.ttl_ms {
            None => Ok(self.config.default_ttl_ms),
            Some(ttl_ms) if (1..=self.config.max_ttl_ms).contains(&ttl_ms) => Ok(ttl_ms),
            Some(ttl_ms) => Err(EngineError::InvalidTtl {
                ttl_ms,
                max_ms: self.config.max_ttl_ms,
            }),
        }
    }

    /// One attempt at an order, all lines or none.
    fn reserve_once(&self, order: &Order<'_>, ttl_ms: u64) -> Result<Receipt, EngineError> {
        let hint = stripe_hint();
        let into = if order.confirm {
            TakeInto::Sold
        } else {
            TakeInto::Held
        };
        let customer: Option<Arc<str>> = order.customer.map(Arc::from);
        let policy = &self.config.stripe_policy;
        let mut limit_mask = 0u32;
        for (index, line) in order.lines.iter().enumerate() {
            let taken = &order.lines[..index];
            let cell = self.cell(line.sku)?;
            if let Some(limit) = cell.per_customer_limit() {
                let Some(customer) = customer.as_ref() else {
                    self.undo(taken, limit_mask, into, customer.as_ref(), hint);
                    return Err(EngineError::CustomerRequired { sku: line.sku });
                };
                if let Err(OverLimit { already }) =
                    self.ledger
                        .acquire(line.sku, customer, line.quantity, limit)
                {
                    self.undo(taken, limit_mask, into, Some(customer), hint);
                    return Err(EngineError::LimitExceeded {
                        sku: line.sku,
                        limit,
                        already,
                        requested: line.quantity,
                    });
                }
                limit_mask |= 1 << index;
            }
            let units = u64::from(line.quantity);
            if let Err(SoldOut { available }) = cell.take(units, into, hint, policy) {
                // Undo this line's limit too: include it in the undo range
                // as a line with no units taken.
                if limit_mask & (1 << index) != 0 {
                    if let Some(customer) = customer.as_ref() {
                        self.ledger.release(line.sku, customer, line.quantity);
                    }
                    limit_mask &= !(1 << index);
                }
                self.undo(taken, limit_mask, into, customer.as_ref(), hint);
                return Err(EngineError::SoldOut {
                    sku: line.sku,
                    available,
                    requested: units,
                });
            }
        }
        let now_ms = self.clock.now_ms();
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let status = if order.confirm {
            HoldStatus::Confirmed
        } else {
            HoldStatus::Held
        };
        let hold = NewHold {
            lines: order.lines,
            customer: customer.clone(),
            limit_mask,
            deadline_ms: expires_at_ms,
            created_ms: now_ms,
            status,
        };
        match self.holds.insert(hint, hold) {
            Some(id) => {
                self.record(hint, |out| {
                    let customer = order.customer;
                    encode_hold(
                        out,
                        id,
                        None,
                        status,
                        now_ms,
                        expires_at_ms,
                        limit_mask,
                        customer,
                        order.lines,
                    );
                });
                Ok(Receipt {
                    id,
                    status,
                    expires_at_ms,
                    replayed: false,
                })
            }
            None => {
                self.undo(order.lines, limit_mask, into, customer.as_ref(), hint);
                Err(EngineError::CapacityExceeded {
                    what: "reservation records",
                    limit: self.holds.capacity() as u64,
                })
            }
        }
    }

    /// Gives back the units of `lines` taken into `into`, and their limit
    /// counts per `limit_mask`.
    fn undo(
        &self,
        lines: &[Line],
        limit_mask: u32,
        into: TakeInto,
        customer: Option<&Arc<str>>,
        hint: usize,
    ) {
        for (index, line) in lines.iter().enumerate() {
            let Ok(cell) = self.cell(line.sku) else {
                debug_assert!(false, "a taken line names a live SKU");
                continue;
            };
            let units = u64::from(line.quantity);
            match into {
                TakeInto::Held => cell.release_held(units, hint),
                TakeInto::Sold => cell.refund_sold(units, hint),
            }
            if limit_mask & (1 << index) != 0 {
                if let Some(customer) = customer {
                    self.ledger.release(line.sku, customer, line.quantity);
                }
            }
        }
    }

    fn transition(
        &self,
        id: ReservationId,
        transition: Transition,
    ) -> Result<HoldStatus, EngineError> {
        self.check_storage()?;
        let hint = stripe_hint();
        let now_ms = self.clock.now_ms();
        self.holds
            .transition(id, transition, now_ms, |how, hold| {
                self.settle(how, hold, hint, now_ms)
            })
            .map_err(|error| match error {
                TransitionError::Unknown => EngineError::UnknownReservation { id },
                TransitionError::Invalid { status } => EngineError::InvalidTransition {
                    id,
                    status,
                    requested: transition.verb(),
                },
            })
    }

    /// Moves a record's units as its status changes. Called by the hold table
    /// under the record's shard lock, exactly once per change.
    fn settle(&self, how: Settle, hold: HoldView<'_>, hint: usize, now_ms: u64) {
        self.record(hint, |out| {
            let customer = hold.customer.map(|c| &**c);
            let from = match how {
                Settle::Confirm | Settle::Release => HoldStatus::Held,
                Settle::Refund => HoldStatus::Confirmed,
            };
            encode_hold(
                out,
                hold.id,
                Some(from),
                hold.status,
                now_ms,
                hold.deadline_ms,
                hold.limit_mask,
                customer,
                hold.lines,
            );
        });
        for (index, line) in hold.lines.iter().enumerate() {
            let Ok(cell) = self.cell(line.sku) else {
                debug_assert!(
                    false,
                    "reservation {} names a SKU this engine never issued",
                    hold.id
                );
                continue;
            };
            let units = u64::from(line.quantity);
            match how {
                Settle::Confirm => cell.confirm_held(units, hint),
                Settle::Release => cell.release_held(units, hint),
                Settle::Refund => cell.refund_sold(units, hint),
            }
            let gives_back = matches!(how, Settle::Release | Settle::Refund);
            if gives_back && hold.limit_mask & (1 << index) != 0 {
                if let Some(customer) = hold.customer {
                    self.ledger.release(line.sku, customer, line.quantity);
                }
            }
        }
    }
}

fn negative(sku: usize, what: &str) -> EngineError {
    EngineError::StorageFailed {
        message: format!(
            "recovered {what} of SKU #{sku} is out of range: the store and journal disagree"
        )
        .into(),
    }
}

fn validate_customer(customer: &str) -> Result<(), EngineError> {
    if customer.is_empty() {
        return Err(EngineError::InvalidCustomer {
            reason: "it is empty",
        });
    }
    if customer.len() > MAX_CUSTOMER_BYTES {
        return Err(EngineError::InvalidCustomer {
            reason: "it is too long",
        });
    }
    if customer.chars().any(char::is_control) {
        return Err(EngineError::InvalidCustomer {
            reason: "it contains a control character",
        });
    }
    Ok(())
}

fn validate_idempotency_key(key: &str) -> Result<(), EngineError> {
    if key.is_empty() {
        return Err(EngineError::InvalidIdempotencyKey {
            reason: "it is empty",
        });
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(EngineError::InvalidIdempotencyKey {
            reason: "it is too long",
        });
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EngineError::InvalidIdempotencyKey {
            reason: "it contains a character that is not printable ASCII",
        });
    }
    Ok(())
}

/// A stable digest of what an order asks for (not of its key), so a key
/// reused for a different request is recognised.
fn fingerprint(order: &Order<'_>, ttl_ms: u64) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(0x686f_7473_746f_636b).build_hasher();
    for line in order.lines {
        line.sku.hash(&mut hasher);
        line.quantity.hash(&mut hasher);
    }
    order.customer.hash(&mut hasher);
    order.confirm.hash(&mut hasher);
    ttl_ms.hash(&mut hasher);
    hasher.finish()
}

/// A background thread that calls `Engine::run_timers` every `period` (and
/// at once again while work is left). Stops and joins on drop.
#[derive(Debug)]
pub struct TimerThread {
    stop: Arc<(StdMutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl TimerThread {
    pub fn spawn(engine: Arc<Engine>, period: Duration) -> std::io::Result<TimerThread> {
        let stop = Arc::new((StdMutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("hotstock-timers".into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                let mut stopped = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while !*stopped {
                    drop(stopped);
                    let report = engine.run_timers();
                    stopped = lock
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if report.more || *stopped {
                        continue;
                    }
                    stopped = wake
                        .wait_timeout(stopped, period)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })?;
        Ok(TimerThread {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for TimerThread {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(handle) = self.handle.take() {
            // A panic in the timer thread was already reported by the panic
            // hook; there is nothing more to do with it while dropping.
            let _ = handle.join();
        }
    }
}

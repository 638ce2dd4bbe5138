//! `Settled`: the fold of the durable journal into counts and records.
//!
//! The writer folds each batch into a `Settled` after it is on disk (the
//! shadow table of the design notes); the checkpointer copies what changed
//! to the store; recovery loads the store's `Settled` and folds the journal
//! after its position. Never the live atomics: they run ahead of the journal
//! and are not a consistent cut.
//!
//! The fold is order-insensitive within a batch (see `journal::event`):
//! deltas add, versions take the maximum, and each hold event names the
//! transition it made (`from -> to`), so per-SKU and per-customer counts
//! move by the difference of the two statuses' effects, a sum that commutes
//! and needs no lookup:
//!
//! | status | held | sold | customer limit |
//! |---|---|---|---|
//! | held | +q | | +q |
//! | confirmed | | +(c - r) | +(c - r) |
//! | cancelled, expired, refunded | | | |
//!
//! where a line of `q` units had `c` confirmed (sold) and `r` refunded: `q`
//! and 0 for whole lines; a confirm or refund in part carries both, before
//! and after, so the difference still needs no lookup.
//!
//! `available` is never stored in the fold: it is `received - held - sold`.
//!
//! Reservation rows are kept only from one checkpoint to the next: a
//! checkpoint moves them to the store, which also prunes old rows by time.
//! So the writer never holds a second in-memory copy of every reservation
//! (the engine has the first).

use std::collections::{HashMap, HashSet};

/// The fold runs once per journal event on the writer thread: a fast
/// non-cryptographic hash (keys are ids the engine made, not attacker input).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

use crate::core::cell::{BackorderRule, Fill};
use crate::core::engine::SaleWindow;
use crate::core::holds::{HoldStatus, Line, LineAmounts, LineChange};
use crate::core::types::LineOwed;
use crate::core::waiting_room::RoomConfig;
use crate::durable::event::{
    decode_hold_ref, DecodeError, Event, HoldEvent, HoldRef, KeyEvent, LeaseStep, LimitChange,
};
use crate::durable::feed::FeedEvent;
use crate::durable::journal::segment::Position;

/// One SKU's settled counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettledSku {
    /// Empty until the creation event is folded.
    pub name: Box<str>,
    pub received: i64,
    pub held: i64,
    pub sold: i64,
    pub version: u64,
    pub limit: Option<u32>,
    /// Version of the operator change that set `limit`.
    pub limit_version: u64,
    pub low_stock: Option<u32>,
    /// Version of the change that set `low_stock`.
    pub low_stock_version: u64,
    /// Units on hand kept back from sale (not in `received`).
    pub safety_stock: u64,
    /// Version of the operator change that set `safety_stock`.
    pub safety_stock_version: u64,
    /// A kit's components (`None`: a SKU with stock of its own).
    pub kit: Option<Vec<Line>>,
    /// Version of the definition that set `kit`.
    pub kit_version: u64,
    /// Units sold or held past zero and not yet received: in neither
    /// `held` nor `sold`.
    pub backordered: i64,
    pub backorder: BackorderRule,
    /// Version of the change that set `backorder`.
    pub backorder_version: u64,
    /// The SKU keeps its stock at locations (set at its creation).
    pub located: bool,
    /// A location's allocation priority (`None`: not a location).
    pub priority: Option<u32>,
    /// Version of the change that set `priority`.
    pub priority_version: u64,
    /// When it may be reserved (`SaleWindow::ALWAYS`: no window).
    pub sale_window: SaleWindow,
    /// Version of the change that set `sale_window`.
    pub sale_window_version: u64,
    /// Its waiting room's settings (`None`: no room).
    pub waiting_room: Option<RoomConfig>,
    /// Version of the change that set `waiting_room`.
    pub waiting_room_version: u64,
}

impl SettledSku {
    pub fn available(&self) -> i64 {
        self.received - self.held - self.sold
    }
}

/// One reservation record as of its latest folded status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledHold {
    pub status: HoldStatus,
    /// When it reached `status`.
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub limit_mask: u32,
    pub customer: Option<Box<str>>,
    pub lines: Vec<Line>,
    /// Times its deadline was extended.
    pub extensions: u8,
    /// Per line, sold and refunded units of a record confirmed or refunded
    /// in part; `None`: what its status implies.
    pub amounts: Option<Vec<LineAmounts>>,
}

impl SettledHold {
    /// Whether this row comes after `other`, a row of the same hold: the
    /// later status, or of one status the later deadline (an extension
    /// only moves it later). The journal's causal prefix means two rows of
    /// a hold are always so ordered.
    pub fn supersedes(&self, other: &SettledHold) -> bool {
        self.order_key() > other.order_key()
    }

    fn order_key(&self) -> (u8, u64, u64) {
        let refunded = self.amounts.iter().flatten().map(|a| u64::from(a.refunded));
        order_key(self.status, self.deadline_ms, refunded.sum())
    }
}

/// Where a hold event lies on its hold's path (see `SettledHold::supersedes`):
/// by status, then deadline (extensions move it later), then units refunded
/// (refunds of part only add).
fn order_key(status: HoldStatus, deadline_ms: u64, refunded: u64) -> (u8, u64, u64) {
    (rank(status), deadline_ms, refunded)
}

/// The units one reservation is owed of one SKU, as of its latest folded
/// event (`owed == 0`: the row goes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettledBackorder {
    pub ticket: u64,
    pub owed: u32,
    /// The reservation is confirmed (its filled units are sold).
    pub sold: bool,
    /// Where the event lies on the entry's path: `rank` of the status, and
    /// owed units only shrink (see `supersedes`).
    pub rank: u8,
}

impl SettledBackorder {
    /// Whether this row comes after `other`, a row of the same entry: a
    /// status never goes back and owed units never grow, so the pair
    /// (status rank, units no longer owed) only grows.
    pub fn supersedes(&self, other: &SettledBackorder) -> bool {
        (self.rank, u32::MAX - self.owed) > (other.rank, u32::MAX - other.owed)
    }
}

/// One lease of this node as of its latest folded step (a closed lease's
/// row goes from the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettledLease {
    pub sku: u32,
    pub granted: u64,
    pub step: LeaseStep,
}

/// Everything recovery needs, as of `position`.
#[derive(Clone, Debug, Default)]
pub struct Settled {
    /// Indexed by SKU id; `None` for ids never seen (a creation lost in a
    /// crash leaves a gap that nothing durable refers to).
    pub skus: Vec<Option<SettledSku>>,
    /// Reservation rows: after `Store::load`, every stored row; in the
    /// writer's shadow, only rows changed since the last checkpoint.
    pub holds: FastMap<u64, SettledHold>,
    /// Units per (SKU id, customer) that count against a limit.
    pub customer_units: FastMap<(u32, Box<str>), i64>,
    /// Units owed per (SKU id, reservation id): after `Store::load`, every
    /// stored one; in the writer's shadow, only those changed since the
    /// last checkpoint.
    pub backorders: FastMap<(u32, u64), SettledBackorder>,
    /// Remembered idempotent outcomes: after `Store::load`, every stored
    /// one; in the writer's shadow, only those since the last checkpoint.
    pub keys: FastMap<Box<str>, KeyEvent>,
    /// This node's leases from a cluster's escrow, by id: after
    /// `Store::load`, every stored one; in the writer's shadow, only those
    /// changed since the last checkpoint.
    pub leases: FastMap<Box<str>, SettledLease>,
    /// The journal position just past the last folded batch.
    pub position: Position,
    /// The change feed's next position as of the store's checkpoint (set by
    /// `Store::load`; the writer's shadow does not track it, the feed does).
    pub feed_next_position: u64,
    /// SKUs changed since the last checkpoint, and a flag per SKU id so each
    /// is listed once (a flag test is cheaper than a set insert per event).
    dirty_skus: Vec<u32>,
    sku_dirty: Vec<bool>,
    /// Holds changed since the last checkpoint (may repeat; deduplicated
    /// when the checkpoint is taken). A list, not a set: one push per event
    /// is cheaper than a hash insert on the writer's path.
    dirty_holds: Vec<u64>,
    dirty_customers: FastSet<(u32, Box<str>)>,
    dirty_keys: FastSet<Box<str>>,
    dirty_backorders: FastSet<(u32, u64)>,
    dirty_leases: FastSet<Box<str>>,
    /// Reservation rows folded by the writer's fast path since the last
    /// checkpoint, in arrival order (deduplicated when taken).
    row_log: RowLog,
    /// An emptied row log with its capacity, swapped in when a checkpoint
    /// takes `row_log` (see `recycle`).
    spare_row_log: RowLog,
    /// Set while the writer folds a batch and hands it to the feed, cleared
    /// once both are done. Left set only by a panic in between (a bug):
    /// the shadow is then part of a batch ahead of itself or of the feed,
    /// and no checkpoint may be taken from it (`checkpoint_if_whole`).
    mid_batch: bool,
}

fn rank(status: HoldStatus) -> u8 {
    match status {
        HoldStatus::Held => 1,
        HoldStatus::Confirmed | HoldStatus::Cancelled | HoldStatus::Expired => 2,
        HoldStatus::Refunded => 3,
    }
}

/// (held, sold, limit, backordered) units a line of `quantity` keeps in
/// `status` with `owed` of them owed: as `effect`, but owed units are
/// backordered rather than held or sold.
pub(crate) fn effect_owed(
    status: Option<HoldStatus>,
    quantity: u32,
    confirmed: u32,
    refunded: u32,
    owed: u32,
) -> (i64, i64, i64, i64) {
    let (held, sold, limit) = effect(status, quantity, confirmed, refunded);
    let owed = i64::from(owed);
    match status {
        Some(HoldStatus::Held) => (held - owed, sold, limit, owed),
        Some(HoldStatus::Confirmed) => (held, sold - owed, limit, owed),
        _ => (held, sold, limit, 0),
    }
}

/// (held, sold, limit) units a line of `quantity` keeps in `status`, with
/// `confirmed` of them sold and `refunded` of those back.
pub(crate) fn effect(
    status: Option<HoldStatus>,
    quantity: u32,
    confirmed: u32,
    refunded: u32,
) -> (i64, i64, i64) {
    let kept = i64::from(confirmed) - i64::from(refunded);
    match status {
        Some(HoldStatus::Held) => (i64::from(quantity), 0, i64::from(quantity)),
        Some(HoldStatus::Confirmed) => (0, kept, kept),
        _ => (0, 0, 0),
    }
}

impl Settled {
    /// Folds one event (taken by value: its lines and customer move into
    /// the reservation row rather than being copied).
    // Long by design: one arm per event kind, each its fold.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::SkuCreated { sku, name } => {
                let entry = self.sku_mut(sku.index());
                entry.name = name;
            }
            Event::Operator {
                sku,
                delta,
                version,
                limit,
                safety_stock,
            } => {
                let entry = self.sku_mut(sku.index());
                entry.received += delta;
                entry.version = entry.version.max(version);
                if let LimitChange::Set(limit) = limit {
                    if version >= entry.limit_version {
                        entry.limit = limit;
                        entry.limit_version = version;
                    }
                }
                // An absolute value, set under the SKU's lock: the change
                // with the higher version wins, whatever the fold's order.
                if let Some(units) = safety_stock {
                    if version >= entry.safety_stock_version {
                        entry.safety_stock = units;
                        entry.safety_stock_version = version;
                    }
                }
            }
            Event::Sell { sku, units } => self.sku_mut(sku.index()).sold += i64::from(units),
            Event::KitDefined {
                kit,
                version,
                components,
            } => {
                let entry = self.sku_mut(kit.index());
                entry.version = entry.version.max(version);
                if version >= entry.kit_version {
                    entry.kit = Some(components);
                    entry.kit_version = version;
                }
            }
            Event::LowStock {
                sku,
                version,
                threshold,
            } => {
                let entry = self.sku_mut(sku.index());
                entry.version = entry.version.max(version);
                if version >= entry.low_stock_version {
                    entry.low_stock = threshold;
                    entry.low_stock_version = version;
                }
            }
            Event::Backorder { sku, version, rule } => {
                let entry = self.sku_mut(sku.index());
                entry.version = entry.version.max(version);
                if version >= entry.backorder_version {
                    entry.backorder = rule;
                    entry.backorder_version = version;
                }
            }
            Event::SaleWindow {
                sku,
                version,
                window,
            } => {
                let entry = self.sku_mut(sku.index());
                entry.version = entry.version.max(version);
                if version >= entry.sale_window_version {
                    entry.sale_window = window;
                    entry.sale_window_version = version;
                }
            }
            Event::WaitingRoom { sku, version, room } => {
                let entry = self.sku_mut(sku.index());
                entry.version = entry.version.max(version);
                if version >= entry.waiting_room_version {
                    entry.waiting_room = room;
                    entry.waiting_room_version = version;
                }
            }
            Event::BackorderFilled { sku, fill } => self.fold_fill(sku.index(), fill),
            Event::Location {
                sku,
                version,
                priority,
            } => {
                let entry = self.sku_mut(sku.index());
                entry.version = entry.version.max(version);
                match priority {
                    None => entry.located = true,
                    Some(_) if version >= entry.priority_version => {
                        entry.priority = priority;
                        entry.priority_version = version;
                    }
                    Some(_) => {}
                }
            }
            Event::Lease {
                sku,
                version,
                lease,
                granted,
                step,
            } => {
                let entry = self.sku_mut(sku.index());
                entry.received += step.delta(granted);
                entry.version = entry.version.max(version);
                let row = SettledLease {
                    sku: sku.index(),
                    granted,
                    step,
                };
                self.put_lease(lease, row);
            }
            Event::Hold(hold) => self.apply_hold(hold),
            Event::Idempotency(key) => {
                self.dirty_keys.insert(key.key.clone());
                self.keys.insert(key.key.clone(), key);
            }
        }
    }

    /// Folds one journal frame's payload. Hold events take an
    /// allocation-free path (the writer folds millions a second); the rest
    /// decode as usual. Counts are moved by the same `fold_counts` either way.
    pub fn apply_frame(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        match decode_hold_ref(payload)? {
            Some(hold) => {
                let (from, to) = (hold.from, hold.status);
                let (mask, customer) = (hold.limit_mask, hold.customer);
                if hold.has_owed() {
                    let id = hold.id.as_u64();
                    let owed: Vec<LineOwed> = hold.owed().collect();
                    let changes: Vec<LineChange> = hold.changes().collect();
                    let lines: Vec<Line> = hold.lines().collect();
                    let parts = (&lines[..], (!changes.is_empty()).then_some(&changes[..]));
                    self.fold_owed_counts(from, to, parts, &owed, mask, customer);
                    self.fold_owed_rows(id, hold.ticket, to, &lines, &owed);
                } else if hold.has_changes() {
                    let lines = hold.lines().zip(hold.changes());
                    self.fold_part_counts(from, to, lines, mask, customer);
                } else {
                    self.fold_counts(from, to, hold.lines(), mask, customer);
                }
                self.row_log.push(&hold);
            }
            None => self.apply(Event::decode(payload)?),
        }
        Ok(())
    }

    /// Moves SKU and customer counts by `effect(to) - effect(from)` for each
    /// whole line (all sold on confirm, all back on refund): the sale's
    /// path, one multiply per count.
    fn fold_counts(
        &mut self,
        from: Option<HoldStatus>,
        to: HoldStatus,
        lines: impl Iterator<Item = Line>,
        limit_mask: u32,
        customer: Option<&str>,
    ) {
        let (from_held, from_sold, from_limit) = effect(from, 1, 1, 0);
        let (to_held, to_sold, to_limit) = effect(Some(to), 1, 1, 0);
        for (index, line) in lines.enumerate() {
            let q = i64::from(line.quantity);
            let delta = (
                q * (to_held - from_held),
                q * (to_sold - from_sold),
                q * (to_limit - from_limit),
            );
            self.fold_line(index, line, delta, limit_mask, customer);
        }
    }

    /// `fold_counts` for lines confirmed or refunded in part: each line's
    /// effect from its amounts before and after.
    fn fold_part_counts(
        &mut self,
        from: Option<HoldStatus>,
        to: HoldStatus,
        lines: impl Iterator<Item = (Line, LineChange)>,
        limit_mask: u32,
        customer: Option<&str>,
    ) {
        for (index, (line, change)) in lines.enumerate() {
            let (q, c) = (line.quantity, change.confirmed);
            let (from_held, from_sold, from_limit) = effect(from, q, c, change.refunded_before);
            let (to_held, to_sold, to_limit) = effect(Some(to), q, c, change.refunded_after);
            let delta = (
                to_held - from_held,
                to_sold - from_sold,
                to_limit - from_limit,
            );
            self.fold_line(index, line, delta, limit_mask, customer);
        }
    }

    /// Moves line `index`'s SKU by (held, sold) and, when the line counts
    /// against the customer's limit, the customer's units by the third.
    #[inline]
    fn fold_line(
        &mut self,
        index: usize,
        line: Line,
        (held, sold, limit): (i64, i64, i64),
        limit_mask: u32,
        customer: Option<&str>,
    ) {
        let sku = self.sku_mut(line.sku.index());
        sku.held += held;
        sku.sold += sold;
        if limit != 0 && limit_mask & (1 << index) != 0 {
            if let Some(customer) = customer {
                let key = (line.sku.index(), Box::<str>::from(customer));
                *self.customer_units.entry(key.clone()).or_default() += limit;
                self.dirty_customers.insert(key);
            }
        }
    }

    fn apply_hold(&mut self, event: HoldEvent) {
        let (from, to) = (event.from, event.status);
        let (mask, customer) = (event.limit_mask, event.customer.as_deref());
        let lines = event.lines.iter().copied();
        match (&event.changes, &event.owed) {
            (changes, Some(owed)) => {
                let parts = (&event.lines[..], changes.as_deref());
                self.fold_owed_counts(from, to, parts, owed, mask, customer);
                let id = event.id.as_u64();
                self.fold_owed_rows(id, event.ticket, to, &event.lines, owed);
            }
            (Some(changes), None) => {
                let lines = lines.zip(changes.iter().copied());
                self.fold_part_counts(from, to, lines, mask, customer);
            }
            (None, None) => self.fold_counts(from, to, lines, mask, customer),
        }
        let id = event.id.as_u64();
        let row = SettledHold {
            status: event.status,
            at_ms: event.at_ms,
            deadline_ms: event.deadline_ms,
            limit_mask: event.limit_mask,
            customer: event.customer,
            lines: event.lines,
            extensions: event.extensions,
            amounts: event.changes.map(|changes| {
                let amounts = changes.iter().copied().map(LineChange::after);
                amounts.collect()
            }),
        };
        match self.holds.entry(id) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(row);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                if !row.supersedes(slot.get()) {
                    return;
                }
                slot.insert(row);
            }
        }
        self.dirty_holds.push(id);
    }

    /// Keeps the later step of a lease (steps are a lattice: a batch folded
    /// in any order ends on the latest).
    fn put_lease(&mut self, lease: Box<str>, row: SettledLease) {
        let newer = self
            .leases
            .get(&lease)
            .is_none_or(|current| row.step.rank() > current.step.rank());
        if newer {
            self.dirty_leases.insert(lease.clone());
            self.leases.insert(lease, row);
        }
    }

    fn sku_mut(&mut self, index: u32) -> &mut SettledSku {
        let index_usize = index as usize;
        if self.skus.len() <= index_usize {
            self.skus.resize(index_usize + 1, None);
        }
        self.mark_sku_dirty(index);
        self.skus[index_usize].get_or_insert_with(SettledSku::default)
    }
}

mod backorders;
mod checkpoint;
#[cfg(all(test, not(loom)))]
mod tests;

use checkpoint::RowLog;
pub use checkpoint::{Checkpoint, EventsRetention, SpareBuffers, TakenCheckpoint};

//! Backorders: units a SKU may sell past zero, up to an allowance the
//! operator sets, and the queue of reservations owed them.
//!
//! An owed unit is in neither `available`, `held` nor `sold`: it was never
//! received, so conservation (`available + held + sold == received`) is
//! untouched by it. It is counted apart, as `backordered`. A restock gives
//! its units to the queue first, oldest reservation first; each unit it
//! gives moves into `held` or `sold` (as the reservation is held or
//! confirmed) without ever passing through `available`, so no buyer racing
//! the restock can take it.
//!
//! Everything here runs under the cell's lock (`meta`), the lock that also
//! orders the restock that fills a backorder and the transitions that end
//! or confirm one (`Engine::settle_backordered` takes it under the hold's
//! shard lock, which the lock order allows). A backorder cannot be queued
//! before its reservation has an id, so units taken past zero are
//! `pending` from the take until the record is made; a restock in between
//! does not fill them (they are filled by the next one).

use std::collections::BTreeMap;

use super::{CellMeta, OperatorChange, SoldOut, StockCell, StripePolicy, TakeInto};
use crate::core::limits::FILLS_PER_LOCK;
use crate::core::sync::MutexGuard;
use crate::core::types::ReservationId;

/// A SKU's allowance of units sold past zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackorderRule {
    /// Most units owed at once (0: no backorders, the default).
    pub limit: u64,
    /// From this time on no new backorder is taken (`None`: no end).
    /// Units already owed stay owed.
    pub until_ms: Option<u64>,
}

impl BackorderRule {
    /// Whether a new backorder may be taken at `now_ms`.
    pub fn is_open(&self, now_ms: u64) -> bool {
        self.limit > 0 && self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// Units one reservation is owed of this SKU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owed {
    pub id: ReservationId,
    /// Its place in the queue: smaller tickets are filled first.
    pub ticket: u64,
    pub units: u32,
    /// Confirmed: filled units become sold; otherwise held.
    pub sold: bool,
}

/// Units a restock gave to one reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    pub id: ReservationId,
    pub ticket: u64,
    pub units: u32,
    /// Still owed after this fill.
    pub owed_after: u32,
    pub sold: bool,
}

/// A SKU's backorder rule and queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct BackorderBook {
    pub(super) rule: BackorderRule,
    /// Units taken past zero whose reservation is not yet made.
    pending: u64,
    /// Sum of the queue's units.
    queued: u64,
    /// By ticket: the fill order.
    queue: BTreeMap<u64, Owed>,
    /// Reservation id (as `u64`) to ticket.
    tickets: BTreeMap<u64, u64>,
}

impl BackorderBook {
    pub(super) const EMPTY: BackorderBook = BackorderBook {
        rule: BackorderRule {
            limit: 0,
            until_ms: None,
        },
        pending: 0,
        queued: 0,
        queue: BTreeMap::new(),
        tickets: BTreeMap::new(),
    };

    /// Units owed now, pending or queued.
    pub(super) fn backordered(&self) -> u64 {
        self.pending + self.queued
    }

    fn insert(&mut self, owed: Owed) {
        debug_assert!(owed.units > 0);
        let previous = self.tickets.insert(owed.id.as_u64(), owed.ticket);
        debug_assert!(previous.is_none(), "one entry per reservation and SKU");
        self.queue.insert(owed.ticket, owed);
        self.queued += u64::from(owed.units);
    }

    fn get(&self, id: ReservationId) -> Option<&Owed> {
        let ticket = self.tickets.get(&id.as_u64())?;
        self.queue.get(ticket)
    }

    /// Sets `id`'s entry to `units` owed (removing it at 0).
    fn set(&mut self, id: ReservationId, units: u32, sold: bool) {
        let Some(&ticket) = self.tickets.get(&id.as_u64()) else {
            debug_assert_eq!(units, 0, "no entry, nothing owed");
            return;
        };
        let entry = self
            .queue
            .get_mut(&ticket)
            .expect("tickets and queue agree");
        debug_assert!(units <= entry.units, "owed units only shrink");
        self.queued -= u64::from(entry.units - units);
        entry.units = units;
        entry.sold = sold;
        if units == 0 {
            self.queue.remove(&ticket);
            self.tickets.remove(&id.as_u64());
        }
    }
}

/// A cell's lock, held to read and change its backorders and to move its
/// units in the same critical section. Several may be held at once, taken
/// in SKU order (`Engine::settle_backordered`).
pub struct BookGuard<'a> {
    cell: &'a StockCell,
    meta: MutexGuard<'a, CellMeta>,
}

impl BookGuard<'_> {
    /// Units `id` is owed of this SKU now.
    pub fn owed(&self, id: ReservationId) -> u32 {
        self.meta.extras().book.get(id).map_or(0, |owed| owed.units)
    }

    /// `id`'s entry in this SKU's queue, if it is owed units.
    pub fn entry(&self, id: ReservationId) -> Option<Owed> {
        self.meta.extras().book.get(id).copied()
    }

    /// Queues `units` owed to reservation `id` (taken past zero by its
    /// order, `pending` until now) at `ticket`.
    pub fn open(&mut self, id: ReservationId, ticket: u64, units: u32, sold: bool) {
        self.meta.edit_extras(|extras| {
            let book = &mut extras.book;
            debug_assert!(book.pending >= u64::from(units), "opened as taken");
            book.pending -= u64::from(units);
            book.insert(Owed {
                id,
                ticket,
                units,
                sold,
            });
        });
    }

    /// Sets the units `id` is still owed, and whether they are sold.
    pub fn set_owed(&mut self, id: ReservationId, units: u32, sold: bool) {
        self.meta
            .edit_extras(|extras| extras.book.set(id, units, sold));
    }

    /// Moves `units` received held units to sold.
    pub fn confirm_held(&self, units: u64, hint: usize) {
        self.cell.confirm_held(units, hint);
    }

    /// Returns `units` held (or, `from` sold, sold) units to `available`.
    pub fn give_back(&self, units: u64, from: TakeInto, hint: usize) {
        if units == 0 {
            return;
        }
        let (stripe, _) = self.cell.stripe(hint);
        stripe.count(from, -(units as i64));
        self.cell.credit_locked(units, hint);
    }
}

impl StockCell {
    /// Takes the cell's lock to read or settle its backorders.
    pub fn lock_book(&self) -> BookGuard<'_> {
        BookGuard {
            cell: self,
            meta: self.meta.lock(),
        }
    }

    /// Each reservation owed units of this SKU, in fill order.
    pub fn owed_list(&self) -> Vec<Owed> {
        let meta = self.meta.lock();
        meta.extras().book.queue.values().copied().collect()
    }

    /// The slow path of a take that found too few units: takes what is
    /// there and owes the rest, when the backorder rule allows it at
    /// `now_ms` and the units owed stay within its limit. Returns the units
    /// owed (0: the stock covered it after all). The owed units are
    /// `pending` until `BookGuard::open` queues them (or `cancel_pending`
    /// drops them).
    #[cold]
    pub fn take_backordered(
        &self,
        units: u64,
        into: TakeInto,
        now_ms: u64,
        hint: usize,
        policy: &StripePolicy,
    ) -> Result<u64, SoldOut> {
        let mut meta = self.meta.lock();
        let in_hand = self.drain_locked();
        if in_hand >= units {
            self.redistribute_locked(in_hand - units, hint, policy);
            self.stripe(hint).0.count(into, units as i64);
            return Ok(0);
        }
        let owed = units - in_hand;
        let book = &meta.extras().book;
        let room = book.rule.limit.saturating_sub(book.backordered());
        if !book.rule.is_open(now_ms) || owed > room {
            self.redistribute_locked(in_hand, hint, policy);
            return Err(SoldOut {
                available: in_hand,
                may_backorder: false,
            });
        }
        meta.edit_extras(|extras| extras.book.pending += owed);
        self.redistribute_locked(0, hint, policy);
        if in_hand > 0 {
            self.stripe(hint).0.count(into, in_hand as i64);
        }
        Ok(owed)
    }

    /// Undoes a `take_backordered` whose order was refused: drops the
    /// `owed` pending units and gives back the `taken` ones.
    pub fn cancel_pending(&self, owed: u64, taken: u64, into: TakeInto, hint: usize) {
        let mut guard = self.lock_book();
        guard.meta.edit_extras(|extras| {
            debug_assert!(extras.book.pending >= owed);
            extras.book.pending -= owed;
        });
        guard.give_back(taken, into, hint);
    }

    /// Sets the backorder rule. Bumps the version; `publish` is called
    /// under the lock. Units already owed stay owed.
    pub fn set_backorder(&self, rule: BackorderRule, publish: impl FnOnce(OperatorChange)) -> u64 {
        let mut meta = self.meta.lock();
        let version = Self::bump_setting_locked(&mut meta, publish);
        meta.edit_extras(|extras| extras.book.rule = rule);
        version
    }

    /// Gives up to `units` received units to the queue, oldest first, at
    /// most `FILLS_PER_LOCK` reservations; `fill` is called for each under
    /// the lock. Returns the units not given. Caller holds the lock.
    pub(super) fn fill_locked(
        &self,
        meta: &mut CellMeta,
        mut units: u64,
        hint: usize,
        mut fill: impl FnMut(Fill),
    ) -> u64 {
        if meta.extras().book.queued == 0 {
            return units;
        }
        meta.edit_extras(|extras| {
            let book = &mut extras.book;
            let (stripe, _) = self.stripe(hint);
            for _ in 0..FILLS_PER_LOCK {
                let Some((_, &first)) = book.queue.first_key_value() else {
                    break;
                };
                if units == 0 {
                    break;
                }
                let given = u64::from(first.units).min(units) as u32;
                units -= u64::from(given);
                let into = if first.sold {
                    TakeInto::Sold
                } else {
                    TakeInto::Held
                };
                stripe.count(into, i64::from(given));
                let owed_after = first.units - given;
                book.set(first.id, owed_after, first.sold);
                fill(Fill {
                    id: first.id,
                    ticket: first.ticket,
                    units: given,
                    owed_after,
                    sold: first.sold,
                });
            }
        });
        units
    }

    /// Gives `units` received earlier (by a restock that filled as many
    /// reservations as one lock hold may) to the queue, then the rest to
    /// `available`. Returns the units still to give (the caller makes room
    /// in the journal and calls again) or 0.
    pub fn fill_more(&self, units: u64, hint: usize, fill: impl FnMut(Fill)) -> u64 {
        let mut meta = self.meta.lock();
        let left = self.fill_locked(&mut meta, units, hint, fill);
        self.finish_fill_locked(&meta, left, hint)
    }

    /// After a fill: units left go to `available` once nobody is owed;
    /// otherwise they stay in flight for the next call. Caller holds the
    /// lock.
    pub(super) fn finish_fill_locked(&self, meta: &CellMeta, left: u64, hint: usize) -> u64 {
        if left > 0 && meta.extras().book.queued == 0 {
            self.credit_locked(left, hint);
            return 0;
        }
        left
    }

    /// Puts recovered backorders back into a fresh cell.
    pub fn restore_backorders(&self, owed: impl IntoIterator<Item = Owed>) {
        let mut meta = self.meta.lock();
        meta.edit_extras(|extras| {
            for entry in owed {
                extras.book.insert(entry);
            }
        });
    }
}

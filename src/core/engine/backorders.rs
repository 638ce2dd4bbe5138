//! Backorders in the engine: taking a line past zero, queueing the
//! reservation once it has an id, settling its transitions against the
//! queues, filling them from a restock, and the operator's rule.
//!
//! The rule that keeps the journal's fold exact: everything that changes a
//! reservation's owed units (its creation, each transition, each fill) is
//! recorded under the lock of every SKU it owes, so for any (SKU,
//! reservation) the journal has those events in the order they happened.
//! A transition locks its SKUs' cells in SKU order, under the hold's shard
//! lock; nothing takes a shard lock under a cell lock, so the order
//! idempotency shard → hold shard → cells (ascending) → nothing is kept.

use std::sync::atomic::Ordering;

use super::Engine;
use crate::core::cell::{BackorderRule, BookGuard, Fill, Owed, SoldOut, StockCell, TakeInto};
use crate::core::change::{Change, ChangeSink, HoldChange};
use crate::core::error::EngineError;
use crate::core::hint::stripe_hint;
use crate::core::holds::{HoldDocument, HoldView, Settle};
use crate::core::limits::{MAX_STOCK_PER_SKU, MAX_TIME_MS};
use crate::core::types::{HoldStatus, Line, LineChange, LineOwed, ReservationId, SkuId};

/// Units a line keeps out of `available` in `status`, owed ones included:
/// all of them while held, those sold and not refunded once confirmed.
fn kept(status: HoldStatus, quantity: u32, change: &LineChange, after: bool) -> u32 {
    let refunded = if after {
        change.refunded_after
    } else {
        change.refunded_before
    };
    match status {
        HoldStatus::Held => quantity,
        HoldStatus::Confirmed => change.confirmed - refunded,
        _ => 0,
    }
}

impl<S: ChangeSink> Engine<S> {
    /// A line found too few units: takes what there is and owes the rest
    /// when the SKU's backorder rule allows. Returns the units owed.
    #[cold]
    #[inline(never)]
    pub(super) fn take_past_zero(
        &self,
        cell: &StockCell,
        units: u64,
        into: TakeInto,
        hint: usize,
    ) -> Result<u64, SoldOut> {
        let now_ms = self.clock.now_ms();
        cell.take_backordered(units, into, now_ms, hint, &self.config.stripe_policy)
    }

    /// Locks the cells of `lines` in SKU order; the guard of line `i` is
    /// at `i`.
    fn lock_books(&self, lines: &[Line]) -> Vec<Option<BookGuard<'_>>> {
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_unstable_by_key(|&index| lines[index].sku);
        let mut guards: Vec<Option<BookGuard<'_>>> = (0..lines.len()).map(|_| None).collect();
        for index in order {
            match self.cell(lines[index].sku) {
                Ok(cell) => guards[index] = Some(cell.lock_book()),
                Err(_) => debug_assert!(false, "a reservation names live SKUs"),
            }
        }
        guards
    }

    /// Records a new reservation whose lines owe `owed` units, and queues
    /// it on each of those SKUs, under their locks. Called with the new id
    /// under the hold's shard lock (`HoldTable::insert`'s publish).
    pub(super) fn publish_backordered(&self, hint: usize, change: HoldChange<'_>, owed: &[u32]) {
        let lines = change.lines;
        debug_assert_eq!(owed.len(), lines.len());
        let mut guards = self.lock_books(lines);
        // Relaxed: unique numbers; the order that matters (per SKU) is
        // the order of these locks, under which it is taken.
        let ticket = self.backorder_tickets.fetch_add(1, Ordering::Relaxed);
        let per_line: Vec<LineOwed> = owed
            .iter()
            .map(|&after| LineOwed { before: 0, after })
            .collect();
        self.record(
            hint,
            Change::Hold(HoldChange {
                owed: Some(&per_line),
                ticket,
                ..change
            }),
        );
        let sold = change.status == HoldStatus::Confirmed;
        for (guard, &units) in guards.iter_mut().zip(owed) {
            if let (Some(guard), true) = (guard, units > 0) {
                guard.open(change.id, ticket, units, sold);
            }
        }
    }

    /// `settle` for a record with a line taken past zero: under its SKUs'
    /// locks, owed units go first (a release or refund cancels owed units
    /// before it returns received ones; a confirm of part keeps the
    /// received ones), and the record is journaled with its owed units.
    #[cold]
    #[inline(never)]
    pub(super) fn settle_backordered(
        &self,
        how: Settle,
        hold: &HoldView<'_>,
        from: HoldStatus,
        hint: usize,
        now_ms: u64,
    ) {
        let lines = hold.lines;
        let mut guards = self.lock_books(lines);
        let whole: Vec<LineChange>;
        let changes = match hold.changes {
            Some(changes) => changes,
            None => {
                whole = lines
                    .iter()
                    .map(|line| LineChange::whole(hold.status, line.quantity))
                    .collect();
                &whole
            }
        };
        let (ticket, owed) = owed_per_line(hold, from, changes, &guards);
        let mut change = super::buying::hold_change(hold, from, now_ms);
        // No queue entry left (every owed unit was filled): nothing is
        // owed before or after, and the plain event says exactly that. An
        // owed-units event always names its queue ticket.
        debug_assert!(ticket > 0 || owed.iter().all(|o| o.before == 0));
        if ticket > 0 {
            change.owed = Some(&owed);
            change.ticket = ticket;
        }
        self.record(hint, Change::Hold(change));
        for (index, (line, guard)) in lines.iter().zip(&mut guards).enumerate() {
            let Some(guard) = guard else { continue };
            let (change, owed) = (&changes[index], owed[index]);
            let before = kept(from, line.quantity, change, false);
            let after = kept(hold.status, line.quantity, change, true);
            // Received units kept before and after: owed ones never moved.
            let (received_before, received_after) = (before - owed.before, after - owed.after);
            match how {
                Settle::Confirm => {
                    let back = received_before - received_after;
                    guard.give_back(u64::from(back), TakeInto::Held, hint);
                    guard.confirm_held(u64::from(received_after), hint);
                }
                Settle::Release => {
                    guard.give_back(u64::from(received_before), TakeInto::Held, hint)
                }
                Settle::Refund => {
                    let back = received_before - received_after;
                    guard.give_back(u64::from(back), TakeInto::Sold, hint);
                }
            }
            guard.set_owed(hold.id, owed.after, hold.status == HoldStatus::Confirmed);
            let back = before - after;
            if back > 0 && hold.limit_mask & (1 << index) != 0 {
                if let Some(customer) = hold.customer {
                    self.ledger.release(line.sku, customer, back);
                }
            }
        }
    }

    /// Fills in a document's `owed` units. A reservation owed nothing any
    /// more (every line filled) reads like any other: what it is owed now
    /// is what the document reports, the fills are events. Recovery keeps
    /// no trace of a queue entry once filled, so this is also the only
    /// answer a restart can give back exactly.
    pub(super) fn report_owed(&self, document: &mut HoldDocument) {
        if !document.backordered {
            return;
        }
        document.owed = self.owed_lines(document.id, &document.lines);
        if document.owed.iter().all(|&units| units == 0) {
            document.backordered = false;
            document.owed.clear();
        }
    }

    /// Per line of reservation `id`, the units it is still owed.
    pub(super) fn owed_lines(&self, id: ReservationId, lines: &[Line]) -> Vec<u32> {
        lines
            .iter()
            .map(|line| {
                self.cell(line.sku)
                    .map_or(0, |cell| cell.lock_book().owed(id))
            })
            .collect()
    }

    /// Gives `units` just received (and counted by the restock's change)
    /// to the reservations `sku` owes, as many per lock hold as the
    /// journal's room allows, then the rest to `available`.
    pub(super) fn fill_backorders(&self, cell: &StockCell, sku: SkuId, left: u64, hint: usize) {
        let mut left = left;
        while left > 0 {
            self.sink.make_room(hint);
            left = cell.fill_more(left, hint, |fill| self.record_fill(hint, sku, fill));
        }
    }

    pub(super) fn record_fill(&self, hint: usize, sku: SkuId, fill: Fill) {
        self.record(hint, Change::BackorderFilled { sku, fill });
    }

    /// Sets how many units `sku` may sell past zero, and until when.
    /// Returns the new version. Units already owed stay owed (a lower
    /// limit only stops new backorders).
    pub fn set_backorder(&self, sku: SkuId, rule: BackorderRule) -> Result<u64, EngineError> {
        validate_rule(&rule)?;
        self.refuse_kit(sku)?;
        let cell = self.cell(sku)?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let publish = |change: crate::core::cell::OperatorChange| {
            self.record(
                hint,
                Change::Backorder {
                    sku,
                    version: change.version,
                    rule,
                },
            )
        };
        Ok(cell.set_backorder(rule, publish))
    }

    /// The reservations `sku` owes units, in the order restocks fill them.
    pub fn backorder_queue(&self, sku: SkuId) -> Result<Vec<Owed>, EngineError> {
        Ok(self.cell(sku)?.owed_list())
    }

    /// Puts a SKU's recovered backorder queue back (recovery only).
    pub fn restore_backorders(&self, sku: SkuId, owed: Vec<Owed>) -> Result<(), EngineError> {
        self.cell(sku)?.restore_backorders(owed);
        Ok(())
    }

    /// Puts the backorder ticket counter past every recovered ticket.
    pub fn restore_backorder_tickets(&self, next: u64) {
        self.backorder_tickets.fetch_max(next, Ordering::Relaxed);
    }
}

/// Per line of `hold`, the units owed before and after `changes` (owed
/// units are given up first), and the record's queue ticket (0 when no
/// line is queued any more).
fn owed_per_line(
    hold: &HoldView<'_>,
    from: HoldStatus,
    changes: &[LineChange],
    guards: &[Option<BookGuard<'_>>],
) -> (u64, Vec<LineOwed>) {
    let mut ticket = 0;
    let mut owed = Vec::with_capacity(hold.lines.len());
    for ((line, change), guard) in hold.lines.iter().zip(changes).zip(guards) {
        let entry = guard.as_ref().and_then(|guard| guard.entry(hold.id));
        let before = entry.map_or(0, |entry| entry.units);
        ticket = entry.map_or(ticket, |entry| entry.ticket);
        let given_up = kept(from, line.quantity, change, false)
            - kept(hold.status, line.quantity, change, true);
        owed.push(LineOwed {
            before,
            after: before - given_up.min(before),
        });
    }
    (ticket, owed)
}

pub(super) fn validate_rule(rule: &BackorderRule) -> Result<(), EngineError> {
    if rule.limit > MAX_STOCK_PER_SKU {
        return Err(EngineError::InvalidBackorderLimit { limit: rule.limit });
    }
    if let Some(until_ms) = rule.until_ms.filter(|&until| until > MAX_TIME_MS) {
        return Err(EngineError::InvalidBackorderEnd { until_ms });
    }
    Ok(())
}

//! Confirms and refunds of part, and refunds under an idempotency key:
//! the transitions that name lines. Decided under the record's shard lock
//! like the whole ones (`HoldTable::transition_part`), settled per line.

use super::buying::{transition_error, validate_idempotency_key};
use super::{Engine, Receipt};
use crate::core::change::{Change, ChangeSink, KeyChange};
use crate::core::error::EngineError;
use crate::core::fingerprint;
use crate::core::hint::stripe_hint;
use crate::core::holds::{HoldView, Settle, Transition, TransitionError};
use crate::core::idempotency::Reused;
use crate::core::limits::{MAX_LINES_PER_CART, MAX_LINE_QUANTITY};
use crate::core::types::{HoldStatus, Line, LineChange, ReservationId};

impl<S: ChangeSink> Engine<S> {
    /// held → confirmed for `lines` only (per SKU of the reservation, how
    /// many units are sold): every other held unit, of these lines and of
    /// lines not named, returns to stock at once. Repeating a confirm
    /// answers `Ok(Confirmed)` and changes nothing.
    pub fn confirm_lines(
        &self,
        id: ReservationId,
        lines: &[Line],
    ) -> Result<HoldStatus, EngineError> {
        self.transition_part(id, Transition::Confirm, lines)
    }

    /// Gives back `lines` (per SKU, how many units) of a confirmed sale;
    /// never more than was sold and not yet refunded. The reservation stays
    /// `confirmed` (refundable again for the rest) until every sold unit is
    /// back, then it is `refunded`. Each call refunds again: a client that
    /// may retry uses `refund_once` with an idempotency key.
    pub fn refund_lines(
        &self,
        id: ReservationId,
        lines: &[Line],
    ) -> Result<HoldStatus, EngineError> {
        self.transition_part(id, Transition::Refund, lines)
    }

    fn transition_part(
        &self,
        id: ReservationId,
        transition: Transition,
        lines: &[Line],
    ) -> Result<HoldStatus, EngineError> {
        validate_part(lines)?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        self.transition_part_now(id, transition, Some(lines), hint)
    }

    /// `refund_lines` (`None`: `refund`, all that is left), at most once
    /// per idempotency `key`: a retry with the same key and lines answers
    /// the first refund's status without giving anything back again, also
    /// after a restart (the key is journaled with the outcome); the key
    /// used with other lines, or for another request, is refused with
    /// `IdempotencyKeyReused`.
    pub fn refund_once(
        &self,
        id: ReservationId,
        lines: Option<&[Line]>,
        key: &str,
    ) -> Result<HoldStatus, EngineError> {
        validate_idempotency_key(key)?;
        validate_part(lines.unwrap_or_default())?;
        self.check_storage()?;
        let hint = stripe_hint();
        // Before the key's lock: the refund is recorded under the hold's
        // shard lock, inside the key's.
        self.sink.make_room(hint);
        let fingerprint = fingerprint::refund(id, lines);
        let now_ms = self.clock.now_ms();
        let ran = self.idempotency.run(key, fingerprint, now_ms, || {
            let outcome = self.transition_part_now(id, Transition::Refund, lines, hint);
            if let Ok(status) = outcome {
                let change = KeyChange {
                    key,
                    fingerprint: fingerprint.print,
                    created_ms: now_ms,
                    reservation: id,
                    status,
                    expires_at_ms: 0,
                };
                self.record(hint, Change::Idempotency(change));
            }
            let stored = outcome.map(|status| Receipt {
                id,
                status,
                expires_at_ms: 0,
                replayed: false,
                holds_components: false,
                backordered: false,
            });
            (stored, true)
        });
        match ran {
            Ok((outcome, _)) => outcome.map(|receipt| receipt.status),
            Err(Reused) => Err(EngineError::IdempotencyKeyReused),
        }
    }

    /// A confirm or refund of part (`None`: of all that is left), after its
    /// checks and `make_room`.
    fn transition_part_now(
        &self,
        id: ReservationId,
        transition: Transition,
        lines: Option<&[Line]>,
        hint: usize,
    ) -> Result<HoldStatus, EngineError> {
        let now_ms = self.clock.now_ms();
        let settle = |how, hold: HoldView<'_>| self.settle(how, hold, hint, now_ms);
        self.holds
            .transition_part(id, transition, lines, now_ms, settle)
            .map_err(|error| match (error, lines) {
                (TransitionError::NotInReservation { index }, Some(lines)) => {
                    EngineError::NotInReservation {
                        id,
                        sku: lines[index].sku,
                    }
                }
                (other, _) => transition_error(id, transition, other),
            })
    }
}

impl<S: ChangeSink> Engine<S> {
    /// `settle` for a confirm or refund in part: a confirm sells each
    /// line's confirmed units and gives the rest back (with their limit
    /// counts); a refund gives back what it refunds.
    pub(super) fn settle_part(
        &self,
        how: Settle,
        hold: &HoldView<'_>,
        changes: &[LineChange],
        hint: usize,
    ) {
        debug_assert_eq!(changes.len(), hold.lines.len());
        for (index, (line, change)) in hold.lines.iter().zip(changes).enumerate() {
            let Ok(cell) = self.cell(line.sku) else {
                debug_assert!(false, "reservation {} names an unknown SKU", hold.id);
                continue;
            };
            let back = match how {
                Settle::Confirm => {
                    cell.confirm_held(u64::from(change.confirmed), hint);
                    let back = line.quantity - change.confirmed;
                    cell.release_held(u64::from(back), hint);
                    back
                }
                Settle::Refund => {
                    let back = change.refunded_after - change.refunded_before;
                    cell.refund_sold(u64::from(back), hint);
                    back
                }
                Settle::Release => {
                    debug_assert!(false, "a release is never partial");
                    continue;
                }
            };
            if back > 0 && hold.limit_mask & (1 << index) != 0 {
                if let Some(customer) = hold.customer {
                    self.ledger.release(line.sku, customer, back);
                }
            }
        }
    }
}

/// A confirm's or refund's lines against the limits (the record checks
/// the rest under its lock).
fn validate_part(lines: &[Line]) -> Result<(), EngineError> {
    if lines.len() > MAX_LINES_PER_CART {
        return Err(EngineError::TooManyLines { lines: lines.len() });
    }
    for (index, line) in lines.iter().enumerate() {
        if line.quantity > MAX_LINE_QUANTITY {
            return Err(EngineError::InvalidQuantity {
                quantity: u64::from(line.quantity),
            });
        }
        if lines[..index].iter().any(|earlier| earlier.sku == line.sku) {
            return Err(EngineError::DuplicateSku { sku: line.sku });
        }
    }
    Ok(())
}

//! The transitions that end a reservation (confirm, cancel, refund) or
//! move its deadline (extend), and `settle`, which every end of a hold
//! runs under the hold's shard lock: the units go back to stock or are
//! counted sold, the limit is given back, and the change is recorded.

use super::buying::{hold_change, transition_error};
use super::{Engine, Extension};
use crate::core::change::{Change, ChangeSink};
use crate::core::error::{EngineError, ExtensionLimit};
use crate::core::hint::stripe_hint;
use crate::core::holds::{ExtendError, ExtendRule, HoldView, Settle, Transition};
use crate::core::types::{HoldStatus, ReservationId};

impl<S: ChangeSink> Engine<S> {
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

    /// Moves a held reservation's deadline to `ttl_ms` from now (capped at
    /// `max_extension_ms`, and at `max_hold_ms` after it was made), for a
    /// payment still being processed. Never shortens a hold. Refused with
    /// `ExtensionRefused` past the caps, `InvalidTransition` once it is not
    /// held (an expiry that is due happens first, as for `confirm`).
    pub fn extend(&self, id: ReservationId, ttl_ms: u64) -> Result<Extension, EngineError> {
        let config = &self.config;
        if ttl_ms == 0 {
            return Err(EngineError::InvalidTtl {
                ttl_ms,
                max_ms: config.max_extension_ms,
            });
        }
        self.check_storage()?;
        let hint = stripe_hint();
        let now_ms = self.clock.now_ms();
        let rule = ExtendRule {
            ttl_ms: ttl_ms.min(config.max_extension_ms),
            max_extensions: config.max_extensions,
            max_hold_ms: config.max_hold_ms,
        };
        self.sink.make_room(hint);
        // A held row's time is its creation (see `HoldChange::extensions`).
        let publish = |hold: HoldView<'_>, created_ms: u64| {
            let change = hold_change(&hold, HoldStatus::Held, created_ms);
            self.record(hint, Change::Hold(change));
        };
        let refused = |extensions, deadline_ms, reason| EngineError::ExtensionRefused {
            id,
            extensions,
            max: config.max_extensions,
            deadline_ms,
            reason,
        };
        let settle = |how, hold: HoldView<'_>| self.settle(how, hold, hint, now_ms);
        match self.holds.extend(id, rule, now_ms, settle, publish) {
            Ok((expires_at_ms, extensions)) => Ok(Extension {
                id,
                expires_at_ms,
                extensions,
                extensions_left: config.max_extensions.saturating_sub(extensions),
            }),
            Err(ExtendError::Unknown) => Err(EngineError::UnknownReservation { id }),
            Err(ExtendError::Invalid { status }) => Err(EngineError::InvalidTransition {
                id,
                status,
                requested: "extended",
            }),
            Err(ExtendError::TooManyExtensions {
                extensions,
                deadline_ms,
            }) => Err(refused(extensions, deadline_ms, ExtensionLimit::Count)),
            Err(ExtendError::HoldTimeReached {
                extensions,
                deadline_ms,
            }) => Err(refused(extensions, deadline_ms, ExtensionLimit::HoldTime)),
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
        self.sink.make_room(hint);
        self.holds
            .transition(id, transition, now_ms, |how, hold| {
                self.settle(how, hold, hint, now_ms)
            })
            .map_err(|error| transition_error(id, transition, error))
    }

    /// Moves a record's units as its status changes. Called by the hold table
    /// under the record's shard lock, exactly once per change.
    pub(super) fn settle(&self, how: Settle, hold: HoldView<'_>, hint: usize, now_ms: u64) {
        let from = match how {
            Settle::Confirm | Settle::Release => HoldStatus::Held,
            Settle::Refund => HoldStatus::Confirmed,
        };
        if hold.backordered {
            return self.settle_backordered(how, &hold, from, hint, now_ms);
        }
        self.record(hint, Change::Hold(hold_change(&hold, from, now_ms)));
        if let Some(changes) = hold.changes {
            return self.settle_part(how, &hold, changes, hint);
        }
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

//! Buying: reservations, purchases and record-less sales (the transitions
//! that end a reservation are in `ending.rs`). The lock order and the all-or-none
//! rule for carts are in the module docs of `engine/mod.rs`.

use std::sync::Arc;

use super::{Engine, Order, Receipt};
use crate::core::cell::{Gate, SoldOut, TakeInto};
use crate::core::change::{Change, ChangeSink, HoldChange, KeyChange};
use crate::core::error::{EngineError, KitRefusal};
use crate::core::fingerprint::{self, OrderPrint};
use crate::core::hint::stripe_hint;
use crate::core::holds::{HoldView, NewHold, Transition, TransitionError};
use crate::core::idempotency::{Origin, Reused};
use crate::core::ledger::OverLimit;
use crate::core::limits::{
    MAX_CUSTOMER_CHARS, MAX_IDEMPOTENCY_KEY_BYTES, MAX_LINES_PER_CART, MAX_LINE_QUANTITY,
};
use crate::core::types::{HoldStatus, Line, ReservationId, SkuId};

impl<S: ChangeSink> Engine<S> {
    /// Reserves (or, with `confirm`, buys) every line of `order`, or none.
    /// A kit line takes the kit's components (`kits.rs`), a line of a SKU
    /// kept at locations takes from its location(s) (`locations.rs`); the
    /// reservation holds those.
    pub fn reserve(&self, order: &Order<'_>) -> Result<Receipt, EngineError> {
        let (ttl_ms, has_composites) = self.validate(order)?;
        if has_composites {
            return self.reserve_composite(order, ttl_ms);
        }
        if order.idempotency_key.is_none() {
            // The purchase path: no key, nothing composite.
            self.check_storage()?;
            let hint = stripe_hint();
            self.sink.make_room(hint);
            return self.reserve_once_inline(order, ttl_ms, hint);
        }
        self.reserve_validated(order, ttl_ms, |hint| self.reserve_once(order, ttl_ms, hint))
    }

    /// `reserve` of an order that names a kit or a SKU kept at locations:
    /// its lines with every kit replaced by its components and every
    /// located line given its location(s), allocated again if another
    /// buyer took a chosen location's units first. Out of line, so the
    /// plain purchase path stays one function.
    #[inline(never)]
    fn reserve_composite(&self, order: &Order<'_>, ttl_ms: u64) -> Result<Receipt, EngineError> {
        let located = (order.lines.iter())
            .any(|line| self.cell(line.sku).is_ok_and(|cell| cell.is_located()));
        let outcome = if located {
            self.reserve_validated(order, ttl_ms, |hint| {
                self.with_reallocation(|| {
                    let expanded = match self.expand(order.lines, order.split, true) {
                        Ok(expanded) => expanded,
                        Err(refusal) => return (Err(refusal), Default::default()),
                    };
                    let taking = Order {
                        lines: expanded.lines(),
                        ..*order
                    };
                    let outcome = self.reserve_once(&taking, ttl_ms, hint);
                    (outcome, expanded.allocated_by())
                })
            })
        } else {
            // Kits only: one expansion, nothing to allocate again.
            let expanded = self.expand(order.lines, 0, false)?;
            let taking = Order {
                lines: expanded.lines(),
                ..*order
            };
            self.reserve_validated(order, ttl_ms, |hint| {
                self.reserve_once(&taking, ttl_ms, hint)
            })
        };
        outcome.map(|receipt| Receipt {
            holds_components: true,
            ..receipt
        })
    }

    /// `reserve` of `order` as the caller asked for it (its idempotency
    /// fingerprint), taken by `take_once` (given the CPU hint). Always
    /// inline: the plain purchase path is `reserve` and this, one
    /// function.
    #[inline(always)]
    fn reserve_validated(
        &self,
        order: &Order<'_>,
        ttl_ms: u64,
        take_once: impl Fn(usize) -> Result<Receipt, EngineError>,
    ) -> Result<Receipt, EngineError> {
        self.check_storage()?;
        // One CPU hint for the whole order (each read is a call into
        // glibc): a thread that migrates meanwhile only shares a stripe or
        // a lane for this one order.
        let hint = stripe_hint();
        // Before any lock, the idempotency key's included: the hold's
        // creation is recorded under its shard lock, inside the key's.
        self.sink.make_room(hint);
        // The SKUs ordered (a kit, a SKU kept at locations; `reserve_once`
        // checks what it takes), checked before each take but not before a
        // replay: a keyed retry after the sale ended gets the order it made.
        let take_once = |hint| {
            self.check_sale_windows(order.lines)?;
            take_once(hint)
        };
        let Some(key) = order.idempotency_key else {
            return take_once(hint);
        };
        let fingerprint = fingerprint::order(&OrderPrint {
            lines: order.lines,
            customer: order.customer,
            confirm: order.confirm,
            ttl_ms,
            split: order.split,
        });
        let now_ms = self.clock.now_ms();
        let ran = self.idempotency.run(key, fingerprint, now_ms, || {
            let outcome = take_once(hint);
            // Capacity refusals are about the server, not the request: a
            // retry after capacity frees up must be allowed to run.
            // Likewise a sale not open yet: a retry once it opens must run.
            let keep = !matches!(
                outcome,
                Err(EngineError::CapacityExceeded { .. } | EngineError::NotOnSale { .. })
            );
            if let Ok(receipt) = &outcome {
                // Journaled after the reservation's own event, under the
                // key's lock: a retry after a restart gets this receipt.
                let change = KeyChange {
                    key,
                    fingerprint: fingerprint.print,
                    created_ms: now_ms,
                    reservation: receipt.id,
                    status: receipt.status,
                    expires_at_ms: receipt.expires_at_ms,
                };
                self.record(hint, Change::Idempotency(change));
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
        match cell.gate() {
            Gate::Open => {}
            Gate::Located => return self.sell_located(sku, quantity),
            Gate::Limit(_) => return Err(EngineError::CustomerRequired { sku }),
            Gate::Kit => {
                return Err(EngineError::KitRefused {
                    sku,
                    reason: KitRefusal::IsAKit,
                })
            }
        }
        self.check_storage()?;
        let units = u64::from(quantity);
        let hint = stripe_hint();
        cell.take(units, TakeInto::Sold, hint, &self.config.stripe_policy)
            .map_err(|SoldOut { available, .. }| EngineError::SoldOut {
                sku,
                available,
                requested: units,
            })?;
        self.record(
            hint,
            Change::Sell {
                sku,
                units: quantity,
            },
        );
        Ok(())
    }

    /// Checks an order against every limit before anything is touched.
    /// Returns the time-to-live to use.
    /// Checks `order` against the limits; returns its time-to-live and
    /// whether a line names a kit.
    fn validate(&self, order: &Order<'_>) -> Result<(u64, bool), EngineError> {
        let lines = order.lines;
        if lines.is_empty() {
            return Err(EngineError::EmptyCart);
        }
        if lines.len() > MAX_LINES_PER_CART {
            return Err(EngineError::TooManyLines { lines: lines.len() });
        }
        let mut has_composites = false;
        for (index, line) in lines.iter().enumerate() {
            if line.quantity == 0 || line.quantity > MAX_LINE_QUANTITY {
                return Err(EngineError::InvalidQuantity {
                    quantity: u64::from(line.quantity),
                });
            }
            has_composites |= self.cell(line.sku)?.is_composite();
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
        let ttl_ms = match order.ttl_ms {
            None => self.config.default_ttl_ms,
            Some(ttl_ms) if (1..=self.config.max_ttl_ms).contains(&ttl_ms) => ttl_ms,
            Some(ttl_ms) => {
                return Err(EngineError::InvalidTtl {
                    ttl_ms,
                    max_ms: self.config.max_ttl_ms,
                })
            }
        };
        Ok((ttl_ms, has_composites))
    }

    /// One attempt at an order, all lines or none: `reserve_once_inline`
    /// out of line, for the keyed and composite paths, so that only the
    /// plain purchase path carries a copy of it.
    #[inline(never)]
    fn reserve_once(
        &self,
        order: &Order<'_>,
        ttl_ms: u64,
        hint: usize,
    ) -> Result<Receipt, EngineError> {
        self.reserve_once_inline(order, ttl_ms, hint)
    }

    /// `reserve_once`, inlined into the plain purchase path with the take
    /// and the record's insert (`take_lines`, `HoldTable::insert`): as
    /// three calls they cost a purchase 47 instructions more (callgrind,
    /// `hot_path purchase`: 562 against 515).
    #[inline(always)]
    fn reserve_once_inline(
        &self,
        order: &Order<'_>,
        ttl_ms: u64,
        hint: usize,
    ) -> Result<Receipt, EngineError> {
        // The SKUs taken (a kit's components included). One load when no
        // SKU has a window.
        self.check_sale_windows(order.lines)?;
        let into = if order.confirm {
            TakeInto::Sold
        } else {
            TakeInto::Held
        };
        let customer: Option<Arc<str>> = order.customer.map(Arc::from);
        let taken = self.take_lines(order.lines, customer.as_ref(), into, hint)?;
        match &taken.owed {
            None => {
                let publish = |change: HoldChange<'_>| self.record(hint, Change::Hold(change));
                self.place(order, ttl_ms, hint, customer, &taken, publish)
            }
            Some(owed) => {
                let owed = &owed[..order.lines.len()];
                self.place_backordered(order, ttl_ms, hint, customer, &taken, owed)
            }
        }
    }

    /// `place` for an order with a line taken past zero: its creation
    /// queues it on the SKUs it owes (`backorders.rs`). Out of line, so the
    /// plain purchase path stays as it was.
    #[cold]
    #[inline(never)]
    fn place_backordered(
        &self,
        order: &Order<'_>,
        ttl_ms: u64,
        hint: usize,
        customer: Option<Arc<str>>,
        taken: &Taken,
        owed: &[u32],
    ) -> Result<Receipt, EngineError> {
        let publish = |change: HoldChange<'_>| self.publish_backordered(hint, change, owed);
        self.place(order, ttl_ms, hint, customer, taken, publish)
    }

    /// Makes the record of an order whose units are taken: `publish` gets
    /// its creation under the shard lock (`HoldTable::insert`). Gives the
    /// units back when no record can be made.
    #[inline(always)]
    fn place(
        &self,
        order: &Order<'_>,
        ttl_ms: u64,
        hint: usize,
        customer: Option<Arc<str>>,
        taken: &Taken,
        publish: impl FnOnce(HoldChange<'_>),
    ) -> Result<Receipt, EngineError> {
        let now_ms = self.clock.now_ms();
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let (status, into) = if order.confirm {
            (HoldStatus::Confirmed, TakeInto::Sold)
        } else {
            (HoldStatus::Held, TakeInto::Held)
        };
        let limit_mask = taken.limit_mask;
        let backordered = taken.owed.is_some();
        let hold = NewHold {
            lines: order.lines,
            customer: customer.clone(),
            limit_mask,
            deadline_ms: expires_at_ms,
            created_ms: now_ms,
            status,
            extensions: 0,
            amounts: None,
            backordered,
        };
        let publish = |id| {
            publish(HoldChange {
                id,
                from: None,
                status,
                at_ms: now_ms,
                deadline_ms: expires_at_ms,
                limit_mask,
                customer: order.customer,
                lines: order.lines,
                extensions: 0,
                changes: None,
                owed: None,
                ticket: 0,
            })
        };
        // `reserve` made room before taking any lock.
        match self.holds.insert(hint, hold, publish) {
            Some(id) => Ok(Receipt {
                id,
                status,
                expires_at_ms,
                replayed: false,
                holds_components: false,
                backordered,
            }),
            None => {
                self.undo(order.lines, taken, into, customer.as_ref(), hint);
                Err(EngineError::CapacityExceeded {
                    what: "reservation records",
                    limit: self.holds.capacity() as u64,
                })
            }
        }
    }

    /// Takes every line's units (and limit counts) into `into`, or none:
    /// a refusal undoes the lines already taken. Returns the limit mask
    /// and the units owed per line (a SKU that sells past zero).
    // Always: see `reserve_once_inline`. Long by design (~77 lines): the
    // refusals are written where they happen; moving the sold-out one out
    // of line (a cold function taking the loop's state) cost a purchase 4
    // instructions and a 3-line cart 7 to 17 (callgrind, `hot_path`).
    #[inline(always)]
    fn take_lines(
        &self,
        lines: &[Line],
        customer: Option<&Arc<str>>,
        into: TakeInto,
        hint: usize,
    ) -> Result<Taken, EngineError> {
        let policy = &self.config.stripe_policy;
        let mut done = Taken {
            limit_mask: 0,
            owed: None,
        };
        for (index, line) in lines.iter().enumerate() {
            let taken = &lines[..index];
            let cell = self.cell(line.sku)?;
            if let Some(limit) = cell.per_customer_limit() {
                let Some(customer) = customer else {
                    self.undo(taken, &done, into, customer, hint);
                    return Err(EngineError::CustomerRequired { sku: line.sku });
                };
                if let Err(OverLimit { already }) =
                    self.ledger
                        .acquire(line.sku, customer, line.quantity, limit)
                {
                    self.undo(taken, &done, into, Some(customer), hint);
                    return Err(EngineError::LimitExceeded {
                        sku: line.sku,
                        limit,
                        already,
                        requested: line.quantity,
                    });
                }
                done.limit_mask |= 1 << index;
            }
            let units = u64::from(line.quantity);
            if let Err(SoldOut {
                available,
                may_backorder,
            }) = cell.take(units, into, hint, policy)
            {
                let past_zero = if may_backorder {
                    self.take_past_zero(cell, units, into, hint)
                } else {
                    Err(SoldOut {
                        available,
                        may_backorder,
                    })
                };
                match past_zero {
                    Ok(0) => {}
                    Ok(owed) => {
                        let per_line = done
                            .owed
                            .get_or_insert_with(|| Box::new([0; MAX_LINES_PER_CART]));
                        per_line[index] = owed as u32;
                    }
                    Err(SoldOut { .. }) => {
                        // Undo this line's limit too: include it in the
                        // undo range as a line with no units taken.
                        if done.limit_mask & (1 << index) != 0 {
                            if let Some(customer) = customer {
                                self.ledger.release(line.sku, customer, line.quantity);
                            }
                            done.limit_mask &= !(1 << index);
                        }
                        self.undo(taken, &done, into, customer, hint);
                        return Err(EngineError::SoldOut {
                            sku: line.sku,
                            available,
                            requested: units,
                        });
                    }
                }
            }
        }
        Ok(done)
    }

    /// Gives back the units of `lines` taken into `into` (dropping those
    /// owed), and their limit counts per the mask.
    fn undo(
        &self,
        lines: &[Line],
        taken: &Taken,
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
            let owed = taken.owed.as_ref().map_or(0, |owed| u64::from(owed[index]));
            if owed > 0 {
                cell.cancel_pending(owed, units - owed, into, hint);
            } else {
                match into {
                    TakeInto::Held => cell.release_held(units, hint),
                    TakeInto::Sold => cell.refund_sold(units, hint),
                }
            }
            if taken.limit_mask & (1 << index) != 0 {
                if let Some(customer) = customer {
                    self.ledger.release(line.sku, customer, line.quantity);
                }
            }
        }
    }
}

pub(super) fn transition_error(
    id: ReservationId,
    transition: Transition,
    error: TransitionError,
) -> EngineError {
    match error {
        TransitionError::Unknown => EngineError::UnknownReservation { id },
        TransitionError::Invalid { status } => EngineError::InvalidTransition {
            id,
            status,
            requested: transition.verb(),
        },
        TransitionError::Exceeds {
            sku,
            requested,
            allowed,
        } => EngineError::ExceedsReservation {
            id,
            sku,
            requested,
            allowed,
            action: transition.verb(),
        },
        TransitionError::Nothing => EngineError::NothingRequested {
            action: transition.verb(),
        },
        // Mapped by the caller, which knows the request's lines.
        TransitionError::NotInReservation { .. } => EngineError::UnknownReservation { id },
    }
}

/// The change `hold` (as it is now) made from status `from`, at `at_ms`.
pub(super) fn hold_change<'a>(hold: &HoldView<'a>, from: HoldStatus, at_ms: u64) -> HoldChange<'a> {
    HoldChange {
        id: hold.id,
        from: Some(from),
        status: hold.status,
        at_ms,
        deadline_ms: hold.deadline_ms,
        limit_mask: hold.limit_mask,
        customer: hold.customer.map(|c| &**c),
        lines: hold.lines,
        extensions: hold.extensions,
        changes: hold.changes,
        owed: None,
        ticket: 0,
    }
}

/// What `take_lines` took: the limit mask (bit `i`: line `i` counted
/// against the customer's limit) and, when some line was taken past zero,
/// the units each line owes.
pub(super) struct Taken {
    limit_mask: u32,
    /// Indexed by line (a thin box: the plain path returns one word).
    owed: Option<Box<[u32; MAX_LINES_PER_CART]>>,
}

/// A customer identifier an order (or a waiting room) may name.
pub fn validate_customer(customer: &str) -> Result<(), EngineError> {
    if customer.is_empty() {
        return Err(EngineError::InvalidCustomer {
            reason: "it is empty",
        });
    }
    if customer.chars().count() > MAX_CUSTOMER_CHARS {
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

pub(super) fn validate_idempotency_key(key: &str) -> Result<(), EngineError> {
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

//! A record's transitions (confirm, cancel, refund, their partial forms,
//! extension), each decided under the record's shard lock: see the module
//! above for why that makes each happen exactly once.

use super::*;

impl HoldTable {
    /// Applies `transition` to record `id` at time `now_ms`, calling `settle`
    /// (under the shard lock) exactly when units must move. Returns the
    /// record's status afterwards.
    ///
    /// A held record whose deadline has passed expires here, first: the
    /// caller then gets `Invalid { status: Expired }`, not a late confirm.
    pub fn transition(
        &self,
        id: ReservationId,
        transition: Transition,
        now_ms: u64,
        mut settle: impl FnMut(Settle, HoldView<'_>),
    ) -> Result<HoldStatus, TransitionError> {
        let mut guard = self.shards[id.shard()].lock();
        let shard = &mut *guard;
        let record = shard.record_mut(id).ok_or(TransitionError::Unknown)?;
        let expired_now = record.status == HoldStatus::Held && now_ms >= record.deadline_ms;
        if expired_now {
            record.status = HoldStatus::Expired;
            settle(Settle::Release, view(id, record));
            shard.held -= 1;
            shard.ended.push_back((now_ms, id));
            return Err(TransitionError::Invalid {
                status: HoldStatus::Expired,
            });
        }
        let target = transition.target();
        if record.status == target {
            return Ok(target);
        }
        if record.partial && transition == Transition::Refund {
            // Its amounts are not what its status implies: refund what is
            // left, by the partial path (which checks everything again).
            drop(guard);
            return self.transition_part(id, transition, None, now_ms, settle);
        }
        let effect = match (record.status, transition) {
            (HoldStatus::Held, Transition::Confirm) => Settle::Confirm,
            (HoldStatus::Held, Transition::Cancel) => Settle::Release,
            (HoldStatus::Confirmed, Transition::Refund) => Settle::Refund,
            (status, _) => return Err(TransitionError::Invalid { status }),
        };
        record.status = target;
        settle(effect, view(id, record));
        if matches!(effect, Settle::Confirm | Settle::Release) {
            shard.held -= 1;
        }
        if target.is_final() {
            shard.ended.push_back((now_ms, id));
        } else {
            shard.confirmed.push_back((now_ms, id));
        }
        Ok(target)
    }

    /// A confirm or refund of part of record `id`: `requested` names, per
    /// SKU of the record, how many units (sold, for a confirm of a held
    /// record: a line's other units, and lines not named, return to stock
    /// at once; given back, for a refund of a confirmed one). `None`: all
    /// of them (the whole transition, or the rest of a partial record).
    /// `settle` gets the per-line amounts before and after in
    /// `HoldView::changes`. A confirm that sells every held unit, or a
    /// refund that gives back every sold one, ends as the whole transition
    /// does; a refund of part leaves the record `Confirmed`, refundable
    /// again up to what is left. Repeating a confirm on a confirmed record
    /// answers `Ok` and changes nothing, as `transition` does.
    // Out of line: the whole transitions (`transition`) call it only for a
    // record already partial, and it must not weigh on their frame.
    #[inline(never)]
    pub fn transition_part(
        &self,
        id: ReservationId,
        transition: Transition,
        requested: Option<&[Line]>,
        now_ms: u64,
        mut settle: impl FnMut(Settle, HoldView<'_>),
    ) -> Result<HoldStatus, TransitionError> {
        debug_assert!(
            transition != Transition::Cancel,
            "a cancel is never partial"
        );
        let mut guard = self.shards[id.shard()].lock();
        let HoldShard {
            slots,
            partial: partials,
            ended,
            confirmed,
            held,
            ..
        } = &mut *guard;
        let slot_key = id.slot() as u32;
        let record = slots
            .get_mut(id.slot())
            .filter(|slot| slot.generation == id.generation())
            .and_then(|slot| slot.record.as_mut())
            .ok_or(TransitionError::Unknown)?;
        if record.status == HoldStatus::Held && now_ms >= record.deadline_ms {
            record.status = HoldStatus::Expired;
            settle(Settle::Release, view(id, record));
            *held -= 1;
            ended.push_back((now_ms, id));
            return Err(TransitionError::Invalid {
                status: HoldStatus::Expired,
            });
        }
        let how = match (record.status, transition) {
            (HoldStatus::Held, Transition::Confirm) => Settle::Confirm,
            (HoldStatus::Confirmed, Transition::Refund) => Settle::Refund,
            (HoldStatus::Confirmed, Transition::Confirm) => return Ok(HoldStatus::Confirmed),
            (status, _) => return Err(TransitionError::Invalid { status }),
        };
        let so_far = record.partial.then(|| partials.get(&slot_key)).flatten();
        let changes = part_changes(record, so_far.map(|a| &**a), transition, requested)?;
        let (whole, target) = part_outcome(record, &changes, transition);
        let from = record.status;
        record.status = target;
        // Whole lines of a record never partial: its status says it all,
        // and the journal and the map need nothing more.
        let plain = whole && !record.partial;
        record.partial = !plain;
        let mut seen = view(id, record);
        seen.changes = (!plain).then_some(&changes[..]);
        settle(how, seen);
        if !plain {
            let amounts = changes.iter().copied().map(LineChange::after);
            partials.insert(slot_key, amounts.collect());
        }
        match (from, target) {
            (HoldStatus::Held, _) => {
                *held -= 1;
                confirmed.push_back((now_ms, id));
            }
            (_, HoldStatus::Refunded) => ended.push_back((now_ms, id)),
            _ => {}
        }
        Ok(target)
    }

    /// Moves held record `id`'s deadline to `now_ms + rule.ttl_ms`, capped
    /// at `rule.max_hold_ms` after its creation, and calls `publish` with
    /// the extended record under the shard lock (so its journal record
    /// comes before any later transition's). Returns the deadline and the
    /// count of extensions after it. A request the current deadline already
    /// covers changes nothing and uses no extension.
    ///
    /// Decided under the same lock as expiry: a record whose deadline has
    /// passed expires here first (`Invalid { status: Expired }`), exactly
    /// as a late confirm does, so an extension never revives an expired
    /// hold and an expiry never ends an extended one early. The timer's
    /// old heap entry stays and is skipped when it comes due.
    pub fn extend(
        &self,
        id: ReservationId,
        rule: ExtendRule,
        now_ms: u64,
        mut settle: impl FnMut(Settle, HoldView<'_>),
        publish: impl FnOnce(HoldView<'_>, u64),
    ) -> Result<(u64, u8), ExtendError> {
        let mut guard = self.shards[id.shard()].lock();
        let shard = &mut *guard;
        let slot = shard
            .slots
            .get_mut(id.slot())
            .filter(|slot| slot.generation == id.generation())
            .ok_or(ExtendError::Unknown)?;
        let held_for = slot.held_ms;
        let record = slot.record.as_mut().ok_or(ExtendError::Unknown)?;
        if record.status == HoldStatus::Held && now_ms >= record.deadline_ms {
            record.status = HoldStatus::Expired;
            settle(Settle::Release, view(id, record));
            shard.held -= 1;
            shard.ended.push_back((now_ms, id));
            return Err(ExtendError::Invalid {
                status: HoldStatus::Expired,
            });
        }
        if record.status != HoldStatus::Held {
            return Err(ExtendError::Invalid {
                status: record.status,
            });
        }
        let wanted_ms = now_ms.saturating_add(rule.ttl_ms);
        if wanted_ms <= record.deadline_ms {
            // It already lasts that long (a retried request, say): nothing
            // to do, and no extension used up.
            return Ok((record.deadline_ms, record.extensions));
        }
        if record.extensions >= rule.max_extensions {
            return Err(ExtendError::TooManyExtensions {
                extensions: record.extensions,
                deadline_ms: record.deadline_ms,
            });
        }
        let created_ms = record.deadline_ms.saturating_sub(u64::from(held_for));
        let deadline_ms = wanted_ms.min(created_ms.saturating_add(rule.max_hold_ms));
        if deadline_ms <= record.deadline_ms {
            return Err(ExtendError::HoldTimeReached {
                extensions: record.extensions,
                deadline_ms: record.deadline_ms,
            });
        }
        record.deadline_ms = deadline_ms;
        record.extensions += 1;
        publish(view(id, record), created_ms);
        slot.held_ms = held_ms(deadline_ms, created_ms);
        shard.expiry.push(Reverse((deadline_ms, id)));
        Ok((deadline_ms, record.extensions))
    }
}

/// The per-line amounts a partial confirm or refund of `requested` makes
/// of `record` (amounts so far in `partial`), checked: every SKU named is
/// one of the record's, a confirm sells at most what each line holds, a
/// refund gives back at most what each line sold and has not yet given
/// back, and either moves at least one unit. `None`: every unit it can.
fn part_changes(
    record: &HoldRecord,
    partial: Option<&[LineAmounts]>,
    transition: Transition,
    requested: Option<&[Line]>,
) -> Result<Vec<LineChange>, TransitionError> {
    let lines = record.lines.as_slice();
    if let Some(requested) = requested {
        let stranger = requested
            .iter()
            .position(|asked| !lines.iter().any(|line| line.sku == asked.sku));
        if let Some(index) = stranger {
            return Err(TransitionError::NotInReservation { index });
        }
    }
    let mut changes = Vec::with_capacity(lines.len());
    let mut moved = 0u64;
    for (index, line) in lines.iter().enumerate() {
        let now = record.amounts(index, partial);
        let all = match transition {
            Transition::Confirm => line.quantity,
            _ => now.confirmed - now.refunded,
        };
        let asked = match requested {
            None => all,
            Some(requested) => requested
                .iter()
                .find(|asked| asked.sku == line.sku)
                .map_or(0, |asked| asked.quantity),
        };
        moved += u64::from(asked);
        let change = match transition {
            Transition::Confirm => LineChange {
                confirmed: asked,
                refunded_before: 0,
                refunded_after: 0,
            },
            _ => LineChange {
                confirmed: now.confirmed,
                refunded_before: now.refunded,
                refunded_after: now.refunded.saturating_add(asked),
            },
        };
        if asked > all {
            return Err(TransitionError::Exceeds {
                sku: line.sku,
                requested: asked,
                allowed: all,
            });
        }
        changes.push(change);
    }
    if moved == 0 {
        return Err(TransitionError::Nothing);
    }
    Ok(changes)
}

/// Whether a part transition's `changes` take in all of `record` (every
/// held unit sold, or every sold unit given back), and the status the
/// record ends in.
fn part_outcome(
    record: &HoldRecord,
    changes: &[LineChange],
    transition: Transition,
) -> (bool, HoldStatus) {
    let whole = match transition {
        Transition::Confirm => changes
            .iter()
            .zip(record.lines.as_slice())
            .all(|(c, line)| c.confirmed == line.quantity),
        _ => changes.iter().all(|c| c.refunded_after == c.confirmed),
    };
    let target = match transition {
        Transition::Refund if whole => HoldStatus::Refunded,
        _ => HoldStatus::Confirmed,
    };
    (whole, target)
}

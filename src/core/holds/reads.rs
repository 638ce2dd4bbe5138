//! Reading records (one by id, the figures of the open ones, every one)
//! and putting them back at start, each under its shard's lock.

use super::*;

impl HoldTable {
    /// Reads record `id`, expiring it first if its deadline has passed (so a
    /// reader never sees `held` after the deadline).
    ///
    /// A read that must expire the record calls `make_room` first, outside
    /// the lock (see `run_timers`); a plain read never waits for it.
    pub fn get(
        &self,
        id: ReservationId,
        now_ms: u64,
        make_room: impl FnOnce(),
        mut settle: impl FnMut(Settle, HoldView<'_>),
    ) -> Option<HoldDocument> {
        let due = |r: &HoldRecord| r.status == HoldStatus::Held && now_ms >= r.deadline_ms;
        let mut guard = self.shards[id.shard()].lock();
        if guard.record(id).is_some_and(due) {
            drop(guard);
            make_room();
            guard = self.shards[id.shard()].lock();
        }
        let shard = &mut *guard;
        let record = shard.record_mut(id)?;
        if record.status == HoldStatus::Held && now_ms >= record.deadline_ms {
            record.status = HoldStatus::Expired;
            settle(Settle::Release, view(id, record));
            shard.held -= 1;
            shard.ended.push_back((now_ms, id));
        }
        shard.document(id)
    }

    /// Puts back a record recovered from the journal, under its original
    /// id, with its timers: a held record is re-armed (and expires on the
    /// next timer pass if its deadline has passed), a confirmed one starts
    /// its refund window at `since_ms`, an ended one its retention.
    ///
    /// Slots between restored records stay unused for the life of this
    /// table: their last generation is unknown, and reusing one could give a
    /// new record the id of an old, pruned one.
    pub fn restore(&self, id: ReservationId, hold: NewHold<'_>, status: HoldStatus, since_ms: u64) {
        let mut guard = self.shards[id.shard()].lock();
        let shard = &mut *guard;
        if shard.slots.len() <= id.slot() {
            shard.slots.resize_with(id.slot() + 1, Slot::default);
        }
        let slot = &mut shard.slots[id.slot()];
        assert!(slot.record.is_none(), "reservation {id} restored twice");
        slot.generation = id.generation();
        let deadline_ms = hold.deadline_ms;
        slot.held_ms = held_ms(deadline_ms, hold.created_ms);
        if let Some(amounts) = hold.amounts {
            shard.partial.insert(id.slot() as u32, amounts.into());
        }
        let slot = &mut shard.slots[id.slot()];
        slot.record = Some(HoldRecord::new(hold, status));
        shard.live += 1;
        self.mark_full(id.shard(), shard.live >= self.max_per_shard);
        match status {
            HoldStatus::Held => {
                shard.held += 1;
                shard.expiry.push(Reverse((deadline_ms, id)));
            }
            HoldStatus::Confirmed => shard.confirmed.push_back((since_ms, id)),
            _ => shard.ended.push_back((since_ms, id)),
        }
    }

    /// Held records, and those of them due by `until_ms` (what the
    /// operator's page shows as "expiring in the next minute"), each shard
    /// exact at the moment it is read.
    ///
    /// No scan of the table: `open` is each shard's count, and the due
    /// ones are found by walking the expiry heap only below entries due by
    /// `until_ms` (a heap's children are never due before their parent),
    /// so a scrape costs the holds due soon, not the holds there are. An
    /// entry an extension or an end left stale is checked against its
    /// record and not counted.
    pub fn held_figures(&self, until_ms: u64) -> HeldFigures {
        let mut figures = HeldFigures::default();
        let mut stack = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            figures.open += shard.held;
            let heap = shard.expiry.as_slice();
            stack.clear();
            stack.push(0usize);
            while let Some(index) = stack.pop() {
                let Some(&Reverse((deadline, id))) = heap.get(index) else {
                    continue;
                };
                if deadline > until_ms {
                    continue;
                }
                let live = shard.record(id).is_some_and(|record| {
                    record.status == HoldStatus::Held && record.deadline_ms == deadline
                });
                figures.due += usize::from(live);
                stack.extend([2 * index + 1, 2 * index + 2]);
            }
        }
        figures
    }

    /// Records in each status, counted shard by shard (each shard exact at
    /// the moment it is read).
    pub fn count_by_status(&self) -> [(HoldStatus, usize); 5] {
        let mut counts = [
            (HoldStatus::Held, 0),
            (HoldStatus::Confirmed, 0),
            (HoldStatus::Cancelled, 0),
            (HoldStatus::Expired, 0),
            (HoldStatus::Refunded, 0),
        ];
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for record in shard.slots.iter().filter_map(|s| s.record.as_ref()) {
                let entry = counts.iter_mut().find(|(s, _)| *s == record.status);
                if let Some((_, n)) = entry {
                    *n += 1;
                }
            }
        }
        counts
    }

    /// Calls `f` for every record (shard by shard, each under its lock).
    pub fn for_each(&self, mut f: impl FnMut(HoldDocument)) {
        for (shard_index, shard) in self.shards.iter().enumerate() {
            let shard = shard.lock();
            for (slot_index, slot) in shard.slots.iter().enumerate() {
                let id = ReservationId::new(slot.generation, shard_index, slot_index);
                if let Some(document) = shard.document(id) {
                    f(document);
                }
            }
        }
    }
}

pub(super) fn view(id: ReservationId, record: &HoldRecord) -> HoldView<'_> {
    HoldView {
        id,
        status: record.status,
        deadline_ms: record.deadline_ms,
        lines: record.lines.as_slice(),
        customer: record.customer.as_ref(),
        limit_mask: record.limit_mask,
        extensions: record.extensions,
        changes: None,
        backordered: record.backordered,
    }
}

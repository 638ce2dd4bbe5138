//! Expiry and pruning inside one shard: bounded work per call and per lock
//! hold, and the generation a reused slot takes; `HoldTable::run_timers`
//! runs them over every shard.

use std::cmp::Reverse;

use super::{view, HoldShard, HoldStatus, HoldTable, HoldView, Retention, Settle, TimerWork};
use crate::core::limits::MAX_TIMER_WORK_PER_SHARD;

/// Most expiries settled per acquisition of a shard lock (see
/// `HoldTable::run_timers`): 64 hold events of at most 425 bytes each stay
/// far inside the room a sink's `make_room` guarantees.
pub(super) const EXPIRIES_PER_LOCK: usize = 64;

/// Expires up to `EXPIRIES_PER_LOCK` due records of one shard (and no more
/// than `budget`). Returns how many, and whether due records are left.
pub(super) fn expire_due(
    shard: &mut HoldShard,
    now_ms: u64,
    budget: &mut usize,
    settle: &mut impl FnMut(Settle, HoldView<'_>),
) -> (usize, bool) {
    let mut expired = 0;
    let mut this_lock = EXPIRIES_PER_LOCK;
    while let Some(&Reverse((deadline, id))) = shard.expiry.peek() {
        if deadline > now_ms {
            return (expired, false);
        }
        if *budget == 0 || this_lock == 0 {
            return (expired, true);
        }
        *budget -= 1;
        shard.expiry.pop();
        let Some(record) = shard.record_mut(id) else {
            continue;
        };
        // Ended, or extended: the extension pushed the entry that is due.
        if record.status != HoldStatus::Held || record.deadline_ms > now_ms {
            continue;
        }
        this_lock -= 1;
        record.status = HoldStatus::Expired;
        settle(Settle::Release, view(id, record));
        shard.held -= 1;
        shard.ended.push_back((now_ms, id));
        expired += 1;
    }
    (expired, false)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Queue {
    Ended,
    Confirmed,
}

/// Frees the slots of records that have sat in `queue` for `retention_ms`
/// and are still in the status that put them there (a confirmed record that
/// was refunded since waits in the ended queue instead). Bounded work.
pub(super) fn prune(
    shard: &mut HoldShard,
    queue: Queue,
    now_ms: u64,
    retention_ms: u64,
    floor: u32,
) -> (usize, bool) {
    let mut pruned = 0;
    for _ in 0..MAX_TIMER_WORK_PER_SHARD {
        let items = match queue {
            Queue::Ended => &mut shard.ended,
            Queue::Confirmed => &mut shard.confirmed,
        };
        let Some(&(since_ms, id)) = items.front() else {
            return (pruned, false);
        };
        if since_ms.saturating_add(retention_ms) > now_ms {
            return (pruned, false);
        }
        items.pop_front();
        let Some(slot) = shard.slots.get_mut(id.slot()) else {
            continue;
        };
        let status = slot.record.as_ref().map(|r| r.status);
        let due = slot.generation == id.generation()
            && match queue {
                Queue::Ended => status.is_some_and(HoldStatus::is_final),
                Queue::Confirmed => status == Some(HoldStatus::Confirmed),
            };
        if !due {
            continue;
        }
        slot.record = None;
        shard.partial.remove(&(id.slot() as u32));
        // A new generation makes the old id unknown rather than an alias of
        // whatever record reuses the slot.
        slot.generation = next_generation(slot.generation, floor);
        shard.free.push(id.slot() as u32);
        shard.live -= 1;
        pruned += 1;
    }
    let items = match queue {
        Queue::Ended => &shard.ended,
        Queue::Confirmed => &shard.confirmed,
    };
    (pruned, !items.is_empty())
}

/// The generation a slot takes when it is reused: the next one of this
/// run's boot (`floor = boot << 16`), wrapping within the boot's 65,536.
pub(super) fn next_generation(current: u32, floor: u32) -> u32 {
    let next = current.wrapping_add(1);
    if current < floor || next & 0xFFFF == floor & 0xFFFF {
        floor
    } else {
        next
    }
}

impl HoldTable {
    /// Expires held records whose deadline is at or before `now_ms`, and
    /// prunes ended and confirmed records past their retention. Bounded per
    /// shard per call; `more` says whether work was left.
    ///
    /// Each expiry is settled (and so recorded) under its shard's lock. So
    /// that a sink's backpressure never waits under that lock, the lock is
    /// taken for at most `EXPIRIES_PER_LOCK` expiries at a time, with
    /// `make_room` called before each time it is taken.
    pub fn run_timers(
        &self,
        now_ms: u64,
        retention: Retention,
        mut make_room: impl FnMut(),
        mut settle: impl FnMut(Settle, HoldView<'_>),
    ) -> TimerWork {
        let mut work = TimerWork::default();
        for (index, shard) in self.shards.iter().enumerate() {
            let mut budget = MAX_TIMER_WORK_PER_SHARD;
            loop {
                make_room();
                let mut guard = shard.lock();
                let (expired, due_left) = expire_due(&mut guard, now_ms, &mut budget, &mut settle);
                work.expired += expired;
                if due_left && budget > 0 {
                    continue;
                }
                work.more |= due_left;
                let shard = &mut *guard;
                let floor = self.floor();
                let (pruned, more) = prune(shard, Queue::Ended, now_ms, retention.ended_ms, floor);
                work.pruned += pruned;
                work.more |= more;
                let refund_ms = retention.refund_window_ms;
                let (pruned, more) = prune(shard, Queue::Confirmed, now_ms, refund_ms, floor);
                work.pruned += pruned;
                work.more |= more;
                self.mark_full(index, shard.live >= self.max_per_shard);
                break;
            }
        }
        work
    }
}

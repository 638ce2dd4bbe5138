//! `HoldTable`: reservations and their lifecycle.
//!
//! A reservation (hold) takes units now and ends exactly once:
//!
//! ```text
//!            confirm            refund
//!   held ─────────────▶ confirmed ─────▶ refunded
//!   ↺ extend
//!     │  cancel
//!     ├──────────────▶ cancelled
//!     │  deadline
//!     └──────────────▶ expired
//! ```
//!
//! # Why a sharded slab
//!
//! Records live in `SHARDS` slabs, each behind its own lock; a thread uses
//! the shard of its CPU, so two CPUs creating holds rarely meet. A record's
//! id packs its slab index and a generation, so lookup is an index, not a
//! hash, and a stale id (a slot that was pruned and reused) is recognised and
//! refused rather than aliased.
//!
//! # Exactly once
//!
//! Every transition — confirm, cancel, refund, extension of a held
//! record's deadline, expiry by the timer, and expiry on touch when a
//! deadline has passed but the timer has not yet run —
//! is decided under the record's shard lock, and the units are settled
//! (returned to stock, counted as sold) by the caller's `settle` callback
//! *before* that lock is released. So two racing transitions are serialised,
//! the loser sees the winner's status, and no observer ever sees a terminal
//! status whose units have not yet been settled. Repeating the transition
//! that already happened is answered as success and changes nothing.
//!
//! Lock order: a hold shard may be held while `settle` takes a stock cell's
//! lock or a customer-limit shard; nothing takes a hold shard while holding
//! either of those.
//!
//! # Timers
//!
//! Each shard keeps a min-heap of `(deadline, id)`, pushed under the lock the
//! insert already holds, so arming a timer costs the hot path one heap push
//! and no extra lock, thread or syscall. `expire_due` pops what is due; an
//! entry whose record has already ended, or whose deadline was extended
//! past it, is skipped (lazy deletion: an extension pushes a new entry).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::limits::SHARDS;
use super::sync::{AtomicU32, AtomicU64, Mutex, Ordering};
pub use super::types::{HoldStatus, Line, LineAmounts, LineChange, ReservationId};

/// A record's lines; one line (the common case) is stored inline.
#[derive(Clone, Debug)]
enum Lines {
    One(Line),
    Many(Box<[Line]>),
}

impl Lines {
    #[inline]
    fn from_slice(lines: &[Line]) -> Lines {
        match lines {
            [one] => Lines::One(*one),
            many => Lines::Many(many.into()),
        }
    }

    fn as_slice(&self) -> &[Line] {
        match self {
            Lines::One(line) => std::slice::from_ref(line),
            Lines::Many(lines) => lines,
        }
    }
}

/// What a new record holds.
#[derive(Clone, Debug)]
pub struct NewHold<'a> {
    pub lines: &'a [Line],
    pub customer: Option<Arc<str>>,
    /// Bit `i` set: line `i` was counted against the customer's limit, and
    /// must be given back to it when the units return.
    pub limit_mask: u32,
    pub deadline_ms: u64,
    /// When the record is made (the start of an immediate purchase's refund
    /// window).
    pub created_ms: u64,
    /// `Held`, or `Confirmed` for an immediate purchase.
    pub status: HoldStatus,
    /// Extensions so far (0 for a new record; recovery restores it).
    pub extensions: u8,
    /// Per line, what was sold and refunded, for a record that was
    /// confirmed or refunded in part (recovery restores it); `None` when
    /// its status says it all.
    pub amounts: Option<&'a [LineAmounts]>,
    /// Some line was taken past zero: its transitions settle through the
    /// SKUs' backorder queues (`Engine::settle_backordered`).
    pub backordered: bool,
}

/// How long records stay after they end or are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Cancelled, expired and refunded records stay readable this long.
    pub ended_ms: u64,
    /// Confirmed records stay refundable this long after confirmation; then
    /// they are pruned (the sale stands; a later refund is an operator
    /// adjust). Without it every sale would be kept in memory forever.
    pub refund_window_ms: u64,
}

/// What the engine must do with a record's units as it changes status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// held → sold.
    Confirm,
    /// held → available (cancel or expiry).
    Release,
    /// sold → available (refund).
    Refund,
}

/// A record as the settle callback sees it.
#[derive(Clone, Copy, Debug)]
pub struct HoldView<'a> {
    pub id: ReservationId,
    /// The status the record has just moved to.
    pub status: HoldStatus,
    pub deadline_ms: u64,
    pub lines: &'a [Line],
    pub customer: Option<&'a Arc<str>>,
    pub limit_mask: u32,
    /// Times its deadline was extended.
    pub extensions: u8,
    /// Per line, the amounts before and after this transition when it was
    /// partial or the record already was; `None`: whole lines (all sold on
    /// confirm, all back on refund).
    pub changes: Option<&'a [LineChange]>,
    /// Some line was taken past zero (see `NewHold::backordered`).
    pub backordered: bool,
}

/// A requested transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Confirm,
    Cancel,
    Refund,
}

impl Transition {
    pub fn verb(self) -> &'static str {
        match self {
            Transition::Confirm => "confirmed",
            Transition::Cancel => "cancelled",
            Transition::Refund => "refunded",
        }
    }

    fn target(self) -> HoldStatus {
        match self {
            Transition::Confirm => HoldStatus::Confirmed,
            Transition::Cancel => HoldStatus::Cancelled,
            Transition::Refund => HoldStatus::Refunded,
        }
    }
}

/// Why a transition did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionError {
    Unknown,
    /// The record is in `status`, from which the transition is not allowed.
    Invalid {
        status: HoldStatus,
    },
    /// A partial confirm or refund asks the line of `sku` for more units
    /// than it has to give (`allowed`: held units, or sold units not yet
    /// refunded).
    Exceeds {
        sku: super::types::SkuId,
        requested: u32,
        allowed: u32,
    },
    /// A partial confirm or refund names a SKU the record has no line of.
    NotInReservation {
        index: usize,
    },
    /// A partial confirm or refund of no unit at all (a confirm of nothing
    /// is a cancel; say so).
    Nothing,
}

/// What an extension may do (`EngineConfig` holds the shop's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendRule {
    /// The new deadline is `now + ttl_ms`, never earlier than the current
    /// one (an extension never shortens a hold).
    pub ttl_ms: u64,
    /// Most extensions of one record.
    pub max_extensions: u8,
    /// Latest deadline, counted from the record's creation.
    pub max_hold_ms: u64,
}

/// Why an extension did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtendError {
    Unknown,
    /// The record is not held (or has just expired on this touch).
    Invalid {
        status: HoldStatus,
    },
    /// It was extended `max_extensions` times already.
    TooManyExtensions {
        extensions: u8,
        deadline_ms: u64,
    },
    /// Its deadline is already `created + max_hold_ms`.
    HoldTimeReached {
        extensions: u8,
        deadline_ms: u64,
    },
}

/// A copy of a record for readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldDocument {
    pub id: ReservationId,
    pub status: HoldStatus,
    pub lines: Vec<Line>,
    pub customer: Option<Arc<str>>,
    pub deadline_ms: u64,
    pub extensions: u8,
    /// Per line: sold and refunded units.
    pub amounts: Vec<LineAmounts>,
    /// Some line is still owed units: the engine fills in `owed`.
    pub backordered: bool,
    /// Per line, units still owed (backordered, not yet received); empty
    /// when nothing is owed.
    pub owed: Vec<u32>,
}

#[derive(Debug)]
struct HoldRecord {
    lines: Lines,
    customer: Option<Arc<str>>,
    deadline_ms: u64,
    limit_mask: u32,
    extensions: u8,
    /// Confirmed or refunded in part: its amounts are in the shard's
    /// `partial` map (kept out of the record, which stays within the memory
    /// budget; a sale's records never need it).
    partial: bool,
    /// Some line was taken past zero (`NewHold::backordered`).
    backordered: bool,
    status: HoldStatus,
}

impl HoldRecord {
    #[inline]
    fn new(hold: NewHold<'_>, status: HoldStatus) -> HoldRecord {
        HoldRecord {
            lines: Lines::from_slice(hold.lines),
            customer: hold.customer,
            deadline_ms: hold.deadline_ms,
            limit_mask: hold.limit_mask,
            extensions: hold.extensions,
            partial: hold.amounts.is_some(),
            backordered: hold.backordered,
            status,
        }
    }

    /// Line `index`'s amounts: from `partial` (the shard's entry for this
    /// record) when it has one, else what its status implies.
    fn amounts(&self, index: usize, partial: Option<&[LineAmounts]>) -> LineAmounts {
        match partial.and_then(|amounts| amounts.get(index)) {
            Some(amounts) => *amounts,
            None => LineAmounts::whole(self.status, self.lines.as_slice()[index].quantity),
        }
    }

    fn document(&self, id: ReservationId, partial: Option<&[LineAmounts]>) -> HoldDocument {
        HoldDocument {
            id,
            status: self.status,
            lines: self.lines.as_slice().to_vec(),
            customer: self.customer.clone(),
            deadline_ms: self.deadline_ms,
            extensions: self.extensions,
            amounts: (0..self.lines.as_slice().len())
                .map(|index| self.amounts(index, partial))
                .collect(),
            backordered: self.backordered,
            owed: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    /// The record's deadline minus its creation time: how long it has been
    /// held for, so `deadline_ms - held_ms` is when it was made (what the
    /// cap on total hold time counts from). Kept here, in the padding after
    /// `generation`, rather than as a `u64` in the record: a slot stays at
    /// 56 bytes (the memory budget, `tests.rs`). A `u32` holds it: a hold
    /// lasts at most `MAX_HOLD_MS`.
    held_ms: u32,
    record: Option<HoldRecord>,
}

/// `deadline_ms - created_ms` as a slot keeps it.
fn held_ms(deadline_ms: u64, created_ms: u64) -> u32 {
    u32::try_from(deadline_ms.saturating_sub(created_ms)).unwrap_or(u32::MAX)
}

/// `HoldTable::held_figures`: holds open now, and those due by a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldFigures {
    pub open: usize,
    pub due: usize,
}

#[derive(Debug, Default)]
struct HoldShard {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Records in use (slots minus free).
    live: usize,
    /// Records now held: `held_figures` reads it instead of a scan. Up on
    /// every insert or restore as held, down wherever a record leaves held
    /// (each such site writes `record.status` and this count together).
    held: usize,
    expiry: BinaryHeap<Reverse<(u64, ReservationId)>>,
    /// Final records in the order they ended, with when: pruned after the
    /// retention period.
    ended: VecDeque<(u64, ReservationId)>,
    /// Confirmed records in the order they were confirmed, with when:
    /// pruned after the refund window.
    confirmed: VecDeque<(u64, ReservationId)>,
    /// The amounts of records confirmed or refunded in part, by slot.
    partial: hashbrown::HashMap<u32, Box<[LineAmounts]>, foldhash::fast::RandomState>,
}

impl HoldShard {
    fn record_mut(&mut self, id: ReservationId) -> Option<&mut HoldRecord> {
        let slot = self.slots.get_mut(id.slot())?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.record.as_mut()
    }

    fn record(&self, id: ReservationId) -> Option<&HoldRecord> {
        let slot = self.slots.get(id.slot())?;
        if slot.generation != id.generation() {
            return None;
        }
        slot.record.as_ref()
    }

    /// Record `id` as readers see it.
    fn document(&self, id: ReservationId) -> Option<HoldDocument> {
        let record = self.record(id)?;
        let partial = record
            .partial
            .then(|| self.partial.get(&(id.slot() as u32)))
            .flatten();
        Some(record.document(id, partial.map(|a| &**a)))
    }
}

/// Outcome of a bounded timer pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerWork {
    pub expired: usize,
    pub pruned: usize,
    /// Some shard hit `MAX_TIMER_WORK_PER_SHARD`: call again soon.
    pub more: bool,
}

/// All reservations. See the module docs.
#[derive(Debug)]
pub struct HoldTable {
    shards: Box<[CachePadded<Mutex<HoldShard>>]>,
    max_per_shard: usize,
    /// The lowest generation a slot may take in this run: `boot << 16`,
    /// so no id issued in an earlier run is ever issued again (see
    /// `set_generation_floor`). Written once, before the table is shared.
    generation_floor: AtomicU32,
    /// Bit `i` set: shard `i` was full when last looked at under its lock.
    /// Only a hint for where `insert` starts (it checks under the lock, and
    /// tries every shard before it refuses), so a stale bit costs a probe,
    /// never a wrong answer. Written when a shard fills or a timer pass
    /// gives a full one room: a few dozen times a sale, not per purchase.
    full: CachePadded<AtomicU64>,
}

// One bit per shard in `HoldTable::full`.
const _: () = assert!(SHARDS <= 64);

/// The shard an insert with `hint` starts at once its own shard (`hint`
/// modulo `SHARDS`) is full: the `hint`-th (modulo their number) of those
/// with room, so CPUs whose own shards filled go on in different shards
/// instead of converging on the first with room; its own when every shard
/// looked full. Out of line: a sale reaches it only once shards fill.
#[cold]
#[inline(never)]
fn shard_with_room(hint: usize, full: u64) -> usize {
    let mut room = !full & (u64::MAX >> (64 - SHARDS));
    let count = room.count_ones() as usize;
    if count == 0 {
        return hint % SHARDS;
    }
    for _ in 0..hint % count {
        room &= room - 1; // Clears the lowest bit with room.
    }
    room.trailing_zeros() as usize
}

impl HoldTable {
    /// `max_records` bounds live records (open, confirmed, and ended but not
    /// yet pruned) across all shards.
    pub fn new(max_records: usize) -> HoldTable {
        let max_per_shard = max_records
            .div_ceil(SHARDS)
            .clamp(1, (u32::MAX as usize) / SHARDS);
        HoldTable {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HoldShard::default())))
                .collect(),
            max_per_shard,
            generation_floor: AtomicU32::new(0),
            full: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Makes every slot that is first used, or reused, from now on take a
    /// generation of at least `floor`. Recovery sets it to this run's boot
    /// number `<< 16` (the boot number is persisted in the store before
    /// serving), so a restarted server never hands out an id it handed out
    /// before, even for slots whose records were pruned and forgotten.
    /// Within a run a slot cycles through the 65,536 generations of its
    /// boot; at the default one-hour retention that is over seven years of
    /// reuse of one slot before an id could repeat.
    pub fn set_generation_floor(&self, floor: u32) {
        // Relaxed: set before the table is shared (recovery), read under
        // shard locks afterwards; the Arc that shares the engine publishes it.
        self.generation_floor.store(floor, Ordering::Relaxed);
    }

    #[inline]
    fn floor(&self) -> u32 {
        // Relaxed: see `set_generation_floor`.
        self.generation_floor.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.max_per_shard * SHARDS
    }

    /// Stores a new record, in the shard of `hint` when it has room and
    /// otherwise in the next shard that has: the capacity is a limit on the
    /// whole table, not on one CPU's shard. `None` when every shard is full
    /// (the caller gives the units back and reports the capacity).
    ///
    /// `publish` is called with the new id under the shard lock, before any
    /// other thread can see the record: its creation is recorded before any
    /// transition of it can be (`change.rs`).
    ///
    /// Always inline: a purchase's insert is part of its one function
    /// (`Engine::reserve_once_inline`); a call costs it ~20 instructions.
    #[inline(always)]
    pub fn insert(
        &self,
        hint: usize,
        hold: NewHold<'_>,
        publish: impl FnOnce(ReservationId),
    ) -> Option<ReservationId> {
        debug_assert!(!hold.lines.is_empty());
        debug_assert!(matches!(
            hold.status,
            HoldStatus::Held | HoldStatus::Confirmed
        ));
        let own = hint % SHARDS;
        // Relaxed: a hint, checked below under each shard's lock.
        let full = self.full.load(Ordering::Relaxed);
        let start = match full & (1 << own) {
            0 => own,
            _ => shard_with_room(hint, full),
        };
        for probe in 0..SHARDS {
            let shard_index = (start + probe) % SHARDS;
            let mut shard = self.shards[shard_index].lock();
            if shard.live >= self.max_per_shard {
                self.mark_full(shard_index, true);
                continue;
            }
            let id = Self::insert_into(&mut shard, shard_index, hold, self.floor());
            if shard.live == self.max_per_shard {
                self.mark_full(shard_index, true);
            }
            publish(id);
            return Some(id);
        }
        None
    }

    /// Sets or clears shard `index`'s bit in `full`; called under its lock,
    /// so a shard's bit changes in the order its lock is taken. Relaxed: the
    /// bit is a hint (see `full`); the locks order everything it guards.
    #[cold]
    #[inline(never)]
    fn mark_full(&self, index: usize, is_full: bool) {
        let bit = 1u64 << index;
        let marked = self.full.load(Ordering::Relaxed) & bit != 0;
        match (marked, is_full) {
            (false, true) => {
                self.full.fetch_or(bit, Ordering::Relaxed);
            }
            (true, false) => {
                self.full.fetch_and(!bit, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    // Always: `insert` has two callers' instances (a plain order's and a
    // backordered one's), and left to itself the compiler stopped inlining
    // this into the purchase path (+23 instructions per purchase).
    #[inline(always)]
    fn insert_into(
        shard: &mut HoldShard,
        shard_index: usize,
        hold: NewHold<'_>,
        floor: u32,
    ) -> ReservationId {
        let (status, deadline_ms, created_ms) = (hold.status, hold.deadline_ms, hold.created_ms);
        let record = HoldRecord::new(hold, status);
        let slot_index = match shard.free.pop() {
            Some(free) => free as usize,
            None => {
                shard.slots.push(Slot {
                    generation: floor,
                    held_ms: 0,
                    record: None,
                });
                shard.slots.len() - 1
            }
        };
        let slot = &mut shard.slots[slot_index];
        debug_assert!(slot.record.is_none(), "a free slot holds no record");
        slot.record = Some(record);
        slot.held_ms = held_ms(deadline_ms, created_ms);
        let id = ReservationId::new(slot.generation, shard_index, slot_index);
        shard.live += 1;
        match status {
            HoldStatus::Held => {
                shard.held += 1;
                shard.expiry.push(Reverse((deadline_ms, id)));
            }
            _ => shard.confirmed.push_back((created_ms, id)),
        }
        id
    }
}

mod reads;
#[cfg(all(test, not(loom)))]
mod tests;
mod timers;
mod transitions;

use reads::view;

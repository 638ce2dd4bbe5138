//! The change feed: every durable state change as an event with a dense
//! position, for the rest of the shop.
//!
//! # Where positions come from
//!
//! The journal already has a total order of batches; the feed adds one
//! inside each batch (`order.rs` says which, and why the counts it reports
//! are never negative) and numbers the events 1, 2, 3, ... across batches.
//! Nothing on the purchase path changes: the writer hands each durable
//! batch's bytes to [`Feed::push`] (one copy, under the lock the fold
//! already takes), and events are made from them only when someone reads
//! the feed or a checkpoint writes it to the store (`materialize`).
//!
//! A batch's bytes are fixed once durable and its marker carries its time,
//! so a recovery that replays the same batches gives every event the same
//! position, time and counts: the event id (`{feed id}-{position}`) is the
//! same on every delivery, before and after a crash. The store's `events`
//! table (the outbox) is written in the same transaction as the settled
//! counts, so the two never disagree; recovery continues numbering from the
//! store's next position.
//!
//! Only durable batches reach the feed: nothing a consumer saw can be lost
//! in a crash, in `sync` and `async` alike.

mod make;
mod order;

pub use order::{feed_order, Chain, Link, Step};

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::core::cell::Fill;
use crate::core::engine::SaleWindow;
use crate::core::limits::FEED_EVENTS_IN_MEMORY;
use crate::core::public_id::{PublicIdText, PublicIds};
use crate::core::types::{HoldStatus, LineAmounts, LineChange, LineOwed, SkuId};
use crate::durable::event::{Event, HoldEvent, LimitChange};
use crate::durable::journal::segment::{self, Position};
use crate::durable::journal::DurableBatch;
use crate::durable::settled::{effect_owed, Settled};

/// What happened. The text forms are the contract's `type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedKind {
    ReservationCreated,
    ReservationConfirmed,
    ReservationCancelled,
    ReservationExpired,
    ReservationRefunded,
    /// A held reservation's deadline moved later (`deadline_ms` is the new
    /// one); no units move.
    ReservationExtended,
    SkuCreated,
    /// An operator change (restock, adjust, set, limit).
    SkuChanged,
    /// A record-less sale (`Engine::sell`, library callers only).
    SkuSold,
    /// `available` reached 0.
    SkuSoldOut,
    /// `available` left 0.
    SkuBackInStock,
    /// `available` fell below the SKU's low-stock threshold (or a new
    /// threshold put it below).
    SkuLowStock,
    /// A restock gave units to a reservation owed them (one event per
    /// reservation and SKU).
    ReservationBackorderFilled,
}

impl FeedKind {
    pub const ALL: [FeedKind; 13] = [
        FeedKind::ReservationCreated,
        FeedKind::ReservationConfirmed,
        FeedKind::ReservationCancelled,
        FeedKind::ReservationExpired,
        FeedKind::ReservationRefunded,
        FeedKind::ReservationExtended,
        FeedKind::SkuCreated,
        FeedKind::SkuChanged,
        FeedKind::SkuSold,
        FeedKind::SkuSoldOut,
        FeedKind::SkuBackInStock,
        FeedKind::SkuLowStock,
        FeedKind::ReservationBackorderFilled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::ReservationCreated => "reservation.created",
            FeedKind::ReservationConfirmed => "reservation.confirmed",
            FeedKind::ReservationCancelled => "reservation.cancelled",
            FeedKind::ReservationExpired => "reservation.expired",
            FeedKind::ReservationRefunded => "reservation.refunded",
            FeedKind::ReservationExtended => "reservation.extended",
            FeedKind::SkuCreated => "sku.created",
            FeedKind::SkuChanged => "sku.changed",
            FeedKind::SkuSold => "sku.sold",
            FeedKind::SkuSoldOut => "sku.sold_out",
            FeedKind::SkuBackInStock => "sku.back_in_stock",
            FeedKind::SkuLowStock => "sku.low_stock",
            FeedKind::ReservationBackorderFilled => "reservation.backorder_filled",
        }
    }

    pub fn from_name(name: &str) -> Option<FeedKind> {
        FeedKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The event a reservation's transition to `status` is.
    fn of_transition(from: Option<HoldStatus>, status: HoldStatus) -> FeedKind {
        match (from, status) {
            (None, _) => FeedKind::ReservationCreated,
            // A refund of part: still confirmed for the rest.
            (Some(HoldStatus::Confirmed), HoldStatus::Confirmed) => FeedKind::ReservationRefunded,
            (_, HoldStatus::Confirmed) => FeedKind::ReservationConfirmed,
            (_, HoldStatus::Cancelled) => FeedKind::ReservationCancelled,
            (_, HoldStatus::Expired) => FeedKind::ReservationExpired,
            (_, HoldStatus::Refunded) => FeedKind::ReservationRefunded,
            (Some(_), HoldStatus::Held) => FeedKind::ReservationExtended,
        }
    }
}

/// A SKU's counts after an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedCounts {
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub received: i64,
    /// Units on hand kept back from sale (outside `received`).
    pub safety_stock: i64,
    /// Units sold or held past zero, not yet received (outside `held`
    /// and `sold`).
    pub backordered: i64,
}

impl FeedCounts {
    /// Units physically there and not yet sold (`SkuDocument::on_hand`).
    pub fn on_hand(&self) -> i64 {
        self.available + self.held + self.safety_stock
    }
}

/// The reservation a reservation event is about; a cart's events (one per
/// line SKU) share it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedReservation {
    /// The public id (`core::public_id`): the only form that leaves.
    pub public_id: PublicIdText,
    /// `None` for a new reservation.
    pub from: Option<HoldStatus>,
    pub status: HoldStatus,
    pub customer: Option<Box<str>>,
    /// (SKU name, quantity), in the reservation's order.
    pub lines: Vec<(Arc<str>, u32)>,
    /// Per line, sold and refunded units after the change, for a record
    /// confirmed or refunded in part; `None`: what `status` implies.
    pub amounts: Option<Vec<LineAmounts>>,
    pub deadline_ms: u64,
}

/// An operator change's details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedOperator {
    pub delta: i64,
    pub version: u64,
    /// `Some` when the change set the per-customer limit (to `None`: off).
    pub limit: Option<Option<u32>>,
    /// `Some` when the change set the low-stock threshold (`None`: off).
    pub low_stock: Option<Option<u32>>,
    /// `Some` when the change set the sale window (to this window).
    pub window: Option<SaleWindow>,
}

/// A backorder fill's details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedFill {
    /// The reservation's public id.
    pub public_id: PublicIdText,
    /// Units given by this fill.
    pub units: u32,
    /// Units the reservation is still owed of this SKU.
    pub owed_after: u32,
}

/// One event of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEvent {
    pub position: u64,
    pub kind: FeedKind,
    pub at_ms: u64,
    pub sku: Arc<str>,
    pub counts: FeedCounts,
    pub reservation: Option<Arc<FeedReservation>>,
    pub operator: Option<FeedOperator>,
    /// Units of a record-less sale.
    pub units: Option<u32>,
    /// A backorder fill (`reservation.backorder_filled`).
    pub fill: Option<FeedFill>,
}

impl FeedEvent {
    /// The event's id: the same on every delivery, and distinct across
    /// data directories (`feed_id` comes from the directory's key).
    pub fn id(&self, feed_id: u64) -> String {
        event_id(feed_id, self.position)
    }
}

/// `{feed id as 16 hex}-{position}`.
pub fn event_id(feed_id: u64, position: u64) -> String {
    format!("{feed_id:016x}-{position}")
}

/// Which events a reader wants.
#[derive(Clone, Debug, Default)]
pub struct FeedFilter {
    pub sku: Option<Box<str>>,
    /// Empty: every kind.
    pub kinds: Vec<FeedKind>,
}

impl FeedFilter {
    pub fn matches(&self, event: &FeedEvent) -> bool {
        // A SKU's events include its locations' (`sku/location`).
        let of_sku = |sku: &str| {
            let name = &*event.sku;
            name == sku
                || name.strip_prefix(sku).is_some_and(|rest| {
                    rest.starts_with(crate::core::catalogue::LOCATION_SEPARATOR)
                })
        };
        self.sku.as_deref().is_none_or(of_sku)
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }
}

/// A page of the feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// Resume after this position: past every event looked at, matching
    /// the filter or not, so a narrow filter still moves forward.
    pub next_after: u64,
}

/// Where a read must go.
#[derive(Debug)]
pub enum FeedRead {
    Page(FeedPage),
    /// Older than memory holds: read the store from `after`.
    FromStore,
    /// `after` is past the newest event, `last` (a consumer from another
    /// data directory, or one restored from an older backup).
    Ahead {
        last: u64,
    },
}

#[derive(Clone, Debug)]
struct FeedSku {
    name: Arc<str>,
    counts: FeedCounts,
    low_stock: Option<u32>,
}

/// A durable batch not yet turned into events.
struct RawBatch {
    frames: Vec<u8>,
    end: Position,
    at_ms: u64,
}

struct FeedInner {
    public_ids: PublicIds,
    skus: Vec<Option<FeedSku>>,
    /// The position the next event gets.
    next_position: u64,
    raw: VecDeque<RawBatch>,
    /// Made events, positions contiguous and ending at `next_position - 1`.
    events: VecDeque<FeedEvent>,
    /// The journal position the made events reach.
    made_through: Position,
    /// Per made batch not yet saved: its end and the position after its
    /// last event, so a checkpoint writes exactly the events of the
    /// batches it covers.
    boundaries: VecDeque<(Position, u64)>,
    /// Every event up to here is in the store.
    saved_through: u64,
    /// Events whose counts came out negative (a broken invariant; logged).
    negative_counts: u64,
    /// SKUs whose restock in the batch being made fills backorders, with
    /// their counts before it: their crossings (back in stock, sold out,
    /// low stock) are judged once the batch is made, not between the
    /// restock and its fills (the units never were available to buyers).
    deferred: Vec<(usize, FeedCounts)>,
    /// A batch's decoded events, emptied by `feed_order`: the room is kept
    /// from batch to batch.
    decoded: Vec<Event>,
}

/// The feed: durable batches in, events out.
pub struct Feed {
    /// Durable batches not yet taken in by `inner`. A lock of its own that
    /// `push` holds only to append: the journal's writer calls `push`, and
    /// must never wait while a reader turns a large backlog into events.
    pending: Mutex<VecDeque<RawBatch>>,
    inner: Mutex<FeedInner>,
    /// Notified whenever a batch arrives; blocking readers wait on it with
    /// `pending` locked.
    arrived: Condvar,
    wakers: Mutex<Vec<Waker>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed continuing from `settled` (the store's checkpoint: names and
    /// counts), whose next event is `settled.feed_next_position`.
    pub fn new(public_ids: PublicIds, settled: &Settled) -> Feed {
        let skus = settled
            .skus
            .iter()
            .map(|sku| {
                sku.as_ref().map(|sku| FeedSku {
                    name: Arc::from(&*sku.name),
                    low_stock: sku.low_stock,
                    counts: FeedCounts {
                        available: sku.available(),
                        held: sku.held,
                        sold: sku.sold,
                        received: sku.received,
                        safety_stock: sku.safety_stock as i64,
                        backordered: sku.backordered,
                    },
                })
            })
            .collect();
        let next = settled.feed_next_position.max(1);
        Feed {
            pending: Mutex::new(VecDeque::new()),
            inner: Mutex::new(FeedInner {
                public_ids,
                skus,
                next_position: next,
                raw: VecDeque::new(),
                events: VecDeque::new(),
                made_through: settled.position,
                boundaries: VecDeque::new(),
                saved_through: next - 1,
                negative_counts: 0,
                deferred: Vec::new(),
                decoded: Vec::new(),
            }),
            arrived: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Takes a durable batch (the writer's sink, and recovery's replay).
    pub fn push(&self, batch: &DurableBatch<'_>) {
        if batch.frames.is_empty() {
            return;
        }
        let raw = RawBatch {
            frames: batch.frames.to_vec(),
            end: batch.end,
            at_ms: batch.at_ms,
        };
        self.pending.lock().push_back(raw);
        self.arrived.notify_all();
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for waker in wakers {
            waker.wake();
        }
    }

    /// `inner`, with every pending batch moved into it (in order: batches
    /// are pushed in journal order, and taken in under `inner`).
    fn lock(&self) -> parking_lot::MutexGuard<'_, FeedInner> {
        let mut inner = self.inner.lock();
        let pending = std::mem::take(&mut *self.pending.lock());
        inner.raw.extend(pending);
        inner
    }

    /// `inner` with every durable batch up to `through` (all when `None`)
    /// made into events: the batches pending on entry, one per hold of the
    /// lock. A backlog of millions of events (the next checkpoint of a busy
    /// sale, or a reader after a quiet spell) is made in steps, so readers,
    /// `/metrics` and the checkpointer take turns instead of one of them
    /// holding the feed for seconds.
    fn made(&self, through: Option<Position>) -> parking_lot::MutexGuard<'_, FeedInner> {
        let mut inner = self.lock();
        loop {
            let due = inner
                .raw
                .front()
                .is_some_and(|batch| through.is_none_or(|through| batch.end <= through));
            if !due {
                return inner;
            }
            let batch = inner.raw.pop_front().expect("front exists");
            inner.make(batch);
            drop(inner);
            // Not `lock()`: batches pushed since entry wait for the next
            // caller, so a reader under load is never kept here chasing them.
            inner = self.inner.lock();
        }
    }

    /// The oldest position memory holds (the next one when it holds none).
    pub fn first_in_memory(&self) -> u64 {
        let inner = self.lock();
        inner
            .events
            .front()
            .map_or(inner.next_position, |e| e.position)
    }

    /// The position of the last durable event (0 before the first).
    pub fn last_position(&self) -> u64 {
        let inner = self.made(None);
        inner.next_position - 1
    }

    /// Events after `after` matching `filter`, at most `limit` looked at
    /// (from memory), or `FromStore` when memory no longer holds `after + 1`.
    pub fn read(&self, after: u64, limit: usize, filter: &FeedFilter) -> FeedRead {
        let inner = self.made(None);
        let last = inner.next_position - 1;
        let first = inner
            .events
            .front()
            .map_or(inner.next_position, |e| e.position);
        if after > last {
            return FeedRead::Ahead { last };
        }
        if after == last {
            return FeedRead::Page(FeedPage {
                events: Vec::new(),
                next_after: after,
            });
        }
        if after + 1 < first {
            return FeedRead::FromStore;
        }
        let skip = (after + 1 - first) as usize;
        let mut page = FeedPage {
            events: Vec::new(),
            next_after: after,
        };
        for event in inner.events.iter().skip(skip).take(limit) {
            page.next_after = event.position;
            if filter.matches(event) {
                page.events.push(event.clone());
            }
        }
        FeedRead::Page(page)
    }

    /// Waits until an event past `after` is durable, or `timeout` passes.
    /// Returns whether one is.
    pub fn wait_past(&self, after: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let past = |feed: &Feed| {
            let inner = feed.made(None);
            inner.next_position - 1 > after
        };
        loop {
            if past(self) {
                return true;
            }
            // Waits on `pending`'s lock, the one `push` appends under: a
            // batch pushed after the look above is either seen here or
            // notified once this thread is waiting.
            let mut pending = self.pending.lock();
            if !pending.is_empty() {
                continue;
            }
            if self.arrived.wait_until(&mut pending, deadline).timed_out() {
                drop(pending);
                return past(self);
            }
        }
    }

    /// Whether an event past `after` is durable; if not, `waker` is woken
    /// when the next batch arrives (the async form of `wait_past`).
    pub fn poll_past(&self, after: u64, waker: &Waker) -> bool {
        // The waker is registered before looking, so a batch that arrives
        // in between wakes it.
        {
            let mut wakers = self.wakers.lock();
            if !wakers.iter().any(|w| w.will_wake(waker)) {
                wakers.push(waker.clone());
            }
        }
        let inner = self.made(None);
        inner.next_position - 1 > after
    }

    /// The events a checkpoint at `through` (a batch boundary) must write:
    /// those after the last saved one, up to the end of the batches it
    /// covers; and the position that follows them.
    pub fn unsaved_through(&self, through: Position) -> (Vec<FeedEvent>, u64) {
        let mut events = Vec::new();
        let next = self.unsaved_through_into(through, &mut events);
        (events, next)
    }

    /// `unsaved_through`, into `events` (emptied first, its capacity kept:
    /// the checkpointer hands the same buffer back every time, so a sale's
    /// checkpoints do not fault in a fresh 100 MB of pages each).
    pub fn unsaved_through_into(&self, through: Position, events: &mut Vec<FeedEvent>) -> u64 {
        events.clear();
        let (mut from, next) = {
            let inner = self.made(Some(through));
            // Not popped here: a failed save takes the same events again.
            let next = inner
                .boundaries
                .iter()
                .take_while(|(end, _)| *end <= through)
                .last()
                .map_or(inner.saved_through + 1, |&(_, after)| after);
            (inner.saved_through + 1, next)
        };
        // Copied a chunk per hold of the lock, for the reason `made` gives.
        // Only `mark_saved`, which the checkpointer alone calls after this,
        // drops events from the front: positions `from..next` stay put.
        const CHUNK: u64 = 1 << 14;
        events.reserve(next.saturating_sub(from) as usize);
        while from < next {
            let inner = self.inner.lock();
            let first = inner
                .events
                .front()
                .map_or(inner.next_position, |e| e.position);
            assert!(first <= from, "unsaved events were dropped");
            let start = (from - first) as usize;
            let count = CHUNK.min(next - from) as usize;
            events.extend(inner.events.range(start..start + count).cloned());
            from += count as u64;
        }
        next
    }

    /// Records that the store holds every event before `next_position`, and
    /// drops the oldest saved events from memory past the memory limit.
    pub fn mark_saved(&self, next_position: u64) {
        let mut inner = self.lock();
        inner.saved_through = inner.saved_through.max(next_position - 1);
        let saved = inner.saved_through;
        while inner
            .boundaries
            .front()
            .is_some_and(|&(_, after)| after <= saved + 1)
        {
            inner.boundaries.pop_front();
        }
        // Events pile up between checkpoints: the length now is this
        // interval's peak.
        let peak = inner.events.len();
        while inner.events.len() > FEED_EVENTS_IN_MEMORY
            && inner
                .events
                .front()
                .is_some_and(|e| e.position <= inner.saved_through)
        {
            inner.events.pop_front();
        }
        // A sale's peak (192 bytes an event, a few hundred thousand between
        // checkpoints) is not kept for the hours after it: once an
        // interval's peak is under a quarter of the capacity, all but
        // twice that peak goes back. In a sale's steady run the capacity
        // stays within twice its peak, so nothing is given back and grown
        // again at every checkpoint.
        if inner.events.capacity() > peak.saturating_mul(4) {
            inner.events.shrink_to(peak.saturating_mul(2));
        }
    }

    /// How many events memory has room for (tests).
    #[cfg(test)]
    fn events_capacity(&self) -> usize {
        self.lock().events.capacity()
    }

    /// Events whose counts came out negative (must stay 0).
    pub fn negative_counts(&self) -> u64 {
        self.lock().negative_counts
    }
}

#[cfg(test)]
mod tests;

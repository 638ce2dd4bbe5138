//! `Change` and `ChangeSink`: how the engine reports what it did without
//! knowing who records it.
//!
//! # The rule that makes recovery exact
//!
//! An engine change is reported to the sink *before it becomes visible, or
//! under the lock that publishes it*. Restocks, operator sets and give-backs
//! are reported under the SKU's cell lock before their units are credited;
//! a new reservation is reported under its hold shard's lock before the
//! lock is released (nobody can transition a record it cannot see); a SKU's
//! creation before its name is published. A sink that tags what it records
//! with a monotonic sequence (the journal's epochs) therefore never records
//! a change after one that depended on it: a purchase of a restocked unit
//! is never durable in a batch before the restock's, and a hold's cancel is
//! never durable before its creation.
//!
//! Takes (sales and holds) are the one exception, and a safe one: a take
//! only lowers `available`, so a sink that loses it in a crash recovers
//! *more* stock than was sold, never less; the caller that acknowledges a
//! take durably waits for its own record first.
//!
//! # Why a type parameter
//!
//! `Engine<S: ChangeSink>` calls the sink by static dispatch: the purchase
//! path pays no `dyn` call, and [`InMemory`] compiles to nothing.

use super::cell::{BackorderRule, Fill};
use super::engine::SaleWindow;
use super::types::{HoldStatus, Line, LineChange, LineOwed, ReservationId, SkuId};
use super::waiting_room::RoomConfig;

/// A change to a SKU's per-customer limit carried by an operator change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitChange {
    Unchanged,
    Set(Option<u32>),
}

/// One engine change, borrowed from the engine's own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// A SKU got its id; reported before the SKU is visible to anyone else.
    SkuCreated { sku: SkuId, name: &'a str },
    /// An operator change: `delta` to received (and available), computed
    /// under the SKU's lock, the version it produced, maybe a new limit,
    /// and maybe a new safety stock (units on hand kept back from sale).
    Operator {
        sku: SkuId,
        delta: i64,
        version: u64,
        limit: LimitChange,
        safety_stock: Option<u64>,
    },
    /// The low-stock threshold changed (`None`: removed), with the version
    /// that change produced; recorded under the SKU's lock.
    LowStock {
        sku: SkuId,
        version: u64,
        threshold: Option<u32>,
    },
    /// A kit's components were set (`version` 1: the kit was created,
    /// reported right after its `SkuCreated`, before its name is
    /// published; later: redefined, under the kit's lock).
    KitDefined {
        kit: SkuId,
        version: u64,
        components: &'a [Line],
    },
    /// A record-less sale (`Engine::sell`).
    Sell { sku: SkuId, units: u32 },
    /// `priority` `None`: SKU `sku` keeps its stock at locations (reported
    /// right after its `SkuCreated`, before its name is published).
    /// `Some`: `sku` is a location (named `{sku}/{location}`) and this is
    /// its allocation priority, set at its creation (version 0, before its
    /// name is published) or changed later (under its lock, with the
    /// version that produced).
    Location {
        sku: SkuId,
        version: u64,
        priority: Option<u32>,
    },
    /// The operator set a SKU's backorder rule (a setting: moves no units).
    Backorder {
        sku: SkuId,
        version: u64,
        rule: BackorderRule,
    },
    /// The operator set when a SKU may be reserved (a setting: moves no
    /// units). Recorded under the SKU's lock, before the window is seen.
    SaleWindow {
        sku: SkuId,
        version: u64,
        window: SaleWindow,
    },
    /// The operator turned a SKU's waiting room on (with these settings)
    /// or off (`None`): a setting, moves no units. Recorded under the
    /// SKU's lock, before orders see it.
    WaitingRoom {
        sku: SkuId,
        version: u64,
        room: Option<RoomConfig>,
    },
    /// A restock gave units to a reservation owed them: recorded under the
    /// SKU's lock, after the restock and before any transition of the
    /// reservation that sees the units.
    BackorderFilled { sku: SkuId, fill: Fill },
    /// A step of a lease of units from the escrow (`durable/escrow.rs`),
    /// recorded under the SKU's lock: `Granted` before its units are
    /// credited (as a restock), `Returning` before its returned units are
    /// withdrawn (as an adjust down), `Closed` once the escrow took them
    /// back (moves no units). `version` is the SKU's after the change (0
    /// for `Closed`).
    Lease {
        sku: SkuId,
        version: u64,
        lease: &'a str,
        granted: u64,
        step: LeaseStep,
    },
    /// A reservation was created (`from: None`) or changed status.
    Hold(HoldChange<'a>),
    /// A request with an idempotency key succeeded.
    Idempotency(KeyChange<'a>),
}

/// Where a lease is on its path: granted, then returning (its units given
/// back locally, the escrow not yet told), then closed. The steps form a
/// lattice in that order, so a fold of one batch in any order keeps the
/// latest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    Granted,
    /// This many of the lease's units were withdrawn to go back.
    Returning(u64),
    /// The escrow closed the lease with this many units back.
    Closed(u64),
}

impl LeaseStep {
    /// The step's effect on the SKU's received units.
    pub fn delta(self, granted: u64) -> i64 {
        match self {
            LeaseStep::Granted => granted as i64,
            LeaseStep::Returning(returned) => -(returned as i64),
            LeaseStep::Closed(_) => 0,
        }
    }

    /// The step's place on the lease's path.
    pub fn rank(self) -> u8 {
        match self {
            LeaseStep::Granted => 0,
            LeaseStep::Returning(_) => 1,
            LeaseStep::Closed(_) => 2,
        }
    }

    /// Units given back (0 while granted).
    pub fn returned(self) -> u64 {
        match self {
            LeaseStep::Granted => 0,
            LeaseStep::Returning(units) | LeaseStep::Closed(units) => units,
        }
    }
}

/// A reservation's whole description plus the transition it made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldChange<'a> {
    pub id: ReservationId,
    /// `None` for a new record.
    pub from: Option<HoldStatus>,
    pub status: HoldStatus,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub limit_mask: u32,
    pub customer: Option<&'a str>,
    pub lines: &'a [Line],
    /// Times the deadline was extended; a `Held -> Held` change is an
    /// extension (`extensions` at least 1, `deadline_ms` the new one, and
    /// `at_ms` still the creation time: a held record's time is when it
    /// was made).
    pub extensions: u8,
    /// Per line, the amounts before and after a confirm or refund in part
    /// (and every later change of such a record); `None`: whole lines.
    pub changes: Option<&'a [LineChange]>,
    /// Per line, units owed before and after, for a record with a line
    /// taken past zero; recorded under the locks of its SKUs, so it is in
    /// journal order with their fills. `None`: nothing ever owed.
    pub owed: Option<&'a [LineOwed]>,
    /// The record's place in its SKUs' backorder queues (0 without `owed`).
    pub ticket: u64,
}

/// A remembered idempotent outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyChange<'a> {
    pub key: &'a str,
    pub fingerprint: u64,
    pub created_ms: u64,
    pub reservation: ReservationId,
    /// The status the reservation was created in (held or confirmed).
    pub status: HoldStatus,
    pub expires_at_ms: u64,
}

/// Whether `from -> to` is a transition the engine can make (`Held ->
/// Held` is an extension of the deadline, `Confirmed -> Confirmed` a
/// refund of part of a sale).
pub fn is_transition(from: Option<HoldStatus>, to: HoldStatus) -> bool {
    use HoldStatus::*;
    matches!(
        (from, to),
        (None, Held)
            | (None, Confirmed)
            | (Some(Held), Held | Confirmed | Cancelled | Expired)
            | (Some(Confirmed), Confirmed | Refunded)
    )
}

/// Where the engine reports its changes. See the module docs for when
/// `record` is called.
pub trait ChangeSink: Send + Sync {
    /// Why changes can no longer be recorded, once that is so. The engine
    /// then refuses every change with `StorageFailed`: a change that can
    /// never be recorded must not be acknowledged.
    fn failure(&self) -> Option<Box<str>>;

    /// Waits, if the sink must, until it can take a change from the lane of
    /// `hint` without waiting. The engine calls it before taking a lock
    /// under which it will `record`, so backpressure never sleeps while an
    /// engine lock is held (see `record`).
    fn make_room(&self, hint: usize);

    /// Records `change` from the caller's CPU `hint`. Called under engine
    /// locks: it must not block on anything the engine holds, and should
    /// not wait at all after `make_room` (a sink that must wait anyway
    /// bounds the wait; the journal's bound is in `docs/storage.md`). A
    /// failure is kept by the sink and reported through `failure`.
    fn record(&self, hint: usize, change: &Change<'_>);
}

impl<T: ChangeSink + ?Sized> ChangeSink for std::sync::Arc<T> {
    #[inline]
    fn failure(&self) -> Option<Box<str>> {
        (**self).failure()
    }

    #[inline]
    fn make_room(&self, hint: usize) {
        (**self).make_room(hint)
    }

    #[inline]
    fn record(&self, hint: usize, change: &Change<'_>) {
        (**self).record(hint, change)
    }
}

/// The sink of a purely in-memory engine: records nothing, never fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct InMemory;

impl ChangeSink for InMemory {
    #[inline(always)]
    fn failure(&self) -> Option<Box<str>> {
        None
    }

    #[inline(always)]
    fn make_room(&self, _hint: usize) {}

    #[inline(always)]
    fn record(&self, _hint: usize, _change: &Change<'_>) {}
}

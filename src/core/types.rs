//! The nouns every layer shares: SKU handles, reservation ids, cart lines
//! and reservation statuses. Plain values with no behaviour beyond
//! formatting, so that `error.rs`, `catalogue.rs` and `holds.rs` can all
//! name them without importing each other.

use std::fmt;
use std::str::FromStr;

use super::limits::SHARDS;

/// An interned SKU: an index into the catalogue that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkuId(pub(crate) u32);

impl SkuId {
    pub fn index(self) -> u32 {
        self.0
    }

    /// Rebuilds an id from its index (for recovery and tests). An index the
    /// catalogue never issued resolves to `UnknownSkuId`, never to a panic.
    pub fn from_index(index: u32) -> SkuId {
        SkuId(index)
    }
}

impl fmt::Display for SkuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A reservation's id: `generation << 32 | slot * SHARDS + shard`. Shown as
/// 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReservationId(u64);

impl ReservationId {
    pub(crate) fn new(generation: u32, shard: usize, slot: usize) -> ReservationId {
        let index = (slot * SHARDS + shard) as u64;
        debug_assert!(index <= u64::from(u32::MAX));
        ReservationId(u64::from(generation) << 32 | index)
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub(crate) fn shard(self) -> usize {
        (self.0 as u32 as usize) % SHARDS
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 as u32 as usize) / SHARDS
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn from_u64(raw: u64) -> ReservationId {
        ReservationId(raw)
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ReservationId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<ReservationId, Self::Err> {
        u64::from_str_radix(s, 16).map(ReservationId)
    }
}

/// Where a reservation is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldStatus {
    Held,
    Confirmed,
    Cancelled,
    Expired,
    Refunded,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Confirmed => "confirmed",
            HoldStatus::Cancelled => "cancelled",
            HoldStatus::Expired => "expired",
            HoldStatus::Refunded => "refunded",
        }
    }

    /// Ended for good: the record only waits to be pruned.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            HoldStatus::Cancelled | HoldStatus::Expired | HoldStatus::Refunded
        )
    }
}

impl fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a cart: a SKU and how many units of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: SkuId,
    pub quantity: u32,
}

/// One of the locations a SKU keeps its stock at: the location's own cell
/// (a SKU named `{sku}/{location}`) and its allocation priority (lower
/// first; equal priorities go to the location with the most available).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub sku: SkuId,
    pub priority: u32,
}

/// What became of a line's units: how many were sold (`confirmed`) and how
/// many of those came back since (`refunded`). A held line has neither; a
/// cancelled or expired one too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LineAmounts {
    pub confirmed: u32,
    pub refunded: u32,
}

/// One line's amounts across one transition: what was sold (unchanged by
/// a refund), and what had been refunded before and after it. The journal
/// carries it so the fold can move counts by a difference, without looking
/// the record up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LineChange {
    pub confirmed: u32,
    pub refunded_before: u32,
    pub refunded_after: u32,
}

impl LineChange {
    /// The line's amounts after the change.
    pub fn after(self) -> LineAmounts {
        LineAmounts {
            confirmed: self.confirmed,
            refunded: self.refunded_after,
        }
    }

    /// A whole line's change into `status`: all sold on confirm, all
    /// back on refund (nothing refunded before: a whole refund is the
    /// record's only one).
    pub fn whole(status: HoldStatus, quantity: u32) -> LineChange {
        let after = LineAmounts::whole(status, quantity);
        LineChange {
            confirmed: after.confirmed,
            refunded_before: 0,
            refunded_after: after.refunded,
        }
    }
}

/// One line's backordered units across one transition: owed (sold or
/// held past zero, not yet received) before and after it. Carried by the
/// journal beside `LineChange` for a record with backorders, so the fold
/// moves counts without looking the record up: owed units are in neither
/// `held` nor `sold` until a restock fills them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LineOwed {
    pub before: u32,
    pub after: u32,
}

impl LineAmounts {
    /// What a line of `quantity` units has in `status` when nothing about
    /// it was partial.
    pub fn whole(status: HoldStatus, quantity: u32) -> LineAmounts {
        let sold = matches!(status, HoldStatus::Confirmed | HoldStatus::Refunded);
        LineAmounts {
            confirmed: if sold { quantity } else { 0 },
            refunded: if status == HoldStatus::Refunded {
                quantity
            } else {
                0
            },
        }
    }
}

//! Journal events: what the engine did, in a compact binary form.
//!
//! Every change to engine state is one event. They are designed so that
//! replay is a *fold* that does not depend on the order of events inside a
//! batch (the writer drains per-CPU lanes in no particular order):
//!
//! - stock changes are **deltas** (`Operator.delta`, `Sell.units`), which
//!   commute;
//! - versions are **maxima** (an operator change carries the version it set);
//!   a limit change wins by version, not by arrival;
//! - a hold event carries the hold's **whole description** (lines, customer,
//!   limit mask, deadline) and its new status, and statuses form a lattice
//!   (held < confirmed < refunded; held < cancelled; held < expired), so a
//!   confirm that arrives before its reserve still settles the same way;
//!   an extension (`held -> held`) only moves the deadline later, so among
//!   a hold's events of one status the latest deadline is the latest event.
//!
//! Encoding: little-endian, a kind byte first. Decoding is total: any byte
//! string decodes to an event or a `DecodeError`, never a panic (fuzzed in
//! `fuzz/`).

use crate::core::cell::{BackorderRule, Fill};
pub use crate::core::change::LeaseStep;
pub use crate::core::change::{is_transition, LimitChange};
use crate::core::change::{Change, HoldChange, KeyChange};
use crate::core::engine::SaleWindow;
use crate::core::limits::{
    MAX_CUSTOMER_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_KIT_COMPONENTS, MAX_LEASE_ID_BYTES,
    MAX_LINES_PER_CART, MAX_SKU_NAME_BYTES, MAX_STOCK_PER_SKU,
};
use crate::core::types::{HoldStatus, Line, LineChange, LineOwed, ReservationId, SkuId};
use crate::core::waiting_room::RoomConfig;

/// One engine change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A SKU got its id. Appended before the SKU is visible to anyone else.
    SkuCreated { sku: SkuId, name: Box<str> },
    /// An operator change: `delta` to received (and available), the version
    /// it produced, and possibly a new limit and a new safety stock.
    Operator {
        sku: SkuId,
        delta: i64,
        version: u64,
        limit: LimitChange,
        safety_stock: Option<u64>,
    },
    /// A record-less sale (`Engine::sell`).
    Sell { sku: SkuId, units: u32 },
    /// A kit's components were set; the version decides which of two
    /// definitions in one batch wins.
    KitDefined {
        kit: SkuId,
        version: u64,
        components: Vec<Line>,
    },
    /// The low-stock threshold changed (`None`: removed); the version it
    /// produced decides which of two changes in one batch wins.
    LowStock {
        sku: SkuId,
        version: u64,
        threshold: Option<u32>,
    },
    /// The backorder rule changed; the version decides which of two
    /// changes in one batch wins.
    Backorder {
        sku: SkuId,
        version: u64,
        rule: BackorderRule,
    },
    /// A restock gave units to a reservation owed them.
    BackorderFilled { sku: SkuId, fill: Fill },
    /// The sale window changed; the version decides which of two changes
    /// in one batch wins.
    SaleWindow {
        sku: SkuId,
        version: u64,
        window: SaleWindow,
    },
    /// The waiting room was turned on, changed or off (`None`); the
    /// version decides which of two changes in one batch wins.
    WaitingRoom {
        sku: SkuId,
        version: u64,
        room: Option<RoomConfig>,
    },
    /// `priority` `None`: the SKU keeps its stock at locations; `Some`:
    /// the SKU is a location with this priority (the version decides which
    /// of two changes in one batch wins).
    Location {
        sku: SkuId,
        version: u64,
        priority: Option<u32>,
    },
    /// A step of a lease from the escrow: `Granted` credits `granted`
    /// units, `Returning` withdraws the units it names, `Closed` moves
    /// none (steps are a lattice: `LeaseStep::rank`).
    Lease {
        sku: SkuId,
        version: u64,
        lease: Box<str>,
        granted: u64,
        step: LeaseStep,
    },
    /// A hold reached `status` at `at_ms`.
    Hold(HoldEvent),
    /// A request with an idempotency key succeeded: a retry must get this
    /// receipt, also after a restart.
    Idempotency(KeyEvent),
}

/// A remembered idempotent outcome (successful ones only: a refusal took
/// nothing, so a retry may safely run again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    pub key: Box<str>,
    pub fingerprint: u64,
    pub created_ms: u64,
    pub reservation: ReservationId,
    /// The status the reservation was created in (held or confirmed).
    pub status: HoldStatus,
    pub expires_at_ms: u64,
}

/// A hold's full description plus the transition it made. Carrying the
/// status it left (`from`) lets the fold adjust counts by a difference that
/// commutes with every other event, without looking the hold up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldEvent {
    pub id: ReservationId,
    /// `None` for a new record.
    pub from: Option<HoldStatus>,
    pub status: HoldStatus,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub limit_mask: u32,
    pub customer: Option<Box<str>>,
    pub lines: Vec<Line>,
    /// Times the deadline was extended (`held -> held` is an extension).
    pub extensions: u8,
    /// Per line, the amounts before and after a confirm or refund in part
    /// (`confirmed -> confirmed` is a refund of part); `None`: whole lines.
    pub changes: Option<Vec<LineChange>>,
    /// Per line, units owed before and after, for a record with a line
    /// taken past zero; `None`: nothing ever owed.
    pub owed: Option<Vec<LineOwed>>,
    /// The record's backorder ticket (0 without `owed`).
    pub ticket: u64,
}

/// Why a payload is not an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends early")]
    Truncated,
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    #[error("{0} trailing bytes after the event")]
    Trailing(usize),
}

const SKU_CREATED: u8 = 1;
const OPERATOR: u8 = 2;
const SELL: u8 = 3;
const HOLD: u8 = 4;
const IDEMPOTENCY: u8 = 5;
const LOW_STOCK: u8 = 6;
/// A hold event of a hold that was extended: the `HOLD` body followed by
/// the number of extensions (at least 1). Plain holds keep the shorter
/// `HOLD` form, so a sale's events are unchanged.
const HOLD_EXTENDED: u8 = 7;
/// A hold event of a record confirmed or refunded in part: the
/// `HOLD_EXTENDED` body (its count may be 0) followed, per line, by the
/// units confirmed, refunded before and refunded after (u32 each).
const HOLD_PARTS: u8 = 8;
/// An operator change that set the safety stock: the `OPERATOR` body
/// followed by the new safety stock (u64). Other operator changes keep the
/// shorter `OPERATOR` form, so journals written before it read unchanged.
const OPERATOR_SAFETY: u8 = 9;
/// A kit's definition: the kit, the version, a component count (u8, 1 to
/// `MAX_KIT_COMPONENTS`) and that many `(sku u32, units u32)` pairs.
const KIT_DEFINED: u8 = 10;
/// A hold event of a record with a line taken past zero: the
/// `HOLD_EXTENDED` body (its count may be 0), a flag (u8, 0 or 1) and, if
/// 1, the `HOLD_PARTS` triples, then the backorder ticket (u64, not 0)
/// and per line the units owed before and after (u32 each).
const HOLD_OWED: u8 = 11;
/// A backorder rule: SKU, version, limit (u64), a flag (u8) and, if 1, the
/// end time (u64).
const BACKORDER: u8 = 12;
/// A fill: SKU, reservation (u64), ticket (u64), units given (u32, not 0),
/// units still owed (u32), sold (u8, 0 or 1).
const BACKORDER_FILLED: u8 = 13;
/// A location mark: SKU, version, a flag (u8: 0, the SKU keeps its stock
/// at locations; 1, it is a location) and, if 1, its priority (u32).
const LOCATION: u8 = 14;
/// A lease step: SKU, version, lease id (u8 length and bytes), units
/// granted (u64, not 0), the step (u8: 0 granted, 1 returning, 2 closed)
/// and, unless granted, the units given back (u64, at most granted).
const LEASE: u8 = 15;
/// A sale window: SKU, version, then per bound (start, end) a flag (u8: 0
/// open-ended, 1 set) and, if 1, the time (u64 ms, at most `MAX_TIME_MS`).
const SALE_WINDOW: u8 = 16;
/// A waiting room: SKU, version, a flag (u8: 0 off, 1 on) and, if on,
/// `admit_per_s` (u32), `overbook_milli` (u32), `admission_ttl_ms` (u64),
/// within `RoomConfig::validate`.
const WAITING_ROOM: u8 = 17;

pub(crate) fn status_code(status: HoldStatus) -> u8 {
    match status {
        HoldStatus::Held => 1,
        HoldStatus::Confirmed => 2,
        HoldStatus::Cancelled => 3,
        HoldStatus::Expired => 4,
        HoldStatus::Refunded => 5,
    }
}

pub(crate) fn status_from_code(code: u8) -> Option<HoldStatus> {
    Some(match code {
        1 => HoldStatus::Held,
        2 => HoldStatus::Confirmed,
        3 => HoldStatus::Cancelled,
        4 => HoldStatus::Expired,
        5 => HoldStatus::Refunded,
        _ => return None,
    })
}

/// Appends the encoding of one engine change: the journal's one encoder,
/// used for the engine's borrowed changes and for decoded `Event`s alike.
// Long by design: one arm per change kind, each its field layout (the
// decoder mirrors it arm by arm).
pub fn encode_change(change: &Change<'_>, out: &mut Vec<u8>) {
    match *change {
        Change::SkuCreated { sku, name } => {
            debug_assert!(!name.is_empty() && name.len() <= MAX_SKU_NAME_BYTES);
            out.push(SKU_CREATED);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
        Change::Operator {
            sku,
            delta,
            version,
            limit,
            safety_stock,
        } => {
            out.push(match safety_stock {
                Some(_) => OPERATOR_SAFETY,
                None => OPERATOR,
            });
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&delta.to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            let (tag, value) = match limit {
                LimitChange::Unchanged => (0u8, 0u32),
                LimitChange::Set(None) => (1, 0),
                LimitChange::Set(Some(limit)) => (2, limit),
            };
            out.push(tag);
            out.extend_from_slice(&value.to_le_bytes());
            if let Some(safety_stock) = safety_stock {
                debug_assert!(safety_stock <= MAX_STOCK_PER_SKU);
                out.extend_from_slice(&safety_stock.to_le_bytes());
            }
        }
        Change::KitDefined {
            kit,
            version,
            components,
        } => {
            debug_assert!((1..=MAX_KIT_COMPONENTS).contains(&components.len()));
            out.push(KIT_DEFINED);
            out.extend_from_slice(&kit.index().to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            out.push(components.len() as u8);
            for component in components {
                out.extend_from_slice(&component.sku.index().to_le_bytes());
                out.extend_from_slice(&component.quantity.to_le_bytes());
            }
        }
        Change::Sell { sku, units } => {
            out.push(SELL);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&units.to_le_bytes());
        }
        Change::LowStock {
            sku,
            version,
            threshold,
        } => {
            out.push(LOW_STOCK);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            // 0 is never a threshold: it means none.
            out.extend_from_slice(&threshold.unwrap_or(0).to_le_bytes());
        }
        Change::Backorder { sku, version, rule } => {
            debug_assert!(rule.limit <= MAX_STOCK_PER_SKU);
            out.push(BACKORDER);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&rule.limit.to_le_bytes());
            out.push(u8::from(rule.until_ms.is_some()));
            if let Some(until_ms) = rule.until_ms {
                out.extend_from_slice(&until_ms.to_le_bytes());
            }
        }
        Change::Location {
            sku,
            version,
            priority,
        } => {
            out.push(LOCATION);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            out.push(u8::from(priority.is_some()));
            if let Some(priority) = priority {
                out.extend_from_slice(&priority.to_le_bytes());
            }
        }
        Change::Lease {
            sku,
            version,
            lease,
            granted,
            step,
        } => {
            debug_assert!(!lease.is_empty() && lease.len() <= MAX_LEASE_ID_BYTES);
            debug_assert!(granted > 0 && step.returned() <= granted);
            out.push(LEASE);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            out.push(lease.len() as u8);
            out.extend_from_slice(lease.as_bytes());
            out.extend_from_slice(&granted.to_le_bytes());
            out.push(step.rank());
            if step != LeaseStep::Granted {
                out.extend_from_slice(&step.returned().to_le_bytes());
            }
        }
        Change::WaitingRoom { sku, version, room } => {
            out.push(WAITING_ROOM);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            out.push(u8::from(room.is_some()));
            if let Some(room) = room {
                out.extend_from_slice(&room.admit_per_s.to_le_bytes());
                out.extend_from_slice(&room.overbook_milli.to_le_bytes());
                out.extend_from_slice(&room.admission_ttl_ms.to_le_bytes());
            }
        }
        Change::SaleWindow {
            sku,
            version,
            window,
        } => {
            out.push(SALE_WINDOW);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&version.to_le_bytes());
            for bound in [window.starts_at_ms, window.ends_at_ms] {
                out.push(u8::from(bound.is_some()));
                if let Some(ms) = bound {
                    out.extend_from_slice(&ms.to_le_bytes());
                }
            }
        }
        Change::BackorderFilled { sku, fill } => {
            debug_assert!(fill.units > 0 && fill.ticket > 0);
            out.push(BACKORDER_FILLED);
            out.extend_from_slice(&sku.index().to_le_bytes());
            out.extend_from_slice(&fill.id.as_u64().to_le_bytes());
            out.extend_from_slice(&fill.ticket.to_le_bytes());
            out.extend_from_slice(&fill.units.to_le_bytes());
            out.extend_from_slice(&fill.owed_after.to_le_bytes());
            out.push(u8::from(fill.sold));
        }
        Change::Idempotency(k) => encode_key(&k, out),
        Change::Hold(h) => encode_hold(&h, out),
    }
}

fn encode_key(k: &KeyChange<'_>, out: &mut Vec<u8>) {
    debug_assert!(!k.key.is_empty() && k.key.len() <= MAX_IDEMPOTENCY_KEY_BYTES);
    out.push(IDEMPOTENCY);
    out.push(k.key.len() as u8);
    out.extend_from_slice(k.key.as_bytes());
    out.extend_from_slice(&k.fingerprint.to_le_bytes());
    out.extend_from_slice(&k.created_ms.to_le_bytes());
    out.extend_from_slice(&k.reservation.as_u64().to_le_bytes());
    out.push(status_code(k.status));
    out.extend_from_slice(&k.expires_at_ms.to_le_bytes());
}

fn encode_hold(h: &HoldChange<'_>, out: &mut Vec<u8>) {
    let lines = h.lines;
    debug_assert!(!lines.is_empty() && lines.len() <= MAX_LINES_PER_CART);
    debug_assert!(
        is_transition(h.from, h.status),
        "{:?} -> {:?}",
        h.from,
        h.status
    );
    debug_assert!(h
        .customer
        .is_none_or(|c| !c.is_empty() && c.len() <= MAX_CUSTOMER_BYTES));
    debug_assert!(
        h.from != Some(HoldStatus::Held) || h.status != HoldStatus::Held || h.extensions > 0,
        "an extension counts itself"
    );
    out.push(match (h.owed, h.changes, h.extensions) {
        (Some(_), _, _) => HOLD_OWED,
        (None, Some(_), _) => HOLD_PARTS,
        (None, None, 0) => HOLD,
        (None, None, _) => HOLD_EXTENDED,
    });
    out.extend_from_slice(&h.id.as_u64().to_le_bytes());
    out.push(h.from.map_or(0, status_code));
    out.push(status_code(h.status));
    out.extend_from_slice(&h.at_ms.to_le_bytes());
    out.extend_from_slice(&h.deadline_ms.to_le_bytes());
    out.extend_from_slice(&h.limit_mask.to_le_bytes());
    let customer = h.customer.unwrap_or("");
    out.push(customer.len() as u8);
    out.extend_from_slice(customer.as_bytes());
    out.push(lines.len() as u8);
    for line in lines {
        out.extend_from_slice(&line.sku.index().to_le_bytes());
        out.extend_from_slice(&line.quantity.to_le_bytes());
    }
    if let Some(owed) = h.owed {
        debug_assert_eq!(owed.len(), lines.len());
        debug_assert!(h.ticket > 0);
        out.push(h.extensions);
        out.push(u8::from(h.changes.is_some()));
        encode_changes(h.changes.unwrap_or(&[]), out);
        out.extend_from_slice(&h.ticket.to_le_bytes());
        for line in owed {
            out.extend_from_slice(&line.before.to_le_bytes());
            out.extend_from_slice(&line.after.to_le_bytes());
        }
    } else if let Some(changes) = h.changes {
        debug_assert_eq!(changes.len(), lines.len());
        out.push(h.extensions);
        encode_changes(changes, out);
    } else if h.extensions > 0 {
        out.push(h.extensions);
    }
}

fn encode_changes(changes: &[LineChange], out: &mut Vec<u8>) {
    for change in changes {
        out.extend_from_slice(&change.confirmed.to_le_bytes());
        out.extend_from_slice(&change.refunded_before.to_le_bytes());
        out.extend_from_slice(&change.refunded_after.to_le_bytes());
    }
}

impl Event {
    /// The change this event records, borrowed.
    // Long by design: one arm per event kind, a field-for-field borrow.
    pub fn as_change(&self) -> Change<'_> {
        match self {
            Event::SkuCreated { sku, name } => Change::SkuCreated { sku: *sku, name },
            &Event::Operator {
                sku,
                delta,
                version,
                limit,
                safety_stock,
            } => Change::Operator {
                sku,
                delta,
                version,
                limit,
                safety_stock,
            },
            &Event::Sell { sku, units } => Change::Sell { sku, units },
            Event::KitDefined {
                kit,
                version,
                components,
            } => Change::KitDefined {
                kit: *kit,
                version: *version,
                components,
            },
            &Event::LowStock {
                sku,
                version,
                threshold,
            } => Change::LowStock {
                sku,
                version,
                threshold,
            },
            Event::Hold(h) => Change::Hold(HoldChange {
                id: h.id,
                from: h.from,
                status: h.status,
                at_ms: h.at_ms,
                deadline_ms: h.deadline_ms,
                limit_mask: h.limit_mask,
                customer: h.customer.as_deref(),
                lines: &h.lines,
                extensions: h.extensions,
                changes: h.changes.as_deref(),
                owed: h.owed.as_deref(),
                ticket: h.ticket,
            }),
            &Event::Backorder { sku, version, rule } => Change::Backorder { sku, version, rule },
            &Event::BackorderFilled { sku, fill } => Change::BackorderFilled { sku, fill },
            &Event::WaitingRoom { sku, version, room } => {
                Change::WaitingRoom { sku, version, room }
            }
            &Event::SaleWindow {
                sku,
                version,
                window,
            } => Change::SaleWindow {
                sku,
                version,
                window,
            },
            &Event::Location {
                sku,
                version,
                priority,
            } => Change::Location {
                sku,
                version,
                priority,
            },
            Event::Lease {
                sku,
                version,
                lease,
                granted,
                step,
            } => Change::Lease {
                sku: *sku,
                version: *version,
                lease,
                granted: *granted,
                step: *step,
            },
            Event::Idempotency(k) => Change::Idempotency(KeyChange {
                key: &k.key,
                fingerprint: k.fingerprint,
                created_ms: k.created_ms,
                reservation: k.reservation,
                status: k.status,
                expires_at_ms: k.expires_at_ms,
            }),
        }
    }

    /// Appends this event's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_change(&self.as_change(), out);
    }
}

mod decode;
mod hold_ref;
pub use hold_ref::{decode_hold_ref, HoldRef};

#[cfg(all(test, not(loom)))]
mod tests;

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

fn decode_waiting_room(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
    let sku = SkuId::from_index(r.u32()?);
    let version = r.u64()?;
    let room = match r.u8()? {
        0 => None,
        1 => Some(RoomConfig {
            admit_per_s: r.u32()?,
            overbook_milli: r.u32()?,
            admission_ttl_ms: r.u64()?,
        }),
        _ => return Err(DecodeError::Invalid("waiting room flag")),
    };
    if let Some(room) = room {
        room.validate()
            .map_err(|_| DecodeError::Invalid("waiting room"))?;
    }
    Ok(Event::WaitingRoom { sku, version, room })
}

fn decode_sale_window(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
    let sku = SkuId::from_index(r.u32()?);
    let version = r.u64()?;
    let mut bound = || match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        _ => Err(DecodeError::Invalid("sale window flag")),
    };
    let window = SaleWindow {
        starts_at_ms: bound()?,
        ends_at_ms: bound()?,
    };
    window
        .validate()
        .map_err(|_| DecodeError::Invalid("sale window"))?;
    Ok(Event::SaleWindow {
        sku,
        version,
        window,
    })
}

fn decode_lease(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
    let sku = SkuId::from_index(r.u32()?);
    let version = r.u64()?;
    let lease = r
        .str(MAX_LEASE_ID_BYTES)?
        .ok_or(DecodeError::Invalid("empty lease id"))?;
    crate::core::engine::validate_lease_id(&lease).map_err(|_| DecodeError::Invalid("lease id"))?;
    let granted = r.u64()?;
    if granted == 0 || granted > MAX_STOCK_PER_SKU {
        return Err(DecodeError::Invalid("lease units"));
    }
    let step = match r.u8()? {
        0 => LeaseStep::Granted,
        1 => LeaseStep::Returning(r.u64()?),
        2 => LeaseStep::Closed(r.u64()?),
        _ => return Err(DecodeError::Invalid("lease step")),
    };
    if step.returned() > granted {
        return Err(DecodeError::Invalid("lease return past its grant"));
    }
    Ok(Event::Lease {
        sku,
        version,
        lease,
        granted,
        step,
    })
}

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

    /// Decodes one event that fills `payload` exactly.
    // Long by design: one arm per event kind, mirroring `encode_change`.
    pub fn decode(payload: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader(payload);
        let event = match r.u8()? {
            SKU_CREATED => {
                let sku = SkuId::from_index(r.u32()?);
                let name = r
                    .str(MAX_SKU_NAME_BYTES)?
                    .ok_or(DecodeError::Invalid("empty SKU name"))?;
                crate::core::catalogue::validate_catalogue_name(&name)
                    .map_err(|_| DecodeError::Invalid("SKU name"))?;
                Event::SkuCreated { sku, name }
            }
            kind @ (OPERATOR | OPERATOR_SAFETY) => {
                let sku = SkuId::from_index(r.u32()?);
                let delta = r.u64()? as i64;
                let version = r.u64()?;
                let tag = r.u8()?;
                let value = r.u32()?;
                let limit = match (tag, value) {
                    (0, 0) => LimitChange::Unchanged,
                    (1, 0) => LimitChange::Set(None),
                    (2, limit) if limit > 0 => LimitChange::Set(Some(limit)),
                    _ => return Err(DecodeError::Invalid("limit change")),
                };
                let safety_stock = match kind {
                    OPERATOR_SAFETY => Some(r.u64()?)
                        .filter(|&units| units <= MAX_STOCK_PER_SKU)
                        .map(Some)
                        .ok_or(DecodeError::Invalid("safety stock"))?,
                    _ => None,
                };
                Event::Operator {
                    sku,
                    delta,
                    version,
                    limit,
                    safety_stock,
                }
            }
            KIT_DEFINED => {
                let kit = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let count = usize::from(r.u8()?);
                if !(1..=MAX_KIT_COMPONENTS).contains(&count) {
                    return Err(DecodeError::Invalid("kit component count"));
                }
                let mut components = Vec::with_capacity(count);
                for _ in 0..count {
                    let sku = SkuId::from_index(r.u32()?);
                    let quantity = r.u32()?;
                    if quantity == 0 || components.iter().any(|c: &Line| c.sku == sku) {
                        return Err(DecodeError::Invalid("kit component"));
                    }
                    components.push(Line { sku, quantity });
                }
                Event::KitDefined {
                    kit,
                    version,
                    components,
                }
            }
            SELL => Event::Sell {
                sku: SkuId::from_index(r.u32()?),
                units: r.u32()?,
            },
            LOW_STOCK => {
                let sku = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let threshold = Some(r.u32()?).filter(|&t| t > 0);
                Event::LowStock {
                    sku,
                    version,
                    threshold,
                }
            }
            IDEMPOTENCY => {
                let key = r
                    .str(MAX_IDEMPOTENCY_KEY_BYTES)?
                    .ok_or(DecodeError::Invalid("empty idempotency key"))?;
                let fingerprint = r.u64()?;
                let created_ms = r.u64()?;
                let reservation = ReservationId::from_u64(r.u64()?);
                let status =
                    status_from_code(r.u8()?).ok_or(DecodeError::Invalid("hold status"))?;
                // Held or confirmed: a reservation as created; confirmed
                // or refunded: after a keyed refund of part.
                if !matches!(
                    status,
                    HoldStatus::Held | HoldStatus::Confirmed | HoldStatus::Refunded
                ) {
                    return Err(DecodeError::Invalid("idempotent outcome status"));
                }
                let expires_at_ms = r.u64()?;
                Event::Idempotency(KeyEvent {
                    key,
                    fingerprint,
                    created_ms,
                    reservation,
                    status,
                    expires_at_ms,
                })
            }
            SALE_WINDOW => decode_sale_window(&mut r)?,
            WAITING_ROOM => decode_waiting_room(&mut r)?,
            BACKORDER => {
                let sku = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let limit = r.u64()?;
                if limit > MAX_STOCK_PER_SKU {
                    return Err(DecodeError::Invalid("backorder limit"));
                }
                let until_ms = match r.u8()? {
                    0 => None,
                    1 => Some(r.u64()?),
                    _ => return Err(DecodeError::Invalid("backorder end flag")),
                };
                Event::Backorder {
                    sku,
                    version,
                    rule: BackorderRule { limit, until_ms },
                }
            }
            LOCATION => {
                let sku = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let priority = match r.u8()? {
                    0 => None,
                    1 => Some(r.u32()?),
                    _ => return Err(DecodeError::Invalid("location flag")),
                };
                Event::Location {
                    sku,
                    version,
                    priority,
                }
            }
            LEASE => decode_lease(&mut r)?,
            BACKORDER_FILLED => {
                let sku = SkuId::from_index(r.u32()?);
                let id = ReservationId::from_u64(r.u64()?);
                let ticket = r.u64()?;
                let units = r.u32()?;
                let owed_after = r.u32()?;
                let sold = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("fill sold flag")),
                };
                if units == 0 || ticket == 0 {
                    return Err(DecodeError::Invalid("backorder fill"));
                }
                let fill = Fill {
                    id,
                    ticket,
                    units,
                    owed_after,
                    sold,
                };
                Event::BackorderFilled { sku, fill }
            }
            kind @ (HOLD | HOLD_EXTENDED | HOLD_PARTS | HOLD_OWED) => {
                let hold = parse_hold(r.0, kind)?;
                r.0 = &[];
                Event::Hold(HoldEvent {
                    id: hold.id,
                    from: hold.from,
                    status: hold.status,
                    at_ms: hold.at_ms,
                    deadline_ms: hold.deadline_ms,
                    limit_mask: hold.limit_mask,
                    customer: hold.customer.map(Into::into),
                    lines: hold.lines().collect(),
                    extensions: hold.extensions,
                    changes: hold.has_changes().then(|| hold.changes().collect()),
                    owed: hold.has_owed().then(|| hold.owed().collect()),
                    ticket: hold.ticket,
                })
            }
            kind => return Err(DecodeError::UnknownKind(kind)),
        };
        match r.0.len() {
            0 => Ok(event),
            trailing => Err(DecodeError::Trailing(trailing)),
        }
    }
}

/// A hold event read in place, without allocating: the writer folds
/// millions of these a second.
#[derive(Clone, Copy, Debug)]
pub struct HoldRef<'a> {
    pub id: ReservationId,
    pub from: Option<HoldStatus>,
    pub status: HoldStatus,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub limit_mask: u32,
    pub customer: Option<&'a str>,
    pub extensions: u8,
    /// `(sku u32, quantity u32)` pairs, already checked.
    raw_lines: &'a [u8],
    /// `(confirmed, refunded before, refunded after)` u32 triples, one per
    /// line, already checked; empty for whole lines.
    raw_changes: &'a [u8],
    /// `(owed before, owed after)` u32 pairs, one per line, already
    /// checked; empty for a record that never owed units.
    raw_owed: &'a [u8],
    /// The backorder ticket (0 without owed units).
    pub ticket: u64,
}

impl HoldRef<'_> {
    pub fn line_count(&self) -> usize {
        self.raw_lines.len() / 8
    }

    /// Whether the event carries per-line amounts (a confirm or refund in
    /// part).
    pub fn has_changes(&self) -> bool {
        !self.raw_changes.is_empty()
    }

    /// Per line, its amounts across this event, as carried (nothing for
    /// whole lines: see `has_changes`).
    pub fn changes(&self) -> impl Iterator<Item = LineChange> + '_ {
        self.raw_changes.chunks_exact(12).map(|triple| LineChange {
            confirmed: le32(&triple[0..4]),
            refunded_before: le32(&triple[4..8]),
            refunded_after: le32(&triple[8..12]),
        })
    }

    /// Whether the event carries owed units (a record with a line taken
    /// past zero).
    pub fn has_owed(&self) -> bool {
        !self.raw_owed.is_empty()
    }

    /// Per line, owed units before and after (nothing without `has_owed`).
    pub fn owed(&self) -> impl Iterator<Item = LineOwed> + '_ {
        self.raw_owed.chunks_exact(8).map(|pair| LineOwed {
            before: le32(&pair[0..4]),
            after: le32(&pair[4..8]),
        })
    }

    pub fn lines(&self) -> impl Iterator<Item = Line> + '_ {
        self.raw_lines.chunks_exact(8).map(|pair| Line {
            sku: SkuId::from_index(u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]])),
            quantity: u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
        })
    }
}

/// If `payload` is a hold event, reads it in place (`Ok(None)` for other
/// kinds).
pub fn decode_hold_ref(payload: &[u8]) -> Result<Option<HoldRef<'_>>, DecodeError> {
    match payload.first() {
        Some(&kind @ (HOLD | HOLD_EXTENDED | HOLD_PARTS | HOLD_OWED)) => {
            parse_hold(&payload[1..], kind).map(Some)
        }
        Some(_) => Ok(None),
        None => Err(DecodeError::Truncated),
    }
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The body of a hold event of `kind` (after its kind byte), which must
/// fill `body`.
fn parse_hold(body: &[u8], kind: u8) -> Result<HoldRef<'_>, DecodeError> {
    let mut r = Reader(body);
    let id = ReservationId::from_u64(r.u64()?);
    let from = match r.u8()? {
        0 => None,
        code => Some(status_from_code(code).ok_or(DecodeError::Invalid("hold status"))?),
    };
    let status = status_from_code(r.u8()?).ok_or(DecodeError::Invalid("hold status"))?;
    if !is_transition(from, status) {
        return Err(DecodeError::Invalid("hold transition"));
    }
    let at_ms = r.u64()?;
    let deadline_ms = r.u64()?;
    let limit_mask = r.u32()?;
    let customer = r.str_ref(MAX_CUSTOMER_BYTES)?;
    let count = r.u8()? as usize;
    if count == 0 || count > MAX_LINES_PER_CART {
        return Err(DecodeError::Invalid("line count"));
    }
    let raw_lines = r.take(count * 8)?;
    if raw_lines
        .chunks_exact(8)
        .any(|pair| pair[4..8] == [0, 0, 0, 0])
    {
        return Err(DecodeError::Invalid("zero quantity"));
    }
    // checked_shr: a 32-line cart shifts by 32, which overflows.
    if limit_mask
        .checked_shr(count as u32)
        .is_some_and(|beyond| beyond != 0)
    {
        return Err(DecodeError::Invalid(
            "limit mask names a line that does not exist",
        ));
    }
    // A plain event is never `held -> held` (an extension) nor
    // `confirmed -> confirmed` (a refund of part): those carry more.
    let (extensions, raw_changes): (u8, &[u8]) = match kind {
        HOLD if from == Some(status) => return Err(DecodeError::Invalid("hold transition")),
        HOLD => (0, &[]),
        HOLD_EXTENDED => {
            let extensions = r.u8()?;
            if extensions == 0 {
                return Err(DecodeError::Invalid("extended hold with no extension"));
            }
            if from == Some(HoldStatus::Confirmed) && status == HoldStatus::Confirmed {
                return Err(DecodeError::Invalid("hold transition"));
            }
            (extensions, &[])
        }
        HOLD_PARTS => {
            let extensions = r.u8()?;
            let raw = r.take(count * 12)?;
            check_changes(raw, raw_lines, status)?;
            (extensions, raw)
        }
        _ => {
            let extensions = r.u8()?;
            let raw = match r.u8()? {
                0 => &[],
                1 => r.take(count * 12)?,
                _ => return Err(DecodeError::Invalid("amounts flag")),
            };
            if !raw.is_empty() {
                check_changes(raw, raw_lines, status)?;
            }
            (extensions, raw)
        }
    };
    let (ticket, raw_owed) = match kind {
        HOLD_OWED => {
            let ticket = r.u64()?;
            let raw = r.take(count * 8)?;
            check_owed(ticket, raw, raw_lines, from, status)?;
            (ticket, raw)
        }
        _ => (0, &[][..]),
    };
    match r.0.len() {
        0 => Ok(HoldRef {
            id,
            from,
            status,
            at_ms,
            deadline_ms,
            limit_mask,
            customer,
            extensions,
            raw_lines,
            raw_changes,
            raw_owed,
            ticket,
        }),
        trailing => Err(DecodeError::Trailing(trailing)),
    }
}

/// Per-line amounts that a record in `status` could have: sold at most
/// what was held, refunds only growing and at most what was sold, some
/// refund in a refund of part, and (for a record only held, cancelled or
/// expired, which are never partial) none at all.
fn check_changes(raw: &[u8], raw_lines: &[u8], status: HoldStatus) -> Result<(), DecodeError> {
    if matches!(
        status,
        HoldStatus::Held | HoldStatus::Cancelled | HoldStatus::Expired
    ) {
        return Err(DecodeError::Invalid(
            "amounts on a record that sold nothing",
        ));
    }
    for (triple, pair) in raw.chunks_exact(12).zip(raw_lines.chunks_exact(8)) {
        let (quantity, confirmed) = (le32(&pair[4..8]), le32(&triple[0..4]));
        let (before, after) = (le32(&triple[4..8]), le32(&triple[8..12]));
        if confirmed > quantity || before > after || after > confirmed {
            return Err(DecodeError::Invalid("line amounts"));
        }
        if status == HoldStatus::Refunded && after != confirmed {
            return Err(DecodeError::Invalid(
                "a refunded line with units still sold",
            ));
        }
    }
    Ok(())
}

/// Owed units a record could have across a transition: at most its
/// units, only shrinking (a new record owes from nothing), none once it
/// ended.
fn check_owed(
    ticket: u64,
    raw: &[u8],
    raw_lines: &[u8],
    from: Option<HoldStatus>,
    status: HoldStatus,
) -> Result<(), DecodeError> {
    if ticket == 0 {
        return Err(DecodeError::Invalid("backorder ticket"));
    }
    for (pair, line) in raw.chunks_exact(8).zip(raw_lines.chunks_exact(8)) {
        let (before, after) = (le32(&pair[0..4]), le32(&pair[4..8]));
        let grows = match from {
            None => before != 0,
            Some(_) => after > before,
        };
        if grows || after > le32(&line[4..8]) || (status.is_final() && after != 0) {
            return Err(DecodeError::Invalid("owed units"));
        }
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// A length-prefixed string, borrowed; length 0 is `None`.
    fn str_ref(&mut self, max: usize) -> Result<Option<&'a str>, DecodeError> {
        let len = self.u8()? as usize;
        if len > max {
            return Err(DecodeError::Invalid("string too long"));
        }
        if len == 0 {
            return Ok(None);
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| DecodeError::Invalid("string is not UTF-8"))
    }

    /// A length-prefixed string, owned; length 0 is `None`.
    fn str(&mut self, max: usize) -> Result<Option<Box<str>>, DecodeError> {
        self.str_ref(max).map(|text| text.map(Into::into))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn round_trip(event: Event) {
        let mut bytes = Vec::new();
        event.encode(&mut bytes);
        assert_eq!(Event::decode(&bytes), Ok(event.clone()));
        // Every strict prefix is refused, never misread.
        for cut in 0..bytes.len() {
            assert!(
                Event::decode(&bytes[..cut]).is_err(),
                "prefix {cut} of {event:?}"
            );
        }
    }

    #[test]
    fn every_kind_round_trips_and_prefixes_are_refused() {
        round_trip(Event::SkuCreated {
            sku: SkuId::from_index(7),
            name: "tee-black-m".into(),
        });
        for limit in [
            LimitChange::Unchanged,
            LimitChange::Set(None),
            LimitChange::Set(Some(3)),
        ] {
            for safety_stock in [None, Some(0), Some(MAX_STOCK_PER_SKU)] {
                round_trip(Event::Operator {
                    sku: SkuId::from_index(1),
                    delta: -42,
                    version: 9,
                    limit,
                    safety_stock,
                });
            }
        }
        round_trip(Event::Sell {
            sku: SkuId::from_index(u32::MAX),
            units: 5,
        });
        for count in [1, MAX_KIT_COMPONENTS as u32] {
            round_trip(Event::KitDefined {
                kit: SkuId::from_index(4),
                version: 3,
                components: (0..count)
                    .map(|i| Line {
                        sku: SkuId::from_index(i),
                        quantity: i + 1,
                    })
                    .collect(),
            });
        }
        for threshold in [None, Some(1), Some(u32::MAX)] {
            round_trip(Event::LowStock {
                sku: SkuId::from_index(3),
                version: 7,
                threshold,
            });
        }
        round_trip(Event::Hold(HoldEvent {
            id: ReservationId::from_u64(0x1234_5678_9abc),
            from: Some(HoldStatus::Confirmed),
            status: HoldStatus::Refunded,
            at_ms: 1_700_000_000_000,
            deadline_ms: 1_700_000_600_000,
            limit_mask: 0b101,
            customer: Some("alice".into()),
            lines: vec![
                Line {
                    sku: SkuId::from_index(1),
                    quantity: 2,
                },
                Line {
                    sku: SkuId::from_index(2),
                    quantity: 1,
                },
                Line {
                    sku: SkuId::from_index(3),
                    quantity: 9,
                },
            ],
            extensions: 0,
            changes: None,
            owed: None,
            ticket: 0,
        }));
        for (from, status) in [
            (HoldStatus::Held, HoldStatus::Held),
            (HoldStatus::Held, HoldStatus::Confirmed),
        ] {
            round_trip(Event::Hold(HoldEvent {
                id: ReservationId::from_u64(77),
                from: Some(from),
                status,
                at_ms: 5,
                deadline_ms: 600_005,
                limit_mask: 0,
                customer: None,
                lines: vec![Line {
                    sku: SkuId::from_index(4),
                    quantity: 1,
                }],
                changes: None,
                owed: None,
                ticket: 0,
                extensions: 3,
            }));
        }
    }

    #[test]
    fn partial_amounts_round_trip_and_impossible_ones_are_refused() {
        let event = |from, status, changes: Vec<LineChange>| {
            Event::Hold(HoldEvent {
                id: ReservationId::from_u64(78),
                from,
                status,
                at_ms: 5,
                deadline_ms: 600_005,
                limit_mask: 0b11,
                customer: Some("ann".into()),
                lines: vec![
                    Line {
                        sku: SkuId::from_index(4),
                        quantity: 3,
                    },
                    Line {
                        sku: SkuId::from_index(5),
                        quantity: 2,
                    },
                ],
                extensions: 0,
                changes: Some(changes),
                owed: None,
                ticket: 0,
            })
        };
        let change = |confirmed, refunded_before, refunded_after| LineChange {
            confirmed,
            refunded_before,
            refunded_after,
        };
        use HoldStatus::{Confirmed, Held, Refunded};
        round_trip(event(
            Some(Held),
            Confirmed,
            vec![change(2, 0, 0), change(0, 0, 0)],
        ));
        round_trip(event(
            Some(Confirmed),
            Confirmed,
            vec![change(2, 0, 1), change(0, 0, 0)],
        ));
        round_trip(event(
            Some(Confirmed),
            Refunded,
            vec![change(2, 1, 2), change(1, 0, 1)],
        ));
        for (from, status, changes, why) in [
            (
                Some(Held),
                Confirmed,
                vec![change(4, 0, 0), change(0, 0, 0)],
                "line amounts",
            ),
            (
                Some(Confirmed),
                Confirmed,
                vec![change(2, 1, 0), change(0, 0, 0)],
                "line amounts",
            ),
            (
                Some(Confirmed),
                Confirmed,
                vec![change(2, 0, 3), change(0, 0, 0)],
                "line amounts",
            ),
            (
                Some(Confirmed),
                Refunded,
                vec![change(2, 0, 1), change(0, 0, 0)],
                "a refunded line with units still sold",
            ),
            (
                Some(Held),
                HoldStatus::Cancelled,
                vec![change(0, 0, 0), change(0, 0, 0)],
                "amounts on a record that sold nothing",
            ),
        ] {
            let mut bytes = Vec::new();
            event(from, status, changes).encode(&mut bytes);
            assert_eq!(Event::decode(&bytes), Err(DecodeError::Invalid(why)));
        }
    }

    #[test]
    fn an_extension_without_a_count_is_refused() {
        let mut bytes = Vec::new();
        Event::Hold(HoldEvent {
            id: ReservationId::from_u64(77),
            from: Some(HoldStatus::Held),
            status: HoldStatus::Held,
            at_ms: 5,
            deadline_ms: 600_005,
            limit_mask: 0,
            customer: None,
            lines: vec![Line {
                sku: SkuId::from_index(4),
                quantity: 1,
            }],
            extensions: 1,
            changes: None,
            owed: None,
            ticket: 0,
        })
        .encode(&mut bytes);
        // As a plain hold event (kind 4, no count): held -> held is no
        // transition.
        let mut plain = bytes.clone();
        plain[0] = HOLD;
        plain.pop();
        assert_eq!(
            Event::decode(&plain),
            Err(DecodeError::Invalid("hold transition"))
        );
        // As an extended one with a count of 0.
        let mut zero = bytes;
        *zero.last_mut().unwrap() = 0;
        assert_eq!(
            Event::decode(&zero),
            Err(DecodeError::Invalid("extended hold with no extension"))
        );
    }

    #[test]
    fn a_safety_stock_past_the_limit_is_refused_and_plain_operator_events_keep_their_form() {
        let event = |safety_stock| Event::Operator {
            sku: SkuId::from_index(1),
            delta: 5,
            version: 2,
            limit: LimitChange::Unchanged,
            safety_stock,
        };
        let mut plain = Vec::new();
        event(None).encode(&mut plain);
        assert_eq!(plain[0], OPERATOR, "journals from before keep their bytes");
        assert_eq!(plain.len(), 1 + 4 + 8 + 8 + 1 + 4);
        let mut bytes = Vec::new();
        event(Some(MAX_STOCK_PER_SKU)).encode(&mut bytes);
        assert_eq!(bytes[0], OPERATOR_SAFETY);
        let at = bytes.len() - 8;
        bytes[at..].copy_from_slice(&(MAX_STOCK_PER_SKU + 1).to_le_bytes());
        assert_eq!(
            Event::decode(&bytes),
            Err(DecodeError::Invalid("safety stock"))
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Event::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(Event::decode(&[99]), Err(DecodeError::UnknownKind(99)));
        let mut bytes = Vec::new();
        Event::Sell {
            sku: SkuId::from_index(1),
            units: 1,
        }
        .encode(&mut bytes);
        bytes.push(0);
        assert_eq!(Event::decode(&bytes), Err(DecodeError::Trailing(1)));
    }
}

//! The outbox's rows: a feed event as the `events` table holds it.

use super::*;
use crate::core::public_id::PublicIdText;

/// One row of the outbox (`hotstock_events`), as SQL values, in the
/// column order of `EVENT_COLUMNS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub position: i64,
    pub id: String,
    pub kind: String,
    pub at_ms: i64,
    pub sku: String,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub received: i64,
    pub reservation: Option<String>,
    pub status: Option<String>,
    pub from_status: Option<String>,
    pub customer: Option<String>,
    pub lines: Option<String>,
    pub deadline_ms: Option<i64>,
    pub delta: Option<i64>,
    pub version: Option<i64>,
    /// 1 when the event set the per-customer limit (to `per_customer_limit`,
    /// NULL for none).
    pub limit_set: Option<i64>,
    pub per_customer_limit: Option<i64>,
    pub units: Option<i64>,
    /// 1 when the event set the low-stock threshold (to `low_stock_threshold`,
    /// NULL for none).
    pub low_stock_set: Option<i64>,
    pub low_stock_threshold: Option<i64>,
    /// The SKU's safety stock after the event (0 in rows written before
    /// safety stock existed, which is what it was then).
    pub safety_stock: i64,
    /// The SKU's backordered units after the event (0 before backorders).
    pub backordered: i64,
    /// A fill's units still owed (NULL for other events).
    pub owed: Option<i64>,
    /// 1 when the event set the sale window (to `sale_starts_at_ms` and
    /// `sale_ends_at_ms`, NULL: open-ended); NULL in rows from before.
    pub window_set: Option<i64>,
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
}

/// How many columns `EVENT_COLUMNS` names (a test holds them equal).
pub const EVENT_COLUMN_COUNT: usize = 28;

/// The outbox's columns, in `EventRow`'s order.
pub const EVENT_COLUMNS: &str = "position, id, type, at_ms, sku, available, held, sold, received, \
     reservation, status, from_status, customer, lines, deadline_ms, delta, version, limit_set, \
     per_customer_limit, units, low_stock_set, low_stock_threshold, safety_stock, backordered, owed, \
     window_set, sale_starts_at_ms, sale_ends_at_ms";

impl EventRow {
    pub fn of(event: &FeedEvent, feed_id: u64) -> EventRow {
        let reservation = event.reservation.as_deref();
        let operator = event.operator.as_ref();
        EventRow {
            position: event.position as i64,
            id: {
                let mut id = String::new();
                push_event_id(&mut id, feed_id, event.position);
                id
            },
            kind: event.kind.as_str().into(),
            at_ms: event.at_ms as i64,
            sku: event.sku.to_string(),
            available: event.counts.available,
            held: event.counts.held,
            sold: event.counts.sold,
            received: event.counts.received,
            reservation: reservation
                .map(|r| &r.public_id)
                .or(event.fill.as_ref().map(|f| &f.public_id))
                .map(|id| id.to_string()),
            status: reservation.map(|r| r.status.as_str().into()),
            from_status: reservation.and_then(|r| r.from).map(|s| s.as_str().into()),
            customer: reservation.and_then(|r| r.customer.as_deref().map(String::from)),
            lines: reservation.map(|r| {
                let mut lines = String::new();
                encode_feed_lines_into(&mut lines, r);
                lines
            }),
            deadline_ms: reservation.map(|r| r.deadline_ms as i64),
            delta: operator.map(|o| o.delta),
            version: operator.map(|o| o.version as i64),
            limit_set: operator.map(|o| i64::from(o.limit.is_some())),
            per_customer_limit: operator.and_then(|o| o.limit.flatten()).map(i64::from),
            units: event
                .units
                .or(event.fill.as_ref().map(|f| f.units))
                .map(i64::from),
            low_stock_set: operator.map(|o| i64::from(o.low_stock.is_some())),
            low_stock_threshold: operator.and_then(|o| o.low_stock.flatten()).map(i64::from),
            safety_stock: event.counts.safety_stock,
            backordered: event.counts.backordered,
            owed: event.fill.as_ref().map(|f| i64::from(f.owed_after)),
            window_set: operator.map(|o| i64::from(o.window.is_some())),
            sale_starts_at_ms: operator.and_then(|o| o.window?.starts_at_ms).map(as_stored),
            sale_ends_at_ms: operator.and_then(|o| o.window?.ends_at_ms).map(as_stored),
        }
    }

    /// The event this row holds, checked.
    // Long by design: each of the row's columns checked in turn, so a
    // damaged one is named.
    pub fn into_event(self) -> Result<FeedEvent, Damage> {
        let check = Checker {
            table: "hotstock_events",
            row: format!("position {}", self.position),
        };
        let position = check.non_negative("position", self.position)?;
        let kind = FeedKind::from_name(&self.kind)
            .ok_or_else(|| check.damage(format!("type {:?} is not an event type", self.kind)))?;
        let parse_status = |column: &str,
                            name: &Option<String>|
         -> Result<Option<HoldStatus>, Damage> {
            name.as_deref()
                .map(|name| {
                    status_from_name(name)
                        .ok_or_else(|| check.damage(format!("{column} {name:?} is not a status")))
                })
                .transpose()
        };
        let lines = || {
            decode_feed_lines(self.lines.as_deref().unwrap_or(""))
                .ok_or_else(|| check.damage("lines are not name:quantity pairs".into()))
        };
        let public_id = |text: &str| {
            PublicIdText::parse(text)
                .ok_or_else(|| check.damage(format!("reservation {text:?} is not a public id")))
        };
        let fill = match (kind, &self.reservation) {
            (FeedKind::ReservationBackorderFilled, Some(text)) => Some(FeedFill {
                public_id: public_id(text)?,
                units: check.fits_u32("units", self.units.unwrap_or(0))?,
                owed_after: check.fits_u32("owed", self.owed.unwrap_or(0))?,
            }),
            (FeedKind::ReservationBackorderFilled, None) => {
                return Err(check.damage("a fill without a reservation".into()))
            }
            _ => None,
        };
        let status = parse_status("status", &self.status)?;
        let reservation = match (&self.reservation, status) {
            _ if fill.is_some() => None,
            (Some(text), Some(status)) => Some(Arc::new({
                let (lines, amounts) = lines()?;
                FeedReservation {
                    public_id: public_id(text)?,
                    from: parse_status("from_status", &self.from_status)?,
                    status,
                    customer: self.customer.map(Into::into),
                    lines,
                    amounts,
                    deadline_ms: check
                        .non_negative("deadline_ms", self.deadline_ms.unwrap_or(0))?,
                }
            })),
            (None, None) => None,
            _ => return Err(check.damage("reservation without a status".into())),
        };
        let operator = match (self.delta, self.version) {
            (Some(delta), Some(version)) => Some(FeedOperator {
                delta,
                version: check.non_negative("version", version)?,
                limit: match self.limit_set {
                    Some(1) => Some(
                        self.per_customer_limit
                            .map(|l| check.fits_u32("per_customer_limit", l))
                            .transpose()?,
                    ),
                    _ => None,
                },
                low_stock: match self.low_stock_set {
                    Some(1) => Some(
                        self.low_stock_threshold
                            .map(|t| check.fits_u32("low_stock_threshold", t))
                            .transpose()?,
                    ),
                    _ => None,
                },
                window: match self.window_set {
                    Some(1) => {
                        let bound = |name, ms: Option<i64>| {
                            ms.map(|ms| check.non_negative(name, ms)).transpose()
                        };
                        Some(SaleWindow {
                            starts_at_ms: bound("sale_starts_at_ms", self.sale_starts_at_ms)?,
                            ends_at_ms: bound("sale_ends_at_ms", self.sale_ends_at_ms)?,
                        })
                    }
                    _ => None,
                },
            }),
            _ => None,
        };
        Ok(FeedEvent {
            position,
            kind,
            at_ms: check.non_negative("at_ms", self.at_ms)?,
            sku: self.sku.into(),
            counts: FeedCounts {
                available: self.available,
                held: self.held,
                sold: self.sold,
                received: self.received,
                safety_stock: check.non_negative("safety_stock", self.safety_stock)? as i64,
                backordered: check.non_negative("backordered", self.backordered)? as i64,
            },
            reservation,
            operator,
            units: match fill {
                Some(_) => None,
                None => self.units.map(|u| check.fits_u32("units", u)).transpose()?,
            },
            fill,
        })
    }
}

/// A feed event's lines as stored: `name:quantity` pairs joined by commas
/// (a SKU name may hold `:` but never `,`; the quantity follows the last
/// `:`), into a buffer the caller reuses.
/// An event's lines as the outbox keeps them: `name:qty` each (names may
/// hold `:`, quantities not), or `name:qty/confirmed/refunded` for a record
/// confirmed or refunded in part (names never hold `/`).
pub(crate) fn encode_feed_lines_into(out: &mut String, r: &FeedReservation) {
    out.clear();
    for (i, (name, quantity)) in r.lines.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push(':');
        push_decimal(out, u64::from(*quantity));
        if let Some(amounts) = r.amounts.as_ref().and_then(|a| a.get(i)) {
            out.push('/');
            push_decimal(out, u64::from(amounts.confirmed));
            out.push('/');
            push_decimal(out, u64::from(amounts.refunded));
        }
    }
}

/// `{feed id as 16 hex}-{position}` (`feed::event_id`), without `fmt`.
pub(crate) fn push_event_id(out: &mut String, feed_id: u64, position: u64) {
    let mut hex = [0u8; 17];
    for (at, shift) in (0..16).rev().enumerate() {
        let digit = (feed_id >> (shift * 4)) & 0xf;
        hex[at] = b"0123456789abcdef"[digit as usize];
    }
    hex[16] = b'-';
    // ASCII, so `from_utf8` never fails; one push, not seventeen.
    out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    push_decimal(out, position);
}

/// Lines an outbox row was written with (`encode_feed_lines_into`).
type FeedLines = (Vec<(Arc<str>, u32)>, Option<Vec<LineAmounts>>);

fn decode_feed_lines(text: &str) -> Option<FeedLines> {
    let mut lines = Vec::new();
    let mut amounts = Vec::new();
    for part in text.split(',') {
        let (name, numbers) = part.rsplit_once(':')?;
        let mut numbers = numbers.split('/');
        lines.push((Arc::from(name), numbers.next()?.parse().ok()?));
        match (numbers.next(), numbers.next(), numbers.next()) {
            (None, _, _) => {}
            (Some(confirmed), Some(refunded), None) => amounts.push(LineAmounts {
                confirmed: confirmed.parse().ok()?,
                refunded: refunded.parse().ok()?,
            }),
            _ => return None,
        }
    }
    match amounts.len() {
        0 => Some((lines, None)),
        n if n == lines.len() => Some((lines, Some(amounts))),
        _ => None,
    }
}

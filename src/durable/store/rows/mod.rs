//! The stores' one row codec: what a row of each table holds as SQL
//! values, and the checked conversion of those values into settled state.
//! SQLite and PostgreSQL only fetch the raw values (each with its own
//! driver) and hand them here, so both refuse the same damage the same
//! way: a value out of range is an error that names the table and the row,
//! never a panic and never a silently wrapped number.
//!
//! 64-bit ids and fingerprints are stored as the same 64 bits in a signed
//! `BIGINT` (`as_stored` / `from_stored`); every other number must fit its
//! type exactly.

use super::{decode_hold_lines, encode_hold_lines_into, push_decimal, status_from_name};
use crate::core::cell::BackorderRule;
use crate::core::engine::SaleWindow;
use crate::core::limits::{MAX_KIT_COMPONENTS, MAX_SKUS, MAX_STOCK_PER_SKU};
use crate::core::types::ReservationId;
use crate::core::types::{HoldStatus, LineAmounts};
use crate::core::waiting_room::RoomConfig;
use crate::durable::event::KeyEvent;
use crate::durable::event::LeaseStep;
use crate::durable::feed::{
    FeedCounts, FeedEvent, FeedFill, FeedKind, FeedOperator, FeedReservation,
};
use crate::durable::journal::segment::Position;
use crate::durable::settled::{Settled, SettledBackorder, SettledHold, SettledLease, SettledSku};
use std::sync::Arc;

/// A row that cannot be what the store wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub table: &'static str,
    /// Which row (`id 7`, `key "k-1"`), as far as it could be read.
    pub row: String,
    pub what: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "damaged row in {} ({}): {}; restore the store from backup",
            self.table, self.row, self.what
        )
    }
}

/// A 64-bit id or fingerprint as stored (the same bits, signed).
pub(crate) fn as_stored(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The inverse of `as_stored`.
pub(crate) fn from_stored(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

struct Checker {
    table: &'static str,
    row: String,
}

impl Checker {
    fn damage(&self, what: String) -> Damage {
        Damage {
            table: self.table,
            row: self.row.clone(),
            what,
        }
    }

    fn non_negative(&self, column: &str, value: i64) -> Result<u64, Damage> {
        u64::try_from(value).map_err(|_| self.damage(format!("{column} {value} is negative")))
    }

    fn fits_u32(&self, column: &str, value: i64) -> Result<u32, Damage> {
        u32::try_from(value).map_err(|_| self.damage(format!("{column} {value} is out of range")))
    }
}

/// The journal position from the two meta rows.
pub(crate) fn position(segment: i64, offset: i64) -> Result<Position, Damage> {
    let check = Checker {
        table: "hotstock_meta",
        row: "position".into(),
    };
    Ok(Position {
        segment: check.non_negative("position_segment", segment)?,
        offset: check.non_negative("position_offset", offset)?,
    })
}

/// `hotstock_skus` as stored.
pub(crate) struct SkuRow {
    pub id: i64,
    pub name: String,
    pub held: i64,
    pub sold: i64,
    pub received: i64,
    pub version: i64,
    pub per_customer_limit: Option<i64>,
    pub limit_version: i64,
    /// NULL: none (and in stores from before the change feed).
    pub low_stock_threshold: Option<i64>,
    pub low_stock_version: Option<i64>,
    /// 0 in stores from before safety stock (the column's default).
    pub safety_stock: i64,
    pub safety_stock_version: i64,
    /// A kit's components as `sku:units,...` (the reservation lines'
    /// codec); NULL for a SKU with stock of its own.
    pub components: Option<String>,
    pub kit_version: i64,
    /// 0 in stores from before backorders (the columns' defaults).
    pub backordered: i64,
    pub backorder_limit: i64,
    /// NULL: no end.
    pub backorder_until_ms: Option<i64>,
    pub backorder_version: i64,
    /// 0 in stores from before locations (the columns' defaults).
    pub located: i64,
    /// NULL: not a location.
    pub location_priority: Option<i64>,
    pub location_priority_version: i64,
    /// NULL: open-ended (and in stores from before sale windows).
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    /// 0 in stores from before sale windows (the column's default).
    pub sale_window_version: i64,
    /// NULL: no waiting room (and in stores from before them); the other
    /// two are set with it.
    pub room_admit_per_s: Option<i64>,
    pub room_overbook_milli: Option<i64>,
    pub room_admission_ttl_ms: Option<i64>,
    pub room_version: i64,
}

impl SkuRow {
    /// The waiting room's three columns: all NULL (no room) or all set
    /// and within `RoomConfig::validate`.
    fn waiting_room(&self, check: &Checker) -> Result<Option<RoomConfig>, Damage> {
        let columns = (
            self.room_admit_per_s,
            self.room_overbook_milli,
            self.room_admission_ttl_ms,
        );
        let (admit, overbook, ttl) = match columns {
            (None, None, None) => return Ok(None),
            (Some(admit), Some(overbook), Some(ttl)) => (admit, overbook, ttl),
            _ => {
                return Err(check
                    .damage("the waiting room's columns are neither all set nor all NULL".into()))
            }
        };
        let room = RoomConfig {
            admit_per_s: check.fits_u32("room_admit_per_s", admit)?,
            overbook_milli: check.fits_u32("room_overbook_milli", overbook)?,
            admission_ttl_ms: check.non_negative("room_admission_ttl_ms", ttl)?,
        };
        room.validate().map_err(|e| check.damage(e.to_string()))?;
        Ok(Some(room))
    }

    // Long by design: each of the row's columns checked in turn, so a
    // damaged one is named.
    pub(crate) fn load_into(self, settled: &mut Settled) -> Result<(), Damage> {
        let check = Checker {
            table: "hotstock_skus",
            row: format!("id {}", self.id),
        };
        let index = check.fits_u32("id", self.id)?;
        if index >= MAX_SKUS {
            return Err(check.damage(format!("id {index} is past the SKU limit")));
        }
        if self.held < 0 || self.sold < 0 || self.received < self.held + self.sold {
            return Err(check.damage(format!(
                "counts held {}, sold {}, received {} do not add up",
                self.held, self.sold, self.received
            )));
        }
        let limit = match self.per_customer_limit {
            None => None,
            Some(limit) => Some(check.fits_u32("per_customer_limit", limit)?),
        };
        let waiting_room = self.waiting_room(&check)?;
        let sku = SettledSku {
            name: self.name.into(),
            held: self.held,
            sold: self.sold,
            received: self.received,
            version: check.non_negative("version", self.version)?,
            limit,
            limit_version: check.non_negative("limit_version", self.limit_version)?,
            low_stock: match self.low_stock_threshold {
                None => None,
                Some(t) => Some(check.fits_u32("low_stock_threshold", t)?).filter(|t| *t > 0),
            },
            low_stock_version: check
                .non_negative("low_stock_version", self.low_stock_version.unwrap_or(0))?,
            safety_stock: Some(check.non_negative("safety_stock", self.safety_stock)?)
                .filter(|&units| units <= MAX_STOCK_PER_SKU)
                .ok_or_else(|| {
                    check.damage(format!(
                        "safety_stock {} is past the stock limit",
                        self.safety_stock
                    ))
                })?,
            safety_stock_version: check
                .non_negative("safety_stock_version", self.safety_stock_version)?,
            kit: self
                .components
                .as_deref()
                .map(|text| match decode_hold_lines(text) {
                    Some((components, None))
                        if (1..=MAX_KIT_COMPONENTS).contains(&components.len()) =>
                    {
                        Ok(components)
                    }
                    _ => Err(check.damage(format!("components {text:?} are not sku:units pairs"))),
                })
                .transpose()?,
            kit_version: check.non_negative("kit_version", self.kit_version)?,
            backordered: check.non_negative("backordered", self.backordered)? as i64,
            backorder: BackorderRule {
                limit: Some(check.non_negative("backorder_limit", self.backorder_limit)?)
                    .filter(|&units| units <= MAX_STOCK_PER_SKU)
                    .ok_or_else(|| {
                        check.damage(format!(
                            "backorder_limit {} is past the stock limit",
                            self.backorder_limit
                        ))
                    })?,
                until_ms: self
                    .backorder_until_ms
                    .map(|until| check.non_negative("backorder_until_ms", until))
                    .transpose()?,
            },
            backorder_version: check.non_negative("backorder_version", self.backorder_version)?,
            located: match self.located {
                0 => false,
                1 => true,
                other => return Err(check.damage(format!("located {other} is not 0 or 1"))),
            },
            priority: self
                .location_priority
                .map(|p| check.fits_u32("location_priority", p))
                .transpose()?,
            priority_version: check
                .non_negative("location_priority_version", self.location_priority_version)?,
            sale_window: {
                let bound =
                    |name, ms: Option<i64>| ms.map(|ms| check.non_negative(name, ms)).transpose();
                let window = SaleWindow {
                    starts_at_ms: bound("sale_starts_at_ms", self.sale_starts_at_ms)?,
                    ends_at_ms: bound("sale_ends_at_ms", self.sale_ends_at_ms)?,
                };
                window.validate().map_err(|e| check.damage(e.to_string()))?;
                window
            },
            sale_window_version: check
                .non_negative("sale_window_version", self.sale_window_version)?,
            waiting_room,
            waiting_room_version: check.non_negative("room_version", self.room_version)?,
        };
        let index = index as usize;
        if settled.skus.len() <= index {
            settled.skus.resize(index + 1, None);
        }
        settled.skus[index] = Some(sku);
        Ok(())
    }
}

/// `hotstock_reservations` as stored.
pub(crate) struct ReservationRow {
    pub id: i64,
    pub status: String,
    pub status_ms: i64,
    pub deadline_ms: i64,
    pub limit_mask: i64,
    pub customer: Option<String>,
    pub lines: String,
    pub extensions: i64,
}

impl ReservationRow {
    pub(crate) fn load_into(self, settled: &mut Settled) -> Result<(), Damage> {
        let id = from_stored(self.id);
        let check = Checker {
            table: "hotstock_reservations",
            row: format!("id {}", ReservationId::from_u64(id)),
        };
        let (lines, amounts) = decode_hold_lines(&self.lines)
            .ok_or_else(|| check.damage(format!("lines {:?}", self.lines)))?;
        let hold = SettledHold {
            status: status_from_name(&self.status)
                .ok_or_else(|| check.damage(format!("status {:?}", self.status)))?,
            at_ms: check.non_negative("status_ms", self.status_ms)?,
            deadline_ms: check.non_negative("deadline_ms", self.deadline_ms)?,
            limit_mask: check.fits_u32("limit_mask", self.limit_mask)?,
            customer: self.customer.map(Into::into),
            lines,
            extensions: u8::try_from(self.extensions)
                .map_err(|_| check.damage(format!("extensions {}", self.extensions)))?,
            amounts,
        };
        settled.holds.insert(id, hold);
        Ok(())
    }
}

/// `hotstock_customer_units` as stored.
pub(crate) struct CustomerUnitsRow {
    pub sku: i64,
    pub customer: String,
    pub units: i64,
}

impl CustomerUnitsRow {
    pub(crate) fn load_into(self, settled: &mut Settled) -> Result<(), Damage> {
        let check = Checker {
            table: "hotstock_customer_units",
            row: format!("sku {}, customer {:?}", self.sku, self.customer),
        };
        let sku = check.fits_u32("sku", self.sku)?;
        check.non_negative("units", self.units)?;
        settled
            .customer_units
            .insert((sku, self.customer.into()), self.units);
        Ok(())
    }
}

/// `hotstock_backorders` as stored.
pub(crate) struct BackorderRow {
    pub sku: i64,
    pub reservation: i64,
    pub ticket: i64,
    pub owed: i64,
    pub sold: bool,
}

impl BackorderRow {
    pub(crate) fn of(key: (u32, u64), row: &SettledBackorder) -> BackorderRow {
        BackorderRow {
            sku: i64::from(key.0),
            reservation: as_stored(key.1),
            ticket: as_stored(row.ticket),
            owed: i64::from(row.owed),
            sold: row.sold,
        }
    }

    pub(crate) fn load_into(self, settled: &mut Settled) -> Result<(), Damage> {
        let check = Checker {
            table: "hotstock_backorders",
            row: format!(
                "sku {}, reservation {}",
                self.sku,
                ReservationId::from_u64(from_stored(self.reservation))
            ),
        };
        let sku = check.fits_u32("sku", self.sku)?;
        let owed = check.fits_u32("owed", self.owed)?;
        let ticket = from_stored(self.ticket);
        if owed == 0 || ticket == 0 {
            return Err(check.damage("a row that owes nothing".into()));
        }
        let row = SettledBackorder {
            ticket,
            owed,
            sold: self.sold,
            rank: if self.sold { 2 } else { 1 },
        };
        let key = (sku, from_stored(self.reservation));
        settled.backorders.insert(key, row);
        Ok(())
    }
}

/// `hotstock_leases` as stored: a lease of this node from a cluster's
/// escrow, granted (`returning` NULL) or returning that many units. A
/// closed lease's row is deleted.
pub(crate) struct LeaseRow {
    pub id: String,
    pub sku: i64,
    pub granted: i64,
    pub returning: Option<i64>,
}

impl LeaseRow {
    pub(crate) fn of(id: &str, row: &SettledLease) -> LeaseRow {
        LeaseRow {
            id: id.into(),
            sku: i64::from(row.sku),
            granted: as_stored(row.granted),
            returning: match row.step {
                LeaseStep::Granted => None,
                LeaseStep::Returning(units) | LeaseStep::Closed(units) => Some(as_stored(units)),
            },
        }
    }

    pub(crate) fn is_closed(row: &SettledLease) -> bool {
        matches!(row.step, LeaseStep::Closed(_))
    }

    pub(crate) fn load_into(self, settled: &mut Settled) -> Result<(), Damage> {
        let check = Checker {
            table: "hotstock_leases",
            row: format!("lease {:?}", self.id),
        };
        crate::core::engine::validate_lease_id(&self.id)
            .map_err(|_| check.damage("an invalid lease id".into()))?;
        let sku = check.fits_u32("sku", self.sku)?;
        let granted = from_stored(self.granted);
        let step = match self.returning.map(from_stored) {
            None => LeaseStep::Granted,
            Some(units) => LeaseStep::Returning(units),
        };
        if granted == 0 || granted > MAX_STOCK_PER_SKU || step.returned() > granted {
            return Err(check.damage("units a lease cannot have".into()));
        }
        let row = SettledLease { sku, granted, step };
        settled.leases.insert(self.id.into(), row);
        Ok(())
    }
}

/// `hotstock_idempotency` as stored.
pub(crate) struct KeyRow {
    pub key: String,
    pub fingerprint: i64,
    pub created_ms: i64,
    pub reservation: i64,
    pub status: String,
    pub expires_at_ms: i64,
}

impl KeyRow {
    pub(crate) fn load_into(self, settled: &mut Settled) -> Result<(), Damage> {
        let check = Checker {
            table: "hotstock_idempotency",
            row: format!("key {:?}", self.key),
        };
        let event = KeyEvent {
            key: self.key.as_str().into(),
            fingerprint: from_stored(self.fingerprint),
            created_ms: check.non_negative("created_ms", self.created_ms)?,
            reservation: ReservationId::from_u64(from_stored(self.reservation)),
            status: status_from_name(&self.status)
                .ok_or_else(|| check.damage(format!("status {:?}", self.status)))?,
            expires_at_ms: check.non_negative("expires_at_ms", self.expires_at_ms)?,
        };
        settled.keys.insert(self.key.into(), event);
        Ok(())
    }
}

/// The feed's next position from its meta row (1 when there is none: a
/// store from before the feed, or a fresh one).
pub(crate) fn feed_next_position(value: Option<i64>) -> Result<u64, Damage> {
    let check = Checker {
        table: "hotstock_meta",
        row: "feed_next_position".into(),
    };
    match value {
        None => Ok(1),
        Some(value) => Ok(check.non_negative("feed_next_position", value)?.max(1)),
    }
}

/// A kit's components as the `components` column stores them.
pub(crate) fn components_text(sku: &SettledSku) -> Option<String> {
    sku.kit.as_deref().map(|components| {
        let mut text = String::new();
        encode_hold_lines_into(&mut text, components, None);
        text
    })
}

mod events;
pub use events::*;

#[cfg(all(test, not(loom)))]
mod tests;

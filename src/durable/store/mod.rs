//! Durable stores for settled counts: an embedded SQLite file by default,
//! PostgreSQL as the shop's system of record.
//!
//! A store holds what the checkpointer last wrote: per-SKU counts, the
//! reservation records still kept, per-customer limit counts, and the
//! journal position they reflect, all written in one transaction. Recovery
//! loads it and replays the journal after that position. The schema is in
//! `docs/storage.md`.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod rows;
pub mod sqlite;

use crate::core::holds::{HoldStatus, Line, LineAmounts};
use crate::durable::event::status_from_code;
use crate::durable::feed::FeedEvent;
use crate::durable::settled::{Checkpoint, Settled};
use crate::SkuId;

/// Why a store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{store}: {message}")]
pub struct StoreError {
    pub store: String,
    pub message: String,
}

/// A place that keeps checkpoints.
pub trait Store: Send {
    /// What it is, for messages ("SQLite file ./hotstock-data/hotstock.sqlite").
    fn describe(&self) -> String;
    /// The last checkpoint, or `None` if nothing was ever written.
    fn load(&mut self) -> Result<Option<Settled>, StoreError>;
    /// Writes a checkpoint's changes and position in one transaction; when it
    /// returns, they are durable.
    fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError>;
    /// Counts one more start of a server on this store and returns the new
    /// count (1 on the first start), durable when it returns. Reservation
    /// ids carry it, so no run issues an id an earlier run issued.
    fn next_boot(&mut self) -> Result<u32, StoreError>;
    /// The key of public reservation ids (`core::public_id`): the one
    /// stored, or `fresh` stored now when there is none (the first start),
    /// durable when it returns. Kept with the data, so ids stay the same
    /// across restarts; a copy of the store is a copy of the key.
    fn reservation_id_key(&mut self, fresh: [u8; 16]) -> Result<[u8; 16], StoreError>;
    /// Outbox events after position `after`, at most `limit`, in order.
    fn read_events(&mut self, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError>;
    /// The oldest position the outbox still holds (`None` when empty).
    fn oldest_event(&mut self) -> Result<Option<u64>, StoreError>;
    /// A value kept beside the checkpoints (a publisher's acknowledged
    /// feed position), durable once `write_meta` returns.
    fn read_meta(&mut self, key: &str) -> Result<Option<i64>, StoreError>;
    fn write_meta(&mut self, key: &str, value: i64) -> Result<(), StoreError>;
}

/// The meta key of the feed position that follows the stored events.
pub(crate) const FEED_NEXT_KEY: &str = "feed_next_position";

/// The first position retention keeps, by count: events at or below the
/// result are deleted.
pub(crate) fn delete_through_by_count(checkpoint: &Checkpoint, max_events: u64) -> i64 {
    (checkpoint.feed_next_position.saturating_sub(1)).saturating_sub(max_events) as i64
}

/// The meta keys under which stores keep the two halves of the reservation
/// id key (as signed 64-bit values, the meta column's type).
pub(crate) const ID_KEY_KEYS: [&str; 2] = ["reservation_id_key_0", "reservation_id_key_1"];

/// A key's halves as meta values, and back.
pub(crate) fn id_key_halves(key: [u8; 16]) -> [i64; 2] {
    let half = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&key[at..at + 8]);
        i64::from_le_bytes(bytes)
    };
    [half(0), half(8)]
}

pub(crate) fn id_key_from_halves(halves: [i64; 2]) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&halves[0].to_le_bytes());
    key[8..].copy_from_slice(&halves[1].to_le_bytes());
    key
}

/// The meta key under which stores count boots.
pub(crate) const BOOT_KEY: &str = "boot";

/// The meta key under which a store keeps its layout's format; each store
/// counts its own (`sqlite::STORE_FORMAT`, `postgres::STORE_FORMAT`).
pub(crate) const STORE_FORMAT_KEY: &str = "store_format";

/// A store whose recorded format (`None`: none recorded, a store from
/// before formats) is newer than `known`, the one this build writes, is
/// refused with a message saying what to do.
pub(crate) fn refuse_if_newer(stored: Option<i64>, known: i64) -> Result<(), String> {
    match stored {
        Some(format) if format > known => Err(format!(
            "the store was written by a newer hotstock (store format {format}); this build \
             reads formats up to {known}: run that build or a later one, or restore a \
             backup taken before the upgrade"
        )),
        _ => Ok(()),
    }
}

/// The boot count after `previous`, as kept in a meta row: 1 to 65,535,
/// wrapping (an id has 16 bits for it, `holds.rs`; 0 is an engine that
/// never boots from a store). PostgreSQL computes the same in SQL.
pub(crate) fn following_boot(previous: Option<i64>) -> u32 {
    let previous = previous.unwrap_or(0).clamp(0, 65_535) as u32;
    previous % 65_535 + 1
}

/// Reservation lines as stored: `sku:quantity` pairs joined by commas.
#[cfg(test)]
fn encode_lines(lines: &[Line]) -> String {
    let mut out = String::new();
    encode_hold_lines_into(&mut out, lines, None);
    out
}

/// A reservation row's lines: `sku:qty` each, or `sku:qty:confirmed:refunded`
/// for a record confirmed or refunded in part, joined by commas, into a
/// buffer the caller reuses: a checkpoint in a sale writes one per
/// purchase, so neither an allocation nor `fmt` per row.
pub(crate) fn encode_hold_lines_into(
    out: &mut String,
    lines: &[Line],
    amounts: Option<&[LineAmounts]>,
) {
    out.clear();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_decimal(out, u64::from(line.sku.index()));
        out.push(':');
        push_decimal(out, u64::from(line.quantity));
        if let Some(amounts) = amounts.and_then(|a| a.get(i)) {
            out.push(':');
            push_decimal(out, u64::from(amounts.confirmed));
            out.push(':');
            push_decimal(out, u64::from(amounts.refunded));
        }
    }
}

/// The lines of a reservation row and, when every line has them, their
/// amounts (`encode_hold_lines_into`). `None` for a malformed text.
pub(crate) fn decode_hold_lines(text: &str) -> Option<(Vec<Line>, Option<Vec<LineAmounts>>)> {
    let mut lines = Vec::new();
    let mut amounts = Vec::new();
    for part in text.split(',') {
        let mut fields = part.split(':');
        let sku: u32 = fields.next()?.parse().ok()?;
        let quantity: u32 = fields.next()?.parse().ok()?;
        if quantity == 0 {
            return None;
        }
        lines.push(Line {
            sku: SkuId::from_index(sku),
            quantity,
        });
        match (fields.next(), fields.next(), fields.next()) {
            (None, _, _) => {}
            (Some(confirmed), Some(refunded), None) => {
                let confirmed: u32 = confirmed.parse().ok()?;
                let refunded: u32 = refunded.parse().ok()?;
                (confirmed <= quantity && refunded <= confirmed).then_some(())?;
                amounts.push(LineAmounts {
                    confirmed,
                    refunded,
                });
            }
            _ => return None,
        }
    }
    match amounts.len() {
        0 => Some((lines, None)),
        n if n == lines.len() => Some((lines, Some(amounts))),
        _ => None,
    }
}

pub(crate) fn push_decimal(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // One push of the digits (ASCII, so `from_utf8` never fails), not a
    // push per digit: the outbox writes a dozen numbers per event.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

#[cfg(test)]
fn decode_lines(text: &str) -> Option<Vec<Line>> {
    decode_hold_lines(text).and_then(|(lines, amounts)| amounts.is_none().then_some(lines))
}

pub(crate) fn status_from_name(name: &str) -> Option<HoldStatus> {
    (1..=5)
        .filter_map(status_from_code)
        .find(|s| s.as_str() == name)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_garbage_is_refused() {
        let lines = vec![
            Line {
                sku: SkuId::from_index(3),
                quantity: 2,
            },
            Line {
                sku: SkuId::from_index(40),
                quantity: 1,
            },
        ];
        assert_eq!(encode_lines(&lines), "3:2,40:1");
        assert_eq!(decode_lines(&encode_lines(&lines)), Some(lines.clone()));
        let amounts = vec![
            LineAmounts {
                confirmed: 1,
                refunded: 0,
            };
            lines.len()
        ];
        let mut text = String::new();
        encode_hold_lines_into(&mut text, &lines, Some(&amounts));
        assert_eq!(decode_hold_lines(&text), Some((lines, Some(amounts))));
        for bad in ["1:2:3", "1:2:3:1", "1:2:1:0,2:1", "1:2:1:0:0"] {
            assert_eq!(decode_hold_lines(bad), None, "{bad:?}");
        }
        let mut buffer = String::from("left over");
        let extremes = [Line {
            sku: SkuId::from_index(0),
            quantity: u32::MAX,
        }];
        encode_hold_lines_into(&mut buffer, &extremes, None);
        assert_eq!(
            buffer,
            format!("0:{}", u32::MAX),
            "the buffer is cleared first"
        );
        for bad in ["", "1", "1:0", "x:1", "1:2,"] {
            assert_eq!(decode_lines(bad), None, "{bad:?}");
        }
        assert_eq!(status_from_name("refunded"), Some(HoldStatus::Refunded));
        assert_eq!(status_from_name("gone"), None);
    }
}

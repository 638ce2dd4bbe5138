//! Reservations first written by a checkpoint, many to a row of
//! `hotstock_reservation_chunks`.
//!
//! # Why
//!
//! In a sale every purchase is a reservation the checkpoint writes once.
//! As a row of `hotstock_reservations` each cost ~4,470 instructions a
//! purchase, over a quarter of a checkpoint (callgrind,
//! docs/benchmarks.md): a B-tree seek for its explicit id (SQLite's cursor
//! does not stay at the table's end between rows), eight columns bound and
//! stored. A chunk holds up to `CHUNK_ENTRIES` of them encoded in one blob,
//! so SQLite stores one row per thousand purchases.
//!
//! # The rules that keep it exact
//!
//! - A chunk takes only ids **above every stored id** (rows and chunks)
//!   when it is written, and not negative as stored (`as_stored`), so the
//!   chunks' id ranges never overlap and follow `first_id`; the largest
//!   stored id is the newest chunk's `last_id` or the rows' `MAX(id)`.
//! - So a later write of such an id goes to `hotstock_reservations` (its id
//!   is no longer above the largest) and **supersedes** the chunk's entry:
//!   loading reads the chunks first and the rows over them.
//! - A prune that deletes a row first deletes any chunk entry of its id (an
//!   older state of it, which would otherwise come back); chunk entries are
//!   pruned by the same rule as rows (`is_prunable`).
//!
//! The blob: a format byte (`FORMAT`), the number of entries, then per
//! entry, in id order: the id less the one before (the first less
//! `first_id`), the status code, the
//! status time, the deadline, the limit mask and the extensions, the
//! customer's length + 1 (0 for none) and bytes, and the lines' text
//! (`encode_hold_lines_into`) with its length; numbers as LEB128 varints.

use rusqlite::{params, OptionalExtension, Transaction};

use super::rows::{as_stored, from_stored, Damage};
use super::{decode_hold_lines, encode_hold_lines_into, Fail, StoreError};
use crate::core::holds::{HoldStatus, ReservationId};
use crate::durable::event::{status_code, status_from_code};
use crate::durable::settled::SettledHold;

/// Entries per chunk at most: a blob of ~21 KiB in a sale (21.0 bytes an
/// entry, measured on a 3 s sale of one-unit purchases), so a prune that
/// rewrites one rewrites little.
pub(super) const CHUNK_ENTRIES: usize = 1_024;

/// The blob's layout; a chunk of another is refused as damaged.
const FORMAT: u8 = 1;

const TABLE: &str = "hotstock_reservation_chunks";

/// The largest id stored, as stored: rows and chunks.
pub(super) fn largest_stored_id(
    tx: &Transaction<'_>,
    fail: Fail<'_>,
) -> Result<Option<i64>, StoreError> {
    let of_rows: Option<i64> = tx
        .query_row("SELECT MAX(id) FROM hotstock_reservations", [], |row| {
            row.get(0)
        })
        .map_err(|e| fail("finding the largest reservation id", e))?;
    // Chunks' ranges follow their first ids (the module's rules).
    let of_chunks: Option<i64> = tx
        .query_row(
            "SELECT last_id FROM hotstock_reservation_chunks ORDER BY first_id DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| fail("finding the largest reservation id", e))?;
    Ok(of_rows.max(of_chunks))
}

/// Whether a row of id `id` may go into a chunk, `largest` the largest id
/// stored (`largest_stored_id`).
pub(super) fn may_chunk(id: u64, largest: Option<i64>) -> bool {
    let stored = as_stored(id);
    stored >= 0 && largest.is_none_or(|largest| stored > largest)
}

/// Writes `rows` (ids in order, each `may_chunk`) as chunks.
pub(super) fn write_chunks(
    tx: &Transaction<'_>,
    rows: &[(u64, SettledHold)],
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let Some((last, _)) = rows.last() else {
        return Ok(());
    };
    // The module's rules: ids in order, none negative as stored (the rows
    // are in id order, so the last is the largest), so a chunk's range in
    // SQLite's order is its first and last id.
    debug_assert!(rows.windows(2).all(|pair| pair[0].0 < pair[1].0));
    debug_assert!(
        as_stored(*last) >= 0,
        "a chunk's ids are not negative as stored"
    );
    let mut insert = tx
        .prepare_cached(
            "INSERT OR FAIL INTO hotstock_reservation_chunks
                 (first_id, last_id, entries, ended_ms, confirmed_ms, rows)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(|e| fail("preparing reservation chunks", e))?;
    let mut blob = Vec::new();
    let mut lines = String::new();
    for chunk in rows.chunks(CHUNK_ENTRIES) {
        let first = chunk[0].0;
        encode_into(&mut blob, &mut lines, first, chunk);
        let last = chunk[chunk.len() - 1].0;
        let (ended, confirmed) = oldest_prunable(chunk);
        insert
            .execute(params![
                as_stored(first),
                as_stored(last),
                chunk.len() as i64,
                ended.map(as_stored),
                confirmed.map(as_stored),
                blob.as_slice()
            ])
            .map_err(|e| fail("writing a reservation chunk", e))?;
    }
    Ok(())
}

/// Whether a reservation may be forgotten by a prune that forgets ended
/// ones whose status is older than `ended_before` and confirmed ones older
/// than `confirmed_before` (the SQL of `write_reservations`, in Rust).
pub(super) fn is_prunable(
    hold: &SettledHold,
    (ended_before, confirmed_before): (u64, u64),
) -> bool {
    match hold.status {
        HoldStatus::Held => false,
        HoldStatus::Confirmed => hold.at_ms <= confirmed_before,
        HoldStatus::Cancelled | HoldStatus::Expired | HoldStatus::Refunded => {
            hold.at_ms <= ended_before
        }
    }
}

/// The prune's part in the chunks, before the rows' (same transaction):
/// entries of the ids in `superseded` (rows about to be deleted) and
/// entries prunable on their own go; a chunk left empty goes.
pub(super) fn prune_chunks(
    tx: &Transaction<'_>,
    superseded: &[u64],
    before: (u64, u64),
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let mut visit = chunks_holding(tx, superseded, fail)?;
    // Only chunks with an entry old enough by its own status's rule: a
    // sale's confirmed purchases are kept far longer than ended ones, and
    // their chunks are not read at every hourly prune until then.
    let mut old = tx
        .prepare(
            "SELECT first_id FROM hotstock_reservation_chunks
             WHERE ended_ms <= ?1 OR confirmed_ms <= ?2",
        )
        .map_err(|e| fail("finding old reservation chunks", e))?;
    let rows = old
        .query_map(params![as_stored(before.0), as_stored(before.1)], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(|e| fail("finding old reservation chunks", e))?;
    for first in rows {
        visit.push(first.map_err(|e| fail("finding old reservation chunks", e))?);
    }
    visit.sort_unstable();
    visit.dedup();
    let superseded: std::collections::HashSet<u64> = superseded.iter().copied().collect();
    for first in visit {
        let keep =
            |id: u64, hold: &SettledHold| !superseded.contains(&id) && !is_prunable(hold, before);
        rewrite_chunk(tx, first, keep, fail)?;
    }
    Ok(())
}

/// The first ids of the chunks whose ranges hold any of `ids`.
fn chunks_holding(
    tx: &Transaction<'_>,
    ids: &[u64],
    fail: Fail<'_>,
) -> Result<Vec<i64>, StoreError> {
    let mut find = tx
        .prepare_cached(
            "SELECT first_id, last_id FROM hotstock_reservation_chunks
             WHERE first_id <= ?1 ORDER BY first_id DESC LIMIT 1",
        )
        .map_err(|e| fail("finding a reservation's chunk", e))?;
    let mut found = Vec::new();
    for &id in ids {
        let stored = as_stored(id);
        if stored < 0 {
            continue;
        }
        let chunk: Option<(i64, i64)> = find
            .query_row([stored], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(|e| fail("finding a reservation's chunk", e))?;
        if let Some((first, last)) = chunk.filter(|&(_, last)| stored <= last) {
            debug_assert!(first <= stored && stored <= last);
            found.push(first);
        }
    }
    Ok(found)
}

/// Keeps the entries of chunk `first` for which `keep` holds: the chunk is
/// left alone when all are kept, deleted when none are.
fn rewrite_chunk(
    tx: &Transaction<'_>,
    first: i64,
    keep: impl Fn(u64, &SettledHold) -> bool,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let blob: Vec<u8> = tx
        .query_row(
            "SELECT rows FROM hotstock_reservation_chunks WHERE first_id = ?1",
            [first],
            |row| row.get(0),
        )
        .map_err(|e| fail("reading a reservation chunk", e))?;
    let entries = decode(from_stored(first), &blob).map_err(|damage| {
        let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT);
        let error = rusqlite::Error::SqliteFailure(code, Some(damage.to_string()));
        fail("reading a reservation chunk", error)
    })?;
    let before = entries.len();
    let kept: Vec<(u64, SettledHold)> = entries
        .into_iter()
        .filter(|(id, hold)| keep(*id, hold))
        .collect();
    if kept.len() == before {
        return Ok(());
    }
    if kept.is_empty() {
        tx.execute(
            "DELETE FROM hotstock_reservation_chunks WHERE first_id = ?1",
            [first],
        )
        .map_err(|e| fail("deleting a reservation chunk", e))?;
        return Ok(());
    }
    // The key stays: the range only narrows, so ranges still never overlap.
    let mut blob = Vec::new();
    encode_into(&mut blob, &mut String::new(), from_stored(first), &kept);
    let last = kept[kept.len() - 1].0;
    let (ended, confirmed) = oldest_prunable(&kept);
    tx.execute(
        "UPDATE hotstock_reservation_chunks
         SET last_id = ?2, entries = ?3, ended_ms = ?4, confirmed_ms = ?5, rows = ?6
         WHERE first_id = ?1",
        params![
            first,
            as_stored(last),
            kept.len() as i64,
            ended.map(as_stored),
            confirmed.map(as_stored),
            blob
        ],
    )
    .map_err(|e| fail("rewriting a reservation chunk", e))?;
    Ok(())
}

/// The oldest status time among `rows`' ended entries, and among their
/// confirmed ones (`None`: no such entry): what a prune compares with its
/// two bounds (`is_prunable`) to skip a chunk without reading it.
fn oldest_prunable(rows: &[(u64, SettledHold)]) -> (Option<u64>, Option<u64>) {
    let mut ended: Option<u64> = None;
    let mut confirmed: Option<u64> = None;
    for (_, hold) in rows {
        let oldest = match hold.status {
            HoldStatus::Held => continue,
            HoldStatus::Confirmed => &mut confirmed,
            HoldStatus::Cancelled | HoldStatus::Expired | HoldStatus::Refunded => &mut ended,
        };
        *oldest = Some(oldest.map_or(hold.at_ms, |at| at.min(hold.at_ms)));
    }
    (ended, confirmed)
}

/// Encodes `rows` (ids in order, none below `first`, the chunk's key)
/// into `blob`, emptied first; `lines` is a buffer reused from row to row.
pub(super) fn encode_into(
    blob: &mut Vec<u8>,
    lines: &mut String,
    first: u64,
    rows: &[(u64, SettledHold)],
) {
    blob.clear();
    blob.push(FORMAT);
    put_varint(blob, rows.len() as u64);
    let mut previous = first;
    for (id, hold) in rows {
        debug_assert!(*id >= previous, "chunk rows in id order");
        put_varint(blob, id - previous);
        previous = *id;
        blob.push(status_code(hold.status));
        put_varint(blob, hold.at_ms);
        put_varint(blob, hold.deadline_ms);
        put_varint(blob, u64::from(hold.limit_mask));
        blob.push(hold.extensions);
        match &hold.customer {
            Some(customer) => {
                put_varint(blob, customer.len() as u64 + 1);
                blob.extend_from_slice(customer.as_bytes());
            }
            None => put_varint(blob, 0),
        }
        encode_hold_lines_into(lines, &hold.lines, hold.amounts.as_deref());
        put_varint(blob, lines.len() as u64);
        blob.extend_from_slice(lines.as_bytes());
    }
}

/// The entries of the chunk whose first id is `first`; a blob that does not
/// decode is damage naming the chunk and the entry.
pub(super) fn decode(first: u64, blob: &[u8]) -> Result<Vec<(u64, SettledHold)>, Damage> {
    let damage = |entry: usize, what: String| Damage {
        table: TABLE,
        row: format!("first id {}, entry {entry}", ReservationId::from_u64(first)),
        what,
    };
    let mut reader = Reader { blob, at: 0 };
    match reader.byte() {
        Some(FORMAT) => {}
        other => return Err(damage(0, format!("format {other:?}, not {FORMAT}"))),
    }
    let count = reader
        .varint()
        .ok_or_else(|| damage(0, "count truncated".into()))?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    // Every entry takes at least 9 bytes: a count larger than the blob
    // could hold is damage, not an allocation.
    if count > blob.len() / 9 {
        return Err(damage(0, format!("count {count} in {} bytes", blob.len())));
    }
    let mut rows = Vec::with_capacity(count);
    let mut previous = first;
    for entry in 0..count {
        let (id, hold) = reader
            .entry(previous)
            .map_err(|what| damage(entry, what.to_owned()))?;
        previous = id;
        rows.push((id, hold));
    }
    if !reader.is_done() {
        let extra = blob.len() - reader.at;
        return Err(damage(count, format!("{extra} bytes after the last entry")));
    }
    Ok(rows)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A cursor over a chunk's blob; every read checks its bounds.
struct Reader<'b> {
    blob: &'b [u8],
    at: usize,
}

impl Reader<'_> {
    fn is_done(&self) -> bool {
        self.at == self.blob.len()
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.blob.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn text(&mut self, len: u64) -> Option<&str> {
        let end = self.at.checked_add(usize::try_from(len).ok()?)?;
        let bytes = self.blob.get(self.at..end)?;
        self.at = end;
        std::str::from_utf8(bytes).ok()
    }

    fn entry(&mut self, previous: u64) -> Result<(u64, SettledHold), &'static str> {
        let delta = self.varint().ok_or("id truncated")?;
        let id = previous.checked_add(delta).ok_or("id out of range")?;
        let status = self.byte().and_then(status_from_code).ok_or("status")?;
        let at_ms = self.varint().ok_or("status time")?;
        let deadline_ms = self.varint().ok_or("deadline")?;
        let limit_mask = self.varint().and_then(|m| u32::try_from(m).ok());
        let limit_mask = limit_mask.ok_or("limit mask")?;
        let extensions = self.byte().ok_or("extensions")?;
        let customer = match self.varint().ok_or("customer length")? {
            0 => None,
            len => Some(Box::from(self.text(len - 1).ok_or("customer")?)),
        };
        let len = self.varint().ok_or("lines length")?;
        let text = self.text(len).ok_or("lines")?;
        let (lines, amounts) = decode_hold_lines(text).ok_or("lines")?;
        let hold = SettledHold {
            status,
            at_ms,
            deadline_ms,
            limit_mask,
            customer,
            lines,
            extensions,
            amounts,
        };
        Ok((id, hold))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::holds::{Line, LineAmounts};
    use crate::core::types::SkuId;

    fn hold(n: u64) -> SettledHold {
        SettledHold {
            status: status_from_code(1 + (n % 5) as u8).unwrap(),
            at_ms: 1_700_000_000_000 + n,
            deadline_ms: u64::MAX - n,
            limit_mask: (n as u32).wrapping_mul(2_654_435_761),
            customer: (n % 3 != 0).then(|| format!("c-{n}-é").into()),
            lines: (0..1 + n % 3)
                .map(|l| Line {
                    sku: SkuId::from_index((n + l) as u32),
                    quantity: 1 + l as u32,
                })
                .collect(),
            extensions: (n % 7) as u8,
            amounts: (n % 4 == 0).then(|| {
                (0..1 + n % 3)
                    .map(|l| LineAmounts {
                        confirmed: 1 + l as u32,
                        refunded: (l % 2) as u32,
                    })
                    .collect()
            }),
        }
    }

    #[test]
    fn entries_round_trip_through_a_blob() {
        let rows: Vec<(u64, SettledHold)> = [5u64, 6, 64, 1 << 32, (1 << 62) + 3]
            .iter()
            .enumerate()
            .map(|(n, &id)| (id, hold(n as u64)))
            .collect();
        let mut blob = Vec::new();
        encode_into(&mut blob, &mut String::new(), 5, &rows);
        assert_eq!(decode(5, &blob).unwrap(), rows);
        // A rewritten chunk keeps its key below its first entry.
        encode_into(&mut blob, &mut String::new(), 2, &rows[1..]);
        assert_eq!(decode(2, &blob).unwrap(), rows[1..]);
    }

    #[test]
    fn a_blob_cut_short_or_of_another_format_is_damage_naming_the_entry() {
        let rows: Vec<(u64, SettledHold)> = (0..3).map(|n| (10 + n, hold(n))).collect();
        let mut blob = Vec::new();
        encode_into(&mut blob, &mut String::new(), 10, &rows);
        for cut in 1..blob.len() {
            let truncated = decode(10, &blob[..cut]);
            let damage = truncated.expect_err("a cut blob decoded");
            assert_eq!(damage.table, TABLE);
            assert!(damage.row.contains("entry"), "{}", damage.row);
        }
        let mut longer = blob.clone();
        longer.push(0);
        let damage = decode(10, &longer).unwrap_err();
        assert!(
            damage.what.contains("after the last entry"),
            "{}",
            damage.what
        );
        let mut other = blob.clone();
        other[0] = FORMAT + 1;
        let damage = decode(10, &other).unwrap_err();
        assert!(damage.what.contains("format"), "{}", damage.what);
    }

    /// What `decode` promises for any blob: no panic and no allocation
    /// past the blob's size; damage names this table and an entry; what
    /// decodes has ids in order from the chunk's key.
    fn check_any_blob(first: u64, blob: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        match decode(first, blob) {
            Ok(rows) => {
                proptest::prop_assert!(rows.len() <= blob.len() / 9);
                let mut previous = first;
                for (id, _) in &rows {
                    proptest::prop_assert!(*id >= previous, "id {} after {}", id, previous);
                    previous = *id;
                }
            }
            Err(damage) => {
                proptest::prop_assert_eq!(damage.table, TABLE);
                proptest::prop_assert!(damage.row.contains("entry"), "{}", damage.row);
            }
        }
        Ok(())
    }

    proptest::proptest! {
        /// A stored chunk is read back from a file that may be damaged:
        /// bytes changed anywhere in a real blob are damage or entries,
        /// never a panic.
        #[test]
        fn a_damaged_blob_is_damage_or_entries_never_a_panic(
            entries in 1u64..5,
            changes in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..4),
        ) {
            let rows: Vec<(u64, SettledHold)> = (0..entries).map(|n| (100 + 3 * n, hold(n))).collect();
            let mut blob = Vec::new();
            encode_into(&mut blob, &mut String::new(), 100, &rows);
            for (at, byte) in changes {
                let at = at % blob.len();
                blob[at] = byte;
            }
            check_any_blob(100, &blob)?;
        }

        /// Bytes that never were a chunk, with this format's byte first
        /// half the time.
        #[test]
        fn any_bytes_are_damage_or_entries_never_a_panic(
            mut blob in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            formatted in proptest::prelude::any::<bool>(),
            first in proptest::prelude::any::<u64>(),
        ) {
            if formatted && !blob.is_empty() {
                blob[0] = FORMAT;
            }
            check_any_blob(first, &blob)?;
        }
    }

    #[test]
    fn only_ids_above_the_largest_and_not_negative_as_stored_are_chunked() {
        assert!(may_chunk(0, None));
        assert!(may_chunk(7, Some(6)));
        assert!(!may_chunk(6, Some(6)));
        assert!(!may_chunk(5, Some(6)));
        assert!(!may_chunk(1 << 63, None), "negative as stored");
        assert!(may_chunk(3, Some(-4)));
    }

    #[test]
    fn prunable_follows_the_rows_rule() {
        let mut row = hold(0);
        let before = (100, 50);
        row.at_ms = 100;
        row.status = HoldStatus::Held;
        assert!(!is_prunable(&row, before));
        row.status = HoldStatus::Cancelled;
        assert!(is_prunable(&row, before));
        row.status = HoldStatus::Confirmed;
        assert!(!is_prunable(&row, before));
        row.at_ms = 50;
        assert!(is_prunable(&row, before));
        row.at_ms = 101;
        row.status = HoldStatus::Refunded;
        assert!(!is_prunable(&row, before));
    }
}

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
pub mod sqlite;

use crate::holds::{HoldStatus, Line};
use crate::journal::event::status_from_code;
use crate::settled::{Checkpoint, Settled};
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
}

/// Reservation lines as stored: `sku:quantity` pairs joined by commas.
pub(crate) fn encode_lines(lines: &[Line]) -> String {
    let mut out = String::with_capacity(lines.len() * 8);
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Written per reservation per checkpoint: no `format!` allocation.
        use std::fmt::Write;
        let _ = write!(out, "{}:{}", line.sku.index(), line.quantity);
    }
    out
}

pub(crate) fn decode_lines(text: &str) -> Option<Vec<Line>> {
    text.split(',')
        .map(|pair| {
            let (sku, quantity) = pair.split_once(':')?;
            let quantity: u32 = quantity.parse().ok()?;
            (quantity > 0).then_some(Line {
                sku: SkuId::from_index(sku.parse().ok()?),
                quantity,
            })
        })
        .collect()
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
        assert_eq!(decode_lines(&encode_lines(&lines)), Some(lines));
        for bad in ["", "1", "1:0", "x:1", "1:2,"] {
            assert_eq!(decode_lines(bad), None, "{bad:?}");
        }
        assert_eq!(status_from_name("refunded"), Some(HoldStatus::Refunded));
        assert_eq!(status_from_name("gone"), None);
    }
}

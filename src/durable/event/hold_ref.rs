//! Hold events read in place, without allocating (the writer's fold).

use super::decode::Reader;
use super::*;

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
// Long by design: the hold body's fields in their order, each checked.
pub(super) fn parse_hold(body: &[u8], kind: u8) -> Result<HoldRef<'_>, DecodeError> {
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

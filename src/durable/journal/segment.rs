//! Segment files and frames: the journal's on-disk format.
//!
//! ```text
//! segment = header frame*
//! header  = "hotstock" (8) | format version u32 | segment number u64 | crc32c(previous 20 bytes) u32
//! frame   = payload length u32 | crc32c(payload) u32 | payload (one event)
//! batch   = marker frame, then the batch's event frames (format 2 on)
//! marker  = 0xB7 | batch time ms u64 | event frames u32 | their bytes u32
//! ```
//!
//! # Batches
//!
//! The writer starts every batch with a marker frame: the time it was cut
//! and how many frames (and bytes) follow. A batch is the journal's unit of
//! durability (one `fdatasync`) and the change feed's unit of ordering
//! (`durable::feed`), so recovery replays whole batches only: a last batch
//! with fewer frames than its marker promises was never acknowledged and is
//! dropped whole, marker and all. A prefix of a batch is not a state the
//! engine passed through (lanes are concatenated in CPU order, so a sale on
//! CPU 0 can precede the restock on CPU 1 it depended on). Format 1
//! segments have no markers; their frames replay one at a time.
//!
//! All integers little-endian. Segments are named `{number:016x}.hsj` and
//! numbered consecutively; a frame never spans two segments.
//!
//! # Torn tail versus corruption
//!
//! A crash in the middle of a batch write can leave any mix of the batch's
//! pages on disk, so the last segment may end in a frame whose length or
//! checksum is wrong. Nothing in that batch was acknowledged (an ack waits
//! for `fdatasync`), so recovery truncates there and reports it.
//!
//! A bad frame that is followed by a good one is different: acknowledged
//! data lies beyond the damage. That is corruption, reported with the
//! segment and offset, and recovery refuses to start (`hotstock salvage`
//! truncates at the damage when an operator decides to accept the loss).
//! The same holds for any bad frame in a segment that is not the last.
//!
//! Format 3 segments may be made ahead (`fs::prepare_segment`): written
//! over zeros, so zeros after the last frame are the end, and the last
//! batch's sectors may land out of order in a power cut, a hole followed
//! by some of its frames (`torn_by_a_hole`). Formats 1 and 2 were always
//! appended, and keep the strict rules above.

use std::fmt;

/// Magic at the start of every segment.
pub const MAGIC: [u8; 8] = *b"hotstock";
/// Format version written by this build (2: batches start with a marker;
/// 3: a segment may be made ahead, written over zeros, so it may end in
/// zeros and a power cut may leave a hole in its last batch).
pub const FORMAT_VERSION: u32 = 3;
/// The first format whose segments may be made ahead.
const MADE_AHEAD_FORMAT: u32 = 3;
/// The oldest format this build reads (1: no batch markers).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// The first byte of a batch marker's payload; never an event kind.
pub const BATCH_MARKER: u8 = 0xB7;
/// Bytes of a marker's payload.
pub const BATCH_MARKER_LEN: usize = 17;
/// Bytes of a whole marker frame.
pub const BATCH_MARKER_FRAME_LEN: usize = FRAME_HEADER_LEN + BATCH_MARKER_LEN;
/// Bytes of a segment header.
pub const HEADER_LEN: usize = 24;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload a frame may carry; far above any event (a 32-line cart
/// with a 128-byte customer is under 400 bytes).
pub const MAX_FRAME_PAYLOAD: usize = 4096;

/// Where in the journal: a segment number and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {} offset {}", self.segment, self.offset)
    }
}

/// File name of segment `number`.
pub fn segment_file_name(number: u64) -> String {
    format!("{number:016x}.hsj")
}

/// The segment number a file name encodes, if it is a segment's name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".hsj")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub fn encode_header(number: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c(&header[..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Appends a frame to `out` whose payload `write_payload` appends. Returns
/// the payload length.
pub fn append_frame(out: &mut Vec<u8>, write_payload: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    write_payload(out);
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    assert!(
        payload_len <= MAX_FRAME_PAYLOAD,
        "event of {payload_len} bytes exceeds MAX_FRAME_PAYLOAD"
    );
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    payload_len
}

/// What a batch marker says of the frames that follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMarker {
    /// When the writer cut the batch (Unix ms, never less than the batch
    /// before's): the time of every feed event the batch makes.
    pub at_ms: u64,
    pub frames: u32,
    pub bytes: u32,
}

impl BatchMarker {
    /// The marker frame for a batch of `frames` event frames, `bytes` long.
    pub fn frame(at_ms: u64, frames: u32, bytes: u32) -> [u8; BATCH_MARKER_FRAME_LEN] {
        let mut out = Vec::with_capacity(BATCH_MARKER_FRAME_LEN);
        append_frame(&mut out, |payload| {
            payload.push(BATCH_MARKER);
            payload.extend_from_slice(&at_ms.to_le_bytes());
            payload.extend_from_slice(&frames.to_le_bytes());
            payload.extend_from_slice(&bytes.to_le_bytes());
        });
        let mut frame = [0u8; BATCH_MARKER_FRAME_LEN];
        frame.copy_from_slice(&out);
        frame
    }

    /// The marker a payload is, if it is one (an event payload never starts
    /// with `BATCH_MARKER`).
    pub fn decode(payload: &[u8]) -> Option<BatchMarker> {
        if payload.len() != BATCH_MARKER_LEN || payload[0] != BATCH_MARKER {
            return None;
        }
        let word = |at: usize, len: usize| {
            let mut bytes = [0u8; 8];
            bytes[..len].copy_from_slice(&payload[at..at + len]);
            u64::from_le_bytes(bytes)
        };
        Some(BatchMarker {
            at_ms: word(1, 8),
            frames: word(9, 4) as u32,
            bytes: word(13, 4) as u32,
        })
    }
}

/// The payloads of a batch this process framed itself (trusted: no
/// checksums are checked; use `scan` for anything read from disk).
pub fn batch_payloads(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let header = batch.get(offset..offset + FRAME_HEADER_LEN)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let start = offset + FRAME_HEADER_LEN;
        let payload = batch.get(start..start + len)?;
        offset = start + len;
        Some(payload)
    })
}

/// A segment that cannot be trusted, with where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("journal corrupt in segment {segment} ({file}) at offset {offset}: {reason}")]
pub struct Corruption {
    pub segment: u64,
    pub file: String,
    pub offset: u64,
    pub reason: &'static str,
}

/// The last segment ended in a partial or damaged frame, with nothing valid
/// after it: the unacknowledged tail of a crashed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Where the valid data ends (truncate here).
    pub offset: u64,
    /// Bytes after it.
    pub dropped: u64,
}

/// What a scan of one segment found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Offset just past the last valid frame.
    pub valid_end: u64,
    pub frames: u64,
    pub torn: Option<TornTail>,
}

/// Checks a segment's header.
pub fn check_header(bytes: &[u8], number: u64) -> Result<(), &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("segment shorter than its header");
    }
    if bytes[..8] != MAGIC {
        return Err("not a hotstock journal segment (bad magic)");
    }
    let crc = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    if crc != crc32c::crc32c(&bytes[..20]) {
        return Err("segment header checksum mismatch");
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err("unsupported journal format version");
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[12..20]);
    if u64::from_le_bytes(word) != number {
        return Err("segment header names another segment number");
    }
    Ok(())
}

/// The frame at `offset`, if one is complete and its checksum matches.
fn frame_at(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let header = bytes.get(offset..offset + FRAME_HEADER_LEN)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_FRAME_PAYLOAD {
        return None;
    }
    let start = offset + FRAME_HEADER_LEN;
    let payload = bytes.get(start..start + len)?;
    (crc32c::crc32c(payload) == crc).then_some(payload)
}

/// The format version in a segment's header (checked by `check_header`).
fn format(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]])
}

/// The unit a disk writes whole: a crash leaves each sector old or new.
pub const SECTOR: usize = 512;

/// Whether damage at `offset`, with valid frames after it, is the last
/// batch torn by a power cut rather than damage to acknowledged data.
///
/// A segment made ahead (`fs::prepare_segment`) is written over zeros, and
/// the sectors of an unsynced write may reach the disk in any order: a
/// power cut can leave a hole, sectors still zero, followed by some of the
/// batch's own frames. Only the last batch can be unsynced (the writer
/// syncs each batch before it writes the next), and each batch starts with
/// a marker. So the damage is a torn tail when no batch marker follows it
/// and a sector that is still all zeros (from `offset` on, for the sector
/// holding it) overlaps the damaged frame. A flipped bit in an acknowledged
/// frame leaves no zeroed sector inside it, and damage before a later
/// batch has that batch's marker after it: both stay corruption. Segments
/// before format 3 were never made ahead: never.
fn torn_by_a_hole(bytes: &[u8], offset: usize) -> bool {
    if format(bytes) < MADE_AHEAD_FORMAT {
        return false;
    }
    let marker_later = (offset + 1..bytes.len())
        .any(|at| frame_at(bytes, at).is_some_and(|p| BatchMarker::decode(p).is_some()));
    if marker_later {
        return false;
    }
    // The damaged frame's extent: its length when the header says one
    // that may be true, else just its header.
    let claimed = bytes
        .get(offset..offset + 4)
        .map(|len| u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .filter(|&len| (1..=MAX_FRAME_PAYLOAD).contains(&len))
        .unwrap_or(0);
    let end = (offset + FRAME_HEADER_LEN + claimed).min(bytes.len());
    let mut sector = offset - offset % SECTOR;
    while sector < end {
        let zeros = &bytes[sector.max(offset)..(sector + SECTOR).min(bytes.len())];
        if zeros.iter().all(|&b| b == 0) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// Scans segment `number` (its whole contents in `bytes`), calling
/// `on_frame(offset, payload)` for each valid frame at or after `from`.
/// `is_last` says whether a damaged end may be a torn tail.
// Long by design: the frame loop and its three outcomes (frame,
// torn tail, corruption) read best together.
pub fn scan(
    bytes: &[u8],
    number: u64,
    file: &str,
    is_last: bool,
    from: u64,
    mut on_frame: impl FnMut(u64, &[u8]) -> Result<(), Corruption>,
) -> Result<Scan, Corruption> {
    let corrupt = |offset: usize, reason: &'static str| Corruption {
        segment: number,
        file: file.to_owned(),
        offset: offset as u64,
        reason,
    };
    if let Err(reason) = check_header(bytes, number) {
        // A crash right after creating a segment can leave a short header in
        // the last segment, or, in a segment made ahead, zeros where the
        // header was to be; anything else is damage. Nothing in such a
        // segment was acknowledged: the header is synced before any frame.
        let short = bytes.len() < HEADER_LEN && bytes.iter().all(|&b| b == 0 || MAGIC.contains(&b));
        if is_last && (short || bytes.iter().all(|&b| b == 0)) {
            return Ok(Scan {
                valid_end: 0,
                frames: 0,
                torn: Some(TornTail {
                    offset: 0,
                    dropped: bytes.len() as u64,
                }),
            });
        }
        return Err(corrupt(0, reason));
    }
    let mut offset = HEADER_LEN;
    let mut frames = 0;
    while offset < bytes.len() {
        match frame_at(bytes, offset) {
            Some(payload) => {
                if offset as u64 >= from {
                    on_frame(offset as u64, payload)?;
                }
                frames += 1;
                offset += FRAME_HEADER_LEN + payload.len();
            }
            None => {
                let rest = &bytes[offset..];
                // Zeros past the end are the rest of a segment made ahead of
                // time (`fs::prepare_segment`): never written, nothing torn.
                let only_zeros = rest.iter().all(|&b| b == 0);
                if only_zeros && format(bytes) >= MADE_AHEAD_FORMAT {
                    return Ok(Scan {
                        valid_end: offset as u64,
                        frames,
                        torn: None,
                    });
                }
                let valid_later = !only_zeros
                    && (offset + 1..bytes.len()).any(|o| frame_at(bytes, o).is_some())
                    && !torn_by_a_hole(bytes, offset);
                if is_last && !valid_later {
                    return Ok(Scan {
                        valid_end: offset as u64,
                        frames,
                        torn: Some(TornTail {
                            offset: offset as u64,
                            dropped: rest.len() as u64,
                        }),
                    });
                }
                return Err(corrupt(
                    offset,
                    if is_last {
                        "damaged frame followed by valid frames (data after the damage was acknowledged)"
                    } else {
                        "damaged frame in a segment that is not the last"
                    },
                ));
            }
        }
    }
    Ok(Scan {
        valid_end: offset as u64,
        frames,
        torn: None,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = encode_header(3).to_vec();
        for payload in payloads {
            append_frame(&mut bytes, |out| out.extend_from_slice(payload));
        }
        bytes
    }

    fn frames(bytes: &[u8], is_last: bool) -> Result<(Vec<Vec<u8>>, Scan), Corruption> {
        let mut seen = Vec::new();
        let scan = scan(bytes, 3, "f", is_last, 0, |_, p| {
            seen.push(p.to_vec());
            Ok(())
        })?;
        Ok((seen, scan))
    }

    #[test]
    fn clean_segment_scans_every_frame() {
        let bytes = segment(&[b"one", b"two", b"three"]);
        let (seen, scan) = frames(&bytes, true).unwrap();
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        assert_eq!(
            scan,
            Scan {
                valid_end: bytes.len() as u64,
                frames: 3,
                torn: None
            }
        );
    }

    #[test]
    fn every_truncation_of_the_last_segment_is_a_torn_tail() {
        let bytes = segment(&[b"one", b"two", b"three"]);
        let whole = frames(&bytes, true).unwrap().0;
        for cut in HEADER_LEN..bytes.len() {
            let (seen, scan) = frames(&bytes[..cut], true).unwrap();
            assert_eq!(
                seen[..],
                whole[..seen.len()],
                "cut {cut}: a prefix of the frames"
            );
            if let Some(torn) = scan.torn {
                assert_eq!(torn.offset + torn.dropped, cut as u64);
            }
        }
    }

    #[test]
    fn a_flipped_byte_before_valid_frames_is_corruption() {
        let mut bytes = segment(&[b"one", b"two", b"three"]);
        let second = HEADER_LEN + FRAME_HEADER_LEN + 3;
        bytes[second + FRAME_HEADER_LEN] ^= 0x40; // inside "two"
        let error = frames(&bytes, true).unwrap_err();
        assert_eq!(error.offset, second as u64);
        assert!(error.reason.contains("followed by valid frames"), "{error}");
        // Not the last segment: any damage is corruption.
        let mut bytes = segment(&[b"one", b"two"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(frames(&bytes, false).is_err());
        assert!(frames(&bytes, true).unwrap().1.torn.is_some());
    }

    #[test]
    fn zeros_after_the_frames_are_a_segment_made_ahead_not_a_torn_tail() {
        let frames_only = segment(&[b"one", b"two"]);
        let mut bytes = frames_only.clone();
        bytes.resize(frames_only.len() + 4096, 0);
        for is_last in [true, false] {
            let (seen, scan) = frames(&bytes, is_last).unwrap();
            assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
            assert_eq!(
                scan,
                Scan {
                    valid_end: frames_only.len() as u64,
                    frames: 2,
                    torn: None
                }
            );
        }
        // Format 2 segments were appended: zeros there are a torn tail in
        // the last segment and damage in any other, as before.
        let format_2 = with_format(bytes.clone(), 2);
        assert!(frames(&format_2, true).unwrap().1.torn.is_some());
        assert!(frames(&format_2, false).is_err());
        // A partial frame in the zeros is still torn (last) or damage.
        bytes[frames_only.len()] = 7;
        assert!(frames(&bytes, true).unwrap().1.torn.is_some());
        assert!(frames(&bytes, false).is_err());
    }

    /// Batches as the writer writes them (a marker, then the frames), in
    /// a segment made ahead: `tail` zeros after them.
    fn batches(batches: &[Vec<Vec<u8>>], tail: usize) -> Vec<u8> {
        let mut bytes = encode_header(3).to_vec();
        for payloads in batches {
            let mut frames = Vec::new();
            for payload in payloads {
                append_frame(&mut frames, |out| out.extend_from_slice(payload));
            }
            let marker = BatchMarker::frame(7, payloads.len() as u32, frames.len() as u32);
            bytes.extend_from_slice(&marker);
            bytes.extend_from_slice(&frames);
        }
        bytes.resize(bytes.len() + tail, 0);
        bytes
    }

    /// `count` frames of 100 bytes each, numbered.
    fn payloads(first: u8, count: u8) -> Vec<Vec<u8>> {
        (first..first + count).map(|n| vec![n; 100]).collect()
    }

    /// The same segment with a format 1 header.
    fn format_1(bytes: Vec<u8>) -> Vec<u8> {
        with_format(bytes, 1)
    }

    /// The same segment with another format's header.
    fn with_format(mut bytes: Vec<u8>, version: u32) -> Vec<u8> {
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// A power cut during the last batch's write over zeros: its first
    /// sectors never landed (zeros), later ones did. Nothing after the hole
    /// was acknowledged: a torn tail at the hole, not corruption.
    #[test]
    fn a_hole_in_the_last_batch_followed_by_its_own_frames_is_a_torn_tail() {
        let first = batches(&[payloads(1, 2)], 0).len();
        let mut bytes = batches(&[payloads(1, 2), payloads(10, 20)], 4096);
        let hole_end = (first + 1).next_multiple_of(SECTOR);
        bytes[first..hole_end].fill(0);
        let (seen, scan) = frames(&bytes, true).unwrap();
        assert_eq!(seen.len(), 3, "the first batch: marker and two frames");
        assert_eq!(scan.torn.map(|t| t.offset), Some(first as u64));
        // A hole inside the batch, past its marker and first frames.
        let mut bytes = batches(&[payloads(1, 2), payloads(10, 20)], 4096);
        let sector = (first + 300).next_multiple_of(SECTOR);
        bytes[sector..sector + SECTOR].fill(0);
        let scan = frames(&bytes, true).unwrap().1;
        assert!(scan
            .torn
            .is_some_and(|t| t.offset < sector as u64 && t.offset > first as u64));
        // Never in formats 1 and 2 (always appended), and never in a
        // segment that is not the last.
        assert!(frames(&format_1(bytes.clone()), true).is_err());
        assert!(frames(&with_format(bytes.clone(), 2), true).is_err());
        assert!(frames(&bytes, false).is_err());
    }

    /// A flipped bit in an acknowledged last batch leaves no zeroed sector:
    /// corruption, as before segments were made ahead.
    #[test]
    fn a_flipped_bit_in_the_last_batch_is_still_corruption() {
        let first = batches(&[payloads(1, 2)], 0).len();
        let mut bytes = batches(&[payloads(1, 2), payloads(10, 12)], 4096);
        let inside = first + BATCH_MARKER_FRAME_LEN + FRAME_HEADER_LEN + 50;
        bytes[inside] ^= 0x10;
        let error = frames(&bytes, true).unwrap_err();
        assert!(error.reason.contains("followed by valid frames"), "{error}");
        // Zeros where a later batch's data was: its marker says it came
        // after, so the damage is to acknowledged data.
        let mut bytes = batches(&[payloads(1, 12), payloads(20, 2)], 4096);
        let sector = (HEADER_LEN + 200).next_multiple_of(SECTOR);
        bytes[sector..sector + SECTOR].fill(0);
        assert!(frames(&bytes, true).is_err());
    }

    #[test]
    fn header_damage_is_named() {
        let mut bytes = segment(&[b"one"]);
        bytes[0] = b'X';
        assert!(frames(&bytes, true).unwrap_err().reason.contains("magic"));
        let bytes = segment(&[b"one"]);
        assert!(scan(&bytes, 4, "f", true, 0, |_, _| Ok(()))
            .unwrap_err()
            .reason
            .contains("another segment"));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("store.sqlite"), None);
    }
}

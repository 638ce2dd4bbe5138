use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::engine::{OpenError, RecoveryReport};
use crate::durable::event::Event;

use crate::durable::journal::fs::PREPARED_SEGMENT;
use crate::durable::journal::segment::{
    self, parse_segment_file_name, segment_file_name, BatchMarker, Corruption, Position, TornTail,
};
use crate::durable::journal::DurableBatch;
use crate::durable::settled::Settled;
use crate::durable::store::sqlite::SqliteStore;
use crate::durable::store::{Store, StoreError};

pub(super) fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `file` is open for the duration of the call; flock only
        // takes a lock on it.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(OpenError::Locked(dir.to_owned()));
        }
    }
    Ok(file)
}

/// Segment numbers in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, OpenError> {
    let io_error = |source| OpenError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if let Some(number) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Folds one durable batch's frames into `settled`.
pub(super) fn fold_batch(settled: &mut Settled, batch: &DurableBatch<'_>) {
    for payload in segment::batch_payloads(batch.frames) {
        // We encoded it ourselves a moment ago: a decode failure is a bug,
        // and the shadow must not go on without the event (its next
        // checkpoint would disagree with the journal, and recovery would
        // refuse the frame). The panic fails the journal (`Writer::run`:
        // waiters get the reason) and leaves the shadow mid-batch, so no
        // checkpoint is taken from it.
        if let Err(error) = settled.apply_frame(payload) {
            panic!(
                "an event the writer encoded does not decode ({error}): the journal takes no \
                 more changes; restart after fixing the build"
            );
        }
    }
    settled.position = batch.end;
}

/// Called with every batch recovery replays, after it is folded.
pub(super) type OnBatch<'a> = &'a mut dyn FnMut(&DurableBatch<'_>);

/// Loads the store and replays the journal after its position.
/// `start_feed` sees the store's state before any batch is replayed;
/// `on_batch` then sees each replayed batch.
pub(super) fn recover(
    journal_dir: &Path,
    store: &mut dyn Store,
    mode: Mode,
    start_feed: &mut dyn FnMut(&Settled),
    on_batch: OnBatch<'_>,
) -> Result<(Settled, RecoveryReport), OpenError> {
    let loaded = store.load()?;
    let had_checkpoint = loaded.is_some();
    let mut settled = loaded.unwrap_or_default();
    start_feed(&settled);
    let mut report = RecoveryReport {
        store_position: settled.position,
        ..RecoveryReport::default()
    };
    let needed = segments_to_replay(journal_dir, &*store, settled.position, had_checkpoint)?;
    let from = settled.position;
    for (index, &number) in needed.iter().enumerate() {
        let is_last = index + 1 == needed.len();
        let start = if number == from.segment {
            from.offset
        } else {
            0
        };
        let segment = SegmentReplay {
            number,
            start,
            is_last,
            mode,
        };
        segment.replay(journal_dir, &mut settled, &mut report, on_batch)?;
    }
    Ok((settled, report))
}

/// The segments to replay after the store's position, checked to start
/// where the store ends and to have no gap.
fn segments_to_replay(
    journal_dir: &Path,
    store: &dyn Store,
    from: Position,
    had_checkpoint: bool,
) -> Result<Vec<u64>, OpenError> {
    let segments = list_segments(journal_dir)?;
    // Segments wholly before the checkpoint may linger if a deletion was
    // interrupted; they are already folded into the store.
    let needed: Vec<u64> = segments
        .iter()
        .copied()
        .filter(|&n| n >= from.segment)
        .collect();
    let missing = |missing: u64| OpenError::MissingSegment {
        missing,
        file: segment_file_name(missing),
    };
    if let Some(&first) = needed.first() {
        let starts_where_expected = first == from.segment || (!had_checkpoint && first == 0);
        if !starts_where_expected {
            if had_checkpoint {
                return Err(missing(from.segment));
            }
            return Err(OpenError::StoreBehindJournal {
                first,
                store: store.describe(),
            });
        }
    } else if had_checkpoint && from.offset > segment::HEADER_LEN as u64 && !segments.is_empty() {
        return Err(missing(from.segment));
    }
    if let Some(pair) = needed.windows(2).find(|pair| pair[1] != pair[0] + 1) {
        return Err(missing(pair[0] + 1));
    }
    Ok(needed)
}

/// One segment to replay from `start`.
struct SegmentReplay {
    number: u64,
    start: u64,
    /// Only the last segment may end in a torn write.
    is_last: bool,
    mode: Mode,
}

/// A batch whose marker has been read, with the frames seen so far.
struct OpenBatch {
    offset: u64,
    marker: BatchMarker,
    frames: u32,
    bytes: u64,
}

/// Decodes and folds a whole batch's events (`frames`, starting at
/// `offset` in its segment) into `settled`: the decoding fold, not
/// `apply_frame`'s row log, since restoring the engine reads
/// `settled.holds`. Returns how many, or the offset of a frame whose event
/// does not decode.
fn fold_events(settled: &mut Settled, frames: &[u8], offset: u64) -> Result<u64, u64> {
    let (mut at, mut events) = (offset, 0);
    for payload in segment::batch_payloads(frames) {
        let event = Event::decode(payload).map_err(|_| at)?;
        at += (segment::FRAME_HEADER_LEN + payload.len()) as u64;
        settled.apply(event);
        events += 1;
    }
    Ok(events)
}

/// Where a frame leaves the batch it belongs to.
enum Frame {
    /// More frames of the batch follow.
    Inside,
    /// The frame is a marker of a batch of no frames: nothing to fold.
    EmptyBatch,
    /// The batch ends with this frame; its frames start at `start`, and
    /// its marker gave the time `at` (none for a format 1 frame, a batch of
    /// its own).
    Ends { start: u64, at: Option<u64> },
}

/// Follows batch markers: `open` is the batch being read (none between
/// batches). A marker inside a batch, or a batch whose frames' length
/// disagrees with its marker, is damage at the offset returned.
fn next_frame(
    open: &mut Option<OpenBatch>,
    offset: u64,
    payload: &[u8],
) -> Result<Frame, (u64, &'static str)> {
    let frame_len = (segment::FRAME_HEADER_LEN + payload.len()) as u64;
    if let Some(marker) = BatchMarker::decode(payload) {
        if open.is_some() {
            return Err((offset, "batch marker inside an unfinished batch"));
        }
        *open = Some(OpenBatch {
            offset,
            marker,
            frames: 0,
            bytes: 0,
        });
        if marker.frames > 0 {
            return Ok(Frame::Inside);
        }
    }
    let ends = match open.as_mut() {
        Some(batch) if batch.frames < batch.marker.frames => {
            batch.frames += 1;
            batch.bytes += frame_len;
            if batch.frames < batch.marker.frames {
                return Ok(Frame::Inside);
            }
            if batch.bytes != u64::from(batch.marker.bytes) {
                let why = "batch marker's length disagrees with its frames";
                return Err((batch.offset, why));
            }
            Frame::Ends {
                start: batch.offset + segment::BATCH_MARKER_FRAME_LEN as u64,
                at: Some(batch.marker.at_ms),
            }
        }
        Some(_) => Frame::EmptyBatch,
        None => Frame::Ends {
            start: offset,
            at: None,
        },
    };
    *open = None;
    Ok(ends)
}

impl SegmentReplay {
    /// Folds the segment's whole batches into `settled`; in `Repair` mode
    /// truncates a torn tail, which drops a last batch that did not reach
    /// the disk whole (nothing in it was acknowledged).
    fn replay(
        &self,
        journal_dir: &Path,
        settled: &mut Settled,
        report: &mut RecoveryReport,
        on_batch: OnBatch<'_>,
    ) -> Result<(), OpenError> {
        let (file_name, path, bytes) = read_segment(journal_dir, self.number)?;
        let corrupt = |offset: u64, reason: &'static str| Corruption {
            segment: self.number,
            file: file_name.clone(),
            offset,
            reason,
        };
        let mut events = 0u64;
        let mut open: Option<OpenBatch> = None;
        let mut folded_end = self.start.max(segment::HEADER_LEN as u64);
        let mut at_ms = 0;
        let scan = segment::scan(&bytes, self.number, &file_name, self.is_last, self.start, {
            |offset, payload| {
                let frame_len = (segment::FRAME_HEADER_LEN + payload.len()) as u64;
                let batch_start = match next_frame(&mut open, offset, payload) {
                    Ok(Frame::Inside) => return Ok(()),
                    Ok(Frame::EmptyBatch) => {
                        folded_end = offset + frame_len;
                        return Ok(());
                    }
                    Ok(Frame::Ends { start, at }) => {
                        // A format 1 frame has no marker: the time stays.
                        at_ms = at.unwrap_or(at_ms);
                        start
                    }
                    Err((at, why)) => return Err(corrupt(at, why)),
                };
                let end = offset + frame_len;
                let frames = &bytes[batch_start as usize..end as usize];
                events += fold_events(settled, frames, batch_start).map_err(|at| {
                    corrupt(at, "frame checksum matches but its event does not decode")
                })?;
                let batch = DurableBatch {
                    frames,
                    end: Position {
                        segment: self.number,
                        offset: end,
                    },
                    at_ms,
                };
                settled.position = batch.end;
                on_batch(&batch);
                folded_end = end;
                Ok(())
            }
        })
        .map_err(OpenError::Corrupt)?;
        report.events_replayed += events;
        report.segments_replayed += 1;
        let torn = (self.torn_tail(open, scan.torn, bytes.len() as u64))
            .map_err(|(at, why)| OpenError::Corrupt(corrupt(at, why)))?;
        self.finish(&path, &file_name, torn, report)?;
        settled.position = Position {
            segment: self.number,
            // A torn header leaves nothing, not even the header.
            offset: torn.map_or(folded_end, |torn| folded_end.min(torn.offset)),
        };
        report
            .segment_ends
            .push((self.number, settled.position.offset));
        Ok(())
    }

    /// The tail torn off a segment of `len` bytes: a batch left open at its
    /// end (torn in the last segment, damage in any other), else what the
    /// scan found. The damage is an offset and why.
    fn torn_tail(
        &self,
        open: Option<OpenBatch>,
        scanned: Option<TornTail>,
        len: u64,
    ) -> Result<Option<TornTail>, (u64, &'static str)> {
        match open {
            Some(batch) if self.is_last => Ok(Some(TornTail {
                offset: batch.offset,
                dropped: len - batch.offset,
            })),
            Some(batch) => Err((
                batch.offset,
                "batch cut short in a segment that is not the last",
            )),
            None => Ok(scanned),
        }
    }

    fn finish(
        &self,
        path: &Path,
        file_name: &str,
        torn: Option<TornTail>,
        report: &mut RecoveryReport,
    ) -> Result<(), OpenError> {
        let Some(torn) = torn else { return Ok(()) };
        if self.mode == Mode::Repair && torn.offset == 0 {
            // A header that never landed: the segment gets a whole one back
            // and stays, empty. Cut to nothing, it would be a damaged
            // segment once a later one exists, and the next start would
            // refuse the journal.
            rewrite_header(path, self.number)?;
            tracing::warn!(
                "journal segment {file_name} was created but its header never reached the disk: given an empty segment's header ({} bytes dropped, none acknowledged)",
                torn.dropped
            );
        } else if self.mode == Mode::Repair {
            truncate(path, torn.offset)?;
            tracing::warn!(
                "journal segment {file_name} ended in a partial write: truncated at offset {} ({} bytes of an unacknowledged batch dropped)",
                torn.offset, torn.dropped
            );
        }
        report.torn_tail = report.torn_tail.or(Some((self.number, torn)));
        Ok(())
    }
}

/// A segment's file name, path and whole contents.
pub(super) fn read_segment(
    journal_dir: &Path,
    number: u64,
) -> Result<(String, PathBuf, Vec<u8>), OpenError> {
    let file_name = segment_file_name(number);
    let path = journal_dir.join(&file_name);
    let bytes = std::fs::read(&path).map_err(|source| OpenError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((file_name, path, bytes))
}

pub(super) fn truncate(path: &Path, len: u64) -> Result<(), OpenError> {
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error)?;
    file.set_len(len).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Makes `path` an empty segment `number`: its header alone, synced.
fn rewrite_header(path: &Path, number: u64) -> Result<(), OpenError> {
    let io_error = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error)?;
    file.set_len(0).map_err(io_error)?;
    file.write_all(&segment::encode_header(number))
        .map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Whether recovery may truncate a torn tail (opening) or must only look
/// (`inspect`, `verify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Repair,
    ReadOnly,
}

/// One journal segment as `inspect` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize {
    pub number: u64,
    /// The file's length: a segment made ahead was written as zeros to its
    /// full size before its first frame.
    pub bytes_on_disk: u64,
    /// Where its frames end, for a segment recovery read (those before the
    /// checkpoint's segment are not read: they are already in the store).
    pub written: Option<u64>,
}

/// What `inspect` reads from a data directory without changing it.
#[derive(Debug)]
pub struct Inspection {
    pub report: RecoveryReport,
    /// The state recovery would start from.
    pub settled: Settled,
    /// Journal segments, oldest first.
    pub segments: Vec<SegmentSize>,
    /// Whether the store file had a checkpoint.
    pub store_description: String,
    /// The bytes of the next segment, made ahead and waiting to be used
    /// (`next-segment.zeroed`), if there is one.
    pub made_ahead: Option<u64>,
}

/// Reads a data directory as recovery would, changing nothing (a torn tail
/// is reported, not truncated). Fails as `open` would on corruption or a
/// missing segment. Works while a server holds the directory: it reads the
/// SQLite store, which WAL mode lets another process read.
pub fn inspect(data_dir: &Path) -> Result<Inspection, OpenError> {
    let journal_dir = data_dir.join("journal");
    let store_path = data_dir.join("hotstock.sqlite");
    if !journal_dir.is_dir() && !store_path.is_file() {
        return Err(OpenError::Io {
            path: data_dir.to_owned(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "not a hotstock data directory (no journal, no store)",
            ),
        });
    }
    let segments = if journal_dir.is_dir() {
        list_segments(&journal_dir)?
    } else {
        Vec::new()
    };
    // Open the store only if it exists: opening would create it.
    let mut store: Box<dyn Store> = if store_path.is_file() {
        Box::new(SqliteStore::open(&store_path)?)
    } else {
        Box::new(NoStore)
    };
    let store_description = store.describe();
    let (settled, report) = if journal_dir.is_dir() {
        recover(
            &journal_dir,
            store.as_mut(),
            Mode::ReadOnly,
            &mut |_| {},
            &mut |_| {},
        )?
    } else {
        (store.load()?.unwrap_or_default(), RecoveryReport::default())
    };
    let sizes = segments
        .iter()
        .map(|&number| SegmentSize {
            number,
            bytes_on_disk: std::fs::metadata(journal_dir.join(segment_file_name(number)))
                .map_or(0, |m| m.len()),
            written: (report.segment_ends.iter())
                .find(|(segment, _)| *segment == number)
                .map(|&(_, end)| end),
        })
        .collect();
    let made_ahead = std::fs::metadata(journal_dir.join(PREPARED_SEGMENT))
        .ok()
        .map(|m| m.len());
    Ok(Inspection {
        report,
        settled,
        segments: sizes,
        store_description,
        made_ahead,
    })
}

/// A store that holds nothing (a data directory without a store file).
struct NoStore;

impl Store for NoStore {
    fn next_boot(&mut self) -> Result<u32, StoreError> {
        Err(StoreError {
            store: self.describe(),
            message: "read-only inspection".into(),
        })
    }

    fn reservation_id_key(&mut self, _: [u8; 16]) -> Result<[u8; 16], StoreError> {
        Err(StoreError {
            store: self.describe(),
            message: "read-only inspection".into(),
        })
    }

    fn describe(&self) -> String {
        "no store file".into()
    }

    fn read_events(
        &mut self,
        _: u64,
        _: usize,
    ) -> Result<Vec<crate::durable::feed::FeedEvent>, StoreError> {
        Ok(Vec::new())
    }

    fn oldest_event(&mut self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    fn read_meta(&mut self, _: &str) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    fn write_meta(&mut self, _: &str, _: i64) -> Result<(), StoreError> {
        Err(StoreError {
            store: self.describe(),
            message: "read-only inspection".into(),
        })
    }

    fn load(&mut self) -> Result<Option<Settled>, StoreError> {
        Ok(None)
    }

    fn save(&mut self, _: &crate::durable::settled::Checkpoint) -> Result<(), StoreError> {
        Err(StoreError {
            store: self.describe(),
            message: "read-only inspection".into(),
        })
    }
}

/// Cuts the journal at its first damage so the engine can start, losing
/// what follows: the damaged segment is truncated there and later segments
/// are deleted. Returns a description of what was dropped. An explicit,
/// operator-run step (`hotstock salvage`), never automatic.
pub fn salvage(data_dir: &Path) -> Result<Vec<String>, OpenError> {
    let journal_dir = data_dir.join("journal");
    let segments = list_segments(&journal_dir)?;
    let mut dropped = Vec::new();
    let mut cut_from: Option<usize> = None;
    for (index, &number) in segments.iter().enumerate() {
        if index > 0 && number != segments[index - 1] + 1 {
            dropped.push(format!(
                "segment {} is missing: dropping every segment from {number} on",
                segments[index - 1] + 1
            ));
            cut_from = Some(index);
            break;
        }
        let (file_name, path, bytes) = read_segment(&journal_dir, number)?;
        // The start of the batch being read, while it is unfinished: a
        // batch is kept whole or not at all.
        let mut unfinished: Option<(u64, u32)> = None;
        let scanned = segment::scan(&bytes, number, &file_name, true, 0, |offset, payload| {
            unfinished = match (BatchMarker::decode(payload), unfinished) {
                (Some(marker), _) => (marker.frames > 0).then_some((offset, marker.frames)),
                (None, Some((start, left))) => (left > 1).then_some((start, left - 1)),
                (None, None) => None,
            };
            Ok(())
        });
        if let Err(corruption) = scanned {
            let keep = unfinished.map_or(corruption.offset, |(start, _)| start);
            dropped.push(format!(
                "{corruption}: truncated to {keep} bytes, the start of the batch holding the damage ({} bytes dropped)",
                bytes.len() as u64 - keep
            ));
            truncate(&path, keep)?;
            cut_from = Some(index + 1);
            break;
        }
    }
    if let Some(from) = cut_from {
        for &number in &segments[from..] {
            let path = journal_dir.join(segment_file_name(number));
            std::fs::remove_file(&path).map_err(|source| OpenError::Io {
                path: path.clone(),
                source,
            })?;
            dropped.push(format!("deleted segment {}", segment_file_name(number)));
        }
    }
    Ok(dropped)
}

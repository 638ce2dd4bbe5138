//! `DurableEngine`: the engine with its journal, store, checkpointer and
//! timers, opened from a data directory with exact recovery.
//!
//! ```text
//! data-dir/
//!   LOCK                 flock'ed while a process owns the directory
//!   hotstock.sqlite      the default store (settled counts + journal position)
//!   journal/*.hsj        journal segments after (and around) that position
//! ```
//!
//! Recovery: load the store's checkpoint, replay every journal frame after
//! its position through the same fold the writer uses (`Settled`), truncate
//! a torn tail, refuse to start on corruption or a missing segment, rebuild
//! the engine, and expire holds whose deadline passed while it was down.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, EngineConfig, TimerThread};
use crate::error::EngineError;
use crate::journal::event::Event;
use crate::journal::fs::{JournalFs, RealFs};
use crate::journal::segment::{
    self, parse_segment_file_name, segment_file_name, Corruption, Position, TornTail,
};
use crate::journal::{Durability, Journal, JournalConfig, JournalError};
use crate::limits::RESERVATION_PRUNE_INTERVAL_MS;
use crate::settled::Settled;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// Where settled counts go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// `hotstock.sqlite` in the data directory.
    Sqlite,
    /// A PostgreSQL database (`postgresql://…` URL), tables in `schema`.
    #[cfg(feature = "postgres")]
    Postgres { url: String, schema: String },
}

/// Everything `DurableEngine::open` needs.
#[derive(Clone, Debug)]
pub struct DurableConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub engine: EngineConfig,
    pub store: StoreConfig,
    /// How often settled counts are written to the store (and fully covered
    /// journal segments deleted).
    pub checkpoint_interval: Duration,
    /// How often holds are expired and old records pruned.
    pub timer_period: Duration,
    pub segment_bytes: u64,
    pub flush_interval: Duration,
}

impl DurableConfig {
    pub fn new(data_dir: impl Into<PathBuf>, durability: Durability) -> DurableConfig {
        let journal = JournalConfig::new(PathBuf::new(), durability);
        DurableConfig {
            data_dir: data_dir.into(),
            durability,
            engine: EngineConfig::default(),
            store: StoreConfig::Sqlite,
            checkpoint_interval: Duration::from_secs(5),
            timer_period: Duration::from_millis(50),
            segment_bytes: journal.segment_bytes,
            flush_interval: journal.flush_interval,
        }
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("hotstock.sqlite")
    }
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Position of the store's checkpoint (0/0 when there was none).
    pub store_position: Position,
    pub segments_replayed: u64,
    pub events_replayed: u64,
    /// A partial frame at the end of the last segment, truncated.
    pub torn_tail: Option<(u64, TornTail)>,
    pub skus: usize,
    pub reservations: usize,
    /// Holds whose deadline passed while the engine was down.
    pub expired_on_start: usize,
    pub elapsed: Duration,
}

/// Why the engine refused to start. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("data directory {0} is in use by another hotstock process")]
    Locked(PathBuf),
    #[error("{0}; the journal after this point holds acknowledged changes, so hotstock will not start. Restore from backup, or run `hotstock salvage --data-dir DIR` to truncate at the damage and lose what follows")]
    Corrupt(Corruption),
    #[error("journal segment {missing} ({file}) is missing but later segments exist; restore it from backup (or `hotstock salvage` to drop everything from it on)")]
    MissingSegment { missing: u64, file: String },
    #[error("the store has no checkpoint at or after journal segment {first} (it may have been deleted or replaced by an older copy), and earlier segments were already removed: the state cannot be rebuilt exactly. Restore the store file ({store}) from backup")]
    StoreBehindJournal { first: u64, store: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("recovered state is inconsistent: {0}")]
    Restore(EngineError),
}

/// The engine with its durability machinery. Dropping it (or `close`)
/// flushes the journal and writes a last checkpoint.
pub struct DurableEngine {
    engine: Arc<Engine>,
    journal: Arc<Journal>,
    checkpointer: Option<Checkpointer>,
    timers: Option<TimerThread>,
    _lock: File,
}

impl std::fmt::Debug for DurableEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableEngine")
            .field("journal", &self.journal.dir())
            .finish_non_exhaustive()
    }
}

impl DurableEngine {
    /// Opens (creating if needed) the data directory and recovers.
    pub fn open(config: DurableConfig) -> Result<(DurableEngine, RecoveryReport), OpenError> {
        DurableEngine::open_with(config, Arc::new(RealFs), Arc::new(SystemClock))
    }

    /// `open` with an injectable file layer and clock (for tests).
    pub fn open_with(
        config: DurableConfig,
        fs: Arc<dyn JournalFs>,
        clock: Arc<dyn Clock>,
    ) -> Result<(DurableEngine, RecoveryReport), OpenError> {
        let started = Instant::now();
        let journal_dir = config.journal_dir();
        std::fs::create_dir_all(&journal_dir).map_err(|source| OpenError::Io {
            path: journal_dir.clone(),
            source,
        })?;
        let lock = lock_dir(&config.data_dir)?;
        let mut store: Box<dyn Store> = match &config.store {
            StoreConfig::Sqlite => Box::new(SqliteStore::open(&config.store_path())?),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres { url, schema } => {
                Box::new(crate::store::postgres::PostgresStore::connect(url, schema)?)
            }
        };
        let (settled, mut report) = recover(&journal_dir, store.as_mut(), Mode::Repair)?;
        let next_segment = list_segments(&journal_dir)?
            .last()
            .map_or(settled.position.segment, |last| last + 1);
        report.reservations = settled.holds.len();
        // The recovered fold becomes the writer's shadow: its rows that
        // differ from the store are already marked dirty for the next
        // checkpoint.
        let settled_for_sink = Arc::new(Mutex::new(settled));
        let sink_target = Arc::clone(&settled_for_sink);
        let sink = Box::new(move |batch: &[u8], start: Position| {
            fold_batch(&mut sink_target.lock(), batch, start)
        });
        let mut journal_config = JournalConfig::new(&journal_dir, config.durability);
        journal_config.segment_bytes = config.segment_bytes;
        journal_config.flush_interval = config.flush_interval;
        let journal = Arc::new(
            Journal::start(journal_config, fs, next_segment, sink).map_err(|source| {
                OpenError::Io {
                    path: journal_dir.clone(),
                    source,
                }
            })?,
        );
        let engine = Engine::with_journal(
            config.engine.clone(),
            clock.clone(),
            Some(Arc::clone(&journal)),
        )
        .map_err(|e| {
            OpenError::Restore(EngineError::StorageFailed {
                message: e.to_string().into(),
            })
        })?;
        // Nothing has been appended yet, so the writer is not folding.
        engine
            .restore(&settled_for_sink.lock())
            .map_err(OpenError::Restore)?;
        report.skus = engine.sku_count();
        let engine = Arc::new(engine);
        report.expired_on_start = engine.run_timers().expired;
        report.elapsed = started.elapsed();
        let checkpointer = Checkpointer::spawn(
            store,
            Arc::clone(&settled_for_sink),
            journal_dir,
            config.engine.clone(),
            clock,
            config.checkpoint_interval,
        )
        .map_err(|source| OpenError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let timers =
            TimerThread::spawn(Arc::clone(&engine), config.timer_period).map_err(|source| {
                OpenError::Io {
                    path: config.data_dir.clone(),
                    source,
                }
            })?;
        let durable = DurableEngine {
            engine,
            journal,
            checkpointer: Some(checkpointer),
            timers: Some(timers),
            _lock: lock,
        };
        Ok((durable, report))
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Writes a checkpoint now (and deletes fully covered segments).
    pub fn checkpoint(&self) -> Result<Position, StoreError> {
        self.checkpointer
            .as_ref()
            .expect("open until closed")
            .run_now()
    }

    /// Stops timers, flushes the journal, writes a last checkpoint.
    pub fn close(mut self) -> Result<(), CloseError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), CloseError> {
        drop(self.timers.take());
        let flushed = self.journal.shutdown();
        let checkpoint = match self.checkpointer.take() {
            Some(checkpointer) => checkpointer.stop(),
            None => Ok(Position::default()),
        };
        flushed.map_err(CloseError::Journal)?;
        checkpoint.map_err(CloseError::Store)?;
        Ok(())
    }
}

impl Drop for DurableEngine {
    fn drop(&mut self) {
        if self.checkpointer.is_some() {
            if let Err(error) = self.shut_down() {
                eprintln!("hotstock: closing the data directory: {error}");
            }
        }
    }
}

/// Why a clean close did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("flushing the journal: {0}")]
    Journal(JournalError),
    #[error("writing the last checkpoint: {0}")]
    Store(StoreError),
}

fn lock_dir(dir: &Path) -> Result<File, OpenError> {
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

/// Folds one durable batch (a run of frames starting at `start`).
fn fold_batch(settled: &mut Settled, batch: &[u8], start: Position) {
    for payload in segment::batch_payloads(batch) {
        // We encoded it ourselves a moment ago: a decode failure is a bug.
        let folded = settled.apply_frame(payload);
        debug_assert!(folded.is_ok(), "journal frame failed to decode: {folded:?}");
    }
    settled.position = Position {
        segment: start.segment,
        offset: start.offset + batch.len() as u64,
    };
}

/// Loads the store and replays the journal after its position.
fn recover(
    journal_dir: &Path,
    store: &mut dyn Store,
    mode: Mode,
) -> Result<(Settled, RecoveryReport), OpenError> {
    let loaded = store.load()?;
    let had_checkpoint = loaded.is_some();
    let mut settled = loaded.unwrap_or_default();
    let mut report = RecoveryReport {
        store_position: settled.position,
        ..RecoveryReport::default()
    };
    let segments = list_segments(journal_dir)?;
    let from = settled.position;
    // Segments wholly before the checkpoint may linger if a deletion was
    // interrupted; they are already folded into the store.
    let needed: Vec<u64> = segments
        .iter()
        .copied()
        .filter(|&n| n >= from.segment)
        .collect();
    if let Some(&first) = needed.first() {
        let starts_where_expected = first == from.segment || (!had_checkpoint && first == 0);
        if !starts_where_expected {
            if had_checkpoint {
                return Err(OpenError::MissingSegment {
                    missing: from.segment,
                    file: segment_file_name(from.segment),
                });
            }
            return Err(OpenError::StoreBehindJournal {
                first,
                store: store.describe(),
            });
        }
    } else if had_checkpoint && from.offset > segment::HEADER_LEN as u64 && !segments.is_empty() {
        return Err(OpenError::MissingSegment {
            missing: from.segment,
            file: segment_file_name(from.segment),
        });
    }
    for pair in needed.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = pair[0] + 1;
            return Err(OpenError::MissingSegment {
                missing,
                file: segment_file_name(missing),
            });
        }
    }
    for (index, &number) in needed.iter().enumerate() {
        let is_last = index + 1 == needed.len();
        let (file_name, path, bytes) = read_segment(journal_dir, number)?;
        let start = if number == from.segment {
            from.offset
        } else {
            0
        };
        let mut events = 0u64;
        let scan = segment::scan(
            &bytes,
            number,
            &file_name,
            is_last,
            start,
            |offset, payload| {
                let event = Event::decode(payload).map_err(|_| Corruption {
                    segment: number,
                    file: file_name.clone(),
                    offset,
                    reason: "frame checksum matches but its event does not decode",
                })?;
                settled.apply(event);
                events += 1;
                Ok(())
            },
        )
        .map_err(OpenError::Corrupt)?;
        report.events_replayed += events;
        report.segments_replayed += 1;
        if let Some(torn) = scan.torn.filter(|_| mode == Mode::Repair) {
            truncate(&path, torn.offset)?;
            eprintln!(
                "hotstock: journal segment {file_name} ended in a partial write: truncated at offset {} ({} bytes of an unacknowledged batch dropped)",
                torn.offset, torn.dropped
            );
            report.torn_tail = Some((number, torn));
        }
        if mode == Mode::ReadOnly {
            report.torn_tail = report.torn_tail.or(scan.torn.map(|torn| (number, torn)));
        }
        settled.position = Position {
            segment: number,
            offset: scan.valid_end.max(start),
        };
    }
    Ok((settled, report))
}

/// A segment's file name, path and whole contents.
fn read_segment(journal_dir: &Path, number: u64) -> Result<(String, PathBuf, Vec<u8>), OpenError> {
    let file_name = segment_file_name(number);
    let path = journal_dir.join(&file_name);
    let bytes = std::fs::read(&path).map_err(|source| OpenError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((file_name, path, bytes))
}

fn truncate(path: &Path, len: u64) -> Result<(), OpenError> {
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

/// Whether recovery may truncate a torn tail (opening) or must only look
/// (`inspect`, `verify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Repair,
    ReadOnly,
}

/// What `inspect` reads from a data directory without changing it.
#[derive(Debug)]
pub struct Inspection {
    pub report: RecoveryReport,
    /// The state recovery would start from.
    pub settled: Settled,
    /// Journal segments: number, bytes.
    pub segments: Vec<(u64, u64)>,
    /// Whether the store file had a checkpoint.
    pub store_description: String,
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
        recover(&journal_dir, store.as_mut(), Mode::ReadOnly)?
    } else {
        (store.load()?.unwrap_or_default(), RecoveryReport::default())
    };
    let sizes = segments
        .iter()
        .map(|&n| {
            let len =
                std::fs::metadata(journal_dir.join(segment_file_name(n))).map_or(0, |m| m.len());
            (n, len)
        })
        .collect();
    Ok(Inspection {
        report,
        settled,
        segments: sizes,
        store_description,
    })
}

/// A store that holds nothing (a data directory without a store file).
struct NoStore;

impl Store for NoStore {
    fn describe(&self) -> String {
        "no store file".into()
    }

    fn load(&mut self) -> Result<Option<Settled>, StoreError> {
        Ok(None)
    }

    fn save(&mut self, _: &crate::settled::Checkpoint) -> Result<(), StoreError> {
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
        if let Err(corruption) = segment::scan(&bytes, number, &file_name, true, 0, |_, _| Ok(())) {
            let keep = corruption.offset;
            dropped.push(format!(
                "{corruption}: truncated to {keep} bytes ({} bytes dropped)",
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

/// The checkpointer thread: every interval, copies what changed in the
/// writer's shadow to the store, then deletes segments the store covers.
struct Checkpointer {
    shared: Arc<CheckpointShared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct CheckpointShared {
    store: Mutex<Box<dyn Store>>,
    settled: Arc<Mutex<Settled>>,
    journal_dir: PathBuf,
    engine: EngineConfig,
    clock: Arc<dyn Clock>,
    stop: Mutex<bool>,
    /// When reservation rows past their retention were last deleted.
    reservations_pruned_ms: Mutex<u64>,
    wake: Condvar,
}

impl Checkpointer {
    fn spawn(
        store: Box<dyn Store>,
        settled: Arc<Mutex<Settled>>,
        journal_dir: PathBuf,
        engine: EngineConfig,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> io::Result<Checkpointer> {
        let started_ms = clock.now_ms();
        let shared = Arc::new(CheckpointShared {
            store: Mutex::new(store),
            settled,
            journal_dir,
            engine,
            clock,
            stop: Mutex::new(false),
            // Counted from the start, so a restart in a sale does not begin
            // with a scan of the whole table.
            reservations_pruned_ms: Mutex::new(started_ms),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("hotstock-ckpt".into())
            .spawn(move || loop {
                {
                    let mut stop = worker.stop.lock();
                    if !*stop {
                        worker.wake.wait_for(&mut stop, interval);
                    }
                    if *stop {
                        return;
                    }
                }
                if let Err(error) = worker.run(false) {
                    // Not fatal: the journal still holds everything, and no
                    // segment is deleted until a checkpoint succeeds.
                    eprintln!("hotstock: checkpoint failed, will retry: {error}");
                }
            })?;
        Ok(Checkpointer {
            shared,
            handle: Some(handle),
        })
    }

    fn run_now(&self) -> Result<Position, StoreError> {
        self.shared.run(false)
    }

    /// Stops the thread and writes a last checkpoint.
    fn stop(mut self) -> Result<Position, StoreError> {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        self.shared.run(true)
    }
}

impl CheckpointShared {
    /// One checkpoint; `final_run` (at close) also prunes reservation rows.
    fn run(&self, final_run: bool) -> Result<Position, StoreError> {
        let mut store = self.store.lock();
        let mut checkpoint = self.settled.lock().take_checkpoint();
        // The store forgets what the engine prunes: ended records after their
        // retention, confirmed ones after the refund window.
        let now = self.clock.now_ms();
        checkpoint.prune_keys_before_ms =
            Some(now.saturating_sub(self.engine.idempotency_retention_ms));
        let mut pruned_ms = self.reservations_pruned_ms.lock();
        let prune = final_run || now.saturating_sub(*pruned_ms) >= RESERVATION_PRUNE_INTERVAL_MS;
        if prune {
            checkpoint.prune_before_ms = Some((
                now.saturating_sub(self.engine.ended_retention_ms),
                now.saturating_sub(self.engine.refund_window_ms),
            ));
        }
        if let Err(error) = store.save(&checkpoint) {
            // Not in the store: put the changes back for the next attempt.
            self.settled.lock().restore_unsaved(checkpoint);
            return Err(error);
        }
        if prune {
            *pruned_ms = now;
        }
        // Segments wholly before the checkpoint's segment are in the store.
        if let Ok(segments) = list_segments(&self.journal_dir) {
            let mut removed = false;
            for number in segments
                .into_iter()
                .filter(|&n| n < checkpoint.position.segment)
            {
                removed |=
                    std::fs::remove_file(self.journal_dir.join(segment_file_name(number))).is_ok();
            }
            if removed {
                let _ = File::open(&self.journal_dir).and_then(|d| d.sync_all());
            }
        }
        Ok(checkpoint.position)
    }
}

//! The write-behind journal: every engine change, group-committed to disk
//! behind the hot path.
//!
//! # Shape
//!
//! ```text
//! engine thread ──append──▶ lane[cpu] (bytes, its own lock)
//!                                │  drained by
//!                                ▼
//!                         writer thread ── one write + one fdatasync per batch ──▶ segment files
//!                                │ after each durable batch
//!                                ├──▶ durable epoch advances; waiters wake
//!                                └──▶ sink (the settled-counts fold)
//! ```
//!
//! # Why epochs
//!
//! There is no global sequence number (a global atomic is a global lock).
//! Instead the writer keeps an *open epoch*. An append tags its frame with
//! it (the append's `Ticket`); to cut batch `k`, the writer moves the open
//! epoch to `k + 1` and takes exactly the frames tagged `k`, waiting only
//! for appends already tagged `k` to finish (the lock-free protocol is in
//! `lanes.rs`). Hence batch `k` holds *every* frame tagged `k`, and since
//! tags only grow, an event appended before another is in the same batch or
//! an earlier one. A crash therefore
//! loses a suffix of batches, never a hole, and `durable >= ticket` means
//! everything appended before the ticket was taken is on disk.
//!
//! Appends take no lock. The only line shared by all cores on the append
//! path is the open epoch, which the writer writes once per batch and
//! appenders only read.
//!
//! # Failure
//!
//! A failed write or `fdatasync` is not retried (after a failed fsync the
//! kernel may have dropped the dirty pages; a retry can "succeed" on data
//! that is gone). The journal enters a failed state for good: nothing more
//! becomes durable, every waiter and every later append gets the error, and
//! the process must restart and recover from what is on disk.

pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod lanes;
pub mod segment;
mod wait;
mod writer;

pub use wait::DurableFuture;
use wait::{kick, WaiterList};
use writer::Writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};

use crate::core::clock::{Clock, SystemClock};
use fs::JournalFs;
use segment::{Position, HEADER_LEN};

/// Whether callers wait for their changes to be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A caller that waits on its ticket returns only once its change is on
    /// disk. The writer starts a batch as soon as someone waits.
    Sync,
    /// Callers do not wait; the writer flushes every `flush_interval`. A
    /// crash loses at most the changes of the last interval plus one fsync.
    Async,
}

/// Journal settings; every field is a limit.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// How often the writer flushes when nobody waits.
    pub flush_interval: Duration,
    /// A new segment starts once the current one would exceed this.
    pub segment_bytes: u64,
    /// Bytes in each of a lane's two halves (one per epoch parity); an
    /// append that does not fit waits for the writer (backpressure instead
    /// of unbounded memory). Memory: 2 x this x CPUs.
    pub lane_bytes: usize,
    /// The time written in each batch's marker.
    pub clock: Arc<dyn Clock>,
}

impl JournalConfig {
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            durability,
            flush_interval: Duration::from_millis(5),
            segment_bytes: 64 << 20,
            lane_bytes: 1 << 20,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why the journal cannot make changes durable.
#[derive(Clone, Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal write failed, nothing more will be made durable (restart to recover): {0}")]
    WriteFailed(Arc<io::Error>),
    #[error(
        "journal fdatasync failed, nothing more will be made durable (restart to recover): {0}"
    )]
    SyncFailed(Arc<io::Error>),
    #[error("journal is shut down")]
    Closed,
    /// A bug: the writer thread panicked (in the fold or the feed it hands
    /// batches to). What it had synced is on disk, but its shadow of the
    /// settled counts may be half-folded, so it acknowledges nothing more.
    #[error(
        "journal writer panicked, nothing more will be made durable (restart to recover from \
         the journal; please report this bug): {0}"
    )]
    WriterPanicked(Arc<str>),
}

/// A position in the stream of batches: durable once the journal's durable
/// epoch reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// A ticket that is always durable (for callers without a journal).
    pub const NONE: Ticket = Ticket(0);
}

/// Upper bounds (microseconds) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];
/// Upper bounds (frames) of the batch size histogram buckets.
pub const BATCH_BUCKETS: [u64; 8] = [1, 4, 16, 64, 256, 1_024, 4_096, 16_384];

/// Counters the writer publishes (it is their only writer).
#[derive(Debug, Default)]
struct WriterStats {
    batches: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    fsync_us_total: AtomicU64,
    /// One more than `FSYNC_BUCKETS_US` (the last is +Inf); not cumulative.
    fsync_buckets: [AtomicU64; 11],
    /// One more than `BATCH_BUCKETS`; not cumulative.
    batch_buckets: [AtomicU64; 9],
    /// Threads waiting for lane room now, in `make_room` or in a full
    /// append (the writer is behind).
    waiting_for_room: AtomicU64,
}

/// A reading of the journal's counters, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub batches: u64,
    pub frames: u64,
    pub bytes: u64,
    pub fsync_us_total: u64,
    /// Per bucket of `FSYNC_BUCKETS_US`, then +Inf; not cumulative.
    pub fsync_buckets: Vec<u64>,
    /// Per bucket of `BATCH_BUCKETS`, then +Inf; not cumulative.
    pub batch_buckets: Vec<u64>,
    pub open_epoch: u64,
    pub durable_epoch: u64,
    pub failed: bool,
    /// Threads waiting for lane room now (the writer is behind).
    pub waiting_for_room: u64,
    /// Wakers registered by pending `DurableFuture`s now.
    pub async_waiters: u64,
}

/// The lane room `make_room` waits for before an engine takes a lock under
/// which it appends: 64 KiB, a hundred and fifty of the largest hold events.
pub const ROOM_BEFORE_LOCK: usize = 64 * 1024;

fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|&bound| value <= bound)
        .unwrap_or(bounds.len())
}

/// One durable batch as the writer (or recovery) hands it on.
#[derive(Clone, Copy, Debug)]
pub struct DurableBatch<'a> {
    /// The batch's event frames (without its marker).
    pub frames: &'a [u8],
    /// The journal position just past the batch.
    pub end: Position,
    /// When the writer cut it (its marker's time).
    pub at_ms: u64,
}

/// Called by the writer with each batch once it is durable.
pub type BatchSink = Box<dyn FnMut(&DurableBatch<'_>) + Send>;

#[derive(Debug)]
struct Shared {
    /// Per-CPU append buffers and the open epoch (the cut protocol).
    lanes: lanes::Lanes,
    /// Every frame tagged at or below this is on disk.
    durable_epoch: CachePadded<AtomicU64>,
    failure: OnceLock<JournalError>,
    shutdown: AtomicBool,
    /// Set by whoever wants a batch now (a waiter, a full lane); the writer
    /// clears it when it wakes. Read before it is written, so while a batch
    /// is pending the waiters of a sale only read this line.
    kicked: CachePadded<AtomicBool>,
    /// The writer thread, for `unpark`; set by the writer when it starts.
    writer_thread: OnceLock<std::thread::Thread>,
    /// Blocking waiters sleep here; the writer wakes them per batch.
    durable_lock: Mutex<()>,
    durable_changed: Condvar,
    /// Async waiters by ticket, woken per batch; one list per lane (the
    /// waiter's CPU at its first poll), so waiters on different CPUs never
    /// share a lock. The writer visits every list once per batch.
    wakers: Box<[CachePadded<Mutex<WaiterList>>]>,
    /// Appenders blocked on a full lane sleep here; the writer wakes them
    /// after every cut.
    space_lock: Mutex<()>,
    space_freed: Condvar,
    stats: WriterStats,
    durability: Durability,
}

/// The journal handle. Appends from any thread; one writer thread behind it.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl Journal {
    /// Starts a journal that writes new segments from `next_segment` on
    /// (recovery has read, checked and truncated everything before it).
    pub fn start(
        config: JournalConfig,
        fs: Arc<dyn JournalFs>,
        next_segment: u64,
        sink: BatchSink,
    ) -> io::Result<Journal> {
        assert!(
            config.segment_bytes > HEADER_LEN as u64 + 64,
            "segment_bytes too small"
        );
        // A lane half must hold the largest frame (4096-byte payload + header).
        assert!(config.lane_bytes >= 8192, "lane_bytes too small");
        let lanes = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 64);
        let shared = Arc::new(Shared {
            lanes: lanes::Lanes::new(lanes, config.lane_bytes),
            durable_epoch: CachePadded::new(AtomicU64::new(0)),
            failure: OnceLock::new(),
            shutdown: AtomicBool::new(false),
            kicked: CachePadded::new(AtomicBool::new(false)),
            writer_thread: OnceLock::new(),
            durable_lock: Mutex::new(()),
            durable_changed: Condvar::new(),
            wakers: (0..lanes)
                .map(|_| CachePadded::new(Mutex::new(Vec::new())))
                .collect(),
            space_lock: Mutex::new(()),
            space_freed: Condvar::new(),
            stats: WriterStats::default(),
            durability: config.durability,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            fs,
            dir: config.dir.clone(),
            segment_bytes: config.segment_bytes,
            flush_interval: config.flush_interval,
            next_segment,
            file: None,
            file_len: 0,
            sink,
            clock: Arc::clone(&config.clock),
            last_at_ms: 0,
            preparer: Default::default(),
        };
        let handle = std::thread::Builder::new()
            .name("hotstock-journal".into())
            .spawn(move || writer.run())?;
        Ok(Journal {
            shared,
            writer: Mutex::new(Some(handle)),
            dir: config.dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// The failure that stopped the journal, if any.
    pub fn failure(&self) -> Option<JournalError> {
        self.shared.failure.get().cloned()
    }

    /// Appends one frame whose payload `write` encodes, to the lane of
    /// `hint` (the caller's CPU). Returns the frame's ticket.
    pub fn append(
        &self,
        hint: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Ticket, JournalError> {
        let shared = &*self.shared;
        if let Some(failure) = shared.failure.get() {
            return Err(failure.clone());
        }
        // Backpressure: a full lane means the writer is behind. Sleep until
        // it drains (rather than spin: on few cores a spinning appender
        // steals the CPU the writer needs); never grow without bound.
        let mut waited = false;
        let on_full = || {
            if !waited {
                waited = true;
                // Relaxed: a gauge (see `JournalStats::waiting_for_room`).
                shared
                    .stats
                    .waiting_for_room
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.kick_writer();
            if let Some(failure) = shared.failure.get() {
                return Err(failure.clone());
            }
            let mut space = shared.space_lock.lock();
            shared
                .space_freed
                .wait_for(&mut space, Duration::from_millis(10));
            Ok(())
        };
        let appended = shared.lanes.append(hint, write, on_full).map(Ticket);
        if waited {
            shared
                .stats
                .waiting_for_room
                .fetch_sub(1, Ordering::Relaxed);
        }
        appended
    }

    /// Bytes free in `hint`'s lane for the open epoch (a reading: appends
    /// race with it).
    pub fn lane_room(&self, hint: usize) -> usize {
        self.shared.lanes.room(hint)
    }

    /// Waits, outside any engine lock, until `hint`'s lane has room for
    /// `ROOM_BEFORE_LOCK` bytes (or a quarter of a lane half, if smaller),
    /// so that the appends an engine makes under its locks do not wait.
    ///
    /// The bound this gives (`docs/storage.md`): an append made under an
    /// engine lock waits for the writer only if more than that room was
    /// appended to the same lane between this check and the append, which
    /// takes a burst of appends from threads sharing one CPU while the
    /// writer is behind; each engine critical section appends at most 64
    /// events (`holds::EXPIRIES_PER_LOCK`), far less than the room.
    #[inline]
    pub fn make_room(&self, hint: usize) -> Result<(), JournalError> {
        let shared = &*self.shared;
        let wanted = ROOM_BEFORE_LOCK.min(shared.lanes.capacity() / 4);
        if shared.lanes.room(hint) >= wanted {
            return Ok(());
        }
        self.wait_for_room(hint, wanted)
    }

    #[cold]
    fn wait_for_room(&self, hint: usize, wanted: usize) -> Result<(), JournalError> {
        let shared = &*self.shared;
        // Relaxed: a gauge for monitoring and tests.
        shared
            .stats
            .waiting_for_room
            .fetch_add(1, Ordering::Relaxed);
        let outcome = loop {
            if let Some(failure) = shared.failure.get() {
                break Err(failure.clone());
            }
            if shared.lanes.room(hint) >= wanted {
                break Ok(());
            }
            self.kick_writer();
            let mut space = shared.space_lock.lock();
            shared
                .space_freed
                .wait_for(&mut space, Duration::from_millis(10));
        };
        shared
            .stats
            .waiting_for_room
            .fetch_sub(1, Ordering::Relaxed);
        outcome
    }

    /// A ticket covering everything appended so far by anyone: durable once
    /// every change made before this call is on disk.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.shared.lanes.open_epoch())
    }

    /// The writer's counters and the epochs, for monitoring.
    pub fn stats(&self) -> JournalStats {
        let shared = &*self.shared;
        let stats = &shared.stats;
        // Relaxed: independent counters, each exact; the set is not a
        // consistent cut, which monitoring does not need.
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        JournalStats {
            batches: load(&stats.batches),
            frames: load(&stats.frames),
            bytes: load(&stats.bytes),
            fsync_us_total: load(&stats.fsync_us_total),
            fsync_buckets: stats.fsync_buckets.iter().map(load).collect(),
            batch_buckets: stats.batch_buckets.iter().map(load).collect(),
            open_epoch: shared.lanes.open_epoch(),
            durable_epoch: shared.durable_epoch.load(Ordering::Acquire),
            failed: shared.failure.get().is_some(),
            waiting_for_room: load(&stats.waiting_for_room),
            async_waiters: shared.wakers.iter().map(|w| w.lock().len() as u64).sum(),
        }
    }

    pub fn is_durable(&self, ticket: Ticket) -> bool {
        self.shared.durable_epoch.load(Ordering::Acquire) >= ticket.0
    }

    /// Blocks until `ticket` is durable, or the journal fails.
    pub fn wait_durable(&self, ticket: Ticket) -> Result<(), JournalError> {
        let shared = &*self.shared;
        if self.is_durable(ticket) {
            return Ok(());
        }
        self.kick_writer();
        let mut guard = shared.durable_lock.lock();
        loop {
            if self.is_durable(ticket) {
                return Ok(());
            }
            if let Some(failure) = shared.failure.get() {
                return Err(failure.clone());
            }
            if shared.shutdown.load(Ordering::Acquire) && self.writer.lock().is_none() {
                return Err(JournalError::Closed);
            }
            shared
                .durable_changed
                .wait_for(&mut guard, Duration::from_millis(100));
        }
    }

    /// A future that resolves when `ticket` is durable, or the journal fails.
    pub fn durable(&self, ticket: Ticket) -> DurableFuture<'_> {
        DurableFuture {
            shared: &self.shared,
            ticket,
            registered: None,
        }
    }

    /// Flushes everything appended so far and waits for it.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.wait_durable(self.ticket())
    }

    /// Flushes, stops the writer and joins it.
    pub fn shutdown(&self) -> Result<(), JournalError> {
        let flushed = self.flush();
        self.shared.shutdown.store(true, Ordering::Release);
        self.kick_writer();
        if let Some(handle) = self.writer.lock().take() {
            // The writer never panics by design; if it did, the panic hook
            // has reported it and the failure state is what callers see.
            let _ = handle.join();
        }
        flushed
    }

    fn kick_writer(&self) {
        kick(&self.shared);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Best effort: a drop cannot report errors; callers that care call
        // `shutdown` and check its result.
        let _ = self.shutdown();
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

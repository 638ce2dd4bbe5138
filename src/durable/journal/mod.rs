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

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};

use fs::{JournalFs, SegmentFile};
use segment::{encode_header, Position, HEADER_LEN};

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
}

impl JournalConfig {
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            durability,
            flush_interval: Duration::from_millis(5),
            segment_bytes: 64 << 20,
            lane_bytes: 1 << 20,
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

/// Called by the writer with each batch once it is durable: the batch's
/// frames and the position of its first byte.
pub type BatchSink = Box<dyn FnMut(&[u8], Position) + Send>;

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
    pub fn make_room(&self, hint: usize) -> Result<(), JournalError> {
        let shared = &*self.shared;
        let wanted = ROOM_BEFORE_LOCK.min(shared.lanes.capacity() / 4);
        if shared.lanes.room(hint) >= wanted {
            return Ok(());
        }
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

fn kick(shared: &Shared) {
    // Relaxed load first: while a kick is pending nobody writes the line.
    // AcqRel swap: the one that sets the flag unparks; the writer's swap
    // that clears it pairs with it.
    if !shared.kicked.load(Ordering::Relaxed) && !shared.kicked.swap(true, Ordering::AcqRel) {
        if let Some(writer) = shared.writer_thread.get() {
            writer.unpark();
        }
    }
}

/// Pending `DurableFuture`s of one lane: their tickets and wakers.
type WaiterList = Vec<(u64, Waker)>;

/// Resolves when its ticket is durable. See `Journal::durable`.
///
/// It borrows the journal (no reference count touched per request) and
/// registers its waker once, in the list of the CPU it was first polled
/// on; later polls with a waker that wakes the same task register nothing.
#[derive(Debug)]
pub struct DurableFuture<'a> {
    shared: &'a Shared,
    ticket: Ticket,
    /// The list this future registered in, and the waker it left there.
    registered: Option<(usize, Waker)>,
}

impl DurableFuture<'_> {
    fn outcome(&self) -> Option<Result<(), JournalError>> {
        let shared = self.shared;
        if shared.durable_epoch.load(Ordering::Acquire) >= self.ticket.0 {
            return Some(Ok(()));
        }
        if let Some(failure) = shared.failure.get() {
            return Some(Err(failure.clone()));
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return Some(Err(JournalError::Closed));
        }
        None
    }
}

impl Future for DurableFuture<'_> {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(outcome) = self.outcome() {
            return Poll::Ready(outcome);
        }
        if let Some((_, waker)) = &self.registered {
            if waker.will_wake(cx.waker()) {
                // Still in its list: the writer removes an entry only once
                // its ticket is durable (or the journal failed), which
                // `outcome` would have seen.
                return Poll::Pending;
            }
        }
        let shared = self.shared;
        let list = crate::core::hint::stripe_hint() % shared.wakers.len();
        {
            let mut wakers = shared.wakers[list].lock();
            // Check again under the lock the writer takes to wake us, so a
            // batch finishing in between cannot be missed.
            if let Some(outcome) = self.outcome() {
                return Poll::Ready(outcome);
            }
            wakers.push((self.ticket.0, cx.waker().clone()));
        }
        let first = self.registered.is_none();
        self.registered = Some((list, cx.waker().clone()));
        if first {
            kick(shared);
        }
        Poll::Pending
    }
}

struct Writer {
    shared: Arc<Shared>,
    fs: Arc<dyn JournalFs>,
    dir: PathBuf,
    segment_bytes: u64,
    flush_interval: Duration,
    next_segment: u64,
    file: Option<Box<dyn SegmentFile>>,
    file_len: u64,
    sink: BatchSink,
}

impl Writer {
    fn run(mut self) {
        let _ = self.shared.writer_thread.set(std::thread::current());
        let mut batch: Vec<u8> = Vec::new();
        loop {
            let stopping = self.wait_for_work();
            let epoch = self.cut(&mut batch);
            if !batch.is_empty() {
                match self.write(&batch) {
                    Ok(start) => (self.sink)(&batch, start),
                    Err(failure) => {
                        self.fail(failure);
                        return;
                    }
                }
            }
            // Release: pairs with the Acquire loads of waiters; the batch is
            // on disk before anyone can see its epoch as durable.
            self.shared.durable_epoch.store(epoch, Ordering::Release);
            self.wake(epoch);
            if stopping {
                return;
            }
        }
    }

    /// Sleeps until kicked, the flush interval passes, or shutdown. Returns
    /// whether this is the last batch.
    fn wait_for_work(&self) -> bool {
        let shared = &*self.shared;
        // AcqRel: pairs with the kicker's swap. A kick that lands after
        // this swap unparks the park below at once (park's token), or sets
        // the flag after the cut that follows, so the next pass sees it.
        if !shared.kicked.swap(false, Ordering::AcqRel) && !shared.shutdown.load(Ordering::Acquire)
        {
            std::thread::park_timeout(self.flush_interval);
            shared.kicked.store(false, Ordering::Release);
        }
        shared.shutdown.load(Ordering::Acquire)
    }

    /// Closes the open epoch and gathers every frame tagged with it or
    /// earlier into `batch`. Returns the closed epoch.
    fn cut(&self, batch: &mut Vec<u8>) -> u64 {
        let shared = &*self.shared;
        let (closed, freed) = shared.lanes.cut(batch);
        if freed {
            let _guard = shared.space_lock.lock();
            shared.space_freed.notify_all();
        }
        closed
    }

    /// Writes `batch` to the current segment (starting a new one when it
    /// would overflow) and syncs it. Returns the batch's start position.
    fn write(&mut self, batch: &[u8]) -> Result<Position, JournalError> {
        let over = self.file_len + batch.len() as u64 > self.segment_bytes;
        if self.file.is_none() || (over && self.file_len > HEADER_LEN as u64) {
            self.rotate()?;
        }
        let start = Position {
            segment: self.next_segment - 1,
            offset: self.file_len,
        };
        let file = self.file.as_mut().expect("rotate opened a segment");
        file.write_all(batch)
            .map_err(|e| JournalError::WriteFailed(Arc::new(e)))?;
        self.file_len += batch.len() as u64;
        let began = std::time::Instant::now();
        file.sync_data()
            .map_err(|e| JournalError::SyncFailed(Arc::new(e)))?;
        self.record(batch, began.elapsed().as_micros() as u64);
        Ok(start)
    }

    /// Publishes a durable batch's size and fsync latency.
    fn record(&self, batch: &[u8], fsync_us: u64) {
        let frames = segment::batch_payloads(batch).count() as u64;
        let stats = &self.shared.stats;
        // Relaxed: counters with one writer (this thread).
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.frames.fetch_add(frames, Ordering::Relaxed);
        stats.bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.fsync_us_total.fetch_add(fsync_us, Ordering::Relaxed);
        stats.fsync_buckets[bucket(&FSYNC_BUCKETS_US, fsync_us)].fetch_add(1, Ordering::Relaxed);
        stats.batch_buckets[bucket(&BATCH_BUCKETS, frames)].fetch_add(1, Ordering::Relaxed);
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let number = self.next_segment;
        let write_failed = |e| JournalError::WriteFailed(Arc::new(e));
        let mut file = self
            .fs
            .create_segment(&self.dir, number)
            .map_err(write_failed)?;
        file.write_all(&encode_header(number))
            .map_err(write_failed)?;
        file.sync_data()
            .map_err(|e| JournalError::SyncFailed(Arc::new(e)))?;
        // The new file's directory entry must be durable before any frame in
        // it is acknowledged.
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| JournalError::SyncFailed(Arc::new(e)))?;
        self.file = Some(file);
        self.file_len = HEADER_LEN as u64;
        self.next_segment += 1;
        Ok(())
    }

    fn fail(&self, failure: JournalError) {
        tracing::error!("{failure}");
        let _ = self.shared.failure.set(failure);
        self.wake(0);
    }

    fn wake(&self, durable: u64) {
        let shared = &*self.shared;
        {
            let _guard = shared.durable_lock.lock();
            shared.durable_changed.notify_all();
        }
        let failed = shared.failure.get().is_some() || shared.shutdown.load(Ordering::Acquire);
        for list in shared.wakers.iter() {
            let mut wakers = list.lock();
            if wakers.is_empty() {
                continue;
            }
            wakers.retain(|(ticket, waker)| {
                let done = failed || *ticket <= durable;
                if done {
                    waker.wake_by_ref();
                }
                !done
            });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::fs::{FaultyFs, RealFs};
    use super::segment::{scan, segment_file_name};
    use super::*;
    use crate::durable::event::Event;
    use crate::SkuId;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hotstock-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A sync journal on a file layer the test can break.
    fn faulty_journal(dir: &Path) -> (FaultyFs, Journal) {
        let fs = FaultyFs::new();
        let config = JournalConfig::new(dir, Durability::Sync);
        let journal = Journal::start(config, Arc::new(fs.clone()), 0, Box::new(|_, _| {})).unwrap();
        (fs, journal)
    }

    fn sell(units: u32) -> impl FnOnce(&mut Vec<u8>) {
        move |out| {
            Event::Sell {
                sku: SkuId::from_index(1),
                units,
            }
            .encode(out)
        }
    }

    fn read_all(dir: &Path) -> Vec<Event> {
        let mut events = Vec::new();
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| segment::parse_segment_file_name(e.unwrap().file_name().to_str()?))
            .collect();
        numbers.sort();
        for (i, n) in numbers.iter().enumerate() {
            let bytes = std::fs::read(dir.join(segment_file_name(*n))).unwrap();
            scan(&bytes, *n, "", i + 1 == numbers.len(), 0, |_, p| {
                events.push(Event::decode(p).unwrap());
                Ok(())
            })
            .unwrap();
        }
        events
    }

    #[test]
    fn appended_events_become_durable_in_order_per_thread_and_rotate_segments() {
        let dir = temp_dir("basic");
        let mut config = JournalConfig::new(&dir, Durability::Sync);
        config.segment_bytes = 256;
        let journal = Journal::start(config, Arc::new(RealFs), 0, Box::new(|_, _| {})).unwrap();
        for units in 1..=100 {
            let ticket = journal.append(0, sell(units)).unwrap();
            if units % 10 == 0 {
                journal.wait_durable(ticket).unwrap();
                assert!(journal.is_durable(ticket));
            }
        }
        journal.shutdown().unwrap();
        let units: Vec<u32> = read_all(&dir)
            .into_iter()
            .map(|e| match e {
                Event::Sell { units, .. } => units,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(units, (1..=100).collect::<Vec<_>>());
        let segments = std::fs::read_dir(&dir).unwrap().count();
        assert!(segments > 1, "256-byte segments must rotate: {segments}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_fsync_is_sticky_and_never_acknowledged() {
        let dir = temp_dir("fsync");
        let (fs, journal) = faulty_journal(&dir);
        let ok = journal.append(0, sell(1)).unwrap();
        journal.wait_durable(ok).unwrap();
        fs.fail_sync_in(1);
        let doomed = journal.append(0, sell(2)).unwrap();
        assert!(matches!(
            journal.wait_durable(doomed),
            Err(JournalError::SyncFailed(_))
        ));
        assert!(!journal.is_durable(doomed));
        // Sticky: no retry, no later success.
        assert!(matches!(
            journal.append(0, sell(3)),
            Err(JournalError::SyncFailed(_))
        ));
        assert!(matches!(journal.flush(), Err(JournalError::SyncFailed(_))));
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_full_fails_the_journal_with_enospc() {
        let dir = temp_dir("full");
        let (fs, journal) = faulty_journal(&dir);
        journal
            .wait_durable(journal.append(0, sell(1)).unwrap())
            .unwrap();
        fs.disk_full_after(5);
        let ticket = journal.append(0, sell(2)).unwrap();
        match journal.wait_durable(ticket) {
            Err(JournalError::WriteFailed(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC)),
            other => panic!("{other:?}"),
        }
        drop(journal);
        // What was acknowledged is intact; the partial write is a torn tail.
        let events = read_all(&dir);
        assert_eq!(
            events,
            [Event::Sell {
                sku: SkuId::from_index(1),
                units: 1
            }]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn async_waits_resolve_and_many_threads_group_commit() {
        let dir = temp_dir("async");
        let batches = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&batches);
        let journal = Arc::new(
            Journal::start(
                JournalConfig::new(&dir, Durability::Sync),
                Arc::new(RealFs),
                0,
                Box::new(move |_, _| {
                    counted.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .unwrap(),
        );
        std::thread::scope(|s| {
            for t in 0..8 {
                let journal = Arc::clone(&journal);
                s.spawn(move || {
                    for i in 0..200 {
                        let ticket = journal.append(t, sell(t as u32 * 1000 + i)).unwrap();
                        block_on(journal.durable(ticket)).unwrap();
                    }
                });
            }
        });
        journal.shutdown().unwrap();
        assert_eq!(read_all(&dir).len(), 1600);
        // Group commit: far fewer fsyncs than durable waits.
        assert!(
            batches.load(Ordering::Relaxed) < 1600,
            "{}",
            batches.load(Ordering::Relaxed)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A minimal executor: poll, park until woken.
    /// Bug: every poll of a pending `DurableFuture` pushed another copy of
    /// its waker (under a process-wide lock); a future polled by a busy
    /// executor grew the list without bound until its batch landed.
    #[test]
    fn a_pending_durable_future_registers_its_waker_once() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dir = temp_dir("waker-once");
        let fs = FaultyFs::new();
        let journal = Journal::start(
            JournalConfig::new(&dir, Durability::Sync),
            Arc::new(fs.clone()),
            0,
            Box::new(|_, _| {}),
        )
        .unwrap();
        fs.stall();
        journal.append(0, sell(1)).unwrap();
        let ticket = journal.ticket();
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(journal.durable(ticket));
        for _ in 0..100 {
            assert!(future.as_mut().poll(&mut cx).is_pending());
        }
        let registered = journal.stats().async_waiters;
        // Before asserting: a failed test must not leave the disk stalled
        // (dropping the journal flushes).
        fs.resume();
        assert_eq!(registered, 1);
        while future.as_mut().poll(&mut cx).is_pending() {
            std::thread::yield_now();
        }
        assert!(count.0.load(Ordering::SeqCst) <= 1, "woken once at most");
        journal.shutdown().unwrap();
        assert_eq!(journal.stats().async_waiters, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }
}

//! The writer thread: cuts the lanes into batches, writes and syncs them,
//! marks them durable, wakes the waiters and hands each batch to the fold.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::fs::{JournalFs, SegmentFile};
use super::segment::{self, encode_header, BatchMarker, Position, HEADER_LEN};
use super::{
    bucket, BatchSink, DurableBatch, JournalError, Shared, BATCH_BUCKETS, FSYNC_BUCKETS_US,
};
use crate::core::clock::Clock;

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) fs: Arc<dyn JournalFs>,
    pub(super) dir: PathBuf,
    pub(super) segment_bytes: u64,
    pub(super) flush_interval: Duration,
    pub(super) next_segment: u64,
    pub(super) file: Option<Box<dyn SegmentFile>>,
    pub(super) file_len: u64,
    pub(super) sink: BatchSink,
    pub(super) clock: Arc<dyn Clock>,
    /// The previous batch's time: batch times never go back, even when the
    /// wall clock does, so feed times follow feed positions.
    pub(super) last_at_ms: u64,
    pub(super) preparer: Preparer,
}

/// A segment's bytes written before the next one is made ahead (half the
/// segment when that is less). A journal that hardly writes (a quiet shop,
/// most tests) never pays for a segment of zeros; a sale passes this in a
/// fraction of a second.
const PREPARE_AFTER_BYTES: u64 = 1 << 20;

/// Makes the next segment ahead of time, on a thread of its own.
///
/// Why: an `fdatasync` after an append that grows the file must also commit
/// the file's new size, which on ext4 waits for the file system's journal
/// thread; one after writes over zeros already on disk flushes the data
/// alone. In a 20 s `sync` sale on this machine that took the share of
/// journal syncs under 100 µs from ~3% to ~35%, and purchases rose ~7%
/// (`docs/benchmarks.md`, "Segments made ahead").
#[derive(Default)]
pub(super) struct Preparer {
    stop: Arc<AtomicBool>,
    running: Option<JoinHandle<io::Result<bool>>>,
    /// A made-ahead segment is waiting for `create_segment`.
    ready: bool,
    /// The last attempt failed: no other until the next segment.
    failed: bool,
}

impl Preparer {
    /// Whether a made-ahead segment is waiting (collects a finished run).
    fn ready(&mut self) -> bool {
        if self.running.as_ref().is_some_and(|run| run.is_finished()) {
            let run = self.running.take().expect("checked just above");
            self.ready = match run.join() {
                Ok(Ok(ready)) => ready,
                Ok(Err(error)) => {
                    tracing::warn!("journal: making the next segment ahead of time failed: {error}; segments are made when needed until the next one");
                    self.failed = true;
                    false
                }
                Err(_) => {
                    tracing::warn!(
                        "journal: the thread making the next segment ahead of time panicked"
                    );
                    self.failed = true;
                    false
                }
            };
        }
        self.ready
    }

    /// Starts making the next segment unless one is ready or being made.
    fn start(&mut self, fs: &Arc<dyn JournalFs>, dir: &std::path::Path, bytes: u64) {
        if self.ready() || self.running.is_some() || self.failed {
            return;
        }
        let (fs, dir, stop) = (Arc::clone(fs), dir.to_path_buf(), Arc::clone(&self.stop));
        let spawned = std::thread::Builder::new()
            .name("hotstock-journal-prepare".into())
            .spawn(move || fs.prepare_segment(&dir, bytes, &stop));
        match spawned {
            Ok(run) => self.running = Some(run),
            Err(error) => {
                tracing::warn!("journal: no thread to make segments ahead of time: {error}");
                self.failed = true;
            }
        }
    }

    /// A new segment was created (from the made-ahead one, or not).
    fn rotated(&mut self) {
        self.ready = false;
        self.failed = false;
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        // Relaxed: the join below is what waits for the thread.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(run) = self.running.take() {
            let _ = run.join();
        }
    }
}

impl Writer {
    /// The writer thread's body. A panic (a bug in the fold or the feed the
    /// sink hands batches to) fails the journal like a failed fsync would:
    /// waiters, and appenders waiting for room, get the reason instead of
    /// waiting forever on a thread that is gone.
    pub(super) fn run(self) {
        let shared = Arc::clone(&self.shared);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_batches()));
        if let Err(panic) = ran {
            let message: Arc<str> = match panic.downcast_ref::<&str>() {
                Some(text) => Arc::from(*text),
                None => match panic.downcast_ref::<String>() {
                    Some(text) => Arc::from(text.as_str()),
                    None => Arc::from("a panic with no message"),
                },
            };
            fail(&shared, JournalError::WriterPanicked(message));
        }
    }

    fn run_batches(mut self) {
        let _ = self.shared.writer_thread.set(std::thread::current());
        let mut batch: Vec<u8> = Vec::new();
        loop {
            let stopping = self.wait_for_work();
            let epoch = self.cut(&mut batch);
            if !batch.is_empty() {
                self.last_at_ms = self.last_at_ms.max(self.clock.now_ms());
                let at_ms = self.last_at_ms;
                match self.write(&batch, at_ms) {
                    Ok(end) => (self.sink)(&DurableBatch {
                        frames: &batch,
                        end,
                        at_ms,
                    }),
                    Err(failure) => {
                        fail(&self.shared, failure);
                        return;
                    }
                }
            }
            // Release: pairs with the Acquire loads of waiters; the batch is
            // on disk before anyone can see its epoch as durable.
            self.shared.durable_epoch.store(epoch, Ordering::Release);
            wake(&self.shared, epoch);
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

    /// Writes `batch` behind its marker to the current segment (starting a
    /// new one when it would overflow) and syncs it. Returns the position
    /// just past the batch.
    fn write(&mut self, batch: &[u8], at_ms: u64) -> Result<Position, JournalError> {
        let frames = segment::batch_payloads(batch).count() as u64;
        // A batch is at most the lanes' halves, far below 4 GiB.
        let marker = BatchMarker::frame(at_ms, frames as u32, batch.len() as u32);
        let len = (marker.len() + batch.len()) as u64;
        let over = self.file_len + len > self.segment_bytes;
        // A segment that grows as it is written gives way to a made-ahead
        // one as soon as that is ready, not only when it is full.
        let grows = self.file.as_ref().is_some_and(|file| !file.prepared());
        let switch = grows && self.preparer.ready();
        if self.file.is_none() || (over && self.file_len > HEADER_LEN as u64) || switch {
            self.rotate()?;
        }
        let file = self.file.as_mut().expect("rotate opened a segment");
        let write_failed = |e| JournalError::WriteFailed(Arc::new(e));
        file.write_all(&marker).map_err(write_failed)?;
        file.write_all(batch).map_err(write_failed)?;
        self.file_len += len;
        let end = Position {
            segment: self.next_segment - 1,
            offset: self.file_len,
        };
        let began = std::time::Instant::now();
        file.sync_data()
            .map_err(|e| JournalError::SyncFailed(Arc::new(e)))?;
        self.record(batch, frames, began.elapsed().as_micros() as u64);
        if self.file_len >= PREPARE_AFTER_BYTES.min(self.segment_bytes / 2) {
            self.preparer.start(&self.fs, &self.dir, self.segment_bytes);
        }
        Ok(end)
    }

    /// Publishes a durable batch's size and fsync latency.
    fn record(&self, batch: &[u8], frames: u64, fsync_us: u64) {
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
        self.preparer.rotated();
        Ok(())
    }
}

/// Fails the journal for good: nothing more is acknowledged, and every
/// waiter is woken to read the failure.
fn fail(shared: &Shared, failure: JournalError) {
    tracing::error!("{failure}");
    let _ = shared.failure.set(failure);
    wake(shared, 0);
    // Appenders waiting for lane room read the failure too.
    let _guard = shared.space_lock.lock();
    shared.space_freed.notify_all();
}

/// Wakes the blocking waiters and the registered wakers whose tickets are
/// durable through `durable` (all of them once the journal failed or shuts
/// down).
fn wake(shared: &Shared, durable: u64) {
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

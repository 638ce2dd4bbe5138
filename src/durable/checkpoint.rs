use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::recovery::list_segments;
use parking_lot::{Condvar, Mutex};

use crate::core::clock::Clock;
use crate::core::engine::EngineConfig;
use crate::core::limits::RESERVATION_PRUNE_INTERVAL_MS;
use crate::durable::feed::{Feed, FeedEvent};
use crate::durable::journal::segment::{segment_file_name, Position};
use crate::durable::settled::{Checkpoint, EventsRetention, Settled, SettledHold};
use crate::durable::store::{Store, StoreError};

/// How long the outbox keeps events (both bounds apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedRetention {
    pub max_age_ms: u64,
    pub max_events: u64,
}

/// The checkpointer thread: every interval, copies what changed in the
/// writer's shadow to the store, then deletes segments the store covers.
pub(super) struct Checkpointer {
    shared: Arc<CheckpointShared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct CheckpointShared {
    /// Shared with feed readers (the outbox, publishers' positions).
    store: Arc<Mutex<Box<dyn Store>>>,
    settled: Arc<Mutex<Settled>>,
    /// Its events of the checkpoint's batches go to the store with them.
    feed: Arc<Feed>,
    feed_id: u64,
    retention: FeedRetention,
    journal_dir: PathBuf,
    engine: EngineConfig,
    clock: Arc<dyn Clock>,
    stop: Mutex<bool>,
    stats: Arc<CheckpointStats>,
    /// When reservation rows past their retention were last deleted.
    reservations_pruned_ms: Mutex<u64>,
    /// The last saved checkpoint's row and event buffers, emptied.
    buffers: Mutex<Buffers>,
    wake: Condvar,
}

/// A checkpoint's two large buffers, kept from one checkpoint to the next.
/// In a sale each holds a few hundred thousand entries (~100 MB of events
/// at 100k purchases a second): allocated afresh, the kernel faulted in and
/// zeroed every page of them at every checkpoint (keeping them took about
/// a quarter of the checkpointer's page faults away, `docs/benchmarks.md`).
#[derive(Default)]
struct Buffers {
    holds: Vec<(u64, SettledHold)>,
    events: Vec<FeedEvent>,
}

impl Buffers {
    /// Takes `checkpoint`'s buffers back, emptied. A buffer more than four
    /// times larger than this checkpoint needed gives the excess back, so
    /// the memory of a sale's peak is not kept for the hours after it.
    fn keep(&mut self, checkpoint: &mut Checkpoint) {
        self.holds = emptied(std::mem::take(&mut checkpoint.holds));
        self.events = emptied(std::mem::take(&mut checkpoint.events));
    }
}

/// `buffer` emptied, its capacity kept unless it is more than four times
/// what it held (then only that much is kept).
fn emptied<T>(mut buffer: Vec<T>) -> Vec<T> {
    let used = buffer.len();
    buffer.clear();
    if buffer.capacity() > used.saturating_mul(4) {
        buffer.shrink_to(used);
    }
    buffer
}

/// How checkpoints have gone: written by the checkpointer, read by
/// `/metrics`. While the store refuses checkpoints nothing is lost (the
/// journal keeps every segment), but what is not yet checkpointed stays in
/// memory too: these say so before memory does.
#[derive(Debug)]
pub struct CheckpointStats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Failures since the last success.
    failing: AtomicU64,
    /// When the last checkpoint succeeded (or the engine opened).
    last_success_ms: AtomicU64,
}

/// A reading of `CheckpointStats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointReading {
    pub succeeded: u64,
    pub failed: u64,
    pub failing: u64,
    pub last_success_ms: u64,
}

impl CheckpointStats {
    fn new(opened_ms: u64) -> CheckpointStats {
        CheckpointStats {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failing: AtomicU64::new(0),
            last_success_ms: AtomicU64::new(opened_ms),
        }
    }

    fn note(&self, ok: bool, now_ms: u64) {
        // Relaxed: counters with one writer at a time (the checkpointer,
        // or a caller of `checkpoint` holding the store's lock), read as
        // independent gauges.
        if ok {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
            self.failing.store(0, Ordering::Relaxed);
            self.last_success_ms.store(now_ms, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.failing.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> CheckpointReading {
        // Relaxed: see `note`.
        CheckpointReading {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            last_success_ms: self.last_success_ms.load(Ordering::Relaxed),
        }
    }
}

impl Checkpointer {
    // One argument per thing it ties together; a struct would only name them again.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn(
        store: Box<dyn Store>,
        settled: Arc<Mutex<Settled>>,
        feed: (Arc<Feed>, u64, FeedRetention),
        journal_dir: PathBuf,
        engine: EngineConfig,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> io::Result<Checkpointer> {
        let started_ms = clock.now_ms();
        let shared = Arc::new(CheckpointShared {
            store: Arc::new(Mutex::new(store)),
            settled,
            feed: feed.0,
            feed_id: feed.1,
            retention: feed.2,
            journal_dir,
            engine,
            clock,
            stop: Mutex::new(false),
            stats: Arc::new(CheckpointStats::new(started_ms)),
            // Counted from the start, so a restart in a sale does not begin
            // with a scan of the whole table.
            reservations_pruned_ms: Mutex::new(started_ms),
            buffers: Mutex::new(Buffers::default()),
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
                    tracing::warn!("checkpoint failed, will retry: {error}");
                }
            })?;
        Ok(Checkpointer {
            shared,
            handle: Some(handle),
        })
    }

    pub(super) fn run_now(&self) -> Result<Position, StoreError> {
        self.shared.run(false)
    }

    /// How checkpoints have gone, for `/metrics`.
    pub(super) fn stats(&self) -> Arc<CheckpointStats> {
        Arc::clone(&self.shared.stats)
    }

    /// The store, for feed readers: they wait for a checkpoint in progress.
    pub(super) fn store(&self) -> Arc<Mutex<Box<dyn Store>>> {
        Arc::clone(&self.shared.store)
    }

    /// Stops the thread and writes a last checkpoint.
    pub(super) fn stop(mut self) -> Result<Position, StoreError> {
        self.join();
        self.shared.run(true)
    }

    /// Stops the thread with no last checkpoint (a simulated crash).
    pub(super) fn abandon(mut self) {
        self.join();
    }

    fn join(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl CheckpointShared {
    /// One checkpoint, counted in `stats`.
    fn run(&self, final_run: bool) -> Result<Position, StoreError> {
        let ran = self.run_once(final_run);
        self.stats.note(ran.is_ok(), self.clock.now_ms());
        ran
    }

    /// One checkpoint; `final_run` (at close) also prunes reservation rows.
    fn run_once(&self, final_run: bool) -> Result<Position, StoreError> {
        let mut store = self.store.lock();
        // Taken under the shadow's lock (the writer waits for it), finished
        // off it: see `Settled::take`.
        let taken = self.settled.lock().checkpoint_if_whole();
        let Some(taken) = taken else {
            return Err(StoreError {
                store: store.describe(),
                message: "no checkpoint: the journal's writer stopped in the middle of a batch \
                          (a bug, in the log), so the counts it folded are not a state the \
                          journal ever had; restart to recover from the journal"
                    .into(),
            });
        };
        let mut buffers = self.buffers.lock();
        let (mut checkpoint, spare) = taken.finish_into(std::mem::take(&mut buffers.holds));
        self.settled.lock().recycle(spare);
        // Every batch up to the checkpoint's position reached the feed under
        // the lock just taken (the writer's sink pushes while folding).
        let mut events = std::mem::take(&mut buffers.events);
        let feed_next = self
            .feed
            .unsaved_through_into(checkpoint.position, &mut events);
        checkpoint.events = events;
        checkpoint.feed_next_position = feed_next;
        checkpoint.feed_id = self.feed_id;
        // The store forgets what the engine prunes: ended records after their
        // retention, confirmed ones after the refund window.
        let now = self.clock.now_ms();
        checkpoint.prune_keys_before_ms =
            Some(now.saturating_sub(self.engine.idempotency_retention_ms));
        checkpoint.events_retention = Some(EventsRetention {
            before_ms: now.saturating_sub(self.retention.max_age_ms),
            max_events: self.retention.max_events,
        });
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
        self.feed.mark_saved(feed_next);
        buffers.keep(&mut checkpoint);
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Kept emptied for the next checkpoint while a sale's checkpoints are
    /// alike; a buffer far larger than the last checkpoint needed (the sale
    /// is over) gives its memory back.
    #[test]
    fn buffers_are_kept_empty_and_shrink_once_the_sale_is_over() {
        let sale = emptied(vec![7u64; 1_000]);
        assert!(sale.is_empty() && sale.capacity() >= 1_000);
        let mut alike = sale;
        alike.extend([7u64; 900]);
        let alike = emptied(alike);
        assert!(
            alike.capacity() >= 1_000,
            "kept: a sale's next checkpoint is alike"
        );
        let mut quiet = alike;
        quiet.extend([7u64; 10]);
        let quiet = emptied(quiet);
        assert!(
            quiet.is_empty() && quiet.capacity() < 100,
            "{}",
            quiet.capacity()
        );
    }
}

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{CheckpointStats, Checkpointer, FeedRetention};
use super::feed::{Feed, FeedFilter, FeedPage, FeedRead};
use super::recovery::{fold_batch, list_segments, lock_dir, recover, Mode};
use super::restore::restore_engine;
use super::settled::Settled;
use super::sink::JournaledEngine;
use parking_lot::Mutex;

use crate::core::clock::{Clock, SystemClock};
use crate::core::engine::{Engine, EngineConfig};
use crate::core::error::EngineError;
use crate::core::public_id::PublicIds;
use crate::core::timers::TimerThread;
use crate::durable::journal::fs::{create_dir_all_durably, JournalFs, RealFs};
use crate::durable::journal::segment::{Corruption, Position, TornTail};
use crate::durable::journal::{
    BatchSink, Durability, DurableBatch, Journal, JournalConfig, JournalError,
};
use crate::durable::store::sqlite::SqliteStore;
use crate::durable::store::{Store, StoreError};

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
    /// How long the outbox (`hotstock_events`) keeps events, by age and by
    /// count; both apply.
    pub events_retention: Duration,
    pub events_retention_count: u64,
}

impl DurableConfig {
    /// The outbox's retention, by age and by count.
    fn feed_retention(&self) -> FeedRetention {
        FeedRetention {
            max_age_ms: u64::try_from(self.events_retention.as_millis()).unwrap_or(u64::MAX),
            max_events: self.events_retention_count,
        }
    }

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
            events_retention: Duration::from_secs(7 * 24 * 3600),
            events_retention_count: 10_000_000,
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
    /// Where each replayed segment's frames end (segment, offset). A
    /// segment made ahead is longer on disk: zeros follow its frames.
    pub segment_ends: Vec<(u64, u64)>,
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
    engine: Arc<JournaledEngine>,
    /// Reservation ids as shown outside, under this data's key.
    public_ids: PublicIds,
    feed: Arc<Feed>,
    journal: Arc<Journal>,
    checkpointer: Option<Checkpointer>,
    timers: Option<TimerThread>,
    /// This run's boot number (grows by one per open of the directory).
    boot: u32,
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
        create_dir_all_durably(fs.as_ref(), &journal_dir).map_err(|source| OpenError::Io {
            path: journal_dir.clone(),
            source,
        })?;
        let lock = lock_dir(&config.data_dir)?;
        let mut store = open_store(&config)?;
        let public_ids = PublicIds::new(store.reservation_id_key(fresh_key(&config)?)?);
        let (settled, mut report, feed) =
            recover_with_feed(&journal_dir, store.as_mut(), &public_ids)?;
        let next_segment = list_segments(&journal_dir)?
            .last()
            .map_or(settled.position.segment, |last| last + 1);
        report.reservations = settled.holds.len();
        // The recovered fold becomes the writer's shadow: its rows that
        // differ from the store are already marked dirty for the next
        // checkpoint.
        let settled_for_sink = Arc::new(Mutex::new(settled));
        let sink = shadow_sink(Arc::clone(&settled_for_sink), Arc::clone(&feed), fold_batch);
        let journal = Arc::new(start_journal(
            &config,
            fs,
            clock.clone(),
            next_segment,
            sink,
        )?);
        let boot = store.next_boot()?;
        let engine = start_engine(
            &config,
            clock.clone(),
            &journal,
            boot,
            &settled_for_sink,
            &mut report,
        )?;
        report.elapsed = started.elapsed();
        let retention = config.feed_retention();
        let thread_failed = |source| OpenError::Io {
            path: config.data_dir.clone(),
            source,
        };
        let checkpointer = Checkpointer::spawn(
            store,
            Arc::clone(&settled_for_sink),
            (Arc::clone(&feed), public_ids.feed_id(), retention),
            journal_dir,
            config.engine.clone(),
            clock,
            config.checkpoint_interval,
        )
        .map_err(thread_failed)?;
        let timers =
            TimerThread::spawn(Arc::clone(&engine), config.timer_period).map_err(thread_failed)?;
        let durable = DurableEngine {
            engine,
            public_ids,
            feed,
            journal,
            checkpointer: Some(checkpointer),
            timers: Some(timers),
            boot,
            _lock: lock,
        };
        Ok((durable, report))
    }

    pub fn engine(&self) -> &Arc<JournaledEngine> {
        &self.engine
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// This run's boot number: it grows by one each time the directory is
    /// opened, so names made from it (reservation ids, lease ids) never
    /// repeat across restarts.
    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// Encodes and decodes the public form of this data's reservation ids.
    pub fn public_ids(&self) -> &PublicIds {
        &self.public_ids
    }

    /// The change feed (durable events, in position order).
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// This data directory's feed id, from which event ids are made.
    pub fn feed_id(&self) -> u64 {
        self.public_ids.feed_id()
    }

    /// A reader of the feed that reaches back into the store's outbox.
    pub fn feed_reader(&self) -> FeedReader {
        let checkpointer = self.checkpointer.as_ref().expect("open until closed");
        FeedReader {
            feed: Arc::clone(&self.feed),
            store: checkpointer.store(),
            feed_id: self.public_ids.feed_id(),
        }
    }

    /// Writes a checkpoint now (and deletes fully covered segments).
    pub fn checkpoint(&self) -> Result<Position, StoreError> {
        self.checkpointer
            .as_ref()
            .expect("open until closed")
            .run_now()
    }

    /// How checkpoints have gone (successes, failures, the last success),
    /// shared with whoever reports it (`/metrics`).
    pub fn checkpoint_stats(&self) -> Arc<CheckpointStats> {
        self.checkpointer
            .as_ref()
            .expect("open until closed")
            .stats()
    }

    /// Stops timers, flushes the journal, writes a last checkpoint.
    pub fn close(mut self) -> Result<(), CloseError> {
        self.shut_down()
    }

    /// Ends the engine as a crash would, for tests: the timers and the
    /// checkpointer stop with no last checkpoint, and the journal stops.
    /// What the journal still holds reaches the disk only if the file layer
    /// lets it: after [`FaultyFs::power_loss`](crate::durable::journal::fs::FaultyFs::power_loss)
    /// nothing does, so what is left is exactly what a power cut leaves.
    pub fn crash(mut self) {
        drop(self.timers.take());
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.abandon();
        }
        let _ = self.journal.shutdown();
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
                tracing::error!("closing the data directory: {error}");
            }
        }
    }
}

/// Reads the feed: from memory near the head, from the store's outbox
/// further back. Cheap to clone.
#[derive(Clone)]
pub struct FeedReader {
    feed: Arc<Feed>,
    store: Arc<Mutex<Box<dyn Store>>>,
    feed_id: u64,
}

impl std::fmt::Debug for FeedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedReader").finish_non_exhaustive()
    }
}

impl FeedReader {
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// This data directory's feed id, from which event ids are made.
    pub fn feed_id(&self) -> u64 {
        self.feed_id
    }

    /// Events after `after` matching `filter`, at most `limit` looked at.
    /// Reading the outbox may wait for a checkpoint in progress: call it
    /// off an async runtime's workers.
    pub fn read(
        &self,
        after: u64,
        limit: usize,
        filter: &FeedFilter,
    ) -> Result<FeedPage, FeedError> {
        match self.feed.read(after, limit, filter) {
            FeedRead::Page(page) => Ok(page),
            FeedRead::Ahead { last } => Err(FeedError::Ahead { after, last }),
            FeedRead::FromStore => {
                let (events, oldest) = {
                    let mut store = self.store.lock();
                    let events = store.read_events(after, limit).map_err(FeedError::Store)?;
                    (events, store.oldest_event().map_err(FeedError::Store)?)
                };
                let oldest = oldest.unwrap_or_else(|| self.feed.first_in_memory());
                if after + 1 < oldest {
                    return Err(FeedError::Gone { after, oldest });
                }
                let mut page = FeedPage {
                    events: Vec::new(),
                    next_after: after,
                };
                for event in events {
                    page.next_after = event.position;
                    if filter.matches(&event) {
                        page.events.push(event);
                    }
                }
                Ok(page)
            }
        }
    }
}

impl FeedReader {
    /// The feed position a publisher (`name`) last had acknowledged, as
    /// kept in the store (0 when none).
    pub fn publisher_position(&self, name: &str) -> Result<u64, StoreError> {
        let value = self.store.lock().read_meta(&publisher_key(name))?;
        Ok(value.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    /// Keeps a publisher's acknowledged position in the store.
    pub fn save_publisher_position(&self, name: &str, position: u64) -> Result<(), StoreError> {
        let value = i64::try_from(position).unwrap_or(i64::MAX);
        self.store.lock().write_meta(&publisher_key(name), value)
    }
}

fn publisher_key(name: &str) -> String {
    format!("publisher_position:{name}")
}

/// Why the feed cannot answer a read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("events after position {after} are no longer kept: the oldest still held is {oldest} (retention passed them); resume from {oldest} minus one or rebuild from the store's counts")]
    Gone { after: u64, oldest: u64 },
    #[error("position {after} is past the newest event, {last}: this reader's position comes from another data directory or a newer copy of this one")]
    Ahead { after: u64, last: u64 },
    #[error("reading the outbox: {0}")]
    Store(StoreError),
}

/// Why a clean close did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("flushing the journal: {0}")]
    Journal(JournalError),
    #[error("writing the last checkpoint: {0}")]
    Store(StoreError),
}

/// 16 bytes from the operating system, for a key made on first start.
fn fresh_key(config: &DurableConfig) -> Result<[u8; 16], OpenError> {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| OpenError::Io {
        path: config.data_dir.clone(),
        source: std::io::Error::other(format!("no random bytes for the reservation id key: {e}")),
    })?;
    Ok(key)
}

/// Recovers the journal on top of the store's checkpoint, with the feed
/// started from the checkpoint and given every batch replayed after it.
fn recover_with_feed(
    journal_dir: &std::path::Path,
    store: &mut dyn Store,
    public_ids: &PublicIds,
) -> Result<(Settled, RecoveryReport, Arc<Feed>), OpenError> {
    let feed: std::cell::OnceCell<Arc<Feed>> = std::cell::OnceCell::new();
    let (settled, report) = recover(
        journal_dir,
        store,
        Mode::Repair,
        &mut |settled| {
            let _ = feed.set(Arc::new(Feed::new(public_ids.clone(), settled)));
        },
        &mut |batch| {
            if let Some(feed) = feed.get() {
                feed.push(batch);
            }
        },
    )?;
    let feed = feed.into_inner().expect("recover starts the feed");
    Ok((settled, report, feed))
}

fn open_store(config: &DurableConfig) -> Result<Box<dyn Store>, OpenError> {
    Ok(match &config.store {
        StoreConfig::Sqlite => Box::new(SqliteStore::open(&config.store_path())?),
        #[cfg(feature = "postgres")]
        StoreConfig::Postgres { url, schema } => Box::new(
            crate::durable::store::postgres::PostgresStore::connect(url, schema)?,
        ),
    })
}

/// The writer's sink: folds each durable batch into the shadow of settled
/// counts and hands it to the feed, both under the shadow's lock (a
/// checkpoint that reads the fold's position finds every batch up to it in
/// the feed). The shadow is marked mid-batch in between, so a panic there
/// (a bug; `fold` is `fold_batch` but for tests) leaves no checkpoint to
/// take from a half-folded batch.
pub(super) fn shadow_sink(
    settled: Arc<Mutex<Settled>>,
    feed: Arc<Feed>,
    fold: fn(&mut Settled, &DurableBatch<'_>),
) -> BatchSink {
    Box::new(move |batch: &DurableBatch<'_>| {
        let mut shadow = settled.lock();
        shadow.set_mid_batch(true);
        fold(&mut shadow, batch);
        feed.push(batch);
        shadow.set_mid_batch(false);
    })
}

/// The engine on `journal`, restored from the recovered fold (nothing is
/// appended yet, so the writer is not folding), its ids above every earlier
/// run's (`boot`); the holds that expired while it was down expire now.
/// Fills in the report's SKUs and expired holds.
fn start_engine(
    config: &DurableConfig,
    clock: Arc<dyn Clock>,
    journal: &Arc<Journal>,
    boot: u32,
    settled: &Mutex<Settled>,
    report: &mut RecoveryReport,
) -> Result<Arc<JournaledEngine>, OpenError> {
    let engine =
        Engine::with_sink(config.engine.clone(), clock, Arc::clone(journal)).map_err(|e| {
            OpenError::Restore(EngineError::StorageFailed {
                message: e.to_string().into(),
            })
        })?;
    engine.set_boot(boot);
    restore_engine(&engine, &settled.lock()).map_err(OpenError::Restore)?;
    report.skus = engine.sku_count();
    let engine = Arc::new(engine);
    report.expired_on_start = engine.run_timers().expired;
    Ok(engine)
}

fn start_journal(
    config: &DurableConfig,
    fs: Arc<dyn JournalFs>,
    clock: Arc<dyn Clock>,
    next_segment: u64,
    sink: BatchSink,
) -> Result<Journal, OpenError> {
    let journal_dir = config.journal_dir();
    let mut journal_config = JournalConfig::new(&journal_dir, config.durability);
    journal_config.segment_bytes = config.segment_bytes;
    journal_config.flush_interval = config.flush_interval;
    journal_config.clock = clock;
    Journal::start(journal_config, fs, next_segment, sink).map_err(|source| OpenError::Io {
        path: journal_dir,
        source,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::types::SkuId;
    use crate::durable::event::Event;

    /// A fold that panics half way through its batch (a stand-in for a bug
    /// in `fold_batch`): one frame applied, then the panic.
    fn fold_then_panic(settled: &mut Settled, batch: &DurableBatch<'_>) {
        let first = crate::durable::journal::segment::batch_payloads(batch.frames).next();
        let _ = settled.apply_frame(first.expect("a batch has a frame"));
        panic!("a fold bug");
    }

    /// The writer panicking in the middle of a batch fails the journal
    /// (waiters hear why) and leaves the shadow refusing every checkpoint:
    /// its counts are half a batch ahead of any journal cut.
    #[test]
    fn a_fold_that_panics_mid_batch_leaves_no_checkpoint_to_take() {
        let dir = std::env::temp_dir().join(format!("hotstock-torn-fold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let settled = Arc::new(Mutex::new(Settled::default()));
        let feed = Arc::new(Feed::new(PublicIds::new([7; 16]), &Settled::default()));
        let sink = shadow_sink(Arc::clone(&settled), feed, fold_then_panic);
        let config = JournalConfig::new(&dir, Durability::Sync);
        let journal = Journal::start(config, Arc::new(RealFs), 0, sink).unwrap();
        let sku = SkuId::from_index(0);
        let created = |out: &mut Vec<u8>| {
            Event::SkuCreated {
                sku,
                name: "tee".into(),
            }
            .encode(out)
        };
        journal.append(0, created).unwrap();
        let ticket = journal
            .append(0, |out| Event::Sell { sku, units: 1 }.encode(out))
            .unwrap();
        assert!(matches!(
            journal.wait_durable(ticket),
            Err(JournalError::WriterPanicked(_))
        ));
        assert!(settled.lock().checkpoint_if_whole().is_none());
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An event the writer cannot fold (here a kind byte no decoder
    /// knows; in the bug that found it, a location's name the decoder's
    /// name check refused) fails the journal with a reason, and leaves no
    /// checkpoint to take. Release builds used to skip the frame silently
    /// (the check was a `debug_assert`), so the shadow went on without it
    /// and the next checkpoint failed on a SKU row with no name.
    #[test]
    fn a_frame_the_fold_cannot_decode_fails_the_journal() {
        let dir = std::env::temp_dir().join(format!("hotstock-bad-frame-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let settled = Arc::new(Mutex::new(Settled::default()));
        let feed = Arc::new(Feed::new(PublicIds::new([7; 16]), &Settled::default()));
        let sink = shadow_sink(Arc::clone(&settled), feed, fold_batch);
        let config = JournalConfig::new(&dir, Durability::Sync);
        let journal = Journal::start(config, Arc::new(RealFs), 0, sink).unwrap();
        let ticket = journal.append(0, |out| out.push(0xEE)).unwrap();
        match journal.wait_durable(ticket) {
            Err(JournalError::WriterPanicked(reason)) => {
                assert!(reason.contains("does not decode"), "{reason}")
            }
            other => panic!("the journal went on: {other:?}"),
        }
        assert!(settled.lock().checkpoint_if_whole().is_none());
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

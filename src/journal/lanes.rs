//! `Lanes`: where appends wait for the writer, and the epoch cut that turns
//! them into batches. Kept apart from the `Journal` (threads, files, waits)
//! and built on the `sync` shim, so loom checks this protocol as it runs
//! (`loom-tests/tests/journal.rs`).
//!
//! The protocol (see also `journal/mod.rs`): an append reads the open epoch
//! *under its lane's lock* and tags its frame with it; the cut moves the
//! open epoch from `k` to `k + 1` and then takes, lane by lane under each
//! lane's lock, every frame tagged `k` or less and nothing tagged later. The
//! lane lock orders each append against the cut: an append that read `k` is
//! in its lane before the cut looks there, or it took the lock after the
//! cut and therefore read `k + 1`.

use crossbeam_utils::CachePadded;

use super::segment::append_frame;
use crate::sync::{AtomicU64, Mutex, Ordering};

#[derive(Debug)]
struct Lane {
    /// Epoch of the frames in `open`; frames in `sealed` are older.
    open_epoch: u64,
    sealed: Vec<u8>,
    open: Vec<u8>,
}

impl Lane {
    fn len(&self) -> usize {
        self.sealed.len() + self.open.len()
    }
}

/// Per-CPU append buffers and the open epoch.
#[derive(Debug)]
pub struct Lanes {
    lanes: Box<[CachePadded<Mutex<Lane>>]>,
    /// Appends are tagged with this; only the cut moves it.
    open_epoch: CachePadded<AtomicU64>,
    lane_bytes: usize,
}

impl Lanes {
    /// `count` lanes (1..=64) of at most `lane_bytes` unflushed bytes each.
    pub fn new(count: usize, lane_bytes: usize) -> Lanes {
        assert!((1..=64).contains(&count), "1 to 64 lanes");
        Lanes {
            lanes: (0..count)
                .map(|_| {
                    CachePadded::new(Mutex::new(Lane {
                        open_epoch: 1,
                        sealed: Vec::new(),
                        open: Vec::new(),
                    }))
                })
                .collect(),
            open_epoch: CachePadded::new(AtomicU64::new(1)),
            lane_bytes,
        }
    }

    /// Appends one frame whose payload `write` encodes to the lane of
    /// `hint`, returning the epoch it is tagged with. When the lane is full,
    /// calls `on_full` (which waits for the writer, or fails) and retries.
    pub fn append<E>(
        &self,
        hint: usize,
        write: impl FnOnce(&mut Vec<u8>),
        mut on_full: impl FnMut() -> Result<(), E>,
    ) -> Result<u64, E> {
        let lane = &self.lanes[hint % self.lanes.len()];
        let mut guard = lane.lock();
        while guard.len() >= self.lane_bytes {
            drop(guard);
            on_full()?;
            guard = lane.lock();
        }
        // Acquire: pairs with the cut's Release store. What orders this
        // append against a cut is the lane lock we hold while reading it.
        let epoch = self.open_epoch.load(Ordering::Acquire);
        debug_assert!(epoch >= guard.open_epoch, "epochs only grow");
        if epoch > guard.open_epoch {
            let Lane { sealed, open, .. } = &mut *guard;
            sealed.append(open);
            guard.open_epoch = epoch;
        }
        append_frame(&mut guard.open, write);
        Ok(epoch)
    }

    /// The open epoch: a ticket for everything appended before this call.
    pub fn open_epoch(&self) -> u64 {
        // Acquire: pairs with the cut's Release store.
        self.open_epoch.load(Ordering::Acquire)
    }

    /// Closes the open epoch and moves every frame tagged with it or earlier
    /// into `batch` (cleared first). Returns the closed epoch and whether a
    /// lane that was full got room. Only one thread (the writer) may cut.
    pub fn cut(&self, batch: &mut Vec<u8>) -> (u64, bool) {
        batch.clear();
        // Relaxed load: only the cutting thread writes the epoch. Release
        // store: an appender that reads the new epoch (under a lane lock we
        // take below) sees everything before it.
        let closed = self.open_epoch.load(Ordering::Relaxed);
        self.open_epoch.store(closed + 1, Ordering::Release);
        let mut freed = false;
        for lane in self.lanes.iter() {
            let mut lane = lane.lock();
            freed |= lane.len() >= self.lane_bytes;
            batch.append(&mut lane.sealed);
            if lane.open_epoch <= closed {
                batch.append(&mut lane.open);
            }
        }
        (closed, freed)
    }
}

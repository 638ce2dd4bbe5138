//! `Lanes`: lock-free appends, and the epoch cut that turns them into
//! batches. Kept apart from the `Journal` (threads, files, waits) and built
//! on the `sync` shim, so loom checks this protocol as it runs
//! (`loom-tests/tests/journal.rs`).
//!
//! # Shape
//!
//! One lane per CPU; each lane has two fixed byte buffers ("halves"), one
//! per parity of the epoch. An append tagged with epoch `e` writes into
//! half `e & 1` of its lane; the cut that closes `e` reads that half while
//! appends tagged `e + 1` fill the other. No lock anywhere: an append is a
//! few atomic read-modify-writes on its own lane's cache lines and a read of
//! the shared epoch (written once per batch).
//!
//! # The protocol
//!
//! An append *announces* itself on its half's in-flight counter, then
//! re-reads the epoch: if the epoch moved, it withdraws and retries with the
//! new one. It then reserves bytes with a `fetch_add`, copies its frame in,
//! and retires (decrements the counter, Release).
//!
//! The cut that closes epoch `k` stores `k + 1`, then for each lane waits
//! until half `k & 1` has nobody in flight, reads it, and empties it.
//!
//! Why that is exact: between the announce and the re-read, and between the
//! cut's store and its read of the counter, stands a `fence(SeqCst)` (the
//! Dekker pattern; fences rather than SeqCst accesses because that is what
//! C11 guarantees for two locations, and what loom models). The two fences
//! are ordered: if the append's comes first, the cut's counter read sees the
//! announce and waits for the retire; if the cut's comes first, the re-read
//! sees the new epoch and the append moves to the other half. The Release
//! retire and the cut's Acquire read synchronise, so the bytes are visible. An append that saw
//! `k + 1` uses the other half. Appends tagged `k + 2` cannot exist until
//! the next cut, which happens after this one emptied the half. Hence a cut
//! takes exactly the frames of the closed epoch, and never waits for
//! appends that started after it (no starvation).
//!
//! A reservation that does not fit records its offset (`fetch_min`), so the
//! cut copies only bytes that were written, and the append waits for the
//! writer (backpressure) and retries.

// loom's `thread_local!` (used under `--cfg loom` through the shim) does
// not accept a `const { }` initializer, so the same declaration cannot be
// const for both builds.
#![allow(clippy::missing_const_for_thread_local)]

use std::cell::RefCell;

use crossbeam_utils::CachePadded;

use super::segment::append_frame;
use crate::core::sync::{
    copy_from_cells, copy_into_cells, fence, yield_now, zeroed_cells, AtomicU64, Ordering,
    UnsafeCell,
};

const NOT_SEALED: u64 = u64::MAX;

/// One parity's buffer in one lane.
#[derive(Debug)]
struct Half {
    /// Appends to this half that announced and have not retired.
    in_flight: CachePadded<AtomicU64>,
    /// Bytes reserved so far (may pass the capacity; see `sealed_at`).
    reserved: AtomicU64,
    /// Offset of the first reservation that did not fit, or `NOT_SEALED`.
    sealed_at: AtomicU64,
    bytes: Box<[UnsafeCell<u8>]>,
}

impl Half {
    fn new(capacity: usize) -> Half {
        Half {
            in_flight: CachePadded::new(AtomicU64::new(0)),
            reserved: AtomicU64::new(0),
            sealed_at: AtomicU64::new(NOT_SEALED),
            bytes: zeroed_cells(capacity),
        }
    }
}

// SAFETY: `bytes` is written only in ranges a `fetch_add` on `reserved`
// gave to one append, and read by the cut only after every announced append
// has retired and before any append tagged with the next epoch of this
// parity can exist (see the module docs); every other field is atomic.
unsafe impl Sync for Half {}

#[derive(Debug)]
struct Lane {
    halves: [Half; 2],
}

crate::core::sync::thread_local! {
    /// Where an append encodes its frame before reserving room for it (the
    /// size is known only once encoded).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::new());
}

/// Per-CPU append buffers and the open epoch.
#[derive(Debug)]
pub struct Lanes {
    lanes: Box<[CachePadded<Lane>]>,
    /// Appends are tagged with this; only the cut moves it.
    open_epoch: CachePadded<AtomicU64>,
    capacity: usize,
}

impl Lanes {
    /// `count` lanes (1..=64), each with two halves of `capacity` bytes.
    pub fn new(count: usize, capacity: usize) -> Lanes {
        assert!((1..=64).contains(&count), "1 to 64 lanes");
        Lanes {
            lanes: (0..count)
                .map(|_| {
                    CachePadded::new(Lane {
                        halves: [Half::new(capacity), Half::new(capacity)],
                    })
                })
                .collect(),
            open_epoch: CachePadded::new(AtomicU64::new(1)),
            capacity,
        }
    }

    /// Appends one frame whose payload `write` encodes to the lane of
    /// `hint`, returning the epoch it is tagged with. When the lane is full,
    /// calls `on_full` (which waits for the writer, or fails) and retries.
    pub fn append<E>(
        &self,
        hint: usize,
        write: impl FnOnce(&mut Vec<u8>),
        on_full: impl FnMut() -> Result<(), E>,
    ) -> Result<u64, E> {
        SCRATCH.with(|scratch| {
            let mut frame = scratch.borrow_mut();
            frame.clear();
            append_frame(&mut frame, write);
            self.append_frame_bytes(hint, &frame, on_full)
        })
    }

    fn append_frame_bytes<E>(
        &self,
        hint: usize,
        frame: &[u8],
        mut on_full: impl FnMut() -> Result<(), E>,
    ) -> Result<u64, E> {
        assert!(
            frame.len() <= self.capacity,
            "a frame larger than a lane can never be appended"
        );
        let lane = &self.lanes[hint % self.lanes.len()];
        let len = frame.len() as u64;
        loop {
            let (epoch, half) = self.announce(lane);
            // Relaxed: the RMW alone makes reservations disjoint; the bytes
            // reach the cut through the Release retire below.
            let offset = half.reserved.fetch_add(len, Ordering::Relaxed);
            if offset + len <= self.capacity as u64 {
                let range = offset as usize..(offset + len) as usize;
                // SAFETY: `fetch_add` gave this append the range alone, and
                // the cut reads the half only once every announced append
                // has retired.
                unsafe { copy_into_cells(&half.bytes[range], frame) };
                // Release: publishes the bytes to the cut's counter read.
                half.in_flight.fetch_sub(1, Ordering::Release);
                return Ok(epoch);
            }
            // Relaxed: published by the Release retire that follows.
            half.sealed_at.fetch_min(offset, Ordering::Relaxed);
            half.in_flight.fetch_sub(1, Ordering::Release);
            on_full()?;
        }
    }

    /// Registers an append in flight on the half of the current epoch.
    fn announce<'l>(&self, lane: &'l Lane) -> (u64, &'l Half) {
        loop {
            // Acquire: pairs with the cut's Release store, so a half this
            // epoch reuses is seen emptied.
            let epoch = self.open_epoch.load(Ordering::Acquire);
            let half = &lane.halves[(epoch & 1) as usize];
            // Relaxed: ordered against the cut by the fence below.
            half.in_flight.fetch_add(1, Ordering::Relaxed);
            // SeqCst fence: the Dekker pattern with the cut's fence (module
            // docs). Without it the re-read and the cut's counter read could
            // both miss the other side's write.
            fence(Ordering::SeqCst);
            if self.open_epoch.load(Ordering::Acquire) == epoch {
                return (epoch, half);
            }
            // The epoch moved while announcing: withdraw and retry with it.
            half.in_flight.fetch_sub(1, Ordering::Release);
        }
    }

    /// Bytes still free for appends to `hint`'s lane in the open epoch. A
    /// hint, not a reservation: other appends to the lane race with it.
    #[inline]
    pub fn room(&self, hint: usize) -> usize {
        let lane = &self.lanes[hint % self.lanes.len()];
        // Acquire: pairs with the cut's Release store (as in `announce`).
        let epoch = self.open_epoch.load(Ordering::Acquire);
        let half = &lane.halves[(epoch & 1) as usize];
        // Relaxed: a reading for a decision that is re-checked by `append`.
        if half.sealed_at.load(Ordering::Relaxed) != NOT_SEALED {
            return 0;
        }
        let reserved = half.reserved.load(Ordering::Relaxed) as usize;
        self.capacity.saturating_sub(reserved)
    }

    /// Bytes in one lane half.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The open epoch: a ticket for everything appended before this call.
    pub fn open_epoch(&self) -> u64 {
        // Acquire: pairs with the cut's store.
        self.open_epoch.load(Ordering::Acquire)
    }

    /// Closes the open epoch and moves every frame tagged with it into
    /// `batch` (cleared first). Returns the closed epoch and whether a full
    /// half got room. Only one thread (the writer) may cut.
    pub fn cut(&self, batch: &mut Vec<u8>) -> (u64, bool) {
        batch.clear();
        // Relaxed load: only the cutting thread writes the epoch.
        let closed = self.open_epoch.load(Ordering::Relaxed);
        // Release: publishes the resets of the previous cut to appends that
        // read the new epoch (see `announce`).
        self.open_epoch.store(closed + 1, Ordering::Release);
        // SeqCst fence: the other half of the Dekker pattern in `announce`.
        fence(Ordering::SeqCst);
        let mut freed = false;
        for lane in self.lanes.iter() {
            let half = &lane.halves[(closed & 1) as usize];
            // Acquire: synchronises with every retire (Release), so the
            // bytes of every append tagged `closed` are visible.
            while half.in_flight.load(Ordering::Acquire) != 0 {
                yield_now();
            }
            // Relaxed: ordered by the acquire above.
            let reserved = half.reserved.load(Ordering::Relaxed);
            let sealed_at = half.sealed_at.load(Ordering::Relaxed);
            let end = reserved.min(sealed_at).min(self.capacity as u64) as usize;
            // SAFETY: nobody is in flight on this half, and no append can
            // reach it before the next cut stores the epoch after this one.
            unsafe { copy_from_cells(&half.bytes[..end], batch) };
            freed |= sealed_at != NOT_SEALED;
            // Relaxed: the next appends to this half learn of the epoch that
            // admits them from the next cut's Release store, which follows.
            half.reserved.store(0, Ordering::Relaxed);
            half.sealed_at.store(NOT_SEALED, Ordering::Relaxed);
        }
        (closed, freed)
    }
}

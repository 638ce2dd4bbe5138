//! The journal's file layer, behind traits so tests can inject faults
//! (a failing `fdatasync`, a full disk) without touching the real disk's
//! behaviour.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::segment::segment_file_name;

/// Creates segment files and makes directory entries durable.
pub trait JournalFs: Send + Sync + std::fmt::Debug {
    /// Creates segment `number` in `dir`; it must not exist.
    fn create_segment(&self, dir: &Path, number: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Makes the directory's entries (new or removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open segment being appended to.
pub trait SegmentFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: the written bytes are on stable storage when it returns.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealSegment(File);

impl SegmentFile for RealSegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl JournalFs for RealFs {
    fn create_segment(&self, dir: &Path, number: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join(segment_file_name(number)))?;
        Ok(Box::new(RealSegment(file)))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A file layer that fails on command: the `n`-th `sync_data` from now (1 =
/// the next one) fails with EIO, or writes fail with "no space" once more
/// than `space` bytes have been written. For fault-injection tests.
#[derive(Debug, Clone)]
pub struct FaultyFs {
    inner: RealFs,
    faults: Arc<Faults>,
}

#[derive(Debug)]
struct Faults {
    syncs_until_failure: AtomicU64,
    space_left: AtomicU64,
    /// While true, every `sync_data` waits (a disk that has stopped).
    stalled: Mutex<bool>,
    resumed: Condvar,
    /// Syncs waiting in a stall now.
    waiting: AtomicU64,
}

impl FaultyFs {
    /// No faults until told.
    pub fn new() -> FaultyFs {
        FaultyFs {
            inner: RealFs,
            faults: Arc::new(Faults {
                syncs_until_failure: AtomicU64::new(0),
                space_left: AtomicU64::new(u64::MAX),
                stalled: Mutex::new(false),
                resumed: Condvar::new(),
                waiting: AtomicU64::new(0),
            }),
        }
    }

    /// The `n`-th `sync_data` from now fails (n >= 1).
    pub fn fail_sync_in(&self, n: u64) {
        self.faults.syncs_until_failure.store(n, Ordering::SeqCst);
    }

    /// Every `sync_data` from now waits until `resume` (a disk that stops
    /// answering: the writer falls behind and the lanes fill).
    pub fn stall(&self) {
        *self.faults.stalled.lock() = true;
    }

    /// Lets stalled and later syncs through.
    pub fn resume(&self) {
        *self.faults.stalled.lock() = false;
        self.faults.resumed.notify_all();
    }

    /// How many syncs are waiting in a stall now.
    pub fn stalled_syncs(&self) -> u64 {
        self.faults.waiting.load(Ordering::SeqCst)
    }

    /// Writes fail with "no space left" once `bytes` more have been written.
    pub fn disk_full_after(&self, bytes: u64) {
        self.faults.space_left.store(bytes, Ordering::SeqCst);
    }
}

impl Default for FaultyFs {
    fn default() -> FaultyFs {
        FaultyFs::new()
    }
}

struct FaultySegment {
    inner: Box<dyn SegmentFile>,
    faults: Arc<Faults>,
}

impl SegmentFile for FaultySegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let left = self.faults.space_left.load(Ordering::SeqCst);
        if (bytes.len() as u64) > left {
            // Like a real full disk: part of the write lands, then ENOSPC.
            self.inner.write_all(&bytes[..left as usize])?;
            self.faults.space_left.store(0, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.faults
            .space_left
            .store(left - bytes.len() as u64, Ordering::SeqCst);
        self.inner.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut stalled = self.faults.stalled.lock();
        if *stalled {
            self.faults.waiting.fetch_add(1, Ordering::SeqCst);
            while *stalled {
                self.faults.resumed.wait(&mut stalled);
            }
            self.faults.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        drop(stalled);
        let n = self.faults.syncs_until_failure.load(Ordering::SeqCst);
        if n == 1 {
            self.faults.syncs_until_failure.store(0, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if n > 1 {
            self.faults
                .syncs_until_failure
                .store(n - 1, Ordering::SeqCst);
        }
        self.inner.sync_data()
    }
}

impl JournalFs for FaultyFs {
    fn create_segment(&self, dir: &Path, number: u64) -> io::Result<Box<dyn SegmentFile>> {
        let inner = self.inner.create_segment(dir, number)?;
        Ok(Box::new(FaultySegment {
            inner,
            faults: Arc::clone(&self.faults),
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

//! The journal's file layer, behind traits so tests can inject faults
//! (a failing `fdatasync`, a full disk, a power cut) without touching the
//! real disk's behaviour.
//!
//! A power cut is the fault a `kill -9` test cannot show: after SIGKILL the
//! page cache still holds every write, so a missing `fdatasync` or a missing
//! sync of a directory goes unnoticed. [`FaultyFs::power_loss`] throws away
//! exactly what the kernel would be allowed to lose: bytes written but not
//! synced, and files and directories whose entry was never synced into
//! their parent.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::segment::segment_file_name;

/// Creates segment files and makes directory entries durable.
pub trait JournalFs: Send + Sync + std::fmt::Debug {
    /// Creates segment `number` in `dir`; it must not exist. Takes the
    /// segment `prepare_segment` made ahead, when one is ready.
    fn create_segment(&self, dir: &Path, number: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Makes the next segment ahead of time: `bytes` of zeros, written and
    /// synced, then renamed to `PREPARED_SEGMENT` and the directory synced.
    /// Returns whether one is ready (false: `stop` was set first, or this
    /// layer does not make them).
    fn prepare_segment(&self, dir: &Path, bytes: u64, stop: &AtomicBool) -> io::Result<bool>;
    /// Makes the directory's entries (new or removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates one directory (its parent exists); not yet durable.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Creates `dir` and every missing parent, and makes each new entry durable
/// by syncing the directory that holds it: a data directory made on first
/// start must still exist after a power cut, or the journal in it (and every
/// acknowledged change) goes with it.
pub fn create_dir_all_durably(fs: &dyn JournalFs, dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_all_durably(fs, parent)?;
    }
    match fs.create_dir(dir) {
        Ok(()) => {}
        // Another process made it first: its entry may still be unsynced,
        // so sync the parent all the same.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs.sync_dir(parent.unwrap_or(Path::new(".")))
}

/// An open segment being written from its start.
pub trait SegmentFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: the written bytes are on stable storage when it returns.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Whether it was made ahead (`prepare_segment`): its writes overwrite
    /// zeros already on disk instead of growing the file.
    fn prepared(&self) -> bool;
}

/// The segment `prepare_segment` made, waiting for `create_segment`. Not a
/// segment's name, so recovery never reads it as one.
pub const PREPARED_SEGMENT: &str = "next-segment.zeroed";
/// What `prepare_segment` writes before the rename (a crash may leave it;
/// the next preparation starts it again).
pub const PREPARING_SEGMENT: &str = "next-segment.zeroing";
/// Zeros per write while preparing.
const PREPARE_CHUNK: usize = 1 << 20;
/// Bytes of zeros written back at a time while preparing: one flush of a
/// whole segment would queue in front of the journal's own `fdatasync`.
const PREPARE_SYNC_EVERY: u64 = 1 << 20;
/// A pause after each flush, so the journal's own syncs find the disk idle.
const PREPARE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

/// Fills `file` with `bytes` zeros and syncs it; false if `stop` came first.
fn write_zeros(mut file: File, bytes: u64, stop: &AtomicBool) -> io::Result<bool> {
    let zeros = vec![0u8; PREPARE_CHUNK];
    let mut written = 0u64;
    while written < bytes {
        // Relaxed: a request to give up early; nothing is published by it.
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let n = (bytes - written).min(PREPARE_CHUNK as u64) as usize;
        file.write_all(&zeros[..n])?;
        written += n as u64;
        if written % PREPARE_SYNC_EVERY == 0 {
            file.sync_data()?;
            std::thread::sleep(PREPARE_PAUSE);
        }
    }
    // The zeros are durable before the name says the file is ready: a
    // segment whose zeros a power cut took would grow its file again.
    file.sync_all()?;
    Ok(true)
}

struct RealSegment {
    file: File,
    prepared: bool,
}

impl SegmentFile for RealSegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn prepared(&self) -> bool {
        self.prepared
    }
}

impl RealFs {
    /// Segment `number`: the prepared file renamed into place when there is
    /// one (written from offset 0, over its zeros), else a new empty file.
    fn create(&self, dir: &Path, number: u64) -> io::Result<RealSegment> {
        let path = dir.join(segment_file_name(number));
        // `rename` would replace a segment that exists: refuse, as
        // `create_new` does.
        if path.try_exists()? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("journal segment {} already exists", path.display()),
            ));
        }
        match std::fs::rename(dir.join(PREPARED_SEGMENT), &path) {
            Ok(()) => {
                let file = OpenOptions::new().write(true).open(&path)?;
                Ok(RealSegment {
                    file,
                    prepared: true,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)?;
                Ok(RealSegment {
                    file,
                    prepared: false,
                })
            }
            Err(e) => Err(e),
        }
    }
}

impl JournalFs for RealFs {
    fn create_segment(&self, dir: &Path, number: u64) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(self.create(dir, number)?))
    }

    fn prepare_segment(&self, dir: &Path, bytes: u64, stop: &AtomicBool) -> io::Result<bool> {
        let ready = dir.join(PREPARED_SEGMENT);
        if ready.try_exists()? {
            return Ok(true);
        }
        let making = dir.join(PREPARING_SEGMENT);
        let written = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&making)
            .and_then(|file| write_zeros(file, bytes, stop));
        match written {
            Ok(true) => {}
            // Stopped, or failed (a full disk): the half-made file goes, so
            // it holds no space the journal itself may need.
            Ok(false) | Err(_) => {
                let _ = std::fs::remove_file(&making);
                return written;
            }
        }
        std::fs::rename(&making, &ready)?;
        self.sync_dir(dir)?;
        Ok(true)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }
}

/// A file layer that fails on command: the `n`-th `sync_data` from now (1 =
/// the next one) fails with EIO, writes fail with "no space" once more
/// than `space` bytes have been written, syncs stall, or the power goes
/// (everything not yet synced is lost). For fault-injection tests.
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
    /// What a power cut may lose: every file and directory made through
    /// this layer, with what of it is durable.
    made: Mutex<Made>,
    /// The power is off: every call fails with EIO.
    off: AtomicBool,
    /// The `n`-th `sync_data` from now cuts the power instead (0 = never).
    syncs_until_power_loss: AtomicU64,
    /// Segments created from a made-ahead file.
    made_ahead: AtomicU64,
    /// Whether segments are made ahead (`prepare_segments`); off by
    /// default, so a test's syncs and segments do not depend on a thread's
    /// timing.
    prepares: AtomicBool,
}

#[derive(Debug, Default)]
struct Made {
    files: Vec<MadeFile>,
    /// Directories made, and whether their entry in the parent is synced.
    dirs: Vec<(PathBuf, bool)>,
}

#[derive(Debug)]
struct MadeFile {
    path: PathBuf,
    written: u64,
    synced: u64,
    entry_synced: bool,
    /// Made ahead: zeros lie past what was written, so a power cut leaves
    /// zeros (a hole) where unsynced writes were, not a shorter file.
    prepared: bool,
}

/// The unit a disk writes whole (`segment::SECTOR`).
const SECTOR: u64 = super::segment::SECTOR as u64;

/// What a power cut threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PowerLoss {
    /// Bytes written to files that survive, but never synced.
    pub unsynced_bytes: u64,
    /// Files and directories whose entry was never synced, removed.
    pub unsynced_entries: u64,
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
                made: Mutex::new(Made::default()),
                off: AtomicBool::new(false),
                syncs_until_power_loss: AtomicU64::new(0),
                made_ahead: AtomicU64::new(0),
                prepares: AtomicBool::new(false),
            }),
        }
    }

    /// Makes segments ahead of time from now on, as the real file system
    /// does.
    pub fn prepare_segments(&self) {
        self.faults.prepares.store(true, Ordering::SeqCst);
    }

    /// How many segments were created from a made-ahead file.
    pub fn segments_made_ahead(&self) -> u64 {
        self.faults.made_ahead.load(Ordering::SeqCst)
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

    /// The `n`-th `sync_data` from now (n >= 1) does not happen: the power
    /// goes at that moment instead, as [`FaultyFs::power_loss`].
    pub fn power_loss_at_sync(&self, n: u64) {
        self.faults
            .syncs_until_power_loss
            .store(n, Ordering::SeqCst);
    }

    /// Cuts the power now: every file made through this layer loses what
    /// was written but not synced, every file or directory whose entry was
    /// never synced into its parent disappears, and every later call fails
    /// with EIO (stalled syncs too). What is left on disk is what a machine
    /// that lost power could boot with.
    pub fn power_loss(&self) -> PowerLoss {
        self.faults.power_loss()
    }

    /// Whether the power has been cut.
    pub fn is_off(&self) -> bool {
        self.faults.off.load(Ordering::SeqCst)
    }
}

impl Faults {
    fn power_loss(&self) -> PowerLoss {
        let mut made = self.made.lock();
        if self.off.swap(true, Ordering::SeqCst) {
            return PowerLoss::default();
        }
        let mut lost = PowerLoss::default();
        let gone_dirs: Vec<PathBuf> = made
            .dirs
            .iter()
            .filter(|(_, synced)| !synced)
            .map(|(path, _)| path.clone())
            .collect();
        for file in &made.files {
            let gone = !file.entry_synced || gone_dirs.iter().any(|d| file.path.starts_with(d));
            if gone {
                lost.unsynced_entries += u64::from(std::fs::remove_file(&file.path).is_ok());
            } else if file.written > file.synced {
                lost.unsynced_bytes += file.written - file.synced;
                if file.prepared {
                    // An overwrite's sectors may reach the disk in any
                    // order. The harshest case: the earlier half of what
                    // was not synced is lost (zeros again, whole sectors),
                    // the later half landed, a hole followed by frames
                    // nobody was told of.
                    let half = file.synced + (file.written - file.synced) / 2;
                    let hole_end = half.next_multiple_of(SECTOR).min(file.written);
                    zero(&file.path, file.synced, hole_end);
                } else {
                    truncate(&file.path, file.synced);
                }
            }
        }
        for dir in &gone_dirs {
            lost.unsynced_entries += u64::from(std::fs::remove_dir_all(dir).is_ok());
        }
        made.files.clear();
        made.dirs.clear();
        drop(made);
        // A stalled sync wakes to find the power gone.
        *self.stalled.lock() = false;
        self.resumed.notify_all();
        lost
    }

    fn check_power(&self) -> io::Result<()> {
        if self.off.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    /// Counts a sync down to a planned power cut; true when it is now.
    fn power_goes_now(&self) -> bool {
        let n = self.syncs_until_power_loss.load(Ordering::SeqCst);
        if n > 1 {
            self.syncs_until_power_loss.store(n - 1, Ordering::SeqCst);
        }
        n == 1
    }
}

/// Cuts a file back to `len` bytes. A test fixture: a failure here means
/// the test's own files are not what it thinks, so it panics.
fn truncate(path: &Path, len: u64) {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("power loss: opening {}: {e}", path.display()));
    file.set_len(len)
        .unwrap_or_else(|e| panic!("power loss: truncating {}: {e}", path.display()));
}

/// Puts zeros back over `from..to` of a file made ahead. A test fixture,
/// as `truncate`.
fn zero(path: &Path, from: u64, to: u64) {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("power loss: opening {}: {e}", path.display()));
    let zeros = vec![0u8; (to - from) as usize];
    file.write_all_at(&zeros, from)
        .unwrap_or_else(|e| panic!("power loss: zeroing {}: {e}", path.display()));
}

impl Default for FaultyFs {
    fn default() -> FaultyFs {
        FaultyFs::new()
    }
}

struct FaultySegment {
    inner: Box<dyn SegmentFile>,
    faults: Arc<Faults>,
    path: PathBuf,
}

impl FaultySegment {
    fn track(&self, update: impl FnOnce(&mut MadeFile)) {
        let mut made = self.faults.made.lock();
        if let Some(file) = made.files.iter_mut().find(|f| f.path == self.path) {
            update(file);
        }
    }
}

impl SegmentFile for FaultySegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.faults.check_power()?;
        let (landed, written) = self.write_within_space(bytes);
        self.track(|file| file.written += landed);
        written
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.wait_while_stalled();
        self.faults.check_power()?;
        if self.faults.power_goes_now() {
            self.faults.power_loss();
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
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
        self.inner.sync_data()?;
        self.track(|file| file.synced = file.written);
        Ok(())
    }

    fn prepared(&self) -> bool {
        self.inner.prepared()
    }
}

impl FaultySegment {
    /// Writes what the space left allows; returns the bytes that landed.
    fn write_within_space(&mut self, bytes: &[u8]) -> (u64, io::Result<()>) {
        let left = self.faults.space_left.load(Ordering::SeqCst);
        if (bytes.len() as u64) > left {
            // Like a real full disk: part of the write lands, then ENOSPC.
            if let Err(e) = self.inner.write_all(&bytes[..left as usize]) {
                return (0, Err(e));
            }
            self.faults.space_left.store(0, Ordering::SeqCst);
            return (left, Err(io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        self.faults
            .space_left
            .store(left - bytes.len() as u64, Ordering::SeqCst);
        match self.inner.write_all(bytes) {
            Ok(()) => (bytes.len() as u64, Ok(())),
            Err(e) => (0, Err(e)),
        }
    }

    fn wait_while_stalled(&self) {
        let mut stalled = self.faults.stalled.lock();
        if *stalled {
            self.faults.waiting.fetch_add(1, Ordering::SeqCst);
            while *stalled {
                self.faults.resumed.wait(&mut stalled);
            }
            self.faults.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl JournalFs for FaultyFs {
    fn create_segment(&self, dir: &Path, number: u64) -> io::Result<Box<dyn SegmentFile>> {
        self.faults.check_power()?;
        let inner = self.inner.create(dir, number)?;
        if inner.prepared {
            self.faults.made_ahead.fetch_add(1, Ordering::SeqCst);
        }
        let path = dir.join(segment_file_name(number));
        self.faults.made.lock().files.push(MadeFile {
            path: path.clone(),
            written: 0,
            synced: 0,
            entry_synced: false,
            prepared: inner.prepared,
        });
        Ok(Box::new(FaultySegment {
            inner: Box::new(inner),
            faults: Arc::clone(&self.faults),
            path,
        }))
    }

    fn prepare_segment(&self, dir: &Path, bytes: u64, stop: &AtomicBool) -> io::Result<bool> {
        self.faults.check_power()?;
        if !self.faults.prepares.load(Ordering::SeqCst) {
            return Ok(false);
        }
        // Made and synced whole before it is renamed: a power cut loses at
        // most the half-made file, which the next preparation starts again.
        self.inner.prepare_segment(dir, bytes, stop)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.check_power()?;
        self.inner.sync_dir(dir)?;
        let mut made = self.faults.made.lock();
        for file in &mut made.files {
            if file.path.parent() == Some(dir) {
                file.entry_synced = true;
            }
        }
        for (path, synced) in &mut made.dirs {
            if path.parent() == Some(dir) {
                *synced = true;
            }
        }
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.check_power()?;
        self.inner.create_dir(dir)?;
        self.faults
            .made
            .lock()
            .dirs
            .push((dir.to_path_buf(), false));
        Ok(())
    }
}

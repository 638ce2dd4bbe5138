//! Which stripe (and which hold shard) the calling thread should use.
//!
//! The best hint is the CPU the thread runs on: two threads on two CPUs then
//! always use two different stripes, whatever their thread ids. On Linux
//! glibc answers `sched_getcpu` from the rseq area in a few nanoseconds. A
//! thread that migrates between reading the hint and using it merely shares
//! a stripe for one operation, which costs a CAS retry, never correctness.
//! Where the CPU is unknown we fall back to a per-thread number.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads that have asked for a fallback hint; touched once per thread.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_HINT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's stripe hint.
#[inline]
pub fn stripe_hint() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sched_getcpu` takes no arguments and only reads
        // thread-local kernel-provided data; it cannot violate memory safety.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu >= 0 {
            return cpu as usize;
        }
    }
    thread_hint()
}

fn thread_hint() -> usize {
    THREAD_HINT.with(|hint| {
        if hint.get() == usize::MAX {
            // Relaxed: only uniqueness matters, and fetch_add gives it.
            hint.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        hint.get()
    })
}

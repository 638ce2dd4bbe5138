//! The one place the engine gets its atomics and locks from.
//!
//! Under `--cfg loom` every atomic and lock here is loom's instrumented
//! version, so the models in `loom-tests/` explore the real engine code (the
//! real `StockCell`, `HoldTable`, `LimitLedger`, `IdempotencyTable`), not a
//! copy of it. Otherwise they are `std`'s atomics and `parking_lot`'s mutex.
//!
//! The mutex wrapper exists because the two libraries disagree on poisoning:
//! `parking_lot` has none, loom follows `std`. The engine never panics while
//! holding a lock on purpose, and a poisoned lock under loom is a test
//! failure reported by loom itself, so `lock` simply hands the guard back.

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::MutexGuard;
    pub(crate) use std::sync::atomic::{
        fence, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, Ordering,
    };
    pub(crate) use std::thread::yield_now;
    pub(crate) use std::thread_local;

    /// `std`'s `UnsafeCell` with loom's access API (`with`, `with_mut`), so
    /// the same code runs under both.
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[allow(dead_code)] // `with`/`with_mut` mirror loom's API for shared code
    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        #[inline]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Copies `bytes` into `cells` (same length).
    ///
    /// # Safety
    ///
    /// No other thread may access `cells` during the call.
    #[inline]
    pub(crate) unsafe fn copy_into_cells(cells: &[UnsafeCell<u8>], bytes: &[u8]) {
        debug_assert_eq!(cells.len(), bytes.len());
        // SAFETY: `UnsafeCell<u8>` is `repr(transparent)` over `u8` (ours
        // over std's), so the cells are `len` contiguous bytes; the caller
        // guarantees exclusive access.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), cells.as_ptr() as *mut u8, bytes.len())
        }
    }

    /// `len` zeroed byte cells, allocated as zeroed memory (`calloc`: the
    /// pages are not touched until used).
    pub(crate) fn zeroed_cells(len: usize) -> Box<[UnsafeCell<u8>]> {
        let bytes: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        // SAFETY: `UnsafeCell<u8>` is `repr(transparent)` over std's, which
        // is `repr(transparent)` over `u8`: same size, alignment and
        // validity, so the allocation can change element type.
        unsafe { Box::from_raw(Box::into_raw(bytes) as *mut [UnsafeCell<u8>]) }
    }

    /// Appends the bytes in `cells` to `out`.
    ///
    /// # Safety
    ///
    /// No other thread may write `cells` during the call.
    #[inline]
    pub(crate) unsafe fn copy_from_cells(cells: &[UnsafeCell<u8>], out: &mut Vec<u8>) {
        // SAFETY: as in `copy_into_cells`; the caller guarantees no writer.
        let bytes = unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const u8, cells.len()) };
        out.extend_from_slice(bytes);
    }

    /// A mutex with one `lock` signature under both loom and `parking_lot`.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{
        fence, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, Ordering,
    };
    pub(crate) use loom::sync::MutexGuard;
    pub(crate) use loom::thread::yield_now;
    pub(crate) use loom::thread_local;

    /// One loom cell per byte (loom models are small).
    pub(crate) fn zeroed_cells(len: usize) -> Box<[UnsafeCell<u8>]> {
        (0..len).map(|_| UnsafeCell::new(0)).collect()
    }

    /// Byte by byte, so loom checks every access.
    ///
    /// # Safety
    ///
    /// As in the std version: exclusive access (loom verifies it).
    pub(crate) unsafe fn copy_into_cells(cells: &[UnsafeCell<u8>], bytes: &[u8]) {
        for (cell, &byte) in cells.iter().zip(bytes) {
            // SAFETY: loom checks that no other access overlaps.
            cell.with_mut(|p| unsafe { *p = byte });
        }
    }

    /// # Safety
    ///
    /// As in the std version: no concurrent writer (loom verifies it).
    pub(crate) unsafe fn copy_from_cells(cells: &[UnsafeCell<u8>], out: &mut Vec<u8>) {
        for cell in cells {
            // SAFETY: loom checks that no write overlaps.
            out.push(cell.with(|p| unsafe { *p }));
        }
    }

    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Mutex<T> {
            Mutex::new(T::default())
        }
    }
}

pub(crate) use imp::*;

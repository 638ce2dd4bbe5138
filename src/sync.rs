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
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

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
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
    pub(crate) use loom::sync::MutexGuard;

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

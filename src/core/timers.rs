//! `TimerThread`: the background thread that expires holds, prunes old
//! records and forgets old idempotency keys.

use std::sync::{Arc, Condvar, Mutex as StdMutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::change::ChangeSink;
use super::engine::Engine;

/// A background thread that calls `Engine::run_timers` every `period` (and
/// at once again while work is left). Stops and joins on drop.
#[derive(Debug)]
pub struct TimerThread {
    stop: Arc<(StdMutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl TimerThread {
    pub fn spawn<S: ChangeSink + 'static>(
        engine: Arc<Engine<S>>,
        period: Duration,
    ) -> std::io::Result<TimerThread> {
        let stop = Arc::new((StdMutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("hotstock-timers".into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                let mut stopped = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while !*stopped {
                    drop(stopped);
                    let report = engine.run_timers();
                    stopped = lock
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if report.more || *stopped {
                        continue;
                    }
                    stopped = wake
                        .wait_timeout(stopped, period)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })?;
        Ok(TimerThread {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for TimerThread {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(handle) = self.handle.take() {
            // A panic in the timer thread was already reported by the panic
            // hook; there is nothing more to do with it while dropping.
            let _ = handle.join();
        }
    }
}

//! Engine tests that need its internals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{Engine, EngineConfig, Order};
use crate::core::change::{Change, ChangeSink};
use crate::core::clock::SystemClock;
use crate::core::types::Line;

/// A sink whose `make_room` waits until released, as the journal's does
/// while the disk is stalled.
#[derive(Default)]
struct StalledSink {
    waiting: AtomicBool,
    released: Mutex<bool>,
    release: Condvar,
}

impl ChangeSink for StalledSink {
    fn failure(&self) -> Option<Box<str>> {
        None
    }

    fn make_room(&self, _: usize) {
        self.waiting.store(true, Ordering::SeqCst);
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.release.wait(released).unwrap();
        }
    }

    fn record(&self, _: usize, _: &Change<'_>) {}
}

/// Bug: a reservation with an idempotency key waited for journal room
/// inside the key's shard lock (`make_room` ran inside
/// `IdempotencyTable::run`), so a stalled disk held that lock and every
/// request with a key in the same shard queued behind it.
#[test]
fn a_keyed_reservation_waits_for_room_outside_the_key_lock() {
    let sink = Arc::new(StalledSink::default());
    let engine = Engine::with_sink(
        EngineConfig::default(),
        Arc::new(SystemClock),
        Arc::clone(&sink),
    )
    .unwrap();
    // Creating the SKU passes make_room too: let it through, then stall.
    *sink.released.lock().unwrap() = true;
    let (sku, _) = engine.put_sku("tee", 10, None, None).unwrap();
    *sink.released.lock().unwrap() = false;
    sink.waiting.store(false, Ordering::SeqCst);
    std::thread::scope(|s| {
        let reserve = s.spawn(|| {
            let lines = [Line { sku, quantity: 1 }];
            engine.reserve(&Order {
                lines: &lines,
                idempotency_key: Some("checkout-1"),
                ..Order::default()
            })
        });
        while !sink.waiting.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let locked = engine.idempotency.is_locked_for("checkout-1");
        *sink.released.lock().unwrap() = true;
        sink.release.notify_all();
        assert!(reserve.join().unwrap().is_ok());
        assert!(
            !locked,
            "the key's shard lock was held while waiting for room"
        );
    });
}

//! Bug: journal backpressure slept while engine locks were held. When the
//! disk stalls, the writer falls behind and a lane fills; an append that
//! does not fit waits for the writer. A cancel appended under its hold
//! shard's lock, so the wait held that lock, and every request on the shard
//! (a plain read included) stalled behind one slow disk. Now the engine
//! waits for room (`ChangeSink::make_room`) before it takes the lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hotstock::durable::journal::fs::FaultyFs;
use hotstock::durable::journal::{Durability, Journal, JournalConfig};
use hotstock::{Engine, EngineConfig, HoldStatus, Line, Order, SystemClock};

/// Pins the calling thread (and the threads it spawns later) to CPU 0, so
/// every append goes to lane 0 and every hold to shard 0.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within
    // it; sched_setaffinity reads `size` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_setaffinity(0, size, &set), 0, "pin to CPU 0");
    }
}

/// Waits until `done` holds; after a minute (a deadlock detector, not a
/// timing assertion) lets the disk go, so stuck threads can finish, and
/// fails the test.
fn eventually(fs: &FaultyFs, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            fs.resume();
            panic!("never happened: {what}");
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_stalled_disk_does_not_stall_requests_that_need_no_journal_room() {
    let dir = std::env::temp_dir().join(format!("hotstock-backpressure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fs = FaultyFs::new();
    let mut config = JournalConfig::new(&dir, Durability::Async);
    config.lane_bytes = 8192;
    let journal = Journal::start(config, Arc::new(fs.clone()), 0, Box::new(|_| {})).unwrap();
    let journal = Arc::new(journal);
    let engine = Engine::with_sink(
        EngineConfig::default(),
        Arc::new(SystemClock),
        Arc::clone(&journal),
    )
    .unwrap();
    pin_to_cpu0();
    let (sku, _) = engine.put_sku("tee", 100_000, None, None).unwrap();
    let lines = [Line { sku, quantity: 1 }];
    let hold = engine
        .reserve(&Order {
            lines: &lines,
            ..Order::default()
        })
        .unwrap();
    journal.flush().unwrap();

    // The disk stops: the writer blocks in the next batch's fdatasync.
    fs.stall();
    engine.sell(sku, 1).unwrap();
    eventually(&fs, "the writer waits on the stalled disk", || {
        fs.stalled_syncs() == 1
    });
    // Fill lane 0 (a sale takes 17 bytes of it) until a hold event (49
    // bytes) no longer fits.
    while journal.lane_room(0) >= 2 * 17 {
        engine.sell(sku, 1).unwrap();
    }
    assert!(journal.lane_room(0) < 49);

    std::thread::scope(|s| {
        // A cancel must append; it waits for the writer.
        let cancel = s.spawn(|| engine.cancel(hold.id));
        eventually(&fs, "the cancel waits for journal room", || {
            journal.stats().waiting_for_room == 1
        });
        // A read of the same hold needs no room and must not wait for the
        // cancel's: before the fix it blocked on the shard lock the
        // waiting cancel held.
        let read = s.spawn(|| engine.reservation(hold.id));
        eventually(&fs, "a read answers while the cancel waits", || {
            read.is_finished()
        });
        let read = read.join().unwrap().unwrap();
        assert_eq!(read.status, HoldStatus::Held);
        assert!(!cancel.is_finished(), "the cancel is still waiting");
        fs.resume();
        assert_eq!(cancel.join().unwrap(), Ok(HoldStatus::Cancelled));
    });
    journal.flush().unwrap();
    assert!(engine.sku_document(sku).unwrap().is_conserved());
    journal.shutdown().unwrap();
    drop(engine);
    std::fs::remove_dir_all(&dir).unwrap();
}

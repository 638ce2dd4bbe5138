//! Power loss, not only `kill -9`. After SIGKILL the page cache still holds
//! every write, so `tests/crash.rs` cannot see a missing `fdatasync` or a
//! missing sync of a directory. Here the journal writes through
//! `FaultyFs`, whose `power_loss` throws away everything a machine that
//! lost power may lose (bytes not synced, entries not synced into their
//! directory); then the engine ends as a crash would (`DurableEngine::crash`:
//! no flush, no last checkpoint) and a fresh process recovers from what is
//! left. Every acknowledged change must be there, and nothing that was not
//! acknowledged.

mod common;
use common::TempDir;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hotstock::durable::journal::fs::{FaultyFs, RealFs};
use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{HoldStatus, Line, ManualClock, Order, ReservationId};

const T0: u64 = 1_700_000_000_000;

fn config(dir: &Path) -> DurableConfig {
    let mut config = DurableConfig::new(dir, Durability::Sync);
    // No checkpoint unless the test asks: recovery replays the journal.
    config.checkpoint_interval = Duration::from_secs(3600);
    // Small segments, so the workload rotates through several files (each
    // rotation creates a file whose entry must be synced).
    config.segment_bytes = 512;
    config
}

fn open_faulty(dir: &Path, fs: &FaultyFs) -> DurableEngine {
    let clock = Arc::new(ManualClock::new(T0));
    DurableEngine::open_with(config(dir), Arc::new(fs.clone()), clock)
        .expect("open")
        .0
}

fn reopen(dir: &Path) -> DurableEngine {
    reopen_with(config(dir))
}

fn reopen_with(config: DurableConfig) -> DurableEngine {
    let clock = Arc::new(ManualClock::new(T0));
    DurableEngine::open_with(config, Arc::new(RealFs), clock)
        .expect("recovery after the power loss")
        .0
}

/// Waits until the writer has written its batch and hangs in the stalled
/// sync (so the batch is in the page cache, never synced).
fn wait_for_the_stalled_sync(fs: &FaultyFs) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fs.stalled_syncs() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never reached the sync"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_written_but_unsynced_batch_is_lost_and_only_it() {
    let dir = TempDir::new("unsynced");
    let fs = FaultyFs::new();
    let durable = open_faulty(&dir.0, &fs);
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 10, None, None).unwrap();
    engine.sell(sku, 2).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();

    // The disk stops answering syncs: the next batch is written (into the
    // page cache) and never synced.
    fs.stall();
    engine.sell(sku, 3).unwrap();
    wait_for_the_stalled_sync(&fs);
    let lost = fs.power_loss();
    assert!(lost.unsynced_bytes > 0, "{lost:?}");
    assert!(engine.wait_durable(engine.durability_ticket()).is_err());
    durable.crash();

    let recovered = reopen(&dir.0);
    let engine = recovered.engine();
    let doc = engine.sku_document(engine.sku("tee").unwrap()).unwrap();
    assert_eq!(doc.sold, 2, "exactly the acknowledged sale: {doc:?}");
    assert!(doc.is_conserved());
}

#[test]
fn a_data_directory_made_on_first_start_survives_a_power_loss() {
    let dir = TempDir::new("fresh");
    // Two levels that do not exist yet: both entries must be synced.
    let data_dir = dir.0.join("shop").join("data");
    std::fs::create_dir_all(&dir.0).unwrap();
    let fs = FaultyFs::new();
    let durable = open_faulty(&data_dir, &fs);
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 10, None, None).unwrap();
    engine.sell(sku, 4).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    fs.power_loss();
    durable.crash();

    let recovered = reopen(&data_dir);
    let engine = recovered.engine();
    let sku = engine
        .sku("tee")
        .expect("the acknowledged SKU survives the power loss");
    assert_eq!(engine.sku_document(sku).unwrap().sold, 4);
}

/// What the workload was told was durable.
#[derive(Default)]
struct Acknowledged {
    received: u64,
    sold: u64,
    reservations: HashMap<ReservationId, HoldStatus>,
}

/// One step of a deterministic workload; returns false once the journal
/// refuses (the power is gone). Each change is acknowledged only when
/// `wait_durable` says so, as the HTTP `sync` mode does.
fn step(durable: &DurableEngine, i: u64, acked: &mut Acknowledged) -> bool {
    let engine = durable.engine();
    let sku = engine.sku("tee").unwrap();
    let lines = [Line { sku, quantity: 1 }];
    let open: Vec<ReservationId> = acked
        .reservations
        .iter()
        .filter(|(_, s)| **s == HoldStatus::Held)
        .map(|(id, _)| *id)
        .collect();
    let change = match i % 5 {
        0 => engine.restock(sku, 3).map(|_| Change::Received(3)),
        1 => engine.sell(sku, 1).map(|()| Change::Sold(1)),
        2 | 3 => engine
            .reserve(&Order {
                lines: &lines,
                ..Order::default()
            })
            .map(|r| Change::Status(r.id, HoldStatus::Held)),
        _ => match open.first() {
            Some(&id) if i % 2 == 0 => engine
                .confirm(id)
                .map(|_| Change::Status(id, HoldStatus::Confirmed)),
            Some(&id) => engine
                .cancel(id)
                .map(|_| Change::Status(id, HoldStatus::Cancelled)),
            None => engine.sell(sku, 1).map(|()| Change::Sold(1)),
        },
    };
    let Ok(change) = change else {
        return false;
    };
    if engine.wait_durable(engine.durability_ticket()).is_err() {
        return false;
    }
    match change {
        Change::Received(n) => acked.received += n,
        Change::Sold(n) => acked.sold += n,
        Change::Status(id, status) => {
            if status == HoldStatus::Confirmed {
                acked.sold += 1;
            }
            acked.reservations.insert(id, status);
        }
    }
    true
}

enum Change {
    Received(u64),
    Sold(u64),
    Status(ReservationId, HoldStatus),
}

#[test]
fn power_lost_at_every_sync_of_a_workload_keeps_exactly_what_was_acknowledged() {
    power_lost_at_every_sync(false);
}

/// The same with segments made ahead (zeros written and synced before the
/// segment is used): a power cut leaves zeros, not a shorter file, where
/// the unsynced writes were, and recovery must read them as the end.
#[test]
fn power_lost_at_every_sync_with_segments_made_ahead_keeps_exactly_what_was_acknowledged() {
    let made_ahead = power_lost_at_every_sync(true);
    assert!(made_ahead > 0, "no segment was ever made ahead");
}

/// Returns how many segments were created from made-ahead files.
fn power_lost_at_every_sync(made_ahead: bool) -> u64 {
    let mut segments_made_ahead = 0;
    // The first syncs belong to opening (segment header, directories), the
    // later ones to batches and rotations of 512-byte segments.
    for sync in 1..=60 {
        let dir = TempDir::new("every-sync");
        let fs = FaultyFs::new();
        if made_ahead {
            fs.prepare_segments();
        }
        let durable = open_faulty(&dir.0, &fs);
        let engine = durable.engine().clone();
        let mut acked = Acknowledged::default();
        engine.put_sku("tee", 5, None, None).unwrap();
        engine.wait_durable(engine.durability_ticket()).unwrap();
        acked.received = 5;
        fs.power_loss_at_sync(sync);
        let mut i = 0;
        while step(&durable, i, &mut acked) {
            i += 1;
            assert!(i < 10_000, "sync {sync}: the power never went");
        }
        assert!(fs.is_off(), "sync {sync}: a step failed with the power on");
        segments_made_ahead += fs.segments_made_ahead();
        durable.crash();

        let recovered = reopen(&dir.0);
        let engine = recovered.engine();
        let doc = engine.sku_document(engine.sku("tee").unwrap()).unwrap();
        assert_eq!(
            (doc.received, doc.sold),
            (acked.received, acked.sold),
            "sync {sync}: counts after recovery: {doc:?}"
        );
        assert!(doc.is_conserved(), "sync {sync}: {doc:?}");
        for (&id, &status) in &acked.reservations {
            let record = engine.reservation(id).unwrap_or_else(|e| {
                panic!("sync {sync}: acknowledged reservation {id:?} lost: {e}")
            });
            assert_eq!(record.status, status, "sync {sync}: {id:?}");
        }
        let mut recovered_ids = 0;
        engine.for_each_reservation(|_| recovered_ids += 1);
        assert_eq!(
            recovered_ids,
            acked.reservations.len(),
            "sync {sync}: a reservation nobody was told about came back"
        );
    }
    segments_made_ahead
}

/// On the real file system: once a segment has 32 KiB (half of 64), the
/// next is made ahead, the journal moves into it, and a crash's recovery
/// reads its zeros as the end.
#[test]
fn segments_made_ahead_on_the_real_file_system_are_used_and_recovered() {
    let dir = TempDir::new("made-ahead");
    let mut config = config(&dir.0);
    config.segment_bytes = 64 << 10;
    let open = |config: DurableConfig| {
        let clock = Arc::new(ManualClock::new(T0));
        DurableEngine::open_with(config, Arc::new(RealFs), clock)
            .expect("open")
            .0
    };
    let durable = open(config.clone());
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 1_000_000, None, None).unwrap();
    let journal = dir.0.join("journal");
    let made_ahead = |journal: &Path| {
        std::fs::read_dir(journal).unwrap().any(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            name.ends_with(".hsj") && entry.metadata().unwrap().len() == 64 << 10
        })
    };
    let mut sold = 0;
    while !made_ahead(&journal) {
        assert!(sold < 200_000, "no segment was ever made ahead");
        for _ in 0..500 {
            engine.sell(sku, 1).unwrap();
        }
        engine.wait_durable(engine.durability_ticket()).unwrap();
        sold += 500;
    }
    durable.crash();
    let recovered = open(config);
    let engine = recovered.engine();
    let doc = engine.sku_document(engine.sku("tee").unwrap()).unwrap();
    assert_eq!(doc.sold, sold, "every acknowledged sale: {doc:?}");
}

/// A large unsynced batch in a segment made ahead, and the power goes: the
/// fault layer keeps the later half of its sectors and loses the earlier
/// (a hole followed by frames nobody was told of). Recovery must read that
/// as a torn tail and keep exactly what was acknowledged.
#[test]
fn a_hole_in_an_unsynced_batch_over_zeros_is_a_torn_tail() {
    let dir = TempDir::new("hole");
    let fs = FaultyFs::new();
    fs.prepare_segments();
    let mut config = config(&dir.0);
    config.segment_bytes = 1 << 20;
    // The writer cuts only when asked (`wait_durable`), so the unsynced
    // batch below holds all 500 sales, not what a timer found.
    config.flush_interval = Duration::from_secs(3600);
    let clock = Arc::new(ManualClock::new(T0));
    let durable = DurableEngine::open_with(config.clone(), Arc::new(fs.clone()), clock)
        .expect("open")
        .0;
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 10_000_000, None, None).unwrap();
    // Acknowledged sales until the journal writes into a segment made
    // ahead (half a segment in, the next is made; the one after moves in).
    let mut sold = 0;
    while fs.segments_made_ahead() == 0 {
        assert!(sold < 2_000_000, "no segment was ever made ahead");
        for _ in 0..1_000 {
            engine.sell(sku, 1).unwrap();
        }
        engine.wait_durable(engine.durability_ticket()).unwrap();
        sold += 1_000;
    }
    // One more acknowledged batch there, then one that is written and
    // never synced: large enough to span many sectors.
    engine.sell(sku, 1).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    sold += 1;
    fs.stall();
    for _ in 0..500 {
        engine.sell(sku, 1).unwrap();
    }
    let waiter = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.wait_durable(engine.durability_ticket()))
    };
    wait_for_the_stalled_sync(&fs);
    let lost = fs.power_loss();
    assert!(lost.unsynced_bytes > 4096, "{lost:?}");
    assert!(waiter.join().unwrap().is_err(), "never acknowledged");
    durable.crash();
    let recovered = reopen_with(config);
    let engine = recovered.engine();
    let doc = engine.sku_document(engine.sku("tee").unwrap()).unwrap();
    assert_eq!(doc.sold, sold, "exactly the acknowledged sales: {doc:?}");
}

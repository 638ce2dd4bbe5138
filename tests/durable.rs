//! Journal, store and recovery: round trips and every fault the design
//! names. A "crash" here is a copy of the data directory taken while the
//! engine runs (what `kill -9` leaves behind); `tests/crash.rs` kills real
//! processes.

mod common;
use common::{copy_dir, TempDir};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hotstock::durable::journal::fs::FaultyFs;
use hotstock::durable::journal::Durability;
use hotstock::durable::{salvage, DurableConfig, DurableEngine, OpenError};
use hotstock::{
    BackorderRule, ChangeSink, Engine, EngineError, HoldDocument, HoldStatus, Line, LocationPut,
    ManualClock, Order, RoomConfig, SaleWindow, SkuDocument, SkuPut, StockLevel,
};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn config(dir: &Path) -> DurableConfig {
    let mut config = DurableConfig::new(dir, Durability::Sync);
    // Checkpoints only when a test asks, so journal replay is exercised.
    config.checkpoint_interval = Duration::from_secs(3600);
    config.segment_bytes = 4096;
    config
}

fn open(dir: &Path) -> (DurableEngine, hotstock::durable::RecoveryReport) {
    open_at(dir, Arc::new(ManualClock::new(T0)))
}

fn open_at(
    dir: &Path,
    clock: Arc<ManualClock>,
) -> (DurableEngine, hotstock::durable::RecoveryReport) {
    DurableEngine::open_with(
        config(dir),
        Arc::new(hotstock::durable::journal::fs::RealFs),
        clock,
    )
    .unwrap()
}

/// Every SKU document and every reservation record, in a stable order.
/// Every SKU document, every reservation record and every SKU's backorder
/// queue (in fill order), in a stable order.
fn state<S: ChangeSink>(engine: &Engine<S>) -> State {
    let skus = engine.skus_after(None, usize::MAX);
    let mut holds = Vec::new();
    engine.for_each_reservation(|doc| holds.push(doc));
    holds.sort_by_key(|d| d.id);
    let queues = (skus.iter())
        .map(|sku| {
            let queue = engine.backorder_queue(sku.id).unwrap();
            // Tickets are an order, not a value to keep: compare the order.
            queue.iter().map(|o| (o.id, o.units, o.sold)).collect()
        })
        .collect();
    // A lease's sequence is the order of its grant in this run (restored
    // leases are numbered in id order): compare the book by id.
    let mut leases: Vec<_> = (engine.leases().into_iter())
        .map(|l| (l.id, l.sku, l.granted, l.returning))
        .collect();
    leases.sort();
    (skus, holds, queues, leases)
}

type State = (
    Vec<SkuDocument>,
    Vec<HoldDocument>,
    Vec<Vec<(hotstock::ReservationId, u32, bool)>>,
    Vec<(Box<str>, hotstock::SkuId, u64, Option<u64>)>,
);

/// A short history touching every event kind.
fn history<S: ChangeSink>(engine: &Engine<S>) {
    let (a, _) = engine.put_sku("a", 10, None, None).unwrap();
    let (b, _) = engine.put_sku("b", 5, Some(Some(2)), None).unwrap();
    engine.sell(a, 2).unwrap();
    let held = engine
        .reserve(&Order {
            lines: &[Line {
                sku: a,
                quantity: 1,
            }],
            ..Order::default()
        })
        .unwrap();
    let cart = [
        Line {
            sku: a,
            quantity: 1,
        },
        Line {
            sku: b,
            quantity: 2,
        },
    ];
    let bought = engine
        .reserve(&Order {
            lines: &cart,
            customer: Some("ann"),
            confirm: true,
            ..Order::default()
        })
        .unwrap();
    let cancelled = engine
        .reserve(&Order {
            lines: &[Line {
                sku: b,
                quantity: 1,
            }],
            customer: Some("bo"),
            ..Order::default()
        })
        .unwrap();
    engine.cancel(cancelled.id).unwrap();
    engine.confirm(held.id).unwrap();
    engine.refund(bought.id).unwrap();
    engine.adjust(a, -1).unwrap();
    engine.set_limit(a, Some(4)).unwrap();
    engine.purchase(b, 1, Some("ann")).unwrap();
    engine
        .reserve(&Order {
            lines: &[Line {
                sku: a,
                quantity: 2,
            }],
            customer: Some("bo"),
            ..Order::default()
        })
        .unwrap();
    // Leases from a cluster's escrow: one closed, one returning, one open.
    engine.grant_lease("leased", "n1:leased:1", 4).unwrap();
    engine.grant_lease("leased", "n1:leased:2", 3).unwrap();
    engine.grant_lease("leased", "n1:leased:3", 2).unwrap();
    let leased = engine.sku("leased").unwrap();
    engine.sell(leased, 1).unwrap();
    let returns = engine.return_leased(leased, 5).unwrap();
    assert_eq!(returns.len(), 2, "the two oldest leases give back 4 + 1");
    engine.close_lease(&returns[0].lease).unwrap();
}

/// Sells one unit at a time, waiting for durability every `every` sales so
/// the journal sees many batches (and rotates its small segments).
fn sell_in_batches(durable: &DurableEngine, sku: hotstock::SkuId, units: u32, every: u32) {
    let engine = durable.engine();
    for i in 1..=units {
        engine.sell(sku, 1).unwrap();
        if i % every == 0 {
            engine.wait_durable(engine.durability_ticket()).unwrap();
        }
    }
}

#[test]
fn clean_close_and_reopen_keeps_every_document() {
    let dir = TempDir::new("close");
    let (durable, report) = open(&dir.0);
    assert_eq!(report.events_replayed, 0);
    history(durable.engine());
    let before = state(durable.engine());
    durable.close().unwrap();
    let (durable, report) = open(&dir.0);
    assert_eq!(state(durable.engine()), before);
    assert_eq!(
        report.events_replayed, 0,
        "close wrote a checkpoint covering everything"
    );
    let a = durable.engine().sku("a").unwrap();
    assert_eq!(
        durable
            .engine()
            .customer_units(durable.engine().sku("b").unwrap(), "ann"),
        1
    );
    assert!(durable.engine().sku_document(a).unwrap().is_conserved());
}

#[test]
fn crash_without_checkpoint_recovers_from_the_journal_alone() {
    let dir = TempDir::new("crash");
    let snapshot = TempDir::new("crash-copy");
    let (durable, _) = open(&dir.0);
    history(durable.engine());
    durable.journal().flush().unwrap();
    let before = state(durable.engine());
    copy_dir(&dir.0, &snapshot.0);
    drop(durable);
    let (recovered, report) = open(&snapshot.0);
    assert!(report.events_replayed >= 14, "{report:?}");
    assert_eq!(state(recovered.engine()), before);
    // The ledger came back too: ann has 1 unit of b; her limit is 2.
    let b = recovered.engine().sku("b").unwrap();
    assert_eq!(recovered.engine().customer_units(b, "ann"), 1);
    recovered.engine().purchase(b, 1, Some("ann")).unwrap();
    assert!(matches!(
        recovered.engine().purchase(b, 1, Some("ann")),
        Err(EngineError::LimitExceeded { .. })
    ));
}

#[test]
fn checkpoint_then_more_changes_replays_only_the_tail_and_deletes_old_segments() {
    let dir = TempDir::new("tail");
    let snapshot = TempDir::new("tail-copy");
    let (durable, _) = open(&dir.0);
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("hot", 100_000, None, None).unwrap();
    sell_in_batches(&durable, sku, 2_000, 50);
    let segments_before = std::fs::read_dir(dir.0.join("journal")).unwrap().count();
    assert!(
        segments_before > 3,
        "4 KiB segments must rotate: {segments_before}"
    );
    durable.checkpoint().unwrap();
    let segments_after = std::fs::read_dir(dir.0.join("journal")).unwrap().count();
    assert!(
        segments_after < segments_before,
        "covered segments are deleted"
    );
    for _ in 0..10 {
        engine.sell(sku, 1).unwrap();
    }
    durable.journal().flush().unwrap();
    let before = state(&engine);
    copy_dir(&dir.0, &snapshot.0);
    drop(durable);
    let (recovered, report) = open(&snapshot.0);
    assert_eq!(report.events_replayed, 10);
    assert_eq!(state(recovered.engine()), before);
}

#[test]
fn expired_while_down_gives_units_back_on_start() {
    let dir = TempDir::new("expire");
    let clock = Arc::new(ManualClock::new(T0));
    let (durable, _) = open_at(&dir.0, clock.clone());
    let (sku, _) = durable.engine().put_sku("tee", 3, None, None).unwrap();
    let hold = durable
        .engine()
        .reserve(&Order {
            lines: &[Line { sku, quantity: 2 }],
            ttl_ms: Some(1_000),
            ..Order::default()
        })
        .unwrap();
    durable.close().unwrap();
    clock.advance(5_000);
    let (durable, report) = open_at(&dir.0, clock);
    assert_eq!(report.expired_on_start, 1);
    assert_eq!(
        durable.engine().reservation(hold.id).unwrap().status,
        HoldStatus::Expired
    );
    assert_eq!(durable.engine().sku_document(sku).unwrap().available, 3);
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

#[test]
fn torn_last_frame_is_truncated_and_reported() {
    let dir = TempDir::new("torn");
    let (durable, _) = open(&dir.0);
    history(durable.engine());
    durable.journal().flush().unwrap();
    let before = state(durable.engine());
    let snapshot = TempDir::new("torn-copy");
    copy_dir(&dir.0, &snapshot.0);
    drop(durable);
    // Half a frame at the end: a length, a checksum, a few payload bytes.
    let last = last_segment(&snapshot.0);
    let mut bytes = std::fs::read(&last).unwrap();
    let intact = bytes.len() as u64;
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 4, 9, 9]);
    std::fs::write(&last, &bytes).unwrap();
    let (recovered, report) = open(&snapshot.0);
    let (_, torn) = report.torn_tail.expect("torn tail reported");
    assert_eq!((torn.offset, torn.dropped), (intact, 11));
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        intact,
        "truncated on disk"
    );
    assert_eq!(state(recovered.engine()), before);
}

/// A power cut right after a new segment's directory entry reached the
/// disk and before its header did leaves an empty last segment (a segment
/// that grows) or one all zeros (a segment made ahead). Nothing in it was
/// acknowledged: its header is synced before any frame is written. The
/// start after it must work, and so must the start after the next crash,
/// when that segment is no longer the last.
#[test]
fn a_segment_whose_header_never_landed_survives_this_crash_and_the_next() {
    for contents in [Vec::new(), vec![0u8; 64 << 10]] {
        let dir = TempDir::new("torn-header");
        let (durable, _) = open(&dir.0);
        history(durable.engine());
        durable.journal().flush().unwrap();
        let before = state(durable.engine());
        durable.crash();
        let last = last_segment(&dir.0);
        let name = last.file_name().unwrap().to_str().unwrap();
        let number = u64::from_str_radix(name.trim_end_matches(".hsj"), 16).unwrap();
        let next = dir
            .0
            .join("journal")
            .join(format!("{:016x}.hsj", number + 1));
        std::fs::write(&next, &contents).unwrap();

        let (recovered, _) = open(&dir.0);
        assert_eq!(
            state(recovered.engine()),
            before,
            "{} bytes",
            contents.len()
        );
        recovered.engine().put_sku("after", 5, None, None).unwrap();
        recovered.journal().flush().unwrap();
        let after = state(recovered.engine());
        recovered.crash();
        let (again, _) = open(&dir.0);
        assert_eq!(state(again.engine()), after, "{} bytes", contents.len());
    }
}

/// A batch's frames are the lanes concatenated in CPU order, so a sale on
/// CPU 0 can precede, within one batch, the restock on CPU 1 that it took
/// from. A torn write that kept the sale and lost the restock left a state
/// the engine never passed through (more sold than received), and recovery
/// refused to start on the SKU. The marker at the start of each batch lets
/// recovery drop a last batch that did not reach the disk whole.
#[test]
fn a_batch_torn_after_a_sale_and_before_its_restock_is_dropped_whole() {
    use hotstock::durable::event::{Event, LimitChange};
    use hotstock::durable::journal::segment::{append_frame, BatchMarker};
    let dir = TempDir::new("torn-batch");
    let (durable, _) = open(&dir.0);
    let (sku, _) = durable.engine().put_sku("hot", 0, None, None).unwrap();
    durable.journal().flush().unwrap();
    let before = state(durable.engine());
    drop(durable);
    // The batch as the writer would lay it out: the sale's lane first.
    let mut frames = Vec::new();
    append_frame(&mut frames, |out| Event::Sell { sku, units: 1 }.encode(out));
    let sale_end = frames.len();
    let restock = Event::Operator {
        sku,
        delta: 1,
        version: 2,
        limit: LimitChange::Unchanged,
        safety_stock: None,
    };
    append_frame(&mut frames, |out| restock.encode(out));
    let last = last_segment(&dir.0);
    let mut bytes = std::fs::read(&last).unwrap();
    let intact = bytes.len() as u64;
    bytes.extend_from_slice(&BatchMarker::frame(T0, 2, frames.len() as u32));
    // The write tore after the sale's frame.
    bytes.extend_from_slice(&frames[..sale_end]);
    std::fs::write(&last, &bytes).unwrap();
    let (recovered, report) = open(&dir.0);
    let (_, torn) = report.torn_tail.expect("torn batch reported");
    assert_eq!(torn.offset, intact, "cut at the batch's marker");
    assert_eq!(std::fs::metadata(&last).unwrap().len(), intact);
    assert_eq!(state(recovered.engine()), before);
}

#[test]
fn flipped_byte_mid_journal_refuses_to_start_until_salvaged() {
    let dir = TempDir::new("flip");
    let (durable, _) = open(&dir.0);
    let (sku, _) = durable.engine().put_sku("hot", 1_000, None, None).unwrap();
    // Batches of 5: salvage keeps whole batches, so the damage must not
    // land in the one that created the SKU.
    durable.journal().flush().unwrap();
    for round in 0..10 {
        for _ in 0..5 {
            durable.engine().sell(sku, 1).unwrap();
        }
        durable.journal().flush().unwrap();
        assert_eq!(durable.journal().stats().batches, round + 2);
    }
    let snapshot = TempDir::new("flip-copy");
    copy_dir(&dir.0, &snapshot.0);
    drop(durable);
    let last = last_segment(&snapshot.0);
    let mut bytes = std::fs::read(&last).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&last, &bytes).unwrap();
    match DurableEngine::open(config(&snapshot.0)) {
        Err(OpenError::Corrupt(c)) => {
            assert!(c.offset as usize <= middle && c.offset > 0, "{c}");
            assert!(c.file.ends_with(".hsj"));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let dropped = salvage(&snapshot.0).unwrap();
    assert!(!dropped.is_empty());
    let (recovered, _) = open(&snapshot.0);
    let doc = recovered
        .engine()
        .sku_document(recovered.engine().sku("hot").unwrap())
        .unwrap();
    assert!(
        doc.sold < 50 && doc.sold % 5 == 0 && doc.is_conserved(),
        "{doc:?}"
    );
}

#[test]
fn missing_segment_refuses_to_start() {
    let dir = TempDir::new("missing");
    let (durable, _) = open(&dir.0);
    let (sku, _) = durable.engine().put_sku("hot", 10_000, None, None).unwrap();
    sell_in_batches(&durable, sku, 1_000, 50);
    let snapshot = TempDir::new("missing-copy");
    copy_dir(&dir.0, &snapshot.0);
    drop(durable);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(snapshot.0.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    assert!(segments.len() >= 3);
    std::fs::remove_file(&segments[1]).unwrap();
    match DurableEngine::open(config(&snapshot.0)) {
        Err(OpenError::MissingSegment { missing: 1, .. }) => {}
        other => panic!("expected a missing segment, got {other:?}"),
    }
}

#[test]
fn deleted_store_is_rebuilt_from_a_whole_journal_but_refused_after_pruning() {
    let dir = TempDir::new("store");
    let (durable, _) = open(&dir.0);
    history(durable.engine());
    let before = state(durable.engine());
    durable.journal().flush().unwrap();
    let snapshot = TempDir::new("store-copy");
    copy_dir(&dir.0, &snapshot.0);
    // Whole journal, no store: rebuilt exactly.
    std::fs::remove_file(snapshot.0.join("hotstock.sqlite")).unwrap();
    let (rebuilt, _) = open(&snapshot.0);
    assert_eq!(state(rebuilt.engine()), before);
    drop(rebuilt);
    // After a checkpoint deleted early segments, a lost store cannot be
    // rebuilt: refuse rather than start with wrong counts.
    let (sku, _) = durable
        .engine()
        .put_sku("bulk", 100_000, None, None)
        .unwrap();
    sell_in_batches(&durable, sku, 1_000, 50);
    durable.checkpoint().unwrap();
    durable.close().unwrap();
    for file in [
        "hotstock.sqlite",
        "hotstock.sqlite-wal",
        "hotstock.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(dir.0.join(file));
    }
    match DurableEngine::open(config(&dir.0)) {
        Err(OpenError::StoreBehindJournal { .. }) => {}
        other => panic!("expected StoreBehindJournal, got {other:?}"),
    }
}

#[test]
fn fsync_failure_stops_acknowledging_and_acknowledged_changes_survive() {
    let dir = TempDir::new("fsync");
    let fs = FaultyFs::new();
    let clock = Arc::new(ManualClock::new(T0));
    let (durable, _) =
        DurableEngine::open_with(config(&dir.0), Arc::new(fs.clone()), clock).unwrap();
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 10, None, None).unwrap();
    engine.sell(sku, 1).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    fs.fail_sync_in(1);
    engine.sell(sku, 1).unwrap();
    let refused = engine.wait_durable(engine.durability_ticket());
    assert!(
        refused.is_err(),
        "the failed batch must not be acknowledged"
    );
    assert!(matches!(
        engine.sell(sku, 1),
        Err(EngineError::StorageFailed { .. })
    ));
    assert!(matches!(
        engine.put_sku("other", 1, None, None),
        Err(EngineError::StorageFailed { .. })
    ));
    drop(durable);
    let (recovered, _) = open(&dir.0);
    let doc = recovered
        .engine()
        .sku_document(recovered.engine().sku("tee").unwrap())
        .unwrap();
    // The acknowledged sale is there; the unacknowledged one may or may not
    // be (its bytes may have reached the disk): never more than that.
    assert!((1..=2).contains(&doc.sold), "{doc:?}");
    assert!(doc.is_conserved());
}

#[test]
fn disk_full_fails_cleanly_and_recovers_the_acknowledged_prefix() {
    let dir = TempDir::new("full");
    let fs = FaultyFs::new();
    let clock = Arc::new(ManualClock::new(T0));
    let (durable, _) =
        DurableEngine::open_with(config(&dir.0), Arc::new(fs.clone()), clock).unwrap();
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 100, None, None).unwrap();
    engine.sell(sku, 3).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    fs.disk_full_after(10);
    engine.sell(sku, 4).unwrap();
    assert!(engine.wait_durable(engine.durability_ticket()).is_err());
    drop(durable);
    let (recovered, report) = open(&dir.0);
    assert!(
        report.torn_tail.is_some(),
        "the partial write is a torn tail: {report:?}"
    );
    let doc = recovered
        .engine()
        .sku_document(recovered.engine().sku("tee").unwrap())
        .unwrap();
    assert_eq!(doc.sold, 3);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = TempDir::new("lock");
    let (_durable, _) = open(&dir.0);
    match DurableEngine::open(config(&dir.0)) {
        Err(OpenError::Locked(_)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[derive(Clone, Debug)]
enum Step {
    Put(usize, u64, Option<u32>),
    Sell(usize, u32),
    Reserve(Vec<(usize, u32)>, Option<usize>, bool),
    Confirm(usize),
    Cancel(usize),
    Refund(usize),
    Extend(usize, u64),
    /// Units per line (by position in the record) to confirm or refund.
    ConfirmPart(usize, [u32; 3]),
    RefundPart(usize, [u32; 3]),
    /// A refund of part (or, with no units, of the rest) under key `k{n}`.
    RefundKeyed(usize, [u32; 3], u8),
    Adjust(usize, i64),
    LowStock(usize, Option<u32>),
    /// Units on hand (`None`: keep them) and a safety stock (`None`: keep it).
    PutOnHand(usize, Option<u64>, Option<u64>),
    /// Kit "kit" (line index 3 in `Reserve`) of these components.
    DefineKit(Vec<(usize, u32)>),
    /// Units SKU `s` may sell past zero.
    Backorder(usize, u64),
    /// Location `l` ("a", "b", "c") of SKU "w" (kept at locations): units
    /// for sale and a priority (`None`: keep them).
    PutLocation(usize, Option<u64>, Option<u32>),
    /// A lease of `n` units of SKU `s` from a cluster's escrow.
    GrantLease(usize, u64),
    /// `n` units of SKU `s` given back to the escrow.
    ReturnLeased(usize, u64),
    /// SKU `s`'s sale window: each bound none, long past or far ahead (so
    /// later orders of it are refused, or not, by the window).
    SaleWindow(usize, u8, u8),
    /// SKU `s`'s waiting room: off (0) or one of two settings.
    WaitingRoom(usize, u8),
    /// The `i`-th returning lease closed by the escrow.
    CloseLease(usize),
    Checkpoint,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..30u64, prop::option::of(1..3u32)).prop_map(|(s, n, l)| Step::Put(s, n, l)),
        (0..3usize, 1..3u32).prop_map(|(s, n)| Step::Sell(s, n)),
        (
            // 4: "w" allocated; 5: "w" at location "a"; 6: "w" split.
            prop::collection::vec((0..7usize, 1..3u32), 1..3),
            prop::option::of(0..2usize),
            any::<bool>()
        )
            .prop_map(|(lines, c, confirm)| Step::Reserve(lines, c, confirm)),
        prop::collection::vec((0..3usize, 1..3u32), 1..3).prop_map(Step::DefineKit),
        (0..3usize, 0..8u64).prop_map(|(s, n)| Step::Backorder(s, n)),
        (
            0..3usize,
            prop::option::of(0..6u64),
            prop::option::of(0..3u32)
        )
            .prop_map(|(l, n, p)| Step::PutLocation(l, n, p)),
        (0..3usize, 1..6u64).prop_map(|(s, n)| Step::GrantLease(s, n)),
        (0..3usize, 1..8u64).prop_map(|(s, n)| Step::ReturnLeased(s, n)),
        (0..4usize, 0..3u8, 0..3u8).prop_map(|(s, a, b)| Step::SaleWindow(s, a, b)),
        (0..4usize, 0..3u8).prop_map(|(s, r)| Step::WaitingRoom(s, r)),
        any::<usize>().prop_map(Step::CloseLease),
        any::<usize>().prop_map(Step::Confirm),
        any::<usize>().prop_map(Step::Cancel),
        any::<usize>().prop_map(Step::Refund),
        (any::<usize>(), 1..600_000u64).prop_map(|(i, ttl)| Step::Extend(i, ttl)),
        (any::<usize>(), [0..3u32, 0..3, 0..3]).prop_map(|(i, u)| Step::ConfirmPart(i, u)),
        (any::<usize>(), [0..3u32, 0..3, 0..3]).prop_map(|(i, u)| Step::RefundPart(i, u)),
        (any::<usize>(), [0..3u32, 0..3, 0..3], 0..3u8)
            .prop_map(|(i, u, k)| Step::RefundKeyed(i, u, k)),
        (0..3usize, -5..5i64).prop_map(|(s, d)| Step::Adjust(s, d)),
        (0..3usize, prop::option::of(1..10u32)).prop_map(|(s, t)| Step::LowStock(s, t)),
        (
            0..3usize,
            prop::option::of(0..40u64),
            prop::option::of(0..8u64)
        )
            .prop_map(|(s, n, k)| Step::PutOnHand(s, n, k)),
        Just(Step::Checkpoint),
    ]
}

fn replay(durable: &DurableEngine, steps: &[Step]) {
    let engine = durable.engine();
    let names = ["x", "y", "z", "kit", "w"];
    let mut ids = Vec::new();
    let mut leases = 0u32;
    for step in steps {
        let sku = |s: usize| match s {
            5 => engine.sku("w").and_then(|w| engine.location(w, "a")).ok(),
            6 => engine.sku("w").ok(),
            s => engine.sku(names[s]).ok(),
        };
        let pick = |i: usize, ids: &Vec<hotstock::ReservationId>| {
            (!ids.is_empty()).then(|| ids[i % ids.len()])
        };
        // Refusals are part of the history; only the state is compared.
        match step {
            Step::Put(s, n, l) => drop(engine.put_sku(names[*s], *n, Some(*l), None)),
            Step::Sell(s, n) => drop(sku(*s).map(|id| engine.sell(id, *n))),
            Step::Reserve(lines, c, confirm) => {
                let mut seen = Vec::new();
                let mut split = 0u32;
                let mut picked: Vec<Line> = Vec::new();
                for &(s, quantity) in lines {
                    let Some(id) = sku(s) else { continue };
                    if seen.contains(&id) {
                        continue;
                    }
                    seen.push(id);
                    split |= u32::from(s == 6) << picked.len();
                    picked.push(Line { sku: id, quantity });
                }
                let lines = picked;
                let customer = c.map(|c| ["ann", "bo"][c]);
                let order = Order {
                    lines: &lines,
                    customer,
                    confirm: *confirm,
                    split,
                    // Shorter than an extension may give, so extensions
                    // move deadlines (the clock stands still).
                    ttl_ms: Some(60_000),
                    ..Order::default()
                };
                if let Ok(receipt) = engine.reserve(&order) {
                    ids.push(receipt.id);
                }
            }
            Step::Confirm(i) => drop(pick(*i, &ids).map(|id| engine.confirm(id))),
            Step::Cancel(i) => drop(pick(*i, &ids).map(|id| engine.cancel(id))),
            Step::Refund(i) => drop(pick(*i, &ids).map(|id| engine.refund(id))),
            Step::Extend(i, ttl) => drop(pick(*i, &ids).map(|id| engine.extend(id, *ttl))),
            Step::ConfirmPart(i, units)
            | Step::RefundPart(i, units)
            | Step::RefundKeyed(i, units, _) => {
                let Some(id) = pick(*i, &ids) else { continue };
                let record = engine.reservation(id).unwrap();
                let lines: Vec<Line> = (record.lines.iter().zip(units))
                    .map(|(line, &quantity)| Line {
                        sku: line.sku,
                        quantity,
                    })
                    .collect();
                drop(match step {
                    Step::ConfirmPart(..) => engine.confirm_lines(id, &lines),
                    Step::RefundKeyed(_, [0, 0, 0], k) => {
                        engine.refund_once(id, None, &format!("k{k}"))
                    }
                    Step::RefundKeyed(.., k) => {
                        engine.refund_once(id, Some(&lines), &format!("k{k}"))
                    }
                    _ => engine.refund_lines(id, &lines),
                });
            }
            Step::Adjust(s, d) => drop(sku(*s).map(|id| engine.adjust(id, *d))),
            Step::LowStock(s, t) => drop(sku(*s).map(|id| engine.set_low_stock(id, *t))),
            Step::DefineKit(components) => {
                let lines: Option<Vec<Line>> = (components.iter())
                    .map(|&(s, quantity)| sku(s).map(|sku| Line { sku, quantity }))
                    .collect();
                drop(lines.map(|lines| engine.define_kit("kit", &lines)))
            }
            Step::PutOnHand(s, on_hand, safety_stock) => {
                let put = SkuPut {
                    level: on_hand.map(StockLevel::OnHand),
                    safety_stock: *safety_stock,
                    ..SkuPut::default()
                };
                drop(engine.put_stock(names[*s], &put))
            }
            Step::SaleWindow(s, starts, ends) => {
                // 0: open-ended; 1: long past; 2: far ahead.
                let bound = |b: u8, offset: u64| match b {
                    0 => None,
                    1 => Some(offset),
                    _ => Some((1 << 60) + offset),
                };
                let window = SaleWindow {
                    starts_at_ms: bound(*starts, 0),
                    ends_at_ms: bound(*ends, 1),
                };
                drop(sku(*s).map(|id| engine.set_sale_window(id, window)))
            }
            Step::WaitingRoom(s, setting) => {
                let room = (*setting > 0).then(|| RoomConfig {
                    admit_per_s: u32::from(*setting) * 100,
                    overbook_milli: 1_000 + u32::from(*setting) * 250,
                    admission_ttl_ms: 30_000,
                });
                drop(sku(*s).map(|id| engine.set_waiting_room(id, room)))
            }
            Step::Backorder(s, limit) => {
                let rule = BackorderRule {
                    limit: *limit,
                    until_ms: None,
                };
                drop(sku(*s).map(|id| engine.set_backorder(id, rule)))
            }
            Step::PutLocation(l, available, priority) => {
                let put = LocationPut {
                    stock: SkuPut {
                        level: available.map(StockLevel::Available),
                        ..SkuPut::default()
                    },
                    priority: *priority,
                };
                drop(engine.put_location("w", ["a", "b", "c"][*l], &put))
            }
            Step::GrantLease(s, n) => {
                leases += 1;
                drop(engine.grant_lease(names[*s], &format!("n1:{}:{leases}", names[*s]), *n))
            }
            Step::ReturnLeased(s, n) => drop(sku(*s).map(|id| engine.return_leased(id, *n))),
            Step::CloseLease(i) => {
                let returning: Vec<_> = (engine.leases().into_iter())
                    .filter(|l| l.returning.is_some())
                    .collect();
                if !returning.is_empty() {
                    drop(engine.close_lease(&returning[*i % returning.len()].id));
                }
            }
            Step::Checkpoint => drop(durable.checkpoint().unwrap()),
        }
    }
}

/// Backorders come back from the journal alone and from the store: the
/// owed units, the SKU's count, and the fill order (a restock after the
/// restart fills the older reservation first).
#[test]
fn backorders_survive_a_crash_and_a_clean_close_in_fill_order() {
    let dir = TempDir::new("backorders");
    let snapshot = TempDir::new("backorders-copy");
    let (durable, _) = open(&dir.0);
    let engine = durable.engine().clone();
    let (pre, _) = engine.put_sku("pre", 1, None, None).unwrap();
    let rule = BackorderRule {
        limit: 10,
        until_ms: Some(T0 + 60_000),
    };
    engine.set_backorder(pre, rule).unwrap();
    let lines = |quantity| [Line { sku: pre, quantity }];
    let reserve = |quantity, confirm| {
        let lines = lines(quantity);
        let order = Order {
            lines: &lines,
            confirm,
            ..Order::default()
        };
        engine.reserve(&order).unwrap().id
    };
    let first = reserve(3, false);
    durable.checkpoint().unwrap();
    let second = reserve(2, true);
    engine.restock(pre, 1).unwrap();
    let before = state(&*engine);
    assert_eq!(engine.sku_document(pre).unwrap().backordered, 3);
    engine.wait_durable(engine.durability_ticket()).unwrap();
    copy_dir(&dir.0, &snapshot.0);
    drop(engine);
    durable.close().unwrap();
    for data_dir in [&snapshot.0, &dir.0] {
        let (recovered, _) = open(data_dir);
        let engine = recovered.engine();
        assert_eq!(state(&**engine), before);
        let doc = engine.sku_document(pre).unwrap();
        assert_eq!(
            (doc.backorder_limit, doc.backorder_until_ms),
            (10, Some(T0 + 60_000))
        );
        engine.restock(pre, 1).unwrap();
        assert!(engine.reservation(first).unwrap().owed.is_empty());
        assert_eq!(engine.reservation(second).unwrap().owed, vec![2]);
        // A new backorder after the restart queues behind the old ones.
        let third = engine
            .reserve(&Order {
                lines: &lines(1),
                ..Order::default()
            })
            .unwrap()
            .id;
        engine.restock(pre, 2).unwrap();
        assert!(engine.reservation(second).unwrap().owed.is_empty());
        assert_eq!(engine.reservation(third).unwrap().owed, vec![1]);
        drop(recovered);
    }
}

/// Replays `steps`, then checks that recovery from a crash snapshot and
/// after a clean close gives back the same state.
fn assert_round_trips(name: &str, steps: &[Step]) {
    let dir = TempDir::new(name);
    let snapshot = TempDir::new(&format!("{name}-copy"));
    let (durable, _) = open(&dir.0);
    replay(&durable, steps);
    durable.journal().flush().unwrap();
    let before = state(durable.engine());
    copy_dir(&dir.0, &snapshot.0);
    durable.close().unwrap();
    let (crashed, _) = open(&snapshot.0);
    assert_eq!(state(crashed.engine()), before);
    drop(crashed);
    let (closed, _) = open(&dir.0);
    assert_eq!(state(closed.engine()), before);
}

/// Found by the round-trip proptest in CI: a reservation whose backorder
/// was filled in full read as backordered (owed 0) live, and as a plain
/// one after recovery, which keeps no queue entry once it is filled.
#[test]
fn a_filled_backorder_round_trips() {
    let steps = [
        Step::Put(0, 0, None),
        Step::Backorder(0, 2),
        Step::Put(0, 0, None),
        Step::Reserve(vec![(0, 1)], None, false),
        Step::Adjust(0, 1),
    ];
    assert_round_trips("adjust-fill", &steps);
}

/// Found by the round-trip proptest: confirming a reservation whose
/// backorder was filled in full journaled an owed-units event with no
/// queue ticket, which recovery rightly refuses to decode, so the server
/// could not restart.
#[test]
fn a_filled_backorder_confirms_and_recovers() {
    let steps = [
        Step::PutOnHand(1, None, None),
        Step::Backorder(1, 2),
        Step::Reserve(vec![(1, 1)], None, false),
        Step::Adjust(1, 1),
        Step::Confirm(0),
    ];
    assert_round_trips("filled-confirm", &steps);
}

/// A waiting room's settings come back from the journal alone and from
/// the store after a checkpoint, and so does turning it off (fails
/// without `restore_waiting_room`: the SKU comes back without its room).
#[test]
fn a_waiting_room_round_trips() {
    let on = [Step::Put(0, 5, None), Step::WaitingRoom(0, 1)];
    assert_round_trips("room-journal", &on);
    let changed = [
        Step::Put(0, 5, None),
        Step::WaitingRoom(0, 1),
        Step::Checkpoint,
        Step::WaitingRoom(0, 2),
        Step::Put(1, 5, None),
        Step::WaitingRoom(1, 1),
        Step::Checkpoint,
        Step::WaitingRoom(1, 0),
    ];
    assert_round_trips("room-store", &changed);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any history → journal (+ checkpoints) → recovery gives identical SKU
    /// documents and reservation records, both from a crash snapshot and
    /// after a clean close.
    #[test]
    fn any_history_round_trips_through_recovery(steps in prop::collection::vec(step(), 1..60)) {
        let dir = TempDir::new("prop");
        let snapshot = TempDir::new("prop-copy");
        let (durable, _) = open(&dir.0);
        replay(&durable, &steps);
        durable.journal().flush().unwrap();
        let before = state(durable.engine());
        copy_dir(&dir.0, &snapshot.0);
        durable.close().unwrap();
        let (crashed, _) = open(&snapshot.0);
        prop_assert_eq!(&state(crashed.engine()), &before);
        drop(crashed);
        let (closed, _) = open(&dir.0);
        prop_assert_eq!(&state(closed.engine()), &before);
    }
}

#[test]
fn idempotent_outcomes_survive_a_restart() {
    let dir = TempDir::new("idem");
    let snapshot = TempDir::new("idem-copy");
    let (durable, _) = open(&dir.0);
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 5, None, None).unwrap();
    let lines = [Line { sku, quantity: 2 }];
    let order = Order {
        lines: &lines,
        confirm: true,
        idempotency_key: Some("checkout-1"),
        ..Order::default()
    };
    let first = engine.reserve(&order).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    copy_dir(&dir.0, &snapshot.0);
    drop(engine);
    durable.close().unwrap();
    // From the journal alone (crash before any checkpoint), and from the
    // store after a clean close: the retry gets the original receipt.
    for data_dir in [&snapshot.0, &dir.0] {
        let (recovered, _) = open(data_dir);
        let engine = recovered.engine();
        let retry = engine.reserve(&order).unwrap();
        assert_eq!(
            (retry.id, retry.status, retry.replayed),
            (first.id, HoldStatus::Confirmed, true)
        );
        assert_eq!(
            engine.sku_document(sku).unwrap().sold,
            2,
            "stock taken once"
        );
        let other = Order {
            lines: &[Line { sku, quantity: 1 }],
            idempotency_key: Some("checkout-1"),
            ..Order::default()
        };
        assert_eq!(
            engine.reserve(&other),
            Err(EngineError::IdempotencyKeyReused)
        );
    }
}

/// A refund of part retried with its key refunds once, before and after
/// a crash and a clean close; the key with other lines is refused. A key
/// whose refund ended the sale (status refunded) comes back too.
#[test]
fn a_keyed_refund_of_part_gives_back_once_across_restarts() {
    let dir = TempDir::new("refund-key");
    let snapshot = TempDir::new("refund-key-copy");
    let (durable, _) = open(&dir.0);
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 5, None, None).unwrap();
    let sale = engine.purchase(sku, 3, None).unwrap();
    let (one, two) = ([Line { sku, quantity: 1 }], [Line { sku, quantity: 2 }]);
    let refund = |lines: &[Line], key| engine.refund_once(sale.id, Some(lines), key);
    assert_eq!(refund(&one, "refund-7"), Ok(HoldStatus::Confirmed));
    assert_eq!(
        refund(&one, "refund-7"),
        Ok(HoldStatus::Confirmed),
        "a retry"
    );
    assert_eq!(engine.sku_document(sku).unwrap().sold, 2, "given back once");
    assert_eq!(refund(&two, "refund-8"), Ok(HoldStatus::Refunded));
    engine.wait_durable(engine.durability_ticket()).unwrap();
    copy_dir(&dir.0, &snapshot.0);
    drop(engine);
    durable.close().unwrap();
    for data_dir in [&snapshot.0, &dir.0] {
        let (recovered, _) = open(data_dir);
        let engine = recovered.engine();
        let again = |lines: &[Line], key| engine.refund_once(sale.id, Some(lines), key);
        assert_eq!(again(&one, "refund-7"), Ok(HoldStatus::Confirmed));
        assert_eq!(again(&two, "refund-8"), Ok(HoldStatus::Refunded));
        let doc = engine.sku_document(sku).unwrap();
        assert_eq!((doc.sold, doc.available), (0, 5), "each given back once");
        assert_eq!(
            again(&two, "refund-7"),
            Err(EngineError::IdempotencyKeyReused)
        );
    }
}

/// A store that refuses checkpoints for a while (another connection holds
/// its write lock) is counted: failures, failures in a row, and the time of
/// the last success, which `/metrics` turns into an age to alert on. Once
/// the store takes writes again the next checkpoint catches up.
#[test]
fn checkpoints_refused_by_a_locked_store_are_counted_and_caught_up() {
    let dir = TempDir::new("ckpt-stats");
    let clock = Arc::new(ManualClock::new(T0));
    let (durable, _) = open_at(&dir.0, clock.clone());
    let stats = durable.checkpoint_stats();
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 10, None, None).unwrap();
    durable.checkpoint().unwrap();
    let first = stats.read();
    assert_eq!((first.succeeded, first.failed, first.failing), (1, 0, 0));
    assert_eq!(first.last_success_ms, T0);

    let blocker = rusqlite::Connection::open(dir.0.join("hotstock.sqlite")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    engine.sell(sku, 2).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    clock.advance(5_000);
    assert!(durable.checkpoint().is_err());
    assert!(durable.checkpoint().is_err());
    let refused = stats.read();
    assert_eq!(
        (refused.succeeded, refused.failed, refused.failing),
        (1, 2, 2)
    );
    assert_eq!(refused.last_success_ms, T0, "no success since");

    blocker.execute_batch("ROLLBACK").unwrap();
    durable.checkpoint().unwrap();
    let caught_up = stats.read();
    assert_eq!(
        (caught_up.succeeded, caught_up.failed, caught_up.failing),
        (2, 2, 0)
    );
    assert_eq!(caught_up.last_success_ms, T0 + 5_000);
    let sold: i64 = blocker
        .query_row(
            "SELECT sold FROM hotstock_skus WHERE name = 'tee'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        sold, 2,
        "the refused checkpoints' changes reached the store"
    );
}

/// Reservations the store holds, as rows and as chunks' entries, by a
/// second connection.
fn stored_reservations(dir: &Path) -> i64 {
    let connection = rusqlite::Connection::open(dir.join("hotstock.sqlite")).unwrap();
    connection
        .query_row(
            "SELECT (SELECT count(*) FROM hotstock_reservations)
                  + (SELECT COALESCE(SUM(entries), 0) FROM hotstock_reservation_chunks)",
            [],
            |row| row.get(0),
        )
        .unwrap()
}

/// The store forgets ended reservations past their retention, but only on
/// the hourly prune (a scan) or at a clean close, never on every checkpoint.
#[test]
fn store_prunes_old_reservations_hourly_and_at_close() {
    use hotstock::core::limits::RESERVATION_PRUNE_INTERVAL_MS;
    let dir = TempDir::new("prune-cadence");
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = config(&dir.0);
    config.engine.ended_retention_ms = 1_000;
    let open = |clock: &Arc<ManualClock>| {
        DurableEngine::open_with(
            config.clone(),
            Arc::new(hotstock::durable::journal::fs::RealFs),
            clock.clone(),
        )
        .unwrap()
        .0
    };
    let durable = open(&clock);
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 10, None, None).unwrap();
    let cancel_one = || {
        let hold = engine
            .reserve(&Order {
                lines: &[Line { sku, quantity: 1 }],
                ttl_ms: Some(60_000),
                ..Order::default()
            })
            .unwrap();
        engine.cancel(hold.id).unwrap();
        // The checkpoint copies what the journal made durable.
        engine.wait_durable(engine.durability_ticket()).unwrap();
    };
    cancel_one();
    durable.checkpoint().unwrap();
    assert_eq!(stored_reservations(&dir.0), 1);
    clock.advance(10_000);
    durable.checkpoint().unwrap();
    assert_eq!(
        stored_reservations(&dir.0),
        1,
        "past its retention, but the hourly prune is not due"
    );
    clock.advance(RESERVATION_PRUNE_INTERVAL_MS);
    durable.checkpoint().unwrap();
    assert_eq!(stored_reservations(&dir.0), 0, "the hourly prune ran");
    cancel_one();
    clock.advance(10_000);
    durable.checkpoint().unwrap();
    assert_eq!(stored_reservations(&dir.0), 1);
    drop(engine);
    durable.close().unwrap();
    assert_eq!(stored_reservations(&dir.0), 0, "a clean close prunes");
}

/// Bug: a restarted server handed out ids it had handed out before. Slots
/// past the highest restored record restarted at generation 0, so once an
/// old record was pruned (from memory and from the store), the next run's
/// first reservation got its id, and a late refund or an idempotent replay
/// of the old order touched the new one.
#[test]
fn reservation_ids_never_repeat_across_restarts() {
    let dir = TempDir::new("ids-across-restarts");
    let clock = Arc::new(ManualClock::new(T0));
    let mut issued = std::collections::HashSet::new();
    for run in 0..3 {
        let (durable, _) = open_at(&dir.0, clock.clone());
        let engine = durable.engine();
        let sku = match engine.sku("tee") {
            Ok(sku) => sku,
            Err(_) => engine.put_sku("tee", 10, None, None).unwrap().0,
        };
        let lines = [Line { sku, quantity: 1 }];
        let order = Order {
            lines: &lines,
            ..Order::default()
        };
        let receipt = engine.reserve(&order).unwrap();
        assert!(
            issued.insert(receipt.id),
            "run {run} issued {} again",
            receipt.id
        );
        engine.cancel(receipt.id).unwrap();
        // Past the retention of ended records: pruned from memory now, and
        // from the store at close.
        clock.advance(engine.config().ended_retention_ms + 1);
        assert_eq!(engine.run_timers().pruned_reservations, 1);
        durable.close().unwrap();
    }
}

/// Bug: out-of-range numbers in the SQLite store were cast without a check
/// (a negative version became 18446744073709551615). A damaged store is an
/// error that names the table and the row.
#[test]
fn a_damaged_sqlite_store_is_an_error_naming_the_row() {
    let dir = TempDir::new("damaged-sqlite");
    let (durable, _) = open(&dir.0);
    durable.engine().put_sku("tee", 10, None, None).unwrap();
    durable.close().unwrap();
    let store = rusqlite::Connection::open(dir.0.join("hotstock.sqlite")).unwrap();
    store
        .execute("UPDATE hotstock_skus SET version = -1", [])
        .unwrap();
    drop(store);
    match DurableEngine::open(config(&dir.0)) {
        Err(OpenError::Store(error)) => {
            let message = error.to_string();
            assert!(
                message.contains("hotstock_skus (id 0)") && message.contains("version -1"),
                "{message}"
            );
        }
        other => panic!("a negative version opened: {other:?}"),
    }
}

/// An extension is journaled: after a crash (journal only) and after a
/// clean close (store rows), the hold keeps its extended deadline and its
/// count, still expires at that deadline, and the count's cap still holds.
#[test]
fn an_extended_hold_recovers_its_deadline_and_its_count() {
    let dir = TempDir::new("extend");
    let snapshot = TempDir::new("extend-copy");
    let clock = Arc::new(ManualClock::new(T0));
    let (durable, _) = open_at(&dir.0, clock.clone());
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", 5, None, None).unwrap();
    let held = engine
        .reserve(&Order {
            lines: &[Line { sku, quantity: 2 }],
            ttl_ms: Some(1_000),
            ..Order::default()
        })
        .unwrap();
    clock.advance(500);
    let max = engine.config().max_extensions;
    for n in 1..max {
        let extension = engine.extend(held.id, 60_000 * u64::from(n)).unwrap();
        assert_eq!(extension.extensions, n);
    }
    let deadline = T0 + 500 + 60_000 * u64::from(max - 1);
    engine.wait_durable(engine.durability_ticket()).unwrap();
    copy_dir(&dir.0, &snapshot.0);
    drop(engine);
    durable.close().unwrap();
    for data_dir in [&snapshot.0, &dir.0] {
        let clock = Arc::new(ManualClock::new(T0 + 1_000));
        let (recovered, _) = open_at(data_dir, clock.clone());
        let engine = recovered.engine();
        let record = engine.reservation(held.id).unwrap();
        assert_eq!(
            (record.status, record.deadline_ms, record.extensions),
            (HoldStatus::Held, deadline, max - 1)
        );
        // One extension left, then the cap refuses.
        let last = engine.extend(held.id, 60_000 * u64::from(max)).unwrap();
        assert_eq!(last.extensions_left, 0);
        assert!(matches!(
            engine.extend(held.id, 600_000),
            Err(EngineError::ExtensionRefused { .. })
        ));
        clock.set(last.expires_at_ms);
        assert_eq!(engine.run_timers().expired, 1);
        assert_eq!(engine.sku_document(sku).unwrap().available, 5);
    }
}

/// A sale confirmed in part and refunded in part is journaled with its
/// amounts: after a crash (journal only) and a clean close (store rows) the
/// record shows what was held, sold and refunded, the counts and limits
/// match, and what is left can still be refunded, once.
#[test]
fn partial_confirms_and_refunds_recover_exactly() {
    let dir = TempDir::new("partial");
    let snapshot = TempDir::new("partial-copy");
    let (durable, _) = open(&dir.0);
    let engine = durable.engine().clone();
    let (tee, _) = engine.put_sku("tee", 10, Some(Some(6)), None).unwrap();
    let (mug, _) = engine.put_sku("mug", 10, None, None).unwrap();
    let cart = [
        Line {
            sku: tee,
            quantity: 4,
        },
        Line {
            sku: mug,
            quantity: 3,
        },
    ];
    let order = Order {
        lines: &cart,
        customer: Some("ann"),
        ..Order::default()
    };
    let held = engine.reserve(&order).unwrap();
    let sold = [
        Line {
            sku: tee,
            quantity: 3,
        },
        Line {
            sku: mug,
            quantity: 1,
        },
    ];
    engine.confirm_lines(held.id, &sold).unwrap();
    let back = [Line {
        sku: tee,
        quantity: 1,
    }];
    engine.refund_lines(held.id, &back).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    let before = state(&engine);
    copy_dir(&dir.0, &snapshot.0);
    drop(engine);
    durable.close().unwrap();
    for data_dir in [&snapshot.0, &dir.0] {
        let (recovered, _) = open(data_dir);
        let engine = recovered.engine();
        assert_eq!(state(engine), before);
        let record = engine.reservation(held.id).unwrap();
        let amounts: Vec<(u32, u32)> = record
            .amounts
            .iter()
            .map(|a| (a.confirmed, a.refunded))
            .collect();
        assert_eq!(
            (record.status, amounts),
            (HoldStatus::Confirmed, vec![(3, 1), (1, 0)])
        );
        let tee_doc = engine.sku_document(tee).unwrap();
        assert_eq!((tee_doc.available, tee_doc.sold), (8, 2));
        assert_eq!(engine.customer_units(tee, "ann"), 2);
        assert_eq!(engine.refund(held.id), Ok(HoldStatus::Refunded));
        assert_eq!(engine.sku_document(tee).unwrap().available, 10);
        assert_eq!(engine.sku_document(mug).unwrap().available, 10);
        assert_eq!(engine.customer_units(tee, "ann"), 0);
    }
}

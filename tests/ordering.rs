//! The rule that keeps recovery exact (`src/core/change.rs`): an engine
//! change is recorded before it becomes visible, or under the lock that
//! publishes it. Before this rule, a restock credited its units, released
//! the SKU's lock and only then appended its event, so a purchase of a
//! fresh unit could be durable in an earlier journal batch than the restock
//! (recovery then found `sold > received`); and a hold was visible to
//! cancels before its creation was appended.

mod common;

use std::sync::{Arc, Mutex, OnceLock, Weak};

use hotstock::core::change::HoldChange;
use hotstock::{
    Change, ChangeSink, Engine, EngineConfig, HoldStatus, Line, Order, ReservationId, SkuId,
    SystemClock,
};

/// Notes, for every operator change, how many units buyers could see at
/// the moment it was recorded.
#[derive(Default)]
struct Probe {
    engine: OnceLock<Weak<Engine<Arc<Probe>>>>,
    seen: Mutex<Vec<(i64, u64)>>,
}

impl ChangeSink for Probe {
    fn failure(&self) -> Option<Box<str>> {
        None
    }

    fn make_room(&self, _: usize) {}

    fn record(&self, _: usize, change: &Change<'_>) {
        let (sku, delta) = match *change {
            Change::Operator { sku, delta, .. } => (sku, delta),
            Change::Lease {
                sku, granted, step, ..
            } => (sku, step.delta(granted)),
            _ => return,
        };
        {
            let engine = self.engine.get().and_then(Weak::upgrade).expect("engine");
            let available = engine.available_now(sku).expect("known SKU");
            self.seen.lock().unwrap().push((delta, available));
        }
    }
}

fn probed() -> (Arc<Engine<Arc<Probe>>>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let engine = Engine::with_sink(
        EngineConfig::default(),
        Arc::new(SystemClock),
        Arc::clone(&probe),
    )
    .unwrap();
    let engine = Arc::new(engine);
    assert!(probe.engine.set(Arc::downgrade(&engine)).is_ok());
    (engine, probe)
}

#[test]
fn operator_changes_are_recorded_before_their_units_can_be_bought() {
    let (engine, probe) = probed();
    let (sku, _) = engine.put_sku("tee", 0, None, None).unwrap();
    engine.restock(sku, 5).unwrap();
    engine.adjust(sku, 3).unwrap();
    engine.put_sku("tee", 20, None, None).unwrap();
    engine.adjust(sku, -4).unwrap();
    let seen = probe.seen.lock().unwrap().clone();
    // (delta, units buyers could take when the change was recorded): none
    // of a change's own units is ever among them.
    let before = [0, 0, 5, 8, 20];
    assert_eq!(seen.len(), before.len());
    for ((delta, available), before) in seen.into_iter().zip(before) {
        assert!(
            available <= before,
            "a change of {delta} was recorded while {available} units were on sale \
             (only {before} were before it)"
        );
    }
    assert_eq!(engine.available_now(sku).unwrap(), 16);
}

/// A lease's units are like a restock's: recorded before a buyer can see
/// them (a grant lost in a crash must not leave a sale of its units).
#[test]
fn lease_grants_are_recorded_before_their_units_can_be_bought() {
    let (engine, probe) = probed();
    let sku = engine.grant_lease("tee", "n1:tee:1", 5).unwrap();
    engine.grant_lease("tee", "n1:tee:2", 2).unwrap();
    engine.return_leased(sku, 6).unwrap();
    let seen = probe.seen.lock().unwrap().clone();
    // The grants saw 0 and 5 units on sale: none of their own. The
    // return's two steps were recorded under the SKU's lock, while its
    // stripes were drained for the withdrawal (nothing on sale).
    assert_eq!(seen, vec![(5, 0), (2, 5), (-5, 0), (-1, 0)]);
    assert_eq!(engine.available_now(sku).unwrap(), 1);
}

/// Records every change in the order the sink saw it (one lock: a total
/// order, as fine as any journal cut).
#[derive(Default)]
struct Tape {
    changes: Mutex<Vec<Recorded>>,
}

#[derive(Clone, Debug)]
enum Recorded {
    Stock { sku: SkuId, delta: i64 },
    Hold { change: Owned },
}

#[derive(Clone, Debug)]
struct Owned {
    id: ReservationId,
    from: Option<HoldStatus>,
    status: HoldStatus,
    lines: Vec<Line>,
}

impl ChangeSink for Tape {
    fn failure(&self) -> Option<Box<str>> {
        None
    }

    fn make_room(&self, _: usize) {}

    fn record(&self, _: usize, change: &Change<'_>) {
        let recorded = match *change {
            Change::Operator { sku, delta, .. } => Recorded::Stock { sku, delta },
            Change::LowStock { sku, .. } => Recorded::Stock { sku, delta: 0 },
            Change::KitDefined { kit, .. } => Recorded::Stock { sku: kit, delta: 0 },
            Change::Sell { sku, units } => Recorded::Stock {
                sku,
                delta: -i64::from(units),
            },
            Change::Hold(HoldChange {
                id,
                from,
                status,
                lines,
                ..
            }) => Recorded::Hold {
                change: Owned {
                    id,
                    from,
                    status,
                    lines: lines.to_vec(),
                },
            },
            Change::Backorder { sku, .. }
            | Change::Location { sku, .. }
            | Change::SaleWindow { sku, .. }
            | Change::WaitingRoom { sku, .. } => Recorded::Stock { sku, delta: 0 },
            Change::Lease {
                sku, granted, step, ..
            } => Recorded::Stock {
                sku,
                delta: step.delta(granted),
            },
            // No workload here sells past zero.
            Change::SkuCreated { .. } | Change::Idempotency(_) | Change::BackorderFilled { .. } => {
                return
            }
        };
        self.changes.lock().unwrap().push(recorded);
    }
}

/// Folds the tape and checks, after every change (every prefix is a crash
/// a journal could leave), that no SKU has sold or holds more than it
/// received and that no reservation changes status before it exists.
fn check_every_prefix(tape: &[Recorded]) -> Result<(), String> {
    let mut received = std::collections::HashMap::<SkuId, i64>::new();
    let mut taken = std::collections::HashMap::<SkuId, i64>::new();
    let mut holds = std::collections::HashMap::<ReservationId, HoldStatus>::new();
    for (at, recorded) in tape.iter().enumerate() {
        match recorded {
            Recorded::Stock { sku, delta } if *delta >= 0 => {
                *received.entry(*sku).or_default() += delta;
            }
            Recorded::Stock { sku, delta } => *taken.entry(*sku).or_default() -= delta,
            Recorded::Hold { change } => {
                if change.from.is_some() && holds.get(&change.id) != change.from.as_ref() {
                    return Err(format!(
                        "change {at}: reservation {} went {:?} -> {:?} before it was recorded as {:?}",
                        change.id, change.from, change.status, change.from
                    ));
                }
                holds.insert(change.id, change.status);
                let sign = match (change.from, change.status) {
                    (None, _) => 1,
                    (Some(_), HoldStatus::Confirmed) => 0,
                    _ => -1,
                };
                for line in &change.lines {
                    *taken.entry(line.sku).or_default() += sign * i64::from(line.quantity);
                }
            }
        }
        for (sku, taken) in &taken {
            let received = received.get(sku).copied().unwrap_or(0);
            if *taken > received {
                return Err(format!(
                    "change {at}: SKU {sku} has {taken} units sold or held of {received} received"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_prefix_of_what_the_engine_records_is_a_state_it_passed_through() {
    let tape = Arc::new(Tape::default());
    let engine = Engine::with_sink(
        EngineConfig::default(),
        Arc::new(SystemClock),
        Arc::clone(&tape),
    )
    .unwrap();
    let (sku, _) = engine.put_sku("hot", 0, None, None).unwrap();
    const RESTOCKS: usize = 2_000;
    let restocked = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..RESTOCKS {
                engine.restock(sku, 1).unwrap();
            }
            restocked.store(true, std::sync::atomic::Ordering::Release);
        });
        for buyer in 0..2 {
            let (engine, restocked) = (&engine, &restocked);
            s.spawn(move || {
                let lines = [Line { sku, quantity: 1 }];
                // Bounded; normally ends once every unit is bought.
                for _ in 0..RESTOCKS * 1_000 {
                    let done = restocked.load(std::sync::atomic::Ordering::Acquire);
                    // The canceller stops with the restocks; the buyer once
                    // it has bought everything.
                    if done && (buyer == 1 || engine.available_now(sku).unwrap() == 0) {
                        break;
                    }
                    let order = Order {
                        lines: &lines,
                        confirm: buyer == 0,
                        ..Order::default()
                    };
                    match engine.reserve(&order) {
                        // The second buyer changes its mind at once (as a
                        // client holding a guessed id could).
                        Ok(receipt) if buyer == 1 => {
                            engine.cancel(receipt.id).unwrap();
                        }
                        _ => std::hint::spin_loop(),
                    }
                }
            });
        }
    });
    let changes = tape.changes.lock().unwrap().clone();
    assert!(changes.len() > RESTOCKS, "{} changes", changes.len());
    check_every_prefix(&changes).unwrap();
    let document = engine.sku_document(sku).unwrap();
    assert!(document.is_conserved(), "{document:?}");
}

/// The journal in front of the engine, with a hook at the moment a restock
/// is recorded: a buyer takes a unit if one is on sale *then*, the journal
/// is cut (a durable batch of everything appended so far), and the data
/// directory is copied as a crash at that instant would leave it. Before
/// the rule, the restock's units were already on sale when it was
/// recorded, so the copy held the sale without the restock and recovery
/// found `sold > received` and refused to start.
struct CutAtRestock {
    journal: Arc<hotstock::durable::journal::Journal>,
    engine: OnceLock<Weak<Engine<Arc<CutAtRestock>>>>,
    data_dir: std::path::PathBuf,
    crash_copy: std::path::PathBuf,
    cut: std::sync::atomic::AtomicBool,
}

impl ChangeSink for CutAtRestock {
    fn failure(&self) -> Option<Box<str>> {
        ChangeSink::failure(&self.journal)
    }

    fn make_room(&self, hint: usize) {
        ChangeSink::make_room(&self.journal, hint)
    }

    fn record(&self, hint: usize, change: &Change<'_>) {
        if let Change::Operator { sku, delta, .. } = *change {
            if delta > 0 && !self.cut.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let engine = self.engine.get().and_then(Weak::upgrade).expect("engine");
                // Only a unit on sale now can be taken without waiting for
                // a lock (the buyer runs on another thread).
                if engine.available_now(sku).expect("known SKU") > 0 {
                    std::thread::scope(|s| {
                        s.spawn(|| engine.sell(sku, 1).expect("a unit on sale"));
                    });
                }
                self.journal.flush().expect("the cut is durable");
                common::copy_dir(&self.data_dir, &self.crash_copy);
            }
        }
        ChangeSink::record(&self.journal, hint, change)
    }
}

#[test]
fn a_journal_cut_at_a_restock_never_holds_a_sale_of_its_units() {
    use hotstock::durable::journal::{fs::RealFs, Durability, Journal, JournalConfig};
    use hotstock::durable::{DurableConfig, DurableEngine};

    let root = common::TempDir::new("cut-at-restock");
    let data_dir = root.0.join("data");
    let crash_copy = root.0.join("crash");
    std::fs::create_dir_all(data_dir.join("journal")).unwrap();
    let mut config = JournalConfig::new(data_dir.join("journal"), Durability::Async);
    // Batches are cut only when the test flushes.
    config.flush_interval = std::time::Duration::from_secs(3600);
    let journal = Journal::start(config, Arc::new(RealFs), 0, Box::new(|_| {})).unwrap();
    let sink = Arc::new(CutAtRestock {
        journal: Arc::new(journal),
        engine: OnceLock::new(),
        data_dir: data_dir.clone(),
        crash_copy: crash_copy.clone(),
        cut: Default::default(),
    });
    let engine = Engine::with_sink(
        EngineConfig::default(),
        Arc::new(SystemClock),
        Arc::clone(&sink),
    )
    .unwrap();
    let engine = Arc::new(engine);
    assert!(sink.engine.set(Arc::downgrade(&engine)).is_ok());
    let (sku, _) = engine.put_sku("tee", 0, None, None).unwrap();
    engine.restock(sku, 5).unwrap();
    engine.sell(sku, 1).unwrap();
    sink.journal.flush().unwrap();
    assert!(sink.cut.load(std::sync::atomic::Ordering::SeqCst));

    // Recovery from the first batch only: what the crash copy holds.
    let (recovered, _) = DurableEngine::open(DurableConfig::new(&crash_copy, Durability::Async))
        .expect("recovery from the cut: a sale of a unit never received would refuse it");
    let doc = recovered
        .engine()
        .sku_document(recovered.engine().sku("tee").unwrap())
        .unwrap();
    assert_eq!((doc.received, doc.sold), (0, 0), "{doc:?}");
    drop(recovered);
    // And the whole journal recovers the whole story.
    drop(engine);
    drop(sink);
    let (whole, _) = DurableEngine::open(DurableConfig::new(&data_dir, Durability::Async)).unwrap();
    let doc = whole
        .engine()
        .sku_document(whole.engine().sku("tee").unwrap())
        .unwrap();
    assert_eq!((doc.received, doc.sold), (5, 1), "{doc:?}");
}

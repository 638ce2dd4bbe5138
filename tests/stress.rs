//! Many threads racing on few SKUs. Sized to finish in seconds on 2 cores
//! (more threads than cores, so preemption lands in the middle of
//! operations); every assertion is about counts, none about time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use hotstock::core::cell::StripePolicy;
use hotstock::{
    Engine, EngineConfig, EngineError, HoldStatus, Line, ManualClock, Order, ReservationId, SkuId,
    SkuPut, StockLevel,
};

const THREADS: usize = 8;

/// A policy that widens at the first conflict and narrows late, so the
/// stress runs cross width changes many times.
fn eager_policy() -> EngineConfig {
    EngineConfig {
        stripe_policy: StripePolicy {
            stripes: 4,
            widen_after_conflicts: 1,
            widen_min_units: 16,
            narrow_below_units: 8,
        },
        ..EngineConfig::default()
    }
}

/// A small deterministic generator, one per thread.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn race<T: Send>(threads: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, work) = (&start, &work);
                s.spawn(move || {
                    start.wait();
                    work(t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn assert_conserved(engine: &Engine, sku: SkuId) -> hotstock::SkuDocument {
    let doc = engine.sku_document(sku).unwrap();
    assert!(doc.is_conserved(), "conservation broken: {doc:?}");
    doc
}

#[test]
fn hot_sku_sells_exactly_its_stock_single_units() {
    const STOCK: u64 = 400_000;
    let engine = Engine::new(eager_policy()).unwrap();
    let (sku, _) = engine.put_sku("hot", STOCK, None, None).unwrap();
    let sold = race(THREADS, |t| {
        let mut sold = 0u64;
        loop {
            // Half the threads buy with records, half without.
            let outcome = if t % 2 == 0 {
                engine.sell(sku, 1)
            } else {
                engine.purchase(sku, 1, None).map(|_| ())
            };
            match outcome {
                Ok(()) => sold += 1,
                Err(EngineError::SoldOut { available: 0, .. }) => return sold,
                Err(other) => panic!("unexpected {other}"),
            }
        }
    });
    assert_eq!(
        sold.iter().sum::<u64>(),
        STOCK,
        "successes must equal stock exactly"
    );
    let doc = assert_conserved(&engine, sku);
    assert_eq!((doc.available, doc.held, doc.sold), (0, 0, STOCK));
}

#[test]
fn sold_out_is_never_answered_while_stock_remains() {
    // Multi-unit takes on a wide cell: a stripe-local miss must fall to the
    // slow path. Every SoldOut must report fewer units than asked, and the
    // run must end with fewer than the largest request left.
    const STOCK: u64 = 200_000;
    let engine = Engine::new(eager_policy()).unwrap();
    let (sku, _) = engine.put_sku("hot", STOCK, None, None).unwrap();
    engine.prepare_hot(sku).unwrap();
    let sold = race(THREADS, |t| {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
        let mut sold = 0u64;
        let mut misses = 0;
        while misses < 50 {
            let quantity = 1 + rng.below(7) as u32;
            match engine.sell(sku, quantity) {
                Ok(()) => sold += u64::from(quantity),
                Err(EngineError::SoldOut {
                    available,
                    requested,
                    ..
                }) => {
                    assert!(
                        available < requested,
                        "SoldOut with {available} >= {requested}"
                    );
                    misses += 1;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        sold
    });
    let doc = assert_conserved(&engine, sku);
    assert_eq!(sold.iter().sum::<u64>(), doc.sold);
    assert!(doc.available < 7, "stock stranded: {} left", doc.available);
}

#[test]
fn carts_are_all_or_nothing_under_contention() {
    const STOCK: u64 = 20_000;
    let engine = Engine::new(eager_policy()).unwrap();
    let skus: Vec<SkuId> = (0..4)
        .map(|i| {
            engine
                .put_sku(&format!("s{i}"), STOCK, None, None)
                .unwrap()
                .0
        })
        .collect();
    // Each thread counts the units of every cart it got, per SKU.
    let taken = race(THREADS, |t| {
        let mut rng = XorShift(0xDEAD_BEEF ^ (t as u64 + 7));
        let mut taken = [0u64; 4];
        let mut misses = 0;
        while misses < 200 {
            let first = rng.below(4) as usize;
            let width = 2 + rng.below(2) as usize;
            let lines: Vec<Line> = (0..width)
                .map(|k| Line {
                    sku: skus[(first + k) % 4],
                    quantity: 1 + rng.below(3) as u32,
                })
                .collect();
            match engine.reserve(&Order {
                lines: &lines,
                confirm: true,
                ..Order::default()
            }) {
                Ok(_) => {
                    for line in &lines {
                        taken[skus.iter().position(|s| *s == line.sku).unwrap()] +=
                            u64::from(line.quantity);
                    }
                }
                Err(EngineError::SoldOut { .. }) => misses += 1,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        taken
    });
    for (index, &sku) in skus.iter().enumerate() {
        let doc = assert_conserved(&engine, sku);
        let by_threads: u64 = taken.iter().map(|t| t[index]).sum();
        assert_eq!(
            doc.sold, by_threads,
            "SKU {index}: sold units match successful carts"
        );
        assert_eq!(doc.held, 0);
        assert!(doc.sold <= STOCK);
    }
}

#[test]
fn hold_storm_conserves_stock_and_ends_every_hold_once() {
    const STOCK: u64 = 2_000;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let engine = Engine::with_clock(eager_policy(), clock.clone()).unwrap();
    let (sku, _) = engine.put_sku("drop", STOCK, Some(Some(3)), None).unwrap();
    let open: Mutex<Vec<ReservationId>> = Mutex::new(Vec::new());
    race(THREADS, |t| {
        let mut rng = XorShift(0x1234_5678 ^ (t as u64 + 3));
        let customer = format!("c{}", t % 5);
        for _ in 0..20_000 {
            match rng.below(8) {
                0..=2 => {
                    let quantity = 1 + rng.below(2) as u32;
                    let order = Order {
                        lines: &[Line { sku, quantity }],
                        customer: Some(&customer),
                        ttl_ms: Some(1 + rng.below(20)),
                        ..Order::default()
                    };
                    match engine.reserve(&order) {
                        Ok(receipt) => open.lock().unwrap().push(receipt.id),
                        Err(EngineError::SoldOut { .. } | EngineError::LimitExceeded { .. }) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                3..=5 => {
                    // Several threads act on the same ids: the races under test.
                    let id = {
                        let open = open.lock().unwrap();
                        if open.is_empty() {
                            continue;
                        }
                        open[rng.below(open.len() as u64) as usize]
                    };
                    let part = [Line {
                        sku,
                        quantity: rng.below(2) as u32,
                    }];
                    let outcome = match rng.below(6) {
                        0 => engine.confirm(id),
                        1 => engine.cancel(id),
                        2 => engine.refund(id),
                        // In part: racing the whole transitions and expiry.
                        3 => engine.confirm_lines(id, &part),
                        4 => engine.refund_lines(id, &part),
                        // Racing the timer and the other transitions.
                        _ => engine
                            .extend(id, 1 + rng.below(30))
                            .map(|_| HoldStatus::Held),
                    };
                    match outcome {
                        Ok(_)
                        | Err(EngineError::InvalidTransition { .. })
                        | Err(EngineError::ExtensionRefused { .. })
                        | Err(EngineError::ExceedsReservation { .. })
                        | Err(EngineError::NothingRequested { .. }) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                6 => {
                    clock.advance(1);
                }
                _ => {
                    engine.run_timers();
                }
            }
        }
    });
    // Let every remaining hold expire, then check the books.
    clock.advance(1_000);
    while engine.run_timers().more {}
    let doc = assert_conserved(&engine, sku);
    assert_eq!(doc.held, 0, "every hold ended");
    let mut sold_by_records = 0u64;
    let mut seen = 0;
    engine.for_each_reservation(|record| {
        assert_ne!(record.status, HoldStatus::Held);
        // What each record still counts as sold, partial or whole.
        let amounts = record.amounts[0];
        sold_by_records += u64::from(amounts.confirmed - amounts.refunded);
        seen += 1;
    });
    assert_eq!(seen, open.lock().unwrap().len(), "no record lost");
    assert_eq!(
        doc.sold, sold_by_records,
        "sold units are exactly the confirmed records"
    );
    assert_eq!(doc.available + doc.sold, STOCK);
    // Limits were given back for everything that returned to stock.
    let limited: u32 = (0..5)
        .map(|c| engine.customer_units(sku, &format!("c{c}")))
        .sum();
    assert_eq!(u64::from(limited), doc.sold);
}

#[test]
fn one_per_customer_holds_under_racing_requests() {
    let engine = Engine::new(eager_policy()).unwrap();
    let (sku, _) = engine
        .put_sku("console", 1_000, Some(Some(1)), None)
        .unwrap();
    let wins = race(THREADS, |t| {
        // Every thread tries to buy for every one of 50 customers.
        let mut wins = 0;
        for c in 0..50 {
            let customer = format!("cust-{}", (c + t) % 50);
            match engine.purchase(sku, 1, Some(&customer)) {
                Ok(_) => wins += 1,
                Err(EngineError::LimitExceeded { .. }) => {}
                Err(other) => panic!("unexpected {other}"),
            }
        }
        wins
    });
    assert_eq!(
        wins.iter().sum::<u32>(),
        50,
        "exactly one unit per customer"
    );
    let doc = assert_conserved(&engine, sku);
    assert_eq!(doc.sold, 50);
    for c in 0..50 {
        assert_eq!(engine.customer_units(sku, &format!("cust-{c}")), 1);
    }
}

#[test]
fn racing_retries_with_one_key_take_stock_once() {
    let engine = Engine::new(eager_policy()).unwrap();
    let (sku, _) = engine.put_sku("tee", 10_000, None, None).unwrap();
    for round in 0..1_000 {
        let key = format!("order-{round}");
        let ids = race(4, |_| {
            let order = Order {
                lines: &[Line { sku, quantity: 2 }],
                idempotency_key: Some(&key),
                ..Order::default()
            };
            engine.reserve(&order).unwrap()
        });
        assert!(
            ids.windows(2).all(|w| w[0].id == w[1].id),
            "one reservation per key"
        );
        assert_eq!(
            ids.iter().filter(|r| !r.replayed).count(),
            1,
            "exactly one attempt ran"
        );
    }
    let doc = assert_conserved(&engine, sku);
    assert_eq!(doc.held, 2_000);
}

#[test]
fn operator_changes_racing_sales_keep_the_books() {
    let engine = Engine::new(eager_policy()).unwrap();
    let (sku, _) = engine.put_sku("restocked", 500, None, None).unwrap();
    let operator_added = AtomicU64::new(500);
    let operator_removed = AtomicU64::new(0);
    let sold = race(THREADS, |t| {
        let mut rng = XorShift(0xABCD ^ (t as u64 + 11));
        let mut sold = 0u64;
        for _ in 0..50_000 {
            if t == 0 && rng.below(10) == 0 {
                if rng.below(2) == 0 {
                    let units = rng.below(50);
                    engine.adjust(sku, units as i64).unwrap();
                    operator_added.fetch_add(units, Ordering::Relaxed);
                } else {
                    let units = rng.below(20);
                    match engine.adjust(sku, -(units as i64)) {
                        Ok(_) => {
                            operator_removed.fetch_add(units, Ordering::Relaxed);
                        }
                        Err(EngineError::InsufficientStock {
                            available,
                            requested,
                            ..
                        }) => {
                            assert!(available < requested);
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                continue;
            }
            match engine.sell(sku, 1) {
                Ok(()) => sold += 1,
                Err(EngineError::SoldOut { .. }) => {}
                Err(other) => panic!("unexpected {other}"),
            }
        }
        sold
    });
    let doc = assert_conserved(&engine, sku);
    let received =
        operator_added.load(Ordering::Relaxed) - operator_removed.load(Ordering::Relaxed);
    assert_eq!(doc.received, received);
    assert_eq!(doc.sold, sold.iter().sum::<u64>());
    assert_eq!(doc.available + doc.sold, received);
}

/// An operator re-counting the shelf (`on_hand` 40, 6 kept back) while
/// buyers hold until they are refused, then cancel: holds never remove a
/// unit from the shelf, so at no instant may buyers hold more than the 34
/// units a count leaves for sale. A put that missed a take in flight
/// (counted it neither available nor held) would offer one unit too many
/// each time it raced; loom's `on_hand_set_races_a_take_in_flight` explores
/// that window exhaustively, this runs it with real threads.
#[test]
fn recounting_on_hand_during_a_hold_storm_never_offers_more_than_the_shelf() {
    const ON_HAND: u64 = 40;
    const SAFETY: u64 = 6;
    let engine = Engine::new(eager_policy()).unwrap();
    let shelf = SkuPut {
        level: Some(StockLevel::OnHand(ON_HAND)),
        safety_stock: Some(SAFETY),
        ..SkuPut::default()
    };
    let (sku, _) = engine.put_stock("shelf", &shelf).unwrap();
    // Units held by successful holds not yet cancelled, counted after a
    // hold succeeds and before it is cancelled: never more than are held.
    let holding = AtomicU64::new(0);
    let most = AtomicU64::new(0);
    race(THREADS, |t| {
        let mut rng = XorShift(0x9E37_79B9 + t as u64);
        for _ in 0..300 {
            if t == 0 {
                // Refused only when holds leave too little: a clear error.
                match engine.put_stock("shelf", &shelf) {
                    Ok(_) | Err(EngineError::BelowCommitted { .. }) => {}
                    Err(other) => panic!("{other}"),
                }
                continue;
            }
            let mut mine = Vec::new();
            loop {
                let quantity = 1 + rng.below(3) as u32;
                let order = Order {
                    lines: &[Line { sku, quantity }],
                    ..Order::default()
                };
                let Ok(receipt) = engine.reserve(&order) else {
                    break;
                };
                let q = u64::from(quantity);
                most.fetch_max(holding.fetch_add(q, Ordering::SeqCst) + q, Ordering::SeqCst);
                mine.push((receipt.id, q));
            }
            for (id, q) in mine {
                holding.fetch_sub(q, Ordering::SeqCst);
                engine.cancel(id).unwrap();
            }
        }
    });
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= ON_HAND - SAFETY,
        "buyers held {most} units at once; the shelf has {} for sale",
        ON_HAND - SAFETY
    );
    // At rest a count is exact.
    engine.put_stock("shelf", &shelf).unwrap();
    let doc = assert_conserved(&engine, sku);
    assert_eq!(
        (doc.available, doc.held, doc.on_hand()),
        (ON_HAND - SAFETY, 0, ON_HAND)
    );
}

/// Components sold alone and in kits (a gift box of 1 mug + 2 coasters),
/// and carts of a kit and a coaster, all at once: every unit sold is
/// accounted to exactly one successful order, and no component oversells.
#[test]
fn components_sold_alone_and_in_kits_at_once_never_oversell() {
    let engine = Engine::new(eager_policy()).unwrap();
    let (mug, _) = engine.put_sku("mug", 300, None, None).unwrap();
    let (coaster, _) = engine.put_sku("coaster", 500, None, None).unwrap();
    let components = [
        Line {
            sku: mug,
            quantity: 1,
        },
        Line {
            sku: coaster,
            quantity: 2,
        },
    ];
    let (gift, _) = engine.define_kit("gift", &components).unwrap();
    // Per thread: units of (mug, coaster) its successful orders took.
    let took = race(THREADS, |t| {
        let mut rng = XorShift(0xC0FFEE + t as u64);
        let (mut mugs, mut coasters) = (0u64, 0u64);
        for _ in 0..400 {
            let (lines, units): (Vec<Line>, (u64, u64)) = match rng.below(4) {
                0 => (
                    vec![Line {
                        sku: gift,
                        quantity: 1,
                    }],
                    (1, 2),
                ),
                1 => (
                    vec![
                        Line {
                            sku: gift,
                            quantity: 1,
                        },
                        Line {
                            sku: coaster,
                            quantity: 1,
                        },
                    ],
                    (1, 3),
                ),
                2 => (
                    vec![Line {
                        sku: mug,
                        quantity: 1,
                    }],
                    (1, 0),
                ),
                _ => (
                    vec![Line {
                        sku: coaster,
                        quantity: 1,
                    }],
                    (0, 1),
                ),
            };
            let order = Order {
                lines: &lines,
                confirm: true,
                ..Order::default()
            };
            match engine.reserve(&order) {
                Ok(_) => {
                    mugs += units.0;
                    coasters += units.1;
                }
                Err(EngineError::SoldOut { .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        (mugs, coasters)
    });
    let mugs: u64 = took.iter().map(|t| t.0).sum();
    let coasters: u64 = took.iter().map(|t| t.1).sum();
    let mug_doc = assert_conserved(&engine, mug);
    let coaster_doc = assert_conserved(&engine, coaster);
    assert_eq!((mug_doc.sold, coaster_doc.sold), (mugs, coasters));
    assert!(mugs <= 300 && coasters <= 500);
    assert!(
        mug_doc.available == 0 || coaster_doc.available < 2,
        "the storm sells out"
    );
}

/// Backorders under a storm (#14.4): buyers past zero, restocks filling
/// them, and every transition racing. At the end the books hold: sold
/// units are the records' received sales, owed units are the records'
/// owed ones and the queue's, and never more were owed than allowed.
#[test]
fn backorder_storm_fills_and_ends_every_owed_unit_once() {
    const ALLOWANCE: u64 = 40;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let engine = Engine::with_clock(eager_policy(), clock.clone()).unwrap();
    let (sku, _) = engine
        .put_sku("pre", 20, Some(Some(100_000)), None)
        .unwrap();
    let rule = hotstock::BackorderRule {
        limit: ALLOWANCE,
        until_ms: None,
    };
    engine.set_backorder(sku, rule).unwrap();
    let open: Mutex<Vec<ReservationId>> = Mutex::new(Vec::new());
    let restocked = AtomicU64::new(0);
    race(THREADS, |t| {
        let mut rng = XorShift(0x0bad_cafe ^ (t as u64 + 11));
        let customer = format!("c{}", t % 5);
        for _ in 0..5_000 {
            match rng.below(10) {
                0..=3 => {
                    let order = Order {
                        lines: &[Line {
                            sku,
                            quantity: 1 + rng.below(3) as u32,
                        }],
                        customer: Some(&customer),
                        confirm: rng.below(2) == 0,
                        ttl_ms: Some(1 + rng.below(20)),
                        ..Order::default()
                    };
                    match engine.reserve(&order) {
                        Ok(receipt) => open.lock().unwrap().push(receipt.id),
                        Err(EngineError::SoldOut { .. } | EngineError::LimitExceeded { .. }) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                4..=6 => {
                    let id = {
                        let open = open.lock().unwrap();
                        if open.is_empty() {
                            continue;
                        }
                        open[rng.below(open.len() as u64) as usize]
                    };
                    let part = [Line {
                        sku,
                        quantity: rng.below(2) as u32,
                    }];
                    match match rng.below(5) {
                        0 => engine.confirm(id),
                        1 => engine.cancel(id),
                        2 => engine.refund(id),
                        3 => engine.confirm_lines(id, &part),
                        _ => engine.refund_lines(id, &part),
                    } {
                        Ok(_)
                        | Err(EngineError::InvalidTransition { .. })
                        | Err(EngineError::ExceedsReservation { .. })
                        | Err(EngineError::NothingRequested { .. }) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                7 if rng.below(4) == 0 => {
                    let units = rng.below(4);
                    engine.restock(sku, units).unwrap();
                    restocked.fetch_add(units, Ordering::Relaxed);
                }
                7 | 8 => clock.advance(1),
                _ => drop(engine.run_timers()),
            }
        }
    });
    clock.advance(1_000);
    while engine.run_timers().more {}
    let doc = assert_conserved(&engine, sku);
    assert_eq!(doc.held, 0, "every hold ended");
    assert_eq!(doc.received, 20 + restocked.load(Ordering::Relaxed));
    assert!(doc.backordered <= ALLOWANCE);
    let (mut sold, mut owed, mut kept) = (0u64, 0u64, 0u64);
    engine.for_each_reservation(|record| {
        assert_ne!(record.status, HoldStatus::Held);
        let amounts = record.amounts[0];
        let line_owed = u64::from(record.owed.first().copied().unwrap_or(0));
        let still_sold = u64::from(amounts.confirmed - amounts.refunded);
        assert!(line_owed <= still_sold, "owed units are sold units");
        sold += still_sold - line_owed;
        owed += line_owed;
        kept += still_sold;
    });
    assert_eq!(doc.sold, sold, "sold units are the records' received sales");
    assert_eq!(
        doc.backordered, owed,
        "owed units are the records' owed ones"
    );
    let queue = engine.backorder_queue(sku).unwrap();
    assert_eq!(queue.iter().map(|o| u64::from(o.units)).sum::<u64>(), owed);
    let limited: u32 = (0..5)
        .map(|c| engine.customer_units(sku, &format!("c{c}")))
        .sum();
    assert_eq!(u64::from(limited), kept, "limits count owed units too");
}

//! Behaviour of the engine's public API, one rule per test.

use std::sync::Arc;

use hotstock::{
    Engine, EngineConfig, EngineError, HoldStatus, Line, ManualClock, Order, ReservationId,
    SkuDocument, SkuId, TimerThread,
};

const T0: u64 = 1_700_000_000_000;

fn engine_with(config: EngineConfig) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::with_clock(config, clock.clone()).unwrap();
    (engine, clock)
}

fn engine() -> (Engine, Arc<ManualClock>) {
    engine_with(EngineConfig::default())
}

fn stock(engine: &Engine, name: &str, units: u64) -> SkuId {
    engine.put_sku(name, units, None, None).unwrap().0
}

fn doc(engine: &Engine, sku: SkuId) -> SkuDocument {
    let doc = engine.sku_document(sku).unwrap();
    assert!(doc.is_conserved(), "conservation broken: {doc:?}");
    doc
}

fn counts(engine: &Engine, sku: SkuId) -> (u64, u64, u64) {
    let d = doc(engine, sku);
    (d.available, d.held, d.sold)
}

fn hold(engine: &Engine, lines: &[Line]) -> Result<hotstock::Receipt, EngineError> {
    engine.reserve(&Order {
        lines,
        ..Order::default()
    })
}

fn one(sku: SkuId, quantity: u32) -> [Line; 1] {
    [Line { sku, quantity }]
}

#[test]
fn hold_confirm_refund_moves_units_once_each() {
    let (engine, _) = engine();
    let sku = stock(&engine, "tee", 5);
    let receipt = hold(&engine, &one(sku, 2)).unwrap();
    assert_eq!(receipt.status, HoldStatus::Held);
    assert_eq!(receipt.expires_at_ms, T0 + engine.config().default_ttl_ms);
    assert_eq!(counts(&engine, sku), (3, 2, 0));

    assert_eq!(engine.confirm(receipt.id), Ok(HoldStatus::Confirmed));
    assert_eq!(
        engine.confirm(receipt.id),
        Ok(HoldStatus::Confirmed),
        "repeat is idempotent"
    );
    assert_eq!(counts(&engine, sku), (3, 0, 2));

    assert_eq!(engine.refund(receipt.id), Ok(HoldStatus::Refunded));
    assert_eq!(engine.refund(receipt.id), Ok(HoldStatus::Refunded));
    assert_eq!(counts(&engine, sku), (5, 0, 0));
    assert_eq!(
        engine.reservation(receipt.id).unwrap().status,
        HoldStatus::Refunded
    );
}

#[test]
fn invalid_transitions_name_the_current_status_and_change_nothing() {
    let (engine, _) = engine();
    let sku = stock(&engine, "tee", 5);
    let held = hold(&engine, &one(sku, 1)).unwrap().id;
    assert_eq!(
        engine.refund(held),
        Err(EngineError::InvalidTransition {
            id: held,
            status: HoldStatus::Held,
            requested: "refunded"
        })
    );
    engine.cancel(held).unwrap();
    assert_eq!(engine.cancel(held), Ok(HoldStatus::Cancelled));
    assert_eq!(
        engine.confirm(held),
        Err(EngineError::InvalidTransition {
            id: held,
            status: HoldStatus::Cancelled,
            requested: "confirmed"
        })
    );
    let bought = engine.purchase(sku, 1, None).unwrap().id;
    assert!(matches!(
        engine.cancel(bought),
        Err(EngineError::InvalidTransition {
            status: HoldStatus::Confirmed,
            ..
        })
    ));
    assert_eq!(counts(&engine, sku), (4, 0, 1));
    let bogus = ReservationId::from_u64(0xdead_beef_0000_0000);
    assert_eq!(
        engine.confirm(bogus),
        Err(EngineError::UnknownReservation { id: bogus })
    );
}

#[test]
fn expiry_by_timer_returns_units_once() {
    let (engine, clock) = engine();
    let sku = stock(&engine, "tee", 3);
    let id = engine
        .reserve(&Order {
            lines: &one(sku, 2),
            ttl_ms: Some(1_000),
            ..Order::default()
        })
        .unwrap()
        .id;
    clock.advance(999);
    assert_eq!(engine.run_timers().expired, 0);
    assert_eq!(counts(&engine, sku), (1, 2, 0));
    clock.advance(1);
    assert_eq!(engine.run_timers().expired, 1);
    assert_eq!(
        engine.run_timers().expired,
        0,
        "an expired hold is not expired twice"
    );
    assert_eq!(counts(&engine, sku), (3, 0, 0));
    assert_eq!(engine.reservation(id).unwrap().status, HoldStatus::Expired);
    assert!(matches!(
        engine.confirm(id),
        Err(EngineError::InvalidTransition {
            status: HoldStatus::Expired,
            ..
        })
    ));
}

#[test]
fn confirm_after_the_deadline_expires_instead_even_before_the_timer_runs() {
    let (engine, clock) = engine();
    let sku = stock(&engine, "tee", 1);
    let id = engine
        .reserve(&Order {
            lines: &one(sku, 1),
            ttl_ms: Some(50),
            ..Order::default()
        })
        .unwrap()
        .id;
    clock.advance(50);
    assert!(matches!(
        engine.confirm(id),
        Err(EngineError::InvalidTransition {
            status: HoldStatus::Expired,
            ..
        })
    ));
    assert_eq!(counts(&engine, sku), (1, 0, 0));
    assert_eq!(
        engine.run_timers().expired,
        0,
        "the timer finds it already ended"
    );
    assert_eq!(counts(&engine, sku), (1, 0, 0));
}

#[test]
fn reading_a_hold_past_its_deadline_shows_it_expired_with_units_back() {
    let (engine, clock) = engine();
    let sku = stock(&engine, "tee", 1);
    let id = engine
        .reserve(&Order {
            lines: &one(sku, 1),
            ttl_ms: Some(10),
            ..Order::default()
        })
        .unwrap()
        .id;
    clock.advance(10);
    assert_eq!(engine.reservation(id).unwrap().status, HoldStatus::Expired);
    assert_eq!(counts(&engine, sku), (1, 0, 0));
}

#[test]
fn cart_is_all_or_nothing() {
    let (engine, _) = engine();
    let a = stock(&engine, "a", 5);
    let b = stock(&engine, "b", 1);
    let c = stock(&engine, "c", 5);
    let cart = [
        Line {
            sku: a,
            quantity: 2,
        },
        Line {
            sku: b,
            quantity: 2,
        },
        Line {
            sku: c,
            quantity: 1,
        },
    ];
    assert_eq!(
        hold(&engine, &cart),
        Err(EngineError::SoldOut {
            sku: b,
            available: 1,
            requested: 2
        })
    );
    assert_eq!(
        counts(&engine, a),
        (5, 0, 0),
        "line before the failure is undone"
    );
    assert_eq!(
        counts(&engine, c),
        (5, 0, 0),
        "line after the failure is never taken"
    );

    let cart = [
        Line {
            sku: a,
            quantity: 2,
        },
        Line {
            sku: b,
            quantity: 1,
        },
        Line {
            sku: c,
            quantity: 1,
        },
    ];
    let receipt = engine
        .reserve(&Order {
            lines: &cart,
            confirm: true,
            ..Order::default()
        })
        .unwrap();
    assert_eq!(receipt.status, HoldStatus::Confirmed);
    assert_eq!(counts(&engine, a), (3, 0, 2));
    assert_eq!(counts(&engine, b), (0, 0, 1));
    assert_eq!(engine.reservation(receipt.id).unwrap().lines, cart);
    engine.refund(receipt.id).unwrap();
    assert_eq!(counts(&engine, b), (1, 0, 0));
}

#[test]
fn per_customer_limit_is_enforced_and_given_back() {
    let (engine, clock) = engine();
    let (sku, _) = engine.put_sku("console", 10, Some(Some(1)), None).unwrap();
    let alice = Some("alice");
    let first = engine.purchase(sku, 1, alice).unwrap();
    assert_eq!(
        engine.purchase(sku, 1, alice),
        Err(EngineError::LimitExceeded {
            sku,
            limit: 1,
            already: 1,
            requested: 1
        })
    );
    assert_eq!(
        engine.purchase(sku, 2, Some("bob")),
        Err(EngineError::LimitExceeded {
            sku,
            limit: 1,
            already: 0,
            requested: 2
        })
    );
    assert_eq!(
        engine.purchase(sku, 1, None),
        Err(EngineError::CustomerRequired { sku })
    );
    assert_eq!(
        engine.sell(sku, 1),
        Err(EngineError::CustomerRequired { sku })
    );

    // Refund gives the allowance back.
    engine.refund(first.id).unwrap();
    assert_eq!(engine.customer_units(sku, "alice"), 0);
    let held = engine
        .reserve(&Order {
            lines: &one(sku, 1),
            customer: alice,
            ttl_ms: Some(5),
            ..Order::default()
        })
        .unwrap();
    assert_eq!(engine.customer_units(sku, "alice"), 1);
    // So do cancel and expiry.
    clock.advance(5);
    engine.run_timers();
    assert_eq!(
        engine.reservation(held.id).unwrap().status,
        HoldStatus::Expired
    );
    assert_eq!(engine.customer_units(sku, "alice"), 0);
    let held = engine
        .reserve(&Order {
            lines: &one(sku, 1),
            customer: alice,
            ..Order::default()
        })
        .unwrap();
    engine.cancel(held.id).unwrap();
    assert_eq!(engine.customer_units(sku, "alice"), 0);
    assert_eq!(counts(&engine, sku), (10, 0, 0));
}

#[test]
fn limit_failure_in_a_cart_undoes_earlier_lines_and_their_limits() {
    let (engine, _) = engine();
    let (a, _) = engine.put_sku("a", 10, Some(Some(2)), None).unwrap();
    let (b, _) = engine.put_sku("b", 10, Some(Some(1)), None).unwrap();
    engine.purchase(b, 1, Some("carol")).unwrap();
    let cart = [
        Line {
            sku: a,
            quantity: 2,
        },
        Line {
            sku: b,
            quantity: 1,
        },
    ];
    let refused = engine.reserve(&Order {
        lines: &cart,
        customer: Some("carol"),
        ..Order::default()
    });
    assert!(matches!(refused, Err(EngineError::LimitExceeded { sku, .. }) if sku == b));
    assert_eq!(engine.customer_units(a, "carol"), 0);
    assert_eq!(counts(&engine, a), (10, 0, 0));
    // A sold-out line gives back its own limit count too.
    let (c, _) = engine.put_sku("c", 0, Some(Some(1)), None).unwrap();
    let cart = [
        Line {
            sku: a,
            quantity: 1,
        },
        Line {
            sku: c,
            quantity: 1,
        },
    ];
    let refused = engine.reserve(&Order {
        lines: &cart,
        customer: Some("dave"),
        ..Order::default()
    });
    assert!(matches!(refused, Err(EngineError::SoldOut { sku, .. }) if sku == c));
    assert_eq!(engine.customer_units(a, "dave"), 0);
    assert_eq!(engine.customer_units(c, "dave"), 0);
}

#[test]
fn idempotent_retry_returns_the_original_and_takes_once() {
    let (engine, _) = engine();
    let sku = stock(&engine, "tee", 3);
    let order = Order {
        lines: &one(sku, 1),
        idempotency_key: Some("order-17"),
        ..Order::default()
    };
    let first = engine.reserve(&order).unwrap();
    assert!(!first.replayed);
    let retry = engine.reserve(&order).unwrap();
    assert_eq!(retry.id, first.id);
    assert!(retry.replayed);
    assert_eq!(counts(&engine, sku), (2, 1, 0));

    let different = Order {
        lines: &one(sku, 2),
        idempotency_key: Some("order-17"),
        ..Order::default()
    };
    assert_eq!(
        engine.reserve(&different),
        Err(EngineError::IdempotencyKeyReused)
    );

    // A refusal is an outcome too: the retry gets the same refusal even
    // after stock comes back.
    let big = Order {
        lines: &one(sku, 5),
        idempotency_key: Some("order-18"),
        ..Order::default()
    };
    let refused = engine.reserve(&big);
    assert_eq!(
        refused,
        Err(EngineError::SoldOut {
            sku,
            available: 2,
            requested: 5
        })
    );
    engine.adjust(sku, 10).unwrap();
    assert_eq!(engine.reserve(&big), refused);
}

#[test]
fn operator_changes_bump_versions_and_check_expectations() {
    let (engine, _) = engine();
    assert_eq!(
        engine.put_sku("new", 5, None, Some(3)),
        Err(EngineError::VersionConflict {
            sku: None,
            expected: 3,
            current: 0
        })
    );
    assert!(engine.sku("new").is_err(), "a refused put creates nothing");
    let (sku, change) = engine.put_sku("new", 5, None, Some(0)).unwrap();
    assert_eq!((change.delta, change.version), (5, 1));
    assert_eq!(
        engine.put_sku("new", 9, None, Some(0)),
        Err(EngineError::VersionConflict {
            sku: Some(sku),
            expected: 0,
            current: 1
        })
    );
    engine.purchase(sku, 2, None).unwrap();
    let (_, change) = engine.put_sku("new", 10, None, Some(1)).unwrap();
    assert_eq!(
        (change.delta, change.version),
        (7, 2),
        "delta is computed under the lock"
    );
    let d = doc(&engine, sku);
    assert_eq!((d.available, d.sold, d.received), (10, 2, 12));

    assert_eq!(
        engine.adjust(sku, -11),
        Err(EngineError::InsufficientStock {
            sku,
            available: 10,
            requested: 11
        })
    );
    assert_eq!(engine.adjust(sku, -10).unwrap().version, 3);
    assert_eq!(
        engine.restock(sku, hotstock::core::limits::MAX_STOCK_PER_SKU),
        Err(EngineError::StockLimit { sku, received: 2 })
    );
    assert_eq!(engine.adjust(sku, 4).unwrap().version, 4);
    assert_eq!(engine.set_limit(sku, Some(2)), Ok(5));
    assert_eq!(
        engine.set_limit(sku, Some(0)),
        Err(EngineError::InvalidLimit)
    );
    let d = doc(&engine, sku);
    assert_eq!(
        (d.available, d.received, d.version, d.per_customer_limit),
        (4, 6, 5, Some(2))
    );
    // Sales do not bump the version: an operator's expected version must
    // survive a sale in progress.
    engine.set_limit(sku, None).unwrap();
    engine.purchase(sku, 1, None).unwrap();
    assert_eq!(doc(&engine, sku).version, 6);
}

#[test]
fn bad_requests_are_refused_before_anything_changes() {
    let (engine, _) = engine();
    let sku = stock(&engine, "tee", 5);
    let reserve = |order: Order<'_>| engine.reserve(&order);
    assert_eq!(reserve(Order::default()), Err(EngineError::EmptyCart));
    let many: Vec<Line> = (0..33).map(|_| Line { sku, quantity: 1 }).collect();
    assert_eq!(
        reserve(Order {
            lines: &many,
            ..Order::default()
        }),
        Err(EngineError::TooManyLines { lines: 33 })
    );
    assert_eq!(
        reserve(Order {
            lines: &one(sku, 0),
            ..Order::default()
        }),
        Err(EngineError::InvalidQuantity { quantity: 0 })
    );
    assert_eq!(
        reserve(Order {
            lines: &one(sku, 1_000_001),
            ..Order::default()
        }),
        Err(EngineError::InvalidQuantity {
            quantity: 1_000_001
        })
    );
    let twice = [Line { sku, quantity: 1 }, Line { sku, quantity: 1 }];
    assert_eq!(
        reserve(Order {
            lines: &twice,
            ..Order::default()
        }),
        Err(EngineError::DuplicateSku { sku })
    );
    let ghost = SkuId::from_index(999);
    assert_eq!(
        reserve(Order {
            lines: &one(ghost, 1),
            ..Order::default()
        }),
        Err(EngineError::UnknownSkuId { sku: ghost })
    );
    assert!(matches!(
        reserve(Order {
            lines: &one(sku, 1),
            ttl_ms: Some(0),
            ..Order::default()
        }),
        Err(EngineError::InvalidTtl { ttl_ms: 0, .. })
    ));
    assert!(matches!(
        reserve(Order {
            lines: &one(sku, 1),
            customer: Some(""),
            ..Order::default()
        }),
        Err(EngineError::InvalidCustomer { .. })
    ));
    assert!(matches!(
        reserve(Order {
            lines: &one(sku, 1),
            customer: Some("a\nb"),
            ..Order::default()
        }),
        Err(EngineError::InvalidCustomer { .. })
    ));
    assert!(matches!(
        reserve(Order {
            lines: &one(sku, 1),
            idempotency_key: Some("has space"),
            ..Order::default()
        }),
        Err(EngineError::InvalidIdempotencyKey { .. })
    ));
    assert!(matches!(
        engine.put_sku("bad name", 1, None, None),
        Err(EngineError::InvalidSkuName { .. })
    ));
    assert_eq!(
        engine.sku("nope"),
        Err(EngineError::UnknownSku {
            name: "nope".into()
        })
    );
    assert_eq!(counts(&engine, sku), (5, 0, 0));
}

#[test]
fn full_reservation_table_refuses_and_gives_stock_back() {
    let (engine, _) = engine_with(EngineConfig {
        max_reservations: 64,
        ..EngineConfig::default()
    });
    let sku = stock(&engine, "tee", 1_000);
    // The limit is on the whole table, whichever CPU's shard fills first.
    for _ in 0..64 {
        engine.purchase(sku, 1, None).unwrap();
    }
    assert_eq!(
        engine.purchase(sku, 1, None),
        Err(EngineError::CapacityExceeded {
            what: "reservation records",
            limit: 64
        })
    );
    let d = doc(&engine, sku);
    assert_eq!(d.available + d.sold, 1_000);
}

#[test]
fn ended_records_are_pruned_after_retention() {
    let (engine, clock) = engine_with(EngineConfig {
        ended_retention_ms: 1_000,
        ..EngineConfig::default()
    });
    let sku = stock(&engine, "tee", 5);
    let cancelled = hold(&engine, &one(sku, 1)).unwrap().id;
    let bought = engine.purchase(sku, 1, None).unwrap().id;
    engine.cancel(cancelled).unwrap();
    clock.advance(999);
    assert_eq!(engine.run_timers().pruned_reservations, 0);
    clock.advance(1);
    assert_eq!(engine.run_timers().pruned_reservations, 1);
    assert_eq!(
        engine.reservation(cancelled),
        Err(EngineError::UnknownReservation { id: cancelled })
    );
    assert_eq!(
        engine.reservation(bought).unwrap().status,
        HoldStatus::Confirmed,
        "sales stay refundable"
    );
    // The pruned slot is reused under a new generation: the old id stays unknown.
    let next = hold(&engine, &one(sku, 1)).unwrap().id;
    assert_ne!(next, cancelled);
    assert_eq!(
        engine.cancel(cancelled),
        Err(EngineError::UnknownReservation { id: cancelled })
    );
}

#[test]
fn confirmed_sales_are_pruned_after_the_refund_window() {
    let (engine, clock) = engine_with(EngineConfig {
        refund_window_ms: 5_000,
        ended_retention_ms: 100,
        ..EngineConfig::default()
    });
    let sku = stock(&engine, "tee", 5);
    let bought = engine.purchase(sku, 1, None).unwrap().id;
    let held = hold(&engine, &one(sku, 1)).unwrap().id;
    clock.advance(1_000);
    engine.confirm(held).unwrap();
    clock.advance(3_999);
    assert_eq!(engine.run_timers().pruned_reservations, 0);
    assert_eq!(
        engine.refund(bought),
        Ok(HoldStatus::Refunded),
        "inside the window"
    );
    clock.advance(1);
    // The refunded one waits out its own (ended) retention; the held-then-
    // confirmed one is 1 s younger than the window.
    assert_eq!(engine.run_timers().pruned_reservations, 0);
    clock.advance(1_000);
    assert_eq!(engine.run_timers().pruned_reservations, 2);
    assert_eq!(
        engine.refund(held),
        Err(EngineError::UnknownReservation { id: held })
    );
    // The sale stands after its record is gone.
    assert_eq!(counts(&engine, sku), (4, 0, 1));
}

#[test]
fn timer_thread_expires_holds_in_the_background() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Arc::new(Engine::with_clock(EngineConfig::default(), clock.clone()).unwrap());
    let sku = stock(&engine, "tee", 2);
    let id = engine
        .reserve(&Order {
            lines: &one(sku, 2),
            ttl_ms: Some(100),
            ..Order::default()
        })
        .unwrap()
        .id;
    clock.advance(100);
    let timers = TimerThread::spawn(engine.clone(), std::time::Duration::from_millis(1)).unwrap();
    // Wait on the condition itself (with a generous bound), not on a guess.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.sku_document(sku).unwrap().available != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "timer thread never expired the hold"
        );
        std::thread::yield_now();
    }
    drop(timers);
    let mut status = None;
    engine.for_each_reservation(|doc| {
        if doc.id == id {
            status = Some(doc.status);
        }
    });
    assert_eq!(status, Some(HoldStatus::Expired));
}

#[test]
fn skus_page_in_creation_order() {
    let (engine, _) = engine();
    let ids: Vec<SkuId> = (0..5)
        .map(|i| stock(&engine, &format!("s{i}"), i))
        .collect();
    let page = engine.skus_after(None, 2);
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..2]);
    let page = engine.skus_after(Some(ids[1]), 10);
    assert_eq!(
        page.iter().map(|d| &*d.name).collect::<Vec<_>>(),
        ["s2", "s3", "s4"]
    );
    assert_eq!(engine.sku_count(), 5);
}

#[test]
fn hot_sku_keeps_exact_counts_across_widen_and_narrow() {
    let (engine, _) = engine();
    let sku = stock(&engine, "hot", 1_000);
    engine.prepare_hot(sku).unwrap();
    for _ in 0..1_000 {
        engine.sell(sku, 1).unwrap();
    }
    assert_eq!(
        engine.sell(sku, 1),
        Err(EngineError::SoldOut {
            sku,
            available: 0,
            requested: 1
        })
    );
    assert_eq!(counts(&engine, sku), (0, 0, 1_000));
}

// ---- hold extension --------------------------------------------------------

fn extending_engine() -> (Engine, Arc<ManualClock>) {
    engine_with(EngineConfig {
        default_ttl_ms: 1_000,
        max_extension_ms: 5_000,
        max_extensions: 2,
        max_hold_ms: 8_000,
        ..EngineConfig::default()
    })
}

#[test]
fn an_extension_moves_the_deadline_from_now_and_the_timer_follows_it() {
    let (engine, clock) = extending_engine();
    let sku = stock(&engine, "tee", 3);
    let receipt = hold(&engine, &one(sku, 2)).unwrap();
    clock.advance(500);
    let extension = engine.extend(receipt.id, 2_000).unwrap();
    assert_eq!(extension.expires_at_ms, T0 + 2_500, "counted from now");
    assert_eq!((extension.extensions, extension.extensions_left), (1, 1));
    let record = engine.reservation(receipt.id).unwrap();
    assert_eq!((record.deadline_ms, record.extensions), (T0 + 2_500, 1));
    assert_eq!(counts(&engine, sku), (1, 2, 0), "no units move");
    // The old deadline's timer entry comes due and must not expire it.
    clock.advance(600);
    assert_eq!(engine.run_timers().expired, 0);
    assert_eq!(
        engine.reservation(receipt.id).unwrap().status,
        HoldStatus::Held
    );
    clock.advance(1_400);
    assert_eq!(engine.run_timers().expired, 1);
    assert_eq!(counts(&engine, sku), (3, 0, 0));
}

#[test]
fn an_extension_is_capped_per_extension_and_by_total_hold_time() {
    let (engine, clock) = extending_engine();
    let sku = stock(&engine, "tee", 3);
    let receipt = hold(&engine, &one(sku, 1)).unwrap();
    // Asking for more than `max_extension_ms` gets `max_extension_ms`.
    let first = engine.extend(receipt.id, 60_000).unwrap();
    assert_eq!(first.expires_at_ms, T0 + 5_000);
    // Past `max_hold_ms` (8 s after creation) it is capped there.
    clock.advance(4_000);
    let second = engine.extend(receipt.id, 5_000).unwrap();
    assert_eq!(second.expires_at_ms, T0 + 8_000);
    assert_eq!(second.extensions_left, 0);
}

#[test]
fn extensions_past_a_cap_are_refused_and_change_nothing() {
    let (engine, _) = extending_engine();
    let sku = stock(&engine, "tee", 3);
    let counted = hold(&engine, &one(sku, 1)).unwrap();
    // A request the deadline already covers uses no extension.
    let unchanged = engine.extend(counted.id, 1_000).unwrap();
    assert_eq!(
        (unchanged.expires_at_ms, unchanged.extensions),
        (T0 + 1_000, 0)
    );
    engine.extend(counted.id, 2_000).unwrap();
    engine.extend(counted.id, 3_000).unwrap();
    let before = engine.reservation(counted.id).unwrap();
    let refused = engine.extend(counted.id, 4_000).unwrap_err();
    assert!(
        matches!(
            refused,
            EngineError::ExtensionRefused {
                extensions: 2,
                max: 2,
                reason: hotstock::ExtensionLimit::Count,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(engine.reservation(counted.id).unwrap(), before);
    assert!(refused.to_string().contains("confirm or cancel it by then"));
}

#[test]
fn a_hold_at_its_total_hold_time_cannot_be_extended() {
    let (engine, clock) = engine_with(EngineConfig {
        default_ttl_ms: 1_000,
        max_extension_ms: 5_000,
        max_extensions: 10,
        max_hold_ms: 3_000,
        ..EngineConfig::default()
    });
    let sku = stock(&engine, "tee", 1);
    let receipt = hold(&engine, &one(sku, 1)).unwrap();
    assert_eq!(
        engine.extend(receipt.id, 5_000).unwrap().expires_at_ms,
        T0 + 3_000
    );
    clock.advance(2_000);
    let refused = engine.extend(receipt.id, 5_000).unwrap_err();
    assert_eq!(
        refused,
        EngineError::ExtensionRefused {
            id: receipt.id,
            extensions: 1,
            max: 10,
            deadline_ms: T0 + 3_000,
            reason: hotstock::ExtensionLimit::HoldTime,
        }
    );
}

#[test]
fn only_a_held_reservation_can_be_extended_and_an_expired_one_is_not_revived() {
    let (engine, clock) = extending_engine();
    let sku = stock(&engine, "tee", 3);
    let bought = engine.purchase(sku, 1, None).unwrap();
    let cancelled = hold(&engine, &one(sku, 1)).unwrap();
    engine.cancel(cancelled.id).unwrap();
    for (id, status) in [
        (bought.id, HoldStatus::Confirmed),
        (cancelled.id, HoldStatus::Cancelled),
    ] {
        assert_eq!(
            engine.extend(id, 1_000),
            Err(EngineError::InvalidTransition {
                id,
                status,
                requested: "extended"
            })
        );
    }
    // Past its deadline, before the timer ran: it expires on this touch,
    // units back, and the extension is refused.
    let late = hold(&engine, &one(sku, 1)).unwrap();
    clock.advance(1_000);
    assert_eq!(
        engine.extend(late.id, 1_000),
        Err(EngineError::InvalidTransition {
            id: late.id,
            status: HoldStatus::Expired,
            requested: "extended"
        })
    );
    assert_eq!(counts(&engine, sku), (2, 0, 1));
    assert!(matches!(
        engine.extend(late.id, 0),
        Err(EngineError::InvalidTtl { ttl_ms: 0, .. })
    ));
}

// ---- partial confirm and refund --------------------------------------------

fn amounts(engine: &Engine, id: ReservationId) -> Vec<(u32, u32, u32)> {
    let record = engine.reservation(id).unwrap();
    (record.lines.iter().zip(&record.amounts))
        .map(|(line, a)| (line.quantity, a.confirmed, a.refunded))
        .collect()
}

#[test]
fn a_partial_confirm_sells_part_and_returns_the_rest_at_once_with_its_limit() {
    let (engine, _) = engine();
    let tee = engine.put_sku("tee", 10, Some(Some(5)), None).unwrap().0;
    let mug = stock(&engine, "mug", 4);
    let cart = [
        Line {
            sku: tee,
            quantity: 4,
        },
        Line {
            sku: mug,
            quantity: 2,
        },
    ];
    let held = engine
        .reserve(&Order {
            lines: &cart,
            customer: Some("ann"),
            ..Order::default()
        })
        .unwrap();
    assert_eq!(engine.customer_units(tee, "ann"), 4);
    // Sell 1 tee; the mug line is not named, so none of it sells.
    let status = engine.confirm_lines(held.id, &one(tee, 1)).unwrap();
    assert_eq!(status, HoldStatus::Confirmed);
    assert_eq!(counts(&engine, tee), (9, 0, 1));
    assert_eq!(counts(&engine, mug), (4, 0, 0));
    assert_eq!(engine.customer_units(tee, "ann"), 1, "3 units' limit back");
    assert_eq!(amounts(&engine, held.id), [(4, 1, 0), (2, 0, 0)]);
    // A repeat changes nothing, whatever it names.
    assert_eq!(
        engine.confirm_lines(held.id, &one(tee, 4)),
        Ok(HoldStatus::Confirmed)
    );
    assert_eq!(engine.confirm(held.id), Ok(HoldStatus::Confirmed));
    assert_eq!(counts(&engine, tee), (9, 0, 1));
}

#[test]
fn partial_refunds_never_return_more_than_was_sold() {
    let (engine, _) = engine();
    let tee = engine.put_sku("tee", 10, Some(Some(5)), None).unwrap().0;
    let bought = engine.purchase(tee, 3, Some("ann")).unwrap();
    assert_eq!(
        engine.refund_lines(bought.id, &one(tee, 1)),
        Ok(HoldStatus::Confirmed),
        "still a sale of the rest"
    );
    assert_eq!(counts(&engine, tee), (8, 0, 2));
    assert_eq!(engine.customer_units(tee, "ann"), 2);
    assert_eq!(amounts(&engine, bought.id), [(3, 3, 1)]);
    assert_eq!(
        engine.refund_lines(bought.id, &one(tee, 3)),
        Err(EngineError::ExceedsReservation {
            id: bought.id,
            sku: tee,
            requested: 3,
            allowed: 2,
            action: "refunded"
        })
    );
    assert_eq!(
        engine.refund_lines(bought.id, &one(tee, 0)),
        Err(EngineError::NothingRequested { action: "refunded" })
    );
    // The whole refund gives back what is left, once.
    assert_eq!(engine.refund(bought.id), Ok(HoldStatus::Refunded));
    assert_eq!(engine.refund(bought.id), Ok(HoldStatus::Refunded));
    assert_eq!(counts(&engine, tee), (10, 0, 0));
    assert_eq!(engine.customer_units(tee, "ann"), 0);
    assert_eq!(amounts(&engine, bought.id), [(3, 3, 3)]);
    assert!(matches!(
        engine.refund_lines(bought.id, &one(tee, 1)),
        Err(EngineError::InvalidTransition {
            status: HoldStatus::Refunded,
            ..
        })
    ));
}

#[test]
fn partial_requests_that_do_not_fit_the_reservation_change_nothing() {
    let (engine, clock) = engine();
    let tee = stock(&engine, "tee", 5);
    let mug = stock(&engine, "mug", 5);
    let held = hold(&engine, &one(tee, 2)).unwrap();
    assert_eq!(
        engine.confirm_lines(held.id, &one(mug, 1)),
        Err(EngineError::NotInReservation {
            id: held.id,
            sku: mug
        })
    );
    assert_eq!(
        engine.confirm_lines(held.id, &one(tee, 3)),
        Err(EngineError::ExceedsReservation {
            id: held.id,
            sku: tee,
            requested: 3,
            allowed: 2,
            action: "confirmed"
        })
    );
    let nothing = engine.confirm_lines(held.id, &one(tee, 0)).unwrap_err();
    assert!(
        nothing.to_string().contains("or cancel the reservation"),
        "{nothing}"
    );
    let twice = [
        Line {
            sku: tee,
            quantity: 1,
        },
        Line {
            sku: tee,
            quantity: 1,
        },
    ];
    assert_eq!(
        engine.confirm_lines(held.id, &twice),
        Err(EngineError::DuplicateSku { sku: tee })
    );
    assert_eq!(counts(&engine, tee), (3, 2, 0));
    assert_eq!(
        engine.reservation(held.id).unwrap().status,
        HoldStatus::Held
    );
    // Past the deadline it expires first, as a whole confirm would.
    clock.advance(engine.config().default_ttl_ms);
    assert!(matches!(
        engine.confirm_lines(held.id, &one(tee, 1)),
        Err(EngineError::InvalidTransition {
            status: HoldStatus::Expired,
            ..
        })
    ));
    assert_eq!(counts(&engine, tee), (5, 0, 0));
}

fn line(sku: SkuId, quantity: u32) -> Line {
    Line { sku, quantity }
}

/// A gift box of 1 mug and 2 coasters, with 5 mugs and 7 coasters.
fn gift_box(engine: &Engine) -> (SkuId, SkuId, SkuId) {
    let mug = stock(engine, "mug", 5);
    let coaster = stock(engine, "coaster", 7);
    let (gift, version) = engine
        .define_kit("gift", &[line(mug, 1), line(coaster, 2)])
        .unwrap();
    assert_eq!(version, 1);
    (gift, mug, coaster)
}

#[test]
fn a_kit_takes_its_components_and_is_as_available_as_they_allow() {
    let (engine, _) = engine();
    let (gift, mug, coaster) = gift_box(&engine);
    let kit = doc(&engine, gift);
    assert_eq!(kit.components, Some(vec![line(mug, 1), line(coaster, 2)]));
    assert_eq!(
        (kit.available, kit.held, kit.sold),
        (3, 0, 0),
        "7 coasters make 3 boxes"
    );

    let receipt = hold(&engine, &[line(gift, 2)]).unwrap();
    let record = engine.reservation(receipt.id).unwrap();
    assert_eq!(
        record.lines,
        [line(mug, 2), line(coaster, 4)],
        "it holds the components"
    );
    assert_eq!(counts(&engine, mug), (3, 2, 0));
    assert_eq!(counts(&engine, coaster), (3, 4, 0));
    assert_eq!(doc(&engine, gift).available, 1);
    // Two more boxes need 4 coasters; 3 are left: nothing is taken.
    assert!(matches!(
        hold(&engine, &[line(gift, 2)]),
        Err(EngineError::SoldOut { sku, available: 3, requested: 4 }) if sku == coaster
    ));
    assert_eq!(counts(&engine, mug), (3, 2, 0));
    engine.cancel(receipt.id).unwrap();
    assert_eq!(
        (counts(&engine, mug), counts(&engine, coaster)),
        ((5, 0, 0), (7, 0, 0))
    );
}

/// The Medusa bug: a cart of a kit and one of its components checked each
/// line against the same untouched count. Here the component is counted
/// once across both lines.
#[test]
fn a_kit_and_its_component_in_one_cart_count_the_component_once() {
    let (engine, _) = engine();
    let (gift, mug, coaster) = gift_box(&engine);
    // 1 box (2 coasters) + 6 coasters = 8 coasters: one more than there are.
    let refused = hold(&engine, &[line(gift, 1), line(coaster, 6)]);
    assert!(
        matches!(refused, Err(EngineError::SoldOut { sku, available: 7, requested: 8 }) if sku == coaster),
        "{refused:?}"
    );
    assert_eq!(
        (counts(&engine, mug), counts(&engine, coaster)),
        ((5, 0, 0), (7, 0, 0))
    );
    // 1 box + 5 coasters = 7: exactly what there is, in one line.
    let receipt = hold(&engine, &[line(gift, 1), line(coaster, 5)]).unwrap();
    let record = engine.reservation(receipt.id).unwrap();
    assert_eq!(record.lines, [line(mug, 1), line(coaster, 7)]);
    assert_eq!(counts(&engine, coaster), (0, 7, 0));
}

#[test]
fn kits_are_defined_only_where_they_make_sense() {
    let (engine, _) = engine();
    let (gift, mug, coaster) = gift_box(&engine);
    let refused =
        |name: &str, components: &[Line]| engine.define_kit(name, components).unwrap_err();
    let kit_refused = |sku, reason| EngineError::KitRefused { sku, reason };
    use hotstock::KitRefusal::*;
    assert_eq!(
        refused("mug", &[line(coaster, 1)]),
        kit_refused(mug, HasStock)
    );
    assert_eq!(
        refused("duo", &[line(gift, 1)]),
        kit_refused(gift, ComponentIsAKit)
    );
    assert_eq!(
        refused("gift", &[line(gift, 1)]),
        kit_refused(gift, ComponentIsAKit)
    );
    assert_eq!(
        refused("duo", &[]),
        EngineError::InvalidKit { components: 0 }
    );
    let many: Vec<Line> = (0..17)
        .map(|i| line(stock(&engine, &format!("s{i}"), 1), 1))
        .collect();
    assert_eq!(
        refused("duo", &many),
        EngineError::InvalidKit { components: 17 }
    );
    assert_eq!(
        refused("duo", &[line(mug, 1), line(mug, 2)]),
        kit_refused(mug, NamedTwice)
    );
    assert_eq!(
        refused("duo", &[line(mug, 0)]),
        EngineError::InvalidQuantity { quantity: 0 }
    );
    assert!(matches!(
        refused("duo", &[line(SkuId::from_index(9_999), 1)]),
        EngineError::UnknownSkuId { .. }
    ));
    assert!(
        engine.sku("duo").is_err(),
        "a refused definition creates nothing"
    );
    // A kit has no stock, limit or threshold of its own, and no record-less
    // sale: every such change is refused and nothing changes.
    assert_eq!(
        engine.restock(gift, 1).unwrap_err(),
        kit_refused(gift, IsAKit)
    );
    assert_eq!(
        engine.adjust(gift, -1).unwrap_err(),
        kit_refused(gift, IsAKit)
    );
    assert_eq!(
        engine.put_sku("gift", 4, None, None).unwrap_err(),
        kit_refused(gift, IsAKit)
    );
    assert_eq!(
        engine.set_limit(gift, Some(1)).unwrap_err(),
        kit_refused(gift, IsAKit)
    );
    assert_eq!(
        engine.set_low_stock(gift, Some(1)).unwrap_err(),
        kit_refused(gift, IsAKit)
    );
    assert_eq!(engine.sell(gift, 1).unwrap_err(), kit_refused(gift, IsAKit));
    assert_eq!(doc(&engine, gift).version, 1);
}

#[test]
fn a_redefined_kit_leaves_reservations_with_the_components_they_took() {
    let (engine, _) = engine();
    let (gift, mug, coaster) = gift_box(&engine);
    let before = hold(&engine, &[line(gift, 1)]).unwrap();
    let (_, version) = engine.define_kit("gift", &[line(mug, 2)]).unwrap();
    assert_eq!(version, 2);
    let after = hold(&engine, &[line(gift, 1)]).unwrap();
    assert_eq!(
        engine.reservation(before.id).unwrap().lines,
        [line(mug, 1), line(coaster, 2)]
    );
    assert_eq!(engine.reservation(after.id).unwrap().lines, [line(mug, 2)]);
    engine.cancel(before.id).unwrap();
    assert_eq!(counts(&engine, coaster), (7, 0, 0));
    assert_eq!(counts(&engine, mug), (3, 2, 0));
}

#[test]
fn a_kit_order_past_the_limits_is_refused_and_takes_nothing() {
    let (engine, _) = engine();
    let (gift, mug, _) = gift_box(&engine);
    // 600,000 boxes need 1,200,000 coasters in one line: past a line's limit.
    assert_eq!(
        hold(&engine, &[line(gift, 600_000)]).unwrap_err(),
        EngineError::InvalidQuantity {
            quantity: 1_200_000
        }
    );
    // 16 two-component kits and one more line: 33 lines once expanded.
    let mut lines = Vec::new();
    for i in 0..16 {
        let a = stock(&engine, &format!("a{i}"), 1);
        let b = stock(&engine, &format!("b{i}"), 1);
        let (kit, _) = engine
            .define_kit(&format!("k{i}"), &[line(a, 1), line(b, 1)])
            .unwrap();
        lines.push(line(kit, 1));
    }
    lines.push(line(mug, 1));
    assert_eq!(
        hold(&engine, &lines).unwrap_err(),
        EngineError::TooManyLines { lines: 33 }
    );
    assert_eq!(counts(&engine, mug), (5, 0, 0));
}

/// A sale window (#16): orders before its start and from its end are
/// refused and take nothing; one inside it sells. A keyed order refused
/// before the start runs when retried after it (the refusal is not kept),
/// and a keyed order made inside is replayed after the end. A kit and a
/// cart are refused whole when one SKU ordered is not on sale.
#[test]
fn a_sale_window_refuses_orders_outside_it_and_takes_nothing() {
    let (engine, clock) = engine();
    let tee = stock(&engine, "tee", 5);
    let mug = stock(&engine, "mug", 5);
    let window = hotstock::SaleWindow {
        starts_at_ms: Some(T0 + 100),
        ends_at_ms: Some(T0 + 200),
    };
    let before = doc(&engine, tee).version;
    assert_eq!(engine.set_sale_window(tee, window), Ok(before + 1));
    assert_eq!(doc(&engine, tee).sale_window, window);
    let early = Order {
        lines: &one(tee, 1),
        idempotency_key: Some("early"),
        ..Order::default()
    };
    let refused = Err(EngineError::NotOnSale {
        sku: tee,
        now_ms: T0,
        not_yet: true,
    });
    assert_eq!(engine.reserve(&early), refused);
    let cart = [
        Line {
            sku: mug,
            quantity: 1,
        },
        Line {
            sku: tee,
            quantity: 1,
        },
    ];
    assert!(matches!(
        hold(&engine, &cart),
        Err(EngineError::NotOnSale { .. })
    ));
    assert_eq!(counts(&engine, tee), (5, 0, 0));
    assert_eq!(counts(&engine, mug), (5, 0, 0), "the cart took nothing");
    let err = engine.reserve(&early).unwrap_err().to_string();
    assert!(err.contains("not on sale yet"), "{err}");

    clock.set(T0 + 100);
    let made = engine.reserve(&early).unwrap();
    assert!(!made.replayed, "the refusal before the start was not kept");
    assert!(hold(&engine, &cart).is_ok());

    clock.set(T0 + 200);
    let replay = engine.reserve(&early).unwrap();
    assert!(replay.replayed && replay.id == made.id);
    let late = hold(&engine, &one(tee, 1)).unwrap_err();
    assert!(late.to_string().contains("no longer on sale"), "{late}");
    assert_eq!(counts(&engine, tee), (3, 2, 0));

    // Open-ended again: on sale at once.
    engine
        .set_sale_window(tee, hotstock::SaleWindow::ALWAYS)
        .unwrap();
    assert!(hold(&engine, &one(tee, 1)).is_ok());
    // An end before its start, or past what a store keeps: refused.
    for bad in [(Some(T0), Some(T0)), (None, Some(u64::MAX))] {
        let bad = hotstock::SaleWindow {
            starts_at_ms: bad.0,
            ends_at_ms: bad.1,
        };
        assert_eq!(
            engine.set_sale_window(tee, bad),
            Err(EngineError::InvalidSaleWindow { window: bad })
        );
    }
    assert_eq!(doc(&engine, tee).sale_window, hotstock::SaleWindow::ALWAYS);
}

/// A kit is not on sale when its own window, or a component's, is shut.
#[test]
fn a_kit_follows_its_own_window_and_its_components() {
    let (engine, _) = engine();
    let mug = stock(&engine, "mug", 5);
    let (pair, _) = engine
        .define_kit(
            "pair",
            &[Line {
                sku: mug,
                quantity: 2,
            }],
        )
        .unwrap();
    let shut = hotstock::SaleWindow {
        starts_at_ms: None,
        ends_at_ms: Some(T0),
    };
    for closed in [pair, mug] {
        engine.set_sale_window(closed, shut).unwrap();
        match hold(&engine, &one(pair, 1)) {
            Err(EngineError::NotOnSale { sku, .. }) => assert_eq!(sku, closed),
            other => panic!("{other:?}"),
        }
        assert_eq!(counts(&engine, mug), (5, 0, 0));
        engine
            .set_sale_window(closed, hotstock::SaleWindow::ALWAYS)
            .unwrap();
    }
    assert!(hold(&engine, &one(pair, 1)).is_ok());
    assert_eq!(counts(&engine, mug), (3, 2, 0));
}

/// A keyed refund of a hold (refused: a hold is not sold) keeps its key:
/// the key sent again with another request is refused as reused, and with
/// the same request answers the same refusal. The model found it with
/// lines of 0 units ending in SKU id 0: the two requests had one print.
#[test]
fn a_refused_keyed_refund_keeps_its_key() {
    let (engine, _) = engine();
    let first_sku = stock(&engine, "s0", 1);
    let second_sku = stock(&engine, "s1", 3);
    let cart = [
        Line {
            sku: second_sku,
            quantity: 1,
        },
        Line {
            sku: first_sku,
            quantity: 1,
        },
    ];
    let id = hold(&engine, &cart).unwrap().id;
    let nothing = [
        Line {
            sku: second_sku,
            quantity: 0,
        },
        Line {
            sku: first_sku,
            quantity: 0,
        },
    ];
    let first = engine.refund_once(id, Some(&nothing), "refund-1");
    assert!(
        matches!(first, Err(EngineError::InvalidTransition { .. })),
        "{first:?}"
    );
    assert_eq!(engine.refund_once(id, Some(&nothing), "refund-1"), first);
    let other = [Line {
        sku: second_sku,
        quantity: 0,
    }];
    assert_eq!(
        engine.refund_once(id, Some(&other), "refund-1"),
        Err(EngineError::IdempotencyKeyReused)
    );
}

/// The hold figures `/metrics` serves follow every way a hold ends: a
/// confirm in part, a confirm found past its deadline, the timer, a read,
/// an extension found past its deadline; an extension's stale timer entry
/// is not counted as due.
#[test]
fn hold_figures_follow_every_way_a_hold_ends() {
    let (engine, clock) = extending_engine();
    let sku = stock(&engine, "tee", 20);
    let figures = |within_ms| {
        let f = engine.held_figures(within_ms);
        (f.open, f.due)
    };
    let [a, b, d, e] = [1, 1, 2, 1].map(|units| hold(&engine, &one(sku, units)).unwrap().id);
    let long = Order {
        lines: &one(sku, 1),
        ttl_ms: Some(3_000),
        ..Order::default()
    };
    let c = engine.reserve(&long).unwrap().id;
    assert_eq!((figures(0), figures(1_000)), ((5, 0), (5, 4)));
    engine.extend(a, 2_000).unwrap();
    assert_eq!(figures(1_000), (5, 3), "a's old entry is stale");
    engine.confirm_lines(d, &one(sku, 1)).unwrap();
    assert_eq!(figures(1_000), (4, 2));
    clock.advance(1_000);
    assert!(engine.confirm(e).is_err(), "e is past its deadline");
    assert_eq!(figures(0), (3, 1), "b is due, not yet expired");
    assert_eq!(engine.run_timers().expired, 1);
    assert_eq!(engine.reservation(b).unwrap().status, HoldStatus::Expired);
    assert_eq!((figures(0), figures(1_000)), ((2, 0), (2, 1)));
    clock.advance(1_000);
    assert_eq!(engine.reservation(a).unwrap().status, HoldStatus::Expired);
    assert_eq!(figures(0), (1, 0));
    clock.advance(1_000);
    assert!(engine.extend(c, 1_000).is_err(), "c is past its deadline");
    assert_eq!(figures(u64::MAX), (0, 0));
    assert_eq!(counts(&engine, sku), (19, 0, 1));
}

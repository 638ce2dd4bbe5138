use super::*;

fn policy() -> StripePolicy {
    StripePolicy {
        stripes: 4,
        widen_after_conflicts: 1,
        widen_min_units: 8,
        narrow_below_units: 4,
    }
}

fn stocked(units: u64) -> StockCell {
    let cell = StockCell::new();
    cell.restock(units, 0, |_| {}, |_| {}).unwrap();
    cell
}

/// A refusal says whether the SKU allows backorders, so the engine takes
/// the lock a second time (`take_backordered`) only when it might owe
/// units: a sold-out crowd of a plain SKU costs one lock per refusal.
#[test]
fn a_sold_out_verdict_says_whether_backorders_may_take_the_rest() {
    let cell = stocked(1);
    let p = policy();
    let verdict = cell.take(2, TakeInto::Sold, 0, &p).unwrap_err();
    assert_eq!((verdict.available, verdict.may_backorder), (1, false));
    let rule = BackorderRule {
        limit: 5,
        until_ms: Some(10),
    };
    cell.set_backorder(rule, |_| {});
    let verdict = cell.take(2, TakeInto::Sold, 0, &p).unwrap_err();
    assert_eq!((verdict.available, verdict.may_backorder), (1, true));
    // The allowance's end is the take past zero's to judge, with a clock.
    assert_eq!(
        cell.take_backordered(2, TakeInto::Sold, 10, 0, &p),
        Err(SoldOut {
            available: 1,
            may_backorder: false
        })
    );
    assert_eq!(cell.take_backordered(2, TakeInto::Sold, 9, 0, &p), Ok(1));
}

#[test]
fn take_until_sold_out_then_verdict_is_exact() {
    let cell = stocked(3);
    let p = policy();
    assert_eq!(cell.take(2, TakeInto::Sold, 0, &p), Ok(()));
    assert_eq!(
        cell.take(2, TakeInto::Sold, 0, &p),
        Err(SoldOut {
            available: 1,
            may_backorder: false
        })
    );
    assert_eq!(cell.take(1, TakeInto::Held, 0, &p), Ok(()));
    let s = cell.snapshot();
    assert_eq!((s.available, s.held, s.sold, s.received), (0, 1, 2, 3));
}

#[test]
fn stripe_local_miss_falls_to_slow_path_not_sold_out() {
    let cell = stocked(100);
    let p = policy();
    cell.widen(0, &p);
    assert_eq!(cell.snapshot().width, 4);
    // Each stripe holds 25; ask 60 from stripe 1: no stripe can cover it,
    // the slow path drains and serves it.
    assert_eq!(cell.take(60, TakeInto::Sold, 1, &p), Ok(()));
    // 40 left, above narrow_below: still wide and spread.
    let s = cell.snapshot();
    assert_eq!((s.available, s.sold, s.width), (40, 60, 4));
}

#[test]
fn narrows_when_stock_runs_low_and_keeps_counts() {
    let cell = stocked(16);
    let p = policy();
    cell.widen(2, &p);
    assert_eq!(cell.snapshot().width, 4);
    assert_eq!(cell.take(13, TakeInto::Held, 2, &p), Ok(()));
    let s = cell.snapshot();
    assert_eq!((s.available, s.held, s.width), (3, 13, 1));
    cell.release_held(13, 3);
    let s = cell.snapshot();
    assert_eq!((s.available, s.held, s.sold), (16, 0, 0));
}

#[test]
fn widen_needs_stock_and_contention() {
    let cell = stocked(4);
    let p = policy();
    cell.widen(0, &p);
    assert_eq!(cell.snapshot().width, 1, "too little stock to spread");
    cell.restock(100, 0, |_| {}, |_| {}).unwrap();
    cell.widen(0, &p);
    assert_eq!(cell.snapshot().width, 4);
}

#[test]
fn withdraw_refuses_below_zero_and_changes_nothing() {
    let cell = stocked(5);
    let p = policy();
    assert_eq!(
        cell.withdraw(6, 0, &p, |_| {}),
        Err(Insufficient { available: 5 })
    );
    assert_eq!(cell.snapshot().version, 1);
    let change = cell.withdraw(5, 0, &p, |_| {}).unwrap();
    assert_eq!(
        change,
        OperatorChange {
            delta: -5,
            version: 2,
            safety_stock: None,
        }
    );
    let s = cell.snapshot();
    assert_eq!((s.available, s.received), (0, 0));
}

#[test]
fn set_available_checks_version_and_returns_delta() {
    let cell = stocked(10);
    let p = policy();
    cell.take(4, TakeInto::Held, 0, &p).unwrap();
    assert_eq!(
        cell.set_stock(
            Some(StockLevel::Available(3)),
            None,
            None,
            Some(7),
            0,
            &p,
            |_| {}
        ),
        Err(SetError::Stale(StaleVersion { current: 1 }))
    );
    let change = cell
        .set_stock(
            Some(StockLevel::Available(3)),
            None,
            Some(Some(2)),
            Some(1),
            0,
            &p,
            |_| {},
        )
        .unwrap();
    assert_eq!(
        change,
        OperatorChange {
            delta: -3,
            version: 2,
            safety_stock: None,
        }
    );
    let s = cell.snapshot();
    assert_eq!((s.available, s.held, s.received), (3, 4, 7));
    assert_eq!(s.per_customer_limit, Some(2));
}

#[test]
fn restock_refuses_past_the_stock_limit() {
    let cell = stocked(MAX_STOCK_PER_SKU);
    assert_eq!(
        cell.restock(1, 0, |_| {}, |_| {}),
        Err(TooMuchStock {
            received: MAX_STOCK_PER_SKU
        })
    );
    let p = policy();
    assert!(matches!(
        cell.set_stock(
            Some(StockLevel::Available(MAX_STOCK_PER_SKU + 1)),
            None,
            None,
            None,
            0,
            &p,
            |_| {}
        ),
        Err(SetError::TooMuch(_))
    ));
    assert_eq!(cell.snapshot().available, MAX_STOCK_PER_SKU);
}

#[test]
fn limit_change_bumps_version() {
    let cell = StockCell::new();
    assert_eq!(cell.per_customer_limit(), None);
    assert_eq!(cell.set_limit(Some(1), |_| {}), 1);
    assert_eq!(cell.per_customer_limit(), Some(1));
    assert_eq!(cell.set_limit(None, |_| {}), 2);
    assert_eq!(cell.per_customer_limit(), None);
}

#[test]
fn contention_widens_on_its_own() {
    let cell = stocked(1_000);
    let p = policy();
    // widen_after_conflicts = 1: a single recorded conflict widens.
    cell.note_conflict(0, &p);
    assert_eq!(cell.snapshot().width, 4);
    assert_eq!(cell.snapshot().available, 1_000);
}

/// A cell whose shelf holds `on_hand` units, `safety` of them kept back.
fn shelf(on_hand: u64, safety: u64) -> (StockCell, OperatorChange) {
    let cell = StockCell::new();
    let level = Some(StockLevel::OnHand(on_hand));
    let change = cell
        .set_stock(level, Some(safety), None, None, 0, &policy(), |_| {})
        .unwrap();
    (cell, change)
}

#[test]
fn on_hand_keeps_the_safety_stock_back_and_counts_held_units() {
    let p = policy();
    let (cell, change) = shelf(10, 3);
    assert_eq!((change.delta, change.safety_stock), (7, Some(3)));
    cell.take(2, TakeInto::Held, 0, &p).unwrap();
    cell.take(1, TakeInto::Sold, 0, &p).unwrap();
    let s = cell.snapshot();
    assert_eq!((s.available, s.held, s.sold, s.safety_stock), (4, 2, 1, 3));
    assert_eq!(s.received, 7, "the safety stock is not for sale");

    // The warehouse counts 8 units there (the sold one has shipped): 2 held
    // and 3 kept back leave 3 for sale.
    let change = cell
        .set_stock(Some(StockLevel::OnHand(8)), None, None, None, 0, &p, |_| {})
        .unwrap();
    assert_eq!((change.delta, change.safety_stock), (-1, None));
    let s = cell.snapshot();
    assert_eq!((s.available, s.held, s.safety_stock), (3, 2, 3));

    // A safety stock change alone keeps the units on hand: 2 more kept back.
    cell.set_stock(None, Some(5), None, None, 0, &p, |_| {})
        .unwrap();
    let s = cell.snapshot();
    assert_eq!((s.available, s.held, s.safety_stock), (1, 2, 5));
    assert_eq!(s.available + s.held + s.sold, s.received);
}

#[test]
fn on_hand_below_what_is_committed_is_refused_and_changes_nothing() {
    let p = policy();
    let (cell, _) = shelf(10, 3);
    cell.take(4, TakeInto::Held, 0, &p).unwrap();
    let before = cell.snapshot();
    let refused = |level, safety| {
        cell.set_stock(level, safety, None, None, 0, &p, |_| {
            panic!("a refused change is never published")
        })
    };
    let below = |on_hand, safety_stock| {
        Err(SetError::BelowCommitted(BelowCommitted {
            on_hand,
            held: 4,
            safety_stock,
        }))
    };
    assert_eq!(refused(Some(StockLevel::OnHand(6)), None), below(6, 3));
    assert_eq!(refused(Some(StockLevel::OnHand(6)), Some(3)), below(6, 3));
    // Raising the safety stock past what is for sale: 10 on hand.
    assert_eq!(refused(None, Some(7)), below(10, 7));
    assert_eq!(cell.snapshot(), before);
    // Exactly what is committed is allowed, and nothing is left for sale.
    cell.set_stock(Some(StockLevel::OnHand(7)), None, None, None, 0, &p, |_| {})
        .unwrap();
    assert_eq!(cell.snapshot().available, 0);
}

#[test]
fn held_units_bound_from_above_counts_a_take_whose_count_is_not_yet_written() {
    let p = policy();
    let cell = stocked(10);
    // A take that has left `available` but whose `held` count is not yet
    // written (the instant between the CAS and the count): simulate it by
    // moving units out of the stripe by hand.
    cell.home.available.fetch_sub(2, Ordering::Relaxed);
    // on_hand 10 with 2 in flight: at most 8 can be for sale.
    cell.set_stock(
        Some(StockLevel::OnHand(10)),
        None,
        None,
        None,
        0,
        &p,
        |_| {},
    )
    .unwrap();
    assert_eq!(cell.snapshot().available, 8);
}

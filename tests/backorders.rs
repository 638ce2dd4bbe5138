//! Backorders (#14.4): units sold past zero up to a per-SKU allowance,
//! filled by the next restocks oldest first, with conservation kept and
//! owed units counted apart.

use std::sync::Arc;

use hotstock::core::cell::{BackorderRule, FILLS_PER_LOCK};
use hotstock::{
    Engine, EngineConfig, EngineError, HoldStatus, Line, ManualClock, Order, ReservationId, SkuId,
};

const T0: u64 = 1_700_000_000_000;

fn engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::with_clock(EngineConfig::default(), clock.clone()).unwrap();
    (engine, clock)
}

fn allow(engine: &Engine, sku: SkuId, limit: u64, until_ms: Option<u64>) {
    engine
        .set_backorder(sku, BackorderRule { limit, until_ms })
        .unwrap();
}

fn order(engine: &Engine, lines: &[Line], confirm: bool) -> Result<ReservationId, EngineError> {
    engine
        .reserve(&Order {
            lines,
            confirm,
            customer: Some("ann"),
            ..Order::default()
        })
        .map(|receipt| receipt.id)
}

fn line(sku: SkuId, quantity: u32) -> Line {
    Line { sku, quantity }
}

/// (available, held, sold, backordered), checked for conservation.
fn counts(engine: &Engine, sku: SkuId) -> (u64, u64, u64, u64) {
    let doc = engine.sku_document(sku).unwrap();
    assert!(doc.is_conserved(), "{doc:?}");
    (doc.available, doc.held, doc.sold, doc.backordered)
}

fn owed(engine: &Engine, id: ReservationId) -> Vec<u32> {
    engine.reservation(id).unwrap().owed
}

#[test]
fn without_an_allowance_nothing_sells_past_zero() {
    let (engine, _) = engine();
    let (tee, _) = engine.put_sku("tee", 1, None, None).unwrap();
    assert_eq!(
        order(&engine, &[line(tee, 2)], false),
        Err(EngineError::SoldOut {
            sku: tee,
            available: 1,
            requested: 2
        })
    );
    assert_eq!(counts(&engine, tee), (1, 0, 0, 0));
}

#[test]
fn a_line_takes_what_is_there_and_owes_the_rest_within_the_allowance() {
    let (engine, _) = engine();
    let (tee, _) = engine.put_sku("tee", 1, Some(Some(10)), None).unwrap();
    allow(&engine, tee, 4, None);
    let first = order(&engine, &[line(tee, 3)], false).unwrap();
    assert_eq!(owed(&engine, first), vec![2]);
    assert_eq!(counts(&engine, tee), (0, 1, 0, 2));
    // Past the allowance (2 owed + 3 > 4): refused, nothing changes.
    assert!(matches!(
        order(&engine, &[line(tee, 3)], false),
        Err(EngineError::SoldOut { available: 0, .. })
    ));
    assert_eq!(counts(&engine, tee), (0, 1, 0, 2));
    let second = order(&engine, &[line(tee, 2)], true).unwrap();
    assert_eq!(owed(&engine, second), vec![2]);
    assert_eq!(counts(&engine, tee), (0, 1, 0, 4));
    // The customer's limit counts owed units like any other.
    assert_eq!(engine.customer_units(tee, "ann"), 5, "3 + 2, owed ones too");
    let doc = engine.sku_document(tee).unwrap();
    assert_eq!((doc.backorder_limit, doc.backorder_until_ms), (4, None));
}

#[test]
fn the_allowance_ends_at_its_end_time() {
    let (engine, clock) = engine();
    let (pre, _) = engine.put_sku("pre", 0, None, None).unwrap();
    allow(&engine, pre, 10, Some(T0 + 1_000));
    order(&engine, &[line(pre, 1)], false).unwrap();
    clock.advance(1_000);
    assert!(matches!(
        order(&engine, &[line(pre, 1)], false),
        Err(EngineError::SoldOut { .. })
    ));
    assert_eq!(counts(&engine, pre), (0, 0, 0, 1), "owed units stay owed");
}

#[test]
fn a_restock_fills_the_oldest_backorders_first_then_stock() {
    let (engine, _) = engine();
    let (pre, _) = engine.put_sku("pre", 0, None, None).unwrap();
    allow(&engine, pre, 10, None);
    let a = order(&engine, &[line(pre, 2)], false).unwrap();
    let b = order(&engine, &[line(pre, 2)], true).unwrap();
    engine.restock(pre, 3).unwrap();
    assert_eq!((owed(&engine, a), owed(&engine, b)), (vec![], vec![1]));
    // A's 2 now held, B's 1 sold; nothing became available.
    assert_eq!(counts(&engine, pre), (0, 2, 1, 1));
    engine.restock(pre, 2).unwrap();
    assert_eq!(owed(&engine, b), Vec::<u32>::new());
    assert_eq!(counts(&engine, pre), (1, 2, 2, 0));
    assert!(engine.backorder_queue(pre).unwrap().is_empty());
}

#[test]
fn a_restock_fills_more_reservations_than_one_lock_hold_may() {
    let (engine, _) = engine();
    let (pre, _) = engine.put_sku("pre", 0, None, None).unwrap();
    let many = 2 * FILLS_PER_LOCK + 5;
    allow(&engine, pre, many as u64, None);
    let ids: Vec<ReservationId> = (0..many)
        .map(|_| order(&engine, &[line(pre, 1)], true).unwrap())
        .collect();
    engine.restock(pre, many as u64 + 7).unwrap();
    assert!(ids.iter().all(|&id| owed(&engine, id).is_empty()));
    assert_eq!(counts(&engine, pre), (7, 0, many as u64, 0));
}

#[test]
fn a_cancel_drops_owed_units_and_gives_back_received_ones() {
    let (engine, _) = engine();
    let (pre, _) = engine.put_sku("pre", 1, None, None).unwrap();
    allow(&engine, pre, 10, None);
    let id = order(&engine, &[line(pre, 4)], false).unwrap();
    engine.restock(pre, 1).unwrap();
    assert_eq!(counts(&engine, pre), (0, 2, 0, 2));
    assert_eq!(engine.cancel(id), Ok(HoldStatus::Cancelled));
    assert_eq!(counts(&engine, pre), (2, 0, 0, 0));
    assert!(engine.backorder_queue(pre).unwrap().is_empty());
}

#[test]
fn an_expiry_drops_owed_units() {
    let (engine, clock) = engine();
    let (pre, _) = engine.put_sku("pre", 0, None, None).unwrap();
    allow(&engine, pre, 10, None);
    let id = order(&engine, &[line(pre, 3)], false).unwrap();
    clock.advance(EngineConfig::default().default_ttl_ms);
    assert_eq!(engine.reservation(id).unwrap().status, HoldStatus::Expired);
    assert_eq!(counts(&engine, pre), (0, 0, 0, 0));
}

#[test]
fn a_confirm_keeps_owed_units_owed_and_the_fill_sells_them() {
    let (engine, _) = engine();
    let (pre, _) = engine.put_sku("pre", 1, None, None).unwrap();
    allow(&engine, pre, 10, None);
    let id = order(&engine, &[line(pre, 3)], false).unwrap();
    engine.confirm(id).unwrap();
    assert_eq!(counts(&engine, pre), (0, 0, 1, 2));
    engine.restock(pre, 5).unwrap();
    assert_eq!(counts(&engine, pre), (3, 0, 3, 0));
}

#[test]
fn a_confirm_of_part_gives_up_owed_units_first() {
    let (engine, _) = engine();
    let (pre, _) = engine.put_sku("pre", 1, None, None).unwrap();
    allow(&engine, pre, 10, None);
    let id = order(&engine, &[line(pre, 3)], false).unwrap();
    // Sell 2 of 3: the unit given up is an owed one; 1 stays owed.
    engine.confirm_lines(id, &[line(pre, 2)]).unwrap();
    assert_eq!(owed(&engine, id), vec![1]);
    assert_eq!(counts(&engine, pre), (0, 0, 1, 1));
    // Sell 1 of 3: both owed units go, the received one is sold.
    let other = order(&engine, &[line(pre, 3)], false).unwrap();
    assert_eq!(owed(&engine, other), vec![3]);
    engine.restock(pre, 2).unwrap();
    // The first reservation's 1 owed unit, then the other's first unit.
    assert_eq!((owed(&engine, id), owed(&engine, other)), (vec![], vec![2]));
    engine.confirm_lines(other, &[line(pre, 1)]).unwrap();
    assert_eq!(owed(&engine, other), Vec::<u32>::new());
    assert_eq!(counts(&engine, pre), (0, 0, 3, 0));
}

#[test]
fn a_refund_cancels_owed_units_before_it_returns_received_ones() {
    let (engine, _) = engine();
    let (pre, _) = engine.put_sku("pre", 1, None, None).unwrap();
    allow(&engine, pre, 10, None);
    let id = order(&engine, &[line(pre, 3)], true).unwrap();
    assert_eq!(counts(&engine, pre), (0, 0, 1, 2));
    engine.refund_lines(id, &[line(pre, 1)]).unwrap();
    assert_eq!(
        (owed(&engine, id), counts(&engine, pre)),
        (vec![1], (0, 0, 1, 1))
    );
    engine.refund_lines(id, &[line(pre, 2)]).unwrap();
    assert_eq!(counts(&engine, pre), (1, 0, 0, 0));
    assert_eq!(engine.reservation(id).unwrap().status, HoldStatus::Refunded);
}

#[test]
fn a_refused_cart_undoes_its_backordered_line() {
    let (engine, _) = engine();
    let (pre, _) = engine.put_sku("pre", 1, None, None).unwrap();
    let (tee, _) = engine.put_sku("tee", 0, None, None).unwrap();
    allow(&engine, pre, 10, None);
    assert!(matches!(
        order(&engine, &[line(pre, 3), line(tee, 1)], false),
        Err(EngineError::SoldOut { sku, .. }) if sku == tee
    ));
    assert_eq!(counts(&engine, pre), (1, 0, 0, 0));
    // The allowance is whole again: 1 taken and 9 owed fit.
    order(&engine, &[line(pre, 10)], false).unwrap();
    assert_eq!(counts(&engine, pre), (0, 1, 0, 9));
}

#[test]
fn a_cart_owes_on_two_skus_and_ends_on_both() {
    let (engine, _) = engine();
    let (a, _) = engine.put_sku("a", 1, None, None).unwrap();
    let (b, _) = engine.put_sku("b", 0, None, None).unwrap();
    allow(&engine, a, 5, None);
    allow(&engine, b, 5, None);
    let id = order(&engine, &[line(b, 2), line(a, 2)], false).unwrap();
    assert_eq!(owed(&engine, id), vec![2, 1]);
    engine.restock(b, 1).unwrap();
    assert_eq!(owed(&engine, id), vec![1, 1]);
    engine.cancel(id).unwrap();
    assert_eq!(counts(&engine, a), (1, 0, 0, 0));
    assert_eq!(counts(&engine, b), (1, 0, 0, 0));
}

#[test]
fn a_backorder_limit_past_the_stock_limit_is_refused() {
    let (engine, _) = engine();
    let (tee, _) = engine.put_sku("tee", 0, None, None).unwrap();
    let rule = BackorderRule {
        limit: u64::MAX,
        until_ms: None,
    };
    assert!(matches!(
        engine.set_backorder(tee, rule),
        Err(EngineError::InvalidBackorderLimit { .. })
    ));
    // Stores keep times as signed 64-bit numbers (schemathesis found the
    // end past them accepted).
    let rule = BackorderRule {
        limit: 1,
        until_ms: Some(1 << 63),
    };
    assert!(matches!(
        engine.set_backorder(tee, rule),
        Err(EngineError::InvalidBackorderEnd { .. })
    ));
    assert_eq!(
        engine.sku_document(tee).unwrap().version,
        1,
        "nothing changed"
    );
}

/// Buyers racing past zero and restocks: no more owed than the allowance
/// at any settle, every unit accounted for at the end.
#[test]
fn concurrent_buyers_and_restocks_conserve_every_unit() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let (pre, _) = engine.put_sku("pre", 5, None, None).unwrap();
    allow(&engine, pre, 50, None);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                for i in 0..200 {
                    if t == 0 && i % 10 == 0 {
                        engine.restock(pre, 3).unwrap();
                    }
                    if let Ok(id) = order(&engine, &[line(pre, 2)], i % 2 == 0) {
                        taken.push(id);
                    }
                    if i % 3 == 0 {
                        if let Some(id) = taken.pop() {
                            let _ = engine.cancel(id);
                            let _ = engine.refund(id);
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // `counts` checks conservation; the queue owes exactly what the SKU
    // counts as backordered, within the allowance.
    let (_, _, _, backordered) = counts(&engine, pre);
    assert!(backordered <= 50);
    let queue = engine.backorder_queue(pre).unwrap();
    let queued: u64 = queue.iter().map(|o| u64::from(o.units)).sum();
    assert_eq!(queued, backordered);
    assert!(queue.windows(2).all(|w| w[0].ticket < w[1].ticket));
}

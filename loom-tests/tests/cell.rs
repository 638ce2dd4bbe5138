//! Loom models of `StockCell`: every interleaving of a few operations on one
//! SKU's stripes. Each model is small and names the race it explores.
#![cfg(loom)]

use hotstock::models::{SoldOut, StockCell, StockLevel, StripePolicy, TakeInto};
use loom::sync::Arc;
use loom::thread;

/// Widens at the first chance and narrows only when empty, so two stripes
/// come into play with one or two units.
fn policy() -> StripePolicy {
    StripePolicy {
        stripes: 2,
        widen_after_conflicts: 1,
        widen_min_units: 1,
        narrow_below_units: 1,
    }
}

/// Race: two buyers CAS the same (home) stripe for the last unit.
/// Exactly one wins; the loser's verdict says 0 available.
#[test]
fn two_takers_on_one_stripe_for_the_last_unit() {
    loom::model(|| {
        let cell = Arc::new(StockCell::new());
        cell.restock(1, 0, |_| {}, |_| {}).unwrap();
        let p = policy();
        let other = {
            let cell = cell.clone();
            thread::spawn(move || cell.take(1, TakeInto::Sold, 0, &p))
        };
        let mine = cell.take(1, TakeInto::Sold, 0, &p);
        let theirs = other.join().unwrap();
        let wins = [mine, theirs].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "exactly one buyer gets the last unit");
        for verdict in [mine, theirs] {
            if let Err(SoldOut { available, .. }) = verdict {
                assert_eq!(available, 0);
            }
        }
        let s = cell.snapshot();
        assert_eq!((s.available, s.sold, s.received), (0, 1, 1));
    });
}

/// Race: a buyer takes while an operator-triggered rebalance drains every
/// stripe and spreads the units again (widening the cell). The buyer must
/// not lose the unit it was entitled to, and no unit may be created or lost.
#[test]
fn take_races_drain_and_rebalance() {
    loom::model(|| {
        let cell = Arc::new(StockCell::new());
        cell.restock(2, 0, |_| {}, |_| {}).unwrap();
        let p = policy();
        let rebalancer = {
            let cell = cell.clone();
            thread::spawn(move || cell.widen(1, &p))
        };
        let taken = cell.take(1, TakeInto::Sold, 0, &p);
        rebalancer.join().unwrap();
        assert_eq!(
            taken,
            Ok(()),
            "2 units existed at every instant: the take must succeed"
        );
        let s = cell.snapshot();
        assert_eq!((s.available, s.sold), (1, 1));
    });
}

/// Race: a drain against a give-back and a take (invariant 4, "no stranded
/// stock"). Stripes hold 1 + 1; the buyer asks for 2, which no stripe can
/// cover alone, so its slow path drains. Meanwhile another thread first
/// gives a held unit back (3 available) and then takes one (2 available):
/// stock never drops below the 2 asked, so `SoldOut` would be a lie. It
/// would happen if a give-back could land on a stripe the drain had already
/// emptied while the take emptied one it had not reached; units entering
/// only under the cell lock rules that out.
#[test]
fn sold_out_verdict_races_give_back() {
    loom::model(|| {
        let cell = Arc::new(StockCell::new());
        let p = policy();
        cell.restock(3, 0, |_| {}, |_| {}).unwrap();
        cell.take(1, TakeInto::Held, 0, &p).unwrap();
        cell.widen(0, &p);
        assert_eq!(cell.snapshot().width, 2);
        let other = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.release_held(1, 0);
                cell.take(1, TakeInto::Sold, 1, &p)
            })
        };
        let taken = cell.take(2, TakeInto::Sold, 0, &p);
        let theirs = other.join().unwrap();
        assert_eq!(
            taken,
            Ok(()),
            "2 or more units were available at every instant"
        );
        assert_eq!(theirs, Ok(()), "3 units for 3 asked");
        let s = cell.snapshot();
        assert_eq!((s.available, s.held, s.sold, s.received), (0, 0, 3, 3));
    });
}

/// Race: two buyers on two stripes of a wide cell holding one unit each,
/// each asking for more than its stripe has. The slow path's drain must
/// serve one of them exactly; the other may be refused only with a truthful
/// count.
#[test]
fn two_slow_paths_drain_concurrently() {
    loom::model(|| {
        let cell = Arc::new(StockCell::new());
        let p = policy();
        cell.restock(2, 0, |_| {}, |_| {}).unwrap();
        cell.widen(0, &p);
        let other = {
            let cell = cell.clone();
            thread::spawn(move || cell.take(2, TakeInto::Sold, 1, &p))
        };
        let mine = cell.take(2, TakeInto::Sold, 0, &p);
        let theirs = other.join().unwrap();
        let wins = [mine, theirs].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1);
        for verdict in [mine, theirs] {
            if let Err(SoldOut { available, .. }) = verdict {
                assert!(available < 2, "SoldOut while 2 units were available");
            }
        }
        let s = cell.snapshot();
        assert_eq!((s.available, s.sold), (0, 2));
    });
}

/// Race: an operator restocks while a buyer takes, and the journal records
/// both. The restock is recorded under the cell lock *before* its units are
/// credited, so the buyer's take of that unit is always recorded after it:
/// no cut of the journal holds the sale without the restock (which
/// recovery would read as `sold > received`).
#[test]
fn restock_is_recorded_before_a_take_of_its_units() {
    loom::model(|| {
        let cell = Arc::new(StockCell::new());
        let tape = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let p = policy();
        let operator = {
            let (cell, tape) = (cell.clone(), tape.clone());
            thread::spawn(move || {
                let record = |_| tape.lock().unwrap().push("restock");
                cell.restock(1, 0, record, |_| {}).unwrap();
            })
        };
        if cell.take(1, TakeInto::Sold, 1, &p).is_ok() {
            tape.lock().unwrap().push("take");
        }
        operator.join().unwrap();
        let tape = tape.lock().unwrap();
        if let Some(take) = tape.iter().position(|&c| c == "take") {
            let restock = tape.iter().position(|&c| c == "restock");
            assert!(restock < Some(take), "recorded in this order: {:?}", &*tape);
        }
    });
}

/// Race: an operator counts the shelf (`on_hand` 2) while a buyer's hold is
/// between its CAS on `available` and its `held` count. The put must count
/// that unit as held (or still available), never as neither: after both,
/// the units for sale and held never pass what the operator counted. Fails
/// if the put reads held units from the stripes' own `held` sums.
#[test]
fn on_hand_set_races_a_take_in_flight() {
    loom::model(|| {
        let cell = Arc::new(StockCell::new());
        let p = policy();
        let count = |cell: &StockCell| {
            let level = Some(StockLevel::OnHand(2));
            cell.set_stock(level, None, None, None, 0, &p, |_| {})
        };
        count(&cell).unwrap();
        let buyer = {
            let cell = cell.clone();
            thread::spawn(move || cell.take(1, TakeInto::Held, 1, &p))
        };
        count(&cell).unwrap();
        let taken = buyer.join().unwrap();
        let s = cell.snapshot();
        assert!(
            s.available + s.held <= 2,
            "{} for sale and {} held on a shelf of 2",
            s.available,
            s.held
        );
        assert_eq!(s.held, u64::from(taken.is_ok()));
        assert_eq!(s.available + s.held + s.sold, s.received);
    });
}

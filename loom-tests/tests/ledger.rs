//! Loom models of the check-then-act hazards in their new places: the
//! per-customer limit and idempotent retries.
#![cfg(loom)]

use std::sync::Arc as StdArc;

use hotstock::models::SkuId;
use hotstock::models::{Fingerprint, IdempotencyTable, Origin};
use hotstock::models::{LimitLedger, OverLimit};
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Race: one customer's two requests against a limit of one. Check and
/// increment are one step: exactly one passes.
#[test]
fn per_customer_limit_race() {
    loom::model(|| {
        let ledger = Arc::new(LimitLedger::new());
        let sku = SkuId::from_index(0);
        let alice: StdArc<str> = StdArc::from("alice");
        let other = {
            let (ledger, alice) = (ledger.clone(), alice.clone());
            thread::spawn(move || ledger.acquire(sku, &alice, 1, 1))
        };
        let mine = ledger.acquire(sku, &alice, 1, 1);
        let theirs = other.join().unwrap();
        assert_eq!([mine, theirs].iter().filter(|r| r.is_ok()).count(), 1);
        assert!([mine, theirs].contains(&Err(OverLimit { already: 1 })));
        assert_eq!(ledger.used(sku, "alice"), 1);
    });
}

/// Race: a cancel gives a customer's unit back while the same customer asks
/// again. Either the new request sees the old unit (refused) or sees it
/// returned (accepted); the count is never lost or doubled.
#[test]
fn limit_give_back_races_new_request() {
    loom::model(|| {
        let ledger = Arc::new(LimitLedger::new());
        let sku = SkuId::from_index(0);
        let alice: StdArc<str> = StdArc::from("alice");
        ledger.acquire(sku, &alice, 1, 1).unwrap();
        let canceller = {
            let ledger = ledger.clone();
            thread::spawn(move || ledger.release(sku, "alice", 1))
        };
        let again = ledger.acquire(sku, &alice, 1, 1);
        canceller.join().unwrap();
        let expected = if again.is_ok() { 1 } else { 0 };
        assert_eq!(ledger.used(sku, "alice"), expected);
    });
}

/// Race: two retries of one request with one idempotency key. The operation
/// runs once and both get its outcome.
#[test]
fn racing_idempotent_retries() {
    loom::model(|| {
        let table = Arc::new(IdempotencyTable::<u32>::new(64, 1_000));
        let runs = Arc::new(AtomicU32::new(0));
        let attempt = |table: &IdempotencyTable<u32>, runs: &AtomicU32| {
            table
                .run("order-1", Fingerprint::exact(7), 0, || {
                    let n = runs.fetch_add(1, Ordering::Relaxed);
                    (100 + n, true)
                })
                .unwrap()
        };
        let other = {
            let (table, runs) = (table.clone(), runs.clone());
            thread::spawn(move || attempt(&table, &runs))
        };
        let mine = attempt(&table, &runs);
        let theirs = other.join().unwrap();
        assert_eq!(runs.load(Ordering::Relaxed), 1, "the operation ran once");
        assert_eq!(mine.0, theirs.0, "both callers see the same outcome");
        let fresh = [mine.1, theirs.1]
            .iter()
            .filter(|o| **o == Origin::Fresh)
            .count();
        assert_eq!(fresh, 1);
    });
}

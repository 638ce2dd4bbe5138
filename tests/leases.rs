//! The node's side of a lease from a cluster's escrow (#15), in the
//! engine: a grant credits units like a restock, a return withdraws them
//! and marks the oldest leases returning, a close drops a returning lease.
//! The escrow's figure for this node (open leases' grants plus closed
//! leases' kept units) always equals what the engine received from leases
//! minus what it gave back.

use hotstock::{
    BookedLease, Engine, EngineConfig, EngineError, LeaseRefusal, LeaseReturn, Line, Order,
};

fn engine() -> Engine {
    Engine::new(EngineConfig::default()).unwrap()
}

fn refusal(result: Result<impl std::fmt::Debug, EngineError>) -> LeaseRefusal {
    match result {
        Err(EngineError::LeaseRefused { reason, .. }) => reason,
        other => panic!("expected a lease refusal, got {other:?}"),
    }
}

#[test]
fn a_grant_credits_its_units_and_is_booked() {
    let engine = engine();
    let sku = engine.grant_lease("tee", "n1:tee:1", 5).unwrap();
    let doc = engine.sku_document(sku).unwrap();
    assert_eq!((doc.available, doc.received), (5, 5));
    assert_eq!(engine.leased(sku), 5);
    let booked = engine.leases();
    assert_eq!(booked.len(), 1);
    assert_eq!((&*booked[0].id, booked[0].granted), ("n1:tee:1", 5));
    assert_eq!(booked[0].returning, None);
}

#[test]
fn a_return_closes_the_oldest_leases_first_each_up_to_its_grant() {
    let engine = engine();
    // Ids out of order: the grant order decides, not the id.
    engine.grant_lease("tee", "n1:tee:b", 3).unwrap();
    engine.grant_lease("tee", "n1:tee:a", 4).unwrap();
    let sku = engine.grant_lease("tee", "n1:tee:c", 2).unwrap();
    engine.purchase(sku, 2, None).unwrap();
    let plan = engine.return_leased(sku, 5).unwrap();
    let expected = vec![
        LeaseReturn {
            lease: "n1:tee:b".into(),
            returned: 3,
        },
        LeaseReturn {
            lease: "n1:tee:a".into(),
            returned: 2,
        },
    ];
    assert_eq!(plan, expected);
    let doc = engine.sku_document(sku).unwrap();
    assert_eq!((doc.available, doc.sold, doc.received), (2, 2, 4));
    // The escrow's figure for this node: open grants (2) plus kept units
    // of closed leases (0 + 2) equals received.
    let book: Vec<BookedLease> = engine.leases();
    let open: u64 = (book.iter().filter(|l| l.returning.is_none()))
        .map(|l| l.granted)
        .sum();
    let kept: u64 = (book.iter())
        .filter_map(|l| l.returning.map(|r| l.granted - r))
        .sum();
    assert_eq!(open + kept, doc.received);
    assert_eq!(engine.leased(sku), 2);
}

#[test]
fn a_return_of_more_than_is_available_or_leased_changes_nothing() {
    let engine = engine();
    let sku = engine.grant_lease("tee", "n1:tee:1", 3).unwrap();
    let lines = [Line { sku, quantity: 2 }];
    engine
        .reserve(&Order {
            lines: &lines,
            ..Order::default()
        })
        .unwrap();
    match engine.return_leased(sku, 2) {
        Err(EngineError::InsufficientStock { available: 1, .. }) => {}
        other => panic!("expected InsufficientStock, got {other:?}"),
    }
    // Units the operator put there are not leased: they cannot go back.
    let (plain, _) = engine.put_sku("mug", 4, None, None).unwrap();
    match engine.return_leased(plain, 1) {
        Err(EngineError::InsufficientStock { available: 0, .. }) => {}
        other => panic!("expected InsufficientStock, got {other:?}"),
    }
    assert_eq!(engine.sku_document(sku).unwrap().available, 1);
    assert!(engine.leases().iter().all(|l| l.returning.is_none()));
}

#[test]
fn a_lease_closes_once_and_only_after_its_units_went_back() {
    let engine = engine();
    let sku = engine.grant_lease("tee", "n1:tee:1", 3).unwrap();
    assert_eq!(
        refusal(engine.close_lease("n1:tee:1")),
        LeaseRefusal::NotReturning
    );
    engine.return_leased(sku, 3).unwrap();
    engine.close_lease("n1:tee:1").unwrap();
    assert_eq!(
        refusal(engine.close_lease("n1:tee:1")),
        LeaseRefusal::Unknown
    );
    assert!(engine.leases().is_empty());
    assert_eq!(engine.sku_document(sku).unwrap().received, 0);
}

#[test]
fn refused_grants_change_nothing() {
    let engine = engine();
    engine.grant_lease("tee", "n1:tee:1", 3).unwrap();
    let cases = [
        ("tee", "n1:tee:1", 1, LeaseRefusal::AlreadyBooked),
        ("tee", "", 1, LeaseRefusal::InvalidId),
        ("tee", "n1 tee", 1, LeaseRefusal::InvalidId),
        ("tee", "n1:tee:2", 0, LeaseRefusal::InvalidUnits),
    ];
    for (sku, lease, units, reason) in cases {
        assert_eq!(
            refusal(engine.grant_lease(sku, lease, units)),
            reason,
            "{lease:?}"
        );
    }
    let long = "x".repeat(129);
    assert_eq!(
        refusal(engine.grant_lease("tee", &long, 1)),
        LeaseRefusal::InvalidId
    );
    let tee = engine.sku("tee").unwrap();
    engine
        .define_kit(
            "box",
            &[Line {
                sku: tee,
                quantity: 1,
            }],
        )
        .unwrap();
    assert_eq!(
        refusal(engine.grant_lease("box", "n1:box:1", 1)),
        LeaseRefusal::NotPlain
    );
    assert_eq!(engine.sku_document(tee).unwrap().received, 3);
    assert_eq!(engine.leases().len(), 1);
}

#[test]
fn a_sku_keeps_at_most_its_share_of_open_leases() {
    let engine = engine();
    let max = 48;
    for n in 0..max {
        engine
            .grant_lease("tee", &format!("n1:tee:{n}"), 1)
            .unwrap();
    }
    let refused = engine.grant_lease("tee", "n1:tee:one-more", 1);
    assert_eq!(refusal(refused), LeaseRefusal::TooManyLeases);
    // Another SKU is not held back by this one's.
    engine.grant_lease("mug", "n1:mug:1", 1).unwrap();
    // Closing leases makes room again.
    let tee = engine.sku("tee").unwrap();
    for part in engine.return_leased(tee, 2).unwrap() {
        engine.close_lease(&part.lease).unwrap();
    }
    engine.grant_lease("tee", "n1:tee:one-more", 1).unwrap();
}

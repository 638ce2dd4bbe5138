//! The escrow's statements (#15, part 1) against the PostgreSQL on the
//! machine (`HOTSTOCK_TEST_POSTGRES_URL`), each test in a schema of its own:
//! grants never pass what was received, a retried grant grants once, a
//! lease closes once, a lost node's leases are written off, and the
//! invariant holds after each.

mod common;
use common::EscrowScratch as Scratch;

use hotstock::durable::escrow::{lease_size, Escrow, EscrowError, Forfeited};

fn server() -> Option<String> {
    common::postgres_url("escrow tests")
}

fn assert_balanced(escrow: &mut Escrow) {
    for sku in escrow.audit().unwrap() {
        assert!(sku.balances(), "{sku:?}");
    }
}

/// Bug: an escrow statement the server refused said only "escrow ...:
/// reading the stock", without the server's reason (the client's own text
/// for it is "db error"). The message now names it.
#[test]
fn a_refused_statement_names_the_servers_reason() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "reason");
    let mut escrow = scratch.escrow();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE {}.escrow_stock CASCADE",
            scratch.schema
        ))
        .unwrap();
    let error = escrow.stock().unwrap_err().to_string();
    assert!(
        error.contains("escrow_stock") && error.contains("does not exist"),
        "{error}"
    );
}

/// Nodes on their own connections take leases as fast as they can until
/// none is left: together they are granted exactly what was received.
#[test]
fn concurrent_grants_never_pass_what_was_received() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "grants");
    let received = 1_000;
    scratch.escrow().receive("tee", received).unwrap();
    let nodes = 4u64;
    let granted: u64 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..nodes)
            .map(|node| {
                let scratch = &scratch;
                s.spawn(move || {
                    let mut escrow = scratch.escrow();
                    let mut total = 0;
                    for n in 0.. {
                        let unleased = escrow.audit().unwrap()[0].unleased;
                        let wanted = lease_size(unleased, nodes, 2, 64).max(1);
                        let id = format!("n{node}-{n}");
                        let lease = escrow
                            .grant(&id, &format!("n{node}"), "tee", wanted)
                            .unwrap();
                        if lease.granted == 0 {
                            break;
                        }
                        assert!(lease.granted <= wanted);
                        total += lease.granted;
                    }
                    total
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(granted, received);
    let mut escrow = scratch.escrow();
    let audit = escrow.audit().unwrap();
    assert_eq!((audit[0].unleased, audit[0].leased), (0, received));
    assert_balanced(&mut escrow);
}

#[test]
fn a_retried_grant_grants_once_and_a_lease_closes_once() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "once");
    let mut escrow = scratch.escrow();
    escrow.receive("tee", 10).unwrap();
    let first = escrow.grant("a-1", "a", "tee", 6).unwrap();
    // The answer was lost; the node asks again with the same id.
    let again = escrow.grant("a-1", "a", "tee", 6).unwrap();
    assert_eq!((first.granted, again), (6, first.clone()));
    assert_eq!(escrow.audit().unwrap()[0].unleased, 4);
    // Another node cannot take or close a's lease by its id.
    assert!(matches!(
        escrow.grant("a-1", "b", "tee", 1),
        Err(EscrowError::NotYourLease { .. })
    ));
    assert!(matches!(
        escrow.close("a-1", "b", 0),
        Err(EscrowError::NotYourLease { .. })
    ));
    assert!(matches!(
        escrow.close("a-1", "a", 7),
        Err(EscrowError::ReturnsTooMany {
            granted: 6,
            returned: 7,
            ..
        })
    ));
    // Sold 4, gave 2 back; a second close (a retry) changes nothing.
    let closed = escrow.close("a-1", "a", 2).unwrap();
    assert_eq!(closed.sold, Some(4));
    assert_eq!(escrow.close("a-1", "a", 6).unwrap(), closed);
    let audit = escrow.audit().unwrap();
    assert_eq!((audit[0].unleased, audit[0].sold), (6, 4));
    assert_balanced(&mut escrow);
    // Past what is unleased: the rest; then nothing.
    assert_eq!(escrow.grant("a-2", "a", "tee", 100).unwrap().granted, 6);
    assert_eq!(escrow.grant("a-3", "a", "tee", 100).unwrap().granted, 0);
    assert!(matches!(
        escrow.grant("a-4", "a", "hat", 1),
        Err(EscrowError::UnknownSku { .. })
    ));
    // The refused grant left no lease behind.
    let open: Vec<String> = escrow
        .open_leases("a")
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(open, ["a-2", "a-3"]);
    assert!(matches!(
        escrow.close("nope", "a", 0),
        Err(EscrowError::UnknownLease { .. })
    ));
    assert!(matches!(
        escrow.grant("", "a", "tee", 1),
        Err(EscrowError::Invalid { .. })
    ));
    assert_balanced(&mut escrow);
}

/// A node lost with its data: its open leases are written off as sold
/// (possibly undersold, never oversold); others' are untouched.
#[test]
fn a_lost_node_is_forfeited_and_the_escrow_still_balances() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "forfeit");
    let mut escrow = scratch.escrow();
    escrow.receive("tee", 20).unwrap();
    escrow.grant("a-1", "a", "tee", 5).unwrap();
    escrow.grant("a-2", "a", "tee", 3).unwrap();
    escrow.close("a-2", "a", 3).unwrap();
    escrow.grant("b-1", "b", "tee", 4).unwrap();
    assert_eq!(
        escrow.forfeit("a").unwrap(),
        Forfeited {
            leases: 1,
            units: 5
        }
    );
    assert_eq!(escrow.forfeit("a").unwrap(), Forfeited::default());
    let audit = escrow.audit().unwrap();
    assert_eq!(
        (audit[0].unleased, audit[0].leased, audit[0].sold),
        (11, 4, 5)
    );
    assert_eq!(escrow.open_leases("b").unwrap().len(), 1);
    assert_balanced(&mut escrow);
}

/// An operator's receive retried after a lost answer (the same key)
/// receives once; the key for another receive is refused and changes
/// nothing.
#[test]
fn a_keyed_receive_happens_once() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "receive_once");
    let mut escrow = scratch.escrow();
    assert!(escrow.receive_once("tee", 40, "delivery-7").unwrap());
    assert!(!escrow.receive_once("tee", 40, "delivery-7").unwrap());
    for (sku, units) in [("tee", 41), ("mug", 40)] {
        match escrow.receive_once(sku, units, "delivery-7") {
            Err(EscrowError::ReceiveKeyReused {
                earlier_sku,
                earlier_units,
                ..
            }) => assert_eq!((earlier_sku.as_str(), earlier_units), ("tee", 40)),
            other => panic!("{sku} {units}: {other:?}"),
        }
    }
    assert!(escrow.receive_once("tee", 5, "delivery-8").unwrap());
    let audit = escrow.audit().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!((audit[0].received, audit[0].unleased), (45, 45));
    assert_balanced(&mut escrow);
}

/// An operator's withdrawal (damaged or miscounted units) takes unleased
/// units only: more than that is refused, changes no count, and raises the
/// SKU's demand so the nodes give some back; with a key it happens once,
/// and a refused one leaves its key free for the retry.
#[test]
fn a_withdrawal_takes_only_unleased_units() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "withdraw");
    let mut escrow = scratch.escrow();
    escrow.receive("tee", 100).unwrap();
    let lease = escrow.grant("a~1~1", "a", "tee", 70).unwrap();
    assert_eq!(lease.granted, 70);
    escrow.withdraw("tee", 10).unwrap();
    let demand = |escrow: &mut hotstock::durable::escrow::Escrow| {
        let stock = escrow.stock().unwrap();
        (stock[0].received, stock[0].unleased, stock[0].demand)
    };
    assert_eq!(demand(&mut escrow), (90, 20, 0));
    match escrow.withdraw("tee", 21) {
        Err(EscrowError::TooFewUnleased {
            unleased,
            requested,
            ..
        }) => assert_eq!((unleased, requested), (20, 21)),
        other => panic!("{other:?}"),
    }
    match escrow.withdraw_once("tee", 21, "count-1") {
        Err(EscrowError::TooFewUnleased { unleased: 20, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(demand(&mut escrow), (90, 20, 2), "refusals change no count");
    assert_balanced(&mut escrow);

    // The node gives 30 back; the refused key is free for the retry.
    escrow.close("a~1~1", "a", 30).unwrap();
    assert!(escrow.withdraw_once("tee", 21, "count-1").unwrap());
    assert!(!escrow.withdraw_once("tee", 21, "count-1").unwrap());
    match escrow.receive_once("tee", 21, "count-1") {
        Err(EscrowError::ReceiveKeyReused { earlier_units, .. }) => assert_eq!(earlier_units, -21),
        other => panic!("{other:?}"),
    }
    assert_eq!(demand(&mut escrow), (69, 29, 2));
    assert!(matches!(
        escrow.withdraw("mug", 1),
        Err(EscrowError::UnknownSku { .. })
    ));
    let audit = escrow.audit().unwrap();
    assert_eq!((audit[0].received, audit[0].sold), (69, 40), "{audit:?}");
    assert_balanced(&mut escrow);
}

/// A schema made before withdrawals kept receive keys with `units > 0`
/// only: opening it lifts that, so a keyed withdrawal works there too.
#[test]
fn an_older_schema_takes_keyed_withdrawals() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "withdraw_old");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let old = format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.escrow_receives (
             key TEXT PRIMARY KEY, sku TEXT NOT NULL,
             units BIGINT NOT NULL CHECK (units > 0), at TIMESTAMPTZ NOT NULL DEFAULT now());",
        s = scratch.schema
    );
    client.batch_execute(&old).unwrap();
    let mut escrow = scratch.escrow();
    assert!(escrow.receive_once("tee", 5, "delivery-1").unwrap());
    assert!(escrow.withdraw_once("tee", 2, "count-1").unwrap());
    assert_eq!(escrow.stock().unwrap()[0].received, 3);
    assert_balanced(&mut escrow);
}

#[test]
fn lease_sizes_shrink_near_sell_out_and_bound_what_one_node_strands() {
    // Plenty: the chunk.
    assert_eq!(lease_size(1_000_000, 3, 2, 500), 500);
    // Scarce: a share of what is left, down to single units.
    assert_eq!(lease_size(60, 3, 2, 500), 10);
    assert_eq!(lease_size(5, 3, 2, 500), 1);
    assert_eq!(lease_size(0, 3, 2, 500), 0);
    // The bound: one lease never holds more than max(1, unleased / (k n)).
    for unleased in [0u64, 1, 7, 59, 600, 10_000] {
        for nodes in 1..5 {
            let size = lease_size(unleased, nodes, 2, 1 << 20);
            assert!(size <= (unleased / (2 * nodes)).max(1).min(unleased));
        }
    }
}

mod model {
    //! Two nodes selling one SKU from leases (each node an in-memory
    //! engine, as a node's own stock), against the real escrow: grants,
    //! sales, returns of everything unsold, and new stock received, in any
    //! order. After every step the escrow balances, the nodes together
    //! never sold more than was received, and a node that has returned
    //! everything sold exactly what its closed leases say.

    use super::*;
    use hotstock::durable::escrow::split_return;
    use hotstock::{Engine, EngineConfig};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Grant(usize, u64),
        Sell(usize, u32),
        ReturnAll(usize),
        Receive(u64),
        Withdraw(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..2usize, 1..8u64).prop_map(|(n, w)| Op::Grant(n, w)),
            4 => (0..2usize, 1..4u32).prop_map(|(n, q)| Op::Sell(n, q)),
            1 => (0..2usize).prop_map(Op::ReturnAll),
            1 => (1..10u64).prop_map(Op::Receive),
            1 => (1..6u64).prop_map(Op::Withdraw),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        #[test]
        fn two_nodes_never_sell_more_than_was_received(ops in prop::collection::vec(op(), 1..40)) {
            let Some(url) = server() else { return Ok(()) };
            let scratch = Scratch::new(&url, "model");
            let mut escrow = scratch.escrow();
            escrow.receive("tee", 10).unwrap();
            let mut received = 10;
            let nodes: Vec<Engine> = (0..2).map(|_| Engine::new(EngineConfig::default()).unwrap()).collect();
            let skus: Vec<_> = nodes.iter().map(|e| e.put_sku("tee", 0, None, None).unwrap().0).collect();
            let mut next_lease = 0;
            for (step, op) in ops.iter().enumerate() {
                match *op {
                    Op::Grant(n, wanted) => {
                        next_lease += 1;
                        let id = format!("n{n}-{next_lease}");
                        let lease = escrow.grant(&id, &format!("n{n}"), "tee", wanted).unwrap();
                        prop_assert!(lease.granted <= wanted);
                        if lease.granted > 0 {
                            nodes[n].restock(skus[n], lease.granted).unwrap();
                        }
                    }
                    Op::Sell(n, q) => drop(nodes[n].sell(skus[n], q)),
                    Op::ReturnAll(n) => {
                        let node = format!("n{n}");
                        let back = nodes[n].sku_document(skus[n]).unwrap().available;
                        let open = escrow.open_leases(&node).unwrap();
                        let split = split_return(&open, back);
                        prop_assert!(split.is_some(), "step {step}: {back} back, leases {open:?}");
                        if back > 0 {
                            nodes[n].adjust(skus[n], -(back as i64)).unwrap();
                        }
                        for (id, returned) in split.unwrap() {
                            escrow.close(&id, &node, returned).unwrap();
                        }
                        // All returned: the node's sales are exactly its
                        // closed leases'.
                        let mine = nodes[n].sku_document(skus[n]).unwrap().sold;
                        prop_assert_eq!(scratch.sold_by(&node), mine, "step {}", step);
                    }
                    Op::Receive(units) => {
                        escrow.receive("tee", units).unwrap();
                        received += units;
                    }
                    Op::Withdraw(units) => {
                        let unleased = escrow.stock().unwrap()[0].unleased;
                        match escrow.withdraw("tee", units) {
                            Ok(()) => {
                                prop_assert!(units <= unleased, "step {step}");
                                received -= units;
                            }
                            Err(EscrowError::TooFewUnleased { unleased: there, .. }) => {
                                prop_assert!(units > unleased && there == unleased, "step {step}");
                            }
                            Err(other) => prop_assert!(false, "step {step}: {other}"),
                        }
                    }
                }
                let audit = escrow.audit().unwrap();
                prop_assert!(audit[0].balances(), "step {step}: {:?}", audit[0]);
                prop_assert_eq!(audit[0].received, received);
                let sold: u64 = (0..2).map(|n| nodes[n].sku_document(skus[n]).unwrap().sold).sum();
                prop_assert!(sold <= received, "step {step}: sold {sold} of {received}");
                // Each node holds only leased units: what it has not sold of
                // its open leases.
                for n in 0..2 {
                    let open: u64 = (escrow.open_leases(&format!("n{n}")).unwrap().iter())
                        .map(|l| l.granted)
                        .sum();
                    let available = nodes[n].sku_document(skus[n]).unwrap().available;
                    prop_assert!(available <= open, "step {step}: node {n} {available} > {open}");
                }
            }
        }
    }
}

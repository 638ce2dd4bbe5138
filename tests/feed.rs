//! The change feed through the durable engine: every operation's events,
//! the outbox agreeing with the settled counts, and the same positions
//! after a crash.

mod common;
use common::{copy_dir, TempDir};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hotstock::core::cell::BackorderRule;
use hotstock::core::change::{Change, LeaseStep};
use hotstock::durable::feed::{FeedEvent, FeedFilter};
use hotstock::durable::journal::fs::RealFs;
use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{HoldStatus, Line, LocationPut, ManualClock, Order, SkuPut, StockLevel};

const T0: u64 = 1_700_000_000_000;

fn config(dir: &Path) -> DurableConfig {
    let mut config = DurableConfig::new(dir, Durability::Sync);
    config.checkpoint_interval = Duration::from_secs(3600);
    config.segment_bytes = 4096;
    config
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> DurableEngine {
    DurableEngine::open_with(config(dir), Arc::new(RealFs), clock.clone())
        .unwrap()
        .0
}

fn events_after(durable: &DurableEngine, after: u64) -> Vec<FeedEvent> {
    common::feed_events_after(durable, after)
}

/// The rows of the operation table: a name, what to do, and the events it
/// must produce as (type, SKU) in order.
type Row = (
    &'static str,
    Box<dyn Fn(&DurableEngine, &ManualClock, &mut Ids)>,
    &'static [(&'static str, &'static str)],
);

/// Reservations the table's rows make and later rows act on.
#[derive(Default)]
struct Ids(HashMap<&'static str, hotstock::ReservationId>);

fn line(durable: &DurableEngine, sku: &str, quantity: u32) -> Line {
    Line {
        sku: durable.engine().sku(sku).unwrap(),
        quantity,
    }
}

fn reserve(durable: &DurableEngine, lines: &[Line], confirm: bool) -> hotstock::ReservationId {
    let order = Order {
        lines,
        customer: Some("ann"),
        ttl_ms: Some(1_000),
        confirm,
        ..Order::default()
    };
    durable.engine().reserve(&order).unwrap().id
}

fn rows() -> Vec<Row> {
    vec![
        (
            "put_sku creates a SKU with stock",
            Box::new(|d, _, _| {
                d.engine().put_sku("tee", 3, None, None).unwrap();
            }),
            &[
                ("sku.created", "tee"),
                ("sku.changed", "tee"),
                ("sku.back_in_stock", "tee"),
            ],
        ),
        (
            "put_sku creates an empty SKU",
            Box::new(|d, _, _| {
                d.engine().put_sku("mug", 0, None, None).unwrap();
            }),
            &[("sku.created", "mug"), ("sku.changed", "mug")],
        ),
        (
            "restock",
            Box::new(|d, _, _| {
                let mug = d.engine().sku("mug").unwrap();
                d.engine().restock(mug, 2).unwrap();
            }),
            &[("sku.changed", "mug"), ("sku.back_in_stock", "mug")],
        ),
        (
            "put_stock by units on hand, with a safety stock",
            Box::new(|d, _, _| {
                let put = SkuPut {
                    level: Some(StockLevel::OnHand(5)),
                    safety_stock: Some(2),
                    ..SkuPut::default()
                };
                let (vase, _) = d.engine().put_stock("vase", &put).unwrap();
                let doc = d.engine().sku_document(vase).unwrap();
                assert_eq!((doc.available, doc.safety_stock, doc.on_hand()), (3, 2, 5));
            }),
            &[
                ("sku.created", "vase"),
                ("sku.changed", "vase"),
                ("sku.back_in_stock", "vase"),
            ],
        ),
        (
            "a safety stock that takes every unit for sale",
            Box::new(|d, _, _| {
                let put = SkuPut {
                    safety_stock: Some(5),
                    ..SkuPut::default()
                };
                d.engine().put_stock("vase", &put).unwrap();
            }),
            &[("sku.changed", "vase"), ("sku.sold_out", "vase")],
        ),
        (
            "set_limit",
            Box::new(|d, _, _| {
                let tee = d.engine().sku("tee").unwrap();
                d.engine().set_limit(tee, Some(5)).unwrap();
            }),
            &[("sku.changed", "tee")],
        ),
        (
            "reserve (a hold)",
            Box::new(|d, _, ids| {
                let lines = [line(d, "tee", 1)];
                ids.0.insert("hold", reserve(d, &lines, false));
            }),
            &[("reservation.created", "tee")],
        ),
        (
            "extend a hold (no units move)",
            Box::new(|d, _, ids| {
                d.engine().extend(ids.0["hold"], 60_000).unwrap();
            }),
            &[("reservation.extended", "tee")],
        ),
        (
            "confirm",
            Box::new(|d, _, ids| {
                d.engine().confirm(ids.0["hold"]).unwrap();
            }),
            &[("reservation.confirmed", "tee")],
        ),
        (
            "refund",
            Box::new(|d, _, ids| {
                d.engine().refund(ids.0["hold"]).unwrap();
            }),
            &[("reservation.refunded", "tee")],
        ),
        (
            "confirm part, then refund part of a sale",
            Box::new(|d, _, _| {
                let (cup, _) = d.engine().put_sku("cup", 5, None, None).unwrap();
                let held = reserve(d, &[line(d, "cup", 3)], false);
                let two = [Line {
                    sku: cup,
                    quantity: 2,
                }];
                d.engine().confirm_lines(held, &two).unwrap();
                let one = [Line {
                    sku: cup,
                    quantity: 1,
                }];
                d.engine().refund_lines(held, &one).unwrap();
            }),
            &[
                ("sku.created", "cup"),
                ("sku.changed", "cup"),
                ("sku.back_in_stock", "cup"),
                ("reservation.created", "cup"),
                ("reservation.confirmed", "cup"),
                ("reservation.refunded", "cup"),
            ],
        ),
        (
            "a cart: one event per line SKU",
            Box::new(|d, _, ids| {
                let lines = [line(d, "tee", 1), line(d, "mug", 1)];
                ids.0.insert("cart", reserve(d, &lines, false));
            }),
            &[
                ("reservation.created", "tee"),
                ("reservation.created", "mug"),
            ],
        ),
        (
            "cancel",
            Box::new(|d, _, ids| {
                d.engine().cancel(ids.0["cart"]).unwrap();
            }),
            &[
                ("reservation.cancelled", "tee"),
                ("reservation.cancelled", "mug"),
            ],
        ),
        (
            "expiry",
            Box::new(|d, clock, ids| {
                let lines = [line(d, "mug", 2)];
                ids.0.insert("expiring", reserve(d, &lines, false));
                clock.advance(5_000);
                assert_eq!(d.engine().run_timers().expired, 1);
            }),
            &[
                ("reservation.created", "mug"),
                ("sku.sold_out", "mug"),
                ("reservation.expired", "mug"),
                ("sku.back_in_stock", "mug"),
            ],
        ),
        (
            "purchase (born confirmed) selling out",
            Box::new(|d, _, _| {
                let mug = d.engine().sku("mug").unwrap();
                d.engine().purchase(mug, 2, Some("ann")).unwrap();
            }),
            &[("reservation.created", "mug"), ("sku.sold_out", "mug")],
        ),
        (
            "adjust",
            Box::new(|d, _, _| {
                let tee = d.engine().sku("tee").unwrap();
                d.engine().adjust(tee, -1).unwrap();
            }),
            &[("sku.changed", "tee")],
        ),
        (
            "sell (record-less)",
            Box::new(|d, _, _| {
                d.engine().put_sku("pin", 1, None, None).unwrap();
                let pin = d.engine().sku("pin").unwrap();
                d.engine().sell(pin, 1).unwrap();
            }),
            &[
                ("sku.created", "pin"),
                ("sku.changed", "pin"),
                ("sku.back_in_stock", "pin"),
                ("sku.sold", "pin"),
                ("sku.sold_out", "pin"),
            ],
        ),
        (
            "an idempotent retry changes nothing and says nothing",
            Box::new(|d, _, _| {
                let lines = [line(d, "tee", 1)];
                let order = Order {
                    lines: &lines,
                    customer: Some("ann"),
                    idempotency_key: Some("k-1"),
                    ..Order::default()
                };
                let first = d.engine().reserve(&order).unwrap();
                let again = d.engine().reserve(&order).unwrap();
                assert_eq!(first.id, again.id);
            }),
            &[("reservation.created", "tee")],
        ),
        (
            "set_low_stock above what is available",
            Box::new(|d, _, _| {
                let tee = d.engine().sku("tee").unwrap();
                d.engine().set_low_stock(tee, Some(50)).unwrap();
            }),
            &[("sku.changed", "tee"), ("sku.low_stock", "tee")],
        ),
        (
            "a sale falling below the low-stock threshold",
            Box::new(|d, _, _| {
                let (cap, _) = d.engine().put_sku("cap", 3, None, None).unwrap();
                d.engine().set_low_stock(cap, Some(2)).unwrap();
                d.engine().purchase(cap, 1, Some("ann")).unwrap();
                d.engine().purchase(cap, 1, Some("ann")).unwrap();
            }),
            &[
                ("sku.created", "cap"),
                ("sku.changed", "cap"),
                ("sku.back_in_stock", "cap"),
                ("sku.changed", "cap"),
                ("reservation.created", "cap"),
                ("reservation.created", "cap"),
                ("sku.low_stock", "cap"),
            ],
        ),
        (
            "define_kit creates a kit",
            Box::new(|d, _, _| {
                let (plate, _) = d.engine().put_sku("plate", 4, None, None).unwrap();
                let (bowl, _) = d.engine().put_sku("bowl", 4, None, None).unwrap();
                let components = [
                    Line {
                        sku: plate,
                        quantity: 1,
                    },
                    Line {
                        sku: bowl,
                        quantity: 2,
                    },
                ];
                d.engine().define_kit("set", &components).unwrap();
            }),
            // One batch: its creations come first (`feed/order.rs`).
            &[
                ("sku.created", "plate"),
                ("sku.created", "bowl"),
                ("sku.created", "set"),
                ("sku.changed", "plate"),
                ("sku.back_in_stock", "plate"),
                ("sku.changed", "bowl"),
                ("sku.back_in_stock", "bowl"),
                ("sku.changed", "set"),
            ],
        ),
        (
            "a kit and one of its components in one order",
            Box::new(|d, _, _| {
                let lines = [line(d, "set", 1), line(d, "plate", 1)];
                let receipt = reserve(d, &lines, true);
                let record = d.engine().reservation(receipt).unwrap();
                assert_eq!(record.lines, [line(d, "plate", 2), line(d, "bowl", 2)]);
            }),
            &[
                ("reservation.created", "plate"),
                ("reservation.created", "bowl"),
            ],
        ),
        (
            "define_kit again redefines it",
            Box::new(|d, _, _| {
                d.engine()
                    .define_kit("set", &[line(d, "plate", 1)])
                    .unwrap();
            }),
            &[("sku.changed", "set")],
        ),
        (
            "set_backorder lets a SKU sell past zero",
            Box::new(|d, _, _| {
                let (pre, _) = d.engine().put_sku("pre", 1, None, None).unwrap();
                let rule = BackorderRule {
                    limit: 5,
                    until_ms: None,
                };
                d.engine().set_backorder(pre, rule).unwrap();
            }),
            &[
                ("sku.created", "pre"),
                ("sku.changed", "pre"),
                ("sku.back_in_stock", "pre"),
                ("sku.changed", "pre"),
            ],
        ),
        (
            "set_waiting_room puts a SKU behind a waiting room",
            Box::new(|d, _, _| {
                let (queued, _) = d.engine().put_sku("queued", 2, None, None).unwrap();
                let room = hotstock::RoomConfig {
                    admit_per_s: 10,
                    overbook_milli: 1_000,
                    admission_ttl_ms: 30_000,
                };
                d.engine().set_waiting_room(queued, Some(room)).unwrap();
            }),
            &[
                ("sku.created", "queued"),
                ("sku.changed", "queued"),
                ("sku.back_in_stock", "queued"),
                ("sku.changed", "queued"),
            ],
        ),
        (
            "set_sale_window closes a SKU's sale (moves nothing)",
            Box::new(|d, _, _| {
                let (shut, _) = d.engine().put_sku("shut", 2, None, None).unwrap();
                let window = hotstock::SaleWindow {
                    starts_at_ms: None,
                    ends_at_ms: Some(T0),
                };
                d.engine().set_sale_window(shut, window).unwrap();
            }),
            &[
                ("sku.created", "shut"),
                ("sku.changed", "shut"),
                ("sku.back_in_stock", "shut"),
                ("sku.changed", "shut"),
            ],
        ),
        (
            "reserve past zero: the rest is backordered",
            Box::new(|d, _, ids| {
                ids.0.insert("pre", reserve(d, &[line(d, "pre", 3)], false));
                let doc = d.engine().reservation(ids.0["pre"]).unwrap();
                assert_eq!(doc.owed, vec![2]);
            }),
            &[("reservation.created", "pre"), ("sku.sold_out", "pre")],
        ),
        (
            "a restock fills backorders first, and never looks available meanwhile",
            Box::new(|d, _, ids| {
                let pre = d.engine().sku("pre").unwrap();
                d.engine().restock(pre, 2).unwrap();
                let doc = d.engine().reservation(ids.0["pre"]).unwrap();
                assert!(
                    doc.owed.is_empty() && !doc.backordered,
                    "filled: owed nothing"
                );
            }),
            &[
                ("sku.changed", "pre"),
                ("reservation.backorder_filled", "pre"),
            ],
        ),
        (
            "put_location creates a SKU kept at locations and its location",
            Box::new(|d, _, _| {
                let put = LocationPut {
                    stock: SkuPut {
                        level: Some(StockLevel::Available(2)),
                        ..SkuPut::default()
                    },
                    priority: Some(1),
                };
                d.engine().put_location("hat", "berlin", &put).unwrap();
            }),
            &[
                ("sku.created", "hat"),
                ("sku.created", "hat/berlin"),
                ("sku.changed", "hat/berlin"),
                ("sku.changed", "hat/berlin"),
                ("sku.back_in_stock", "hat/berlin"),
            ],
        ),
        (
            "an order of a SKU kept at locations holds its location's units",
            Box::new(|d, _, ids| {
                let hat = d.engine().sku("hat").unwrap();
                ids.0.insert(
                    "hat",
                    reserve(
                        d,
                        &[Line {
                            sku: hat,
                            quantity: 2,
                        }],
                        false,
                    ),
                );
            }),
            &[
                ("reservation.created", "hat/berlin"),
                ("sku.sold_out", "hat/berlin"),
            ],
        ),
        (
            "a lease granted from a cluster's escrow creates its SKU and credits it",
            Box::new(|d, _, _| {
                d.engine().grant_lease("lid", "n1:lid:1", 3).unwrap();
            }),
            &[
                ("sku.created", "lid"),
                ("sku.changed", "lid"),
                ("sku.back_in_stock", "lid"),
            ],
        ),
        (
            "a leased SKU's units given back, then the lease closed (moves nothing)",
            Box::new(|d, _, _| {
                let lid = d.engine().sku("lid").unwrap();
                let returns = d.engine().return_leased(lid, 3).unwrap();
                d.engine().close_lease(&returns[0].lease).unwrap();
            }),
            &[("sku.changed", "lid"), ("sku.sold_out", "lid")],
        ),
    ]
}

/// Which change kinds and transitions the table covers: adding a change
/// or a transition to the engine fails this until the table has a row.
fn covered(change: &Change<'_>) -> &'static str {
    match change {
        Change::SkuCreated { .. } => "put_sku creates a SKU with stock",
        Change::Operator {
            safety_stock: Some(_),
            ..
        } => "put_stock by units on hand, with a safety stock",
        Change::Operator { .. } => "restock",
        Change::LowStock { .. } => "set_low_stock above what is available",
        Change::Sell { .. } => "sell (record-less)",
        Change::KitDefined { .. } => "define_kit creates a kit",
        Change::Backorder { .. } => "set_backorder lets a SKU sell past zero",
        Change::SaleWindow { .. } => "set_sale_window closes a SKU's sale (moves nothing)",
        Change::WaitingRoom { .. } => "set_waiting_room puts a SKU behind a waiting room",
        Change::Location { .. } => "put_location creates a SKU kept at locations and its location",
        Change::BackorderFilled { .. } => {
            "a restock fills backorders first, and never looks available meanwhile"
        }
        Change::Hold(hold) => match (hold.from, hold.status) {
            (None, HoldStatus::Held) => "reserve (a hold)",
            (Some(HoldStatus::Held), HoldStatus::Held) => "extend a hold (no units move)",
            (None, HoldStatus::Confirmed) => "purchase (born confirmed) selling out",
            (Some(HoldStatus::Held), HoldStatus::Confirmed) => "confirm",
            (Some(HoldStatus::Held), HoldStatus::Cancelled) => "cancel",
            (Some(HoldStatus::Held), HoldStatus::Expired) => "expiry",
            (Some(HoldStatus::Confirmed), HoldStatus::Refunded) => "refund",
            (Some(HoldStatus::Confirmed), HoldStatus::Confirmed) => {
                "confirm part, then refund part of a sale"
            }
            (from, to) => panic!("a transition {from:?} -> {to:?} with no row"),
        },
        Change::Idempotency(_) => "an idempotent retry changes nothing and says nothing",
        Change::Lease {
            step: LeaseStep::Granted,
            ..
        } => "a lease granted from a cluster's escrow creates its SKU and credits it",
        Change::Lease { .. } => {
            "a leased SKU's units given back, then the lease closed (moves nothing)"
        }
    }
}

#[test]
fn every_operation_produces_exactly_its_documented_events() {
    let dir = TempDir::new("feed-table");
    let clock = Arc::new(ManualClock::new(T0));
    let durable = open(&dir.0, &clock);
    let mut ids = Ids::default();
    let rows = rows();
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    // Every transition the engine can make has its row.
    let statuses = [
        HoldStatus::Held,
        HoldStatus::Confirmed,
        HoldStatus::Cancelled,
        HoldStatus::Expired,
        HoldStatus::Refunded,
    ];
    let froms = std::iter::once(None).chain(statuses.map(Some));
    for from in froms {
        for to in statuses {
            if hotstock::durable::event::is_transition(from, to) {
                let change = Change::Hold(hotstock::core::change::HoldChange {
                    id: hotstock::ReservationId::from_u64(1),
                    from,
                    status: to,
                    at_ms: 0,
                    deadline_ms: 0,
                    limit_mask: 0,
                    customer: None,
                    lines: &[],
                    extensions: 0,
                    changes: None,
                    owed: None,
                    ticket: 0,
                });
                assert!(names.contains(&covered(&change)), "{from:?} -> {to:?}");
            }
        }
    }
    let mut after = 0;
    for (name, operation, expected) in &rows {
        operation(&durable, &clock, &mut ids);
        let events = events_after(&durable, after);
        let got: Vec<(&str, &str)> = events.iter().map(|e| (e.kind.as_str(), &*e.sku)).collect();
        assert_eq!(got, *expected, "{name}");
        for (i, event) in events.iter().enumerate() {
            assert_eq!(
                event.position,
                after + 1 + i as u64,
                "{name}: dense positions"
            );
            let c = event.counts;
            assert!(
                c.available >= 0 && c.held >= 0 && c.sold >= 0,
                "{name}: {c:?}"
            );
        }
        after += events.len() as u64;
        // The last event of each SKU shows the SKU as it is now.
        for event in &events {
            let engine = durable.engine();
            let doc = match event.sku.split_once('/') {
                // A location's events carry the location's own counts.
                Some((sku, location)) => {
                    let sku = engine.sku(sku).unwrap();
                    let cell = engine.location(sku, location).unwrap();
                    let mut doc = engine.sku_document(sku).unwrap();
                    let locations = doc.locations.take().unwrap();
                    let at = locations.iter().find(|l| l.cell == cell).unwrap();
                    (doc.available, doc.held, doc.sold) = (at.available, at.held, at.sold);
                    doc.safety_stock = at.safety_stock;
                    doc
                }
                None => engine
                    .sku_document(engine.sku(&event.sku).unwrap())
                    .unwrap(),
            };
            let last = events.iter().rev().find(|e| e.sku == event.sku).unwrap();
            if doc.components.is_some() || doc.locations.is_some() {
                // A kit, or a SKU kept at locations, holds nothing itself:
                // its events' counts are 0, and its availability is its
                // components' or its locations' (their own events).
                assert_eq!(last.counts, Default::default(), "{name}: {}", event.sku);
                continue;
            }
            assert_eq!(
                (
                    last.counts.available,
                    last.counts.held,
                    last.counts.sold,
                    last.counts.safety_stock,
                    last.counts.on_hand()
                ),
                (
                    doc.available as i64,
                    doc.held as i64,
                    doc.sold as i64,
                    doc.safety_stock as i64,
                    doc.on_hand() as i64
                ),
                "{name}: {}",
                event.sku
            );
        }
    }
    let reservation = events_after(&durable, 0)
        .into_iter()
        .find(|e| e.kind.as_str() == "reservation.created")
        .unwrap();
    let r = reservation.reservation.unwrap();
    assert_eq!(r.customer.as_deref(), Some("ann"));
    assert_eq!(
        durable.public_ids().decode(&r.public_id),
        Some(ids.0["hold"]),
        "the public id"
    );
}

/// Folds the outbox from position 1: (available, held, sold, received) per SKU.
fn replay_outbox(store: &Path) -> HashMap<String, (i64, i64, i64, i64)> {
    let db = rusqlite::Connection::open(store).unwrap();
    let mut counts: HashMap<String, (i64, i64, i64, i64)> = HashMap::new();
    let mut statement = db
        .prepare(
            "SELECT position, type, sku, from_status, status, lines, delta, units \
             FROM hotstock_events ORDER BY position",
        )
        .unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut expected_position = 1;
    let effect = |status: Option<&str>| match status {
        Some("held") => (1, 0),
        Some("confirmed") => (0, 1),
        _ => (0, 0),
    };
    while let Some(row) = rows.next().unwrap() {
        let position: i64 = row.get(0).unwrap();
        assert_eq!(position, expected_position, "the outbox has no gap");
        expected_position += 1;
        let kind: String = row.get(1).unwrap();
        let sku: String = row.get(2).unwrap();
        let entry = counts.entry(sku.clone()).or_default();
        match kind.as_str() {
            "sku.changed" => {
                let delta: i64 = row.get(6).unwrap();
                entry.0 += delta;
                entry.3 += delta;
            }
            "sku.sold" => {
                let units: i64 = row.get(7).unwrap();
                entry.0 -= units;
                entry.2 += units;
            }
            kind if kind.starts_with("reservation.") => {
                let from: Option<String> = row.get(3).unwrap();
                let to: Option<String> = row.get(4).unwrap();
                let lines: String = row.get(5).unwrap();
                let quantity: i64 = lines
                    .split(',')
                    .find_map(|pair| {
                        let (name, q) = pair.rsplit_once(':')?;
                        (name == sku).then(|| q.parse().unwrap())
                    })
                    .expect("the event's SKU is one of its lines");
                let (held_before, sold_before) = effect(from.as_deref());
                let (held_after, sold_after) = effect(to.as_deref());
                let held = quantity * (held_after - held_before);
                let sold = quantity * (sold_after - sold_before);
                entry.1 += held;
                entry.2 += sold;
                entry.0 -= held + sold;
            }
            _ => {}
        }
    }
    counts
}

fn stored_counts(store: &Path) -> HashMap<String, (i64, i64, i64, i64)> {
    let db = rusqlite::Connection::open(store).unwrap();
    let mut statement = db
        .prepare("SELECT name, available, held, sold, received FROM hotstock_skus")
        .unwrap();
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?),
            ))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn workload(durable: &DurableEngine, clock: &ManualClock, rounds: u32) {
    let engine = durable.engine();
    let (tee, _) = engine.put_sku("tee", 40, None, None).unwrap();
    let (mug, _) = engine.put_sku("mug", 10, None, None).unwrap();
    for round in 0..rounds {
        let lines = [
            Line {
                sku: tee,
                quantity: 1,
            },
            Line {
                sku: mug,
                quantity: 1,
            },
        ];
        let order = Order {
            lines: &lines,
            ttl_ms: Some(100),
            ..Order::default()
        };
        if let Ok(receipt) = engine.reserve(&order) {
            match round % 3 {
                0 => drop(engine.confirm(receipt.id)),
                1 => drop(engine.cancel(receipt.id)),
                _ => {}
            }
        }
        let _ = engine.purchase(tee, 1, None);
        if round % 7 == 0 {
            engine.restock(mug, 2).unwrap();
            durable.journal().flush().unwrap();
        }
        clock.advance(30);
        engine.run_timers();
    }
}

/// After a crash at any point and a recovery, the outbox replayed from
/// position 1 gives exactly the store's settled counts, and the positions
/// a reader saw before the crash hold the same events after it.
#[test]
fn the_outbox_replays_to_the_settled_counts_and_positions_survive_a_crash() {
    let dir = TempDir::new("feed-outbox");
    let clock = Arc::new(ManualClock::new(T0));
    let durable = open(&dir.0, &clock);
    workload(&durable, &clock, 30);
    durable.checkpoint().unwrap();
    workload_more(&durable, &clock);
    let seen = events_after(&durable, 0);
    // A crash: the directory as kill -9 leaves it (the tail after the
    // checkpoint is only in the journal).
    let crashed = TempDir::new("feed-outbox-crash");
    copy_dir(&dir.0, &crashed.0);
    drop(durable);
    let recovered = open(&crashed.0, &clock);
    let replayed = events_after(&recovered, 0);
    assert_eq!(replayed.len(), seen.len());
    for (before, after) in seen.iter().zip(&replayed) {
        assert_eq!(before, after, "position {}", before.position);
    }
    recovered.checkpoint().unwrap();
    let store = crashed.0.join("hotstock.sqlite");
    assert_eq!(replay_outbox(&store), stored_counts(&store));
    assert_eq!(recovered.feed().negative_counts(), 0);
    // After another restart memory holds nothing: every event comes back
    // from the outbox's rows (many per insert statement, and one by one)
    // exactly as it was served from memory.
    drop(recovered);
    let reopened = open(&crashed.0, &clock);
    assert_eq!(reopened.feed().first_in_memory(), seen.len() as u64 + 1);
    assert_eq!(events_after(&reopened, 0), seen);
}

fn workload_more(durable: &DurableEngine, clock: &ManualClock) {
    let tee = durable.engine().sku("tee").unwrap();
    // A safety stock after the checkpoint: the outbox rows keep it, and the
    // events read back from them equal the ones served from memory.
    let put = SkuPut {
        level: Some(StockLevel::Available(3)),
        safety_stock: Some(2),
        ..SkuPut::default()
    };
    durable.engine().put_stock("tee", &put).unwrap();
    for _ in 0..5 {
        let _ = durable.engine().purchase(tee, 1, None);
        clock.advance(10);
    }
    durable.journal().flush().unwrap();
}

/// Retention by count: the outbox keeps the newest events, and a reader
/// asking for an older position is told the oldest one kept.
#[test]
fn a_position_older_than_retention_is_gone_with_the_oldest_kept() {
    let dir = TempDir::new("feed-gone");
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = config(&dir.0);
    config.events_retention_count = 5;
    let durable = DurableEngine::open_with(config.clone(), Arc::new(RealFs), clock.clone())
        .unwrap()
        .0;
    workload(&durable, &clock, 10);
    let last = events_after(&durable, 0).last().unwrap().position;
    drop(durable);
    // After a restart memory holds nothing: reads go to the outbox.
    let durable = DurableEngine::open_with(config, Arc::new(RealFs), clock.clone())
        .unwrap()
        .0;
    let reader = durable.feed_reader();
    match reader.read(0, 10, &FeedFilter::default()) {
        Err(hotstock::durable::FeedError::Gone { oldest, .. }) => assert_eq!(oldest, last - 4),
        other => panic!("expected gone, got {other:?}"),
    }
    let page = reader.read(last - 5, 10, &FeedFilter::default()).unwrap();
    assert_eq!(page.events.len(), 5);
    assert_eq!(page.next_after, last);
    match reader.read(last + 3, 10, &FeedFilter::default()) {
        Err(hotstock::durable::FeedError::Ahead { last: l, .. }) => assert_eq!(l, last),
        other => panic!("expected ahead, got {other:?}"),
    }
}

/// Retention by age: a checkpoint deletes the events made before the
/// retention window, and only those.
#[test]
fn events_older_than_the_retention_window_are_pruned_by_age() {
    let dir = TempDir::new("feed-age");
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = config(&dir.0);
    config.events_retention = Duration::from_secs(60);
    let durable = DurableEngine::open_with(config, Arc::new(RealFs), clock.clone())
        .unwrap()
        .0;
    let (tee, _) = durable.engine().put_sku("tee", 100, None, None).unwrap();
    durable.engine().purchase(tee, 1, None).unwrap();
    let old_last = events_after(&durable, 0).last().unwrap().position;
    clock.advance(120_000);
    durable.engine().purchase(tee, 1, None).unwrap();
    let young = events_after(&durable, old_last);
    durable.checkpoint().unwrap();
    let db = rusqlite::Connection::open(dir.0.join("hotstock.sqlite")).unwrap();
    let (oldest, count): (i64, i64) = db
        .query_row(
            "SELECT MIN(position), COUNT(*) FROM hotstock_events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        oldest as u64,
        old_last + 1,
        "everything before the window went"
    );
    assert_eq!(count as usize, young.len(), "and nothing younger");
}

/// The outbox writes a reservation's events with a statement of their own
/// columns, and lets SQLite number rows that follow the one before: every
/// kind of event, in runs of each shape longer than one statement and
/// alone between the other shape, reads back from the table exactly as
/// memory served it, position, id and every column.
#[test]
fn events_of_every_shape_read_back_from_the_outbox_as_served() {
    let dir = TempDir::new("feed-shapes");
    let clock = Arc::new(ManualClock::new(T0));
    let durable = open(&dir.0, &clock);
    let engine = durable.engine();
    let (tee, _) = engine.put_sku("tee", 1_000, None, None).unwrap();
    // Runs longer than a statement (16 rows) of each shape, then shapes
    // alternating one event at a time.
    for _ in 0..40 {
        engine.purchase(tee, 1, Some("ann")).unwrap();
    }
    for _ in 0..40 {
        engine.restock(tee, 1).unwrap();
    }
    for _ in 0..40 {
        engine.sell(tee, 1).unwrap();
    }
    for i in 0..20 {
        engine.purchase(tee, 1, None).unwrap();
        if i % 2 == 0 {
            engine.adjust(tee, -1).unwrap();
        } else {
            engine.sell(tee, 1).unwrap();
        }
    }
    durable.journal().flush().unwrap();
    let seen = events_after(&durable, 0);
    assert!(seen.len() > 160, "{} events", seen.len());
    durable.checkpoint().unwrap();
    drop(durable);
    let store = dir.0.join("hotstock.sqlite");
    let db = rusqlite::Connection::open(&store).unwrap();
    let (count, first, last): (i64, i64, i64) = db
        .query_row(
            "SELECT COUNT(*), MIN(position), MAX(position) FROM hotstock_events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (count, first, last),
        (seen.len() as i64, 1, seen.len() as i64)
    );
    drop(db);
    let reopened = open(&dir.0, &clock);
    assert_eq!(reopened.feed().first_in_memory(), seen.len() as u64 + 1);
    assert_eq!(events_after(&reopened, 0), seen);
}

/// A row in the outbox that hotstock did not write, past the newest event,
/// would shift the numbers SQLite gives the rows after it: the checkpoint
/// that meets it fails, says why, and leaves the table as it was.
#[test]
fn a_foreign_row_past_the_newest_event_fails_the_checkpoint_and_changes_nothing() {
    let dir = TempDir::new("feed-foreign-row");
    let clock = Arc::new(ManualClock::new(T0));
    let durable = open(&dir.0, &clock);
    let engine = durable.engine();
    let (tee, _) = engine.put_sku("tee", 100, None, None).unwrap();
    engine.purchase(tee, 1, None).unwrap();
    durable.journal().flush().unwrap();
    durable.checkpoint().unwrap();
    let store = dir.0.join("hotstock.sqlite");
    let db = rusqlite::Connection::open(&store).unwrap();
    let written: i64 = db
        .query_row("SELECT MAX(position) FROM hotstock_events", [], |row| {
            row.get(0)
        })
        .unwrap();
    db.execute(
        "INSERT INTO hotstock_events (position, id, type, at_ms, sku, available, held, sold, received) \
         VALUES (?1, 'x', 'sku.changed', 0, 'tee', 0, 0, 0, 0)",
        [written + 5],
    )
    .unwrap();
    for _ in 0..20 {
        engine.purchase(tee, 1, None).unwrap();
    }
    durable.journal().flush().unwrap();
    let error = durable.checkpoint().unwrap_err().to_string();
    assert!(error.contains("hotstock did not write"), "{error}");
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM hotstock_events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        rows,
        written + 1,
        "only the first checkpoint's rows and the foreign one"
    );
}

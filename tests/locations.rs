//! Locations (#14.5): a SKU's stock kept at several places, each exact on
//! its own, allocated by priority or by most available, one location per
//! line unless the line allows a split, carts all or nothing across them.

use std::sync::Arc;

use hotstock::{
    Engine, EngineConfig, EngineError, KitRefusal, Line, LocationPut, LocationRefusal, ManualClock,
    Order, ReservationId, SkuId, SkuPut, StockLevel,
};

const T0: u64 = 1_700_000_000_000;

fn engine() -> Engine {
    let clock = Arc::new(ManualClock::new(T0));
    Engine::with_clock(EngineConfig::default(), clock).unwrap()
}

/// Puts `available` units at `location` of `sku` (with `priority`).
fn stock(engine: &Engine, sku: &str, location: &str, available: u64, priority: Option<u32>) {
    let put = LocationPut {
        stock: SkuPut {
            level: Some(StockLevel::Available(available)),
            ..SkuPut::default()
        },
        priority,
    };
    engine.put_location(sku, location, &put).unwrap();
}

fn order(engine: &Engine, lines: &[Line], split: u32) -> Result<ReservationId, EngineError> {
    engine
        .reserve(&Order {
            lines,
            split,
            ..Order::default()
        })
        .map(|receipt| receipt.id)
}

fn line(sku: SkuId, quantity: u32) -> Line {
    Line { sku, quantity }
}

/// Per location (in the order they were added): (name, available, held).
fn at(engine: &Engine, sku: SkuId) -> Vec<(String, u64, u64)> {
    let doc = engine.sku_document(sku).unwrap();
    let locations = doc.locations.clone().expect("a SKU kept at locations");
    // The SKU's counts are its locations' sums, and each is conserved.
    let sum = |f: fn(&hotstock::LocationDocument) -> u64| locations.iter().map(f).sum::<u64>();
    assert_eq!(doc.available, sum(|l| l.available));
    assert_eq!(doc.held, sum(|l| l.held));
    assert_eq!(doc.sold, sum(|l| l.sold));
    assert_eq!(doc.received, sum(|l| l.received));
    for l in &locations {
        assert_eq!(l.available + l.held + l.sold, l.received, "{l:?}");
    }
    (locations.iter())
        .map(|l| (l.location.to_string(), l.available, l.held))
        .collect()
}

/// The location each line of reservation `id` took from, with its units.
fn taken_from(engine: &Engine, id: ReservationId) -> Vec<(String, u32)> {
    let doc = engine.reservation(id).unwrap();
    (doc.lines.iter())
        .map(|l| {
            let (_, location) = engine.location_of(l.sku).expect("a location's cell");
            (location.to_owned(), l.quantity)
        })
        .collect()
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[test]
fn the_first_location_creates_the_sku_and_its_counts_are_the_sums() {
    let engine = engine();
    stock(&engine, "tee", "berlin", 3, None);
    stock(&engine, "tee", "paris", 4, None);
    let tee = engine.sku("tee").unwrap();
    assert_eq!(
        at(&engine, tee),
        vec![(s("berlin"), 3, 0), (s("paris"), 4, 0)]
    );
    assert_eq!(engine.sku_document(tee).unwrap().available, 7);
    // The location cells are not SKUs of their own: not listed, not found.
    let listed = engine.skus_after(None, 100);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(engine.sku("tee/berlin").is_err());
    assert_eq!(engine.locations(tee).unwrap().len(), 2);
}

#[test]
fn a_line_goes_to_the_lowest_priority_number_that_has_all_its_units() {
    let engine = engine();
    stock(&engine, "tee", "store", 2, Some(0));
    stock(&engine, "tee", "warehouse", 10, Some(1));
    let tee = engine.sku("tee").unwrap();
    let first = order(&engine, &[line(tee, 2)], 0).unwrap();
    assert_eq!(taken_from(&engine, first), vec![(s("store"), 2)]);
    // The store has none left: the warehouse serves.
    let second = order(&engine, &[line(tee, 1)], 0).unwrap();
    assert_eq!(taken_from(&engine, second), vec![(s("warehouse"), 1)]);
    // A priority change takes effect at once.
    stock(&engine, "tee", "store", 5, Some(2));
    let third = order(&engine, &[line(tee, 1)], 0).unwrap();
    assert_eq!(taken_from(&engine, third), vec![(s("warehouse"), 1)]);
}

#[test]
fn of_equal_priorities_the_location_with_the_most_available_serves() {
    let engine = engine();
    stock(&engine, "tee", "a", 2, None);
    stock(&engine, "tee", "b", 5, None);
    stock(&engine, "tee", "c", 3, None);
    let tee = engine.sku("tee").unwrap();
    let id = order(&engine, &[line(tee, 1)], 0).unwrap();
    assert_eq!(taken_from(&engine, id), vec![(s("b"), 1)]);
    assert_eq!(
        at(&engine, tee),
        vec![(s("a"), 2, 0), (s("b"), 4, 1), (s("c"), 3, 0)]
    );
}

/// No "the total says yes, the first location says no": a line either
/// fits one location, or is refused saying so, or (allowed) is split.
#[test]
fn a_line_is_split_across_locations_only_when_it_asks() {
    let engine = engine();
    stock(&engine, "tee", "a", 3, Some(0));
    stock(&engine, "tee", "b", 3, Some(1));
    let tee = engine.sku("tee").unwrap();
    assert_eq!(
        order(&engine, &[line(tee, 5)], 0),
        Err(EngineError::NotAtOneLocation {
            sku: tee,
            requested: 5,
            most_at_one: 3,
            total: 6,
        })
    );
    assert_eq!(at(&engine, tee), vec![(s("a"), 3, 0), (s("b"), 3, 0)]);
    let id = order(&engine, &[line(tee, 5)], 1).unwrap();
    assert_eq!(taken_from(&engine, id), vec![(s("a"), 3), (s("b"), 2)]);
    assert_eq!(at(&engine, tee), vec![(s("a"), 0, 3), (s("b"), 1, 2)]);
    // Past the total: sold out, with what the locations have together.
    assert_eq!(
        order(&engine, &[line(tee, 2)], 1),
        Err(EngineError::SoldOut {
            sku: tee,
            available: 1,
            requested: 2,
        })
    );
    // A cancel gives each location back its own units.
    engine.cancel(id).unwrap();
    assert_eq!(at(&engine, tee), vec![(s("a"), 3, 0), (s("b"), 3, 0)]);
}

#[test]
fn a_named_location_serves_alone() {
    let engine = engine();
    stock(&engine, "tee", "a", 1, None);
    stock(&engine, "tee", "b", 9, None);
    let tee = engine.sku("tee").unwrap();
    let a = engine.location(tee, "a").unwrap();
    order(&engine, &[line(a, 1)], 0).unwrap();
    // "a" is empty; "b" has 9, but the line named "a".
    assert_eq!(
        order(&engine, &[line(a, 1)], 0),
        Err(EngineError::SoldOut {
            sku: a,
            available: 0,
            requested: 1,
        })
    );
    assert_eq!(
        engine.location(tee, "nowhere"),
        Err(EngineError::UnknownLocation {
            sku: tee,
            location: "nowhere".into(),
        })
    );
}

#[test]
fn a_cart_is_all_or_nothing_across_locations() {
    let engine = engine();
    stock(&engine, "tee", "a", 2, None);
    stock(&engine, "tee", "b", 2, None);
    stock(&engine, "mug", "a", 1, None);
    let (tee, mug) = (engine.sku("tee").unwrap(), engine.sku("mug").unwrap());
    // The tee fits (split), the mugs do not: nothing is taken.
    let refused = order(&engine, &[line(tee, 3), line(mug, 2)], 0b01);
    assert!(
        matches!(refused, Err(EngineError::SoldOut { sku, .. }) if sku == mug),
        "{refused:?}"
    );
    assert_eq!(at(&engine, tee), vec![(s("a"), 2, 0), (s("b"), 2, 0)]);
    assert_eq!(at(&engine, mug), vec![(s("a"), 1, 0)]);
    // Two lines of one SKU count its locations' units once.
    let id = order(&engine, &[line(tee, 2), line(mug, 1)], 0).unwrap();
    let a = engine.location(tee, "a").unwrap();
    let both = order(&engine, &[line(tee, 1), line(a, 1)], 0);
    assert!(both.is_err(), "only 2 left, at b: {both:?}");
    assert_eq!(taken_from(&engine, id).len(), 2);
}

#[test]
fn each_location_keeps_its_own_safety_stock() {
    let engine = engine();
    let put = |on_hand, safety| LocationPut {
        stock: SkuPut {
            level: Some(StockLevel::OnHand(on_hand)),
            safety_stock: Some(safety),
            ..SkuPut::default()
        },
        priority: None,
    };
    engine.put_location("tee", "store", &put(10, 3)).unwrap();
    engine.put_location("tee", "depot", &put(5, 0)).unwrap();
    let tee = engine.sku("tee").unwrap();
    let doc = engine.sku_document(tee).unwrap();
    assert_eq!(
        (doc.available, doc.safety_stock, doc.on_hand()),
        (12, 3, 15)
    );
    let store = engine.location(tee, "store").unwrap();
    order(&engine, &[line(store, 6)], 0).unwrap();
    // 6 held + 3 kept back: fewer than 9 on hand is refused.
    let below = engine.put_location("tee", "store", &put(8, 3));
    assert!(
        matches!(below, Err(EngineError::BelowCommitted { .. })),
        "{below:?}"
    );
    assert_eq!(at(&engine, tee)[0], (s("store"), 1, 6));
}

#[test]
fn what_a_sku_kept_at_locations_refuses() {
    let engine = engine();
    let (plain, _) = engine.put_sku("plain", 5, None, None).unwrap();
    let put = LocationPut {
        stock: SkuPut {
            level: Some(StockLevel::Available(1)),
            ..SkuPut::default()
        },
        priority: None,
    };
    assert_eq!(
        engine.put_location("plain", "a", &put),
        Err(EngineError::LocationRefused {
            sku: plain,
            reason: LocationRefusal::NotLocated,
        })
    );
    stock(&engine, "tee", "a", 5, None);
    let tee = engine.sku("tee").unwrap();
    let at_locations = Err(EngineError::LocationRefused {
        sku: tee,
        reason: LocationRefusal::StockAtLocations,
    });
    assert_eq!(engine.restock(tee, 1).map(drop), at_locations);
    assert_eq!(engine.put_sku("tee", 1, None, None).map(drop), at_locations);
    assert_eq!(engine.set_limit(tee, Some(1)).map(drop), at_locations);
    let kit = engine.define_kit("box", &[line(tee, 1)]);
    assert_eq!(
        kit.map(drop),
        Err(EngineError::KitRefused {
            sku: tee,
            reason: KitRefusal::ComponentHasLocations,
        })
    );
    for bad in ["", "a/b", "a b", &"x".repeat(61)] {
        let refused = engine.put_location("tee", bad, &put);
        assert!(
            matches!(refused, Err(EngineError::InvalidLocationName { .. })),
            "{bad:?}: {refused:?}"
        );
    }
    for n in 1..hotstock::core::limits::MAX_LOCATIONS_PER_SKU {
        stock(&engine, "tee", &format!("l{n}"), 0, None);
    }
    assert_eq!(
        engine.put_location("tee", "one-too-many", &put),
        Err(EngineError::LocationRefused {
            sku: tee,
            reason: LocationRefusal::TooManyLocations,
        })
    );
    let with_limit = LocationPut {
        stock: SkuPut {
            limit: Some(Some(2)),
            ..put.stock
        },
        priority: None,
    };
    for sku in ["tee", "new"] {
        assert_eq!(
            engine.put_location(sku, "a", &with_limit).map(drop),
            Err(EngineError::LimitAtLocation)
        );
    }
    assert!(engine.sku("new").is_err(), "a refused put creates nothing");
    // Nothing refused changed anything.
    assert_eq!(engine.sku_document(tee).unwrap().available, 5);
}

#[test]
fn a_record_less_sale_takes_from_one_location() {
    let engine = engine();
    stock(&engine, "tee", "a", 1, Some(0));
    stock(&engine, "tee", "b", 4, Some(1));
    let tee = engine.sku("tee").unwrap();
    engine.sell(tee, 2).unwrap();
    let doc = engine.sku_document(tee).unwrap();
    let sold: Vec<u64> = doc.locations.unwrap().iter().map(|l| l.sold).collect();
    assert_eq!(sold, vec![0, 2]);
}

/// Buyers racing over three locations (whole and split lines, named and
/// allocated) and an operator moving priorities: no location ever sells
/// more than it had, and every unit is accounted for.
#[test]
fn concurrent_buyers_never_oversell_a_location() {
    let engine = Arc::new(engine());
    for (location, units) in [("a", 40), ("b", 25), ("c", 15)] {
        stock(&engine, "tee", location, units, None);
    }
    let tee = engine.sku("tee").unwrap();
    let b = engine.location(tee, "b").unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let mut sold = 0u64;
                for i in 0..200u32 {
                    if t == 0 && i % 20 == 0 {
                        stock_priority(&engine, ["a", "b", "c"][(i / 20) as usize % 3], i);
                    }
                    let (lines, split) = match i % 4 {
                        0 => ([line(b, 1)], 0),
                        1 => ([line(tee, 3)], 1),
                        _ => ([line(tee, 2)], 0),
                    };
                    let buy = Order {
                        lines: &lines,
                        split,
                        confirm: true,
                        ..Order::default()
                    };
                    if engine.reserve(&buy).is_ok() {
                        sold += u64::from(lines[0].quantity);
                    }
                }
                sold
            })
        })
        .collect();
    let sold: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let doc = engine.sku_document(tee).unwrap();
    assert_eq!(doc.sold, sold);
    assert_eq!(doc.received, 80);
    // `at` checks every location's conservation and the sums.
    at(&engine, tee);
    assert!(doc.available < 3, "the crowd drained it: {doc:?}");
}

fn stock_priority(engine: &Engine, location: &str, priority: u32) {
    let put = LocationPut {
        stock: SkuPut::default(),
        priority: Some(priority),
    };
    engine.put_location("tee", location, &put).unwrap();
}

mod model {
    //! The allocation rule against a model: per location (in the order
    //! they were added) its priority and counts; an order goes to the
    //! first of (priority, most available) that has all its units, or,
    //! split, to each in that order.

    use super::*;
    use proptest::prelude::*;

    const LOCATIONS: [&str; 3] = ["a", "b", "c"];

    #[derive(Clone, Debug)]
    enum Op {
        Put(usize, Option<u64>, Option<u32>),
        /// Units, and how: 0 allocated, 1 split, 2 + l named location l.
        Reserve(u32, usize),
        Cancel(usize),
        Confirm(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..3usize, prop::option::of(0..6u64), prop::option::of(0..3u32))
                .prop_map(|(l, n, p)| Op::Put(l, n, p)),
            3 => (1..5u32, 0..5usize).prop_map(|(q, how)| Op::Reserve(q, how)),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => any::<usize>().prop_map(Op::Confirm),
        ]
    }

    #[derive(Clone, Debug, Default)]
    struct Place {
        name: usize,
        priority: u32,
        available: u64,
        held: u64,
        sold: u64,
    }

    #[derive(Default)]
    struct Model {
        places: Vec<Place>,
        /// Per reservation: (place, units) taken, and whether it is held.
        holds: Vec<(Vec<(usize, u64)>, bool)>,
    }

    impl Model {
        fn allocate(&self, q: u64, split: bool) -> Result<Vec<(usize, u64)>, &'static str> {
            let mut order: Vec<usize> = (0..self.places.len()).collect();
            let p = &self.places;
            order.sort_by_key(|&i| (p[i].priority, std::cmp::Reverse(p[i].available)));
            let total: u64 = p.iter().map(|p| p.available).sum();
            if total < q {
                return Err("sold_out");
            }
            if !split {
                let one = order.iter().find(|&&i| p[i].available >= q);
                return one.map(|&i| vec![(i, q)]).ok_or("not_at_one_location");
            }
            let mut left = q;
            let mut taken = Vec::new();
            for i in order {
                let units = p[i].available.min(left);
                if units > 0 {
                    taken.push((i, units));
                    left -= units;
                }
            }
            Ok(taken)
        }
    }

    fn kind(error: &EngineError) -> &'static str {
        match error {
            EngineError::SoldOut { .. } => "sold_out",
            EngineError::NotAtOneLocation { .. } => "not_at_one_location",
            EngineError::UnknownSku { .. } | EngineError::UnknownLocation { .. } => "unknown",
            _ => "other",
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn allocation_follows_the_rule(ops in prop::collection::vec(op(), 1..40)) {
            let engine = engine();
            let mut model = Model::default();
            let mut ids: Vec<ReservationId> = Vec::new();
            for (step, op) in ops.iter().enumerate() {
                match *op {
                    Op::Put(l, available, priority) => {
                        let put = LocationPut {
                            stock: SkuPut {
                                level: available.map(StockLevel::Available),
                                ..SkuPut::default()
                            },
                            priority,
                        };
                        // An empty put still makes the location (the HTTP
                        // layer refuses one).
                        let got = engine.put_location("tee", LOCATIONS[l], &put);
                        prop_assert!(got.is_ok(), "step {step}: {got:?}");
                        let at = match model.places.iter().position(|p| p.name == l) {
                            Some(at) => at,
                            None => {
                                model.places.push(Place { name: l, ..Place::default() });
                                model.places.len() - 1
                            }
                        };
                        let place = &mut model.places[at];
                        if let Some(n) = available {
                            place.available = n;
                        }
                        if let Some(p) = priority {
                            place.priority = p;
                        }
                    }
                    Op::Reserve(q, how) => {
                        let Ok(tee) = engine.sku("tee") else { continue };
                        let (sku, split) = match how {
                            0 => (Ok(tee), false),
                            1 => (Ok(tee), true),
                            l => (engine.location(tee, LOCATIONS[l - 2]), false),
                        };
                        let Ok(sku) = sku else {
                            let named = model.places.iter().any(|p| p.name == how - 2);
                            prop_assert!(!named, "step {step}: a known location not found");
                            continue;
                        };
                        let got = order(&engine, &[line(sku, q)], u32::from(split));
                        let want = match how {
                            0 | 1 => model.allocate(u64::from(q), split),
                            l => {
                                let at = model.places.iter().position(|p| p.name == l - 2);
                                let at = at.unwrap();
                                match model.places[at].available >= u64::from(q) {
                                    true => Ok(vec![(at, u64::from(q))]),
                                    false => Err("sold_out"),
                                }
                            }
                        };
                        match (&got, want) {
                            (Ok(id), Ok(taken)) => {
                                let names: Vec<(String, u32)> = (taken.iter())
                                    .map(|&(i, u)| (s(LOCATIONS[model.places[i].name]), u as u32))
                                    .collect();
                                prop_assert_eq!(taken_from(&engine, *id), names, "step {}", step);
                                for &(i, units) in &taken {
                                    model.places[i].available -= units;
                                    model.places[i].held += units;
                                }
                                ids.push(*id);
                                model.holds.push((taken, true));
                            }
                            (Err(error), Err(want)) => prop_assert_eq!(kind(error), want),
                            (got, want) => prop_assert!(false, "step {step}: {got:?} vs {want:?}"),
                        }
                    }
                    Op::Cancel(i) | Op::Confirm(i) => {
                        if ids.is_empty() {
                            continue;
                        }
                        let i = i % ids.len();
                        let cancel = matches!(op, Op::Cancel(_));
                        let got = match cancel {
                            true => engine.cancel(ids[i]),
                            false => engine.confirm(ids[i]),
                        };
                        let (taken, held) = &mut model.holds[i];
                        if *held {
                            prop_assert!(got.is_ok(), "step {step}: {got:?}");
                            for &(at, units) in taken.iter() {
                                let place = &mut model.places[at];
                                place.held -= units;
                                match cancel {
                                    true => place.available += units,
                                    false => place.sold += units,
                                }
                            }
                            *held = false;
                        }
                    }
                }
                // Every location's counts, in the order they were added.
                if let Ok(tee) = engine.sku("tee") {
                    let doc = engine.sku_document(tee).unwrap();
                    let got: Vec<(u64, u64, u64, u32)> = (doc.locations.unwrap().iter())
                        .map(|l| (l.available, l.held, l.sold, l.priority))
                        .collect();
                    let want: Vec<(u64, u64, u64, u32)> = (model.places.iter())
                        .map(|p| (p.available, p.held, p.sold, p.priority))
                        .collect();
                    prop_assert_eq!(got, want, "step {}", step);
                }
            }
        }
    }
}

//! The waiting room's rules, step by step with a fixed clock.

use super::*;

const START: u64 = 1_000_000;

fn config(admit_per_s: u32, overbook_milli: u32) -> RoomConfig {
    RoomConfig {
        admit_per_s,
        overbook_milli,
        admission_ttl_ms: 30_000,
    }
}

fn step(now_ms: u64, config: RoomConfig, available: u64, held: u64) -> Step {
    Step {
        now_ms,
        config,
        window: SaleWindow {
            starts_at_ms: Some(START),
            ends_at_ms: None,
        },
        available,
        held,
    }
}

/// A room opened well before the sale.
fn room(config: RoomConfig, seed: u64) -> WaitingRoom {
    WaitingRoom::new(config, 0, seed, 7)
}

fn admitted(room: &mut WaitingRoom, at: &Step, tickets: std::ops::Range<u32>) -> Vec<u32> {
    tickets
        .filter(|&t| matches!(room.poll(at, t), Some(Standing::Admitted { .. })))
        .collect()
}

#[test]
fn joining_twice_keeps_the_place() {
    let c = config(10, 1_000);
    let mut room = room(c, 1);
    let before = step(10, c, 5, 0);
    let first = room.join(&before, "ann").unwrap();
    assert_eq!(room.join(&before, "bob").unwrap(), first + 1);
    assert_eq!(room.join(&before, "ann").unwrap(), first);
    assert_eq!(room.counts().joined, 2);
    assert_eq!(room.customer(first), Some("ann"));
}

#[test]
fn before_the_shuffle_nobody_has_a_place_or_an_admission() {
    let c = config(10, 1_000);
    let mut room = room(c, 1);
    let before = step(START - 3_000, c, 5, 0);
    let ticket = room.join(&before, "ann").unwrap();
    match room.poll(&before, ticket) {
        Some(Standing::Waiting {
            place: None,
            shuffle_at_ms,
            poll_after_ms,
            ..
        }) => {
            assert_eq!(shuffle_at_ms, START);
            assert!((3_000..3_000 + SHUFFLE_SPREAD_MS).contains(&poll_after_ms));
        }
        other => panic!("{other:?}"),
    }
    // Polled when it was told to: shuffled and admitted.
    let open = step(START + SHUFFLE_SPREAD_MS, c, 5, 0);
    assert!(matches!(
        room.poll(&open, ticket),
        Some(Standing::Admitted { .. })
    ));
}

/// 10,000 buyers join before the start, 100 units: the admitted are a
/// uniform sample of who joined, not the earliest. Over 20 fixed seeds
/// (2,000 admissions), the join order of those admitted falls in ten
/// deciles about equally: chi-squared with 9 degrees of freedom under
/// 27.88 (p = 0.001). Without the shuffle every admission is in the first
/// decile (chi-squared 18,000).
#[test]
fn early_arrivals_are_admitted_as_a_uniform_sample() {
    let c = config(1_000, 1_000);
    let mut deciles = [0u64; 10];
    for seed in 0..20u64 {
        let mut room = room(c, splitmix(seed + 1));
        let before = step(START - 1, c, 100, 0);
        for buyer in 0..10_000u32 {
            room.join(&before, &format!("b{buyer}")).unwrap();
        }
        let open = step(START, c, 100, 0);
        room.tick(&open, true);
        let chosen = admitted(&mut room, &open, 0..10_000);
        assert_eq!(chosen.len(), 100, "the stock bounds the admissions");
        for ticket in chosen {
            deciles[ticket as usize / 1_000] += 1;
        }
    }
    let expected = 200.0;
    let chi2: f64 = deciles
        .iter()
        .map(|&n| (n as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 27.88, "deciles {deciles:?}: chi-squared {chi2}");
}

#[test]
fn later_arrivals_queue_in_order_behind_the_shuffled() {
    let c = config(1, 1_000);
    let mut room = room(c, 3);
    let before = step(START - 1, c, 10, 0);
    for buyer in 0..5 {
        room.join(&before, &format!("early{buyer}")).unwrap();
    }
    let open = step(START, c, 10, 0);
    let late: Vec<u32> = (0..3)
        .map(|i| room.join(&open, &format!("late{i}")).unwrap())
        .collect();
    room.tick(&open, true);
    let places: Vec<Option<u64>> = late
        .iter()
        .map(|&t| match room.poll(&open, t) {
            Some(Standing::Waiting { place, .. }) => place,
            other => panic!("{other:?}"),
        })
        .collect();
    // One admitted at the start (one per second): 4 early ahead of them.
    assert_eq!(places, [Some(5), Some(6), Some(7)]);
}

/// Buyers arrive, some reserve (taking a unit), some never do (their
/// admissions lapse), holds expire and units come back. With an overbook
/// of 1 the admitted-and-unreserved are at most the available units after
/// every step; with more, at every step that admitted someone (a
/// reservation lowers both sides by one, see the module docs). One buyer
/// in four never reserves: those admissions lapse.
fn run_crowd(overbook_milli: u32) {
    let c = RoomConfig {
        admit_per_s: 50,
        overbook_milli,
        admission_ttl_ms: 2_000,
    };
    let mut room = room(c, 9);
    let (mut available, mut held) = (40u64, 0u64);
    let mut holds: VecDeque<u64> = VecDeque::new();
    let mut rng = 5u64;
    let mut next_buyer = 0u32;
    for tick in 0..4_000u64 {
        let now = START + tick * 10;
        while holds.front().is_some_and(|&ends| ends <= now) {
            holds.pop_front();
            held -= 1;
            available += 1;
        }
        let at = step(now, c, available, held);
        for _ in 0..3 {
            if room.join(&at, &format!("b{next_buyer}")).is_ok() {
                next_buyer += 1;
            }
        }
        let admitted_before = room.counts().admitted;
        room.tick(&at, true);
        let cap = available * u64::from(overbook_milli) / 1_000;
        let counts = room.counts();
        if overbook_milli == 1_000 || counts.admitted > admitted_before {
            assert!(
                counts.outstanding <= cap,
                "at {now}: {} admitted and unreserved, {available} available",
                counts.outstanding
            );
        }
        for ticket in 0..next_buyer {
            rng = splitmix(rng);
            let Some(Standing::Admitted { .. }) = room.poll(&at, ticket) else {
                continue;
            };
            // A third reserve now (if a unit is free), the others may later
            // (but one in four never).
            if ticket % 4 != 3 && rng % 3 == 0 && available > 0 {
                let customer = room.customer(ticket).unwrap().to_owned();
                assert_eq!(room.claim(&at, ticket, &customer, 0), Ok(Claim::Fresh));
                room.finish(now, ticket, ClaimEnd::Spent);
                available -= 1;
                held += 1;
                holds.push_back(now + 5_000);
            }
        }
    }
    let counts = room.counts();
    assert!(counts.used > 40, "units came back and were sold again");
    assert_eq!(
        counts.admitted,
        counts.used + counts.lapsed + counts.outstanding
    );
    assert!(counts.lapsed > 0);
}

#[test]
fn admissions_never_outrun_the_free_stock() {
    run_crowd(1_000);
}

#[test]
fn overbooked_admissions_stop_at_the_bound() {
    run_crowd(1_500);
}

#[test]
fn when_nothing_is_left_everyone_waiting_reads_sold_out_and_nobody_joins() {
    let c = config(1, 1_000);
    let mut room = room(c, 4);
    let open = step(START, c, 1, 0);
    let tickets: Vec<u32> = (0..5)
        .map(|i| room.join(&open, &format!("b{i}")).unwrap())
        .collect();
    room.tick(&open, true);
    let first = admitted(&mut room, &open, 0..5);
    assert_eq!(first.len(), 1);
    // The one unit is held, then sold: nothing can come back.
    let held = step(START + 100, c, 0, 1);
    room.tick(&held, true);
    assert!(matches!(
        room.poll(&held, tickets[4]),
        Some(Standing::Waiting { .. })
    ));
    let gone = step(START + 200, c, 0, 0);
    for &ticket in &tickets[1..] {
        assert_eq!(room.poll(&gone, ticket), Some(Standing::SoldOut));
    }
    assert_eq!(room.join(&gone, "late"), Err(JoinRefusal::SoldOut));
}

#[test]
fn an_admission_is_used_once_and_only_by_its_buyer() {
    let c = config(10, 1_000);
    let mut room = room(c, 2);
    let open = step(START, c, 5, 0);
    let ticket = room.join(&open, "ann").unwrap();
    room.tick(&open, true);
    assert_eq!(
        room.claim(&open, ticket, "bob", 0),
        Err(AdmissionRefusal::Unknown)
    );
    assert_eq!(room.claim(&open, ticket, "ann", 11), Ok(Claim::Fresh));
    assert_eq!(
        room.claim(&open, ticket, "ann", 11),
        Err(AdmissionRefusal::InUse)
    );
    // Refused for something the buyer can fix: still good.
    room.finish(START, ticket, ClaimEnd::Kept);
    assert_eq!(room.claim(&open, ticket, "ann", 11), Ok(Claim::Fresh));
    room.finish(START, ticket, ClaimEnd::Spent);
    assert_eq!(room.claim(&open, ticket, "ann", 11), Ok(Claim::Retry));
    assert_eq!(
        room.claim(&open, ticket, "ann", 12),
        Err(AdmissionRefusal::Used)
    );
    assert_eq!(
        room.claim(&open, ticket, "ann", 0),
        Err(AdmissionRefusal::Used)
    );
    assert_eq!(room.poll(&open, ticket), Some(Standing::Used));
    let counts = room.counts();
    assert_eq!((counts.used, counts.outstanding), (1, 0));
    // Joining again after using it: a new place at the back.
    assert_ne!(room.join(&open, "ann").unwrap(), ticket);
}

#[test]
fn a_lapsed_admission_frees_its_slot_for_the_next_buyer() {
    let c = config(10, 1_000);
    let mut room = room(c, 2);
    let open = step(START, c, 1, 0);
    let first = room.join(&open, "ann").unwrap();
    let second = room.join(&open, "bob").unwrap();
    room.tick(&open, true);
    assert_eq!(admitted(&mut room, &open, 0..2), [first]);
    let late = step(START + c.admission_ttl_ms, c, 1, 0);
    assert_eq!(
        room.claim(&late, first, "ann", 0),
        Err(AdmissionRefusal::Lapsed {
            expired_at_ms: START + c.admission_ttl_ms
        })
    );
    assert!(matches!(
        room.poll(&late, second),
        Some(Standing::Admitted { .. })
    ));
    assert_eq!(room.counts().lapsed, 1);
}

#[test]
fn an_early_poll_does_not_move_the_line() {
    let c = config(1, 1_000);
    let mut room = room(c, 2);
    let open = step(START, c, 10, 0);
    let tickets: Vec<u32> = (0..6)
        .map(|i| room.join(&open, &format!("b{i}")).unwrap())
        .collect();
    room.tick(&open, true);
    assert_eq!(room.counts().admitted, 1);
    let Some(Standing::Waiting {
        place: Some(5),
        poll_after_ms,
        ..
    }) = room.poll(&open, tickets[5])
    else {
        panic!("the sixth buyer is fifth in line");
    };
    // A second later one more may be admitted, but a poll before its time
    // is answered from the ticket: the line has not moved.
    assert!(poll_after_ms > 1_000, "{poll_after_ms}");
    let early = step(START + 1_000, c, 10, 0);
    room.poll(&early, tickets[5]);
    assert_eq!(room.counts().admitted, 1);
    room.poll(&early, tickets[1]);
    assert_eq!(room.counts().admitted, 2);
}

#[test]
fn a_flood_of_early_polls_is_refused_until_the_hinted_time() {
    let c = config(1, 1_000);
    let mut room = room(c, 2);
    let open = step(START, c, 10, 0);
    let tickets: Vec<u32> = (0..6)
        .map(|i| room.join(&open, &format!("b{i}")).unwrap())
        .collect();
    let Some(Standing::Waiting { poll_after_ms, .. }) = room.poll(&open, tickets[5]) else {
        panic!("waiting");
    };
    for _ in 0..MAX_EARLY_POLLS {
        assert!(matches!(
            room.poll(&open, tickets[5]),
            Some(Standing::Waiting { .. })
        ));
    }
    assert_eq!(
        room.poll(&open, tickets[5]),
        Some(Standing::TooSoon {
            retry_after_ms: poll_after_ms
        })
    );
    // At the hinted time it is answered again, and the count starts over.
    let later = step(START + poll_after_ms, c, 10, 0);
    assert!(matches!(
        room.poll(&later, tickets[5]),
        Some(Standing::Waiting { .. })
    ));
}

#[test]
fn a_full_room_refuses_joins() {
    let c = config(10, 1_000);
    let mut room = room(c, 2);
    let open = step(START, c, 10, 0);
    for buyer in 0..MAX_QUEUE_PER_ROOM {
        room.join(&open, &format!("{buyer}")).unwrap();
    }
    assert_eq!(room.join(&open, "one more"), Err(JoinRefusal::Full));
    assert!(
        room.join(&open, "0").is_ok(),
        "a buyer in line keeps its place"
    );
}

#[test]
fn rooms_are_dropped_when_turned_off_and_new_ones_have_new_epochs() {
    let rooms = WaitingRooms::new(42);
    let sku = SkuId::from_index(3);
    let c = config(10, 1_000);
    let first = rooms
        .with_room(sku, Some(c), 0, |room| room.epoch())
        .unwrap();
    assert_eq!(
        rooms.with_room(sku, Some(c), 5, |room| room.epoch()),
        Some(first)
    );
    assert_eq!(rooms.with_room(sku, None, 5, |room| room.epoch()), None);
    assert!(rooms.counts().is_empty());
    let second = rooms
        .with_room(sku, Some(c), 9, |room| room.epoch())
        .unwrap();
    assert_ne!(first, second);
}

#[test]
fn settings_outside_the_limits_are_refused() {
    let good = config(10, 1_000);
    assert!(good.validate().is_ok());
    for bad in [
        RoomConfig {
            admit_per_s: 0,
            ..good
        },
        RoomConfig {
            overbook_milli: 999,
            ..good
        },
        RoomConfig {
            admission_ttl_ms: 999,
            ..good
        },
        RoomConfig {
            admission_ttl_ms: MAX_ADMISSION_TTL_MS + 1,
            ..good
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

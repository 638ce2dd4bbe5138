//! Loom models of the hold lifecycle on the real `HoldTable` and
//! `StockCell`: confirm, cancel, refund and expiry racing on one hold.
#![cfg(loom)]

use hotstock::models::SkuId;
use hotstock::models::{
    ExtendError, ExtendRule, HoldStatus, HoldTable, Line, NewHold, ReservationId, Retention,
    Settle, Transition,
};
use hotstock::models::{StockCell, StripePolicy, TakeInto};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

const DEADLINE: u64 = 100;
/// Nothing is pruned in these models.
const KEEP: Retention = Retention {
    ended_ms: u64::MAX,
    refund_window_ms: u64::MAX,
};

struct World {
    holds: HoldTable,
    cell: StockCell,
    settles: AtomicUsize,
}

impl World {
    /// One SKU with 2 units, one held by a hold with `DEADLINE`.
    fn with_hold(status: HoldStatus) -> (Arc<World>, ReservationId) {
        let policy = StripePolicy {
            stripes: 2,
            widen_after_conflicts: 1,
            widen_min_units: 4,
            narrow_below_units: 1,
        };
        let world = World {
            holds: HoldTable::new(64),
            cell: StockCell::new(),
            settles: AtomicUsize::new(0),
        };
        world.cell.restock(2, 0, |_| {}, |_| {}).unwrap();
        let into = if status == HoldStatus::Held {
            TakeInto::Held
        } else {
            TakeInto::Sold
        };
        world.cell.take(1, into, 0, &policy).unwrap();
        let lines = [Line {
            sku: SkuId::from_index(0),
            quantity: 1,
        }];
        let hold = NewHold {
            lines: &lines,
            customer: None,
            limit_mask: 0,
            deadline_ms: DEADLINE,
            created_ms: 0,
            status,
            extensions: 0,
            amounts: None,
            backordered: false,
        };
        let id = world.holds.insert(0, hold, |_| {}).unwrap();
        (Arc::new(world), id)
    }

    /// What the engine's settle does with one SKU's units.
    fn settle(&self, how: Settle, hint: usize) {
        self.settles.fetch_add(1, Ordering::Relaxed);
        match how {
            Settle::Confirm => self.cell.confirm_held(1, hint),
            Settle::Release => self.cell.release_held(1, hint),
            Settle::Refund => self.cell.refund_sold(1, hint),
        }
    }

    fn transition(
        &self,
        id: ReservationId,
        t: Transition,
        now: u64,
        hint: usize,
    ) -> Result<HoldStatus, ()> {
        self.holds
            .transition(id, t, now, |how, _| self.settle(how, hint))
            .map_err(|_| ())
    }
}

/// Race: confirm, cancel and the expiry timer on one hold. Exactly one wins;
/// units move exactly once, and the books match the winner.
#[test]
fn confirm_cancel_and_expiry_race_on_one_hold() {
    loom::model(|| {
        let (world, id) = World::with_hold(HoldStatus::Held);
        let confirmer = {
            let world = world.clone();
            thread::spawn(move || world.transition(id, Transition::Confirm, DEADLINE - 1, 1))
        };
        let expirer = {
            let world = world.clone();
            thread::spawn(move || {
                world
                    .holds
                    .run_timers(DEADLINE, KEEP, || {}, |how, _| world.settle(how, 2))
                    .expired
            })
        };
        let cancelled = world.transition(id, Transition::Cancel, DEADLINE - 1, 0);
        let confirmed = confirmer.join().unwrap();
        let expired = expirer.join().unwrap();
        let winners = usize::from(cancelled.is_ok()) + usize::from(confirmed.is_ok()) + expired;
        assert_eq!(winners, 1, "exactly one transition wins");
        assert_eq!(
            world.settles.load(Ordering::Relaxed),
            1,
            "units move exactly once"
        );
        let s = world.cell.snapshot();
        assert_eq!(s.available + s.held + s.sold, 2);
        let status = world
            .holds
            .get(id, 0, || {}, |_, _| unreachable!())
            .unwrap()
            .status;
        match status {
            HoldStatus::Confirmed => assert_eq!((s.available, s.sold), (1, 1)),
            HoldStatus::Cancelled | HoldStatus::Expired => {
                assert_eq!((s.available, s.held), (2, 0))
            }
            other => panic!("hold left in {other}"),
        }
    });
}

/// An extension to `DEADLINE + 50`, asked at `now`.
const EXTEND: ExtendRule = ExtendRule {
    ttl_ms: 50,
    max_extensions: 3,
    max_hold_ms: 1_000,
};

impl World {
    /// The expiry timer running at `now` on another thread (hint 1); joins
    /// to the number it expired.
    fn spawn_timer(world: &Arc<World>, now: u64) -> thread::JoinHandle<usize> {
        let world = world.clone();
        thread::spawn(move || {
            world
                .holds
                .run_timers(now, KEEP, || {}, |how, _| world.settle(how, 1))
                .expired
        })
    }

    fn extend(&self, id: ReservationId, now: u64, hint: usize) -> Result<u64, ExtendError> {
        self.holds
            .extend(id, EXTEND, now, |how, _| self.settle(how, hint), |_, _| {})
            .map(|(deadline, _)| deadline)
    }
}

/// Race: an extension asked just before the deadline against the expiry
/// timer running at the deadline. One of them wins, never both: either the
/// hold was extended (the timer's due entry is stale and skipped, nothing
/// settles, and it expires once at its new deadline), or it expired (units
/// back once) and the extension is refused naming `expired`.
#[test]
fn extension_races_the_expiry_timer() {
    loom::model(|| {
        let (world, id) = World::with_hold(HoldStatus::Held);
        let expirer = World::spawn_timer(&world, DEADLINE);
        let extended = world.extend(id, DEADLINE - 1, 0);
        let expired = expirer.join().unwrap();
        match extended {
            Ok(deadline) => {
                assert_eq!((deadline, expired), (DEADLINE - 1 + 50, 0));
                assert_eq!(world.settles.load(Ordering::Relaxed), 0);
                let at_new_deadline =
                    world
                        .holds
                        .run_timers(deadline, KEEP, || {}, |how, _| world.settle(how, 0));
                assert_eq!(at_new_deadline.expired, 1);
            }
            Err(error) => {
                assert_eq!(
                    (error, expired),
                    (
                        ExtendError::Invalid {
                            status: HoldStatus::Expired
                        },
                        1
                    )
                );
            }
        }
        assert_eq!(world.settles.load(Ordering::Relaxed), 1, "expires once");
        let s = world.cell.snapshot();
        assert_eq!((s.available, s.held, s.sold), (2, 0, 0));
    });
}

/// Race: a late extension (at the deadline) against the timer, as for a
/// late confirm: whoever runs first expires the hold, and the extension
/// never revives it.
#[test]
fn late_extension_races_the_timer() {
    loom::model(|| {
        let (world, id) = World::with_hold(HoldStatus::Held);
        let expirer = World::spawn_timer(&world, DEADLINE);
        let extended = world.extend(id, DEADLINE, 0);
        expirer.join().unwrap();
        assert_eq!(
            extended,
            Err(ExtendError::Invalid {
                status: HoldStatus::Expired
            })
        );
        assert_eq!(world.settles.load(Ordering::Relaxed), 1);
    });
}

/// Race: two refunds of one sale (a retried refund request). The units come
/// back once; both callers are told `Refunded`.
#[test]
fn refund_twice_returns_units_once() {
    loom::model(|| {
        let (world, id) = World::with_hold(HoldStatus::Confirmed);
        let other = {
            let world = world.clone();
            thread::spawn(move || world.transition(id, Transition::Refund, 0, 1))
        };
        let mine = world.transition(id, Transition::Refund, 0, 0);
        assert_eq!(mine, Ok(HoldStatus::Refunded));
        assert_eq!(other.join().unwrap(), Ok(HoldStatus::Refunded));
        assert_eq!(world.settles.load(Ordering::Relaxed), 1);
        let s = world.cell.snapshot();
        assert_eq!((s.available, s.sold), (2, 0));
    });
}

/// Race: a late confirm (after the deadline) against the timer. Whoever
/// runs first expires the hold; the confirm must never succeed.
#[test]
fn late_confirm_races_the_timer() {
    loom::model(|| {
        let (world, id) = World::with_hold(HoldStatus::Held);
        let expirer = World::spawn_timer(&world, DEADLINE);
        let confirmed = world.transition(id, Transition::Confirm, DEADLINE, 0);
        expirer.join().unwrap();
        assert!(
            confirmed.is_err(),
            "a confirm at the deadline must not sell"
        );
        assert_eq!(world.settles.load(Ordering::Relaxed), 1);
        let s = world.cell.snapshot();
        assert_eq!((s.available, s.held, s.sold), (2, 0, 0));
    });
}

/// Race: a reservation is created while another client cancels its id
/// (guessed, or replayed). The creation is recorded under the shard lock
/// that publishes the record, so a cancel can only be recorded after it:
/// no cut of the journal ends a reservation it never created.
#[test]
fn a_reservation_is_recorded_before_anyone_can_end_it() {
    loom::model(|| {
        let holds = Arc::new(HoldTable::new(64));
        let tape = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let creator = {
            let (holds, tape) = (holds.clone(), tape.clone());
            thread::spawn(move || {
                let lines = [Line {
                    sku: SkuId::from_index(0),
                    quantity: 1,
                }];
                let hold = NewHold {
                    lines: &lines,
                    customer: None,
                    limit_mask: 0,
                    deadline_ms: DEADLINE,
                    created_ms: 0,
                    status: HoldStatus::Held,
                    extensions: 0,
                    amounts: None,
                    backordered: false,
                };
                let record = |_| tape.lock().unwrap().push("created");
                holds.insert(0, hold, record).unwrap()
            })
        };
        // The first record of shard 0 gets this id.
        let guessed = ReservationId::from_u64(0);
        let _ = holds.transition(guessed, Transition::Cancel, 0, |_, _| {
            tape.lock().unwrap().push("cancelled")
        });
        assert_eq!(creator.join().unwrap(), guessed);
        let tape = tape.lock().unwrap();
        if let Some(cancelled) = tape.iter().position(|&c| c == "cancelled") {
            let created = tape.iter().position(|&c| c == "created");
            assert!(
                created < Some(cancelled),
                "recorded in this order: {:?}",
                &*tape
            );
        }
    });
}

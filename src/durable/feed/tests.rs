use proptest::prelude::*;

use super::*;
use crate::core::types::{Line, ReservationId, SkuId};
use crate::durable::event::HoldEvent;
use crate::durable::journal::segment::append_frame;

const SKU: SkuId = SkuId(0);

fn feed() -> Feed {
    Feed::new(PublicIds::new([7; 16]), &Settled::default())
}

fn push(feed: &Feed, events: &[Event], end: u64) {
    let mut frames = Vec::new();
    for event in events {
        append_frame(&mut frames, |out| event.encode(out));
    }
    feed.push(&DurableBatch {
        frames: &frames,
        end: Position {
            segment: 0,
            offset: end,
        },
        at_ms: 1_000 + end,
    });
}

fn all(feed: &Feed) -> Vec<FeedEvent> {
    match feed.read(0, usize::MAX, &FeedFilter::default()) {
        FeedRead::Page(page) => page.events,
        other => panic!("{other:?}"),
    }
}

fn hold(id: u64, from: Option<HoldStatus>, status: HoldStatus, quantity: u32) -> Event {
    Event::Hold(HoldEvent {
        id: ReservationId::from_u64(id),
        from,
        status,
        at_ms: 5,
        deadline_ms: 10,
        limit_mask: 0,
        customer: Some("ann".into()),
        lines: vec![Line { sku: SKU, quantity }],
        extensions: 0,
        changes: None,
        owed: None,
        ticket: 0,
    })
}

fn operator(delta: i64, version: u64) -> Event {
    Event::Operator {
        sku: SKU,
        delta,
        version,
        limit: LimitChange::Unchanged,
        safety_stock: None,
    }
}

fn created() -> Event {
    Event::SkuCreated {
        sku: SKU,
        name: "hot".into(),
    }
}

/// The race the stages exist for: reservation 1 takes the last 5 units and
/// is cancelled, then reservation 2 takes them; in the batch, 2 comes first.
fn extension(id: u64, status: HoldStatus, extensions: u8, deadline_ms: u64) -> Event {
    match hold(id, Some(HoldStatus::Held), status, 1) {
        Event::Hold(mut event) => {
            event.extensions = extensions;
            event.deadline_ms = deadline_ms;
            Event::Hold(event)
        }
        _ => unreachable!(),
    }
}

/// A reservation created, extended twice and confirmed in one batch shows
/// its chain in the order it happened, whatever the frame order.
#[test]
fn a_chain_with_extensions_is_told_in_the_order_it_happened() {
    let feed = feed();
    push(&feed, &[created(), operator(5, 1)], 10);
    push(
        &feed,
        &[
            extension(1, HoldStatus::Confirmed, 2, 30),
            extension(1, HoldStatus::Held, 2, 30),
            hold(1, None, HoldStatus::Held, 1),
            extension(1, HoldStatus::Held, 1, 20),
        ],
        20,
    );
    let events = all(&feed);
    let told: Vec<(&str, u64)> = events[3..]
        .iter()
        .map(|e| (e.kind.as_str(), e.reservation.as_ref().unwrap().deadline_ms))
        .collect();
    assert_eq!(
        told,
        [
            ("reservation.created", 10),
            ("reservation.extended", 20),
            ("reservation.extended", 30),
            ("reservation.confirmed", 30),
        ]
    );
    let last = events.last().unwrap().counts;
    assert_eq!((last.available, last.held, last.sold), (4, 0, 1));
}

/// Frame order would show available -5.
#[test]
fn a_take_of_units_a_cancel_gave_back_never_shows_negative_counts() {
    let feed = feed();
    push(&feed, &[created(), operator(5, 1)], 10);
    push(
        &feed,
        &[
            hold(2, None, HoldStatus::Held, 5),
            hold(1, Some(HoldStatus::Held), HoldStatus::Cancelled, 5),
            hold(1, None, HoldStatus::Held, 5),
        ],
        20,
    );
    let events = all(&feed);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "sku.created",
            "sku.changed",
            "sku.back_in_stock",
            "reservation.created",
            "sku.sold_out",
            "reservation.cancelled",
            "sku.back_in_stock",
            "reservation.created",
            "sku.sold_out",
        ]
    );
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=9).collect::<Vec<_>>(), "dense from 1");
    assert_eq!(feed.negative_counts(), 0);
    let last = events.last().unwrap().counts;
    assert_eq!((last.available, last.held, last.sold), (0, 5, 0));
    assert_eq!(events[3].at_ms, 1_020, "the batch's time");
}

#[test]
fn a_checkpoint_takes_only_the_events_of_the_batches_it_covers() {
    let feed = feed();
    push(&feed, &[created(), operator(5, 1)], 10);
    push(&feed, &[hold(1, None, HoldStatus::Confirmed, 1)], 20);
    // A reader made both batches' events; a checkpoint at the first batch
    // must not write the second's.
    assert_eq!(all(&feed).len(), 4);
    let at = |offset| Position { segment: 0, offset };
    let (events, next) = feed.unsaved_through(at(10));
    assert_eq!((events.len(), next), (3, 4));
    // A failed save takes them again; a good one moves on.
    assert_eq!(feed.unsaved_through(at(10)).0.len(), 3);
    feed.mark_saved(next);
    // Into the last checkpoint's buffer (as the checkpointer does): the
    // events it still holds are not this checkpoint's.
    let mut buffer = events;
    let next = feed.unsaved_through_into(at(20), &mut buffer);
    assert_eq!((buffer[0].position, buffer.len(), next), (4, 1, 5));
}

/// A checkpoint of a busy sale writes more events than the feed copies
/// under one hold of its lock: the copy in chunks gives every event of the
/// batches covered once, in position order, and none of the next batch.
#[test]
fn a_checkpoint_of_many_events_takes_them_all_in_order() {
    let feed = feed();
    let holds = |from: u64| -> Vec<Event> {
        (from..from + 20_000)
            .map(|id| hold(id, None, HoldStatus::Confirmed, 1))
            .collect()
    };
    push(&feed, &[created(), operator(1_000_000, 1)], 10);
    push(&feed, &holds(1), 20);
    push(&feed, &holds(20_001), 30);
    push(&feed, &holds(40_001), 40);
    let at = |offset| Position { segment: 0, offset };
    // The first batch's events: created, changed, back in stock.
    let first = feed.unsaved_through(at(10)).0.len() as u64;
    let (events, next) = feed.unsaved_through(at(30));
    assert_eq!(
        (events.len() as u64, next),
        (first + 40_000, first + 40_001)
    );
    assert!(events.iter().zip(1..).all(|(e, p)| e.position == p));
    assert_eq!(events.last().unwrap().counts.sold, 40_000);
    feed.mark_saved(next);
    let (events, next) = feed.unsaved_through(at(40));
    let expected = (first + 40_001, 20_000, first + 60_001);
    assert_eq!((events[0].position, events.len(), next), expected);
}

/// After a sale the feed gives back the room its peak took: a quiet
/// checkpoint interval keeps at most twice what it held; a busy one keeps
/// its room (no regrowing at every checkpoint).
#[test]
fn the_feed_gives_back_a_sales_memory_once_it_is_quiet() {
    let feed = feed();
    let at = |offset| Position { segment: 0, offset };
    let sale = 4 * crate::core::limits::FEED_EVENTS_IN_MEMORY as u64;
    let holds: Vec<Event> = (1..=sale)
        .map(|id| hold(id, None, HoldStatus::Confirmed, 1))
        .collect();
    push(&feed, &[created(), operator(10 * sale as i64, 1)], 10);
    push(&feed, &holds, 20);
    let (_, next) = feed.unsaved_through(at(20));
    feed.mark_saved(next);
    let busy = feed.events_capacity();
    assert!(busy >= sale as usize, "{busy}");
    // A busy interval just as large keeps the room.
    let more: Vec<Event> = (sale + 1..=2 * sale)
        .map(|id| hold(id, None, HoldStatus::Confirmed, 1))
        .collect();
    push(&feed, &more, 30);
    let (_, next) = feed.unsaved_through(at(30));
    feed.mark_saved(next);
    assert_eq!(feed.events_capacity(), busy, "kept while the sale goes on");
    // The sale is over: one quiet interval.
    push(
        &feed,
        &[hold(2 * sale + 1, None, HoldStatus::Confirmed, 1)],
        40,
    );
    let (_, next) = feed.unsaved_through(at(40));
    feed.mark_saved(next);
    let quiet = feed.events_capacity();
    let kept = crate::core::limits::FEED_EVENTS_IN_MEMORY + 1;
    assert!(quiet <= 2 * kept && quiet < busy, "{quiet} of {busy}");
    // The newest events are still served from memory.
    let FeedRead::Page(page) = feed.read(next - 2, 10, &FeedFilter::default()) else {
        panic!("the newest events left memory");
    };
    let sold = page.events.last().unwrap().counts.sold;
    assert_eq!(sold, 2 * sale as i64 + 1);
}

#[derive(Clone, Debug)]
enum Op {
    Restock(u8),
    Remove(u8),
    Hold(u8),
    Buy(u8),
    Confirm(usize),
    Cancel(usize),
    Refund(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..10u8).prop_map(Op::Restock),
        (1..10u8).prop_map(Op::Remove),
        (1..6u8).prop_map(Op::Hold),
        (1..6u8).prop_map(Op::Buy),
        any::<usize>().prop_map(Op::Confirm),
        any::<usize>().prop_map(Op::Cancel),
        any::<usize>().prop_map(Op::Refund),
    ]
}

/// A history one SKU could have had, as its journal events in real order,
/// and its final (available, held, sold).
fn history(ops: &[Op]) -> (Vec<Event>, (i64, i64, i64)) {
    let (mut available, mut held, mut sold) = (0i64, 0i64, 0i64);
    let mut version = 1;
    let mut holds: Vec<(u64, HoldStatus, u32)> = Vec::new();
    let mut events = Vec::new();
    for op in ops {
        match *op {
            Op::Restock(n) => {
                version += 1;
                available += i64::from(n);
                events.push(operator(i64::from(n), version));
            }
            Op::Remove(n) if available >= i64::from(n) => {
                version += 1;
                available -= i64::from(n);
                events.push(operator(-i64::from(n), version));
            }
            Op::Hold(n) | Op::Buy(n) if available >= i64::from(n) => {
                let status = match op {
                    Op::Hold(_) => HoldStatus::Held,
                    _ => HoldStatus::Confirmed,
                };
                available -= i64::from(n);
                match status {
                    HoldStatus::Held => held += i64::from(n),
                    _ => sold += i64::from(n),
                }
                let id = holds.len() as u64 + 1;
                holds.push((id, status, u32::from(n)));
                events.push(hold(id, None, status, u32::from(n)));
            }
            Op::Confirm(i) | Op::Cancel(i) | Op::Refund(i) if !holds.is_empty() => {
                let index = i % holds.len();
                let (id, from, n) = holds[index];
                let q = i64::from(n);
                let to = match (op, from) {
                    (Op::Confirm(_), HoldStatus::Held) => HoldStatus::Confirmed,
                    (Op::Cancel(_), HoldStatus::Held) => HoldStatus::Cancelled,
                    (Op::Refund(_), HoldStatus::Confirmed) => HoldStatus::Refunded,
                    _ => continue,
                };
                match to {
                    HoldStatus::Confirmed => (held, sold) = (held - q, sold + q),
                    HoldStatus::Cancelled => (held, available) = (held - q, available + q),
                    _ => (sold, available) = (sold - q, available + q),
                }
                holds[index].1 = to;
                events.push(hold(id, Some(from), to, n));
            }
            _ => {}
        }
    }
    (events, (available, held, sold))
}

proptest! {
    /// Any history, cut into batches anywhere, its frames in any order
    /// within each batch (the lanes' order is arbitrary): no event shows a
    /// negative count, positions are dense, and each batch ends at the
    /// counts the history had there.
    #[test]
    fn counts_are_never_negative_whatever_the_frame_order(
        ops in prop::collection::vec(op(), 1..60),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        seed in any::<u64>(),
    ) {
        let (events, end) = history(&ops);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(events.len() + 1)).collect();
        cuts.push(events.len());
        cuts.sort_unstable();
        let feed = feed();
        push(&feed, &[created()], 1);
        let mut from = 0;
        let mut rng = seed;
        for (n, &cut) in cuts.iter().enumerate() {
            let mut batch = events[from..cut].to_vec();
            // Fisher-Yates with a xorshift: the frame order is any order.
            for i in (1..batch.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                batch.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            push(&feed, &batch, 2 + n as u64);
            from = cut;
        }
        let made = all(&feed);
        prop_assert_eq!(feed.negative_counts(), 0);
        for (i, event) in made.iter().enumerate() {
            prop_assert_eq!(event.position, i as u64 + 1);
        }
        let last = made.last().unwrap().counts;
        prop_assert_eq!((last.available, last.held, last.sold), end);
    }
}

/// The journal's writer pushes every durable batch while holding the
/// fold's lock: a push that waited for a reader busy turning a large
/// backlog into events would stall group commit for everyone. A push
/// therefore never takes the lock readers hold.
#[test]
fn a_push_never_waits_for_a_reader_making_events() {
    let feed = Arc::new(feed());
    push(&feed, &[created(), operator(5, 1)], 10);
    // A reader in the middle of making events holds `inner`.
    let reading = feed.inner.lock();
    let (done, finished) = std::sync::mpsc::channel();
    let pusher = {
        let feed = Arc::clone(&feed);
        std::thread::spawn(move || {
            push(&feed, &[hold(1, None, HoldStatus::Held, 1)], 20);
            done.send(()).unwrap();
        })
    };
    // With `inner` held here the push must still finish: the bound only
    // turns a hang into a failure (it never passes a push that waited).
    let pushed = finished.recv_timeout(std::time::Duration::from_secs(30));
    drop(reading);
    pusher.join().unwrap();
    assert!(pushed.is_ok(), "the push waited for the reader's lock");
    assert_eq!(all(&feed).len(), 4, "and the reader sees the batch after");
}

use super::*;
use crate::core::holds::ReservationId;
use crate::SkuId;

fn hold(from: Option<HoldStatus>, status: HoldStatus) -> Event {
    Event::Hold(HoldEvent {
        id: ReservationId::from_u64(9),
        from,
        status,
        at_ms: 0,
        deadline_ms: 100,
        limit_mask: 1,
        customer: Some("ann".into()),
        lines: vec![Line {
            sku: SkuId::from_index(0),
            quantity: 2,
        }],
        extensions: 0,
        changes: None,
        owed: None,
        ticket: 0,
    })
}

/// A hold event as extended `extensions` times, to deadline `deadline_ms`.
fn extended(
    from: Option<HoldStatus>,
    status: HoldStatus,
    extensions: u8,
    deadline_ms: u64,
) -> Event {
    match hold(from, status) {
        Event::Hold(mut event) => {
            event.extensions = extensions;
            event.deadline_ms = deadline_ms;
            Event::Hold(event)
        }
        _ => unreachable!(),
    }
}

/// Extensions move no units, and the row keeps the latest one whatever
/// the order the batch's frames arrive in, on both fold paths: a create,
/// two extensions and (after them) a confirm, or the same without the
/// confirm.
#[test]
fn extensions_in_any_order_keep_the_latest_deadline_and_count() {
    let create = hold(None, Held);
    let first = extended(Some(Held), Held, 1, 200);
    let second = extended(Some(Held), Held, 2, 300);
    let confirm = extended(Some(Held), Confirmed, 2, 300);
    let cases = [
        (vec![create.clone(), first.clone(), second.clone()], Held),
        (vec![second.clone(), create.clone(), first.clone()], Held),
        (vec![first.clone(), second.clone(), create.clone()], Held),
        (
            vec![
                confirm.clone(),
                second.clone(),
                create.clone(),
                first.clone(),
            ],
            Confirmed,
        ),
        (
            vec![
                second.clone(),
                confirm.clone(),
                first.clone(),
                create.clone(),
            ],
            Confirmed,
        ),
    ];
    for (events, status) in cases {
        let by_event = fold(&events);
        let mut by_frame = fold(&[]);
        for event in &events {
            apply_as_frame(&mut by_frame, event);
        }
        for mut s in [by_event, by_frame] {
            let sku = s.skus[0].as_ref().unwrap().clone();
            let held = if status == Held { 2 } else { 0 };
            assert_eq!((sku.held, sku.sold), (held, 2 - held), "{events:?}");
            let rows = s.take_checkpoint().holds;
            assert_eq!(rows.len(), 1);
            let row = &rows[0].1;
            assert_eq!(
                (row.status, row.deadline_ms, row.extensions, row.at_ms),
                (status, 300, 2, 0),
                "{events:?}"
            );
        }
    }
}

fn fold(events: &[Event]) -> Settled {
    let mut settled = Settled::default();
    settled.apply(Event::SkuCreated {
        sku: SkuId::from_index(0),
        name: "a".into(),
    });
    settled.apply(Event::Operator {
        sku: SkuId::from_index(0),
        delta: 10,
        version: 1,
        limit: LimitChange::Set(Some(5)),
        safety_stock: None,
    });
    for event in events {
        settled.apply(event.clone());
    }
    settled
}

use HoldStatus::{Confirmed, Held, Refunded};

#[test]
fn hold_lifecycle_in_any_order_settles_the_same() {
    let reserve = hold(None, Held);
    let confirm = hold(Some(Held), Confirmed);
    let refund = hold(Some(Confirmed), Refunded);
    let orders = [
        vec![reserve.clone(), confirm.clone(), refund.clone()],
        vec![refund.clone(), reserve.clone(), confirm.clone()],
        vec![confirm.clone(), refund.clone(), reserve.clone()],
    ];
    for events in orders {
        let s = fold(&events);
        let sku = s.skus[0].as_ref().unwrap();
        assert_eq!(
            (sku.available(), sku.held, sku.sold),
            (10, 0, 0),
            "{events:?}"
        );
        assert_eq!(s.customer_units[&(0, "ann".into())], 0);
        assert_eq!(
            s.holds[&9].status, Refunded,
            "the row keeps the latest status"
        );
    }
    let s = fold(&[confirm.clone(), reserve.clone()]);
    let sku = s.skus[0].as_ref().unwrap();
    assert_eq!((sku.available(), sku.held, sku.sold), (8, 0, 2));
    assert_eq!(s.customer_units[&(0, "ann".into())], 2);
    assert_eq!(s.holds[&9].status, Confirmed);
}

#[test]
fn limit_and_safety_stock_changes_win_by_version_not_arrival() {
    let mut s = fold(&[]);
    let sku = SkuId::from_index(0);
    s.apply(Event::Operator {
        sku,
        delta: 0,
        version: 3,
        limit: LimitChange::Set(None),
        safety_stock: Some(4),
    });
    s.apply(Event::Operator {
        sku,
        delta: 0,
        version: 2,
        limit: LimitChange::Set(Some(1)),
        safety_stock: Some(9),
    });
    let settled = s.skus[0].as_ref().unwrap();
    assert_eq!((settled.limit, settled.version), (None, 3));
    assert_eq!(
        (settled.safety_stock, settled.safety_stock_version),
        (4, 3),
        "an older safety stock folded later loses too"
    );
}

#[test]
fn checkpoint_moves_rows_out_and_failed_saves_put_them_back() {
    let mut s = fold(&[hold(None, Held)]);
    let first = s.take_checkpoint();
    assert_eq!(
        (
            first.skus.len(),
            first.holds.len(),
            first.customer_units.len()
        ),
        (1, 1, 1)
    );
    assert!(s.holds.is_empty(), "rows leave memory with the checkpoint");
    assert!(s.take_checkpoint().is_empty());
    s.apply(hold(Some(Held), HoldStatus::Cancelled));
    let second = s.take_checkpoint();
    assert_eq!(second.holds[0].1.status, HoldStatus::Cancelled);
    assert_eq!(second.customer_units, [((0, "ann".into()), 0)]);
    assert!(s.customer_units.is_empty());
    s.restore_unsaved(second);
    let again = s.take_checkpoint();
    assert_eq!((again.skus.len(), again.holds.len()), (1, 1));
}

#[test]
fn both_fold_paths_agree() {
    let events = [
        hold(None, Held),
        hold(Some(Held), Confirmed),
        Event::Sell {
            sku: SkuId::from_index(0),
            units: 3,
        },
        hold(Some(Confirmed), Refunded),
    ];
    let by_event = fold(&events);
    let mut by_frame = fold(&[]);
    for event in &events {
        let mut payload = Vec::new();
        event.encode(&mut payload);
        by_frame.apply_frame(&payload).unwrap();
    }
    assert_eq!(by_event.skus, by_frame.skus);
    assert_eq!(by_event.customer_units, by_frame.customer_units);
    let (a, b) = (
        by_event.clone().take_checkpoint().holds,
        by_frame.clone().take_checkpoint().holds,
    );
    assert_eq!(a, b);
    assert_eq!(a[0].1.status, Refunded);
}

fn hold_with_id(id: u64, from: Option<HoldStatus>, status: HoldStatus) -> Event {
    match hold(from, status) {
        Event::Hold(mut event) => {
            event.id = ReservationId::from_u64(id);
            Event::Hold(event)
        }
        _ => unreachable!(),
    }
}

fn apply_as_frame(s: &mut Settled, event: &Event) {
    let mut payload = Vec::new();
    event.encode(&mut payload);
    s.apply_frame(&payload).unwrap();
}

/// The checkpointer takes a checkpoint under the shadow's lock and
/// finishes it off the lock while the writer folds on (#18's stall: the
/// rows used to be sorted and materialised under the lock). The rows taken
/// are the checkpoint's, in full; rows folded after the take, on either
/// fold path, are the next checkpoint's, and the buffers come back.
#[test]
fn rows_folded_while_a_taken_checkpoint_is_finished_go_to_the_next_one() {
    let mut s = fold(&[]);
    for id in [3u64, 1, 2] {
        apply_as_frame(&mut s, &hold_with_id(id, None, Held));
    }
    s.apply(hold_with_id(7, None, Held));
    let taken = s.checkpoint_if_whole().expect("no batch is half folded");
    // The writer goes on: a confirm of a taken row, and a new row, by
    // frame and by event.
    apply_as_frame(&mut s, &hold_with_id(1, Some(Held), Confirmed));
    apply_as_frame(&mut s, &hold_with_id(4, None, Held));
    s.apply(hold_with_id(8, None, Held));
    // The checkpointer hands back the last checkpoint's buffer: what it
    // still holds is not this checkpoint's.
    let mut buffer = fold(&[hold_with_id(99, None, Held)])
        .take_checkpoint()
        .holds;
    assert_eq!(buffer.len(), 1);
    buffer.reserve(64);
    let (first, spare) = taken.finish_into(buffer);
    s.recycle(spare);
    let rows = |c: &Checkpoint| {
        c.holds
            .iter()
            .map(|(id, h)| (*id, h.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&first), [(1, Held), (2, Held), (3, Held), (7, Held)]);
    let second = s.take_checkpoint();
    assert_eq!(rows(&second), [(1, Confirmed), (4, Held), (8, Held)]);
    assert!(s.take_checkpoint().holds.is_empty());
}

/// The store takes rows in id order (its B-tree appends instead of
/// splitting random leaves): from the writer's log, from the
/// event-by-event path, and from both at once, the latest status winning.
#[test]
fn checkpoint_rows_come_in_id_order_with_the_latest_status() {
    let ids = [70u64, 3, 41, 5, 1 << 33, 12, 9];
    let mut by_frame = fold(&[]);
    for &id in &ids {
        apply_as_frame(&mut by_frame, &hold_with_id(id, None, Held));
    }
    apply_as_frame(&mut by_frame, &hold_with_id(41, Some(Held), Confirmed));
    let rows = by_frame.take_checkpoint().holds;
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    assert_eq!(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>(), sorted);
    let status_of = |rows: &[(u64, SettledHold)], id: u64| {
        rows.iter().find(|(i, _)| *i == id).map(|(_, h)| h.status)
    };
    assert_eq!(status_of(&rows, 41), Some(Confirmed));
    assert_eq!(status_of(&rows, 70), Some(Held));

    let mut mixed = fold(&ids.map(|id| hold_with_id(id, None, Held)));
    apply_as_frame(&mut mixed, &hold_with_id(12, Some(Held), Confirmed));
    apply_as_frame(&mut mixed, &hold_with_id(2, None, Held));
    mixed.apply(hold_with_id(5, Some(Held), HoldStatus::Cancelled));
    let rows = mixed.take_checkpoint().holds;
    let mut expected = ids.to_vec();
    expected.push(2);
    expected.sort_unstable();
    assert_eq!(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
    assert_eq!(status_of(&rows, 12), Some(Confirmed));
    assert_eq!(status_of(&rows, 5), Some(HoldStatus::Cancelled));
    assert_eq!(status_of(&rows, 2), Some(Held));
}

use super::*;

#[test]
fn event_ids_are_written_as_the_feed_names_them() {
    for (feed_id, position) in [(0, 1), (0xab, 7), (u64::MAX, u64::MAX), (1 << 60, 10_000)] {
        let mut id = String::new();
        push_event_id(&mut id, feed_id, position);
        assert_eq!(id, crate::durable::feed::event_id(feed_id, position));
    }
}

#[test]
fn ids_keep_their_bits_and_damage_names_the_row() {
    for id in [0, 1, u64::MAX, 1 << 63, 0xdead_beef_0000_0040] {
        assert_eq!(from_stored(as_stored(id)), id);
    }
    let mut settled = Settled::default();
    let row = SkuRow {
        id: 7,
        name: "tee".into(),
        held: 0,
        sold: 0,
        received: 5,
        version: -1,
        per_customer_limit: None,
        limit_version: 0,
        low_stock_threshold: None,
        low_stock_version: None,
        safety_stock: 0,
        safety_stock_version: 0,
        components: None,
        kit_version: 0,
        backordered: 0,
        backorder_limit: 0,
        backorder_until_ms: None,
        backorder_version: 0,
        located: 0,
        location_priority: None,
        location_priority_version: 0,
        sale_starts_at_ms: None,
        sale_ends_at_ms: None,
        sale_window_version: 0,
        room_admit_per_s: None,
        room_overbook_milli: None,
        room_admission_ttl_ms: None,
        room_version: 0,
    };
    let damage = row.load_into(&mut settled).unwrap_err();
    assert_eq!(damage.table, "hotstock_skus");
    assert_eq!(damage.row, "id 7");
    assert!(damage.what.contains("version -1"), "{damage}");
}

/// An outbox row's reservation id comes back as the feed made it, and one
/// that is not a public id's text (32 lowercase hex digits) is damage that
/// names the row.
#[test]
fn an_outbox_rows_reservation_id_is_checked_on_the_way_back() {
    use crate::core::public_id::PublicIdText;
    use crate::durable::feed::{FeedCounts, FeedEvent, FeedKind, FeedReservation};
    let id = "0123456789abcdef0123456789abcdef";
    let event = FeedEvent {
        position: 3,
        kind: FeedKind::ReservationCreated,
        at_ms: 5,
        sku: "tee".into(),
        counts: FeedCounts {
            available: 1,
            held: 1,
            received: 2,
            ..FeedCounts::default()
        },
        reservation: Some(Arc::new(FeedReservation {
            public_id: PublicIdText::parse(id).unwrap(),
            from: None,
            status: HoldStatus::Held,
            customer: None,
            lines: vec![("tee".into(), 1)],
            amounts: None,
            deadline_ms: 9,
        })),
        operator: None,
        units: None,
        fill: None,
    };
    let back = EventRow::of(&event, 1).into_event().unwrap();
    assert_eq!(back.reservation, event.reservation);
    for bad in [
        "0123456789ABCDEF0123456789abcdef",
        "0123",
        "0123456789abcdef0123456789abcdeg",
    ] {
        let mut row = EventRow::of(&event, 1);
        row.reservation = Some(bad.into());
        let damage = row.into_event().unwrap_err();
        assert_eq!(damage.row, "position 3", "{bad}");
        assert!(
            damage.what.contains("is not a public id"),
            "{}",
            damage.what
        );
    }
}

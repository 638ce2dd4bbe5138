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

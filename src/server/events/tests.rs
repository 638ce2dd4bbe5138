use super::*;
use crate::core::public_id::PublicIdText;
use crate::core::types::HoldStatus;
use crate::durable::feed::{FeedCounts, FeedKind, FeedOperator, FeedReservation};

#[test]
fn hand_written_json_escapes_and_parses() {
    let event = FeedEvent {
        position: 7,
        kind: FeedKind::ReservationCreated,
        at_ms: 9,
        sku: "a:b".into(),
        counts: FeedCounts {
            available: 1,
            held: 2,
            sold: 3,
            received: 6,
            safety_stock: 4,
            backordered: 5,
        },
        reservation: Some(Arc::new(FeedReservation {
            public_id: PublicIdText::parse("00ff00ff00ff00ff00ff00ff00ff00ff").unwrap(),
            from: None,
            status: HoldStatus::Held,
            customer: Some("an\"n\\\n".into()),
            lines: vec![("a:b".into(), 2), ("c".into(), 1)],
            amounts: None,
            deadline_ms: 11,
        })),
        operator: Some(FeedOperator {
            delta: -4,
            version: 5,
            limit: Some(None),
            low_stock: Some(Some(12)),
            window: Some(crate::core::engine::SaleWindow {
                starts_at_ms: None,
                ends_at_ms: Some(13),
            }),
        }),
        units: None,
        fill: None,
    };
    let value = event_json(&event, 0xab);
    assert_eq!(
        value,
        json!({"position": 7, "id": "00000000000000ab-7", "type": "reservation.created",
               "at_ms": 9, "sku": "a:b", "available": 1, "held": 2, "sold": 3, "received": 6,
               "on_hand": 7, "safety_stock": 4, "backordered": 5, "reservation": "00ff00ff00ff00ff00ff00ff00ff00ff", "status": "held", "from": null, "customer": "an\"n\\\n",
               "lines": [{"sku": "a:b", "quantity": 2}, {"sku": "c", "quantity": 1}],
               "expires_at_ms": 11, "delta": -4, "version": 5, "per_customer_limit": null,
               "low_stock_threshold": 12, "sale_starts_at_ms": null, "sale_ends_at_ms": 13})
    );
}

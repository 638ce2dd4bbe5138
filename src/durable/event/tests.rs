use super::*;

fn round_trip(event: Event) {
    let mut bytes = Vec::new();
    event.encode(&mut bytes);
    assert_eq!(Event::decode(&bytes), Ok(event.clone()));
    // Every strict prefix is refused, never misread.
    for cut in 0..bytes.len() {
        assert!(
            Event::decode(&bytes[..cut]).is_err(),
            "prefix {cut} of {event:?}"
        );
    }
}

#[test]
fn every_kind_round_trips_and_prefixes_are_refused() {
    round_trip(Event::SkuCreated {
        sku: SkuId::from_index(7),
        name: "tee-black-m".into(),
    });
    for limit in [
        LimitChange::Unchanged,
        LimitChange::Set(None),
        LimitChange::Set(Some(3)),
    ] {
        for safety_stock in [None, Some(0), Some(MAX_STOCK_PER_SKU)] {
            round_trip(Event::Operator {
                sku: SkuId::from_index(1),
                delta: -42,
                version: 9,
                limit,
                safety_stock,
            });
        }
    }
    round_trip(Event::Sell {
        sku: SkuId::from_index(u32::MAX),
        units: 5,
    });
    for count in [1, MAX_KIT_COMPONENTS as u32] {
        round_trip(Event::KitDefined {
            kit: SkuId::from_index(4),
            version: 3,
            components: (0..count)
                .map(|i| Line {
                    sku: SkuId::from_index(i),
                    quantity: i + 1,
                })
                .collect(),
        });
    }
    for threshold in [None, Some(1), Some(u32::MAX)] {
        round_trip(Event::LowStock {
            sku: SkuId::from_index(3),
            version: 7,
            threshold,
        });
    }
    round_trip(Event::Hold(HoldEvent {
        id: ReservationId::from_u64(0x1234_5678_9abc),
        from: Some(HoldStatus::Confirmed),
        status: HoldStatus::Refunded,
        at_ms: 1_700_000_000_000,
        deadline_ms: 1_700_000_600_000,
        limit_mask: 0b101,
        customer: Some("alice".into()),
        lines: vec![
            Line {
                sku: SkuId::from_index(1),
                quantity: 2,
            },
            Line {
                sku: SkuId::from_index(2),
                quantity: 1,
            },
            Line {
                sku: SkuId::from_index(3),
                quantity: 9,
            },
        ],
        extensions: 0,
        changes: None,
        owed: None,
        ticket: 0,
    }));
    for (from, status) in [
        (HoldStatus::Held, HoldStatus::Held),
        (HoldStatus::Held, HoldStatus::Confirmed),
    ] {
        round_trip(Event::Hold(HoldEvent {
            id: ReservationId::from_u64(77),
            from: Some(from),
            status,
            at_ms: 5,
            deadline_ms: 600_005,
            limit_mask: 0,
            customer: None,
            lines: vec![Line {
                sku: SkuId::from_index(4),
                quantity: 1,
            }],
            changes: None,
            owed: None,
            ticket: 0,
            extensions: 3,
        }));
    }
}

#[test]
fn partial_amounts_round_trip_and_impossible_ones_are_refused() {
    let event = |from, status, changes: Vec<LineChange>| {
        Event::Hold(HoldEvent {
            id: ReservationId::from_u64(78),
            from,
            status,
            at_ms: 5,
            deadline_ms: 600_005,
            limit_mask: 0b11,
            customer: Some("ann".into()),
            lines: vec![
                Line {
                    sku: SkuId::from_index(4),
                    quantity: 3,
                },
                Line {
                    sku: SkuId::from_index(5),
                    quantity: 2,
                },
            ],
            extensions: 0,
            changes: Some(changes),
            owed: None,
            ticket: 0,
        })
    };
    let change = |confirmed, refunded_before, refunded_after| LineChange {
        confirmed,
        refunded_before,
        refunded_after,
    };
    use HoldStatus::{Confirmed, Held, Refunded};
    round_trip(event(
        Some(Held),
        Confirmed,
        vec![change(2, 0, 0), change(0, 0, 0)],
    ));
    round_trip(event(
        Some(Confirmed),
        Confirmed,
        vec![change(2, 0, 1), change(0, 0, 0)],
    ));
    round_trip(event(
        Some(Confirmed),
        Refunded,
        vec![change(2, 1, 2), change(1, 0, 1)],
    ));
    for (from, status, changes, why) in [
        (
            Some(Held),
            Confirmed,
            vec![change(4, 0, 0), change(0, 0, 0)],
            "line amounts",
        ),
        (
            Some(Confirmed),
            Confirmed,
            vec![change(2, 1, 0), change(0, 0, 0)],
            "line amounts",
        ),
        (
            Some(Confirmed),
            Confirmed,
            vec![change(2, 0, 3), change(0, 0, 0)],
            "line amounts",
        ),
        (
            Some(Confirmed),
            Refunded,
            vec![change(2, 0, 1), change(0, 0, 0)],
            "a refunded line with units still sold",
        ),
        (
            Some(Held),
            HoldStatus::Cancelled,
            vec![change(0, 0, 0), change(0, 0, 0)],
            "amounts on a record that sold nothing",
        ),
    ] {
        let mut bytes = Vec::new();
        event(from, status, changes).encode(&mut bytes);
        assert_eq!(Event::decode(&bytes), Err(DecodeError::Invalid(why)));
    }
}

#[test]
fn an_extension_without_a_count_is_refused() {
    let mut bytes = Vec::new();
    Event::Hold(HoldEvent {
        id: ReservationId::from_u64(77),
        from: Some(HoldStatus::Held),
        status: HoldStatus::Held,
        at_ms: 5,
        deadline_ms: 600_005,
        limit_mask: 0,
        customer: None,
        lines: vec![Line {
            sku: SkuId::from_index(4),
            quantity: 1,
        }],
        extensions: 1,
        changes: None,
        owed: None,
        ticket: 0,
    })
    .encode(&mut bytes);
    // As a plain hold event (kind 4, no count): held -> held is no
    // transition.
    let mut plain = bytes.clone();
    plain[0] = HOLD;
    plain.pop();
    assert_eq!(
        Event::decode(&plain),
        Err(DecodeError::Invalid("hold transition"))
    );
    // As an extended one with a count of 0.
    let mut zero = bytes;
    *zero.last_mut().unwrap() = 0;
    assert_eq!(
        Event::decode(&zero),
        Err(DecodeError::Invalid("extended hold with no extension"))
    );
}

#[test]
fn a_safety_stock_past_the_limit_is_refused_and_plain_operator_events_keep_their_form() {
    let event = |safety_stock| Event::Operator {
        sku: SkuId::from_index(1),
        delta: 5,
        version: 2,
        limit: LimitChange::Unchanged,
        safety_stock,
    };
    let mut plain = Vec::new();
    event(None).encode(&mut plain);
    assert_eq!(plain[0], OPERATOR, "journals from before keep their bytes");
    assert_eq!(plain.len(), 1 + 4 + 8 + 8 + 1 + 4);
    let mut bytes = Vec::new();
    event(Some(MAX_STOCK_PER_SKU)).encode(&mut bytes);
    assert_eq!(bytes[0], OPERATOR_SAFETY);
    let at = bytes.len() - 8;
    bytes[at..].copy_from_slice(&(MAX_STOCK_PER_SKU + 1).to_le_bytes());
    assert_eq!(
        Event::decode(&bytes),
        Err(DecodeError::Invalid("safety stock"))
    );
}

#[test]
fn garbage_is_refused() {
    assert_eq!(Event::decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(Event::decode(&[99]), Err(DecodeError::UnknownKind(99)));
    let mut bytes = Vec::new();
    Event::Sell {
        sku: SkuId::from_index(1),
        units: 1,
    }
    .encode(&mut bytes);
    bytes.push(0);
    assert_eq!(Event::decode(&bytes), Err(DecodeError::Trailing(1)));
}

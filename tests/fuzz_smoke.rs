//! The decoder fuzz target's checks (`hotstock::durable::journal::fuzzing`) on
//! generated inputs: valid segments of random events, then mutated (bytes
//! flipped, cut short, spliced). The real fuzzer (`fuzz/`) explores further;
//! this keeps the same checks in every `cargo test`.

use hotstock::core::cell::{BackorderRule, Fill};
use hotstock::core::holds::{HoldStatus, Line, LineChange, ReservationId};
use hotstock::core::types::LineOwed;
use hotstock::durable::event::{Event, HoldEvent, KeyEvent, LimitChange};
use hotstock::durable::journal::fuzzing::check_decoder;
use hotstock::durable::journal::segment::{append_frame, encode_header};
use hotstock::SkuId;
use proptest::prelude::*;

fn event() -> impl Strategy<Value = Event> {
    let sku = any::<u32>().prop_map(SkuId::from_index);
    prop_oneof![
        (sku.clone(), "[a-z0-9]{1,64}|[a-z0-9]{1,31}/[a-z0-9]{1,32}").prop_map(|(sku, name)| {
            Event::SkuCreated {
                sku,
                name: name.into(),
            }
        }),
        (
            sku.clone(),
            any::<i64>(),
            any::<u64>(),
            prop::option::of(prop::option::of(1..u32::MAX)),
            prop::option::of(0..=1u64 << 40)
        )
            .prop_map(
                |(sku, delta, version, limit, safety_stock)| Event::Operator {
                    sku,
                    delta,
                    version,
                    limit: limit.map_or(LimitChange::Unchanged, LimitChange::Set),
                    safety_stock,
                }
            ),
        (sku.clone(), any::<u32>()).prop_map(|(sku, units)| Event::Sell { sku, units }),
        (sku.clone(), any::<u64>(), prop::option::of(any::<u32>())).prop_map(
            |(sku, version, priority)| Event::Location {
                sku,
                version,
                priority,
            }
        ),
        (
            sku.clone(),
            any::<u64>(),
            0..=1u64 << 40,
            prop::option::of(any::<u64>())
        )
            .prop_map(|(sku, version, limit, until_ms)| Event::Backorder {
                sku,
                version,
                rule: BackorderRule { limit, until_ms },
            }),
        (
            sku.clone(),
            any::<u64>(),
            1..u64::MAX,
            1..u32::MAX,
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(sku, id, ticket, units, owed_after, sold)| {
                Event::BackorderFilled {
                    sku,
                    fill: Fill {
                        id: ReservationId::from_u64(id),
                        ticket,
                        units,
                        owed_after,
                        sold,
                    },
                }
            }),
        (
            sku.clone(),
            any::<u64>(),
            prop::collection::btree_map(any::<u32>(), 1..u32::MAX, 1..=16)
        )
            .prop_map(|(kit, version, components)| Event::KitDefined {
                kit,
                version,
                components: components
                    .into_iter()
                    .map(|(sku, quantity)| hotstock::Line {
                        sku: hotstock::SkuId::from_index(sku),
                        quantity
                    })
                    .collect(),
            }),
        (sku.clone(), any::<u64>(), prop::option::of(1..u32::MAX)).prop_map(
            |(sku, version, threshold)| Event::LowStock {
                sku,
                version,
                threshold
            }
        ),
        (
            "[!-~]{1,128}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(
                |(key, fingerprint, created_ms, id, confirmed, expires_at_ms)| {
                    Event::Idempotency(KeyEvent {
                        key: key.into(),
                        fingerprint,
                        created_ms,
                        reservation: ReservationId::from_u64(id),
                        status: if confirmed {
                            HoldStatus::Confirmed
                        } else {
                            HoldStatus::Held
                        },
                        expires_at_ms,
                    })
                }
            ),
        (
            any::<u64>(),
            0..8usize,
            any::<u64>(),
            any::<u64>(),
            prop::option::of("[a-z]{1,20}"),
            prop::collection::vec((sku, 1..u32::MAX), 1..=32),
            any::<u8>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(id, transition, at_ms, deadline_ms, customer, lines, extensions, part, owe)| {
                    use HoldStatus::*;
                    let transitions = [
                        (Some(Held), Held),
                        (None, Held),
                        (None, Confirmed),
                        (Some(Held), Confirmed),
                        (Some(Held), Cancelled),
                        (Some(Held), Expired),
                        (Some(Confirmed), Refunded),
                        (Some(Confirmed), Confirmed),
                    ];
                    let (from, status) = transitions[transition];
                    // An extension counts itself; other events may carry any
                    // count (0: the plain form).
                    let extensions = if transition == 0 {
                        extensions.max(1)
                    } else {
                        extensions
                    };
                    let limit_mask = if lines.len() >= 32 {
                        u32::MAX
                    } else {
                        (1u32 << lines.len()) - 1
                    };
                    let changes = amounts(from, status, &lines, part || transition == 7);
                    let owed = owe.then(|| owed(from, status, &lines));
                    Event::Hold(HoldEvent {
                        id: ReservationId::from_u64(id),
                        from,
                        status,
                        at_ms,
                        deadline_ms,
                        limit_mask,
                        customer: customer.map(Into::into),
                        lines: lines
                            .into_iter()
                            .map(|(sku, quantity)| Line { sku, quantity })
                            .collect(),
                        extensions,
                        changes,
                        ticket: if owe { id | 1 } else { 0 },
                        owed,
                    })
                }
            ),
    ]
}

/// Per-line owed units a record could carry across `from -> status`: a
/// third of each line owed at creation, half of that left later, none
/// once it ended.
fn owed(from: Option<HoldStatus>, status: HoldStatus, lines: &[(SkuId, u32)]) -> Vec<LineOwed> {
    lines
        .iter()
        .map(|&(_, quantity)| {
            let at_creation = quantity / 3;
            let before = if from.is_none() { 0 } else { at_creation };
            let after = match status {
                HoldStatus::Cancelled | HoldStatus::Expired | HoldStatus::Refunded => 0,
                _ if from.is_none() => at_creation,
                _ => at_creation / 2,
            };
            LineOwed { before, after }
        })
        .collect()
}

/// Per-line amounts a record in `status` could carry (half its units
/// sold, then refunded step by step), when `part` and it sold anything.
fn amounts(
    from: Option<HoldStatus>,
    status: HoldStatus,
    lines: &[(SkuId, u32)],
    part: bool,
) -> Option<Vec<LineChange>> {
    let sold = matches!(status, HoldStatus::Confirmed | HoldStatus::Refunded);
    (part && sold).then(|| {
        (lines.iter())
            .map(|&(_, quantity)| {
                let confirmed = quantity / 2;
                let (before, after) = match (from, status) {
                    (_, HoldStatus::Refunded) => (confirmed / 2, confirmed),
                    (Some(HoldStatus::Confirmed), _) => (0, confirmed / 2),
                    _ => (0, 0),
                };
                LineChange {
                    confirmed,
                    refunded_before: before,
                    refunded_after: after,
                }
            })
            .collect()
    })
}

fn segment(events: &[Event]) -> Vec<u8> {
    let mut bytes = encode_header(0).to_vec();
    for event in events {
        append_frame(&mut bytes, |out| event.encode(out));
    }
    bytes
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Splice(usize, Vec<u8>),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn valid_segments_decode_completely(events in prop::collection::vec(event(), 0..20)) {
        let bytes = segment(&events);
        let mut seen = Vec::new();
        hotstock::durable::journal::segment::scan(&bytes, 0, "t", true, 0, |_, payload| {
            seen.push(Event::decode(payload).unwrap());
            Ok(())
        }).unwrap();
        prop_assert_eq!(seen, events);
        check_decoder(&bytes);
    }

    #[test]
    fn mutated_segments_never_panic_or_lie(
        events in prop::collection::vec(event(), 1..10),
        mutations in prop::collection::vec(
            prop_oneof![
                (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
                any::<usize>().prop_map(Mutation::Cut),
                (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, b)| Mutation::Splice(at, b)),
            ],
            1..4,
        ),
    ) {
        let mut bytes = segment(&events);
        for mutation in mutations {
            match mutation {
                Mutation::Flip(at, mask) => { let i = at % bytes.len(); bytes[i] ^= mask; }
                Mutation::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
                Mutation::Splice(at, more) => { let i = at % (bytes.len() + 1); bytes.splice(i..i, more); }
            }
            if bytes.is_empty() { break; }
        }
        check_decoder(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_decoder(&bytes);
    }
}

/// Inputs the real fuzzer found, kept so they can never come back.
#[test]
fn fuzzer_findings_stay_fixed() {
    for finding in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions")).unwrap()
    {
        let path = finding.unwrap().path();
        check_decoder(&std::fs::read(&path).unwrap());
    }
}

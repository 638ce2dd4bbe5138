//! The byte writer held to the `serde_json::Value` model, byte for byte:
//! a client that compared answers before and after must not see a
//! difference, not even in key order or escaping.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::core::types::{Line, LineAmounts, ReservationId};

/// Names as the catalogue holds them (a location's cell is `sku/location`),
/// and one the catalogue no longer knows (`None`).
const NAMES: [Option<&str>; 4] = [Some("tee-black.m"), Some("kit:1"), Some("tee/dock-2"), None];

fn status(index: u8) -> HoldStatus {
    [
        HoldStatus::Held,
        HoldStatus::Confirmed,
        HoldStatus::Cancelled,
        HoldStatus::Expired,
        HoldStatus::Refunded,
    ][usize::from(index % 5)]
}

fn document(
    lines: &[(u32, u32, u32, u32)],
    owed: bool,
    customer: Option<String>,
    (deadline_ms, extensions, status_index): (u64, u8, u8),
) -> HoldDocument {
    let skus = lines.iter().enumerate();
    HoldDocument {
        id: ReservationId::from_u64(7),
        status: status(status_index),
        lines: skus
            .map(|(i, l)| Line {
                sku: SkuId((i % NAMES.len()) as u32),
                quantity: l.0,
            })
            .collect(),
        customer: customer.map(Arc::from),
        deadline_ms,
        extensions,
        amounts: lines
            .iter()
            .map(|l| LineAmounts {
                confirmed: l.1,
                refunded: l.2,
            })
            .collect(),
        backordered: owed,
        owed: if owed {
            lines.iter().map(|l| l.3).collect()
        } else {
            Vec::new()
        },
    }
}

fn name(sku: SkuId) -> Option<&'static str> {
    NAMES[sku.0 as usize]
}

proptest! {
    #[test]
    fn write_reservation_writes_the_models_bytes(
        lines in prop::collection::vec(any::<(u32, u32, u32, u32)>(), 1..5),
        owed in any::<bool>(),
        // Any text a buyer's token or a service may name, control
        // characters, quotes and backslashes included.
        customer in prop::option::of(any::<String>()),
        id in "[0-9a-f]{32}|node-1[.]b_c~[0-9a-f]{32}",
        numbers in any::<(u64, u8, u8)>(),
        left in prop::option::of(any::<u8>()),
    ) {
        let document = document(&lines, owed, customer, numbers);
        let mut model = reservation_json(&document, &id, name);
        if let (Some(left), Some(object)) = (left, model.as_object_mut()) {
            object.insert("extensions_left".into(), left.into());
        }
        let mut written = Vec::new();
        write_reservation(&mut written, &document, &id, left, name);
        prop_assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&model).unwrap()
        );
    }
}

/// The split the proptest compares is also the one a reader expects: the
/// SKU's name and its location apart, and no `location` on a plain line.
#[test]
fn a_location_line_names_its_sku_and_location_apart() {
    let lines = [(2, 1, 0, 0), (3, 0, 0, 0), (4, 0, 0, 0)];
    let document = document(&lines, false, None, (5, 0, 1));
    let mut written = Vec::new();
    write_reservation(&mut written, &document, "ab", None, name);
    let answer: Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(answer["status"], "confirmed");
    assert_eq!(answer["lines"][0]["sku"], "tee-black.m");
    assert!(answer["lines"][0].get("location").is_none());
    assert_eq!(answer["lines"][2]["sku"], "tee");
    assert_eq!(answer["lines"][2]["location"], "dock-2");
}

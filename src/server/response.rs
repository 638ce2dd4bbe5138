//! The JSON the API answers with: SKU and reservation documents, and
//! reservations written straight to bytes (`reservation_json`, built as a
//! `serde_json::Value`, is the model those writers are tested against).

use serde_json::{json, Value};

use super::order_body::ScannedLine;
use crate::core::catalogue::LOCATION_SEPARATOR;
use crate::core::engine::{Receipt, SkuDocument};
use crate::core::holds::HoldDocument;
use crate::core::types::{HoldStatus, SkuId};

/// A SKU as readers see it; `name` finds a kit's component names
/// (lock-free).
pub fn sku_json<'a>(document: &SkuDocument, name: impl Fn(SkuId) -> Option<&'a str>) -> Value {
    let mut sku = json!({
        "sku": &*document.name,
        "available": document.available,
        "held": document.held,
        "sold": document.sold,
        "on_hand": document.on_hand(),
        "safety_stock": document.safety_stock,
        "version": document.version,
        "per_customer_limit": document.per_customer_limit,
        "low_stock_threshold": document.low_stock_threshold,
        "kit": document.components.is_some(),
        "backorder_limit": document.backorder_limit,
        "backorder_until_ms": document.backorder_until_ms,
        "sale_starts_at_ms": document.sale_window.starts_at_ms,
        "sale_ends_at_ms": document.sale_window.ends_at_ms,
        "waiting_room": super::queue::room_json(document.waiting_room),
        "backordered": document.backordered,
    });
    if let Some(components) = &document.components {
        sku["components"] = components
            .iter()
            .map(|c| json!({"sku": name(c.sku), "quantity": c.quantity}))
            .collect();
    }
    if let Some(locations) = &document.locations {
        sku["locations"] = locations
            .iter()
            .map(|l| {
                json!({"location": &*l.location, "priority": l.priority,
                       "available": l.available, "held": l.held, "sold": l.sold,
                       "on_hand": l.available + l.held + l.safety_stock,
                       "safety_stock": l.safety_stock, "version": l.version})
            })
            .collect();
    }
    sku
}

/// Sets `object`'s `"sku"` (and, for a location's own cell, named
/// `sku/location`, its `"location"`) from a catalogue name.
pub fn set_sku_name(object: &mut Value, name: Option<&str>) {
    match name.and_then(|n| n.split_once(LOCATION_SEPARATOR)) {
        Some((sku, location)) => {
            object["sku"] = json!(sku);
            object["location"] = json!(location);
        }
        None => object["sku"] = json!(name),
    }
}

/// A reservation as readers see it; `name` finds SKU names (lock-free).
/// `id` is its public id (`core::public_id`). The model the byte writers
/// below are held to: answers are written by `write_reservation`.
#[cfg(test)]
pub fn reservation_json<'a>(
    document: &HoldDocument,
    id: &str,
    name: impl Fn(SkuId) -> Option<&'a str>,
) -> Value {
    let lines: Vec<Value> = (document.lines.iter().zip(&document.amounts))
        .enumerate()
        .map(|(index, (l, a))| {
            let mut line = json!({"quantity": l.quantity,
                   "confirmed": a.confirmed, "refunded": a.refunded});
            set_sku_name(&mut line, name(l.sku));
            // Only a reservation with a line taken past zero says what is
            // still owed (units not yet received).
            if let Some(owed) = document.owed.get(index) {
                line["backordered"] = json!(owed);
            }
            line
        })
        .collect();
    json!({
        "id": id,
        "status": document.status.as_str(),
        "lines": lines,
        "customer": document.customer.as_deref(),
        "expires_at_ms": document.deadline_ms,
        "extensions": document.extensions,
    })
}

/// Writes `reservation_json`'s document straight to bytes, keys in the
/// same (sorted) order and a customer escaped as serde_json escapes it: the
/// answer to every confirm, cancel, refund and read. Building the map and
/// dropping it cost a confirm ~14,000 instructions, about half of its
/// whole request (#18's hold-confirm row; `FLOW=hold-confirm
/// benches/http/callgrind.sh`: a hold and a confirm 45,400 → 30,300). `extensions_left`, when given, is written
/// after `"extensions"` (an extend's answer).
pub fn write_reservation<'a>(
    out: &mut Vec<u8>,
    document: &HoldDocument,
    id: &str,
    extensions_left: Option<u8>,
    name: impl Fn(SkuId) -> Option<&'a str>,
) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"{\"customer\":");
    write_json_string_or_null(out, document.customer.as_deref());
    out.extend_from_slice(b",\"expires_at_ms\":");
    out.extend_from_slice(number.format(document.deadline_ms).as_bytes());
    out.extend_from_slice(b",\"extensions\":");
    out.extend_from_slice(number.format(document.extensions).as_bytes());
    if let Some(left) = extensions_left {
        out.extend_from_slice(b",\"extensions_left\":");
        out.extend_from_slice(number.format(left).as_bytes());
    }
    out.extend_from_slice(b",\"id\":");
    write_plain_string(out, id);
    out.extend_from_slice(b",\"lines\":[");
    let lines = document.lines.iter().zip(&document.amounts);
    for (index, (line, amounts)) in lines.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.push(b'{');
        if let Some(owed) = document.owed.get(index) {
            out.extend_from_slice(b"\"backordered\":");
            out.extend_from_slice(number.format(*owed).as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(b"\"confirmed\":");
        out.extend_from_slice(number.format(amounts.confirmed).as_bytes());
        let sku_name = name(line.sku);
        let (sku, location) = match sku_name.and_then(|n| n.split_once(LOCATION_SEPARATOR)) {
            Some((sku, location)) => (Some(sku), Some(location)),
            None => (sku_name, None),
        };
        if let Some(location) = location {
            out.extend_from_slice(b",\"location\":");
            write_plain_string(out, location);
        }
        out.extend_from_slice(b",\"quantity\":");
        out.extend_from_slice(number.format(line.quantity).as_bytes());
        out.extend_from_slice(b",\"refunded\":");
        out.extend_from_slice(number.format(amounts.refunded).as_bytes());
        out.extend_from_slice(b",\"sku\":");
        match sku {
            Some(sku) => write_plain_string(out, sku),
            // A SKU the catalogue no longer names.
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"status\":\"");
    out.extend_from_slice(document.status.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

/// Writes the JSON of a reservation just created from these lines (`id`
/// its public id's text), with
/// the keys in the order `reservation_json` (a sorted map) writes them.
pub fn write_new_reservation(
    out: &mut Vec<u8>,
    receipt: &Receipt,
    id: &str,
    lines: &[ScannedLine<'_>],
    customer: Option<&str>,
) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"{\"customer\":");
    write_json_string_or_null(out, customer);
    out.extend_from_slice(b",\"expires_at_ms\":");
    out.extend_from_slice(number.format(receipt.expires_at_ms).as_bytes());
    // A new reservation was never extended.
    out.extend_from_slice(b",\"extensions\":0,\"id\":");
    write_plain_string(out, id);
    out.extend_from_slice(b",\"lines\":[");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // A purchase sold every unit; a hold none yet.
        let confirmed = match receipt.status {
            HoldStatus::Confirmed => line.quantity,
            _ => 0,
        };
        out.extend_from_slice(b"{\"confirmed\":");
        out.extend_from_slice(number.format(confirmed).as_bytes());
        out.extend_from_slice(b",\"quantity\":");
        out.extend_from_slice(number.format(line.quantity).as_bytes());
        out.extend_from_slice(b",\"refunded\":0,\"sku\":");
        // The name was just found in the catalogue.
        write_plain_string(out, line.sku);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"status\":\"");
    out.extend_from_slice(receipt.status.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

fn write_json_string_or_null(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => write_json_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// A catalogue name (`[A-Za-z0-9._~:-]`, a location's cell `sku/location`
/// split before this) or a public id (hex digits, after a node's id
/// `[A-Za-z0-9._-]` and `~` in a cluster) as a JSON string. Nothing in
/// them needs escaping, so they are copied as they are: scanning a
/// confirm's answer for escapes cost ~430 instructions.
fn write_plain_string(out: &mut Vec<u8>, text: &str) {
    debug_assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:-".contains(&b)),
        "{text:?} is not a name or an id"
    );
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// `text` (a customer, any text a buyer's token or a service names) as a
/// JSON string, escaped exactly as serde_json escapes it; copied as it is
/// when nothing needs escaping, which is the usual case.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing a `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
        return;
    }
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;

//! `POST /v1/reservations/batch` (#18): up to `MAX_BATCH_ORDERS`
//! independent orders in one request, for a checkout gateway that
//! aggregates (as Redis pipelines, as TigerBeetle batches transfers).
//!
//! Each order is exactly the body of `POST /v1/reservations` and is placed
//! exactly as one would be (all or nothing on its own, its idempotency key
//! honoured, its limits and rates checked); the answer lists each order's
//! outcome in order. In `sync` the answer is sent once every order in it
//! is durable: one wait for the batch, which is where the endpoint's speed
//! comes from (one request and one durable wait for a thousand orders).

use hyper::body::Incoming;
use hyper::StatusCode;
use serde_json::Value;

use super::api::Api;
use super::auth::Scope;
use super::body::{parse_object, parse_order, parse_order_object, read_body_up_to};
use super::error::{bytes_response, ApiError, Code, HttpResponse};

/// Most orders in one batch.
pub const MAX_BATCH_ORDERS: usize = 1_000;
/// Largest batch body: a thousand orders of about a kilobyte each.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

type Parts = hyper::http::request::Parts;

impl Api {
    /// `POST /v1/reservations/batch`: `{"orders": [order, ...]}` → 200
    /// `{"results": [{"status": 201, "reservation": {...}} | {"status":
    /// 4xx/5xx, "error": {...}}, ...]}`.
    pub(super) async fn create_batch(
        &self,
        parts: &Parts,
        body: Incoming,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        if self.router.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                Code::ClusterRefused,
                "batches are not routed in a cluster (each order's customer may be another \
                 node's): send the orders one by one, to any node",
            ));
        }
        if parts.headers.contains_key("idempotency-key") {
            return Err(ApiError::invalid(
                "a batch's orders carry their own idempotency_key fields; the \
                 Idempotency-Key header is for one order",
            ));
        }
        let bytes = read_body_up_to(body, MAX_BATCH_BODY_BYTES).await?;
        // The usual shape is cut into its orders' bytes, each read by the
        // one-pass scanner as a single order is (a `serde_json::Value` of
        // the whole batch was a third of the server's time: perf); anything
        // else goes through the field-by-field reader, whose messages are
        // exact.
        let split = split_orders(&bytes).filter(|o| (1..=MAX_BATCH_ORDERS).contains(&o.len()));
        let orders = match split {
            Some(orders) => Orders::Cut(orders),
            None => Orders::Read(batch_orders(&bytes)?),
        };
        // Sized by the orders: a small batch does not map a large buffer.
        let mut out = Vec::with_capacity(64 + 256 * orders.len());
        out.extend_from_slice(b"{\"results\":[");
        match orders {
            Orders::Cut(orders) => {
                for (index, order) in orders.into_iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    let placed =
                        parse_order(order, |fields| self.place_now(fields, None, None, scope));
                    self.write_result(placed.and_then(|placed| self.placed_json(placed)), &mut out);
                }
            }
            Orders::Read(orders) => {
                for (index, order) in orders.into_iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    self.place_one(order, scope, &mut out);
                }
            }
        }
        out.extend_from_slice(b"]}");
        // One durable wait for every order placed above.
        self.acknowledge().await?;
        Ok(bytes_response(StatusCode::OK, out))
    }

    /// Places one order of a batch and writes its result.
    fn place_one(&self, order: Value, scope: Scope<'_>, out: &mut Vec<u8>) {
        let placed = match order {
            Value::Object(object) => {
                parse_order_object(object, |fields| self.place_now(fields, None, None, scope))
                    .and_then(|placed| self.placed_json(placed))
            }
            _ => Err(ApiError::invalid("each order must be a JSON object")),
        };
        self.write_result(placed, out);
    }

    /// One order's result: its reservation, or its error.
    fn write_result(&self, placed: Result<Vec<u8>, ApiError>, out: &mut Vec<u8>) {
        match placed {
            Ok(reservation) => {
                out.extend_from_slice(b"{\"status\":201,\"reservation\":");
                out.extend_from_slice(&reservation);
                out.push(b'}');
            }
            Err(mut error) => {
                // `{"error": {...}, "status": 409}`: keys in order, as the
                // object was written when it was built as a map.
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(&error.body());
                out.extend_from_slice(b",\"status\":");
                out.extend_from_slice(error.status.as_str().as_bytes());
                out.push(b'}');
            }
        }
    }
}

/// A batch's orders: cut from the usual shape, or read by serde.
enum Orders<'a> {
    Cut(Vec<&'a [u8]>),
    Read(Vec<Value>),
}

impl Orders<'_> {
    fn len(&self) -> usize {
        match self {
            Orders::Cut(orders) => orders.len(),
            Orders::Read(orders) => orders.len(),
        }
    }
}

/// The orders of a body of exactly the shape `{"orders": [...]}` (any
/// whitespace), each element's bytes as sent; `None` for anything else
/// (another key, a second key, malformed JSON), which the field reader
/// then refuses with an exact message. Elements are cut at the commas
/// outside strings, objects and arrays; an element is not checked here
/// (`parse_order` reads it, and refuses what is not an order).
fn split_orders(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut at = skip_ws(bytes, 0);
    for expected in [&b"{"[..], b"\"orders\"", b":", b"["] {
        if !bytes.get(at..)?.starts_with(expected) {
            return None;
        }
        at = skip_ws(bytes, at + expected.len());
    }
    let mut orders = Vec::new();
    if bytes.get(at) == Some(&b']') {
        at += 1;
    } else {
        loop {
            let end = element_end(bytes, at)?;
            orders.push(trim_ws(&bytes[at..end]));
            at = skip_ws(bytes, end);
            match bytes.get(at)? {
                b',' => at = skip_ws(bytes, at + 1),
                b']' => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    at = skip_ws(bytes, at);
    (bytes.get(at) == Some(&b'}') && skip_ws(bytes, at + 1) == bytes.len()).then_some(orders)
}

/// Where the element starting at `from` ends: the first `,` or `]` at its
/// own depth outside a string; `None` if the body ends first or the
/// brackets do not match.
fn element_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = from;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => at = string_end(bytes, at)?,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return (byte == b']' && at > from).then_some(at),
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => return (at > from).then_some(at),
            _ => {}
        }
        at += 1;
    }
    None
}

/// The index of the quote closing the string whose opening quote is at
/// `from`.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from + 1;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return Some(at),
            _ => at += 1,
        }
    }
    None
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| b" \t\r\n".contains(b)) {
        at += 1;
    }
    at
}

fn trim_ws(bytes: &[u8]) -> &[u8] {
    let start = skip_ws(bytes, 0);
    let mut end = bytes.len();
    while end > start && b" \t\r\n".contains(&bytes[end - 1]) {
        end -= 1;
    }
    &bytes[start..end]
}

/// The body's orders: 1 to `MAX_BATCH_ORDERS`.
fn batch_orders(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    let mut body = parse_object(bytes)?;
    if let Some(unknown) = body.keys().find(|key| *key != "orders") {
        return Err(ApiError::invalid(format!("unknown field {unknown:?}")));
    }
    let Some(Value::Array(orders)) = body.remove("orders") else {
        return Err(ApiError::invalid(
            "field \"orders\" is required: an array of order bodies",
        ));
    };
    if orders.is_empty() || orders.len() > MAX_BATCH_ORDERS {
        return Err(ApiError::invalid(format!(
            "a batch holds 1 to {MAX_BATCH_ORDERS} orders, not {}",
            orders.len()
        )));
    }
    Ok(orders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn element() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\\\\\"\\]\\[{},: \\n\\u{e9}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\\\\"]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Each element cut out reads back as the element serde reads:
        /// strings holding brackets, commas and escaped quotes included.
        #[test]
        fn the_cut_elements_are_the_array_elements(
            orders in prop::collection::vec(element(), 0..6),
            pretty in any::<bool>(),
        ) {
            let body = serde_json::json!({ "orders": orders.clone() });
            let text = if pretty {
                serde_json::to_string_pretty(&body).unwrap()
            } else {
                body.to_string()
            };
            let cut = split_orders(text.as_bytes()).expect("the usual shape");
            let read: Vec<Value> = cut.iter().map(|e| serde_json::from_slice(e).unwrap()).collect();
            prop_assert_eq!(read, orders);
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_field_reader() {
        for body in [
            "",
            "{}",
            "[]",
            r#"{"orders": {}}"#,
            r#"{"orders": [1,]}"#,
            r#"{"orders": [,1]}"#,
            r#"{"orders": [1] "x": 2}"#,
            r#"{"orders": [1], "extra": 2}"#,
            r#"{"orders": [1]"#,
            r#"{"orders": ["unterminated]}"#,
            r#"{"orders": [[1]}"#,
            r#"{"orders": [1]} x"#,
            r#"{"x": 1, "orders": [1]}"#,
        ] {
            assert_eq!(split_orders(body.as_bytes()), None, "{body}");
        }
        assert_eq!(split_orders(br#" { "orders" : [ ] } "#), Some(vec![]));
        assert_eq!(
            split_orders(br#"{"orders":[{"a":"],"},  [1,2] ,"x"]}"#),
            Some(vec![&br#"{"a":"],"}"#[..], b"[1,2]", br#""x""#])
        );
    }
}

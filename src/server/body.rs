//! Request bodies: reading them (bounded), and the one way an order body
//! becomes an order, `parse_order`.
//!
//! `parse_order` tries the one-pass scanner (`order_body.rs`: the usual
//! shape, borrowed, no allocation) and falls back to the field-by-field
//! reader, whose messages say exactly what is wrong. Both accept the same
//! bodies with the same values (a property test holds the scanner to it).
//! A serde-typed middle tier used to sit between them; it only ever saw
//! bodies the scanner declines (escapes, repeated keys), which no client of
//! a sale sends, and was removed (`docs/benchmarks.md` has its cost).

use std::future::Future;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::StatusCode;
use serde_json::{Map, Value};

use super::error::{ApiError, Code};
use super::order_body::{scan_compact, scan_general, ScannedLine};
use crate::core::limits::MAX_LINES_PER_CART;

/// Largest request body accepted; beyond it, `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where a line's units come from, for a SKU kept at locations: a named
/// location, or (`split`) several chosen by hotstock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinePlace<'a> {
    pub location: Option<&'a str>,
    pub split: bool,
}

/// An order body, however it was read; strings borrowed.
#[derive(Clone, Copy, Debug)]
pub struct OrderFields<'a> {
    pub lines: &'a [ScannedLine<'a>],
    /// Per line, where from; empty when no line says (the scanner's
    /// shape never does).
    pub places: &'a [LinePlace<'a>],
    pub customer: Option<&'a str>,
    pub ttl_ms: Option<u64>,
    pub confirm: Option<bool>,
    pub idempotency_key: Option<&'a str>,
}

/// Reads `bytes` as an order and hands it to `then`: the scanner's
/// borrowed view when it reads the body, else the field-by-field reader's.
pub fn parse_order<R>(
    bytes: &[u8],
    then: impl FnOnce(OrderFields<'_>) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    if let Some(order) = scan_compact(bytes) {
        return then(OrderFields {
            lines: std::slice::from_ref(&order.line),
            places: &[],
            customer: None,
            ttl_ms: order.ttl_ms,
            confirm: order.confirm,
            idempotency_key: None,
        });
    }
    if let Some(order) = scan_general(bytes) {
        return then(OrderFields {
            lines: order.lines(),
            places: &[],
            customer: order.customer,
            ttl_ms: order.ttl_ms,
            confirm: order.confirm,
            idempotency_key: order.idempotency_key,
        });
    }
    parse_fields(bytes, then)
}

/// Reads `bytes` field by field (the scanner's fallback, and the oracle
/// the scanner's property test holds it to).
pub(crate) fn parse_fields<R>(
    bytes: &[u8],
    then: impl FnOnce(OrderFields<'_>) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    parse_order_object(parse_object(bytes)?, then)
}

/// Reads an order already parsed as a JSON object (one of a batch's).
pub(crate) fn parse_order_object<R>(
    object: Map<String, Value>,
    then: impl FnOnce(OrderFields<'_>) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let read = FieldsOrder::read(object)?;
    let lines: Vec<ScannedLine<'_>> = read
        .lines
        .iter()
        .map(|line| ScannedLine {
            sku: &line.sku,
            quantity: line.quantity,
        })
        .collect();
    let places: Vec<LinePlace<'_>> = read.lines.iter().map(BodyLine::place).collect();
    let placed = places.iter().any(|place| *place != LinePlace::default());
    then(OrderFields {
        lines: &lines,
        places: if placed { &places } else { &[] },
        customer: read.customer.as_deref(),
        ttl_ms: read.ttl_ms,
        confirm: read.confirm,
        idempotency_key: read.idempotency_key.as_deref(),
    })
}

/// One line of a body, read field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyLine {
    pub sku: String,
    pub quantity: u64,
    pub location: Option<String>,
    pub split: bool,
}

impl BodyLine {
    fn place(&self) -> LinePlace<'_> {
        LinePlace {
            location: self.location.as_deref(),
            split: self.split,
        }
    }
}

/// An order read field by field.
struct FieldsOrder {
    lines: Vec<BodyLine>,
    customer: Option<String>,
    ttl_ms: Option<u64>,
    confirm: Option<bool>,
    idempotency_key: Option<String>,
}

impl FieldsOrder {
    fn read(body: Map<String, Value>) -> Result<FieldsOrder, ApiError> {
        let mut fields = Fields::new(
            body,
            &["lines", "customer", "ttl_ms", "confirm", "idempotency_key"],
        )?;
        let lines = read_lines(&mut fields)?
            .ok_or_else(|| ApiError::invalid("field \"lines\" is required"))?;
        Ok(FieldsOrder {
            lines,
            customer: fields.string("customer")?,
            ttl_ms: fields.u64("ttl_ms")?,
            confirm: fields.bool("confirm")?,
            idempotency_key: fields.string("idempotency_key")?,
        })
    }
}

/// A body's `"lines"`: `[{"sku": name, "quantity": n, "location": name
/// (optional), "split": bool (optional)}, ...]`, at most a cart's worth;
/// `None` when the field is absent.
pub fn read_lines(fields: &mut Fields) -> Result<Option<Vec<BodyLine>>, ApiError> {
    let raw_lines = match fields.take("lines") {
        Some(Value::Array(lines)) => lines,
        Some(Value::Null) | None => return Ok(None),
        Some(_) => return Err(ApiError::invalid("field \"lines\" must be an array")),
    };
    check_line_count(raw_lines.len())?;
    let mut lines = Vec::with_capacity(raw_lines.len());
    for (index, raw) in raw_lines.into_iter().enumerate() {
        let Value::Object(line) = raw else {
            return Err(ApiError::invalid(format!("line {index} must be an object")));
        };
        let mut line = Fields::new(line, &["sku", "quantity", "location", "split"])
            .map_err(|e| e.with("line", index))?;
        let name = line
            .string("sku")?
            .ok_or_else(|| ApiError::invalid(format!("line {index} needs a \"sku\"")))?;
        let quantity = line
            .u64("quantity")?
            .ok_or_else(|| ApiError::invalid(format!("line {index} needs a \"quantity\"")))?;
        lines.push(BodyLine {
            sku: name,
            quantity,
            location: line.string("location")?,
            split: line.bool("split")?.unwrap_or(false),
        });
    }
    Ok(Some(lines))
}

/// The cart size limit, checked before any line is read.
pub fn check_line_count(count: usize) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::invalid("a reservation needs at least one line"));
    }
    if count > MAX_LINES_PER_CART {
        return Err(ApiError::invalid(format!(
            "at most {MAX_LINES_PER_CART} lines are allowed"
        )));
    }
    Ok(())
}

/// Reads a JSON object body of at most `MAX_BODY_BYTES`.
pub async fn read_json(body: Incoming) -> Result<Map<String, Value>, ApiError> {
    parse_object(&read_body(body).await?)
}

/// Reads a body of at most `MAX_BODY_BYTES`. A body that arrives in one
/// frame (every small request) is returned as that frame, not copied.
/// Not an `async fn`: `read_body_up_to`'s future itself, without one more
/// state around it to poll, move and drop per request.
pub fn read_body(body: Incoming) -> impl Future<Output = Result<Bytes, ApiError>> {
    read_body_up_to(body, MAX_BODY_BYTES)
}

/// `read_body` with a limit of its own (a batch of orders).
pub async fn read_body_up_to(mut body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    use hyper::body::Body as _;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::PayloadTooLarge,
            format!("this route's request bodies are limited to {limit} bytes"),
        )
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    // A body whose length was given ends with its last byte: no poll for
    // the end (one more trip through hyper's body channel per request).
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|error| {
            ApiError::invalid(format!("could not read the request body: {error}"))
        })?;
        // Trailers carry nothing the API reads.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len();
        if total > limit {
            return Err(too_large());
        }
        if first.is_none() && joined.is_empty() {
            first = Some(data);
        } else {
            if let Some(first) = first.take() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(match first {
        Some(first) => first,
        None => Bytes::from(joined),
    })
}

/// Parses a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("the body must be a JSON object")),
        Err(error) => Err(ApiError::invalid(format!("malformed JSON: {error}"))),
    }
}

/// A JSON object's fields, checked one by one with messages naming them.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Refuses fields not in `known` (a typo must not be silently ignored).
    pub fn new(map: Map<String, Value>, known: &[&str]) -> Result<Fields, ApiError> {
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::invalid(format!("unknown field {unknown:?}")));
        }
        Ok(Fields(map))
    }

    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    pub fn u64(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                ApiError::invalid(format!("field {name:?} must be a non-negative integer"))
            }),
        }
    }

    pub fn i64(&mut self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(format!("field {name:?} must be an integer"))),
        }
    }

    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(ApiError::invalid(format!(
                "field {name:?} must be true or false"
            ))),
        }
    }

    pub fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(format!(
                "field {name:?} must be a string"
            ))),
        }
    }

    /// Absent: unchanged. `null`: remove the limit. A number: set it.
    /// A whole number or `null` (`Some(None)`); absent is `None`.
    pub fn nullable_u64(&mut self, name: &str) -> Result<Option<Option<u64>>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(value) => value.as_u64().map(|v| Some(Some(v))).ok_or_else(|| {
                ApiError::invalid(format!(
                    "field {name:?} must be a non-negative integer or null"
                ))
            }),
        }
    }

    pub fn limit(&mut self, name: &str) -> Result<Option<Option<u32>>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(value) => {
                let limit = value
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .filter(|&v| v > 0);
                limit.map(|l| Some(Some(l))).ok_or_else(|| {
                    ApiError::invalid(format!("field {name:?} must be a positive integer or null"))
                })
            }
        }
    }
}

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
use super::body::{parse_object, parse_order_object, read_body_up_to};
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
        let orders = batch_orders(&bytes)?;
        let mut out = Vec::with_capacity(64 + 256 * orders.len());
        out.extend_from_slice(b"{\"results\":[");
        for (index, order) in orders.into_iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            self.place_one(order, scope, &mut out);
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
        match placed {
            Ok(reservation) => {
                out.extend_from_slice(b"{\"status\":201,\"reservation\":");
                out.extend_from_slice(&reservation);
                out.push(b'}');
            }
            Err(error) => {
                let status = error.status.as_u16();
                let mut body = serde_json::Map::new();
                body.insert("error".into(), error.code.as_str().into());
                body.insert("message".into(), error.message.into());
                body.extend(error.details);
                let result = serde_json::json!({"status": status, "error": body});
                out.extend_from_slice(result.to_string().as_bytes());
            }
        }
    }
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

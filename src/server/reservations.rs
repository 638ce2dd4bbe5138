//! Reservation routes: create (the purchase path), read, the transitions
//! confirm, cancel and refund, and the extension of a hold.

use hyper::body::Incoming;
use hyper::StatusCode;

use super::api::{storage_failed, Api};
use super::auth::Scope;
use super::body::{
    check_line_count, parse_object, parse_order, read_body, read_json, read_lines, Fields,
    LinePlace, OrderFields,
};
use super::error::{bytes_response, ApiError, Code, HttpResponse};
use super::forward::Owner;
use super::queue::ADMISSION;
use super::response::{write_new_reservation, write_reservation};
use super::route::Route;
use crate::core::engine::{Order, Receipt};
use crate::core::error::EngineError;
use crate::core::holds::HoldDocument;
use crate::core::limits::MAX_LINES_PER_CART;
use crate::core::types::{Line, ReservationId, SkuId};
use crate::core::waiting_room::ClaimEnd;

type Parts = hyper::http::request::Parts;

/// Parsed once, not per request.
const IDEMPOTENCY_KEY: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("idempotency-key");

/// The request's `Idempotency-Key` header, if any.
fn idempotency_key(headers: &hyper::HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII"))
        })
        .transpose()
}

/// The order's idempotency key: the body's field or the header (both
/// only if equal).
fn order_key<'a>(
    field: Option<&'a str>,
    header: Option<&'a str>,
) -> Result<Option<&'a str>, ApiError> {
    match (field, header) {
        (Some(a), Some(b)) if a != b => Err(ApiError::invalid(
            "the Idempotency-Key header and the idempotency_key field differ",
        )),
        (Some(key), _) | (None, Some(key)) => Ok(Some(key)),
        (None, None) => Ok(None),
    }
}

/// An order's `Idempotency-Key` and `Admission` headers, if any (the
/// first of each), found in one pass over the request's few headers.
/// Two `HeaderMap::get`s cost ~330 instructions per order (callgrind),
/// mostly hashing names that a sale's requests do not carry; a pass
/// compares each name, and a standard header's in one step.
fn order_headers(headers: &hyper::HeaderMap) -> Result<(Option<&str>, Option<&str>), ApiError> {
    let (mut key, mut admission) = (None, None);
    for (name, value) in headers {
        if key.is_none() && *name == IDEMPOTENCY_KEY {
            key = Some(value);
        } else if admission.is_none() && *name == ADMISSION {
            admission = Some(value);
        }
    }
    Ok((
        header_text(key, "Idempotency-Key")?,
        header_text(admission, "Admission")?,
    ))
}

fn header_text<'a>(
    value: Option<&'a hyper::header::HeaderValue>,
    what: &str,
) -> Result<Option<&'a str>, ApiError> {
    value
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid(format!("{what} must be printable ASCII")))
        })
        .transpose()
}

/// The one SKU of an order that has a waiting room (`has_room`: `sku`
/// has one); an order may name one such SKU, whose admission it presents.
fn one_room(roomed: Option<SkuId>, sku: SkuId, has_room: bool) -> Result<Option<SkuId>, ApiError> {
    match (roomed, has_room) {
        (Some(first), true) if first != sku => Err(ApiError::invalid(
            "an order may include one SKU sold through a waiting room (an admission is for one SKU): \
             order the others apart",
        )),
        (_, true) => Ok(Some(sku)),
        (roomed, false) => Ok(roomed),
    }
}

/// A placed order, waiting to be answered.
pub(super) enum Placed {
    /// Created now: its JSON, written from the receipt.
    Created(Vec<u8>),
    /// An idempotent retry of an earlier order, or an order of a kit
    /// (whose reservation holds the components, not the lines asked for):
    /// answered from the record, as it is now.
    ReadBack(ReservationId),
    /// Another node of the cluster owns the order's customer (or key).
    Elsewhere(usize),
}

impl Api {
    /// `POST /v1/reservations`. Everything up to the durable wait is
    /// synchronous, so the request's future stays small: the parsed body
    /// and the line buffer live on the stack of `place_now`.
    pub(super) async fn create_reservation(
        &self,
        parts: &Parts,
        body: Incoming,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let (header_key, admission) = order_headers(&parts.headers)?;
        let bytes = read_body(body).await?;
        let placed = parse_order(&bytes, |order| {
            self.place_now(order, header_key, admission, scope)
        })?;
        if let Placed::Elsewhere(peer) = placed {
            // Only a node with a router places elsewhere.
            if let Some(router) = &self.router {
                return Box::pin(self.forward(router, peer, parts, bytes)).await;
            }
        }
        if let Some(router) = &self.router {
            router.forwarded(&parts.headers)?;
        }
        // `acknowledge`, without its future around the journal's: in
        // `async` there is nothing to wait for, in `sync` one state less.
        if self.waits_for_disk() {
            let ticket = self.engine.durability_ticket();
            self.engine.durable(ticket).await.map_err(storage_failed)?;
        }
        self.answer_placed(placed)
    }

    /// Places the order in `bytes` and answers it once durable (on a node
    /// that runs alone: the unit tests).
    #[cfg(test)]
    pub(super) async fn reserve_bytes(
        &self,
        bytes: &[u8],
        header_key: Option<&str>,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        self.reserve_admitted(bytes, header_key, None, scope).await
    }

    /// `reserve_bytes` with an `Admission` header.
    #[cfg(test)]
    pub(super) async fn reserve_admitted(
        &self,
        bytes: &[u8],
        header_key: Option<&str>,
        admission: Option<&str>,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let placed = parse_order(bytes, |order| {
            self.place_now(order, header_key, admission, scope)
        })?;
        self.acknowledge().await?;
        self.answer_placed(placed)
    }

    /// Resolves the order's SKUs, checks it, places it and writes its
    /// answer (sent only after `acknowledge`).
    pub(super) fn place_now(
        &self,
        body: OrderFields<'_>,
        header_key: Option<&str>,
        admission: Option<&str>,
        scope: Scope<'_>,
    ) -> Result<Placed, ApiError> {
        check_line_count(body.lines.len())?;
        let customer = customer_in_scope(body.customer, scope)?;
        let key = order_key(body.idempotency_key, header_key)?;
        // In a cluster the customer's node (or the key's) places it, before
        // any SKU is looked up: this node may not know the SKU yet.
        if let (Some(router), Some(owned_by)) = (&self.router, customer.or(key)) {
            if let Owner::Peer(peer) = router.owner_of_key(owned_by) {
                return Ok(Placed::Elsewhere(peer));
            }
        }
        // On the stack: at most MAX_LINES_PER_CART, checked above.
        let unused = Line {
            sku: SkuId::from_index(0),
            quantity: 0,
        };
        let mut line_buffer = [unused; MAX_LINES_PER_CART];
        let mut split = 0u32;
        // One load while no SKU has a waiting room.
        let rooms = self.engine.any_waiting_room();
        let mut roomed = None;
        for (index, line) in body.lines.iter().enumerate() {
            let quantity = u32::try_from(line.quantity)
                .map_err(|_| ApiError::invalid(format!("line {index}: quantity out of range")))?;
            let mut sku = self.sku_id(line.sku)?;
            if rooms {
                roomed = one_room(roomed, sku, self.engine.waiting_room(sku).is_some())?;
            }
            if let Some(place) = body.places.get(index) {
                sku = self.place_line(sku, place)?;
                // MAX_LINES_PER_CART is 32: every line has a bit.
                split |= u32::from(place.split) << index;
            }
            line_buffer[index] = Line { sku, quantity };
        }
        let lines = &line_buffer[..body.lines.len()];
        let order = Order {
            lines,
            customer,
            ttl_ms: body.ttl_ms,
            confirm: body.confirm.unwrap_or(false),
            idempotency_key: key,
            split,
        };
        self.rates.check(lines, |id| self.sku_name(id))?;
        if let Some(customer) = order.customer {
            self.rates.check_customer(customer)?;
        }
        let receipt = match roomed {
            None => self.engine.reserve(&order),
            Some(sku) => self.reserve_admitted_order(&order, sku, admission)?,
        };
        let receipt = receipt.map_err(|e| self.engine_error(e))?;
        // A line that named a location holds its location's cell: the
        // answer names it, as read back.
        let named_location = body.places.iter().any(|p| p.location.is_some());
        if receipt.replayed || receipt.holds_components || receipt.backordered || named_location {
            return Ok(Placed::ReadBack(receipt.id));
        }
        Ok(Placed::Created(
            self.created_json(&receipt, &body, customer),
        ))
    }

    /// `reserve` of an order naming `roomed`, a SKU with a waiting room:
    /// its admission claimed before, and ended after by the outcome.
    fn reserve_admitted_order(
        &self,
        order: &Order<'_>,
        roomed: SkuId,
        admission: Option<&str>,
    ) -> Result<Result<Receipt, EngineError>, ApiError> {
        let claim =
            self.claim_admission(roomed, order.customer, order.idempotency_key, admission)?;
        let reserved = self.engine.reserve(order);
        if let Some(claim) = claim {
            // Used by a reservation, or by a refusal for stock (the buyer
            // had its turn); kept for a refusal the buyer can correct.
            let spent = matches!(
                reserved,
                Ok(_) | Err(EngineError::SoldOut { .. } | EngineError::InsufficientStock { .. })
            );
            claim.end(if spent {
                ClaimEnd::Spent
            } else {
                ClaimEnd::Kept
            });
        }
        Ok(reserved)
    }

    /// A reservation just created, so exactly what was asked: the names
    /// are the request's (lookups are exact), the rest is in the receipt.
    fn created_json(
        &self,
        receipt: &Receipt,
        body: &OrderFields<'_>,
        customer: Option<&str>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(176 + 48 * body.lines.len());
        self.with_id_text(receipt.id, |id| {
            write_new_reservation(&mut out, receipt, id, body.lines, customer);
        });
        out
    }

    /// The answer to a placed order, once it is as durable as the
    /// durability mode promises.
    fn answer_placed(&self, placed: Placed) -> Result<HttpResponse, ApiError> {
        match placed {
            Placed::Created(json) => Ok(bytes_response(StatusCode::CREATED, json)),
            // A replay answers the reservation as it is now, which may
            // differ from what this request asked for.
            Placed::ReadBack(id) => self.reservation_response(StatusCode::CREATED, id),
            Placed::Elsewhere(_) => Err(ApiError::invalid("the order belongs to another node")),
        }
    }

    /// The reservation `text` names, or the one refusal for an id that
    /// names none.
    fn decode_id(&self, text: &str) -> Result<ReservationId, ApiError> {
        // In a cluster, `{node}~` first (routing sent others' ids on); an
        // id without it was made before the node joined.
        let hex = (self.node.as_deref())
            .and_then(|node| text.strip_prefix(node)?.strip_prefix('~'))
            .unwrap_or(text);
        self.public_ids
            .decode(hex)
            .ok_or_else(|| ApiError::unknown_reservation(text))
    }

    /// The reservation `id` as `scope` may see it; another customer's
    /// answers as unknown.
    fn visible(&self, id: ReservationId, scope: Scope<'_>) -> Result<HoldDocument, ApiError> {
        let document = self
            .engine
            .reservation(id)
            .map_err(|e| self.engine_error(e))?;
        match scope {
            Scope::Customer(customer) if document.customer.as_deref() != Some(customer) => {
                Err(ApiError::unknown_reservation(&self.id_text(id)))
            }
            _ => Ok(document),
        }
    }

    /// A placed order's reservation as JSON bytes (a batch's result).
    pub(super) fn placed_json(&self, placed: Placed) -> Result<Vec<u8>, ApiError> {
        match placed {
            Placed::Created(json) => Ok(json),
            Placed::ReadBack(id) => {
                let document = self.visible(id, Scope::Any)?;
                Ok(self.reservation_bytes(&document, None))
            }
            Placed::Elsewhere(_) => Err(ApiError::invalid("the order belongs to another node")),
        }
    }

    fn reservation_response(
        &self,
        status: StatusCode,
        id: ReservationId,
    ) -> Result<HttpResponse, ApiError> {
        let document = self.visible(id, Scope::Any)?;
        Ok(bytes_response(
            status,
            self.reservation_bytes(&document, None),
        ))
    }

    /// `document` as its JSON answer (`extensions_left`: an extend's).
    fn reservation_bytes(&self, document: &HoldDocument, extensions_left: Option<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 64 * document.lines.len());
        self.with_id_text(document.id, |id| {
            write_reservation(&mut out, document, id, extensions_left, |sku| {
                self.sku_name(sku)
            });
        });
        out
    }

    /// `GET /v1/reservations/{id}`
    pub(super) fn get_reservation(
        &self,
        text: &str,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let id = self.decode_id(text)?;
        let document = self.visible(id, scope)?;
        Ok(bytes_response(
            StatusCode::OK,
            self.reservation_bytes(&document, None),
        ))
    }

    /// `POST /v1/reservations/{id}/confirm|cancel|refund`; confirm and
    /// refund take an optional body `{"lines": [{"sku", "quantity"}]}`
    /// naming how many units of each line (absent: all of them).
    /// A refund with an `Idempotency-Key` refunds at most once per key (a
    /// refund with lines otherwise refunds again on every call; a confirm
    /// is repeatable as it is: a repeat answers the status it reached).
    pub(super) async fn transition(
        &self,
        route: Route,
        text: &str,
        headers: &hyper::HeaderMap,
        body: Incoming,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let id = self.decode_id(text)?;
        let key = idempotency_key(headers)?;
        let bytes = read_body(body).await?;
        let lines = match route {
            Route::ReservationCancel => None,
            _ => self.part_lines(&bytes)?,
        };
        if let Scope::Customer(_) = scope {
            // A reservation's customer never changes, so checking it before
            // the transition is as good as checking it under the lock. A
            // service (any customer's) skips the read: nothing to check.
            self.visible(id, scope)?;
        }
        let outcome = match (route, &lines, key) {
            (Route::ReservationConfirm, None, _) => self.engine.confirm(id),
            (Route::ReservationConfirm, Some(lines), _) => self.engine.confirm_lines(id, lines),
            (Route::ReservationCancel, _, _) => self.engine.cancel(id),
            (_, lines, Some(key)) => self.engine.refund_once(id, lines.as_deref(), key),
            (_, None, None) => self.engine.refund(id),
            (_, Some(lines), None) => self.engine.refund_lines(id, lines),
        };
        outcome.map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        self.reservation_response(StatusCode::OK, id)
    }

    /// The lines of a confirm or refund body, resolved; `None` for no body
    /// (or no `"lines"`): the whole transition.
    fn part_lines(&self, bytes: &[u8]) -> Result<Option<Vec<Line>>, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let mut fields = Fields::new(parse_object(bytes)?, &["lines"])?;
        let Some(named) = read_lines(&mut fields)? else {
            return Ok(None);
        };
        let mut lines = Vec::with_capacity(named.len());
        for (index, line) in named.iter().enumerate() {
            let quantity = u32::try_from(line.quantity)
                .map_err(|_| ApiError::invalid(format!("line {index}: quantity out of range")))?;
            if quantity == 0 {
                return Err(ApiError::invalid(format!(
                    "line {index}: quantity must be at least 1; leave a line out to confirm or \
                     refund none of it"
                )));
            }
            if line.split {
                return Err(ApiError::invalid(format!(
                    "line {index}: \"split\" belongs to orders; name the \"location\" a \
                     line of a SKU kept at locations took its units from"
                )));
            }
            let mut sku = self.sku_id(&line.sku)?;
            if let Some(location) = &line.location {
                let place = LinePlace {
                    location: Some(location),
                    split: false,
                };
                sku = self.place_line(sku, &place)?;
            }
            lines.push(Line { sku, quantity });
        }
        Ok(Some(lines))
    }

    /// The cell a line takes from: a named location's, or the SKU's own
    /// (hotstock then allocates a SKU kept at locations).
    fn place_line(&self, sku: SkuId, place: &LinePlace<'_>) -> Result<SkuId, ApiError> {
        match place.location {
            Some(location) => (self.engine)
                .location(sku, location)
                .map_err(|e| self.engine_error(e)),
            None => Ok(sku),
        }
    }

    /// `POST /v1/reservations/{id}/extend` with `{"ttl_ms": N}`: the hold
    /// then expires `N` ms from now (capped, see `Engine::extend`). Only a
    /// service may extend (auth), so no customer check here.
    pub(super) async fn extend(
        &self,
        text: &str,
        body: Incoming,
    ) -> Result<HttpResponse, ApiError> {
        let id = self.decode_id(text)?;
        let mut fields = Fields::new(read_json(body).await?, &["ttl_ms"])?;
        let ttl_ms = fields
            .u64("ttl_ms")?
            .ok_or_else(|| ApiError::invalid("field \"ttl_ms\" is required"))?;
        let extension = self
            .engine
            .extend(id, ttl_ms)
            .map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        let mut document = self.visible(id, Scope::Any)?;
        // The deadline this extension gave (the document's may differ if a
        // later extension raced this answer).
        document.deadline_ms = extension.expires_at_ms;
        let answer = self.reservation_bytes(&document, Some(extension.extensions_left));
        Ok(bytes_response(StatusCode::OK, answer))
    }
}

/// The customer an order is placed for: a buyer's own (a body naming
/// another is refused), or whatever a service or an open server sends.
fn customer_in_scope<'a>(
    body: Option<&'a str>,
    scope: Scope<'a>,
) -> Result<Option<&'a str>, ApiError> {
    match (scope, body) {
        (Scope::Any, body) => Ok(body),
        (Scope::Customer(own), None) => Ok(Some(own)),
        (Scope::Customer(own), Some(named)) if named == own => Ok(Some(own)),
        (Scope::Customer(_), Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::Forbidden,
            "a buyer reserves for itself only: the body's \"customer\" differs from the buyer token's subject (leave it out)",
        )),
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;
    use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST};

    #[test]
    fn an_orders_headers_are_the_first_of_each_wherever_they_stand() {
        let mut headers = HeaderMap::new();
        assert_eq!(order_headers(&headers).unwrap(), (None, None));
        headers.insert(HOST, HeaderValue::from_static("shop"));
        headers.append(ADMISSION, HeaderValue::from_static("ticket-1"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("12"));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("order-1"));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("order-2"));
        headers.append(ADMISSION, HeaderValue::from_static("ticket-2"));
        assert_eq!(
            order_headers(&headers).unwrap(),
            (Some("order-1"), Some("ticket-1"))
        );
        for (name, shown) in [
            (IDEMPOTENCY_KEY, "Idempotency-Key"),
            (ADMISSION, "Admission"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
            let refused = order_headers(&headers).unwrap_err();
            assert!(refused.message.starts_with(shown), "{}", refused.message);
            assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        }
    }
}

//! The HTTP boundary's one error type: `ApiError`, with a `Code` from one
//! enum (the contract's `error` field, and the metrics' outcome label), the
//! status, a message a client can act on and the details that go with it.

use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::core::catalogue::LOCATION_SEPARATOR;
use crate::core::error::{EngineError, ExtensionLimit};
use crate::core::public_id::PUBLIC_ID_CHARS;
use crate::core::types::{ReservationId, SkuId};

/// The responses this server writes.
pub type HttpResponse = Response<ApiBody>;

mod api_body;
pub use api_body::{ApiBody, BodyBytes};

/// Every error code of the contract (`docs/api.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    SoldOut,
    LimitExceeded,
    VersionConflict,
    InsufficientStock,
    InvalidTransition,
    UnknownSku,
    UnknownReservation,
    NotFound,
    MethodNotAllowed,
    InvalidRequest,
    PayloadTooLarge,
    Unauthorized,
    Overloaded,
    StorageFailed,
    StockLimit,
    CustomerRequired,
    IdempotencyKeyReused,
    Forbidden,
    /// A feed position older than the outbox keeps (410).
    Gone,
    /// A feed position past the newest event (409).
    PositionAhead,
    /// A hold extension past its caps (409).
    ExtensionRefused,
    /// A confirm or refund of more units than a line can give (409).
    ExceedsReservation,
    /// Fewer units on hand than are held plus kept back as safety stock
    /// (409).
    BelowCommitted,
    /// A kit where a SKU with stock is needed, or the other way round
    /// (409).
    KitConflict,
    /// A SKU kept at locations where one with stock of its own is needed,
    /// or the other way round, or too many locations (409).
    LocationConflict,
    /// A SKU with no location of that name (404).
    UnknownLocation,
    /// No one location has a line's units, though together they have
    /// (409): the line may ask to be split.
    NotAtOneLocation,
    /// A step of a lease from a cluster's escrow was refused (409): the
    /// node's lease book and the escrow disagree.
    LeaseConflict,
    /// An operator change a node of a cluster cannot make on its own
    /// (409): stock is the escrow's.
    ClusterRefused,
    /// The node owning a request could not be reached (503).
    PeerUnavailable,
    /// A forwarded request this node does not own, or one from a node with
    /// other members (421).
    Misrouted,
    /// The SKU's sale window is not open now (409).
    NotOnSale,
    /// A sale window bound backwards against the SKU's other, current
    /// bound (409).
    SaleWindowConflict,
    /// A reservation of a SKU with a waiting room without a good admission
    /// (403).
    NotAdmitted,
    /// A queue token or admission this room did not give (404): another
    /// SKU's, an earlier room's, or from before a restart.
    UnknownQueueToken,
    /// A waiting room ticket whose admission passed its deadline unused
    /// (410): join again.
    AdmissionLapsed,
    /// A waiting room ticket whose admission a reservation used (410).
    AdmissionUsed,
    /// A waiting room holding `MAX_QUEUE_PER_ROOM` buyers (503).
    QueueFull,
    /// A queue route for a SKU without a waiting room (404).
    NoWaitingRoom,
    /// More SKUs with a waiting room than allowed, or a room where it
    /// cannot work (409).
    WaitingRoomConflict,
}

impl Code {
    /// In label order.
    pub const ALL: [Code; 40] = [
        Code::SoldOut,
        Code::LimitExceeded,
        Code::VersionConflict,
        Code::InsufficientStock,
        Code::InvalidTransition,
        Code::UnknownSku,
        Code::UnknownReservation,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::InvalidRequest,
        Code::PayloadTooLarge,
        Code::Unauthorized,
        Code::Overloaded,
        Code::StorageFailed,
        Code::StockLimit,
        Code::CustomerRequired,
        Code::IdempotencyKeyReused,
        Code::Forbidden,
        Code::Gone,
        Code::PositionAhead,
        Code::ExtensionRefused,
        Code::ExceedsReservation,
        Code::BelowCommitted,
        Code::KitConflict,
        Code::LocationConflict,
        Code::UnknownLocation,
        Code::NotAtOneLocation,
        Code::LeaseConflict,
        Code::ClusterRefused,
        Code::PeerUnavailable,
        Code::Misrouted,
        Code::NotOnSale,
        Code::SaleWindowConflict,
        Code::NotAdmitted,
        Code::UnknownQueueToken,
        Code::AdmissionLapsed,
        Code::AdmissionUsed,
        Code::QueueFull,
        Code::NoWaitingRoom,
        Code::WaitingRoomConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::SoldOut => "sold_out",
            Code::LimitExceeded => "limit_exceeded",
            Code::VersionConflict => "version_conflict",
            Code::InsufficientStock => "insufficient_stock",
            Code::InvalidTransition => "invalid_transition",
            Code::UnknownSku => "unknown_sku",
            Code::UnknownReservation => "unknown_reservation",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::InvalidRequest => "invalid_request",
            Code::PayloadTooLarge => "payload_too_large",
            Code::Unauthorized => "unauthorized",
            Code::Overloaded => "overloaded",
            Code::StorageFailed => "storage_failed",
            Code::StockLimit => "stock_limit",
            Code::CustomerRequired => "customer_required",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::Forbidden => "forbidden",
            Code::Gone => "gone",
            Code::PositionAhead => "position_ahead",
            Code::ExtensionRefused => "extension_refused",
            Code::ExceedsReservation => "exceeds_reservation",
            Code::BelowCommitted => "below_committed",
            Code::KitConflict => "kit_conflict",
            Code::LocationConflict => "location_conflict",
            Code::UnknownLocation => "unknown_location",
            Code::NotAtOneLocation => "not_at_one_location",
            Code::LeaseConflict => "lease_conflict",
            Code::ClusterRefused => "cluster_refused",
            Code::PeerUnavailable => "peer_unavailable",
            Code::Misrouted => "misrouted",
            Code::NotOnSale => "not_on_sale",
            Code::SaleWindowConflict => "sale_window_conflict",
            Code::NotAdmitted => "not_admitted",
            Code::UnknownQueueToken => "unknown_queue_token",
            Code::AdmissionLapsed => "admission_lapsed",
            Code::AdmissionUsed => "admission_used",
            Code::QueueFull => "queue_full",
            Code::NoWaitingRoom => "no_waiting_room",
            Code::WaitingRoomConflict => "waiting_room_conflict",
        }
    }

    /// The position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refusal on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub details: Details,
    /// For a 405: the methods the resource takes (the `Allow` header).
    pub allow: Option<&'static str>,
    /// The body, written already (a sold-out answer, `sold_out.rs`);
    /// dropped by any later change of the details.
    written: Option<Vec<u8>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Details::default(),
            allow: None,
            written: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Code::InvalidRequest, message)
    }

    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> ApiError {
        self.details.insert(key, value.into());
        self.written = None;
        self
    }

    /// The JSON error shape of this refusal (`error_body`).
    pub fn body(&mut self) -> Vec<u8> {
        match self.written.take() {
            Some(body) => body,
            None => error_body(self.code.as_str(), &self.message, self.details.sorted()),
        }
    }

    pub fn into_response(mut self) -> HttpResponse {
        let body = self.body();
        let mut response = bytes_response(self.status, body);
        let headers = response.headers_mut();
        let busy = [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
        ];
        if busy.contains(&self.status) {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 3: a 401 names the scheme it wants.
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }

    /// The one answer for a reservation id the caller may not see: one
    /// that names none, and another customer's, answer alike (no oracle).
    /// `text` is the id as the client wrote it (or its public form).
    pub fn unknown_reservation(text: &str) -> ApiError {
        // Room for a node's id before the 32 hex digits.
        let shown: String = text.chars().take(PUBLIC_ID_CHARS + 64).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            Code::UnknownReservation,
            format!("unknown reservation {shown:?}"),
        )
        .with("id", shown)
    }

    /// Maps an engine refusal to the contract's code, status and details;
    /// `name` finds SKU names (lock-free), `public_id` writes a reservation
    /// id as clients know it (the engine's own messages name the internal
    /// id, which never leaves the server).
    // Long by design: one arm per engine refusal, the whole mapping to
    // the contract in one match.
    pub fn from_engine<'a>(
        error: EngineError,
        name: impl Fn(SkuId) -> Option<&'a str>,
        public_id: impl Fn(ReservationId) -> String,
    ) -> ApiError {
        if let EngineError::SoldOut {
            sku,
            available,
            requested,
        } = error
        {
            // The one refusal of a sale's crowd: its answer written as is.
            if let Some(refusal) = name(sku).and_then(|n| sold_out(n, available, requested)) {
                return refusal;
            }
        }
        // Room for the usual message, so it is written without regrowing.
        let mut message = String::with_capacity(128);
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut message, format_args!("{}", error.named(&name)));
        let sku = |id: SkuId| name(id).map_or(Value::Null, Value::from);
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, message.clone());
        let status = |status, code| ApiError::new(status, code, message.clone());
        let refusal = match error {
            EngineError::SoldOut {
                sku: id,
                available,
                requested,
            } => conflict(Code::SoldOut)
                .with("sku", sku(id))
                .with("available", available)
                .with("requested", requested),
            // The window's bounds are added by `Api::engine_error`, which
            // can read them from the engine.
            EngineError::NotOnSale {
                sku: id, now_ms, ..
            } => conflict(Code::NotOnSale)
                .with("sku", sku(id))
                .with("now_ms", now_ms),
            EngineError::LimitExceeded {
                sku: id,
                limit,
                already,
                requested,
            } => conflict(Code::LimitExceeded)
                .with("sku", sku(id))
                .with("limit", limit)
                .with("already", already)
                .with("requested", requested),
            EngineError::VersionConflict {
                current, expected, ..
            } => conflict(Code::VersionConflict)
                .with("current_version", current)
                .with("expected_version", expected),
            EngineError::InsufficientStock {
                sku: id,
                available,
                requested,
            } => conflict(Code::InsufficientStock)
                .with("sku", sku(id))
                .with("available", available)
                .with("requested", requested),
            EngineError::InvalidTransition {
                id,
                status,
                requested,
            } => ApiError::new(
                StatusCode::CONFLICT,
                Code::InvalidTransition,
                format!(
                    "reservation {} is {status}: it cannot be {requested}",
                    public_id(id)
                ),
            )
            .with("status", status.as_str()),
            EngineError::ExtensionRefused {
                id,
                extensions,
                max,
                deadline_ms,
                reason,
            } => {
                // The engine's message names the internal id.
                let message = error_with_public_id(&message, id, &public_id);
                let reason = match reason {
                    ExtensionLimit::Count => "max_extensions",
                    ExtensionLimit::HoldTime => "max_hold_time",
                };
                ApiError::new(StatusCode::CONFLICT, Code::ExtensionRefused, message)
                    .with("reason", reason)
                    .with("extensions", extensions)
                    .with("max_extensions", max)
                    .with("expires_at_ms", deadline_ms)
            }
            EngineError::ExceedsReservation {
                id,
                sku: line,
                requested,
                allowed,
                ..
            } => {
                let message = error_with_public_id(&message, id, &public_id);
                ApiError::new(StatusCode::CONFLICT, Code::ExceedsReservation, message)
                    .with("sku", sku(line))
                    .with("requested", requested)
                    .with("allowed", allowed)
            }
            EngineError::NotInReservation { id, sku: line } => {
                ApiError::invalid(error_with_public_id(&message, id, &public_id))
                    .with("sku", sku(line))
            }
            EngineError::NothingRequested { .. } => ApiError::invalid(message),
            EngineError::UnknownSku { name } => {
                status(StatusCode::NOT_FOUND, Code::UnknownSku).with("sku", &*name)
            }
            EngineError::UnknownSkuId { .. } => status(StatusCode::NOT_FOUND, Code::UnknownSku),
            EngineError::UnknownReservation { id } => ApiError::unknown_reservation(&public_id(id)),
            EngineError::StorageFailed { .. } => {
                status(StatusCode::SERVICE_UNAVAILABLE, Code::StorageFailed)
            }
            EngineError::CapacityExceeded { .. } => {
                status(StatusCode::SERVICE_UNAVAILABLE, Code::Overloaded)
            }
            // The request is well formed; the SKU's state refuses it.
            EngineError::StockLimit { sku: id, received } => conflict(Code::StockLimit)
                .with("sku", sku(id))
                .with("received", received),
            EngineError::BelowCommitted {
                sku: id,
                on_hand,
                held,
                safety_stock,
            } => conflict(Code::BelowCommitted)
                .with("sku", id.map_or(Value::Null, sku))
                .with("on_hand", on_hand)
                .with("held", held)
                .with("safety_stock", safety_stock),
            EngineError::InvalidQuantity { .. }
            | EngineError::EmptyCart
            | EngineError::TooManyLines { .. }
            | EngineError::DuplicateSku { .. }
            | EngineError::InvalidSkuName { .. }
            | EngineError::InvalidCustomer { .. }
            | EngineError::InvalidIdempotencyKey { .. }
            | EngineError::InvalidTtl { .. }
            | EngineError::InvalidLimit
            | EngineError::InvalidThreshold
            | EngineError::InvalidSafetyStock { .. }
            | EngineError::InvalidBackorderLimit { .. }
            | EngineError::InvalidBackorderEnd { .. }
            | EngineError::InvalidSaleWindow { .. }
            | EngineError::InvalidWaitingRoom { .. }
            | EngineError::InvalidKit { .. }
            | EngineError::InvalidLocationName { .. }
            | EngineError::LimitAtLocation => ApiError::invalid(message),
            EngineError::TooManyWaitingRooms => conflict(Code::WaitingRoomConflict),
            EngineError::LocationRefused { sku: id, .. } => {
                conflict(Code::LocationConflict).with("sku", sku(id))
            }
            EngineError::LeaseRefused { lease, .. } => {
                conflict(Code::LeaseConflict).with("lease", &*lease)
            }
            EngineError::UnknownLocation { sku: id, location } => {
                status(StatusCode::NOT_FOUND, Code::UnknownLocation)
                    .with("sku", sku(id))
                    .with("location", &*location)
            }
            EngineError::NotAtOneLocation {
                sku: id,
                requested,
                most_at_one,
                total,
            } => conflict(Code::NotAtOneLocation)
                .with("sku", sku(id))
                .with("requested", requested)
                .with("most_at_one_location", most_at_one)
                .with("available", total),
            EngineError::KitRefused { sku: id, .. } => {
                conflict(Code::KitConflict).with("sku", sku(id))
            }
            // Well formed, refused by state: the SKU's limit, the key's
            // first request.
            EngineError::CustomerRequired { sku: id } => {
                conflict(Code::CustomerRequired).with("sku", sku(id))
            }
            EngineError::IdempotencyKeyReused => conflict(Code::IdempotencyKeyReused),
        };
        refusal.with_location_split()
    }

    /// A refusal naming a location's own cell (`tee/berlin`) names the
    /// SKU and the location apart, as the API does everywhere.
    fn with_location_split(mut self) -> ApiError {
        let named = match self.details.get("sku") {
            Some(Value::String(name)) => name.split_once(LOCATION_SEPARATOR),
            _ => None,
        };
        if let Some((sku, location)) = named {
            let (sku, location) = (sku.to_owned(), location.to_owned());
            self.details.insert("sku", sku.into());
            self.details.insert("location", location.into());
        }
        self
    }
}

/// `message` with the internal id `id` written as clients know it.
fn error_with_public_id(
    message: &str,
    id: ReservationId,
    public_id: &impl Fn(ReservationId) -> String,
) -> String {
    message.replace(
        &format!("reservation {id} "),
        &format!("reservation {} ", public_id(id)),
    )
}

pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    bytes_response(status, bytes)
}

/// A response whose JSON body is already written.
pub fn bytes_response(status: StatusCode, bytes: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(ApiBody::Answer(Some(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

mod body;
use body::error_body;
pub use body::Details;
mod sold_out;
use sold_out::sold_out;

#[cfg(test)]
mod body_tests;

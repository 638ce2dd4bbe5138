//! The HTTP API buyers and operators call (hyper 1.x, HTTP/1.1, JSON).
//!
//! Routes and error codes follow the contract in the service issue and
//! `docs/api.md`. Every error is `{"error": code, "message": sentence, …}`.
//! Bad input never panics and never changes state. In `sync` durability a
//! 2xx to a state-changing request is sent only once its journal record is
//! on disk.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::core::error::EngineError;
use crate::core::holds::{HoldDocument, Line, ReservationId};
use crate::core::limits::MAX_LINES_PER_CART;
use crate::durable::journal::Durability;
use crate::durable::JournaledEngine;
use crate::server::order_body::{scan_order, ScannedLine};
use crate::{Order, Receipt, SkuDocument, SkuId};

/// Parsed once, not per request.
const IDEMPOTENCY_KEY: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("idempotency-key");

/// Largest request body accepted; beyond it, `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest page of `GET /v1/skus`.
pub const MAX_PAGE: usize = 1000;

/// Routes, as metrics label them.
const ROUTES: [&str; 12] = [
    "healthz",
    "metrics",
    "skus_list",
    "sku_get",
    "sku_put",
    "sku_adjust",
    "reservation_create",
    "reservation_get",
    "reservation_confirm",
    "reservation_cancel",
    "reservation_refund",
    "other",
];

/// Outcomes, as metrics label them: "ok" for 2xx, else the error code.
const CODES: [&str; 15] = [
    "ok",
    "sold_out",
    "limit_exceeded",
    "version_conflict",
    "insufficient_stock",
    "invalid_transition",
    "unknown_sku",
    "unknown_reservation",
    "not_found",
    "method_not_allowed",
    "invalid_request",
    "payload_too_large",
    "unauthorized",
    "overloaded",
    "storage_failed",
];

/// HTTP statuses the server answers with, as metrics label them.
const STATUSES: [u16; 11] = [200, 201, 400, 401, 404, 405, 409, 413, 429, 503, 500];

/// Most segments any route has.
const MAX_SEGMENTS: usize = 5;

/// The path's segments without allocating; `None` past `MAX_SEGMENTS`
/// (no route is that deep).
fn split_path(path: &str) -> Option<([&str; MAX_SEGMENTS], usize)> {
    let mut segments = [""; MAX_SEGMENTS];
    let leading = path.bytes().take_while(|&b| b == b'/').count();
    // By bytes: `/` is ASCII, so every cut is at a character boundary.
    let mut rest = &path[leading..];
    for (count, segment) in segments.iter_mut().enumerate() {
        match rest.bytes().position(|b| b == b'/') {
            Some(at) => {
                *segment = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *segment = rest;
                return Some((segments, count + 1));
            }
        }
    }
    // MAX_SEGMENTS segments and a slash after the last: one too many.
    None
}

/// The metrics label of a request, from its already split path (`None`:
/// deeper than any route).
fn classify(method: &Method, segments: Option<&[&str]>) -> usize {
    let Some(segments) = segments else {
        return ROUTES.len() - 1;
    };
    let name = match (method, segments) {
        (_, ["healthz"]) => "healthz",
        (_, ["metrics"]) => "metrics",
        (_, ["v1", "skus"]) => "skus_list",
        (&Method::PUT, ["v1", "skus", _]) => "sku_put",
        (_, ["v1", "skus", _]) => "sku_get",
        (_, ["v1", "skus", _, "adjust"]) => "sku_adjust",
        (_, ["v1", "reservations"]) => "reservation_create",
        (_, ["v1", "reservations", _]) => "reservation_get",
        (_, ["v1", "reservations", _, "confirm"]) => "reservation_confirm",
        (_, ["v1", "reservations", _, "cancel"]) => "reservation_cancel",
        (_, ["v1", "reservations", _, "refund"]) => "reservation_refund",
        _ => "other",
    };
    ROUTES
        .iter()
        .position(|r| *r == name)
        .unwrap_or(ROUTES.len() - 1)
}

/// Requests by (route, outcome), counted per CPU and summed when scraped:
/// no counter line is shared by every request.
#[derive(Debug)]
struct RequestCounters {
    /// Per shard: `ROUTES x CODES` cells, then `ROUTES x STATUSES` cells.
    shards: Box<[crossbeam_utils::CachePadded<Box<[std::sync::atomic::AtomicU64]>>]>,
}

impl RequestCounters {
    fn new() -> RequestCounters {
        let shards = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 64);
        let cells = ROUTES.len() * (CODES.len() + STATUSES.len());
        RequestCounters {
            shards: (0..shards)
                .map(|_| {
                    crossbeam_utils::CachePadded::new(
                        (0..cells).map(|_| Default::default()).collect(),
                    )
                })
                .collect(),
        }
    }

    fn count(&self, route: usize, code: &str, status: StatusCode) {
        let code = CODES.iter().position(|c| *c == code).unwrap_or(0);
        let status = STATUSES
            .iter()
            .position(|s| *s == status.as_u16())
            .unwrap_or(STATUSES.len() - 1);
        let shard = &self.shards[crate::core::hint::stripe_hint() % self.shards.len()];
        // Relaxed: statistics summed on read.
        shard[route * CODES.len() + code].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let by_status = ROUTES.len() * CODES.len() + route * STATUSES.len() + status;
        shard[by_status].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn total_by_status(&self, route: usize, status: usize) -> u64 {
        let cell = ROUTES.len() * CODES.len() + route * STATUSES.len() + status;
        self.shards
            .iter()
            .map(|s| s[cell].load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    fn total(&self, route: usize, code: usize) -> u64 {
        let cell = route * CODES.len() + code;
        self.shards
            .iter()
            .map(|s| s[cell].load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

/// How the server protects itself; `Default` is permissive but bounded.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Operator routes need `Authorization: Bearer <token>` when set.
    pub admin_token: Option<String>,
    /// Requests handled at once; beyond it, `overloaded` (503).
    pub max_in_flight: usize,
    /// Reservation requests per second, all SKUs together; beyond it,
    /// `overloaded` (429). Bursts of a tenth of a second's worth.
    pub rate_limit: Option<u32>,
    /// Reservation lines per second for any one SKU.
    pub sku_rate_limit: Option<u32>,
}

impl Default for ApiOptions {
    fn default() -> ApiOptions {
        ApiOptions {
            admin_token: None,
            max_in_flight: 4096,
            rate_limit: None,
            sku_rate_limit: None,
        }
    }
}

fn bucket(rate: u32) -> crate::server::rate::RateLimit {
    crate::server::rate::RateLimit::new(rate, (rate / 10).max(1))
}

/// Per-SKU buckets, created on first use, in shards by SKU id.
#[derive(Debug)]
struct SkuBuckets {
    rate: u32,
    shards: Box<[std::sync::Mutex<std::collections::HashMap<u32, crate::server::rate::RateLimit>>]>,
}

impl SkuBuckets {
    fn admit(&self, sku: SkuId, now_ns: u64) -> bool {
        let shard = &self.shards[sku.index() as usize % self.shards.len()];
        let mut shard = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shard
            .entry(sku.index())
            .or_insert_with(|| bucket(self.rate))
            .admit(now_ns)
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct Api {
    requests: RequestCounters,
    global_rate: Option<crate::server::rate::RateLimit>,
    sku_rate: Option<SkuBuckets>,
    /// The monotonic clock the rate limits run on.
    started: std::time::Instant,
    engine: Arc<JournaledEngine>,
    durability: Durability,
    /// Operator routes need `Authorization: Bearer <token>` when set.
    admin_token: Option<String>,
    in_flight: InFlight,
}

/// Requests being handled, counted per CPU so that admission control does
/// not put every request on one shared cache line; each shard admits up to
/// its share of the limit.
#[derive(Debug)]
struct InFlight {
    shards: Box<[crossbeam_utils::CachePadded<std::sync::atomic::AtomicUsize>]>,
    per_shard: usize,
}

/// A request admitted; gives its place back when dropped.
struct Admitted<'a> {
    shard: &'a std::sync::atomic::AtomicUsize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        // Relaxed: a count; nothing is published through it.
        self.shard
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl InFlight {
    fn new(limit: usize) -> InFlight {
        let shards = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 64);
        InFlight::with_shards(limit, shards)
    }

    fn with_shards(limit: usize, shards: usize) -> InFlight {
        InFlight {
            shards: (0..shards).map(|_| Default::default()).collect(),
            per_shard: limit.div_ceil(shards).max(1),
        }
    }

    /// Requests admitted and not yet finished (refusals count for an
    /// instant while they are turned away).
    fn current(&self) -> usize {
        // Relaxed: a gauge for monitoring.
        self.shards
            .iter()
            .map(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    fn admit(&self) -> Option<Admitted<'_>> {
        let shard = &self.shards[crate::core::hint::stripe_hint() % self.shards.len()];
        // Relaxed: a count; the RMW alone keeps it exact.
        let before = shard.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let admitted = Admitted { shard };
        (before < self.per_shard).then_some(admitted)
    }
}

type HttpResponse = Response<Full<Bytes>>;

/// A refusal on its way to the client.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    fn into_response(self) -> HttpResponse {
        let mut body = Map::new();
        body.insert("error".into(), self.code.into());
        body.insert("message".into(), self.message.into());
        body.extend(self.details);
        let mut response = json_response(self.status, &Value::Object(body));
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    bytes_response(status, bytes)
}

/// A response whose JSON body is already written.
fn bytes_response(status: StatusCode, bytes: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl Api {
    pub fn new(engine: Arc<JournaledEngine>, durability: Durability, options: ApiOptions) -> Api {
        Api {
            requests: RequestCounters::new(),
            global_rate: options.rate_limit.map(bucket),
            sku_rate: options.sku_rate_limit.map(|rate| SkuBuckets {
                rate,
                shards: (0..64).map(|_| Default::default()).collect(),
            }),
            started: std::time::Instant::now(),
            engine,
            durability,
            admin_token: options.admin_token,
            in_flight: InFlight::new(options.max_in_flight),
        }
    }

    /// The optional token buckets: refuse past the global rate, or past
    /// any line's SKU rate.
    fn check_rates(&self, lines: &[Line]) -> Result<(), ApiError> {
        let now_ns = self.started.elapsed().as_nanos() as u64;
        let refused = |what: String| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!("{what}; retry after the Retry-After delay"),
            )
        };
        if let Some(global) = &self.global_rate {
            if !global.admit(now_ns) {
                return Err(refused(
                    "reservation requests are over the server's rate limit".into(),
                ));
            }
        }
        if let Some(buckets) = &self.sku_rate {
            for line in lines {
                if !buckets.admit(line.sku, now_ns) {
                    let name = self.sku_name(line.sku);
                    return Err(
                        refused(format!("SKU {name} is over its rate limit")).with("sku", name)
                    );
                }
            }
        }
        Ok(())
    }

    /// Operator routes: refuse without the configured bearer token.
    fn check_operator(&self, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.admin_token else {
            return Ok(());
        };
        let presented = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "operator routes need the header `Authorization: Bearer <admin token>`",
            )),
        }
    }

    /// Answers one request. Never fails: every problem becomes a JSON error.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<HttpResponse, Infallible> {
        // Split once: the path's segments serve the metrics label and the
        // routing, and the head stays borrowed while the body is read.
        let (parts, body) = request.into_parts();
        let split = split_path(parts.uri.path());
        let segments = split.as_ref().map(|(segments, count)| &segments[..*count]);
        let route = classify(&parts.method, segments);
        // Peak shaving: past the in-flight cap, refuse at once rather than
        // queue without bound.
        let Some(_admitted) = self.in_flight.admit() else {
            self.requests
                .count(route, "overloaded", StatusCode::SERVICE_UNAVAILABLE);
            return Ok(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight; retry after the Retry-After delay",
            )
            .into_response());
        };
        Ok(match self.route(&parts, body, segments).await {
            Ok(response) => {
                self.requests.count(route, "ok", response.status());
                response
            }
            Err(error) => {
                self.requests.count(route, error.code, error.status);
                error.into_response()
            }
        })
    }

    async fn route(
        &self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
        segments: Option<&[&str]>,
    ) -> Result<HttpResponse, ApiError> {
        let method = &parts.method;
        let path = parts.uri.path();
        let query = parts.uri.query();
        let header_key = parts
            .headers
            .get(IDEMPOTENCY_KEY)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII"))
            })
            .transpose()?;
        let Some(segments) = segments else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}"),
            ));
        };
        let allowed = |methods: &[Method]| -> Result<(), ApiError> {
            if methods.contains(method) {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{method} is not allowed on {path}"),
                ))
            }
        };
        match segments {
            ["healthz"] => {
                allowed(&[Method::GET])?;
                Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            ["metrics"] => {
                allowed(&[Method::GET])?;
                let mut response = Response::new(Full::new(Bytes::from(self.metrics())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                Ok(response)
            }
            ["v1", "skus"] => {
                allowed(&[Method::GET])?;
                self.list_skus(query)
            }
            ["v1", "skus", sku] => {
                allowed(&[Method::GET, Method::PUT])?;
                if method == Method::GET {
                    let id = self.sku_id(sku)?;
                    return Ok(json_response(
                        StatusCode::OK,
                        &sku_json(&self.document(id)?),
                    ));
                }
                self.check_operator(&parts.headers)?;
                let body = read_json(body).await?;
                self.put_sku(sku, body).await
            }
            ["v1", "skus", sku, "adjust"] => {
                allowed(&[Method::POST])?;
                self.check_operator(&parts.headers)?;
                let body = read_json(body).await?;
                self.adjust(sku, body).await
            }
            ["v1", "reservations"] => {
                allowed(&[Method::POST])?;
                let bytes = read_body(body).await?;
                self.reserve_bytes(&bytes, header_key).await
            }
            ["v1", "reservations", id] => {
                allowed(&[Method::GET])?;
                let id = parse_reservation_id(id)?;
                let document = self
                    .engine
                    .reservation(id)
                    .map_err(|e| self.engine_error(e))?;
                Ok(json_response(
                    StatusCode::OK,
                    &self.reservation_json(&document),
                ))
            }
            ["v1", "reservations", id, action @ ("confirm" | "cancel" | "refund")] => {
                allowed(&[Method::POST])?;
                let id = parse_reservation_id(id)?;
                let outcome = match *action {
                    "confirm" => self.engine.confirm(id),
                    "cancel" => self.engine.cancel(id),
                    _ => self.engine.refund(id),
                };
                outcome.map_err(|e| self.engine_error(e))?;
                self.acknowledge().await?;
                let document = self
                    .engine
                    .reservation(id)
                    .map_err(|e| self.engine_error(e))?;
                Ok(json_response(
                    StatusCode::OK,
                    &self.reservation_json(&document),
                ))
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}"),
            )),
        }
    }

    /// The Prometheus text exposition of the counters.
    fn metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "# HELP hotstock_http_requests_total HTTP requests by route and outcome (ok or the error code).");
        let _ = writeln!(out, "# TYPE hotstock_http_requests_total counter");
        let mut sold_out = 0;
        for (r, route) in ROUTES.iter().enumerate() {
            for (c, code) in CODES.iter().enumerate() {
                let n = self.requests.total(r, c);
                if *code == "sold_out" {
                    sold_out += n;
                }
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "hotstock_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP hotstock_http_responses_total HTTP responses by route and status."
        );
        let _ = writeln!(out, "# TYPE hotstock_http_responses_total counter");
        for (r, route) in ROUTES.iter().enumerate() {
            for (st, status) in STATUSES.iter().enumerate() {
                let n = self.requests.total_by_status(r, st);
                if n > 0 {
                    let _ = writeln!(out, "hotstock_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {n}");
                }
            }
        }
        let create = ROUTES
            .iter()
            .position(|r| *r == "reservation_create")
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP hotstock_reservations_total Reservation requests by outcome."
        );
        let _ = writeln!(out, "# TYPE hotstock_reservations_total counter");
        for (c, code) in CODES.iter().enumerate() {
            let n = self.requests.total(create, c);
            if n > 0 || *code == "ok" || *code == "sold_out" {
                let outcome = if *code == "ok" { "created" } else { code };
                let _ = writeln!(
                    out,
                    "hotstock_reservations_total{{outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP hotstock_http_requests_in_flight Requests being handled now (this one included).");
        let _ = writeln!(out, "# TYPE hotstock_http_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "hotstock_http_requests_in_flight {}",
            self.in_flight.current()
        );
        let _ = writeln!(
            out,
            "# HELP hotstock_sold_out_total Requests refused because stock ran out."
        );
        let _ = writeln!(out, "# TYPE hotstock_sold_out_total counter");
        let _ = writeln!(out, "hotstock_sold_out_total {sold_out}");
        {
            let stats = self.engine.journal().stats();
            let histogram = |out: &mut String,
                             name: &str,
                             help: &str,
                             bounds: &[String],
                             counts: &[u64],
                             sum: String| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} histogram");
                let mut cumulative = 0;
                for (bound, count) in bounds.iter().zip(counts) {
                    cumulative += count;
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_sum {sum}");
                let _ = writeln!(out, "{name}_count {cumulative}");
            };
            let mut bounds: Vec<String> = crate::durable::journal::BATCH_BUCKETS
                .iter()
                .map(u64::to_string)
                .collect();
            bounds.push("+Inf".into());
            histogram(
                &mut out,
                "hotstock_journal_batch_events",
                "Events per group-committed journal batch.",
                &bounds,
                &stats.batch_buckets,
                stats.frames.to_string(),
            );
            let mut bounds: Vec<String> = crate::durable::journal::FSYNC_BUCKETS_US
                .iter()
                .map(|us| format!("{}", *us as f64 / 1e6))
                .collect();
            bounds.push("+Inf".into());
            let sum = format!("{}", stats.fsync_us_total as f64 / 1e6);
            histogram(
                &mut out,
                "hotstock_journal_fsync_seconds",
                "fdatasync latency per journal batch.",
                &bounds,
                &stats.fsync_buckets,
                sum,
            );
            let _ = writeln!(
                out,
                "# HELP hotstock_journal_bytes_total Bytes written to the journal."
            );
            let _ = writeln!(out, "# TYPE hotstock_journal_bytes_total counter");
            let _ = writeln!(out, "hotstock_journal_bytes_total {}", stats.bytes);
            let _ = writeln!(
                out,
                "# HELP hotstock_journal_durable_lag_epochs Batches appended but not yet on disk."
            );
            let _ = writeln!(out, "# TYPE hotstock_journal_durable_lag_epochs gauge");
            let lag = stats.open_epoch.saturating_sub(stats.durable_epoch + 1);
            let _ = writeln!(out, "hotstock_journal_durable_lag_epochs {lag}");
            let _ = writeln!(
                out,
                "# HELP hotstock_journal_failed 1 once the journal failed (restart to recover)."
            );
            let _ = writeln!(out, "# TYPE hotstock_journal_failed gauge");
            let _ = writeln!(out, "hotstock_journal_failed {}", u8::from(stats.failed));
        }
        out
    }

    /// In `sync` durability, waits until every change made so far is on
    /// disk; a storage failure becomes `storage_failed`.
    async fn acknowledge(&self) -> Result<(), ApiError> {
        if self.durability != Durability::Sync {
            return Ok(());
        }
        let ticket = self.engine.durability_ticket();
        self.engine.durable(ticket).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_failed",
                format!("the change could not be made durable: {e}"),
            )
        })
    }

    fn sku_id(&self, name: &str) -> Result<SkuId, ApiError> {
        self.engine.sku(name).map_err(|e| self.engine_error(e))
    }

    fn document(&self, id: SkuId) -> Result<SkuDocument, ApiError> {
        self.engine
            .sku_document(id)
            .map_err(|e| self.engine_error(e))
    }

    fn list_skus(&self, query: Option<&str>) -> Result<HttpResponse, ApiError> {
        let mut after = None;
        let mut limit = 100usize;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "after" => after = Some(self.sku_id(value)?),
                "limit" => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(format!(
                                "limit must be a whole number from 1 to {MAX_PAGE}"
                            ))
                        })?;
                }
                other => {
                    return Err(ApiError::invalid(format!(
                        "unknown query parameter {other:?}"
                    )))
                }
            }
        }
        let page = self.engine.skus_after(after, limit);
        let next = (page.len() == limit)
            .then(|| page.last().map(|d| d.name.to_string()))
            .flatten();
        let skus: Vec<Value> = page.iter().map(sku_json).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({"skus": skus, "next_after": next}),
        ))
    }

    async fn put_sku(&self, sku: &str, body: Map<String, Value>) -> Result<HttpResponse, ApiError> {
        let mut fields = Fields::new(
            body,
            &["available", "per_customer_limit", "expected_version"],
        )?;
        let available = fields
            .u64("available")?
            .ok_or_else(|| ApiError::invalid("field \"available\" is required"))?;
        let limit = fields.limit("per_customer_limit")?;
        let expected = fields.u64("expected_version")?;
        let (id, _) = self
            .engine
            .put_sku(sku, available, limit, expected)
            .map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &sku_json(&self.document(id)?),
        ))
    }

    async fn adjust(&self, sku: &str, body: Map<String, Value>) -> Result<HttpResponse, ApiError> {
        let mut fields = Fields::new(body, &["delta"])?;
        let delta = fields
            .i64("delta")?
            .ok_or_else(|| ApiError::invalid("field \"delta\" is required"))?;
        let id = self.sku_id(sku)?;
        self.engine
            .adjust(id, delta)
            .map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &sku_json(&self.document(id)?),
        ))
    }

    /// `POST /v1/reservations`. A well-formed body takes the typed path
    /// (borrowed strings, the answer written straight to bytes); anything
    /// else goes through the field-by-field path, whose messages say exactly
    /// what is wrong. Both accept the same bodies and answer the same JSON.
    async fn reserve_bytes(
        &self,
        bytes: &[u8],
        header_key: Option<&str>,
    ) -> Result<HttpResponse, ApiError> {
        // Everything up to the durable wait is synchronous, so the request's
        // future stays small: the scanned body and the line buffers live on
        // the stack of `place_now`, not in a future moved between polls.
        let placed = self.reserve_now(bytes, header_key)?;
        self.acknowledge().await?;
        self.answer_placed(placed)
    }

    /// Reads the body and places the order; nothing here waits.
    fn reserve_now(&self, bytes: &[u8], header_key: Option<&str>) -> Result<Placed, ApiError> {
        if let Some(order) = scan_order(bytes) {
            let fields = OrderFields {
                lines: order.lines(),
                customer: order.customer,
                ttl_ms: order.ttl_ms,
                confirm: order.confirm,
                idempotency_key: order.idempotency_key,
            };
            return self.reserve_typed(fields, header_key);
        }
        match serde_json::from_slice::<ReserveBody<'_>>(bytes) {
            Ok(body) => {
                let lines: Vec<ScannedLine<'_>> = body
                    .lines
                    .iter()
                    .map(|l| ScannedLine {
                        sku: &l.sku,
                        quantity: l.quantity,
                    })
                    .collect();
                let fields = OrderFields {
                    lines: &lines,
                    customer: body.customer.as_deref(),
                    ttl_ms: body.ttl_ms,
                    confirm: body.confirm,
                    idempotency_key: body.idempotency_key.as_deref(),
                };
                self.reserve_typed(fields, header_key)
            }
            Err(_) => self.reserve(parse_object(bytes)?, header_key),
        }
    }

    fn reserve_typed(
        &self,
        body: OrderFields<'_>,
        header_key: Option<&str>,
    ) -> Result<Placed, ApiError> {
        // The same checks, in the same order, as `reserve`; the types were
        // checked by the parser.
        check_line_count(body.lines.len())?;
        // On the stack: at most MAX_LINES_PER_CART, checked above.
        let unused = Line {
            sku: SkuId::from_index(0),
            quantity: 0,
        };
        let mut line_buffer = [unused; MAX_LINES_PER_CART];
        for (index, line) in body.lines.iter().enumerate() {
            let quantity = u32::try_from(line.quantity)
                .map_err(|_| ApiError::invalid(format!("line {index}: quantity out of range")))?;
            let sku = self.sku_id(line.sku)?;
            line_buffer[index] = Line { sku, quantity };
        }
        let lines = &line_buffer[..body.lines.len()];
        self.place_order(lines, &body, header_key)
    }

    /// Places a checked order (`lines` are `body.lines` resolved) and
    /// writes its answer: the shared end of every body path. The answer is
    /// sent only after `acknowledge`.
    fn place_order(
        &self,
        lines: &[Line],
        body: &OrderFields<'_>,
        header_key: Option<&str>,
    ) -> Result<Placed, ApiError> {
        debug_assert_eq!(lines.len(), body.lines.len());
        let key = match (body.idempotency_key, header_key) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid(
                    "the Idempotency-Key header and the idempotency_key field differ",
                ))
            }
            (Some(key), _) | (None, Some(key)) => Some(key),
            (None, None) => None,
        };
        let order = Order {
            lines,
            customer: body.customer,
            ttl_ms: body.ttl_ms,
            confirm: body.confirm.unwrap_or(false),
            idempotency_key: key,
        };
        self.check_rates(lines)?;
        let receipt = self
            .engine
            .reserve(&order)
            .map_err(|e| self.engine_error(e))?;
        if receipt.replayed {
            return Ok(Placed::Replayed(receipt.id));
        }
        // Just created, so it is exactly what was asked: the names are the
        // request's (lookups are exact), the rest is in the receipt.
        let mut out = Vec::with_capacity(160 + 48 * body.lines.len());
        write_new_reservation(&mut out, &receipt, body.lines, body.customer);
        Ok(Placed::Created(out))
    }

    /// The answer to a placed order, once it is as durable as the
    /// durability mode promises.
    fn answer_placed(&self, placed: Placed) -> Result<HttpResponse, ApiError> {
        match placed {
            Placed::Created(json) => Ok(bytes_response(StatusCode::CREATED, json)),
            Placed::Replayed(id) => {
                // A replay answers the reservation as it is now, which may
                // differ from what this request asked for.
                let document = self
                    .engine
                    .reservation(id)
                    .map_err(|e| self.engine_error(e))?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &self.reservation_json(&document),
                ))
            }
        }
    }

    /// The field-by-field path: every message says exactly what is wrong.
    fn reserve(
        &self,
        body: Map<String, Value>,
        header_key: Option<&str>,
    ) -> Result<Placed, ApiError> {
        let mut fields = Fields::new(
            body,
            &["lines", "customer", "ttl_ms", "confirm", "idempotency_key"],
        )?;
        let raw_lines = match fields.take("lines") {
            Some(Value::Array(lines)) => lines,
            Some(_) => return Err(ApiError::invalid("field \"lines\" must be an array")),
            None => return Err(ApiError::invalid("field \"lines\" is required")),
        };
        check_line_count(raw_lines.len())?;
        let mut lines = Vec::with_capacity(raw_lines.len());
        let mut names = Vec::with_capacity(raw_lines.len());
        for (index, raw) in raw_lines.into_iter().enumerate() {
            let Value::Object(line) = raw else {
                return Err(ApiError::invalid(format!("line {index} must be an object")));
            };
            let mut line =
                Fields::new(line, &["sku", "quantity"]).map_err(|e| e.with("line", index))?;
            let name = line
                .string("sku")?
                .ok_or_else(|| ApiError::invalid(format!("line {index} needs a \"sku\"")))?;
            let quantity = line
                .u64("quantity")?
                .ok_or_else(|| ApiError::invalid(format!("line {index} needs a \"quantity\"")))?;
            let quantity = u32::try_from(quantity)
                .map_err(|_| ApiError::invalid(format!("line {index}: quantity out of range")))?;
            let sku = self.sku_id(&name)?;
            lines.push(Line { sku, quantity });
            names.push(name);
        }
        let customer = fields.string("customer")?;
        let ttl_ms = fields.u64("ttl_ms")?;
        let confirm = fields.bool("confirm")?;
        let body_key = fields.string("idempotency_key")?;
        let scanned: Vec<ScannedLine<'_>> = names
            .iter()
            .zip(&lines)
            .map(|(name, line)| ScannedLine {
                sku: name,
                quantity: u64::from(line.quantity),
            })
            .collect();
        let body = OrderFields {
            lines: &scanned,
            customer: customer.as_deref(),
            ttl_ms,
            confirm,
            idempotency_key: body_key.as_deref(),
        };
        self.place_order(&lines, &body, header_key)
    }

    /// The engine names SKUs by id (`SKU #3`); clients know them by name.
    /// A SKU's name for an answer, read without the SKU's lock (a sold-out
    /// storm must not queue on the lock the engine exists to avoid).
    fn sku_name(&self, id: SkuId) -> Value {
        self.engine.sku_name(id).map_or(Value::Null, Value::from)
    }

    fn reservation_json(&self, document: &HoldDocument) -> Value {
        let lines: Vec<Value> = document
            .lines
            .iter()
            .map(|l| json!({"sku": self.sku_name(l.sku), "quantity": l.quantity}))
            .collect();
        json!({
            "id": document.id.to_string(),
            "status": document.status.as_str(),
            "lines": lines,
            "customer": document.customer.as_deref(),
            "expires_at_ms": document.deadline_ms,
        })
    }

    /// Maps an engine refusal to the contract's code, status and details.
    fn engine_error(&self, error: EngineError) -> ApiError {
        let message = error.named(|id| self.engine.sku_name(id)).to_string();
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, message.clone());
        match error {
            EngineError::SoldOut {
                sku,
                available,
                requested,
            } => conflict("sold_out")
                .with("sku", self.sku_name(sku))
                .with("available", available)
                .with("requested", requested),
            EngineError::LimitExceeded {
                sku,
                limit,
                already,
                requested,
            } => conflict("limit_exceeded")
                .with("sku", self.sku_name(sku))
                .with("limit", limit)
                .with("already", already)
                .with("requested", requested),
            EngineError::VersionConflict {
                current, expected, ..
            } => conflict("version_conflict")
                .with("current_version", current)
                .with("expected_version", expected),
            EngineError::InsufficientStock {
                sku,
                available,
                requested,
            } => conflict("insufficient_stock")
                .with("sku", self.sku_name(sku))
                .with("available", available)
                .with("requested", requested),
            EngineError::InvalidTransition { status, .. } => {
                conflict("invalid_transition").with("status", status.as_str())
            }
            EngineError::UnknownSku { name } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_sku", message).with("sku", &*name)
            }
            EngineError::UnknownSkuId { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_sku", message)
            }
            EngineError::UnknownReservation { id } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_reservation", message)
                    .with("id", id.to_string())
            }
            EngineError::StorageFailed { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_failed", message)
            }
            EngineError::CapacityExceeded { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            }
            EngineError::StockLimit { .. }
            | EngineError::InvalidQuantity { .. }
            | EngineError::EmptyCart
            | EngineError::TooManyLines { .. }
            | EngineError::DuplicateSku { .. }
            | EngineError::InvalidSkuName { .. }
            | EngineError::InvalidCustomer { .. }
            | EngineError::InvalidIdempotencyKey { .. }
            | EngineError::InvalidTtl { .. }
            | EngineError::InvalidLimit
            | EngineError::CustomerRequired { .. }
            | EngineError::IdempotencyKeyReused => ApiError::invalid(message),
        }
    }
}

/// Compares without an early exit, so response time does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn sku_json(document: &SkuDocument) -> Value {
    json!({
        "sku": &*document.name,
        "available": document.available,
        "held": document.held,
        "sold": document.sold,
        "version": document.version,
        "per_customer_limit": document.per_customer_limit,
    })
}

fn parse_reservation_id(text: &str) -> Result<ReservationId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_reservation",
            format!("unknown reservation {text:?}"),
        )
    })
}

/// Reads a JSON object body of at most `MAX_BODY_BYTES`.
async fn read_json(body: Incoming) -> Result<Map<String, Value>, ApiError> {
    parse_object(&read_body(body).await?)
}

/// Reads a body of at most `MAX_BODY_BYTES`. A body that arrives in one
/// frame (every small request) is returned as that frame, not copied.
async fn read_body(mut body: Incoming) -> Result<Bytes, ApiError> {
    use hyper::body::Body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    };
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::invalid(format!("could not read the request body: {error}"))
        })?;
        // Trailers carry nothing the API reads.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len();
        if total > MAX_BODY_BYTES {
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
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("the body must be a JSON object")),
        Err(error) => Err(ApiError::invalid(format!("malformed JSON: {error}"))),
    }
}

/// A JSON object's fields, checked one by one with messages naming them.
/// The body of `POST /v1/reservations`, borrowed from the request bytes
/// (`Cow` borrows unless a string has escapes). Its accepted set is a
/// subset of what `Fields` accepts: anything it refuses is re-parsed there.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody<'a> {
    #[serde(borrow)]
    lines: Vec<LineBody<'a>>,
    #[serde(borrow, default)]
    customer: Option<Cow<'a, str>>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    confirm: Option<bool>,
    #[serde(borrow, default)]
    idempotency_key: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LineBody<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    quantity: u64,
}

/// The cart size limit, checked before any line is read.
fn check_line_count(count: usize) -> Result<(), ApiError> {
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

/// A well-formed order body, however it was parsed.
/// A placed order, waiting to be answered.
enum Placed {
    /// Created now: its JSON, written from the receipt.
    Created(Vec<u8>),
    /// An idempotent retry of an earlier order: answered as it is now.
    Replayed(ReservationId),
}

struct OrderFields<'a> {
    lines: &'a [ScannedLine<'a>],
    customer: Option<&'a str>,
    ttl_ms: Option<u64>,
    confirm: Option<bool>,
    idempotency_key: Option<&'a str>,
}

/// Writes the JSON of a reservation just created from these lines, with
/// the keys in the order `reservation_json` (a sorted map) writes them.
fn write_new_reservation(
    out: &mut Vec<u8>,
    receipt: &Receipt,
    lines: &[ScannedLine<'_>],
    customer: Option<&str>,
) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"{\"customer\":");
    write_json_string_or_null(out, customer);
    out.extend_from_slice(b",\"expires_at_ms\":");
    out.extend_from_slice(number.format(receipt.expires_at_ms).as_bytes());
    out.extend_from_slice(b",\"id\":\"");
    let id = receipt.id.as_u64();
    for shift in (0..16).rev() {
        out.push(b"0123456789abcdef"[((id >> (shift * 4)) & 0xf) as usize]);
    }
    out.extend_from_slice(b"\",\"lines\":[");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"quantity\":");
        out.extend_from_slice(number.format(line.quantity).as_bytes());
        out.extend_from_slice(b",\"sku\":\"");
        // The name was just found in the catalogue, whose names are
        // `[A-Za-z0-9._~:-]`: nothing to escape.
        debug_assert!(!line
            .sku
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || b < 0x20));
        out.extend_from_slice(line.sku.as_bytes());
        out.push(b'"');
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"status\":\"");
    out.extend_from_slice(receipt.status.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

fn write_json_string_or_null(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        // Writing a `str` into a `Vec` cannot fail.
        Some(text) => {
            let _ = serde_json::to_writer(&mut *out, text);
        }
        None => out.extend_from_slice(b"null"),
    }
}

struct Fields(Map<String, Value>);

impl Fields {
    /// Refuses fields not in `known` (a typo must not be silently ignored).
    fn new(map: Map<String, Value>, known: &[&str]) -> Result<Fields, ApiError> {
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::invalid(format!("unknown field {unknown:?}")));
        }
        Ok(Fields(map))
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    fn u64(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                ApiError::invalid(format!("field {name:?} must be a non-negative integer"))
            }),
        }
    }

    fn i64(&mut self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(format!("field {name:?} must be an integer"))),
        }
    }

    fn bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(ApiError::invalid(format!(
                "field {name:?} must be true or false"
            ))),
        }
    }

    fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(format!(
                "field {name:?} must be a string"
            ))),
        }
    }

    /// Absent: unchanged. `null`: remove the limit. A number: set it.
    fn limit(&mut self, name: &str) -> Result<Option<Option<u32>>, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::{DurableConfig, DurableEngine};

    /// A journaled engine in a fresh directory of its own; the directory
    /// goes when the returned guard drops.
    struct TempEngine {
        durable: Option<DurableEngine>,
        dir: std::path::PathBuf,
    }

    impl TempEngine {
        fn new(name: &str) -> TempEngine {
            let dir =
                std::env::temp_dir().join(format!("hotstock-api-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let config = DurableConfig::new(&dir, Durability::Async);
            let (durable, _) = DurableEngine::open(config).unwrap();
            TempEngine {
                durable: Some(durable),
                dir,
            }
        }

        fn engine(&self) -> Arc<JournaledEngine> {
            Arc::clone(self.durable.as_ref().unwrap().engine())
        }
    }

    impl Drop for TempEngine {
        fn drop(&mut self) {
            drop(self.durable.take());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn admission_refuses_past_the_cap_and_frees_on_drop() {
        let in_flight = InFlight::with_shards(2, 1);
        let first = in_flight.admit();
        let second = in_flight.admit();
        assert!(first.is_some() && second.is_some());
        assert!(in_flight.admit().is_none(), "a third request is refused");
        drop(first);
        assert!(
            in_flight.admit().is_some(),
            "a finished request frees its place"
        );
    }

    fn answer(api: &Api, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = runtime
            .block_on(api.reserve_bytes(body.as_bytes(), key))
            .unwrap_or_else(ApiError::into_response);
        let status = response.status();
        let bytes = runtime
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// Bug: a sold-out answer took the hot SKU's lock twice just to look
    /// up its name, so a sold-out storm queued on the very lock the engine
    /// avoids. It must render while another thread holds that lock.
    #[test]
    fn a_sold_out_answer_names_the_sku_without_taking_its_lock() {
        let temp = TempEngine::new("sold-out-lock");
        let engine = temp.engine();
        let (sku, _) = engine.put_sku("tee", 0, None, None).unwrap();
        let api = Api::new(
            Arc::clone(&engine),
            Durability::Async,
            ApiOptions::default(),
        );
        let refusal = engine.purchase(sku, 1, None).unwrap_err();
        let mut guard = Some(engine.lock_sku_for_test(sku));
        let answer = std::thread::scope(|s| {
            let answer = s.spawn(|| api.engine_error(refusal.clone()));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !answer.is_finished() {
                if std::time::Instant::now() > deadline {
                    drop(guard.take());
                    panic!("the sold-out answer waited for the SKU's lock");
                }
                std::thread::yield_now();
            }
            answer.join().unwrap()
        });
        drop(guard);
        assert_eq!(answer.code, "sold_out");
        assert_eq!(
            answer.message,
            "sold out: SKU \"tee\" has 0 units available, 1 requested"
        );
        assert_eq!(answer.details["sku"], "tee");
    }

    #[test]
    fn typed_purchase_answers_what_the_record_says() {
        let temp = TempEngine::new("typed");
        let engine = temp.engine();
        engine.put_sku("tee", 10, None, None).unwrap();
        engine.put_sku("mug-2", 10, Some(Some(3)), None).unwrap();
        let api = Api::new(
            Arc::clone(&engine),
            Durability::Async,
            ApiOptions::default(),
        );
        let bodies = [
            r#"{"lines":[{"sku":"tee","quantity":1}],"confirm":true}"#,
            r#"{"lines":[{"sku":"tee","quantity":2}],"ttl_ms":60000}"#,
            r#"{"lines":[{"sku":"tee","quantity":1},{"sku":"mug-\u0032","quantity":2}],"customer":"ann \"\u00e9\"","confirm":false,"idempotency_key":null}"#,
        ];
        for body in bodies {
            // The typed path takes these bodies...
            assert!(
                serde_json::from_slice::<ReserveBody<'_>>(body.as_bytes()).is_ok(),
                "{body}"
            );
            let (status, fast) = answer(&api, body, None);
            assert_eq!(status, StatusCode::CREATED, "{fast}");
            // ...and answers exactly what the record, read back, says.
            let id = parse_reservation_id(fast["id"].as_str().unwrap()).unwrap();
            let document = engine.reservation(id).unwrap();
            assert_eq!(fast, api.reservation_json(&document), "{body}");
        }
        // A repeated key sends the body down the field-by-field path, which
        // answers through the same writer.
        let body = r#"{"lines":[{"sku":"tee","quantity":1}],"confirm":false,"confirm":true}"#;
        assert!(serde_json::from_slice::<ReserveBody<'_>>(body.as_bytes()).is_err());
        let (status, slow) = answer(&api, body, None);
        assert_eq!(status, StatusCode::CREATED, "{slow}");
        let id = parse_reservation_id(slow["id"].as_str().unwrap()).unwrap();
        assert_eq!(slow, api.reservation_json(&engine.reservation(id).unwrap()));
        assert_eq!(slow["status"], "confirmed");
    }

    #[test]
    fn bodies_the_typed_path_refuses_get_the_detailed_messages() {
        let temp = TempEngine::new("refused");
        let engine = temp.engine();
        engine.put_sku("tee", 10, None, None).unwrap();
        let api = Api::new(
            Arc::clone(&engine),
            Durability::Async,
            ApiOptions::default(),
        );
        let cases = [
            (
                r#"{"lines":[{"sku":"tee","quantity":1}],"colour":"red"}"#,
                "unknown field \"colour\"",
            ),
            (
                r#"{"lines":[{"sku":"tee"}]}"#,
                "line 0 needs a \"quantity\"",
            ),
            (
                r#"{"lines":[{"sku":"tee","quantity":-1}]}"#,
                "must be a non-negative integer",
            ),
            (
                r#"{"lines":[{"sku":"tee","quantity":1}],"confirm":"yes"}"#,
                "must be true or false",
            ),
            (r#"{"lines":[]}"#, "at least one line"),
            (
                r#"{"lines":[{"sku":"tee","quantity":4294967296}]}"#,
                "quantity out of range",
            ),
            (r#"[1]"#, "must be a JSON object"),
            (r#"{"lines":"#, "malformed JSON"),
        ];
        for (body, expected) in cases {
            let (status, answer) = answer(&api, body, None);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            let message = answer["message"].as_str().unwrap();
            assert!(message.contains(expected), "{body}: {message}");
        }
        // Duplicate fields: serde refuses, the map keeps the last, as before.
        let (status, _) = answer(
            &api,
            r#"{"lines":[{"sku":"tee","quantity":1}],"confirm":false,"confirm":true}"#,
            None,
        );
        assert_eq!(status, StatusCode::CREATED);
        let (status, answer) = answer(
            &api,
            r#"{"lines":[{"sku":"tee","quantity":1}],"idempotency_key":"a"}"#,
            Some("b"),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(answer["message"].as_str().unwrap().contains("differ"));
        assert_eq!(
            engine
                .sku_document(engine.sku("tee").unwrap())
                .unwrap()
                .available,
            9
        );
    }

    /// A JSON value of any type, often the wrong one for its key.
    fn any_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z0-9é\"\\\\\u{1}\t:-]{0,6}".prop_map(|t| serde_json::to_string(&t).unwrap()),
            Just(r#""a\u0062""#.to_string()),
            Just("18446744073709551616".to_string()),
            Just("-1".to_string()),
            Just("1.0".to_string()),
            Just("1e3".to_string()),
            Just("007".to_string()),
            Just("0".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
        ]
    }

    fn string_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            8 => "[a-z0-9é:-]{0,6}".prop_map(|t| format!("\"{t}\"")),
            2 => any_json(),
        ]
    }

    fn integer_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            8 => any::<u64>().prop_map(|n| (n >> (n % 64)).to_string()),
            2 => any_json(),
        ]
    }

    fn bool_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![8 => any::<bool>().prop_map(|b| b.to_string()), 2 => any_json()]
    }

    /// `{"k": v, …}` from fields kept with probability `keep`, shuffled,
    /// with whitespace between tokens.
    fn object_json(
        fields: Vec<(&'static str, proptest::strategy::BoxedStrategy<String>, f64)>,
    ) -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let parts: Vec<_> = fields
            .into_iter()
            .map(|(key, value, keep)| {
                (proptest::bool::weighted(keep), value, "[ \n]{0,1}").prop_map(
                    move |(kept, v, ws)| kept.then(|| format!("{ws}\"{key}\"{ws}:{ws}{v}{ws}")),
                )
            })
            .collect();
        parts
            .prop_map(|parts| parts.into_iter().flatten().collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(|parts| format!("{{{}}}", parts.join(",")))
    }

    fn line_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        object_json(vec![
            ("sku", string_json().boxed(), 0.95),
            ("quantity", integer_json().boxed(), 0.95),
            ("sku", string_json().boxed(), 0.05),
            ("colour", any_json().boxed(), 0.05),
        ])
    }

    fn body_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let lines = prop_oneof![
            9 => proptest::collection::vec(line_json(), 0..4).prop_map(|l| format!("[{}]", l.join(" , "))),
            1 => any_json(),
        ];
        let object = object_json(vec![
            ("lines", lines.clone().boxed(), 0.95),
            ("lines", lines.boxed(), 0.05),
            ("customer", string_json().boxed(), 0.5),
            ("ttl_ms", integer_json().boxed(), 0.5),
            ("confirm", bool_json().boxed(), 0.5),
            ("idempotency_key", string_json().boxed(), 0.5),
            ("confirm", bool_json().boxed(), 0.05),
            ("customer", string_json().boxed(), 0.05),
            ("ttl_ms", integer_json().boxed(), 0.05),
            ("idempotency_key", string_json().boxed(), 0.05),
            ("colour", any_json().boxed(), 0.05),
        ]);
        (
            object,
            "[ \t\r\n]{0,2}",
            prop_oneof![8 => Just(""), 1 => Just(","), 1 => Just("x")],
        )
            .prop_map(|(object, ws, tail)| format!("{ws}{object}{ws}{tail}"))
    }

    /// The compact one-line shape `scan_order` reads by literals, with the
    /// values and the tail varied around it.
    fn compact_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let confirm = prop_oneof![
            2 => Just(String::new()),
            8 => bool_json().prop_map(|b| format!(r#","confirm":{b}"#)),
        ];
        let tail = prop_oneof![
            8 => Just("}"), 1 => Just("} "), 1 => Just("}}"), 1 => Just(""),
            1 => Just(r#","confirm":true}"#), 1 => Just(r#","ttl_ms":5}"#),
        ];
        (string_json(), integer_json(), confirm, tail).prop_map(|(sku, quantity, confirm, tail)| {
            format!(r#"{{"lines":[{{"sku":{sku},"quantity":{quantity}}}]{confirm}{tail}"#)
        })
    }

    /// What the scanner accepts, serde's typed parse accepts too, with the
    /// same values.
    fn scanner_agrees_with_serde(body: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        if let Some(scanned) = scan_order(body.as_bytes()) {
            let typed = serde_json::from_slice::<ReserveBody<'_>>(body.as_bytes());
            let typed = typed.unwrap_or_else(|e| panic!("serde refuses {body}: {e}"));
            let lines: Vec<(&str, u64)> =
                typed.lines.iter().map(|l| (&*l.sku, l.quantity)).collect();
            let scanned_lines: Vec<(&str, u64)> = scanned
                .lines()
                .iter()
                .map(|l| (l.sku, l.quantity))
                .collect();
            proptest::prop_assert_eq!(lines, scanned_lines);
            proptest::prop_assert_eq!(typed.customer.as_deref(), scanned.customer);
            proptest::prop_assert_eq!(typed.ttl_ms, scanned.ttl_ms);
            proptest::prop_assert_eq!(typed.confirm, scanned.confirm);
            proptest::prop_assert_eq!(typed.idempotency_key.as_deref(), scanned.idempotency_key);
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The scanner may decline any body, but never disagrees with serde.
        #[test]
        fn scanner_never_disagrees_with_serde(body in body_json()) {
            scanner_agrees_with_serde(&body)?;
        }

        /// The same for bodies at and around the compact shape.
        #[test]
        fn compact_scan_never_disagrees_with_serde(body in compact_json()) {
            scanner_agrees_with_serde(&body)?;
        }
    }

    #[test]
    fn the_usual_purchase_takes_the_scanner() {
        // Guards the generator above: the shapes that matter are accepted.
        for body in [
            r#"{"lines":[{"sku":"hot","quantity":1}],"confirm":true}"#,
            r#" { "confirm" : false , "lines" : [ {"quantity":3,"sku":"a"} ] , "customer":"é" } "#,
        ] {
            assert!(scan_order(body.as_bytes()).is_some(), "{body}");
        }
    }

    #[test]
    fn paths_split_without_allocating_up_to_the_deepest_route() {
        let (segments, count) = split_path("/v1/reservations/00ff/confirm").unwrap();
        assert_eq!(
            &segments[..count],
            ["v1", "reservations", "00ff", "confirm"]
        );
        assert!(split_path("/a/b/c/d/e/f").is_none());
        // The same cuts as `str::split`, edge cases included.
        for path in [
            "",
            "/",
            "//",
            "/healthz",
            "/v1/skus/",
            "//v1//skus",
            "/é/ü/x",
            "/a/b/c/d/e",
            "/a/b/c/d/e/",
        ] {
            let reference: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let split = split_path(path);
            let expected = (reference.len() <= MAX_SEGMENTS).then_some(reference.as_slice());
            assert_eq!(split.as_ref().map(|(s, n)| &s[..*n]), expected, "{path:?}");
        }
        let label = |method: &Method, path: &str| {
            let split = split_path(path);
            classify(method, split.as_ref().map(|(s, n)| &s[..*n]))
        };
        assert_eq!(label(&Method::POST, "/v1/reservations"), 6);
        assert_eq!(label(&Method::GET, "/a/b/c/d/e/f"), ROUTES.len() - 1);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-and-more"));
    }
}

//! The HTTP API buyers and operators call (hyper 1.x, HTTP/1.1, JSON).
//!
//! Routes and error codes follow the contract in `docs/api.md`. Every
//! error is `{"error": code, "message": sentence, …}`. Bad input never
//! panics and never changes state. In `sync` durability a 2xx to a
//! state-changing request is sent only once its journal record is on disk.
//!
//! A request goes: admission (in-flight cap) → `route::resolve` (one
//! `Route`, for dispatch and for the metrics label) → the resource's
//! handler (`skus.rs`, `reservations.rs`) → counted by route, outcome and
//! status.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::admission::{self, InFlight, Rates};
use super::auth::{authorize, Auth, AuthConfig, Caller, Role, Scope, TokenCache};
use super::body::read_body;
use super::cluster::Cluster;
use super::error::{json_response, ApiError, Code, HttpResponse};
use super::forward::{Owner, Router};
use super::metrics::{self, RequestCounters};
use super::nats::PublisherStats;
use super::route::{self, Matched, Miss, Route};
use crate::core::error::EngineError;
use crate::core::public_id::PublicIds;
use crate::core::types::{ReservationId, SkuId};
use crate::core::waiting_room::WaitingRooms;
use crate::durable::journal::{Durability, JournalError};
use crate::durable::{CheckpointStats, FeedReader, JournaledEngine};

/// Largest page of `GET /v1/skus`.
pub const MAX_PAGE: usize = 1000;
pub use super::body::MAX_BODY_BYTES;

/// How the server protects itself; `Default` is permissive but bounded.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// The roles: operator token, service tokens, buyer token keys.
    pub auth: AuthConfig,
    /// Requests handled at once; beyond it, `overloaded` (503).
    pub max_in_flight: usize,
    /// Reservation requests per second, all SKUs together; beyond it,
    /// `overloaded` (429). Bursts of a tenth of a second's worth.
    pub rate_limit: Option<u32>,
    /// Reservation lines per second for any one SKU.
    pub sku_rate_limit: Option<u32>,
    /// Reservation requests per second for any one customer.
    pub customer_rate_limit: Option<u32>,
    /// The change feed (`/v1/events`); without one those routes are 404.
    pub feed: Option<FeedReader>,
    /// The JetStream publisher's gauges, for `/metrics`.
    pub publisher: Option<Arc<PublisherStats>>,
    /// How checkpoints have gone, for `/metrics`.
    pub checkpoints: Option<Arc<CheckpointStats>>,
    /// This node's cluster (`--escrow`); `None` for a node that runs alone.
    pub cluster: Option<Arc<dyn Cluster>>,
}

impl Default for ApiOptions {
    fn default() -> ApiOptions {
        ApiOptions {
            auth: AuthConfig::default(),
            max_in_flight: 4096,
            rate_limit: None,
            sku_rate_limit: None,
            customer_rate_limit: None,
            feed: None,
            publisher: None,
            checkpoints: None,
            cluster: None,
        }
    }
}

/// What the handlers share.
pub struct Api {
    pub(super) engine: Arc<JournaledEngine>,
    /// Reservation ids as the world sees them.
    pub(super) public_ids: PublicIds,
    durability: Durability,
    auth: Auth,
    in_flight: InFlight,
    pub(super) rates: Rates,
    pub(super) feed: Option<FeedReader>,
    /// Event streams open now (`events.rs`, at most `MAX_FEED_STREAMS`).
    pub(super) feed_streams: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<RequestCounters>,
    registry: prometheus_client::registry::Registry,
    pub(super) cluster: Option<Arc<dyn Cluster>>,
    /// This node's id in a cluster: every feed event and reservation id
    /// names it.
    pub(super) node: Option<Arc<str>>,
    /// A cluster's routing: which node owns a request (`forward.rs`).
    pub(super) router: Option<Router>,
    /// The waiting rooms (`queue.rs`), in memory only.
    pub(super) rooms: Arc<WaitingRooms>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(
        engine: Arc<JournaledEngine>,
        public_ids: PublicIds,
        durability: Durability,
        options: ApiOptions,
    ) -> Api {
        let in_flight = InFlight::new(options.max_in_flight);
        let requests = Arc::new(RequestCounters::new());
        let rooms = Arc::new(WaitingRooms::new(room_seed()));
        let mut registry = metrics::registry(
            Arc::clone(&requests),
            metrics::InFlightGauge(in_flight.counts()),
            Arc::clone(engine.journal()),
            metrics::DurableSources {
                feed: options
                    .feed
                    .as_ref()
                    .map(|reader| Arc::clone(reader.feed())),
                publisher: options.publisher.clone(),
                checkpoints: options.checkpoints.clone(),
            },
        );
        registry.register_collector(Box::new(metrics::RoomSources {
            rooms: Arc::clone(&rooms),
            engine: Arc::clone(&engine),
        }));
        registry.register_collector(Box::new(metrics::HoldSources {
            engine: Arc::clone(&engine),
        }));
        Api {
            rooms,
            rates: Rates::new(
                options.rate_limit,
                options.sku_rate_limit,
                options.customer_rate_limit,
            ),
            engine,
            public_ids,
            durability,
            feed: options.feed,
            node: options.cluster.as_ref().map(|c| Arc::from(c.node())),
            router: (options.cluster.as_ref()).map(|c| Router::new(c.node(), c.peers())),
            cluster: options.cluster,
            feed_streams: Arc::default(),
            auth: Auth::new(&options.auth),
            in_flight,
            requests,
            registry,
        }
    }

    /// Answers one request. Never fails: every problem becomes a JSON error.
    /// Outside a connection (tests, embedders): no buyer token is
    /// remembered between requests.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<HttpResponse, Infallible> {
        self.handle_on(request, Arc::default()).await
    }

    /// `handle` for a request on a connection whose last verified buyer
    /// token is in `tokens`.
    pub async fn handle_on(
        self: Arc<Self>,
        request: Request<Incoming>,
        tokens: Arc<TokenCache>,
    ) -> Result<HttpResponse, Infallible> {
        // The head stays borrowed while the body is read.
        let (parts, body) = request.into_parts();
        let (label, matched) = route::resolve(&parts.method, parts.uri.path());
        // Peak shaving: past the in-flight cap, refuse at once rather than
        // queue without bound.
        let hint = crate::core::hint::stripe_hint();
        let Some(_admitted) = self.in_flight.admit(hint) else {
            let refusal = admission::too_many_in_flight();
            self.requests.count(
                hint,
                label,
                Some(refusal.code),
                refusal.status,
                Role::Anonymous,
            );
            return Ok(refusal.into_response());
        };
        // Identified and authorized here, not in an async helper of its
        // own: each nested future is one more state to move and drop per
        // request (callgrind, `benches/http/callgrind.sh async 5`: about 90
        // worker instructions per request, two runs against one).
        let (caller, answered) = match matched {
            Ok(matched) => match self.identify(&parts, matched.route, &tokens) {
                Ok(caller) => {
                    let answered = match authorize(&self.auth, matched.route, &caller) {
                        // The sale's route, straight to its handler (on a
                        // node that routes nothing): not through
                        // `dispatch`'s future, a state as large as its
                        // largest arm's.
                        Ok(scope)
                            if matched.route == Route::ReservationCreate
                                && self.router.is_none() =>
                        {
                            self.create_reservation(&parts, body, scope).await
                        }
                        Ok(scope) => self.dispatch(&parts, body, matched, scope).await,
                        Err(refusal) => Err(refusal),
                    };
                    (caller, answered)
                }
                Err(refusal) => (Caller::Anonymous, Err(refusal)),
            },
            Err(miss) => (Caller::Anonymous, Err(not_routed(&parts, miss))),
        };
        let (status, code) = match &answered {
            Ok(response) => (response.status(), None),
            Err(error) => (error.status, Some(error.code)),
        };
        let role = match (&caller, code) {
            (Caller::Anonymous, Some(Code::Unauthorized))
                if parts.headers.contains_key(AUTHORIZATION) =>
            {
                Role::Rejected
            }
            _ => caller.role(),
        };
        self.requests.count(hint, label, code, status, role);
        audit(&caller, label, status, code);
        Ok(answered.unwrap_or_else(ApiError::into_response))
    }

    /// Who is calling, where the route looks at the caller at all.
    fn identify(
        &self,
        parts: &hyper::http::request::Parts,
        route: Route,
        tokens: &TokenCache,
    ) -> Result<Caller<'_>, ApiError> {
        match self.auth.identifies(route) {
            true => self.auth.identify(&parts.headers, tokens),
            false => Ok(Caller::Anonymous),
        }
    }

    async fn dispatch(
        &self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
        matched: Matched<'_>,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let param = route::decode_segment(matched.param).ok_or_else(|| {
            ApiError::invalid("the path has a malformed percent-escape or is not UTF-8")
        })?;
        let param = &*param;
        if let Some(router) = &self.router {
            if let Some(peer) = elsewhere(router, matched.route, param, &parts.headers)? {
                let body = read_body(body).await?;
                return Box::pin(self.forward(router, peer, parts, body)).await;
            }
        }
        match matched.route {
            Route::Healthz => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
            Route::Metrics => Ok(self.metrics().await),
            Route::SkusList => self.list_skus(parts.uri.query()),
            Route::SkuGet => self.get_sku(param),
            Route::SkuPut => self.put_sku(param, body).await,
            Route::SkuAdjust => self.adjust(param, &parts.headers, body).await,
            Route::KitPut => self.put_kit(param, body).await,
            Route::LocationPut => {
                let location = route::decode_segment(matched.location).ok_or_else(|| {
                    ApiError::invalid("the path has a malformed percent-escape or is not UTF-8")
                })?;
                self.put_location(param, &location, body).await
            }
            Route::ReservationCreate => self.create_reservation(parts, body, scope).await,
            // Boxed, like the feed's: a batch's future is not the purchase
            // path's to carry.
            Route::ReservationBatch => Box::pin(self.create_batch(parts, body, scope)).await,
            Route::ReservationGet => self.get_reservation(param, scope),
            Route::ReservationConfirm | Route::ReservationCancel | Route::ReservationRefund => {
                self.transition(matched.route, param, &parts.headers, body, scope)
                    .await
            }
            Route::ReservationExtend => self.extend(param, body).await,
            // Boxed: their futures (blocking reads, waits) are larger than
            // the purchase path's, and an unboxed one would grow the state
            // every request's future carries.
            Route::EventsList => Box::pin(self.list_events(parts.uri.query())).await,
            Route::EventsStream => {
                Box::pin(self.stream_events(&parts.headers, parts.uri.query())).await
            }
            Route::Cluster => Ok(json_response(
                StatusCode::OK,
                &self
                    .cluster
                    .as_ref()
                    .map_or_else(super::cluster::alone, |c| c.view()),
            )),
            Route::Ui => super::ui::asset(param),
            Route::QueueJoin => self.join_queue(param, body, scope).await,
            Route::QueuePoll => self.poll_queue(param, matched.location, scope),
            Route::Other => Err(not_routed(parts, Miss::NotFound)),
        }
    }

    async fn metrics(&self) -> HttpResponse {
        // The feed makes its events when asked (`Feed::made`), and the
        // scrape asks for the newest position: after seconds of a busy sale
        // that is seconds of work, done here off the runtime's workers so
        // the connections that share one are not kept waiting.
        if let Some(reader) = &self.feed {
            let reader = reader.clone();
            let made = tokio::task::spawn_blocking(move || reader.feed().last_position());
            if let Err(error) = made.await {
                // Rendering makes them instead; the panic is a bug to log.
                tracing::error!("making feed events for /metrics failed: {error}");
            }
        }
        let rendered = Full::new(metrics::render(&self.registry).into());
        let mut response = Response::new(rendered.into());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        response
    }

    /// Whether answers wait for the disk (`sync` durability). When they do
    /// not, `acknowledge` has nothing to do, and the purchase path skips
    /// its future.
    pub(super) fn waits_for_disk(&self) -> bool {
        self.durability == Durability::Sync
    }

    /// In `sync` durability, waits until every change made so far is on
    /// disk; a storage failure becomes `storage_failed`.
    pub(super) async fn acknowledge(&self) -> Result<(), ApiError> {
        if !self.waits_for_disk() {
            return Ok(());
        }
        let ticket = self.engine.durability_ticket();
        self.engine.durable(ticket).await.map_err(storage_failed)
    }

    /// A SKU's name for an answer, read without the SKU's lock (a sold-out
    /// storm must not queue on the lock the engine exists to avoid).
    pub(super) fn sku_name(&self, id: SkuId) -> Option<&str> {
        self.engine.sku_name(id)
    }

    /// An engine refusal as the contract answers it.
    pub(super) fn engine_error(&self, error: EngineError) -> ApiError {
        let window = match &error {
            EngineError::NotOnSale { sku, .. } => Some(self.engine.sale_window(*sku)),
            _ => None,
        };
        let refusal = ApiError::from_engine(error, |id| self.sku_name(id), |id| self.id_text(id));
        match window {
            // As it is now (a change racing the refusal shows the newer).
            Some(window) => refusal
                .with("sale_starts_at_ms", window.starts_at_ms)
                .with("sale_ends_at_ms", window.ends_at_ms),
            None => refusal,
        }
    }

    /// A reservation id as clients know it: in a cluster `{node}~{hex}`.
    pub(super) fn id_text(&self, id: ReservationId) -> String {
        self.with_id_text(id, str::to_owned)
    }

    /// `f` of `id_text`, borrowed: a node that runs alone makes no
    /// `String` for it (every answer names its reservation).
    pub(super) fn with_id_text<R>(&self, id: ReservationId, f: impl FnOnce(&str) -> R) -> R {
        self.public_ids.with_text(id, |hex| match &self.node {
            Some(node) => f(&format!("{node}~{hex}")),
            None => f(hex),
        })
    }

    /// Sends a request another node owns there (`forward.rs`). A request
    /// a peer forwarded here is never sent on: `misrouted`.
    pub(super) async fn forward(
        &self,
        router: &Router,
        peer: usize,
        parts: &hyper::http::request::Parts,
        body: bytes::Bytes,
    ) -> Result<HttpResponse, ApiError> {
        if router.forwarded(&parts.headers)? {
            return Err(router.not_mine(peer));
        }
        let path = (parts.uri.path_and_query()).map_or(parts.uri.path(), |p| p.as_str());
        router
            .forward(peer, &parts.method, path, &parts.headers, body)
            .await
    }
}

/// A random seed for the waiting rooms' shuffles and epochs. Without the
/// OS's randomness (it does not fail on the platforms served), the time:
/// the epochs must differ from the last process's, which the time does.
fn room_seed() -> u64 {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        return now.map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(seed)
}

/// The peer owning a request about a reservation (its id names the node),
/// or `None` where this node answers it. A request a peer forwarded is
/// checked against this node's members either way.
fn elsewhere(
    router: &Router,
    route: Route,
    param: &str,
    headers: &hyper::HeaderMap,
) -> Result<Option<usize>, ApiError> {
    let names_reservation = matches!(
        route,
        Route::ReservationGet
            | Route::ReservationConfirm
            | Route::ReservationCancel
            | Route::ReservationRefund
            | Route::ReservationExtend
    );
    if !names_reservation {
        return Ok(None);
    }
    match router.owner_of_id(param)?.0 {
        Owner::Peer(peer) => Ok(Some(peer)),
        Owner::Here => {
            router.forwarded(headers)?;
            Ok(None)
        }
    }
}

/// The answer when a change could not be made durable.
pub(super) fn storage_failed(error: JournalError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Code::StorageFailed,
        format!("the change could not be made durable: {error}"),
    )
}

/// The audit log: what an operator or a service did, by the name of its
/// token (never the token). Changes are logged at `info`, except the
/// purchase path's reservations (at sale rates a line per request would
/// cost more than the request): those are at `debug`, and counted by role
/// in `/metrics` either way.
fn audit(caller: &Caller, route: Route, status: StatusCode, code: Option<Code>) {
    let role = caller.role();
    if !matches!(role, Role::Operator | Role::Service) || !changes_state(route) {
        return;
    }
    let outcome = code.map_or("ok", Code::as_str);
    if route == Route::ReservationCreate {
        tracing::debug!(target: "hotstock::audit", role = role.as_str(), token = caller.name(), route = route.label(), status = status.as_u16(), outcome);
    } else {
        tracing::info!(target: "hotstock::audit", role = role.as_str(), token = caller.name(), route = route.label(), status = status.as_u16(), outcome);
    }
}

fn changes_state(route: Route) -> bool {
    matches!(
        route,
        Route::SkuPut
            | Route::SkuAdjust
            | Route::KitPut
            | Route::LocationPut
            | Route::ReservationCreate
            | Route::ReservationBatch
            | Route::ReservationConfirm
            | Route::ReservationCancel
            | Route::ReservationRefund
            | Route::ReservationExtend
    )
}

fn not_routed(parts: &hyper::http::request::Parts, miss: Miss) -> ApiError {
    let path = parts.uri.path();
    match miss {
        Miss::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("no route for {path}"),
        ),
        Miss::MethodNotAllowed { allow } => {
            let mut error = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::MethodNotAllowed,
                format!(
                    "{} is not allowed on {path} (allowed: {allow})",
                    parts.method
                ),
            );
            error.allow = Some(allow);
            error
        }
    }
}

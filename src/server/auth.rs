//! Who may do what: the caller's role, from the bearer token, and what
//! each role may do on each route.
//!
//! Three roles (`docs/api.md`, "Roles"):
//! - **operator**, the `--admin-token`: SKU changes, every read, refunds;
//! - **service**, a `--service-token NAME=TOKEN` (several): the shop's
//!   checkout and payment services: reserve for any customer, confirm,
//!   cancel, refund, read any reservation;
//! - **buyer**, an HS256 JWT signed by the shop's login service with one of
//!   the `--buyer-key KID=SECRET` keys (header `kid`): reserve for itself
//!   (the customer is the token's `sub`), read and cancel its own
//!   reservations.
//!
//! With no service token and no buyer key the server is *open*, as before
//! roles existed: buyer routes take no token (a laptop, or one trusted
//! service on loopback), and the admin token, when set, guards the
//! operator routes. Configuring either turns on the rules for every route.
//! `hotstock serve` refuses a non-loopback address without them.
//!
//! Secrets are compared without an early exit (`constant_time_eq`; a
//! length mismatch is the only thing timing can tell), JWT signatures by
//! `jsonwebtoken` (HMAC verification through the `hmac` crate's
//! constant-time check), and no secret is ever written to a message or log.

use std::sync::Arc;

use hyper::{HeaderMap, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::error::{ApiError, Code};
use super::route::Route;
use crate::core::limits::MAX_CUSTOMER_CHARS;

/// Seconds of clock difference allowed between the login service and this
/// server when checking `exp` and `nbf`.
pub const TOKEN_LEEWAY_S: u64 = 30;
/// Longest `kid` a token may name (it is echoed in messages).
const MAX_KID_CHARS: usize = 64;
/// Longest bearer token looked at; longer is refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The roles configured for this server.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    pub admin_token: Option<String>,
    /// `(name, token)`: the name is what logs and metrics show.
    pub service_tokens: Vec<(String, String)>,
    /// `(kid, secret)`: buyer token keys, several at once so keys rotate.
    pub buyer_keys: Vec<(String, Vec<u8>)>,
}

/// Shortest secret accepted for a buyer key or a token: 32 bytes, the
/// HS256 output size (RFC 7518 3.2 asks keys at least that long).
pub const MIN_SECRET_BYTES: usize = 32;

impl AuthConfig {
    /// Refuses secrets too short to be safe, names used twice, and keys the
    /// JWT crate does not take; the message names the flag and the name,
    /// never the secret.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (name, token) in &self.service_tokens {
            if token.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "--service-token {name}=…: the token must be at least {MIN_SECRET_BYTES} bytes"
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(format!("--service-token {name}=… is given twice"));
            }
            if self.admin_token.as_deref() == Some(token.as_str()) {
                return Err(format!(
                    "--service-token {name}=… is the admin token: give each role its own"
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (kid, secret) in &self.buyer_keys {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "--buyer-key {kid}=…: the secret must be at least {MIN_SECRET_BYTES} bytes"
                ));
            }
            if !seen.insert(kid.as_str()) {
                return Err(format!("--buyer-key {kid}=… is given twice"));
            }
            DecodingKey::from_secret(secret)
                .map_err(|e| format!("--buyer-key {kid}=…: not a usable HS256 key: {e}"))?;
        }
        Ok(())
    }

    /// Whether roles apply to buyer routes (a service token or buyer key
    /// is configured).
    pub fn is_secured(&self) -> bool {
        !self.service_tokens.is_empty() || !self.buyer_keys.is_empty()
    }
}

/// Who is calling, once the token is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller<'a> {
    /// No token (or, on an open server, a token nobody asked for).
    Anonymous,
    Operator,
    /// A service, by the name its token was configured with (borrowed from
    /// `Auth`: cloning one shared `Arc` per request would put a refcount
    /// line that every core writes on the service's purchase path).
    Service(&'a str),
    /// A buyer: the token's subject, which is the customer.
    Buyer(Arc<str>),
}

impl Caller<'_> {
    /// The metrics and log label.
    pub fn role(&self) -> Role {
        match self {
            Caller::Anonymous => Role::Anonymous,
            Caller::Operator => Role::Operator,
            Caller::Service(_) => Role::Service,
            Caller::Buyer(_) => Role::Buyer,
        }
    }

    /// The token's name for the audit log (never the token).
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "-",
            Caller::Operator => "operator",
            Caller::Service(name) => name,
            Caller::Buyer(customer) => customer,
        }
    }
}

/// A caller's role, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Anonymous,
    Buyer,
    Service,
    Operator,
    /// A token that failed its check (forged, expired, unknown).
    Rejected,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Anonymous,
        Role::Buyer,
        Role::Service,
        Role::Operator,
        Role::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anonymous => "none",
            Role::Buyer => "buyer",
            Role::Service => "service",
            Role::Operator => "operator",
            Role::Rejected => "rejected",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which reservations a permitted caller may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Any customer's (operator, service, or an open server).
    Any,
    /// This customer's only (a buyer): others' answer as unknown.
    Customer(&'a str),
}

/// The configured roles, ready to check requests.
pub struct Auth {
    admin_token: Option<Box<str>>,
    services: Vec<(Box<str>, Box<str>)>,
    buyer_keys: Vec<(Box<str>, DecodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only, never secrets.
        f.debug_struct("Auth")
            .field("operator", &self.admin_token.is_some())
            .field(
                "services",
                &self.services.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "buyer_keys",
                &self.buyer_keys.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        // The crate checks the signature and that `exp` and `sub` are
        // there; `exp` and `nbf` are compared here, against the same clock
        // the connection's token cache uses (`check_times`).
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Auth {
            admin_token: config.admin_token.as_deref().map(Box::from),
            services: config
                .service_tokens
                .iter()
                .map(|(name, token)| (Box::from(name.as_str()), Box::from(token.as_str())))
                .collect(),
            // `validate` has refused every key this would drop.
            buyer_keys: config
                .buyer_keys
                .iter()
                .filter_map(|(kid, secret)| {
                    let key = DecodingKey::from_secret(secret).ok()?;
                    Some((Box::from(kid.as_str()), key))
                })
                .collect(),
            validation,
        }
    }

    /// Whether roles apply to buyer routes (`AuthConfig::is_secured`).
    pub fn is_secured(&self) -> bool {
        !self.services.is_empty() || !self.buyer_keys.is_empty()
    }

    /// Whether `route` looks at the caller at all: every route of a server
    /// with roles, only the operator routes of an open one (whose buyer
    /// routes ignore tokens, so the purchase path skips the header).
    pub fn identifies(&self, route: Route) -> bool {
        self.is_secured()
            || matches!(
                route,
                Route::SkuPut
                    | Route::SkuAdjust
                    | Route::KitPut
                    | Route::LocationPut
                    | Route::EventsList
                    | Route::EventsStream
                    | Route::Cluster
            )
    }

    /// Who presented the request's bearer token. On an open server only
    /// the admin token means anything; other tokens are ignored there.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        cache: &TokenCache,
    ) -> Result<Caller<'_>, ApiError> {
        self.identify_at(headers, cache, unix_now_s())
    }

    /// `identify` with the time (Unix seconds) buyer tokens are checked at.
    fn identify_at(
        &self,
        headers: &HeaderMap,
        cache: &TokenCache,
        now_s: u64,
    ) -> Result<Caller<'_>, ApiError> {
        let Some(value) = headers.get(hyper::header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES);
        let Some(token) = token else {
            // On an open server a header nobody asked for changes nothing;
            // an operator route then answers that it needs the token.
            return match self.is_secured() {
                true => Err(unauthorized(
                    "the Authorization header must be `Bearer <token>` (at most 4096 bytes)",
                )),
                false => Ok(Caller::Anonymous),
            };
        };
        if let Some(caller) = self.shared_secret(token) {
            return Ok(caller);
        }
        if !self.is_secured() {
            return Ok(Caller::Anonymous);
        }
        if token.bytes().filter(|&b| b == b'.').count() == 2 && !self.buyer_keys.is_empty() {
            return self.buyer_cached(token, cache, now_s).map(Caller::Buyer);
        }
        Err(unauthorized(
            "the bearer token is not one this server knows (not the operator token, a service token, or a buyer token)",
        ))
    }

    /// The operator or service whose token this is. Every configured token
    /// is compared, so timing does not tell which one nearly matched.
    fn shared_secret(&self, token: &str) -> Option<Caller<'_>> {
        let mut found = None;
        if let Some(admin) = &self.admin_token {
            if constant_time_eq(token.as_bytes(), admin.as_bytes()) {
                found = Some(Caller::Operator);
            }
        }
        for (name, secret) in &self.services {
            if constant_time_eq(token.as_bytes(), secret.as_bytes()) && found.is_none() {
                found = Some(Caller::Service(name));
            }
        }
        found
    }

    /// `buyer`, remembering the last token verified on this connection: a
    /// buyer's keep-alive connection sends the same token with every
    /// request, and checking it again (two base64 decodes, two JSON parses,
    /// an HMAC) costs more than the purchase. A cached token is used only
    /// while its `exp` (with the leeway) is ahead; `nbf` had passed when it
    /// was verified, and time only moves on.
    fn buyer_cached(
        &self,
        token: &str,
        cache: &TokenCache,
        now_s: u64,
    ) -> Result<Arc<str>, ApiError> {
        let mut cached = cache.last.lock();
        if let Some(last) = &*cached {
            // Constant time: the cached token is a valid one, and an early
            // exit would time how much of a forgery matches it.
            if constant_time_eq(token.as_bytes(), last.token.as_bytes())
                && check_times(last.exp_s, None, now_s).is_ok()
            {
                return Ok(Arc::clone(&last.customer));
            }
        }
        let (customer, exp_s) = self.buyer(token, now_s)?;
        *cached = Some(Verified {
            token: token.into(),
            customer: Arc::clone(&customer),
            exp_s,
        });
        Ok(customer)
    }

    /// The customer a buyer token names and its `exp`, once its key,
    /// signature and times check out; otherwise a 401 that says which check
    /// failed.
    fn buyer(&self, token: &str, now_s: u64) -> Result<(Arc<str>, u64), ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("the buyer token is not a well-formed JWT"))?;
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("the buyer token's header names no key (`kid`)"))?;
        let key = self
            .buyer_keys
            .iter()
            .find(|(known, _)| **known == *kid)
            .map(|(_, key)| key)
            .ok_or_else(|| {
                let shown: String = kid.chars().take(MAX_KID_CHARS).collect();
                unauthorized(format!(
                    "the buyer token names key {shown:?}, which this server does not have"
                ))
            })?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| unauthorized(token_refusal(e.kind())))?;
        let subject = data
            .claims
            .sub
            .ok_or_else(|| unauthorized("the buyer token has no `sub` claim (the customer)"))?;
        if subject.is_empty() || subject.chars().count() > MAX_CUSTOMER_CHARS {
            return Err(unauthorized(format!(
                "the buyer token's subject must be 1 to {MAX_CUSTOMER_CHARS} characters (it is the customer)"
            )));
        }
        let exp = data
            .claims
            .exp
            .ok_or_else(|| unauthorized("the buyer token has no `exp` claim"))?;
        check_times(exp, data.claims.nbf, now_s)?;
        Ok((subject.into(), exp))
    }
}

/// A buyer token's validity at `now_s`, with `TOKEN_LEEWAY_S` either way
/// for clock differences between the login service and this server.
fn check_times(exp_s: u64, nbf_s: Option<u64>, now_s: u64) -> Result<(), ApiError> {
    if now_s >= exp_s.saturating_add(TOKEN_LEEWAY_S) {
        return Err(unauthorized("the buyer token has expired (`exp` is past)"));
    }
    if nbf_s.is_some_and(|nbf| nbf > now_s.saturating_add(TOKEN_LEEWAY_S)) {
        return Err(unauthorized(
            "the buyer token is not valid yet (`nbf` is in the future)",
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
    /// Required (the crate checks it is there); compared by `check_times`.
    /// An `Option` so that a token without it is refused by the crate's
    /// "missing claim", not as malformed.
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// The buyer token last verified on one connection (`Auth::identify`).
#[derive(Debug, Default)]
pub struct TokenCache {
    last: parking_lot::Mutex<Option<Verified>>,
}

#[derive(Debug)]
struct Verified {
    token: Box<str>,
    customer: Arc<str>,
    exp_s: u64,
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a failed token check tells the client.
fn token_refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => {
            "the buyer token's signature does not match its key".into()
        }
        ErrorKind::InvalidAlgorithm => "buyer tokens must be signed with HS256".into(),
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("the buyer token has no `{claim}` claim")
        }
        _ => "the buyer token's claims are malformed (`sub` must be a string, `exp` and `nbf` numbers)"
            .into(),
    }
}

/// What `caller` may do on `route`: the scope of reservations it acts on,
/// or the refusal.
pub fn authorize<'a>(
    auth: &Auth,
    route: Route,
    caller: &'a Caller<'_>,
) -> Result<Scope<'a>, ApiError> {
    // The feed tells everything about every customer: with only an admin
    // token configured it is the operator's; with roles, services' too.
    let feed_route = matches!(route, Route::EventsList | Route::EventsStream);
    let operator_route = matches!(
        route,
        Route::SkuPut | Route::SkuAdjust | Route::KitPut | Route::LocationPut | Route::Cluster
    ) || (auth.is_secured() && route == Route::Metrics)
        || (!auth.is_secured() && feed_route);
    if operator_route {
        return match (auth.admin_token.is_some(), caller) {
            (false, _) | (true, Caller::Operator) => Ok(Scope::Any),
            (true, Caller::Anonymous) => Err(unauthorized(
                "operator routes need the header `Authorization: Bearer <admin token>`",
            )),
            (true, _) => Err(forbidden(format!(
                "only the operator may {}",
                action(route)
            ))),
        };
    }
    // The page's files hold no data: what it shows it reads with the token
    // the operator types into it.
    if !auth.is_secured() || matches!(route, Route::Healthz | Route::Ui | Route::Other) {
        return Ok(Scope::Any);
    }
    let allowed = match (route, caller) {
        (_, Caller::Anonymous) => {
            return Err(unauthorized(
                "this route needs the header `Authorization: Bearer <token>`: a buyer token, or a service or operator token",
            ))
        }
        (Route::SkusList | Route::SkuGet, _) => Some(Scope::Any),
        (Route::EventsList | Route::EventsStream, Caller::Operator | Caller::Service(_)) => {
            Some(Scope::Any)
        }
        (Route::EventsList | Route::EventsStream, Caller::Buyer(_)) => None,
        (Route::ReservationGet | Route::ReservationRefund, Caller::Operator) => Some(Scope::Any),
        // A batch is a gateway's: every order for any customer.
        (Route::ReservationBatch, Caller::Operator | Caller::Service(_)) => Some(Scope::Any),
        (Route::ReservationBatch, Caller::Buyer(_)) => None,
        (_, Caller::Operator) => None,
        (_, Caller::Service(_)) => Some(Scope::Any),
        (
            Route::ReservationConfirm | Route::ReservationRefund | Route::ReservationExtend,
            Caller::Buyer(_),
        ) => None,
        (_, Caller::Buyer(customer)) => Some(Scope::Customer(customer)),
    };
    allowed.ok_or_else(|| {
        forbidden(format!(
            "a {} may not {}",
            caller.role().as_str(),
            action(route)
        ))
    })
}

/// What a route does, for refusals.
fn action(route: Route) -> &'static str {
    match route {
        Route::SkuPut => "create or change a SKU",
        Route::SkuAdjust => "adjust a SKU's stock",
        Route::KitPut => "define a kit",
        Route::LocationPut => "set a SKU's stock at a location",
        Route::Metrics => "read the metrics",
        Route::Cluster => "read the cluster's state",
        Route::ReservationCreate => "create reservations (buyers and services do)",
        Route::ReservationBatch => "place a batch of orders (services and the operator do)",
        Route::ReservationConfirm => "confirm a reservation (payment is confirmed by a service)",
        Route::ReservationCancel => "cancel a reservation (buyers and services do)",
        Route::ReservationRefund => "refund a sale (services and the operator do)",
        Route::ReservationExtend => {
            "extend a hold (the payment service does, while a payment is processed)"
        }
        Route::EventsList | Route::EventsStream => {
            "read the change feed (services and the operator do)"
        }
        Route::QueueJoin | Route::QueuePoll => {
            "wait in a waiting room (buyers do, and services for them)"
        }
        _ => "use this route",
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, Code::Forbidden, message)
}

/// Compares without an early exit, so response time does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;

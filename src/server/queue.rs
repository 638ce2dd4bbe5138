//! Waiting room routes (#16): `POST /v1/queue/{sku}` (join),
//! `GET /v1/queue/{sku}/{token}` (poll), and the admission a reservation
//! of a SKU with a room must present (`Admission` header).
//!
//! The rules are `core::waiting_room`'s; this file reads what a room is
//! told at each step (the time, the SKU's settings and counts), turns
//! tokens into tickets and back, and answers. A token is a sealed block
//! (`PublicIds::seal`) naming the ticket, the SKU and the room's epoch:
//! one from another SKU, an earlier room or a process before a restart is
//! known as such and answered `unknown_queue_token`, never taken for
//! someone else's place.
//!
//! Rooms are kept in memory only (see `docs/api.md`, "Waiting rooms"):
//! after a restart every buyer is told to join again, and those who do
//! within `MAX_POLL_AFTER_MS` are shuffled together, so a restart gives the
//! fastest script no head start either.

use hyper::body::Incoming;
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::api::Api;
use super::auth::Scope;
use super::body::{read_json, Fields};
use super::error::{json_response, ApiError, Code, HttpResponse};
use crate::core::public_id::TokenKind;
use crate::core::types::SkuId;
use crate::core::waiting_room::{
    AdmissionRefusal, Claim, ClaimEnd, JoinRefusal, RoomConfig, Standing, Step, TicketNo,
};

/// The header a reservation presents its admission in.
pub const ADMISSION: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("admission");

/// A claimed admission, ended once the reservation's outcome is known.
/// Dropped without `end` (an error on the way): kept, good until its
/// deadline.
pub(super) struct AdmissionClaim<'a> {
    api: &'a Api,
    sku: SkuId,
    ticket: TicketNo,
    ended: bool,
}

impl AdmissionClaim<'_> {
    pub(super) fn end(mut self, end: ClaimEnd) {
        self.finish(end);
    }

    fn finish(&mut self, end: ClaimEnd) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let api = self.api;
        let (now_ms, config) = (api.engine.now_ms(), api.engine.waiting_room(self.sku));
        (api.rooms).with_room(self.sku, config, now_ms, |room| {
            room.finish(now_ms, self.ticket, end)
        });
    }
}

impl Drop for AdmissionClaim<'_> {
    fn drop(&mut self) {
        self.finish(ClaimEnd::Kept);
    }
}

impl Api {
    /// `POST /v1/queue/{sku}`: the caller joins the SKU's waiting room,
    /// or finds its place again.
    pub(super) async fn join_queue(
        &self,
        name: &str,
        body: Incoming,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let body = read_json(body).await?;
        self.join_with(name, body, scope)
    }

    /// `join_queue` of a body already read.
    pub(super) fn join_with(
        &self,
        name: &str,
        body: Map<String, Value>,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let mut fields = Fields::new(body, &["customer"])?;
        let named = fields.string("customer")?;
        let customer = match (scope, named.as_deref()) {
            (Scope::Customer(own), None) => own,
            (Scope::Customer(own), Some(named)) if named == own => own,
            (Scope::Customer(_), Some(_)) => {
                return Err(forbidden("a buyer joins a waiting room for itself only"))
            }
            (Scope::Any, Some(named)) => named,
            (Scope::Any, None) => {
                return Err(ApiError::invalid(
                    "field \"customer\" is required: a place in a waiting room is a buyer's",
                ))
            }
        };
        crate::core::engine::validate_customer(customer).map_err(|e| self.engine_error(e))?;
        let (sku, step) = self.room_step(name)?;
        let joined = (self.rooms).with_room(sku, Some(step.config), step.now_ms, |room| {
            let before = room.counts().joined;
            let ticket = room.join(&step, customer)?;
            let fresh = room.counts().joined > before;
            let standing = room.poll(&step, ticket);
            Ok((ticket, fresh, standing, room.epoch()))
        });
        let (ticket, fresh, standing, epoch) = match joined {
            Some(Ok(joined)) => joined,
            Some(Err(refusal)) => return Err(self.join_refused(sku, name, refusal)),
            None => return Err(no_room(name)),
        };
        let token = self
            .public_ids
            .seal(TokenKind::Place, [ticket, sku.index(), epoch]);
        let mut answer = self.standing_json(sku, ticket, epoch, standing)?;
        answer.insert("token".into(), token.into());
        let status = if fresh {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(status, &Value::Object(answer)))
    }

    /// `GET /v1/queue/{sku}/{token}`: where the token's buyer stands.
    pub(super) fn poll_queue(
        &self,
        name: &str,
        token: &str,
        scope: Scope<'_>,
    ) -> Result<HttpResponse, ApiError> {
        let (sku, step) = self.room_step(name)?;
        let polled = (self.rooms).with_room(sku, Some(step.config), step.now_ms, |room| {
            let ticket = self.ticket_of(TokenKind::Place, token, sku, room.epoch())?;
            if let Scope::Customer(own) = scope {
                // Another buyer's token answers as unknown.
                (room.customer(ticket) == Some(own)).then_some(())?;
            }
            Some((ticket, room.poll(&step, ticket)?, room.epoch()))
        });
        let Some((ticket, standing, epoch)) = polled.flatten() else {
            return Err(unknown_token(name));
        };
        let answer = self.standing_json(sku, ticket, epoch, Some(standing))?;
        Ok(json_response(StatusCode::OK, &Value::Object(answer)))
    }

    /// The ticket a token of `kind` names in `sku`'s room of `epoch`.
    fn ticket_of(&self, kind: TokenKind, token: &str, sku: SkuId, epoch: u32) -> Option<TicketNo> {
        let [ticket, token_sku, token_epoch] = self.public_ids.open(kind, token)?;
        (token_sku == sku.index() && token_epoch == epoch).then_some(ticket)
    }

    /// The SKU `name` names, if it has a waiting room, and what its room
    /// is told now.
    fn room_step(&self, name: &str) -> Result<(SkuId, Step), ApiError> {
        let sku = self.sku_id(name)?;
        let config = self.engine.waiting_room(sku).ok_or_else(|| no_room(name))?;
        Ok((sku, self.step(sku, config)?))
    }

    fn step(&self, sku: SkuId, config: RoomConfig) -> Result<Step, ApiError> {
        let (available, held) = (self.engine)
            .available_and_held(sku)
            .map_err(|e| self.engine_error(e))?;
        Ok(Step {
            now_ms: self.engine.now_ms(),
            config,
            window: self.engine.sale_window(sku),
            available,
            held,
        })
    }

    /// A poll's or a join's answer; a spent ticket is an error (410).
    fn standing_json(
        &self,
        sku: SkuId,
        ticket: TicketNo,
        epoch: u32,
        standing: Option<Standing>,
    ) -> Result<Map<String, Value>, ApiError> {
        let name = self.sku_name(sku).unwrap_or_default();
        let answer = match standing {
            Some(Standing::Waiting {
                place,
                estimated_wait_ms,
                poll_after_ms,
                shuffle_at_ms,
            }) => json!({
                "status": "waiting", "sku": name, "place": place,
                "estimated_wait_ms": estimated_wait_ms, "poll_after_ms": poll_after_ms,
                "shuffle_at_ms": shuffle_at_ms,
            }),
            Some(Standing::Admitted { expires_at_ms }) => json!({
                "status": "admitted", "sku": name, "place": 0, "poll_after_ms": 0,
                "admission": self.public_ids.seal(TokenKind::Admission, [ticket, sku.index(), epoch]),
                "admission_expires_at_ms": expires_at_ms,
            }),
            Some(Standing::SoldOut) => json!({
                "status": "sold_out", "sku": name, "place": null, "poll_after_ms": null,
            }),
            Some(Standing::Used) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    Code::AdmissionUsed,
                    "this place's admission was used by a reservation; join again for another",
                )
                .with("sku", name))
            }
            Some(Standing::Lapsed { expired_at_ms }) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    Code::AdmissionLapsed,
                    "this place's admission expired unused; join again (at the back of the line)",
                )
                .with("sku", name)
                .with("expired_at_ms", expired_at_ms))
            }
            Some(Standing::TooSoon { retry_after_ms }) => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    Code::Overloaded,
                    format!(
                        "more than {} polls came before the time the last answer named; poll again in {retry_after_ms} ms (your place is kept)",
                        crate::core::waiting_room::MAX_EARLY_POLLS
                    ),
                )
                .with("sku", name)
                .with("poll_after_ms", retry_after_ms))
            }
            None => return Err(unknown_token(name)),
        };
        match answer {
            Value::Object(map) => Ok(map),
            _ => Ok(Map::new()),
        }
    }

    fn join_refused(&self, sku: SkuId, name: &str, refusal: JoinRefusal) -> ApiError {
        match refusal {
            JoinRefusal::SoldOut => ApiError::new(
                StatusCode::CONFLICT,
                Code::SoldOut,
                format!("SKU {name:?} is sold out: nothing is left to queue for"),
            )
            .with("sku", name)
            .with("available", 0),
            JoinRefusal::Full => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::QueueFull,
                format!(
                    "the waiting room of SKU {name:?} holds {} buyers, its most",
                    crate::core::limits::MAX_QUEUE_PER_ROOM
                ),
            )
            .with("sku", self.sku_name(sku).unwrap_or(name)),
        }
    }

    /// The purchase path's check: an order of a SKU with a waiting room
    /// presents an admission for it, of its customer. `None` when no line
    /// needs one. Called only once some SKU has a room (one load before).
    pub(super) fn claim_admission(
        &self,
        roomed: SkuId,
        customer: Option<&str>,
        key: Option<&str>,
        admission: Option<&str>,
    ) -> Result<Option<AdmissionClaim<'_>>, ApiError> {
        let name = self.sku_name(roomed).unwrap_or_default();
        let Some(config) = self.engine.waiting_room(roomed) else {
            return Ok(None);
        };
        let refuse = |message: String| not_admitted(name, message);
        let admission = admission
            .ok_or_else(|| refuse(format!("SKU {name:?} is sold through a waiting room: join it with POST /v1/queue/{name} and send the admission it gives in the `Admission` header")))?;
        let customer = customer.ok_or_else(|| {
            refuse("an admission is its buyer's: the order must name its customer".into())
        })?;
        let step = self.step(roomed, config)?;
        let key = key.map_or(0, key_hash);
        let claimed = (self.rooms).with_room(roomed, Some(config), step.now_ms, |room| {
            let ticket = self
                .ticket_of(TokenKind::Admission, admission, roomed, room.epoch())
                .ok_or(AdmissionRefusal::Unknown)?;
            room.claim(&step, ticket, customer, key)
                .map(|claim| (ticket, claim))
        });
        match claimed {
            Some(Ok((ticket, Claim::Fresh))) => Ok(Some(AdmissionClaim {
                api: self,
                sku: roomed,
                ticket,
                ended: false,
            })),
            Some(Ok((_, Claim::Retry))) => Ok(None),
            Some(Err(refusal)) => Err(refuse(admission_refusal(refusal))),
            None => Err(refuse("the SKU's waiting room was turned off".into())),
        }
    }
}

/// A hash of an idempotency key, never 0 (0 is "no key").
fn key_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6164_6d69_7373_696f).hash_one(key) | 1
}

fn admission_refusal(refusal: AdmissionRefusal) -> String {
    match refusal {
        AdmissionRefusal::Unknown => "the admission is not one this waiting room gave this customer (from another SKU, another buyer, an earlier room, or before a restart: join again)".into(),
        AdmissionRefusal::NotYet => "the buyer is still waiting: poll its place until it reads admitted".into(),
        AdmissionRefusal::Lapsed { expired_at_ms } => format!("the admission expired at {expired_at_ms} ms unused: join again"),
        AdmissionRefusal::Used => "the admission was used by an earlier reservation (a retry of that one sends its Idempotency-Key)".into(),
        AdmissionRefusal::InUse => "another request is using this admission now".into(),
    }
}

fn not_admitted(sku: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, Code::NotAdmitted, message).with("sku", sku)
}

fn no_room(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Code::NoWaitingRoom,
        format!("SKU {name:?} has no waiting room: reserve it directly"),
    )
    .with("sku", name)
}

fn unknown_token(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Code::UnknownQueueToken,
        "this queue token is not one of this waiting room's: it is another SKU's or buyer's, or \
         from before the room was reset or the server restarted (rooms are kept in memory \
         only); join again with POST /v1/queue/{sku}",
    )
    .with("sku", name)
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, Code::Forbidden, message)
}

/// The `waiting_room` field of a SKU put: absent (`None`), `null` (turn
/// it off) or `{"admit_per_s", "overbook", "admission_ttl_ms"}` (only
/// `admit_per_s` required: an overbook of 1.0 and a minute by default).
pub(super) fn room_field(fields: &mut Fields) -> Result<Option<Option<RoomConfig>>, ApiError> {
    let object = match fields.take("waiting_room") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(ApiError::invalid(
                "field \"waiting_room\" must be an object or null",
            ))
        }
    };
    let mut room = Fields::new(object, &["admit_per_s", "overbook", "admission_ttl_ms"])?;
    let admit_per_s = room
        .u64("admit_per_s")?
        .ok_or_else(|| ApiError::invalid("field \"waiting_room.admit_per_s\" is required"))?;
    let overbook = match room.take("overbook") {
        None | Some(Value::Null) => 1.0,
        Some(value) => value
            .as_f64()
            .ok_or_else(|| ApiError::invalid("field \"waiting_room.overbook\" must be a number"))?,
    };
    let config = RoomConfig {
        admit_per_s: u32::try_from(admit_per_s).unwrap_or(u32::MAX),
        overbook_milli: if (1.0..=10.0).contains(&overbook) {
            (overbook * 1_000.0).round() as u32
        } else {
            0
        },
        admission_ttl_ms: room.u64("admission_ttl_ms")?.unwrap_or(60_000),
    };
    config
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(Some(Some(config)))
}

/// A room's settings as the SKU document shows them.
pub(super) fn room_json(room: Option<RoomConfig>) -> Value {
    match room {
        None => Value::Null,
        Some(room) => json!({
            "admit_per_s": room.admit_per_s,
            "overbook": f64::from(room.overbook_milli) / 1_000.0,
            "admission_ttl_ms": room.admission_ttl_ms,
        }),
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;

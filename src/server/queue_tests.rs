//! The waiting room over the API, on a journaled engine with a manual
//! clock: joins, polls, admissions on the purchase path, and every
//! refusal with its code.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::super::api::{Api, ApiOptions};
use super::super::auth::Scope;
use super::super::error::ApiError;
use super::super::error::HttpResponse;
use crate::core::clock::{Clock, ManualClock};
use crate::core::engine::SaleWindow;
use crate::core::limits::MAX_POLL_AFTER_MS;
use crate::core::types::SkuId;
use crate::core::waiting_room::RoomConfig;
use crate::durable::journal::fs::RealFs;
use crate::durable::journal::Durability;
use crate::durable::{DurableConfig, DurableEngine};

const T0: u64 = 1_800_000_000_000;
const START: u64 = T0 + 60_000;

struct Sale {
    durable: Option<DurableEngine>,
    dir: std::path::PathBuf,
    clock: Arc<ManualClock>,
    api: Api,
    sku: SkuId,
}

impl Sale {
    /// SKU `drop` with `units`, a sale starting at `START` and a room.
    fn new(name: &str, units: u64, room: RoomConfig) -> Sale {
        let dir =
            std::env::temp_dir().join(format!("hotstock-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let clock = Arc::new(ManualClock::new(T0));
        let config = DurableConfig::new(&dir, Durability::Async);
        let (durable, _) =
            DurableEngine::open_with(config, Arc::new(RealFs), clock.clone()).unwrap();
        let engine = Arc::clone(durable.engine());
        let (sku, _) = engine.put_sku("drop", units, None, None).unwrap();
        let window = SaleWindow {
            starts_at_ms: Some(START),
            ends_at_ms: None,
        };
        engine.set_sale_window(sku, window).unwrap();
        engine.set_waiting_room(sku, Some(room)).unwrap();
        let api = Api::new(
            engine,
            durable.public_ids().clone(),
            Durability::Async,
            ApiOptions::default(),
        );
        Sale {
            durable: Some(durable),
            dir,
            clock,
            api,
            sku,
        }
    }

    fn join(&self, customer: &str) -> (StatusCode, Value) {
        let body = json!({ "customer": customer });
        let Value::Object(body) = body else {
            unreachable!()
        };
        answer(self.api.join_with("drop", body, Scope::Any))
    }

    fn poll(&self, token: &str) -> (StatusCode, Value) {
        answer(self.api.poll_queue("drop", token, Scope::Any))
    }

    fn reserve(
        &self,
        customer: &str,
        admission: Option<&str>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let body =
            json!({"lines": [{"sku": "drop", "quantity": 1}], "customer": customer}).to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = runtime.block_on(self.api.reserve_admitted(
            body.as_bytes(),
            key,
            admission,
            Scope::Any,
        ));
        answer(response)
    }

    /// Polls every token, as their answers ask, until one is admitted:
    /// its index and answer.
    fn next_admitted(&self, tokens: &[&str]) -> (usize, Value) {
        for _ in 0..1_000 {
            let mut soonest = u64::MAX;
            for (index, token) in tokens.iter().enumerate() {
                let (_, polled) = self.poll(token);
                if polled["status"] == "admitted" {
                    return (index, polled);
                }
                soonest = soonest.min(polled["poll_after_ms"].as_u64().unwrap_or(u64::MAX));
            }
            self.clock.advance(soonest);
        }
        panic!("nobody admitted after 1,000 rounds");
    }

    /// Polls `token` at the time its last answer asked for until it is no
    /// longer waiting; returns that answer.
    fn wait_for_turn(&self, token: &str) -> (StatusCode, Value) {
        for _ in 0..1_000 {
            let (status, polled) = self.poll(token);
            if polled["status"] != "waiting" {
                return (status, polled);
            }
            self.clock
                .advance(polled["poll_after_ms"].as_u64().unwrap());
        }
        panic!("still waiting after 1,000 polls");
    }
}

impl Drop for Sale {
    fn drop(&mut self) {
        drop(self.durable.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answer(response: Result<HttpResponse, ApiError>) -> (StatusCode, Value) {
    let response = response.unwrap_or_else(ApiError::into_response);
    let status = response.status();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = runtime
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn room(admit_per_s: u32) -> RoomConfig {
    RoomConfig {
        admit_per_s,
        overbook_milli: 1_000,
        admission_ttl_ms: 10_000,
    }
}

#[test]
fn a_buyer_joins_waits_for_the_shuffle_is_admitted_and_reserves_once() {
    let sale = Sale::new("flow", 5, room(10));
    let (status, joined) = sale.join("ann");
    assert_eq!(status, StatusCode::CREATED, "{joined}");
    assert_eq!(joined["status"], "waiting");
    assert_eq!(joined["place"], Value::Null, "no place before the shuffle");
    assert_eq!(joined["shuffle_at_ms"], START);
    let token = joined["token"].as_str().unwrap().to_owned();
    // Joining again: the same place.
    let (status, again) = sale.join("ann");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["token"], joined["token"]);
    // Without an admission, before or after: refused, nothing taken.
    let (status, refused) = sale.reserve("ann", None, None);
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admitted"))
    );
    let (status, turn) = sale.wait_for_turn(&token);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(turn["status"], "admitted", "{turn}");
    assert!(sale.clock.now_ms() >= START);
    let admission = turn["admission"].as_str().unwrap().to_owned();
    // Someone else's admission is not theirs.
    let (status, refused) = sale.reserve("bob", Some(&admission), None);
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admitted"))
    );
    let (status, made) = sale.reserve("ann", Some(&admission), Some("k-1"));
    assert_eq!(status, StatusCode::CREATED, "{made}");
    // A retry of that very request goes through (its key answers it);
    // any other use of the admission is refused.
    let (status, retried) = sale.reserve("ann", Some(&admission), Some("k-1"));
    assert_eq!((status, &retried["id"]), (StatusCode::CREATED, &made["id"]));
    let (status, refused) = sale.reserve("ann", Some(&admission), Some("k-2"));
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admitted"))
    );
    let (status, used) = sale.poll(&token);
    assert_eq!(
        (status, used["error"].as_str()),
        (StatusCode::GONE, Some("admission_used"))
    );
    let document = sale.api.engine.sku_document(sale.sku).unwrap();
    assert_eq!((document.available, document.held), (4, 1));
}

#[test]
fn bad_tokens_and_admissions_are_refused_and_take_nothing() {
    let sale = Sale::new("bad", 5, room(10));
    let (_, joined) = sale.join("ann");
    let token = joined["token"].as_str().unwrap().to_owned();
    for bad in [
        "",
        "zz",
        "00000000000000000000000000000000",
        &token.to_uppercase(),
    ] {
        let (status, refused) = sale.poll(bad);
        assert_eq!(
            (status, refused["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_queue_token")),
            "{bad:?}"
        );
    }
    // A place token is not an admission.
    let (status, refused) = sale.reserve("ann", Some(&token), None);
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admitted"))
    );
    // A buyer joins for itself only; a service names the customer.
    let Value::Object(body) = json!({"customer": "bob"}) else {
        unreachable!()
    };
    let (status, refused) = answer(sale.api.join_with("drop", body, Scope::Customer("ann")));
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, refused) = answer(sale.api.join_with("drop", Default::default(), Scope::Any));
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    // Another buyer's token reads as unknown.
    let (status, _) = answer(sale.api.poll_queue("drop", &token, Scope::Customer("bob")));
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A SKU without a room.
    sale.api.engine.put_sku("plain", 1, None, None).unwrap();
    let (status, refused) = answer(sale.api.poll_queue("plain", &token, Scope::Any));
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_waiting_room"))
    );
    let document = sale.api.engine.sku_document(sale.sku).unwrap();
    assert_eq!(
        (document.available, document.held, document.sold),
        (5, 0, 0)
    );
}

#[test]
fn a_lapsed_admission_is_refused_and_the_next_buyer_gets_the_slot() {
    let sale = Sale::new("lapse", 1, room(10));
    sale.clock.set(START + MAX_POLL_AFTER_MS);
    let buyers = ["ann", "bob"];
    let joined: Vec<String> = buyers
        .iter()
        .map(|c| sale.join(c).1["token"].as_str().unwrap().to_owned())
        .collect();
    let tokens: Vec<&str> = joined.iter().map(String::as_str).collect();
    // The room opened at its first join, mid-sale: those who join within
    // MAX_POLL_AFTER_MS are shuffled, then admitted, one per unit.
    let (first, turn) = sale.next_admitted(&tokens);
    let admission = turn["admission"].as_str().unwrap().to_owned();
    let other = 1 - first;
    let (_, waiting) = sale.poll(tokens[other]);
    assert_eq!(
        waiting["place"], 1,
        "one unit: one admission at a time: {waiting}"
    );
    sale.clock.advance(10_000);
    let (status, refused) = sale.reserve(buyers[first], Some(&admission), None);
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admitted"))
    );
    let (status, lapsed) = sale.poll(tokens[first]);
    assert_eq!(
        (status, lapsed["error"].as_str()),
        (StatusCode::GONE, Some("admission_lapsed"))
    );
    let (_, turn) = sale.poll(tokens[other]);
    assert_eq!(turn["status"], "admitted", "{turn}");
}

#[test]
fn when_the_stock_is_gone_the_waiting_read_sold_out_and_nobody_joins() {
    let sale = Sale::new("gone", 1, room(10));
    sale.clock.set(START + MAX_POLL_AFTER_MS);
    let buyers = ["ann", "bob", "cat"];
    let joined: Vec<String> = buyers
        .iter()
        .map(|c| sale.join(c).1["token"].as_str().unwrap().to_owned())
        .collect();
    let tokens: Vec<&str> = joined.iter().map(String::as_str).collect();
    let (first, turn) = sale.next_admitted(&tokens);
    let admission = turn["admission"].as_str().unwrap().to_owned();
    let (status, made) = sale.reserve(buyers[first], Some(&admission), None);
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let others: Vec<&str> = (0..3).filter(|&i| i != first).map(|i| tokens[i]).collect();
    // Held, not yet sold: it may come back, so the others wait.
    let (_, waiting) = sale.poll(others[0]);
    assert_eq!(waiting["status"], "waiting");
    let id = made["id"].as_str().unwrap();
    let id = sale.api.public_ids.decode(id).unwrap();
    sale.api.engine.confirm(id).unwrap();
    // At once, early polls included.
    for token in others {
        let (status, gone) = sale.poll(token);
        assert_eq!(
            (status, gone["status"].as_str()),
            (StatusCode::OK, Some("sold_out"))
        );
    }
    let (status, refused) = sale.join("dan");
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::CONFLICT, Some("sold_out"))
    );
}

#[test]
fn room_settings_show_in_the_document_and_refusals_are_clear() {
    let sale = Sale::new("settings", 1, room(10));
    let document = sale.api.engine.sku_document(sale.sku).unwrap();
    let json = sale.api.sku_json(&document);
    assert_eq!(
        json["waiting_room"],
        json!({"admit_per_s": 10, "overbook": 1.0, "admission_ttl_ms": 10000})
    );
    // Turned off: the queue routes say so, orders need no admission.
    sale.api.engine.set_waiting_room(sale.sku, None).unwrap();
    let (status, refused) = sale.join("ann");
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_waiting_room"))
    );
    sale.clock.set(START);
    let (status, made) = sale.reserve("ann", None, None);
    assert_eq!(status, StatusCode::CREATED, "{made}");
}

#[test]
fn a_flood_of_polls_is_answered_429_and_keeps_the_place() {
    let sale = Sale::new("flood", 5, room(10));
    let (_, joined) = sale.join("ann");
    let token = joined["token"].as_str().unwrap().to_owned();
    let mut statuses = vec![];
    for _ in 0..12 {
        statuses.push(sale.poll(&token).0);
    }
    assert_eq!(statuses[..10], [StatusCode::OK; 10]);
    let (status, refused) = sale.poll(&token);
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("overloaded"))
    );
    assert!(refused["poll_after_ms"].as_u64().unwrap() > 0, "{refused}");
    // At the hinted time the buyer is answered, in its place.
    sale.clock
        .advance(refused["poll_after_ms"].as_u64().unwrap());
    let (status, polled) = sale.poll(&token);
    assert_eq!(
        (status, polled["status"].as_str()),
        (StatusCode::OK, Some("waiting"))
    );
    let document = sale.api.engine.sku_document(sale.sku).unwrap();
    assert_eq!((document.available, document.held), (5, 0));
}

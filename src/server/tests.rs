//! The HTTP layer's unit tests over an `Api` on a journaled engine in a
//! temporary directory: answers written straight to bytes against the
//! record read back, refusals with their messages, admission, and the
//! body scanner held to the field-by-field reader.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::Value;

use super::api::{Api, ApiOptions};
use super::auth::Scope;
use super::body::{parse_fields, parse_order, OrderFields};
use super::error::ApiError;
use super::order_body::{scan_compact, scan_order};
use super::response::reservation_json;
use crate::core::holds::HoldDocument;
use crate::core::types::ReservationId;
use crate::durable::journal::Durability;
use crate::durable::{DurableConfig, DurableEngine, JournaledEngine};

fn json_of(api: &Api, document: &HoldDocument) -> Value {
    let id = api.public_ids.to_string(document.id);
    reservation_json(document, &id, |id| api.engine.sku_name(id))
}

/// The id a response names, decoded.
fn id_in(api: &Api, answer: &Value) -> ReservationId {
    api.public_ids
        .decode(answer["id"].as_str().unwrap())
        .expect("a public id this server made")
}

/// A journaled engine in a fresh directory of its own; the directory
/// goes when the returned guard drops.
struct TempEngine {
    durable: Option<DurableEngine>,
    dir: std::path::PathBuf,
}

impl TempEngine {
    fn new(name: &str) -> TempEngine {
        let dir = std::env::temp_dir().join(format!("hotstock-api-{name}-{}", std::process::id()));
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

    /// An API over this engine, open (no roles), with `options`.
    fn api(&self, options: ApiOptions) -> Api {
        let durable = self.durable.as_ref().unwrap();
        Api::new(
            self.engine(),
            durable.public_ids().clone(),
            Durability::Async,
            options,
        )
    }
}

impl Drop for TempEngine {
    fn drop(&mut self) {
        drop(self.durable.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answer(api: &Api, body: &str, key: Option<&str>) -> (StatusCode, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = runtime
        .block_on(api.reserve_bytes(body.as_bytes(), key, Scope::Any))
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
    let api = temp.api(ApiOptions::default());
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
    assert_eq!(answer.code.as_str(), "sold_out");
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
    let api = temp.api(ApiOptions::default());
    let bodies = [
        r#"{"lines":[{"sku":"tee","quantity":1}],"confirm":true}"#,
        r#"{"lines":[{"sku":"tee","quantity":2}],"ttl_ms":60000}"#,
        r#"{"lines":[{"sku":"tee","quantity":1},{"sku":"mug-\u0032","quantity":2}],"customer":"ann \"\u00e9\"","confirm":false,"idempotency_key":null}"#,
    ];
    for body in bodies {
        let (status, fast) = answer(&api, body, None);
        assert_eq!(status, StatusCode::CREATED, "{fast}");
        // Each answers exactly what the record, read back, says.
        let id = id_in(&api, &fast);
        let document = engine.reservation(id).unwrap();
        assert_eq!(fast, json_of(&api, &document), "{body}");
    }
    // A repeated key sends the body down the field-by-field path, which
    // answers through the same writer.
    let body = r#"{"lines":[{"sku":"tee","quantity":1}],"confirm":false,"confirm":true}"#;
    assert!(scan_order(body.as_bytes()).is_none());
    let (status, slow) = answer(&api, body, None);
    assert_eq!(status, StatusCode::CREATED, "{slow}");
    let id = id_in(&api, &slow);
    assert_eq!(slow, json_of(&api, &engine.reservation(id).unwrap()));
    assert_eq!(slow["status"], "confirmed");
}

#[test]
fn bodies_the_typed_path_refuses_get_the_detailed_messages() {
    let temp = TempEngine::new("refused");
    let engine = temp.engine();
    engine.put_sku("tee", 10, None, None).unwrap();
    let api = temp.api(ApiOptions::default());
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
            (proptest::bool::weighted(keep), value, "[ \n]{0,1}").prop_map(move |(kept, v, ws)| {
                kept.then(|| format!("{ws}\"{key}\"{ws}:{ws}{v}{ws}"))
            })
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
        4 => integer_json().prop_map(|n| format!(r#","ttl_ms":{n}"#)),
    ];
    let tail = prop_oneof![
        8 => Just("}"), 1 => Just("} "), 1 => Just("}}"), 1 => Just(""),
        1 => Just(r#","confirm":true}"#), 1 => Just(r#","ttl_ms":5}"#),
    ];
    (string_json(), integer_json(), confirm, tail).prop_map(|(sku, quantity, confirm, tail)| {
        format!(r#"{{"lines":[{{"sku":{sku},"quantity":{quantity}}}]{confirm}{tail}"#)
    })
}

/// An order's values, owned, for comparing the two readers.
type Owned = (
    Vec<(String, u64)>,
    Option<String>,
    Option<u64>,
    Option<bool>,
    Option<String>,
);

fn owned(order: OrderFields<'_>) -> Result<Owned, ApiError> {
    Ok((
        order
            .lines
            .iter()
            .map(|l| (l.sku.to_owned(), l.quantity))
            .collect(),
        order.customer.map(str::to_owned),
        order.ttl_ms,
        order.confirm,
        order.idempotency_key.map(str::to_owned),
    ))
}

/// What the scanner accepts, the field-by-field reader (its fallback)
/// accepts too, with the same values.
fn scanner_agrees_with_serde(body: &str) -> Result<(), proptest::test_runner::TestCaseError> {
    if let Some(scanned) = scan_order(body.as_bytes()) {
        let fields = parse_fields(body.as_bytes(), owned);
        if (1..=crate::core::limits::MAX_LINES_PER_CART).contains(&scanned.lines().len()) {
            let fields =
                fields.unwrap_or_else(|e| panic!("the fields reader refuses {body}: {e:?}"));
            let scanned = parse_order(body.as_bytes(), owned).unwrap();
            proptest::prop_assert_eq!(fields, scanned);
        } else {
            // Both refuse the cart size (the scanner's caller checks it).
            proptest::prop_assert!(fields.is_err());
        }
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
    // A purchase and a hold as clients send them take the literal scan.
    let purchase = scan_compact(br#"{"lines":[{"sku":"hot","quantity":1}],"confirm":true}"#);
    assert_eq!(
        purchase.map(|o| (o.confirm, o.ttl_ms)),
        Some((Some(true), None))
    );
    let hold = scan_compact(br#"{"lines":[{"sku":"hot","quantity":2}],"ttl_ms":600000}"#);
    assert_eq!(
        hold.map(|o| (o.line.quantity, o.ttl_ms)),
        Some((2, Some(600_000)))
    );
}

use proptest::prelude::*;
use serde_json::{Map, Value};

/// The error shape as it was built before: the object as a map, then
/// serialized.
fn as_a_map(code: &str, message: &str, details: &[(String, Value)]) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("error".into(), code.into());
    body.insert("message".into(), message.into());
    body.extend(details.iter().cloned());
    serde_json::to_vec(&Value::Object(body)).unwrap()
}

fn detail() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        proptest::collection::vec(any::<u32>(), 0..3).prop_map(Value::from),
    ]
}

#[test]
fn a_sold_out_answer_is_written_in_key_order() {
    let mut details = super::Details::default();
    details.insert("sku", "tee".into());
    details.insert("available", 0.into());
    details.insert("requested", 7.into());
    // A later value replaces the earlier, as a map's insert did.
    details.insert("requested", 1.into());
    let body = super::error_body("sold_out", "sold out: SKU \"tee\"", details.sorted());
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"available":0,"error":"sold_out","message":"sold out: SKU \"tee\"","requested":1,"sku":"tee"}"#
    );
}

proptest! {
    /// Written straight to bytes, the body is byte for byte the map's,
    /// keys that sort before, between and after `error` and `message`
    /// and details named like them included.
    #[test]
    fn the_error_body_is_what_the_map_wrote(
        code in "[a-z_]{1,16}",
        message in ".{0,40}",
        details in proptest::collection::btree_map(
            prop_oneof!["[a-z_]{1,10}", Just("error".to_string()), Just("message".to_string()), ".{0,6}"],
            detail(),
            0..6,
        ),
    ) {
        // In key order, each once: what `Details::sorted` hands over.
        let details: Vec<(String, Value)> = details.into_iter().collect();
        let written = super::error_body(&code, &message, &details);
        prop_assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(as_a_map(&code, &message, &details)).unwrap()
        );
    }
}

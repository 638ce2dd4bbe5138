//! The sold-out answer, written straight to bytes: a crowd that keeps
//! buying a SKU after it sold out gets nothing else, so this answer is the
//! path its requests take. Through `EngineError::named`'s `fmt` and
//! `error_body`'s escaping it cost ~3,200 worker instructions more than a
//! sale (callgrind, `AVAILABLE=0 benches/http/callgrind.sh async 5`). The
//! message and the body are what the general path writes (a test holds
//! them to it).

use hyper::StatusCode;

use super::{ApiError, Code};

/// The refusal of an order for `requested` units of `name` when
/// `available` are left; `None` for a name the JSON would have to escape
/// or a location's cell (`sku/location`), which the general path splits.
pub(super) fn sold_out(name: &str, available: u64, requested: u64) -> Option<ApiError> {
    // Catalogue names are `[A-Za-z0-9._~:-]`: checked, not assumed.
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"\\/".contains(&b))
    {
        return None;
    }
    let (mut a, mut r) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (available_text, requested_text) = (a.format(available), r.format(requested));
    let mut message = String::with_capacity(64 + name.len());
    for part in [
        "sold out: SKU \"",
        name,
        "\" has ",
        available_text,
        " units available, ",
        requested_text,
        " requested",
    ] {
        message.push_str(part);
    }
    let mut body = Vec::with_capacity(160 + 2 * name.len());
    for part in [
        "{\"available\":",
        available_text,
        ",\"error\":\"sold_out\",\"message\":\"sold out: SKU \\\"",
        name,
        "\\\" has ",
        available_text,
        " units available, ",
        requested_text,
        " requested\",\"requested\":",
        requested_text,
        ",\"sku\":\"",
        name,
        "\"}",
    ] {
        body.extend_from_slice(part.as_bytes());
    }
    let mut refusal = ApiError::new(StatusCode::CONFLICT, Code::SoldOut, message)
        .with("sku", name)
        .with("available", available)
        .with("requested", requested);
    refusal.written = Some(body);
    Some(refusal)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::core::error::EngineError;
    use crate::core::types::SkuId;

    /// The general path: the engine's message through `named`, the body
    /// through `error_body`.
    fn general(name: &str, available: u64, requested: u64) -> (String, Vec<u8>) {
        let error = EngineError::SoldOut {
            sku: SkuId::from_index(3),
            available,
            requested,
        };
        let message = error.named(|_| Some(name)).to_string();
        let details = [
            ("available".to_string(), serde_json::Value::from(available)),
            ("requested".to_string(), requested.into()),
            ("sku".to_string(), name.into()),
        ];
        (
            message.clone(),
            super::super::error_body("sold_out", &message, &details),
        )
    }

    proptest! {
        #[test]
        fn the_written_answer_is_what_the_general_path_writes(
            name in "[A-Za-z0-9._~:-]{1,64}",
            available in any::<u64>(),
            requested in any::<u64>(),
        ) {
            let mut refusal = super::sold_out(&name, available, requested).unwrap();
            let (message, body) = general(&name, available, requested);
            prop_assert_eq!(&refusal.message, &message);
            prop_assert_eq!(refusal.details.get("requested"), Some(&requested.into()));
            prop_assert_eq!(String::from_utf8(refusal.body()).unwrap(), String::from_utf8(body).unwrap());
        }
    }

    #[test]
    fn names_the_general_path_must_write_are_left_to_it() {
        for name in ["tee/berlin", "a\"b", "a\\b", "sp ace"] {
            assert!(super::sold_out(name, 0, 1).is_none(), "{name}");
        }
        // A detail added later drops the written body.
        let mut refusal = super::sold_out("tee", 0, 1).unwrap().with("extra", 1);
        let body = String::from_utf8(refusal.body()).unwrap();
        assert!(body.contains("\"extra\":1"), "{body}");
    }
}

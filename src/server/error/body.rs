//! The JSON error shape written straight to bytes: `error_body`, and the
//! short list of a refusal's `Details`.

use super::*;

/// The JSON error shape, `{"error": code, "message": message, ...details}`
/// with its keys in order (a detail named `error` or `message` wins), as
/// `serde_json` writes the same object, written straight to bytes: a
/// sold-out crowd or a shed load is answered with these, so building the
/// object as a map first cost more than the refusal itself (a sold-out
/// answer took 23,800 instructions against a sale's 15,800; callgrind).
///
/// `details` are sorted by key, each key once (`Details::sorted`).
pub(super) fn error_body<K: AsRef<str>>(
    code: &str,
    message: &str,
    details: &[(K, Value)],
) -> Vec<u8> {
    debug_assert!(details
        .windows(2)
        .all(|w| w[0].0.as_ref() < w[1].0.as_ref()));
    let mut out = Vec::with_capacity(64 + message.len() + 32 * details.len());
    let mut own = [("error", code), ("message", message)]
        .into_iter()
        .filter(|(key, _)| !details.iter().any(|(k, _)| k.as_ref() == *key))
        .peekable();
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, key: &str, value: &dyn Fn(&mut Vec<u8>)| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        write_json_string(out, key);
        out.push(b':');
        value(out);
    };
    for (key, value) in details {
        let key = key.as_ref();
        while let Some((own_key, own_value)) = own.next_if(|(own_key, _)| *own_key < key) {
            member(&mut out, own_key, &|out| write_json_string(out, own_value));
        }
        member(&mut out, key, &|out| {
            // A `Value` always serializes (its map keys are strings).
            let _ = serde_json::to_writer(&mut *out, value);
        });
    }
    for (own_key, own_value) in own {
        member(&mut out, own_key, &|out| write_json_string(out, own_value));
    }
    out.push(b'}');
    out
}

/// An error's details: a few named values, each key once (a later value
/// for a key replaces the earlier, as in a map). A short list, not a map:
/// a refusal carries two to four, and every shed or sold-out answer built
/// a map of owned keys before.
#[derive(Debug, Default)]
pub struct Details(Vec<(&'static str, Value)>);

impl Details {
    pub fn insert(&mut self, key: &'static str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The details in key order, as the JSON object lists them.
    pub fn sorted(&mut self) -> &[(&'static str, Value)] {
        self.0.sort_unstable_by_key(|(key, _)| *key);
        &self.0
    }
}

impl std::ops::Index<&str> for Details {
    type Output = Value;

    /// The value of `key`, or `null` (as `serde_json::Map` indexes).
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&Value::Null)
    }
}

/// `text` as a JSON string, escaped as `serde_json` escapes it.
pub(super) fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a `str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

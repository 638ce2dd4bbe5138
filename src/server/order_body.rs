//! A scanner for the body of `POST /v1/reservations` in its usual shape.
//!
//! In a flash sale nearly every request is the same small object:
//! `{"lines":[{"sku":"…","quantity":1}],"confirm":true}`. A general JSON
//! parser spends more instructions on it than the engine spends selling the
//! unit. This scanner reads that shape in one pass, borrowing every string
//! from the request bytes and allocating nothing.
//!
//! It is allowed to decline, never to disagree: for anything unusual (an
//! escape in a string, `null`, a repeated key, a float, a number past
//! `u64`, more than `MAX_LINES_PER_CART` lines) it returns `None`, and the
//! caller parses the body with serde as before. Whatever it accepts, serde
//! accepts with the same values; a property test holds it to that.

use crate::core::limits::MAX_LINES_PER_CART;

/// One line of an order, as written in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedLine<'a> {
    pub sku: &'a str,
    pub quantity: u64,
}

/// An order body in its usual shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedOrder<'a> {
    lines: [ScannedLine<'a>; MAX_LINES_PER_CART],
    line_count: usize,
    pub customer: Option<&'a str>,
    pub ttl_ms: Option<u64>,
    pub confirm: Option<bool>,
    pub idempotency_key: Option<&'a str>,
}

impl<'a> ScannedOrder<'a> {
    pub fn lines(&self) -> &[ScannedLine<'a>] {
        &self.lines[..self.line_count]
    }
}

impl ScannedOrder<'_> {
    fn empty() -> Self {
        let empty = ScannedLine {
            sku: "",
            quantity: 0,
        };
        ScannedOrder {
            lines: [empty; MAX_LINES_PER_CART],
            line_count: 0,
            customer: None,
            ttl_ms: None,
            confirm: None,
            idempotency_key: None,
        }
    }
}

/// Reads `bytes` as an order body, or declines with `None`.
pub fn scan_order(bytes: &[u8]) -> Option<ScannedOrder<'_>> {
    if let Some(compact) = scan_compact(bytes) {
        let mut order = ScannedOrder::empty();
        order.lines[0] = compact.line;
        order.line_count = 1;
        order.confirm = compact.confirm;
        order.ttl_ms = compact.ttl_ms;
        return Some(order);
    }
    scan_general(bytes)
}

/// `scan_order` of a body not in the compact shape.
pub fn scan_general(bytes: &[u8]) -> Option<ScannedOrder<'_>> {
    let mut scanner = Scanner { bytes, at: 0 };
    let mut order = ScannedOrder::empty();
    let mut seen_lines = false;
    scanner.object(|scanner, key| {
        match key {
            "lines" if !seen_lines => {
                seen_lines = true;
                scanner.lines(&mut order.lines, &mut order.line_count)
            }
            "customer" if order.customer.is_none() => {
                order.customer = Some(scanner.string()?);
                Some(())
            }
            "ttl_ms" if order.ttl_ms.is_none() => {
                order.ttl_ms = Some(scanner.integer()?);
                Some(())
            }
            "confirm" if order.confirm.is_none() => {
                order.confirm = Some(scanner.boolean()?);
                Some(())
            }
            "idempotency_key" if order.idempotency_key.is_none() => {
                order.idempotency_key = Some(scanner.string()?);
                Some(())
            }
            // Unknown or repeated: serde decides what to say.
            _ => None,
        }
    })?;
    scanner.whitespace();
    (seen_lines && scanner.at == bytes.len()).then_some(order)
}

/// The one-line order exactly as clients usually send it, compact and
/// in this key order: `{"lines":[{"sku":"…","quantity":N}]}`, with
/// `,"confirm":true` (or `false`), or a hold's `,"ttl_ms":N`, before the
/// last brace or not. Literal
/// comparisons instead of key dispatch: a quarter of the general scan's
/// instructions. Anything else goes to the general scan.
///
/// Returns the one line and `confirm`, not a `ScannedOrder`: that has room
/// for a whole cart's lines, and filling and moving its ~800 bytes cost a
/// purchase more than this scan does.
pub fn scan_compact(bytes: &[u8]) -> Option<CompactOrder<'_>> {
    let mut scanner = Scanner { bytes, at: 0 };
    if !scanner.literal(br#"{"lines":[{"sku":"#) {
        return None;
    }
    let sku = scanner.string()?;
    if !scanner.literal(br#","quantity":"#) {
        return None;
    }
    let quantity = scanner.integer()?;
    if !scanner.literal(b"}]") {
        return None;
    }
    let mut order = CompactOrder {
        line: ScannedLine { sku, quantity },
        confirm: None,
        ttl_ms: None,
    };
    if scanner.literal(br#","confirm":"#) {
        order.confirm = Some(scanner.boolean()?);
    } else if scanner.literal(br#","ttl_ms":"#) {
        order.ttl_ms = Some(scanner.integer()?);
    }
    (scanner.literal(b"}") && scanner.at == bytes.len()).then_some(order)
}

/// A body in the compact one-line shape (`scan_compact`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactOrder<'a> {
    pub line: ScannedLine<'a>,
    pub confirm: Option<bool>,
    pub ttl_ms: Option<u64>,
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `text` if it comes next, exactly (no whitespace skipped).
    fn literal(&mut self, text: &[u8]) -> bool {
        let matches = self.bytes[self.at..].starts_with(text);
        if matches {
            self.at += text.len();
        }
        matches
    }

    /// Skips whitespace, then consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        self.whitespace();
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// `{ "key": value, … }`, calling `field` to read each value.
    fn object(
        &mut self,
        mut field: impl FnMut(&mut Scanner<'a>, &'a str) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            self.whitespace();
            let key = self.string()?;
            if !self.eat(b':') {
                return None;
            }
            self.whitespace();
            field(self, key)?;
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}').then_some(());
        }
    }

    /// `[ {"sku": …, "quantity": …}, … ]`, at most `MAX_LINES_PER_CART`.
    fn lines(
        &mut self,
        lines: &mut [ScannedLine<'a>; MAX_LINES_PER_CART],
        count: &mut usize,
    ) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            if *count == MAX_LINES_PER_CART {
                return None;
            }
            let (mut sku, mut quantity) = (None, None);
            self.object(|scanner, key| match key {
                "sku" if sku.is_none() => {
                    sku = Some(scanner.string()?);
                    Some(())
                }
                "quantity" if quantity.is_none() => {
                    quantity = Some(scanner.integer()?);
                    Some(())
                }
                _ => None,
            })?;
            lines[*count] = ScannedLine {
                sku: sku?,
                quantity: quantity?,
            };
            *count += 1;
            if self.eat(b',') {
                continue;
            }
            return self.eat(b']').then_some(());
        }
    }

    /// A string without escapes or control characters, as UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let bytes = self.bytes;
        let start = self.at + 1;
        let mut end = start;
        let mut ascii = true;
        loop {
            match *bytes.get(end)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                b => ascii &= b.is_ascii(),
            }
            end += 1;
        }
        self.at = end + 1;
        let text = &bytes[start..end];
        if ascii {
            // SAFETY: every byte of `text` is ASCII, and ASCII is UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(text) })
        } else {
            std::str::from_utf8(text).ok()
        }
    }

    /// A non-negative integer that fits `u64`, written as JSON allows (no
    /// leading zeros, no fraction or exponent).
    fn integer(&mut self) -> Option<u64> {
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        let leading_zero = digits > 1 && self.bytes[start] == b'0';
        let fraction_follows = matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        (digits > 0 && !leading_zero && !fraction_follows).then_some(value)
    }

    fn boolean(&mut self) -> Option<bool> {
        let rest = &self.bytes[self.at..];
        if rest.starts_with(b"true") {
            self.at += 4;
            Some(true)
        } else if rest.starts_with(b"false") {
            self.at += 5;
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_purchase() {
        let order =
            scan_order(br#"{"lines":[{"sku":"hot","quantity":1}],"confirm":true}"#).unwrap();
        assert_eq!(
            order.lines(),
            [ScannedLine {
                sku: "hot",
                quantity: 1
            }]
        );
        assert_eq!(order.confirm, Some(true));
        assert_eq!(
            (order.customer, order.ttl_ms, order.idempotency_key),
            (None, None, None)
        );
    }

    #[test]
    fn reads_every_field_in_any_order_with_whitespace() {
        let body = b" {\n \"ttl_ms\" : 60000 , \"customer\":\"ann\", \"lines\" : [ { \"quantity\": 2 , \"sku\":\"a\" } ,{\"sku\":\"b\",\"quantity\":0}], \"idempotency_key\":\"k1\",\"confirm\":false }\r\n";
        let order = scan_order(body).unwrap();
        assert_eq!(order.lines().len(), 2);
        assert_eq!(
            order.lines()[0],
            ScannedLine {
                sku: "a",
                quantity: 2
            }
        );
        assert_eq!(
            order.lines()[1],
            ScannedLine {
                sku: "b",
                quantity: 0
            }
        );
        assert_eq!(order.customer, Some("ann"));
        assert_eq!(order.ttl_ms, Some(60000));
        assert_eq!(order.confirm, Some(false));
        assert_eq!(order.idempotency_key, Some("k1"));
    }

    #[test]
    fn declines_what_it_does_not_read_exactly() {
        for body in [
            &br#"{"lines":[{"sku":"a\"b","quantity":1}]}"#[..],
            br#"{"lines":[{"sku":"a","quantity":1}],"customer":null}"#,
            br#"{"lines":[{"sku":"a","quantity":1}],"confirm":true,"confirm":true}"#,
            br#"{"lines":[{"sku":"a","quantity":1.0}]}"#,
            br#"{"lines":[{"sku":"a","quantity":1e2}]}"#,
            br#"{"lines":[{"sku":"a","quantity":01}]}"#,
            br#"{"lines":[{"sku":"a","quantity":-1}]}"#,
            br#"{"lines":[{"sku":"a","quantity":18446744073709551616}]}"#,
            br#"{"lines":[{"sku":"a"}]}"#,
            br#"{"lines":[{"sku":"a","quantity":1,"colour":"red"}]}"#,
            br#"{"lines":[{"sku":"a","quantity":1}],}"#,
            br#"{"lines":[{"sku":"a","quantity":1}]} x"#,
            br#"{"confirm":true}"#,
            br#"{"lines":[{"sku":"a","quantity":1}],"confirm":tru}"#,
            b"{\"lines\":[{\"sku\":\"a\xff\",\"quantity\":1}]}",
            b"{\"lines\":[{\"sku\":\"a\tb\",\"quantity\":1}]}",
            br#"[]"#,
            b"",
        ] {
            assert_eq!(scan_order(body), None, "{}", String::from_utf8_lossy(body));
        }
        let many: Vec<String> = (0..=MAX_LINES_PER_CART)
            .map(|i| format!(r#"{{"sku":"s{i}","quantity":1}}"#))
            .collect();
        let body = format!(r#"{{"lines":[{}]}}"#, many.join(","));
        assert_eq!(
            scan_order(body.as_bytes()),
            None,
            "more lines than a cart holds"
        );
        let body = format!(r#"{{"lines":[{}]}}"#, many[1..].join(","));
        assert_eq!(
            scan_order(body.as_bytes()).unwrap().lines().len(),
            MAX_LINES_PER_CART
        );
    }
}

//! Fingerprints of keyed requests: what an idempotency key remembers of
//! the request it was first sent with, so the key sent again with another
//! request is refused instead of answered with the first one's outcome.
//!
//! A fingerprint must tell apart any two requests a client can send. So
//! each request is first written as a sequence of 64-bit words that no
//! other request writes (an encoding: every variable part is preceded by
//! its length, every field has a fixed place), then the words are mixed
//! one by one through a bijection (the SplitMix64 finaliser). Two requests
//! that differ only in their last word always differ in print; otherwise
//! the chance that two prints are equal is that of a random 64-bit
//! collision.
//!
//! The prints before this module were a general-purpose fast hasher
//! (foldhash) fed field by field. That hasher packs small values into a
//! wide block and multiplies its halves, so structured inputs with zeros
//! in them (a line of 0 units, SKU id 0) could share a print: a refund of
//! `[(sku, 1)]` and one of `[(sku, 0)]` sent with one key got the first
//! refund's answer, not `IdempotencyKeyReused` (found by the sequential
//! model). Keys remembered before an upgrade carry the old prints, so a
//! request also matches a stored print equal to its `legacy` one: a client
//! retrying across the restart of an upgrade still gets its outcome. Those
//! keys age out within one retention period; the legacy check can go in
//! the release after.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::core::types::{Line, ReservationId};

/// A request's print, and what the same request printed before this
/// module (matched against keys remembered by an older version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// What is remembered with the key (and journaled).
    pub print: u64,
    legacy: u64,
}

impl Fingerprint {
    /// A print with no older form (tests and models).
    pub fn exact(print: u64) -> Fingerprint {
        Fingerprint {
            print,
            legacy: print,
        }
    }

    /// Whether a key remembered with `stored` was sent with this request.
    pub fn matches(&self, stored: u64) -> bool {
        stored == self.print || stored == self.legacy
    }
}

/// What an order asks for (not its key).
pub struct OrderPrint<'a> {
    pub lines: &'a [Line],
    pub customer: Option<&'a str>,
    pub confirm: bool,
    /// The hold's time to live, the engine's default filled in.
    pub ttl_ms: u64,
    pub split: u32,
}

/// Tags that start each kind of request's words, so an order and a refund
/// never write the same sequence (a key is one request, whatever kind).
const ORDER_TAG: u64 = 0x6f72_6465_7200_0001; // "order", version 1
const REFUND_TAG: u64 = 0x7265_6675_6e64_0001; // "refund", version 1

/// An order's print.
pub fn order(order: &OrderPrint<'_>) -> Fingerprint {
    let mut words = Words::new(ORDER_TAG);
    words.lines(order.lines);
    match order.customer {
        None => words.push(0),
        Some(customer) => {
            words.push(1);
            words.bytes(customer.as_bytes());
        }
    }
    words.push(u64::from(order.confirm));
    words.push(order.ttl_ms);
    words.push(u64::from(order.split));
    Fingerprint {
        print: words.finish(),
        legacy: legacy_order(order),
    }
}

/// A keyed refund's print: its reservation and lines (`None`: all that
/// is left).
pub fn refund(id: ReservationId, lines: Option<&[Line]>) -> Fingerprint {
    let mut words = Words::new(REFUND_TAG);
    words.push(id.as_u64());
    match lines {
        None => words.push(0),
        Some(lines) => {
            words.push(1);
            words.lines(lines);
        }
    }
    Fingerprint {
        print: words.finish(),
        legacy: legacy_refund(id, lines),
    }
}

/// The running mix of a request's words, and how many there were.
struct Words {
    state: u64,
    count: u64,
}

impl Words {
    fn new(tag: u64) -> Words {
        Words {
            state: mix(tag),
            count: 0,
        }
    }

    fn push(&mut self, word: u64) {
        self.state = mix(self.state ^ word);
        self.count += 1;
    }

    fn lines(&mut self, lines: &[Line]) {
        self.push(lines.len() as u64);
        for line in lines {
            self.push(u64::from(line.sku.0) << 32 | u64::from(line.quantity));
        }
    }

    /// The length, then the bytes eight to a word (the last one padded
    /// with zeros: the length says how many are real).
    fn bytes(&mut self, bytes: &[u8]) {
        self.push(bytes.len() as u64);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.push(u64::from_le_bytes(word));
        }
    }

    fn finish(self) -> u64 {
        mix(self.state ^ self.count)
    }
}

/// SplitMix64's finaliser: a bijection on `u64` in which every input bit
/// moves about half the output bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// An order's print before this module (see the module docs).
fn legacy_order(order: &OrderPrint<'_>) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(0x686f_7473_746f_636b).build_hasher();
    for line in order.lines {
        line.sku.hash(&mut hasher);
        line.quantity.hash(&mut hasher);
    }
    order.customer.hash(&mut hasher);
    order.confirm.hash(&mut hasher);
    order.ttl_ms.hash(&mut hasher);
    if order.split != 0 {
        order.split.hash(&mut hasher);
    }
    hasher.finish()
}

/// A refund's print before this module (see the module docs).
fn legacy_refund(id: ReservationId, lines: Option<&[Line]>) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(0x7265_6675_6e64).build_hasher();
    "refund".hash(&mut hasher);
    id.as_u64().hash(&mut hasher);
    lines.is_some().hash(&mut hasher);
    let lines = lines.unwrap_or_default();
    if lines.iter().any(|line| line.quantity == 0) {
        lines.len().hash(&mut hasher);
    }
    for line in lines {
        line.sku.hash(&mut hasher);
        line.quantity.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::core::types::SkuId;

    /// Every list of up to `max_len` lines over SKU ids and quantities
    /// `0..values`.
    fn all_lines(max_len: usize, values: u32) -> Vec<Vec<Line>> {
        let mut all = vec![vec![]];
        let mut last = vec![vec![]];
        for _ in 0..max_len {
            let mut next = vec![];
            for lines in &last {
                for sku in 0..values {
                    for quantity in 0..values {
                        let mut longer: Vec<Line> = lines.clone();
                        longer.push(Line {
                            sku: SkuId(sku),
                            quantity,
                        });
                        next.push(longer);
                    }
                }
            }
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    fn assert_distinct<K: std::fmt::Debug>(prints: impl Iterator<Item = (u64, K)>) -> usize {
        let mut seen: HashMap<u64, K> = HashMap::new();
        for (print, request) in prints {
            if let Some(earlier) = seen.get(&print) {
                panic!("{earlier:?} and {request:?} share the print {print:#x}");
            }
            seen.insert(print, request);
        }
        seen.len()
    }

    #[test]
    fn distinct_refunds_have_distinct_prints() {
        let lines = all_lines(3, 4);
        let requests = (0..3u64).flat_map(|id| {
            let id = ReservationId::from_u64(id);
            std::iter::once((id, None)).chain(lines.iter().map(move |l| (id, Some(l.clone()))))
        });
        let prints = requests.map(|(id, lines)| (refund(id, lines.as_deref()).print, (id, lines)));
        assert_eq!(assert_distinct(prints), 3 * (1 + lines.len()));
    }

    #[test]
    fn distinct_orders_have_distinct_prints() {
        let lines = all_lines(2, 4);
        let customers = [None, Some(""), Some("a"), Some("a\0"), Some("abcdefgh")];
        let mut requests = vec![];
        for lines in &lines {
            for customer in customers {
                for (confirm, ttl_ms, split) in [(false, 0, 0), (true, 0, 0), (false, 1, 0)] {
                    requests.push((lines.clone(), customer, confirm, ttl_ms, split));
                }
                requests.push((lines.clone(), customer, false, 0, 1));
            }
        }
        let count = requests.len();
        let prints = requests.into_iter().map(|request| {
            let (lines, customer, confirm, ttl_ms, split) = &request;
            let print = order(&OrderPrint {
                lines,
                customer: *customer,
                confirm: *confirm,
                ttl_ms: *ttl_ms,
                split: *split,
            });
            (print.print, request)
        });
        assert_eq!(assert_distinct(prints), count);
    }

    #[test]
    fn an_order_and_a_refund_never_share_a_print() {
        let lines = [Line {
            sku: SkuId(0),
            quantity: 1,
        }];
        let refund = refund(ReservationId::from_u64(0), Some(&lines));
        let order = order(&OrderPrint {
            lines: &lines,
            customer: None,
            confirm: false,
            ttl_ms: 0,
            split: 0,
        });
        assert_ne!(refund.print, order.print);
    }

    #[test]
    fn a_print_from_before_the_upgrade_still_matches_its_request() {
        let lines = [Line {
            sku: SkuId(3),
            quantity: 2,
        }];
        let id = ReservationId::from_u64(7);
        let now = refund(id, Some(&lines));
        assert!(now.matches(now.print));
        assert!(now.matches(legacy_refund(id, Some(&lines))));
        let other = [Line {
            sku: SkuId(3),
            quantity: 1,
        }];
        assert!(!now.matches(refund(id, Some(&other)).print));
        assert!(!now.matches(legacy_refund(id, Some(&other))));
    }
}

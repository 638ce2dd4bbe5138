//! Reservation ids as the world sees them: unguessable, never repeated,
//! one canonical text form.
//!
//! Inside, a reservation id is `generation << 32 | slot × SHARDS + shard`:
//! dense and predictable, which is what the hold table wants and exactly
//! what a buyer guessing someone else's id wants too. Outside, the id is
//! that 64-bit value followed by 64 zero bits, as one AES-128 block
//! encrypted under a key kept per data directory (`PublicIds`): 128 bits
//! that look random, 32 lowercase hex characters. Decoding decrypts and
//! requires the 64 zero bits back, so a guessed id is valid with
//! probability 2⁻⁶⁴, and neighbouring internal ids share nothing visible.
//! AES is a permutation, so distinct internal ids (which never repeat, see
//! `Store::next_boot`) give distinct public ids, and the same key after a
//! restart gives the same public id for the same reservation.
//!
//! The key is not a signature over anything else: it only hides the
//! internal layout and makes ids unguessable. Who may act on a reservation
//! is decided by the server's roles, not by knowing its id alone.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;

use crate::core::types::ReservationId;

/// Characters in a public id's text form.
pub const PUBLIC_ID_CHARS: usize = 32;

/// A public id's text held inline (32 lowercase hex digits): the feed keeps
/// one in every reservation's event, and a `Box<str>` was an allocation a
/// purchase at every checkpoint (docs/benchmarks.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdText {
    digits: [u8; PUBLIC_ID_CHARS],
}

impl PublicIdText {
    /// `text`, if it has a public id's form (`PUBLIC_ID_CHARS` lowercase hex
    /// digits). Whether this key made it is `PublicIds::decode`'s question.
    pub fn parse(text: &str) -> Option<PublicIdText> {
        let digits: [u8; PUBLIC_ID_CHARS] = text.as_bytes().try_into().ok()?;
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        digits.iter().all(hex).then_some(PublicIdText { digits })
    }

    pub fn as_str(&self) -> &str {
        // Hex digits only (`parse`, `PublicIds::text`): `from_utf8` never
        // fails, and an empty text would show it did.
        std::str::from_utf8(&self.digits).unwrap_or_default()
    }
}

impl std::ops::Deref for PublicIdText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for PublicIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for PublicIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encodes and decodes public reservation ids under one key.
#[derive(Clone)]
pub struct PublicIds {
    cipher: Aes128,
}

impl std::fmt::Debug for PublicIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("PublicIds { .. }")
    }
}

impl PublicIds {
    pub fn new(key: [u8; 16]) -> PublicIds {
        PublicIds {
            cipher: Aes128::new(&GenericArray::from(key)),
        }
    }

    /// The 16 bytes of `id`'s public form.
    pub fn encode(&self, id: ReservationId) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&id.as_u64().to_le_bytes());
        let mut block = GenericArray::from(block);
        self.cipher.encrypt_block(&mut block);
        block.into()
    }

    /// This key's change-feed id: 64 bits of the block of all ones under
    /// the key (never a public id: its check bits are not zero), so event
    /// ids differ between data directories and stay put across restarts.
    pub fn feed_id(&self) -> u64 {
        let mut block = GenericArray::from([0xFFu8; 16]);
        self.cipher.encrypt_block(&mut block);
        let mut word = [0u8; 8];
        word.copy_from_slice(&block[..8]);
        u64::from_le_bytes(word)
    }

    /// `id`'s text form: 32 lowercase hex characters.
    pub fn text(&self, id: ReservationId) -> [u8; PUBLIC_ID_CHARS] {
        let bytes = self.encode(id);
        let mut out = [0u8; PUBLIC_ID_CHARS];
        for (half, digits) in bytes.chunks_exact(8).zip(out.chunks_exact_mut(16)) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(half);
            digits.copy_from_slice(&hex_digits(u64::from_be_bytes(eight)));
        }
        out
    }

    /// `id`'s text form, held inline.
    pub fn text_inline(&self, id: ReservationId) -> PublicIdText {
        PublicIdText {
            digits: self.text(id),
        }
    }

    /// `id`'s text form as a `String`.
    pub fn to_string(&self, id: ReservationId) -> String {
        self.with_text(id, str::to_owned)
    }

    /// `f` of `id`'s text form, borrowed: `Box::from` makes the feed's
    /// copy without a `String` in between.
    pub fn with_text<R>(&self, id: ReservationId, f: impl FnOnce(&str) -> R) -> R {
        let text = self.text(id);
        // Hex digits are ASCII, so `from_utf8` never fails. (It was
        // `from_utf8_lossy` and a `String` converted again; with the
        // outbox's text pushes, the checkpoint of a purchase fell 20,603 ->
        // 20,545 instructions, `checkpoint_bench` under callgrind.)
        f(std::str::from_utf8(&text).unwrap_or_default())
    }

    /// The reservation a text form names, or `None` when it is not one this
    /// key made: the wrong length, anything but lowercase hex (so each id
    /// has exactly one spelling), or a block whose check bits are wrong.
    pub fn decode(&self, text: &str) -> Option<ReservationId> {
        let block = self.open_block(text)?;
        let (id, check) = block.split_at(8);
        if check.iter().any(|&b| b != 0) {
            return None;
        }
        let mut raw = [0u8; 8];
        raw.copy_from_slice(id);
        Some(ReservationId::from_u64(u64::from_le_bytes(raw)))
    }

    /// A waiting room's token (`kind` 1: a place in line; 2: an
    /// admission) naming `words` (its ticket, SKU and room epoch): one
    /// block like a public id, three zero bytes as its check. A public id
    /// is never a token (its byte 12 is 0, no kind) nor the other way
    /// round (a token's bytes 8..12 are the epoch, 0 only by chance, and
    /// its kind byte is not).
    pub fn seal(&self, kind: TokenKind, words: [u32; 3]) -> String {
        let mut block = [0u8; 16];
        for (bytes, word) in block.chunks_exact_mut(4).zip(words) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        block[12] = kind as u8;
        let mut block = GenericArray::from(block);
        self.cipher.encrypt_block(&mut block);
        let mut out = String::with_capacity(PUBLIC_ID_CHARS);
        for half in block.chunks_exact(8) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(half);
            // Hex digits are ASCII.
            out.push_str(std::str::from_utf8(&hex_digits(u64::from_be_bytes(eight))).unwrap_or(""));
        }
        out
    }

    /// The words of a token of `kind` this key sealed, or `None`.
    pub fn open(&self, kind: TokenKind, text: &str) -> Option<[u32; 3]> {
        let block = self.open_block(text)?;
        if block[12] != kind as u8 || block[13..].iter().any(|&b| b != 0) {
            return None;
        }
        let mut words = [0u32; 3];
        for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
            let mut four = [0u8; 4];
            four.copy_from_slice(bytes);
            *word = u32::from_le_bytes(four);
        }
        Some(words)
    }

    /// The decrypted block of a text form: 32 lowercase hex digits.
    fn open_block(&self, text: &str) -> Option<[u8; 16]> {
        let text = text.as_bytes();
        if text.len() != PUBLIC_ID_CHARS {
            return None;
        }
        let mut block = [0u8; 16];
        // Every digit through the table, a bad one noted, not returned on:
        // no branch per character. Every confirm, cancel and read decodes
        // one: ~330 instructions with a check and return per digit, ~230
        // this way (callgrind, `FLOW=hold-confirm`). A valid digit's value
        // is under 16, `NOT_HEX` is not.
        let mut seen = 0u8;
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let (high, low) = (
                HEX_VALUE[usize::from(pair[0])],
                HEX_VALUE[usize::from(pair[1])],
            );
            seen |= high | low;
            block[i] = high << 4 | low;
        }
        if seen & NOT_HEX != 0 {
            return None;
        }
        let mut block = GenericArray::from(block);
        self.cipher.decrypt_block(&mut block);
        Some(block.into())
    }
}

/// What a sealed waiting room token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A buyer's place in line (`GET /v1/queue/{sku}/{token}`).
    Place = 1,
    /// An admission (the `Admission` header of a reservation).
    Admission = 2,
}

/// The 16 lowercase hex digits of `x`, most significant first, computed
/// in one 128-bit word: it is on the purchase path (every new reservation's
/// answer). Measured with `benches/http/callgrind.sh async 5`,
/// `PublicIds::text` costs 116 instructions per request this way and 165
/// with a digit-by-digit table loop.
fn hex_digits(x: u64) -> [u8; 16] {
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    // Spread the 16 nibbles to one byte each, in order.
    let mut y = u128::from(x);
    y = (y | (y << 32)) & 0x0000_0000_FFFF_FFFF_0000_0000_FFFF_FFFF;
    y = (y | (y << 16)) & 0x0000_FFFF_0000_FFFF_0000_FFFF_0000_FFFF;
    y = (y | (y << 8)) & 0x00FF_00FF_00FF_00FF_00FF_00FF_00FF_00FF;
    y = (y | (y << 4)) & 0x0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F;
    // Each byte n (0..=15): '0' + n, plus 39 more ('a' - '0' - 10) when
    // n > 9, which is when n + 6 carries into bit 4. No byte overflows.
    let letters = ((y + 6 * ONES) >> 4) & ONES;
    (y + 0x30 * ONES + letters * 39).to_be_bytes()
}

/// `HEX_VALUE`'s entry for a byte that is not a lowercase hex digit.
const NOT_HEX: u8 = 0xF0;

/// Each byte's value as a lowercase hex digit, or `NOT_HEX`.
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PublicIds {
        PublicIds::new(*b"0123456789abcdef")
    }

    #[test]
    fn an_inline_text_is_the_text_and_parses_only_that_form() {
        let ids = PublicIds::new([3; 16]);
        for raw in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = ReservationId::from_u64(raw);
            let inline = ids.text_inline(id);
            assert_eq!(inline.as_str(), ids.to_string(id));
            assert_eq!(PublicIdText::parse(&inline), Some(inline));
            assert_eq!(format!("{inline}"), ids.to_string(id));
        }
        let good = "0123456789abcdef0123456789abcdef";
        assert!(PublicIdText::parse(good).is_some());
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "é123456789abcdef0123456789abcde",
        ] {
            assert_eq!(PublicIdText::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_round_trip_and_are_neither_ids_nor_each_other() {
        let ids = ids();
        let words = [7, 3, 0xdead_beef];
        let place = ids.seal(TokenKind::Place, words);
        assert_eq!(place.len(), PUBLIC_ID_CHARS);
        assert_eq!(ids.open(TokenKind::Place, &place), Some(words));
        assert_eq!(ids.open(TokenKind::Admission, &place), None);
        assert_eq!(ids.decode(&place), None);
        let admission = ids.seal(TokenKind::Admission, words);
        assert_eq!(ids.open(TokenKind::Admission, &admission), Some(words));
        let id = ids.to_string(ReservationId::from_u64(5));
        assert_eq!(ids.open(TokenKind::Place, &id), None);
        let other = PublicIds::new(*b"fedcba9876543210");
        assert_eq!(other.open(TokenKind::Place, &place), None);
    }

    #[test]
    fn a_public_id_round_trips_and_has_one_spelling() {
        let ids = ids();
        for raw in [0, 1, 64, u64::from(u32::MAX), u64::MAX] {
            let id = ReservationId::from_u64(raw);
            let text = ids.to_string(id);
            assert_eq!(text.len(), PUBLIC_ID_CHARS);
            assert_eq!(ids.decode(&text), Some(id));
            assert_eq!(ids.decode(&text.to_uppercase()), None, "{text}");
            assert_eq!(ids.decode(&format!("+{}", &text[1..])), None);
            assert_eq!(ids.decode(&text[1..]), None);
            assert_eq!(ids.decode(&format!("{text}0")), None);
        }
        for bad in ["", "1", "+1", "0000000000000001", "zz"] {
            assert_eq!(ids.decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_digits_match_the_formatter() {
        let mut x = 0x0123_4567_89ab_cdefu64;
        for _ in 0..10_000 {
            assert_eq!(hex_digits(x), format!("{x:016x}").as_bytes(), "{x:x}");
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        for x in [0, u64::MAX, 0x9999_9999_aaaa_aaaa, 0xf0f0_0f0f_a5a5_5a5a] {
            assert_eq!(hex_digits(x), format!("{x:016x}").as_bytes(), "{x:x}");
        }
    }

    /// Every byte in every place of a valid id: only the id's own digit
    /// decodes (so each id still has exactly one spelling).
    #[test]
    fn any_other_byte_in_any_place_is_refused() {
        let ids = ids();
        let id = ReservationId::from_u64(0x0123_4567_89ab_cdef);
        let text = ids.text(id);
        for place in 0..PUBLIC_ID_CHARS {
            for byte in 0..=u8::MAX {
                let mut changed = text;
                changed[place] = byte;
                let Ok(changed) = std::str::from_utf8(&changed) else {
                    continue;
                };
                let decoded = ids.decode(changed);
                if byte == text[place] {
                    assert_eq!(decoded, Some(id));
                } else if byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte) {
                    // Another id's spelling: its check bits are wrong.
                    assert_eq!(decoded, None, "{changed}");
                } else {
                    assert_eq!(ids.open_block(changed), None, "{changed}");
                }
            }
        }
    }

    #[test]
    fn another_key_decodes_nothing() {
        let text = ids().to_string(ReservationId::from_u64(7));
        assert_eq!(PublicIds::new([9; 16]).decode(&text), None);
    }

    #[test]
    fn neighbouring_internal_ids_share_nothing_visible() {
        let ids = ids();
        let mut previous = ids.encode(ReservationId::from_u64(0));
        for raw in 1..10_000u64 {
            let next = ids.encode(ReservationId::from_u64(raw));
            let low = u64::from_le_bytes(previous[..8].try_into().unwrap())
                ^ u64::from_le_bytes(next[..8].try_into().unwrap());
            let high = u64::from_le_bytes(previous[8..].try_into().unwrap())
                ^ u64::from_le_bytes(next[8..].try_into().unwrap());
            // Both halves change, across their whole width; a random
            // 128-bit pair differs in 64 bits on average (sd 5.7), so
            // fewer than 32 means structure, not chance (p < 1e-9).
            assert!(low != 0 && high != 0, "{raw}");
            let differing = low.count_ones() + high.count_ones();
            assert!(differing >= 32, "{raw}: only {differing} bits differ");
            // Spread over at least 64 of the 128 positions.
            let diff = u128::from(low) | u128::from(high) << 64;
            let span = 128 - diff.leading_zeros() - diff.trailing_zeros();
            assert!(span >= 64, "{raw}: differing bits span only {span}");
            previous = next;
        }
    }
}

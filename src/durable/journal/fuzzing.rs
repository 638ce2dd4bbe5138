//! The body of the decoder fuzz target (`fuzz/fuzz_targets/segment.rs`),
//! kept in the library so a stable smoke test (`tests/fuzz_smoke.rs`) runs
//! the same checks on every `cargo test`.

use super::segment::{scan, MAX_FRAME_PAYLOAD};
use crate::durable::event::Event;

/// Feeds arbitrary bytes to the segment scanner (as a last and as a middle
/// segment) and to the event decoder. Panics if either panics, or if what
/// they report is inconsistent: offsets out of order or out of bounds, a
/// torn tail that does not reach the end, an event that does not survive
/// re-encoding.
pub fn check_decoder(data: &[u8]) {
    for is_last in [true, false] {
        let mut previous: Option<u64> = None;
        let result = scan(data, 0, "fuzz", is_last, 0, |offset, payload| {
            assert!(previous.is_none_or(|p| offset > p), "frames out of order");
            assert!(
                offset as usize + payload.len() <= data.len(),
                "frame beyond the input"
            );
            assert!(payload.len() <= MAX_FRAME_PAYLOAD);
            previous = Some(offset);
            check_event(payload);
            Ok(())
        });
        match result {
            Ok(found) => {
                assert!(found.valid_end as usize <= data.len());
                match found.torn {
                    Some(torn) => {
                        assert!(is_last, "only a last segment may have a torn tail");
                        assert_eq!(torn.offset + torn.dropped, data.len() as u64);
                        assert_eq!(torn.offset, found.valid_end);
                    }
                    None => assert_eq!(found.valid_end as usize, data.len()),
                }
            }
            Err(corruption) => assert!(corruption.offset as usize <= data.len()),
        }
    }
    check_event(data);
}

fn check_event(payload: &[u8]) {
    if let Ok(event) = Event::decode(payload) {
        let mut again = Vec::new();
        event.encode(&mut again);
        assert_eq!(
            Event::decode(&again).as_ref(),
            Ok(&event),
            "re-encoding changed the event"
        );
    }
}

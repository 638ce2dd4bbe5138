//! Loom models of the journal's epoch cut (`hotstock::durable::journal::lanes`): the
//! protocol that makes each batch a causal prefix without a global sequence
//! counter.
#![cfg(loom)]

use hotstock::models::Lanes;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Payloads of the frames in a batch, in order.
fn payloads(batch: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= batch.len() {
        let len =
            u32::from_le_bytes([batch[at], batch[at + 1], batch[at + 2], batch[at + 3]]) as usize;
        out.extend_from_slice(&batch[at + 8..at + 8 + len]);
        at += 8 + len;
    }
    out
}

fn never_full() -> Result<(), ()> {
    panic!("lanes are large enough in these models")
}

/// Race: two appends on two lanes against a cut. Every frame tagged with
/// the closed epoch (or earlier) is in the batch, and no later one is.
#[test]
fn cut_takes_exactly_the_closed_epoch() {
    loom::model(|| {
        let lanes = Arc::new(Lanes::new(2, 32));
        let appenders: Vec<_> = [b'a', b'b']
            .into_iter()
            .enumerate()
            .map(|(lane, byte)| {
                let lanes = lanes.clone();
                thread::spawn(move || {
                    (
                        byte,
                        lanes
                            .append(lane, |out| out.push(byte), never_full)
                            .unwrap(),
                    )
                })
            })
            .collect();
        let mut batch = Vec::new();
        let (closed, _) = lanes.cut(&mut batch);
        let first = payloads(&batch);
        let tags: Vec<(u8, u64)> = appenders.into_iter().map(|h| h.join().unwrap()).collect();
        let (_, _) = lanes.cut(&mut batch);
        let second = payloads(&batch);
        for (byte, tag) in tags {
            if tag <= closed {
                assert!(
                    first.contains(&byte),
                    "frame tagged {tag} missing from batch {closed}"
                );
            } else {
                assert!(
                    !first.contains(&byte) && second.contains(&byte),
                    "frame tagged {tag} in batch {closed}"
                );
            }
        }
    });
}

/// Race: a causal chain across lanes ("a" is appended, then seen by another
/// thread, which appends "b") against a cut. A batch holding "b" must hold
/// "a": a crash after any batch loses a suffix, never a hole.
#[test]
fn batches_are_a_causal_prefix() {
    loom::model(|| {
        let lanes = Arc::new(Lanes::new(2, 32));
        let a_done = Arc::new(AtomicBool::new(false));
        let first = {
            let (lanes, a_done) = (lanes.clone(), a_done.clone());
            thread::spawn(move || {
                lanes.append(0, |out| out.push(b'a'), never_full).unwrap();
                a_done.store(true, Ordering::Release);
            })
        };
        let second = {
            let (lanes, a_done) = (lanes.clone(), a_done.clone());
            thread::spawn(move || {
                if a_done.load(Ordering::Acquire) {
                    lanes.append(1, |out| out.push(b'b'), never_full).unwrap();
                }
            })
        };
        let mut batch = Vec::new();
        lanes.cut(&mut batch);
        let cut = payloads(&batch);
        first.join().unwrap();
        second.join().unwrap();
        if cut.contains(&b'b') {
            assert!(cut.contains(&b'a'), "batch has b without a: {cut:?}");
        }
    });
}

/// Race: two appends into a half with room for only one frame, against a
/// cut. The one that does not fit gives up (as if its wait failed); the cut
/// must copy only whole frames that were written, never the unwritten room
/// the refused reservation pointed past.
#[test]
fn a_reservation_that_does_not_fit_is_never_copied() {
    loom::model(|| {
        // One frame of a 1-byte payload is 9 bytes; 12 bytes hold one.
        let lanes = Arc::new(Lanes::new(1, 12));
        let appenders: Vec<_> = [b'a', b'b']
            .into_iter()
            .map(|byte| {
                let lanes = lanes.clone();
                thread::spawn(move || (byte, lanes.append(0, |out| out.push(byte), || Err(()))))
            })
            .collect();
        let mut batch = Vec::new();
        let (closed, _) = lanes.cut(&mut batch);
        let mut seen = payloads(&batch);
        assert_eq!(
            batch.len(),
            9 * seen.len(),
            "the batch holds whole frames only"
        );
        let outcomes: Vec<(u8, Result<u64, ()>)> =
            appenders.into_iter().map(|h| h.join().unwrap()).collect();
        lanes.cut(&mut batch);
        seen.extend(payloads(&batch));
        for (byte, outcome) in outcomes {
            match outcome {
                Ok(tag) => {
                    assert!(
                        seen.contains(&byte),
                        "appended frame tagged {tag} lost (closed {closed})"
                    );
                }
                Err(()) => assert!(!seen.contains(&byte), "refused frame appeared"),
            }
        }
    });
}

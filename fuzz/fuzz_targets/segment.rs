#![no_main]
//! Arbitrary bytes into the journal's segment scanner and event decoder.
//! The checks live in `hotstock::durable::journal::fuzzing::check_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hotstock::durable::journal::fuzzing::check_decoder(data);
});

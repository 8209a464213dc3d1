//! The engine's request-head parser, framing checks and body decoding.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    afterward::fuzzing::request_head(bytes);
});

//! Query-string parsing and conversion into typed parameters.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let query = String::from_utf8_lossy(bytes);
    afterward::fuzzing::handle("GET", &format!("/items/7?{query}"), b"");
});

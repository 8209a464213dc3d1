//! JSON body extraction into a value and into a typed tuple.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    afterward::fuzzing::handle("POST", "/items", bytes);
    afterward::fuzzing::handle("POST", "/any", bytes);
});

//! Routing and percent-decoding of paths, through the real router.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let target = String::from_utf8_lossy(bytes);
    let target = if target.starts_with('/') { target.into_owned() } else { format!("/{target}") };
    afterward::fuzzing::handle("GET", &target, b"");
});

#![no_main]
// See src/fuzzing.rs for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| image_bouncer::fuzzing::bundle(data));

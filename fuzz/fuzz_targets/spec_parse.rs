//! `cargo fuzz run spec_parse`: see docs/fuzzing.md and `tollgate_fuzz::spec_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::spec_parse(data));

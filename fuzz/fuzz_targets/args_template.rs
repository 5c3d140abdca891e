//! `cargo fuzz run args_template`: see docs/fuzzing.md and `tollgate_fuzz::args_template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::args_template(data));

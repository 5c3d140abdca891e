//! `cargo fuzz run jsonrpc`: see docs/fuzzing.md and `tollgate_fuzz::jsonrpc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::jsonrpc(data));

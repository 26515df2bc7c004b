#![no_main]
// The body and its invariants: lanyard::fuzzing::request_stream (shared with the
// corpus replay in agent/tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| lanyard::fuzzing::request_stream(data));

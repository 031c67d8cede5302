#![no_main]
// The entry and the properties it checks live in the library (src/fuzzing.rs), shared with
// the corpus replay in tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| acs_emulator::fuzzing::emulator_token(data));

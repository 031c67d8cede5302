//! Entry points for the fuzz targets in `fuzz/` and for the operator's `tests/fuzz_replay.rs`,
//! which feeds them the saved corpus on stable Rust. One function per parser of this crate
//! that takes outside input; each takes raw bytes, must never panic, and panics only when a
//! property every input must have is broken (so the fuzzer reports it as a crash). Not an API:
//! hidden from the docs. `fuzz/README.md` says how to run the fuzzer and add to the corpus.

use crate::api::GoDuration;
use acs_client::fuzzing::{Entry, text};

/// This crate's targets, by the name of their corpus folder (`fuzz/corpus/<name>/`); the
/// client's and the emulator's are in `acs_client::fuzzing` and `acs_emulator::fuzzing`.
pub const TARGETS: &[(&str, Entry)] = &[("go_duration", go_duration)];

/// Go durations (`1h30m`): what parses prints as it was written and survives JSON.
pub fn go_duration(data: &[u8]) {
    let Some(input) = text(data) else { return };
    match input.parse::<GoDuration>() {
        Ok(duration) => {
            assert_eq!(duration.to_string(), input);
            let json = serde_json::to_string(&duration).expect("a duration serializes");
            let back: GoDuration = serde_json::from_str(&json).expect("and reads back");
            assert_eq!(back, duration);
        }
        Err(error) => {
            // The message quotes the input; the CRD schema bounds its length before it.
            let _ = error.to_string();
        }
    }
}

//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/*`) through the same entry functions
//! the cargo-fuzz targets call (each crate's `fuzzing` module), on stable Rust, so every
//! seed and every input the fuzzer found and kept is checked at each `cargo test`.

use acs_client::fuzzing::Entry;
use acs_emulator::fuzzing::signature_verdict;
use std::path::{Path, PathBuf};

/// Every crate's targets: the client's, the emulator's and the operator's.
fn targets() -> impl Iterator<Item = &'static (&'static str, Entry)> {
    acs_client::fuzzing::TARGETS
        .iter()
        .chain(acs_emulator::fuzzing::TARGETS)
        .chain(acs_identity_operator::fuzzing::TARGETS)
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_seed_corpus_and_every_file_passes() {
    let mut total = 0;
    for (target, entry) in targets() {
        let files = corpus(target);
        assert!(
            files.iter().any(|f| f
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")),
            "{target} has no seed files"
        );
        for file in &files {
            let data = std::fs::read(file).unwrap();
            // A panic names the file, so a failing replay says which input to look at.
            let outcome = std::panic::catch_unwind(|| entry(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
        }
        total += files.len();
    }
    assert!(total >= targets().count());
}

#[test]
fn every_fuzz_target_has_a_cargo_fuzz_binary() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    for (target, _) in targets() {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] {target}"
        );
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(source.is_file(), "{} is missing", source.display());
    }
}

/// The signed seeds reach the end of the HMAC check: a fuzzer starting from them explores
/// the signature comparison, not only the header parsing.
#[test]
fn signed_seeds_pass_the_signature_check_and_a_changed_body_does_not() {
    let files = corpus("signature_header");
    let verdict = |name: &str| {
        let file = files.iter().find(|f| f.ends_with(name)).unwrap();
        signature_verdict(&std::fs::read(file).unwrap()).unwrap()
    };
    for name in ["seed-00", "seed-01", "seed-02"] {
        assert_eq!(verdict(name), Ok(()), "{name}");
    }
    assert_eq!(
        verdict("seed-03"),
        Err("Request 'x-ms-content-sha256' differs from generated content hash.".into())
    );
}

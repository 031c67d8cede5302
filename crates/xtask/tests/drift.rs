//! Every generated copy in the repository is what `cargo xtask generate` makes from its source:
//! an edit to a copy instead of its source, or a source changed without regenerating, fails.

#[test]
fn every_generated_file_is_up_to_date() {
    let root = xtask::repo_root();
    let stale = xtask::stale(&root).unwrap();
    assert!(
        stale.is_empty(),
        "stale generated files (run `cargo xtask generate`):\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_generated_file_names_its_source_and_has_contents() {
    for generated in xtask::generated(&xtask::repo_root()).unwrap() {
        assert!(!generated.source.is_empty(), "{}", generated.path);
        assert!(!generated.contents.trim().is_empty(), "{}", generated.path);
    }
}

//! The Dockerfile builds the workspace: `cargo build --locked` needs every member's manifest,
//! and a member added without its COPY line and stub breaks the image build (which CI does not
//! run: no container engine here). This keeps the Dockerfile's list equal to the workspace's.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

/// The `crates/NAME` members of the workspace, from the root manifest's `members` list.
fn crate_members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members list in the workspace manifest");
    let members: Vec<String> = line
        .split('"')
        .filter_map(|s| s.strip_prefix("crates/"))
        .map(str::to_string)
        .collect();
    assert!(!members.is_empty(), "no crates/ members found in {line}");
    members
}

#[test]
fn the_image_build_copies_and_stubs_every_workspace_member() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // The first `for c in ...;` loop gives every member a stub lib.rs.
    let stubbed: Vec<&str> = dockerfile
        .lines()
        .find(|l| l.contains("for c in"))
        .expect("the stub loop")
        .split("for c in")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let mut missing = Vec::new();
    for member in crate_members() {
        let copy = format!("COPY crates/{member}/Cargo.toml crates/{member}/");
        if !dockerfile.contains(&copy) {
            missing.push(format!("no `{copy}`"));
        }
        if !stubbed.contains(&member.as_str()) {
            missing.push(format!("{member} not in the stub loop {stubbed:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "the Dockerfile misses members: {missing:?}"
    );
}

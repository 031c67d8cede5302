//! The CRDs committed under crds/ are exactly what the Rust types generate.

#[test]
fn committed_crds_match_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/acsoperator.io.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/acsoperator.io.yaml exists");
    let generated = acs_identity_operator::api::crds_yaml();
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run --bin acs-identity-operator -- crds > crds/acsoperator.io.yaml`"
    );
}

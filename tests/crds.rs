//! The CRDs committed under crds/ are exactly what the Rust types generate, and document
//! every field (what `kubectl explain` shows).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde::Deserialize;

const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/acsoperator.io.yaml");

#[test]
fn committed_crds_match_the_rust_types() {
    let committed = std::fs::read_to_string(CRD_FILE).expect("crds/acsoperator.io.yaml exists");
    let generated = acs_identity_operator::api::crds_yaml();
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run --bin acs-identity-operator -- crds > crds/acsoperator.io.yaml`"
    );
}

#[test]
fn every_crd_field_has_a_description() {
    let crds = committed_crds();
    assert_eq!(
        crds.len(),
        3,
        "AcsIdentity, AcsConnection, ClusterAcsConnection"
    );
    let mut undocumented = Vec::new();
    for crd in &crds {
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("every version has a schema");
            let root = format!("{}/{}", crd.spec.names.kind, version.name);
            if !has_description(schema) {
                undocumented.push(root.clone());
            }
            undocumented_properties(schema, &root, &mut undocumented);
        }
    }
    assert!(
        undocumented.is_empty(),
        "fields without a description (a doc comment on the Rust field): {undocumented:#?}"
    );
}

/// The checker itself: it must find a missing description however deep it is.
#[test]
fn description_check_finds_nested_undocumented_fields() {
    let schema: JSONSchemaProps = serde_json::from_value(serde_json::json!({
        "description": "root",
        "type": "object",
        "properties": {
            "spec": {
                "description": "spec",
                "type": "object",
                "properties": {
                    "list": {
                        "description": "a list",
                        "type": "array",
                        "items": { "type": "object", "properties": { "deep": { "type": "string" } } }
                    },
                    "map": {
                        "description": "a map",
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": { "value": { "description": " ", "type": "string" } }
                        }
                    }
                }
            },
            "status": { "type": "object" }
        }
    }))
    .unwrap();
    let mut undocumented = Vec::new();
    undocumented_properties(&schema, "K", &mut undocumented);
    assert_eq!(
        undocumented,
        ["K.spec.list[].deep", "K.spec.map{}.value", "K.status"]
    );
}

/// Paths below `schema` of properties with no (or a blank) description.
fn undocumented_properties(schema: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    for (name, property) in schema.properties.iter().flatten() {
        let path = format!("{path}.{name}");
        if !has_description(property) {
            out.push(path.clone());
        }
        undocumented_properties(property, &path, out);
    }
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => {
            undocumented_properties(items, &format!("{path}[]"), out)
        }
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            for items in items {
                undocumented_properties(items, &format!("{path}[]"), out);
            }
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        undocumented_properties(values, &format!("{path}{{}}"), out);
    }
}

fn has_description(schema: &JSONSchemaProps) -> bool {
    schema
        .description
        .as_deref()
        .is_some_and(|d| !d.trim().is_empty())
}

fn committed_crds() -> Vec<CustomResourceDefinition> {
    let text = std::fs::read_to_string(CRD_FILE).expect("crds/acsoperator.io.yaml exists");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| CustomResourceDefinition::deserialize(document).expect("a CRD"))
        .collect()
}

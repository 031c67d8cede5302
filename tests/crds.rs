//! The CRDs committed under crds/ (generated from the Rust types by `cargo xtask generate`,
//! which crates/xtask's drift test keeps current) are all that directory holds (so `kubectl apply -f crds/` installs them), and document every field
//! (what `kubectl explain` shows).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde::Deserialize;
use std::path::PathBuf;

const CRDS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");

/// `kubectl apply -f crds/` applies every file of the directory: anything but a CRD there
/// (a kustomization.yaml, say) makes it fail.
#[test]
fn crds_directory_holds_only_custom_resource_definitions() {
    let files = crd_files();
    assert!(!files.is_empty(), "no manifests in {CRDS_DIR}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
            assert_eq!(
                (value["apiVersion"].as_str(), value["kind"].as_str()),
                (
                    Some("apiextensions.k8s.io/v1"),
                    Some("CustomResourceDefinition")
                ),
                "{} holds something other than a CRD",
                path.display()
            );
        }
    }
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

fn crd_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CRDS_DIR)
        .expect("crds/ exists")
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn committed_crds() -> Vec<CustomResourceDefinition> {
    crd_files()
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("readable");
            serde_yaml::Deserializer::from_str(&text)
                .map(|document| {
                    CustomResourceDefinition::deserialize(document)
                        .unwrap_or_else(|e| panic!("{}: not a CRD: {e}", path.display()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

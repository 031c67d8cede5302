//! `AcsConnection` (namespaced) and `ClusterAcsConnection` (cluster-wide, optionally limited to
//! some namespaces): how to reach one ACS resource, and as whom. Either a connection string
//! (endpoint and access key) in a Secret, or an endpoint and an Entra ID workload identity
//! (the operator pod's federated token exchanged for a bearer token). They hold references,
//! never the secret.

// kube-derive's repeated `printcolumn(...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "acsoperator.io",
    version = "v1alpha1",
    kind = "AcsConnection",
    namespaced,
    doc = "How to reach one ACS resource, for AcsIdentities in this namespace.",
    status = "AcsConnectionStatus",
    shortname = "acsconn",
    category = "acs",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct AcsConnectionSpec {
    #[serde(flatten)]
    pub connection: ConnectionSettings<SecretKeyRef>,
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "acsoperator.io",
    version = "v1alpha1",
    kind = "ClusterAcsConnection",
    doc = "How to reach one ACS resource, for AcsIdentities in any allowed namespace.",
    status = "AcsConnectionStatus",
    shortname = "cacsconn",
    category = "acs",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAcsConnectionSpec {
    #[serde(flatten)]
    pub connection: ConnectionSettings<NamespacedSecretKeyRef>,
    /// Which namespaces' AcsIdentities may use this connection. Absent: all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// What both kinds of connection hold: how to authenticate, and which CAs to trust. `R`
/// names a Secret key: [`SecretKeyRef`] in the connection's namespace, or
/// [`NamespacedSecretKeyRef`] in any namespace.
///
/// Flattened into each spec: its validation rules ([`connection_rules`]) and properties land
/// on the spec object. It has no schema description, which would become the spec's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", bound(deserialize = "R: Deserialize<'de>"))]
#[schemars(description = "", transform = connection_rules)]
pub struct ConnectionSettings<R> {
    /// The Secret key holding `endpoint=https://…;accesskey=…`: in the connection's namespace
    /// for an AcsConnection, in the named namespace for a ClusterAcsConnection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string_secret_ref: Option<R>,
    /// The resource's endpoint (`https://<name>.communication.azure.com/`), with
    /// workloadIdentity instead of a connection string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https://[^/?#\s]+"))]
    pub endpoint: Option<String>,
    /// Authenticate with an Entra ID workload identity (bearer tokens) instead of an access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentitySpec>,
    /// PEM certificates to trust for the endpoint besides the system roots (e.g. the emulator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Like caBundle, read from a Secret key (in the same namespace as for
    /// connectionStringSecretRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<R>,
}

/// The CEL rules of [`ConnectionSettings`]; the operator checks the same at run time, for
/// objects stored before the rules or by an API server without CEL.
fn connection_rules(schema: &mut schemars::Schema) {
    let rules = [
        Rule::new("!(has(self.caBundle) && has(self.caSecretRef))")
            .message("caBundle and caSecretRef are mutually exclusive"),
        Rule::new(
            "has(self.connectionStringSecretRef) ? !has(self.endpoint) && !has(self.workloadIdentity) : has(self.endpoint) && has(self.workloadIdentity)",
        )
        .message("set either connectionStringSecretRef, or endpoint and workloadIdentity"),
    ];
    for rule in rules {
        kube::core::validate(schema, rule).expect("a CEL rule serializes");
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default = "default_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretKeyRef {
    #[schemars(length(min = 1))]
    pub namespace: String,
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default = "default_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// An Entra ID workload identity (AKS): the operator exchanges its pod's federated
/// service-account token (`AZURE_FEDERATED_TOKEN_FILE`, at `AZURE_AUTHORITY_HOST`) for bearer
/// tokens of this application. The application needs a data-plane role on the ACS resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentitySpec {
    /// Client (application) id of the Entra identity. Default: the operator pod's
    /// `AZURE_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_id: Option<String>,
    /// Tenant (directory) id or domain. Default: the operator pod's `AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9.-]+$"))]
    pub tenant_id: Option<String>,
}

fn default_key() -> String {
    "connectionString".into()
}

/// A namespace may use the connection if it is listed by name or matches the selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcsConnectionStatus {
    /// The endpoint in use, from the connection string (never the key) or the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared settings are flattened: the wire format has every field on the spec itself.
    #[test]
    fn specs_keep_their_fields_at_the_top_level() {
        let cluster = serde_json::json!({
            "connectionStringSecretRef": {"namespace": "p", "name": "acs", "key": "cs"},
            "caBundle": "PEM",
            "allowedNamespaces": {"names": ["team"]},
        });
        let spec: ClusterAcsConnectionSpec = serde_json::from_value(cluster.clone()).unwrap();
        assert_eq!(spec.connection.ca_bundle.as_deref(), Some("PEM"));
        assert_eq!(serde_json::to_value(&spec).unwrap(), cluster);
        let namespaced = serde_json::json!({
            "endpoint": "https://r.communication.azure.com/",
            "workloadIdentity": {"clientId": "c"},
            "caSecretRef": {"name": "ca", "key": "connectionString"},
        });
        let spec: AcsConnectionSpec = serde_json::from_value(namespaced.clone()).unwrap();
        assert_eq!(spec.connection.ca_secret_ref.as_ref().unwrap().name, "ca");
        assert_eq!(serde_json::to_value(&spec).unwrap(), namespaced);
    }
}

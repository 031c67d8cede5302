//! `AcsConnection` (namespaced) and `ClusterAcsConnection` (cluster-wide, optionally limited to
//! some namespaces): how to reach one ACS resource, and as whom. Either a connection string
//! (endpoint and access key) in a Secret, or an endpoint and an Entra ID workload identity
//! (a ServiceAccount token of the connection's namespace, or for a ClusterAcsConnection the
//! operator pod's own, exchanged for a bearer token). They hold references, never the secret.

// kube-derive's repeated `printcolumn(...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

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
/// How to authenticate to the ACS resource (a connection string, or an endpoint and a workload
/// identity), and which CAs to trust for it. Secrets are read from this namespace.
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
/// How to authenticate to the ACS resource (a connection string, or an endpoint and a workload
/// identity), which CAs to trust for it, and which namespaces may use it.
pub struct ClusterAcsConnectionSpec {
    #[serde(flatten)]
    pub connection: ConnectionSettings<NamespacedSecretKeyRef>,
    /// Which namespaces' AcsIdentities may use this connection. Absent: all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// Which namespaces may adopt an existing ACS identity (an AcsIdentity's spec.identityId)
    /// through this connection. Absent: none, so identities reached through it are only the
    /// ones the operator creates. Adopting takes over an identity whoever created it: allow
    /// it only for namespaces trusted with the whole ACS resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption_allowed_namespaces: Option<AllowedNamespaces>,
    /// At most this many ACS identities of one namespace may live on this connection's
    /// resource (those it holds there, wherever their connectionRef points now, and those
    /// being deleted until their cleanup is done), the oldest first; the others wait with
    /// reason IdentityLimitReached. What a namespace creates here is deleted with its
    /// AcsIdentity (skip-cleanup and Retain are not honoured) unless it may adopt here.
    /// Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_identities_per_namespace: Option<u32>,
}

/// What both kinds of connection hold: how to authenticate, and which CAs to trust. `R`
/// names a Secret key: [`SecretKeyRef`] in the connection's namespace, or
/// [`NamespacedSecretKeyRef`] in any namespace.
///
/// Flattened into each spec: its validation rules ([`connection_rules`]) and properties land
/// on the spec object. It has no schema description, which would become the spec's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", bound(deserialize = "R: DeserializeOwned"))]
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
    /// PEM certificates to trust for the endpoint besides the system roots (e.g. the emulator's),
    /// at most 64 KiB (about 40 certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CA_BUNDLE), regex(pattern = r"^[\t\n\r -~]*$"))]
    pub ca_bundle: Option<String>,
    /// Like caBundle, read from a Secret key (in the same namespace as for
    /// connectionStringSecretRef).
    #[serde(
        default,
        deserialize_with = "ca_secret_ref",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(transform = ca_secret_ref_schema)]
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

/// A key of a Secret in the connection's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A key of a Secret in a named namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// An Entra ID workload identity (AKS): a Kubernetes service-account token exchanged for bearer
/// tokens of an Entra application, which needs a data-plane role on the ACS resource.
///
/// An AcsConnection names a ServiceAccount of its own namespace (`serviceAccountName`): the
/// operator requests a token for it (TokenRequest, audience `api://AzureADTokenExchange`) and
/// exchanges that, so Entra accepts it only for applications federated with that
/// ServiceAccount. The operator pod's own identity (`AZURE_FEDERATED_TOKEN_FILE`) serves
/// ClusterAcsConnections only, which set no serviceAccountName.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentitySpec {
    /// Client (application) id of the Entra identity. Default: for an AcsConnection, the
    /// ServiceAccount's `azure.workload.identity/client-id` annotation; for a
    /// ClusterAcsConnection, the operator pod's `AZURE_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_id: Option<String>,
    /// Tenant (directory) id or domain. Default: the ServiceAccount's
    /// `azure.workload.identity/tenant-id` annotation (AcsConnection), else the operator pod's
    /// `AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9.-]+$"))]
    pub tenant_id: Option<String>,
    /// AcsConnection only, and required there: the ServiceAccount of the connection's
    /// namespace whose token is exchanged (its application must have a federated credential
    /// for `system:serviceaccount:<namespace>:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
}

/// The most bytes of PEM a connection may trust (its `caBundle`, or what its `caSecretRef`
/// names, checked when read). Debian's whole Mozilla bundle, 144 roots, is 215 KiB (1.5 KiB a
/// certificate); a private CA with its intermediates is 2 to 6 KiB, and the system roots are
/// trusted anyway. 64 KiB holds about 40 certificates: every private chain, and a bound on
/// what each of a tenant's connections can make the operator keep (in the watch cache, and
/// parsed in its client).
pub const MAX_CA_BUNDLE: usize = 64 * 1024;

/// The key of connectionStringSecretRef when none is given.
const CONNECTION_STRING_KEY: &str = "connectionString";
/// The key of caSecretRef when none is given: where cert-manager and `kubernetes.io/tls`
/// Secrets keep the CA.
const CA_KEY: &str = "ca.crt";

fn default_key() -> String {
    CONNECTION_STRING_KEY.into()
}

/// caSecretRef shares its type with connectionStringSecretRef but not its default key: a
/// missing `key` is `ca.crt` here (the API server applies the schema's default as well; this
/// covers objects it did not default).
fn ca_secret_ref<'de, D, R>(deserializer: D) -> Result<Option<R>, D::Error>
where
    D: Deserializer<'de>,
    R: DeserializeOwned,
{
    let Some(mut value) = Option::<serde_json::Value>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(fields) = value.as_object_mut() {
        fields.entry("key").or_insert_with(|| CA_KEY.into());
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The schema half of [`ca_secret_ref`]: `key`'s default and description name `ca.crt`.
fn ca_secret_ref_schema(schema: &mut schemars::Schema) {
    let key = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("key"))
        .and_then(|k| k.as_object_mut())
        .expect("caSecretRef's schema is inlined and has a key property");
    key.insert("default".into(), CA_KEY.into());
    key.insert(
        "description".into(),
        format!("Key in the Secret's data (default {CA_KEY}).").into(),
    );
}

/// A namespace may use the connection if it is listed by name or matches the selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Namespaces allowed by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What the operator found when it checked the connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
// A new object reads `status: {observedGeneration: 0}` (the API server fills it in) until the
// operator first writes its status: kstatus (Flux, kubectl wait) and the Argo CD health check
// then see "not yet observed" instead of an object without status, which they take as done.
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct AcsConnectionStatus {
    /// The endpoint in use, from the connection string (never the key) or the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True (reason Valid) when the connection is usable as written, checked without
    /// calling ACS; otherwise False, the reason says what is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA Secret's key is `ca.crt` unless named; a connection string's is `connectionString`.
    #[test]
    fn secret_keys_default_by_what_they_hold() {
        let spec: AcsConnectionSpec = serde_json::from_value(serde_json::json!({
            "connectionStringSecretRef": {"name": "acs"},
            "caSecretRef": {"name": "ca"},
        }))
        .unwrap();
        let connection = spec.connection;
        assert_eq!(
            connection.connection_string_secret_ref.unwrap().key,
            "connectionString"
        );
        assert_eq!(connection.ca_secret_ref.unwrap().key, "ca.crt");

        let spec: ClusterAcsConnectionSpec = serde_json::from_value(serde_json::json!({
            "connectionStringSecretRef": {"namespace": "p", "name": "acs"},
            "caSecretRef": {"namespace": "p", "name": "ca"},
        }))
        .unwrap();
        let connection = spec.connection;
        assert_eq!(
            connection.connection_string_secret_ref.unwrap().key,
            "connectionString"
        );
        assert_eq!(connection.ca_secret_ref.unwrap().key, "ca.crt");

        let named: AcsConnectionSpec = serde_json::from_value(serde_json::json!({
            "connectionStringSecretRef": {"name": "acs"},
            "caSecretRef": {"name": "ca", "key": "bundle.pem"},
        }))
        .unwrap();
        assert_eq!(named.connection.ca_secret_ref.unwrap().key, "bundle.pem");
        let absent: AcsConnectionSpec = serde_json::from_value(serde_json::json!({
            "connectionStringSecretRef": {"name": "acs"},
        }))
        .unwrap();
        assert_eq!(absent.connection.ca_secret_ref, None);
    }

    /// The API server applies the same defaults, from the CRD schemas.
    #[test]
    fn crd_schemas_default_secret_keys_by_what_they_hold() {
        use kube::CustomResourceExt;
        for crd in [AcsConnection::crd(), ClusterAcsConnection::crd()] {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
            let default = |field: &str| spec[field]["properties"]["key"]["default"].clone();
            assert_eq!(default("connectionStringSecretRef"), "connectionString");
            assert_eq!(default("caSecretRef"), "ca.crt");
        }
    }

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

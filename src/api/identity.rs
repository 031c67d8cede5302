//! The `AcsIdentity` custom resource: one ACS identity and a Secret that always holds a fresh
//! token for it.

// kube-derive's repeated `printcolumn(...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

use super::duration::GoDuration;
use crate::acs::Scope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "acsoperator.io",
    version = "v1alpha1",
    kind = "AcsIdentity",
    namespaced,
    status = "AcsIdentityStatus",
    shortname = "acsid",
    category = "acs",
    doc = "An ACS identity and a Secret that always holds a fresh access token for it.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.tokenExpiresOn"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))")
    .message("renewBefore and renewBeforePercentage are mutually exclusive"))]
#[x_kube(validation = Rule::new("!has(oldSelf.identityId) || (has(self.identityId) && self.identityId == oldSelf.identityId)")
    .message("identityId is immutable once set"))]
#[serde(rename_all = "camelCase")]
/// Which ACS resource to create the identity in, what its tokens are for, and where to write
/// them.
pub struct AcsIdentitySpec {
    /// The AcsConnection (or ClusterAcsConnection) that says which ACS resource to use.
    pub connection_ref: ConnectionRef,
    /// Token scopes. Changing them issues a new token.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t == s))").message("scopes must not repeat"))]
    pub scopes: Vec<Scope>,
    /// Requested token lifetime in minutes (60..1440). ACS may grant less; renewal follows what
    /// it granted.
    #[serde(default = "default_lifetime")]
    #[schemars(range(min = 60, max = 1440))]
    #[schemars(extend("format" = "int32"))]
    pub token_lifetime_minutes: u32,
    /// Renew this long before expiry (Go duration, e.g. `20m`). Exclusive with
    /// renewBeforePercentage; default: renew at 2/3 of the granted lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<GoDuration>,
    /// Renew when this percentage of the granted lifetime remains (1..99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    #[schemars(extend("format" = "int32"))]
    pub renew_before_percentage: Option<u8>,
    /// Name of the Secret to write (default: the AcsIdentity's name). A Secret name: lower
    /// case letters, digits, `-` and `.`, starting and ending with a letter or digit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub secret_name: Option<String>,
    /// Extra labels and annotations for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Adopt this existing ACS identity instead of creating one. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub identity_id: Option<String>,
    /// What deleting this resource does in ACS. Default: Delete for an identity the operator
    /// created, Retain for one adopted with identityId (the operator deletes what it did not
    /// create only when told to, and never while another AcsIdentity holds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

fn default_lifetime() -> u32 {
    crate::acs::model::MAX_TOKEN_LIFETIME_MINUTES
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRef {
    /// AcsConnection (in this namespace) or ClusterAcsConnection.
    #[serde(default)]
    pub kind: ConnectionKind,
    /// Name of the connection object.
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConnectionKind {
    #[default]
    AcsConnection,
    ClusterAcsConnection,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct SecretTemplate {
    /// Labels to set on the Secret, besides the operator's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to set on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Revoke the tokens and delete the ACS identity, then the Secret.
    Delete,
    /// Keep the ACS identity; delete only the Secret.
    Retain,
}

/// What the operator observed and did. Everything needed to decide without calling ACS after
/// a restart lives here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
// A new object reads `status: {observedGeneration: 0}` (the API server fills it in) until the
// operator first writes its status: kstatus (Flux, kubectl wait) and the Argo CD health check
// then see "not yet observed" instead of an object without status, which they take as done.
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct AcsIdentityStatus {
    /// The ACS identity (created, or adopted from spec.identityId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// Where the identity lives: the ACS resource it was created or adopted on. Tokens are
    /// issued and revoked, and the identity deleted, only on that resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The Secret that holds the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the token in the Secret expires, as ACS granted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_on: Option<Time>,
    /// When the operator renews the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// When the token in the Secret was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issued_at: Option<Time>,
    /// What the current token was issued for; a difference from the spec re-issues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_for: Option<IssuedFor>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Consecutive failures; reset by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub failed_attempts: Option<u32>,
    /// When the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// The last value of the `acsoperator.io/refresh-requested` annotation that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_refresh_request: Option<String>,
    /// The value of the acsoperator.io/revoke-requested annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_revoke_request: Option<String>,
    /// `Ready`: True while the Secret holds a valid token for the current spec; the reason
    /// says which state it is in (README: "Ready condition reasons"). Keyed by type: each
    /// controller applies only the conditions it owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The ACS resource an identity lives on, and how it got there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The resource's endpoint, normalised: scheme, host and a port other than the default.
    #[schemars(length(max = 2048))]
    pub endpoint: String,
    /// The connection it was created or adopted through.
    pub connection_ref: ConnectionRef,
    /// Created by this AcsIdentity, or adopted (spec.identityId).
    pub origin: Origin,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Origin {
    /// Created by this AcsIdentity.
    Created,
    /// Adopted with spec.identityId.
    Adopted,
}

/// The inputs of the token now in the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedFor {
    /// spec.scopes when the token was issued.
    pub scopes: Vec<Scope>,
    /// spec.tokenLifetimeMinutes when the token was issued.
    #[schemars(extend("format" = "int32"))]
    pub token_lifetime_minutes: u32,
    /// A one-way fingerprint of the connection's endpoint and key (not the key).
    pub connection_fingerprint: String,
    /// SHA-256 prefix of the token written, to notice edits of the Secret.
    pub token_hash: String,
    /// The token Secret's resourceVersion right after the operator wrote it. While the Secret
    /// still has it, its content is known without reading it (a restart reads no Secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_resource_version: Option<String>,
}

impl AcsIdentity {
    /// The Secret this identity writes.
    pub fn secret_name(&self) -> String {
        self.spec
            .secret_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}

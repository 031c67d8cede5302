//! The custom resource types of group `acsoperator.io/v1alpha1`, generated into `crds/`.

pub mod connection;
pub mod duration;
pub mod identity;

pub use connection::{
    AcsConnection, AcsConnectionSpec, AcsConnectionStatus, AllowedNamespaces, ClusterAcsConnection,
    ClusterAcsConnectionSpec, NamespacedSecretKeyRef, SecretKeyRef, WorkloadIdentitySpec,
};
pub use duration::GoDuration;
pub use identity::{
    AcsIdentity, AcsIdentitySpec, AcsIdentityStatus, ConnectionKind, ConnectionRef, DeletionPolicy,
    IssuedFor, Origin, Provenance, SecretTemplate,
};

use kube::CustomResourceExt;

/// The CRDs as one multi-document YAML stream, as committed under `crds/`.
pub fn crds_yaml() -> String {
    [
        serde_yaml::to_string(&AcsIdentity::crd()),
        serde_yaml::to_string(&AcsConnection::crd()),
        serde_yaml::to_string(&ClusterAcsConnection::crd()),
    ]
    .into_iter()
    .map(|doc| doc.expect("CRDs serialize"))
    .collect::<Vec<_>>()
    .join("---\n")
}

//! Where a connection comes from: an AcsConnection or ClusterAcsConnection object, read as one
//! [`ConnectionSource`] (how it authenticates, which CA it trusts, which namespaces may use
//! it), so that nothing downstream cares which kind it was.

use super::access::NamespaceAccess;
use crate::api::connection::ConnectionSettings;
use crate::api::{
    AcsConnection, AcsConnectionStatus, ClusterAcsConnection, ConnectionKind,
    NamespacedSecretKeyRef, SecretKeyRef, WorkloadIdentitySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// What the reconcilers and the client cache need of either kind of connection object.
pub trait ConnectionObject:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    const KIND: ConnectionKind;
    fn source(&self) -> ConnectionSource;
    fn connection_status(&self) -> Option<&AcsConnectionStatus>;
    /// The API in which this object's status is written.
    fn api(&self, client: Client) -> Api<Self>;
}

impl ConnectionObject for AcsConnection {
    const KIND: ConnectionKind = ConnectionKind::AcsConnection;

    fn source(&self) -> ConnectionSource {
        let tenancy = Tenancy {
            adoption: Adoption::Anyone,
            max_identities_per_namespace: None,
        };
        ConnectionSource::new(
            Self::KIND,
            &self.spec.connection,
            &self.metadata,
            None,
            tenancy,
        )
    }

    fn connection_status(&self) -> Option<&AcsConnectionStatus> {
        self.status.as_ref()
    }

    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl ConnectionObject for ClusterAcsConnection {
    const KIND: ConnectionKind = ConnectionKind::ClusterAcsConnection;

    fn source(&self) -> ConnectionSource {
        let allowed = self.spec.allowed_namespaces.as_ref();
        let access = allowed.map(NamespaceAccess::new);
        let tenancy = Tenancy {
            adoption: match &self.spec.adoption_allowed_namespaces {
                Some(allowed) => Adoption::Namespaces(NamespaceAccess::new(allowed)),
                None => Adoption::Nobody,
            },
            max_identities_per_namespace: self.spec.max_identities_per_namespace,
        };
        ConnectionSource::new(
            Self::KIND,
            &self.spec.connection,
            &self.metadata,
            access,
            tenancy,
        )
    }

    fn connection_status(&self) -> Option<&AcsConnectionStatus> {
        self.status.as_ref()
    }

    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
}

/// A Secret key reference as a connection spec writes it, placed in a namespace.
pub trait SecretKeyLocation {
    /// Where the key is, for a connection object in `namespace` (`""` if cluster-scoped).
    fn locate(&self, namespace: &str) -> NamespacedSecretKeyRef;
}

impl SecretKeyLocation for SecretKeyRef {
    fn locate(&self, namespace: &str) -> NamespacedSecretKeyRef {
        NamespacedSecretKeyRef {
            namespace: namespace.to_string(),
            name: self.name.clone(),
            key: self.key.clone(),
        }
    }
}

impl SecretKeyLocation for NamespacedSecretKeyRef {
    fn locate(&self, _: &str) -> NamespacedSecretKeyRef {
        self.clone()
    }
}

/// How a connection authenticates.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionAuth {
    /// Endpoint and access key from this Secret key.
    ConnectionString(NamespacedSecretKeyRef),
    /// This endpoint, with bearer tokens of this workload identity.
    WorkloadIdentity {
        endpoint: String,
        identity: WorkloadIdentitySpec,
        /// The namespace of an AcsConnection (whose ServiceAccount must be named), `None` for
        /// a ClusterAcsConnection (which uses the operator pod's own identity).
        namespace: Option<String>,
    },
    /// Neither or a mix of both. The CRD's validation rule refuses such objects; this covers
    /// objects stored before the rule or by an API server without CEL.
    Ambiguous,
}

impl ConnectionAuth {
    fn from_spec(
        connection_string: Option<NamespacedSecretKeyRef>,
        endpoint: Option<&String>,
        identity: Option<&WorkloadIdentitySpec>,
        namespace: Option<&str>,
    ) -> Self {
        match (connection_string, endpoint, identity) {
            (Some(r), None, None) => Self::ConnectionString(r),
            (None, Some(endpoint), Some(identity)) => Self::WorkloadIdentity {
                endpoint: endpoint.clone(),
                identity: identity.clone(),
                namespace: namespace.map(str::to_string),
            },
            _ => Self::Ambiguous,
        }
    }
}

/// Where a connection's data lives, whichever kind it is.
#[derive(Debug, Clone)]
pub struct ConnectionSource {
    /// Which object this is (kind, namespace or "" for a cluster connection, name): what holds
    /// its client in the cache.
    pub origin: super::clients::CacheKey,
    pub auth: ConnectionAuth,
    pub ca_bundle: Option<String>,
    pub ca_secret: Option<NamespacedSecretKeyRef>,
    /// `None`: every namespace may use it (a namespaced connection, its own namespace only,
    /// which the lookup by namespace already ensures).
    pub allowed: Option<NamespaceAccess>,
    pub tenancy: Tenancy,
    pub built_from: BuiltFrom,
}

/// What a connection lets each namespace do besides using it.
#[derive(Debug, Clone)]
pub struct Tenancy {
    pub adoption: Adoption,
    pub max_identities_per_namespace: Option<u32>,
}

/// Who may adopt an existing ACS identity (`spec.identityId`) through the connection.
#[derive(Debug, Clone)]
pub enum Adoption {
    /// A namespaced AcsConnection: its namespace holds the key, and could do as much itself.
    Anyone,
    /// A ClusterAcsConnection's `adoptionAllowedNamespaces`.
    Namespaces(NamespaceAccess),
    /// A ClusterAcsConnection without it.
    Nobody,
}

/// Which object version and Secrets a client was built from: a cached client is used while
/// these are unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltFrom {
    pub uid: String,
    pub generation: Option<i64>,
    /// The Secrets read, as (namespace, name).
    pub secrets: Vec<(String, String)>,
}

impl ConnectionSource {
    fn new<R: SecretKeyLocation>(
        kind: ConnectionKind,
        spec: &ConnectionSettings<R>,
        meta: &ObjectMeta,
        allowed: Option<NamespaceAccess>,
        tenancy: Tenancy,
    ) -> Self {
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let auth = ConnectionAuth::from_spec(
            spec.connection_string_secret_ref
                .as_ref()
                .map(|r| r.locate(namespace)),
            spec.endpoint.as_ref(),
            spec.workload_identity.as_ref(),
            meta.namespace.as_deref(),
        );
        let ca_secret = spec.ca_secret_ref.as_ref().map(|r| r.locate(namespace));
        let secrets = match &auth {
            ConnectionAuth::ConnectionString(r) => Some(r),
            _ => None,
        }
        .into_iter()
        .chain(&ca_secret)
        .map(|r| (r.namespace.clone(), r.name.clone()))
        .collect();
        let name = meta.name.clone().unwrap_or_default();
        Self {
            origin: (kind, namespace.to_string(), name),
            built_from: BuiltFrom {
                uid: meta.uid.clone().unwrap_or_default(),
                generation: meta.generation,
                secrets,
            },
            auth,
            ca_bundle: spec.ca_bundle.clone(),
            ca_secret,
            allowed,
            tenancy,
        }
    }

    /// Whether this connection reads the Secret `namespace`/`name`.
    pub fn reads_secret(&self, namespace: &str, name: &str) -> bool {
        self.built_from
            .secrets
            .iter()
            .any(|(ns, n)| ns == namespace && n == name)
    }
}

/// The kind's name, as errors and conditions spell it.
pub fn kind_name(kind: ConnectionKind) -> &'static str {
    match kind {
        ConnectionKind::AcsConnection => "AcsConnection",
        ConnectionKind::ClusterAcsConnection => "ClusterAcsConnection",
    }
}

#[cfg(test)]
mod tests {
    use super::super::workload_identity::tests::wi;
    use super::*;

    #[test]
    fn auth_is_a_connection_string_or_endpoint_with_workload_identity() {
        let r = NamespacedSecretKeyRef {
            namespace: "ns".into(),
            name: "s".into(),
            key: "k".into(),
        };
        let endpoint = "https://r.communication.azure.com/".to_string();
        let identity = wi(None, None);
        assert_eq!(
            ConnectionAuth::from_spec(Some(r.clone()), None, None, None),
            ConnectionAuth::ConnectionString(r.clone())
        );
        assert_eq!(
            ConnectionAuth::from_spec(None, Some(&endpoint), Some(&identity), Some("ns")),
            ConnectionAuth::WorkloadIdentity {
                endpoint: endpoint.clone(),
                identity: identity.clone(),
                namespace: Some("ns".into()),
            }
        );
        for (cs, e, w) in [
            (None, None, None),
            (None, Some(&endpoint), None),
            (None, None, Some(&identity)),
            (Some(r.clone()), Some(&endpoint), Some(&identity)),
            (Some(r.clone()), None, Some(&identity)),
        ] {
            assert_eq!(
                ConnectionAuth::from_spec(cs, e, w, None),
                ConnectionAuth::Ambiguous
            );
        }
    }

    fn object<K: ConnectionObject>(namespace: Option<&str>, spec: serde_json::Value) -> K {
        serde_json::from_value(serde_json::json!({
            "apiVersion": K::api_version(&()), "kind": K::kind(&()),
            "metadata": {"name": "c", "namespace": namespace, "uid": "u-1", "generation": 3},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_namespaced_connection_reads_its_secrets_in_its_own_namespace() {
        let spec = serde_json::json!({
            "connectionStringSecretRef": {"name": "acs"},
            "caSecretRef": {"name": "ca", "key": "ca.crt"},
        });
        let source = object::<AcsConnection>(Some("team"), spec).source();
        let located = |name: &str, key: &str| NamespacedSecretKeyRef {
            namespace: "team".into(),
            name: name.into(),
            key: key.into(),
        };
        assert_eq!(
            source.auth,
            ConnectionAuth::ConnectionString(located("acs", "connectionString"))
        );
        assert_eq!(source.ca_secret, Some(located("ca", "ca.crt")));
        assert!(source.allowed.is_none());
        assert_eq!(
            source.built_from,
            BuiltFrom {
                uid: "u-1".into(),
                generation: Some(3),
                secrets: vec![("team".into(), "acs".into()), ("team".into(), "ca".into())],
            }
        );
        assert!(source.reads_secret("team", "ca"));
        assert!(!source.reads_secret("other", "ca"));
    }

    #[test]
    fn a_cluster_connection_reads_its_secrets_where_it_names_them() {
        let spec = serde_json::json!({
            "connectionStringSecretRef": {"namespace": "platform", "name": "acs"},
            "allowedNamespaces": {"names": ["team"]},
        });
        let source = object::<ClusterAcsConnection>(None, spec).source();
        assert_eq!(
            source.built_from.secrets,
            vec![("platform".to_string(), "acs".to_string())]
        );
        assert!(source.allowed.is_some());
    }

    #[test]
    fn a_workload_identity_connection_reads_no_secret() {
        let spec = serde_json::json!({
            "endpoint": "https://r.communication.azure.com/",
            "workloadIdentity": {},
            "caBundle": "PEM",
        });
        let source = object::<AcsConnection>(Some("team"), spec).source();
        assert!(source.built_from.secrets.is_empty());
        assert_eq!(source.ca_bundle.as_deref(), Some("PEM"));
    }
}

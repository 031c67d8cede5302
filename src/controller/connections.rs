//! Resolving an AcsIdentity's `connectionRef` to a ready ACS client: signing with the access
//! key of a connection string, or sending bearer tokens of an Entra ID workload identity.
//!
//! Clients are cached per connection object and rebuilt when the object's generation or a
//! referenced Secret changes (the Secret watch calls [`Connections::forget_secret`]). A cached
//! workload identity client keeps its credential, and so its token cache, across reconciles.
//! Rate limiters are kept per endpoint across rebuilds, so a rotated key does not reset the
//! budget.

use super::error::Error;
use crate::acs::entra::DEFAULT_AUTHORITY_HOST;
use crate::acs::fingerprint::short_sha256_hex;
use crate::acs::{
    AcsClient, AcsError, AcsRateLimiter, ClientOptions, ConnectionString, WorkloadIdentity,
};
use crate::api::{
    AcsConnection, AllowedNamespaces, ClusterAcsConnection, ConnectionKind, ConnectionRef,
    NamespacedSecretKeyRef, WorkloadIdentitySpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// A connection ready for use.
#[derive(Debug)]
pub struct Resolved {
    pub client: AcsClient,
    /// The limiter of the connection's ACS resource (shared by every connection to it).
    pub limiter: Arc<AcsRateLimiter>,
    /// One-way fingerprint of endpoint and key (or workload identity): tokens issued under
    /// another one are re-issued.
    pub fingerprint: String,
    /// What the connection was checked to be, for its Ready condition (no secret in it).
    pub summary: String,
    /// Which object version and Secrets this was built from.
    source: Source,
}

/// The operator pod's Entra workload identity environment: defaults for every connection with
/// `workloadIdentity` (on AKS the workload identity webhook injects the `AZURE_*` variables).
/// Tests set the fields directly instead of touching the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadIdentityDefaults {
    /// `AZURE_CLIENT_ID`, when a connection names no clientId.
    pub client_id: Option<String>,
    /// `AZURE_TENANT_ID`, when a connection names no tenantId.
    pub tenant_id: Option<String>,
    /// `AZURE_FEDERATED_TOKEN_FILE`: the projected service-account token. Without it no
    /// workload identity connection can be used.
    pub token_file: Option<PathBuf>,
    /// `AZURE_AUTHORITY_HOST`; the public cloud's authority when absent.
    pub authority_host: Option<String>,
    /// PEM certificates to trust for the authority besides the system roots (read from the
    /// file named by `ACS_OPERATOR_AUTHORITY_CA_FILE`), e.g. a local emulator's CA.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl WorkloadIdentityDefaults {
    /// Names the environment variables read by [`Self::from_env`].
    pub const AUTHORITY_CA_FILE_ENV: &'static str = "ACS_OPERATOR_AUTHORITY_CA_FILE";

    /// Reads the `AZURE_*` variables (empty ones count as unset) and the authority CA file.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let extra_ca_pem = match var(Self::AUTHORITY_CA_FILE_ENV) {
            Some(path) => Some(
                std::fs::read(&path)
                    .map_err(|e| format!("{}={path}: {e}", Self::AUTHORITY_CA_FILE_ENV))?,
            ),
            None => None,
        };
        Ok(Self {
            client_id: var("AZURE_CLIENT_ID"),
            tenant_id: var("AZURE_TENANT_ID"),
            token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            authority_host: var("AZURE_AUTHORITY_HOST"),
            extra_ca_pem,
        })
    }
}

/// The complete workload identity of a connection: its spec, with the pod's defaults filled
/// in. Pure, so every missing piece has its own message.
pub fn workload_identity(
    spec: &WorkloadIdentitySpec,
    defaults: &WorkloadIdentityDefaults,
    timeout: Duration,
) -> Result<WorkloadIdentity, Error> {
    let missing = |what: &str, field: &str, env: &str| {
        Error::WorkloadIdentity(format!(
            "no {what}: set spec.workloadIdentity.{field} or {env} on the operator"
        ))
    };
    let chosen = |spec: &Option<String>, default: &Option<String>| {
        spec.clone()
            .or_else(|| default.clone())
            .filter(|v| !v.trim().is_empty())
    };
    let client_id = chosen(&spec.client_id, &defaults.client_id)
        .ok_or_else(|| missing("client id", "clientId", "AZURE_CLIENT_ID"))?;
    let tenant_id = chosen(&spec.tenant_id, &defaults.tenant_id)
        .ok_or_else(|| missing("tenant id", "tenantId", "AZURE_TENANT_ID"))?;
    let token_file = defaults.token_file.clone().ok_or_else(|| {
        Error::WorkloadIdentity(
            "the operator has no federated token file (AZURE_FEDERATED_TOKEN_FILE): is workload identity enabled for its pod?"
                .into(),
        )
    })?;
    let authority = defaults
        .authority_host
        .as_deref()
        .unwrap_or(DEFAULT_AUTHORITY_HOST);
    let authority_host = Url::parse(authority)
        .ok()
        .filter(|u| u.scheme() == "https")
        .ok_or_else(|| {
            Error::WorkloadIdentity(format!(
                "authority host (AZURE_AUTHORITY_HOST) {authority:?} is not an https URL"
            ))
        })?;
    Ok(WorkloadIdentity {
        tenant_id,
        client_id,
        token_file,
        authority_host,
        extra_ca_pem: defaults.extra_ca_pem.clone(),
        timeout,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    uid: String,
    generation: Option<i64>,
    secrets: Vec<(String, String)>,
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
    ) -> Self {
        match (connection_string, endpoint, identity) {
            (Some(r), None, None) => Self::ConnectionString(r),
            (None, Some(endpoint), Some(identity)) => Self::WorkloadIdentity {
                endpoint: endpoint.clone(),
                identity: identity.clone(),
            },
            _ => Self::Ambiguous,
        }
    }
}

/// Where a connection's data lives, whichever kind it is.
#[derive(Debug, Clone)]
pub struct ConnectionSource {
    pub auth: ConnectionAuth,
    pub ca_bundle: Option<String>,
    pub ca_secret: Option<NamespacedSecretKeyRef>,
    pub allowed: Option<AllowedNamespaces>,
    pub uid: String,
    pub generation: Option<i64>,
}

impl ConnectionSource {
    pub fn from_namespaced(c: &AcsConnection) -> Self {
        let ns = c.namespace().unwrap_or_default();
        let local = |r: &crate::api::SecretKeyRef| NamespacedSecretKeyRef {
            namespace: ns.clone(),
            name: r.name.clone(),
            key: r.key.clone(),
        };
        Self {
            auth: ConnectionAuth::from_spec(
                c.spec
                    .connection
                    .connection_string_secret_ref
                    .as_ref()
                    .map(local),
                c.spec.connection.endpoint.as_ref(),
                c.spec.connection.workload_identity.as_ref(),
            ),
            ca_bundle: c.spec.connection.ca_bundle.clone(),
            ca_secret: c.spec.connection.ca_secret_ref.as_ref().map(local),
            allowed: None,
            uid: c.uid().unwrap_or_default(),
            generation: c.metadata.generation,
        }
    }

    pub fn from_cluster(c: &ClusterAcsConnection) -> Self {
        Self {
            auth: ConnectionAuth::from_spec(
                c.spec.connection.connection_string_secret_ref.clone(),
                c.spec.connection.endpoint.as_ref(),
                c.spec.connection.workload_identity.as_ref(),
            ),
            ca_bundle: c.spec.connection.ca_bundle.clone(),
            ca_secret: c.spec.connection.ca_secret_ref.clone(),
            allowed: c.spec.allowed_namespaces.clone(),
            uid: c.uid().unwrap_or_default(),
            generation: c.metadata.generation,
        }
    }

    /// The Secrets this connection reads, as (namespace, name).
    pub fn secrets(&self) -> Vec<(String, String)> {
        let connection_string = match &self.auth {
            ConnectionAuth::ConnectionString(r) => Some(r),
            _ => None,
        };
        connection_string
            .into_iter()
            .chain(&self.ca_secret)
            .map(|r| (r.namespace.clone(), r.name.clone()))
            .collect()
    }
}

type CacheKey = (ConnectionKind, String, String);

pub struct Connections {
    client: Client,
    namespaced: Store<AcsConnection>,
    cluster: Store<ClusterAcsConnection>,
    acs_timeout: Duration,
    workload_identity: WorkloadIdentityDefaults,
    cache: Mutex<HashMap<CacheKey, Arc<Resolved>>>,
    limiters: Mutex<HashMap<String, Arc<AcsRateLimiter>>>,
    new_limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>,
}

impl Connections {
    pub fn new(
        client: Client,
        namespaced: Store<AcsConnection>,
        cluster: Store<ClusterAcsConnection>,
        acs_timeout: Duration,
        workload_identity: WorkloadIdentityDefaults,
        new_limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>,
    ) -> Self {
        Self {
            client,
            namespaced,
            cluster,
            acs_timeout,
            workload_identity,
            cache: Mutex::default(),
            limiters: Mutex::default(),
            new_limiter,
        }
    }

    /// The connection object an identity in `namespace` refers to, from the watch cache.
    pub fn source(&self, namespace: &str, r: &ConnectionRef) -> Result<ConnectionSource, Error> {
        match r.kind {
            ConnectionKind::AcsConnection => self
                .namespaced
                .get(&ObjectRef::new(&r.name).within(namespace))
                .map(|c| ConnectionSource::from_namespaced(&c)),
            ConnectionKind::ClusterAcsConnection => self
                .cluster
                .get(&ObjectRef::new(&r.name))
                .map(|c| ConnectionSource::from_cluster(&c)),
        }
        .ok_or_else(|| Error::ConnectionNotFound {
            kind: kind_name(r.kind),
            name: r.name.clone(),
        })
    }

    /// A client for the connection an identity in `namespace` refers to.
    pub async fn resolve(
        &self,
        namespace: &str,
        r: &ConnectionRef,
    ) -> Result<Arc<Resolved>, Error> {
        let source = self.source(namespace, r)?;
        if let Some(allowed) = &source.allowed {
            self.check_allowed(allowed, &r.name, namespace).await?;
        }
        let key = cache_key(namespace, r);
        let wanted = Source {
            uid: source.uid.clone(),
            generation: source.generation,
            secrets: source.secrets(),
        };
        if let Some(hit) = self.cache.lock().expect("cache lock").get(&key)
            && hit.source == wanted
        {
            return Ok(hit.clone());
        }
        let resolved = Arc::new(self.build(&source, wanted).await?);
        self.cache
            .lock()
            .expect("cache lock")
            .insert(key, resolved.clone());
        Ok(resolved)
    }

    /// Checks that a connection is usable: its Secrets hold a connection string (and CA
    /// bundle), or its workload identity is complete and the token file readable. Returns the
    /// endpoint and a summary. Reads Secrets and the token file; never calls ACS or Entra.
    pub async fn check(&self, source: &ConnectionSource) -> Result<(String, String), Error> {
        let built_from = Source {
            uid: source.uid.clone(),
            generation: source.generation,
            secrets: source.secrets(),
        };
        let resolved = self.build(source, built_from).await?;
        Ok((resolved.client.endpoint().to_string(), resolved.summary))
    }

    /// Drops cached clients built from this Secret; the next use re-reads it.
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        let secret = (namespace.to_string(), name.to_string());
        self.cache
            .lock()
            .expect("cache lock")
            .retain(|_, r| !r.source.secrets.contains(&secret));
    }

    /// Whether any connection in the watch caches reads this Secret.
    pub fn uses_secret(&self, namespace: &str, name: &str) -> bool {
        let secret = (namespace.to_string(), name.to_string());
        self.namespaced
            .state()
            .iter()
            .map(|c| ConnectionSource::from_namespaced(c))
            .chain(
                self.cluster
                    .state()
                    .iter()
                    .map(|c| ConnectionSource::from_cluster(c)),
            )
            .any(|s| s.secrets().contains(&secret))
    }

    /// The connections (kind, namespace for namespaced ones, name) that read this Secret.
    pub fn connections_using_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<(ConnectionKind, Option<String>, String)> {
        let secret = (namespace.to_string(), name.to_string());
        let namespaced = self.namespaced.state().into_iter().filter_map(|c| {
            ConnectionSource::from_namespaced(&c)
                .secrets()
                .contains(&secret)
                .then(|| (ConnectionKind::AcsConnection, c.namespace(), c.name_any()))
        });
        let cluster = self.cluster.state().into_iter().filter_map(|c| {
            ConnectionSource::from_cluster(&c)
                .secrets()
                .contains(&secret)
                .then(|| (ConnectionKind::ClusterAcsConnection, None, c.name_any()))
        });
        namespaced.chain(cluster).collect()
    }

    async fn build(
        &self,
        source: &ConnectionSource,
        built_from: Source,
    ) -> Result<Resolved, Error> {
        let extra_ca_pem = match (&source.ca_bundle, &source.ca_secret) {
            (Some(pem), _) => Some(pem.clone().into_bytes()),
            (None, Some(r)) => Some(self.read_secret_key(r).await?.into_bytes()),
            (None, None) => None,
        };
        let options = |limiter: &Arc<AcsRateLimiter>| ClientOptions {
            timeout: self.acs_timeout,
            extra_ca_pem,
            rate_limiter: Some(limiter.clone()),
        };
        let invalid_ca = |e: AcsError| Error::InvalidCaBundle(e.to_string());
        match &source.auth {
            ConnectionAuth::ConnectionString(r) => {
                let raw = self.read_secret_key(r).await?;
                let connection: ConnectionString =
                    raw.parse().map_err(|e| Error::InvalidConnectionString {
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        key: r.key.clone(),
                        source: e,
                    })?;
                let limiter = self.limiter_for(connection.endpoint.as_str());
                let client = AcsClient::new(&connection, options(&limiter)).map_err(invalid_ca)?;
                Ok(Resolved {
                    fingerprint: fingerprint(&connection),
                    summary: format!("connection string for {} parsed", connection.endpoint),
                    client,
                    limiter,
                    source: built_from,
                })
            }
            ConnectionAuth::WorkloadIdentity { endpoint, identity } => {
                let endpoint = Url::parse(endpoint)
                    .ok()
                    .filter(|u| u.scheme() == "https" && u.has_host())
                    .ok_or_else(|| {
                        Error::InvalidSpec(format!("endpoint {endpoint:?} is not an https URL"))
                    })?;
                let identity =
                    workload_identity(identity, &self.workload_identity, self.acs_timeout)?;
                let credential = identity.credential().map_err(|e| match e {
                    AcsError::Config(message) => Error::WorkloadIdentity(message),
                    other => Error::WorkloadIdentity(other.to_string()),
                })?;
                let limiter = self.limiter_for(endpoint.as_str());
                let client =
                    AcsClient::with_bearer(endpoint.clone(), credential, options(&limiter))
                        .map_err(invalid_ca)?;
                Ok(Resolved {
                    fingerprint: workload_identity_fingerprint(&endpoint, &identity),
                    summary: format!(
                        "workload identity {} of tenant {} for {endpoint}, token file present",
                        identity.client_id, identity.tenant_id
                    ),
                    client,
                    limiter,
                    source: built_from,
                })
            }
            ConnectionAuth::Ambiguous => Err(Error::InvalidSpec(
                "set either connectionStringSecretRef, or endpoint and workloadIdentity".into(),
            )),
        }
    }

    fn limiter_for(&self, endpoint: &str) -> Arc<AcsRateLimiter> {
        self.limiters
            .lock()
            .expect("limiter lock")
            .entry(endpoint.to_string())
            .or_insert_with(|| (self.new_limiter)())
            .clone()
    }

    async fn read_secret_key(&self, r: &NamespacedSecretKeyRef) -> Result<String, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
        let secret =
            api.get_opt(&r.name)
                .await?
                .ok_or_else(|| Error::ConnectionSecretNotFound {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                })?;
        let missing = || Error::ConnectionSecretKeyMissing {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            key: r.key.clone(),
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| b.0.clone())
            .ok_or_else(missing)?;
        String::from_utf8(bytes).map_err(|_| missing())
    }

    async fn check_allowed(
        &self,
        allowed: &AllowedNamespaces,
        name: &str,
        namespace: &str,
    ) -> Result<(), Error> {
        if allowed.names.iter().any(|n| n == namespace) {
            return Ok(());
        }
        if let Some(selector) = &allowed.selector {
            let ns = Api::<Namespace>::all(self.client.clone())
                .get(namespace)
                .await?;
            if selector_matches(
                selector,
                ns.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            ) {
                return Ok(());
            }
        }
        Err(Error::ConnectionNotAllowed {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }
}

fn cache_key(namespace: &str, r: &ConnectionRef) -> CacheKey {
    let ns = match r.kind {
        ConnectionKind::AcsConnection => namespace.to_string(),
        ConnectionKind::ClusterAcsConnection => String::new(),
    };
    (r.kind, ns, r.name.clone())
}

pub fn kind_name(kind: ConnectionKind) -> &'static str {
    match kind {
        ConnectionKind::AcsConnection => "AcsConnection",
        ConnectionKind::ClusterAcsConnection => "ClusterAcsConnection",
    }
}

/// Fingerprint of endpoint and key: tells connections apart, reveals neither.
pub fn fingerprint(connection: &ConnectionString) -> String {
    short_sha256_hex(&[
        connection.endpoint.as_str().as_bytes(),
        connection.access_key.to_base64().as_bytes(),
    ])
}

/// Fingerprint of endpoint, tenant and client id: another identity (or resource) means other
/// tokens. Domain-separated from [`fingerprint`].
pub fn workload_identity_fingerprint(endpoint: &Url, identity: &WorkloadIdentity) -> String {
    short_sha256_hex(&[
        b"workload-identity",
        endpoint.as_str().as_bytes(),
        identity.tenant_id.as_bytes(),
        identity.client_id.as_bytes(),
    ])
}

/// Label selector semantics of Kubernetes (matchLabels and matchExpressions, all must hold).
pub fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    #[test]
    fn fingerprint_changes_with_key_or_endpoint_and_hides_both() {
        let a: ConnectionString = "endpoint=https://a/;accesskey=c2VjcmV0".parse().unwrap();
        let b: ConnectionString = "endpoint=https://a/;accesskey=b3RoZXI=".parse().unwrap();
        let c: ConnectionString = "endpoint=https://c/;accesskey=c2VjcmV0".parse().unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_eq!(fingerprint(&a).len(), 16);
        assert!(!fingerprint(&a).contains("c2VjcmV0"));
    }

    /// Status records these values: a change would re-issue every token on upgrade.
    #[test]
    fn fingerprints_are_pinned() {
        let c: ConnectionString = "endpoint=https://a/;accesskey=c2VjcmV0".parse().unwrap();
        assert_eq!(fingerprint(&c), "8e2b83d117db2bef");
        let identity = workload_identity(&wi(Some("c"), Some("t")), &pod_env(), Duration::ZERO);
        let endpoint = Url::parse("https://one/").unwrap();
        assert_eq!(
            workload_identity_fingerprint(&endpoint, &identity.unwrap()),
            "ab562699bde63891"
        );
        assert_eq!(
            super::super::token_secret::token_hash("an-acs-token"),
            "2283fd4a23779bd8"
        );
    }

    fn wi(client: Option<&str>, tenant: Option<&str>) -> WorkloadIdentitySpec {
        WorkloadIdentitySpec {
            client_id: client.map(Into::into),
            tenant_id: tenant.map(Into::into),
        }
    }

    fn pod_env() -> WorkloadIdentityDefaults {
        WorkloadIdentityDefaults {
            client_id: Some("pod-client".into()),
            tenant_id: Some("pod-tenant".into()),
            token_file: Some("/var/run/secrets/azure/tokens/azure-identity-token".into()),
            authority_host: Some("https://login.example/".into()),
            extra_ca_pem: None,
        }
    }

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
            ConnectionAuth::from_spec(Some(r.clone()), None, None),
            ConnectionAuth::ConnectionString(r.clone())
        );
        assert_eq!(
            ConnectionAuth::from_spec(None, Some(&endpoint), Some(&identity)),
            ConnectionAuth::WorkloadIdentity {
                endpoint: endpoint.clone(),
                identity: identity.clone()
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
                ConnectionAuth::from_spec(cs, e, w),
                ConnectionAuth::Ambiguous
            );
        }
    }

    #[test]
    fn workload_identity_spec_wins_over_the_pod_defaults() {
        let t = Duration::from_secs(3);
        let from_pod = workload_identity(&wi(None, None), &pod_env(), t).unwrap();
        assert_eq!(
            (from_pod.client_id.as_str(), from_pod.tenant_id.as_str()),
            ("pod-client", "pod-tenant")
        );
        assert_eq!(from_pod.authority_host.as_str(), "https://login.example/");
        assert_eq!(from_pod.timeout, t);
        let from_spec = workload_identity(&wi(Some("c"), Some("t")), &pod_env(), t).unwrap();
        assert_eq!(
            (from_spec.client_id.as_str(), from_spec.tenant_id.as_str()),
            ("c", "t")
        );
        let public = WorkloadIdentityDefaults {
            authority_host: None,
            ..pod_env()
        };
        assert_eq!(
            workload_identity(&wi(None, None), &public, t)
                .unwrap()
                .authority_host
                .as_str(),
            "https://login.microsoftonline.com/"
        );
    }

    #[test]
    fn incomplete_workload_identities_say_what_is_missing() {
        let t = Duration::from_secs(3);
        let cases = [
            (
                WorkloadIdentityDefaults {
                    client_id: None,
                    ..pod_env()
                },
                "AZURE_CLIENT_ID",
            ),
            (
                WorkloadIdentityDefaults {
                    tenant_id: Some(" ".into()),
                    ..pod_env()
                },
                "AZURE_TENANT_ID",
            ),
            (
                WorkloadIdentityDefaults {
                    token_file: None,
                    ..pod_env()
                },
                "AZURE_FEDERATED_TOKEN_FILE",
            ),
            (
                WorkloadIdentityDefaults {
                    authority_host: Some("http://login.example/".into()),
                    ..pod_env()
                },
                "not an https URL",
            ),
        ];
        for (defaults, expected) in cases {
            let error = workload_identity(&wi(None, None), &defaults, t).unwrap_err();
            assert_eq!(error.category(), "InvalidWorkloadIdentity");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn workload_identity_fingerprint_changes_with_endpoint_tenant_or_client() {
        let t = Duration::from_secs(3);
        let a = workload_identity(&wi(Some("c"), Some("t")), &pod_env(), t).unwrap();
        let b = workload_identity(&wi(Some("c2"), Some("t")), &pod_env(), t).unwrap();
        let c = workload_identity(&wi(Some("c"), Some("t2")), &pod_env(), t).unwrap();
        let e1 = Url::parse("https://one/").unwrap();
        let e2 = Url::parse("https://two/").unwrap();
        let f = workload_identity_fingerprint(&e1, &a);
        assert_eq!(f.len(), 16);
        assert_eq!(f, workload_identity_fingerprint(&e1, &a.clone()));
        assert_ne!(f, workload_identity_fingerprint(&e1, &b));
        assert_ne!(f, workload_identity_fingerprint(&e1, &c));
        assert_ne!(f, workload_identity_fingerprint(&e2, &a));
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        };
        let sel = |labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(exprs),
        };
        let cases = [
            (sel(&[("team", "a")], vec![]), true),
            (sel(&[("team", "b")], vec![]), false),
            (sel(&[], vec![req("team", "In", &["a", "b"])]), true),
            (sel(&[], vec![req("team", "NotIn", &["a"])]), false),
            (sel(&[], vec![req("env", "NotIn", &["prod"])]), true),
            (sel(&[], vec![req("team", "Exists", &[])]), true),
            (sel(&[], vec![req("team", "DoesNotExist", &[])]), false),
            (sel(&[], vec![req("team", "Bogus", &[])]), false),
            (sel(&[], vec![]), true),
        ];
        for (i, (selector, expected)) in cases.iter().enumerate() {
            assert_eq!(selector_matches(selector, &labels), *expected, "case {i}");
        }
    }
}

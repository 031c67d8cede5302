//! Resolving an AcsIdentity's `connectionRef` to a ready ACS client.
//!
//! Clients are cached per connection object and rebuilt when the object's generation or a
//! referenced Secret changes (the Secret watch calls [`Connections::forget_secret`]). Rate
//! limiters are kept per endpoint across rebuilds, so a rotated key does not reset the budget.

use super::error::Error;
use crate::acs::{AcsClient, AcsRateLimiter, ClientOptions, ConnectionString};
use crate::api::{
    AcsConnection, AllowedNamespaces, ClusterAcsConnection, ConnectionKind, ConnectionRef,
    NamespacedSecretKeyRef,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A connection ready for use.
#[derive(Debug)]
pub struct Resolved {
    pub client: AcsClient,
    /// One-way fingerprint of endpoint and key: tokens issued under another one are re-issued.
    pub fingerprint: String,
    /// Which object version and Secrets this was built from.
    source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    uid: String,
    generation: Option<i64>,
    secrets: Vec<(String, String)>,
}

/// Where a connection's data lives, whichever kind it is.
#[derive(Debug, Clone)]
pub struct ConnectionSource {
    pub connection_string: NamespacedSecretKeyRef,
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
            connection_string: local(&c.spec.connection_string_secret_ref),
            ca_bundle: c.spec.ca_bundle.clone(),
            ca_secret: c.spec.ca_secret_ref.as_ref().map(local),
            allowed: None,
            uid: c.uid().unwrap_or_default(),
            generation: c.metadata.generation,
        }
    }

    pub fn from_cluster(c: &ClusterAcsConnection) -> Self {
        Self {
            connection_string: c.spec.connection_string_secret_ref.clone(),
            ca_bundle: c.spec.ca_bundle.clone(),
            ca_secret: c.spec.ca_secret_ref.clone(),
            allowed: c.spec.allowed_namespaces.clone(),
            uid: c.uid().unwrap_or_default(),
            generation: c.metadata.generation,
        }
    }

    /// The Secrets this connection reads, as (namespace, name).
    pub fn secrets(&self) -> Vec<(String, String)> {
        let mut refs = vec![(
            self.connection_string.namespace.clone(),
            self.connection_string.name.clone(),
        )];
        refs.extend(
            self.ca_secret
                .iter()
                .map(|r| (r.namespace.clone(), r.name.clone())),
        );
        refs
    }
}

type CacheKey = (ConnectionKind, String, String);

pub struct Connections {
    client: Client,
    namespaced: Store<AcsConnection>,
    cluster: Store<ClusterAcsConnection>,
    acs_timeout: Duration,
    cache: Mutex<HashMap<CacheKey, Arc<Resolved>>>,
    limiters: Mutex<HashMap<String, Arc<AcsRateLimiter>>>,
    new_limiter: Box<dyn Fn() -> AcsRateLimiter + Send + Sync>,
}

impl Connections {
    pub fn new(
        client: Client,
        namespaced: Store<AcsConnection>,
        cluster: Store<ClusterAcsConnection>,
        acs_timeout: Duration,
        new_limiter: Box<dyn Fn() -> AcsRateLimiter + Send + Sync>,
    ) -> Self {
        Self {
            client,
            namespaced,
            cluster,
            acs_timeout,
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

    /// Checks that a connection's Secrets hold a usable connection string (and CA bundle), and
    /// returns its endpoint. Reads the Secrets; never calls ACS.
    pub async fn check(&self, source: &ConnectionSource) -> Result<String, Error> {
        let built_from = Source {
            uid: source.uid.clone(),
            generation: source.generation,
            secrets: source.secrets(),
        };
        let resolved = self.build(source, built_from).await?;
        Ok(resolved.client.endpoint().to_string())
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
        let raw = self.read_secret_key(&source.connection_string).await?;
        let connection: ConnectionString =
            raw.parse().map_err(|e| Error::InvalidConnectionString {
                namespace: source.connection_string.namespace.clone(),
                name: source.connection_string.name.clone(),
                key: source.connection_string.key.clone(),
                source: e,
            })?;
        let extra_ca_pem = match (&source.ca_bundle, &source.ca_secret) {
            (Some(pem), _) => Some(pem.clone().into_bytes()),
            (None, Some(r)) => Some(self.read_secret_key(r).await?.into_bytes()),
            (None, None) => None,
        };
        let options = ClientOptions {
            timeout: self.acs_timeout,
            extra_ca_pem,
            rate_limiter: Some(self.limiter_for(connection.endpoint.as_str())),
        };
        let client = AcsClient::new(&connection, options)
            .map_err(|e| Error::InvalidCaBundle(e.to_string()))?;
        Ok(Resolved {
            fingerprint: fingerprint(&connection),
            client,
            source: built_from,
        })
    }

    fn limiter_for(&self, endpoint: &str) -> Arc<AcsRateLimiter> {
        self.limiters
            .lock()
            .expect("limiter lock")
            .entry(endpoint.to_string())
            .or_insert_with(|| Arc::new((self.new_limiter)()))
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

/// 16 hex digits of SHA-256 over endpoint and key: tells connections apart, reveals neither.
pub fn fingerprint(connection: &ConnectionString) -> String {
    let digest = Sha256::new()
        .chain_update(connection.endpoint.as_str())
        .chain_update([0u8])
        .chain_update(connection.access_key.to_base64())
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
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

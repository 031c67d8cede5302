//! Turning a [`ConnectionSource`] into a client: reads the Secrets it names (connection
//! string, CA bundle) or completes its workload identity (from the ServiceAccount an
//! AcsConnection names, or the pod's environment for a ClusterAcsConnection). Never calls ACS
//! or Entra.

use super::Connections;
use super::clients::{ClientKey, Resolved, SecretsRead};
use super::service_account::ServiceAccountAssertion;
use super::source::{ConnectionAuth, ConnectionSource};
use super::workload_identity::{
    AssertionSource, assertion_source, workload_identity, workload_identity_fingerprint,
};
use crate::acs::fingerprint::short_sha256_hex;
use crate::acs::{AcsClient, AcsError, AcsRateLimiter, ClientOptions, ConnectionString};
use crate::api::connection::MAX_CA_BUNDLE;
use crate::api::{NamespacedSecretKeyRef, WorkloadIdentitySpec};
use crate::controller::error::Error;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::Api;
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

impl Connections {
    /// The client `source` needs: read its Secrets (or complete its workload identity) and
    /// check its endpoint, then take the live client built from the same things, or build
    /// one if the namespace may have another. Never calls ACS or Entra.
    pub(super) async fn build(&self, source: &ConnectionSource) -> Result<Arc<Resolved>, Error> {
        let mut read = SecretsRead::default();
        let built = self.build_reading(source, &mut read).await;
        if built.is_err() {
            let uid = &source.built_from.uid;
            self.clients.build_failed(source.origin.clone(), uid, read);
        }
        built
    }

    /// [`Self::build`], noting in `read` what it read of the Secrets.
    async fn build_reading(
        &self,
        source: &ConnectionSource,
        read: &mut SecretsRead,
    ) -> Result<Arc<Resolved>, Error> {
        let extra_ca_pem = match (&source.ca_bundle, &source.ca_secret) {
            (Some(pem), _) => Some(bounded_ca(pem.clone().into_bytes(), || "caBundle".into())?),
            (None, Some(r)) => {
                let pem = self.read_secret_key(r, read).await?.into_bytes();
                Some(bounded_ca(pem, || {
                    format!("caSecretRef {}/{} key {}", r.namespace, r.name, r.key)
                })?)
            }
            (None, None) => None,
        };
        let ca = extra_ca_pem.as_deref().map(|pem| sha256_hex(&[pem]));
        let origin = &source.origin;
        match &source.auth {
            ConnectionAuth::ConnectionString(r) => {
                let connection = self.read_connection_string(r, read).await?;
                self.allowed_endpoints.check(&connection.endpoint)?;
                let key = ClientKey {
                    credential: sha256_hex(&[
                        connection.endpoint.as_str().as_bytes(),
                        connection.access_key.to_base64().as_bytes(),
                    ]),
                    ca,
                    owner: None,
                };
                self.shared_or_built(source, key, read.clone(), || async {
                    self.with_access_key(&connection, extra_ca_pem)
                })
                .await
            }
            ConnectionAuth::WorkloadIdentity {
                endpoint,
                identity,
                namespace,
            } => {
                // Everything the credential is made from: the endpoint, the spec, and the
                // connection (a namespace's workload identity is its own).
                let spec = serde_json::to_vec(identity).expect("a spec serializes");
                let key = ClientKey {
                    credential: sha256_hex(&[endpoint.as_bytes(), &spec]),
                    ca,
                    owner: Some(origin.clone()),
                };
                self.shared_or_built(source, key, read.clone(), || {
                    self.with_workload_identity(
                        endpoint,
                        identity,
                        namespace.as_deref(),
                        extra_ca_pem,
                    )
                })
                .await
            }
            ConnectionAuth::Ambiguous => Err(Error::InvalidConnection(
                "set either connectionStringSecretRef, or endpoint and workloadIdentity".into(),
            )),
        }
    }

    /// The live client of `key`, or a new one from `build` if `source`'s namespace may hold
    /// another; held for `source` (as read from the Secrets `read`) either way.
    async fn shared_or_built<F>(
        &self,
        source: &ConnectionSource,
        key: ClientKey,
        read: SecretsRead,
        build: impl FnOnce() -> F,
    ) -> Result<Arc<Resolved>, Error>
    where
        F: std::future::Future<Output = Result<Resolved, Error>>,
    {
        let resolved = match self.clients.shared(&key) {
            Some(live) => live,
            None => {
                self.clients.admit(&source.origin, &key).map_err(|over| {
                    Error::ConnectionLimitReached {
                        namespace: source.origin.1.clone(),
                        max: over.max,
                    }
                })?;
                Arc::new(build().await?)
            }
        };
        Ok(self.clients.hold(
            source.origin.clone(),
            source.built_from.clone(),
            read,
            key,
            resolved,
        ))
    }

    fn options(
        &self,
        limiter: &Arc<AcsRateLimiter>,
        extra_ca_pem: Option<Vec<u8>>,
    ) -> ClientOptions {
        ClientOptions {
            timeout: self.acs_timeout,
            connect_timeout: self.acs_connect_timeout,
            first_byte_timeout: self.acs_first_byte_timeout,
            extra_ca_pem,
            rate_limiter: Some(limiter.clone()),
        }
    }

    fn with_access_key(
        &self,
        connection: &ConnectionString,
        extra_ca_pem: Option<Vec<u8>>,
    ) -> Result<Resolved, Error> {
        let limiter = self.clients.limiter_for(connection.endpoint.as_str());
        let client =
            AcsClient::new(connection, self.options(&limiter, extra_ca_pem)).map_err(invalid_ca)?;
        Ok(Resolved {
            fingerprint: fingerprint(connection),
            summary: format!("connection string for {} parsed", connection.endpoint),
            client,
            limiter,
            custom_id: Default::default(),
        })
    }

    async fn with_workload_identity(
        &self,
        endpoint: &str,
        spec: &WorkloadIdentitySpec,
        namespace: Option<&str>,
        extra_ca_pem: Option<Vec<u8>>,
    ) -> Result<Resolved, Error> {
        let endpoint = Url::parse(endpoint)
            .ok()
            .filter(|u| u.scheme() == "https" && u.has_host())
            .ok_or_else(|| {
                Error::InvalidConnection(format!("endpoint {endpoint:?} is not an https URL"))
            })?;
        // Before the credential is made: a bearer token goes to no other host.
        self.allowed_endpoints.check(&endpoint)?;
        // Decided before anything is read: a namespaced connection never reaches the pod's
        // identity, and one without a ServiceAccount is refused before any Entra call.
        let source = assertion_source(namespace, spec)?;
        let annotations = match &source {
            AssertionSource::Pod => BTreeMap::new(),
            AssertionSource::ServiceAccount { namespace, name } => {
                self.service_account_annotations(namespace, name).await?
            }
        };
        let identity = workload_identity(
            spec,
            &source,
            &annotations,
            &self.workload_identity,
            self.acs_timeout,
        )?;
        let credential = match &source {
            AssertionSource::Pod => identity.credential(),
            AssertionSource::ServiceAccount { namespace, name } => identity
                .credential_with_assertion(ServiceAccountAssertion::new(
                    self.client.clone(),
                    namespace,
                    name,
                )),
        }
        .map_err(|e| match e {
            AcsError::Config(message) => Error::WorkloadIdentity(message),
            other => Error::WorkloadIdentity(other.to_string()),
        })?;
        let whose = match &source {
            AssertionSource::Pod => "the operator's token file present".to_string(),
            AssertionSource::ServiceAccount { namespace, name } => {
                format!("as ServiceAccount {namespace}/{name}")
            }
        };
        let limiter = self.clients.limiter_for(endpoint.as_str());
        let options = self.options(&limiter, extra_ca_pem);
        let client =
            AcsClient::with_bearer(endpoint.clone(), credential, options).map_err(invalid_ca)?;
        Ok(Resolved {
            fingerprint: workload_identity_fingerprint(&endpoint, &identity),
            summary: format!(
                "workload identity {} of tenant {} for {endpoint}, {whose}",
                identity.client_id, identity.tenant_id
            ),
            client,
            limiter,
            custom_id: Default::default(),
        })
    }

    /// The annotations of the ServiceAccount a namespaced connection names (which must exist).
    async fn service_account_annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, String>, Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let account = api.get_opt(name).await?.ok_or_else(|| {
            Error::WorkloadIdentity(format!(
                "ServiceAccount {namespace}/{name} (spec.workloadIdentity.serviceAccountName) not found"
            ))
        })?;
        Ok(account.metadata.annotations.unwrap_or_default())
    }

    async fn read_connection_string(
        &self,
        r: &NamespacedSecretKeyRef,
        read: &mut SecretsRead,
    ) -> Result<ConnectionString, Error> {
        let raw = self.read_secret_key(r, read).await?;
        raw.parse().map_err(|e| Error::InvalidConnectionString {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            key: r.key.clone(),
            source: e,
        })
    }

    /// The value of one key of a Secret; the version read goes to `read`.
    async fn read_secret_key(
        &self,
        r: &NamespacedSecretKeyRef,
        read: &mut SecretsRead,
    ) -> Result<String, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &r.namespace);
        let found = api.get_opt(&r.name).await?;
        let version = found
            .as_ref()
            .map(|s| s.metadata.resource_version.as_deref());
        read.add(&r.namespace, &r.name, version.flatten());
        let secret = found.ok_or_else(|| Error::ConnectionSecretNotFound {
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
}

/// A CA bundle no larger than the CRD allows a `caBundle` to be ([`MAX_CA_BUNDLE`]): the same
/// bound for one read from a Secret, and for objects stored before the schema said so.
fn bounded_ca(pem: Vec<u8>, what: impl FnOnce() -> String) -> Result<Vec<u8>, Error> {
    if pem.len() > MAX_CA_BUNDLE {
        return Err(Error::InvalidCaBundle(format!(
            "{} holds {} bytes, more than the {} KiB a CA bundle may have",
            what(),
            pem.len(),
            MAX_CA_BUNDLE / 1024
        )));
    }
    Ok(pem)
}

/// The whole SHA-256 of `parts` (a client cache key: no truncation, tenants choose inputs).
fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn invalid_ca(e: AcsError) -> Error {
    Error::InvalidCaBundle(e.to_string())
}

/// Fingerprint of endpoint and key: tells connections apart, reveals neither.
pub fn fingerprint(connection: &ConnectionString) -> String {
    short_sha256_hex(&[
        connection.endpoint.as_str().as_bytes(),
        connection.access_key.to_base64().as_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::workload_identity::tests::{pod_env, wi};
    use super::*;
    use std::time::Duration;

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
    fn ca_bundles_are_bounded() {
        let at_limit = vec![b'a'; MAX_CA_BUNDLE];
        assert!(bounded_ca(at_limit, String::new).is_ok());
        let over = vec![b'a'; MAX_CA_BUNDLE + 1];
        let refused = bounded_ca(over, || "caSecretRef ns/ca key ca.crt".into()).unwrap_err();
        assert_eq!(refused.reason(), crate::policy::Reason::InvalidCaBundle);
        assert!(
            refused.to_string().contains("caSecretRef ns/ca"),
            "{refused}"
        );
    }

    /// Status records these values: a change would re-issue every token on upgrade.
    #[test]
    fn fingerprints_are_pinned() {
        let c: ConnectionString = "endpoint=https://a/;accesskey=c2VjcmV0".parse().unwrap();
        assert_eq!(fingerprint(&c), "8e2b83d117db2bef");
        let identity = workload_identity(
            &wi(Some("c"), Some("t")),
            &AssertionSource::Pod,
            &BTreeMap::new(),
            &pod_env(),
            Duration::ZERO,
        );
        let endpoint = Url::parse("https://one/").unwrap();
        assert_eq!(
            workload_identity_fingerprint(&endpoint, &identity.unwrap()),
            "ab562699bde63891"
        );
        assert_eq!(
            crate::controller::token_secret::token_hash("an-acs-token"),
            "2283fd4a23779bd8"
        );
    }
}

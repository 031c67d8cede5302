//! Resolving an AcsIdentity's `connectionRef` to a ready ACS client: finds the connection
//! object in the watch caches ([`source`]), checks that the identity's namespace may use it
//! ([`access`]), and takes its client from the cache ([`clients`]) or builds one ([`build`]),
//! signing with the access key of a connection string or sending bearer tokens of an Entra ID
//! workload identity ([`workload_identity`]).

mod access;
mod build;
mod clients;
mod source;
mod workload_identity;

pub use clients::Resolved;
pub use source::{ConnectionObject, ConnectionSource};
pub use workload_identity::WorkloadIdentityDefaults;

use super::error::Error;
use crate::acs::AcsRateLimiter;
use crate::api::{
    AcsConnection, AllowedNamespaces, ClusterAcsConnection, ConnectionKind, ConnectionRef,
};
use clients::ClientCache;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use source::kind_name;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Connections {
    client: Client,
    namespaced: Store<AcsConnection>,
    cluster: Store<ClusterAcsConnection>,
    acs_timeout: Duration,
    workload_identity: WorkloadIdentityDefaults,
    clients: ClientCache,
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
            clients: ClientCache::new(new_limiter),
        }
    }

    /// The connection object an identity in `namespace` refers to, from the watch cache.
    pub fn source(&self, namespace: &str, r: &ConnectionRef) -> Result<ConnectionSource, Error> {
        match r.kind {
            ConnectionKind::AcsConnection => self
                .namespaced
                .get(&ObjectRef::new(&r.name).within(namespace))
                .map(|c| c.source()),
            ConnectionKind::ClusterAcsConnection => self
                .cluster
                .get(&ObjectRef::new(&r.name))
                .map(|c| c.source()),
        }
        .ok_or_else(|| Error::ConnectionNotFound {
            kind: kind_name(r.kind),
            name: r.name.clone(),
        })
    }

    /// A client for the connection an identity in `namespace` refers to. The namespace is
    /// checked on every call, since a cluster connection's client serves all namespaces.
    pub async fn resolve(
        &self,
        namespace: &str,
        r: &ConnectionRef,
    ) -> Result<Arc<Resolved>, Error> {
        let source = self.source(namespace, r)?;
        if let Some(allowed) = &source.allowed {
            self.check_allowed(allowed, &r.name, namespace).await?;
        }
        let key = clients::cache_key(namespace, r);
        if let Some(hit) = self.clients.get(&key, &source.built_from) {
            return Ok(hit);
        }
        let resolved = self.build(&source).await?;
        Ok(self.clients.insert(key, resolved))
    }

    /// Checks that a connection is usable: its Secrets hold a connection string (and CA
    /// bundle), or its workload identity is complete and the token file readable. Returns the
    /// endpoint and a summary. Reads Secrets and the token file; never calls ACS or Entra.
    pub async fn check(&self, source: &ConnectionSource) -> Result<(String, String), Error> {
        let resolved = self.build(source).await?;
        Ok((resolved.client.endpoint().to_string(), resolved.summary))
    }

    /// Drops cached clients built from this Secret; the next use re-reads it.
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        self.clients.forget_secret(namespace, name);
    }

    /// The connections (kind, namespace for namespaced ones, name) that read this Secret.
    pub fn connections_using_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<(ConnectionKind, Option<String>, String)> {
        let mut users = readers_of(&self.namespaced, namespace, name);
        users.extend(readers_of(&self.cluster, namespace, name));
        users
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
            if access::selector_matches(
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

/// The objects in `store` that read the Secret `namespace`/`name`, as (kind, namespace, name).
fn readers_of<K: ConnectionObject>(
    store: &Store<K>,
    namespace: &str,
    name: &str,
) -> Vec<(ConnectionKind, Option<String>, String)> {
    store
        .state()
        .iter()
        .filter(|c| c.source().reads_secret(namespace, name))
        .map(|c| (K::KIND, c.namespace(), c.name_any()))
        .collect()
}

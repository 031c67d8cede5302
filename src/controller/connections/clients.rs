//! The client cache: one built client per connection object, used while the object's uid and
//! generation and the Secrets it read are unchanged (the Secret watch drops the clients built
//! from a changed Secret), and one rate limiter per ACS endpoint, kept across rebuilds so that
//! a rotated key does not reset the budget. A cached workload identity client keeps its
//! credential, and so its Entra token cache, across reconciles.

use super::source::BuiltFrom;
use crate::acs::{AcsClient, AcsRateLimiter};
use crate::api::{ConnectionKind, ConnectionRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    pub(super) built_from: BuiltFrom,
}

/// Kind, namespace (empty for a ClusterAcsConnection, whose client all namespaces share)
/// and name of the connection object.
type CacheKey = (ConnectionKind, String, String);

pub fn cache_key(namespace: &str, r: &ConnectionRef) -> CacheKey {
    let ns = match r.kind {
        ConnectionKind::AcsConnection => namespace.to_string(),
        ConnectionKind::ClusterAcsConnection => String::new(),
    };
    (r.kind, ns, r.name.clone())
}

pub struct ClientCache {
    clients: Mutex<HashMap<CacheKey, Arc<Resolved>>>,
    limiters: Mutex<HashMap<String, Arc<AcsRateLimiter>>>,
    new_limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>,
}

impl ClientCache {
    pub fn new(new_limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>) -> Self {
        Self {
            clients: Mutex::default(),
            limiters: Mutex::default(),
            new_limiter,
        }
    }

    /// The cached client, if it was built from exactly `wanted`.
    pub fn get(&self, key: &CacheKey, wanted: &BuiltFrom) -> Option<Arc<Resolved>> {
        let clients = self.clients.lock().expect("client cache lock");
        clients
            .get(key)
            .filter(|hit| hit.built_from == *wanted)
            .cloned()
    }

    pub fn insert(&self, key: CacheKey, resolved: Resolved) -> Arc<Resolved> {
        let resolved = Arc::new(resolved);
        let mut clients = self.clients.lock().expect("client cache lock");
        clients.insert(key, resolved.clone());
        resolved
    }

    /// Drops cached clients built from this Secret; the next use re-reads it.
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        let secret = (namespace.to_string(), name.to_string());
        self.clients
            .lock()
            .expect("client cache lock")
            .retain(|_, r| !r.built_from.secrets.contains(&secret));
    }

    /// The limiter of an ACS endpoint, created on first use.
    pub fn limiter_for(&self, endpoint: &str) -> Arc<AcsRateLimiter> {
        self.limiters
            .lock()
            .expect("limiter lock")
            .entry(endpoint.to_string())
            .or_insert_with(|| (self.new_limiter)())
            .clone()
    }
}

//! The client cache. A client is keyed by what it is built from ([`ClientKey`]: endpoint and
//! credential, CA bundle, and for a workload identity the connection it belongs to), so
//! connections that say the same thing share one client, whatever their number. Each
//! connection object holds its client while the object's uid and generation and the Secrets
//! it read are unchanged; a touched Secret only makes the next use read it again, and if what
//! it holds still makes the same key, the same client serves on (no rebuild). A client lives
//! while a connection object holds it.
//!
//! A namespace's AcsConnections hold at most `max_per_namespace` distinct clients: each costs
//! memory (its CA bundle, parsed; its connection pool), and tenants write them.
//!
//! Beside the clients, one rate limiter per ACS endpoint, kept across rebuilds so that a
//! rotated key does not reset the budget. A cached workload identity client keeps its
//! credential, and so its Entra token cache, across reconciles.

use super::source::BuiltFrom;
use crate::acs::{AcsClient, AcsRateLimiter};
use crate::api::ConnectionKind;
use crate::policy::secret_versions::Read as SecretRead;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

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
    /// Whether the resource still serves the idempotent create's preview api-version.
    pub custom_id: CustomIdSupport,
}

/// Whether an ACS resource serves the preview api-version of the create with `customId`:
/// assumed until a create is refused as an unsupported version, then never again for this
/// client (a rebuilt client, e.g. after a key rotation, tries once more).
#[derive(Debug, Default)]
pub struct CustomIdSupport {
    retired: std::sync::atomic::AtomicBool,
}

impl CustomIdSupport {
    pub fn served(&self) -> bool {
        !self.retired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that the preview is not served; true the first time only (to say so once).
    pub fn retire(&self) -> bool {
        !self
            .retired
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Kind, namespace (empty for a ClusterAcsConnection, whose client all namespaces share)
/// and name of the connection object.
pub type CacheKey = (ConnectionKind, String, String);

/// What a client is built from, one-way: equal keys make interchangeable clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Endpoint and credential: the connection's fingerprint (endpoint and access key), or
    /// for a workload identity its endpoint and spec.
    pub credential: String,
    /// SHA-256 of the CA bundle trusted besides the system roots.
    pub ca: Option<String>,
    /// The connection a workload identity client belongs to (its credential is that
    /// connection's own); `None` for access keys, which anyone holding them may share.
    pub owner: Option<CacheKey>,
}

/// The versions of the Secrets a client was built from, or a build that failed tried to read,
/// as (namespace, name, resourceVersion; `None`: not found): what the Secret watch compares
/// with after it lost track (see [`crate::controller::connection_secrets`]). Versions only,
/// never content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsRead(Vec<SecretRead>);

impl SecretsRead {
    pub fn add(&mut self, namespace: &str, name: &str, version: Option<&str>) {
        let version = version.map(str::to_string);
        self.0
            .push((namespace.to_string(), name.to_string(), version));
    }
}

/// A connection object's hold on a client.
struct Held {
    built_from: BuiltFrom,
    /// The versions of the Secrets `built_from` names, as read for this hold.
    read: SecretsRead,
    key: ClientKey,
    resolved: Arc<Resolved>,
    /// False once a Secret it read changed: the next use reads it again.
    fresh: bool,
}

/// Why a namespace may not build another client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub max: usize,
}

pub struct ClientCache {
    held: Mutex<HashMap<CacheKey, Held>>,
    /// Connection objects whose last build failed, with their uid and what that build read
    /// of their Secrets (a missing Secret, or one that did not parse): they wait for a change
    /// of those Secrets, and a change missed while the watch was away must still reach them.
    failed: Mutex<HashMap<CacheKey, (String, SecretsRead)>>,
    built: Mutex<HashMap<ClientKey, Weak<Resolved>>>,
    limiters: Mutex<HashMap<String, Arc<AcsRateLimiter>>>,
    new_limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>,
    max_per_namespace: usize,
}

impl ClientCache {
    /// The most distinct clients one namespace's AcsConnections hold, by default.
    pub const DEFAULT_MAX_PER_NAMESPACE: usize = 10;

    pub fn new(new_limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>) -> Self {
        Self {
            held: Mutex::default(),
            failed: Mutex::default(),
            built: Mutex::default(),
            limiters: Mutex::default(),
            new_limiter,
            max_per_namespace: Self::DEFAULT_MAX_PER_NAMESPACE,
        }
    }

    pub fn set_max_per_namespace(&mut self, max: usize) {
        self.max_per_namespace = max.max(1);
    }

    /// The client `origin` holds, if it was built from exactly `wanted` and no Secret it read
    /// changed since.
    pub fn get(&self, origin: &CacheKey, wanted: &BuiltFrom) -> Option<Arc<Resolved>> {
        let held = self.held.lock().expect("client cache lock");
        held.get(origin)
            .filter(|h| h.fresh && h.built_from == *wanted)
            .map(|h| h.resolved.clone())
    }

    /// A live client built from `key`, whoever holds it.
    pub fn shared(&self, key: &ClientKey) -> Option<Arc<Resolved>> {
        let built = self.built.lock().expect("client cache lock");
        built.get(key).and_then(Weak::upgrade)
    }

    /// Whether `origin` may hold a client of `key`: always for a ClusterAcsConnection (the
    /// platform's), and for an AcsConnection while its namespace's other connections hold
    /// fewer than the maximum of distinct clients, or one of `key` already.
    pub fn admit(&self, origin: &CacheKey, key: &ClientKey) -> Result<(), OverLimit> {
        let (kind, namespace, _) = origin;
        if *kind != ConnectionKind::AcsConnection {
            return Ok(());
        }
        let held = self.held.lock().expect("client cache lock");
        let others: HashSet<&ClientKey> = held
            .iter()
            .filter(|(o, _)| o.0 == *kind && o.1 == *namespace && *o != origin)
            .map(|(_, h)| &h.key)
            .collect();
        if others.contains(key) || others.len() < self.max_per_namespace {
            Ok(())
        } else {
            Err(OverLimit {
                max: self.max_per_namespace,
            })
        }
    }

    /// Records that `origin`, as `built_from`, holds `resolved` (built from `key`), replacing
    /// what it held before; returns the client.
    pub fn hold(
        &self,
        origin: CacheKey,
        built_from: BuiltFrom,
        read: SecretsRead,
        key: ClientKey,
        resolved: Arc<Resolved>,
    ) -> Arc<Resolved> {
        {
            let mut built = self.built.lock().expect("client cache lock");
            built.insert(key.clone(), Arc::downgrade(&resolved));
            built.retain(|_, client| client.strong_count() > 0);
        }
        self.failed
            .lock()
            .expect("client cache lock")
            .remove(&origin);
        let held = Held {
            built_from,
            read,
            key,
            resolved: resolved.clone(),
            fresh: true,
        };
        // The previous hold is dropped after the lock: its client may be freed with it.
        let previous = self
            .held
            .lock()
            .expect("client cache lock")
            .insert(origin, held);
        drop(previous);
        resolved
    }

    /// Records that `origin` (uid `uid`) could not be built from what `read` found.
    pub fn build_failed(&self, origin: CacheKey, uid: &str, read: SecretsRead) {
        let mut failed = self.failed.lock().expect("client cache lock");
        failed.insert(origin, (uid.to_string(), read));
    }

    /// Drops the holds of connection objects that are gone (`alive` says which remain, by
    /// origin and uid); their clients go once nothing else holds them.
    pub fn release_gone(&self, alive: impl Fn(&CacheKey, &str) -> bool) {
        self.failed
            .lock()
            .expect("client cache lock")
            .retain(|origin, (uid, _)| alive(origin, uid));
        let gone: Vec<Held> = {
            let mut held = self.held.lock().expect("client cache lock");
            let keys: Vec<CacheKey> = held
                .iter()
                .filter(|(origin, h)| !alive(origin, &h.built_from.uid))
                .map(|(origin, _)| origin.clone())
                .collect();
            keys.iter().filter_map(|k| held.remove(k)).collect()
        };
        drop(gone);
    }

    /// The next use of a connection that read this Secret reads it again; its client is kept
    /// until then, and serves on if the Secret still makes the same key.
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        let secret = (namespace.to_string(), name.to_string());
        for held in self.held.lock().expect("client cache lock").values_mut() {
            if held.built_from.secrets.contains(&secret) {
                held.fresh = false;
            }
        }
    }

    /// The Secrets the fresh holds were built from, and those the failed builds read, each at
    /// the version read (a Secret read at several versions appears once for each).
    pub fn secrets_read(&self) -> Vec<SecretRead> {
        let mut read: Vec<SecretRead> = {
            let held = self.held.lock().expect("client cache lock");
            held.values()
                .filter(|h| h.fresh)
                .flat_map(|h| h.read.0.iter().cloned())
                .collect()
        };
        let failed = self.failed.lock().expect("client cache lock");
        read.extend(failed.values().flat_map(|(_, r)| r.0.iter().cloned()));
        read.sort_unstable();
        read.dedup();
        read
    }

    /// Distinct clients alive.
    #[cfg(test)]
    pub fn clients_alive(&self) -> usize {
        let built = self.built.lock().expect("client cache lock");
        built.values().filter(|c| c.strong_count() > 0).count()
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

//! How the operator runs: what the binary (or a test) gives [`super::run`].

use super::{connections, restarts};
use crate::acs::AcsRateLimiter;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// Called after each AcsIdentity reconcile with its namespace and name.
pub type ReconcileHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// How a watch gets its first state, and the state again when it cannot resume.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// Lists in pages of [`super::context::LIST_PAGE`] objects: any Kubernetes version. The
    /// newest state is asked for, which Kubernetes 1.31 and later serve from the API server's
    /// cache; a list "at any version" would be served from that cache too, but whole, in one
    /// answer: 400 MB at 100,000 identities, held by the API server and by the operator at
    /// once.
    #[default]
    Paged,
    /// Streams the state as watch events (`sendInitialEvents`, Kubernetes' streaming lists,
    /// on by default from Kubernetes 1.32), one object at a time; needs an API server that
    /// serves them.
    Streamed,
    /// Streamed where the API server serves streaming lists, paged where it does not: the
    /// binary asks once at start ([`super::cache::serves_streaming_lists`]), as client-go's
    /// informers fall back to a list.
    Auto,
}

/// How the operator runs.
#[derive(Clone)]
pub struct Settings {
    /// Watch only this namespace (namespaced install); `None` watches the whole cluster.
    pub namespace: Option<String>,
    /// Reconcile only the AcsIdentities this label selector matches (one instance of several
    /// that split a cluster); `None`: all of them.
    pub identity_selector: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Upper bound of one ACS call.
    pub acs_timeout: Duration,
    /// Upper bound of connecting to ACS (at most `acs_timeout`).
    pub acs_connect_timeout: Duration,
    /// Upper bound from sending an ACS call until its answer begins (at most `acs_timeout`).
    pub acs_first_byte_timeout: Duration,
    /// ACS calls in flight per endpoint and per namespace, and the endpoints' breakers.
    pub bulkheads: crate::policy::bulkhead::Limits,
    /// Builds the rate limiter for each ACS endpoint.
    pub rate_limiter: Arc<dyn Fn() -> AcsRateLimiter + Send + Sync>,
    /// Name of this instance in Events (the pod name in a cluster).
    pub instance: Option<String>,
    /// Called after each AcsIdentity reconcile with its namespace and name (for tests that
    /// must know an object was looked at even when nothing was written).
    pub on_reconciled: Option<ReconcileHook>,
    pub metrics: Arc<Metrics>,
    /// Set once the watch caches have synced and the reconcilers run (for `/readyz`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The pod's Entra workload identity (token file, authority, default tenant and client),
    /// for connections with `workloadIdentity`. Empty by default; the binary reads the env.
    pub workload_identity: connections::WorkloadIdentityDefaults,
    /// Create identities with the AcsIdentity's uid as `customId` (preview api-version), so a
    /// create whose answer was lost is not repeated as a second identity. `false` uses the GA
    /// create, for ACS resources that do not serve the preview.
    pub idempotent_create: bool,
    /// Restart the workloads that consume a renewed token (`None`: off).
    pub restarts: Option<restarts::RestartSettings>,
    /// Where connections may send requests: ACS's domains by default. Tests against the local
    /// emulator widen it explicitly.
    pub allowed_endpoints: crate::policy::endpoint::AllowedEndpoints,
    /// At most this many distinct ACS clients (endpoint, credential, CA bundle) held by one
    /// namespace's AcsConnections; identical connections share one.
    pub max_clients_per_namespace: usize,
    /// How the watches list.
    pub initial_list: InitialList,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            identity_selector: None,
            concurrency: 32,
            acs_timeout: Duration::from_secs(30),
            acs_connect_timeout: crate::acs::ClientOptions::DEFAULT_CONNECT_TIMEOUT,
            acs_first_byte_timeout: crate::acs::ClientOptions::DEFAULT_FIRST_BYTE_TIMEOUT,
            bulkheads: Default::default(),
            rate_limiter: Arc::new(AcsRateLimiter::at_acs_limits),
            instance: None,
            on_reconciled: None,
            metrics: Arc::default(),
            ready: Arc::default(),
            workload_identity: Default::default(),
            idempotent_create: true,
            restarts: None,
            allowed_endpoints: Default::default(),
            max_clients_per_namespace: connections::DEFAULT_MAX_CLIENTS_PER_NAMESPACE,
            initial_list: InitialList::default(),
        }
    }
}

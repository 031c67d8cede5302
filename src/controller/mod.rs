//! The controllers: thin orchestration around [`crate::policy`], and here only the wiring:
//! what the reconcilers share is in [`context`], how the operator runs in [`Settings`].
//! Watches feed reconciles; reconciles read state, ask policy, act once, and record the
//! result.
//!
//! Watches: AcsIdentity (full objects), our own token Secrets (metadata only, selected by the
//! managed-by label), AcsConnection/ClusterAcsConnection, and changes to the metadata of other
//! Secrets, without a cache or a list, only to notice when a connection's Secret changes
//! ([`connection_secrets`]).

pub mod bulkheads;
pub mod cache;
pub mod conditions;
pub mod connection_secrets;
pub mod connection_status;
pub mod connections;
pub mod context;
pub mod error;
pub mod events;
pub mod identity;
pub mod later;
pub mod restarts;
pub mod secret_index;
mod settings;
pub mod status;
pub mod token_secret;

pub use context::{Context, MANAGER};
pub use settings::{InitialList, ReconcileHook, Settings};

use crate::acs::AcsRateLimiter;
use crate::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use crate::policy::Outcome;
use connections::Connections;
use context::{look_again, trim_for_cache, watch_config};
use error::Error;
use futures::{StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Runs the controllers until a shutdown signal. Only wiring: the watches feed the
/// controllers and the indexes, the reconcilers decide and act.
pub async fn run(client: Client, settings: Settings) {
    let apis = ScopedApis::new(&client, settings.namespace.as_deref());
    let list = settings.initial_list;
    let connection_ctrls =
        ConnectionControllers::new(&client, &apis, settings.namespace.is_none(), list);
    let (nudge, nudges) = mpsc::unbounded();
    let token_secrets = Arc::new(secret_index::TokenSecretIndex::default());
    let provenance = Arc::new(identity::ProvenanceIndex::default());
    let identity_ctrl = identity_controller(
        &apis,
        token_secrets.clone(),
        provenance.clone(),
        nudges,
        &settings,
    );
    // Each ACS resource's limiter is made when its first client is; its dispatchers run
    // here, owned by this function, and stop with the controllers.
    let limiter = settings.rate_limiter.clone();
    let metrics = settings.metrics.clone();
    let (new_limiters, limiters) = mpsc::unbounded::<Arc<AcsRateLimiter>>();
    let connections = Connections::new(
        client.clone(),
        connection_ctrls.namespaced.store(),
        connection_ctrls.cluster_store(),
        settings.acs_timeout,
        settings.workload_identity.clone(),
        Box::new(move || {
            let limiter = Arc::new(limiter());
            metrics.watch_limiter(&limiter);
            let _ = new_limiters.unbounded_send(limiter.clone());
            limiter
        }),
    )
    .with_allowed_endpoints(settings.allowed_endpoints.clone())
    .with_max_clients_per_namespace(settings.max_clients_per_namespace)
    .with_timeouts(
        settings.acs_connect_timeout,
        settings.acs_first_byte_timeout,
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        &settings,
        connections,
        identity_ctrl.store(),
        provenance,
        token_secrets,
        nudge,
    ));
    info!(namespace = ?settings.namespace, concurrency = settings.concurrency, "operator started");
    // Identities must not be judged before the connections are known, or a restart would
    // write ConnectionNotFound for every identity.
    let connections_ready = connection_ctrls.ready();
    let controllers = futures::future::join(
        connection_ctrls.run(ctx.clone()),
        run_identities(
            identity_ctrl,
            connections_ready,
            settings.ready.clone(),
            Arc::new(IdentityRuns {
                ctx: ctx.clone(),
                api_failures: Mutex::default(),
                on_reconciled: settings.on_reconciled.clone(),
            }),
        ),
    );
    tokio::select! {
        _ = controllers => {},
        _ = connection_secrets::watch(apis.secrets.clone(), ctx.clone()) => {},
        _ = prune_status_ledger(ctx.clone()) => {},
        _ = ctx.later.run(|namespace, name| {
            let _ = ctx.nudge.unbounded_send(ObjectRef::new(name).within(namespace));
        }) => {},
        _ = dispatch_admissions(limiters, ctx.nudge.clone()) => {},
        _ = restarts::run(
            client.clone(),
            settings.namespace.clone(),
            settings.restarts.clone(),
            settings.metrics.clone(),
            settings.instance.clone(),
            list,
        ) => {},
    }
    info!("operator stopped");
}

/// The APIs the operator watches, in its namespace (namespaced install) or cluster-wide.
struct ScopedApis {
    connections: Api<AcsConnection>,
    identities: Api<AcsIdentity>,
    secrets: Api<PartialObjectMeta<Secret>>,
}

impl ScopedApis {
    fn new(client: &Client, namespace: Option<&str>) -> Self {
        fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
        where
            K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
        {
            match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        Self {
            connections: scoped(client, namespace),
            identities: scoped(client, namespace),
            secrets: scoped(client, namespace),
        }
    }
}

/// The connection controllers: namespaced always, cluster-scoped when the install may read
/// cluster-scoped objects (a namespaced install's cluster store simply stays empty).
struct ConnectionControllers {
    namespaced: Controller<AcsConnection>,
    cluster: Option<Controller<ClusterAcsConnection>>,
    empty_cluster_store: Store<ClusterAcsConnection>,
}

impl ConnectionControllers {
    fn new(client: &Client, apis: &ScopedApis, cluster_wide: bool, list: InitialList) -> Self {
        Self {
            namespaced: connection_controller(apis.connections.clone(), list),
            cluster: cluster_wide.then(|| {
                connection_controller(Api::<ClusterAcsConnection>::all(client.clone()), list)
            }),
            empty_cluster_store: reflector::store::<ClusterAcsConnection>().0,
        }
    }

    fn cluster_store(&self) -> Store<ClusterAcsConnection> {
        match &self.cluster {
            Some(c) => c.store(),
            None => self.empty_cluster_store.clone(),
        }
    }

    /// Resolves once both connection caches have synced.
    fn ready(&self) -> impl std::future::Future<Output = ()> + use<> {
        let (namespaced, cluster) = (self.namespaced.store(), self.cluster_store());
        let watch_cluster = self.cluster.is_some();
        async move {
            let _ = namespaced.wait_until_ready().await;
            if watch_cluster {
                let _ = cluster.wait_until_ready().await;
            }
            info!("connection caches synced");
        }
    }

    async fn run(self, ctx: Arc<Context>) {
        let namespaced = self
            .namespaced
            .run(
                connection_status::reconcile::<AcsConnection>,
                connection_status::error_policy,
                ctx.clone(),
            )
            .for_each(|r| log_result("AcsConnection", r));
        let cluster = async {
            if let Some(c) = self.cluster {
                c.run(
                    connection_status::reconcile::<ClusterAcsConnection>,
                    connection_status::error_policy,
                    ctx.clone(),
                )
                .for_each(|r| log_result("ClusterAcsConnection", r))
                .await;
            }
        };
        futures::future::join(namespaced, cluster).await;
    }
}

/// A connection controller whose cache keeps what the operator reads of a connection: spec,
/// status, name, uid and generation. Tenants write connections, and metadata has no bound the
/// CRD can set (256 KiB of annotations, kubectl's copy of the whole object in one of them).
fn connection_controller<K>(api: Api<K>, list: InitialList) -> Controller<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let objects = watcher(api, watch_config(list))
        .default_backoff()
        .modify(|c: &mut K| {
            let meta = c.meta_mut();
            meta.managed_fields = None;
            meta.annotations = None;
            meta.labels = None;
        })
        .reflect(writer)
        .applied_objects();
    // A check reads a Secret and parses a CA bundle, never calls ACS: a few at once suffice,
    // and after a restart a thousand at once would each hold a copy of their bundle.
    Controller::for_stream(objects, reader)
        .with_config(ControllerConfig::default().concurrency(CONNECTION_CHECKS_AT_ONCE))
        .shutdown_on_signal()
}

/// Connection checks running at once.
const CONNECTION_CHECKS_AT_ONCE: u16 = 4;

/// The AcsIdentity controller: triggered by spec, annotation and finalizer changes (not by
/// status-only changes), by changes of its own token Secrets (which also feed `index`), and
/// by `nudges` (a connection changed, an ACS turn came).
fn identity_controller(
    apis: &ScopedApis,
    index: Arc<secret_index::TokenSecretIndex>,
    provenance: Arc<identity::ProvenanceIndex>,
    nudges: mpsc::UnboundedReceiver<ObjectRef<AcsIdentity>>,
    settings: &Settings,
) -> Controller<AcsIdentity> {
    let owned_secrets = watcher(
        apis.secrets.clone(),
        watch_config(settings.initial_list).labels(token_secret::MANAGED_BY_SELECTOR),
    )
    .default_backoff()
    .filter(move |event| {
        let new = event.as_ref().map_or(true, |event| index.apply(event));
        futures::future::ready(new)
    })
    .touched_objects();
    // Status-only changes (our own writes) must not trigger a reconcile: a failure records
    // failedAttempts in status, and reacting to that write would defeat the backoff. Nor do
    // finalizer changes: the one we add is added by the reconcile that goes on to do the
    // work. Spec (generation), annotations (refresh, skip-cleanup) and deletion (which bumps
    // the generation) do trigger.
    let (identity_reader, identity_writer) = reflector::store();
    let mut identities = watch_config(settings.initial_list);
    if let Some(selector) = &settings.identity_selector {
        identities = identities.labels(selector);
    }
    let watch = watcher(apis.identities.clone(), identities)
        .default_backoff()
        .modify(trim_for_cache);
    let triggers = cache::changed_objects(
        cache::reflect_in_place(watch, identity_writer, provenance),
        predicates::generation.combine(predicates::annotations),
    );
    Controller::for_stream(triggers, identity_reader)
        .owns_stream(owned_secrets)
        .reconcile_on(nudges)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .shutdown_on_signal()
}

/// Runs the identity controller once the connections are known; marks the operator ready
/// when its cache has synced.
async fn run_identities(
    ctrl: Controller<AcsIdentity>,
    connections_ready: impl std::future::Future<Output = ()>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    runs: Arc<IdentityRuns>,
) {
    connections_ready.await;
    let store = ctrl.store();
    let mark_ready = async {
        let _ = store.wait_until_ready().await;
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        info!("identity cache synced; ready");
    };
    let run = ctrl
        .run(reconcile_identity, identity_error_policy, runs)
        .for_each(|r| log_result("AcsIdentity", r));
    futures::future::join(mark_ready, run).await;
}

/// Runs the dispatchers of every limiter made (one per ACS resource) for the admitted
/// operations: each turn given queues a reconcile of the identity it is for. Runs until
/// dropped, which drops the dispatchers with it.
async fn dispatch_admissions(
    mut limiters: mpsc::UnboundedReceiver<Arc<AcsRateLimiter>>,
    nudge: mpsc::UnboundedSender<ObjectRef<AcsIdentity>>,
) {
    let mut dispatchers = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(limiter) = limiters.next() => {
                let admitted = crate::acs::limits::ADMITTED.into_iter();
                for operation in admitted.chain(crate::acs::limits::FAIR) {
                    let (limiter, nudge) = (limiter.clone(), nudge.clone());
                    dispatchers.push(async move {
                        limiter
                            .dispatch(operation, |key| {
                                if let Some((namespace, name)) = key.split_once('/') {
                                    let r = ObjectRef::new(name).within(namespace);
                                    let _ = nudge.unbounded_send(r);
                                }
                            })
                            .await
                    });
                }
            }
            Some(()) = dispatchers.next() => {}
            else => std::future::pending::<()>().await,
        }
    }
}

/// Once a minute, drops the statuses we wrote that the cache has shown for a while.
async fn prune_status_ledger(ctx: Arc<Context>) {
    const AGE: Duration = Duration::from_secs(60);
    loop {
        tokio::time::sleep(AGE).await;
        if ctx.statuses.is_empty() {
            continue;
        }
        ctx.statuses.prune(AGE, |namespace, name| {
            let key = ObjectRef::new(name).within(namespace);
            ctx.identities.get(&key).and_then(|o| o.status.clone())
        });
    }
}

/// What the identity controller's wrapper keeps beside the reconciles' [`Context`]: the
/// generic error policy's count and the test hook.
struct IdentityRuns {
    ctx: Arc<Context>,
    /// Consecutive Kubernetes API failures per object, for the generic error policy.
    api_failures: Mutex<HashMap<ObjectRef<AcsIdentity>, u32>>,
    on_reconciled: Option<ReconcileHook>,
}

async fn reconcile_identity(
    obj: Arc<AcsIdentity>,
    runs: Arc<IdentityRuns>,
) -> Result<Action, Error> {
    let ctx = &runs.ctx;
    crate::memory::churned(1);
    let key = ObjectRef::from_obj(obj.as_ref());
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let span = tracing::info_span!("reconcile", %namespace, %name);
    let started = std::time::Instant::now();
    let result =
        tracing::Instrument::instrument(identity::reconcile(obj, ctx.clone()), span.clone()).await;
    span.in_scope(|| {
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        )
    });
    // Every reconcile is counted by `identity::reconcile`.
    if result.is_ok() {
        runs.api_failures.lock().expect("lock").remove(&key);
    }
    if let Some(hook) = &runs.on_reconciled {
        hook(&namespace, &name);
    }
    result
}

/// For failures `apply` could not record itself (the API server refused or missed a write):
/// back off per object, as policy says, before the token in the Secret expires (an API server
/// restart must not outlast a short-lived token).
fn identity_error_policy(obj: Arc<AcsIdentity>, error: &Error, runs: Arc<IdentityRuns>) -> Action {
    if error.is_crowded() {
        return look_again(Outcome::Crowded);
    }
    let key = ObjectRef::from_obj(obj.as_ref());
    let token_valid_for = runs
        .ctx
        .statuses
        .current(&obj)
        .and_then(|s| s.token_expires_on)
        .and_then(|t| crate::policy::time_until(t.0, jiff::Timestamp::now()));
    let mut failures = runs.api_failures.lock().expect("lock");
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    warn!(%namespace, %name, reason = %error.reason(), %error, attempt = *n, "reconcile error");
    look_again(Outcome::ApiFailed {
        attempts: *n,
        token_valid_for,
    })
}

fn log_result<T, E: std::fmt::Display>(
    kind: &'static str,
    result: Result<T, E>,
) -> futures::future::Ready<()> {
    if let Err(e) = result {
        debug!(kind, error = %e, "controller event");
    }
    futures::future::ready(())
}

//! Restarts the workloads that consume a renewed token (issue 14), as `kubectl rollout
//! restart` does: a pod template annotation, written by server-side apply under its own field
//! manager. Off unless [`RestartSettings`] are given.
//!
//! Observe: AcsIdentity statuses (`status.issuedFor.tokenHash` says which token the Secret
//! holds; nothing else is kept) and the metadata of the Deployments, StatefulSets and
//! DaemonSets of the chosen kinds (only those that opt in with
//! [`CONSUMES_ANNOTATION`] are kept), in an [`Index`]. Decide: [`plan()`] — each round's
//! baselines, waits and restarts, in order within the cluster-wide rate (a revoke's first, then
//! fairly between namespaces). Act: [`act`], each write's result fed back to the policy
//! ([`after_baseline`], [`after_restart`]).
//!
//! It never writes an AcsIdentity's spec or Secret, so a restart cannot lead to a new token,
//! and it runs beside the identity controller, so a failed restart never holds up a renewal.

mod act;

use crate::api::AcsIdentity;
use crate::controller::InitialList;
use crate::controller::context::watch_config;
use crate::metrics::Metrics;
use crate::policy::restart::{
    CONSUMES_ANNOTATION, InNamespace, Limits, Pacer, RESTARTED_FOR_ANNOTATION, WorkloadIndex,
    WorkloadState, after_baseline, after_restart, consumed, plan, restart_value,
};
use futures::stream::{BoxStream, SelectAll};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The field manager of every restart write: the annotation is this manager's alone, so a
/// re-apply of the workload's manifest by another manager leaves it as it is.
pub const FIELD_MANAGER: &str = "acs-identity-operator-restarts";

/// The AcsIdentity condition that reports a consuming workload that could not be restarted.
pub const CONDITION: &str = "WorkloadsRestarted";

/// The workload kinds that can be restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// From a kind or its plural resource name, any case (`Deployment`, `deployments`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| {
                let kind = k.as_str().to_ascii_lowercase();
                lower == kind || lower == format!("{kind}s")
            })
            .ok_or_else(|| {
                format!(
                    "unknown workload kind {s:?} (expected Deployment, StatefulSet or DaemonSet)"
                )
            })
    }

    fn api_resource(self) -> ApiResource {
        match self {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        }
    }
}

/// Which workloads are restarted, and how fast.
#[derive(Clone, Debug)]
pub struct RestartSettings {
    pub kinds: Vec<WorkloadKind>,
    pub limits: Limits,
}

/// A workload, by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

impl InNamespace for WorkloadKey {
    fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// What is kept of an AcsIdentity: its current token (by hash and expiry), and what the
/// restart condition is written against.
#[derive(Clone, Debug, Default)]
struct ObservedIdentity {
    uid: Option<String>,
    hash: Option<String>,
    expires: Option<jiff::Timestamp>,
    /// The revoke annotation value its status says was last acted on.
    revoke_handled: Option<String>,
    conditions: Vec<Condition>,
}

/// What is kept of an opted-in workload.
#[derive(Debug)]
struct ObservedWorkload {
    uid: Option<String>,
    /// The identities it consumes, or why its annotation is not understood.
    consumes: Result<Vec<String>, String>,
    state: WorkloadState,
}

/// A watch event, from any of the watched kinds.
enum Input {
    Identity(Box<watcher::Event<AcsIdentity>>),
    Workload(WorkloadKind, Box<watcher::Event<ObjectMeta>>),
}

/// The metadata of a workload, without its kind's type.
fn erase<K>(e: watcher::Event<PartialObjectMeta<K>>) -> watcher::Event<ObjectMeta> {
    match e {
        watcher::Event::Apply(m) => watcher::Event::Apply(m.metadata),
        watcher::Event::Delete(m) => watcher::Event::Delete(m.metadata),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(m) => watcher::Event::InitApply(m.metadata),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Everything the restart controller knows of the cluster, from its watches.
struct Index {
    identities: HashMap<(String, String), ObservedIdentity>,
    workloads: BTreeMap<WorkloadKey, ObservedWorkload>,
    /// (namespace, identity) -> the workloads that consume it.
    consumers: HashMap<(String, String), BTreeSet<WorkloadKey>>,
    /// Streams between a (re)list's start and its end: nothing is decided meanwhile, as the
    /// picture is incomplete. All start listing.
    listing: HashSet<Option<WorkloadKind>>,
    /// Objects seen during a stream's current list, to drop those gone at its end.
    relisted: HashMap<Option<WorkloadKind>, HashSet<(String, String)>>,
    /// Workloads to look at in the next round (they, or their identities, changed).
    dirty: BTreeSet<WorkloadKey>,
}

/// The restart controller: its index, the policy's pace of restarts, and the clients it acts
/// with.
struct Restarter {
    index: Index,
    pacer: Pacer<WorkloadKey>,
    act: act::Actor,
    metrics: Arc<Metrics>,
}

/// Runs the restart controller for `namespace` (or the whole cluster) until dropped; never
/// returns when `settings` is `None` (the feature is off).
pub async fn run(
    client: Client,
    namespace: Option<String>,
    settings: Option<RestartSettings>,
    metrics: Arc<Metrics>,
    instance: Option<String>,
    list: InitialList,
) {
    let Some(settings) = settings.filter(|s| !s.kinds.is_empty()) else {
        return std::future::pending().await;
    };
    let kinds: BTreeSet<_> = settings.kinds.iter().copied().collect();
    info!(kinds = ?kinds, limits = ?settings.limits, "restarting consumers of renewed tokens");
    let mut inputs: SelectAll<BoxStream<'static, Input>> = SelectAll::new();
    let identities: Api<AcsIdentity> = scoped(&client, namespace.as_deref());
    inputs.push(
        watcher(identities, watch_config(list))
            .default_backoff()
            .filter_map(|e| async move {
                log_watch_error("AcsIdentity", e).map(|e| Input::Identity(Box::new(e)))
            })
            .boxed(),
    );
    for kind in &kinds {
        inputs.push(match kind {
            WorkloadKind::Deployment => {
                workload_stream::<Deployment>(&client, &namespace, *kind, list)
            }
            WorkloadKind::StatefulSet => {
                workload_stream::<StatefulSet>(&client, &namespace, *kind, list)
            }
            WorkloadKind::DaemonSet => {
                workload_stream::<DaemonSet>(&client, &namespace, *kind, list)
            }
        });
    }
    let mut listing: HashSet<Option<WorkloadKind>> = kinds.iter().map(|k| Some(*k)).collect();
    listing.insert(None);
    let mut r = Restarter {
        index: Index {
            identities: HashMap::new(),
            workloads: BTreeMap::new(),
            consumers: HashMap::new(),
            relisted: HashMap::new(),
            listing,
            dirty: BTreeSet::new(),
        },
        pacer: Pacer::new(settings.limits),
        act: act::Actor::new(client, instance),
        metrics,
    };
    loop {
        let wake = r.next_wake();
        let input = tokio::select! {
            input = inputs.next() => match input {
                Some(input) => Some(input),
                None => return,
            },
            _ = sleep_until(wake) => None,
        };
        if let Some(input) = input {
            r.observe(input);
        }
        // Take every event already waiting before deciding: a burst of renewals is one look.
        while let Some(Some(input)) = futures::FutureExt::now_or_never(inputs.next()) {
            r.observe(input);
        }
        if r.index.listing.is_empty() {
            r.round().await;
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A metadata-only watch of one workload kind.
fn workload_stream<K>(
    client: &Client,
    namespace: &Option<String>,
    kind: WorkloadKind,
    list: InitialList,
) -> BoxStream<'static, Input>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = scoped(client, namespace.as_deref());
    watcher(api, watch_config(list))
        .default_backoff()
        .map_ok(move |e| Input::Workload(kind, Box::new(erase(e))))
        .filter_map(move |e| async move { log_watch_error(kind.as_str(), e) })
        .boxed()
}

fn log_watch_error<T>(kind: &str, e: Result<T, watcher::Error>) -> Option<T> {
    match e {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(kind, error = %e, "restart watch failed; retrying");
            None
        }
    }
}

fn time_left(t: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    crate::policy::time_until(t, now).unwrap_or(Duration::ZERO)
}

impl Restarter {
    /// When the loop must run a round without an event: at once while workloads changed, else
    /// when the first wait is over.
    fn next_wake(&self) -> Option<Instant> {
        if !self.index.dirty.is_empty() && self.index.listing.is_empty() {
            return Some(Instant::now());
        }
        self.index
            .workloads
            .values()
            .filter_map(|w| w.state.wake)
            .chain(self.pacer.wake())
            .min()
    }

    fn observe(&mut self, input: Input) {
        match input {
            Input::Identity(event) => self.observe_identities(*event),
            Input::Workload(kind, event) => self.observe_workloads(kind, *event),
        }
    }

    fn observe_identities(&mut self, event: watcher::Event<AcsIdentity>) {
        let index = &mut self.index;
        match event {
            watcher::Event::Init => index.start_list(None),
            watcher::Event::InitApply(obj) => {
                index.seen(None, obj.meta());
                index.identity_applied(&obj);
            }
            watcher::Event::Apply(obj) => index.identity_applied(&obj),
            watcher::Event::Delete(obj) => {
                let key = (obj.namespace().unwrap_or_default(), obj.name_any());
                index.identities.remove(&key);
                index.mark_consumers(&key, None, false);
            }
            watcher::Event::InitDone => {
                let seen = index.relisted.remove(&None).unwrap_or_default();
                let gone: Vec<_> = index
                    .identities
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    index.identities.remove(&key);
                    index.mark_consumers(&key, None, false);
                }
                index.listing.remove(&None);
            }
        }
    }

    fn observe_workloads(&mut self, kind: WorkloadKind, event: watcher::Event<ObjectMeta>) {
        match event {
            watcher::Event::Init => self.index.start_list(Some(kind)),
            watcher::Event::InitApply(obj) => {
                self.index.seen(Some(kind), &obj);
                self.workload_applied(kind, obj);
            }
            watcher::Event::Apply(obj) => self.workload_applied(kind, obj),
            watcher::Event::Delete(obj) => {
                let key = workload_key(kind, &obj);
                self.forget_workload(&key);
            }
            watcher::Event::InitDone => {
                let seen = self.index.relisted.remove(&Some(kind)).unwrap_or_default();
                let gone: Vec<_> = self
                    .index
                    .workloads
                    .keys()
                    .filter(|k| {
                        k.kind == kind && !seen.contains(&(k.namespace.clone(), k.name.clone()))
                    })
                    .cloned()
                    .collect();
                for key in gone {
                    self.forget_workload(&key);
                }
                self.index.listing.remove(&Some(kind));
            }
        }
    }

    fn workload_applied(&mut self, kind: WorkloadKind, obj: ObjectMeta) {
        let key = workload_key(kind, &obj);
        let empty = BTreeMap::new();
        let annotations = obj.annotations.as_ref().unwrap_or(&empty);
        let Some(consumes) = annotations.get(CONSUMES_ANNOTATION) else {
            // Not (or no longer) opted in: nothing of it is kept.
            self.forget_workload(&key);
            return;
        };
        let consumes = consumed(consumes);
        let applied = annotations.get(RESTARTED_FOR_ANNOTATION).cloned();
        let uid = obj.uid.clone();
        let index = &mut self.index;
        let previous = index.workloads.remove(&key);
        if let Some(p) = &previous {
            index.unindex(&key, p);
        }
        if let Err(problem) = &consumes {
            let known = previous
                .as_ref()
                .is_some_and(|p| p.consumes.as_ref().err() == Some(problem));
            if !known {
                warn!(target = %key, %problem, "workload's restart annotation not understood");
                self.act
                    .annotation_problem(&key, uid.clone(), problem.clone());
            }
        }
        let mut workload = previous.unwrap_or(ObservedWorkload {
            uid: None,
            consumes: Ok(Vec::new()),
            state: WorkloadState::default(),
        });
        if workload.uid.is_some() && workload.uid != uid {
            // Deleted and made again under the same name: a new workload.
            workload.state = WorkloadState::default();
        }
        workload.uid = uid;
        workload.consumes = consumes;
        workload.state.applied = applied;
        if let Ok(names) = &workload.consumes {
            for name in names {
                index
                    .consumers
                    .entry((key.namespace.clone(), name.clone()))
                    .or_default()
                    .insert(key.clone());
            }
        }
        index.workloads.insert(key.clone(), workload);
        index.dirty.insert(key);
    }

    fn forget_workload(&mut self, key: &WorkloadKey) {
        self.index.forget(key);
        self.pacer.forget(key);
    }

    /// One round: the policy's plan for the workloads that changed or whose wait is over, then
    /// its writes, each result fed back.
    async fn round(&mut self) {
        let now = Instant::now();
        let look = self.index.due(now);
        let planned = plan(&mut self.pacer, &mut self.index, look, now);
        for (key, why) in &planned.new_waits {
            self.metrics
                .observe_restart_skipped(key.kind.as_str(), why.as_str());
        }
        for (key, wanted) in planned.baselines {
            self.baseline(key, wanted).await;
        }
        for (key, wanted) in planned.restarts {
            let started = Instant::now();
            self.pacer.restart_started(started);
            self.restart(key, wanted, started).await;
            self.pacer.restart_answered(Instant::now());
        }
        self.pacer.round_done(Instant::now());
    }

    async fn baseline(&mut self, key: WorkloadKey, wanted: String) {
        let uid = self.index.workloads.get(&key).and_then(|w| w.uid.clone());
        let result = self.act.baseline(&key, uid, &wanted).await;
        let answered = Instant::now();
        match &result {
            Ok(value) => {
                debug!(target = %key, %value, "restart annotation recorded");
                // The value written may be the template's, older than wanted.
                if self.index.workloads.contains_key(&key) {
                    self.index.dirty.insert(key.clone());
                }
                // The workload can be written now: an earlier failure's report goes.
                let identities = self.index.identity_refs(&key);
                self.act.clear_failures(&key, &identities).await;
            }
            Err(error) => {
                warn!(target = %key, %error, "could not record the restart annotation");
                if error.failure.worth_reporting() {
                    self.metrics.observe_restart(key.kind.as_str(), false);
                    let identities = self.index.identity_refs(&key);
                    self.act.report_failure(&key, error, &identities).await;
                }
            }
        }
        if let Some(w) = self.index.workloads.get_mut(&key) {
            let result = result.map_err(|e| e.failure);
            after_baseline(&mut w.state, result, answered, self.pacer.limits());
        }
    }

    async fn restart(&mut self, key: WorkloadKey, wanted: String, started: Instant) {
        let Some(workload) = self.index.workloads.get(&key) else {
            return;
        };
        let names = workload.consumes.clone().unwrap_or_default();
        let uid = workload.uid.clone();
        let identities = self.index.identity_refs(&key);
        let result = self.act.restart(&key, uid, &wanted, &names).await;
        match &result {
            Ok(()) => {
                info!(target = %key, identities = ?names, "restarted for renewed tokens");
                self.metrics.observe_restart(key.kind.as_str(), true);
                self.act.clear_failures(&key, &identities).await;
            }
            Err(error) => {
                warn!(target = %key, %error, "restart failed");
                self.metrics.observe_restart(key.kind.as_str(), false);
                self.act.report_failure(&key, error, &identities).await;
            }
        }
        if let Some(w) = self.index.workloads.get_mut(&key) {
            let result = result.map_err(|e| e.failure);
            after_restart(&mut w.state, wanted, started, result, self.pacer.limits());
        }
    }
}

impl Index {
    fn start_list(&mut self, stream: Option<WorkloadKind>) {
        self.listing.insert(stream);
        self.relisted.insert(stream, HashSet::new());
    }

    fn seen(&mut self, stream: Option<WorkloadKind>, obj: &ObjectMeta) {
        let key = (
            obj.namespace.clone().unwrap_or_default(),
            obj.name.clone().unwrap_or_default(),
        );
        self.relisted.entry(stream).or_default().insert(key);
    }

    fn identity_applied(&mut self, obj: &AcsIdentity) {
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        let status = obj.status.as_ref();
        let identity = ObservedIdentity {
            uid: obj.uid(),
            hash: status
                .and_then(|s| s.issued_for.as_ref())
                .map(|i| i.token_hash.clone()),
            expires: status
                .and_then(|s| s.token_expires_on.as_ref())
                .map(|t| t.0),
            revoke_handled: status.and_then(|s| s.handled_revoke_request.clone()),
            conditions: status.map(|s| s.conditions.clone()).unwrap_or_default(),
        };
        let previous = self.identities.insert(key.clone(), identity.clone());
        match previous {
            Some(p) if p.hash == identity.hash => {}
            // A new token: the old one's expiry is the consumers' budget; written with a
            // revoke request newly handled, the old one no longer works at all.
            Some(p) => {
                let revoked = identity.revoke_handled.is_some()
                    && identity.revoke_handled != p.revoke_handled;
                self.mark_consumers(&key, p.expires, revoked)
            }
            None => self.mark_consumers(&key, None, false),
        }
    }

    /// Queues a look at the workloads consuming `identity`; `old_expiry`: the replaced
    /// token's; `revoked`: the replaced token was revoked.
    fn mark_consumers(
        &mut self,
        identity: &(String, String),
        old_expiry: Option<jiff::Timestamp>,
        revoked: bool,
    ) {
        let Some(keys) = self.consumers.get(identity) else {
            return;
        };
        let budget = old_expiry.map(|e| {
            let now = jiff::Timestamp::now();
            Instant::now() + time_left(e, now)
        });
        for key in keys {
            if let Some(w) = self.workloads.get_mut(key) {
                if let Some(b) = budget {
                    w.state.budget = Some(w.state.budget.map_or(b, |old| old.min(b)));
                }
                w.state.revoked |= revoked;
            }
            self.dirty.insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &WorkloadKey, workload: &ObservedWorkload) {
        if let Ok(names) = &workload.consumes {
            for name in names {
                let ident = (key.namespace.clone(), name.clone());
                if let Some(set) = self.consumers.get_mut(&ident) {
                    set.remove(key);
                    if set.is_empty() {
                        self.consumers.remove(&ident);
                    }
                }
            }
        }
    }

    fn forget(&mut self, key: &WorkloadKey) {
        if let Some(w) = self.workloads.remove(key) {
            self.unindex(key, &w);
        }
        self.dirty.remove(key);
    }

    /// The workloads to look at now: those that changed, and those whose wait is over.
    fn due(&mut self, now: Instant) -> BTreeSet<WorkloadKey> {
        let mut look = std::mem::take(&mut self.dirty);
        look.extend(
            self.workloads
                .iter()
                .filter(|(_, w)| w.state.wake.is_some_and(|at| at <= now))
                .map(|(k, _)| k.clone()),
        );
        look
    }

    /// The identities `key` consumes that exist, as last seen.
    fn identity_refs(&self, key: &WorkloadKey) -> Vec<act::IdentityRef> {
        let Some(Ok(names)) = self.workloads.get(key).map(|w| &w.consumes) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| {
                let i = self.identities.get(&(key.namespace.clone(), n.clone()))?;
                Some(act::IdentityRef {
                    name: n.clone(),
                    uid: i.uid.clone(),
                    conditions: i.conditions.clone(),
                })
            })
            .collect()
    }
}

impl WorkloadIndex<WorkloadKey> for Index {
    /// The annotation value the workload should have, from its identities' current tokens.
    fn wanted(&self, key: &WorkloadKey) -> Option<String> {
        let names = self.workloads.get(key)?.consumes.as_ref().ok()?;
        Some(restart_value(names.iter().map(|n| {
            let identity = self.identities.get(&(key.namespace.clone(), n.clone()));
            (n.as_str(), identity.and_then(|i| i.hash.as_deref()))
        })))
    }

    fn state_mut(&mut self, key: &WorkloadKey) -> Option<&mut WorkloadState> {
        self.workloads.get_mut(key).map(|w| &mut w.state)
    }
}

fn workload_key(kind: WorkloadKind, obj: &ObjectMeta) -> WorkloadKey {
    WorkloadKey {
        kind,
        namespace: obj.namespace.clone().unwrap_or_default(),
        name: obj.name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_kind_or_resource_names() {
        for (input, expected) in [
            ("Deployment", Ok(WorkloadKind::Deployment)),
            ("deployments", Ok(WorkloadKind::Deployment)),
            (" statefulsets ", Ok(WorkloadKind::StatefulSet)),
            ("DaemonSet", Ok(WorkloadKind::DaemonSet)),
            ("rollouts", Err("unknown workload kind")),
        ] {
            match (WorkloadKind::parse(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("{input}: {got:?} vs {want:?}"),
            }
        }
    }
}

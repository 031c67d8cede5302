//! Restarts the workloads that consume a renewed token (issue 14), as `kubectl rollout
//! restart` does: a pod template annotation, written by server-side apply under its own field
//! manager. Off unless [`RestartSettings`] are given.
//!
//! Observe: AcsIdentity statuses (`status.issuedFor.tokenHash` says which token the Secret
//! holds; nothing else is kept) and the metadata of the Deployments, StatefulSets and
//! DaemonSets of the chosen kinds (only those that opt in with
//! [`CONSUMES_ANNOTATION`] are kept). Decide: [`crate::policy::restart`] — each target's
//! [`step`], and [`Turns`] for whose restart goes next within the cluster-wide rate (a
//! revoke's first, then fairly between namespaces). Act: [`act`].
//!
//! It never writes an AcsIdentity's spec or Secret, so a restart cannot lead to a new token,
//! and it runs beside the identity controller, so a failed restart never holds up a renewal.

mod act;

use crate::api::AcsIdentity;
use crate::metrics::Metrics;
use crate::policy::restart::{
    CONSUMES_ANNOTATION, Limits, RESTARTED_FOR_ANNOTATION, RateWindow, Skip, Step, TargetState,
    Turns, consumed, restart_value, step,
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

/// The least wait before a failed write is tried again, whatever the minimum interval.
const MIN_RETRY: Duration = Duration::from_secs(5);

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
pub struct TargetKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What is kept of an AcsIdentity.
#[derive(Clone, Debug, Default)]
struct Token {
    uid: Option<String>,
    hash: Option<String>,
    expires: Option<jiff::Timestamp>,
    /// The revoke annotation value its status says was last acted on.
    revoke_handled: Option<String>,
    conditions: Vec<Condition>,
}

/// What is kept of an opted-in workload.
#[derive(Debug)]
struct Target {
    uid: Option<String>,
    /// The identities it consumes, or why its annotation is not understood.
    consumes: Result<Vec<String>, String>,
    state: TargetState,
    /// The wait already counted in the metrics (one count per wait, not per look).
    counted: Option<Skip>,
    /// When to look again.
    wake: Option<Instant>,
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

/// Everything the restart controller knows, and the clients it acts with.
struct Restarter {
    act: act::Actor,
    limits: Limits,
    metrics: Arc<Metrics>,
    tokens: HashMap<(String, String), Token>,
    targets: BTreeMap<TargetKey, Target>,
    /// (namespace, identity) -> the targets that consume it.
    consumers: HashMap<(String, String), BTreeSet<TargetKey>>,
    rate: RateWindow,
    /// The due restarts the rate holds back, in the order they go.
    turns: Turns<TargetKey>,
    /// When the rate allows the next start, while some wait.
    rate_free_at: Option<Instant>,
    /// Streams between a (re)list's start and its end: nothing is decided meanwhile, as the
    /// picture is incomplete. All start listing.
    listing: HashSet<Option<WorkloadKind>>,
    /// Objects seen during a stream's current list, to drop those gone at its end.
    relisted: HashMap<Option<WorkloadKind>, HashSet<(String, String)>>,
    dirty: BTreeSet<TargetKey>,
}

/// Runs the restart controller for `namespace` (or the whole cluster) until dropped; never
/// returns when `settings` is `None` (the feature is off).
pub async fn run(
    client: Client,
    namespace: Option<String>,
    settings: Option<RestartSettings>,
    metrics: Arc<Metrics>,
    instance: Option<String>,
) {
    let Some(settings) = settings.filter(|s| !s.kinds.is_empty()) else {
        return std::future::pending().await;
    };
    let kinds: BTreeSet<_> = settings.kinds.iter().copied().collect();
    info!(kinds = ?kinds, limits = ?settings.limits, "restarting consumers of renewed tokens");
    let mut inputs: SelectAll<BoxStream<'static, Input>> = SelectAll::new();
    let identities: Api<AcsIdentity> = scoped(&client, namespace.as_deref());
    inputs.push(
        watcher(identities, watcher::Config::default().any_semantic())
            .default_backoff()
            .filter_map(|e| async move {
                log_watch_error("AcsIdentity", e).map(|e| Input::Identity(Box::new(e)))
            })
            .boxed(),
    );
    for kind in &kinds {
        inputs.push(match kind {
            WorkloadKind::Deployment => workload_stream::<Deployment>(&client, &namespace, *kind),
            WorkloadKind::StatefulSet => workload_stream::<StatefulSet>(&client, &namespace, *kind),
            WorkloadKind::DaemonSet => workload_stream::<DaemonSet>(&client, &namespace, *kind),
        });
    }
    let mut listing: HashSet<Option<WorkloadKind>> = kinds.iter().map(|k| Some(*k)).collect();
    listing.insert(None);
    let mut r = Restarter {
        act: act::Actor::new(client, instance),
        rate: RateWindow::new(&settings.limits),
        turns: Turns::default(),
        rate_free_at: None,
        limits: settings.limits,
        metrics,
        tokens: HashMap::new(),
        targets: BTreeMap::new(),
        consumers: HashMap::new(),
        relisted: HashMap::new(),
        listing,
        dirty: BTreeSet::new(),
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
        if r.listing.is_empty() {
            r.decide_and_act().await;
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
    watcher(api, watcher::Config::default().any_semantic())
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
    fn next_wake(&self) -> Option<Instant> {
        if !self.dirty.is_empty() && self.listing.is_empty() {
            return Some(Instant::now());
        }
        let rate = self.rate_free_at.filter(|_| !self.turns.is_empty());
        self.targets
            .values()
            .filter_map(|t| t.wake)
            .chain(rate)
            .min()
    }

    fn observe(&mut self, input: Input) {
        match input {
            Input::Identity(event) => self.observe_identities(*event),
            Input::Workload(kind, event) => self.observe_workloads(kind, *event),
        }
    }

    fn observe_identities(&mut self, event: watcher::Event<AcsIdentity>) {
        match event {
            watcher::Event::Init => self.start_list(None),
            watcher::Event::InitApply(obj) => {
                self.seen(None, obj.meta());
                self.identity_applied(&obj);
            }
            watcher::Event::Apply(obj) => self.identity_applied(&obj),
            watcher::Event::Delete(obj) => {
                let key = (obj.namespace().unwrap_or_default(), obj.name_any());
                self.tokens.remove(&key);
                self.mark_consumers(&key, None, false);
            }
            watcher::Event::InitDone => {
                let seen = self.relisted.remove(&None).unwrap_or_default();
                let gone: Vec<_> = self
                    .tokens
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.tokens.remove(&key);
                    self.mark_consumers(&key, None, false);
                }
                self.listing.remove(&None);
            }
        }
    }

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
        let token = Token {
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
        let previous = self.tokens.insert(key.clone(), token.clone());
        match previous {
            Some(p) if p.hash == token.hash => {}
            // A new token: the old one's expiry is the consumers' budget; written with a
            // revoke request newly handled, the old one no longer works at all.
            Some(p) => {
                let revoked =
                    token.revoke_handled.is_some() && token.revoke_handled != p.revoke_handled;
                self.mark_consumers(&key, p.expires, revoked)
            }
            None => self.mark_consumers(&key, None, false),
        }
    }

    /// Queues a look at the targets consuming `identity`; `old_expiry`: the replaced token's;
    /// `revoked`: the replaced token was revoked.
    fn mark_consumers(
        &mut self,
        identity: &(String, String),
        old_expiry: Option<jiff::Timestamp>,
        revoked: bool,
    ) {
        let Some(targets) = self.consumers.get(identity) else {
            return;
        };
        let budget = old_expiry.map(|e| {
            let now = jiff::Timestamp::now();
            Instant::now() + time_left(e, now)
        });
        for key in targets {
            if let Some(t) = self.targets.get_mut(key) {
                if let Some(b) = budget {
                    t.state.budget = Some(t.state.budget.map_or(b, |old| old.min(b)));
                }
                t.state.revoked |= revoked;
            }
            self.dirty.insert(key.clone());
        }
    }

    fn observe_workloads(&mut self, kind: WorkloadKind, event: watcher::Event<ObjectMeta>) {
        match event {
            watcher::Event::Init => self.start_list(Some(kind)),
            watcher::Event::InitApply(obj) => {
                self.seen(Some(kind), &obj);
                self.workload_applied(kind, obj);
            }
            watcher::Event::Apply(obj) => self.workload_applied(kind, obj),
            watcher::Event::Delete(obj) => {
                let key = target_key(kind, &obj);
                self.forget_target(&key);
            }
            watcher::Event::InitDone => {
                let seen = self.relisted.remove(&Some(kind)).unwrap_or_default();
                let gone: Vec<_> = self
                    .targets
                    .keys()
                    .filter(|k| {
                        k.kind == kind && !seen.contains(&(k.namespace.clone(), k.name.clone()))
                    })
                    .cloned()
                    .collect();
                for key in gone {
                    self.forget_target(&key);
                }
                self.listing.remove(&Some(kind));
            }
        }
    }

    fn workload_applied(&mut self, kind: WorkloadKind, obj: ObjectMeta) {
        let key = target_key(kind, &obj);
        let empty = BTreeMap::new();
        let annotations = obj.annotations.as_ref().unwrap_or(&empty);
        let Some(consumes) = annotations.get(CONSUMES_ANNOTATION) else {
            // Not (or no longer) opted in: nothing of it is kept.
            self.forget_target(&key);
            return;
        };
        let consumes = consumed(consumes);
        let applied = annotations.get(RESTARTED_FOR_ANNOTATION).cloned();
        let uid = obj.uid.clone();
        let previous = self.targets.remove(&key);
        if let Some(p) = &previous {
            self.unindex(&key, p);
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
        let mut target = previous.unwrap_or(Target {
            uid: None,
            consumes: Ok(Vec::new()),
            state: TargetState::default(),
            counted: None,
            wake: None,
        });
        if target.uid.is_some() && target.uid != uid {
            // Deleted and made again under the same name: a new workload.
            target.state = TargetState::default();
            target.counted = None;
        }
        target.uid = uid;
        target.consumes = consumes;
        target.state.applied = applied;
        if let Ok(names) = &target.consumes {
            for name in names {
                self.consumers
                    .entry((key.namespace.clone(), name.clone()))
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.targets.insert(key.clone(), target);
        self.dirty.insert(key);
    }

    fn unindex(&mut self, key: &TargetKey, target: &Target) {
        if let Ok(names) = &target.consumes {
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

    fn forget_target(&mut self, key: &TargetKey) {
        if let Some(t) = self.targets.remove(key) {
            self.unindex(key, &t);
        }
        self.dirty.remove(key);
        self.turns.remove(key);
    }

    /// The annotation value `target` should have, from its identities' current tokens.
    fn wanted(&self, key: &TargetKey, names: &[String]) -> String {
        restart_value(names.iter().map(|n| {
            let token = self.tokens.get(&(key.namespace.clone(), n.clone()));
            (n.as_str(), token.and_then(|t| t.hash.as_deref()))
        }))
    }

    /// Looks at every target that changed or whose wait is over, puts the due ones in line,
    /// and restarts from the line as the cluster-wide rate allows.
    async fn decide_and_act(&mut self) {
        let now = Instant::now();
        let mut look: BTreeSet<TargetKey> = std::mem::take(&mut self.dirty);
        look.extend(
            self.targets
                .iter()
                .filter(|(_, t)| t.wake.is_some_and(|w| w <= now))
                .map(|(k, _)| k.clone()),
        );
        let mut baselines: Vec<(TargetKey, String)> = Vec::new();
        for key in look {
            let Some(names) = self.targets.get(&key).and_then(|t| t.consumes.clone().ok()) else {
                self.turns.remove(&key);
                continue;
            };
            let wanted = self.wanted(&key, &names);
            let target = self.targets.get_mut(&key).expect("looked up above");
            target.wake = None;
            if target.state.applied.as_deref() == Some(wanted.as_str()) {
                target.state.pending_since = None;
                target.state.budget = None;
                target.state.revoked = false;
                target.counted = None;
                self.turns.remove(&key);
                continue;
            }
            if target.state.applied.is_some() && target.state.pending_since.is_none() {
                target.state.pending_since = Some(now);
            }
            // The cluster's rate is applied below, in turns.
            match step(&wanted, &target.state, now, &self.limits, None) {
                Step::Idle => self.turns.remove(&key),
                Step::Baseline => {
                    self.turns.remove(&key);
                    baselines.push((key, wanted));
                }
                Step::Wait { until, why } => {
                    self.turns.remove(&key);
                    target.wake = Some(until);
                    if target.counted != Some(why) {
                        target.counted = Some(why);
                        self.metrics
                            .observe_restart_skipped(key.kind.as_str(), why.as_str());
                    }
                }
                Step::Restart => {
                    let cause = target.state.cause();
                    let namespace = key.namespace.clone();
                    self.turns.push(&namespace, key, cause);
                }
            }
        }
        for (key, wanted) in baselines {
            let uid = self.targets.get(&key).and_then(|t| t.uid.clone());
            match self.act.baseline(&key, uid, &wanted).await {
                Ok(value) => {
                    debug!(target = %key, %value, "restart annotation recorded");
                    if let Some(t) = self.targets.get_mut(&key) {
                        t.state.applied = Some(value);
                        // The value written may be the template's, older than wanted.
                        self.dirty.insert(key);
                    }
                }
                Err(failure) => {
                    warn!(target = %key, error = %failure, "could not record the restart annotation");
                    if let Some(t) = self.targets.get_mut(&key) {
                        t.wake = Some(Instant::now() + self.limits.min_interval.max(MIN_RETRY));
                    }
                    if failure.worth_reporting() {
                        self.metrics.observe_restart(key.kind.as_str(), false);
                        let identities = self.identity_refs(&key);
                        self.act.report_failure(&key, &failure, &identities).await;
                    }
                }
            }
        }
        self.take_turns().await;
    }

    /// Restarts from the line while the cluster-wide rate allows; the rest wait for it.
    async fn take_turns(&mut self) {
        self.rate_free_at = None;
        while !self.turns.is_empty() {
            let now = Instant::now();
            if let Some(until) = self.rate.free_at(now) {
                self.rate_free_at = Some(until);
                break;
            }
            let Some((key, _)) = self.turns.pop() else {
                break;
            };
            // Its tokens may have changed while it waited: restart for the current ones.
            let Some(names) = self.targets.get(&key).and_then(|t| t.consumes.clone().ok()) else {
                continue;
            };
            let wanted = self.wanted(&key, &names);
            if self.targets[&key].state.applied.as_deref() == Some(wanted.as_str()) {
                continue;
            }
            self.rate.started(now);
            self.restart(key, wanted, now).await;
            self.rate.finished(Instant::now());
        }
        let held: Vec<TargetKey> = self.turns.waiting().cloned().collect();
        for key in held {
            if let Some(t) = self.targets.get_mut(&key)
                && t.counted != Some(Skip::RateLimited)
            {
                t.counted = Some(Skip::RateLimited);
                self.metrics
                    .observe_restart_skipped(key.kind.as_str(), Skip::RateLimited.as_str());
            }
        }
    }

    async fn restart(&mut self, key: TargetKey, wanted: String, now: Instant) {
        let Some(target) = self.targets.get(&key) else {
            return;
        };
        let names = target.consumes.clone().unwrap_or_default();
        let uid = target.uid.clone();
        let identities = self.identity_refs(&key);
        let result = self.act.restart(&key, uid, &wanted, &names).await;
        let target = self.targets.get_mut(&key).expect("checked above");
        target.state.last_attempt = Some(now);
        // Done, given up or retried after the interval in the renewals' lane: a failing write
        // must not hold the head of the line.
        target.state.revoked = false;
        target.counted = None;
        match result {
            Ok(()) => {
                info!(target = %key, identities = ?names, "restarted for renewed tokens");
                self.metrics.observe_restart(key.kind.as_str(), true);
                target.state.applied = Some(wanted);
                target.state.pending_since = None;
                target.state.budget = None;
                self.act.clear_failures(&key, &identities).await;
            }
            Err(failure) => {
                warn!(target = %key, error = %failure, "restart failed");
                self.metrics.observe_restart(key.kind.as_str(), false);
                if failure.give_up() {
                    // Someone else manages the annotation: not fought over.
                    target.state.given_up = Some(wanted);
                } else {
                    target.wake = Some(now + self.limits.min_interval.max(MIN_RETRY));
                    target.state.budget = None;
                }
                self.act.report_failure(&key, &failure, &identities).await;
            }
        }
    }
}

impl Restarter {
    /// The identities `key` consumes that exist, as last seen.
    fn identity_refs(&self, key: &TargetKey) -> Vec<act::IdentityRef> {
        let Some(Ok(names)) = self.targets.get(key).map(|t| &t.consumes) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| {
                let t = self.tokens.get(&(key.namespace.clone(), n.clone()))?;
                Some(act::IdentityRef {
                    name: n.clone(),
                    uid: t.uid.clone(),
                    conditions: t.conditions.clone(),
                })
            })
            .collect()
    }
}

fn target_key(kind: WorkloadKind, obj: &ObjectMeta) -> TargetKey {
    TargetKey {
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

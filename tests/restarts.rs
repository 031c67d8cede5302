//! Restarting the workloads that consume a renewed token (issue 14), against the test API
//! server and the ACS emulator. The server stores Deployments but runs no controllers and no
//! pods, so a restart is seen as what it is to Kubernetes: a new pod template, i.e. a new
//! `metadata.generation` with the operator's annotation on the template.

use acs_test_support as support;

use acs_identity_operator::api::AcsIdentity;
use acs_identity_operator::controller::identity::{REFRESH_ANNOTATION, REVOKE_ANNOTATION};
use acs_identity_operator::controller::restarts::{
    CONDITION, FIELD_MANAGER, RestartSettings, WorkloadKind,
};
use acs_identity_operator::controller::{self, Settings};
use acs_identity_operator::policy::restart::{
    CONSUMES_ANNOTATION, Limits, RESTARTED_FOR_ANNOTATION, restart_value,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::operator::{WAIT, World, ready_reason, status_of};

fn spec() -> Value {
    json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]})
}

/// Taken by every test, so they run one at a time: one operator watches the whole cluster (it
/// would restart the others' workloads), and the others time restarts against seconds-long
/// tokens, which two cores shared with eight other tests' API traffic made miss.
static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn limits(debounce_ms: u64, min_interval_ms: u64, per_window: u32, window_ms: u64) -> Limits {
    Limits {
        debounce: Duration::from_millis(debounce_ms),
        min_interval: Duration::from_millis(min_interval_ms),
        per_window,
        window: Duration::from_millis(window_ms),
    }
}

fn restarts(limits: Limits) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.restarts = Some(RestartSettings {
            kinds: vec![WorkloadKind::Deployment],
            limits,
        })
    }
}

/// A world whose operator restarts Deployments with `limits`.
async fn world(limits: Limits, configure: impl FnOnce(&mut acs_emulator::EmulatorConfig)) -> World {
    let mut w = World::without_operator(configure).await;
    w.start_operator_with(restarts(limits));
    w
}

/// The Deployment as its owner keeps it in Git.
fn manifest(name: &str, consumes: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {CONSUMES_ANNOTATION: consumes}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    })
}

/// `kubectl apply --server-side` of `body` by the field manager `manager` (not forced).
async fn apply_as(
    w: &World,
    manager: &str,
    name: &str,
    body: &Value,
) -> Result<Deployment, kube::Error> {
    w.api::<Deployment>()
        .patch(name, &PatchParams::apply(manager), &Patch::Apply(body))
        .await
}

async fn git_apply(w: &World, name: &str, consumes: &str) -> Deployment {
    apply_as(w, "git", name, &manifest(name, consumes, "app:1"))
        .await
        .unwrap()
}

/// The operator's annotation on the Deployment's metadata and on its pod template.
fn restarted_for(d: &Deployment) -> (Option<String>, Option<String>) {
    let meta = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION).cloned());
    let template = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION).cloned());
    (meta, template)
}

fn generation(d: &Deployment) -> i64 {
    d.metadata.generation.unwrap()
}

async fn wait_deployment(
    w: &World,
    name: &str,
    what: &str,
    check: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let cond = move |d: Option<&Deployment>| d.is_some_and(&check);
    match tokio::time::timeout(WAIT, await_condition(w.api::<Deployment>(), name, cond)).await {
        Ok(Ok(Some(d))) => d,
        other => {
            let now = w.get::<Deployment>(name).await;
            panic!(
                "Deployment {name} not {what} within {WAIT:?} ({other:?}); annotations {:?}, generation {:?}",
                now.as_ref().map(restarted_for),
                now.as_ref().map(generation)
            )
        }
    }
}

/// Waits until the operator recorded what the Deployment was started with (no restart).
async fn wait_baseline(w: &World, name: &str) -> Deployment {
    let d = wait_deployment(w, name, "baselined", |d| restarted_for(d).0.is_some()).await;
    assert_eq!(generation(&d), 1, "opting in does not restart");
    assert_eq!(restarted_for(&d).1, None, "the pod template is left alone");
    d
}

fn token_hash(obj: &AcsIdentity) -> String {
    status_of(obj)
        .issued_for
        .as_ref()
        .unwrap()
        .token_hash
        .clone()
}

/// Asks for a new token for `name` (the refresh annotation), returns its current hash.
async fn refresh(w: &World, name: &str, request: &str) -> String {
    let before = token_hash(&w.get::<AcsIdentity>(name).await.unwrap());
    w.apply::<AcsIdentity>(
        name,
        json!({"metadata": {"annotations": {REFRESH_ANNOTATION: request}}, "spec": spec()}),
    )
    .await;
    before
}

async fn wait_new_token(w: &World, name: &str, old_hash: &str) -> AcsIdentity {
    let old = old_hash.to_string();
    w.wait_identity(name, "renewed", move |o| {
        o.status
            .as_ref()
            .and_then(|s| s.issued_for.as_ref())
            .is_some_and(|i| i.token_hash != old)
    })
    .await
}

/// The value the operator must write for a workload consuming `names`, from their statuses.
async fn wanted(w: &World, names: &[&str]) -> String {
    let mut pairs = Vec::new();
    for n in names {
        let obj = w.get::<AcsIdentity>(n).await.unwrap();
        pairs.push((n.to_string(), token_hash(&obj)));
    }
    restart_value(pairs.iter().map(|(n, h)| (n.as_str(), Some(h.as_str()))))
}

/// Waits until the Deployment was restarted for `value`.
async fn wait_restarted_for(w: &World, name: &str, value: &str) -> Deployment {
    let v = value.to_string();
    wait_deployment(w, name, "restarted", move |d| {
        restarted_for(d) == (Some(v.clone()), Some(v.clone()))
    })
    .await
}

/// Records when each Deployment's generation changes, from a watch started now.
struct Generations {
    seen: Arc<Mutex<Vec<(String, i64, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Generations {
    fn watch(w: &World) -> Self {
        let seen: Arc<Mutex<Vec<(String, i64, Instant)>>> = Arc::default();
        let api = w.api::<Deployment>();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(d)) = stream.next().await {
                let (name, g) = (d.metadata.name.clone().unwrap(), generation(&d));
                let mut seen = sink.lock().unwrap();
                if !seen.iter().any(|(n, sg, _)| *n == name && *sg == g) {
                    seen.push((name, g, Instant::now()));
                }
            }
        });
        Self { seen, task }
    }

    /// When `name` first reached each generation above 1 (the restarts), in order.
    fn restarts_of(&self, name: &str) -> Vec<Instant> {
        let seen = self.seen.lock().unwrap();
        let mut r: Vec<_> = seen
            .iter()
            .filter(|(n, g, _)| n == name && *g > 1)
            .map(|(_, g, t)| (*g, *t))
            .collect();
        r.sort();
        r.into_iter().map(|(_, t)| t).collect()
    }
}

impl Drop for Generations {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn one_restart_per_renewal_and_none_without_a_new_token() {
    let _alone = CLUSTER.write().await;
    let mut w = world(limits(300, 0, 100, 1000), |_| {}).await;
    w.identity("alice", spec()).await;
    w.wait_ready("alice").await;
    git_apply(&w, "web", "alice").await;
    wait_baseline(&w, "web").await;

    // A renewal: one restart.
    let old = refresh(&w, "alice", "r1").await;
    wait_new_token(&w, "alice", &old).await;
    let d = wait_restarted_for(&w, "web", &wanted(&w, &["alice"]).await).await;
    assert_eq!(generation(&d), 2);
    let managers: Vec<_> = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&FIELD_MANAGER.to_string()),
        "{managers:?}"
    );

    // The Secret rewritten with the same token (by someone else): the identity controller
    // looks again and records the Secret's new version in status; nothing new was issued.
    let reconciled = w.reconcile_count("alice");
    let mut secret = w.get::<Secret>("alice").await.unwrap();
    secret
        .metadata
        .labels
        .get_or_insert_default()
        .insert("touched".into(), "yes".into());
    secret.metadata.managed_fields = None;
    w.api::<Secret>()
        .replace("alice", &Default::default(), &secret)
        .await
        .unwrap();
    w.wait_reconciled("alice", reconciled).await;

    // A refresh that fails (ACS answers 503 once) changes the status, not the token.
    w.admin
        .post(
            "admin/faults",
            json!({"operation": "issueToken", "count": 1, "status": 503}),
        )
        .await;
    let old = refresh(&w, "alice", "r2").await;
    let failing = w
        .wait_identity("alice", "failing", |o| {
            o.status.as_ref().and_then(|s| s.failed_attempts).is_some()
        })
        .await;
    assert_eq!(token_hash(&failing), old);
    assert_eq!(
        generation(&w.get::<Deployment>("web").await.unwrap()),
        2,
        "no restart for a failed refresh"
    );
    // Its retry succeeds: that is a renewal, and one restart.
    wait_new_token(&w, "alice", &old).await;
    let d = wait_restarted_for(&w, "web", &wanted(&w, &["alice"]).await).await;
    assert_eq!(generation(&d), 3);

    // The operator restarts: it computes the value already written, and writes nothing; the
    // next renewal is again one restart.
    // No debounce now: a restart wrongly decided at start would be written at once.
    w.stop_operator().await;
    w.start_operator_with(restarts(limits(0, 0, 100, 1000)));
    let old = refresh(&w, "alice", "r3").await;
    wait_new_token(&w, "alice", &old).await;
    let d = wait_restarted_for(&w, "web", &wanted(&w, &["alice"]).await).await;
    assert_eq!(
        generation(&d),
        4,
        "three renewals, three restarts, nothing else"
    );
    w.wait_metrics(r#"acs_identity_workload_restarts_total{kind="Deployment",result="done"} 1"#)
        .await;

    // A restart never led to a token: one create and three successful refreshes in all.
    assert_eq!(w.admin.count("createIdentityWithToken", 201).await, 1);
    assert_eq!(w.admin.count("issueToken", 200).await, 3);
    let events = w.wait_event("web", |reason, _| reason == "Restarted").await;
    assert!(
        events.iter().all(|(_, note)| !note.contains("eyJ")),
        "no token in Events: {events:?}"
    );
}

#[tokio::test]
async fn a_git_reapply_neither_undoes_nor_repeats_a_restart_and_another_manager_is_not_fought() {
    let _alone = CLUSTER.write().await;
    let w = world(limits(300, 0, 100, 1000), |_| {}).await;
    w.identity("alice", spec()).await;
    w.wait_ready("alice").await;
    git_apply(&w, "web", "alice").await;
    wait_baseline(&w, "web").await;
    let old = refresh(&w, "alice", "r1").await;
    wait_new_token(&w, "alice", &old).await;
    let first = wanted(&w, &["alice"]).await;
    wait_restarted_for(&w, "web", &first).await;

    // The same manifest applied again from Git: the annotation stays, nothing rolls out.
    let d = git_apply(&w, "web", "alice").await;
    assert_eq!(
        restarted_for(&d),
        (Some(first.clone()), Some(first.clone()))
    );
    assert_eq!(generation(&d), 2);
    // A new image from Git is Git's rollout; the operator's annotation still stays.
    let d = apply_as(&w, "git", "web", &manifest("web", "alice", "app:2"))
        .await
        .unwrap();
    assert_eq!(generation(&d), 3);
    assert_eq!(restarted_for(&d).1, Some(first.clone()));

    // The next renewal is one restart on top.
    let old = refresh(&w, "alice", "r2").await;
    wait_new_token(&w, "alice", &old).await;
    let second = wanted(&w, &["alice"]).await;
    let d = wait_restarted_for(&w, "web", &second).await;
    assert_eq!(generation(&d), 4);

    // Someone else takes the annotation over (a forced apply): the operator does not force
    // it back. The next renewal is reported as a conflict, and the template stays theirs.
    let mut theirs = manifest("web", "alice", "app:2");
    theirs["spec"]["template"]["metadata"]["annotations"] =
        json!({RESTARTED_FOR_ANNOTATION: "by-hand"});
    let d = w
        .api::<Deployment>()
        .patch(
            "web",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    assert_eq!(generation(&d), 5);
    let old = refresh(&w, "alice", "r3").await;
    wait_new_token(&w, "alice", &old).await;
    w.wait_event("web", |reason, note| {
        reason == "RestartConflict" && note.contains("not overriding")
    })
    .await;
    w.wait_event("alice", |reason, _| reason == "RestartConflict")
        .await;
    w.wait_metrics(r#"acs_identity_workload_restarts_total{kind="Deployment",result="failed"} 1"#)
        .await;
    let d = w.get::<Deployment>("web").await.unwrap();
    assert_eq!(generation(&d), 5, "not fought over");
    assert_eq!(restarted_for(&d).1.as_deref(), Some("by-hand"));
    let alice = w.get::<AcsIdentity>("alice").await.unwrap();
    assert_eq!(ready_reason(&alice).0, "True", "renewal goes on");
}

#[tokio::test]
async fn renewals_of_several_identities_within_the_window_are_one_restart() {
    let _alone = CLUSTER.write().await;
    let w = world(limits(3000, 0, 100, 1000), |_| {}).await;
    let names = ["ann", "ben", "cat"];
    for n in names {
        w.identity(n, spec()).await;
    }
    for n in names {
        w.wait_ready(n).await;
    }
    git_apply(&w, "web", "cat, ann,ben").await;
    wait_baseline(&w, "web").await;
    let mut old = Vec::new();
    for n in names {
        old.push(refresh(&w, n, "r1").await);
    }
    for (n, h) in names.iter().zip(&old) {
        wait_new_token(&w, n, h).await;
    }
    let d = wait_restarted_for(&w, "web", &wanted(&w, &names).await).await;
    assert_eq!(generation(&d), 2, "three renewals, one restart");
    w.wait_metrics(
        r#"acs_identity_workload_restarts_skipped_total{kind="Deployment",reason="debounced"} 1"#,
    )
    .await;
    let text = w
        .wait_metrics(r#"acs_identity_workload_restarts_total{kind="Deployment",result="done"} 1"#)
        .await;
    assert!(!text.contains(r#"result="done"} 2"#), "{text}");
}

#[tokio::test]
async fn a_mass_renewal_is_rolled_out_at_the_configured_rate() {
    let _alone = CLUSTER.write().await;
    // At most 2 restarts in any 2 s, cluster-wide.
    let w = world(limits(0, 0, 2, 2000), |_| {}).await;
    let names: Vec<String> = (0..6).map(|i| format!("id{i}")).collect();
    for n in &names {
        w.identity(n, spec()).await;
    }
    for n in &names {
        w.wait_ready(n).await;
        git_apply(&w, &format!("app-{n}"), n).await;
    }
    for n in &names {
        wait_baseline(&w, &format!("app-{n}")).await;
    }
    let generations = Generations::watch(&w);
    for n in &names {
        refresh(&w, n, "rotation").await;
    }
    let mut starts = Vec::new();
    for n in &names {
        let value = {
            // Wait for its new token, then for its restart.
            let obj = w
                .wait_identity(n, "renewed", |o| {
                    o.status
                        .as_ref()
                        .and_then(|s| s.handled_refresh_request.as_deref())
                        == Some("rotation")
                })
                .await;
            restart_value([(n.as_str(), Some(token_hash(&obj).as_str()))])
        };
        let d = wait_restarted_for(&w, &format!("app-{n}"), &value).await;
        assert_eq!(generation(&d), 2, "one restart each");
    }
    let watched = tokio::time::timeout(WAIT, async {
        loop {
            let all: Vec<_> = names
                .iter()
                .map(|n| generations.restarts_of(&format!("app-{n}")))
                .collect();
            if all.iter().all(|r| r.len() == 1) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the watch saw every restart");
    starts.extend(watched.into_iter().map(|r| r[0]));
    starts.sort();
    // Any three consecutive starts span at least the window (less what the watch adds).
    for three in starts.windows(3) {
        let span = three[2] - three[0];
        assert!(
            span >= Duration::from_millis(1700),
            "3 restarts within {span:?}: {starts:?}"
        );
    }
    w.wait_metrics(
        r#"acs_identity_workload_restarts_skipped_total{kind="Deployment",reason="rate_limited"}"#,
    )
    .await;
}

#[tokio::test]
async fn a_workload_is_restarted_at_most_once_per_interval() {
    let _alone = CLUSTER.write().await;
    let w = world(limits(0, 3000, 100, 1000), |_| {}).await;
    w.identity("alice", spec()).await;
    w.wait_ready("alice").await;
    git_apply(&w, "web", "alice").await;
    wait_baseline(&w, "web").await;
    let generations = Generations::watch(&w);
    let old = refresh(&w, "alice", "r1").await;
    wait_new_token(&w, "alice", &old).await;
    wait_restarted_for(&w, "web", &wanted(&w, &["alice"]).await).await;
    let old = refresh(&w, "alice", "r2").await;
    wait_new_token(&w, "alice", &old).await;
    let d = wait_restarted_for(&w, "web", &wanted(&w, &["alice"]).await).await;
    assert_eq!(generation(&d), 3);
    let times = tokio::time::timeout(WAIT, async {
        loop {
            let r = generations.restarts_of("web");
            if r.len() == 2 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(2700),
        "restarted again after {gap:?}"
    );
    w.wait_metrics(r#"acs_identity_workload_restarts_skipped_total{kind="Deployment",reason="rate_limited"} 1"#).await;
}

#[tokio::test]
async fn the_restart_comes_before_the_old_token_expires_even_with_a_long_debounce() {
    let _alone = CLUSTER.write().await;
    // 9 s tokens renew 3 s before expiry; a 30 s debounce would miss that by far.
    let w = world(limits(30_000, 0, 100, 1000), |c| {
        c.token_lifetime = Some(Duration::from_secs(9))
    })
    .await;
    w.identity("alice", spec()).await;
    let first = w.wait_ready("alice").await;
    git_apply(&w, "web", "alice").await;
    wait_baseline(&w, "web").await;
    // Tokens renew every 6 s: which renewal's restart the test sees first depends on how
    // fast this machine is, so every token is recorded with its expiry as it appears, and the
    // first restart for any of them must come before the token it replaced expired.
    let mut tokens = vec![(
        token_hash(&first),
        status_of(&first).token_expires_on.clone().unwrap().0,
    )];
    let deadline = std::time::Instant::now() + WAIT;
    let (d, at, old_expiry) = loop {
        let now = w.get::<AcsIdentity>("alice").await.unwrap();
        let hash = token_hash(&now);
        if tokens.last().is_none_or(|(h, _)| *h != hash) {
            tokens.push((hash, status_of(&now).token_expires_on.clone().unwrap().0));
        }
        let d = w.get::<Deployment>("web").await.unwrap();
        let at = jiff::Timestamp::now();
        let (recorded, template) = restarted_for(&d);
        let restarted = template.filter(|t| Some(t) == recorded.as_ref());
        if let Some(value) = restarted
            && let Some(i) = (1..tokens.len())
                .find(|&i| restart_value([("alice", Some(tokens[i].0.as_str()))]) == value)
        {
            break (d, at, tokens[i - 1].1);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web not restarted for a renewed token within {WAIT:?}: {:?}, generation {}",
            restarted_for(&d),
            generation(&d)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(generation(&d) >= 2);
    assert!(
        at < old_expiry,
        "restarted at {at}, the old token expired at {old_expiry}"
    );
}

#[tokio::test]
async fn a_workload_that_cannot_be_patched_is_reported_and_renewal_goes_on() {
    let _alone = CLUSTER.write().await;
    let w = World::without_operator(|_| {}).await;
    // The operator's identity may do everything in the namespace except patch Deployments.
    let user = "restarts-test-operator";
    w.apply::<Role>(
        "operator",
        json!({"rules": [
            {"apiGroups": ["", "acsoperator.io", "events.k8s.io"], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        ]}),
    )
    .await;
    w.apply::<RoleBinding>(
        "operator",
        json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }),
    )
    .await;
    let mut config = support::cluster_config().await;
    config.auth_info.impersonate = Some(user.into());
    let client = kube::Client::try_from(config).unwrap();
    let identities: Api<AcsIdentity> = Api::namespaced(client.clone(), &w.ns);
    support::within("the operator's RBAC", async {
        while identities.list(&Default::default()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let metrics = Arc::new(acs_identity_operator::metrics::Metrics::default());
    let settings = Settings {
        namespace: Some(w.ns.clone()),
        metrics: metrics.clone(),
        allowed_endpoints: support::operator::emulator_endpoints(),
        ..Settings::default()
    };
    let mut settings = settings;
    // A failed write is tried again after min_interval: short, so the grant below is seen soon.
    restarts(limits(0, 5_000, 100, 1000))(&mut settings);
    let operator = tokio::spawn(controller::run(client, settings));
    let _stop = AbortOnDrop(operator);

    w.identity("alice", spec()).await;
    let alice = w.wait_ready("alice").await;
    git_apply(&w, "web", "alice").await;
    w.wait_event("alice", |reason, note| {
        reason == "RestartForbidden" && note.contains("Deployment")
    })
    .await;
    w.wait_event("web", |reason, _| reason == "RestartForbidden")
        .await;
    let reported = w
        .wait_identity("alice", "reporting the workload", |o| {
            o.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == CONDITION && c.status == "False" && c.message.contains("web")
                })
            })
        })
        .await;
    assert_eq!(ready_reason(&reported).0, "True");
    // Renewal is not held up by it.
    let old = refresh(&w, "alice", "r1").await;
    assert_eq!(old, token_hash(&alice));
    let renewed = wait_new_token(&w, "alice", &old).await;
    assert_eq!(ready_reason(&renewed).0, "True");
    // The identity controller's status write of the renewal keeps the report: each controller
    // applies only its own conditions.
    assert!(
        restart_condition(&renewed).is_some(),
        "the renewal's status write dropped the restart condition: {:?}",
        renewed.status.map(|s| s.conditions)
    );
    assert_eq!(generation(&w.get::<Deployment>("web").await.unwrap()), 1);
    assert!(
        metrics
            .encode()
            .contains(r#"acs_identity_workload_restarts_total{kind="Deployment",result="failed"}"#)
    );

    // Once the workload can be patched, the next restart succeeds and the report goes, while
    // the identity's own conditions stay.
    w.apply::<Role>(
        "operator",
        json!({"rules": [
            {"apiGroups": ["", "acsoperator.io", "events.k8s.io"], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
        ]}),
    )
    .await;
    // The retried baseline write goes through and the report goes; then a renewal restarts.
    let cleared = w
        .wait_identity("alice", "clearing the report", |o| {
            restart_condition(o).is_none()
        })
        .await;
    assert_eq!(ready_reason(&cleared).0, "True");
    wait_deployment(&w, "web", "the baseline", |d| restarted_for(d).0.is_some()).await;
    let old = refresh(&w, "alice", "r2").await;
    wait_new_token(&w, "alice", &old).await;
    wait_deployment(&w, "web", "the restart", |d| generation(d) == 2).await;
    assert!(restart_condition(&w.get::<AcsIdentity>("alice").await.unwrap()).is_none());
}

fn restart_condition(o: &AcsIdentity) -> Option<&Condition> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A namespace beside `platform`'s with its own connection Secret and AcsConnection `acs`
/// to the same emulator, served by `platform`'s cluster-wide operator.
async fn tenant(platform: &World, hint: &str) -> World {
    let t = platform.neighbour(hint).await;
    t.put_secret(
        "acs-conn",
        "connectionString",
        &platform.connection_string(),
    )
    .await;
    t.apply::<acs_identity_operator::api::AcsConnection>(
        "acs",
        json!({"spec": {"connectionStringSecretRef": {"name": "acs-conn", "key": "connectionString"}}}),
    )
    .await;
    t
}

/// How many of `t`'s Deployments consuming `identity` still wait for the restart its
/// current token asks for.
async fn behind(t: &World, identity: &str) -> usize {
    let value = restart_value([(
        identity,
        Some(token_hash(&t.get::<AcsIdentity>(identity).await.unwrap()).as_str()),
    )]);
    let list = t
        .api::<Deployment>()
        .list(&Default::default())
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|d| restarted_for(d).1.as_deref() != Some(value.as_str()))
        .count()
}

/// Issue 19, attack 6: team-b keeps 100 opted-in Deployments due for a restart (their
/// identity is refreshed every 2 s, far faster than the cluster's rate of 2 restarts a
/// second restarts them), on 60-minute tokens that expire before team-a's 24-hour ones.
/// team-a revokes its identity's tokens: its Deployment is restarted at once (no debounce),
/// ahead of team-b's backlog; and its next plain renewal within a bound, in its fair turn.
#[tokio::test]
async fn another_namespaces_backlog_holds_neither_a_renewal_nor_a_revoke_back() {
    const BACKLOG: usize = 100;
    const DEBOUNCE: Duration = Duration::from_secs(5);
    const BOUND: Duration = Duration::from_secs(15);
    let _alone = CLUSTER.write().await;
    let mut platform = World::without_operator(|_| {}).await;
    platform.start_operator_with(|s| {
        restarts(limits(DEBOUNCE.as_millis() as u64, 0, 2, 1000))(s);
        s.namespace = None;
    });
    let (team_a, team_b) = (
        tenant(&platform, "team-a").await,
        tenant(&platform, "team-b").await,
    );
    let lifetime = |minutes: u32| json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"], "tokenLifetimeMinutes": minutes});
    team_b.identity("bulk", lifetime(60)).await;
    team_a.identity("alice", lifetime(1440)).await;
    team_b.wait_ready("bulk").await;
    team_a.wait_ready("alice").await;
    for i in 0..BACKLOG {
        git_apply(&team_b, &format!("app-{i:03}"), "bulk").await;
    }
    git_apply(&team_a, "web", "alice").await;
    for i in 0..BACKLOG {
        wait_deployment(&team_b, &format!("app-{i:03}"), "baselined", |d| {
            restarted_for(d).0.is_some()
        })
        .await;
    }
    wait_baseline(&team_a, "web").await;

    // team-b refreshes its identity every 2 s from now on (a load, not a wait).
    let refresher = {
        let api = team_b.api::<AcsIdentity>();
        AbortOnDrop(tokio::spawn(async move {
            for n in 0u64.. {
                let patch =
                    json!({"metadata": {"annotations": {REFRESH_ANNOTATION: n.to_string()}}});
                let _ = api
                    .patch("bulk", &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }))
    };
    let backlog = support::within("team-b's backlog", async {
        loop {
            let n = behind(&team_b, "bulk").await;
            if n >= BACKLOG / 2 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    // team-a revokes: the new token is written, and the Deployment restarted for it in time.
    let revoked = token_hash(&team_a.get::<AcsIdentity>("alice").await.unwrap());
    team_a
        .annotate("alice", REVOKE_ANNOTATION, "incident-1")
        .await;
    let after_revoke = wait_new_token(&team_a, "alice", &revoked).await;
    let handled = Instant::now();
    let value = restart_value([("alice", Some(token_hash(&after_revoke).as_str()))]);
    let restarted = tokio::time::timeout(BOUND, wait_restarted_for(&team_a, "web", &value)).await;
    assert!(
        restarted.is_ok(),
        "team-a's revoke not followed by a restart within {BOUND:?} behind team-b's {backlog} waiting"
    );
    let revoke_wait = handled.elapsed();
    assert!(
        revoke_wait < DEBOUNCE,
        "a revoke waits for no debounce: restarted {revoke_wait:?} after it"
    );

    // A plain renewal of team-a: in its turn, not behind the whole backlog.
    let still = behind(&team_b, "bulk").await;
    team_a.annotate("alice", REFRESH_ANNOTATION, "r1").await;
    let renewed = wait_new_token(&team_a, "alice", &token_hash(&after_revoke)).await;
    let handled = Instant::now();
    let value = restart_value([("alice", Some(token_hash(&renewed).as_str()))]);
    let restarted = tokio::time::timeout(BOUND, wait_restarted_for(&team_a, "web", &value)).await;
    assert!(
        restarted.is_ok(),
        "team-a's renewal not followed by a restart within {BOUND:?} behind team-b's {still} waiting"
    );
    let renewal_wait = handled.elapsed();
    drop(refresher);
    assert!(
        behind(&team_b, "bulk").await > 0 || still > 0,
        "team-b still had restarts waiting"
    );
    eprintln!(
        "team-b behind: {backlog} then {still}; team-a restarted {revoke_wait:?} after its revoke, {renewal_wait:?} after its renewal"
    );
    assert_eq!(
        generation(&team_a.get::<Deployment>("web").await.unwrap()),
        3,
        "one restart each"
    );
}

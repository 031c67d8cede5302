//! The scenarios a user meets, driven through the real operator, API server and ACS
//! emulator: each captured object must read as kstatus and Argo CD should say, and is the
//! testdata of the Argo CD health tests (see the crate docs for `UPDATE_TESTDATA`).

use super::argocd::{GROUP_DIR, PLACEHOLDER_TIME, REFRESH_ANNOTATION, read_yaml, run_lua};
use super::support::kstatus::{self, KStatus};
use super::support::operator::{World, status_of};
use acs_identity_operator::acs::{AcsRateLimiter, Operation};
use acs_identity_operator::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{CustomResourceExt, Resource};
use regex::Regex;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

fn spec(connection: Value) -> Value {
    json!({"connectionRef": connection, "scopes": ["chat"]})
}

fn updating() -> bool {
    std::env::var_os("UPDATE_TESTDATA").is_some_and(|v| v == "1")
}

fn testdata_path(kind: &str, file: &str) -> PathBuf {
    Path::new(GROUP_DIR)
        .join(kind)
        .join("testdata")
        .join(format!("{file}.yaml"))
}

/// The object as the API server returns it, untyped (what Argo CD and Flux read).
async fn fetch<K: Resource<DynamicType = ()>>(w: &World, name: &str) -> Value {
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = if K::kind(&()) == "ClusterAcsConnection" {
        Api::all_with(w.client.clone(), &resource)
    } else {
        Api::namespaced_with(w.client.clone(), &w.ns, &resource)
    };
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

static TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)").unwrap()
});
static IDENTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"8:acs:[0-9a-f]{8}-[0-9a-f-]{27}_[0-9a-f]{8}-[0-9a-f-]{27}").unwrap()
});
static PORT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"127\.0\.0\.1:\d+").unwrap());

/// What changes from run to run made fixed: the test namespace, times, identity ids, ports,
/// server bookkeeping, hashes and counts.
fn scrub(mut obj: Value, ns: &str) -> Value {
    fn strings(v: &mut Value, f: &impl Fn(&str) -> String) {
        match v {
            Value::String(s) => *s = f(s),
            Value::Array(items) => items.iter_mut().for_each(|i| strings(i, f)),
            Value::Object(map) => map.values_mut().for_each(|i| strings(i, f)),
            _ => {}
        }
    }
    let meta = obj["metadata"].as_object_mut().unwrap();
    for volatile in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        meta.remove(volatile);
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(issued) = status.get_mut("issuedFor").and_then(Value::as_object_mut) {
            issued.insert("tokenHash".into(), "0".repeat(16).into());
            issued.insert("connectionFingerprint".into(), "0".repeat(16).into());
            issued.insert("secretResourceVersion".into(), "1".into());
        }
        if status.contains_key("failedAttempts") {
            status.insert("failedAttempts".into(), 1.into());
        }
    }
    strings(&mut obj, &|s| {
        let s = s.replace(ns, "team");
        let s = TIME.replace_all(&s, PLACEHOLDER_TIME);
        let s = IDENTITY.replace_all(
            &s,
            "8:acs:00000000-0000-0000-0000-000000000000_00000000-0000-0000-0000-000000000001",
        );
        PORT.replace_all(&s, "127.0.0.1:8443").into_owned()
    });
    obj
}

/// The fields the health script reads.
fn lua_view(obj: &Value) -> Value {
    let conditions: Vec<Value> = obj["status"]["conditions"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    json!({"type": c["type"], "status": c["status"], "reason": c["reason"],
                        "message": c["message"]})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "generation": obj["metadata"]["generation"],
        "deleting": obj["metadata"].get("deletionTimestamp").is_some(),
        "observedGeneration": obj["status"]["observedGeneration"],
        "conditions": conditions,
    })
}

/// Checks what kstatus says of the live object, then writes it (scrubbed) as `file` under
/// `kind`'s testdata, or checks the committed file against it. Returns the scrubbed object.
fn capture(w: &World, kind: &str, file: &str, live: &Value, want: KStatus) -> Value {
    let computed = kstatus::compute(live).unwrap();
    assert_eq!(
        computed.status, want,
        "kstatus of {kind} {file}: {computed:?}\n{live:#}"
    );
    let scrubbed = scrub(live.clone(), &w.ns);
    let path = testdata_path(kind, file);
    if updating() {
        write_yaml(&path, &scrubbed);
    } else {
        let committed = read_yaml(&path);
        assert_eq!(
            lua_view(&committed),
            lua_view(&scrubbed),
            "{} no longer shows what the operator writes: UPDATE_TESTDATA=1 cargo test --test gitops",
            path.display()
        );
    }
    scrubbed
}

fn write_yaml(path: &Path, obj: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Quoted, so that no YAML 1.1 reader takes the (scrubbed) times for timestamps.
    static BARE_TIME: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(&format!(
            r"(?m)^(\s*(?:- )?(?:[A-Za-z0-9_.-]+: )?){PLACEHOLDER_TIME}$"
        ))
        .unwrap()
    });
    let yaml = serde_yaml::to_string(obj).unwrap();
    let yaml = BARE_TIME.replace_all(&yaml, format!("${{1}}'{PLACEHOLDER_TIME}'"));
    let text = format!(
        "# Captured from the operator by tests/gitops (UPDATE_TESTDATA=1 cargo test --test gitops).\n{yaml}"
    );
    std::fs::write(path, text).unwrap();
}

fn condition<'a>(obj: &'a AcsIdentity, type_: &str) -> Option<(&'a str, &'a str)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

const IDENTITY_KIND: &str = "AcsIdentity";

/// Ready; the refresh action, applied as Argo CD applies it, gets a new token; a spec the
/// operator has not seen yet; a deletion that waits for ACS.
#[tokio::test]
async fn an_identitys_life_reads_ready_then_in_progress_then_terminating() {
    let _shared = EXCLUSIVE.read().await;
    let mut w = World::new(|_| {}).await;
    w.identity("alice", spec(json!({"name": "acs"}))).await;
    let alice = w.wait_ready("alice").await;
    let live = fetch::<AcsIdentity>(&w, "alice").await;
    let healthy = capture(&w, IDENTITY_KIND, "healthy", &live, KStatus::Current);
    // The connection's own status is written by its controller, which may come after the
    // identity it serves is Ready.
    let observed = |c: Option<&AcsConnection>| {
        c.is_some_and(|c| {
            c.status.as_ref().and_then(|s| s.observed_generation) == c.metadata.generation
        })
    };
    let waited = kube::runtime::wait::await_condition(w.api::<AcsConnection>(), "acs", observed);
    tokio::time::timeout(std::time::Duration::from_secs(60), waited)
        .await
        .expect("the connection's status within 60 s")
        .expect("watch");
    let connection = fetch::<AcsConnection>(&w, "acs").await;
    capture(
        &w,
        "AcsConnection",
        "healthy",
        &connection,
        KStatus::Current,
    );

    // The refresh action's expected output: the healthy object with the annotation set.
    let expected = testdata_path(IDENTITY_KIND, "healthy_refresh_requested");
    if updating() {
        let mut refreshed = healthy.clone();
        refreshed["metadata"]["annotations"] = json!({REFRESH_ANNOTATION: PLACEHOLDER_TIME});
        write_yaml(&expected, &refreshed);
    }
    // What the action does, done to the live object: the operator issues a new token.
    let action = Path::new(GROUP_DIR).join("AcsIdentity/actions/refresh/action.lua");
    let refreshed = run_lua("action", &action, &live).unwrap();
    let value = refreshed["metadata"]["annotations"][REFRESH_ANNOTATION].clone();
    let api: Api<AcsIdentity> = w.api();
    let patch = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: value}}});
    api.patch("alice", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let hash = |o: &AcsIdentity| {
        status_of(o)
            .issued_for
            .as_ref()
            .map(|i| i.token_hash.clone())
    };
    let before = hash(&alice);
    let done = w
        .wait_identity("alice", "refreshed", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.handled_refresh_request.as_deref())
                == value.as_str()
        })
        .await;
    assert_ne!(hash(&done), before, "a new token in the Secret");
    assert_eq!(w.admin.count("issueToken", 200).await, 1);

    // A spec change the operator has not seen: in progress, whatever Ready still says.
    w.stop_operator().await;
    let mut s = spec(json!({"name": "acs"}));
    s["scopes"] = json!(["chat", "voip"]);
    w.identity("alice", s).await;
    let live = fetch::<AcsIdentity>(&w, "alice").await;
    assert_eq!(live["metadata"]["generation"], 2);
    capture(
        &w,
        IDENTITY_KIND,
        "progressing_generation_not_observed",
        &live,
        KStatus::InProgress,
    );
    w.start_operator();
    w.wait_ready("alice").await;

    // Deleting while ACS fails: the finalizer holds the object.
    w.admin
        .post(
            "admin/faults",
            json!({"operation": "revokeTokens", "count": 1000, "status": 503}),
        )
        .await;
    w.delete::<AcsIdentity>("alice").await;
    w.wait_event("alice", |_, note| note.starts_with("cleanup failed"))
        .await;
    let live = fetch::<AcsIdentity>(&w, "alice").await;
    let deleting = capture(
        &w,
        IDENTITY_KIND,
        "progressing_deleting",
        &live,
        KStatus::Terminating,
    );
    let discovery = Path::new(GROUP_DIR).join("AcsIdentity/actions/discovery.lua");
    let actions = run_lua("discovery", &discovery, &deleting).unwrap();
    assert_eq!(
        actions["refresh"]["disabled"], true,
        "no refresh while deleting"
    );
    let release = json!({"metadata": {"annotations": {"acsoperator.io/skip-cleanup": "true"}}});
    api.patch("alice", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    w.wait_gone("alice").await;
}

/// An object the operator has not written yet reads as in progress, not as done.
#[tokio::test]
async fn a_new_identity_is_in_progress_before_the_operator_sees_it() {
    let _shared = EXCLUSIVE.read().await;
    let w = World::without_operator(|_| {}).await;
    w.identity("new", spec(json!({"name": "acs"}))).await;
    let live = fetch::<AcsIdentity>(&w, "new").await;
    assert_eq!(
        live["status"],
        json!({"observedGeneration": 0}),
        "the CRD's default"
    );
    capture(
        &w,
        IDENTITY_KIND,
        "progressing_new",
        &live,
        KStatus::InProgress,
    );
    let connection = fetch::<AcsConnection>(&w, "acs").await;
    capture(
        &w,
        "AcsConnection",
        "progressing_new",
        &connection,
        KStatus::InProgress,
    );
}

/// Waiting in line for ACS capacity is progress.
#[tokio::test]
async fn an_identity_in_line_for_acs_capacity_is_in_progress() {
    let _shared = EXCLUSIVE.read().await;
    let mut w = World::without_operator(|_| {}).await;
    // One token request a minute: the second spec change waits for its turn.
    w.start_operator_with(|s| {
        s.rate_limiter = Arc::new(|| {
            AcsRateLimiter::with_limits(|op| {
                if op == Operation::IssueToken {
                    1
                } else {
                    op.acs_limit()
                }
            })
        })
    });
    w.identity("bob", spec(json!({"name": "acs"}))).await;
    w.wait_ready("bob").await;
    let mut s = spec(json!({"name": "acs"}));
    s["scopes"] = json!(["voip"]);
    w.identity("bob", s.clone()).await;
    w.wait_ready("bob").await;
    s["scopes"] = json!(["chat", "voip"]);
    w.identity("bob", s).await;
    w.wait_identity("bob", "in line", |o| {
        condition(o, "Reconciling") == Some(("True", "InLine"))
            && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
    })
    .await;
    let live = fetch::<AcsIdentity>(&w, "bob").await;
    capture(
        &w,
        IDENTITY_KIND,
        "progressing_in_line",
        &live,
        KStatus::InProgress,
    );
}

/// A passing ACS failure is retried: in progress, not failed.
#[tokio::test]
async fn an_identity_retrying_a_passing_acs_failure_is_in_progress() {
    let _shared = EXCLUSIVE.read().await;
    let w = World::new(|_| {}).await;
    w.admin
        .post(
            "admin/faults",
            json!({"operation": "createIdentityWithToken", "count": 1000, "status": 503}),
        )
        .await;
    w.identity("ivan", spec(json!({"name": "acs"}))).await;
    w.wait_identity("ivan", "retrying", |o| {
        condition(o, "Reconciling") == Some(("True", "AcsUnavailable"))
    })
    .await;
    let live = fetch::<AcsIdentity>(&w, "ivan").await;
    capture(
        &w,
        IDENTITY_KIND,
        "progressing_retrying",
        &live,
        KStatus::InProgress,
    );
}

/// ACS rejecting the request waits for a change: failed at once.
#[tokio::test]
async fn an_identity_acs_rejects_is_failed() {
    let _shared = EXCLUSIVE.read().await;
    let w = World::new(|_| {}).await;
    w.admin
        .post(
            "admin/faults",
            json!({"operation": "createIdentityWithToken", "count": 1000, "status": 400}),
        )
        .await;
    w.identity("rita", spec(json!({"name": "acs"}))).await;
    stalled(&w, "rita", "AcsRejected", "degraded_acs_rejected").await;
}

async fn stalled(w: &World, name: &str, reason: &str, file: &str) {
    w.wait_identity(name, reason, |o| {
        condition(o, "Stalled") == Some(("True", reason))
    })
    .await;
    let live = fetch::<AcsIdentity>(w, name).await;
    let computed = kstatus::compute(&live).unwrap();
    assert_eq!(computed.reason.as_deref(), Some(reason), "{computed:?}");
    capture(w, IDENTITY_KIND, file, &live, KStatus::Failed);
}

/// Every failure that waits for the user reads as failed, with its reason, for the
/// identity and for the connection at fault.
#[tokio::test]
async fn failures_that_wait_for_the_user_are_failed() {
    let _shared = EXCLUSIVE.read().await;
    let w = World::new(|_| {}).await;
    w.put_secret("judy", "token", "someone else's").await;
    w.identity("judy", spec(json!({"name": "acs"}))).await;

    let mut adopted = spec(json!({"name": "acs"}));
    adopted["identityId"] = json!("8:acs:00000000-0000-0000-0000-000000000000_nobody");
    w.identity("frank", adopted).await;

    w.identity("gina", spec(json!({"name": "missing"}))).await;

    w.put_secret("bad-string", "connectionString", "endpoint=https://x/")
        .await;
    w.apply::<AcsConnection>(
        "bad-string",
        json!({"spec": {"connectionStringSecretRef": {"name": "bad-string"}}}),
    )
    .await;
    w.identity("hank", spec(json!({"name": "bad-string"})))
        .await;

    w.apply::<AcsConnection>(
        "bad-ca",
        json!({"spec": {"connectionStringSecretRef": {"name": "acs-conn"}, "caBundle": "not a PEM"}}),
    )
    .await;
    w.identity("iris", spec(json!({"name": "bad-ca"}))).await;

    let endpoint = w.emulator.as_ref().unwrap().endpoint().to_string();
    let wrong_key =
        format!("endpoint={endpoint};accesskey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=");
    w.put_secret("wrong-key", "connectionString", &wrong_key)
        .await;
    w.apply::<AcsConnection>(
        "wrong-key",
        json!({"spec": {"connectionStringSecretRef": {"name": "wrong-key"}}}),
    )
    .await;
    w.identity("kate", spec(json!({"name": "wrong-key"}))).await;

    w.apply::<AcsConnection>(
        "no-token-file",
        json!({"spec": {"endpoint": "https://127.0.0.1:1/", "workloadIdentity": {"clientId": "c", "tenantId": "t"}}}),
    )
    .await;
    w.identity("lena", spec(json!({"name": "no-token-file"})))
        .await;

    for (name, reason, file) in [
        ("judy", "SecretConflict", "degraded_secret_conflict"),
        ("frank", "IdentityNotFound", "degraded_identity_not_found"),
        (
            "gina",
            "ConnectionNotFound",
            "degraded_connection_not_found",
        ),
        (
            "hank",
            "InvalidConnectionString",
            "degraded_invalid_connection_string",
        ),
        ("iris", "InvalidCaBundle", "degraded_invalid_ca_bundle"),
        ("kate", "AcsUnauthorized", "degraded_acs_unauthorized"),
        (
            "lena",
            "InvalidWorkloadIdentity",
            "degraded_invalid_workload_identity",
        ),
    ] {
        stalled(&w, name, reason, file).await;
    }

    // The connections themselves, as the operator checked them.
    for (name, reason, file) in [
        (
            "bad-string",
            "InvalidConnectionString",
            "degraded_invalid_connection_string",
        ),
        ("bad-ca", "InvalidCaBundle", "degraded_invalid_ca_bundle"),
        (
            "no-token-file",
            "InvalidWorkloadIdentity",
            "degraded_invalid_workload_identity",
        ),
    ] {
        let live =
            wait_for::<AcsConnection>(&w, w.api(), name, |c| has_condition(c, "Stalled", reason))
                .await;
        capture(&w, "AcsConnection", file, &live, KStatus::Failed);
    }
}

/// Whether `obj` has a True condition `type_` with `reason`.
fn has_condition(obj: &Value, type_: &str, reason: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|l| {
        l.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True" && c["reason"] == reason)
    })
}

/// Waits (bounded) until the object, as JSON, satisfies `check`; then fetches it untyped.
async fn wait_for<K>(w: &World, api: Api<K>, name: &str, check: impl Fn(&Value) -> bool) -> Value
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + 'static,
{
    let cond = move |o: Option<&K>| o.is_some_and(|o| check(&serde_json::to_value(o).unwrap()));
    let waited = tokio::time::timeout(
        super::support::operator::WAIT,
        kube::runtime::wait::await_condition(api, name, cond),
    )
    .await;
    assert!(
        matches!(waited, Ok(Ok(Some(_)))),
        "{} {name}: {waited:?}",
        K::kind(&())
    );
    fetch::<K>(w, name).await
}

/// ClusterAcsConnections are watched only by an operator that watches the whole cluster: this
/// test runs one, so it runs alone (the others would see it reconcile their identities).
#[tokio::test]
async fn cluster_connections_read_ready_or_failed_and_so_do_their_identities() {
    let _alone = EXCLUSIVE.write().await;
    let mut w = World::without_operator(|_| {}).await;
    w.start_operator_with(|s| s.namespace = None);
    let ns = w.ns.clone();
    let cluster = |name: &str| format!("{ns}-{name}");
    let params = PatchParams::apply("test").force();
    let clusters: Api<ClusterAcsConnection> = Api::all(w.client.clone());
    for (name, allowed, secret) in [
        ("open", json!({}), "acs-conn"),
        ("closed", json!({"names": ["elsewhere"]}), "acs-conn"),
        ("no-secret", json!({}), "not-there"),
    ] {
        let body = json!({
            "apiVersion": ClusterAcsConnection::api_resource().api_version,
            "kind": "ClusterAcsConnection",
            "metadata": {"name": cluster(name)},
            "spec": {
                "connectionStringSecretRef": {"name": secret, "namespace": ns, "key": "connectionString"},
                "allowedNamespaces": allowed,
            },
        });
        clusters
            .patch(&cluster(name), &params, &Patch::Apply(&body))
            .await
            .unwrap();
    }
    w.identity(
        "mona",
        spec(json!({"kind": "ClusterAcsConnection", "name": cluster("closed")})),
    )
    .await;
    stalled(
        &w,
        "mona",
        "ConnectionNotAllowed",
        "degraded_connection_not_allowed",
    )
    .await;
    let open = wait_for(&w, clusters.clone(), &cluster("open"), |c| {
        c["status"]["conditions"].as_array().is_some_and(|l| {
            l.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    })
    .await;
    capture(
        &w,
        "ClusterAcsConnection",
        "healthy",
        &open,
        KStatus::Current,
    );
    let missing = wait_for(&w, clusters.clone(), &cluster("no-secret"), |c| {
        has_condition(c, "Stalled", "ConnectionNotFound")
    })
    .await;
    capture(
        &w,
        "ClusterAcsConnection",
        "degraded_connection_not_found",
        &missing,
        KStatus::Failed,
    );
    for name in ["open", "closed", "no-secret"] {
        let _ = clusters.delete(&cluster(name), &Default::default()).await;
    }
    w.stop_operator().await;
}

/// Held (shared) by every test that runs a namespaced operator; taken alone by the one that
/// runs a cluster-wide operator.
static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

//! The identity reconcile's contract with the API server, call by call, against a mocked API
//! (tower-test) and the in-process ACS emulator: which requests a reconcile sends, in which
//! order, and nothing else. The same behaviour against a real API server is in
//! tests/operator; this pins the exact sequence without one.

use super::{FINALIZER, reconcile};
use crate::acs::{AccessKey, AcsRateLimiter};
use crate::api::{AcsConnection, AcsIdentity};
use crate::controller::connections::Connections;
use crate::controller::{Context, Settings, secret_index::TokenSecretIndex};
use acs_emulator::{EmulatorConfig, EmulatorHandle, serve};
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower_test::mock::{self, Handle};

const NS: &str = "team";
const KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

/// One request the reconcile is expected to send, and the answer to give it.
struct Expect {
    method: Method,
    path: String,
    /// `key=value` pairs the query must hold.
    query: &'static [&'static str],
    content_type: Option<&'static str>,
    status: StatusCode,
    body: Value,
}

fn expect(method: Method, path: &str, status: StatusCode, body: Value) -> Expect {
    Expect {
        method,
        path: path.to_string(),
        query: &[],
        content_type: None,
        status,
        body,
    }
}

/// Server-side apply under the operator's field manager.
const APPLY: &[&str] = &["fieldManager=acs-identity-operator", "force=true"];

fn apply(path: &str, status: StatusCode, body: Value) -> Expect {
    Expect {
        query: APPLY,
        content_type: Some("application/apply-patch+yaml"),
        ..expect(Method::PATCH, path, status, body)
    }
}

/// Answers the requests in order, checking each against `script`; returns the bodies sent.
/// Fails on any request beyond the script.
async fn serve_script(
    mut handle: Handle<Request<Body>, Response<Body>>,
    script: Vec<Expect>,
) -> Vec<Value> {
    let mut sent = Vec::new();
    for (i, step) in script.into_iter().enumerate() {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(10), handle.next_request())
                .await
                .unwrap_or_else(|_| {
                    panic!("request {i} ({} {}) never came", step.method, step.path)
                })
                .expect("client alive");
        let (path, query) = (request.uri().path(), request.uri().query().unwrap_or(""));
        assert_eq!(
            (request.method(), path),
            (&step.method, step.path.as_str()),
            "request {i}"
        );
        for pair in step.query {
            assert!(
                query.split('&').any(|p| p == *pair),
                "request {i} {path}?{query}: no {pair}"
            );
        }
        if let Some(wanted) = step.content_type {
            let content_type = request.headers()["content-type"].to_str().unwrap();
            assert_eq!(content_type, wanted, "request {i} {path}");
        }
        let bytes = request.into_body().collect_bytes().await.unwrap();
        sent.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
        let body = serde_json::to_vec(&step.body).unwrap();
        respond.send_response(
            Response::builder()
                .status(step.status)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        );
    }
    sent
}

const SECRETS: &str = "/api/v1/namespaces/team/secrets";
const IDENTITIES: &str = "/apis/acsoperator.io/v1alpha1/namespaces/team/acsidentities";

/// The connection's Secret, read once per connection and then cached.
fn connection_secret_read(connection_string: &str) -> Expect {
    expect(
        Method::GET,
        &format!("{SECRETS}/acs-conn"),
        StatusCode::OK,
        connection_secret(connection_string),
    )
}

/// The token Secret read (the index has not synced), and not there yet.
fn token_secret_absent() -> Expect {
    expect(
        Method::GET,
        &format!("{SECRETS}/alice"),
        StatusCode::NOT_FOUND,
        not_found(),
    )
}

/// The token Secret read, and found as `secret`.
fn token_secret_read(secret: Value) -> Expect {
    expect(
        Method::GET,
        &format!("{SECRETS}/alice"),
        StatusCode::OK,
        secret,
    )
}

fn event_created() -> Expect {
    expect(
        Method::POST,
        &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        StatusCode::CREATED,
        json!({}),
    )
}

/// The emulator's request counters.
async fn acs_stats(emulator: &EmulatorHandle) -> Value {
    reqwest::get(emulator.endpoint().join("admin/stats").unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": "not found"})
}

/// A new AcsIdentity, as the watch first delivers it (no finalizer yet).
fn identity() -> AcsIdentity {
    serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
        "metadata": {"name": "alice", "namespace": NS, "uid": "uid-alice",
                     "resourceVersion": "10", "generation": 1},
        "spec": {"connectionRef": {"name": "acs"}, "scopes": ["chat"]}
    }))
    .unwrap()
}

/// The finalizer added to `obj` by a JSON patch (that tests the finalizers seen), answered
/// with the object at resourceVersion 12.
fn finalizer_patch(obj: AcsIdentity) -> Expect {
    Expect {
        content_type: Some("application/json-patch+json"),
        ..expect(
            Method::PATCH,
            &format!("{IDENTITIES}/alice"),
            StatusCode::OK,
            with_finalizer(obj, "12"),
        )
    }
}

fn with_finalizer(mut obj: AcsIdentity, resource_version: &str) -> Value {
    obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
    obj.metadata.resource_version = Some(resource_version.into());
    serde_json::to_value(obj).unwrap()
}

struct Fixture {
    ctx: Arc<Context>,
    handle: Handle<Request<Body>, Response<Body>>,
    emulator: EmulatorHandle,
    connection_string: String,
    _connections: Writer<AcsConnection>,
}

async fn fixture() -> Fixture {
    fixture_with(Box::new(|| Arc::new(AcsRateLimiter::at_acs_limits()))).await
}

/// The fixture, its connection's ACS limits made by `limiter`.
async fn fixture_with(limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>) -> Fixture {
    let key = AccessKey::from_base64(KEY).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = serve(EmulatorConfig::new(key), listener).await.unwrap();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let (store, mut writer) = reflector::store::<AcsConnection>();
    let connection: AcsConnection = serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
        "metadata": {"name": "acs", "namespace": NS, "uid": "uid-acs", "generation": 1},
        "spec": {"connectionStringSecretRef": {"name": "acs-conn", "key": "connectionString"}}
    }))
    .unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(connection));
    let connections = Connections::new(
        client.clone(),
        store,
        reflector::store().0,
        Duration::from_secs(5),
        Default::default(),
        limiter,
    )
    .with_allowed_endpoints(
        crate::policy::endpoint::AllowedEndpoints::acs_and_parsed(["127.0.0.1:*"]).unwrap(),
    );
    let (nudge, _nudges) = mpsc::unbounded();
    let ctx = Context::new(
        client,
        &Settings::default(),
        connections,
        reflector::store().0,
        Arc::default(),
        Arc::new(TokenSecretIndex::default()),
        nudge,
    );
    Fixture {
        ctx: Arc::new(ctx),
        handle,
        connection_string: emulator.connection_string().expose(),
        emulator,
        _connections: writer,
    }
}

fn connection_secret(connection_string: &str) -> Value {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(connection_string);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "acs-conn", "namespace": NS, "resourceVersion": "3"},
           "data": {"connectionString": encoded}})
}

#[tokio::test]
async fn a_new_identity_costs_one_reconcile_a_finalizer_patch_one_secret_apply_one_status_apply_and_one_event()
 {
    let f = fixture().await;
    let mut written_secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "alice", "namespace": NS, "uid": "uid-secret", "resourceVersion": "11"}});
    written_secret["data"] = json!({});
    let script = vec![
        // The finalizer, added by a JSON patch that tests the finalizers seen, and the work
        // goes on in the same reconcile.
        finalizer_patch(identity()),
        connection_secret_read(&f.connection_string),
        // The token Secret: the index has not synced, so it is read.
        token_secret_absent(),
        // (one createIdentityWithToken call to ACS)
        apply(
            &format!("{SECRETS}/alice"),
            StatusCode::CREATED,
            written_secret,
        ),
        apply(
            &format!("{IDENTITIES}/alice/status"),
            StatusCode::OK,
            with_finalizer(identity(), "13"),
        ),
        event_created(),
    ];
    let server = tokio::spawn(serve_script(f.handle, script));
    let action = reconcile(Arc::new(identity()), f.ctx.clone())
        .await
        .unwrap();
    let sent = server.await.unwrap();

    assert_eq!(
        sent[0],
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
    );
    let sent = &sent[1..];
    let secret = &sent[2];
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-alice");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "acs-identity-operator"
    );
    assert!(
        secret["metadata"].get("uid").is_none(),
        "nothing observed to pin"
    );
    let status = &sent[3]["status"];
    assert_eq!(status["conditions"][0]["reason"], "TokenValid");
    assert_eq!(status["issuedFor"]["secretResourceVersion"], "11");
    assert_eq!(sent[4]["reason"], "IdentityCreated");
    let stats = acs_stats(&f.emulator).await;
    assert_eq!(stats["total"], 1, "one ACS call: {stats}");
    // The next look is the renewal, two thirds into a day: a far wait, held by the compact
    // list of wake-ups rather than kube-runtime's scheduler.
    assert_eq!(action, Action::await_change());
    assert_eq!(f.ctx.later.len(), 1, "the renewal's wait is held");
    f.emulator.shutdown().await;
}

/// Past the ACS window a new identity waits in line: the finalizer and what the decision
/// reads, and no status write (it reads observedGeneration 0 without conditions, in progress
/// for kstatus and Argo CD already).
#[tokio::test]
async fn a_new_identity_waiting_in_line_costs_a_finalizer_patch_and_no_status_write() {
    use crate::acs::{Admission, Operation};
    let f = fixture_with(Box::new(|| {
        let limiter = AcsRateLimiter::with_limits(|op| match op {
            Operation::CreateIdentityWithToken => 1,
            op => op.acs_limit(),
        });
        // The window's one create is taken by another namespace.
        let taken = limiter.admit_fair(Operation::CreateIdentityWithToken, "a/b", "a", false);
        assert_eq!(taken, Admission::Now);
        Arc::new(limiter)
    }))
    .await;
    let mut new = identity();
    new.status = Some(crate::api::AcsIdentityStatus {
        observed_generation: Some(0),
        ..Default::default()
    });
    let script = vec![
        finalizer_patch(new.clone()),
        connection_secret_read(&f.connection_string),
        token_secret_absent(),
    ];
    let server = tokio::spawn(serve_script(f.handle, script));
    // A status write beyond the script finds no server: the reconcile would fail.
    let action = reconcile(Arc::new(new), f.ctx.clone()).await.unwrap();
    assert_eq!(server.await.unwrap().len(), 3);
    let stats = acs_stats(&f.emulator).await;
    assert_eq!(stats["total"], 0, "no ACS call: {stats}");
    let wait = format!("{action:?}");
    assert!(wait.contains("requeue_after: Some("), "{wait}");
    f.emulator.shutdown().await;
}

/// An identity whose token fell due `late` seconds ago, with a day's token still valid for
/// an hour and its Secret holding it: the object and the Secret as the API server has them.
async fn due_renewal(f: &Fixture, late: i64) -> (AcsIdentity, Value) {
    let acs = crate::acs::AcsClient::new(
        &f.connection_string.parse().unwrap(),
        crate::acs::ClientOptions::default(),
    )
    .unwrap();
    let id = acs.create_identity().await.unwrap();

    // Status says a token was written and fell due `late` seconds ago; the Secret holds it.
    let now = jiff::Timestamp::now().as_second();
    let at = |s: i64| jiff::Timestamp::from_second(now + s).unwrap().to_string();
    let fingerprint = {
        let connection: crate::acs::ConnectionString = f.connection_string.parse().unwrap();
        crate::controller::connections::fingerprint(&connection)
    };
    let mut obj = serde_json::to_value(identity()).unwrap();
    obj["metadata"]["finalizers"] = json!([FINALIZER]);
    obj["status"] = json!({
        "identityId": id, "secretName": "alice",
        "tokenExpiresOn": at(3600), "renewalTime": at(-late), "lastIssuedAt": at(-7200),
        "issuedFor": {"scopes": ["chat"], "tokenLifetimeMinutes": 1440,
                      "connectionFingerprint": fingerprint,
                      "tokenHash": crate::controller::token_secret::token_hash("old-token"),
                      "secretResourceVersion": "20"},
    });
    let obj: AcsIdentity = serde_json::from_value(obj).unwrap();
    let secret = {
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "alice", "namespace": NS, "uid": "uid-secret",
                            "resourceVersion": "20",
                            "labels": {"app.kubernetes.io/managed-by": "acs-identity-operator"},
                            "ownerReferences": [{"apiVersion": "acsoperator.io/v1alpha1",
                                "kind": "AcsIdentity", "name": "alice", "uid": "uid-alice",
                                "controller": true}]},
               "type": "Opaque",
               "data": {"token": b64("old-token"), "expiresOn": b64(&at(3600)),
                        "identityId": b64(&id)}})
    };
    (obj, secret)
}

#[tokio::test]
async fn a_due_renewal_costs_one_secret_apply_one_status_apply_and_one_event() {
    let f = fixture().await;
    let (obj, secret) = due_renewal(&f, 60).await;
    let mut renewed = secret.clone();
    renewed["metadata"]["resourceVersion"] = json!("21");
    let script = vec![
        connection_secret_read(&f.connection_string),
        // Not yet synced, the index cannot vouch for the Secret: it is read.
        token_secret_read(secret),
        // (one issueToken call to ACS)
        apply(&format!("{SECRETS}/alice"), StatusCode::OK, renewed),
        apply(
            &format!("{IDENTITIES}/alice/status"),
            StatusCode::OK,
            with_finalizer(obj.clone(), "22"),
        ),
        event_created(),
    ];
    let server = tokio::spawn(serve_script(f.handle, script));
    reconcile(Arc::new(obj), f.ctx.clone()).await.unwrap();
    let sent = server.await.unwrap();

    assert_eq!(
        sent[2]["metadata"]["uid"], "uid-secret",
        "the write is pinned to the Secret observed as ours"
    );
    assert_ne!(
        sent[2]["data"]["token"],
        sent[1].get("data").cloned().unwrap_or_default()["token"]
    );
    assert_eq!(
        sent[3]["status"]["issuedFor"]["secretResourceVersion"],
        "21"
    );
    assert_eq!(sent[4]["reason"], "TokenRenewed");
    let stats = acs_stats(&f.emulator).await;
    assert_eq!(
        stats["total"], 2,
        "the test's create and one issue: {stats}"
    );
    f.emulator.shutdown().await;
}

/// A due renewal that finds the issue limit used up waits in line. For a moment (less than a
/// quarter of its margin, at most five minutes) that writes nothing: its renewal's own write
/// follows. Past that, status says it waits (Reconciling InLine, Ready False).
#[tokio::test]
async fn a_due_renewal_in_line_for_a_moment_writes_no_status_and_for_long_does() {
    use crate::acs::{Admission, Operation};
    for (late, written) in [(60, false), (400, true)] {
        let f = fixture_with(Box::new(|| {
            let limiter = AcsRateLimiter::with_limits(|op| match op {
                Operation::IssueToken => 1,
                op => op.acs_limit(),
            });
            // The one turn is taken by another identity.
            let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
            let taken = limiter.admit(Operation::IssueToken, "a/b", deadline);
            assert_eq!(taken, Admission::Now);
            Arc::new(limiter)
        }))
        .await;
        let (obj, secret) = due_renewal(&f, late).await;
        let mut script = vec![
            connection_secret_read(&f.connection_string),
            token_secret_read(secret),
        ];
        if written {
            script.push(apply(
                &format!("{IDENTITIES}/alice/status"),
                StatusCode::OK,
                with_finalizer(obj.clone(), "22"),
            ));
        }
        let server = tokio::spawn(serve_script(f.handle, script));
        // A status write beyond the script finds no server: the reconcile would fail.
        reconcile(Arc::new(obj), f.ctx.clone()).await.unwrap();
        let sent = server.await.unwrap();
        if written {
            let conditions = &sent[2]["status"]["conditions"];
            let find = |t: &str| {
                conditions
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == t))
                    .map(|c| (c["status"].clone(), c["reason"].clone()))
            };
            assert_eq!(find("Reconciling"), Some((json!("True"), json!("InLine"))));
            assert_eq!(find("Ready"), Some((json!("False"), json!("Expired"))));
        } else {
            assert_eq!(sent.len(), 2, "late {late} s");
        }
        let stats = acs_stats(&f.emulator).await;
        assert_eq!(stats["total"], 1, "the test's create, no issue: {stats}");
        f.emulator.shutdown().await;
    }
}

//! The API server behaviours the operator relies on, checked against the test
//! server (tests/kube-apiserver) or any cluster named by KUBECONFIG. These
//! pin down that the test server is real enough: if one fails here, tests
//! built on the server would prove nothing.

use acs_test_support as support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::discovery::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::{TestNamespace, within};

const WIDGET_GROUP: &str = "apiserver-tests.acs.example.com";

/// A CRD with a structural schema, a CEL rule, a status subresource and a
/// printer column: the CRD features the operator's own CRD uses.
fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{WIDGET_GROUP}") },
        "spec": {
            "group": WIDGET_GROUP,
            "scope": "Namespaced",
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": [{ "name": "Size", "type": "integer", "jsonPath": ".spec.size" }],
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": { "size": { "type": "integer", "minimum": 0 } },
                            "x-kubernetes-validations": [{ "rule": "self.size <= 10", "message": "size must be at most 10" }]
                        },
                        "status": { "type": "object", "properties": { "ready": { "type": "boolean" } } }
                    }
                }}
            }]
        }
    }))
    .expect("widget CRD")
}

/// Applies the widget CRD (idempotent: tests share it) and waits until it is served.
async fn install_widget_crd(client: Client) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = widget_crd();
    let name = crd.name_any();
    within(
        "applying the widget CRD",
        crds.patch(
            &name,
            &PatchParams::apply("apiserver-tests").force(),
            &Patch::Apply(&crd),
        ),
    )
    .await
    .expect("applying the widget CRD");
    within(
        "the widget CRD to be established",
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("watching the widget CRD");
    ApiResource {
        group: WIDGET_GROUP.to_string(),
        version: "v1".to_string(),
        api_version: format!("{WIDGET_GROUP}/v1"),
        kind: "Widget".to_string(),
        plural: "widgets".to_string(),
    }
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("{WIDGET_GROUP}/v1"),
        "kind": "Widget",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("widget")
}

/// Creates `object`, retrying while the server answers 429: a new CRD's
/// storage may still be initialising for a moment after it is Established.
async fn create_widget(
    widgets: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<DynamicObject, kube::Error> {
    within("creating a widget", async {
        loop {
            match widgets.create(&PostParams::default(), object).await {
                Err(kube::Error::Api(status)) if status.code == 429 => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                result => return result,
            }
        }
    })
    .await
}

/// The API status of a failed call, or a panic naming what was expected.
fn api_error(
    result: Result<impl std::fmt::Debug, kube::Error>,
    expected: &str,
) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected {expected}, got {other:?}"),
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

/// `config_map` as read back, with key `k` set to `value` (resourceVersion kept).
fn with_value(mut config_map: ConfigMap, value: &str) -> ConfigMap {
    config_map.data = Some(BTreeMap::from([("k".to_string(), value.to_string())]));
    config_map
}

#[tokio::test]
async fn custom_resource_violating_the_schema_is_rejected() {
    let ns = TestNamespace::create("crd-schema").await;
    let widgets = ns.dynamic_api(&install_widget_crd(ns.client()).await);

    create_widget(&widgets, &widget("valid", json!({ "size": 3 })))
        .await
        .expect("a widget matching the schema is accepted");
    let status = api_error(
        create_widget(&widgets, &widget("wrong-type", json!({ "size": "three" }))).await,
        "a schema violation",
    );
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("spec.size"), "{status:?}");
}

#[tokio::test]
async fn custom_resource_violating_a_cel_rule_is_rejected() {
    let ns = TestNamespace::create("crd-cel").await;
    let widgets = ns.dynamic_api(&install_widget_crd(ns.client()).await);

    let status = api_error(
        create_widget(&widgets, &widget("too-big", json!({ "size": 11 }))).await,
        "a CEL rule violation",
    );
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("size must be at most 10"),
        "{status:?}"
    );
}

#[tokio::test]
async fn custom_resource_status_changes_only_through_the_status_subresource() {
    let ns = TestNamespace::create("crd-status").await;
    let widgets = ns.dynamic_api(&install_widget_crd(ns.client()).await);
    create_widget(&widgets, &widget("w", json!({ "size": 1 })))
        .await
        .expect("creating a widget");

    let status_patch = Patch::Merge(json!({ "status": { "ready": true } }));
    let through_main = within(
        "patching the main resource",
        widgets.patch("w", &PatchParams::default(), &status_patch),
    )
    .await
    .expect("patching status through the main resource");
    assert_eq!(
        through_main.data.get("status"),
        None,
        "status must be ignored by the main resource"
    );
    let through_status = within(
        "patching the status subresource",
        widgets.patch_status("w", &PatchParams::default(), &status_patch),
    )
    .await
    .expect("patching the status subresource");
    assert_eq!(through_status.data["status"]["ready"], json!(true));
}

#[tokio::test]
async fn finalizer_keeps_a_deleted_object_until_it_is_removed() {
    let ns = TestNamespace::create("finalizer").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let mut object = config_map("guarded", &[("k", "v")]);
    object.metadata.finalizers = Some(vec!["apiserver-tests.acs.example.com/guard".to_string()]);
    within(
        "creating",
        config_maps.create(&PostParams::default(), &object),
    )
    .await
    .expect("creating a config map with a finalizer");

    within(
        "deleting",
        config_maps.delete("guarded", &DeleteParams::default()),
    )
    .await
    .expect("deleting it");
    let kept = within("reading", config_maps.get("guarded"))
        .await
        .expect("the object is still there while the finalizer is");
    assert!(
        kept.metadata.deletion_timestamp.is_some(),
        "deletionTimestamp is set"
    );

    let uid = kept.uid().expect("uid");
    let remove_finalizers = Patch::Merge(json!({ "metadata": { "finalizers": null } }));
    within(
        "removing the finalizer",
        config_maps.patch("guarded", &PatchParams::default(), &remove_finalizers),
    )
    .await
    .expect("removing the finalizer");
    within(
        "the object to go",
        await_condition(config_maps.clone(), "guarded", conditions::is_deleted(&uid)),
    )
    .await
    .expect("watching the deletion");
    let status = api_error(
        within("reading", config_maps.get("guarded")).await,
        "404 after finalization",
    );
    assert_eq!(status.code, 404, "{status:?}");
}

#[tokio::test]
async fn update_with_a_stale_resource_version_conflicts() {
    let ns = TestNamespace::create("stale-update").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let created = within(
        "creating",
        config_maps.create(&PostParams::default(), &config_map("c", &[("k", "1")])),
    )
    .await
    .expect("creating");

    let first = with_value(created.clone(), "2");
    within(
        "first update",
        config_maps.replace("c", &PostParams::default(), &first),
    )
    .await
    .expect("an update at the current resourceVersion succeeds");

    let stale = with_value(created, "3");
    let status = api_error(
        within(
            "stale update",
            config_maps.replace("c", &PostParams::default(), &stale),
        )
        .await,
        "409 for a stale resourceVersion",
    );
    assert_eq!(status.code, 409, "{status:?}");
    assert_eq!(status.reason, "Conflict", "{status:?}");
}

#[tokio::test]
async fn server_side_apply_conflicts_between_field_managers() {
    let ns = TestNamespace::create("ssa-conflict").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let apply = |value: &str| {
        let mut object = config_map("shared", &[("owner", value)]);
        object.metadata.namespace = Some(ns.name().to_string());
        serde_json::to_value(&object).expect("config map")
    };

    within(
        "first apply",
        config_maps.patch(
            "shared",
            &PatchParams::apply("first"),
            &Patch::Apply(apply("first")),
        ),
    )
    .await
    .expect("the first manager applies");
    let status = api_error(
        within(
            "conflicting apply",
            config_maps.patch(
                "shared",
                &PatchParams::apply("second"),
                &Patch::Apply(apply("second")),
            ),
        )
        .await,
        "a conflict between field managers",
    );
    assert_eq!(status.code, 409, "{status:?}");
    assert!(
        status.message.contains("first"),
        "names the owning manager: {status:?}"
    );

    let forced = within(
        "forced apply",
        config_maps.patch(
            "shared",
            &PatchParams::apply("second").force(),
            &Patch::Apply(apply("second")),
        ),
    )
    .await
    .expect("a forced apply takes the field over");
    assert_eq!(forced.data.unwrap()["owner"], "second");
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| entry.manager)
        .collect();
    assert_eq!(
        managers,
        ["second"],
        "the field moved to the second manager"
    );
}

#[tokio::test]
async fn watch_sees_added_modified_and_deleted() {
    let ns = TestNamespace::create("watch").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let start = within("listing", config_maps.list_metadata(&Default::default()))
        .await
        .expect("listing")
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut events = within(
        "starting the watch",
        config_maps.watch(&WatchParams::default(), &start),
    )
    .await
    .expect("watching")
    .boxed();

    let created = within(
        "creating",
        config_maps.create(&PostParams::default(), &config_map("w", &[("k", "1")])),
    )
    .await
    .expect("creating");
    let changed = with_value(created, "2");
    within(
        "updating",
        config_maps.replace("w", &PostParams::default(), &changed),
    )
    .await
    .expect("updating");
    within(
        "deleting",
        config_maps.delete("w", &DeleteParams::default()),
    )
    .await
    .expect("deleting");

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = within("the next watch event", events.try_next())
            .await
            .expect("watch stream")
            .expect("watch ended early");
        match event {
            WatchEvent::Added(cm) => seen.push(("ADDED", cm.data.unwrap_or_default()["k"].clone())),
            WatchEvent::Modified(cm) => {
                seen.push(("MODIFIED", cm.data.unwrap_or_default()["k"].clone()))
            }
            WatchEvent::Deleted(cm) => {
                seen.push(("DELETED", cm.data.unwrap_or_default()["k"].clone()))
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    let expected = [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")];
    let seen: Vec<(&str, &str)> = seen.iter().map(|(kind, k)| (*kind, k.as_str())).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn secret_string_data_lands_in_data() {
    let ns = TestNamespace::create("secret-string-data").await;
    let secrets: Api<Secret> = ns.api();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s".to_string()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            "token".to_string(),
            "hunter2".to_string(),
        )])),
        ..Secret::default()
    };
    within("creating", secrets.create(&PostParams::default(), &secret))
        .await
        .expect("creating");

    let stored = within("reading", secrets.get("s")).await.expect("reading");
    assert_eq!(stored.string_data, None, "stringData is write-only");
    assert_eq!(stored.data.expect("data")["token"].0, b"hunter2");
    assert_eq!(
        stored.type_.as_deref(),
        Some("Opaque"),
        "type defaults to Opaque"
    );
}

#[tokio::test]
async fn events_k8s_io_event_round_trips() {
    let ns = TestNamespace::create("event").await;
    let events: Api<Event> = ns.api();
    let event: Event = serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": { "name": "widget.1" },
        "eventTime": MicroTime(jiff::Timestamp::now()),
        "reportingController": "acs-identity-operator",
        "reportingInstance": "acs-identity-operator-0",
        "action": "Reconcile",
        "reason": "TokenIssued",
        "type": "Normal",
        "note": "issued a token",
        "regarding": { "apiVersion": "v1", "kind": "Secret", "namespace": ns.name(), "name": "s" },
    }))
    .expect("event");
    within("creating", events.create(&PostParams::default(), &event))
        .await
        .expect("creating");

    let stored = within("reading", events.get("widget.1"))
        .await
        .expect("reading");
    assert_eq!(stored.reason.as_deref(), Some("TokenIssued"));
    assert_eq!(stored.note.as_deref(), Some("issued a token"));
    assert_eq!(stored.regarding.and_then(|r| r.name).as_deref(), Some("s"));
    assert!(stored.event_time.is_some());
}

/// What kube-runtime's recorder writes (events.k8s.io/v1) is what `kubectl describe` and
/// `kubectl get events` read (core/v1): one stored object, with the renamed fields mapped
/// as kube-apiserver maps them.
#[tokio::test]
async fn events_k8s_io_event_is_read_as_a_core_v1_event() {
    let ns = TestNamespace::create("event-as-core").await;
    let events: Api<Event> = ns.api();
    let event: Event = serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": { "name": "alice.1" },
        "eventTime": "2026-01-02T03:04:05.123456Z",
        "series": { "count": 2, "lastObservedTime": "2026-01-02T03:05:06.000001Z" },
        "reportingController": "acs-identity-operator",
        "reportingInstance": "acs-identity-operator-0",
        "action": "IssueToken",
        "reason": "TokenIssued",
        "type": "Normal",
        "note": "issued a token",
        "regarding": {
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
            "namespace": ns.name(), "name": "alice", "uid": "u-alice"
        },
        "related": { "apiVersion": "v1", "kind": "Secret", "namespace": ns.name(), "name": "alice" },
        "deprecatedSource": { "component": "legacy-recorder" },
        "deprecatedCount": 3,
    }))
    .expect("event");
    within("creating", events.create(&PostParams::default(), &event))
        .await
        .expect("creating through events.k8s.io/v1");

    let core: Api<CoreEvent> = ns.api();
    let stored = within("reading", core.get("alice.1"))
        .await
        .expect("the same Event through core/v1");
    let involved = &stored.involved_object;
    assert_eq!(involved.kind.as_deref(), Some("AcsIdentity"));
    assert_eq!(involved.name.as_deref(), Some("alice"));
    assert_eq!(involved.namespace.as_deref(), Some(ns.name()));
    assert_eq!(involved.uid.as_deref(), Some("u-alice"));
    assert_eq!(stored.message.as_deref(), Some("issued a token"));
    assert_eq!(stored.reason.as_deref(), Some("TokenIssued"));
    assert_eq!(stored.type_.as_deref(), Some("Normal"));
    assert_eq!(stored.action.as_deref(), Some("IssueToken"));
    assert_eq!(
        stored.reporting_component.as_deref(),
        Some("acs-identity-operator")
    );
    assert_eq!(
        stored.reporting_instance.as_deref(),
        Some("acs-identity-operator-0")
    );
    assert_eq!(
        stored.source.and_then(|s| s.component).as_deref(),
        Some("legacy-recorder")
    );
    assert_eq!(stored.count, Some(3));
    assert_eq!(
        stored.event_time.map(|t| t.0.to_string()).as_deref(),
        Some("2026-01-02T03:04:05.123456Z")
    );
    assert_eq!(stored.series.and_then(|s| s.count), Some(2));
    assert_eq!(
        stored.related.and_then(|r| r.kind).as_deref(),
        Some("Secret")
    );

    // What `kubectl describe acsid alice` asks for.
    let selector = format!(
        "involvedObject.name=alice,involvedObject.namespace={},involvedObject.kind=AcsIdentity,involvedObject.uid=u-alice",
        ns.name()
    );
    let described = within(
        "listing by involvedObject",
        core.list(&ListParams::default().fields(&selector)),
    )
    .await
    .expect("core/v1 events selected by involvedObject");
    assert_eq!(names(&described.items), ["alice.1"]);
    let unrelated = within(
        "listing another object's events",
        core.list(&ListParams::default().fields("involvedObject.name=bob")),
    )
    .await
    .expect("listing");
    assert!(unrelated.items.is_empty(), "{:?}", names(&unrelated.items));
}

/// The reverse: a core/v1 Event (client-go's old recorder, `kubectl create`) is listed by
/// events.k8s.io/v1 with the new names, and selected by them.
#[tokio::test]
async fn core_v1_event_is_read_as_an_events_k8s_io_event() {
    let ns = TestNamespace::create("event-as-events").await;
    let core: Api<CoreEvent> = ns.api();
    let event: CoreEvent = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": { "name": "widget.1" },
        "involvedObject": { "apiVersion": "v1", "kind": "Secret", "namespace": ns.name(), "name": "s" },
        "reason": "Rotated",
        "message": "rotated the key",
        "type": "Warning",
        "source": { "component": "rotator" },
        "firstTimestamp": "2026-01-02T03:04:05Z",
        "lastTimestamp": "2026-01-02T03:09:05Z",
        "count": 4,
    }))
    .expect("event");
    within("creating", core.create(&PostParams::default(), &event))
        .await
        .expect("creating through core/v1");

    let events: Api<Event> = ns.api();
    let listed = within(
        "listing by regarding",
        events.list(&ListParams::default().fields("regarding.name=s,regarding.kind=Secret")),
    )
    .await
    .expect("events.k8s.io/v1 events selected by regarding");
    assert_eq!(names(&listed.items), ["widget.1"]);
    let stored = &listed.items[0];
    let regarding = stored.regarding.as_ref().expect("regarding");
    assert_eq!(regarding.kind.as_deref(), Some("Secret"));
    assert_eq!(regarding.name.as_deref(), Some("s"));
    assert_eq!(stored.note.as_deref(), Some("rotated the key"));
    assert_eq!(stored.reason.as_deref(), Some("Rotated"));
    assert_eq!(stored.type_.as_deref(), Some("Warning"));
    assert_eq!(
        stored
            .deprecated_source
            .as_ref()
            .and_then(|s| s.component.as_deref()),
        Some("rotator")
    );
    assert_eq!(stored.deprecated_count, Some(4));
    assert_eq!(
        stored
            .deprecated_first_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .as_deref(),
        Some("2026-01-02T03:04:05Z")
    );
    assert_eq!(
        stored
            .deprecated_last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .as_deref(),
        Some("2026-01-02T03:09:05Z")
    );
}

/// What a user sees of the operator's Events: `kubectl describe` of the object and `kubectl
/// get events` list an events.k8s.io/v1 Event. Skipped without a kubectl on PATH.
#[tokio::test]
async fn kubectl_shows_events_k8s_io_events() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("no kubectl on PATH: skipped");
        return;
    }
    let ns = TestNamespace::create("event-kubectl").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let config_map = within(
        "creating a ConfigMap",
        config_maps.create(&PostParams::default(), &config_map("cm", &[])),
    )
    .await
    .expect("creating a ConfigMap");
    let events: Api<Event> = ns.api();
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": "cm.1" },
        "eventTime": MicroTime(jiff::Timestamp::now()),
        "reportingController": "acs-identity-operator",
        "reportingInstance": "acs-identity-operator-0",
        "action": "Reconcile",
        "reason": "TokenIssued",
        "type": "Normal",
        "note": "issued a token",
        "regarding": {
            "apiVersion": "v1", "kind": "ConfigMap", "namespace": ns.name(), "name": "cm",
            "uid": config_map.metadata.uid,
        },
    }))
    .expect("event");
    within("creating", events.create(&PostParams::default(), &event))
        .await
        .expect("creating an Event");

    let listed = kubectl(&["get", "events", "-n", ns.name()]).await;
    assert!(listed.contains("LAST SEEN"), "{listed}");
    let row = listed
        .lines()
        .find(|line| line.contains("TokenIssued"))
        .unwrap_or_else(|| panic!("no row for the Event: {listed}"));
    assert!(row.contains("configmap/cm"), "{row}");
    assert!(row.contains("issued a token"), "{row}");

    let described = kubectl(&["describe", "configmap", "cm", "-n", ns.name()]).await;
    let events_section = described
        .split_once("Events:")
        .map(|(_, events)| events)
        .unwrap_or_else(|| panic!("no Events section: {described}"));
    assert!(
        events_section.contains("TokenIssued") && events_section.contains("issued a token"),
        "{described}"
    );
}

/// Runs kubectl against the test cluster and returns its stdout; panics if it fails.
async fn kubectl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let what = format!("kubectl {}", args.join(" "));
    let output = within(
        &what,
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("kubectl")
                .env("KUBECONFIG", support::kubeconfig_env())
                .arg("--request-timeout=30s")
                .args(&args)
                .output()
        }),
    )
    .await
    .expect("kubectl ran")
    .expect("kubectl started");
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    items.iter().map(|item| item.name_any()).collect()
}

#[tokio::test]
async fn lease_round_trips_and_renewals_conflict_when_stale() {
    let ns = TestNamespace::create("lease").await;
    let leases: Api<Lease> = ns.api();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("leader".to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("pod-a".to_string()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    let created = within("creating", leases.create(&PostParams::default(), &lease))
        .await
        .expect("creating");
    let stored = within("reading", leases.get("leader"))
        .await
        .expect("reading");
    let spec = stored.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));

    let mut renewed = stored;
    renewed.spec.as_mut().unwrap().renew_time = Some(MicroTime(jiff::Timestamp::now()));
    within(
        "renewing",
        leases.replace("leader", &PostParams::default(), &renewed),
    )
    .await
    .expect("renewing at the current resourceVersion");
    let mut stolen = created;
    stolen.spec.as_mut().unwrap().holder_identity = Some("pod-b".to_string());
    let status = api_error(
        within(
            "stale takeover",
            leases.replace("leader", &PostParams::default(), &stolen),
        )
        .await,
        "409 for a takeover based on a stale lease",
    );
    assert_eq!(status.code, 409, "{status:?}");
}

#[tokio::test]
async fn objects_cannot_be_created_in_a_missing_namespace() {
    let client = support::client().await;
    let config_maps: Api<ConfigMap> =
        Api::namespaced(client.clone(), "no-such-namespace-apiserver-tests");
    let status = api_error(
        within(
            "creating",
            config_maps.create(&PostParams::default(), &config_map("c", &[])),
        )
        .await,
        "404 for a missing namespace",
    );
    assert_eq!(status.code, 404, "{status:?}");
    let namespaces: Api<Namespace> = Api::all(client);
    let status = api_error(
        within(
            "reading",
            namespaces.get("no-such-namespace-apiserver-tests"),
        )
        .await,
        "the namespace not to exist",
    );
    assert_eq!(status.code, 404, "{status:?}");
}

/// Server-side apply needs an OpenAPI schema of each type on the server (the
/// test server generates them at build time): apply one object of every
/// served built-in type, as a typical deploy manifest set would.
#[tokio::test]
async fn server_side_apply_works_for_every_served_type() {
    let ns = TestNamespace::create("ssa-every-type").await;
    let client = ns.client();
    let name = ns.name().to_string();
    let namespaced = |api_version: &str, kind: &str, object_name: &str, body: Value| {
        let mut object = json!({
            "apiVersion": api_version,
            "kind": kind,
            // A label, so that even a ServiceAccount has a field to manage.
            "metadata": { "name": object_name, "namespace": name, "labels": { "app": "op" } },
        });
        object
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        object
    };
    let selector = json!({ "matchLabels": { "app": "op" } });
    let objects = [
        (
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            namespaced("v1", "ServiceAccount", "op", json!({})),
        ),
        // `data`, not `stringData`: as in any cluster, a second manager applying
        // stringData conflicts with the first (stringData is never stored).
        (
            "",
            "v1",
            "Secret",
            "secrets",
            namespaced("v1", "Secret", "s", json!({ "data": { "k": "dg==" } })),
        ),
        (
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            namespaced("v1", "ConfigMap", "c", json!({ "data": { "k": "v" } })),
        ),
        (
            "",
            "v1",
            "Service",
            "services",
            namespaced(
                "v1",
                "Service",
                "op",
                json!({ "spec": { "selector": { "app": "op" }, "ports": [{ "port": 8080 }] } }),
            ),
        ),
        (
            "apps",
            "v1",
            "Deployment",
            "deployments",
            namespaced(
                "apps/v1",
                "Deployment",
                "op",
                json!({ "spec": {
                    "selector": selector,
                    "template": {
                        "metadata": { "labels": { "app": "op" } },
                        "spec": { "serviceAccountName": "op", "containers": [{ "name": "op", "image": "example/op:1" }] }
                    }
                }}),
            ),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            namespaced(
                "rbac.authorization.k8s.io/v1",
                "Role",
                "op",
                json!({ "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] }] }),
            ),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            namespaced(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                "op",
                json!({
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op" },
                    "subjects": [{ "kind": "ServiceAccount", "name": "op", "namespace": name }]
                }),
            ),
        ),
        (
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            namespaced(
                "coordination.k8s.io/v1",
                "Lease",
                "l",
                json!({ "spec": { "holderIdentity": "a" } }),
            ),
        ),
    ];
    for (group, version, kind, plural, object) in objects {
        let resource = ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.to_string(),
            plural: plural.to_string(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, &resource);
        let object_name = object["metadata"]["name"].as_str().unwrap().to_string();
        for manager in ["apply-1", "apply-2"] {
            // Two managers applying the same values co-own the fields: no conflict.
            let applied = within(
                &format!("applying {kind}"),
                api.patch(
                    &object_name,
                    &PatchParams::apply(manager),
                    &Patch::Apply(&object),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("server-side apply of {kind} as {manager}: {e}"));
            let managers: Vec<_> = applied
                .metadata
                .managed_fields
                .unwrap_or_default()
                .into_iter()
                .filter_map(|entry| entry.manager)
                .collect();
            assert!(
                managers.iter().any(|m| m == manager),
                "{kind}: {manager} not among {managers:?}"
            );
        }
    }
}

/// ServiceAccount tokens (server/serviceaccount_token.go): TokenRequest authorized as
/// `create serviceaccounts/token`, kube-apiserver's validation and 404, RS256 tokens with its
/// claims that verify against the issuer's discovery document and keys, which anyone may read.
#[tokio::test]
async fn service_account_tokens_verify_against_the_issuers_published_keys() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let ns = TestNamespace::create("sa-tokens").await;
    let accounts: Api<ServiceAccount> = ns.api();
    let request = |seconds: i64| TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["api://AzureADTokenExchange".into()]),
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        }),
        ..TokenRequest::default()
    };
    let pp = PostParams::default();
    let missing = accounts
        .create_token_request("nobody", &pp, &request(600))
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404),
        "{missing}"
    );
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "acs"}})).unwrap();
    let account = accounts.create(&pp, &account).await.unwrap();
    let short = accounts
        .create_token_request("acs", &pp, &request(599))
        .await
        .unwrap_err();
    assert!(
        matches!(&short, kube::Error::Api(s) if s.code == 422 && s.message.contains("less than 10 minutes")),
        "{short}"
    );
    let answer = accounts
        .create_token_request("acs", &pp, &request(600))
        .await
        .unwrap();
    let token = answer.status.unwrap().token.unwrap();

    // The issuer's documents, fetched without a client certificate.
    let config = support::cluster_config().await;
    let issuer = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let mut http = reqwest::Client::builder();
    for der in config.root_cert.clone().unwrap_or_default() {
        http = http.add_root_certificate(reqwest::Certificate::from_der(&der).unwrap());
    }
    let http = http.build().unwrap();
    let discovery: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    let jwks: Value = http
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["api://AzureADTokenExchange"]);
    validation.set_issuer(&[issuer.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
        .unwrap()
        .claims;
    let name = ns.name();
    assert_eq!(claims["sub"], format!("system:serviceaccount:{name}:acs"));
    assert_eq!(claims["kubernetes.io"]["namespace"], name);
    assert_eq!(
        claims["kubernetes.io"]["serviceaccount"]["uid"],
        account.metadata.uid.unwrap()
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    // A token tampered with no longer verifies.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(jsonwebtoken::decode::<Value>(&forged, &decoding, &validation).is_err());

    // A user without `create serviceaccounts/token` is refused; the grant lets it.
    let mut as_user = config.clone();
    as_user.auth_info.impersonate = Some("team-b-user".into());
    let user: Api<ServiceAccount> = Api::namespaced(Client::try_from(as_user).unwrap(), name);
    let refused = user
        .create_token_request("acs", &pp, &request(600))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 403),
        "{refused}"
    );
    let grant = |kind: &str, body: Value| {
        let resource = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            kind,
        ));
        let api = ns.dynamic_api(&resource);
        let object: kube::api::DynamicObject = serde_json::from_value(body).unwrap();
        async move { api.create(&PostParams::default(), &object).await.unwrap() }
    };
    grant(
        "Role",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "tokens"},
               "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]}),
    )
    .await;
    grant(
        "RoleBinding",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tokens"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tokens"},
               "subjects": [{"kind": "User", "name": "team-b-user"}]}),
    )
    .await;
    let granted = async {
        loop {
            match user.create_token_request("acs", &pp, &request(600)).await {
                Ok(answer) => return answer,
                // The authorizer's informer sees the binding a moment later.
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let answer = within("the grant to take effect", granted).await;
    assert!(answer.status.and_then(|s| s.token).is_some());
}

/// `--initial-list auto` streams where the API server serves streaming lists (on by default
/// from Kubernetes 1.32) and pages elsewhere: the probe must tell which, on a real server.
#[tokio::test]
async fn the_streaming_list_probe_tells_what_the_server_serves() {
    let ns = TestNamespace::create("stream-probe").await;
    let version = ns.client().apiserver_version().await.expect("version");
    let minor: u32 = version
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .expect("minor version");
    let api: Api<ConfigMap> = Api::namespaced(ns.client(), ns.name());
    let served = acs_identity_operator::controller::cache::serves_streaming_lists(&api).await;
    assert_eq!(served, minor >= 32, "Kubernetes 1.{minor}");
}

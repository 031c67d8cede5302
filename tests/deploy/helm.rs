//! The Helm chart (charts/acs-identity-operator), with the real Helm (v4.2.3,
//! `tests/tools/install`): it lints strictly and renders with every documented values set, its
//! schema refuses wrong values with a message that names them, it renders what deploy/ renders
//! (RBAC, the Deployment's security settings and arguments), its README documents every value,
//! and it installs, upgrades and uninstalls on the test API server (Helm keeps its releases in
//! Secrets there). That the operator runs under exactly the chart's RBAC is proven with the
//! overlays' in `least_privilege`.

use crate::install::{fetch, name_of, parse_all, run};
use crate::{grants, support};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::TestNamespace;
use support::tools::{chart_dir, helm_command};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `helm ARGS` (lint, template: no cluster): its stdout, or its stderr as the error.
fn helm(args: &[&str]) -> Result<String, String> {
    run(helm_command().args(args), None)
}

/// `helm ARGS` against the test cluster.
fn helm_on_cluster(args: &[&str]) -> Result<String, String> {
    run(
        helm_command()
            .args(args)
            .env("KUBECONFIG", support::kubeconfig_env()),
        None,
    )
}

fn chart() -> String {
    chart_dir().to_str().unwrap().to_string()
}

/// The documented values sets: `ci/*.yaml` (the layout chart-testing reads).
fn values_sets() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "values sets: {files:?}");
    files
}

/// `helm template` of release `release` into `namespace`, parsed.
fn template(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, &*chart, "--namespace", namespace];
    args.extend(values);
    parse_all(&helm(&args).unwrap_or_else(|e| panic!("{e}")))
}

/// The one object of `kind` (and `name`, when given) among `objects`.
fn one<'a>(objects: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && name.is_none_or(|n| o["metadata"]["name"] == n))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name:?}: {found:#?}");
    found[0]
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

fn container(objects: &[Value]) -> &Value {
    &one(objects, "Deployment", None)["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn env_names(objects: &[Value]) -> BTreeSet<String> {
    container(objects)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_chart_lints_strictly_with_every_documented_values_set() {
    let chart = chart();
    let mut sets: Vec<Option<PathBuf>> = vec![None];
    sets.extend(values_sets().into_iter().map(Some));
    for set in sets {
        let mut args = vec!["lint", "--strict", &*chart];
        let file;
        if let Some(path) = &set {
            file = path.to_str().unwrap().to_string();
            args.extend(["-f", &*file]);
        }
        let out = helm(&args).unwrap_or_else(|e| panic!("helm lint with {set:?}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{set:?}: {out}");
    }
}

/// What each documented values set is documented to do, rendered.
#[test]
fn every_documented_values_set_renders_what_it_documents() {
    let rendered: BTreeMap<String, Vec<Value>> = values_sets()
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            (
                name,
                template("ops", "ops", &["-f", path.to_str().unwrap()]),
            )
        })
        .collect();
    let set = |name: &str| {
        rendered
            .get(name)
            .unwrap_or_else(|| panic!("no ci/{name}.yaml"))
    };

    let defaults = template("ops", "ops", &[]);
    let expected: BTreeSet<String> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&defaults), expected);
    for crd in defaults
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    assert_eq!(
        one(&defaults, "PodDisruptionBudget", None)["spec"]["minAvailable"],
        1
    );
    assert_eq!(
        container(&defaults)["image"],
        "ghcr.io/acs-identity-operator/acs-identity-operator:v0.1.0"
    );

    let namespaced = set("namespaced-values");
    let kinds_ns = kinds(namespaced);
    for absent in [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
    ] {
        assert!(!kinds_ns.contains(absent), "namespaced renders a {absent}");
    }
    assert!(env_names(namespaced).contains("WATCH_NAMESPACE"));
    let role = grants(&one(namespaced, "Role", Some("ops-acs-identity-operator"))["rules"]);
    assert!(
        role.iter().all(
            |(_, resource, _, _)| !resource.starts_with("clusteracsconnections")
                && resource != "namespaces"
        ),
        "{role:?}"
    );

    let aks = set("aks-workload-identity-values");
    assert_eq!(
        one(aks, "ServiceAccount", None)["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "11111111-2222-3333-4444-555555555555"
    );
    let pod_labels = &one(aks, "Deployment", None)["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["azure.workload.identity/use"], "true");
    let selector = &one(aks, "Deployment", None)["spec"]["selector"]["matchLabels"];
    assert!(selector.get("azure.workload.identity/use").is_none());
    assert_eq!(
        container(aks)["image"],
        "ghcr.io/acs-identity-operator/acs-identity-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );

    let monitoring = set("monitoring-values");
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "NetworkPolicy",
    ] {
        assert!(kinds(monitoring).contains(kind), "no {kind}");
    }
    let monitor = one(monitoring, "ServiceMonitor", None);
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    // It selects the metrics Service (and the Service selects the pods).
    let service = one(monitoring, "Service", None);
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&service["metadata"]["labels"][k], v, "{k}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    let rules: Value = serde_yaml::from_str(&read("deploy/monitoring/alerts.rules.yaml")).unwrap();
    assert_eq!(
        one(monitoring, "PrometheusRule", None)["spec"]["groups"],
        rules["groups"],
        "the chart's PrometheusRule says something else than deploy/monitoring/alerts.rules.yaml"
    );
    let dashboard = one(monitoring, "ConfigMap", None);
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(&read("deploy/monitoring/dashboard.json")).unwrap();
    let in_chart: Value =
        serde_json::from_str(dashboard["data"]["dashboard.json"].as_str().unwrap()).unwrap();
    assert_eq!(in_chart, shipped);
    let policy = &one(monitoring, "NetworkPolicy", None)["spec"];
    assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(policy["ingress"][0]["ports"][0]["port"], "metrics");
    assert_eq!(
        policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    let single = set("single-replica-values");
    let single_args = args(single);
    assert!(
        !single_args
            .iter()
            .any(|a| a.starts_with("--leader-election"))
    );
    for arg in [
        "--concurrency=64",
        "--acs-timeout-seconds=10",
        "--log-format=text",
        "--idempotent-create=false",
    ] {
        assert!(single_args.contains(&arg.to_string()), "{single_args:?}");
    }
    assert!(!kinds(single).contains("PodDisruptionBudget"));
    assert!(
        !kinds(single).contains("Role"),
        "a Lease Role without leader election"
    );
    let pod = &one(single, "Deployment", None)["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(container(single)["resources"]["limits"]["memory"], "512Mi");

    let shard = set("shard-b-values");
    let shard_args = args(shard);
    for arg in ["--watch-label-selector=shard=b", "--acs-budget-percent=50"] {
        assert!(shard_args.contains(&arg.to_string()), "{shard_args:?}");
    }
    assert!(!kinds(shard).contains("CustomResourceDefinition"));
    let default_args = args(&defaults);
    assert!(
        !default_args
            .iter()
            .any(|a| a.starts_with("--watch-label-selector") || a.starts_with("--acs-budget")),
        "{default_args:?}"
    );
}

/// /metrics names every tenant's AcsIdentities: with the NetworkPolicy on, only the peers
/// `metricsFrom` names reach it, and with none named the release namespace's pods, never the
/// whole cluster (an ingress rule without `from` would admit every pod).
#[test]
fn the_network_policy_admits_to_metrics_only_whom_it_names_or_the_namespace() {
    let defaults = template("ops", "ops", &["--set", "networkPolicy.enabled=true"]);
    let ingress = &one(&defaults, "NetworkPolicy", None)["spec"]["ingress"];
    assert_eq!(
        ingress,
        &json!([{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [{"podSelector": {}}]}])
    );
    let named = template(
        "ops",
        "ops",
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus",
        ],
    );
    let ingress = &one(&named, "NetworkPolicy", None)["spec"]["ingress"];
    assert_eq!(
        ingress[0]["from"],
        json!([{"podSelector": {"matchLabels": {"app": "prometheus"}}}])
    );
}

/// Wrong values fail `helm template` (and so install and upgrade) with a message naming the
/// value, before anything reaches the cluster.
#[test]
fn the_schema_rejects_wrong_values_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "scope=all"],
            "at '/scope': value must be one of 'cluster', 'namespace'",
        ),
        (
            &["--set", "replica=3"],
            "additional properties 'replica' not allowed",
        ),
        (
            &[
                "--set",
                "replicas=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "at '/replicas': maximum: got 2, want 1",
        ),
        (
            &["--set", "image.digest=sha256:abc"],
            "at '/image/digest': 'sha256:abc' does not match pattern",
        ),
        (
            &["--set", "workloadIdentity.enabled=true"],
            "at '/workloadIdentity/clientId': minLength: got 0, want 1",
        ),
        (
            &["--set", "workloadIdentity.clientId=my-identity"],
            "at '/workloadIdentity/clientId': 'my-identity' does not match pattern",
        ),
        (
            &["--set", "resources.limits.memory=lots"],
            "at '/resources/limits/memory'",
        ),
        (
            &["--set", "metrics.port=0"],
            "at '/metrics/port': minimum: got 0, want 1",
        ),
        (
            &["--set", "concurrency=0"],
            "at '/concurrency': minimum: got 0, want 1",
        ),
        (
            &["--set", "logFormat=yaml"],
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        (
            &["--set", "metrics.serviceMonitor.interval=often"],
            "at '/metrics/serviceMonitor/interval'",
        ),
        (
            &["--set-string", "crds.install=yes"],
            "at '/crds/install': got string, want boolean",
        ),
        (
            &["--set", "leaderElection.leaseName=Not_A_Name"],
            "at '/leaderElection/leaseName'",
        ),
        (
            &["--set", "podDisruptionBudget.minAvailable=half"],
            "at '/podDisruptionBudget/minAvailable'",
        ),
        (
            &["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
        (
            &[
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "metrics.service.enabled=false",
            ],
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ];
    let chart = chart();
    for (values, message) in cases {
        let mut args = vec!["template", "ops", &*chart];
        args.extend(*values);
        match helm(&args) {
            Ok(_) => panic!("{values:?} was accepted"),
            Err(e) => assert!(
                e.contains(message),
                "{values:?}: expected {message:?} in:\n{e}"
            ),
        }
    }
}

/// `kubectl kustomize deploy/overlays/<overlay>` (1.36's kustomize), parsed.
fn kustomize(overlay: &str) -> Vec<Value> {
    let dir = Path::new(REPO).join("deploy/overlays").join(overlay);
    parse_all(
        &run(
            Command::new(support::tools::kubectl()).args(["kustomize", dir.to_str().unwrap()]),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// What must not differ between two renderings of one install: every Role and ClusterRole's
/// grants and every binding's role and subjects (by object name), the Deployment's pod and
/// container security settings, arguments, environment, ports, probes, resources, replicas
/// and ServiceAccount, the ServiceAccount's annotations, the pod labels beyond the chart's
/// selector labels, the metrics Service's ports, and the CRDs' specs.
fn install_facts(objects: &[Value]) -> BTreeMap<String, Value> {
    let mut facts = BTreeMap::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        let key = format!("{kind} {}", name_of(o));
        match kind {
            "Role" | "ClusterRole" => {
                facts.insert(key.clone(), json!(grants(&o["rules"])));
                // Which default roles (view, edit, admin) a ClusterRole is aggregated into.
                let aggregated: BTreeMap<&String, &Value> = o["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.starts_with("rbac.authorization.k8s.io/"))
                    .collect();
                facts.insert(format!("{key} aggregated into"), json!(aggregated));
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                facts.insert(key, json!([o["roleRef"], o["subjects"]]));
            }
            "ServiceAccount" => {
                facts.insert(key, o["metadata"]["annotations"].clone());
            }
            "Service" => {
                facts.insert(key, o["spec"]["ports"].clone());
            }
            "CustomResourceDefinition" => {
                facts.insert(key, o["spec"].clone());
            }
            "Deployment" => {
                let spec = &o["spec"];
                let pod = &spec["template"]["spec"];
                let c = &pod["containers"][0];
                facts.insert(format!("{key} replicas"), spec["replicas"].clone());
                let mut labels = spec["template"]["metadata"]["labels"].clone();
                for selector in ["app.kubernetes.io/name", "app.kubernetes.io/instance"] {
                    labels.as_object_mut().unwrap().remove(selector);
                }
                facts.insert(format!("{key} pod labels"), labels);
                for field in ["securityContext", "serviceAccountName"] {
                    facts.insert(format!("{key} pod {field}"), pod[field].clone());
                }
                assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
                for field in [
                    "name",
                    "securityContext",
                    "args",
                    "env",
                    "ports",
                    "livenessProbe",
                    "readinessProbe",
                    "resources",
                    "imagePullPolicy",
                ] {
                    facts.insert(format!("{key} container {field}"), c[field].clone());
                }
            }
            "Namespace" => {} // the chart installs into the release namespace
            other => panic!("{other} {}: not compared", name_of(o)),
        }
    }
    facts
}

/// The chart and deploy/ do not drift apart: for each overlay, the chart with the values that
/// select the same install renders the same facts (`install_facts`), as release
/// `acs-identity-operator` in namespace `acs-identity-operator` (the overlays' names).
#[test]
fn chart_and_deploy_render_the_same_rbac_security_settings_and_arguments() {
    let client_id = "00000000-0000-0000-0000-000000000000";
    let cases: [(&str, Vec<String>); 3] = [
        ("cluster-wide", vec![]),
        ("namespaced", vec!["--set".into(), "scope=namespace".into()]),
        (
            "aks-workload-identity",
            vec![
                "--set".into(),
                "workloadIdentity.enabled=true".into(),
                "--set".into(),
                format!("workloadIdentity.clientId={client_id}"),
            ],
        ),
    ];
    for (overlay, values) in cases {
        let mut values: Vec<&str> = values.iter().map(String::as_str).collect();
        // The overlays have no PodDisruptionBudget (one less object to compare).
        values.extend(["--set", "podDisruptionBudget.enabled=false"]);
        let from_chart = install_facts(&template(
            "acs-identity-operator",
            "acs-identity-operator",
            &values,
        ));
        let from_deploy = install_facts(&kustomize(overlay));
        let keys = |f: &BTreeMap<String, Value>| f.keys().cloned().collect::<BTreeSet<_>>();
        assert_eq!(
            keys(&from_chart),
            keys(&from_deploy),
            "{overlay}: the chart and deploy/ render different objects"
        );
        for (key, deploy_value) in &from_deploy {
            assert_eq!(
                &from_chart[key], deploy_value,
                "{overlay}: {key} differs between the chart (left) and deploy/ (right)"
            );
        }
    }
}

/// Every value in values.yaml has a row in the chart's README, and every documented values
/// set is named there.
#[test]
fn the_readme_documents_every_value() {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        // Kubernetes objects and free-form maps are documented as one value.
        const WHOLE: [&str; 6] = [
            "resources",
            "podSecurityContext",
            "securityContext",
            "labels",
            "annotations",
            "affinity",
        ];
        let whole = WHOLE.contains(&prefix.rsplit('.').next().unwrap());
        match v.as_object() {
            Some(map) if !map.is_empty() && !whole => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut keys = Vec::new();
    leaves("", &values, &mut keys);
    assert!(keys.len() > 30, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "values without a README row: {missing:?}"
    );
    for set in values_sets() {
        let name = set.file_name().unwrap().to_str().unwrap();
        assert!(
            readme.contains(&format!("ci/{name}")),
            "ci/{name} is not in the README"
        );
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Minimal stand-ins for the Prometheus Operator's CRDs, created only where they do not exist
/// (a real cluster's are left alone), so that the chart's ServiceMonitor and PrometheusRule
/// can be installed.
fn ensure_prometheus_operator_crds() {
    for (plural, kind) in [
        ("servicemonitors", "ServiceMonitor"),
        ("prometheusrules", "PrometheusRule"),
    ] {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {
                "group": "monitoring.coreos.com",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        });
        let result = run(
            Command::new(support::tools::kubectl())
                .args(["create", "-f", "-"])
                .env("KUBECONFIG", support::kubeconfig_env()),
            Some(&crd.to_string()),
        );
        if let Err(e) = result {
            assert!(e.contains("AlreadyExists"), "{e}");
        }
        run(
            Command::new(support::tools::kubectl())
                .args([
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    &format!("crd/{plural}.monitoring.coreos.com"),
                ])
                .env("KUBECONFIG", support::kubeconfig_env()),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Uninstalls the release if a test ends before it did (its ClusterRole and binding are
/// cluster-scoped: the namespace's deletion would leave them).
struct Release<'a> {
    name: String,
    namespace: &'a str,
    installed: bool,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if self.installed {
            let _ = helm_on_cluster(&["uninstall", &self.name, "--namespace", self.namespace]);
        }
    }
}

/// The manifest of the release's current revision, parsed.
fn manifest(release: &str, namespace: &str) -> Vec<Value> {
    parse_all(
        &helm_on_cluster(&["get", "manifest", release, "--namespace", namespace])
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// The revisions of the release Helm stores, from its Secrets' labels.
async fn release_secrets(ns: &TestNamespace, release: &str) -> Vec<(String, String)> {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: kube::Api<Secret> = ns.api();
    let list = secrets
        .list(&kube::api::ListParams::default().labels(&format!("owner=helm,name={release}")))
        .await
        .unwrap();
    let mut out: Vec<(String, String)> = list
        .items
        .into_iter()
        .map(|s| {
            assert_eq!(s.type_.as_deref(), Some("helm.sh/release.v1"));
            let labels = s.metadata.labels.unwrap_or_default();
            (labels["version"].clone(), labels["status"].clone())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn installs_upgrades_and_uninstalls_on_the_test_cluster() {
    let ns = TestNamespace::create("helm-release").await;
    let client = ns.client();
    ensure_prometheus_operator_crds();
    let suffix = ns.name().rsplit('-').next().unwrap();
    let mut release = Release {
        name: format!("ops-{suffix}"),
        namespace: ns.name(),
        installed: false,
    };
    let name = release.name.clone();
    let fullname = format!("{name}-acs-identity-operator");
    let chart = chart();
    let monitoring = chart_dir().join("ci/monitoring-values.yaml");
    let monitoring = monitoring.to_str().unwrap();
    // The CRDs exist already (other tests applied them): take them over, as an install over a
    // kubectl-applied one would.
    let common = [
        "--namespace",
        ns.name(),
        "--take-ownership",
        "--force-conflicts",
        "-f",
        monitoring,
    ];

    let mut install = vec!["install", &*name, &*chart];
    install.extend(common);
    release.installed = true;
    helm_on_cluster(&install).unwrap_or_else(|e| panic!("helm install: {e}"));
    assert_eq!(
        release_secrets(&ns, &name).await,
        [("1".to_string(), "deployed".to_string())]
    );
    let first = manifest(&name, ns.name());
    let expected_kinds = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ];
    assert_eq!(kinds(&first), expected_kinds.map(String::from).into());
    for obj in &first {
        let stored = fetch(&client, obj).await;
        assert!(
            stored.is_some(),
            "{} {} was not created",
            obj["kind"],
            name_of(obj)
        );
    }
    let deployment = serde_json::to_value(
        fetch(&client, one(&first, "Deployment", None))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let lease_arg = format!("--leader-election-lease={fullname}");
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!(lease_arg))
    );
    let crd = fetch(
        &client,
        one(
            &first,
            "CustomResourceDefinition",
            Some("acsidentities.acsoperator.io"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        crd.metadata.annotations.unwrap_or_default()["helm.sh/resource-policy"],
        "keep"
    );

    // Upgrade with values changed: another scope (the ClusterRole gives way to a Role), more
    // replicas, another image tag, another argument.
    let mut upgrade = vec!["upgrade", &*name, &*chart];
    upgrade.extend(common);
    upgrade.extend([
        "--set",
        "scope=namespace",
        "--set",
        "replicas=3",
        "--set",
        "image.tag=v0.2.0",
        "--set",
        "concurrency=8",
    ]);
    helm_on_cluster(&upgrade).unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    assert_eq!(
        release_secrets(&ns, &name).await,
        [
            ("1".to_string(), "superseded".to_string()),
            ("2".to_string(), "deployed".to_string())
        ]
    );
    let second = manifest(&name, ns.name());
    let deployment = serde_json::to_value(
        fetch(&client, one(&second, "Deployment", None))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        "ghcr.io/acs-identity-operator/acs-identity-operator:v0.2.0"
    );
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--concurrency=8"))
    );
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "WATCH_NAMESPACE")
    );
    for gone in ["ClusterRole", "ClusterRoleBinding"] {
        let obj = one(&first, gone, Some(&fullname));
        assert!(
            fetch(&client, obj).await.is_none(),
            "the upgrade left the {gone}"
        );
    }
    assert!(
        fetch(&client, one(&second, "Role", Some(&fullname)))
            .await
            .is_some()
    );

    helm_on_cluster(&["uninstall", &name, "--namespace", ns.name()])
        .unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    release.installed = false;
    assert_eq!(release_secrets(&ns, &name).await, []);
    for obj in second.iter().chain(&first) {
        let kept = obj["kind"] == "CustomResourceDefinition";
        assert_eq!(
            fetch(&client, obj).await.is_some(),
            kept,
            "{} {} after uninstall",
            obj["kind"],
            name_of(obj)
        );
    }
}

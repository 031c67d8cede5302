//! deploy/monitoring: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`, Debian's promtool from `tests/tools/install`); the PrometheusRule and
//! the chart carry the same rules; every dashboard query is valid PromQL; and every metric the
//! rules and the dashboard use, and every series the rule tests feed promtool, is one the real
//! operator binary exports, with the same labels (scraped from its /metrics after ACS answered
//! it 429 and 503).

use acs_test_support as support;

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::operator::{WAIT, World};
use support::process::OperatorProcess;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn path(p: &str) -> PathBuf {
    Path::new(REPO).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Runs promtool with `args`; its combined output, or a panic with it when it fails.
fn promtool(args: &[&str]) -> String {
    let output = Command::new(support::tools::promtool())
        .args(args)
        .current_dir(REPO)
        .stdin(Stdio::null())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn rule_file() -> Value {
    serde_yaml::from_str(&read("deploy/monitoring/alerts.rules.yaml")).unwrap()
}

/// The alerts by name: expression and `for`.
fn alerts() -> BTreeMap<String, Value> {
    rule_file()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| (r["alert"].as_str().unwrap().to_string(), r))
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "deploy/monitoring/alerts.rules.yaml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "deploy/monitoring/tests/alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert is asserted firing at least once in the unit tests (not only silent).
    let tests: Value =
        serde_yaml::from_str(&read("deploy/monitoring/tests/alerts.test.yaml")).unwrap();
    let fired: BTreeSet<String> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().clone())
        .filter(|a| a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|a| a["alertname"].as_str().unwrap().to_string())
        .collect();
    let all: BTreeSet<String> = alerts().into_keys().collect();
    assert_eq!(fired, all, "alerts never shown firing in the unit tests");
}

/// The issue's list: each alert exists with the thresholds its name promises.
#[test]
fn the_alerts_cover_expiry_readiness_renewals_acs_errors_the_line_and_the_leader() {
    let alerts = alerts();
    let expect = [
        ("AcsIdentityTokenExpiringSoon", "< 600", "1m"),
        (
            "AcsIdentityNotReady",
            "acs_identity_ready_status{condition=\"False\"} == 1",
            "15m",
        ),
        (
            "AcsIdentityRenewalBehindSchedule",
            "acs_identity_token_renewal_timestamp_seconds",
            "5m",
        ),
        ("AcsApiThrottled", "code=\"429\"", "10m"),
        ("AcsApiErrors", "5..", "10m"),
        (
            "AcsIdentityRequestsWaiting",
            "acs_api_requests_waiting",
            "15m",
        ),
        (
            "AcsIdentityOperatorNoLeader",
            "acs_identity_operator_leader",
            "5m",
        ),
    ];
    for (name, in_expr, duration) in expect {
        let rule = alerts
            .get(name)
            .unwrap_or_else(|| panic!("no alert {name}"));
        assert!(
            rule["expr"].as_str().unwrap().contains(in_expr),
            "{name}: {rule}"
        );
        assert_eq!(rule["for"], duration, "{name}");
        assert!(rule["labels"]["severity"].is_string(), "{name}");
        assert!(rule["annotations"]["summary"].is_string(), "{name}");
    }
}

/// The PrometheusRule of deploy/monitoring (generated) says what the rule file says,
/// and kustomize puts the dashboard into its ConfigMap unchanged.
#[test]
fn the_prometheus_rule_and_the_dashboard_config_map_carry_the_same_files() {
    let wrapped: Value =
        serde_yaml::from_str(&read("deploy/monitoring/prometheusrule.yaml")).unwrap();
    assert_eq!(wrapped["kind"], "PrometheusRule");
    assert_eq!(
        wrapped["spec"]["groups"],
        rule_file()["groups"],
        "deploy/monitoring/prometheusrule.yaml differs from alerts.rules.yaml: run `cargo xtask generate`"
    );
    let rendered = Command::new(support::tools::kubectl())
        .args(["kustomize", path("deploy/monitoring").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let objects: Vec<Value> =
        serde_yaml::Deserializer::from_str(std::str::from_utf8(&rendered.stdout).unwrap())
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "PrometheusRule", "ServiceMonitor"])
    );
    let map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        serde_json::from_str::<Value>(map["data"]["dashboard.json"].as_str().unwrap()).unwrap(),
        dashboard()
    );
    let monitor = objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .unwrap();
    let service: Value = serde_yaml::from_str(&read("deploy/base/service.yaml")).unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor misses the Service"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/monitoring/dashboard.json")).unwrap()
}

/// Every query of the dashboard, by panel title.
fn dashboard_queries() -> Vec<(String, String)> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "panel {title} has no query");
            targets
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// The dashboard shows what the issue lists, and each query parses: promtool checks them as
/// recording rules, with Grafana's `$__rate_interval` replaced by a range.
#[test]
fn the_dashboard_shows_tokens_renewals_failures_acs_calls_and_the_line_in_valid_promql() {
    let queries = dashboard_queries();
    let titles: BTreeSet<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    for wanted in [
        "Tokens by time to expiry",
        "Renewals",
        "Reconcile failures by reason",
        "ACS calls by operation and status",
        "ACS latency by operation",
        "Line length",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted}: {titles:?}");
    }
    let panels = dashboard()["panels"].as_array().unwrap().clone();
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");

    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            json!({"record": format!("dashboard:query_{i}"), "expr": expr.replace("$__rate_interval", "5m")})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yaml");
    let text =
        serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap();
    std::fs::write(&file, text).unwrap();
    let checked = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

/// The metric names a PromQL expression mentions (all of ours start with `acs_`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("acs_"))
        .map(String::from)
        .collect()
}

/// `name{a="x",b="y"}` (or `name`): the name and the label names.
fn parse_series(series: &str) -> (String, BTreeSet<String>) {
    let (name, rest) = series.split_once('{').unwrap_or((series, ""));
    let mut labels = BTreeSet::new();
    let mut rest = rest.trim_end_matches('}');
    while let Some((label, after)) = rest.split_once("=\"") {
        labels.insert(label.trim_start_matches(',').trim().to_string());
        // The value ends at the first quote not escaped.
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
            end += 1;
        }
        rest = &after[(end + 1).min(after.len())..];
    }
    (name.trim().to_string(), labels)
}

/// A scrape: the label names of each sample name.
fn parse_scrape(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let series = match line.find('}') {
            Some(end) => &line[..=end],
            None => line.split_whitespace().next().unwrap(),
        };
        let (name, labels) = parse_series(series);
        let known = out.entry(name.clone()).or_insert_with(|| labels.clone());
        assert_eq!(
            known, &labels,
            "{name} has samples with different label names"
        );
    }
    out
}

/// Labels Prometheus adds to what it scrapes (and the Prometheus Operator's target labels):
/// allowed in the rule tests beside the operator's own.
const TARGET_LABELS: [&str; 6] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "container",
];

/// The operator binary, run as in a cluster (leader election on) against the test cluster and
/// an emulator, scraped once it has answered a 429 and a 503 from ACS and made an identity
/// Ready.
async fn scrape_of_a_real_operator() -> String {
    let w = World::without_operator(|_| {}).await;
    let operator = OperatorProcess::spawn(
        support::operator_binary!(),
        [
            "run",
            "--namespace",
            &w.ns,
            "--leader-election",
            "--log-format=json",
        ],
        |c, _| {
            c.env("POD_NAME", "monitoring-0")
                .env("POD_NAMESPACE", &w.ns)
                .env("RUST_LOG", "info");
        },
    );
    for status in [429, 503] {
        w.admin
            .post(
                "admin/faults",
                json!({"operation": "createIdentity", "count": 1, "status": status, "retryAfterSeconds": 1}),
            )
            .await;
    }
    w.identity(
        "watched",
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]}),
    )
    .await;
    let wanted = [
        r#"acs_api_requests_total{operation="createIdentityWithToken",code="429"}"#,
        r#"acs_api_requests_total{operation="createIdentityWithToken",code="503"}"#,
        r#"acs_identity_ready_status{namespace=""#,
        "acs_identity_token_renewal_timestamp_seconds{",
        "acs_identity_reconcile_failures_total{",
        "\nacs_identity_operator_leader 1\n",
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let text = operator.get("/metrics").await.unwrap_or_default().1;
        if wanted.iter().all(|w| text.contains(w)) && text.contains(r#"condition="True"} 1"#) {
            operator.stop().await;
            return text;
        }
        if Instant::now() > deadline {
            panic!(
                "the scrape never showed {wanted:?}:\n{text}\nlog:\n{}",
                operator.stop().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_metric_the_rules_dashboard_and_rule_tests_use_is_exported_with_those_labels() {
    let scrape = parse_scrape(&scrape_of_a_real_operator().await);

    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for (name, rule) in alerts() {
        for metric in metric_names(rule["expr"].as_str().unwrap()) {
            used.insert(metric, format!("alert {name}"));
        }
    }
    for (title, expr) in dashboard_queries() {
        for metric in metric_names(&expr) {
            used.entry(metric).or_insert(format!("panel {title}"));
        }
    }
    let unknown: Vec<String> = used
        .iter()
        .filter(|(metric, _)| !scrape.contains_key(*metric))
        .map(|(metric, by)| format!("{metric} (used by {by})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "not exported by the operator: {unknown:?}\nexported: {:?}",
        scrape.keys().collect::<Vec<_>>()
    );

    let tests: Value =
        serde_yaml::from_str(&read("deploy/monitoring/tests/alerts.test.yaml")).unwrap();
    for test in tests["tests"].as_array().unwrap() {
        for input in test["input_series"].as_array().unwrap() {
            let series = input["series"].as_str().unwrap();
            let (name, labels) = parse_series(series);
            let exported = scrape.get(&name).unwrap_or_else(|| {
                panic!("the rule tests feed {name}, which the operator does not export")
            });
            let own: BTreeSet<String> = labels
                .iter()
                .filter(|l| exported.contains(*l) || !TARGET_LABELS.contains(&l.as_str()))
                .cloned()
                .collect();
            assert_eq!(
                &own, exported,
                "{series}: its labels (besides target labels) are not the operator's for {name}"
            );
        }
    }
}

#[test]
fn the_series_parser_reads_names_and_label_names() {
    let (name, labels) = parse_series(r#"acs_x{a="1",b="x,\"y\"}",c=""}"#);
    assert_eq!(name, "acs_x");
    assert_eq!(labels, BTreeSet::from(["a", "b", "c"].map(String::from)));
    assert_eq!(parse_series("acs_y").1, BTreeSet::new());
    let scrape = parse_scrape("# TYPE acs_y gauge\nacs_y 1\nacs_z{op=\"a\"} 2\n# EOF\n");
    assert_eq!(scrape["acs_z"], BTreeSet::from(["op".to_string()]));
    assert!(scrape["acs_y"].is_empty());
}

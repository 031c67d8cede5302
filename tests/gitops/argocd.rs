//! Runs every Argo CD health and action test of `deploy/argocd` through argocd-lua (Argo CD's
//! Lua environment on gopher-lua, built by `tests/argocd/lua-runner`), as Argo CD's own
//! resource customization tests do.

use serde::Deserialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub const GROUP_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/argocd/resource_customizations/acsoperator.io"
);
pub const KINDS: [&str; 3] = ["AcsIdentity", "AcsConnection", "ClusterAcsConnection"];
pub const REFRESH_ANNOTATION: &str = "acsoperator.io/refresh-requested";
/// The refresh action's value in expected outputs: the real one is the time it ran.
pub const PLACEHOLDER_TIME: &str = "2026-01-01T00:00:00Z";

/// The argocd-lua binary, built once per test binary.
fn runner() -> &'static Path {
    static RUNNER: OnceLock<PathBuf> = OnceLock::new();
    RUNNER.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/argocd/lua-runner");
        let out = Command::new(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/argocd/lua-runner");
        assert!(out.status.success(), "tests/argocd/lua-runner failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("lua-runner prints the binary")
                .trim(),
        )
    })
}

/// Runs `script` on `obj` in `mode` (health, discovery, action): its result, or its error.
pub fn run_lua(mode: &str, script: &Path, obj: &Value) -> Result<Value, String> {
    let mut child = Command::new(runner())
        .args([mode, script.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start argocd-lua");
    let pid = child.id();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(obj).unwrap())
        .unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    // The script itself stops after 1 s (as in Argo CD); the process gets a little longer.
    let out = match wait.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!(
                "argocd-lua {mode} {} did not finish in 20 s",
                script.display()
            );
        }
    };
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("argocd-lua prints JSON"))
}

pub fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct HealthStatus {
    status: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionTests {
    #[serde(default)]
    discovery_tests: Vec<DiscoveryTest>,
    #[serde(default)]
    action_tests: Vec<ActionTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiscoveryTest {
    input_path: String,
    result: Vec<DiscoveredAction>,
}

#[derive(Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DiscoveredAction {
    name: String,
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionTest {
    action: String,
    input_path: String,
    expected_output_path: String,
}

/// Every testdata file of `dir`, by the path the tests name it with.
fn testdata(dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("testdata"))
        .map(|d| {
            d.map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_health_test_passes_under_argo_cds_lua() {
    let mut failures = Vec::new();
    let mut count = 0;
    for kind in KINDS {
        let dir = Path::new(GROUP_DIR).join(kind);
        let tests: HealthTests = serde_json::from_value(read_yaml(&dir.join("health_test.yaml")))
            .unwrap_or_else(|e| panic!("{kind}/health_test.yaml: {e}"));
        let mut used = Vec::new();
        for test in tests.tests {
            count += 1;
            let obj = read_yaml(&dir.join(&test.input_path));
            let got = run_lua("health", &dir.join("health.lua"), &obj)
                .map(|v| serde_json::from_value::<HealthStatus>(v).unwrap());
            if got.as_ref() != Ok(&test.health_status) {
                failures.push(format!(
                    "{kind} {}: want {:?}, got {got:?}",
                    test.input_path, test.health_status
                ));
            }
            used.push(test.input_path);
        }
        // Every captured object has a health expectation (the refresh action's expected
        // output is not an input).
        for file in testdata(&dir) {
            if !used.contains(&file) && !file.ends_with("_refresh_requested.yaml") {
                failures.push(format!("{kind} {file}: no health test reads it"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(count >= 15, "only {count} health tests");
}

#[test]
fn the_refresh_action_sets_the_annotation_the_operator_acts_on() {
    let dir = Path::new(GROUP_DIR).join("AcsIdentity/actions");
    let identity = dir.parent().unwrap();
    let tests: ActionTests =
        serde_json::from_value(read_yaml(&dir.join("action_test.yaml"))).expect("action_test.yaml");
    assert!(!tests.discovery_tests.is_empty() && !tests.action_tests.is_empty());
    for test in tests.discovery_tests {
        let obj = read_yaml(&identity.join(&test.input_path));
        let found = run_lua("discovery", &dir.join("discovery.lua"), &obj).unwrap();
        let mut got: Vec<DiscoveredAction> = found
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, a)| DiscoveredAction {
                name: name.clone(),
                disabled: a["disabled"].as_bool().unwrap_or(false),
            })
            .collect();
        let mut want = test.result;
        got.sort();
        want.sort();
        assert_eq!(got, want, "discovery on {}", test.input_path);
    }
    for test in tests.action_tests {
        let obj = read_yaml(&identity.join(&test.input_path));
        let script = dir.join(&test.action).join("action.lua");
        let mut got = run_lua("action", &script, &obj).unwrap();
        // The value is the time the action ran: a new one each time, as the operator needs.
        let value = got["metadata"]["annotations"][REFRESH_ANNOTATION]
            .as_str()
            .unwrap_or_else(|| panic!("no {REFRESH_ANNOTATION} in {got}"))
            .to_string();
        let at: jiff::Timestamp = value.parse().expect("an RFC 3339 time");
        let age = jiff::Timestamp::now().duration_since(at).as_secs().abs();
        assert!(age < 300, "{value} is not the time the action ran");
        got["metadata"]["annotations"][REFRESH_ANNOTATION] = PLACEHOLDER_TIME.into();
        let want = read_yaml(&identity.join(&test.expected_output_path));
        assert_eq!(got, want, "{} on {}", test.action, test.input_path);
    }
}

#[test]
fn a_failing_or_wrong_script_is_an_error_not_a_status() {
    let scratch = tempfile::tempdir().unwrap();
    let script = |name: &str, text: &str| {
        let path = scratch.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let obj = serde_json::json!({"metadata": {"name": "a"}});
    // Argo CD gives scripts no string library: a script that uses one fails here too.
    let uses_string = script("s.lua", "return {status = string.upper('healthy')}");
    assert!(run_lua("health", &uses_string, &obj).is_err());
    let endless = script("l.lua", "while true do end");
    assert!(run_lua("health", &endless, &obj).is_err());
    let unknown = script("u.lua", "return {status = 'Fine', message = 'm'}");
    assert_eq!(
        run_lua("health", &unknown, &obj).unwrap()["status"],
        "Unknown"
    );
}

/// `deploy/argocd/argocd-cm.yaml` (generated) installs exactly the scripts that are tested:
/// one health script for the three kinds, and the refresh action of AcsIdentity.
#[test]
fn argocd_cm_installs_the_tested_scripts() {
    let read = |p: &str| std::fs::read_to_string(Path::new(GROUP_DIR).join(p)).unwrap();
    let cm: Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/argocd/argocd-cm.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    for kind in KINDS {
        let key = format!("resource.customizations.health.acsoperator.io_{kind}");
        assert_eq!(
            cm["data"][&key].as_str(),
            Some(read(&format!("{kind}/health.lua")).as_str()),
            "{key}"
        );
    }
    let actions: Value = serde_yaml::from_str(
        cm["data"]["resource.customizations.actions.acsoperator.io_AcsIdentity"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        actions["discovery.lua"].as_str(),
        Some(read("AcsIdentity/actions/discovery.lua").as_str())
    );
    assert_eq!(actions["definitions"][0]["name"], "refresh");
    assert_eq!(
        actions["definitions"][0]["action.lua"].as_str(),
        Some(read("AcsIdentity/actions/refresh/action.lua").as_str())
    );
}

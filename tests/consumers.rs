//! The consumer examples (`examples/consumers/`) with the official SDKs' token credentials,
//! across renewals (issue 22): the operator renews short-lived tokens from the emulator, a
//! stand-in for kubelet projects each new Secret version into a directory the way kubelet
//! updates a Secret volume (a new hidden directory, then an atomic swap of the `..data` link),
//! and the Python and JavaScript consumers read it through their SDK's credential and
//! refresher. Every token a credential hands out must be one the Secret held, valid in the
//! emulator at that moment, and not expired; each consumer must see several renewals.

use acs_test_support as support;

use acs_emulator::testing::{repo_root, sdks};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::operator::World;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Tokens live this long, so the operator renews every 10 s (at 2/3 of the lifetime).
const LIFETIME: Duration = Duration::from_secs(15);
/// How long each consumer runs: about four renewals.
const RUN_SECONDS: u64 = 45;
/// kubelet's delay before a changed Secret shows in the volume (scaled down with the lifetime).
const KUBELET_DELAY: Duration = Duration::from_millis(800);

/// 16 hex digits of the token's SHA-256, as the consumers log it.
fn hash(token: &str) -> String {
    acs_identity_operator::controller::token_secret::token_hash(token)
}

/// Writes `data` into `dir` as kubelet's atomic writer does: the files into a new hidden
/// directory, a `..data` link swapped to it by a rename, each key a link through `..data`,
/// and the previous version removed.
fn project(dir: &Path, version: u64, data: &[(String, Vec<u8>)]) {
    let name = format!("..2026_v{version}");
    let fresh = dir.join(&name);
    std::fs::create_dir(&fresh).unwrap();
    for (key, value) in data {
        std::fs::write(fresh.join(key), value).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&name, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (key, _) in data {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(key), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// Watches the Secret and projects every new version into `dir` after [`KUBELET_DELAY`],
/// recording each token it projected by hash.
async fn kubelet(
    secrets: kube::Api<Secret>,
    secret: &str,
    dir: PathBuf,
    tokens: Arc<Mutex<HashMap<String, String>>>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={secret}"));
    let stream = watcher(secrets, config).applied_objects();
    futures::pin_mut!(stream);
    let mut version = 0;
    let mut last = None;
    while let Some(Ok(s)) = stream.next().await {
        let data: Vec<(String, Vec<u8>)> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let Some((_, token)) = data.iter().find(|(k, _)| k == "token") else {
            continue;
        };
        let token = String::from_utf8(token.clone()).unwrap();
        if last.as_ref() == Some(&token) {
            continue;
        }
        tokio::time::sleep(KUBELET_DELAY).await;
        tokens.lock().unwrap().insert(hash(&token), token.clone());
        version += 1;
        project(&dir, version, &data);
        last = Some(token);
    }
}

/// Runs one consumer to its end, checking each line as it comes; the distinct tokens it
/// handed out.
async fn consume(
    w: &World,
    what: &str,
    mut command: tokio::process::Command,
    tokens: &Mutex<HashMap<String, String>>,
) -> usize {
    command
        .env("ACS_CONSUMER_RUN_SECONDS", RUN_SECONDS.to_string())
        .env("ACS_CONSUMER_EVERY_SECONDS", "0.5")
        .env("ACS_TOKEN_MIN_LEFT_SECONDS", "2")
        .env("ACS_TOKEN_WAIT_SECONDS", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut distinct = Vec::new();
    let mut done = false;
    let deadline = Duration::from_secs(RUN_SECONDS + 60);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("{what} printed a line that is not JSON"));
            if line["event"] == "done" {
                done = true;
                break;
            }
            let digest = line["hash"].as_str().unwrap().to_string();
            let token = tokens.lock().unwrap().get(&digest).cloned();
            let Some(token) = token else {
                panic!("{what} handed out a token the Secret never held ({digest})");
            };
            let (expires, at) = (
                line["expiresOn"].as_f64().unwrap(),
                line["at"].as_f64().unwrap(),
            );
            assert!(expires > at, "{what} handed out an expired token: {line}");
            let (valid, reason) = w.admin.verify(&token).await;
            assert!(
                valid,
                "{what} handed out a token ACS refuses ({reason}): {line}"
            );
            if !distinct.contains(&digest) {
                distinct.push(digest);
            }
        }
    };
    if tokio::time::timeout(deadline, read).await.is_err() {
        panic!("{what} did not finish within {deadline:?}");
    }
    let output = child.wait_with_output().await.unwrap();
    assert!(
        done && output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    distinct.len()
}

#[tokio::test]
async fn sdk_credentials_hand_out_only_valid_tokens_across_renewals() {
    let sdks = tokio::task::spawn_blocking(sdks).await.unwrap();
    let w = World::new(|c| c.token_lifetime = Some(LIFETIME)).await;
    w.identity(
        "app",
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]}),
    )
    .await;
    w.wait_ready("app").await;

    let volume = tempfile::tempdir().unwrap();
    let tokens = Arc::new(Mutex::new(HashMap::new()));
    let projector = tokio::spawn({
        let (dir, tokens, secrets) = (volume.path().to_path_buf(), tokens.clone(), w.api());
        async move { kubelet(secrets, "app", dir, tokens).await }
    });
    // The consumers start once the first version is in the volume, as a pod starts once its
    // volumes are mounted.
    support::within("the first projection", async {
        while std::fs::symlink_metadata(volume.path().join("token")).is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let mut python = tokio::process::Command::new(&sdks.python);
    python
        .arg(repo_root().join("examples/consumers/consumer.py"))
        .env("ACS_TOKEN_DIR", volume.path());
    // ESM resolves packages from the script's own folder up: run a copy beside the SDK.
    let js_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        sdks.js_dir.join("node_modules"),
        js_dir.path().join("node_modules"),
    )
    .unwrap();
    std::fs::copy(
        repo_root().join("examples/consumers/consumer.mjs"),
        js_dir.path().join("consumer.mjs"),
    )
    .unwrap();
    let mut node = tokio::process::Command::new("node");
    node.arg(js_dir.path().join("consumer.mjs"))
        .env("ACS_TOKEN_DIR", volume.path());

    let (py, js) = tokio::join!(
        consume(&w, "the Python consumer", python, &tokens),
        consume(&w, "the JavaScript consumer", node, &tokens),
    );
    projector.abort();
    // 45 s of 15 s tokens renewed every 10 s: the first token and at least three renewals.
    assert!(py >= 4, "the Python consumer saw {py} tokens");
    assert!(js >= 4, "the JavaScript consumer saw {js} tokens");
}

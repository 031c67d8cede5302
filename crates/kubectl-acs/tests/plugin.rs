//! `kubectl acs-identity` against the test API server with a real operator and the emulator:
//! what each command prints, what it changes, and its exit codes.

use acs_test_support as support;

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use support::operator::{World, secret_text, status_of};

/// A finished plugin run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the plugin with `args` against the test cluster, in `w`'s namespace, with no stdin
/// (as in CI), for at most 90 s.
async fn plugin(w: &World, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-acs_identity"));
    command
        .args(args)
        .args(["-n", &w.ns])
        .env("KUBECONFIG", support::kubeconfig_env())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .unwrap_or_else(|_| panic!("plugin {args:?} did not finish in 90 s"))
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn spec() -> Value {
    json!({"connectionRef": {"name": "acs"}, "scopes": ["chat", "voip"]})
}

#[tokio::test]
async fn status_and_inspect_say_what_status_and_the_secret_hold() {
    let w = World::new(|_| {}).await;
    w.identity("alice", spec()).await;
    let obj = w.wait_ready("alice").await;
    let id = status_of(&obj).identity_id.clone().unwrap();
    let token = secret_text(&w.get("alice").await.unwrap(), "token");

    let status = plugin(&w, &["status", "alice"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    for want in [
        format!("{}/alice", w.ns),
        "Ready        True".to_string(),
        format!("Identity     {id}"),
        "alice (keys: expiresOn, identityId, token): holds the token status records".into(),
        "AcsConnection/acs: usable".into(),
        "Renews at".into(),
    ] {
        assert!(
            status.stdout.contains(&want),
            "no {want:?} in:\n{}",
            status.stdout
        );
    }
    assert!(!status.stdout.contains(&token));

    let json = plugin(&w, &["status", "alice", "-o", "json"]).await;
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["identityId"], id.as_str());
    assert_eq!(report["ready"]["status"], "True");
    assert_eq!(report["secret"]["holdsRecordedToken"], true);
    let yaml = plugin(&w, &["status", "-o", "yaml"]).await;
    assert!(yaml.stdout.contains("name: alice"), "{}", yaml.stdout);

    let inspect = plugin(&w, &["inspect", "alice"]).await;
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    for want in [
        format!("identity     {id}"),
        "scopes       chat, voip".into(),
        "yes          the token is the one status records".into(),
        "yes          its expiry is status.tokenExpiresOn".into(),
    ] {
        assert!(
            inspect.stdout.contains(&want),
            "no {want:?} in:\n{}",
            inspect.stdout
        );
    }
    assert!(
        !inspect.stdout.contains(&token),
        "inspect printed the token unasked"
    );
    let shown = plugin(&w, &["inspect", "alice", "--show-token"]).await;
    assert!(shown.stdout.contains(&token));

    let missing = plugin(&w, &["status", "nobody"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("\"nobody\" not found in namespace"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn renew_and_revoke_wait_for_a_new_token_and_revoke_asks_first() {
    let w = World::new(|_| {}).await;
    w.identity("bob", spec()).await;
    w.wait_ready("bob").await;
    let first = secret_text(&w.get("bob").await.unwrap(), "token");

    let renew = plugin(&w, &["renew", "bob", "--wait", "--timeout", "60s"]).await;
    assert_eq!(renew.code, 0, "{}\n{}", renew.stdout, renew.stderr);
    assert!(
        renew.stdout.contains("the new token is in the Secret"),
        "{}",
        renew.stdout
    );
    let second = secret_text(&w.get("bob").await.unwrap(), "token");
    assert_ne!(
        first, second,
        "renew --wait returned before a new token was written"
    );
    // A renewal leaves the old token valid; only a revoke ends it.
    assert!(w.admin.verify(&first).await.0);

    let unasked = plugin(&w, &["revoke", "bob"]).await;
    assert_eq!(unasked.code, 2, "{}", unasked.stderr);
    assert!(unasked.stderr.contains("--yes"), "{}", unasked.stderr);
    assert_eq!(secret_text(&w.get("bob").await.unwrap(), "token"), second);

    let revoke = plugin(
        &w,
        &["revoke", "bob", "--yes", "--wait", "--timeout", "60s"],
    )
    .await;
    assert_eq!(revoke.code, 0, "{}\n{}", revoke.stdout, revoke.stderr);
    let (valid, reason) = w.admin.verify(&second).await;
    assert!(!valid && reason == "revoked", "{reason}");
    let third = secret_text(&w.get("bob").await.unwrap(), "token");
    assert!(w.admin.verify(&third).await.0);

    let nothing = plugin(&w, &["renew"]).await;
    assert_eq!(nothing.code, 2);
    assert!(nothing.stderr.contains("--all or -l"), "{}", nothing.stderr);
}

#[tokio::test]
async fn check_fails_until_an_operator_holds_the_lease() {
    let w = World::new(|_| {}).await;
    let args = ["check", "--operator-namespace", &w.ns, "--lease", "op"];
    let args: Vec<&str> = args.to_vec();

    let no_lease = plugin(&w, &args).await;
    assert_eq!(no_lease.code, 1);
    assert!(
        no_lease.stdout.contains("ok   CRD AcsIdentity is served"),
        "{}",
        no_lease.stdout
    );
    assert!(
        no_lease.stdout.contains("FAIL Lease"),
        "{}",
        no_lease.stdout
    );

    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    w.apply::<Lease>(
        "op",
        json!({"spec": {"holderIdentity": "op-7d9", "leaseDurationSeconds": 60, "renewTime": now}}),
    )
    .await;
    // The connection is usable (once the operator has checked it: --wait) and the holder
    // runs outside the cluster (no such pod).
    let mut waiting = args.clone();
    waiting.extend(["--wait", "30s"]);
    let held = plugin(&w, &waiting).await;
    assert_eq!(held.code, 0, "{}", held.stdout);
    assert!(
        held.stdout.contains("an operator (op-7d9) holds"),
        "{}",
        held.stdout
    );
    assert!(held.stdout.contains("AcsConnection"), "{}", held.stdout);

    // (A holder that is a pod must be Ready: the test API server serves no Pods, so that
    // verdict is check.rs's table test.)
    let version = plugin(
        &w,
        &["version", "--operator-namespace", &w.ns, "--lease", "op"],
    )
    .await;
    assert!(
        version
            .stdout
            .contains("operator unknown (op-7d9 is not a pod"),
        "{}",
        version.stdout
    );
}

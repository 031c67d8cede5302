//! The official Azure SDKs, unmodified, against the real `acs-emulator` binary over TLS.
//!
//! Each test installs the pinned SDKs once (`tests/sdk/setup.sh`, cached under `.cache/sdk`),
//! writes out a throw-away CA and a `localhost`/`127.0.0.1` leaf certificate (the shared test CA
//! of `acs_emulator::testing`), starts the emulator with them, and runs the ACS access-token quickstart (`tests/sdk/quickstart.py` with
//! `azure-communication-identity` 1.5.0, `tests/sdk/quickstart.mjs` with
//! `@azure/communication-identity` 1.3.1) against `https://localhost:PORT/`, trusting the CA
//! through `REQUESTS_CA_BUNDLE` / `NODE_EXTRA_CA_CERTS` exactly as a developer would.
//!
//! `tests/sdk/entra_exchange.mjs` runs `@azure/communication-common` 2.5.0's
//! `EntraTokenCredential` through both `/access` exchanges the same way.
//!
//! The script prints one JSON line per quickstart step and then waits for a line on stdin, so
//! the harness checks the emulator's admin view after every step, not only at the end: the
//! identities with their token and revocation counts, every token the SDK received so far
//! (`ok` until its identity is revoked or deleted), and the request counters (each step is
//! exactly one request with the expected status: no hidden retries, the rejected 59-minute
//! create and the wrong-key create leave no identity behind).
//!
//! Tokens are test tokens of a throw-away emulator, but they are still kept out of failure
//! messages.

use acs_emulator::testing::{TestCa, repo_root, sdks, test_ca};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The emulator's access key for these tests (base64 of `sdk-compat-test-key-0123456789abcdef`).
const ACCESS_KEY: &str = "c2RrLWNvbXBhdC10ZXN0LWtleS0wMTIzNDU2Nzg5YWJjZGVm";
const EMULATOR_START_TIMEOUT: Duration = Duration::from_secs(30);
const EMULATOR_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds a whole quickstart run (it takes a second or two).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

const DAY_SECONDS: i64 = 24 * 60 * 60;
const HOUR_SECONDS: i64 = 60 * 60;
const TOO_SHORT_MESSAGE: &str =
    "ExpiresInMinutes value 59 is invalid. Value must be within the [60, 1440] interval.";

/// The quickstart's steps, in the order both scripts run them.
const STEPS: [&str; 14] = [
    "create_user",
    "get_token",
    "refresh_token",
    "create_user_and_token",
    "get_token_60min",
    "create_user_and_token_60min",
    "get_token_59min_rejected",
    "create_user_and_token_59min_rejected",
    "revoke_tokens",
    "get_token_after_revoke",
    "delete_user",
    "get_token_deleted_user_rejected",
    "wrong_key_rejected",
    "done",
];

// ---------------------------------------------------------------------------------------------
// The SDKs are installed once per test binary by `acs_emulator::testing::sdks`.

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The test CA as files, where the SDKs and the emulator binary read it

struct TestTls {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TestTls {
    fn generate() -> Self {
        let TestCa { ca_pem, server } = test_ca();
        let tls = TestTls {
            dir: tempfile::tempdir().expect("tempdir"),
            ca_pem,
        };
        std::fs::write(tls.ca_path(), &tls.ca_pem).expect("write ca.pem");
        std::fs::write(tls.cert_path(), &server.cert_chain).expect("write server.pem");
        std::fs::write(tls.key_path(), &server.private_key).expect("write server.key");
        tls
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

// ---------------------------------------------------------------------------------------------
// The emulator process and its admin API

/// The running `acs-emulator`. Dropping it (a panicking test) kills the process; `stop` is the
/// graceful path: SIGTERM, and the emulator must exit 0.
struct Emulator {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    admin: reqwest::Client,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminIdentity {
    id: String,
    deleted: bool,
    tokens_issued: u64,
    revocations: u64,
}

#[derive(Debug, Deserialize)]
struct AdminIdentities {
    identities: Vec<AdminIdentity>,
}

#[derive(Debug, Deserialize)]
struct Verdict {
    valid: bool,
    reason: String,
}

impl Emulator {
    async fn start(tls: &TestTls) -> Self {
        Self::start_with(tls, &[]).await
    }

    async fn start_with(tls: &TestTls, extra: &[&str]) -> Self {
        let log = tls.dir.path().join("emulator.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_acs-emulator"))
            .args(["--listen", "127.0.0.1:0", "--access-key", ACCESS_KEY])
            .arg("--tls-cert")
            .arg(tls.cert_path())
            .arg("--tls-key")
            .arg(tls.key_path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("emulator log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start acs-emulator");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(EMULATOR_START_TIMEOUT, connection_line(&mut stdout))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "acs-emulator printed no connection string within {EMULATOR_START_TIMEOUT:?}; log:\n{}",
                    read_lossy(&log)
                )
            })
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", read_lossy(&log)));
        // Keep draining stdout so the emulator never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });

        let (endpoint, key) = parse_connection_string(&line);
        assert_eq!(
            key, ACCESS_KEY,
            "the printed access key is not the one passed"
        );
        let url = url::Url::parse(&endpoint).expect("printed endpoint is a URL");
        assert_eq!(url.scheme(), "https", "TLS was configured: {endpoint}");
        let port = url.port().expect("printed endpoint has a port");

        let admin = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).expect("CA for reqwest"),
            )
            .no_proxy()
            .timeout(ADMIN_TIMEOUT)
            .build()
            .expect("admin client");
        Emulator {
            child: Some(child),
            port,
            log,
            admin,
        }
    }

    /// The endpoint a developer would write: `localhost`, so the certificate's DNS name is used.
    fn connection_string(&self) -> String {
        format!(
            "endpoint=https://localhost:{}/;accesskey={ACCESS_KEY}",
            self.port
        )
    }

    fn admin_url(&self, path: &str) -> String {
        format!("https://localhost:{}/admin/{path}", self.port)
    }

    async fn admin_json(&self, request: reqwest::RequestBuilder, what: &str) -> Value {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin {what}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "admin {what}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("admin {what}: {e}: {body}"))
    }

    async fn identities(&self) -> BTreeMap<String, AdminIdentity> {
        let value = self
            .admin_json(self.admin.get(self.admin_url("identities")), "identities")
            .await;
        let list: AdminIdentities =
            serde_json::from_value(value).expect("GET /admin/identities shape");
        list.identities
            .into_iter()
            .map(|identity| (identity.id.clone(), identity))
            .collect()
    }

    async fn verify(&self, token: &str) -> Verdict {
        let value = self
            .admin_json(
                self.admin
                    .post(self.admin_url("tokens:verify"))
                    .json(&json!({ "token": token })),
                "tokens:verify",
            )
            .await;
        serde_json::from_value(value).expect("POST /admin/tokens:verify shape")
    }

    /// Data-plane requests answered so far, by status (summed over operations).
    async fn statuses(&self) -> BTreeMap<String, u64> {
        let value = self
            .admin_json(self.admin.get(self.admin_url("stats")), "stats")
            .await;
        let mut by_status = BTreeMap::new();
        for per_operation in value["operations"]
            .as_object()
            .expect("stats.operations")
            .values()
        {
            for (status, n) in per_operation.as_object().expect("stats per operation") {
                *by_status.entry(status.clone()).or_default() += n.as_u64().expect("a count");
            }
        }
        by_status
    }

    async fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("emulator still running");
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(EMULATOR_STOP_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("acs-emulator ignored SIGTERM for {EMULATOR_STOP_TIMEOUT:?}")
            })
            .expect("wait for acs-emulator");
        assert!(
            status.success(),
            "acs-emulator exited with {status} on SIGTERM; log:\n{}",
            read_lossy(&self.log)
        );
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

async fn connection_line(stdout: &mut Lines<BufReader<ChildStdout>>) -> Result<String, String> {
    loop {
        match stdout.next_line().await {
            Ok(Some(line)) => {
                if let Some(rest) = line.trim().strip_prefix("connection string: ") {
                    return Ok(rest.to_string());
                }
            }
            Ok(None) => {
                return Err("acs-emulator exited before printing its connection string".into());
            }
            Err(e) => return Err(format!("reading acs-emulator stdout: {e}")),
        }
    }
}

fn parse_connection_string(s: &str) -> (String, String) {
    let (mut endpoint, mut key) = (None, None);
    for part in s.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, value) = part.split_once('=').expect("name=value");
        match name.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(value.trim().to_string()),
            "accesskey" => key = Some(value.trim().to_string()),
            other => panic!("unexpected connection string part {other}"),
        }
    }
    (endpoint.expect("endpoint="), key.expect("accesskey="))
}

// ---------------------------------------------------------------------------------------------
// Running a quickstart script step by step

/// What the emulator should hold after each step, built from the script's own report.
#[derive(Default)]
struct Expected {
    identities: BTreeMap<String, AdminIdentity>,
    /// (step that produced it, identity, token, expected verdict reason)
    tokens: Vec<(String, String, String, &'static str)>,
    statuses: BTreeMap<String, u64>,
}

struct Flow<'a> {
    sdk: &'a str,
    emulator: &'a Emulator,
    started_at: i64,
    expected: Expected,
    ids: BTreeMap<&'static str, String>,
    steps: Vec<Value>,
}

impl Flow<'_> {
    /// Applies one reported step to the expected state, then compares it with the emulator.
    async fn step(&mut self, index: usize, step: Value) {
        let name = step["step"].as_str().unwrap_or_default().to_string();
        self.steps.push(step.clone());
        assert_eq!(
            Some(name.as_str()),
            STEPS.get(index).copied(),
            "{}: step {index} out of order; steps so far: {}",
            self.sdk,
            self.redacted_steps()
        );
        let id = step["id"].as_str().map(str::to_string);
        let status = match name.as_str() {
            "create_user" => {
                self.new_identity("A", id.as_deref());
                Some(201)
            }
            "get_token" | "refresh_token" | "get_token_after_revoke" => {
                self.token_step(&step, "A", DAY_SECONDS);
                Some(200)
            }
            "get_token_60min" => {
                self.token_step(&step, "A", HOUR_SECONDS);
                Some(200)
            }
            "create_user_and_token" => {
                self.new_identity("B", id.as_deref());
                self.token_step(&step, "B", DAY_SECONDS);
                Some(201)
            }
            "create_user_and_token_60min" => {
                self.new_identity("C", id.as_deref());
                self.token_step(&step, "C", HOUR_SECONDS);
                Some(201)
            }
            "get_token_59min_rejected" | "create_user_and_token_59min_rejected" => {
                if name.starts_with("get_token") {
                    self.same_identity(&step, "A");
                }
                let exception = self.sdk_error("HttpResponseError");
                self.error_step(&step, exception, 400, Some("ValidationError"));
                assert_eq!(
                    step["message"], TOO_SHORT_MESSAGE,
                    "{}: {name}: error message",
                    self.sdk
                );
                Some(400)
            }
            "revoke_tokens" => {
                let a = self.same_identity(&step, "A");
                self.expected.identities.get_mut(&a).unwrap().revocations += 1;
                for token in self.expected.tokens.iter_mut().filter(|t| t.1 == a) {
                    token.3 = "revoked";
                }
                Some(204)
            }
            "delete_user" => {
                let c = self.same_identity(&step, "C");
                self.expected.identities.get_mut(&c).unwrap().deleted = true;
                for token in self.expected.tokens.iter_mut().filter(|t| t.1 == c) {
                    token.3 = "deleted";
                }
                Some(204)
            }
            "get_token_deleted_user_rejected" => {
                self.same_identity(&step, "C");
                let exception = self.sdk_error("ResourceNotFoundError");
                self.error_step(&step, exception, 404, None);
                Some(404)
            }
            "wrong_key_rejected" => {
                let exception = self.sdk_error("ClientAuthenticationError");
                self.error_step(&step, exception, 401, Some("Denied"));
                Some(401)
            }
            "done" => None,
            other => panic!("{}: unknown step {other}", self.sdk),
        };
        if let Some(status) = status {
            *self
                .expected
                .statuses
                .entry(status.to_string())
                .or_default() += 1;
        }
        self.check_emulator(&name).await;
    }

    fn sdk_error(&self, python_exception: &'static str) -> &'static str {
        if self.sdk == "python" {
            python_exception
        } else {
            "RestError"
        }
    }

    fn new_identity(&mut self, label: &'static str, id: Option<&str>) {
        let id = id.unwrap_or_else(|| panic!("{}: {label} has no id", self.sdk));
        assert!(id.starts_with("8:acs:"), "{}: id {id}", self.sdk);
        assert!(
            !self.ids.values().any(|other| other == id),
            "{}: id {id} handed out twice",
            self.sdk
        );
        self.ids.insert(label, id.to_string());
        self.expected.identities.insert(
            id.to_string(),
            AdminIdentity {
                id: id.to_string(),
                deleted: false,
                tokens_issued: 0,
                revocations: 0,
            },
        );
    }

    fn same_identity(&self, step: &Value, label: &str) -> String {
        let expected = &self.ids[label];
        assert_eq!(
            step["id"].as_str(),
            Some(expected.as_str()),
            "{}: {} should concern identity {label}",
            self.sdk,
            step["step"]
        );
        expected.clone()
    }

    /// A token the SDK returned: JWT-shaped, `exp` = the `expiresOn` the SDK reported = the
    /// `exp` the SDK's own credential parsed, issued to the right identity for the right scopes
    /// with the requested lifetime.
    fn token_step(&mut self, step: &Value, label: &str, lifetime: i64) {
        let name = step["step"].as_str().unwrap_or_default();
        let id = self.same_identity(step, label);
        let token = step["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {name} has no token", self.sdk));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{}: {name}: token is not a JWT", self.sdk);
        let payload = B64URL
            .decode(parts[1])
            .unwrap_or_else(|e| panic!("{}: {name}: token payload not base64url: {e}", self.sdk));
        let claims: Value = serde_json::from_slice(&payload)
            .unwrap_or_else(|e| panic!("{}: {name}: token payload not JSON: {e}", self.sdk));
        let exp = claims["exp"].as_i64().expect("exp claim");
        let iat = claims["iat"].as_i64().expect("iat claim");
        assert_eq!(
            step["exp"].as_i64(),
            Some(exp),
            "{}: {name}: the SDK's credential parsed another exp",
            self.sdk
        );
        let expires_on: jiff::Timestamp = step["expiresOn"]
            .as_str()
            .expect("expiresOn")
            .parse()
            .unwrap_or_else(|e| {
                panic!("{}: {name}: expiresOn {}: {e}", self.sdk, step["expiresOn"])
            });
        assert_eq!(
            expires_on.as_second(),
            exp,
            "{}: {name}: expiresOn {expires_on} differs from exp {exp}",
            self.sdk
        );
        assert!(
            (exp - iat - lifetime).abs() <= 1,
            "{}: {name}: lifetime exp-iat = {} s, requested {lifetime} s",
            self.sdk,
            exp - iat
        );
        let now = jiff::Timestamp::now().as_second();
        assert!(
            self.started_at - 5 <= iat && iat <= now + 5,
            "{}: {name}: iat {iat} is not during this test",
            self.sdk
        );
        assert_eq!(
            claims["skypeid"].as_str().map(|s| format!("8:{s}")),
            Some(id.clone()),
            "{}: {name}: token issued to another identity",
            self.sdk
        );
        let scopes: Vec<&str> = step["scopes"]
            .as_array()
            .expect("scopes")
            .iter()
            .map(|s| s.as_str().expect("scope"))
            .collect();
        assert_eq!(
            claims["acsScope"].as_str(),
            Some(scopes.join(",").as_str()),
            "{}: {name}: token scopes",
            self.sdk
        );
        assert!(
            !self.expected.tokens.iter().any(|t| t.2 == token),
            "{}: {name}: the same token was issued twice",
            self.sdk
        );
        self.expected.identities.get_mut(&id).unwrap().tokens_issued += 1;
        self.expected
            .tokens
            .push((name.to_string(), id, token.to_string(), "ok"));
    }

    fn error_step(&self, step: &Value, exception: &str, status: u64, code: Option<&str>) {
        let name = step["step"].as_str().unwrap_or_default();
        assert_eq!(step["error"], exception, "{}: {name}: exception", self.sdk);
        assert_eq!(step["status"], status, "{}: {name}: HTTP status", self.sdk);
        if let Some(code) = code {
            assert_eq!(step["code"], code, "{}: {name}: error code", self.sdk);
        }
    }

    async fn check_emulator(&self, after: &str) {
        let sdk = self.sdk;
        let actual = self.emulator.identities().await;
        assert_eq!(
            actual, self.expected.identities,
            "{sdk}: admin identities after {after}"
        );
        for (step, _, token, reason) in &self.expected.tokens {
            let verdict = self.emulator.verify(token).await;
            assert_eq!(
                (verdict.valid, verdict.reason.as_str()),
                (*reason == "ok", *reason),
                "{sdk}: admin verdict on the token from {step}, after {after}"
            );
        }
        let statuses = self.emulator.statuses().await;
        assert_eq!(
            statuses, self.expected.statuses,
            "{sdk}: data-plane requests by status after {after} (one request per step)"
        );
    }

    /// Tokens of a foreign or tampered form are never valid.
    async fn check_foreign_tokens(&self) {
        let sdk = self.sdk;
        let verdict = self.emulator.verify("not-a-token").await;
        assert_eq!(
            (verdict.valid, verdict.reason.as_str()),
            (false, "malformed"),
            "{sdk}: garbage"
        );
        let (_, _, token, _) = self
            .expected
            .tokens
            .iter()
            .find(|t| t.3 == "ok")
            .expect("a valid token");
        let (rest, signature) = token.rsplit_once('.').expect("JWT");
        let mut sig = B64URL.decode(signature).expect("signature base64url");
        sig[0] ^= 1;
        let tampered = format!("{rest}.{}", B64URL.encode(sig));
        let verdict = self.emulator.verify(&tampered).await;
        assert!(
            !verdict.valid && verdict.reason != "ok",
            "{sdk}: a token with a flipped signature bit was accepted ({})",
            verdict.reason
        );
    }

    fn redacted_steps(&self) -> String {
        self.steps
            .iter()
            .map(|step| {
                let mut step = step.clone();
                if let Some(token) = step.get_mut("token") {
                    *token = json!(format!("<{} chars>", token.as_str().map_or(0, str::len)));
                }
                step.to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `program args` with the emulator's connection string, acknowledging each reported step
/// only after the emulator's admin view matched it.
async fn run_quickstart(
    sdk: &'static str,
    emulator: &Emulator,
    program: &Path,
    args: &[OsString],
    env: &[(&str, OsString)],
) {
    let mut flow = Flow {
        sdk,
        emulator,
        started_at: jiff::Timestamp::now().as_second(),
        expected: Expected::default(),
        ids: BTreeMap::new(),
        steps: Vec::new(),
    };
    // Before the script starts: the emulator is empty.
    flow.check_emulator("start").await;
    let Script {
        mut child,
        stdin,
        mut stdout,
        stderr,
        deadline,
        ..
    } = Script::spawn(sdk, emulator, program, args, env);
    let mut stdin = stdin.expect("stdin");
    let stderr = stderr.expect("stderr");

    let mut other_output = Vec::new();
    let mut index = 0;
    let outcome: Result<(), String> = loop {
        let line = match tokio::time::timeout_at(deadline, stdout.next_line()).await {
            Err(_) => break Err(format!("no output within {SCRIPT_TIMEOUT:?}")),
            Ok(Err(e)) => break Err(format!("reading stdout: {e}")),
            Ok(Ok(None)) => break Err("the script ended before its \"done\" step".into()),
            Ok(Ok(Some(line))) => line,
        };
        let Ok(step) = serde_json::from_str::<Value>(&line) else {
            other_output.push(line);
            continue;
        };
        if step["step"] == "failed" {
            flow.steps.push(step);
            break Err("the script reported a failure".into());
        }
        let done = step["step"] == "done";
        flow.step(index, step).await;
        index += 1;
        if done {
            break Ok(());
        }
        if stdin.write_all(b"next\n").await.is_err() {
            break Err("the script stopped reading its acknowledgements".into());
        }
    };
    drop(stdin);
    let status = match outcome {
        Ok(()) => tokio::time::timeout_at(deadline, child.wait()).await,
        Err(_) => {
            let _ = child.start_kill();
            tokio::time::timeout_at(deadline, child.wait()).await
        }
    };
    let stderr = tokio::time::timeout(Duration::from_secs(5), stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let report = || {
        format!(
            "steps:\n{}\nother stdout:\n{}\nstderr:\n{stderr}\nemulator log:\n{}",
            flow.redacted_steps(),
            other_output.join("\n"),
            read_lossy(&emulator.log)
        )
    };
    if let Err(e) = outcome {
        panic!("{sdk} quickstart: {e}\n{}", report());
    }
    match status {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => panic!("{sdk} quickstart exited with {status}\n{}", report()),
        Ok(Err(e)) => panic!("{sdk} quickstart: wait: {e}"),
        Err(_) => panic!("{sdk} quickstart did not exit after \"done\"\n{}", report()),
    }
    assert_eq!(index, STEPS.len(), "{sdk}: every step ran\n{}", report());
    flow.check_foreign_tokens().await;
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn python_sdk_quickstart_passes_against_emulator_over_tls() {
    let sdks = sdks();
    let tls = TestTls::generate();
    let emulator = Emulator::start(&tls).await;
    run_quickstart(
        "python",
        &emulator,
        &sdks.python,
        &[repo_root().join("tests/sdk/quickstart.py").into()],
        &[
            ("REQUESTS_CA_BUNDLE", tls.ca_path().into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
            ("PYTHONUNBUFFERED", "1".into()),
        ],
    )
    .await;
    emulator.stop().await;
}

#[tokio::test]
async fn js_sdk_quickstart_passes_against_emulator_over_tls() {
    let sdks = sdks();
    let tls = TestTls::generate();
    let emulator = Emulator::start(&tls).await;
    run_quickstart(
        "js",
        &emulator,
        Path::new("node"),
        &[repo_root().join("tests/sdk/quickstart.mjs").into()],
        &[
            ("NODE_EXTRA_CA_CERTS", tls.ca_path().into()),
            ("SDK_JS_DIR", sdks.js_dir.clone().into()),
        ],
    )
    .await;
    emulator.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A script run step by step, checked by straight-line test code

/// A script speaking the step protocol of the quickstarts: one JSON line per step, then it waits
/// for a line on stdin. Dropping it kills the script.
struct Script {
    sdk: &'static str,
    child: Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<tokio::task::JoinHandle<String>>,
    deadline: tokio::time::Instant,
    log: PathBuf,
}

impl Script {
    fn spawn(
        sdk: &'static str,
        emulator: &Emulator,
        program: &Path,
        args: &[OsString],
        env: &[(&str, OsString)],
    ) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(repo_root())
            .env(
                "COMMUNICATION_SERVICES_CONNECTION_STRING",
                emulator.connection_string(),
            )
            .env("SDK_STEP_ACK", "1")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .env_remove("NODE_PATH")
            .env_remove("NODE_OPTIONS")
            .env("NO_PROXY", "localhost,127.0.0.1")
            .env("no_proxy", "localhost,127.0.0.1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{sdk}: cannot start {}: {e}", program.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Script {
            sdk,
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
            deadline: tokio::time::Instant::now() + SCRIPT_TIMEOUT,
            log: emulator.log.clone(),
        }
    }

    /// The next step report, which must be `name` (a `failed` step or anything else panics
    /// with the script's stderr and the emulator's log).
    async fn next(&mut self, name: &str) -> Value {
        let step = self.next_any().await;
        if step["step"] != name {
            self.fail(&format!("expected step {name}, got {}", redacted(&step)))
                .await;
        }
        step
    }

    /// The next step report, whatever it is.
    async fn next_any(&mut self) -> Value {
        loop {
            match tokio::time::timeout_at(self.deadline, self.stdout.next_line()).await {
                Err(_) => self.fail("no step within the time limit").await,
                Ok(Err(e)) => self.fail(&format!("reading stdout: {e}")).await,
                Ok(Ok(None)) => self.fail("the script ended early").await,
                Ok(Ok(Some(line))) => {
                    if let Ok(step) = serde_json::from_str::<Value>(&line) {
                        return step;
                    }
                }
            }
        }
    }

    /// Lets the script go on to its next step.
    async fn ack(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if stdin.write_all(b"next\n").await.is_err() {
            self.fail("the script stopped reading its acknowledgements")
                .await;
        }
    }

    /// After its `done` (or `failed`) step: the script must exit, with success when `ok`.
    async fn finish(mut self, ok: bool) {
        drop(self.stdin.take());
        match tokio::time::timeout_at(self.deadline, self.child.wait()).await {
            Ok(Ok(status)) if status.success() == ok => {}
            Ok(Ok(status)) => self.fail(&format!("exited with {status}")).await,
            _ => self.fail("did not exit").await,
        }
    }

    async fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.start_kill();
        let stderr = match self.stderr.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        panic!(
            "{}: {what}\nstderr:\n{stderr}\nemulator log:\n{}",
            self.sdk,
            read_lossy(&self.log)
        );
    }
}

/// A step report with its tokens cut short, for failure messages.
fn redacted(step: &Value) -> String {
    let mut step = step.clone();
    if let Some(object) = step.as_object_mut() {
        for (name, value) in object.iter_mut() {
            if name.contains("token") && value.is_string() {
                *value = json!("<redacted>");
            }
        }
    }
    step.to_string()
}

fn python_env(tls: &TestTls) -> Vec<(&'static str, OsString)> {
    vec![
        ("REQUESTS_CA_BUNDLE", tls.ca_path().into()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONUNBUFFERED", "1".into()),
    ]
}

impl Emulator {
    /// The admin view of one identity.
    async fn identity(&self, id: &str) -> AdminIdentity {
        self.identities()
            .await
            .remove(id)
            .unwrap_or_else(|| panic!("the emulator does not know {id}"))
    }

    async fn reason(&self, token: &str) -> String {
        let verdict = self.verify(token).await;
        assert_eq!(verdict.valid, verdict.reason == "ok");
        verdict.reason
    }

    /// `operation -> status -> count` of the admin stats.
    async fn counts(&self) -> Value {
        self.admin_json(self.admin.get(self.admin_url("stats")), "stats")
            .await["operations"]
            .clone()
    }
}

fn string(step: &Value, field: &str) -> String {
    step[field]
        .as_str()
        .unwrap_or_else(|| panic!("step without {field}: {}", redacted(step)))
        .to_string()
}

#[tokio::test]
async fn python_2020_administration_library_runs_against_the_retired_api_version() {
    let sdks = sdks();
    let tls = TestTls::generate();
    let emulator = Emulator::start(&tls).await;
    let script = repo_root().join("tests/sdk/legacy_b4.py");
    let mut run = Script::spawn(
        "python b4",
        &emulator,
        &sdks.python,
        &[script.into()],
        &python_env(&tls),
    );
    let view = |deleted, tokens_issued, revocations, id: &str| AdminIdentity {
        id: id.to_string(),
        deleted,
        tokens_issued,
        revocations,
    };

    let step = run.next("create_user").await;
    let id = string(&step, "id");
    assert_eq!(emulator.identity(&id).await, view(false, 0, 0, &id));
    assert_eq!(emulator.identities().await.len(), 1);
    run.ack().await;

    let step = run.next("issue_token").await;
    let first = string(&step, "token");
    assert_eq!(emulator.identity(&id).await, view(false, 1, 0, &id));
    assert_eq!(emulator.reason(&first).await, "ok");
    run.ack().await;

    run.next("revoke_tokens").await;
    assert_eq!(emulator.identity(&id).await, view(false, 1, 1, &id));
    assert_eq!(emulator.reason(&first).await, "revoked");
    run.ack().await;

    let step = run.next("issue_token_after_revoke").await;
    let second = string(&step, "token");
    assert_eq!(emulator.identity(&id).await, view(false, 2, 1, &id));
    assert_eq!(emulator.reason(&second).await, "ok");
    assert_eq!(emulator.reason(&first).await, "revoked");
    run.ack().await;

    run.next("revoke_tokens_issued_before_an_hour_ago").await;
    assert_eq!(emulator.identity(&id).await, view(false, 2, 2, &id));
    assert_eq!(emulator.reason(&second).await, "ok");
    run.ack().await;

    run.next("revoke_tokens_issued_before_a_minute_from_now")
        .await;
    assert_eq!(emulator.identity(&id).await, view(false, 2, 3, &id));
    assert_eq!(emulator.reason(&second).await, "revoked");
    run.ack().await;

    run.next("delete_user").await;
    assert_eq!(emulator.identity(&id).await, view(true, 2, 3, &id));
    assert_eq!(emulator.reason(&second).await, "deleted");
    run.ack().await;

    run.next("issue_token_deleted_rejected").await;
    run.ack().await;
    run.next("done").await;
    run.finish(true).await;
    // One request per step, each answered as the library expects: no retries, nothing else.
    assert_eq!(
        emulator.counts().await,
        json!({
            "createIdentity": {"200": 1},
            "issueToken": {"200": 2, "404": 1},
            "revokeTokens": {"204": 3},
            "deleteIdentity": {"204": 1},
        })
    );
    emulator.stop().await;
}

#[tokio::test]
async fn the_retired_api_version_can_be_turned_off() {
    let sdks = sdks();
    let tls = TestTls::generate();
    let emulator = Emulator::start_with(&tls, &["--retired-api-versions", "off"]).await;
    let script = repo_root().join("tests/sdk/legacy_b4.py");
    let mut run = Script::spawn(
        "python b4",
        &emulator,
        &sdks.python,
        &[script.into()],
        &python_env(&tls),
    );
    let step = run.next("failed").await;
    let error = string(&step, "error");
    assert!(error.contains("UnsupportedApiVersion"), "{error}");
    assert!(error.contains("2020-07-20-preview2"), "{error}");
    run.finish(false).await;
    assert!(emulator.identities().await.is_empty());
    emulator.stop().await;
}

impl Emulator {
    /// `POST /admin/teamsUsers`: an Entra token of a test Teams user.
    async fn teams_user_token(&self, spec: Value) -> Value {
        self.admin_json(
            self.admin.post(self.admin_url("teamsUsers")).json(&spec),
            "teamsUsers",
        )
        .await
    }
}

/// Runs a Teams exchange script and checks each of its steps: the exchanged token verifies and
/// expires with the Entra token, and every refusal has the status, code and message that name
/// its reason.
async fn run_teams_exchange(
    sdk: &'static str,
    emulator: &Emulator,
    program: &Path,
    script: &str,
    mut env: Vec<(&'static str, OsString)>,
) {
    let (app, user) = (
        "11111111-aaaa-4bbb-8ccc-222222222222",
        "33333333-dddd-4eee-8fff-444444444444",
    );
    let valid = emulator
        .teams_user_token(json!({"appId": app, "userId": user}))
        .await;
    let expired = emulator
        .teams_user_token(json!({"appId": app, "userId": user, "lifetimeSeconds": -60}))
        .await;
    let wrong_audience = emulator
        .teams_user_token(
            json!({"appId": app, "userId": user, "audience": "https://graph.microsoft.com"}),
        )
        .await;
    let tokens = json!({
        "valid": valid["token"],
        "expired": expired["token"],
        "wrongAudience": wrong_audience["token"],
        "appId": app,
        "userId": user,
    });
    env.push(("TEAMS_USER_TOKENS", tokens.to_string().into()));
    let mut run = Script::spawn(
        sdk,
        emulator,
        program,
        &[repo_root().join(script).into()],
        &env,
    );

    let step = run.next("exchange").await;
    let token = string(&step, "token");
    assert_eq!(
        emulator.reason(&token).await,
        "ok",
        "{sdk}: the exchanged token verifies"
    );
    let payload = token.split('.').nth(1).expect("JWT");
    let claims: Value =
        serde_json::from_slice(&B64URL.decode(payload).expect("base64url")).expect("JSON claims");
    assert_eq!(
        claims["skypeid"],
        format!("orgid:{user}"),
        "{sdk}: a Teams identity"
    );
    let entra_exp = jiff::Timestamp::from_str(valid["expiresOn"].as_str().unwrap())
        .unwrap()
        .as_second();
    assert_eq!(
        claims["exp"], entra_exp,
        "{sdk}: expires with the Entra token"
    );
    assert!(
        emulator.identities().await.is_empty(),
        "{sdk}: no ACS identity made"
    );
    run.ack().await;

    let refusals = [
        (
            "wrong_app_rejected",
            400,
            "ValidationError",
            "AAD application is not the expected one.",
        ),
        (
            "wrong_user_rejected",
            400,
            "ValidationError",
            "AAD user is not the expected one.",
        ),
        (
            "empty_app_rejected",
            400,
            "ValidationError",
            "AppId: The AppId field is required.",
        ),
        (
            "expired_rejected",
            401,
            "InvalidAccessToken",
            "it is expired",
        ),
        (
            "wrong_audience_rejected",
            401,
            "InvalidAccessToken",
            "its audience is 'https://graph.microsoft.com'",
        ),
        (
            "invalid_token_rejected",
            401,
            "InvalidAccessToken",
            "not an Entra ID access token",
        ),
    ];
    for (name, status, code, message) in refusals {
        let step = run.next(name).await;
        assert_eq!(step["status"], status, "{sdk} {name}: {}", redacted(&step));
        assert_eq!(step["code"], code, "{sdk} {name}: {}", redacted(&step));
        assert!(
            step["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{sdk} {name}: {}",
            redacted(&step)
        );
        run.ack().await;
    }
    run.next("done").await;
    run.finish(true).await;
    // Exactly one request per step: no hidden retries of the refused ones.
    assert_eq!(
        emulator.counts().await,
        json!({"exchangeTeamsToken": {"200": 1, "400": 3, "401": 3}}),
        "{sdk}"
    );
}

#[tokio::test]
async fn python_sdk_exchanges_teams_user_tokens_over_tls() {
    let sdks = sdks();
    let tls = TestTls::generate();
    let emulator = Emulator::start(&tls).await;
    run_teams_exchange(
        "python teams",
        &emulator,
        &sdks.python,
        "tests/sdk/teams_exchange.py",
        python_env(&tls),
    )
    .await;
    emulator.stop().await;
}

#[tokio::test]
async fn js_sdk_exchanges_teams_user_tokens_over_tls() {
    let sdks = sdks();
    let tls = TestTls::generate();
    let emulator = Emulator::start(&tls).await;
    run_teams_exchange(
        "js teams",
        &emulator,
        Path::new("node"),
        "tests/sdk/teams_exchange.mjs",
        vec![
            ("NODE_EXTRA_CA_CERTS", tls.ca_path().into()),
            ("SDK_JS_DIR", sdks.js_dir.clone().into()),
        ],
    )
    .await;
    emulator.stop().await;
}

const RESOURCE_ID: &str = "6e1f3c2a-5b4d-4e8f-9a0b-1c2d3e4f5a6b";
const TENANT_ID: &str = "c70d068c-2f32-484d-9455-73070cd5aadd";
const CLIENT_ID: &str = "07474a86-625a-452f-977b-db4e13f21260";

impl Emulator {
    /// A data-plane request signed with the access key, as the SDKs sign it: the assignments,
    /// which no SDK here makes.
    async fn signed(&self, method: &str, path_and_query: &str, body: &Value) -> (u16, Value) {
        let key = acs_client::AccessKey::from_base64(ACCESS_KEY).expect("access key");
        let url = url::Url::parse(&format!("https://localhost:{}{path_and_query}", self.port))
            .expect("URL");
        let body = body.to_string();
        let signature = acs_client::signing::sign_request(
            &key,
            method,
            &url,
            body.as_bytes(),
            std::time::SystemTime::now(),
        );
        let response = self
            .admin
            .request(method.parse().expect("method"), url)
            .header("x-ms-date", signature.x_ms_date)
            .header("x-ms-content-sha256", signature.x_ms_content_sha256)
            .header("authorization", signature.authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e}"));
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json)
    }
}

/// The claims of an emulator token (base64url JSON payload).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT");
    serde_json::from_slice(&B64URL.decode(payload).expect("base64url")).expect("JSON claims")
}

/// `@azure/communication-common` 2.5.0's `EntraTokenCredential`, unmodified, through both
/// exchanges: a Teams Phone extension user and an Entra ID user with assignments get ACS tokens
/// of their identities that verify and expire with their Entra tokens, each after exactly one
/// request (the second `getToken` is the SDK's cache), and a user without an assignment is
/// refused with the emulator's 403.
#[tokio::test]
async fn js_sdk_entra_token_credential_exchanges_both_ways_over_tls() {
    let sdks = sdks();
    let tls = TestTls::generate();
    let emulator = Emulator::start_with(&tls, &["--resource-id", RESOURCE_ID]).await;
    let (phone_user, entra_user, stranger) = (
        "b27b64b9-39d2-44a3-869d-67700b74e805",
        "fd63f3cb-3731-4d15-8e47-9d062aba58c5",
        "350adb03-7be9-4846-b078-35adb0d0e119",
    );
    let assigned = emulator
        .signed(
            "PUT",
            &format!(
                "/access/teamsExtension/tenants/{TENANT_ID}/assignments/{phone_user}?api-version=2025-06-30"
            ),
            &json!({"principalType": "user", "clientIds": [CLIENT_ID]}),
        )
        .await;
    assert_eq!(assigned.0, 201, "{}", assigned.1);
    let assigned = emulator
        .signed(
            "PUT",
            &format!("/access/entra/assignments/{entra_user}?api-version=2025-03-02-preview"),
            &json!({"tenantId": TENANT_ID, "principalType": "user", "clientIds": [CLIENT_ID]}),
        )
        .await;
    assert_eq!(assigned.0, 201, "{}", assigned.1);
    let user = |object: &str, audience: Option<&str>| {
        let mut spec = json!({"appId": CLIENT_ID, "userId": object, "tenantId": TENANT_ID});
        if let Some(audience) = audience {
            spec["audience"] = audience.into();
        }
        emulator.teams_user_token(spec)
    };
    let clients = Some("https://communication.azure.com/clients");
    let phone = user(phone_user, None).await;
    let entra = user(entra_user, clients).await;
    let unassigned = user(stranger, clients).await;
    let tokens = json!({
        "teamsExtension": phone["token"],
        "clients": entra["token"],
        "unassigned": unassigned["token"],
    });
    let env = vec![
        ("NODE_EXTRA_CA_CERTS", tls.ca_path().into()),
        ("SDK_JS_DIR", sdks.js_dir.clone().into()),
        (
            "ACS_RESOURCE_ENDPOINT",
            format!("https://localhost:{}", emulator.port).into(),
        ),
        ("ENTRA_TOKENS", tokens.to_string().into()),
    ];
    let mut run = Script::spawn(
        "js entra",
        &emulator,
        Path::new("node"),
        &[repo_root().join("tests/sdk/entra_exchange.mjs").into()],
        &env,
    );
    let cases = [
        (
            "teams_extension",
            &phone,
            format!("acs:{RESOURCE_ID}_{TENANT_ID}_{phone_user}"),
            "https://auth.msft.communication.azure.com/TeamsExtension.ManageCalls",
        ),
        (
            "entra",
            &entra,
            format!("acs:{RESOURCE_ID}_wf_{TENANT_ID}_{entra_user}"),
            "https://communication.azure.com/clients/.default",
        ),
    ];
    for (name, entra_token, skypeid, scope) in cases {
        let step = run.next(name).await;
        let token = string(&step, "token");
        assert_eq!(emulator.reason(&token).await, "ok", "{name}: verifies");
        let claims = claims_of(&token);
        assert_eq!(claims["skypeid"], skypeid, "{name}: the user's identity");
        let entra_exp = jiff::Timestamp::from_str(entra_token["expiresOn"].as_str().unwrap())
            .unwrap()
            .as_second();
        assert_eq!(
            claims["exp"], entra_exp,
            "{name}: expires with the Entra token"
        );
        assert_eq!(
            step["expiresOnTimestamp"],
            entra_exp * 1000,
            "{name}: the SDK read the expiry"
        );
        assert_eq!(
            step["scopes"],
            json!([scope]),
            "{name}: {}",
            redacted(&step)
        );
        run.ack().await;
    }
    let step = run.next("unassigned_rejected").await;
    let message = string(&step, "message");
    assert!(
        message.contains("Status: 403") && message.contains("Forbidden"),
        "{}",
        redacted(&step)
    );
    run.ack().await;
    run.next("done").await;
    run.finish(true).await;
    assert!(
        emulator.identities().await.is_empty(),
        "no ACS identity made"
    );
    assert_eq!(
        emulator.counts().await,
        json!({
            "upsertTeamsExtensionAssignment": {"201": 1},
            "upsertEntraAssignment": {"201": 1},
            "exchangeTeamsExtensionToken": {"200": 1},
            "exchangeEntraToken": {"200": 1, "403": 1},
        }),
        "one request per exchange: the SDK's cache serves the second getToken"
    );
    emulator.stop().await;
}

#[test]
fn access_key_is_base64_of_the_documented_text() {
    assert_eq!(
        B64.decode(ACCESS_KEY).unwrap(),
        b"sdk-compat-test-key-0123456789abcdef"
    );
}

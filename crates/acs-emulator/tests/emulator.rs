//! The ACS emulator over real HTTP: every answer path of the data plane, the admin view after
//! each step, faults, throttling, TLS, and the `acs-emulator` binary itself. Everything binds
//! 127.0.0.1 and every wait is bounded.

use acs_client::model::SUPPORTED_API_VERSIONS;
use acs_client::{AccessKey, signing};
use acs_emulator::testing::test_ca;
use acs_emulator::testing::{Admin, TEST_KEY as KEY, start_emulator};
use acs_emulator::{EmulatorConfig, EmulatorHandle, ThrottleConfig};
use base64::Engine;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

const V: &str = "2023-10-01";
const WAIT: Duration = Duration::from_secs(10);

struct Emulator {
    handle: EmulatorHandle,
    http: reqwest::Client,
    admin: Admin,
    key: AccessKey,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

impl Answer {
    fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or_default()
    }

    fn error_message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }
}

fn key() -> AccessKey {
    AccessKey::from_base64(KEY).unwrap()
}

async fn start(configure: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let handle = start_emulator(configure).await;
    Emulator {
        admin: Admin::new(&handle, None),
        handle,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        key: key(),
    }
}

impl Emulator {
    fn url(&self, path_and_query: &str) -> Url {
        self.handle.endpoint().join(path_and_query).unwrap()
    }

    /// A request signed as the SDKs sign it.
    async fn call(&self, method: &str, path_and_query: &str, body: &str) -> Answer {
        self.call_as(&self.key, SystemTime::now(), method, path_and_query, body)
            .await
    }

    async fn call_as(
        &self,
        key: &AccessKey,
        at: SystemTime,
        method: &str,
        path_and_query: &str,
        body: &str,
    ) -> Answer {
        let url = self.url(path_and_query);
        let signature = signing::sign_request(key, method, &url, body.as_bytes(), at);
        let request = self
            .http
            .request(method.parse().unwrap(), url)
            .header("x-ms-date", signature.x_ms_date)
            .header("x-ms-content-sha256", signature.x_ms_content_sha256)
            .header("authorization", signature.authorization)
            .header("x-ms-client-request-id", "3f6b2c1e-test")
            .header("content-type", "application/json")
            .body(body.to_string());
        answer(request.send().await.unwrap()).await
    }

    async fn create(&self) -> String {
        let created = self
            .call("POST", &format!("/identities?api-version={V}"), "")
            .await;
        assert_eq!(created.status, 201, "{}", created.json);
        created.json["identity"]["id"].as_str().unwrap().to_string()
    }

    async fn issue(&self, id: &str, body: &str) -> Answer {
        self.call("POST", &issue_path(id, V), body).await
    }

    async fn admin_get(&self, path: &str) -> Value {
        self.admin.get(path).await
    }

    async fn admin_send(&self, method: &str, path: &str, body: Value) -> Answer {
        let request = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .json(&body);
        answer(request.send().await.unwrap()).await
    }

    async fn identity_view(&self, id: &str) -> Value {
        self.admin.identity(id).await.unwrap_or(Value::Null)
    }

    async fn verdict(&self, token: &str) -> String {
        let (valid, reason) = self.admin.verify(token).await;
        assert_eq!(valid, reason == "ok");
        reason
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        headers,
        json,
    }
}

fn encoded(id: &str) -> String {
    id.replace(':', "%3A")
}

fn issue_path(id: &str, version: &str) -> String {
    format!(
        "/identities/{}/:issueAccessToken?api-version={version}",
        encoded(id)
    )
}

fn revoke_path(id: &str) -> String {
    format!(
        "/identities/{}/:revokeAccessTokens?api-version={V}",
        encoded(id)
    )
}

fn delete_path(id: &str) -> String {
    format!("/identities/{}?api-version={V}", encoded(id))
}

/// The token payload as Python's SDK reads it: standard alphabet, `==` appended.
fn python_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let padded = format!("{payload}{}", "=".repeat((4 - payload.len() % 4) % 4));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(padded)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn identity_lifecycle_as_the_service_answers_it() {
    let emulator = start(|_| {}).await;

    let created = emulator
        .call("POST", &format!("/identities?api-version={V}"), "")
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.header("content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(created.header("x-ms-client-request-id"), "3f6b2c1e-test");
    assert!(created.header("api-supported-versions").contains(V));
    assert!(!created.header("ms-cv").is_empty());
    let id = created.json["identity"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("8:acs:"), "{id}");
    assert!(created.json.get("accessToken").is_none());
    assert_eq!(
        emulator.identity_view(&id).await,
        json!({"id": id, "deleted": false, "tokensIssued": 0, "revocations": 0})
    );

    let issued = emulator.issue(&id, r#"{"scopes": ["chat"]}"#).await;
    assert_eq!(issued.status, 200, "{}", issued.json);
    let first = issued.json["token"].as_str().unwrap().to_string();
    assert_eq!(emulator.verdict(&first).await, "ok");
    assert_eq!(emulator.identity_view(&id).await["tokensIssued"], 1);

    let revoked = emulator.call("POST", &revoke_path(&id), "").await;
    assert_eq!(revoked.status, 204);
    assert_eq!(revoked.json, Value::Null);
    assert_eq!(emulator.verdict(&first).await, "revoked");
    assert_eq!(emulator.identity_view(&id).await["revocations"], 1);

    let second = emulator.issue(&id, r#"{"scopes":["voip"]}"#).await;
    let second = second.json["token"].as_str().unwrap().to_string();
    assert_eq!(emulator.verdict(&second).await, "ok");
    assert_eq!(emulator.verdict(&first).await, "revoked");

    let deleted = emulator.call("DELETE", &delete_path(&id), "").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(emulator.verdict(&second).await, "deleted");
    let view = emulator.identity_view(&id).await;
    assert_eq!(view["deleted"], true);
    assert_eq!(view["tokensIssued"], 2);

    for gone in [
        emulator.issue(&id, r#"{"scopes":["chat"]}"#).await,
        emulator.call("POST", &revoke_path(&id), "").await,
        emulator.call("DELETE", &delete_path(&id), "").await,
    ] {
        assert_eq!(gone.status, 404);
        assert_eq!(gone.error_code(), "IdentityNotFound");
        assert_eq!(gone.header("content-type"), "application/json");
    }

    let stats = emulator.admin_get("/admin/stats").await;
    assert_eq!(stats["operations"]["createIdentity"]["201"], 1);
    assert_eq!(stats["operations"]["issueToken"]["200"], 2);
    assert_eq!(stats["operations"]["issueToken"]["404"], 1);
    assert_eq!(stats["operations"]["revokeTokens"]["204"], 1);
    assert_eq!(stats["operations"]["deleteIdentity"]["204"], 1);
    assert_eq!(stats["total"], 8);
    emulator.handle.shutdown().await;
}

#[tokio::test]
async fn create_with_token_returns_a_token_the_sdks_can_read() {
    let emulator = start(|_| {}).await;
    let created = emulator
        .call(
            "POST",
            &format!("/identities?api-version={V}"),
            r#"{"createTokenWithScopes": ["chat", "voip"], "expiresInMinutes": 60}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let id = created.json["identity"]["id"].as_str().unwrap();
    let token = created.json["accessToken"]["token"].as_str().unwrap();
    let expires_on = created.json["accessToken"]["expiresOn"].as_str().unwrap();

    assert!(token.is_ascii());
    let claims = python_claims(token);
    assert_eq!(claims["acsScope"], "chat,voip");
    assert_eq!(format!("8:{}", claims["skypeid"].as_str().unwrap()), id);
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert!((3600..=3601).contains(&(exp - iat)), "{claims}");
    assert!(
        expires_on.ends_with("+00:00") && expires_on.contains('.'),
        "{expires_on}"
    );
    let parsed: jiff::Timestamp = expires_on.parse().unwrap();
    assert_eq!(parsed.as_second(), exp);

    assert_eq!(emulator.verdict(token).await, "ok");
    let stats = emulator.admin_get("/admin/stats").await;
    assert_eq!(stats["operations"]["createIdentityWithToken"]["201"], 1);
}

#[tokio::test]
async fn every_supported_api_version_serves_every_operation() {
    let emulator = start(|_| {}).await;
    for version in SUPPORTED_API_VERSIONS {
        let created = emulator
            .call(
                "POST",
                &format!("/identities?api-version={version}"),
                r#"{"createTokenWithScopes":["chat"]}"#,
            )
            .await;
        assert_eq!(created.status, 201, "{version}: {}", created.json);
        let id = created.json["identity"]["id"].as_str().unwrap();
        let issued = emulator
            .call("POST", &issue_path(id, version), r#"{"scopes":["voip"]}"#)
            .await;
        assert_eq!(issued.status, 200, "{version}: {}", issued.json);
        let enc = encoded(id);
        let revoke = format!("/identities/{enc}/:revokeAccessTokens?api-version={version}");
        assert_eq!(emulator.call("POST", &revoke, "").await.status, 204);
        let delete = format!("/identities/{enc}?api-version={version}");
        assert_eq!(emulator.call("DELETE", &delete, "").await.status, 204);
    }
}

#[tokio::test]
async fn lifetimes_outside_60_to_1440_minutes_get_the_recorded_error() {
    let emulator = start(|_| {}).await;
    let id = emulator.create().await;
    for minutes in [59, 1441] {
        let expected = json!({"error": {
            "code": "ValidationError",
            "message": format!("ExpiresInMinutes value {minutes} is invalid. Value must be within the [60, 1440] interval."),
            "target": "ExpiresInMinutes",
        }});
        let issue = emulator
            .issue(
                &id,
                &format!(r#"{{"scopes":["chat"],"expiresInMinutes":{minutes}}}"#),
            )
            .await;
        assert_eq!((issue.status, &issue.json), (400, &expected));
        let create = emulator
            .call(
                "POST",
                &format!("/identities?api-version={V}"),
                &format!(r#"{{"createTokenWithScopes":["chat"],"expiresInMinutes":{minutes}}}"#),
            )
            .await;
        assert_eq!((create.status, &create.json), (400, &expected));
    }
    for minutes in [60, 1440] {
        let ok = emulator
            .issue(
                &id,
                &format!(r#"{{"scopes":["chat"],"expiresInMinutes":{minutes}}}"#),
            )
            .await;
        assert_eq!(ok.status, 200);
    }
    // Only the valid identity exists: invalid creates created nothing.
    let all = emulator.admin_get("/admin/identities").await;
    assert_eq!(all["identities"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn scope_and_field_rules_depend_on_the_api_version() {
    let emulator = start(|_| {}).await;
    let id = emulator.create().await;
    let cases = [
        (V, r#"{"scopes":["video"]}"#, "Scopes"),
        (V, r#"{"scopes":[]}"#, "Scopes"),
        (V, r#"{"scopes":null}"#, "Scopes"),
        (V, "", "Scopes"),
        ("2023-08-01", r#"{"scopes":["chat.join"]}"#, "Scopes"),
        (
            "2022-06-01",
            r#"{"scopes":["chat"],"expiresInMinutes":60}"#,
            "ExpiresInMinutes",
        ),
    ];
    for (version, body, target) in cases {
        let answer = emulator.call("POST", &issue_path(&id, version), body).await;
        assert_eq!(answer.status, 400, "{version} {body}");
        assert_eq!(answer.error_code(), "ValidationError", "{version} {body}");
        assert_eq!(answer.json["error"]["target"], target, "{version} {body}");
    }
    let join = emulator
        .issue(
            &id,
            r#"{"scopes":["chat.join","chat.join.limited","voip.join"]}"#,
        )
        .await;
    assert_eq!(join.status, 200);
    let unknown_on_create = emulator
        .call(
            "POST",
            &format!("/identities?api-version={V}"),
            r#"{"createTokenWithScopes":["everything"]}"#,
        )
        .await;
    assert_eq!(unknown_on_create.status, 400);
    assert_eq!(
        unknown_on_create.json["error"]["target"],
        "CreateTokenWithScopes"
    );
}

#[tokio::test]
async fn null_fields_read_as_absent_and_malformed_json_is_refused() {
    let emulator = start(|_| {}).await;
    // What azure-communication-identity 1.3.x sent.
    let create = emulator
        .call(
            "POST",
            "/identities?api-version=2022-10-01",
            r#"{"createTokenWithScopes":null,"expiresInMinutes":null}"#,
        )
        .await;
    assert_eq!(create.status, 201);
    assert!(create.json.get("accessToken").is_none());
    let id = create.json["identity"]["id"].as_str().unwrap();
    let issue = emulator
        .call(
            "POST",
            &issue_path(id, "2022-10-01"),
            r#"{"scopes":["chat"],"expiresInMinutes":null}"#,
        )
        .await;
    assert_eq!(issue.status, 200);

    for body in [
        "{",
        r#"{"scopes":"chat"}"#,
        "[]",
        r#"{"scopes":["chat"],"expiresInMinutes":"60"}"#,
    ] {
        let bad = emulator.issue(id, body).await;
        assert_eq!(bad.status, 400, "{body}");
        assert_eq!(bad.header("content-type"), "application/json");
        assert!(!bad.error_code().is_empty());
    }
}

#[tokio::test]
async fn unsupported_or_missing_api_version_is_a_bad_request() {
    // The retired version is an unsupported one once it is switched off.
    let emulator = start(|c| c.retired_api_versions = false).await;
    let old = emulator
        .call("POST", "/identities?api-version=2020-07-20-preview2", "")
        .await;
    assert_eq!(old.status, 400);
    assert_eq!(old.error_code(), "UnsupportedApiVersion");
    let endpoint = emulator.handle.endpoint().as_str().trim_end_matches('/');
    assert_eq!(
        old.error_message(),
        format!(
            "The HTTP resource that matches the request URI '{endpoint}/identities' does not support the API version '2020-07-20-preview2'."
        )
    );
    let missing = emulator.call("POST", "/identities", "").await;
    assert_eq!(missing.status, 400);
    assert!(
        emulator.admin_get("/admin/identities").await["identities"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_retired_preview_refuses_its_create_and_creates_nothing() {
    let emulator = start(|c| c.refused_api_versions = vec!["2025-03-02-preview".into()]).await;
    let body = r#"{"customId":"d6c1f0a4-retired","createTokenWithScopes":["chat"]}"#;
    let refused = emulator
        .call("POST", "/identities?api-version=2025-03-02-preview", body)
        .await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.error_code(), "UnsupportedApiVersion");
    assert!(refused.error_message().contains("2025-03-02-preview"));
    let identities = emulator.admin_get("/admin/identities").await;
    assert!(identities["identities"].as_array().unwrap().is_empty());
    // Every other version goes on serving, the retired 2020 one included (which answered
    // its create 200).
    for (version, status) in [
        ("2023-10-01", 201),
        ("2026-09-23", 201),
        ("2020-07-20-preview2", 200),
    ] {
        let created = emulator
            .call("POST", &format!("/identities?api-version={version}"), "")
            .await;
        assert_eq!(created.status, status, "{version}: {}", created.json);
    }
}

#[tokio::test]
async fn ids_work_percent_encoded_and_raw() {
    let emulator = start(|_| {}).await;
    let id = emulator.create().await;
    let raw = emulator
        .call(
            "POST",
            &format!("/identities/{id}/:issueAccessToken?api-version={V}"),
            r#"{"scopes":["chat"]}"#,
        )
        .await;
    assert_eq!(raw.status, 200, "{}", raw.json);
    let encoded = emulator.issue(&id, r#"{"scopes":["chat"]}"#).await;
    assert_eq!(encoded.status, 200);
    let raw_delete = emulator
        .call("DELETE", &format!("/identities/{id}?api-version={V}"), "")
        .await;
    assert_eq!(raw_delete.status, 204);
    assert_eq!(emulator.identity_view(&id).await["tokensIssued"], 2);
}

#[tokio::test]
async fn unknown_identities_are_not_found() {
    let emulator = start(|_| {}).await;
    let stranger =
        "8:acs:00000000-0000-0000-0000-000000000000_00000000-0000-0000-0000-000000000001";
    for answer in [
        emulator.issue(stranger, r#"{"scopes":["chat"]}"#).await,
        emulator.call("POST", &revoke_path(stranger), "").await,
        emulator.call("DELETE", &delete_path(stranger), "").await,
    ] {
        assert_eq!(answer.status, 404);
        assert_eq!(answer.error_code(), "IdentityNotFound");
    }
}

#[tokio::test]
async fn unauthenticated_requests_are_denied() {
    let emulator = start(|_| {}).await;
    let path = format!("/identities?api-version={V}");

    let wrong_key = AccessKey::from_base64("d3Jvbmcta2V5").unwrap();
    let denied = emulator
        .call_as(&wrong_key, SystemTime::now(), "POST", &path, "")
        .await;
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.json,
        json!({"error": {"code": "Denied", "message": "Denied by the resource provider."}})
    );

    let skewed = SystemTime::now() - Duration::from_secs(16 * 60);
    let late = emulator
        .call_as(&emulator.key, skewed, "POST", &path, "")
        .await;
    assert_eq!(late.status, 401);
    assert_eq!(late.error_code(), "Denied");
    let slightly = SystemTime::now() - Duration::from_secs(14 * 60);
    let fine = emulator
        .call_as(&emulator.key, slightly, "POST", &path, "")
        .await;
    assert_eq!(fine.status, 201);

    // Signed for one body, sent with another.
    let url = emulator.url(&path);
    let signature = signing::sign_request(&emulator.key, "POST", &url, b"", SystemTime::now());
    let tampered = emulator
        .http
        .post(url.clone())
        .header("x-ms-date", &signature.x_ms_date)
        .header("x-ms-content-sha256", &signature.x_ms_content_sha256)
        .header("authorization", &signature.authorization)
        .body(r#"{"createTokenWithScopes":["chat"]}"#)
        .send()
        .await
        .unwrap();
    let tampered = answer(tampered).await;
    assert_eq!(tampered.status, 401);
    assert_eq!(
        tampered.error_message(),
        "Request 'x-ms-content-sha256' differs from generated content hash."
    );

    let unsigned = answer(emulator.http.post(url.clone()).send().await.unwrap()).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(unsigned.error_code(), "Denied");
    let no_date = emulator
        .http
        .post(url)
        .header("x-ms-content-sha256", &signature.x_ms_content_sha256)
        .header("authorization", &signature.authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(answer(no_date).await.status, 401);

    let identities = emulator.admin_get("/admin/identities").await;
    assert_eq!(identities["identities"].as_array().unwrap().len(), 1);
    let stats = emulator.admin_get("/admin/stats").await;
    assert_eq!(stats["operations"]["createIdentity"]["401"], 4);
    assert_eq!(stats["operations"]["createIdentityWithToken"]["401"], 1);
}

const PREVIEW: &str = "2025-03-02-preview";

#[tokio::test]
async fn preview_create_with_a_custom_id_returns_the_same_identity() {
    let emulator = start(|_| {}).await;
    for version in ["2025-03-02-preview", "2025-04-01-preview"] {
        let custom_id = format!("uid-{version}");
        let body = json!({"customId": custom_id, "createTokenWithScopes": ["chat"], "expiresInMinutes": 60})
            .to_string();
        let path = format!("/identities?api-version={version}");
        let first = emulator.call("POST", &path, &body).await;
        assert_eq!(first.status, 201, "{version}: {}", first.json);
        let second = emulator.call("POST", &path, &body).await;
        assert_eq!(second.status, 201, "{version}: {}", second.json);
        let id = first.json["identity"]["id"].as_str().unwrap();
        assert_eq!(second.json["identity"]["id"], id);
        assert_eq!(second.json["identity"]["customId"], custom_id.as_str());
        let issued_at = second.json["identity"]["lastTokenIssuedAt"]
            .as_str()
            .unwrap();
        assert!(issued_at.ends_with("+00:00"), "{issued_at}");
        assert!(issued_at.parse::<jiff::Timestamp>().is_ok(), "{issued_at}");
        // Each call got its own valid token, counted against the one identity.
        let tokens = [&first, &second].map(|a| a.json["accessToken"]["token"].clone());
        assert_ne!(tokens[0], tokens[1]);
        for token in &tokens {
            assert_eq!(emulator.verdict(token.as_str().unwrap()).await, "ok");
        }
        let view = emulator.identity_view(id).await;
        assert_eq!(view["customId"], custom_id.as_str());
        assert_eq!(view["tokensIssued"], 2);
    }
    assert_eq!(emulator.admin.live_identities().await.len(), 2);
    let stats = emulator.admin_get("/admin/stats").await;
    assert_eq!(stats["operations"]["createIdentityWithToken"]["201"], 4);

    // A deleted identity gives its customId up: the next create makes a new one.
    let path = format!("/identities?api-version={PREVIEW}");
    let body = r#"{"customId":"carol"}"#;
    let carol = emulator.call("POST", &path, body).await;
    assert!(carol.json.get("accessToken").is_none());
    assert!(carol.json["identity"].get("lastTokenIssuedAt").is_none());
    let carol = carol.json["identity"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        emulator
            .call("DELETE", &delete_path(&carol), "")
            .await
            .status,
        204
    );
    let again = emulator.call("POST", &path, body).await;
    assert_eq!(again.status, 201);
    assert_ne!(again.json["identity"]["id"], carol.as_str());

    let empty = emulator.call("POST", &path, r#"{"customId":""}"#).await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json["error"]["target"], "CustomId");
}

#[tokio::test]
async fn ga_versions_ignore_a_custom_id() {
    let emulator = start(|_| {}).await;
    let path = format!("/identities?api-version={V}");
    let body = r#"{"customId":"alice"}"#;
    let first = emulator.call("POST", &path, body).await;
    let second = emulator.call("POST", &path, body).await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_ne!(first.json["identity"]["id"], second.json["identity"]["id"]);
    assert_eq!(
        first.json["identity"].as_object().unwrap().len(),
        1,
        "GA answers carry the id only: {}",
        first.json
    );
    let live = emulator.admin.live_identities().await;
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|i| i.get("customId").is_none()));
}

#[tokio::test]
async fn an_after_commit_fault_fails_the_answer_of_a_request_that_took_effect() {
    let emulator = start(|_| {}).await;
    let added = emulator
        .admin_send(
            "POST",
            "/admin/faults",
            json!({"operation": "createIdentity", "status": 503, "afterCommit": true}),
        )
        .await;
    assert_eq!(added.status, 201);
    assert_eq!(added.json["faults"][0]["afterCommit"], true);

    let path = format!("/identities?api-version={V}");
    let body = r#"{"createTokenWithScopes":["chat"]}"#;
    let failed = emulator.call("POST", &path, body).await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.error_code(), "ServiceUnavailable");
    // The identity exists and its token was counted, though the client never learnt its id.
    let live = emulator.admin.live_identities().await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["tokensIssued"], 1);
    // A plain retry leaks it: a second identity.
    assert_eq!(emulator.call("POST", &path, body).await.status, 201);
    assert_eq!(emulator.admin.live_identities().await.len(), 2);

    // A delay after the commit outlasts a client's timeout; the change is kept all the same.
    emulator
        .admin_send(
            "POST",
            "/admin/faults",
            json!({"operation": "createIdentity", "delayMs": 2000, "afterCommit": true}),
        )
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = emulator.url(&path);
    let signed = signing::sign_request(&emulator.key, "POST", &url, b"", SystemTime::now());
    let timed_out = impatient
        .post(url)
        .header("x-ms-date", signed.x_ms_date)
        .header("x-ms-content-sha256", signed.x_ms_content_sha256)
        .header("authorization", signed.authorization)
        .send()
        .await
        .unwrap_err();
    assert!(timed_out.is_timeout(), "{timed_out}");
    assert_eq!(emulator.admin.live_identities().await.len(), 3);

    // A request the emulator refuses is not applied; the fault still replaces its answer.
    emulator
        .admin_send(
            "POST",
            "/admin/faults",
            json!({"operation": "createIdentity", "status": 500, "afterCommit": true}),
        )
        .await;
    let bad = emulator
        .call("POST", &path, r#"{"createTokenWithScopes":["video"]}"#)
        .await;
    assert_eq!(bad.status, 500);
    assert_eq!(emulator.admin.live_identities().await.len(), 3);
    let stats = emulator.admin_get("/admin/stats").await;
    assert_eq!(stats["operations"]["createIdentityWithToken"]["503"], 1);
    assert_eq!(stats["operations"]["createIdentityWithToken"]["500"], 1);
}

#[tokio::test]
async fn injected_faults_fail_or_delay_the_next_requests() {
    let emulator = start(|_| {}).await;
    let id = emulator.create().await;
    let added = emulator
        .admin_send(
            "POST",
            "/admin/faults",
            json!({"operation": "issueToken", "count": 2, "status": 503, "retryAfterSeconds": 2}),
        )
        .await;
    assert_eq!(added.status, 201);
    assert_eq!(added.json["faults"][0]["count"], 2);

    // Other operations are untouched.
    assert_eq!(
        emulator.call("POST", &revoke_path(&id), "").await.status,
        204
    );
    for _ in 0..2 {
        let failed = emulator.issue(&id, r#"{"scopes":["chat"]}"#).await;
        assert_eq!(failed.status, 503);
        assert_eq!(failed.header("retry-after"), "2");
        assert_eq!(failed.error_code(), "ServiceUnavailable");
    }
    assert_eq!(
        emulator.issue(&id, r#"{"scopes":["chat"]}"#).await.status,
        200
    );
    assert_eq!(emulator.identity_view(&id).await["tokensIssued"], 1);

    let delay = Duration::from_millis(400);
    emulator
        .admin_send(
            "POST",
            "/admin/faults",
            json!({"operation": null, "delayMs": 400}),
        )
        .await;
    let started = Instant::now();
    let delayed = emulator.issue(&id, r#"{"scopes":["chat"]}"#).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(delayed.status, 200);

    emulator
        .admin_send("POST", "/admin/faults", json!({"count": 5, "status": 500}))
        .await;
    assert_eq!(
        emulator.admin_get("/admin/faults").await["faults"][0]["count"],
        5
    );
    let cleared = emulator
        .admin_send("DELETE", "/admin/faults", Value::Null)
        .await;
    assert_eq!(cleared.status, 204);
    assert_eq!(
        emulator.admin_get("/admin/faults").await,
        json!({"faults": []})
    );
    assert_eq!(
        emulator.issue(&id, r#"{"scopes":["chat"]}"#).await.status,
        200
    );

    let invalid = emulator
        .admin_send("POST", "/admin/faults", json!({"status": 200}))
        .await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.error_code(), "BadRequest");

    let stats = emulator.admin_get("/admin/stats").await;
    assert_eq!(stats["operations"]["issueToken"]["503"], 2);
}

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after_until_reconfigured() {
    let emulator = start(|config| {
        config.throttle = ThrottleConfig::parse("issueToken=2").unwrap();
    })
    .await;
    let id = emulator.create().await;
    for _ in 0..2 {
        assert_eq!(
            emulator.issue(&id, r#"{"scopes":["chat"]}"#).await.status,
            200
        );
    }
    let throttled = emulator.issue(&id, r#"{"scopes":["chat"]}"#).await;
    assert_eq!(throttled.status, 429);
    let retry_after: u64 = throttled.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(throttled.error_code(), "TooManyRequests");
    // Throttling is per operation.
    assert_eq!(
        emulator.call("POST", &revoke_path(&id), "").await.status,
        204
    );

    let config = emulator
        .admin_send("POST", "/admin/throttle", json!({"enabled": false}))
        .await;
    assert_eq!(config.status, 200);
    assert_eq!(config.json["enabled"], false);
    assert_eq!(
        emulator.issue(&id, r#"{"scopes":["chat"]}"#).await.status,
        200
    );
    let config = emulator
        .admin_send(
            "POST",
            "/admin/throttle",
            json!({"limits": {"issueToken": 0}}),
        )
        .await;
    assert_eq!(config.json["limits"]["issueToken"], 0);
    assert_eq!(config.json["limits"]["deleteIdentity"], 500);
    assert_eq!(
        emulator.issue(&id, r#"{"scopes":["chat"]}"#).await.status,
        429
    );
    let bad = emulator
        .admin_send("POST", "/admin/throttle", json!({"limits": {"nope": 1}}))
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(emulator.identity_view(&id).await["tokensIssued"], 3);
}

#[tokio::test]
async fn token_lifetime_override_makes_tokens_expire_in_seconds() {
    let emulator = start(|config| config.token_lifetime = Some(Duration::from_secs(1))).await;
    let id = emulator.create().await;
    let issued = emulator
        .issue(&id, r#"{"scopes":["chat"],"expiresInMinutes":1440}"#)
        .await;
    let token = issued.json["token"].as_str().unwrap();
    let claims = python_claims(token);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((1..=2).contains(&lifetime), "{claims}");
    // Bounded poll: the token must turn expired within a few seconds.
    let deadline = Instant::now() + WAIT;
    loop {
        if emulator.verdict(token).await == "expired" {
            break;
        }
        assert!(Instant::now() < deadline, "token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn admin_answers_malformed_and_foreign_tokens() {
    let emulator = start(|_| {}).await;
    assert_eq!(emulator.verdict("not-a-token").await, "malformed");
    let other = start(|_| {}).await;
    let id = other.create().await;
    let issued = other.issue(&id, r#"{"scopes":["chat"]}"#).await;
    let foreign = issued.json["token"].as_str().unwrap();
    assert_eq!(emulator.verdict(foreign).await, "unknown");
    let missing = emulator
        .admin_send("POST", "/admin/tokens:verify", json!({}))
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        emulator.admin_get("/admin/health").await,
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn seeded_identities_hold_backdated_tokens_and_count_no_calls() {
    let emulator = start(|_| {}).await;
    let issued_at = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let seeded = emulator
        .admin_send(
            "POST",
            "/admin/identities:seed",
            json!({"identities": [
                {"scopes": ["chat", "voip"], "expiresInMinutes": 120, "issuedAt": issued_at},
                {"scopes": ["chat"]},
            ]}),
        )
        .await;
    assert_eq!(seeded.status, 201, "{}", seeded.json);
    let list = seeded.json["identities"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let first = &list[0];
    let token = first["token"].as_str().unwrap();
    assert_eq!(emulator.verdict(token).await, "ok");
    let claims = python_claims(token);
    assert_eq!(claims["iat"].as_u64(), Some(issued_at));
    assert_eq!(claims["exp"].as_u64(), Some(issued_at + 7200));
    // The identity is real: the data plane issues it more tokens.
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        emulator.issue(id, r#"{"scopes":["chat"]}"#).await.status,
        200
    );
    assert_eq!(emulator.identity_view(id).await["tokensIssued"], 2);
    // Admin requests are not data-plane calls: only the issue above counts.
    assert_eq!(emulator.admin_get("/admin/stats").await["total"], 1);
    // One bad entry creates nothing.
    let before = emulator.admin_get("/admin/identities").await["identities"]
        .as_array()
        .unwrap()
        .len();
    for bad in [
        json!({"identities": [{"scopes": ["chat"]}, {"scopes": ["nope"]}]}),
        json!({"identities": [{"scopes": ["chat"], "expiresInMinutes": 30}]}),
        json!({"identities": [{"scopes": ["chat"], "issuedAt": issued_at + 86_400}]}),
        json!({"identities": []}),
    ] {
        let refused = emulator
            .admin_send("POST", "/admin/identities:seed", bad)
            .await;
        assert_eq!(refused.status, 400, "{}", refused.json);
    }
    let after = emulator.admin_get("/admin/identities").await["identities"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}

#[tokio::test]
async fn unknown_routes_are_404_and_counted() {
    let emulator = start(|_| {}).await;
    let answer = emulator
        .call("GET", &format!("/identities?api-version={V}"), "")
        .await;
    assert_eq!(answer.status, 404);
    let stats = emulator.admin_get("/admin/stats").await;
    assert_eq!(stats["operations"]["unknown"]["404"], 1);
    let reset = emulator
        .admin_send("DELETE", "/admin/stats", Value::Null)
        .await;
    assert_eq!(reset.status, 204);
    assert_eq!(emulator.admin_get("/admin/stats").await["total"], 0);
}

#[tokio::test]
async fn serves_https_with_a_certificate_for_localhost() {
    let ca = test_ca();
    let mut emulator = start(|config| config.tls = Some(ca.server.clone())).await;
    let endpoint = emulator.handle.endpoint().clone();
    assert_eq!(endpoint.scheme(), "https");
    assert_eq!(endpoint.host_str(), Some("localhost"));
    let port = emulator.handle.local_addr().port();
    // Resolve localhost to the address we bound, whatever the system resolver says.
    emulator.http = reqwest::Client::builder()
        .timeout(WAIT)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", emulator.handle.local_addr())
        .build()
        .unwrap();
    emulator.admin = Admin::new(&emulator.handle, Some(&ca.ca_pem));
    let id = emulator.create().await;
    let issued = emulator.issue(&id, r#"{"scopes":["voip"]}"#).await;
    assert_eq!(issued.status, 200);
    assert_eq!(
        emulator.call("DELETE", &delete_path(&id), "").await.status,
        204
    );
    assert_eq!(emulator.identity_view(&id).await["deleted"], true);

    // A client that does not trust the CA cannot talk to it.
    let untrusting = reqwest::Client::builder()
        .timeout(WAIT)
        .resolve("localhost", emulator.handle.local_addr())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/admin/health");
    assert!(untrusting.get(url).send().await.is_err());
    emulator.handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let emulator = start(|_| {}).await;
    let addr = emulator.handle.local_addr();
    emulator.handle.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

mod binary {
    use super::*;
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::process::{Child, Command};

    /// Starts the real binary and reads its one stdout line.
    async fn launch(extra: &[&str]) -> (Child, String, BufReader<tokio::process::ChildStdout>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_acs-emulator"))
            .args(["--listen", "127.0.0.1:0", "--access-key", KEY])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(WAIT, stdout.read_line(&mut line))
            .await
            .expect("connection string line in time")
            .unwrap();
        (child, line, stdout)
    }

    async fn terminate(mut child: Child, mut stdout: BufReader<tokio::process::ChildStdout>) {
        let pid = child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("exit in time")
            .unwrap();
        assert_eq!(status.code(), Some(0));
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "", "stdout carries only the connection string line");
    }

    fn endpoint_of(line: &str) -> Url {
        let rest = line
            .trim_end()
            .strip_prefix("connection string: endpoint=")
            .unwrap_or_else(|| panic!("unexpected line: {line}"));
        let (endpoint, key) = rest.split_once(";accesskey=").unwrap();
        assert_eq!(key, KEY);
        Url::parse(endpoint).unwrap()
    }

    #[tokio::test]
    async fn prints_the_connection_string_serves_and_exits_0_on_sigterm() {
        let (child, line, stdout) = launch(&[]).await;
        let endpoint = endpoint_of(&line);
        assert_eq!(endpoint.scheme(), "http");
        assert_eq!(endpoint.host_str(), Some("127.0.0.1"));
        assert_ne!(endpoint.port(), Some(0));

        let url = endpoint
            .join(&format!("/identities?api-version={V}"))
            .unwrap();
        let signature = signing::sign_request(&key(), "POST", &url, b"", SystemTime::now());
        let created = reqwest::Client::new()
            .post(url)
            .header("x-ms-date", signature.x_ms_date)
            .header("x-ms-content-sha256", signature.x_ms_content_sha256)
            .header("authorization", signature.authorization)
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        terminate(child, stdout).await;
    }

    #[tokio::test]
    async fn serves_tls_from_pem_files() {
        let ca = test_ca();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert, &ca.server.cert_chain).unwrap();
        std::fs::write(&key_file, &ca.server.private_key).unwrap();
        let (child, line, stdout) = launch(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
            "--token-lifetime-seconds",
            "5",
        ])
        .await;
        let endpoint = endpoint_of(&line);
        assert_eq!(endpoint.scheme(), "https");
        assert_eq!(endpoint.host_str(), Some("localhost"));
        let port = endpoint.port().unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .timeout(WAIT)
            .build()
            .unwrap();
        let health = client
            .get(endpoint.join("/admin/health").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        terminate(child, stdout).await;
    }

    /// One identity as the load acknowledged it. `pending` is the one change sent but not
    /// answered when the emulator was killed: it may or may not have happened.
    #[derive(Debug, Clone, Default)]
    struct Known {
        custom_id: Option<String>,
        deleted: bool,
        revocations: u64,
        tokens: u64,
        pending: Option<&'static str>,
    }

    /// A token the emulator handed out, and how many revocations its identity had then.
    struct Issued {
        token: String,
        id: String,
        revocations_before: u64,
    }

    #[derive(Default)]
    struct Model {
        identities: std::collections::BTreeMap<String, Known>,
        tokens: Vec<Issued>,
        /// Creates sent but unanswered: that many unknown identities may exist.
        unanswered_creates: usize,
    }

    /// A signed data-plane request; `Err` when no answer came (the emulator died).
    async fn signed(
        http: &reqwest::Client,
        endpoint: &Url,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, Value), reqwest::Error> {
        let url = endpoint.join(path).unwrap();
        let signature =
            signing::sign_request(&key(), method, &url, body.as_bytes(), SystemTime::now());
        let response = http
            .request(method.parse().unwrap(), url)
            .header("x-ms-date", signature.x_ms_date)
            .header("x-ms-content-sha256", signature.x_ms_content_sha256)
            .header("authorization", signature.authorization)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Changes its own identities, one request at a time, until a request goes unanswered or
    /// `max_ops` are done; records what was acknowledged in `mine` and `tokens`.
    async fn worker(
        endpoint: Url,
        mut mine: Vec<(String, Known)>,
        seed: u64,
        max_ops: usize,
        acknowledged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> (Vec<(String, Known)>, Vec<Issued>, usize) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        let mut tokens = Vec::new();
        let preview = "2025-03-02-preview";
        for op in 0..max_ops {
            let live: Vec<usize> = (0..mine.len()).filter(|&i| !mine[i].1.deleted).collect();
            let roll: f64 = rng.random();
            if live.is_empty() || roll < 0.2 {
                let custom_id = (rng.random::<f64>() < 0.5).then(|| format!("u{seed}-{op}"));
                let body = match &custom_id {
                    Some(c) => json!({ "customId": c }).to_string(),
                    None => String::new(),
                };
                match signed(
                    &http,
                    &endpoint,
                    "POST",
                    &format!("/identities?api-version={preview}"),
                    &body,
                )
                .await
                {
                    Ok((201, json)) => {
                        let id = json["identity"]["id"].as_str().unwrap().to_string();
                        mine.push((
                            id,
                            Known {
                                custom_id,
                                ..Known::default()
                            },
                        ));
                    }
                    Ok((status, json)) => panic!("create answered {status}: {json}"),
                    Err(_) => return (mine, tokens, 1),
                }
            } else {
                let index = live[rng.random_range(0..live.len())];
                let id = mine[index].0.clone();
                let (method, path, body, kind) = if roll < 0.75 {
                    (
                        "POST",
                        issue_path(&id, V),
                        r#"{"scopes":["chat"]}"#,
                        "token",
                    )
                } else if roll < 0.9 {
                    ("POST", revoke_path(&id), "", "revoke")
                } else {
                    ("DELETE", delete_path(&id), "", "delete")
                };
                let known = &mut mine[index].1;
                match signed(&http, &endpoint, method, &path, body).await {
                    Ok((200, json)) if kind == "token" => {
                        known.tokens += 1;
                        tokens.push(Issued {
                            token: json["token"].as_str().unwrap().to_string(),
                            id,
                            revocations_before: known.revocations,
                        });
                    }
                    Ok((204, _)) if kind == "revoke" => known.revocations += 1,
                    Ok((204, _)) if kind == "delete" => known.deleted = true,
                    Ok((status, json)) => panic!("{kind} answered {status}: {json}"),
                    Err(_) => {
                        known.pending = Some(kind);
                        return (mine, tokens, 0);
                    }
                }
            }
            acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        (mine, tokens, 0)
    }

    /// Checks the emulator's admin view and every token's verdict against what was
    /// acknowledged, then takes what the emulator shows for the unanswered changes as known.
    async fn check_and_settle(endpoint: &Url, model: &mut Model) {
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        let listed: Value = http
            .get(endpoint.join("/admin/identities").unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let listed = listed["identities"].as_array().unwrap();
        let mut unknown = 0;
        for view in listed {
            let id = view["id"].as_str().unwrap().to_string();
            let deleted = view["deleted"].as_bool().unwrap();
            let revocations = view["revocations"].as_u64().unwrap();
            let tokens = view["tokensIssued"].as_u64().unwrap();
            let custom_id = view["customId"].as_str().map(str::to_string);
            let Some(known) = model.identities.get_mut(&id) else {
                // Made by a create that was never answered.
                unknown += 1;
                assert_eq!((deleted, revocations, tokens), (false, 0, 0), "{view}");
                model.identities.insert(
                    id,
                    Known {
                        custom_id,
                        ..Known::default()
                    },
                );
                continue;
            };
            assert_eq!(custom_id, known.custom_id, "{view}");
            let pending = known.pending.take();
            let may = |kind: &str| pending == Some(kind);
            assert!(
                deleted == known.deleted || (deleted && may("delete")),
                "acknowledged delete state lost: {view} vs {known:?}"
            );
            assert!(
                revocations == known.revocations
                    || (revocations == known.revocations + 1 && may("revoke")),
                "acknowledged revocations lost: {view} vs {known:?}"
            );
            assert!(
                tokens == known.tokens || (tokens == known.tokens + 1 && may("token")),
                "acknowledged tokens lost: {view} vs {known:?}"
            );
            known.deleted = deleted;
            known.revocations = revocations;
            known.tokens = tokens;
        }
        assert!(
            unknown <= model.unanswered_creates,
            "{unknown} identities nobody created"
        );
        model.unanswered_creates = 0;
        assert_eq!(
            listed.len(),
            model.identities.len(),
            "acknowledged identities lost"
        );
        for issued in &model.tokens {
            let known = &model.identities[&issued.id];
            let expected = if known.deleted {
                "deleted"
            } else if known.revocations > issued.revocations_before {
                "revoked"
            } else {
                "ok"
            };
            let verdict: Value = http
                .post(endpoint.join("/admin/tokens:verify").unwrap())
                .json(&json!({ "token": issued.token }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(verdict["reason"], expected, "token of {}", issued.id);
        }
    }

    #[tokio::test]
    async fn acknowledged_state_survives_sigkill_at_random_points() {
        use rand::Rng;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("state");
        let args = [
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--throttle",
            "off",
        ];
        let mut model = Model::default();
        let mut rng = rand::rng();
        let rounds = 4;
        for round in 0..rounds {
            let (mut child, line, _stdout) = launch(&args).await;
            let endpoint = endpoint_of(&line);
            check_and_settle(&endpoint, &mut model).await;

            // The load: four workers, each with its share of the live identities.
            let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut shares: Vec<Vec<(String, Known)>> = vec![Vec::new(); 4];
            let live: Vec<(String, Known)> = model
                .identities
                .iter()
                .filter(|(_, k)| !k.deleted)
                .map(|(id, k)| (id.clone(), k.clone()))
                .collect();
            for (i, entry) in live.into_iter().enumerate() {
                shares[i % 4].push(entry);
            }
            let workers: Vec<_> = shares
                .into_iter()
                .enumerate()
                .map(|(w, share)| {
                    tokio::spawn(worker(
                        endpoint.clone(),
                        share,
                        (round * 10 + w) as u64,
                        5_000,
                        acknowledged.clone(),
                    ))
                })
                .collect();
            // Let some load be acknowledged, then kill at a random moment in the middle of it.
            let started = Instant::now();
            while acknowledged.load(std::sync::atomic::Ordering::Relaxed) < 40 {
                assert!(started.elapsed() < WAIT, "the load did not get going");
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            let final_round = round == rounds - 1;
            let pid = child.id().unwrap().to_string();
            let signal = if final_round { "-TERM" } else { "-KILL" };
            let killed = Command::new("kill")
                .args([signal, &pid])
                .status()
                .await
                .unwrap();
            assert!(killed.success());
            tokio::time::timeout(WAIT, child.wait())
                .await
                .expect("the emulator ends in time")
                .unwrap();
            for worker in workers {
                let (mine, tokens, unanswered) = tokio::time::timeout(WAIT, worker)
                    .await
                    .expect("the worker stops once the emulator is gone")
                    .unwrap();
                for (id, known) in mine {
                    model.identities.insert(id, known);
                }
                model.tokens.extend(tokens);
                model.unanswered_creates += unanswered;
            }
        }
        assert!(model.tokens.len() > 40, "the load issued tokens");
        // After the last (clean) stop, once more from the same directory.
        let (child, line, stdout) = launch(&args).await;
        check_and_settle(&endpoint_of(&line), &mut model).await;
        terminate(child, stdout).await;
    }

    #[tokio::test]
    async fn a_damaged_data_dir_stops_the_start_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap().to_string();
        // A first run writes the state file.
        let (child, _line, stdout) = launch(&["--data-dir", &data_dir]).await;
        terminate(child, stdout).await;
        let file = dir.path().join("state.jsonl");
        let header = std::fs::read_to_string(&file).unwrap();
        let cases = [
            (
                format!("{header}not json\n"),
                "line 2 is not valid emulator state",
            ),
            (
                header.replace("\"format\":2", "\"format\":9"),
                "has state format 9, newer than this emulator's 2",
            ),
        ];
        for (content, reason) in cases {
            std::fs::write(&file, &content).unwrap();
            let output = Command::new(env!("CARGO_BIN_EXE_acs-emulator"))
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--access-key",
                    KEY,
                    "--data-dir",
                    &data_dir,
                ])
                .output();
            let output = tokio::time::timeout(WAIT, output).await.unwrap().unwrap();
            assert_eq!(output.status.code(), Some(1));
            assert!(output.stdout.is_empty());
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(reason), "{stderr}");
            assert!(stderr.contains("state.jsonl"), "{stderr}");
            // Never reset: the file is as it was.
            assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
        }
    }

    #[tokio::test]
    async fn bad_arguments_exit_non_zero_without_printing() {
        let output = Command::new(env!("CARGO_BIN_EXE_acs-emulator"))
            .args(["--listen", "127.0.0.1:0", "--access-key", "not base64!"])
            .output();
        let output = tokio::time::timeout(WAIT, output).await.unwrap().unwrap();
        assert!(!output.status.success());
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("not base64!"), "{stderr}");
    }
}

#[tokio::test]
async fn admin_listing_pages_through_every_identity_once() {
    let emulator = start(|_| {}).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(emulator.create().await);
    }
    let deleted = emulator.call("DELETE", &delete_path(&created[1]), "").await;
    assert_eq!(deleted.status, 204);

    let mut listed = Vec::new();
    let mut path = "/admin/identities?limit=2".to_string();
    for _ in 0..10 {
        let page = emulator.admin_get(&path).await;
        let identities = page["identities"].as_array().unwrap();
        assert!(identities.len() <= 2, "{page}");
        listed.extend(
            identities
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
        match page["continue"].as_str() {
            Some(token) => path = format!("/admin/identities?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(listed, created, "every identity once, oldest first");
    // Without a limit: everything in one answer, no continue.
    let all = emulator.admin_get("/admin/identities").await;
    assert_eq!(all["identities"].as_array().unwrap().len(), 5);
    assert!(all.get("continue").is_none());

    for bad in [
        "limit=0",
        "limit=5001",
        "limit=two",
        "limit=2&continue=garbage",
        "continue=17",
    ] {
        let answer = emulator
            .admin_send("GET", &format!("/admin/identities?{bad}"), Value::Null)
            .await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.json);
        assert_eq!(answer.error_code(), "BadRequest", "{bad}");
    }
}

#[tokio::test]
async fn preview_versions_read_an_identity_back() {
    let emulator = start(|_| {}).await;
    let preview = "2025-03-02-preview";
    let created = emulator
        .call(
            "POST",
            &format!("/identities?api-version={preview}"),
            r#"{"customId":"alice@contoso"}"#,
        )
        .await;
    assert_eq!(created.status, 201);
    let id = created.json["identity"]["id"].as_str().unwrap().to_string();
    let get_path = |version: &str| format!("/identities/{}?api-version={version}", encoded(&id));

    let read = emulator.call("GET", &get_path(preview), "").await;
    assert_eq!(read.status, 200, "{}", read.json);
    assert_eq!(read.json, json!({"id": id, "customId": "alice@contoso"}));

    let issued = emulator.issue(&id, r#"{"scopes":["chat"]}"#).await;
    assert_eq!(issued.status, 200);
    let read = emulator
        .call("GET", &get_path("2025-04-01-preview"), "")
        .await;
    assert_eq!(read.status, 200);
    let issued_at: jiff::Timestamp = read.json["lastTokenIssuedAt"]
        .as_str()
        .expect("lastTokenIssuedAt once a token was issued")
        .parse()
        .unwrap();
    let age = jiff::Timestamp::now().duration_since(issued_at);
    assert!(age.as_secs() < 60, "{age:?}");

    // GA versions have no such read.
    for ga in [V, "2025-06-30"] {
        let refused = emulator.call("GET", &get_path(ga), "").await;
        assert_eq!(refused.status, 400, "{ga}");
        assert_eq!(refused.error_code(), "UnsupportedApiVersion");
    }
    let deleted = emulator.call("DELETE", &delete_path(&id), "").await;
    assert_eq!(deleted.status, 204);
    let gone = emulator.call("GET", &get_path(preview), "").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "IdentityNotFound");
}

#[tokio::test]
async fn the_2020_preview_issues_revokes_by_time_and_deletes() {
    let emulator = start(|_| {}).await;
    let legacy = "2020-07-20-preview2";
    let created = emulator
        .call("POST", &format!("/identities?api-version={legacy}"), "")
        .await;
    assert_eq!(created.status, 200, "{}", created.json);
    let id = created.json["id"].as_str().unwrap().to_string();
    assert_eq!(created.json, json!({ "id": id }));
    let token_path = format!("/identities/{}/token?api-version={legacy}", encoded(&id));
    let patch_path = format!("/identities/{}?api-version={legacy}", encoded(&id));

    let first = emulator
        .call("POST", &token_path, r#"{"scopes":["chat","voip"]}"#)
        .await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["id"], id.as_str());
    let first_token = first.json["token"].as_str().unwrap().to_string();
    assert!(first.json["expiresOn"].as_str().is_some());
    assert_eq!(emulator.verdict(&first_token).await, "ok");

    // Revoke without a time: everything issued so far.
    let revoked = emulator.call("PATCH", &patch_path, "{}").await;
    assert_eq!(revoked.status, 204, "{}", revoked.json);
    assert_eq!(emulator.verdict(&first_token).await, "revoked");
    let second = emulator
        .call("POST", &token_path, r#"{"scopes":["chat"]}"#)
        .await;
    let second_token = second.json["token"].as_str().unwrap().to_string();
    assert_eq!(emulator.verdict(&second_token).await, "ok");

    // Revoke what was issued before a minute ago: the new token stays valid.
    let minute_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let body = json!({ "tokensValidFrom": minute_ago.to_string() }).to_string();
    assert_eq!(emulator.call("PATCH", &patch_path, &body).await.status, 204);
    assert_eq!(emulator.verdict(&second_token).await, "ok");
    assert_eq!(emulator.identity_view(&id).await["revocations"], 2);
    // ...and before a minute from now: it is revoked too.
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    let body = json!({ "tokensValidFrom": soon.to_string() }).to_string();
    assert_eq!(emulator.call("PATCH", &patch_path, &body).await.status, 204);
    assert_eq!(emulator.verdict(&second_token).await, "revoked");

    let bad = emulator
        .call("PATCH", &patch_path, r#"{"tokensValidFrom":"yesterday"}"#)
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json["error"]["target"], "TokensValidFrom");
    // The current calls are not part of this version, nor this version's of the current ones.
    let current = emulator
        .call("POST", &issue_path(&id, legacy), r#"{"scopes":["chat"]}"#)
        .await;
    assert_eq!(current.status, 400);
    assert_eq!(current.error_code(), "UnsupportedApiVersion");
    let old_call_now = format!("/identities/{}/token?api-version={V}", encoded(&id));
    let refused = emulator
        .call("POST", &old_call_now, r#"{"scopes":["chat"]}"#)
        .await;
    assert_eq!(refused.status, 400);

    let deleted = emulator.call("DELETE", &patch_path, "").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(emulator.verdict(&second_token).await, "deleted");
    let after = emulator
        .call("POST", &token_path, r#"{"scopes":["chat"]}"#)
        .await;
    assert_eq!(after.status, 404);
}

#[tokio::test]
async fn teams_user_tokens_exchange_for_acs_tokens_and_each_mismatch_is_named() {
    let emulator = start(|_| {}).await;
    let user = emulator
        .admin
        .post(
            "admin/teamsUsers",
            json!({"appId": "app-1", "userId": "user-1"}),
        )
        .await;
    let entra_token = user["token"].as_str().unwrap().to_string();
    assert_eq!(user["userId"], "user-1");
    let path = format!("/teamsUser/:exchangeAccessToken?api-version={V}");
    let exchange = |token: &str, app: &str, user: &str| {
        json!({"token": token, "appId": app, "userId": user}).to_string()
    };

    let ok = emulator
        .call("POST", &path, &exchange(&entra_token, "app-1", "user-1"))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    let acs_token = ok.json["token"].as_str().unwrap();
    assert_eq!(
        ok.json["expiresOn"], user["expiresOn"],
        "expires with the Entra token"
    );
    assert_eq!(python_claims(acs_token)["skypeid"], "orgid:user-1");
    assert_eq!(emulator.verdict(acs_token).await, "ok");
    // A Teams identity is not one of the resource's identities.
    assert!(emulator.admin.live_identities().await.is_empty());

    let expired = emulator
        .admin
        .post(
            "admin/teamsUsers",
            json!({"appId": "app-1", "userId": "user-1", "lifetimeSeconds": 0}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong_audience = emulator
        .admin
        .post(
            "admin/teamsUsers",
            json!({"appId": "app-1", "userId": "user-1", "audience": "https://graph.microsoft.com"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // A token of another emulator instance: signed with another secret.
    let other = start(|_| {}).await;
    let foreign = other
        .admin
        .post(
            "admin/teamsUsers",
            json!({"appId": "app-1", "userId": "user-1"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let cases = [
        (
            exchange(&entra_token, "app-2", "user-1"),
            400,
            "ValidationError",
            "AAD application is not the expected one.",
        ),
        (
            exchange(&entra_token, "app-1", "user-2"),
            400,
            "ValidationError",
            "AAD user is not the expected one.",
        ),
        (
            exchange(&entra_token, "", "user-1"),
            400,
            "ValidationError",
            "AppId: The AppId field is required.",
        ),
        (
            json!({"token": entra_token, "appId": "app-1"}).to_string(),
            400,
            "ValidationError",
            "UserId: The UserId field is required.",
        ),
        (
            exchange(&expired, "app-1", "user-1"),
            401,
            "InvalidAccessToken",
            "expired",
        ),
        (
            exchange(&wrong_audience, "app-1", "user-1"),
            401,
            "InvalidAccessToken",
            "audience",
        ),
        (
            exchange(&foreign, "app-1", "user-1"),
            401,
            "InvalidAccessToken",
            "not issued by the emulator",
        ),
        (
            exchange("invalid", "app-1", "user-1"),
            401,
            "InvalidAccessToken",
            "not an Entra ID access token",
        ),
        // An ACS token is not an Entra token of a Teams user.
        (
            exchange(acs_token, "app-1", "user-1"),
            401,
            "InvalidAccessToken",
            "not issued by the emulator",
        ),
    ];
    for (body, status, code, message) in cases {
        let refused = emulator.call("POST", &path, &body).await;
        assert_eq!(refused.status, status, "{message}: {}", refused.json);
        assert_eq!(refused.error_code(), code, "{message}");
        assert!(
            refused.error_message().contains(message),
            "{}",
            refused.json
        );
        assert!(!refused.error_message().contains(&entra_token));
    }
    // Before 2022-06-01 the call does not exist.
    let old = emulator
        .call(
            "POST",
            "/teamsUser/:exchangeAccessToken?api-version=2021-03-07",
            &exchange(&entra_token, "app-1", "user-1"),
        )
        .await;
    assert_eq!(old.error_code(), "UnsupportedApiVersion");
    // Counted under its own name.
    assert_eq!(emulator.admin.count("exchangeTeamsToken", 200).await, 1);
    let bad_spec = emulator
        .admin_send("POST", "/admin/teamsUsers", json!({"userId": "u"}))
        .await;
    assert_eq!(bad_spec.status, 400);
    other.handle.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The /access operations

const TENANT: &str = "c70d068c-2f32-484d-9455-73070cd5aadd";
const OBJECT: &str = "b27b64b9-39d2-44a3-869d-67700b74e805";
const CLIENT: &str = "07474a86-625a-452f-977b-db4e13f21260";
const STABLE_ACCESS: &str = "2025-06-30";

fn teams_extension_path(tenant: &str, object: &str, version: &str) -> String {
    format!("/access/teamsExtension/tenants/{tenant}/assignments/{object}?api-version={version}")
}

#[tokio::test]
async fn teams_extension_assignments_are_created_replaced_read_and_removed() {
    let emulator = start(|_| {}).await;
    let path = teams_extension_path(TENANT, OBJECT, STABLE_ACCESS);
    let absent = emulator.call("GET", &path, "").await;
    assert_eq!(absent.status, 404, "{}", absent.json);
    assert_eq!(absent.error_code(), "AssignmentNotFound");

    let created = emulator
        .call("PUT", &path, r#"{"principalType":"resourceAccount"}"#)
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(
        created.json,
        json!({"objectId": OBJECT, "tenantId": TENANT, "principalType": "resourceAccount"})
    );
    assert!(!created.header("api-supported-versions").is_empty());
    let body = json!({"principalType": "user", "clientIds": [CLIENT]}).to_string();
    let replaced = emulator.call("PUT", &path, &body).await;
    assert_eq!(replaced.status, 200, "{}", replaced.json);
    let read = emulator.call("GET", &path, "").await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.json,
        json!({"objectId": OBJECT, "tenantId": TENANT, "principalType": "user", "clientIds": [CLIENT]})
    );
    // Every version with the extension sees the same assignment; 2025-04-01-preview has none.
    for version in ["2025-03-02-preview", "2026-07-22", "2026-09-23"] {
        let other = emulator
            .call("GET", &teams_extension_path(TENANT, OBJECT, version), "")
            .await;
        assert_eq!(other.status, 200, "{version}: {}", other.json);
    }
    for version in ["2025-04-01-preview", V] {
        let missing = emulator
            .call("GET", &teams_extension_path(TENANT, OBJECT, version), "")
            .await;
        assert_eq!(missing.error_code(), "UnsupportedApiVersion", "{version}");
    }

    assert_eq!(emulator.call("DELETE", &path, "").await.status, 204);
    assert_eq!(emulator.call("DELETE", &path, "").await.status, 404);
    assert_eq!(emulator.call("GET", &path, "").await.status, 404);
    assert_eq!(
        emulator
            .admin
            .count("upsertTeamsExtensionAssignment", 201)
            .await,
        1
    );
    assert_eq!(
        emulator
            .admin
            .count("deleteTeamsExtensionAssignment", 404)
            .await,
        1
    );
}

#[tokio::test]
async fn teams_extension_assignments_are_validated_and_signed() {
    let emulator = start(|_| {}).await;
    let path = teams_extension_path(TENANT, OBJECT, STABLE_ACCESS);
    let cases = [
        (path.clone(), "{}", "PrincipalType", "field is required"),
        (
            path.clone(),
            r#"{"principalType":"group"}"#,
            "PrincipalType",
            "Valid values are: user, resourceAccount.",
        ),
        (
            path.clone(),
            r#"{"principalType":"user","clientIds":["app-1"]}"#,
            "ClientIds",
            "'app-1' is not a valid GUID",
        ),
        (
            teams_extension_path("contoso", OBJECT, STABLE_ACCESS),
            r#"{"principalType":"user"}"#,
            "tenantId",
            "'contoso' is not a valid GUID",
        ),
    ];
    for (path, body, target, message) in cases {
        let refused = emulator.call("PUT", &path, body).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.json);
        assert_eq!(refused.error_code(), "ValidationError");
        assert_eq!(refused.json["error"]["target"], target, "{body}");
        assert!(
            refused.error_message().contains(message),
            "{}",
            refused.json
        );
    }
    let malformed = emulator.call("PUT", &path, r#"{"principalType":1}"#).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.error_code(), "InvalidRequestBody");
    // HMAC with another key: denied, nothing stored.
    let other_key = AccessKey::from_base64("b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMDA=").unwrap();
    let denied = emulator
        .call_as(
            &other_key,
            SystemTime::now(),
            "PUT",
            &path,
            r#"{"principalType":"user"}"#,
        )
        .await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.error_code(), "Denied");
    assert_eq!(emulator.call("GET", &path, "").await.status, 404);
    // Other methods on the assignment are not routes.
    assert_eq!(emulator.call("POST", &path, "{}").await.status, 404);
}

#[tokio::test]
async fn teams_extension_assignments_survive_a_restart_with_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let path = teams_extension_path(TENANT, OBJECT, STABLE_ACCESS);
    let second = teams_extension_path(TENANT, CLIENT, STABLE_ACCESS);
    let first_run = start(|config| config.data_dir = Some(data_dir.clone())).await;
    let put = first_run
        .call("PUT", &path, r#"{"principalType":"user"}"#)
        .await;
    assert_eq!(put.status, 201);
    let put = first_run
        .call("PUT", &second, r#"{"principalType":"user"}"#)
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(first_run.call("DELETE", &second, "").await.status, 204);
    first_run.handle.shutdown().await;

    // Twice: the first restart replays the changes, the second reads the compacted file.
    for _ in 0..2 {
        let run = start(|config| config.data_dir = Some(data_dir.clone())).await;
        let read = run.call("GET", &path, "").await;
        assert_eq!(read.status, 200, "{}", read.json);
        assert_eq!(read.json["principalType"], "user");
        assert_eq!(run.call("GET", &second, "").await.status, 404);
        run.handle.shutdown().await;
    }
}

const RESOURCE: &str = "2dee53b4-368b-45b4-ab52-8493fb117652";

/// An emulator over HTTPS (bearer tokens count only there), with a known resource id.
async fn start_tls(configure: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let ca = test_ca();
    let mut emulator = start(|config| {
        config.tls = Some(ca.server.clone());
        config.resource_id = Some(RESOURCE.into());
        configure(config);
    })
    .await;
    emulator.http = reqwest::Client::builder()
        .timeout(WAIT)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", emulator.handle.local_addr())
        .build()
        .unwrap();
    emulator.admin = Admin::new(&emulator.handle, Some(&ca.ca_pem));
    emulator
}

impl Emulator {
    /// An Entra ID token of a test user (`POST /admin/teamsUsers`), with `extra` fields.
    async fn entra_user_token(&self, app: &str, object: &str, extra: Value) -> (String, Value) {
        let mut spec = json!({"appId": app, "userId": object, "tenantId": TENANT});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let user = self.admin.post("admin/teamsUsers", spec).await;
        (user["token"].as_str().unwrap().to_string(), user)
    }

    /// An exchange as `EntraTokenCredential` sends it: the Entra token as bearer, body `{}`.
    async fn exchange(&self, path_and_query: &str, bearer: Option<&str>) -> Answer {
        let mut request = self
            .http
            .post(self.url(path_and_query))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }
}

fn teams_extension_exchange_path(version: &str) -> String {
    format!("/access/teamsExtension/:exchangeAccessToken?api-version={version}")
}

#[tokio::test]
async fn the_teams_extension_exchange_answers_assigned_users_of_listed_clients_only() {
    let emulator = start_tls(|_| {}).await;
    let path = teams_extension_exchange_path(STABLE_ACCESS);
    let (token, user) = emulator.entra_user_token(CLIENT, OBJECT, json!({})).await;

    let unassigned = emulator.exchange(&path, Some(&token)).await;
    assert_eq!(unassigned.status, 403, "{}", unassigned.json);
    assert_eq!(unassigned.error_code(), "Forbidden");

    let assign = json!({"principalType": "user", "clientIds": [CLIENT]}).to_string();
    let put = emulator
        .call(
            "PUT",
            &teams_extension_path(TENANT, OBJECT, STABLE_ACCESS),
            &assign,
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.json);
    let ok = emulator.exchange(&path, Some(&token)).await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert_eq!(
        ok.json["identity"]["id"],
        format!("8:acs:{RESOURCE}_{TENANT}_{OBJECT}")
    );
    assert_eq!(
        ok.json["accessToken"]["expiresOn"], user["expiresOn"],
        "expires with the Entra token"
    );
    let acs_token = ok.json["accessToken"]["token"].as_str().unwrap();
    assert_eq!(emulator.verdict(acs_token).await, "ok");
    assert!(emulator.admin.live_identities().await.is_empty());
    // Every version with the extension exchanges; 2025-04-01-preview has no such call.
    for version in ["2025-03-02-preview", "2026-07-22", "2026-09-23"] {
        let other = emulator
            .exchange(&teams_extension_exchange_path(version), Some(&token))
            .await;
        assert_eq!(other.status, 200, "{version}: {}", other.json);
    }
    let preview = emulator
        .exchange(
            &teams_extension_exchange_path("2025-04-01-preview"),
            Some(&token),
        )
        .await;
    assert_eq!(preview.error_code(), "UnsupportedApiVersion");

    let other_client = "11111111-2222-3333-4444-555555555555";
    let (other_app, _) = emulator
        .entra_user_token(other_client, OBJECT, json!({}))
        .await;
    let (expired, _) = emulator
        .entra_user_token(CLIENT, OBJECT, json!({"lifetimeSeconds": 0}))
        .await;
    let (clients_audience, _) = emulator
        .entra_user_token(
            CLIENT,
            OBJECT,
            json!({"audience": "https://communication.azure.com/clients"}),
        )
        .await;
    let cases = [
        (
            Some(other_app.as_str()),
            403,
            "Forbidden",
            "does not allow client",
        ),
        (Some(expired.as_str()), 401, "InvalidAccessToken", "expired"),
        (
            Some(clients_audience.as_str()),
            401,
            "InvalidAccessToken",
            "audience",
        ),
        (
            Some(acs_token),
            401,
            "InvalidAccessToken",
            "not issued by the emulator",
        ),
        (None, 401, "InvalidAccessToken", "Authorization: Bearer"),
    ];
    for (bearer, status, code, message) in cases {
        let refused = emulator.exchange(&path, bearer).await;
        assert_eq!(refused.status, status, "{message}: {}", refused.json);
        assert_eq!(refused.error_code(), code, "{message}");
        assert!(
            refused.error_message().contains(message),
            "{}",
            refused.json
        );
        assert!(!refused.error_message().contains(&token));
    }
    // Signed with the access key, the exchange has no user: refused.
    let signed = emulator.call("POST", &path, "{}").await;
    assert_eq!(signed.status, 401, "{}", signed.json);

    // Once the assignment is gone, so is the exchange.
    let removed = emulator
        .call(
            "DELETE",
            &teams_extension_path(TENANT, OBJECT, STABLE_ACCESS),
            "",
        )
        .await;
    assert_eq!(removed.status, 204);
    assert_eq!(emulator.exchange(&path, Some(&token)).await.status, 403);
    assert_eq!(
        emulator
            .admin
            .count("exchangeTeamsExtensionToken", 200)
            .await,
        4
    );
    emulator.handle.shutdown().await;
}

#[tokio::test]
async fn the_exchanges_refuse_bearer_tokens_over_plain_http() {
    let emulator = start(|_| {}).await;
    let (token, _) = emulator.entra_user_token(CLIENT, OBJECT, json!({})).await;
    let refused = emulator
        .exchange(&teams_extension_exchange_path(STABLE_ACCESS), Some(&token))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.json);
    assert!(
        refused.error_message().contains("HTTPS only"),
        "{}",
        refused.json
    );
}

const ACCESS_PREVIEW: &str = "2025-03-02-preview";
const CLIENTS_AUDIENCE: &str = "https://communication.azure.com/clients";

fn entra_assignment_path(object: &str) -> String {
    format!("/access/entra/assignments/{object}?api-version={ACCESS_PREVIEW}")
}

/// A GUID numbered `n`, for making many object ids.
fn numbered_guid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[tokio::test]
async fn entra_assignments_are_put_patched_listed_in_pages_and_removed() {
    let emulator = start(|_| {}).await;
    let path = entra_assignment_path(OBJECT);
    let body = json!({"tenantId": TENANT, "principalType": "user", "clientIds": [CLIENT]});
    let created = emulator.call("PUT", &path, &body.to_string()).await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(
        created.json,
        json!({"objectId": OBJECT, "tenantId": TENANT, "principalType": "user", "clientIds": [CLIENT]})
    );
    let replaced = emulator
        .call(
            "PUT",
            &path,
            &json!({"tenantId": TENANT, "principalType": "group", "clientIds": []}).to_string(),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.json);
    assert_eq!(
        emulator.call("GET", &path, "").await.json["principalType"],
        "group"
    );
    let missing = emulator
        .call(
            "PUT",
            &path,
            &json!({"tenantId": TENANT, "principalType": "user"}).to_string(),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json["error"]["target"], "ClientIds");
    // Only the preview has the Entra ID operations.
    let stable = emulator
        .call(
            "GET",
            &format!("/access/entra/assignments/{OBJECT}?api-version={STABLE_ACCESS}"),
            "",
        )
        .await;
    assert_eq!(stable.error_code(), "UnsupportedApiVersion");

    // One PATCH adds 60 and removes the first; the listing pages through all of them once.
    let mut patch = serde_json::Map::new();
    for n in 0..60 {
        patch.insert(
            numbered_guid(n),
            json!({"tenantId": TENANT, "principalType": "user", "clientIds": []}),
        );
    }
    patch.insert(OBJECT.into(), Value::Null);
    let patched = emulator
        .call(
            "PATCH",
            &format!("/access/entra/assignments?api-version={ACCESS_PREVIEW}"),
            &Value::Object(patch).to_string(),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.json);
    assert_eq!(patched.json["value"].as_array().unwrap().len(), 60);
    assert_eq!(emulator.call("GET", &path, "").await.status, 404);
    let mut listed = Vec::new();
    let mut next = Some(emulator.url(&format!(
        "/access/entra/assignments?api-version={ACCESS_PREVIEW}"
    )));
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        assert!(pages <= 3, "the listing does not end");
        let page = emulator
            .call("GET", &url[url::Position::BeforePath..], "")
            .await;
        assert_eq!(page.status, 200, "{}", page.json);
        for assignment in page.json["value"].as_array().unwrap() {
            listed.push(assignment["objectId"].as_str().unwrap().to_string());
        }
        next = page.json["nextLink"]
            .as_str()
            .map(|link| Url::parse(link).unwrap());
    }
    assert_eq!(pages, 2);
    assert_eq!(listed, (0..60).map(numbered_guid).collect::<Vec<_>>());

    // A PATCH with one bad entry changes nothing.
    let bad = json!({
        numbered_guid(0): null,
        numbered_guid(99): {"tenantId": TENANT, "principalType": "everyone", "clientIds": []},
    });
    let refused = emulator
        .call(
            "PATCH",
            &format!("/access/entra/assignments?api-version={ACCESS_PREVIEW}"),
            &bad.to_string(),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert!(
        refused.error_message().contains(&numbered_guid(99)),
        "{}",
        refused.json
    );
    assert_eq!(
        emulator
            .call("GET", &entra_assignment_path(&numbered_guid(0)), "")
            .await
            .status,
        200
    );

    let removed = emulator
        .call("DELETE", &entra_assignment_path(&numbered_guid(0)), "")
        .await;
    assert_eq!(removed.status, 204);
    assert_eq!(emulator.admin.count("updateEntraAssignments", 200).await, 1);
    assert_eq!(emulator.admin.count("listEntraAssignments", 200).await, 2);
}

#[tokio::test]
async fn the_entra_exchange_answers_users_covered_by_a_user_group_or_tenant_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let emulator = start_tls(|config| config.data_dir = Some(data_dir.clone())).await;
    let path = format!("/access/entra/:exchangeAccessToken?api-version={ACCESS_PREVIEW}");
    let group = numbered_guid(7);
    let member = numbered_guid(8);
    let audience = json!({"audience": CLIENTS_AUDIENCE});
    let (token, user) = emulator
        .entra_user_token(CLIENT, OBJECT, audience.clone())
        .await;
    let (member_token, _) = emulator
        .entra_user_token(
            CLIENT,
            &member,
            json!({"audience": CLIENTS_AUDIENCE, "groups": [group]}),
        )
        .await;
    assert_eq!(emulator.exchange(&path, Some(&token)).await.status, 403);

    let assign = |principal: &str, clients: Value| {
        json!({"tenantId": TENANT, "principalType": principal, "clientIds": clients}).to_string()
    };
    let put = emulator
        .call(
            "PUT",
            &entra_assignment_path(OBJECT),
            &assign("user", json!([CLIENT])),
        )
        .await;
    assert_eq!(put.status, 201);
    let ok = emulator.exchange(&path, Some(&token)).await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert_eq!(
        ok.json["identity"]["id"],
        format!("8:acs:{RESOURCE}_wf_{TENANT}_{OBJECT}")
    );
    assert_eq!(ok.json["accessToken"]["expiresOn"], user["expiresOn"]);
    let acs_token = ok.json["accessToken"]["token"].as_str().unwrap();
    assert_eq!(emulator.verdict(acs_token).await, "ok");
    // The group member has no assignment of their own: the group's admits them.
    assert_eq!(
        emulator.exchange(&path, Some(&member_token)).await.status,
        403
    );
    let put = emulator
        .call(
            "PUT",
            &entra_assignment_path(&group),
            &assign("group", json!([])),
        )
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(
        emulator.exchange(&path, Some(&member_token)).await.status,
        200
    );
    // The Teams extension's audience is not this exchange's, nor the reverse.
    let (teams_token, _) = emulator.entra_user_token(CLIENT, OBJECT, json!({})).await;
    let wrong = emulator.exchange(&path, Some(&teams_token)).await;
    assert_eq!(wrong.status, 401, "{}", wrong.json);
    assert!(wrong.error_message().contains("audience"));
    let stable = emulator
        .exchange(
            &format!("/access/entra/:exchangeAccessToken?api-version={STABLE_ACCESS}"),
            Some(&token),
        )
        .await;
    assert_eq!(stable.error_code(), "UnsupportedApiVersion");
    emulator.handle.shutdown().await;

    // The assignments are the resource's state: a restart keeps them, a tenant-wide one too.
    let emulator = start_tls(|config| config.data_dir = Some(data_dir.clone())).await;
    let (stranger, _) = emulator
        .entra_user_token(CLIENT, &numbered_guid(9), audience.clone())
        .await;
    assert_eq!(emulator.exchange(&path, Some(&stranger)).await.status, 403);
    let put = emulator
        .call(
            "PUT",
            &entra_assignment_path(TENANT),
            &assign("tenant", json!([])),
        )
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(emulator.exchange(&path, Some(&stranger)).await.status, 200);
    assert_eq!(
        emulator.exchange(&path, Some(&member_token)).await.status,
        200
    );
    emulator.handle.shutdown().await;
    let emulator = start_tls(|config| config.data_dir = Some(data_dir.clone())).await;
    let (again, _) = emulator.entra_user_token(CLIENT, OBJECT, audience).await;
    assert_eq!(emulator.exchange(&path, Some(&again)).await.status, 200);
    assert_eq!(
        emulator
            .call("GET", &entra_assignment_path(TENANT), "")
            .await
            .status,
        200
    );
    emulator.handle.shutdown().await;
}

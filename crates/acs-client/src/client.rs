//! A typed client for the four Identity operations the operator needs, over reqwest.
//!
//! Requests are authenticated either with the resource's access key (HMAC-SHA256, from a
//! connection string) or with an Entra ID bearer token from any `azure_core` token credential
//! (see [`super::entra`]). Every call has a timeout. Nothing is retried here: a retried create
//! could mint a second identity (the GA API has no idempotency key), and for the other calls
//! the caller decides. A create may carry a `customId` ([`CreateIdentityParams`]), which makes
//! it idempotent; only that call uses the preview api-version [`CUSTOM_ID_API_VERSION`].

use super::entra::{ACS_SCOPE, credential_error};
use super::error::{AcsError, TimeoutPhase, parse_retry_after};
use super::limits::{AcsRateLimiter, Operation};
use super::model::{
    API_VERSION, AccessTokenBody, CUSTOM_ID_API_VERSION, CreateIdentityRequest,
    CreateIdentityResponse, IssueTokenRequest, MAX_TOKEN_LIFETIME_MINUTES,
    MIN_TOKEN_LIFETIME_MINUTES, Scope, encode_identity_id,
};
use super::{AccessKey, ConnectionString, signing};
use azure_core::credentials::TokenCredential;
use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use url::Url;

/// A token lifetime the service accepts: 60..=1440 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenLifetime(u32);

impl TokenLifetime {
    pub const MAX: TokenLifetime = TokenLifetime(MAX_TOKEN_LIFETIME_MINUTES);

    pub fn from_minutes(minutes: u32) -> Result<Self, AcsError> {
        if (MIN_TOKEN_LIFETIME_MINUTES..=MAX_TOKEN_LIFETIME_MINUTES).contains(&minutes) {
            Ok(Self(minutes))
        } else {
            Err(AcsError::InvalidRequest(format!(
                "token lifetime {minutes} min is outside [{MIN_TOKEN_LIFETIME_MINUTES}, {MAX_TOKEN_LIFETIME_MINUTES}]"
            )))
        }
    }

    pub fn minutes(self) -> u32 {
        self.0
    }
}

/// An access token as ACS issued it. The token text is redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_on: Timestamp,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

impl TryFrom<AccessTokenBody> for IssuedToken {
    type Error = AcsError;

    fn try_from(body: AccessTokenBody) -> Result<Self, AcsError> {
        // The value is not repeated: the server chose it.
        let expires_on = body.expires_on.parse::<Timestamp>().map_err(|_| {
            AcsError::InvalidResponse(format!(
                "expiresOn (a {}-byte string) is not a timestamp",
                body.expires_on.len()
            ))
        })?;
        if body.token.is_empty() {
            return Err(AcsError::InvalidResponse("empty token".into()));
        }
        Ok(Self {
            token: body.token,
            expires_on,
        })
    }
}

/// A new identity (or, for a `customId` ACS already knows, the existing one) and, when
/// requested, a token for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedIdentity {
    pub id: String,
    pub token: Option<IssuedToken>,
    /// The `customId` ACS holds for the identity (preview answers only).
    pub custom_id: Option<String>,
    /// When the identity last got a token (preview answers only; `None` when absent or not a
    /// timestamp: it is informational).
    pub last_token_issued_at: Option<Timestamp>,
}

impl CreatedIdentity {
    /// The id and the token of a create that asked for one.
    pub fn into_id_and_token(self) -> Result<(String, IssuedToken), AcsError> {
        let token = self.token.ok_or_else(missing_token)?;
        Ok((self.id, token))
    }
}

/// The token a create asks for along with the identity (`createTokenWithScopes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstToken<'a> {
    pub scopes: &'a [Scope],
    pub lifetime: TokenLifetime,
}

/// What `POST /identities` sends besides creating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateIdentityParams<'a> {
    /// Makes the create idempotent: if a live identity already has this `customId`, ACS
    /// returns it (with a new token when one is asked for) instead of creating another. Sent
    /// with the preview api-version [`CUSTOM_ID_API_VERSION`]; a resource that does not serve
    /// it refuses the call (400), it never silently ignores the field.
    pub custom_id: Option<&'a str>,
    pub first_token: Option<FirstToken<'a>>,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Upper bound for one whole call (connect, send, read).
    pub timeout: Duration,
    /// Upper bound for making the connection (TCP and TLS); at most `timeout`.
    pub connect_timeout: Duration,
    /// Upper bound from sending until the answer begins (its status line), connecting
    /// included; at most `timeout`. An endpoint that accepts and never answers is given up
    /// on after this, not after the whole `timeout`.
    pub first_byte_timeout: Duration,
    /// Extra PEM certificates to trust besides the system roots (e.g. the emulator's CA).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Waits before each call so that callers sharing it stay under the ACS rate limits.
    pub rate_limiter: Option<Arc<AcsRateLimiter>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            first_byte_timeout: Self::DEFAULT_FIRST_BYTE_TIMEOUT,
            extra_ca_pem: None,
            rate_limiter: None,
        }
    }
}

impl ClientOptions {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
}

/// How requests prove who sends them.
#[derive(Clone)]
enum Credential {
    /// HMAC-SHA256 with the resource's access key.
    AccessKey(AccessKey),
    /// `Authorization: Bearer` with an Entra ID token for [`ACS_SCOPE`].
    Bearer(Arc<dyn TokenCredential>),
}

/// The ACS Identity data-plane client for one resource.
#[derive(Clone)]
pub struct AcsClient {
    http: reqwest::Client,
    endpoint: Url,
    credential: Credential,
    timeout: Duration,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    rate_limiter: Option<Arc<AcsRateLimiter>>,
}

impl fmt::Debug for AcsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcsClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("auth", &self.auth_scheme())
            .finish_non_exhaustive()
    }
}

/// The HTTP client of every ACS and Entra call: rustls (ring) with the system roots plus an
/// optional PEM bundle ([`super::roots`]), and bounded connect and total times (the connect
/// bound at most the total).
pub fn http_client(
    timeout: Duration,
    connect_timeout: Duration,
    extra_ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, AcsError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(connect_timeout.min(timeout))
        // ACS and Entra never redirect; a redirect would carry a signed request (or a token
        // request) to wherever a hostile endpoint points. A 3xx is answered as an error.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("acs-identity-operator/", env!("CARGO_PKG_VERSION")));
    // The system roots are shared by every client; a connection's PEM is trusted beside them.
    builder = builder.use_preconfigured_tls(super::roots::tls_config(extra_ca_pem)?);
    builder
        .build()
        .map_err(|e| AcsError::Config(format!("HTTP client: {e}")))
}

impl AcsClient {
    /// A client that signs with the access key of a connection string.
    pub fn new(connection: &ConnectionString, options: ClientOptions) -> Result<Self, AcsError> {
        Self::build(
            connection.endpoint.clone(),
            Credential::AccessKey(connection.access_key.clone()),
            options,
        )
    }

    /// A client that sends Entra ID bearer tokens from `credential` (e.g. a workload identity
    /// from [`super::entra::WorkloadIdentity::credential`]). The endpoint must be https: a
    /// bearer token is never sent in the clear (the official SDKs refuse it too).
    pub fn with_bearer(
        endpoint: Url,
        credential: Arc<dyn TokenCredential>,
        options: ClientOptions,
    ) -> Result<Self, AcsError> {
        if endpoint.scheme() != "https" {
            return Err(AcsError::Config(format!(
                "bearer authentication needs an https endpoint, not {endpoint}"
            )));
        }
        Self::build(endpoint, Credential::Bearer(credential), options)
    }

    fn build(
        endpoint: Url,
        credential: Credential,
        options: ClientOptions,
    ) -> Result<Self, AcsError> {
        Ok(Self {
            http: http_client(
                options.timeout,
                options.connect_timeout,
                options.extra_ca_pem.as_deref(),
            )?,
            endpoint,
            credential,
            timeout: options.timeout,
            connect_timeout: options.connect_timeout.min(options.timeout),
            first_byte_timeout: options.first_byte_timeout.min(options.timeout),
            rate_limiter: options.rate_limiter,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// `"HMAC-SHA256"` or `"Bearer"`: how this client authenticates (for logs and status).
    pub fn auth_scheme(&self) -> &'static str {
        match self.credential {
            Credential::AccessKey(_) => "HMAC-SHA256",
            Credential::Bearer(_) => "Bearer",
        }
    }

    /// `POST /identities` with no token.
    pub async fn create_identity(&self) -> Result<String, AcsError> {
        let created = self
            .create_identity_with(&CreateIdentityParams::default())
            .await?;
        Ok(created.id)
    }

    /// `POST /identities` with `createTokenWithScopes`: identity and first token in one call.
    pub async fn create_identity_with_token(
        &self,
        scopes: &[Scope],
        lifetime: TokenLifetime,
    ) -> Result<(String, IssuedToken), AcsError> {
        let params = CreateIdentityParams {
            custom_id: None,
            first_token: Some(FirstToken { scopes, lifetime }),
        };
        self.create_identity_with(&params)
            .await?
            .into_id_and_token()
    }

    /// `POST /identities` with a first token and/or a `customId`, as `params` say. Without a
    /// `customId` this is the GA call of the other create methods.
    pub async fn create_identity_with(
        &self,
        params: &CreateIdentityParams<'_>,
    ) -> Result<CreatedIdentity, AcsError> {
        let (create_token_with_scopes, expires_in_minutes) = match params.first_token {
            Some(first) => (
                Some(scope_names(first.scopes)?),
                Some(first.lifetime.minutes().into()),
            ),
            None => (None, None),
        };
        let request = CreateIdentityRequest {
            create_token_with_scopes,
            expires_in_minutes,
            custom_id: params.custom_id.map(str::to_string),
        };
        let (operation, version) = match (params.first_token, params.custom_id) {
            (Some(_), None) => (Operation::CreateIdentityWithToken, API_VERSION),
            (Some(_), Some(_)) => (Operation::CreateIdentityWithToken, CUSTOM_ID_API_VERSION),
            (None, None) => (Operation::CreateIdentity, API_VERSION),
            (None, Some(_)) => (Operation::CreateIdentity, CUSTOM_ID_API_VERSION),
        };
        let created = self.create(operation, version, &request).await?;
        if params.first_token.is_some() && created.token.is_none() {
            return Err(missing_token());
        }
        Ok(created)
    }

    /// `POST /identities/{id}/:issueAccessToken`.
    pub async fn issue_token(
        &self,
        identity_id: &str,
        scopes: &[Scope],
        lifetime: TokenLifetime,
    ) -> Result<IssuedToken, AcsError> {
        let request = IssueTokenRequest {
            scopes: Some(scope_names(scopes)?),
            expires_in_minutes: Some(lifetime.minutes().into()),
        };
        let body = serde_json::to_vec(&request).expect("request serializes");
        let url = self.url(&format!(
            "identities/{}/:issueAccessToken",
            encode_identity_id(identity_id)
        ));
        let (status, bytes) = self
            .send(Operation::IssueToken, Method::POST, url, body)
            .await?;
        expect_status(status, StatusCode::OK, &bytes)?;
        let token: AccessTokenBody = parse_json(&bytes)?;
        token.try_into()
    }

    /// `POST /identities/{id}/:revokeAccessTokens`: invalidates every token issued so far.
    pub async fn revoke_tokens(&self, identity_id: &str) -> Result<(), AcsError> {
        let url = self.url(&format!(
            "identities/{}/:revokeAccessTokens",
            encode_identity_id(identity_id)
        ));
        let (status, bytes) = self
            .send(Operation::RevokeTokens, Method::POST, url, Vec::new())
            .await?;
        expect_status(status, StatusCode::NO_CONTENT, &bytes)
    }

    /// `DELETE /identities/{id}`: removes the identity and invalidates its tokens.
    pub async fn delete_identity(&self, identity_id: &str) -> Result<(), AcsError> {
        let url = self.url(&format!("identities/{}", encode_identity_id(identity_id)));
        let (status, bytes) = self
            .send(Operation::DeleteIdentity, Method::DELETE, url, Vec::new())
            .await?;
        expect_status(status, StatusCode::NO_CONTENT, &bytes)
    }

    async fn create(
        &self,
        operation: Operation,
        api_version: &str,
        request: &CreateIdentityRequest,
    ) -> Result<CreatedIdentity, AcsError> {
        let body = serde_json::to_vec(request).expect("request serializes");
        let url = self.url_at("identities", api_version);
        let (status, bytes) = self.send(operation, Method::POST, url, body).await?;
        expect_status(status, StatusCode::CREATED, &bytes)?;
        parse_create_response(&bytes)
    }

    fn url(&self, path: &str) -> Url {
        self.url_at(path, API_VERSION)
    }

    fn url_at(&self, path: &str, api_version: &str) -> Url {
        let mut url = self.endpoint.clone();
        // The path is built from encoded segments; set it verbatim so what is signed is sent.
        url.set_path(path);
        url.set_query(Some(&format!("api-version={api_version}")));
        url
    }

    async fn send(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), AcsError> {
        if let Some(limiter) = &self.rate_limiter {
            let waiting = std::time::Instant::now();
            limiter.acquire(operation).await;
            let waited = waiting.elapsed();
            if waited > std::time::Duration::from_millis(50) {
                tracing::debug!(
                    operation = operation.as_str(),
                    waited_ms = waited.as_millis() as u64,
                    "waited for the rate limiter"
                );
            }
        }
        // Authenticated after waiting for the limiter, so x-ms-date is the time of sending.
        let mut request = match &self.credential {
            Credential::AccessKey(key) => {
                let signed =
                    signing::sign_request(key, method.as_str(), &url, &body, SystemTime::now());
                self.http
                    .request(method, url)
                    .header("x-ms-date", signed.x_ms_date)
                    .header("x-ms-content-sha256", signed.x_ms_content_sha256)
                    .header("authorization", signed.authorization)
            }
            Credential::Bearer(credential) => {
                let token = self.bearer_token(credential.as_ref()).await?;
                // bearer_auth marks the header sensitive: it never shows in Debug output.
                self.http.request(method, url).bearer_auth(token.secret())
            }
        }
        .header("accept", "application/json");
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        // `send` resolves once the answer's head is in: its bound is the first byte's.
        let response =
            match tokio::time::timeout(self.first_byte_timeout, request.body(body).send()).await {
                // A timeout before the answer's head is the first byte's, whichever bound fired.
                Ok(sent) => sent.map_err(|e| match self.transport_error(e) {
                    AcsError::Timeout {
                        phase: TimeoutPhase::Whole,
                        ..
                    } => AcsError::Timeout {
                        phase: TimeoutPhase::FirstByte,
                        after: self.first_byte_timeout,
                    },
                    other => other,
                })?,
                Err(_) => {
                    return Err(AcsError::Timeout {
                        phase: TimeoutPhase::FirstByte,
                        after: self.first_byte_timeout,
                    });
                }
            };
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = parse_retry_after(
            header("retry-after").as_deref(),
            header("retry-after-ms")
                .or_else(|| header("x-ms-retry-after-ms"))
                .as_deref(),
            SystemTime::now(),
        );
        let bytes = read_capped(response)
            .await
            .map_err(|e| e.into_acs(|e| self.transport_error(e)))?;
        if status == StatusCode::TOO_MANY_REQUESTS
            && let Some(limiter) = &self.rate_limiter
        {
            limiter.throttled(operation, retry_after);
        }
        if !status.is_success() {
            return Err(AcsError::from_response(
                status.as_u16(),
                retry_after,
                &bytes,
            ));
        }
        Ok((status, bytes))
    }

    /// A token for [`ACS_SCOPE`], from the credential's cache while it is fresh. Bounded by the
    /// call timeout: the credential's own retries must not hold a reconcile longer.
    async fn bearer_token(
        &self,
        credential: &dyn TokenCredential,
    ) -> Result<azure_core::credentials::Secret, AcsError> {
        match tokio::time::timeout(self.timeout, credential.get_token(&[ACS_SCOPE], None)).await {
            Ok(Ok(token)) => Ok(token.token),
            Ok(Err(error)) => Err(credential_error(&error)),
            Err(_) => Err(AcsError::Credential {
                retriable: true,
                message: format!("no token from the authority within {:?}", self.timeout),
            }),
        }
    }

    fn transport_error(&self, error: reqwest::Error) -> AcsError {
        if error.is_timeout() {
            let (phase, after) = if error.is_connect() {
                (TimeoutPhase::Connect, self.connect_timeout)
            } else {
                (TimeoutPhase::Whole, self.timeout)
            };
            return AcsError::Timeout { phase, after };
        }
        // The whole chain (addresses, TLS names, the peer's words) goes to the operator's log
        // only; conditions and Events, which tenants read, get the class of failure.
        tracing::debug!(error = %super::error::error_chain(&error), "ACS request failed");
        super::error::network_failure(&error)
    }
}

/// The most of a response body the client reads. ACS answers are a few hundred bytes; a
/// hostile or broken server must not make the operator buffer without bound.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Why a body could not be read.
pub enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

impl BodyError {
    fn into_acs(self, transport: impl FnOnce(reqwest::Error) -> AcsError) -> AcsError {
        match self {
            BodyError::TooLarge => AcsError::InvalidResponse(format!(
                "response body larger than {} KiB; not read",
                MAX_BODY / 1024
            )),
            BodyError::Transport(e) => transport(e),
        }
    }
}

/// The body of `response`, at most [`MAX_BODY`] bytes: refused as soon as the announced length
/// or the bytes received pass it.
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn scope_names(scopes: &[Scope]) -> Result<Vec<String>, AcsError> {
    if scopes.is_empty() {
        return Err(AcsError::InvalidRequest(
            "at least one scope is required".into(),
        ));
    }
    Ok(scopes.iter().map(|s| s.as_str().to_string()).collect())
}

fn missing_token() -> AcsError {
    AcsError::InvalidResponse("create with scopes returned no accessToken".into())
}

fn expect_status(status: StatusCode, expected: StatusCode, body: &[u8]) -> Result<(), AcsError> {
    if status == expected {
        return Ok(());
    }
    // Another 2xx than the API defines: the call may have taken effect, so it is not retriable.
    Err(AcsError::InvalidResponse(format!(
        "expected HTTP {expected}, got {status} ({} bytes)",
        body.len()
    )))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AcsError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's text quotes the values it met; the server chose those, so say only where.
        let what = match e.classify() {
            serde_json::error::Category::Data => "does not have the fields the API defines",
            serde_json::error::Category::Eof => "ends early",
            _ => "is not JSON",
        };
        AcsError::InvalidResponse(format!(
            "the body {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Reads a `201` body of `POST /identities`.
pub fn parse_create_response(bytes: &[u8]) -> Result<CreatedIdentity, AcsError> {
    let response: CreateIdentityResponse = parse_json(bytes)?;
    if response.identity.id.is_empty() {
        return Err(AcsError::InvalidResponse("empty identity id".into()));
    }
    Ok(CreatedIdentity {
        id: response.identity.id,
        token: response
            .access_token
            .map(IssuedToken::try_from)
            .transpose()?,
        custom_id: response.identity.custom_id,
        last_token_issued_at: response
            .identity
            .last_token_issued_at
            .and_then(|t| t.parse().ok()),
    })
}

/// Reads a `200` body of `:issueAccessToken`.
pub fn parse_token_response(bytes: &[u8]) -> Result<IssuedToken, AcsError> {
    parse_json::<AccessTokenBody>(bytes)?.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_bounds_are_inclusive() {
        assert!(TokenLifetime::from_minutes(59).is_err());
        assert_eq!(TokenLifetime::from_minutes(60).unwrap().minutes(), 60);
        assert_eq!(
            TokenLifetime::from_minutes(1440).unwrap(),
            TokenLifetime::MAX
        );
        assert!(TokenLifetime::from_minutes(1441).is_err());
    }

    #[test]
    fn expires_on_parses_service_and_sdk_forms() {
        for (text, nanos) in [
            ("2022-11-16T09:47:55.688402+00:00", 688_402_000),
            ("2023-06-28T07:30:12.7039383+00:00", 703_938_300),
            ("2023-06-28T07:30:12Z", 0),
        ] {
            let token =
                parse_token_response(format!(r#"{{"token":"t","expiresOn":"{text}"}}"#).as_bytes())
                    .unwrap();
            assert_eq!(token.expires_on.subsec_nanosecond(), nanos, "{text}");
        }
    }

    /// A 2xx body that is not what the API defines is described by where it goes wrong, never
    /// quoted: its values come from whatever server the endpoint names.
    #[test]
    fn invalid_success_bodies_are_not_quoted() {
        let internal = "postgres://app:hunter2@db.internal:5432/prod";
        let token_bodies = [
            serde_json::json!({"token": "t", "expiresOn": internal}),
            serde_json::json!({"token": 7, "expiresOn": internal}),
            serde_json::json!({"token": internal, "expiresOn": 7}),
            serde_json::json!([internal]),
        ];
        for body in token_bodies {
            let err = parse_token_response(body.to_string().as_bytes()).unwrap_err();
            assert!(!err.to_string().contains("db.internal"), "{err}");
        }
        let err = parse_token_response(internal.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains("db.internal"), "{err}");
        let create = serde_json::json!({"identity": {"id": [internal]}});
        let err = parse_create_response(create.to_string().as_bytes()).unwrap_err();
        assert!(!err.to_string().contains("db.internal"), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn invalid_responses_do_not_repeat_a_huge_body() {
        let long = "x".repeat(100_000);
        for body in [
            serde_json::json!({"token": "t", "expiresOn": long}),
            serde_json::json!({"token": "t", "expiresOn": 5, "x": long}),
            serde_json::json!({"token": long.clone(), "expiresOn": {"a": long}}),
            serde_json::json!({"token": 1, "expiresOn": long}),
        ] {
            let err = parse_token_response(body.to_string().as_bytes()).unwrap_err();
            assert!(
                err.to_string().len() < 1024,
                "{} bytes",
                err.to_string().len()
            );
        }
        let body = serde_json::json!({"identity": {"id": 5, "customId": long}});
        let err = parse_create_response(body.to_string().as_bytes()).unwrap_err();
        assert!(
            err.to_string().len() < 1024,
            "{} bytes",
            err.to_string().len()
        );
    }

    #[test]
    fn bad_success_bodies_are_invalid_responses() {
        for body in [
            &b"not json"[..],
            br#"{"token":"t"}"#,
            br#"{"token":"t","expiresOn":"tomorrow"}"#,
            br#"{"token":"","expiresOn":"2023-06-28T07:30:12Z"}"#,
        ] {
            assert!(matches!(
                parse_token_response(body),
                Err(AcsError::InvalidResponse(_))
            ));
        }
        assert!(matches!(
            parse_create_response(br#"{"identity":{"id":""}}"#),
            Err(AcsError::InvalidResponse(_))
        ));
    }

    #[test]
    fn preview_create_answers_carry_custom_id_and_last_issue() {
        let body = br#"{"identity":{"customId":"u-1","id":"8:acs:r_1","lastTokenIssuedAt":"2025-02-10T21:39:39.3244584+00:00"},"accessToken":{"token":"t","expiresOn":"2025-02-11T21:39:39.3244584+00:00"}}"#;
        let created = parse_create_response(body).unwrap();
        assert_eq!(created.custom_id.as_deref(), Some("u-1"));
        assert_eq!(
            created.last_token_issued_at.map(|t| t.to_string()),
            Some("2025-02-10T21:39:39.3244584Z".to_string())
        );
        let (id, token) = created.into_id_and_token().unwrap();
        assert_eq!((id.as_str(), token.token.as_str()), ("8:acs:r_1", "t"));

        let ga = parse_create_response(br#"{"identity":{"id":"8:acs:r_2"}}"#).unwrap();
        assert_eq!((&ga.custom_id, ga.last_token_issued_at), (&None, None));
        assert!(matches!(
            ga.into_id_and_token(),
            Err(AcsError::InvalidResponse(_))
        ));
    }

    #[test]
    fn only_a_create_with_a_custom_id_uses_the_preview_version() {
        let cs: ConnectionString = "endpoint=https://h/;accesskey=pw==".parse().unwrap();
        let client = AcsClient::new(&cs, ClientOptions::default()).unwrap();
        assert_eq!(
            client.url_at("identities", CUSTOM_ID_API_VERSION).as_str(),
            "https://h/identities?api-version=2025-03-02-preview"
        );
        assert_eq!(
            client.url("identities").as_str(),
            "https://h/identities?api-version=2025-06-30"
        );
    }

    #[test]
    fn empty_scopes_are_refused_before_sending() {
        assert!(matches!(scope_names(&[]), Err(AcsError::InvalidRequest(_))));
    }

    #[test]
    fn urls_keep_the_encoded_id_and_api_version() {
        let cs: ConnectionString = "endpoint=https://h:8443/;accesskey=pw==".parse().unwrap();
        let client = AcsClient::new(&cs, ClientOptions::default()).unwrap();
        let url = client.url(&format!(
            "identities/{}/:issueAccessToken",
            encode_identity_id("8:acs:r_u")
        ));
        assert_eq!(
            url.as_str(),
            "https://h:8443/identities/8%3Aacs%3Ar_u/:issueAccessToken?api-version=2025-06-30"
        );
    }

    #[test]
    fn debug_hides_key_and_tokens() {
        let cs: ConnectionString = "endpoint=https://h/;accesskey=c2VjcmV0".parse().unwrap();
        let client = AcsClient::new(&cs, ClientOptions::default()).unwrap();
        assert!(!format!("{client:?}").contains("c2VjcmV0"));
        let token = IssuedToken {
            token: "eyJhbGciOi".into(),
            expires_on: Timestamp::UNIX_EPOCH,
        };
        assert!(!format!("{token:?}").contains("eyJhbGciOi"));
    }

    /// A credential that must never be asked: these tests make no request.
    #[derive(Debug)]
    struct Unused;

    #[async_trait::async_trait]
    impl TokenCredential for Unused {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            unreachable!("no request is made")
        }
    }

    #[test]
    fn bearer_clients_need_https() {
        let https = Url::parse("https://h:8443/").unwrap();
        let client =
            AcsClient::with_bearer(https, Arc::new(Unused), ClientOptions::default()).unwrap();
        assert_eq!(client.auth_scheme(), "Bearer");
        assert!(format!("{client:?}").contains("Bearer"));
        let http = Url::parse("http://127.0.0.1:8080/").unwrap();
        assert!(matches!(
            AcsClient::with_bearer(http, Arc::new(Unused), ClientOptions::default()),
            Err(AcsError::Config(_))
        ));
    }

    #[test]
    fn bad_ca_bundle_is_reported_as_such() {
        let cs: ConnectionString = "endpoint=https://h/;accesskey=pw==".parse().unwrap();
        let options = ClientOptions {
            extra_ca_pem: Some(b"not a certificate".to_vec()),
            ..ClientOptions::default()
        };
        assert!(matches!(
            AcsClient::new(&cs, options),
            Err(AcsError::InvalidCaBundle(_))
        ));
    }
}

//! The emulator's Entra ID side: the token endpoint a workload identity calls, and the check of
//! the bearer tokens it issued when they come back on the ACS endpoints.
//!
//! The request is the one every SDK's workload identity credential (and the `azure_identity`
//! crate) sends: `POST {authority}/{tenant}/oauth2/v2.0/token`, form-encoded, a client
//! credentials grant whose `client_assertion` is the projected service-account token read
//! from `AZURE_FEDERATED_TOKEN_FILE`, for the scope `https://communication.azure.com//.default`
//! (the double slash is how the SDKs write ACS's resource followed by `/.default`).
//!
//! Issued tokens are JWT-shaped and signed with a secret of this emulator instance (not the
//! one of ACS user tokens), carrying `aud` = `https://communication.azure.com`, `tid`,
//! `appid`/`azp` = the client id and `exp`. The assertion must be JWT-shaped; its signature
//! and subject are not checked (the emulator has no federated identity records). Error
//! answers have Entra's shape (`error`, `error_description` starting with an `AADSTS` code,
//! `error_codes`, …); codes follow Entra's documentation, the wording is the emulator's.

use super::federation::{FederatedCredential, Federation};
use super::responses::HttpResponse;
use super::tls::Transport;
use super::tokens::{TokenError, TokenMinter, unix_seconds};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue, PRAGMA};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// The name under which token requests are counted in the admin stats.
pub const OPERATION: &str = "entraToken";

/// The audience of tokens for ACS (the resource of its `/.default` scope).
pub const ACS_AUDIENCE: &str = "https://communication.azure.com";

/// The scopes a client may ask for: ACS's `/.default`, as the SDKs write it (double slash)
/// and in its plain form.
const ACS_SCOPES: [&str; 2] = [
    "https://communication.azure.com//.default",
    "https://communication.azure.com/.default",
];

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What Entra answers for `expires_in` to a client-credentials request.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

/// How the token endpoint behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraConfig {
    /// Tenants that exist; empty: every well-formed tenant id does.
    pub tenants: BTreeSet<String>,
    /// Lifetime of issued tokens (`expires_in`). Zero issues tokens that are already expired,
    /// to test that they are refused.
    pub token_lifetime: Duration,
    /// The federated identity credentials of every application: an application (client id)
    /// without one does not exist, and an assertion is accepted only as one of them allows
    /// (see [`super::federation`]).
    pub federated_credentials: Vec<FederatedCredential>,
    /// PEM certificates to trust, besides the system roots, for the issuers' discovery
    /// documents and keys (e.g. a test API server's CA).
    pub issuer_ca_pem: Option<Vec<u8>>,
}

impl Default for EntraConfig {
    fn default() -> Self {
        Self {
            tenants: BTreeSet::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            federated_credentials: Vec::new(),
            issuer_ca_pem: None,
        }
    }
}

/// Claims of an emulator-issued Entra access token (an app-only v1.0 token, as Entra issues
/// for the ACS resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntraClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub appid: String,
    pub azp: String,
    pub sub: String,
    pub idtyp: String,
    pub ver: String,
    pub uti: String,
}

/// Why a bearer token on an ACS endpoint was refused (each is answered 401 `Denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("Bearer token authentication is not permitted over plain HTTP.")]
    NotTls,
    #[error("The bearer token is malformed.")]
    Malformed,
    #[error("The bearer token was not issued by this emulator's Entra endpoint.")]
    Foreign,
    #[error("The bearer token's audience is not https://communication.azure.com.")]
    WrongAudience,
    #[error("The bearer token is expired.")]
    Expired,
    #[error("The bearer token is not valid yet.")]
    NotYetValid,
}

/// A request to the token endpoint.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The `{tenant}` of the path.
    pub tenant: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The authority as the client reached it (e.g. `https://localhost:8443`), for `iss`.
    pub issuer_base: &'a str,
}

/// The token endpoint and the verifier of what it issued.
#[derive(Debug)]
pub struct EntraService {
    config: EntraConfig,
    minter: TokenMinter,
    federation: Federation,
}

/// A refused token request, in Entra's error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    pub status: StatusCode,
    /// OAuth error: `invalid_request`, `invalid_client`, `unsupported_grant_type`, …
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl EntraError {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: String,
    ) -> Self {
        Self {
            status,
            error,
            code,
            description,
        }
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    fn to_response(&self, now: SystemTime) -> HttpResponse {
        let trace_id = super::state::random_uuid();
        let correlation_id = super::state::random_uuid();
        let timestamp = jiff::Timestamp::try_from(now)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .strftime("%Y-%m-%d %H:%M:%SZ")
            .to_string();
        let body = serde_json::json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        });
        json_response(self.status, &body)
    }
}

/// The successful answer: `{"token_type":"Bearer","expires_in":…,"ext_expires_in":…,"access_token":…}`.
#[derive(Serialize)]
struct TokenResponse {
    token_type: &'static str,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
}

impl EntraService {
    #[cfg(test)]
    pub fn new(config: EntraConfig) -> Self {
        Self::with_secret(config, rand::random())
    }

    /// With the signing secret kept in `--data-dir`, so its tokens outlive a restart.
    pub fn with_secret(config: EntraConfig, secret: [u8; 32]) -> Self {
        let federation = Federation::new(
            config.federated_credentials.clone(),
            config.issuer_ca_pem.clone(),
        );
        Self {
            config,
            minter: TokenMinter::new(secret),
            federation,
        }
    }

    /// Answers a token request.
    pub async fn token(&self, request: &TokenRequest<'_>, now: SystemTime) -> HttpResponse {
        match self.issue(request, now).await {
            Ok(response) => json_response(StatusCode::OK, &response),
            Err(error) => {
                tracing::info!(
                    operation = OPERATION,
                    error = error.error,
                    code = error.code,
                    "token request refused"
                );
                error.to_response(now)
            }
        }
    }

    async fn issue(
        &self,
        request: &TokenRequest<'_>,
        now: SystemTime,
    ) -> Result<TokenResponse, EntraError> {
        let tenant = request.tenant;
        self.check_tenant(tenant)?;
        let is_form = request
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim() == "application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must be application/x-www-form-urlencoded.".into(),
            ));
        }
        let form = Form::parse(request.body);
        let grant_type = form.get("grant_type")?;
        if grant_type != "client_credentials" {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type: only client_credentials is supported by the emulator."
                    .into(),
            ));
        }
        let client_id = form.get("client_id")?;
        let scope = form.get("scope")?;
        if !ACS_SCOPES.contains(&scope) {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid: the emulator issues tokens for {} only.",
                    ACS_SCOPES[0]
                ),
            ));
        }
        let Some(assertion) = form.optional("client_assertion") else {
            return Err(EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
                    .into(),
            ));
        };
        if form.get("client_assertion_type")? != ASSERTION_TYPE {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                format!("client_assertion_type must be {ASSERTION_TYPE}."),
            ));
        }
        // Kubelet's file may end in a newline, which some SDKs send along.
        self.federation
            .check(tenant, client_id, assertion.trim(), unix_seconds(now))
            .await?;
        let iat = unix_seconds(now);
        let lifetime = self.config.token_lifetime.as_secs();
        let claims = EntraClaims {
            aud: ACS_AUDIENCE.into(),
            iss: format!("{}/{tenant}/", request.issuer_base.trim_end_matches('/')),
            iat,
            nbf: iat,
            exp: iat.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
            tid: tenant.into(),
            appid: client_id.into(),
            azp: client_id.into(),
            sub: client_id.into(),
            idtyp: "app".into(),
            ver: "1.0".into(),
            uti: super::state::random_uuid(),
        };
        Ok(TokenResponse {
            token_type: "Bearer",
            expires_in: lifetime,
            ext_expires_in: lifetime,
            access_token: self.minter.sign(&claims),
        })
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), EntraError> {
        let well_formed = !tenant.is_empty()
            && tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        let known = self.config.tenants.is_empty() || self.config.tenants.contains(tenant);
        if well_formed && known {
            return Ok(());
        }
        Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found."),
        ))
    }

    /// Checks a bearer token presented to an ACS endpoint.
    pub fn verify_bearer(
        &self,
        token: &str,
        transport: Transport,
        now: SystemTime,
    ) -> Result<EntraClaims, BearerError> {
        if transport != Transport::Tls {
            return Err(BearerError::NotTls);
        }
        let claims: EntraClaims = self.minter.verify(token).map_err(|e| match e {
            TokenError::Malformed => BearerError::Malformed,
            TokenError::ForeignSignature => BearerError::Foreign,
        })?;
        if claims.aud.trim_end_matches('/') != ACS_AUDIENCE {
            return Err(BearerError::WrongAudience);
        }
        let now = unix_seconds(now);
        if claims.exp <= now {
            return Err(BearerError::Expired);
        }
        if claims.nbf > now {
            return Err(BearerError::NotYetValid);
        }
        Ok(claims)
    }

    /// The federated credentials this Entra side checks assertions against.
    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    /// An Entra access token of a test Teams user (`POST /admin/teamsUsers`).
    pub fn issue_teams_user(&self, claims: &super::teams::TeamsUserClaims) -> String {
        self.minter.sign(claims)
    }

    /// The claims of a Teams user token this emulator's Entra side issued.
    pub fn read_teams_user(
        &self,
        token: &str,
    ) -> Result<super::teams::TeamsUserClaims, TokenError> {
        self.minter.verify(token)
    }

    /// Signs arbitrary claims with the token secret (for tests of the verifier).
    #[cfg(test)]
    fn sign(&self, claims: &EntraClaims) -> String {
        self.minter.sign(claims)
    }
}

/// A url-encoded form; a parameter given twice is refused, like Entra does.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn optional(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn get(&self, name: &str) -> Result<&str, EntraError> {
        if self.0.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90015,
                format!("Requested query string is too long or parameter '{name}' is duplicated."),
            ));
        }
        self.optional(name).ok_or_else(|| EntraError::missing(name))
    }
}

/// Entra's answers: JSON with a charset, never cached.
fn json_response(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const TENANT: &str = "11111111-2222-3333-4444-555555555555";
    const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const ISSUER: &str = "https://issuer.example";
    const SUBJECT: &str = "system:serviceaccount:default:operator";
    /// A body as azure-identity (Python) 1.27.0 sends it: the token file verbatim, so its
    /// trailing newline arrives as `%0A`. ASSERTION stands for a federated assertion.
    const CAPTURED: &str = "client_assertion=ASSERTION%0A&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_id=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee&grant_type=client_credentials&scope=https%3A%2F%2Fcommunication.azure.com%2F%2F.default";

    fn form_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers
    }

    /// A service knowing application CLIENT, federated with SUBJECT of ISSUER, and the
    /// captured body with an assertion of that subject.
    fn federated(config: EntraConfig) -> (EntraService, String) {
        use super::super::federation::test_support::{assertion, signer};
        let (key, jwks) = signer();
        let service = EntraService::new(EntraConfig {
            federated_credentials: vec![FederatedCredential {
                client_id: CLIENT.into(),
                issuer: ISSUER.into(),
                subject: SUBJECT.into(),
                audiences: vec![super::super::federation::DEFAULT_AUDIENCE.into()],
            }],
            ..config
        });
        service.federation.seed_keys(ISSUER, jwks);
        let exp = unix_seconds(SystemTime::now()) + 600;
        let jwt = assertion(
            &key,
            serde_json::json!({"iss": ISSUER, "sub": SUBJECT, "aud": ["api://AzureADTokenExchange"], "exp": exp, "nbf": exp - 600}),
        );
        (service, CAPTURED.replace("ASSERTION", &jwt))
    }

    async fn answer(
        service: &EntraService,
        tenant: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let headers = form_headers();
        let request = TokenRequest {
            tenant,
            headers: &headers,
            body: body.as_bytes(),
            issuer_base: "https://localhost:8443",
        };
        let response = service.token(&request, SystemTime::now()).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_captured_sdk_request_gets_a_token_for_acs() {
        let (service, captured) = federated(EntraConfig::default());
        let (status, body) = answer(&service, TENANT, &captured).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["ext_expires_in"], 3599);
        let token = body["access_token"].as_str().unwrap();
        let claims = service
            .verify_bearer(token, Transport::Tls, SystemTime::now())
            .unwrap();
        assert_eq!(claims.aud, ACS_AUDIENCE);
        assert_eq!(claims.tid, TENANT);
        assert_eq!(
            (claims.appid.as_str(), claims.azp.as_str()),
            (CLIENT, CLIENT)
        );
        assert_eq!(claims.iss, format!("https://localhost:8443/{TENANT}/"));
        assert_eq!(claims.exp - claims.iat, 3599);
    }

    #[tokio::test]
    async fn malformed_requests_get_entra_errors() {
        let (service, captured) = federated(EntraConfig::default());
        let without = |name: &str| {
            captured
                .split('&')
                .filter(|p| !p.starts_with(&format!("{name}=")))
                .collect::<Vec<_>>()
                .join("&")
        };
        let with = |name: &str, value: &str| format!("{}&{name}={value}", without(name));
        let cases = [
            (without("client_id"), 400, "invalid_request", 900144),
            (without("scope"), 400, "invalid_request", 900144),
            (without("client_assertion"), 401, "invalid_client", 7000218),
            (
                with("grant_type", "password"),
                400,
                "unsupported_grant_type",
                70003,
            ),
            (
                with("scope", "https%3A%2F%2Fvault.azure.net%2F.default"),
                400,
                "invalid_scope",
                70011,
            ),
            (
                with("client_assertion_type", "x"),
                400,
                "invalid_request",
                50027,
            ),
            (
                with("client_id", "unknown-app"),
                400,
                "unauthorized_client",
                700016,
            ),
            (
                with("client_assertion", "not-a-jwt"),
                400,
                "invalid_request",
                50027,
            ),
            (
                format!("{captured}&client_id=other"),
                400,
                "invalid_request",
                90015,
            ),
        ];
        for (body, status, error, code) in cases {
            let (got, json) = answer(&service, TENANT, &body).await;
            assert_eq!(got.as_u16(), status, "{body}: {json}");
            assert_eq!(json["error"], error, "{body}");
            assert_eq!(json["error_codes"][0], code, "{body}");
            let description = json["error_description"].as_str().unwrap();
            assert!(
                description.starts_with(&format!("AADSTS{code}: ")),
                "{description}"
            );
        }
    }

    #[tokio::test]
    async fn tenants_can_be_restricted() {
        let (service, captured) = federated(EntraConfig {
            tenants: [TENANT.to_string()].into(),
            ..EntraConfig::default()
        });
        assert_eq!(answer(&service, TENANT, &captured).await.0, StatusCode::OK);
        let (status, json) = answer(&service, "contoso.onmicrosoft.com", &captured).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error_codes"][0], 90002);
        let open = EntraService::new(EntraConfig::default());
        assert_eq!(
            answer(&open, "bad tenant", &captured).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn form_content_type_is_required() {
        let service = EntraService::new(EntraConfig::default());
        let request = TokenRequest {
            tenant: TENANT,
            headers: &HeaderMap::new(),
            body: CAPTURED.as_bytes(),
            issuer_base: "https://localhost",
        };
        let response = service.token(&request, SystemTime::now()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    fn claims(aud: &str, iat: i64, exp: i64) -> EntraClaims {
        EntraClaims {
            aud: aud.into(),
            iss: "https://localhost/t/".into(),
            iat,
            nbf: iat,
            exp,
            tid: TENANT.into(),
            appid: CLIENT.into(),
            azp: CLIENT.into(),
            sub: CLIENT.into(),
            idtyp: "app".into(),
            ver: "1.0".into(),
            uti: "u".into(),
        }
    }

    #[test]
    fn bearer_tokens_are_checked_for_issuer_audience_and_time() {
        use Transport::{PlainHttp, Tls};
        let service = EntraService::new(EntraConfig::default());
        let now = SystemTime::now();
        let t = unix_seconds(now);
        let good = service.sign(&claims(ACS_AUDIENCE, t, t + 60));
        assert!(service.verify_bearer(&good, Tls, now).is_ok());
        let cases = [
            (good.clone(), PlainHttp, BearerError::NotTls),
            ("eyJ.eyJ.x".to_string(), Tls, BearerError::Malformed),
            (
                EntraService::new(EntraConfig::default()).sign(&claims(ACS_AUDIENCE, t, t + 60)),
                Tls,
                BearerError::Foreign,
            ),
            (
                service.sign(&claims("https://vault.azure.net", t, t + 60)),
                Tls,
                BearerError::WrongAudience,
            ),
            (
                service.sign(&claims(ACS_AUDIENCE, t - 60, t)),
                Tls,
                BearerError::Expired,
            ),
            (
                service.sign(&claims(ACS_AUDIENCE, t + 60, t + 120)),
                Tls,
                BearerError::NotYetValid,
            ),
        ];
        for (token, transport, expected) in cases {
            assert_eq!(service.verify_bearer(&token, transport, now), Err(expected));
        }
    }
}

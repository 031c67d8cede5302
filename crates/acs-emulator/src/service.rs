//! One request through the emulator. Data-plane requests pass, in this order: routing, body
//! read, injected faults, authentication (HMAC, or a bearer token from [`super::entra`]),
//! api-version, throttling, body validation and the operation itself; each step can answer
//! instead. An `afterCommit` fault is taken at the same point but strikes after the operation,
//! on its answer. Every data-plane answer carries the service's headers and is counted. Entra token
//! requests go to [`super::entra`] (counted as `entraToken`), admin requests to
//! [`super::admin`].

use super::access::{
    self, EntraAssignmentRequest, EntraPatchRequest, ExchangeRequest,
    TeamsExtensionAssignmentRequest,
};
use super::access_api;
use super::admin;
use super::auth::{AuthError, SignedRequest, Verifier, bearer_token};
use super::entra::{self, EntraService};
use super::faults::{Fault, FaultPlan};
use super::identity_api::{IdentityService, TeamsExchangeRequest, TokensValidFromRequest};
use super::operation::Operation;
use super::responses::{self, ErrorReply, HttpResponse};
use super::routes::{self, AcsRoute, Route, Verb};
use super::stats::{RequestStats, UNROUTED};
use super::teams::{self, TeamsUserClaims};
use super::throttle::{Throttle, ThrottleDecision, retry_after_seconds};
use super::tls::Transport;
use super::validation;
use acs_client::model::{CreateIdentityRequest, IssueTokenRequest};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::header::HOST;
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

/// Request bodies of this API are tiny; anything bigger is refused unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything the emulator knows, shared by all connections.
#[derive(Debug)]
pub struct App {
    pub(super) identities: IdentityService,
    pub(super) verifier: Verifier,
    pub(super) entra: EntraService,
    pub(super) throttle: Mutex<Throttle>,
    pub(super) faults: Mutex<FaultPlan>,
    pub(super) stats: RequestStats,
    /// Over TLS or not: the scheme of quoted URIs and token issuers; bearer tokens need TLS.
    pub(super) transport: Transport,
    /// Whether the retired api-version 2020-07-20-preview2 is served.
    pub(super) retired_versions: bool,
    /// Api-versions answered as retired ([`crate::EmulatorConfig::refused_api_versions`]).
    pub(super) refused_versions: Vec<String>,
}

/// A data-plane request with its body parsed (or the reason it could not be).
enum Call {
    Create(Result<CreateIdentityRequest, ErrorReply>),
    IssueToken(String, Result<IssueTokenRequest, ErrorReply>),
    Revoke(String),
    Delete(String),
    Get(String),
    LegacyIssueToken(String, Result<IssueTokenRequest, ErrorReply>),
    SetTokensValidFrom(String, Result<TokensValidFromRequest, ErrorReply>),
    ExchangeTeamsToken(Result<TeamsExchangeRequest, ErrorReply>),
    TeamsExtensionAssignment {
        verb: Verb,
        tenant_id: String,
        object_id: String,
        /// Read for a PUT only.
        body: Result<TeamsExtensionAssignmentRequest, ErrorReply>,
    },
    ExchangeTeamsExtensionToken(Result<ExchangeRequest, ErrorReply>),
    EntraAssignment {
        verb: Verb,
        object_id: String,
        /// Read for a PUT only.
        body: Result<EntraAssignmentRequest, ErrorReply>,
    },
    ListEntraAssignments,
    PatchEntraAssignments(Result<EntraPatchRequest, ErrorReply>),
    ExchangeEntraToken(Result<ExchangeRequest, ErrorReply>),
}

impl Call {
    fn new(route: AcsRoute, body: &[u8]) -> Self {
        match route {
            AcsRoute::Create => Call::Create(parse_body(body)),
            AcsRoute::IssueToken(id) => Call::IssueToken(id, parse_body(body)),
            AcsRoute::RevokeTokens(id) => Call::Revoke(id),
            AcsRoute::Delete(id) => Call::Delete(id),
            AcsRoute::Get(id) => Call::Get(id),
            AcsRoute::LegacyIssueToken(id) => Call::LegacyIssueToken(id, parse_body(body)),
            AcsRoute::SetTokensValidFrom(id) => Call::SetTokensValidFrom(id, parse_body(body)),
            AcsRoute::ExchangeTeamsToken => Call::ExchangeTeamsToken(parse_body(body)),
            AcsRoute::TeamsExtensionAssignment {
                verb,
                tenant_id,
                object_id,
            } => Call::TeamsExtensionAssignment {
                body: match verb {
                    Verb::Put => parse_body(body),
                    Verb::Get | Verb::Delete => Ok(TeamsExtensionAssignmentRequest::default()),
                },
                verb,
                tenant_id,
                object_id,
            },
            AcsRoute::ExchangeTeamsExtensionToken => {
                Call::ExchangeTeamsExtensionToken(parse_body(body))
            }
            AcsRoute::EntraAssignment { verb, object_id } => Call::EntraAssignment {
                body: match verb {
                    Verb::Put => parse_body(body),
                    Verb::Get | Verb::Delete => Ok(EntraAssignmentRequest::default()),
                },
                verb,
                object_id,
            },
            AcsRoute::ListEntraAssignments => Call::ListEntraAssignments,
            AcsRoute::PatchEntraAssignments => Call::PatchEntraAssignments(parse_body(body)),
            AcsRoute::ExchangeEntraToken => Call::ExchangeEntraToken(parse_body(body)),
        }
    }

    /// The audience of the Entra ID user token that authenticates the request, for the
    /// exchanges of `/access`; `None`: signed with the access key (or an application's
    /// bearer token), like every other request.
    fn entra_user_audience(&self) -> Option<&'static str> {
        match self {
            Call::ExchangeTeamsExtensionToken(_) => Some(access::TEAMS_EXTENSION_AUDIENCE),
            Call::ExchangeEntraToken(_) => Some(access::ENTRA_AUDIENCE),
            _ => None,
        }
    }

    /// What the request is throttled and faulted as. Creating with a first token is its own
    /// operation; the 2020 preview's token and revoke are issue and revoke; a read, the Teams
    /// exchange and the `/access` operations have no limit of their own (the service publishes
    /// none for them; only faults for any operation apply).
    fn operation(&self) -> Option<Operation> {
        Some(match self {
            Call::Create(Ok(body)) if body.create_token_with_scopes.is_some() => {
                Operation::CreateIdentityWithToken
            }
            Call::Create(_) => Operation::CreateIdentity,
            Call::IssueToken(..) | Call::LegacyIssueToken(..) => Operation::IssueToken,
            Call::Revoke(_) | Call::SetTokensValidFrom(..) => Operation::RevokeTokens,
            Call::Delete(_) => Operation::DeleteIdentity,
            Call::Get(_)
            | Call::ExchangeTeamsToken(_)
            | Call::TeamsExtensionAssignment { .. }
            | Call::ExchangeTeamsExtensionToken(_)
            | Call::EntraAssignment { .. }
            | Call::ListEntraAssignments
            | Call::PatchEntraAssignments(_)
            | Call::ExchangeEntraToken(_) => {
                return None;
            }
        })
    }

    /// The name the admin stats count the request under.
    fn name(&self) -> &'static str {
        match (self, self.operation()) {
            (_, Some(operation)) => operation.as_str(),
            (Call::Get(_), None) => "getIdentity",
            (Call::TeamsExtensionAssignment { verb, .. }, None) => match verb {
                Verb::Get => "getTeamsExtensionAssignment",
                Verb::Put => "upsertTeamsExtensionAssignment",
                Verb::Delete => "deleteTeamsExtensionAssignment",
            },
            (Call::ExchangeTeamsExtensionToken(_), None) => "exchangeTeamsExtensionToken",
            (Call::EntraAssignment { verb, .. }, None) => match verb {
                Verb::Get => "getEntraAssignment",
                Verb::Put => "upsertEntraAssignment",
                Verb::Delete => "deleteEntraAssignment",
            },
            (Call::ListEntraAssignments, None) => "listEntraAssignments",
            (Call::PatchEntraAssignments(_), None) => "updateEntraAssignments",
            (Call::ExchangeEntraToken(_), None) => "exchangeEntraToken",
            (_, None) => "exchangeTeamsToken",
        }
    }

    /// Which api-versions have this request.
    fn route_kind(&self) -> validation::RouteKind {
        use validation::RouteKind;
        match self {
            Call::Create(_) | Call::Delete(_) => RouteKind::Everywhere,
            Call::IssueToken(..) | Call::Revoke(_) => RouteKind::Current,
            Call::LegacyIssueToken(..) | Call::SetTokensValidFrom(..) => RouteKind::Legacy,
            Call::Get(_) => RouteKind::PreviewRead,
            Call::ExchangeTeamsToken(_) => RouteKind::TeamsExchange,
            Call::TeamsExtensionAssignment { .. } | Call::ExchangeTeamsExtensionToken(_) => {
                RouteKind::TeamsExtension
            }
            Call::EntraAssignment { .. }
            | Call::ListEntraAssignments
            | Call::PatchEntraAssignments(_)
            | Call::ExchangeEntraToken(_) => RouteKind::Entra,
        }
    }
}

impl App {
    pub async fn handle<B>(&self, request: Request<B>) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let route = routes::route(&parts.method, parts.uri.path());
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(error) => return self.finish(UNROUTED, error.to_response(), &parts, started),
        };
        match route {
            Route::Admin(route) => admin::handle(self, route, parts.uri.query(), &body),
            Route::EntraToken(tenant) => {
                let issuer = self.authority(&parts);
                let request = entra::TokenRequest {
                    tenant: &tenant,
                    headers: &parts.headers,
                    body: &body,
                    issuer_base: &issuer,
                };
                let response = self.entra.token(&request, SystemTime::now()).await;
                self.count(entra::OPERATION, &response, started);
                response
            }
            Route::NotFound => {
                let error = ErrorReply::route_not_found(parts.method.as_str(), parts.uri.path());
                self.finish(UNROUTED, error.to_response(), &parts, started)
            }
            Route::Acs(route) => {
                let call = Call::new(route, &body);
                let name = call.name();
                let response = match self.serve(call, &parts, &body).await {
                    Ok(response) => response,
                    Err(error) => error.to_response(),
                };
                self.finish(name, response, &parts, started)
            }
        }
    }

    async fn serve(
        &self,
        call: Call,
        parts: &Parts,
        body: &[u8],
    ) -> Result<HttpResponse, ErrorReply> {
        let fault = lock(&self.faults).take(call.operation());
        match fault {
            Some(fault) if fault.after_commit => {
                let answer = self.execute(call, parts, body).await;
                apply_fault(fault).await?;
                answer
            }
            Some(fault) => {
                apply_fault(fault).await?;
                self.execute(call, parts, body).await
            }
            None => self.execute(call, parts, body).await,
        }
    }

    /// Authentication, api-version, throttling, and the operation itself.
    async fn execute(
        &self,
        call: Call,
        parts: &Parts,
        body: &[u8],
    ) -> Result<HttpResponse, ErrorReply> {
        let operation = call.operation();
        let name = call.name();
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
        let signed = SignedRequest {
            method: parts.method.as_str(),
            target,
            headers: &parts.headers,
            authority: parts.uri.authority().map(|a| a.as_str()),
            body,
        };
        // The caller of an `/access` exchange is the Entra user whose token it carries.
        let user = match call.entra_user_audience() {
            Some(audience) => Some(
                self.entra_user(parts, audience, SystemTime::now())
                    .inspect_err(|error| {
                        tracing::info!(operation = name, message = %error.message, "request denied");
                    })?,
            ),
            None => {
                if let Err(reason) = self.authenticate(&signed, SystemTime::now()) {
                    tracing::info!(operation = name, %reason, "request denied");
                    return Err(ErrorReply::denied(reason));
                }
                None
            }
        };
        let requested = routes::api_version(parts.uri.query());
        let request_uri = self.request_uri(parts);
        let version = validation::api_version(
            requested.as_deref(),
            &request_uri,
            self.retired_versions,
            &self.refused_versions,
        )?;
        validation::route_in_version(call.route_kind(), version, &request_uri)?;
        if let Some(operation) = operation
            && let ThrottleDecision::Throttled { retry_after } =
                lock(&self.throttle).admit(operation, Instant::now())
        {
            let seconds = retry_after_seconds(retry_after);
            return Err(ErrorReply::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "Rate limit exceeded for {}. Retry after {seconds} seconds.",
                    operation.as_str()
                ),
            )
            .with_retry_after(Some(seconds)));
        }
        let now = SystemTime::now();
        let identities = &self.identities;
        let durable = || async {
            identities
                .store()
                .durable()
                .await
                .map_err(|error| super::identity_api::store_error(error, ""))
        };
        Ok(match call {
            Call::Create(body) if version == validation::LEGACY_API_VERSION => {
                let created = identities.create(version, &body?, now)?;
                durable().await?;
                let identity = serde_json::json!({ "id": created.identity.id });
                responses::success_json(StatusCode::OK, &identity)
            }
            Call::Create(body) => {
                let created = identities.create(version, &body?, now)?;
                durable().await?;
                responses::success_json(StatusCode::CREATED, &created)
            }
            Call::IssueToken(id, body) => {
                let token = identities.issue_token(version, &id, &body?, now)?;
                responses::success_json(StatusCode::OK, &token)
            }
            Call::Revoke(id) => {
                identities.revoke(&id)?;
                durable().await?;
                responses::no_content()
            }
            Call::Delete(id) => {
                identities.delete(&id)?;
                durable().await?;
                responses::no_content()
            }
            Call::Get(id) => responses::success_json(StatusCode::OK, &identities.get(&id)?),
            Call::LegacyIssueToken(id, body) => {
                let token = identities.legacy_issue_token(&id, &body?, now)?;
                responses::success_json(StatusCode::OK, &token)
            }
            Call::SetTokensValidFrom(id, body) => {
                identities.set_tokens_valid_from(&id, &body?, now)?;
                durable().await?;
                responses::no_content()
            }
            Call::ExchangeTeamsToken(body) => {
                let token = self.exchange_teams_token(&body?, now)?;
                responses::success_json(StatusCode::OK, &token)
            }
            Call::TeamsExtensionAssignment {
                verb,
                tenant_id,
                object_id,
                body,
            } => {
                access_api::teams_extension_assignment(
                    identities.store(),
                    verb,
                    &tenant_id,
                    &object_id,
                    body,
                )
                .await?
            }
            Call::ExchangeTeamsExtensionToken(body) => {
                body?;
                let user = user.ok_or_else(no_user)?;
                access_api::exchange_teams_extension(identities, &user, now)
                    .inspect_err(|error| {
                        tracing::info!(operation = name, message = %error.message, "exchange refused");
                    })?
            }
            Call::EntraAssignment {
                verb,
                object_id,
                body,
            } => access_api::entra_assignment(identities.store(), verb, &object_id, body).await?,
            Call::ListEntraAssignments => {
                access_api::list_entra(identities.store(), parts.uri.query(), &request_uri, version)
            }
            Call::PatchEntraAssignments(body) => {
                access_api::patch_entra(identities.store(), body).await?
            }
            Call::ExchangeEntraToken(body) => {
                body?;
                let user = user.ok_or_else(no_user)?;
                access_api::exchange_entra(identities, &user, now).inspect_err(|error| {
                    tracing::info!(operation = name, message = %error.message, "exchange refused");
                })?
            }
        })
    }

    /// The Entra ID user a request's `Authorization: Bearer` token names, checked as the Teams
    /// exchange checks its token; bearer tokens only count over HTTPS, as everywhere.
    fn entra_user(
        &self,
        parts: &Parts,
        audience: &str,
        now: SystemTime,
    ) -> Result<TeamsUserClaims, ErrorReply> {
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            teams::invalid_token(
                "the request carries no Entra ID access token (Authorization: Bearer)",
            )
        })?;
        if self.transport != Transport::Tls {
            return Err(teams::invalid_token(
                "bearer tokens are accepted over HTTPS only",
            ));
        }
        teams::user_token(
            token,
            |token| self.entra.read_teams_user(token),
            audience,
            super::tokens::unix_seconds(now),
        )
    }

    /// `POST /teamsUser/:exchangeAccessToken`: checks the Teams user's Entra token against
    /// the request, then mints an ACS token for that Teams identity.
    fn exchange_teams_token(
        &self,
        body: &TeamsExchangeRequest,
        now: SystemTime,
    ) -> Result<acs_client::model::AccessTokenBody, ErrorReply> {
        let user = super::teams::check_exchange(
            body,
            |token| self.entra.read_teams_user(token),
            super::tokens::unix_seconds(now),
        )
        .inspect_err(|error| {
            tracing::info!(code = error.code, message = %error.message, "Teams token exchange refused");
        })?;
        Ok(self.identities.mint_teams(&user, now))
    }

    /// A bearer token is checked against what the Entra endpoint issued; anything else must be
    /// HMAC-signed with the access key.
    fn authenticate(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<(), AuthError> {
        match bearer_token(request.headers) {
            Some(token) => {
                let claims = self.entra.verify_bearer(token, self.transport, now)?;
                tracing::debug!(tenant = %claims.tid, client = %claims.appid, "bearer accepted");
                self.stats.record_bearer(&claims.appid);
                Ok(())
            }
            None => self.verifier.verify(request, now),
        }
    }

    /// `scheme://host[:port]` as the client addressed this server.
    fn authority(&self, parts: &Parts) -> String {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        format!("{}://{host}", self.transport.scheme())
    }

    fn request_uri(&self, parts: &Parts) -> String {
        format!("{}{}", self.authority(parts), parts.uri.path())
    }

    /// Counts an answer in the stats and logs it (no body, no header: they may hold secrets).
    fn count(&self, operation: &'static str, response: &HttpResponse, started: Instant) {
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.stats.record(operation, status);
        tracing::debug!(
            operation,
            status,
            elapsed_us = elapsed.as_micros() as u64,
            "served"
        );
    }

    fn finish(
        &self,
        operation: &'static str,
        mut response: HttpResponse,
        parts: &Parts,
        started: Instant,
    ) -> HttpResponse {
        self.count(operation, &response, started);
        let elapsed = started.elapsed();
        responses::add_service_headers(
            &mut response,
            parts.headers.get("x-ms-client-request-id"),
            elapsed,
        );
        response
    }
}

/// An exchange reached without its user: cannot happen, as authentication finds the user
/// first; answered as a refused token rather than a panic.
fn no_user() -> ErrorReply {
    teams::invalid_token("the request carries no Entra ID access token")
}

/// An injected fault: waits, then answers its status if it has one.
async fn apply_fault(fault: Fault) -> Result<(), ErrorReply> {
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    let Some(status) = fault.status else {
        return Ok(());
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::INTERNAL_SERVER_ERROR => "InternalServerError",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "InjectedFault",
    };
    Err(ErrorReply::new(
        status,
        code,
        "Fault injected through the emulator admin API.",
    )
    .with_retry_after(fault.retry_after_seconds))
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; recover rather than propagate if it did.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn read_body<B>(body: B) -> Result<Bytes, ErrorReply>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ErrorReply::body_too_large(MAX_BODY_BYTES))
        }
        Err(error) => Err(ErrorReply::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            format!("The request body could not be read: {error}"),
        )),
    }
}

/// An empty body (the SDKs send `Content-Length: 0` on create) or JSON `null` reads as `{}`.
pub(super) fn parse_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ErrorReply> {
    let text = body.trim_ascii();
    if text.is_empty() {
        return Ok(T::default());
    }
    // serde would also read a struct from a JSON array; the service takes objects only.
    if text.first() == Some(&b'[') {
        return Err(ErrorReply::malformed_body("expected a JSON object"));
    }
    serde_json::from_slice::<Option<T>>(text)
        .map(Option::unwrap_or_default)
        .map_err(ErrorReply::malformed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_null_and_spaced_bodies() {
        let empty: CreateIdentityRequest = parse_body(b"").unwrap();
        assert_eq!(empty, CreateIdentityRequest::default());
        let null: CreateIdentityRequest = parse_body(b"null").unwrap();
        assert_eq!(null, CreateIdentityRequest::default());
        let python: CreateIdentityRequest =
            parse_body(br#"{"createTokenWithScopes": ["chat", "voip"], "expiresInMinutes": 60}"#)
                .unwrap();
        assert_eq!(python.expires_in_minutes, Some(60));
        let old_python: IssueTokenRequest =
            parse_body(br#"{"scopes":["chat"],"expiresInMinutes":null}"#).unwrap();
        assert_eq!(old_python.expires_in_minutes, None);
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"scopes":"chat"}"#,
            br#"{"expiresInMinutes":60.5}"#,
        ] {
            let error = parse_body::<IssueTokenRequest>(body).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn create_with_scopes_is_its_own_operation() {
        let plain = Call::new(AcsRoute::Create, b"");
        assert_eq!(plain.operation(), Some(Operation::CreateIdentity));
        let with_token = Call::new(AcsRoute::Create, br#"{"createTokenWithScopes":["chat"]}"#);
        assert_eq!(
            with_token.operation(),
            Some(Operation::CreateIdentityWithToken)
        );
        let nulls = Call::new(AcsRoute::Create, br#"{"createTokenWithScopes":null}"#);
        assert_eq!(nulls.operation(), Some(Operation::CreateIdentity));
        assert_eq!(
            Call::new(AcsRoute::Get("i".into()), b"").name(),
            "getIdentity"
        );
        assert_eq!(
            Call::new(AcsRoute::ExchangeTeamsToken, b"").name(),
            "exchangeTeamsToken"
        );
    }
}

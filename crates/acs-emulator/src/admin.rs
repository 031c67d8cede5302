//! The emulator's admin API: what a test needs to see and steer that the ACS API itself does
//! not offer. Served on the same listener as the data plane, without authentication (the
//! emulator is a local tool), JSON in and out. Admin requests are not counted, throttled or
//! faulted.
//!
//! | request | body | answer |
//! |---|---|---|
//! | `GET /admin/health` | – | `200 {"status":"ok"}` |
//! | `GET /admin/identities[?limit=N&continue=C]` | – | `200 {"identities":[{"id":"8:acs:…","customId"?:"…","deleted":false,"tokensIssued":2,"revocations":1}],"continue"?:"…"}`, oldest first, deleted ones included; `customId` only when created with one. Without `limit`, all of them; with it (1..=5000), at most that many, and `continue` when more follow, to pass back for the next page |
//! | `POST /admin/identities:seed` | `{"identities":[{"scopes":["chat"],"expiresInMinutes":1440,"issuedAt":1700000000}]}` (1..=5000 entries, within the 64 KiB body limit; `expiresInMinutes` 60..=1440, default 1440; `issuedAt` unix seconds, default now, may lie in the past) | `201 {"identities":[{"id":"8:acs:…","token":"…","expiresOn":"…"}]}`, in the order asked: each a new identity with one token, as a client that created them earlier would hold them (benchmarks seed a previous operator's state with it). Not counted or throttled like every admin request |
//! | `POST /admin/tokens:verify` | `{"token":"…"}` | `200 {"valid":true,"reason":"ok"}`; `reason` is one of `ok`, `expired`, `revoked`, `deleted`, `unknown` (not issued by this emulator instance), `malformed` |
//! | `GET /admin/stats` | – | `200 {"total":7,"operations":{"issueToken":{"200":5,"429":1},"unknown":{"404":1}}}`: data-plane requests by operation and answered status; Entra token requests count as `entraToken` |
//! | `DELETE /admin/stats` | – | `204`, counters back to zero |
//! | `POST /admin/faults` | see below | `201 {"faults":[…pending…]}` |
//! | `GET /admin/faults` | – | `200 {"faults":[…pending, with remaining counts…]}` |
//! | `DELETE /admin/faults` | – | `204`, no faults pending |
//! | `GET /admin/throttle` | – | `200` the throttle configuration (below) |
//! | `POST /admin/throttle` | a throttle configuration | `200` the configuration now in force; windows restart |
//! | `POST /admin/teamsUsers` | `{"appId":"…","userId"?,"tenantId"?,"lifetimeSeconds"?,"audience"?,"groups"?:[…]}` | `201 {"token","appId","userId","tenantId","expiresOn"}`: an Entra ID access token of a test Teams user, for `POST /teamsUser/:exchangeAccessToken` and `POST /access/teamsExtension/:exchangeAccessToken`; `userId` and `tenantId` random when absent, an hour's lifetime (0 or less: already expired), the exchanges' audience `https://auth.msft.communication.azure.com` unless another is asked for (`https://communication.azure.com/clients` for `POST /access/entra/:exchangeAccessToken`); `groups`: the object ids of the user's groups (the token's `groups` claim) |
//!
//! A fault: `{"operation":"issueToken","count":2,"status":503,"retryAfterSeconds":2}` makes the
//! next two `issueToken` requests answer 503 with `Retry-After: 2`;
//! `{"operation":null,"count":1,"delayMs":1500}` delays the next data-plane request of any
//! operation by 1.5 s and then serves it normally; `status` and `delayMs` together delay, then
//! fail. `"afterCommit":true` serves the request first (its change is kept) and then delays
//! and/or replaces its answer: the client sees a failure or a timeout for a request that took
//! effect. `operation` is one of `createIdentity` (matches both kinds of create),
//! `createIdentityWithToken` (alias `createUserAndToken`), `issueToken`, `revokeTokens`,
//! `deleteIdentity`, or `null` for any;
//! `count` defaults to 1; `status` must be 400..=599. Faults are taken before authentication,
//! in the order they were added, one per request. The error body is
//! `{"error":{"code":"ServiceUnavailable"|"TooManyRequests"|"InternalServerError"|"InjectedFault","message":"…"}}`.
//!
//! A throttle configuration:
//! `{"enabled":true,"windowSeconds":30,"limits":{"createIdentity":1000,"createIdentityWithToken":1000,"issueToken":1000,"revokeTokens":500,"deleteIdentity":500}}`.
//! Every field may be left out: `enabled` defaults to true, `windowSeconds` to 30, and an
//! operation missing from `limits` keeps its service default. `{"enabled":false}` turns
//! throttling off.
//!
//! Malformed admin requests answer `400 {"error":{"code":"BadRequest","message":"…"}}`.

use super::faults::FaultSpec;
use super::responses::{ErrorReply, HttpResponse, admin_json};
use super::routes::AdminRoute;
use super::service::{App, lock, parse_body};
use super::throttle::ThrottleConfig;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdentityView {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_id: Option<String>,
    deleted: bool,
    tokens_issued: u64,
    revocations: u64,
}

#[derive(Serialize)]
struct IdentitiesView {
    identities: Vec<IdentityView>,
    /// Present when more identities follow: pass it as `continue` for the next page.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
}

/// The largest page `limit` accepted.
pub const MAX_PAGE: usize = 5000;

/// A listing's `limit` and `continue` query parameters: how many, and after which creation
/// order. Without `limit`, everything.
fn page_request(query: Option<&str>) -> Result<(u64, usize), ErrorReply> {
    let mut after = 0;
    let mut limit = usize::MAX;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        bad_request(format!(
                            "`limit` must be a whole number from 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            "continue" => {
                after = value
                    .strip_prefix('o')
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| {
                        bad_request("`continue` must be the value a previous page returned")
                    })?;
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// The largest `POST /admin/identities:seed` accepted.
pub const MAX_SEED: usize = 5000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedRequest {
    identities: Vec<SeedEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedEntry {
    scopes: Vec<String>,
    #[serde(default)]
    expires_in_minutes: Option<u32>,
    /// Unix seconds.
    #[serde(default)]
    issued_at: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SeededView {
    id: String,
    token: String,
    expires_on: String,
}

/// Creates the identities and tokens of a `POST /admin/identities:seed`, after checking the
/// whole request: a bad entry creates nothing.
fn seed(app: &App, body: &[u8], now: SystemTime) -> Result<HttpResponse, ErrorReply> {
    let request: SeedRequest = serde_json::from_slice(body).map_err(bad_request)?;
    if !(1..=MAX_SEED).contains(&request.identities.len()) {
        return Err(bad_request(format!(
            "`identities` must hold 1 to {MAX_SEED} entries"
        )));
    }
    let mut checked = Vec::with_capacity(request.identities.len());
    for entry in &request.identities {
        let scopes = entry
            .scopes
            .iter()
            .map(|s| s.parse::<acs_client::Scope>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad_request(format!("unknown scope in {:?}", entry.scopes)))?;
        if scopes.is_empty() {
            return Err(bad_request("`scopes` must not be empty"));
        }
        let minutes = entry.expires_in_minutes.unwrap_or(1440);
        if !(60..=1440).contains(&minutes) {
            return Err(bad_request("`expiresInMinutes` must be 60 to 1440"));
        }
        let at = entry.issued_at.map_or(now, |s| {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)
        });
        if at > now {
            return Err(bad_request("`issuedAt` must not lie in the future"));
        }
        checked.push((scopes, minutes, at));
    }
    let mut seeded = Vec::with_capacity(checked.len());
    for (scopes, minutes, at) in checked {
        let (id, token) = app.identities.seed(&scopes, minutes, at)?;
        seeded.push(SeededView {
            id,
            token: token.token,
            expires_on: token.expires_on,
        });
    }
    Ok(admin_json(
        StatusCode::CREATED,
        &serde_json::json!({ "identities": seeded }),
    ))
}

#[derive(Default, Deserialize)]
struct VerifyRequest {
    token: Option<String>,
}

/// Throttle configuration as posted: every field optional.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ThrottleUpdate {
    enabled: Option<bool>,
    window_seconds: Option<u64>,
    #[serde(default)]
    limits: std::collections::BTreeMap<String, u32>,
}

pub(super) fn handle(
    app: &App,
    route: AdminRoute,
    query: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    match answer(app, route, query, body) {
        Ok(response) => response,
        Err(error) => error.to_response(),
    }
}

fn answer(
    app: &App,
    route: AdminRoute,
    query: Option<&str>,
    body: &[u8],
) -> Result<HttpResponse, ErrorReply> {
    Ok(match route {
        AdminRoute::Health => admin_json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        AdminRoute::ListIdentities => {
            let (after, limit) = page_request(query)?;
            let (page, next) = app.identities.store().page(after, limit);
            let identities: Vec<IdentityView> = page
                .into_iter()
                .map(|s| IdentityView {
                    id: s.id,
                    custom_id: s.custom_id,
                    deleted: s.deleted,
                    tokens_issued: s.tokens_issued,
                    revocations: s.revocations,
                })
                .collect();
            let continue_token = next.map(|order| format!("o{order}"));
            admin_json(
                StatusCode::OK,
                &IdentitiesView {
                    identities,
                    continue_token,
                },
            )
        }
        AdminRoute::SeedIdentities => seed(app, body, SystemTime::now())?,
        AdminRoute::VerifyToken => {
            let request: VerifyRequest = parse_body(body).map_err(bad_request)?;
            let token = request
                .token
                .ok_or_else(|| bad_request("`token` is required"))?;
            let verdict = app.identities.verify(&token, SystemTime::now());
            admin_json(
                StatusCode::OK,
                &serde_json::json!({
                    "valid": verdict == super::identity_api::TokenVerdict::Ok,
                    "reason": verdict,
                }),
            )
        }
        AdminRoute::Stats => admin_json(StatusCode::OK, &app.stats.view()),
        AdminRoute::ResetStats => {
            app.stats.reset();
            super::responses::no_content()
        }
        AdminRoute::ListFaults => faults_view(app, StatusCode::OK),
        AdminRoute::AddFault => {
            let spec: FaultSpec = serde_json::from_slice(body).map_err(bad_request)?;
            lock(&app.faults).add(&spec).map_err(bad_request)?;
            faults_view(app, StatusCode::CREATED)
        }
        AdminRoute::ClearFaults => {
            lock(&app.faults).clear();
            super::responses::no_content()
        }
        AdminRoute::GetThrottle => admin_json(StatusCode::OK, lock(&app.throttle).config()),
        AdminRoute::SetThrottle => {
            let update: ThrottleUpdate = parse_body(body).map_err(bad_request)?;
            let defaults = ThrottleConfig::default();
            let config = ThrottleConfig {
                enabled: update.enabled.unwrap_or(true),
                window_seconds: update.window_seconds.unwrap_or(defaults.window_seconds),
                limits: update.limits,
            }
            .normalized()
            .map_err(bad_request)?;
            let mut throttle = lock(&app.throttle);
            throttle.reconfigure(config);
            admin_json(StatusCode::OK, throttle.config())
        }
        AdminRoute::IssueTeamsUserToken => {
            let spec: super::teams::TeamsUserSpec = parse_body(body).map_err(bad_request)?;
            let now = SystemTime::now();
            let claims = spec
                .claims(super::tokens::unix_seconds(now))
                .map_err(bad_request)?;
            let token = app.entra.issue_teams_user(&claims);
            admin_json(
                StatusCode::CREATED,
                &serde_json::json!({
                    "token": token,
                    "appId": claims.appid,
                    "userId": claims.oid,
                    "tenantId": claims.tid,
                    "expiresOn": super::tokens::format_expires_on(claims.exp),
                }),
            )
        }
        AdminRoute::AddFederatedCredential => {
            let credential: super::federation::FederatedCredential =
                serde_json::from_slice(body).map_err(bad_request)?;
            app.entra.federation().add(credential);
            admin_json(
                StatusCode::CREATED,
                &serde_json::json!({"federatedCredentials": app.entra.federation().credentials()}),
            )
        }
        AdminRoute::ListFederatedCredentials => admin_json(
            StatusCode::OK,
            &serde_json::json!({"federatedCredentials": app.entra.federation().credentials()}),
        ),
    })
}

fn faults_view(app: &App, status: StatusCode) -> HttpResponse {
    let pending = lock(&app.faults).pending();
    admin_json(status, &serde_json::json!({ "faults": pending }))
}

fn bad_request(reason: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(StatusCode::BAD_REQUEST, "BadRequest", reason.to_string())
}

//! Teams users: the Entra ID tokens of test Teams users (made by `POST /admin/teamsUsers`) and
//! their exchange for an ACS token, `POST /teamsUser/:exchangeAccessToken`
//! (`{"token","appId","userId"}`), as `get_token_for_teams_user` (Python) and
//! `getTokenForTeamsUser` (JS) send it.
//!
//! The exchange checks, in order: the three fields are present (400 `ValidationError` naming
//! the field, as recorded from the service); the token is one the emulator's Entra side issued
//! to a user, with the audience of the ACS Teams exchange, not expired and already valid (401
//! `InvalidAccessToken`, the recorded code, with a message naming what is wrong); `appId` is the
//! token's application and `userId` its user (400 `ValidationError`, the recorded wording for
//! the application). What it answers is an ACS token for the Teams identity `8:orgid:<userId>`
//! that expires with the Entra token.

use super::identity_api::TeamsExchangeRequest;
use super::responses::ErrorReply;
use super::tokens::TokenError;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

/// The audience of Entra tokens for the ACS Teams exchange (the resource of its
/// `Teams.ManageCalls` / `Teams.ManageChats` scopes).
pub const TEAMS_AUDIENCE: &str = "https://auth.msft.communication.azure.com";

/// Claims of an emulator-issued Entra access token of a Teams user (delegated, v1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamsUserClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    /// The Entra application the user signed in to.
    pub appid: String,
    /// The user's object id.
    pub oid: String,
    pub sub: String,
    pub scp: String,
    pub idtyp: String,
    pub ver: String,
    pub uti: String,
    /// The object ids of the user's groups (Entra's `groups` claim), for the group
    /// assignments of `/access/entra`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// What `POST /admin/teamsUsers` takes: the application, and optionally the user, tenant,
/// lifetime (seconds; 0 or less makes an expired token) and audience (to make a wrong one).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamsUserSpec {
    pub app_id: Option<String>,
    pub user_id: Option<String>,
    pub tenant_id: Option<String>,
    pub lifetime_seconds: Option<i64>,
    pub audience: Option<String>,
    pub groups: Option<Vec<String>>,
}

/// A Teams user token lives an hour unless asked otherwise, like Entra's.
pub const DEFAULT_LIFETIME_SECONDS: i64 = 3600;

impl TeamsUserSpec {
    /// The claims of the token to issue at `now` (Unix seconds), or why the spec is refused.
    pub fn claims(&self, now: i64) -> Result<TeamsUserClaims, String> {
        let app_id = self
            .app_id
            .clone()
            .filter(|a| !a.trim().is_empty())
            .ok_or("`appId` is required: the Entra application the user signed in to")?;
        let user_id = self
            .user_id
            .clone()
            .unwrap_or_else(super::state::random_uuid);
        let tenant_id = self
            .tenant_id
            .clone()
            .unwrap_or_else(super::state::random_uuid);
        if user_id.is_empty() || tenant_id.is_empty() {
            return Err("`userId` and `tenantId` must not be empty".into());
        }
        let lifetime = self.lifetime_seconds.unwrap_or(DEFAULT_LIFETIME_SECONDS);
        let iat = now.min(now.saturating_add(lifetime));
        Ok(TeamsUserClaims {
            aud: self
                .audience
                .clone()
                .unwrap_or_else(|| TEAMS_AUDIENCE.into()),
            iss: format!("https://sts.windows.net/{tenant_id}/"),
            iat,
            nbf: iat,
            exp: now.saturating_add(lifetime),
            tid: tenant_id,
            appid: app_id,
            oid: user_id.clone(),
            sub: user_id,
            scp: "Teams.ManageCalls Teams.ManageChats".into(),
            idtyp: "user".into(),
            ver: "1.0".into(),
            uti: super::state::random_uuid(),
            groups: self.groups.clone().unwrap_or_default(),
        })
    }
}

/// The token's claims when the exchange may go ahead. `read` checks the token's signature
/// (the emulator's Entra secret); `now` is in Unix seconds.
pub fn check_exchange(
    request: &TeamsExchangeRequest,
    read: impl FnOnce(&str) -> Result<TeamsUserClaims, TokenError>,
    now: i64,
) -> Result<TeamsUserClaims, ErrorReply> {
    let token = required(request.token.as_deref(), "Token")?;
    let app_id = required(request.app_id.as_deref(), "AppId")?;
    let user_id = required(request.user_id.as_deref(), "UserId")?;
    let claims = user_token(token, read, TEAMS_AUDIENCE, now)?;
    if claims.appid != app_id {
        return Err(ErrorReply::validation(
            "AAD application is not the expected one.",
            "appId",
        ));
    }
    if claims.oid != user_id {
        return Err(ErrorReply::validation(
            "AAD user is not the expected one.",
            "userId",
        ));
    }
    Ok(claims)
}

/// The claims of an Entra ID access token of a user, when it is one the emulator's Entra side
/// issued for `audience`, not expired and already valid; else 401 `InvalidAccessToken` naming
/// what is wrong. Every exchange of a user's Entra token checks it this way.
pub fn user_token(
    token: &str,
    read: impl FnOnce(&str) -> Result<TeamsUserClaims, TokenError>,
    audience: &str,
    now: i64,
) -> Result<TeamsUserClaims, ErrorReply> {
    let claims = read(token).map_err(|error| {
        invalid_token(match error {
            TokenError::Malformed => "it is not an Entra ID access token of a Teams user",
            TokenError::ForeignSignature => "it was not issued by the emulator's Entra ID",
        })
    })?;
    if claims.aud.trim_end_matches('/') != audience {
        return Err(invalid_token(&format!(
            "its audience is '{}', not '{audience}'",
            claims.aud
        )));
    }
    if claims.exp <= now {
        return Err(invalid_token("it is expired"));
    }
    if claims.nbf > now {
        return Err(invalid_token("it is not valid yet"));
    }
    Ok(claims)
}

fn required<'a>(value: Option<&'a str>, field: &'static str) -> Result<&'a str, ErrorReply> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        ErrorReply::validation(format!("{field}: The {field} field is required."), field)
    })
}

pub fn invalid_token(reason: &str) -> ErrorReply {
    ErrorReply::new(
        StatusCode::UNAUTHORIZED,
        "InvalidAccessToken",
        format!("Provided access token is not valid: {reason}."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000;

    fn spec() -> TeamsUserSpec {
        TeamsUserSpec {
            app_id: Some("app-1".into()),
            user_id: Some("user-1".into()),
            tenant_id: Some("tenant-1".into()),
            ..TeamsUserSpec::default()
        }
    }

    fn request(token: Option<&str>, app: Option<&str>, user: Option<&str>) -> TeamsExchangeRequest {
        TeamsExchangeRequest {
            token: token.map(str::to_string),
            app_id: app.map(str::to_string),
            user_id: user.map(str::to_string),
        }
    }

    /// The exchange's answer for a token with `claims` (or a read failure).
    fn answer(
        claims: Result<TeamsUserClaims, TokenError>,
        app: &str,
        user: &str,
    ) -> Result<TeamsUserClaims, ErrorReply> {
        check_exchange(&request(Some("t"), Some(app), Some(user)), |_| claims, NOW)
    }

    #[test]
    fn a_matching_token_is_exchanged() {
        let claims = spec().claims(NOW).unwrap();
        assert_eq!(claims.exp, NOW + 3600);
        assert_eq!(claims.aud, TEAMS_AUDIENCE);
        assert_eq!(answer(Ok(claims.clone()), "app-1", "user-1"), Ok(claims));
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let good = spec().claims(NOW).unwrap();
        let expired = TeamsUserSpec {
            lifetime_seconds: Some(0),
            ..spec()
        }
        .claims(NOW)
        .unwrap();
        let elsewhere = TeamsUserSpec {
            audience: Some("https://communication.azure.com".into()),
            ..spec()
        }
        .claims(NOW)
        .unwrap();
        let future = TeamsUserClaims {
            nbf: NOW + 60,
            ..good.clone()
        };
        /// The token read, `appId`, `userId`; the status, code and message expected.
        type Case = (
            Result<TeamsUserClaims, TokenError>,
            &'static str,
            &'static str,
            u16,
            &'static str,
            &'static str,
        );
        let cases: [Case; 7] = [
            (
                Err(TokenError::Malformed),
                "app-1",
                "user-1",
                401,
                "InvalidAccessToken",
                "not an Entra ID access token",
            ),
            (
                Err(TokenError::ForeignSignature),
                "app-1",
                "user-1",
                401,
                "InvalidAccessToken",
                "not issued by the emulator",
            ),
            (
                Ok(expired),
                "app-1",
                "user-1",
                401,
                "InvalidAccessToken",
                "expired",
            ),
            (
                Ok(elsewhere),
                "app-1",
                "user-1",
                401,
                "InvalidAccessToken",
                "audience",
            ),
            (
                Ok(future),
                "app-1",
                "user-1",
                401,
                "InvalidAccessToken",
                "not valid yet",
            ),
            (
                Ok(good.clone()),
                "app-2",
                "user-1",
                400,
                "ValidationError",
                "AAD application is not the expected one.",
            ),
            (
                Ok(good),
                "app-1",
                "user-2",
                400,
                "ValidationError",
                "AAD user is not the expected one.",
            ),
        ];
        for (claims, app, user, status, code, message) in cases {
            let error = answer(claims, app, user).unwrap_err();
            assert_eq!(error.status.as_u16(), status, "{message}");
            assert_eq!(error.code, code, "{message}");
            assert!(error.message.contains(message), "{}", error.message);
        }
    }

    #[test]
    fn missing_fields_are_validation_errors_before_the_token_is_read() {
        let cases = [
            (request(None, Some("a"), Some("u")), "Token"),
            (request(Some(""), Some("a"), Some("u")), "Token"),
            (request(Some("t"), Some(""), Some("u")), "AppId"),
            (request(Some("t"), Some("a"), None), "UserId"),
        ];
        for (request, field) in cases {
            let error = check_exchange(&request, |_| panic!("read"), NOW).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert_eq!(error.target, Some(field));
            assert_eq!(
                error.message,
                format!("{field}: The {field} field is required.")
            );
        }
    }

    #[test]
    fn a_spec_needs_an_application() {
        assert!(TeamsUserSpec::default().claims(NOW).is_err());
        let random = TeamsUserSpec {
            app_id: Some("a".into()),
            ..TeamsUserSpec::default()
        }
        .claims(NOW)
        .unwrap();
        assert_eq!(random.oid.len(), 36);
    }
}

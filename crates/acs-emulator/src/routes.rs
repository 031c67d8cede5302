//! Maps a request's method and raw path to what the emulator should do with it. Pure: no
//! state, no I/O, so every path form the SDKs send is checked in a table test.

use hyper::Method;
use percent_encoding::percent_decode_str;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Acs(AcsRoute),
    Admin(AdminRoute),
    /// `POST /{tenant}/oauth2/v2.0/token`: Entra's token endpoint, for this tenant.
    EntraToken(String),
    /// No such resource or method; answered 404.
    NotFound,
}

/// A data-plane request. Identity ids are percent-decoded: the SDKs send `8%3Aacs%3A…`, the
/// Python aiohttp transport sends `8:acs:…`, and both name the same identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcsRoute {
    Create,
    IssueToken(String),
    RevokeTokens(String),
    Delete(String),
    /// `GET /identities/{id}` (preview api-versions).
    Get(String),
    /// `POST /identities/{id}/token` (2020-07-20-preview2).
    LegacyIssueToken(String),
    /// `PATCH /identities/{id}` with `tokensValidFrom` (2020-07-20-preview2).
    SetTokensValidFrom(String),
    /// `POST /teamsUser/:exchangeAccessToken`.
    ExchangeTeamsToken,
    /// `POST /access/teamsExtension/:exchangeAccessToken`.
    ExchangeTeamsExtensionToken,
    /// `POST /access/entra/:exchangeAccessToken`.
    ExchangeEntraToken,
    /// `GET /access/entra/assignments`.
    ListEntraAssignments,
    /// `PATCH /access/entra/assignments`.
    PatchEntraAssignments,
    /// `/access/entra/assignments/{objectId}`.
    EntraAssignment {
        verb: Verb,
        object_id: String,
    },
    /// `/access/teamsExtension/tenants/{tenantId}/assignments/{objectId}`.
    TeamsExtensionAssignment {
        verb: Verb,
        tenant_id: String,
        object_id: String,
    },
}

/// What a request does to the one resource its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    /// Create or replace.
    Put,
    Delete,
}

impl Verb {
    fn of(method: &Method) -> Option<Self> {
        match *method {
            Method::GET => Some(Verb::Get),
            Method::PUT => Some(Verb::Put),
            Method::DELETE => Some(Verb::Delete),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    Health,
    ListIdentities,
    /// `POST /admin/identities:seed`: identities with a token each, made at once.
    SeedIdentities,
    VerifyToken,
    Stats,
    ResetStats,
    ListFaults,
    AddFault,
    ClearFaults,
    GetThrottle,
    SetThrottle,
    /// `POST /admin/teamsUsers`: an Entra token of a test Teams user.
    IssueTeamsUserToken,
    /// `POST /admin/federatedCredentials`: one more federated credential of an application.
    AddFederatedCredential,
    /// `GET /admin/federatedCredentials`: the federated credentials of every application.
    ListFederatedCredentials,
}

pub fn route(method: &Method, raw_path: &str) -> Route {
    if let Some(rest) = raw_path.strip_prefix("/admin/") {
        return admin_route(method, rest).map_or(Route::NotFound, Route::Admin);
    }
    if let Some(tenant) = raw_path
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix("/oauth2/v2.0/token"))
        .filter(|t| !t.is_empty() && !t.contains('/'))
    {
        return if method == Method::POST {
            Route::EntraToken(tenant.to_string())
        } else {
            Route::NotFound
        };
    }
    acs_route(method, raw_path).map_or(Route::NotFound, Route::Acs)
}

fn acs_route(method: &Method, raw_path: &str) -> Option<AcsRoute> {
    if raw_path == "/teamsUser/:exchangeAccessToken" {
        return (method == Method::POST).then_some(AcsRoute::ExchangeTeamsToken);
    }
    if let Some(rest) = raw_path.strip_prefix("/access/") {
        return access_route(method, rest);
    }
    let rest = raw_path.strip_prefix("/identities")?;
    if rest.is_empty() || rest == "/" {
        return (method == Method::POST).then_some(AcsRoute::Create);
    }
    let rest = rest.strip_prefix('/')?;
    let (raw_id, action) = match rest.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (rest, None),
    };
    let id = decode_id(raw_id)?;
    match (method, action) {
        (&Method::DELETE, None) => Some(AcsRoute::Delete(id)),
        (&Method::GET, None) => Some(AcsRoute::Get(id)),
        (&Method::PATCH, None) => Some(AcsRoute::SetTokensValidFrom(id)),
        (&Method::POST, Some("token")) => Some(AcsRoute::LegacyIssueToken(id)),
        (&Method::POST, Some(":issueAccessToken")) => Some(AcsRoute::IssueToken(id)),
        (&Method::POST, Some(":revokeAccessTokens")) => Some(AcsRoute::RevokeTokens(id)),
        _ => None,
    }
}

/// The `/access/…` routes (`rest` is the path after `/access/`).
fn access_route(method: &Method, rest: &str) -> Option<AcsRoute> {
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["teamsExtension", ":exchangeAccessToken"] => {
            (method == Method::POST).then_some(AcsRoute::ExchangeTeamsExtensionToken)
        }
        ["entra", ":exchangeAccessToken"] => {
            (method == Method::POST).then_some(AcsRoute::ExchangeEntraToken)
        }
        ["entra", "assignments"] => match *method {
            Method::GET => Some(AcsRoute::ListEntraAssignments),
            Method::PATCH => Some(AcsRoute::PatchEntraAssignments),
            _ => None,
        },
        ["entra", "assignments", object] => Some(AcsRoute::EntraAssignment {
            verb: Verb::of(method)?,
            object_id: decode_id(object)?,
        }),
        ["teamsExtension", "tenants", tenant, "assignments", object] => {
            Some(AcsRoute::TeamsExtensionAssignment {
                verb: Verb::of(method)?,
                tenant_id: decode_id(tenant)?,
                object_id: decode_id(object)?,
            })
        }
        _ => None,
    }
}

fn decode_id(raw: &str) -> Option<String> {
    let id = percent_decode_str(raw).decode_utf8().ok()?;
    (!id.is_empty()).then(|| id.into_owned())
}

fn admin_route(method: &Method, rest: &str) -> Option<AdminRoute> {
    use AdminRoute::*;
    Some(match (method, rest) {
        (&Method::GET, "health") => Health,
        (&Method::GET, "identities") => ListIdentities,
        (&Method::POST, "identities:seed") => SeedIdentities,
        (&Method::POST, "tokens:verify") => VerifyToken,
        (&Method::GET, "stats") => Stats,
        (&Method::DELETE, "stats") => ResetStats,
        (&Method::GET, "faults") => ListFaults,
        (&Method::POST, "faults") => AddFault,
        (&Method::DELETE, "faults") => ClearFaults,
        (&Method::GET, "throttle") => GetThrottle,
        (&Method::POST, "throttle") => SetThrottle,
        (&Method::POST, "teamsUsers") => IssueTeamsUserToken,
        (&Method::POST, "federatedCredentials") => AddFederatedCredential,
        (&Method::GET, "federatedCredentials") => ListFederatedCredentials,
        _ => return None,
    })
}

/// The `api-version` query parameter, if present (first occurrence).
pub fn api_version(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "api-version")
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8:acs:2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2-493b-8a72";
    const ENCODED: &str = "8%3Aacs%3A2dee53b4-368b-45b4-ab52-8493fb117652_00000005-14a2-493b-8a72";

    #[test]
    fn data_plane_paths_in_both_encodings() {
        let cases = [
            (Method::POST, "/identities".to_string(), AcsRoute::Create),
            (Method::POST, "/identities/".to_string(), AcsRoute::Create),
            (
                Method::POST,
                format!("/identities/{ENCODED}/:issueAccessToken"),
                AcsRoute::IssueToken(ID.into()),
            ),
            (
                Method::POST,
                format!("/identities/{ID}/:issueAccessToken"),
                AcsRoute::IssueToken(ID.into()),
            ),
            (
                Method::POST,
                format!("/identities/{ENCODED}/:revokeAccessTokens"),
                AcsRoute::RevokeTokens(ID.into()),
            ),
            (
                Method::DELETE,
                format!("/identities/{ENCODED}"),
                AcsRoute::Delete(ID.into()),
            ),
            (
                Method::DELETE,
                format!("/identities/{ID}"),
                AcsRoute::Delete(ID.into()),
            ),
            (
                Method::GET,
                format!("/identities/{ENCODED}"),
                AcsRoute::Get(ID.into()),
            ),
            (
                Method::POST,
                format!("/identities/{ENCODED}/token"),
                AcsRoute::LegacyIssueToken(ID.into()),
            ),
            (
                Method::PATCH,
                format!("/identities/{ENCODED}"),
                AcsRoute::SetTokensValidFrom(ID.into()),
            ),
            (
                Method::POST,
                "/teamsUser/:exchangeAccessToken".to_string(),
                AcsRoute::ExchangeTeamsToken,
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                route(&method, &path),
                Route::Acs(expected),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn access_paths() {
        let assignment = |verb| AcsRoute::TeamsExtensionAssignment {
            verb,
            tenant_id: "t-1".into(),
            object_id: "o 1".into(),
        };
        let path = "/access/teamsExtension/tenants/t-1/assignments/o%201";
        let cases = [
            (Method::GET, path, assignment(Verb::Get)),
            (Method::PUT, path, assignment(Verb::Put)),
            (Method::DELETE, path, assignment(Verb::Delete)),
            (
                Method::POST,
                "/access/teamsExtension/:exchangeAccessToken",
                AcsRoute::ExchangeTeamsExtensionToken,
            ),
            (
                Method::POST,
                "/access/entra/:exchangeAccessToken",
                AcsRoute::ExchangeEntraToken,
            ),
            (
                Method::GET,
                "/access/entra/assignments",
                AcsRoute::ListEntraAssignments,
            ),
            (
                Method::PATCH,
                "/access/entra/assignments",
                AcsRoute::PatchEntraAssignments,
            ),
            (
                Method::PUT,
                "/access/entra/assignments/o%201",
                AcsRoute::EntraAssignment {
                    verb: Verb::Put,
                    object_id: "o 1".into(),
                },
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(
                route(&method, path),
                Route::Acs(expected),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn unknown_paths_and_methods_are_not_found() {
        let cases = [
            (Method::GET, "/identities".to_string()),
            (Method::POST, format!("/identities/{ENCODED}")),
            (Method::GET, format!("/identities/{ENCODED}/token")),
            (Method::GET, "/teamsUser/:exchangeAccessToken".to_string()),
            (Method::POST, "/teamsUser/exchangeAccessToken".to_string()),
            (
                Method::POST,
                format!("/identities/{ENCODED}/issueAccessToken"),
            ),
            (Method::POST, format!("/identities/{ENCODED}/:other")),
            (Method::POST, "/identities//:issueAccessToken".to_string()),
            (
                Method::POST,
                "/identities/%FF%FE/:issueAccessToken".to_string(),
            ),
            (Method::POST, "/identitiesX".to_string()),
            (Method::POST, "/".to_string()),
            (
                Method::POST,
                "/access/teamsExtension/tenants/t/assignments/o".to_string(),
            ),
            (
                Method::GET,
                "/access/teamsExtension/tenants/t/assignments/".to_string(),
            ),
            (
                Method::GET,
                "/access/teamsExtension/tenants/t/assignments".to_string(),
            ),
            (
                Method::GET,
                "/access/teamsExtension/tenants/t/assignments/o/x".to_string(),
            ),
            (
                Method::GET,
                "/access/other/tenants/t/assignments/o".to_string(),
            ),
            (
                Method::GET,
                "/access/teamsExtension/:exchangeAccessToken".to_string(),
            ),
            (Method::PUT, "/access/entra/assignments".to_string()),
            (Method::PATCH, "/access/entra/assignments/o".to_string()),
            (Method::GET, "/access/entra/assignments/".to_string()),
            (Method::GET, "/admin/nothing".to_string()),
            (Method::POST, "/admin/identities".to_string()),
        ];
        for (method, path) in cases {
            assert_eq!(route(&method, &path), Route::NotFound, "{method} {path}");
        }
    }

    #[test]
    fn admin_paths() {
        assert_eq!(
            route(&Method::POST, "/admin/tokens:verify"),
            Route::Admin(AdminRoute::VerifyToken)
        );
        assert_eq!(
            route(&Method::DELETE, "/admin/faults"),
            Route::Admin(AdminRoute::ClearFaults)
        );
        assert_eq!(
            route(&Method::POST, "/admin/identities:seed"),
            Route::Admin(AdminRoute::SeedIdentities)
        );
        // Not on the data plane: only under /admin/.
        assert!(!matches!(
            route(&Method::POST, "/identities:seed"),
            Route::Admin(_)
        ));
    }

    #[test]
    fn entra_token_endpoint_per_tenant() {
        let tenant = "11111111-2222-3333-4444-555555555555";
        let path = format!("/{tenant}/oauth2/v2.0/token");
        assert_eq!(
            route(&Method::POST, &path),
            Route::EntraToken(tenant.into())
        );
        assert_eq!(route(&Method::GET, &path), Route::NotFound);
        for path in [
            "/oauth2/v2.0/token",
            "//oauth2/v2.0/token",
            "/a/b/oauth2/v2.0/token",
            "/t/oauth2/v2.0/token/",
            "/t/oauth2/token",
        ] {
            assert_eq!(route(&Method::POST, path), Route::NotFound, "{path}");
        }
        // A tenant named like the collection is still a tenant, not an identity.
        assert_eq!(
            route(&Method::POST, "/identities/oauth2/v2.0/token"),
            Route::EntraToken("identities".into())
        );
    }

    #[test]
    fn api_version_is_read_from_the_query() {
        assert_eq!(
            api_version(Some("api-version=2023-10-01")).as_deref(),
            Some("2023-10-01")
        );
        assert_eq!(
            api_version(Some("x=1&api-version=2021-03-07&api-version=2")).as_deref(),
            Some("2021-03-07")
        );
        assert_eq!(api_version(Some("x=1")), None);
        assert_eq!(api_version(None), None);
    }
}

//! The service's request rules that depend on the api-version: which versions exist, which
//! scopes each knows, and when `expiresInMinutes` is allowed and in what range. Pure
//! functions answering the exact (or, where unrecorded, the emulator's) error.

use super::responses::ErrorReply;
use acs_client::Scope;
use acs_client::model::{
    MAX_TOKEN_LIFETIME_MINUTES, MIN_TOKEN_LIFETIME_MINUTES, SUPPORTED_API_VERSIONS,
};
use hyper::StatusCode;

/// The first Identity api-version, which the first Python library
/// (`azure-communication-administration` 1.0.0b1-b4) sends; retired by the service, served for
/// old code unless turned off.
pub const LEGACY_API_VERSION: &str = "2020-07-20-preview2";

/// The api-version whose scopes the legacy version knows (`chat`, `voip`).
const LEGACY_SCOPES_AS: &str = "2021-03-07";

/// The first api-version with the Teams user exchange.
const TEAMS_EXCHANGE_SINCE: &str = "2022-06-01";

/// The first stable api-version with the Teams Phone extension (`/access/teamsExtension`);
/// every later one has it too.
const TEAMS_EXTENSION_SINCE: &str = "2025-06-30";

/// The preview that brought the `/access` operations: the Teams Phone extension and the
/// Entra ID ones (2025-04-01-preview has neither).
const ACCESS_PREVIEW: &str = "2025-03-02-preview";

/// Which api-versions have a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Create and delete: every version.
    Everywhere,
    /// `:issueAccessToken` and `:revokeAccessTokens`: every version but the legacy one.
    Current,
    /// `POST /identities/{id}/token` and `PATCH /identities/{id}`: the legacy version only.
    Legacy,
    /// `GET /identities/{id}`: the previews that know `customId`.
    PreviewRead,
    /// `POST /teamsUser/:exchangeAccessToken`: 2022-06-01 and later.
    TeamsExchange,
    /// `/access/teamsExtension/…`: 2025-03-02-preview, 2025-06-30 and later.
    TeamsExtension,
    /// `/access/entra/…`: 2025-03-02-preview only.
    Entra,
}

/// The version whose scope and lifetime rules apply to a request of `version`.
pub fn rules_version(version: &str) -> &str {
    if version == LEGACY_API_VERSION {
        LEGACY_SCOPES_AS
    } else {
        version
    }
}

/// `Ok` when `version` has the request, else the 400 the service gives for a version a route
/// does not support.
pub fn route_in_version(
    kind: RouteKind,
    version: &str,
    request_uri: &str,
) -> Result<(), ErrorReply> {
    let legacy = version == LEGACY_API_VERSION;
    let has = match kind {
        RouteKind::Everywhere => true,
        RouteKind::Current => !legacy,
        RouteKind::Legacy => legacy,
        RouteKind::PreviewRead => acs_client::model::takes_custom_id(version),
        RouteKind::TeamsExchange => !legacy && version >= TEAMS_EXCHANGE_SINCE,
        RouteKind::TeamsExtension => version == ACCESS_PREVIEW || version >= TEAMS_EXTENSION_SINCE,
        RouteKind::Entra => version == ACCESS_PREVIEW,
    };
    if has {
        Ok(())
    } else {
        Err(unsupported(request_uri, version))
    }
}

fn unsupported(request_uri: &str, requested: &str) -> ErrorReply {
    ErrorReply::new(
        StatusCode::BAD_REQUEST,
        "UnsupportedApiVersion",
        format!(
            "The HTTP resource that matches the request URI '{request_uri}' does not support the API version '{requested}'."
        ),
    )
}

/// The first api-version that takes `expiresInMinutes`.
const LIFETIME_SINCE: &str = "2022-10-01";

/// Which request field a scope list came from, for the error `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeField {
    /// `scopes` of `:issueAccessToken`.
    Scopes,
    /// `createTokenWithScopes` of `POST /identities`.
    CreateTokenWithScopes,
}

impl ScopeField {
    fn target(self) -> &'static str {
        match self {
            ScopeField::Scopes => "Scopes",
            ScopeField::CreateTokenWithScopes => "CreateTokenWithScopes",
        }
    }
}

/// A supported api-version, or the 400 the service gives for others. `request_uri` is the
/// scheme, authority and path, as the service quotes it. `retired` serves
/// [`LEGACY_API_VERSION`] too; a version in `refused` is answered as the service answers a
/// version it has retired: like one it never had.
pub fn api_version(
    requested: Option<&str>,
    request_uri: &str,
    retired: bool,
    refused: &[String],
) -> Result<&'static str, ErrorReply> {
    let Some(requested) = requested else {
        return Err(ErrorReply::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if refused.iter().any(|v| v == requested) {
        return Err(unsupported(request_uri, requested));
    }
    if retired && requested == LEGACY_API_VERSION {
        return Ok(LEGACY_API_VERSION);
    }
    SUPPORTED_API_VERSIONS
        .iter()
        .copied()
        .find(|v| *v == requested)
        .ok_or_else(|| unsupported(request_uri, requested))
}

/// The requested scopes, each known and available in `version`; an empty list is refused.
/// Duplicates are dropped, order kept.
pub fn scopes(raw: &[String], version: &str, field: ScopeField) -> Result<Vec<Scope>, ErrorReply> {
    if raw.is_empty() {
        return Err(ErrorReply::validation(
            format!("{}: At least one scope is required.", field.target()),
            field.target(),
        ));
    }
    let mut scopes = Vec::with_capacity(raw.len());
    for name in raw {
        let scope = match name.parse::<Scope>() {
            Ok(scope) if scope.since_api_version() <= version => scope,
            Ok(scope) => {
                return Err(ErrorReply::validation(
                    format!(
                        "Scope '{name}' is not supported in api-version '{version}'; it requires api-version '{}' or later.",
                        scope.since_api_version()
                    ),
                    field.target(),
                ));
            }
            Err(_) => {
                return Err(ErrorReply::validation(
                    format!(
                        "Scope '{name}' is not valid. Valid scopes for api-version '{version}' are: {}.",
                        scopes_in(version).join(", ")
                    ),
                    field.target(),
                ));
            }
        };
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes)
}

/// `scopes` of `:issueAccessToken` is required.
pub fn required_scopes(raw: Option<&[String]>, version: &str) -> Result<Vec<Scope>, ErrorReply> {
    let raw = raw
        .ok_or_else(|| ErrorReply::validation("Scopes: The Scopes field is required.", "Scopes"))?;
    scopes(raw, version, ScopeField::Scopes)
}

/// The token lifetime in minutes: default 1440, `[60, 1440]` from 2022-10-01 on, refused on
/// older versions (which have no such field).
pub fn lifetime_minutes(raw: Option<i64>, version: &str) -> Result<u32, ErrorReply> {
    let Some(minutes) = raw else {
        return Ok(MAX_TOKEN_LIFETIME_MINUTES);
    };
    if version < LIFETIME_SINCE {
        return Err(ErrorReply::validation(
            format!(
                "ExpiresInMinutes is not supported in api-version '{version}'; it requires api-version '{LIFETIME_SINCE}' or later."
            ),
            "ExpiresInMinutes",
        ));
    }
    let range = i64::from(MIN_TOKEN_LIFETIME_MINUTES)..=i64::from(MAX_TOKEN_LIFETIME_MINUTES);
    if !range.contains(&minutes) {
        return Err(ErrorReply::validation(
            format!(
                "ExpiresInMinutes value {minutes} is invalid. Value must be within the [{MIN_TOKEN_LIFETIME_MINUTES}, {MAX_TOKEN_LIFETIME_MINUTES}] interval."
            ),
            "ExpiresInMinutes",
        ));
    }
    // In range, so it fits.
    Ok(u32::try_from(minutes).unwrap_or(MAX_TOKEN_LIFETIME_MINUTES))
}

/// A `customId` (preview versions): any non-empty string. The service's own rules for it are
/// unrecorded; refusing the empty string is the emulator's choice.
pub fn custom_id(raw: &str) -> Result<&str, ErrorReply> {
    if raw.is_empty() {
        return Err(ErrorReply::validation(
            "CustomId: The CustomId field must not be empty.",
            "CustomId",
        ));
    }
    Ok(raw)
}

fn scopes_in(version: &str) -> Vec<&'static str> {
    Scope::ALL
        .into_iter()
        .filter(|scope| scope.since_api_version() <= version)
        .map(Scope::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_supported_version_is_accepted() {
        for version in SUPPORTED_API_VERSIONS {
            assert_eq!(api_version(Some(version), "u", false, &[]), Ok(*version));
        }
    }

    #[test]
    fn the_legacy_version_is_served_only_when_asked() {
        assert_eq!(
            api_version(Some(LEGACY_API_VERSION), "u", true, &[]),
            Ok(LEGACY_API_VERSION)
        );
        assert_eq!(
            api_version(Some(LEGACY_API_VERSION), "u", false, &[])
                .unwrap_err()
                .code,
            "UnsupportedApiVersion"
        );
    }

    #[test]
    fn a_refused_version_is_answered_like_one_never_served() {
        let refused = [
            "2025-03-02-preview".to_string(),
            LEGACY_API_VERSION.to_string(),
        ];
        for version in ["2025-03-02-preview", LEGACY_API_VERSION] {
            let error =
                api_version(Some(version), "https://h/identities", true, &refused).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert_eq!(error.code, "UnsupportedApiVersion");
            assert!(error.message.contains(version));
        }
        for version in ["2025-04-01-preview", "2023-10-01", "2026-09-23"] {
            assert_eq!(api_version(Some(version), "u", true, &refused), Ok(version));
        }
    }

    #[test]
    fn routes_exist_in_their_versions_only() {
        use RouteKind::*;
        let cases = [
            (Everywhere, LEGACY_API_VERSION, true),
            (Everywhere, "2023-10-01", true),
            (Current, LEGACY_API_VERSION, false),
            (Current, "2021-03-07", true),
            (Legacy, LEGACY_API_VERSION, true),
            (Legacy, "2023-10-01", false),
            (PreviewRead, "2025-03-02-preview", true),
            (PreviewRead, "2025-04-01-preview", true),
            (PreviewRead, "2025-06-30", false),
            (PreviewRead, "2023-10-01", false),
            (TeamsExchange, "2021-03-07", false),
            (TeamsExchange, "2022-06-01", true),
            (TeamsExchange, "2025-06-30", true),
            (TeamsExchange, LEGACY_API_VERSION, false),
            (Everywhere, "2026-07-22", true),
            (Current, "2026-09-23", true),
            (TeamsExchange, "2026-09-23", true),
            (PreviewRead, "2026-09-23", false),
            (Legacy, "2026-09-23", false),
            (TeamsExtension, "2025-03-02-preview", true),
            (TeamsExtension, "2025-04-01-preview", false),
            (TeamsExtension, "2023-10-01", false),
            (TeamsExtension, "2025-06-30", true),
            (TeamsExtension, "2026-07-22", true),
            (TeamsExtension, "2026-09-23", true),
            (TeamsExtension, LEGACY_API_VERSION, false),
            (Entra, "2025-03-02-preview", true),
            (Entra, "2025-04-01-preview", false),
            (Entra, "2025-06-30", false),
            (Entra, "2026-09-23", false),
        ];
        for (kind, version, has) in cases {
            let answer = route_in_version(kind, version, "https://h/identities/x");
            assert_eq!(answer.is_ok(), has, "{kind:?} {version}");
            if let Err(error) = answer {
                assert_eq!(error.status, StatusCode::BAD_REQUEST);
                assert!(error.message.contains(version));
            }
        }
        assert_eq!(rules_version(LEGACY_API_VERSION), "2021-03-07");
        assert_eq!(rules_version("2023-10-01"), "2023-10-01");
    }

    #[test]
    fn unsupported_version_quotes_the_uri_like_the_service() {
        let error = api_version(
            Some("2020-07-20-preview2"),
            "https://h/identities",
            false,
            &[],
        )
        .unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "UnsupportedApiVersion");
        assert_eq!(
            error.message,
            "The HTTP resource that matches the request URI 'https://h/identities' does not support the API version '2020-07-20-preview2'."
        );
        assert_eq!(
            api_version(None, "u", true, &[]).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn lifetime_bounds_and_exact_messages() {
        let v = "2023-10-01";
        assert_eq!(lifetime_minutes(None, v), Ok(1440));
        assert_eq!(lifetime_minutes(Some(60), v), Ok(60));
        assert_eq!(lifetime_minutes(Some(1440), v), Ok(1440));
        for bad in [59, 1441, 0, -5, i64::MAX] {
            let error = lifetime_minutes(Some(bad), v).unwrap_err();
            assert_eq!(error.code, "ValidationError");
            assert_eq!(error.target, Some("ExpiresInMinutes"));
            assert_eq!(
                error.message,
                format!(
                    "ExpiresInMinutes value {bad} is invalid. Value must be within the [60, 1440] interval."
                )
            );
        }
    }

    #[test]
    fn lifetime_needs_2022_10_01() {
        assert!(lifetime_minutes(Some(60), "2022-06-01").is_err());
        assert!(lifetime_minutes(Some(60), "2021-03-07").is_err());
        assert_eq!(lifetime_minutes(None, "2021-03-07"), Ok(1440));
        assert_eq!(lifetime_minutes(Some(60), "2022-10-01"), Ok(60));
    }

    #[test]
    fn join_scopes_need_2023_10_01() {
        let join = strings(&["chat.join"]);
        let error = scopes(&join, "2023-08-01", ScopeField::Scopes).unwrap_err();
        assert_eq!(error.target, Some("Scopes"));
        assert!(error.message.contains("requires api-version '2023-10-01'"));
        assert_eq!(
            scopes(&join, "2023-10-01", ScopeField::Scopes),
            Ok(vec![Scope::ChatJoin])
        );
        assert_eq!(
            scopes(&join, "2025-06-30", ScopeField::Scopes),
            Ok(vec![Scope::ChatJoin])
        );
    }

    #[test]
    fn unknown_and_empty_scopes_are_validation_errors() {
        let error = scopes(
            &strings(&["chat", "video"]),
            "2021-03-07",
            ScopeField::CreateTokenWithScopes,
        )
        .unwrap_err();
        assert_eq!(error.target, Some("CreateTokenWithScopes"));
        assert_eq!(
            error.message,
            "Scope 'video' is not valid. Valid scopes for api-version '2021-03-07' are: chat, voip."
        );
        assert!(scopes(&[], "2023-10-01", ScopeField::Scopes).is_err());
        let missing = required_scopes(None, "2023-10-01").unwrap_err();
        assert_eq!(missing.message, "Scopes: The Scopes field is required.");
    }

    #[test]
    fn duplicates_are_dropped_in_order() {
        assert_eq!(
            scopes(
                &strings(&["voip", "chat", "voip"]),
                "2023-10-01",
                ScopeField::Scopes
            ),
            Ok(vec![Scope::Voip, Scope::Chat])
        );
    }
}

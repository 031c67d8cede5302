//! Wire types of the Identity REST API (camelCase JSON), shared by the client and the emulator.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The api-version this client sends for every call but the create with `customId`: the
/// newest GA version it is proven against. Its identity operations are those of `2023-10-01`
/// (which the released SDKs, azure-communication-identity 1.5.0 and @azure/communication-identity
/// 1.3.1, still send); it adds only the `/access` operations. `2026-07-22` and `2026-09-23`
/// exist in the API description, but no released client sends them yet.
pub const API_VERSION: &str = "2025-06-30";

/// The api-version this client sends for a create with `customId`: the preview the service's
/// own example of that request is written for.
pub const CUSTOM_ID_API_VERSION: &str = "2025-03-02-preview";

/// The preview api-versions whose create takes `customId` (GA versions have no such field).
pub const CUSTOM_ID_API_VERSIONS: &[&str] = &["2025-03-02-preview", "2025-04-01-preview"];

/// Every api-version whose identity operations the emulator serves: the GA ones and the
/// previews of [`CUSTOM_ID_API_VERSIONS`]. `2026-07-22` and `2026-09-23` carry the identity
/// operations of `2025-06-30` unchanged (the API description's folders of those versions);
/// the SDKs' main branches default to `2026-09-23`.
pub const SUPPORTED_API_VERSIONS: &[&str] = &[
    "2021-03-07",
    "2022-06-01",
    "2022-10-01",
    "2023-08-01",
    "2023-10-01",
    "2025-03-02-preview",
    "2025-04-01-preview",
    "2025-06-30",
    "2026-07-22",
    "2026-09-23",
];

/// Whether `version` knows `customId` on create.
pub fn takes_custom_id(version: &str) -> bool {
    CUSTOM_ID_API_VERSIONS.contains(&version)
}

/// Token lifetime bounds in minutes, inclusive, as the service enforces them.
pub const MIN_TOKEN_LIFETIME_MINUTES: u32 = 60;
pub const MAX_TOKEN_LIFETIME_MINUTES: u32 = 1440;

/// A token scope. The five names are the service's exact strings.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Scope {
    #[serde(rename = "chat")]
    Chat,
    #[serde(rename = "voip")]
    Voip,
    #[serde(rename = "chat.join")]
    ChatJoin,
    #[serde(rename = "chat.join.limited")]
    ChatJoinLimited,
    #[serde(rename = "voip.join")]
    VoipJoin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Chat,
        Scope::Voip,
        Scope::ChatJoin,
        Scope::ChatJoinLimited,
        Scope::VoipJoin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Voip => "voip",
            Scope::ChatJoin => "chat.join",
            Scope::ChatJoinLimited => "chat.join.limited",
            Scope::VoipJoin => "voip.join",
        }
    }

    /// The first api-version that knows this scope (the `.join` family came with 2023-10-01).
    pub fn since_api_version(self) -> &'static str {
        match self {
            Scope::Chat | Scope::Voip => "2021-03-07",
            _ => "2023-10-01",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_string()))
    }
}

/// Body of `POST /identities`. Scopes stay strings on the wire so the emulator can answer
/// unknown ones with a validation error instead of a parse failure; `null` means absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIdentityRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_token_with_scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<i64>,
    /// Preview versions only: creating again with the same value returns the same identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
}

/// Body of `POST /identities/{id}/:issueAccessToken`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueTokenRequest {
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<i64>,
}

/// The identity in a create answer. Preview versions add `customId` and `lastTokenIssuedAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityBody {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_token_issued_at: Option<String>,
}

/// `{"token": "...", "expiresOn": "..."}`. `expiresOn` stays a string on the wire: the
/// service writes 6-7 fractional digits with an explicit offset.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenBody {
    pub token: String,
    pub expires_on: String,
}

impl fmt::Debug for AccessTokenBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenBody")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// Response of `POST /identities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIdentityResponse {
    pub identity: IdentityBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<AccessTokenBody>,
}

/// `{"error": {"code", "message", "target"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Percent-encodes an identity id for use as one path segment, as the SDKs do (`:` → `%3A`).
pub fn encode_identity_id(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
        assert_eq!("Chat".parse::<Scope>(), Err(UnknownScope("Chat".into())));
    }

    #[test]
    fn null_fields_read_as_absent() {
        let body: CreateIdentityRequest =
            serde_json::from_str(r#"{"createTokenWithScopes":null,"expiresInMinutes":null}"#)
                .unwrap();
        assert_eq!(body, CreateIdentityRequest::default());
        let body: IssueTokenRequest =
            serde_json::from_str(r#"{"scopes":["chat"],"expiresInMinutes":null}"#).unwrap();
        assert_eq!(body.expires_in_minutes, None);
    }

    #[test]
    fn absent_options_are_not_serialized() {
        let json = serde_json::to_string(&CreateIdentityRequest::default()).unwrap();
        assert_eq!(json, "{}");
    }

    #[test]
    fn identity_ids_are_encoded_like_the_sdks() {
        assert_eq!(
            encode_identity_id("8:acs:2dee53b4_00000005-14a2"),
            "8%3Aacs%3A2dee53b4_00000005-14a2"
        );
    }

    #[test]
    fn token_is_redacted_in_debug() {
        let body = AccessTokenBody {
            token: "eyJsecret".into(),
            expires_on: "2023-10-10T21:39:39.3244584+00:00".into(),
        };
        assert!(!format!("{body:?}").contains("eyJsecret"));
    }
}

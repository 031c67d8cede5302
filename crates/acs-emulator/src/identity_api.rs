//! The four Identity operations on the emulated resource, after authentication: validate the
//! body for the api-version, change the store, mint tokens, and shape the service's answer.
//!
//! On the preview api-versions ([`acs_client::model::CUSTOM_ID_API_VERSIONS`]) a create with
//! `customId` returns the live identity that already has it (with a new token when one is
//! asked for), and the answer's identity shows `customId` and `lastTokenIssuedAt`. GA versions
//! do not know the field and ignore it, as they ignore any unknown field.

use super::responses::ErrorReply;
use super::state::{IdentityStore, Standing, StoreError};
use super::tokens::{MintedToken, TokenClaims, TokenError, TokenMinter, unix_seconds};
use super::validation::{self, ScopeField};
use acs_client::Scope;
use acs_client::model::{
    AccessTokenBody, CreateIdentityRequest, CreateIdentityResponse, IdentityBody,
    IssueTokenRequest, takes_custom_id,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Body of `PATCH /identities/{id}` (2020-07-20-preview2, `application/merge-patch+json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokensValidFromRequest {
    #[serde(default)]
    pub tokens_valid_from: Option<String>,
}

/// Body of `POST /teamsUser/:exchangeAccessToken`: all three are required.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamsExchangeRequest {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

impl std::fmt::Debug for TeamsExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsExchangeRequest")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("app_id", &self.app_id)
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// The answer of `POST /identities/{id}/token` (2020-07-20-preview2): `{"id","token","expiresOn"}`.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyTokenBody {
    pub id: String,
    pub token: String,
    pub expires_on: String,
}

impl std::fmt::Debug for LegacyTokenBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyTokenBody")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// The `skypeid` of a Teams identity's token: its id is `8:orgid:<Entra object id>`.
const TEAMS_PREFIX: &str = "orgid:";

/// What `POST /admin/tokens:verify` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenVerdict {
    Ok,
    Expired,
    Revoked,
    Deleted,
    Unknown,
    Malformed,
}

/// The emulated resource: its identities and the key its tokens are signed with.
#[derive(Debug)]
pub struct IdentityService {
    store: IdentityStore,
    minter: TokenMinter,
    /// `--token-lifetime-seconds`: replaces every requested or default lifetime.
    lifetime_override: Option<Duration>,
}

impl IdentityService {
    pub fn new(
        store: IdentityStore,
        minter: TokenMinter,
        lifetime_override: Option<Duration>,
    ) -> Self {
        Self {
            store,
            minter,
            lifetime_override,
        }
    }

    pub fn store(&self) -> &IdentityStore {
        &self.store
    }

    /// `POST /identities`, with a first token when `createTokenWithScopes` is given; on preview
    /// versions, idempotent per `customId`.
    pub fn create(
        &self,
        version: &str,
        body: &CreateIdentityRequest,
        now: SystemTime,
    ) -> Result<CreateIdentityResponse, ErrorReply> {
        let minutes = validation::lifetime_minutes(body.expires_in_minutes, version)?;
        let rules = validation::rules_version(version);
        let scopes = body
            .create_token_with_scopes
            .as_deref()
            .map(|raw| validation::scopes(raw, rules, ScopeField::CreateTokenWithScopes))
            .transpose()?;
        let preview = takes_custom_id(version);
        let custom_id = match body.custom_id.as_deref() {
            Some(custom_id) if preview => Some(validation::custom_id(custom_id)?),
            _ => None,
        };
        let id = match custom_id {
            Some(custom_id) => self.store.create_with_custom_id(custom_id),
            None => self.store.create(),
        }
        .map_err(|error| store_error(error, ""))?;
        let access_token = match scopes {
            Some(scopes) => Some(self.mint(&id, &scopes, minutes, now)?),
            None => None,
        };
        let mut identity = IdentityBody {
            id,
            custom_id: None,
            last_token_issued_at: None,
        };
        if preview {
            let summary = self.store.summary(&identity.id);
            identity.custom_id = summary.as_ref().and_then(|s| s.custom_id.clone());
            identity.last_token_issued_at = summary
                .and_then(|s| s.last_token_issued_at)
                .map(format_service_time);
        }
        Ok(CreateIdentityResponse {
            identity,
            access_token,
        })
    }

    /// `POST /admin/identities:seed`, one entry: a new identity and one token for `scopes`,
    /// issued `at` (which may lie in the past) for `minutes` (or `--token-lifetime-seconds`).
    /// What a previous client would have left behind, made without a data-plane call.
    pub fn seed(
        &self,
        scopes: &[Scope],
        minutes: u32,
        at: SystemTime,
    ) -> Result<(String, AccessTokenBody), ErrorReply> {
        let id = self
            .store
            .create()
            .map_err(|error| store_error(error, ""))?;
        let token = self.mint(&id, scopes, minutes, at)?;
        Ok((id, token))
    }

    /// `POST /identities/{id}/:issueAccessToken`.
    pub fn issue_token(
        &self,
        version: &str,
        id: &str,
        body: &IssueTokenRequest,
        now: SystemTime,
    ) -> Result<AccessTokenBody, ErrorReply> {
        let scopes = validation::required_scopes(body.scopes.as_deref(), version)?;
        let minutes = validation::lifetime_minutes(body.expires_in_minutes, version)?;
        self.mint(id, &scopes, minutes, now)
    }

    /// `POST /identities/{id}/token` (2020-07-20-preview2): `{"scopes":[…]}`, a token of the
    /// default lifetime, answered with the identity's id.
    pub fn legacy_issue_token(
        &self,
        id: &str,
        body: &IssueTokenRequest,
        now: SystemTime,
    ) -> Result<LegacyTokenBody, ErrorReply> {
        let rules = validation::rules_version(validation::LEGACY_API_VERSION);
        let scopes = validation::required_scopes(body.scopes.as_deref(), rules)?;
        let minutes =
            validation::lifetime_minutes(body.expires_in_minutes, validation::LEGACY_API_VERSION)?;
        let AccessTokenBody { token, expires_on } = self.mint(id, &scopes, minutes, now)?;
        Ok(LegacyTokenBody {
            id: id.to_string(),
            token,
            expires_on,
        })
    }

    /// `PATCH /identities/{id}` `{"tokensValidFrom": time}` (2020-07-20-preview2): revokes the
    /// tokens issued before that time; without a time, before now.
    pub fn set_tokens_valid_from(
        &self,
        id: &str,
        body: &TokensValidFromRequest,
        now: SystemTime,
    ) -> Result<(), ErrorReply> {
        let from = match body.tokens_valid_from.as_deref() {
            None => now,
            Some(raw) => raw
                .parse::<jiff::Timestamp>()
                .map(SystemTime::from)
                .map_err(|_| {
                    ErrorReply::validation(
                        format!("TokensValidFrom: '{raw}' is not a valid date-time."),
                        "TokensValidFrom",
                    )
                })?,
        };
        self.store
            .revoke_issued_before(id, from, now)
            .map_err(|error| store_error(error, id))
    }

    /// `GET /identities/{id}` (previews): `{"id","customId"?,"lastTokenIssuedAt"?}`; 404 once
    /// deleted.
    pub fn get(&self, id: &str) -> Result<IdentityBody, ErrorReply> {
        let summary = self
            .store
            .summary(id)
            .filter(|s| !s.deleted)
            .ok_or_else(|| ErrorReply::identity_not_found(id))?;
        Ok(IdentityBody {
            id: summary.id,
            custom_id: summary.custom_id,
            last_token_issued_at: summary.last_token_issued_at.map(format_service_time),
        })
    }

    /// `POST /identities/{id}/:revokeAccessTokens`.
    pub fn revoke(&self, id: &str) -> Result<(), ErrorReply> {
        self.store
            .revoke(id)
            .map_err(|error| store_error(error, id))
    }

    /// `DELETE /identities/{id}`.
    pub fn delete(&self, id: &str) -> Result<(), ErrorReply> {
        self.store
            .delete(id)
            .map_err(|error| store_error(error, id))
    }

    /// An ACS token for the Teams identity `8:orgid:<user>` of an exchanged Entra token: it
    /// expires with that token (or after `--token-lifetime-seconds`).
    pub fn mint_teams(
        &self,
        user: &super::teams::TeamsUserClaims,
        now: SystemTime,
    ) -> AccessTokenBody {
        self.mint_for_entra_user(&format!("8:{TEAMS_PREFIX}{}", user.oid), user, now)
    }

    /// An ACS token for `identity`, the identity of an Entra user's exchanged token (Teams
    /// exchange, `/access` exchanges): it expires with that token (or after
    /// `--token-lifetime-seconds`), and the store holds nothing of it.
    pub fn mint_for_entra_user(
        &self,
        identity: &str,
        user: &super::teams::TeamsUserClaims,
        now: SystemTime,
    ) -> AccessTokenBody {
        let iat = unix_seconds(now);
        let exp = match self.lifetime_override {
            Some(lifetime) => {
                iat.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX))
            }
            None => user.exp,
        };
        let claims = TokenClaims {
            skypeid: identity.strip_prefix("8:").unwrap_or(identity).to_string(),
            scp: 1792,
            csi: iat.to_string(),
            iat,
            exp,
            acs_scope: String::new(),
            resource_id: self.store.resource_id().to_string(),
            jti: super::state::random_uuid(),
            seq: 0,
        };
        let MintedToken { token, expires_on } = self.minter.mint(&claims);
        AccessTokenBody { token, expires_on }
    }

    /// Whether a token would be honoured now, and if not, why.
    pub fn verify(&self, token: &str, now: SystemTime) -> TokenVerdict {
        let claims = match self.minter.read(token) {
            Ok(claims) => claims,
            Err(TokenError::Malformed) => return TokenVerdict::Malformed,
            Err(TokenError::ForeignSignature) => return TokenVerdict::Unknown,
        };
        // Entra users' identities are Entra's, not the resource's: nothing here revokes or
        // deletes them.
        let standing = if self.of_entra_user(&claims.skypeid) {
            Standing::Active
        } else {
            self.store
                .standing(&claims.identity_id(), claims.seq, claims.iat)
        };
        match standing {
            Standing::Unknown => TokenVerdict::Unknown,
            Standing::Deleted => TokenVerdict::Deleted,
            Standing::Revoked => TokenVerdict::Revoked,
            Standing::Active if unix_seconds(now) >= claims.exp => TokenVerdict::Expired,
            Standing::Active => TokenVerdict::Ok,
        }
    }

    /// Whether a token's `skypeid` is an Entra user's: a Teams user's (`orgid:<object>`) or an
    /// `/access` exchange's (`acs:<resource>_<tenant>_<object>` and the like). The resource's
    /// own identities are `acs:<resource>_<uuid>`, with no second `_`.
    fn of_entra_user(&self, skypeid: &str) -> bool {
        skypeid.starts_with(TEAMS_PREFIX)
            || skypeid
                .strip_prefix("acs:")
                .and_then(|rest| rest.strip_prefix(self.store.resource_id()))
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|user| user.contains('_'))
    }

    fn mint(
        &self,
        id: &str,
        scopes: &[Scope],
        minutes: u32,
        now: SystemTime,
    ) -> Result<AccessTokenBody, ErrorReply> {
        let seq = self
            .store
            .issue_token(id, now)
            .map_err(|error| store_error(error, id))?;
        let lifetime = self
            .lifetime_override
            .unwrap_or(Duration::from_secs(u64::from(minutes) * 60));
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let iat = unix_seconds(now);
        // Round up so a token lives at least as long as asked.
        let expiry = since_epoch.saturating_add(lifetime);
        let exp = i64::try_from(expiry.as_secs() + u64::from(expiry.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
        let claims = TokenClaims {
            skypeid: id.strip_prefix("8:").unwrap_or(id).to_string(),
            scp: 1792,
            csi: iat.to_string(),
            iat,
            exp,
            acs_scope: scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            resource_id: self.store.resource_id().to_string(),
            jti: super::state::random_uuid(),
            seq,
        };
        let MintedToken { token, expires_on } = self.minter.mint(&claims);
        Ok(AccessTokenBody { token, expires_on })
    }
}

/// The answer to a refused store change.
pub(super) fn store_error(error: StoreError, id: &str) -> ErrorReply {
    match error {
        StoreError::NotFound => ErrorReply::identity_not_found(id),
        StoreError::NotSaved => ErrorReply::new(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            "StateNotSaved",
            "The emulator could not save its state (see its log); the change was not made.",
        ),
    }
}

/// A time as the service writes `lastTokenIssuedAt`: seven fractional digits, `+00:00`.
fn format_service_time(at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = jiff::Timestamp::from_second(unix_seconds(at)).unwrap_or(jiff::Timestamp::MAX);
    format!(
        "{}.{:07}+00:00",
        whole.strftime("%Y-%m-%dT%H:%M:%S"),
        since_epoch.subsec_nanos() / 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "2023-10-01";
    const PREVIEW: &str = "2025-03-02-preview";

    fn service(lifetime_override: Option<Duration>) -> IdentityService {
        IdentityService::new(
            IdentityStore::new("2dee53b4-368b-45b4-ab52-8493fb117652".into()),
            TokenMinter::new([9; 32]),
            lifetime_override,
        )
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_000_000_250)
    }

    fn issue(scopes: &[&str], minutes: Option<i64>) -> IssueTokenRequest {
        IssueTokenRequest {
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            expires_in_minutes: minutes,
        }
    }

    fn exp_of(service: &IdentityService, token: &str) -> i64 {
        service.minter.read(token).unwrap().exp
    }

    #[test]
    fn create_without_scopes_mints_no_token() {
        let service = service(None);
        let created = service
            .create(V, &CreateIdentityRequest::default(), now())
            .unwrap();
        assert!(created.access_token.is_none());
        assert!(created.identity.id.starts_with("8:acs:2dee53b4-"));
    }

    #[test]
    fn create_with_scopes_mints_a_token_with_the_asked_lifetime() {
        let service = service(None);
        let body = CreateIdentityRequest {
            create_token_with_scopes: Some(vec!["chat".into(), "voip".into()]),
            expires_in_minutes: Some(60),
            ..CreateIdentityRequest::default()
        };
        let created = service.create(V, &body, now()).unwrap();
        let token = created.access_token.unwrap();
        let claims = service.minter.read(&token.token).unwrap();
        assert_eq!(claims.acs_scope, "chat,voip");
        assert_eq!(claims.identity_id(), created.identity.id);
        assert_eq!(claims.exp, 1_795_000_000 + 3600 + 1);
        assert_eq!(claims.iat, 1_795_000_000);
        let expires_on: jiff::Timestamp = token.expires_on.parse().unwrap();
        assert_eq!(expires_on.as_second(), claims.exp);
    }

    #[test]
    fn invalid_create_bodies_create_nothing() {
        let service = service(None);
        let body = CreateIdentityRequest {
            create_token_with_scopes: Some(vec!["chat".into()]),
            expires_in_minutes: Some(59),
            ..CreateIdentityRequest::default()
        };
        assert!(service.create(V, &body, now()).is_err());
        assert!(service.store().summaries().is_empty());
    }

    fn with_custom_id(custom_id: &str, scopes: Option<&[&str]>) -> CreateIdentityRequest {
        CreateIdentityRequest {
            create_token_with_scopes: scopes.map(|s| s.iter().map(|s| s.to_string()).collect()),
            custom_id: Some(custom_id.into()),
            ..CreateIdentityRequest::default()
        }
    }

    #[test]
    fn preview_create_with_a_custom_id_returns_the_same_identity_with_a_new_token() {
        let service = service(None);
        let body = with_custom_id("alice", Some(&["chat"]));
        let first = service.create(PREVIEW, &body, now()).unwrap();
        let later = now() + Duration::from_secs(90);
        let second = service.create(PREVIEW, &body, later).unwrap();
        assert_eq!(second.identity.id, first.identity.id);
        assert_eq!(second.identity.custom_id.as_deref(), Some("alice"));
        assert_eq!(
            first.identity.last_token_issued_at.as_deref(),
            Some("2026-11-18T11:06:40.2500000+00:00")
        );
        assert_eq!(
            second.identity.last_token_issued_at.as_deref(),
            Some("2026-11-18T11:08:10.2500000+00:00")
        );
        let (a, b) = (first.access_token.unwrap(), second.access_token.unwrap());
        assert_ne!(a.token, b.token);
        assert_eq!(service.verify(&a.token, later), TokenVerdict::Ok);
        let summaries = service.store().summaries();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].tokens_issued, 2);
    }

    #[test]
    fn preview_create_without_a_token_shows_no_last_issue() {
        let service = service(None);
        let created = service
            .create(PREVIEW, &with_custom_id("bob", None), now())
            .unwrap();
        assert_eq!(created.identity.custom_id.as_deref(), Some("bob"));
        assert_eq!(created.identity.last_token_issued_at, None);
        let plain = service
            .create(PREVIEW, &CreateIdentityRequest::default(), now())
            .unwrap();
        assert_eq!(plain.identity.custom_id, None);
    }

    #[test]
    fn ga_versions_ignore_a_custom_id() {
        let service = service(None);
        let body = with_custom_id("alice", Some(&["chat"]));
        let first = service.create(V, &body, now()).unwrap();
        let second = service.create(V, &body, now()).unwrap();
        assert_ne!(second.identity.id, first.identity.id);
        assert_eq!(first.identity.custom_id, None);
        assert_eq!(first.identity.last_token_issued_at, None);
        assert!(
            service
                .store()
                .summaries()
                .iter()
                .all(|s| s.custom_id.is_none())
        );
    }

    #[test]
    fn an_empty_custom_id_is_a_validation_error() {
        let service = service(None);
        let error = service
            .create(PREVIEW, &with_custom_id("", None), now())
            .unwrap_err();
        assert_eq!(error.target, Some("CustomId"));
        assert!(service.store().summaries().is_empty());
    }

    #[test]
    fn default_lifetime_is_a_day_and_the_override_wins() {
        let service = service(None);
        let id = service.store().create().unwrap();
        let token = service
            .issue_token(V, &id, &issue(&["chat"], None), now())
            .unwrap();
        assert_eq!(exp_of(&service, &token.token), 1_795_000_000 + 86_400 + 1);

        let quick = self::service(Some(Duration::from_secs(5)));
        let id = quick.store().create().unwrap();
        let token = quick
            .issue_token(V, &id, &issue(&["voip"], Some(600)), now())
            .unwrap();
        assert_eq!(exp_of(&quick, &token.token), 1_795_000_006);
    }

    #[test]
    fn verdicts_follow_the_identity_lifecycle() {
        let service = service(Some(Duration::from_secs(60)));
        let id = service.store().create().unwrap();
        let first = service
            .issue_token(V, &id, &issue(&["chat"], None), now())
            .unwrap()
            .token;
        assert_eq!(service.verify(&first, now()), TokenVerdict::Ok);
        let later = now() + Duration::from_secs(61);
        assert_eq!(service.verify(&first, later), TokenVerdict::Expired);

        service.revoke(&id).unwrap();
        assert_eq!(service.verify(&first, now()), TokenVerdict::Revoked);
        let second = service
            .issue_token(V, &id, &issue(&["chat"], None), now())
            .unwrap()
            .token;
        assert_eq!(service.verify(&second, now()), TokenVerdict::Ok);

        service.delete(&id).unwrap();
        assert_eq!(service.verify(&second, now()), TokenVerdict::Deleted);
        let error = service
            .issue_token(V, &id, &issue(&["chat"], None), now())
            .unwrap_err();
        assert_eq!(error.status, hyper::StatusCode::NOT_FOUND);
        assert_eq!(service.revoke(&id).unwrap_err().code, "IdentityNotFound");
        assert_eq!(service.delete(&id).unwrap_err().code, "IdentityNotFound");
    }

    #[test]
    fn exchanged_tokens_are_entra_users_and_unknown_resource_ids_stay_unknown() {
        let service = service(None);
        let user = crate::teams::TeamsUserSpec {
            app_id: Some("a".into()),
            user_id: Some("o".into()),
            tenant_id: Some("t".into()),
            ..Default::default()
        }
        .claims(unix_seconds(now()))
        .unwrap();
        let resource = service.store().resource_id().to_string();
        for identity in [
            format!("8:acs:{resource}_t_o"),
            format!("8:acs:{resource}_wf_t_o"),
            "8:orgid:o".to_string(),
        ] {
            let token = service.mint_for_entra_user(&identity, &user, now());
            assert_eq!(
                service.verify(&token.token, now()),
                TokenVerdict::Ok,
                "{identity}"
            );
        }
        let never_created = format!("8:acs:{resource}_{}", crate::state::random_uuid());
        let token = service.mint_for_entra_user(&never_created, &user, now());
        assert_eq!(service.verify(&token.token, now()), TokenVerdict::Unknown);
        let elsewhere = service.mint_for_entra_user("8:acs:other_t_o", &user, now());
        assert_eq!(
            service.verify(&elsewhere.token, now()),
            TokenVerdict::Unknown
        );
    }

    #[test]
    fn foreign_and_garbage_tokens() {
        let service = service(None);
        let other = self::service(None);
        let other_minter = IdentityService::new(
            IdentityStore::new("r".into()),
            TokenMinter::new([1; 32]),
            None,
        );
        let id = other_minter.store().create().unwrap();
        let foreign = other_minter
            .issue_token(V, &id, &issue(&["chat"], None), now())
            .unwrap()
            .token;
        assert_eq!(service.verify(&foreign, now()), TokenVerdict::Unknown);
        assert_eq!(service.verify("nope", now()), TokenVerdict::Malformed);
        // Same secret, different store: the identity is unknown here.
        let id = other.store().create().unwrap();
        let token = other
            .issue_token(V, &id, &issue(&["chat"], None), now())
            .unwrap()
            .token;
        assert_eq!(service.verify(&token, now()), TokenVerdict::Unknown);
    }

    #[test]
    fn issue_validates_before_touching_the_store() {
        let service = service(None);
        let id = service.store().create().unwrap();
        let missing = IssueTokenRequest::default();
        assert_eq!(
            service
                .issue_token(V, &id, &missing, now())
                .unwrap_err()
                .target,
            Some("Scopes")
        );
        assert_eq!(service.store().summaries()[0].tokens_issued, 0);
    }
}

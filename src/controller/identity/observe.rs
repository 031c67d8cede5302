//! Gathering the facts of one AcsIdentity reconcile: its connection, the token record its
//! status keeps, the token Secret's state and any unhandled refresh request. Reads only; the
//! decision is [`crate::policy::decide`]'s.

use super::{REFRESH_ANNOTATION, REVOKE_ANNOTATION};
use crate::acs::TokenLifetime;
use crate::api::{AcsIdentity, AcsIdentityStatus};
use crate::controller::Context;
use crate::controller::connections::Resolved;
use crate::controller::error::Error;
use crate::controller::{status, token_secret};
use crate::policy::{Observed, RenewBefore, SecretState, TokenParams, TokenRecord, tenancy};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

/// Everything one decision about an identity is made from, and what acting on it needs.
pub struct Facts {
    pub now: Timestamp,
    pub connection: std::sync::Arc<Resolved>,
    pub lifetime: TokenLifetime,
    /// What a token issued now would be issued for.
    pub wanted: TokenParams,
    /// The token status says was last written.
    pub record: Option<TokenRecord>,
    /// `spec.identityId` when adopting, else the one created.
    pub identity_id: Option<String>,
    pub secret: SecretState,
    /// The token Secret as found: metadata only when the index vouched for its content.
    pub existing: Option<Secret>,
    /// The refresh annotation's value, when it has not been handled yet.
    pub refresh_request: Option<String>,
    /// The revoke annotation's value, when it has not been handled yet.
    pub revoke_request: Option<String>,
    pub renew_before: RenewBefore,
}

impl Facts {
    /// The facts as policy reads them.
    pub fn observed(&self) -> Observed<'_> {
        Observed {
            identity_id: self.identity_id.as_deref(),
            wanted: &self.wanted,
            issued: self.record.as_ref(),
            secret: self.secret,
            refresh_requested: self.refresh_request.is_some(),
            revoke_requested: self.revoke_request.is_some(),
            now: self.now,
        }
    }

    /// The recorded token, if the Secret still holds it and it was issued for the current
    /// spec: what the Ready condition speaks of.
    pub fn current_token(&self) -> Option<TokenRecord> {
        let record = self.record.as_ref()?;
        let held = matches!(
            self.secret,
            SecretState::Current | SecretState::MetadataDrift
        );
        (held && record.params == self.wanted).then(|| record.clone())
    }

    /// The request annotation values a new token answers.
    pub fn handled(&self) -> crate::controller::status::Handled {
        crate::controller::status::Handled {
            refresh: self.refresh_request.clone(),
            revoke: self.revoke_request.clone(),
        }
    }

    /// The uid of the token Secret found, when it is ours (a write must land on it).
    pub fn existing_uid(&self) -> Option<&str> {
        self.existing.as_ref()?.metadata.uid.as_deref()
    }
}

pub async fn observe(
    obj: &AcsIdentity,
    ctx: &Context,
    status: &AcsIdentityStatus,
    now: Timestamp,
) -> Result<Facts, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let connection = ctx
        .connections
        .resolve(&namespace, &obj.spec.connection_ref)
        .await?;
    check_tenancy(obj, ctx, &namespace, status).await?;
    let lifetime = TokenLifetime::from_minutes(obj.spec.token_lifetime_minutes)
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let wanted = TokenParams::new(
        &obj.spec.scopes,
        lifetime.minutes(),
        connection.fingerprint.clone(),
    );
    let record = status::token_record(status);
    let (existing, secret) = observe_secret(obj, ctx, record.as_ref()).await?;
    Ok(Facts {
        now,
        connection,
        lifetime,
        wanted,
        identity_id: obj.spec.identity_id.clone().or(status.identity_id.clone()),
        record,
        secret,
        existing,
        refresh_request: unhandled(obj, REFRESH_ANNOTATION, &status.handled_refresh_request),
        revoke_request: unhandled(obj, REVOKE_ANNOTATION, &status.handled_revoke_request),
        renew_before: renew_before(obj),
    })
}

/// The token Secret and how it compares with the record. While the Secret is still at the
/// version we wrote, the cached metadata tell all and the token is not read.
async fn observe_secret(
    obj: &AcsIdentity,
    ctx: &Context,
    record: Option<&TokenRecord>,
) -> Result<(Option<Secret>, SecretState), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.secret_name();
    let owner_uid = obj.uid().unwrap_or_default();
    let template = obj.spec.secret_template.as_ref();
    let written = record.and_then(|r| r.secret_resource_version.as_deref());
    if let Some((meta, owned)) = ctx.unchanged_token_secret(&namespace, &name, written) {
        let state = token_secret::observe_unchanged(&meta, &owned, &owner_uid, template);
        let known = Secret {
            metadata: meta,
            ..Secret::default()
        };
        return Ok((Some(known), state));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets.get_opt(&name).await?;
    let state = token_secret::observe(existing.as_ref(), &owner_uid, record, template);
    Ok((existing, state))
}

/// The tenancy rules ([`crate::policy::tenancy`]): adoption only where the connection allows
/// it, one holder per ACS identity, and the namespace's share of a shared connection. Looks
/// at nothing for a created identity it already holds (every renewal); reads the cache of
/// AcsIdentities only when adopting or under a cap.
async fn check_tenancy(
    obj: &AcsIdentity,
    ctx: &Context,
    namespace: &str,
    status: &AcsIdentityStatus,
) -> Result<(), Error> {
    let r = &obj.spec.connection_ref;
    let adopting = obj.spec.identity_id.as_deref();
    if adopting.is_none() && status.identity_id.is_some() {
        // A created identity it holds: no rule applies (the renewal path reads nothing).
        return Ok(());
    }
    let grants = ctx
        .connections
        .grants(namespace, r, adopting.is_some())
        .await?;
    if adopting.is_some() && !grants.may_adopt {
        return Err(Error::AdoptionNotAllowed {
            connection: r.name.clone(),
            namespace: namespace.to_string(),
        });
    }
    let me = tenancy::Claimant {
        holds: status.identity_id.as_deref(),
        ..claimant(obj)
    };
    // An AcsIdentity being deleted is leaving: it frees its share, and its claim (its
    // cleanup keeps or deletes the ACS identity as its own rules say).
    let staying = |o: &&std::sync::Arc<AcsIdentity>| o.metadata.deletion_timestamp.is_none();
    if let Some(id) = adopting {
        let all = ctx.identities.state();
        let others = all.iter().filter(staying).map(|o| claimant(o));
        if !tenancy::is_holder(id, me, others) {
            return Err(Error::IdentityClaimed { id: id.to_string() });
        }
    }
    if let Some(max) = grants.max_identities
        && me.holds.is_none()
    {
        let all = ctx.identities.state();
        let peers = all
            .iter()
            .filter(staying)
            .filter(|o| o.namespace().as_deref() == Some(namespace) && o.spec.connection_ref == *r)
            .map(|o| claimant(o));
        if !tenancy::within_share(&me, peers, max) {
            return Err(Error::IdentityLimitReached {
                connection: r.name.clone(),
                namespace: namespace.to_string(),
                max,
            });
        }
    }
    Ok(())
}

/// An AcsIdentity as the claim rules see it.
pub fn claimant(obj: &AcsIdentity) -> tenancy::Claimant<'_> {
    tenancy::Claimant {
        uid: obj.metadata.uid.as_deref().unwrap_or_default(),
        created_at: obj.metadata.creation_timestamp.as_ref().map(|t| t.0),
        holds: obj.status.as_ref().and_then(|s| s.identity_id.as_deref()),
        adopts: obj.spec.identity_id.as_deref(),
    }
}

/// A request annotation's value, when it differs from the one last handled.
fn unhandled(obj: &AcsIdentity, annotation: &str, handled: &Option<String>) -> Option<String> {
    let value = obj.annotations().get(annotation)?;
    (handled.as_ref() != Some(value)).then(|| value.clone())
}

fn renew_before(obj: &AcsIdentity) -> RenewBefore {
    match (&obj.spec.renew_before, obj.spec.renew_before_percentage) {
        (Some(d), _) => RenewBefore::Fixed(d.value()),
        (None, Some(p)) => RenewBefore::Percentage(p),
        (None, None) => RenewBefore::Default,
    }
}

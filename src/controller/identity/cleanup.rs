//! Releasing an AcsIdentity that is being deleted: revoke its tokens and delete the ACS
//! identity it holds when [`tenancy::release`] says so (by default only one the operator
//! created, never one another AcsIdentity holds), then delete its own token Secret. Works
//! when setup never completed; the skip-cleanup annotation keeps the ACS identity.

use super::SKIP_CLEANUP_ANNOTATION;
use super::observe::claimant;
use crate::acs::{AcsError, Operation};
use crate::api::AcsIdentity;
use crate::controller::error::Error;
use crate::controller::{Context, token_secret};
use crate::policy::Reason;
use crate::policy::tenancy::{self, KeepReason, Leaving, Release};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

pub async fn cleanup(obj: &AcsIdentity, ctx: &Context) -> Result<Action, Error> {
    let result = release(obj, ctx).await;
    match &result {
        Err(error) => {
            let reason = error.reason();
            warn!(%reason, %error, "cleanup failed");
            let note = format!("cleanup failed: {error}");
            ctx.publish(obj, EventType::Warning, reason, note).await;
        }
        Ok(()) => {
            let namespace = obj.namespace().unwrap_or_default();
            ctx.metrics.forget_identity(&namespace, &obj.name_any());
            ctx.statuses.forget(obj);
        }
    }
    result.map(|()| Action::await_change())
}

async fn release(obj: &AcsIdentity, ctx: &Context) -> Result<(), Error> {
    // Only what this object holds: a refused adoption never held the id it names.
    let held = obj.status.as_ref().and_then(|s| s.identity_id.clone());
    if let Some(id) = held {
        match decide_release(obj, ctx, &id).await? {
            Release::Delete => delete_identity(obj, ctx, &id).await?,
            Release::Keep(why) => {
                info!(identity = %id, ?why, "kept the ACS identity");
                if let Some(reason) = why.event_reason() {
                    let note = format!("kept ACS identity {id} in ACS: {}", keep_note(why));
                    ctx.publish(obj, EventType::Normal, reason, note).await;
                }
            }
        }
    }
    delete_owned_secret(ctx, obj).await?;
    nudge_held_back(obj, ctx).await;
    Ok(())
}

/// See [`tenancy::release`].
async fn decide_release(obj: &AcsIdentity, ctx: &Context, id: &str) -> Result<Release, Error> {
    let skip = obj
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .map(String::as_str)
        == Some("true");
    let adopted = obj.spec.identity_id.as_deref() == Some(id);
    let all = ctx.identities.state();
    let rightful = tenancy::is_holder(id, claimant(obj), all.iter().map(|o| claimant(o)));
    let may_adopt = if adopted && !skip && rightful {
        let namespace = obj.namespace().unwrap_or_default();
        ctx.connections
            .grants(&namespace, &obj.spec.connection_ref, true)
            .await?
            .may_adopt
    } else {
        true
    };
    Ok(tenancy::release(Leaving {
        adopted,
        policy: obj.spec.deletion_policy,
        rightful,
        may_adopt,
        skip,
    }))
}

fn keep_note(why: KeepReason) -> &'static str {
    match why {
        KeepReason::HeldElsewhere => "another AcsIdentity holds it",
        KeepReason::AdoptionNotAllowed => {
            "it was adopted through a connection that no longer allows this namespace to adopt"
        }
        KeepReason::Retained => "deletionPolicy Retain (the default for adopted identities)",
        KeepReason::Skipped => "cleanup skipped by annotation",
    }
}

/// Identities that may have waited for this one to go: those asking for the identity it
/// held, and, when its connection caps a namespace's share, those of its namespace on the
/// same connection without one yet (a share freed).
async fn nudge_held_back(obj: &AcsIdentity, ctx: &Context) {
    let held = obj.status.as_ref().and_then(|s| s.identity_id.as_deref());
    let namespace = obj.namespace();
    let capped = ctx
        .connections
        .grants(
            namespace.as_deref().unwrap_or_default(),
            &obj.spec.connection_ref,
            false,
        )
        .await
        .is_ok_and(|g| g.max_identities.is_some());
    if held.is_none() && !capped {
        return;
    }
    for other in ctx.identities.state() {
        if other.uid() == obj.uid() {
            continue;
        }
        let wants_it = held.is_some() && other.spec.identity_id.as_deref() == held;
        let same_share = capped
            && other.namespace() == namespace
            && other.spec.connection_ref == obj.spec.connection_ref
            && other
                .status
                .as_ref()
                .is_none_or(|s| s.identity_id.is_none());
        if wants_it || same_share {
            let _ = ctx.nudge.unbounded_send(ObjectRef::from_obj(&*other));
        }
    }
}

/// Revokes the identity's tokens, then deletes it; each step is done if ACS no longer knows it.
async fn delete_identity(obj: &AcsIdentity, ctx: &Context, id: &str) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let connection = ctx
        .connections
        .resolve(&namespace, &obj.spec.connection_ref)
        .await?;
    let revoke = connection.client.revoke_tokens(id);
    if took_effect(ctx.metrics.acs_call(Operation::RevokeTokens, revoke).await)? {
        let note = format!("revoked the tokens of {id}");
        ctx.publish(obj, EventType::Normal, Reason::TokensRevoked, note)
            .await;
    }
    let delete = connection.client.delete_identity(id);
    if took_effect(
        ctx.metrics
            .acs_call(Operation::DeleteIdentity, delete)
            .await,
    )? {
        let note = format!("deleted ACS identity {id}");
        ctx.publish(obj, EventType::Normal, Reason::IdentityDeleted, note)
            .await;
    }
    info!(identity = %id, "released ACS identity");
    Ok(())
}

/// `Ok(true)` when the call took effect, `Ok(false)` when ACS no longer knew the identity.
fn took_effect(result: Result<(), AcsError>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(AcsError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the token Secret if this identity controls it (pinned by uid, so a Secret that
/// replaced it meanwhile is not deleted).
async fn delete_owned_secret(ctx: &Context, obj: &AcsIdentity) -> Result<(), Error> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let name = obj.secret_name();
    let Some(secret) = secrets.get_opt(&name).await? else {
        return Ok(());
    };
    if !token_secret::is_controlled_by(&secret.metadata, &obj.uid().unwrap_or_default()) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

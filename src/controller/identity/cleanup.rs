//! Releasing an AcsIdentity that is being deleted: revoke its tokens and delete the ACS
//! identity (Delete policy), then delete its own token Secret. Works when setup never
//! completed, and is skipped with the skip-cleanup annotation.

use super::SKIP_CLEANUP_ANNOTATION;
use crate::acs::{AcsError, Operation};
use crate::api::{AcsIdentity, DeletionPolicy};
use crate::controller::error::Error;
use crate::controller::{Context, token_secret};
use crate::policy::Reason;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
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
    let skip = obj
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .map(String::as_str)
        == Some("true");
    let identity_id = obj
        .status
        .as_ref()
        .and_then(|s| s.identity_id.clone())
        .or(obj.spec.identity_id.clone());
    if let (false, DeletionPolicy::Delete, Some(id)) = (skip, obj.spec.deletion_policy, identity_id)
    {
        delete_identity(obj, ctx, &id).await?;
    }
    delete_owned_secret(ctx, obj).await
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

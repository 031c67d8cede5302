//! Releasing an AcsIdentity that is being deleted: revoke its tokens and delete the ACS
//! identity it holds when [`tenancy::release`] says so (by default only one the operator
//! created, never one another AcsIdentity holds), then delete its own token Secret. Works
//! when setup never completed; the skip-cleanup annotation keeps the ACS identity.

use super::SKIP_CLEANUP_ANNOTATION;
use super::observe::{self, claimant};
use crate::acs::{AcsError, Operation};
use crate::api::AcsIdentity;
use crate::api::{Origin, Provenance};
use crate::controller::bulkheads::Refused;
use crate::controller::connections::Resolved;
use crate::controller::error::Error;
use crate::controller::{Context, token_secret};
use crate::policy::Reason;
use crate::policy::provenance::Here;
use crate::policy::tenancy::{self, Despite, KeepReason, Leaving, Release};
use crate::policy::waiting;
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
        // No room for its ACS calls yet: no failure, looked at again shortly.
        Err(error) if error.is_crowded() => {}
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
            ctx.later.forget(&namespace, &obj.name_any());
        }
    }
    result.map(|()| Action::await_change())
}

async fn release(obj: &AcsIdentity, ctx: &Context) -> Result<(), Error> {
    // Only what this object holds: a refused adoption never held the id it names.
    let held = obj.status.as_ref().and_then(|s| s.identity_id.clone());
    if let Some(id) = held {
        let (decision, home) = decide_release(obj, ctx, &id).await?;
        match (decision, home) {
            (Release::Delete { despite }, Some(Reached { connection, home })) => {
                if let Some(despite) = despite {
                    let note = format!(
                        "deleting ACS identity {id} although {}: it was created through {}, \
                         and what a namespace creates on a shared resource is deleted with its \
                         AcsIdentity (maxIdentitiesPerNamespace counts the bill)",
                        match despite {
                            Despite::Skip => "the skip-cleanup annotation asks to keep it",
                            Despite::Retain => "deletionPolicy Retain asks to keep it",
                        },
                        observe::describe(&home.connection_ref)
                    );
                    ctx.publish(obj, EventType::Warning, Reason::RetainNotAllowed, note)
                        .await;
                }
                delete_identity(obj, ctx, &id, &connection).await?
            }
            (Release::Delete { .. }, None) => {
                // release() deletes only where a home was reached; nothing is sent otherwise.
                warn!(identity = %id, "no connection reaches the identity; kept");
            }
            (Release::Keep(why), home) => {
                info!(identity = %id, ?why, "kept the ACS identity");
                if let Some(reason) = why.event_reason() {
                    let (type_, reason, note) = keep_event(why, reason, &id, obj, home.is_some());
                    ctx.publish(obj, type_, reason, note).await;
                }
            }
        }
    }
    delete_owned_secret(ctx, obj).await?;
    let cached = |uid: &str| {
        ctx.identities
            .state()
            .iter()
            .any(|o| o.uid().as_deref() == Some(uid))
    };
    ctx.released.insert(&obj.uid().unwrap_or_default(), cached);
    nudge_held_back(obj, ctx).await;
    Ok(())
}

/// The connection that reaches the resource an identity lives on, and that home.
struct Reached {
    connection: std::sync::Arc<Resolved>,
    home: Provenance,
}

/// Where the identity held lives, reached through the connection it came through (for an
/// identity of the previous version, through its current connection if that can vouch for
/// it). `Ok(None)`: that connection is gone or reaches another resource; a passing failure to
/// resolve it is an error (retried).
async fn reach_home(obj: &AcsIdentity, ctx: &Context, id: &str) -> Result<Option<Reached>, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let status = obj.status.clone().unwrap_or_default();
    let recorded = status.provenance.clone();
    let through = recorded
        .as_ref()
        .map(|p| p.connection_ref.clone())
        .unwrap_or_else(|| obj.spec.connection_ref.clone());
    let connection = match ctx.connections.resolve(&namespace, &through).await {
        Ok(c) => c,
        Err(e) if !e.is_transient() => {
            warn!(identity = %id, error = %e, "the connection the identity came through is gone");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let reaches = observe::reached(&connection)?;
    let home = match recorded {
        Some(p) if p.endpoint == reaches => p,
        Some(_) => return Ok(None),
        None => {
            let here = Here {
                endpoint: &reaches,
                via: observe::via_of(&namespace, &through),
            };
            let all = ctx.identities.state();
            let me = claimant(obj);
            let others: Vec<_> = all.iter().map(|o| claimant(o)).collect();
            let legacy = observe::legacy(&me, here, &status, &connection, &all);
            match tenancy::legacy_home(me, here, legacy, &others) {
                Some(home) => observe::provenance_of(home),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(Reached { connection, home }))
}

/// See [`tenancy::release`].
async fn decide_release(
    obj: &AcsIdentity,
    ctx: &Context,
    id: &str,
) -> Result<(Release, Option<Reached>), Error> {
    let skip = obj
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .map(String::as_str)
        == Some("true");
    let namespace = obj.namespace().unwrap_or_default();
    let reached = reach_home(obj, ctx, id).await?;
    let Some(home) = reached.as_ref().map(|r| &r.home) else {
        let leaving = Leaving {
            adopted: false,
            policy: obj.spec.deletion_policy,
            rightful: true,
            may_adopt: false,
            skip,
            shared: false,
            reachable: false,
        };
        return Ok((tenancy::release(leaving), None));
    };
    let here = Here {
        endpoint: &home.endpoint,
        via: observe::via_of(&namespace, &home.connection_ref),
    };
    let adopted = home.origin == Origin::Adopted;
    let shared = here.via.shared();
    let all = ctx.identities.state();
    let me = tenancy::Claimant {
        home: Some(observe::home_of(home, &namespace)),
        ..claimant(obj)
    };
    let rightful = tenancy::is_holder(id, here, me, all.iter().map(|o| claimant(o)));
    let may_adopt = if (adopted || shared) && rightful {
        ctx.connections
            .grants(&namespace, &home.connection_ref, true)
            .await?
            .may_adopt
    } else {
        true
    };
    let release = tenancy::release(Leaving {
        adopted,
        policy: obj.spec.deletion_policy,
        rightful,
        may_adopt,
        skip,
        shared,
        reachable: true,
    });
    Ok((release, reached))
}

/// The Event that says an identity was kept: Normal, except when it was kept because nothing
/// reaches where it lives (`home_known`: its home is known, else the previous version's
/// record could not tell).
fn keep_event(
    why: KeepReason,
    reason: Reason,
    id: &str,
    obj: &AcsIdentity,
    reached: bool,
) -> (EventType, Reason, String) {
    if why != KeepReason::Unreachable {
        let note = format!("kept ACS identity {id} in ACS: {}", keep_note(why));
        return (EventType::Normal, reason, note);
    }
    debug_assert!(!reached);
    let recorded = obj.status.as_ref().and_then(|s| s.provenance.as_ref());
    match recorded {
        Some(p) => (
            EventType::Warning,
            Reason::IdentityOnOtherResource,
            format!(
                "kept ACS identity {id} in ACS: {} no longer reaches {}, where it lives; no \
                 request is sent to another resource",
                observe::describe(&p.connection_ref),
                p.endpoint
            ),
        ),
        None => (
            EventType::Warning,
            Reason::ProvenanceUnknown,
            format!(
                "kept ACS identity {id} in ACS: it was recorded by an earlier version without \
                 where it lives, and its connection cannot vouch for it"
            ),
        ),
    }
}

fn keep_note(why: KeepReason) -> &'static str {
    match why {
        KeepReason::HeldElsewhere => "another AcsIdentity holds it",
        KeepReason::AdoptionNotAllowed => {
            "it was adopted through a connection that no longer allows this namespace to adopt"
        }
        KeepReason::Retained => "deletionPolicy Retain (the default for adopted identities)",
        KeepReason::Skipped => "cleanup skipped by annotation",
        KeepReason::Unreachable => "its connection no longer reaches where it lives",
    }
}

/// Nudges the identities that may have waited for this one to go ([`waiting::waited_for`]).
async fn nudge_held_back(obj: &AcsIdentity, ctx: &Context) {
    let status = obj.status.as_ref();
    let namespace = obj.namespace();
    let uid = obj.uid();
    // The share freed is that of the connection the identity lived on.
    let share = status
        .and_then(|s| s.provenance.as_ref())
        .map_or(&obj.spec.connection_ref, |p| &p.connection_ref);
    let capped = ctx
        .connections
        .grants(namespace.as_deref().unwrap_or_default(), share, false)
        .await
        .is_ok_and(|g| g.max_identities.is_some());
    let leaving = waiting::Leaving {
        uid: uid.as_deref(),
        held: status.and_then(|s| s.identity_id.as_deref()),
        namespace: namespace.as_deref(),
        share,
        capped,
    };
    if !waiting::may_free_anything(&leaving) {
        return;
    }
    for other in ctx.identities.state() {
        let seen = waiting::Other {
            uid: other.metadata.uid.as_deref(),
            adopts: other.spec.identity_id.as_deref(),
            namespace: other.metadata.namespace.as_deref(),
            connection_ref: &other.spec.connection_ref,
            holds_one: other
                .status
                .as_ref()
                .is_some_and(|s| s.identity_id.is_some()),
        };
        if waiting::waited_for(&leaving, &seen) {
            let _ = ctx.nudge.unbounded_send(ObjectRef::from_obj(&*other));
        }
    }
}

/// Revokes the identity's tokens, then deletes it; each step is done if ACS no longer knows it.
/// Through the bulkheads like every ACS call: a silent endpoint's cleanups are refused at once
/// while its breaker is open, and a crowded one waits outside without holding a worker.
async fn delete_identity(
    obj: &AcsIdentity,
    ctx: &Context,
    id: &str,
    connection: &Resolved,
) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let mut pass = ctx
        .bulkheads
        .enter(connection.client.endpoint().as_str(), &namespace)
        .map_err(|refused| match refused {
            Refused::Crowded(_) => Error::Crowded,
            Refused::CircuitOpen { retry_in } => Error::AcsCircuitOpen { retry_in },
        })?;
    let revoke = connection.client.revoke_tokens(id);
    if took_effect(pass.call(Operation::RevokeTokens, revoke).await)? {
        let note = format!("revoked the tokens of {id}");
        ctx.publish(obj, EventType::Normal, Reason::TokensRevoked, note)
            .await;
    }
    let delete = connection.client.delete_identity(id);
    if took_effect(pass.call(Operation::DeleteIdentity, delete).await)? {
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

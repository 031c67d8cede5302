//! Reconciling one AcsIdentity, in four steps that each live in one place:
//! [`observe`] gathers the facts, [`crate::policy::decide`] chooses, [`act`] does that one
//! thing, and [`record`] writes the status, publishes the Event and asks
//! [`crate::policy::next_look`] when to look again. Deletion goes through the
//! `acsoperator.io/cleanup` finalizer to [`cleanup`].

mod act;
#[cfg(test)]
mod call_sequence;
mod cleanup;
mod observe;

use super::error::Error;
use super::status;
use crate::api::{AcsIdentity, AcsIdentityStatus, Provenance};
use crate::controller::context::{Context, look_again, trim_for_cache};
use crate::policy::{Outcome, TokenRecord, decide, failure};
use act::{Failed, Step};
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, warn};

pub const FINALIZER: &str = "acsoperator.io/cleanup";
pub const REFRESH_ANNOTATION: &str = "acsoperator.io/refresh-requested";
pub const SKIP_CLEANUP_ANNOTATION: &str = "acsoperator.io/skip-cleanup";
/// A new value revokes every token of the identity and puts a fresh one in the Secret.
pub const REVOKE_ANNOTATION: &str = "acsoperator.io/revoke-requested";

/// Entry point for the controller: routes to apply or cleanup through the finalizer.
pub async fn reconcile(obj: Arc<AcsIdentity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<AcsIdentity> = Api::namespaced(ctx.client.clone(), &namespace);
    // kube's finalizer helper adds a missing finalizer and stops, leaving the work to the
    // reconcile that the change triggers: two reconciles for every new identity. Adding it
    // here and going on does the same in one.
    let obj = match add_finalizer(&api, &obj).await {
        Ok(Some(patched)) => Arc::new(patched),
        Ok(None) => obj,
        // The patch first tests the finalizers we saw; 422 means the cached object was older
        // than the server's (our own earlier patch not yet seen).
        Err(kube::Error::Api(s)) if s.code == 422 => {
            debug!("finalizer patch raced a newer version; looking again");
            return Ok(look_again(Outcome::FinalizerRaced));
        }
        Err(e) => return Err(Error::Kube(e)),
    };
    let result = finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(o) => apply(&o, &ctx).await,
            Finalizer::Cleanup(o) => cleanup::cleanup(&o, &ctx).await,
        }
    })
    .await;
    result.map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Finalizer(Box::new(other)),
    })
}

/// Adds our finalizer to an object that is not being deleted and lacks it, by a JSON patch
/// that first tests the finalizers seen (so no other controller's change is lost); the
/// object as patched, or `None` when there was nothing to add.
async fn add_finalizer(
    api: &Api<AcsIdentity>,
    obj: &AcsIdentity,
) -> Result<Option<AcsIdentity>, kube::Error> {
    use json_patch::{AddOperation, PatchOperation, TestOperation, jsonptr::PointerBuf};
    let finalizers = obj.finalizers();
    if obj.meta().deletion_timestamp.is_some() || finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let path = |p: &str| PointerBuf::parse(p).expect("a constant JSON pointer");
    let (seen, add) = if finalizers.is_empty() {
        (
            serde_json::Value::Null,
            ("/metadata/finalizers", vec![FINALIZER].into()),
        )
    } else {
        (
            finalizers.into(),
            ("/metadata/finalizers/-", FINALIZER.into()),
        )
    };
    let patch = json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: path("/metadata/finalizers"),
            value: seen,
        }),
        PatchOperation::Add(AddOperation {
            path: path(add.0),
            value: add.1,
        }),
    ]);
    let params = kube::api::PatchParams::default();
    let mut patched = api
        .patch(
            &obj.name_any(),
            &params,
            &kube::api::Patch::Json::<()>(patch),
        )
        .await?;
    trim_for_cache(&mut patched);
    Ok(Some(patched))
}

/// Makes sure the Secret holds a valid token for the spec. Failures are recorded in status
/// and turned into the requeue policy chooses, so that backoff follows the token's expiry and
/// ACS's Retry-After rather than a generic error policy.
async fn apply(obj: &AcsIdentity, ctx: &Context) -> Result<Action, Error> {
    let started = Instant::now();
    // Status times are whole seconds on the server; keep `now` comparable.
    let now = crate::policy::whole_seconds(Timestamp::now());
    let known = ctx.statuses.current(obj);
    let base = known.clone().unwrap_or_default();
    if let Some(renewal) = base.renewal_time.as_ref()
        && renewal.0 < now
    {
        let overdue = now.duration_since(renewal.0).as_millis();
        debug!(overdue_ms = overdue, "renewal overdue at reconcile start");
    }
    let (result, current, home) = match observe::observe(obj, ctx, &base, now).await {
        Ok(facts) => {
            let current = facts.current_token();
            let decision = decide(&facts.observed());
            let target = act::Target {
                obj,
                ctx,
                known: known.as_ref(),
            };
            let result = act::act(decision, &facts, &target).await;
            (result, current, Some(facts.home))
        }
        Err(error) => (Err(error.into()), None, None),
    };
    let recorded = Recorded {
        obj,
        ctx,
        known: known.as_ref(),
        now,
        started,
    };
    recorded.record(base, current, home, result).await
}

/// What a finished reconcile records.
struct Recorded<'a> {
    obj: &'a AcsIdentity,
    ctx: &'a Context,
    known: Option<&'a AcsIdentityStatus>,
    now: Timestamp,
    started: Instant,
}

impl Recorded<'_> {
    /// Writes the status `result` leads to, publishes its Event and says when to look again.
    /// `current` is the token the Secret held for the current spec before acting; `home`:
    /// where the identity lives, as the tenancy gate found it (recorded with the identity).
    async fn record(
        &self,
        base: AcsIdentityStatus,
        current: Option<TokenRecord>,
        home: Option<Provenance>,
        result: Result<Step, Failed>,
    ) -> Result<Action, Error> {
        let obj = self.obj;
        match result {
            Ok(step @ (Step::InLine { .. } | Step::Crowded)) => {
                debug!("in line for ACS capacity");
                // Reconciling=True says so to the tools that read status; written once (a
                // status that did not change is not written again).
                let status = status::in_line(obj, base, current.as_ref(), self.now);
                let status = status::with_home(status, home);
                status::write(self.ctx, obj, self.known, status).await?;
                Ok(look_again(match step {
                    Step::InLine { token_valid_for } => Outcome::InLine { token_valid_for },
                    _ => Outcome::Crowded,
                }))
            }
            Ok(Step::Current {
                token,
                event,
                handled,
            }) => {
                let status = status::succeeded(obj, base, &token, handled, self.now);
                let status = status::with_home(status, home);
                let event = event.map(|(reason, note)| (EventType::Normal, reason, note));
                self.write(status, Ok(()), event).await?;
                Ok(look_again(Outcome::UpToDate {
                    renew_at: token.renewal_time,
                }))
            }
            Err(Failed { error, identity_id }) => {
                let reason = error.reason();
                warn!(%reason, %error, "reconcile failed");
                let status =
                    status::failed(obj, base, current.as_ref(), identity_id, &error, self.now);
                let status = status::with_home(status, home);
                let attempts = status.failed_attempts.unwrap_or(1);
                let event = (EventType::Warning, reason, error.to_string());
                self.write(status, Err(reason), Some(event)).await?;
                let token_valid_for = current.and_then(|c| c.valid_for(self.now));
                Ok(look_again(failure::outcome(
                    &error.class(),
                    attempts,
                    token_valid_for,
                )))
            }
        }
    }

    /// Updates the identity's metrics, writes `status` if it changed, counts the reconcile
    /// and publishes `event`.
    async fn write(
        &self,
        status: AcsIdentityStatus,
        outcome: Result<(), crate::policy::Reason>,
        event: Option<(EventType, crate::policy::Reason, String)>,
    ) -> Result<(), Error> {
        let (obj, ctx) = (self.obj, self.ctx);
        let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        ctx.metrics.observe_identity(&namespace, &name, &status);
        status::write(ctx, obj, self.known, status).await?;
        ctx.metrics.observe_reconcile(outcome, self.started);
        if let Some((type_, reason, note)) = event {
            ctx.publish(obj, type_, reason, note).await;
        }
        Ok(())
    }
}

pub fn object_ref(obj: &AcsIdentity) -> k8s_openapi::api::core::v1::ObjectReference {
    obj.object_ref(&())
}

//! Reconciling one AcsIdentity, in four steps that each live in one place:
//! [`observe`] gathers the facts, [`crate::policy::decide`] chooses, [`act`] does that one
//! thing and says what it did, and [`record`], the only status writer, writes the status,
//! counts the reconcile, publishes the Event and asks [`crate::policy::next_look`] when to
//! look again. Deletion goes through the
//! `acsoperator.io/cleanup` finalizer to [`cleanup`].

mod act;
#[cfg(test)]
mod call_sequence;
mod cleanup;
mod observe;
mod provenance_index;
mod record;

pub use provenance_index::ProvenanceIndex;

use super::error::Error;
use crate::api::AcsIdentity;
use crate::controller::context::{Context, trim_for_cache};
use crate::policy::{Outcome, decide};
use act::Acted;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Resource, ResourceExt};
use record::Record;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

pub const FINALIZER: &str = "acsoperator.io/cleanup";
pub const REFRESH_ANNOTATION: &str = "acsoperator.io/refresh-requested";
pub const SKIP_CLEANUP_ANNOTATION: &str = "acsoperator.io/skip-cleanup";
/// A new value revokes every token of the identity and puts a fresh one in the Secret.
pub const REVOKE_ANNOTATION: &str = "acsoperator.io/revoke-requested";

/// Entry point for the controller: routes to apply or cleanup through the finalizer.
pub async fn reconcile(obj: Arc<AcsIdentity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ctx = ctx.as_ref();
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<AcsIdentity> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = async {
        // kube's finalizer helper adds a missing finalizer and stops, leaving the work to the
        // reconcile that the change triggers: two reconciles for every new identity. Adding
        // it here and going on does the same in one.
        let obj = match add_finalizer(&api, &obj).await {
            Ok(Some(patched)) => Arc::new(patched),
            Ok(None) => obj,
            // The patch first tests the finalizers we saw; 422 means the cached object was
            // older than the server's (our own earlier patch not yet seen).
            Err(kube::Error::Api(s)) if s.code == 422 => {
                debug!("finalizer patch raced a newer version; looking again");
                return Ok(ctx.look_again_at(&obj, Outcome::FinalizerRaced));
            }
            Err(e) => return Err(Error::Kube(e)),
        };
        finalizer::finalizer(&api, FINALIZER, obj, |event| async {
            match event {
                Finalizer::Apply(o) => apply(&o, ctx).await,
                Finalizer::Cleanup(o) => cleanup::cleanup(&o, ctx).await,
            }
        })
        .await
        .map_err(|e| match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                Error::Kube(e)
            }
            other => Error::Finalizer(Box::new(other)),
        })
    }
    .await;
    // A failure `apply` recorded is counted with its record; these are the ones it could not
    // record (the API server refused or missed a write) and the cleanup's.
    if let Err(error) = &result {
        record::count(ctx, Some(&error.class()), started);
    }
    result
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

/// Makes sure the Secret holds a valid token for the spec: gather the facts, let policy
/// decide, act, record. Failures are recorded in status and turned into the requeue policy
/// chooses, so that backoff follows the token's expiry and ACS's Retry-After.
async fn apply(obj: &AcsIdentity, ctx: &Context) -> Result<Action, Error> {
    let record = Record::start(obj, ctx);
    let facts = match observe::observe(obj, ctx, &record.base, record.now).await {
        Ok(facts) => facts,
        Err(error) => return record.finish(None, None, Err(error.into())).await,
    };
    let target = act::Target { obj, ctx };
    let acted = match act::act(decide(&facts.observed()), &facts, &target).await {
        Ok(Acted::Done(step)) => Ok(step),
        Ok(Acted::Created(created)) => match record.created(&created.id, &facts.home).await {
            Ok(()) => act::store_created(created, &facts, &target).await,
            Err(error) => Err(created.failed(error)),
        },
        Err(failed) => Err(failed),
    };
    record.finish(facts.current, Some(facts.home), acted).await
}

pub fn object_ref(obj: &AcsIdentity) -> k8s_openapi::api::core::v1::ObjectReference {
    obj.object_ref(&())
}

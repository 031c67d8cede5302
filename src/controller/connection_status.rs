//! Reconciling AcsConnection and ClusterAcsConnection: Ready once the referenced connection
//! string parses (no ACS call), and a nudge to every AcsIdentity that uses the connection so a
//! changed or rotated connection reaches them.

use super::conditions::{RECONCILING, apply_status, conditions};
use super::connections::{ConnectionObject, ConnectionSource};
use super::context::Context;
use super::error::Error;
use crate::api::{AcsConnectionStatus, ConnectionKind};
use crate::policy::{Readiness, Reason, failure, progress};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;

/// Either kind: writes its status when it changed, then nudges its identities.
pub async fn reconcile<K: ConnectionObject>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let previous = obj.connection_status();
    let generation = obj.meta().generation;
    let status = checked_status(&ctx, &obj.source(), previous, generation).await;
    // Only a new status (new spec, or a check that now comes out differently) concerns the
    // identities; the reconcile our own status write triggers does not. A changed Secret
    // reaches them through the Secret watch.
    if previous != Some(&status) {
        apply_status(&obj.api(ctx.client.clone()), &obj.name_any(), &status).await?;
        ctx.nudge_identities(K::KIND, obj.namespace().as_deref(), &obj.name_any());
    }
    // A check that failed in passing (the Secret could not be read) is looked at again, as
    // its Reconciling condition promises; everything else is watched.
    let retrying = status.conditions.iter().any(|c| c.type_ == RECONCILING);
    // Held back by the namespace's other connections: their deletion is not watched here.
    let held_back = status
        .conditions
        .iter()
        .any(|c| c.reason == Reason::ConnectionLimitReached.as_str());
    Ok(super::context::look_again(if retrying {
        crate::policy::Outcome::ConnectionFailed
    } else if held_back {
        crate::policy::Outcome::HeldBackByOthers
    } else {
        crate::policy::Outcome::ConnectionChecked
    }))
}

pub fn error_policy<K>(_: Arc<K>, _: &Error, _: Arc<Context>) -> Action {
    super::context::look_again(crate::policy::Outcome::ConnectionFailed)
}

async fn checked_status(
    ctx: &Context,
    source: &ConnectionSource,
    previous: Option<&AcsConnectionStatus>,
    generation: Option<i64>,
) -> AcsConnectionStatus {
    let (ready, endpoint, class) = match ctx.connections.check(source).await {
        Ok((endpoint, summary)) => (
            Readiness {
                ready: true,
                reason: Reason::Valid,
                message: summary,
            },
            Some(endpoint),
            None,
        ),
        Err(e) => {
            let class = e.class();
            let ready = Readiness {
                ready: false,
                reason: class.reason,
                message: e.to_string(),
            };
            (ready, None, Some(class))
        }
    };
    let setback = class.map(|c| failure::setback(&c, &ready.message));
    let progress = progress(&ready, setback, false);
    let previous = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    AcsConnectionStatus {
        endpoint,
        observed_generation: generation,
        conditions: conditions(previous, &ready, progress, generation, Timestamp::now()),
    }
}

/// The identities that refer to a connection, from the identity watch cache.
pub fn identities_using(
    identities: &[Arc<crate::api::AcsIdentity>],
    kind: ConnectionKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<crate::api::AcsIdentity>> {
    identities
        .iter()
        .filter(|i| {
            let r = &i.spec.connection_ref;
            r.kind == kind
                && r.name == name
                && (namespace.is_none() || i.namespace().as_deref() == namespace)
        })
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

//! Reconciling AcsConnection and ClusterAcsConnection: Ready once the referenced connection
//! string parses (no ACS call), and a nudge to every AcsIdentity that uses the connection so a
//! changed or rotated connection reaches them.

use super::Context;
use super::connections::ConnectionSource;
use super::error::Error;
use crate::api::{AcsConnection, AcsConnectionStatus, ClusterAcsConnection, ConnectionKind};
use crate::policy::Reason;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub async fn reconcile_namespaced(
    obj: Arc<AcsConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let source = ConnectionSource::from_namespaced(&obj);
    let status = checked_status(&ctx, &source, obj.status.as_ref(), obj.meta().generation).await;
    if obj.status.as_ref() != Some(&status) {
        let api: Api<AcsConnection> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &obj.name_any(), "AcsConnection", &status).await?;
    }
    ctx.nudge_identities(
        ConnectionKind::AcsConnection,
        Some(&namespace),
        &obj.name_any(),
    );
    Ok(Action::await_change())
}

pub async fn reconcile_cluster(
    obj: Arc<ClusterAcsConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let source = ConnectionSource::from_cluster(&obj);
    let status = checked_status(&ctx, &source, obj.status.as_ref(), obj.meta().generation).await;
    if obj.status.as_ref() != Some(&status) {
        let api: Api<ClusterAcsConnection> = Api::all(ctx.client.clone());
        apply_status(&api, &obj.name_any(), "ClusterAcsConnection", &status).await?;
    }
    ctx.nudge_identities(ConnectionKind::ClusterAcsConnection, None, &obj.name_any());
    Ok(Action::await_change())
}

pub fn error_policy<K>(_: Arc<K>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(30))
}

async fn checked_status(
    ctx: &Context,
    source: &ConnectionSource,
    previous: Option<&AcsConnectionStatus>,
    generation: Option<i64>,
) -> AcsConnectionStatus {
    let (ready, reason, message, endpoint) = match ctx.connections.check(source).await {
        Ok((endpoint, summary)) => (true, Reason::Valid.as_str(), summary, Some(endpoint)),
        Err(e) => (false, e.reason().as_str(), e.to_string(), None),
    };
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(Timestamp::now()));
    AcsConnectionStatus {
        endpoint,
        observed_generation: generation,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time,
        }],
    }
}

async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    kind: &str,
    status: &AcsConnectionStatus,
) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": "acsoperator.io/v1alpha1",
        "kind": kind,
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(super::MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
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

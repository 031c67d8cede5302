//! The restart controller's writes: the annotation (server-side apply under
//! [`FIELD_MANAGER`], never forced), Events on the workload and the AcsIdentity, and the
//! AcsIdentity's [`CONDITION`] when a workload could not be restarted.

use super::{CONDITION, FIELD_MANAGER, TargetKey};
use crate::api::AcsIdentity;
use crate::controller::events::Publisher;
use crate::policy::restart::RESTARTED_FOR_ANNOTATION;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, Resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Upper bound of one write, so that a stuck API call cannot stall every other restart.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest API server message quoted in a condition or Event.
const MAX_MESSAGE: usize = 300;

/// An AcsIdentity a restarted workload consumes, as the restart controller last saw it.
pub struct IdentityRef {
    pub name: String,
    pub uid: Option<String>,
    pub conditions: Vec<Condition>,
}

/// Why a restart was not written.
#[derive(Debug)]
pub enum Failure {
    /// Another field manager holds the annotation with another value.
    Conflict(String),
    /// The workload is gone (or was made again under its name).
    Missing(String),
    /// The operator may not patch it (RBAC).
    Forbidden(String),
    Other(String),
}

impl Failure {
    /// Not retried for the same tokens: retrying would fight the other manager.
    pub fn give_up(&self) -> bool {
        matches!(self, Failure::Conflict(_))
    }

    /// Worth an Event and a condition: the operator cannot write it, not a passing race.
    pub fn worth_reporting(&self) -> bool {
        matches!(self, Failure::Forbidden(_) | Failure::Other(_))
    }

    fn from_error(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => {
                let message: String = s.message.chars().take(MAX_MESSAGE).collect();
                match s.code {
                    409 if message.contains("conflict") => Failure::Conflict(message),
                    // 409 for a uid that no longer matches; 422 for an apply that would
                    // create it (a partial object is not a valid workload).
                    404 | 409 | 422 => Failure::Missing(message),
                    403 => Failure::Forbidden(message),
                    _ => Failure::Other(format!("{} ({})", message, s.code)),
                }
            }
            other => Failure::Other(other.to_string().chars().take(MAX_MESSAGE).collect()),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Failure::Conflict(_) => "RestartConflict",
            Failure::Missing(_) => "RestartTargetMissing",
            Failure::Forbidden(_) => "RestartForbidden",
            Failure::Other(_) => "RestartFailed",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Conflict(m) => write!(
                f,
                "another field manager sets {RESTARTED_FOR_ANNOTATION}; not overriding it: {m}"
            ),
            Failure::Missing(m) => write!(f, "the workload is gone: {m}"),
            Failure::Forbidden(m) => write!(f, "not allowed to patch it: {m}"),
            Failure::Other(m) => write!(f, "{m}"),
        }
    }
}

pub struct Actor {
    client: Client,
    events: Arc<Publisher>,
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER)
}

impl Actor {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            events: Arc::new(Publisher::new(client.clone(), FIELD_MANAGER, instance)),
            client,
        }
    }

    fn api(&self, key: &TargetKey) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &key.namespace,
            &key.kind.api_resource(),
        )
    }

    /// Publishes an Event without waiting for it; a failure is logged.
    fn event(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &'static str,
        note: String,
    ) {
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = events.publish(regarding, type_, reason, &note).await {
                warn!(error = %e, "could not publish Event");
            }
        });
    }

    /// Tells the workload that its restart annotation is not understood.
    pub fn annotation_problem(&self, key: &TargetKey, uid: Option<String>, problem: String) {
        self.event(
            target_ref(key, uid),
            EventType::Warning,
            "RestartAnnotationInvalid",
            problem,
        );
    }

    /// Records on a workload never written the value it was started with, without restarting
    /// it: the pod template's value if it has one, else `wanted`. Returns the value recorded.
    pub async fn baseline(
        &self,
        key: &TargetKey,
        uid: Option<String>,
        wanted: &str,
    ) -> Result<String, Failure> {
        self.try_baseline(key, uid, wanted)
            .await
            .map_err(Failure::from_error)
    }

    async fn try_baseline(
        &self,
        key: &TargetKey,
        uid: Option<String>,
        wanted: &str,
    ) -> Result<String, kube::Error> {
        let api = self.api(key);
        let obj = timed(api.get(&key.name)).await?;
        let template = obj.data["spec"]["template"]["metadata"]["annotations"]
            [RESTARTED_FOR_ANNOTATION]
            .as_str()
            .map(str::to_string);
        let value = template.clone().unwrap_or_else(|| wanted.to_string());
        let mut patch = apply_body(key, uid.or(obj.metadata.uid.clone()), &value);
        patch["metadata"]["resourceVersion"] = json!(obj.metadata.resource_version);
        if template.is_none() {
            // Only the metadata: the pod template stays as it is, nothing restarts.
            patch.as_object_mut().expect("an object").remove("spec");
        }
        timed(api.patch(&key.name, &apply_params(), &Patch::Apply(&patch))).await?;
        Ok(value)
    }

    /// Restarts the workload: the pod template annotation (and its copy on the metadata) set
    /// to `value`, under the restart field manager, never forced.
    pub async fn restart(
        &self,
        key: &TargetKey,
        uid: Option<String>,
        value: &str,
        identities: &[String],
    ) -> Result<(), Failure> {
        let patch = apply_body(key, uid.clone(), value);
        timed(
            self.api(key)
                .patch(&key.name, &apply_params(), &Patch::Apply(&patch)),
        )
        .await
        .map_err(Failure::from_error)?;
        self.event(
            target_ref(key, uid),
            EventType::Normal,
            "Restarted",
            format!(
                "Restarted for the renewed tokens of AcsIdentity {}",
                identities.join(", ")
            ),
        );
        Ok(())
    }

    /// Warnings on the workload (unless it is gone) and on the identities it consumes, and
    /// their condition, so that the owner of either sees it.
    pub async fn report_failure(
        &self,
        key: &TargetKey,
        failure: &Failure,
        identities: &[IdentityRef],
    ) {
        let message = format!("{key}: {failure}");
        if !matches!(failure, Failure::Missing(_)) {
            self.event(
                target_ref(key, None),
                EventType::Warning,
                failure.reason(),
                message.clone(),
            );
        }
        for identity in identities {
            self.event(
                identity_ref(&key.namespace, identity),
                EventType::Warning,
                failure.reason(),
                message.clone(),
            );
            let reported = identity.conditions.iter().any(|c| {
                c.type_ == CONDITION && c.reason == failure.reason() && c.message == message
            });
            if reported {
                // Already says so: its lastTransitionTime stays.
                continue;
            }
            let mut conditions: Vec<Condition> = identity
                .conditions
                .iter()
                .filter(|c| c.type_ != CONDITION)
                .cloned()
                .collect();
            conditions.push(Condition {
                type_: CONDITION.into(),
                status: "False".into(),
                reason: failure.reason().into(),
                message: message.clone(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::now()),
            });
            self.set_conditions(&key.namespace, identity, conditions)
                .await;
        }
    }

    /// Removes the condition a failed restart of this workload left on its identities.
    pub async fn clear_failures(&self, key: &TargetKey, identities: &[IdentityRef]) {
        let prefix = format!("{key}: ");
        for identity in identities {
            let ours = identity
                .conditions
                .iter()
                .any(|c| c.type_ == CONDITION && c.message.starts_with(&prefix));
            if ours {
                let rest = identity
                    .conditions
                    .iter()
                    .filter(|c| c.type_ != CONDITION)
                    .cloned()
                    .collect();
                self.set_conditions(&key.namespace, identity, rest).await;
            }
        }
    }

    /// Replaces the identity's conditions if they are still those it was seen with (a JSON
    /// patch with a test), so that a status the identity controller wrote meanwhile is never
    /// overwritten. Skipped for an identity without conditions yet.
    async fn set_conditions(
        &self,
        namespace: &str,
        identity: &IdentityRef,
        conditions: Vec<Condition>,
    ) {
        if identity.conditions.is_empty() {
            return;
        }
        let mut ops = vec![];
        if let Some(uid) = &identity.uid {
            ops.push(json!({"op": "test", "path": "/metadata/uid", "value": uid}));
        }
        ops.push(json!({"op": "test", "path": "/status/conditions", "value": identity.conditions}));
        ops.push(json!({"op": "replace", "path": "/status/conditions", "value": conditions}));
        let patch: json_patch::Patch = match serde_json::from_value(Value::Array(ops)) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "could not build the condition patch");
                return;
            }
        };
        let api: Api<AcsIdentity> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        if let Err(e) =
            timed(api.patch_status(&identity.name, &params, &Patch::Json::<()>(patch))).await
        {
            // Its status changed meanwhile: the identity controller's write stands.
            debug!(identity = %identity.name, error = %e, "restart condition not written");
        }
    }
}

/// The apply configuration of a restart: the annotation on the metadata and the pod template.
fn apply_body(key: &TargetKey, uid: Option<String>, value: &str) -> Value {
    let resource = key.kind.api_resource();
    let mut metadata = json!({
        "name": key.name,
        "namespace": key.namespace,
        "annotations": {RESTARTED_FOR_ANNOTATION: value},
    });
    if let Some(uid) = uid {
        // A precondition: a workload deleted and made again is not restarted by mistake.
        metadata["uid"] = json!(uid);
    }
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: value}}}},
    })
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(
            format!("no answer within {CALL_TIMEOUT:?}").into(),
        )),
    }
}

fn target_ref(key: &TargetKey, uid: Option<String>) -> ObjectReference {
    let resource = key.kind.api_resource();
    ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(resource.kind),
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        uid,
        ..ObjectReference::default()
    }
}

fn identity_ref(namespace: &str, identity: &IdentityRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(AcsIdentity::api_version(&()).into()),
        kind: Some(AcsIdentity::kind(&()).into()),
        name: Some(identity.name.clone()),
        namespace: Some(namespace.to_string()),
        uid: identity.uid.clone(),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::restarts::WorkloadKind;

    #[test]
    fn the_apply_body_sets_the_annotation_on_metadata_and_template_only() {
        let key = TargetKey {
            kind: WorkloadKind::StatefulSet,
            namespace: "team".into(),
            name: "db".into(),
        };
        assert_eq!(
            apply_body(&key, Some("u-1".into()), "v1-ab"),
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "team", "uid": "u-1",
                             "annotations": {"acsoperator.io/restarted-for": "v1-ab"}},
                "spec": {"template": {"metadata": {"annotations": {"acsoperator.io/restarted-for": "v1-ab"}}}},
            })
        );
    }
}

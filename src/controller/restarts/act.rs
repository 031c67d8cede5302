//! The restart controller's writes: the annotation (server-side apply under
//! [`FIELD_MANAGER`], never forced), Events on the workload and the AcsIdentity, and the
//! AcsIdentity's [`CONDITION`] when a workload could not be restarted.

use super::{CONDITION, FIELD_MANAGER, WorkloadKey};
use crate::api::AcsIdentity;
use crate::controller::events::Publisher;
use crate::policy::Reason;
use crate::policy::restart::{RESTARTED_FOR_ANNOTATION, WriteFailure};
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

/// A failed write to a workload: what it means (the policy decides what follows) and the API
/// server's words, shortened.
#[derive(Debug)]
pub struct WriteError {
    pub failure: WriteFailure,
    message: String,
}

impl WriteError {
    fn from_error(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => {
                let message: String = s.message.chars().take(MAX_MESSAGE).collect();
                let failure = WriteFailure::from_status(s.code, &message);
                let message = match failure {
                    WriteFailure::Other => format!("{} ({})", message, s.code),
                    _ => message,
                };
                WriteError { failure, message }
            }
            other => WriteError {
                failure: WriteFailure::Other,
                message: other.to_string().chars().take(MAX_MESSAGE).collect(),
            },
        }
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.message;
        match self.failure {
            WriteFailure::Conflict => write!(
                f,
                "another field manager sets {RESTARTED_FOR_ANNOTATION}; not overriding it: {m}"
            ),
            WriteFailure::Missing => write!(f, "the workload is gone: {m}"),
            WriteFailure::Forbidden => write!(f, "not allowed to patch it: {m}"),
            WriteFailure::Other => write!(f, "{m}"),
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

    fn api(&self, key: &WorkloadKey) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &key.namespace,
            &key.kind.api_resource(),
        )
    }

    /// Publishes an Event without waiting for it; a failure is logged.
    fn event(&self, regarding: ObjectReference, type_: EventType, reason: Reason, note: String) {
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = events
                .publish(regarding, type_, reason.as_str(), &note)
                .await
            {
                warn!(error = %e, "could not publish Event");
            }
        });
    }

    /// Tells the workload that its restart annotation is not understood.
    pub fn annotation_problem(&self, key: &WorkloadKey, uid: Option<String>, problem: String) {
        self.event(
            target_ref(key, uid),
            EventType::Warning,
            Reason::RestartAnnotationInvalid,
            problem,
        );
    }

    /// Records on a workload never written the value it was started with, without restarting
    /// it: the pod template's value if it has one, else `wanted`. Returns the value recorded.
    pub async fn baseline(
        &self,
        key: &WorkloadKey,
        uid: Option<String>,
        wanted: &str,
    ) -> Result<String, WriteError> {
        self.try_baseline(key, uid, wanted)
            .await
            .map_err(WriteError::from_error)
    }

    async fn try_baseline(
        &self,
        key: &WorkloadKey,
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
        key: &WorkloadKey,
        uid: Option<String>,
        value: &str,
        identities: &[String],
    ) -> Result<(), WriteError> {
        let patch = apply_body(key, uid.clone(), value);
        timed(
            self.api(key)
                .patch(&key.name, &apply_params(), &Patch::Apply(&patch)),
        )
        .await
        .map_err(WriteError::from_error)?;
        self.event(
            target_ref(key, uid),
            EventType::Normal,
            Reason::Restarted,
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
        key: &WorkloadKey,
        error: &WriteError,
        identities: &[IdentityRef],
    ) {
        let message = format!("{key}: {error}");
        let reason = error.failure.reason();
        if error.failure != WriteFailure::Missing {
            self.event(
                target_ref(key, None),
                EventType::Warning,
                reason,
                message.clone(),
            );
        }
        for identity in identities {
            self.event(
                identity_ref(&key.namespace, identity),
                EventType::Warning,
                reason,
                message.clone(),
            );
            let reported = identity.conditions.iter().any(|c| {
                c.type_ == CONDITION && c.reason == reason.as_str() && c.message == message
            });
            if reported {
                // Already says so: its lastTransitionTime stays.
                continue;
            }
            let condition = Condition {
                type_: CONDITION.into(),
                status: "False".into(),
                reason: reason.as_str().into(),
                message: message.clone(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::now()),
            };
            self.apply_condition(&key.namespace, identity, Some(condition))
                .await;
        }
    }

    /// Removes the condition a failed restart of this workload left on its identities.
    pub async fn clear_failures(&self, key: &WorkloadKey, identities: &[IdentityRef]) {
        let prefix = format!("{key}: ");
        for identity in identities {
            let ours = identity
                .conditions
                .iter()
                .any(|c| c.type_ == CONDITION && c.message.starts_with(&prefix));
            if ours {
                self.apply_condition(&key.namespace, identity, None).await;
            }
        }
    }

    /// Sets (or with `None` removes) the identity's [`CONDITION`] by server-side apply under
    /// [`FIELD_MANAGER`]. `status.conditions` is keyed by type, so the apply touches only this
    /// entry: the identity controller's conditions, written before or after, stand. Forced, to
    /// take over an entry an older release wrote with a JSON patch.
    async fn apply_condition(
        &self,
        namespace: &str,
        identity: &IdentityRef,
        condition: Option<Condition>,
    ) {
        let api: Api<AcsIdentity> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = condition_body(&identity.name, identity.uid.as_deref(), condition);
        if let Err(e) = timed(api.patch_status(&identity.name, &params, &Patch::Apply(body))).await
        {
            // Gone, or made again under another uid: nothing of ours to report on.
            debug!(identity = %identity.name, error = %e, "restart condition not written");
        }
    }
}

/// The apply configuration of the restart condition on an AcsIdentity: the condition, or no
/// status at all, which removes the entry this manager applied before.
fn condition_body(name: &str, uid: Option<&str>, condition: Option<Condition>) -> Value {
    let resource = AcsIdentity::api_version(&());
    let mut body = json!({
        "apiVersion": resource,
        "kind": AcsIdentity::kind(&()),
        "metadata": {"name": name},
    });
    if let Some(uid) = uid {
        // A precondition: an identity deleted and made again does not get this one's report.
        body["metadata"]["uid"] = json!(uid);
    }
    if let Some(condition) = condition {
        body["status"] = json!({"conditions": [condition]});
    }
    body
}

/// The apply configuration of a restart: the annotation on the metadata and the pod template.
fn apply_body(key: &WorkloadKey, uid: Option<String>, value: &str) -> Value {
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

fn target_ref(key: &WorkloadKey, uid: Option<String>) -> ObjectReference {
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
        let key = WorkloadKey {
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

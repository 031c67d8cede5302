//! What every reconcile shares ([`Context`]) and the small helpers the reconcilers use:
//! the field manager, the cache trim, the one way to turn a policy outcome into a requeue.
//! Lower modules import from here, never from the wiring in `super`.

use super::connections::Connections;
use super::later::Later;
use super::settings::InitialList;
use super::settings::Settings;
use super::{bulkheads, connection_status, events, identity, secret_index, status, token_secret};
use crate::api::{AcsIdentity, ConnectionKind};
use crate::metrics::Metrics;
use crate::policy::requeue::{self, Holder};
use crate::policy::{Outcome, Reason};
use futures::channel::mpsc;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::sync::Arc;
use tracing::warn;

/// Field manager for every write, and the Events' reporting controller.
pub const MANAGER: &str = "acs-identity-operator";

/// The annotations the operator reads on an AcsIdentity: the only ones its cache keeps.
const READ_ANNOTATIONS: [&str; 3] = [
    identity::REFRESH_ANNOTATION,
    identity::REVOKE_ANNOTATION,
    identity::SKIP_CLEANUP_ANNOTATION,
];

/// An AcsIdentity as the operator keeps it: what it reads, in no more memory than that
/// takes. Nothing here is read: managedFields (and the buffer that held them), labels, and
/// every annotation but the operator's own (kubectl's copy of the last applied manifest, and
/// what GitOps tools and others write: a label map costs half a kilobyte even for one label).
/// A change to those alone is then no change to the operator. Lists get no more room than
/// their items take.
pub fn trim_for_cache(identity: &mut AcsIdentity) {
    let meta = &mut identity.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = meta.annotations.take().and_then(|all| {
        let ours: std::collections::BTreeMap<_, _> = all
            .into_iter()
            .filter(|(k, _)| READ_ANNOTATIONS.contains(&k.as_str()))
            .collect();
        (!ours.is_empty()).then_some(ours)
    });
    if let Some(finalizers) = meta.finalizers.as_mut() {
        finalizers.shrink_to_fit();
    }
    identity.spec.scopes.shrink_to_fit();
    if let Some(status) = identity.status.as_mut() {
        status.conditions.shrink_to_fit();
        if let Some(issued) = status.issued_for.as_mut() {
            issued.scopes.shrink_to_fit();
        }
    }
}

/// Objects per page of a paged list.
pub const LIST_PAGE: u32 = 500;

/// The watcher configuration every watch of the operator starts from.
pub fn watch_config(list: InitialList) -> watcher::Config {
    let config = watcher::Config::default().page_size(LIST_PAGE);
    match list {
        // Not asked yet: paged is served everywhere.
        InitialList::Paged | InitialList::Auto => config,
        InitialList::Streamed => config.streaming_lists(),
    }
}

/// The kube-runtime action for the policy's answer after `outcome`: every requeue of every
/// reconciler goes through here.
pub fn look_again(outcome: Outcome) -> Action {
    match next_delay(outcome) {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    }
}

fn next_delay(outcome: Outcome) -> Option<std::time::Duration> {
    crate::policy::next_look(outcome, jiff::Timestamp::now(), rand::random::<f64>())
}

/// The key an identity queues under for ACS requests.
pub fn admission_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Queues a reconcile of the identity of a key made by [`admission_key`].
fn wake_on(nudge: mpsc::UnboundedSender<ObjectRef<AcsIdentity>>) -> bulkheads::Wake {
    Box::new(move |key| {
        if let Some((namespace, name)) = key.split_once('/') {
            let _ = nudge.unbounded_send(ObjectRef::new(name).within(namespace));
        }
    })
}

/// Shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub connections: Connections,
    /// Where the identity reconciles' Events go.
    events: IdentityEvents,
    pub(super) identities: Store<AcsIdentity>,
    /// Versions and metadata of our token Secrets (no data: tokens are never cached).
    token_secrets: Arc<secret_index::TokenSecretIndex>,
    /// Queues a reconcile of an identity (a connection changed, an ACS turn came).
    pub(super) nudge: mpsc::UnboundedSender<ObjectRef<AcsIdentity>>,
    /// [`Settings::idempotent_create`].
    pub idempotent_create: bool,
    pub metrics: Arc<Metrics>,
    /// Statuses written but maybe not yet seen by the watch cache.
    pub statuses: Arc<status::WrittenStatuses>,
    /// Deletions whose cleanup is done with ACS.
    pub released: status::Released,
    /// Every ACS call takes a pass here first.
    pub bulkheads: Arc<bulkheads::Bulkheads>,
    /// The far waits of identities (their renewals, mostly).
    pub later: Later,
    /// Who holds which id, and what the shared connections taught, kept beside the cache.
    pub provenance: Arc<identity::ProvenanceIndex>,
}

impl Context {
    pub(super) fn new(
        client: Client,
        settings: &Settings,
        connections: Connections,
        identities: Store<AcsIdentity>,
        provenance: Arc<identity::ProvenanceIndex>,
        token_secrets: Arc<secret_index::TokenSecretIndex>,
        nudge: mpsc::UnboundedSender<ObjectRef<AcsIdentity>>,
    ) -> Self {
        Self {
            events: IdentityEvents {
                normal: events::Publisher::new(client.clone(), MANAGER, settings.instance.clone()),
                warnings: Recorder::new(
                    client.clone(),
                    Reporter {
                        controller: MANAGER.into(),
                        instance: settings.instance.clone(),
                    },
                ),
            },
            client,
            connections,
            identities,
            token_secrets,
            nudge: nudge.clone(),
            idempotent_create: settings.idempotent_create,
            metrics: settings.metrics.clone(),
            statuses: Arc::default(),
            released: Default::default(),
            bulkheads: Arc::new(bulkheads::Bulkheads::waking(
                settings.bulkheads,
                settings.metrics.clone(),
                wake_on(nudge.clone()),
            )),
            later: Later::default(),
            provenance,
        }
    }

    /// When to look at `obj` again after `outcome`: [`look_again`], except that a far wait is
    /// kept in `later`, not in kube-runtime's scheduler (see [`super::later`]), and a near one
    /// or none takes back any far wait.
    pub fn look_again_at(&self, obj: &AcsIdentity, outcome: Outcome) -> Action {
        let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        match requeue::holder(next_delay(outcome)) {
            Holder::Later(delay) => {
                self.later.wake_after(&namespace, &name, delay);
                Action::await_change()
            }
            Holder::Scheduler(delay) => {
                self.later.forget(&namespace, &name);
                Action::requeue(delay)
            }
            Holder::Nobody => {
                self.later.forget(&namespace, &name);
                Action::await_change()
            }
        }
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn publish(&self, obj: &AcsIdentity, type_: EventType, reason: Reason, note: String) {
        let mut regarding = identity::object_ref(obj);
        let published = match type_ {
            EventType::Normal => {
                self.events
                    .normal
                    .publish(regarding, type_, reason.as_str(), &note)
                    .await
            }
            EventType::Warning => {
                // Without the resourceVersion, which every status write changes, a repeat
                // is recognised as the same Event.
                regarding.resource_version = None;
                let event = Event {
                    type_,
                    reason: reason.as_str().to_string(),
                    note: Some(note),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                self.events.warnings.publish(&event, &regarding).await
            }
        };
        if let Err(e) = published {
            warn!(error = %e, "could not publish Event");
        }
    }

    /// The cached metadata of the token Secret, if it is still at the resourceVersion
    /// `written` that status recorded after our last write, i.e. holds exactly what we wrote.
    /// `None` (so the caller reads the Secret) also while the cache is still filling after a
    /// start: waiting for it in a reconcile could stall the controller that fills it.
    pub fn unchanged_token_secret(
        &self,
        namespace: &str,
        name: &str,
        written: Option<&str>,
    ) -> Option<(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        token_secret::OwnedKeys,
    )> {
        self.token_secrets.at_version(namespace, name, written?)
    }

    /// Queues a reconcile of every identity that uses the given connection, spread over a
    /// few seconds ([`crate::policy::requeue::nudge_spread`]): a tenant touching its
    /// connection's Secret must not line its hundreds of identities up ahead of everyone else.
    pub fn nudge_identities(&self, kind: ConnectionKind, namespace: Option<&str>, name: &str) {
        let all = self.identities.state();
        let using = connection_status::identities_using(&all, kind, namespace, name);
        let delays = crate::policy::requeue::nudge_spread(using.len());
        let nudge = self.nudge.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (r, delay) in using.into_iter().zip(delays) {
                tokio::time::sleep_until(start + delay).await;
                if nudge.unbounded_send(r).is_err() {
                    return;
                }
            }
        });
    }
}

/// The identity reconciles' two ways of publishing an Event.
struct IdentityEvents {
    /// Normal Events: one-offs, created directly.
    normal: events::Publisher,
    /// Warnings: they repeat while a failure lasts; kube-runtime's Recorder counts repeats
    /// as a series on one Event.
    warnings: Recorder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_what_the_operator_reads_and_nothing_else() {
        let mut obj: AcsIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
            "metadata": {
                "name": "alice", "namespace": "team", "uid": "u-1", "generation": 3,
                "finalizers": ["acsoperator.io/cleanup"],
                "labels": {"argocd.argoproj.io/instance": "team-apps"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}",
                    "argocd.argoproj.io/tracking-id": "team-apps:acsoperator.io/AcsIdentity:team/alice",
                    "acsoperator.io/refresh-requested": "1",
                },
                "managedFields": [
                    {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}},
                    {"manager": "acs-identity-operator", "operation": "Apply", "subresource": "status"},
                ],
            },
            "spec": {"connectionRef": {"name": "acs"}, "scopes": ["chat"]},
            "status": {"identityId": "8:acs:x", "conditions": [{
                "type": "Ready", "status": "True", "reason": "TokenIssued", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }]},
        }))
        .unwrap();
        let before = obj.clone();
        trim_for_cache(&mut obj);
        let meta = &obj.metadata;
        assert_eq!(meta.managed_fields, None, "not even an empty list");
        assert_eq!(meta.labels, None);
        let kept: Vec<_> = meta.annotations.iter().flatten().collect();
        assert_eq!(
            kept,
            [(
                &"acsoperator.io/refresh-requested".to_string(),
                &"1".to_string()
            )]
        );
        // What decisions read is untouched.
        assert_eq!(obj.spec, before.spec);
        assert_eq!(obj.status, before.status);
        assert_eq!(
            (
                &meta.name,
                &meta.namespace,
                &meta.uid,
                meta.generation,
                &meta.finalizers
            ),
            (
                &before.metadata.name,
                &before.metadata.namespace,
                &before.metadata.uid,
                before.metadata.generation,
                &before.metadata.finalizers
            )
        );
        let status = obj.status.as_ref().unwrap();
        assert_eq!(status.conditions.capacity(), status.conditions.len());

        // Without our annotations, none at all.
        let mut bare = before;
        bare.annotations_mut()
            .remove("acsoperator.io/refresh-requested");
        trim_for_cache(&mut bare);
        assert_eq!(bare.metadata.annotations, None);
    }
}

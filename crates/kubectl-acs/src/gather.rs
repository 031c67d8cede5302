//! Reads what `status`, `inspect` and `check` report from the API server, with the user's own
//! credentials: nothing here writes.

use crate::report::{
    ConditionView, ConnectionView, ConsumerView, EventView, FailureView, IdentityReport,
    SecretView, secret_uses,
};
use acs_identity_operator::api::{
    AcsConnection, AcsIdentity, ClusterAcsConnection, ConnectionKind,
};
use acs_identity_operator::controller::token_secret::{KEY_TOKEN, token_hash};
use acs_identity_operator::policy::restart::{CONSUMES_ANNOTATION, consumed};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// Which AcsIdentities a command is about.
pub struct Selection<'a> {
    /// `None`: every namespace (`-A`).
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub selector: Option<&'a str>,
}

/// The AcsIdentities `selection` names, sorted by namespace and name. A name that does not
/// exist is an error that says where it was looked for.
pub async fn identities(
    client: &Client,
    selection: &Selection<'_>,
) -> Result<Vec<AcsIdentity>, crate::Error> {
    let api: Api<AcsIdentity> = match selection.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Some(name) = selection.name {
        return match api.get_opt(name).await? {
            Some(obj) => Ok(vec![obj]),
            None => Err(crate::Error::NotFound(format!(
                "AcsIdentity {name:?} not found in namespace {:?} (try -n NAMESPACE, or `kubectl get acsidentities -A`)",
                selection.namespace.unwrap_or_default()
            ))),
        };
    }
    let mut params = ListParams::default();
    if let Some(selector) = selection.selector {
        params = params.labels(selector);
    }
    let mut all = api.list(&params).await?.items;
    all.sort_by_key(|o| (o.namespace(), o.name_any()));
    Ok(all)
}

fn view(c: Option<&Condition>) -> Option<ConditionView> {
    c.map(|c| ConditionView {
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        since: Some(c.last_transition_time.0),
    })
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Everything `status` shows about `obj`. Parts the user may not read (RBAC) are reported as
/// not found rather than failing the whole report.
pub async fn report(client: &Client, obj: &AcsIdentity) -> IdentityReport {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let status = obj.status.clone().unwrap_or_default();
    let conditions = &status.conditions;
    let secret_name = status
        .secret_name
        .clone()
        .unwrap_or_else(|| obj.secret_name());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets.get_opt(&secret_name).await.ok().flatten();
    let recorded = status.issued_for.as_ref().map(|i| i.token_hash.clone());
    let secret_view = match &secret {
        Some(s) => SecretView {
            name: secret_name.clone(),
            exists: true,
            keys: s.data.iter().flatten().map(|(k, _)| k.clone()).collect(),
            holds_recorded_token: recorded
                .map(|hash| token_in(s).is_some_and(|token| token_hash(&token) == hash)),
        },
        None => SecretView {
            name: secret_name.clone(),
            ..Default::default()
        },
    };
    IdentityReport {
        namespace: namespace.clone(),
        name: name.clone(),
        ready: view(condition(conditions, "Ready")),
        reconciling: view(condition(conditions, "Reconciling")),
        stalled: view(condition(conditions, "Stalled")),
        identity_id: status.identity_id.clone(),
        token_expires_on: status.token_expires_on.as_ref().map(|t| t.0),
        renewal_time: status.renewal_time.as_ref().map(|t| t.0),
        last_issued_at: status.last_issued_at.as_ref().map(|t| t.0),
        secret: secret_view,
        connection: connection(client, obj, &namespace).await,
        last_failure: status
            .failed_attempts
            .filter(|n| *n > 0)
            .map(|attempts| FailureView {
                attempts,
                at: status.last_failure_time.as_ref().map(|t| t.0),
            }),
        consumers: consumers(client, &namespace, &name, &secret_name).await,
        events: events(client, &namespace, obj).await,
    }
}

/// The token the Secret holds, if any.
pub fn token_in(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(KEY_TOKEN)?;
    String::from_utf8(bytes.0.clone()).ok()
}

async fn connection(client: &Client, obj: &AcsIdentity, namespace: &str) -> ConnectionView {
    let r = &obj.spec.connection_ref;
    let (kind, ready) = match r.kind {
        ConnectionKind::AcsConnection => {
            let api: Api<AcsConnection> = Api::namespaced(client.clone(), namespace);
            let found = api.get_opt(&r.name).await.ok().flatten();
            (
                "AcsConnection",
                found.map(|c| view(condition(&c.status.unwrap_or_default().conditions, "Ready"))),
            )
        }
        ConnectionKind::ClusterAcsConnection => {
            let api: Api<ClusterAcsConnection> = Api::all(client.clone());
            let found = api.get_opt(&r.name).await.ok().flatten();
            (
                "ClusterAcsConnection",
                found.map(|c| view(condition(&c.status.unwrap_or_default().conditions, "Ready"))),
            )
        }
    };
    ConnectionView {
        kind: kind.into(),
        name: r.name.clone(),
        found: ready.is_some(),
        ready: ready.flatten(),
    }
}

/// The Deployments, StatefulSets and DaemonSets in `namespace` that mount or reference the
/// Secret, or restart on this identity's renewals.
async fn consumers(
    client: &Client,
    namespace: &str,
    identity: &str,
    secret: &str,
) -> Vec<ConsumerView> {
    let mut found = Vec::new();
    for d in listed::<Deployment>(client, namespace).await {
        let template = d.spec.as_ref().map(|s| &s.template);
        push_consumer(&mut found, "Deployment", &d, template, identity, secret);
    }
    for s in listed::<StatefulSet>(client, namespace).await {
        let template = s.spec.as_ref().map(|s| &s.template);
        push_consumer(&mut found, "StatefulSet", &s, template, identity, secret);
    }
    for d in listed::<DaemonSet>(client, namespace).await {
        let template = d.spec.as_ref().map(|s| &s.template);
        push_consumer(&mut found, "DaemonSet", &d, template, identity, secret);
    }
    found
}

/// The `K`s in `namespace`; none when the user may not list them (status shows what it can).
async fn listed<K>(client: &Client, namespace: &str) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn push_consumer<K: ResourceExt>(
    found: &mut Vec<ConsumerView>,
    kind: &str,
    obj: &K,
    template: Option<&PodTemplateSpec>,
    identity: &str,
    secret: &str,
) {
    let mut uses = template
        .and_then(|t| t.spec.as_ref())
        .map(|spec| secret_uses(spec, secret))
        .unwrap_or_default();
    let restarts = obj
        .annotations()
        .get(CONSUMES_ANNOTATION)
        .and_then(|a| consumed(a).ok())
        .is_some_and(|names| names.iter().any(|n| n == identity));
    if restarts {
        uses.push("restart-on-renewal".into());
    }
    if !uses.is_empty() {
        found.push(ConsumerView {
            kind: kind.into(),
            name: obj.name_any(),
            uses,
        });
    }
}

/// The identity's most recent Events (at most ten, newest last).
async fn events(client: &Client, namespace: &str, obj: &AcsIdentity) -> Vec<EventView> {
    let Some(uid) = obj.uid() else {
        return Vec::new();
    };
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    let mut events: Vec<EventView> = api
        .list(&params)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|e| EventView {
            last_seen: e
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
                .or(e.last_timestamp.as_ref().map(|t| t.0))
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            count: e
                .series
                .as_ref()
                .map(|s| s.count.unwrap_or(1))
                .or(e.count)
                .unwrap_or(1),
        })
        .collect();
    events.sort_by_key(|e| e.last_seen);
    let skip = events.len().saturating_sub(10);
    events.split_off(skip)
}

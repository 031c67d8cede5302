//! `renew` and `revoke`: the operator's own annotations, set to a new value, and (with
//! `--wait`) a watch until status says that value was handled and the Secret holds the token
//! status records.

use crate::gather::token_in;
use acs_identity_operator::api::AcsIdentity;
use acs_identity_operator::controller::identity::{REFRESH_ANNOTATION, REVOKE_ANNOTATION};
use acs_identity_operator::controller::token_secret::token_hash;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use std::time::Duration;

/// The two requests a user can make of the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Renew,
    Revoke,
}

impl Request {
    fn annotation(self) -> &'static str {
        match self {
            Request::Renew => REFRESH_ANNOTATION,
            Request::Revoke => REVOKE_ANNOTATION,
        }
    }

    /// Whether `obj`'s status says the request `value` was handled.
    pub fn handled(self, obj: &AcsIdentity, value: &str) -> bool {
        let status = obj.status.as_ref();
        let handled = match self {
            Request::Renew => status.and_then(|s| s.handled_refresh_request.as_deref()),
            Request::Revoke => status.and_then(|s| s.handled_revoke_request.as_deref()),
        };
        handled == Some(value)
    }
}

/// A value no earlier request used: the time, to the nanosecond.
pub fn new_value() -> String {
    jiff::Timestamp::now().to_string()
}

/// Sets the request's annotation on `obj` to `value` (a merge patch: nothing else changes).
pub async fn send(
    client: &Client,
    obj: &AcsIdentity,
    request: Request,
    value: &str,
) -> Result<(), crate::Error> {
    let api: Api<AcsIdentity> =
        Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"annotations": {request.annotation(): value}}});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Waits until `obj`'s status says `value` was handled and its Secret holds the token status
/// records; on timeout, says what the Ready condition says.
pub async fn wait(
    client: &Client,
    obj: &AcsIdentity,
    request: Request,
    value: &str,
    timeout: Duration,
) -> Result<(), crate::Error> {
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let api: Api<AcsIdentity> = Api::namespaced(client.clone(), &namespace);
    let value_owned = value.to_string();
    let handled = await_condition(api.clone(), &name, move |o: Option<&AcsIdentity>| {
        o.is_some_and(|o| request.handled(o, &value_owned))
    });
    match tokio::time::timeout(timeout, handled).await {
        Ok(Ok(Some(done))) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let recorded = done
                .status
                .as_ref()
                .and_then(|s| s.issued_for.as_ref())
                .map(|i| i.token_hash.clone());
            let secret = secrets.get_opt(&done.secret_name()).await?;
            let held = secret.as_ref().and_then(token_in).map(|t| token_hash(&t));
            if recorded.is_some() && held == recorded {
                Ok(())
            } else {
                Err(crate::Error::Failed(format!(
                    "{namespace}/{name}: the request was handled but the Secret does not hold the token status records yet; run `kubectl acs-identity status {name} -n {namespace}`"
                )))
            }
        }
        Ok(Ok(None)) => Err(crate::Error::NotFound(format!(
            "{namespace}/{name} was deleted while waiting"
        ))),
        Ok(Err(e)) => Err(crate::Error::Failed(format!(
            "{namespace}/{name}: watching failed: {e}"
        ))),
        Err(_) => {
            let now = api.get_opt(&name).await?.and_then(|o| o.status);
            let ready = now
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| format!("Ready {} {}: {}", c.status, c.reason, c.message))
                .unwrap_or_else(|| "no Ready condition (is the operator running?)".into());
            Err(crate::Error::Failed(format!(
                "{namespace}/{name}: not handled within {}s; {ready}",
                timeout.as_secs()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(status: serde_json::Value) -> AcsIdentity {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "acsoperator.io/v1alpha1",
            "kind": "AcsIdentity",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"connectionRef": {"kind": "AcsConnection", "name": "c"}, "scopes": ["chat"]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_request_is_handled_only_by_its_own_value_in_its_own_field() {
        let obj = with_status(serde_json::json!({
            "handledRefreshRequest": "r1",
            "handledRevokeRequest": "v1",
        }));
        let cases = [
            (Request::Renew, "r1", true),
            (Request::Renew, "r2", false),
            (Request::Renew, "v1", false),
            (Request::Revoke, "v1", true),
            (Request::Revoke, "r1", false),
        ];
        for (request, value, want) in cases {
            assert_eq!(request.handled(&obj, value), want, "{request:?} {value}");
        }
        assert!(!Request::Renew.handled(&with_status(serde_json::json!({})), "r1"));
    }
}

//! What every status this operator writes shares: the Ready condition with kstatus's
//! Reconciling and Stalled beside it, and the server-side apply of `status` under the
//! operator's field manager.

use crate::api::AcsIdentityStatus;
use crate::policy::{Progress, Readiness, Reason};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::fmt::Debug;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// The condition types the identity controller writes. Others on an AcsIdentity (the restart
/// controller's `WorkloadsRestarted`) belong to their writers: `status.conditions` is a list
/// keyed by type, so each writer's server-side apply keeps to its own entries.
const IDENTITY_OWNED: [&str; 3] = [READY, RECONCILING, STALLED];

/// `status` as the identity controller writes and compares it: without the conditions other
/// controllers own (borrowed unchanged in the common case, where there are none).
pub fn identity_owned(status: &AcsIdentityStatus) -> Cow<'_, AcsIdentityStatus> {
    let owned = |c: &Condition| IDENTITY_OWNED.contains(&c.type_.as_str());
    if status.conditions.iter().all(owned) {
        return Cow::Borrowed(status);
    }
    let mut own = status.clone();
    own.conditions.retain(owned);
    Cow::Owned(own)
}

/// The Ready condition, keeping the lastTransitionTime of the `previous` Ready condition
/// while its status stays the same (conditions say since when, not when last checked).
pub fn ready_condition(
    previous: &[Condition],
    ready: bool,
    reason: Reason,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    condition(
        previous,
        READY,
        status,
        reason,
        message.into(),
        observed_generation,
        now,
    )
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: Reason,
    message: String,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message,
        observed_generation,
        last_transition_time,
    }
}

/// All conditions of a status: Ready always, then Reconciling and Stalled while True (kstatus
/// reads them as "in progress" and "failed"; absent is False), each with the generation it
/// describes.
pub fn conditions(
    previous: &[Condition],
    ready: &Readiness,
    progress: Progress,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut all = vec![ready_condition(
        previous,
        ready.ready,
        ready.reason,
        ready.message.clone(),
        observed_generation,
        now,
    )];
    for (type_, raised) in [
        (RECONCILING, progress.reconciling),
        (STALLED, progress.stalled),
    ] {
        if let Some(r) = raised {
            all.push(condition(
                previous,
                type_,
                "True",
                r.reason,
                r.message,
                observed_generation,
                now,
            ));
        }
    }
    all
}

/// The server-side apply patch that sets `status` of a `K`.
fn status_patch<K: Resource<DynamicType = ()>>(status: &impl Serialize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// Writes `status` of the object `name` by server-side apply, taking the fields over from
/// any other manager; returns the object as the server stored it.
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let params = PatchParams::apply(super::context::MANAGER).force();
    let patch = Patch::Apply(status_patch::<K>(status));
    api.patch_status(name, &params, &patch).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};

    fn condition(type_: &str, status: &str, at: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::from_second(at).unwrap()),
        }
    }

    #[test]
    fn the_transition_time_moves_only_when_the_ready_status_changes() {
        let now = Timestamp::from_second(100).unwrap();
        let cases = [
            (vec![], true, 100),
            (vec![condition(READY, "True", 5)], true, 5),
            (vec![condition(READY, "True", 5)], false, 100),
            (vec![condition(READY, "False", 5)], false, 5),
            (vec![condition("Other", "True", 5)], true, 100),
        ];
        for (i, (previous, ready, expected)) in cases.into_iter().enumerate() {
            let c = ready_condition(&previous, ready, Reason::Valid, "what", Some(2), now);
            assert_eq!(c.last_transition_time.0.as_second(), expected, "case {i}");
            assert_eq!(c.type_, READY);
            assert_eq!(c.status, if ready { "True" } else { "False" });
            assert_eq!((c.reason.as_str(), c.message.as_str()), ("Valid", "what"));
            assert_eq!(c.observed_generation, Some(2));
        }
    }

    #[test]
    fn progress_conditions_follow_ready_and_keep_their_transition_time() {
        use crate::policy::Raised;
        let now = Timestamp::from_second(100).unwrap();
        let ready = Readiness {
            ready: false,
            reason: Reason::AcsUnauthorized,
            message: "refused".into(),
        };
        let stalled = || Progress {
            reconciling: None,
            stalled: Some(Raised {
                reason: Reason::AcsUnauthorized,
                message: "refused".into(),
            }),
        };
        let first = conditions(&[], &ready, stalled(), Some(3), now);
        let types: Vec<_> = first
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, [(READY, "False"), (STALLED, "True")]);
        assert!(first.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(first[1].reason, "AcsUnauthorized");
        let later = Timestamp::from_second(200).unwrap();
        let again = conditions(&first, &ready, stalled(), Some(3), later);
        assert_eq!(again, first, "unchanged conditions keep their times");
        let done = Readiness {
            ready: true,
            reason: Reason::TokenValid,
            message: "valid".into(),
        };
        let after = conditions(&again, &done, Progress::default(), Some(4), later);
        assert_eq!(after.len(), 1, "Stalled is gone once Ready: {after:?}");
        assert_eq!(after[0].last_transition_time.0, later);
    }

    #[test]
    fn the_patch_names_the_kind_it_is_for() {
        let status = serde_json::json!({"endpoint": "https://a/"});
        for (patch, kind) in [
            (status_patch::<AcsConnection>(&status), "AcsConnection"),
            (
                status_patch::<ClusterAcsConnection>(&status),
                "ClusterAcsConnection",
            ),
            (status_patch::<AcsIdentity>(&status), "AcsIdentity"),
        ] {
            assert_eq!(
                patch,
                serde_json::json!({
                    "apiVersion": "acsoperator.io/v1alpha1", "kind": kind, "status": status,
                })
            );
        }
    }
}

//! Building an AcsIdentity's status as a reconcile makes progress, and writing it only when it
//! changed (server-side apply under the operator's field manager).

use super::Context;
use super::error::Error;
use super::token_secret::{TokenContent, token_hash};
use crate::api::{AcsIdentity, AcsIdentityStatus, IssuedFor};
use crate::policy::readiness::{CurrentToken, Failure};
use crate::policy::{SecretState, TokenParams, readiness, retry_delay, time_until};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a Secret name conflict waits before looking again: the foreign Secret is not
/// watched (only our own Secrets are), so its removal would otherwise go unnoticed.
const CONFLICT_RECHECK: Duration = Duration::from_secs(300);

/// The status being built during one reconcile, and the token the Secret now holds.
pub struct Progress {
    status: AcsIdentityStatus,
    now: Timestamp,
    current: Option<CurrentToken>,
}

impl Progress {
    pub fn from_status(status: AcsIdentityStatus, now: Timestamp) -> Self {
        Self {
            status,
            // Status times are whole seconds on the server; keep `now` comparable.
            now: Timestamp::from_second(now.as_second()).unwrap_or(now),
            current: None,
        }
    }

    pub fn status(&self) -> &AcsIdentityStatus {
        &self.status
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Counts the recorded token as current when the Secret still holds it.
    pub fn keep_current_token_if_valid(&mut self, secret: SecretState) {
        if !matches!(secret, SecretState::Current | SecretState::MetadataDrift) {
            return;
        }
        if let (Some(renewal), Some(expires)) =
            (&self.status.renewal_time, &self.status.token_expires_on)
        {
            self.current = Some(CurrentToken {
                renewal_time: renewal.0,
                expires_on: expires.0,
            });
        }
    }

    pub fn set_identity(&mut self, id: &str) {
        self.status.identity_id = Some(id.to_string());
    }

    /// Records a token that was just written to the Secret.
    pub fn record_token(
        &mut self,
        content: &TokenContent,
        params: &TokenParams,
        issued_at: Timestamp,
        renew_at: Timestamp,
        refresh_request: Option<String>,
        secret_resource_version: Option<String>,
    ) {
        let s = &mut self.status;
        s.identity_id = Some(content.identity_id.clone());
        s.token_expires_on = Some(Time(content.expires_on));
        s.renewal_time = Some(Time(renew_at));
        s.last_issued_at = Some(Time(issued_at));
        s.issued_for = Some(IssuedFor {
            scopes: params.scopes.clone(),
            token_lifetime_minutes: params.lifetime_minutes,
            connection_fingerprint: params.connection.clone(),
            token_hash: token_hash(&content.token),
            secret_resource_version,
        });
        if refresh_request.is_some() {
            s.handled_refresh_request = refresh_request;
        }
        self.current = Some(CurrentToken {
            renewal_time: renew_at,
            expires_on: content.expires_on,
        });
    }

    /// Records the token Secret's resourceVersion after a rewrite that kept its token.
    pub fn record_secret_version(&mut self, version: Option<String>) {
        if let Some(issued) = self.status.issued_for.as_mut() {
            issued.secret_resource_version = version;
        }
    }

    /// When the current token is due for renewal.
    pub fn renew_at(&self) -> Option<Timestamp> {
        self.current.map(|c| c.renewal_time)
    }

    /// The status after a successful reconcile.
    pub fn succeeded(&self, obj: &AcsIdentity) -> AcsIdentityStatus {
        let mut s = self.status.clone();
        s.failed_attempts = None;
        s.last_failure_time = None;
        self.finish(obj, s, None)
    }

    /// The status after `error`, and when to try again (`None`: wait for a change).
    pub fn failed(
        &self,
        obj: &AcsIdentity,
        error: &Error,
    ) -> (AcsIdentityStatus, Option<Duration>) {
        let mut s = self.status.clone();
        let attempts = s.failed_attempts.unwrap_or(0).saturating_add(1);
        s.failed_attempts = Some(attempts);
        s.last_failure_time = Some(Time(self.now));
        let message = error.to_string();
        let failure = Failure {
            reason: error.category(),
            message: &message,
        };
        let delay = if error.is_transient() {
            let valid_for = self
                .current
                .and_then(|c| time_until(c.expires_on, self.now));
            Some(retry_delay(
                attempts,
                error.retry_after(),
                valid_for,
                rand::random::<f64>(),
            ))
        } else if matches!(error, Error::SecretConflict(_)) {
            Some(CONFLICT_RECHECK)
        } else {
            None
        };
        (self.finish(obj, s, Some(failure)), delay)
    }

    fn finish(
        &self,
        obj: &AcsIdentity,
        mut s: AcsIdentityStatus,
        failure: Option<Failure<'_>>,
    ) -> AcsIdentityStatus {
        let verdict = readiness(self.now, self.current, failure);
        let generation = obj.meta().generation;
        s.observed_generation = generation;
        s.secret_name = Some(obj.secret_name());
        let previous = s.conditions.iter().find(|c| c.type_ == "Ready");
        let status = if verdict.ready { "True" } else { "False" };
        let last_transition_time = previous
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(self.now));
        s.conditions = vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: verdict.reason,
            message: verdict.message,
            observed_generation: generation,
            last_transition_time,
        }];
        s
    }
}

/// The statuses this operator wrote that its watch cache may not show yet.
///
/// A reconcile that starts before the watch delivered our last status write would decide from
/// the older status: seeing the token it just wrote as "edited", it would issue another one.
/// Deciding from what we wrote closes that gap. A reconcile may also run with an object taken
/// from the cache before our write, even after the cache caught up (it was queued behind the
/// reconcile that wrote), so an entry is dropped only by a reconcile that holds the newer
/// object, or by [`WrittenStatuses::prune`] once it is old and the cache shows it. Only the
/// leader writes status.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<String, Written>>);

struct Written {
    status: AcsIdentityStatus,
    namespace: String,
    name: String,
    at: Instant,
}

impl WrittenStatuses {
    /// The newest status of `obj`: what we last wrote until the cache shows it, else the cache's.
    pub fn current(&self, obj: &AcsIdentity) -> Option<AcsIdentityStatus> {
        let Some(uid) = obj.uid() else {
            return obj.status.clone();
        };
        let mut written = self.0.lock().expect("status ledger lock");
        match written.get(&uid) {
            Some(ours) if obj.status.as_ref() != Some(&ours.status) => Some(ours.status.clone()),
            Some(_) => {
                written.remove(&uid);
                obj.status.clone()
            }
            None => obj.status.clone(),
        }
    }

    /// Drops the entries older than `min_age` whose object the cache (`cached`, by namespace
    /// and name) shows with our status, so that identities not due for hours hold nothing.
    /// Queued reconciles run within moments of the write they waited for, long before this.
    pub fn prune(
        &self,
        min_age: Duration,
        cached: impl Fn(&str, &str) -> Option<AcsIdentityStatus>,
    ) {
        self.0.lock().expect("status ledger lock").retain(|_, w| {
            w.at.elapsed() < min_age || cached(&w.namespace, &w.name).as_ref() != Some(&w.status)
        });
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("status ledger lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn forget(&self, obj: &AcsIdentity) {
        if let Some(uid) = obj.uid() {
            self.0.lock().expect("status ledger lock").remove(&uid);
        }
    }

    fn record(&self, obj: &AcsIdentity, status: Option<AcsIdentityStatus>) {
        if let (Some(uid), Some(status)) = (obj.uid(), status) {
            let entry = Written {
                status,
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
                at: Instant::now(),
            };
            self.0
                .lock()
                .expect("status ledger lock")
                .insert(uid, entry);
        }
    }
}

/// Writes `status` unless it equals `known`, the newest status of the object.
pub async fn write(
    ctx: &Context,
    obj: &AcsIdentity,
    known: Option<&AcsIdentityStatus>,
    status: AcsIdentityStatus,
) -> Result<(), Error> {
    if known == Some(&status) {
        return Ok(());
    }
    let api: Api<AcsIdentity> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "acsoperator.io/v1alpha1",
        "kind": "AcsIdentity",
        "status": status,
    });
    let written = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(super::MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    // Remember the status as the server stored it, which is what the cache will show.
    ctx.statuses.record(obj, written.status);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(status: Option<AcsIdentityStatus>) -> AcsIdentity {
        let mut obj: AcsIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
            "metadata": {"name": "a", "namespace": "n", "uid": "u-1"},
            "spec": {"connectionRef": {"name": "acs"}, "scopes": ["chat"]}
        }))
        .unwrap();
        obj.status = status;
        obj
    }

    fn with_id(id: &str) -> AcsIdentityStatus {
        AcsIdentityStatus {
            identity_id: Some(id.into()),
            ..AcsIdentityStatus::default()
        }
    }

    #[test]
    fn a_stale_cache_is_overruled_until_it_catches_up() {
        let ledger = WrittenStatuses::default();
        let stale = identity(Some(with_id("old")));
        assert_eq!(
            ledger.current(&stale),
            Some(with_id("old")),
            "nothing written yet"
        );
        ledger.record(&stale, Some(with_id("new")));
        assert_eq!(
            ledger.current(&stale),
            Some(with_id("new")),
            "cache is behind our write"
        );
        let caught_up = identity(Some(with_id("new")));
        assert_eq!(ledger.current(&caught_up), Some(with_id("new")));
        assert!(
            ledger.0.lock().unwrap().is_empty(),
            "entry dropped once the cache shows it"
        );
        ledger.record(&caught_up, Some(with_id("newer")));
        let shows = |id: &'static str| move |_: &str, _: &str| Some(with_id(id));
        ledger.prune(Duration::ZERO, shows("older"));
        assert_eq!(ledger.len(), 1, "kept while the cache shows another status");
        ledger.prune(Duration::from_secs(60), shows("newer"));
        assert_eq!(
            ledger.len(),
            1,
            "kept while young: a queued reconcile may hold an old object"
        );
        assert_eq!(
            ledger.current(&caught_up),
            Some(with_id("newer")),
            "a reconcile holding the older object still decides from what we wrote"
        );
        ledger.prune(Duration::ZERO, shows("newer"));
        assert!(ledger.is_empty(), "old and shown by the cache: dropped");
        ledger.record(&caught_up, Some(with_id("newer")));
        ledger.forget(&caught_up);
        assert_eq!(ledger.current(&stale), Some(with_id("old")));
    }
}

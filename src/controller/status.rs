//! Building an AcsIdentity's status as a reconcile makes progress, and writing it only when it
//! changed (server-side apply under the operator's field manager).

use super::Context;
use super::error::Error;
use super::token_secret::{TokenContent, token_hash};
use crate::api::{AcsIdentity, AcsIdentityStatus, IssuedFor};
use crate::policy::readiness::{CurrentToken, Failure};
use crate::policy::{SecretState, TokenParams, readiness, retry_delay};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use std::time::Duration;

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
        });
        if refresh_request.is_some() {
            s.handled_refresh_request = refresh_request;
        }
        self.current = Some(CurrentToken {
            renewal_time: renew_at,
            expires_on: content.expires_on,
        });
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
                .and_then(|c| Duration::try_from(c.expires_on.duration_since(self.now)).ok());
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

/// Writes `status` unless it equals what the object already has.
pub async fn write(
    ctx: &Context,
    obj: &AcsIdentity,
    status: AcsIdentityStatus,
) -> Result<(), Error> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<AcsIdentity> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "acsoperator.io/v1alpha1",
        "kind": "AcsIdentity",
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(super::MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

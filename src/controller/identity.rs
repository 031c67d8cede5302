//! Reconciling one AcsIdentity: gather the facts, ask [`crate::policy`] what to do, do that one
//! thing, record it. Deletion goes through the `acsoperator.io/cleanup` finalizer.

use super::Context;
use super::error::Error;
use super::status::{self, Progress};
use super::token_secret::{self, Expected, TokenContent};
use crate::acs::{
    AcsError, AcsRateLimiter, Admission, CreateIdentityParams, FirstToken, IssuedToken, Operation,
    TokenLifetime,
};
use crate::api::{AcsIdentity, AcsIdentityStatus, DeletionPolicy};
use crate::policy::{
    Decision, IssueReason, IssuedRecord, Observed, RenewBefore, TokenParams, decide, renewal_time,
    time_until,
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub const FINALIZER: &str = "acsoperator.io/cleanup";
pub const REFRESH_ANNOTATION: &str = "acsoperator.io/refresh-requested";
pub const SKIP_CLEANUP_ANNOTATION: &str = "acsoperator.io/skip-cleanup";

/// Entry point for the controller: routes to apply or cleanup through the finalizer.
pub async fn reconcile(obj: Arc<AcsIdentity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<AcsIdentity> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(o) => apply(&o, &ctx).await,
            Finalizer::Cleanup(o) => cleanup(&o, &ctx).await,
        }
    })
    .await;
    // Adding the finalizer is a JSON patch that first tests the finalizers we saw; 422 means
    // the cached object was older than the server's (our own earlier patch not yet seen).
    // Not a failure: look again once the watch has caught up.
    if let Err(finalizer::Error::AddFinalizer(kube::Error::Api(s))) = &result
        && s.code == 422
    {
        tracing::debug!("finalizer patch raced a newer version; looking again");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    result.map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Finalizer(other.to_string()),
    })
}

/// Makes sure the Secret holds a valid token for the spec, and says when to look again.
/// Failures are recorded in status and turned into a requeue here, so that backoff follows
/// the token's expiry and ACS's Retry-After rather than a generic policy.
async fn apply(obj: &AcsIdentity, ctx: &Context) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let now = Timestamp::now();
    let known = ctx.statuses.current(obj);
    let mut progress = Progress::from_status(known.clone().unwrap_or_default(), now);
    if let Some(renewal) = progress.status().renewal_time.as_ref()
        && renewal.0 < now
    {
        let overdue = now.duration_since(renewal.0).as_millis();
        tracing::debug!(overdue_ms = overdue, "renewal overdue at reconcile start");
    }
    match ensure_token(obj, ctx, &mut progress).await {
        Ok(Step::AwaitingAcs { valid_for }) => {
            tracing::debug!("in line for ACS capacity");
            Ok(Action::requeue(crate::policy::admission_recheck(valid_for)))
        }
        Ok(Step::Done(event)) => {
            let status = progress.succeeded(obj);
            ctx.metrics
                .observe_identity(&namespace_of(obj), &obj.name_any(), &status);
            status::write(ctx, obj, known.as_ref(), status).await?;
            ctx.metrics.observe_reconcile(Ok(()), started);
            if let Some((reason, note)) = event {
                ctx.publish(obj, EventType::Normal, reason, note).await;
            }
            Ok(Action::requeue(until(
                progress.renew_at(),
                Timestamp::now(),
            )))
        }
        Err(error) => {
            warn!(category = error.category(), %error, "reconcile failed");
            let (next_status, delay) = progress.failed(obj, &error);
            ctx.metrics
                .observe_identity(&namespace_of(obj), &obj.name_any(), &next_status);
            status::write(ctx, obj, known.as_ref(), next_status).await?;
            ctx.metrics
                .observe_reconcile(Err(error.category()), started);
            ctx.publish(obj, EventType::Warning, error.category(), error.to_string())
                .await;
            Ok(match delay {
                Some(delay) => Action::requeue(delay),
                None => Action::await_change(),
            })
        }
    }
}

/// How far one reconcile got.
enum Step {
    /// Done what the policy asked for; the Event to publish, if any.
    Done(Option<(&'static str, String)>),
    /// The ACS call must wait for the rate limit: in line, reconciled again when its turn
    /// comes. `valid_for`: how long the current token still lives, if there is one.
    AwaitingAcs { valid_for: Option<Duration> },
}

/// Does the one thing the policy asks for.
async fn ensure_token(
    obj: &AcsIdentity,
    ctx: &Context,
    progress: &mut Progress,
) -> Result<Step, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let secret_name = obj.secret_name();
    let connection = ctx
        .connections
        .resolve(&namespace, &obj.spec.connection_ref)
        .await?;
    let lifetime = TokenLifetime::from_minutes(obj.spec.token_lifetime_minutes)
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let wanted = TokenParams::new(
        &obj.spec.scopes,
        lifetime.minutes(),
        connection.fingerprint.clone(),
    );

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let status = progress.status().clone();
    let issued = issued_record(&status);
    let owner_uid = obj.uid().unwrap_or_default();
    let template = obj.spec.secret_template.as_ref();
    let (existing, secret_state) =
        match ctx.unchanged_token_secret(&namespace, &secret_name, &status) {
            // Still at the version we wrote: its data are known, no need to read the token.
            Some(meta) if issued.is_some() => {
                let state = token_secret::observe_unchanged(&meta, &owner_uid, template);
                let known = Secret {
                    metadata: meta,
                    ..Secret::default()
                };
                (Some(known), state)
            }
            _ => {
                let existing = secrets.get_opt(&secret_name).await?;
                let expected = issued
                    .as_ref()
                    .zip(status.issued_for.as_ref())
                    .map(|(r, f)| Expected {
                        token_hash: &f.token_hash,
                        expires_on: r.expires_on,
                        identity_id: &r.identity_id,
                    });
                let state = token_secret::observe(
                    existing.as_ref(),
                    &owner_uid,
                    expected.as_ref(),
                    template,
                );
                (existing, state)
            }
        };
    let identity_id = obj.spec.identity_id.clone().or(status.identity_id.clone());
    let refresh_request = unhandled_refresh_request(obj, &status);
    if issued.as_ref().is_some_and(|r| r.params == wanted) {
        progress.keep_current_token_if_valid(secret_state);
    }
    let decision = decide(&Observed {
        identity_id: identity_id.as_deref(),
        wanted: &wanted,
        issued: issued.as_ref(),
        secret: secret_state,
        refresh_requested: refresh_request.is_some(),
        now: progress.now(),
    });

    let destination = TokenDestination {
        secrets: &secrets,
        obj,
        existing: existing.as_ref(),
        wanted: &wanted,
        renew_before: renew_before(obj),
        refresh_request,
    };
    match decision {
        Decision::SecretConflict => Err(Error::SecretConflict(secret_name)),
        Decision::UpToDate { .. } => Ok(Step::Done(None)),
        Decision::RewriteSecret => {
            // Only the metadata drifted: read the Secret if the cache spared us that so far.
            let existing = match existing.filter(|s| s.data.is_some()) {
                Some(s) => Some(s),
                None => secrets.get_opt(&secret_name).await?,
            };
            let content = existing
                .as_ref()
                .and_then(token_secret::read_content)
                .ok_or_else(|| {
                    Error::InvalidSpec("Secret content vanished while rewriting".into())
                })?;
            let version = write_secret(&secrets, obj, &content, existing.as_ref()).await?;
            progress.record_secret_version(version);
            Ok(Step::Done(None))
        }
        Decision::CreateIdentity => {
            // Creates wait for the limit in the worker: they have no deadline to order by, and
            // a turn handed back through a controller queue full of new identities comes late
            // and costs capacity during exactly the burst that needs it.
            // The uid as customId makes a retry after a lost answer return the identity the
            // lost attempt created, instead of leaking it (ACS cannot list identities).
            let uid = obj.uid();
            let params = CreateIdentityParams {
                custom_id: uid.as_deref().filter(|_| ctx.idempotent_create),
                first_token: Some(FirstToken {
                    scopes: &obj.spec.scopes,
                    lifetime,
                }),
            };
            let call = async {
                let created = connection.client.create_identity_with(&params).await?;
                created.into_id_and_token()
            };
            let (id, token) = ctx
                .metrics
                .acs_call(Operation::CreateIdentityWithToken, call)
                .await?;
            info!(identity = %id, "created ACS identity");
            // Persist the id before anything else can fail: without a customId a lost id would
            // mean a second identity on the next attempt.
            progress.set_identity(&id);
            status::write(ctx, obj, obj.status.as_ref(), progress.status().clone()).await?;
            let note = format!("created ACS identity {id}");
            destination.store(progress, &id, token).await?;
            Ok(Step::Done(Some(("IdentityCreated", note))))
        }
        Decision::Issue(reason) => {
            let id = identity_id.expect("decide asks to issue only with an identity");
            // Renewals queue by the expiry of the token they replace; a missing or expired
            // token is due now.
            let now = progress.now();
            let expires_on = issued.as_ref().map(|r| r.expires_on).filter(|t| *t > now);
            let deadline = expires_on.unwrap_or(now);
            if !admitted(&connection.limiter, Operation::IssueToken, obj, deadline) {
                let valid_for = expires_on.and_then(|t| time_until(t, now));
                return Ok(Step::AwaitingAcs { valid_for });
            }
            let call = connection
                .client
                .issue_token(&id, &obj.spec.scopes, lifetime);
            let token = ctx
                .metrics
                .acs_call(Operation::IssueToken, call)
                .await
                .map_err(|e| match e {
                    AcsError::NotFound(_) => Error::IdentityNotFound {
                        id: id.clone(),
                        source: e,
                    },
                    e => Error::Acs(e),
                })?;
            info!(identity = %id, %reason, "issued token");
            progress.set_identity(&id);
            destination.store(progress, &id, token).await?;
            let event = if matches!(reason, IssueReason::Due | IssueReason::Expired) {
                "TokenRenewed"
            } else {
                "TokenIssued"
            };
            Ok(Step::Done(Some((
                event,
                format!("issued a new token: {reason}"),
            ))))
        }
    }
}

/// Whether `obj` may send an `operation` request now; if not, it is in line by `deadline`.
fn admitted(
    limiter: &AcsRateLimiter,
    operation: Operation,
    obj: &AcsIdentity,
    deadline: Timestamp,
) -> bool {
    let key = super::admission_key(&namespace_of(obj), &obj.name_any());
    limiter.admit(operation, &key, deadline) == Admission::Now
}

/// Where a newly issued token goes, and what to record about it.
struct TokenDestination<'a> {
    secrets: &'a Api<Secret>,
    obj: &'a AcsIdentity,
    existing: Option<&'a Secret>,
    wanted: &'a TokenParams,
    renew_before: RenewBefore,
    refresh_request: Option<String>,
}

impl TokenDestination<'_> {
    /// Writes the token to the Secret, then records it (and its renewal time) in `progress`.
    async fn store(
        &self,
        progress: &mut Progress,
        identity_id: &str,
        token: IssuedToken,
    ) -> Result<(), Error> {
        // Kubernetes keeps timestamps to the second: record what will read back identically, so
        // the next reconcile finds status unchanged. Expiry rounds down (never claims more).
        // Issued when ACS answered, not when the reconcile began: time spent waiting for the
        // rate limiter is not part of the token's life.
        let issued_at = whole_seconds(Timestamp::now());
        let expires_on = whole_seconds(token.expires_on);
        let jitter = rand::random::<f64>();
        let renew_at = whole_seconds(renewal_time(
            issued_at,
            expires_on,
            self.renew_before,
            jitter,
        ));
        let content = TokenContent {
            token: token.token,
            expires_on,
            identity_id: identity_id.to_string(),
        };
        let version = write_secret(self.secrets, self.obj, &content, self.existing).await?;
        progress.record_token(
            &content,
            self.wanted,
            issued_at,
            renew_at,
            self.refresh_request.clone(),
            version,
        );
        Ok(())
    }
}

/// Creates the Secret, or replaces our own at the version we read: never someone else's, and
/// never over a concurrent change (409 → retried). Returns the resourceVersion written.
async fn write_secret(
    secrets: &Api<Secret>,
    obj: &AcsIdentity,
    content: &TokenContent,
    existing: Option<&Secret>,
) -> Result<Option<String>, Error> {
    let secret = token_secret::desired(obj, content, existing);
    let params = PostParams {
        field_manager: Some(super::MANAGER.into()),
        ..PostParams::default()
    };
    let written = match existing {
        None => secrets.create(&params, &secret).await?,
        Some(_) => {
            secrets
                .replace(&obj.secret_name(), &params, &secret)
                .await?
        }
    };
    Ok(written.metadata.resource_version)
}

/// Revokes and deletes the identity (Delete policy) and deletes the Secret. Works when setup
/// never completed, and can be skipped with the skip-cleanup annotation.
async fn cleanup(obj: &AcsIdentity, ctx: &Context) -> Result<Action, Error> {
    let result = release(obj, ctx).await;
    if let Err(error) = &result {
        warn!(category = error.category(), %error, "cleanup failed");
        ctx.publish(
            obj,
            EventType::Warning,
            error.category(),
            format!("cleanup failed: {error}"),
        )
        .await;
    }
    if result.is_ok() {
        ctx.metrics
            .forget_identity(&namespace_of(obj), &obj.name_any());
        ctx.statuses.forget(obj);
    }
    result.map(|()| Action::await_change())
}

fn namespace_of(obj: &AcsIdentity) -> String {
    obj.namespace().unwrap_or_default()
}

async fn release(obj: &AcsIdentity, ctx: &Context) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let skip = obj
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .map(String::as_str)
        == Some("true");
    let identity_id = obj
        .status
        .as_ref()
        .and_then(|s| s.identity_id.clone())
        .or(obj.spec.identity_id.clone());
    if let (false, DeletionPolicy::Delete, Some(id)) = (skip, obj.spec.deletion_policy, identity_id)
    {
        let connection = ctx
            .connections
            .resolve(&namespace, &obj.spec.connection_ref)
            .await?;
        let revoke = connection.client.revoke_tokens(&id);
        if not_found_is_done(ctx.metrics.acs_call(Operation::RevokeTokens, revoke).await)? {
            ctx.publish(
                obj,
                EventType::Normal,
                "TokensRevoked",
                format!("revoked the tokens of {id}"),
            )
            .await;
        }
        let delete = connection.client.delete_identity(&id);
        if not_found_is_done(
            ctx.metrics
                .acs_call(Operation::DeleteIdentity, delete)
                .await,
        )? {
            ctx.publish(
                obj,
                EventType::Normal,
                "IdentityDeleted",
                format!("deleted ACS identity {id}"),
            )
            .await;
        }
        info!(identity = %id, "released ACS identity");
    }
    delete_owned_secret(ctx, obj, &namespace).await
}

/// `Ok(true)` when the call took effect, `Ok(false)` when ACS no longer knew the identity.
fn not_found_is_done(result: Result<(), AcsError>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(AcsError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn delete_owned_secret(
    ctx: &Context,
    obj: &AcsIdentity,
    namespace: &str,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = obj.secret_name();
    let Some(secret) = secrets.get_opt(&name).await? else {
        return Ok(());
    };
    if !token_secret::is_controlled_by(&secret.metadata, &obj.uid().unwrap_or_default()) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn renew_before(obj: &AcsIdentity) -> RenewBefore {
    match (&obj.spec.renew_before, obj.spec.renew_before_percentage) {
        (Some(d), _) => RenewBefore::Fixed(d.value()),
        (None, Some(p)) => RenewBefore::Percentage(p),
        (None, None) => RenewBefore::Default,
    }
}

/// The refresh annotation's value, when it has not been handled yet.
fn unhandled_refresh_request(obj: &AcsIdentity, status: &AcsIdentityStatus) -> Option<String> {
    let value = obj.annotations().get(REFRESH_ANNOTATION)?;
    (status.handled_refresh_request.as_ref() != Some(value)).then(|| value.clone())
}

/// The token the status says was last written, if the record is complete.
fn issued_record(status: &AcsIdentityStatus) -> Option<IssuedRecord> {
    let issued = status.issued_for.as_ref()?;
    Some(IssuedRecord {
        identity_id: status.identity_id.clone()?,
        params: TokenParams::new(
            &issued.scopes,
            issued.token_lifetime_minutes,
            issued.connection_fingerprint.clone(),
        ),
        expires_on: status.token_expires_on.as_ref()?.0,
        renewal_time: status.renewal_time.as_ref()?.0,
    })
}

/// `t` without its fraction of a second (rounded down).
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Time from `now` until `at`, at least a short moment so a due item cannot spin. A time
/// already past (the reconcile began before it and ended after) is due now, not in an hour;
/// with no time at all, look again in an hour.
fn until(at: Option<Timestamp>, now: Timestamp) -> Duration {
    let floor = Duration::from_millis(500);
    match at {
        None => Duration::from_secs(3600),
        Some(at) => time_until(at, now).unwrap_or(Duration::ZERO).max(floor),
    }
}

pub fn object_ref(obj: &AcsIdentity) -> k8s_openapi::api::core::v1::ObjectReference {
    obj.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_delay_until_renewal() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |ms: i64| Some(now + jiff::SignedDuration::from_millis(ms));
        assert_eq!(until(at(40_000), now), Duration::from_secs(40));
        assert_eq!(until(at(100), now), Duration::from_millis(500), "floor");
        // Passed while the reconcile ran: due now. (It once meant an hour, and the token
        // expired unrenewed.)
        assert_eq!(until(at(-281), now), Duration::from_millis(500));
        assert_eq!(until(None, now), Duration::from_secs(3600));
    }
}

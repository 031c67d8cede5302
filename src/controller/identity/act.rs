//! Carrying out a [`Decision`]: one small function per decision, each doing its one thing
//! (an ACS call and a Secret write, or a Secret write, or nothing) and saying what it did and
//! what the Secret holds afterwards. Never writes status: the record step does, from the
//! answer (a created identity that must be recorded before its token is stored comes back as
//! [`Acted::Created`], and [`store_created`] finishes it once recorded).

use super::observe::{self, Facts};
use crate::acs::{
    AcsError, AcsRateLimiter, Admission, CreateIdentityParams, FirstToken, IssuedToken, Operation,
};
use crate::api::{AcsIdentity, ConnectionKind};
use crate::controller::bulkheads::{Pass, Refused};
use crate::controller::context::{Context, MANAGER, admission_key};
use crate::controller::error::Error;
use crate::controller::status::Handled;
use crate::controller::token_secret::{self, TokenContent, token_hash};
use crate::policy::create;
use crate::policy::provenance::{self, Here};
use crate::policy::{
    Decision, IssueReason, Reason, TokenRecord, check_expiry, issue_deadline, renewal_time,
    time_until, whole_seconds,
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use std::time::Duration;
use tracing::{info, warn};

/// The object acted on and where its state is kept.
pub struct Target<'a> {
    pub obj: &'a AcsIdentity,
    pub ctx: &'a Context,
}

/// What [`act`] did: a finished step, or an identity created whose id is recorded before
/// its first token is stored.
pub enum Acted {
    Done(Step),
    Created(Created),
}

/// A new identity and its first token, not stored yet: without a customId a lost id would
/// mean a second identity on the next attempt, so it is recorded before anything else can
/// fail.
pub struct Created {
    pub id: String,
    token: IssuedToken,
}

impl Created {
    /// `error`, keeping the identity created for status.
    pub fn failed(&self, error: Error) -> Failed {
        Failed {
            error,
            identity_id: Some(self.id.clone()),
        }
    }
}

/// What acting achieved.
// One per reconcile, moved once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// The Secret holds `token`, issued for the current spec.
    Current {
        token: TokenRecord,
        /// The Normal Event that announces what was done.
        event: Option<(Reason, String)>,
        /// The request annotation values this handled.
        handled: Handled,
    },
    /// The ACS call must wait for the rate limit: in line, reconciled again when its turn
    /// comes. `token_valid_for`: how long the current token still lives, if there is one.
    InLine { token_valid_for: Option<Duration> },
    /// The endpoint or the namespace had its most ACS calls in flight: no call was made, and
    /// the reconcile does not wait for room (it would hold a shared worker); looked at again
    /// shortly.
    Crowded,
}

/// A failed action, and an identity it created before failing (to keep in status).
pub struct Failed {
    pub error: Error,
    pub identity_id: Option<String>,
}

impl<E: Into<Error>> From<E> for Failed {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            identity_id: None,
        }
    }
}

pub async fn act(decision: Decision, facts: &Facts, target: &Target<'_>) -> Result<Acted, Failed> {
    let done = match decision {
        Decision::SecretConflict => Err(Error::SecretConflict(target.obj.secret_name()).into()),
        Decision::UpToDate => Ok(Step::Current {
            token: facts
                .record
                .clone()
                .expect("decide finds a token up to date only if one is recorded"),
            event: None,
            handled: Handled::default(),
        }),
        Decision::RewriteSecret => rewrite(facts, target).await,
        Decision::CreateIdentity => return create(facts, target).await,
        Decision::Issue(reason) => issue(reason, facts, target).await,
    };
    done.map(Acted::Done)
}

/// Only the Secret's metadata drifted: write it again with the token it holds, no ACS call.
async fn rewrite(facts: &Facts, target: &Target<'_>) -> Result<Step, Failed> {
    let obj = target.obj;
    let mut record = facts
        .record
        .clone()
        .expect("decide rewrites only a recorded token");
    let existing = match facts.existing.as_ref().filter(|s| s.data.is_some()) {
        Some(s) => Some(s.clone()),
        None => secrets(target).get_opt(&obj.secret_name()).await?,
    };
    let content = existing
        .as_ref()
        .and_then(token_secret::read_content)
        .ok_or_else(|| Error::SecretChanged(obj.secret_name()))?;
    record.secret_resource_version = write_secret(target, &content, facts.existing_uid()).await?;
    Ok(Step::Current {
        token: record,
        event: None,
        handled: Handled::default(),
    })
}

/// No identity yet: create it with its first token in one ACS call.
async fn create(facts: &Facts, target: &Target<'_>) -> Result<Acted, Failed> {
    let (obj, ctx) = (target.obj, target.ctx);
    // While the window has room a create goes at once (a burst is not sent through the
    // controller's queue a second time); past it, the identity waits in its namespace's line
    // without holding a worker, so another namespace's first create is not stuck behind it.
    let namespace = obj.namespace().unwrap_or_default();
    let key = admission_key(&namespace, &obj.name_any());
    let shared = obj.spec.connection_ref.kind == ConnectionKind::ClusterAcsConnection;
    let mut pass = match enter(facts, target) {
        Ok(pass) => pass,
        Err(why) => return refused(why).map(Acted::Done),
    };
    let limiter = &facts.connection.limiter;
    if limiter.admit_fair(Operation::CreateIdentityWithToken, &key, &namespace, shared)
        == Admission::Queued
    {
        return Ok(Acted::Done(Step::InLine {
            token_valid_for: None,
        }));
    }
    // The uid as customId makes a retry after a lost answer return the identity the lost
    // attempt created, instead of leaking it (ACS cannot list identities). Only while the
    // resource serves the preview api-version that takes it.
    let uid = obj.uid();
    let custom_id = uid
        .as_deref()
        .filter(|_| ctx.idempotent_create && facts.connection.custom_id.served());
    let params = CreateIdentityParams {
        custom_id,
        first_token: Some(FirstToken {
            scopes: &obj.spec.scopes,
            lifetime: facts.lifetime,
        }),
    };
    let call = async {
        let created = facts
            .connection
            .client
            .create_identity_with(&params)
            .await?;
        created.into_id_and_token()
    };
    let (id, token) = match pass.call(Operation::CreateIdentityWithToken, call).await {
        Err(e) if custom_id.is_some() && create::preview_refused(&e) => {
            drop(pass);
            preview_retired(target, facts).await;
            return Ok(Acted::Done(Step::Crowded));
        }
        answer => answer?,
    };
    drop(pass);
    check_created(&id, facts, target)?;
    info!(identity = %id, "created ACS identity");
    let created = Created { id, token };
    if custom_id.is_some() {
        store_created(created, facts, target).await.map(Acted::Done)
    } else {
        Ok(Acted::Created(created))
    }
}

/// The resource refused the preview api-version of the create with `customId` (Azure
/// retires previews): from now on this connection's client creates with the GA api-version,
/// whose created id is recorded in status before its token is stored (so a failure after the
/// create leaves the id where cleanup finds it). Said once per client: a Warning Event on the
/// identity that found out, a metric and a log line. The identity is looked at again shortly
/// (no ACS call was counted against it), and creates then.
async fn preview_retired(target: &Target<'_>, facts: &Facts) {
    if !facts.connection.custom_id.retire() {
        return;
    }
    let ctx = target.ctx;
    warn!(
        "the ACS resource refused the idempotent create's preview api-version; creating with the GA api-version from now on"
    );
    ctx.metrics.idempotent_create_fell_back();
    let note = format!(
        "the ACS resource refused api-version {} of the idempotent create (customId): identities of this connection are created with the GA api-version from now on, each id recorded in status before its token is stored",
        crate::acs::model::CUSTOM_ID_API_VERSION
    );
    ctx.publish(
        target.obj,
        EventType::Warning,
        Reason::IdempotentCreateUnavailable,
        note,
    )
    .await;
}

/// Stores the first token of a created identity.
pub async fn store_created(
    created: Created,
    facts: &Facts,
    target: &Target<'_>,
) -> Result<Step, Failed> {
    let Created { id, token } = created;
    let stored = store(facts, target, &id, token, IssueReason::FirstToken)
        .await
        .map_err(|error| Failed {
            error,
            identity_id: Some(id.clone()),
        })?;
    Ok(Step::Current {
        token: stored,
        event: Some((
            Reason::IdentityCreated,
            format!("created ACS identity {id}"),
        )),
        // A new identity has no other token: both requests are met.
        handled: facts.handled.clone(),
    })
}

/// A pass for this reconcile's ACS calls to the connection's endpoint.
fn enter(facts: &Facts, target: &Target<'_>) -> Result<Pass, Refused> {
    let namespace = target.obj.namespace().unwrap_or_default();
    let endpoint = facts.connection.client.endpoint().as_str();
    let key = admission_key(&namespace, &target.obj.name_any());
    target
        .ctx
        .bulkheads
        .enter_or_wait(endpoint, &namespace, &key)
}

/// What a reconcile the bulkheads refused answers: [`Step::Crowded`], or the open breaker as
/// a failure (recorded, retried after its cooldown).
// The answer of every step of `act`, moved once: boxing it here alone would buy nothing.
#[allow(clippy::result_large_err)]
fn refused(refused: Refused) -> Result<Step, Failed> {
    match refused {
        Refused::Crowded(_) => Ok(Step::Crowded),
        Refused::CircuitOpen { retry_in } => Err(Error::AcsCircuitOpen { retry_in }.into()),
    }
}

/// Refuses an answer to a create that is not a new identity of the resource asked
/// ([`provenance::check_created`]): nothing of it is recorded.
fn check_created(id: &str, facts: &Facts, target: &Target<'_>) -> Result<(), Error> {
    let obj = target.obj;
    let namespace = obj.namespace().unwrap_or_default();
    let here = Here {
        endpoint: &facts.home.endpoint,
        via: observe::via_of(&namespace, &facts.home.connection_ref),
    };
    let uid = obj.uid().unwrap_or_default();
    let identities = &target.ctx.identities;
    let own = identities
        .get(&ObjectRef::from_obj(obj))
        .filter(|o| o.uid().as_deref() == Some(uid.as_str()));
    let answer = target.ctx.provenance.check(id, here, own.as_deref(), || {
        // Only where the counts say another may hold the id.
        !identities
            .state_filter(|o| {
                observe::recorded(o)
                    .is_some_and(|r| r.uid != uid && provenance::holds_here(&r, id, here))
            })
            .is_empty()
    });
    answer.map_err(|why| {
        warn!(identity = %id, ?why, "refused the answer to a create");
        Error::ForeignIdentity {
            id: id.to_string(),
            endpoint: facts.home.endpoint.clone(),
        }
    })
}

/// Issue a new token for the existing identity, when the rate limit gives this one its turn.
async fn issue(reason: IssueReason, facts: &Facts, target: &Target<'_>) -> Result<Step, Failed> {
    let obj = target.obj;
    let id = facts
        .identity_id
        .clone()
        .expect("decide asks to issue only with an identity");
    let expires_on = facts.record.as_ref().map(|r| r.expires_on);
    let deadline = issue_deadline(reason, expires_on, facts.now);
    let mut pass = match enter(facts, target) {
        Ok(pass) => pass,
        Err(why) => return refused(why),
    };
    if !admitted(&facts.connection.limiter, obj, deadline) {
        let token_valid_for = expires_on
            .filter(|t| *t > facts.now)
            .and_then(|t| time_until(t, facts.now));
        return Ok(Step::InLine { token_valid_for });
    }
    if reason == IssueReason::RevokeRequested {
        // Only once the new token's turn has come, so the Secret is not left holding a
        // revoked token while in line.
        revoke(&mut pass, facts, &id).await?;
    }
    let call = facts
        .connection
        .client
        .issue_token(&id, &obj.spec.scopes, facts.lifetime);
    let token = pass
        .call(Operation::IssueToken, call)
        .await
        .map_err(|e| not_found_as_identity(e, &id))?;
    drop(pass);
    info!(identity = %id, %reason, "issued token");
    let stored = store(facts, target, &id, token, reason).await?;
    Ok(Step::Current {
        token: stored,
        event: Some((reason.event_reason(), issue_note(reason, &id))),
        handled: facts.handled.clone(),
    })
}

fn issue_note(reason: IssueReason, id: &str) -> String {
    match reason {
        IssueReason::RevokeRequested => {
            format!("revoked every token of ACS identity {id} and issued a new one: {reason}")
        }
        _ => format!("issued a new token: {reason}"),
    }
}

/// Revokes every token of the identity (the revoke annotation).
async fn revoke(pass: &mut Pass, facts: &Facts, id: &str) -> Result<(), Error> {
    let call = facts.connection.client.revoke_tokens(id);
    pass.call(Operation::RevokeTokens, call)
        .await
        .map_err(|e| not_found_as_identity(e, id))?;
    info!(identity = %id, "revoked all tokens as requested");
    Ok(())
}

fn not_found_as_identity(e: AcsError, id: &str) -> Error {
    match e {
        AcsError::NotFound(_) => Error::IdentityNotFound {
            id: id.to_string(),
            source: e,
        },
        e => Error::Acs(e),
    }
}

/// Whether `obj` may send an issue request now; if not, it is in line by `deadline`.
fn admitted(limiter: &AcsRateLimiter, obj: &AcsIdentity, deadline: Timestamp) -> bool {
    let key = admission_key(&obj.namespace().unwrap_or_default(), &obj.name_any());
    limiter.admit(Operation::IssueToken, &key, deadline) == Admission::Now
}

/// Writes a newly issued token to the Secret; the record of it, with its renewal time.
async fn store(
    facts: &Facts,
    target: &Target<'_>,
    identity_id: &str,
    token: IssuedToken,
    reason: IssueReason,
) -> Result<TokenRecord, Error> {
    // Kubernetes keeps timestamps to the second: record what will read back identically, so
    // the next reconcile finds status unchanged. Expiry rounds down (never claims more).
    // Issued when ACS answered, not when the reconcile began: time spent waiting for the rate
    // limiter is not part of the token's life.
    let issued_at = whole_seconds(Timestamp::now());
    let expires_on = whole_seconds(token.expires_on);
    let requested = Duration::from_secs(u64::from(facts.lifetime.minutes()) * 60);
    check_expiry(issued_at, expires_on, requested)
        .map_err(|why| Error::Acs(AcsError::InvalidResponse(why)))?;
    let jitter = rand::random::<f64>();
    let renew_at = renewal_time(
        issued_at,
        expires_on,
        facts.renew_before,
        reason.phase(),
        jitter,
    );
    let content = TokenContent {
        token: token.token,
        expires_on,
        identity_id: identity_id.to_string(),
    };
    let version = write_secret(target, &content, facts.existing_uid()).await?;
    Ok(TokenRecord {
        identity_id: content.identity_id.clone(),
        params: facts.wanted.clone(),
        issued_at: Some(issued_at),
        expires_on,
        renewal_time: whole_seconds(renew_at),
        token_hash: token_hash(&content.token),
        secret_resource_version: version,
    })
}

/// Applies the token Secret (server-side apply under the operator's field manager); returns
/// the resourceVersion written. Never someone else's Secret: `existing_uid` pins the one
/// observed as ours.
async fn write_secret(
    target: &Target<'_>,
    content: &TokenContent,
    existing_uid: Option<&str>,
) -> Result<Option<String>, Error> {
    let secret = token_secret::desired(target.obj, content, existing_uid);
    let written = secrets(target)
        .patch(
            &target.obj.secret_name(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(written.metadata.resource_version)
}

fn secrets(target: &Target<'_>) -> Api<Secret> {
    Api::namespaced(
        target.ctx.client.clone(),
        &target.obj.namespace().unwrap_or_default(),
    )
}

//! Recording what a reconcile did: the only step that writes an AcsIdentity's status (built
//! by [`status::build`]), then its metrics, its Event, and when to look again
//! ([`crate::policy::next_look`] after the outcome [`crate::policy::failure`] chooses).

use super::act::{Failed, Step};
use crate::api::{AcsIdentity, AcsIdentityStatus, Provenance};
use crate::controller::conditions::apply_status;
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::status::{self, Change};
use crate::policy::failure::{self, Class};
use crate::policy::{Outcome, Shown, TokenRecord, in_line_needs_writing, whole_seconds};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Instant;
use tracing::{debug, warn};

/// One reconcile's record: the object, the newest status it starts from and when it began.
pub struct Record<'a> {
    obj: &'a AcsIdentity,
    ctx: &'a Context,
    /// What the last write stored, or the cache's status.
    known: Option<AcsIdentityStatus>,
    /// The status the reconcile starts from.
    pub base: AcsIdentityStatus,
    /// Whole seconds, as status times are on the server.
    pub now: Timestamp,
    started: Instant,
}

/// Whether a reconcile is counted in the reconcile metrics, and as what.
enum Tally {
    /// In line for ACS capacity: it goes on when its turn comes.
    NotYet,
    Succeeded,
    Failed(Class),
}

impl<'a> Record<'a> {
    pub fn start(obj: &'a AcsIdentity, ctx: &'a Context) -> Self {
        let started = Instant::now();
        let now = whole_seconds(Timestamp::now());
        let known = ctx.statuses.current(obj);
        let base = known.clone().unwrap_or_default();
        if let Some(renewal) = base.renewal_time.as_ref()
            && renewal.0 < now
        {
            let overdue = now.duration_since(renewal.0).as_millis();
            debug!(overdue_ms = overdue, "renewal overdue at reconcile start");
        }
        Self {
            obj,
            ctx,
            known,
            base,
            now,
            started,
        }
    }

    /// Records a created identity before its first token is stored.
    pub async fn created(&self, id: &str, home: &Provenance) -> Result<(), Error> {
        let change = Change::Created { id };
        let status = status::build(
            self.obj,
            self.base.clone(),
            change,
            Some(home.clone()),
            self.now,
        );
        write(self.ctx, self.obj, self.known.as_ref(), status).await
    }

    /// Records what acting came to: writes the status, counts the reconcile, publishes its
    /// Event and says when to look again. `current` is the token the Secret held for the
    /// current spec before acting, `home` where the identity lives (as the tenancy gate
    /// found it).
    pub async fn finish(
        self,
        current: Option<TokenRecord>,
        home: Option<Provenance>,
        acted: Result<Step, Failed>,
    ) -> Result<Action, Error> {
        let (obj, ctx, now) = (self.obj, self.ctx, self.now);
        let (status, tally, event, next) = match acted {
            Ok(step @ (Step::InLine { .. } | Step::Crowded)) => {
                debug!("in line for ACS capacity");
                let next = match step {
                    Step::InLine { token_valid_for } => Outcome::InLine { token_valid_for },
                    _ => Outcome::Crowded,
                };
                // Reconciling=True says so to the tools that read status, where they cannot
                // read it already; written once (a status that did not change is not written
                // again), and not for a renewal's moment in line.
                if !in_line_needs_writing(shown(obj, &self.base), current.as_ref(), now) {
                    return Ok(ctx.look_again_at(obj, next));
                }
                let change = Change::InLine {
                    current: current.as_ref(),
                };
                let status = status::build(obj, self.base, change, home, now);
                (status, Tally::NotYet, None, next)
            }
            Ok(Step::Current {
                token,
                event,
                handled,
            }) => {
                let next = Outcome::UpToDate {
                    renew_at: token.renewal_time,
                };
                let change = Change::Current {
                    token: &token,
                    handled,
                };
                let status = status::build(obj, self.base, change, home, now);
                let event = event.map(|(reason, note)| (EventType::Normal, reason, note));
                (status, Tally::Succeeded, event, next)
            }
            Err(Failed { error, identity_id }) => {
                let class = error.class();
                warn!(reason = %class.reason, %error, "reconcile failed");
                let message = error.to_string();
                let change = Change::Failed {
                    current: current.as_ref(),
                    identity_id,
                    class,
                    message: &message,
                };
                let status = status::build(obj, self.base, change, home, now);
                let attempts = status.failed_attempts.unwrap_or(1);
                let token_valid_for = current.and_then(|c| c.valid_for(now));
                let next = failure::outcome(&class, attempts, token_valid_for);
                let event = Some((EventType::Warning, class.reason, message));
                (status, Tally::Failed(class), event, next)
            }
        };
        if !matches!(tally, Tally::NotYet) {
            let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
            ctx.metrics.observe_identity(&namespace, &name, &status);
        }
        write(ctx, obj, self.known.as_ref(), status).await?;
        match tally {
            Tally::NotYet => {}
            Tally::Succeeded => count(ctx, None, self.started),
            Tally::Failed(class) => count(ctx, Some(&class), self.started),
        }
        if let Some((type_, reason, note)) = event {
            ctx.publish(obj, type_, reason, note).await;
        }
        Ok(ctx.look_again_at(obj, next))
    }
}

/// What the tools that read status see of `obj` with the newest status `base`.
fn shown(obj: &AcsIdentity, base: &AcsIdentityStatus) -> Shown {
    Shown {
        has_conditions: !base.conditions.is_empty(),
        observed_generation: base.observed_generation,
        generation: obj.metadata.generation,
    }
}

/// Counts one reconcile, `failed` or not, unless policy says its failure is none.
pub fn count(ctx: &Context, failed: Option<&Class>, started: Instant) {
    match failed {
        None => ctx.metrics.observe_reconcile(Ok(()), started),
        Some(class) if failure::counted(class) => {
            ctx.metrics.observe_reconcile(Err(class), started)
        }
        Some(_) => {}
    }
}

/// Writes `status` unless it equals `known`, the newest status of the object (server-side
/// apply under the operator's field manager). The only writer of an AcsIdentity's status.
async fn write(
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
    let written = apply_status(&api, &obj.name_any(), &status).await?;
    // Remember the status as the server stored it, which is what the cache will show.
    ctx.statuses.record(obj, written.status);
    Ok(())
}

//! An AcsIdentity's status: the token record it keeps (read once per reconcile, written after
//! each new token), the one function that builds the status after a reconcile ([`build`]),
//! and the statuses written that the cache may not show yet. Writing it is the identity
//! reconcile's record step's alone.

use super::conditions::{conditions, identity_owned};
use crate::api::{AcsIdentity, AcsIdentityStatus, IssuedFor, Provenance};
use crate::policy::failure::{self, Class};
use crate::policy::{Setback, TokenParams, TokenRecord, progress, readiness};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The token the status says was last written, if the record is complete.
pub fn token_record(status: &AcsIdentityStatus) -> Option<TokenRecord> {
    let issued = status.issued_for.as_ref()?;
    Some(TokenRecord {
        identity_id: status.identity_id.clone()?,
        params: TokenParams::new(
            &issued.scopes,
            issued.token_lifetime_minutes,
            issued.connection_fingerprint.clone(),
        ),
        issued_at: status.last_issued_at.as_ref().map(|t| t.0),
        expires_on: status.token_expires_on.as_ref()?.0,
        renewal_time: status.renewal_time.as_ref()?.0,
        token_hash: issued.token_hash.clone(),
        secret_resource_version: issued.secret_resource_version.clone(),
    })
}

/// Puts `record` into `status`: the inverse of [`token_record`].
fn store_record(status: &mut AcsIdentityStatus, record: &TokenRecord) {
    status.identity_id = Some(record.identity_id.clone());
    status.token_expires_on = Some(Time(record.expires_on));
    status.renewal_time = Some(Time(record.renewal_time));
    status.last_issued_at = record.issued_at.map(Time);
    status.issued_for = Some(IssuedFor {
        scopes: record.params.scopes.clone(),
        token_lifetime_minutes: record.params.lifetime_minutes,
        connection_fingerprint: record.params.connection.clone(),
        token_hash: record.token_hash.clone(),
        secret_resource_version: record.secret_resource_version.clone(),
    });
}

/// The annotation values a reconcile acted on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    pub refresh: Option<String>,
    pub revoke: Option<String>,
}

/// What a reconcile did, as the status records it.
pub enum Change<'a> {
    /// An identity was created and is recorded before its first token is stored: its id and
    /// home, nothing else.
    Created { id: &'a str },
    /// Waiting in line for ACS capacity: Reconciling, and Ready as the token the Secret holds
    /// (`current`) makes it.
    InLine { current: Option<&'a TokenRecord> },
    /// The Secret holds `token`, issued for the current spec; `handled`: the request
    /// annotation values acted on.
    Current {
        token: &'a TokenRecord,
        handled: Handled,
    },
    /// A failure, as classified, with its message. `current`: the token the Secret holds for
    /// the current spec, if any; `identity_id`: an identity learned before the failure
    /// (created, not yet recorded).
    Failed {
        current: Option<&'a TokenRecord>,
        identity_id: Option<String>,
        class: Class,
        message: &'a str,
    },
}

/// The status of `obj` after `change`, from `status`, the newest one: the one place an
/// AcsIdentity's status is put together. `home`: where the identity lives, as the tenancy
/// gate found it (recorded while it holds one; kept when not known).
pub fn build(
    obj: &AcsIdentity,
    mut status: AcsIdentityStatus,
    change: Change<'_>,
    home: Option<Provenance>,
    now: Timestamp,
) -> AcsIdentityStatus {
    let (current, setback, in_line) = match change {
        Change::Created { id } => {
            status.identity_id = Some(id.to_string());
            return with_home(status, home);
        }
        Change::InLine { current } => (current, None, true),
        Change::Current { token, handled } => {
            store_record(&mut status, token);
            if handled.refresh.is_some() {
                status.handled_refresh_request = handled.refresh;
            }
            if handled.revoke.is_some() {
                status.handled_revoke_request = handled.revoke;
            }
            status.failed_attempts = None;
            status.last_failure_time = None;
            (Some(token), None, false)
        }
        Change::Failed {
            current,
            identity_id,
            class,
            message,
        } => {
            if identity_id.is_some() {
                status.identity_id = identity_id;
            }
            status.failed_attempts = Some(status.failed_attempts.unwrap_or(0).saturating_add(1));
            status.last_failure_time = Some(Time(now));
            (current, Some(failure::setback(&class, message)), false)
        }
    };
    with_home(finish(obj, status, current, setback, in_line, now), home)
}

/// `status` with `home` as the provenance of the identity it holds (none while it holds
/// none; unchanged when `home` is not known).
fn with_home(mut status: AcsIdentityStatus, home: Option<Provenance>) -> AcsIdentityStatus {
    if status.identity_id.is_none() {
        status.provenance = None;
    } else if home.is_some() {
        status.provenance = home;
    }
    status
}

/// The conditions, generation and Secret name every finished reconcile records.
fn finish(
    obj: &AcsIdentity,
    mut s: AcsIdentityStatus,
    current: Option<&TokenRecord>,
    setback: Option<Setback<'_>>,
    in_line: bool,
    now: Timestamp,
) -> AcsIdentityStatus {
    let verdict = readiness(now, current, setback);
    let progress = progress(&verdict, setback, in_line);
    let generation = obj.meta().generation;
    s.observed_generation = generation;
    s.secret_name = Some(obj.secret_name());
    s.conditions = conditions(&s.conditions, &verdict, progress, generation, now);
    s
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
    /// The newest status of `obj`: what we last wrote until the cache shows it, else the
    /// cache's; in both, only the conditions the identity controller owns.
    pub fn current(&self, obj: &AcsIdentity) -> Option<AcsIdentityStatus> {
        let cached = obj.status.as_ref().map(|s| identity_owned(s));
        let Some(uid) = obj.uid() else {
            return cached.map(Cow::into_owned);
        };
        let mut written = self.0.lock().expect("status ledger lock");
        match written.get(&uid) {
            Some(ours) if cached.as_deref() != Some(&ours.status) => Some(ours.status.clone()),
            Some(_) => {
                written.remove(&uid);
                cached.map(Cow::into_owned)
            }
            None => cached.map(Cow::into_owned),
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
            w.at.elapsed() < min_age
                || cached(&w.namespace, &w.name)
                    .as_ref()
                    .map(|s| identity_owned(s))
                    .as_deref()
                    != Some(&w.status)
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

    /// Remembers `status` as written for `obj` (the record step, after its write).
    pub(in crate::controller) fn record(
        &self,
        obj: &AcsIdentity,
        status: Option<AcsIdentityStatus>,
    ) {
        if let (Some(uid), Some(status)) = (obj.uid(), status) {
            let entry = Written {
                status: identity_owned(&status).into_owned(),
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

/// The AcsIdentities being deleted whose cleanup is done with ACS (their identity deleted or
/// kept): they no longer take a place in their namespace's share, though the cache still shows
/// them until their finalizer is gone. In memory only: after a restart a deletion's cleanup
/// runs again (finding the identity gone) and lands here again.
#[derive(Default)]
pub struct Released(Mutex<std::collections::HashSet<String>>);

impl Released {
    /// Records the cleanup of `uid`, and forgets those no longer in the cache (`cached`).
    pub fn insert(&self, uid: &str, cached: impl Fn(&str) -> bool) {
        let mut released = self.0.lock().expect("released lock");
        released.retain(|u| cached(u));
        released.insert(uid.to_string());
    }

    pub fn snapshot(&self) -> std::collections::HashSet<String> {
        self.0.lock().expect("released lock").clone()
    }
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

    /// The truth, over every combination: each reason as a failure that waits for the user
    /// or is retried, the Secret's token absent, valid, due or expired, in line or not, after
    /// a status that said Ready or none. Ready=True never stands beside Stalled=True; a
    /// stalled status shows the failure's reason in Ready too; Ready is True exactly while a
    /// token is valid and not due and nothing waits for the user.
    #[test]
    fn truth() {
        use crate::controller::conditions::{READY, STALLED};
        use crate::policy::{Failure, Reason, TokenParams};
        let at = |secs: i64| Timestamp::from_second(secs).unwrap();
        let token = |renewal: i64, expires: i64| TokenRecord {
            identity_id: "8:acs:r_1".into(),
            params: TokenParams::new(&[], 60, String::new()),
            issued_at: Some(at(0)),
            renewal_time: at(renewal),
            expires_on: at(expires),
            token_hash: "h".into(),
            secret_resource_version: None,
        };
        let now = at(1000);
        let tokens = [
            ("none", None, false),
            ("valid", Some(token(1500, 2000)), true),
            ("due", Some(token(900, 2000)), false),
            ("expired", Some(token(500, 900)), false),
        ];
        let was_ready = finish(
            &identity(None),
            AcsIdentityStatus::default(),
            Some(&token(1500, 2000)),
            None,
            false,
            now,
        );
        let condition = |s: &AcsIdentityStatus, type_: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let mut combinations = 0;
        for reason in Reason::ALL.iter().copied() {
            for waits_for_change in [true, false] {
                let failure = Failure {
                    reason,
                    message: "what went wrong",
                };
                let setbacks = [
                    None,
                    Some(Setback {
                        failure,
                        waits_for_change,
                    }),
                ];
                for setback in setbacks {
                    for (state, record, fresh) in &tokens {
                        for in_line in [true, false] {
                            for previous in [AcsIdentityStatus::default(), was_ready.clone()] {
                                combinations += 1;
                                let s = finish(
                                    &identity(None),
                                    previous,
                                    record.as_ref(),
                                    setback,
                                    in_line,
                                    now,
                                );
                                let case = format!(
                                    "{reason} waits={waits_for_change} setback={} token={state} in_line={in_line}",
                                    setback.is_some()
                                );
                                let ready = condition(&s, READY).expect("Ready is always there");
                                let stalled = condition(&s, STALLED);
                                assert!(
                                    !(ready.0 == "True" && stalled.is_some()),
                                    "{case}: Ready=True beside Stalled=True"
                                );
                                let stops = setback.is_some_and(|s| s.waits_for_change);
                                if stops {
                                    let shown = ("False".to_string(), reason.as_str().to_string());
                                    assert_eq!(ready, shown, "{case}");
                                    assert_eq!(
                                        stalled,
                                        Some(("True".into(), reason.as_str().into())),
                                        "{case}"
                                    );
                                }
                                assert_eq!(ready.0 == "True", *fresh && !stops, "{case}");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(combinations, Reason::ALL.len() * 2 * 2 * 4 * 2 * 2);
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

    /// Another controller's condition (the restart controller's) is neither compared nor
    /// written by the identity controller: it does not keep a ledger entry alive, and the
    /// status a reconcile starts from does not hold it.
    #[test]
    fn conditions_of_other_controllers_are_not_the_identity_controllers() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let foreign = |mut s: AcsIdentityStatus| {
            s.conditions.push(Condition {
                type_: "WorkloadsRestarted".into(),
                status: "False".into(),
                reason: "RestartForbidden".into(),
                message: "m".into(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::from_second(5).unwrap()),
            });
            s
        };
        let ledger = WrittenStatuses::default();
        let obj = identity(Some(foreign(with_id("a"))));
        assert_eq!(ledger.current(&obj), Some(with_id("a")), "cache only");
        // Our write came back from the server with the other condition beside ours.
        ledger.record(&obj, Some(foreign(with_id("b"))));
        assert_eq!(ledger.current(&obj), Some(with_id("b")), "cache behind");
        let shown = identity(Some(foreign(with_id("b"))));
        assert_eq!(ledger.current(&shown), Some(with_id("b")));
        assert!(ledger.is_empty(), "the cache shows our write: dropped");
        ledger.record(&shown, Some(with_id("c")));
        ledger.prune(Duration::ZERO, |_, _| Some(foreign(with_id("c"))));
        assert!(ledger.is_empty(), "pruned though the cache has more");
    }
}

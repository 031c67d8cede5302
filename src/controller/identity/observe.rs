//! Gathering the facts of one AcsIdentity reconcile: its connection, the token record its
//! status keeps, the token Secret's state and any unhandled refresh request. Reads only; the
//! decision is [`crate::policy::decide`]'s.

use super::{REFRESH_ANNOTATION, REVOKE_ANNOTATION};
use crate::acs::TokenLifetime;
use crate::api::{
    AcsIdentity, AcsIdentityStatus, ConnectionKind, ConnectionRef, Origin, Provenance,
};
use crate::controller::connections::Resolved;
use crate::controller::context::Context;
use crate::controller::error::Error;
use crate::controller::status::Handled;
use crate::controller::{status, token_secret};
use crate::policy::provenance::{self, Here, Home, Via};
use crate::policy::{
    Observed, RenewBefore, SecretState, TokenParams, TokenRecord, current_token, tenancy,
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

/// Everything one decision about an identity is made from, and what acting on it needs.
pub struct Facts {
    pub now: Timestamp,
    /// Where the identity lives, or will live once created or adopted here.
    pub home: Provenance,
    pub connection: std::sync::Arc<Resolved>,
    pub lifetime: TokenLifetime,
    /// What a token issued now would be issued for.
    pub wanted: TokenParams,
    /// The token status says was last written.
    pub record: Option<TokenRecord>,
    /// `spec.identityId` when adopting, else the one created.
    pub identity_id: Option<String>,
    pub secret: SecretState,
    /// The token Secret as found: metadata only when the index vouched for its content.
    pub existing: Option<Secret>,
    /// The refresh annotation's value, when it has not been handled yet.
    pub refresh_request: Option<String>,
    /// The revoke annotation's value, when it has not been handled yet.
    pub revoke_request: Option<String>,
    pub renew_before: RenewBefore,
    /// The recorded token, if the Secret still holds it for the current spec
    /// ([`current_token`]): what the Ready condition speaks of.
    pub current: Option<TokenRecord>,
    /// The request annotation values a new token answers.
    pub handled: Handled,
}

impl Facts {
    /// The facts as policy reads them.
    pub fn observed(&self) -> Observed<'_> {
        Observed {
            identity_id: self.identity_id.as_deref(),
            wanted: &self.wanted,
            issued: self.record.as_ref(),
            secret: self.secret,
            refresh_requested: self.refresh_request.is_some(),
            revoke_requested: self.revoke_request.is_some(),
            now: self.now,
        }
    }

    /// The uid of the token Secret found, when it is ours (a write must land on it).
    pub fn existing_uid(&self) -> Option<&str> {
        self.existing.as_ref()?.metadata.uid.as_deref()
    }
}

pub async fn observe(
    obj: &AcsIdentity,
    ctx: &Context,
    status: &AcsIdentityStatus,
    now: Timestamp,
) -> Result<Facts, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let connection = ctx
        .connections
        .resolve(&namespace, &obj.spec.connection_ref)
        .await?;
    let home = check_tenancy(obj, ctx, &namespace, status, &connection).await?;
    let lifetime = TokenLifetime::from_minutes(obj.spec.token_lifetime_minutes)
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let wanted = TokenParams::new(
        &obj.spec.scopes,
        lifetime.minutes(),
        connection.fingerprint.clone(),
    );
    let record = status::token_record(status);
    let (existing, secret) = observe_secret(obj, ctx, record.as_ref()).await?;
    let refresh_request = unhandled(obj, REFRESH_ANNOTATION, &status.handled_refresh_request);
    let revoke_request = unhandled(obj, REVOKE_ANNOTATION, &status.handled_revoke_request);
    Ok(Facts {
        now,
        home,
        connection,
        lifetime,
        current: current_token(record.as_ref(), secret, &wanted).cloned(),
        handled: Handled {
            refresh: refresh_request.clone(),
            revoke: revoke_request.clone(),
        },
        wanted,
        identity_id: obj.spec.identity_id.clone().or(status.identity_id.clone()),
        record,
        secret,
        existing,
        refresh_request,
        revoke_request,
        renew_before: renew_before(obj),
    })
}

/// The token Secret and how it compares with the record. While the Secret is still at the
/// version we wrote, the cached metadata tell all and the token is not read.
async fn observe_secret(
    obj: &AcsIdentity,
    ctx: &Context,
    record: Option<&TokenRecord>,
) -> Result<(Option<Secret>, SecretState), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.secret_name();
    let owner_uid = obj.uid().unwrap_or_default();
    let template = obj.spec.secret_template.as_ref();
    let written = record.and_then(|r| r.secret_resource_version.as_deref());
    if let Some((meta, owned)) = ctx.unchanged_token_secret(&namespace, &name, written) {
        let state = token_secret::observe_unchanged(&meta, &owned, &owner_uid, template);
        let known = Secret {
            metadata: meta,
            ..Secret::default()
        };
        return Ok((Some(known), state));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets.get_opt(&name).await?;
    let state = token_secret::observe(existing.as_ref(), &owner_uid, record, template);
    Ok((existing, state))
}

/// The tenancy rules ([`crate::policy::tenancy::admit`]): the identity stays on the resource
/// it lives on, adoption only where the connection allows it, one holder per ACS identity, and
/// the namespace's share of a shared connection. Looks at nothing for a created identity it
/// holds at home (every renewal); reads the cache of AcsIdentities only when adopting, under
/// a cap, or to fill in the home of an identity the previous version recorded. The home the
/// identity has, or will have once created or adopted here.
async fn check_tenancy(
    obj: &AcsIdentity,
    ctx: &Context,
    namespace: &str,
    status: &AcsIdentityStatus,
    connection: &Resolved,
) -> Result<Provenance, Error> {
    let r = &obj.spec.connection_ref;
    let reaches = reached(connection)?;
    let here = Here {
        endpoint: &reaches,
        via: via_of(namespace, r),
    };
    let me = tenancy::Claimant {
        holds: status.identity_id.as_deref(),
        home: status.provenance.as_ref().map(|p| home_of(p, namespace)),
        leaving: false,
        ..claimant(obj)
    };
    let adopting = obj.spec.identity_id.is_some();
    let moved = me.home.is_some_and(|h| h.endpoint != here.endpoint);
    let rules = if adopting || me.holds.is_none() || moved {
        let grants = ctx
            .connections
            .grants(namespace, r, adopting || moved)
            .await?;
        tenancy::Rules {
            may_adopt: grants.may_adopt,
            max: grants.max_identities,
        }
    } else {
        tenancy::Rules {
            may_adopt: false,
            max: None,
        }
    };
    let (all, released) = if tenancy::needs_others(&me, here, rules) {
        (ctx.identities.state(), ctx.released.snapshot())
    } else {
        Default::default()
    };
    // An AcsIdentity being deleted is leaving: it frees its claim (its cleanup keeps or
    // deletes the ACS identity as its own rules say), and its place in the share once its
    // cleanup is done.
    let mut others = Vec::with_capacity(all.len());
    for o in all
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
    {
        let other = seen(o, &released);
        // One that only asks for the id through this connection claims it only if it may
        // adopt there: a namespace without the right cannot squat an id by asking first.
        if let Some(id) = obj.spec.identity_id.as_deref()
            && other.only_asks(id, here)
            && o.namespace().as_deref() != Some(namespace)
        {
            let theirs = o.namespace().unwrap_or_default();
            if !ctx.connections.grants(&theirs, r, true).await?.may_adopt {
                continue;
            }
        }
        others.push(other);
    }
    let peers: Vec<_> = all
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace))
        .map(|o| seen(o, &released))
        .collect();
    let legacy = legacy(&me, here, status, connection, &all);
    match tenancy::admit(me, here, rules, legacy, &others, &peers) {
        Ok(home) => Ok(provenance_of(home)),
        Err(refusal) => Err(refused(refusal, obj, namespace, status)),
    }
}

/// What the previous version's status says of the identity `me` holds without a home, for
/// [`tenancy::legacy_home`]; `connection` reaches `here`, `all` is every AcsIdentity.
pub fn legacy(
    me: &tenancy::Claimant<'_>,
    here: Here<'_>,
    status: &AcsIdentityStatus,
    connection: &Resolved,
    all: &[std::sync::Arc<AcsIdentity>],
) -> tenancy::Legacy {
    match me.holds {
        Some(id) if me.home.is_none() => tenancy::Legacy {
            issued_here: status::token_record(status)
                .map(|t| t.params.connection == connection.fingerprint),
            // Who else holds it is the holder rule's to decide (the creator, then the oldest).
            id_fits_here: provenance::check_created(
                id,
                here,
                me.uid,
                all.iter().filter_map(|o| recorded(o)),
            ) != Err(provenance::NotNew::OtherResource),
        },
        _ => tenancy::Legacy {
            issued_here: None,
            id_fits_here: true,
        },
    }
}

/// The error that says why [`tenancy::admit`] refused.
fn refused(
    refusal: tenancy::Refusal,
    obj: &AcsIdentity,
    namespace: &str,
    status: &AcsIdentityStatus,
) -> Error {
    let r = &obj.spec.connection_ref;
    let held = status.identity_id.clone().unwrap_or_default();
    match refusal {
        tenancy::Refusal::AdoptionNotAllowed => Error::AdoptionNotAllowed {
            connection: r.name.clone(),
            namespace: namespace.to_string(),
        },
        tenancy::Refusal::IdentityClaimed => Error::IdentityClaimed {
            id: obj.spec.identity_id.clone().unwrap_or_default(),
        },
        tenancy::Refusal::LimitReached(max) => Error::IdentityLimitReached {
            connection: r.name.clone(),
            namespace: namespace.to_string(),
            max,
        },
        tenancy::Refusal::OnOtherResource => {
            let home = status.provenance.as_ref();
            Error::IdentityOnOtherResource {
                id: held,
                home: home.map(|p| p.endpoint.clone()).unwrap_or_default(),
                via: home
                    .map(|p| describe(&p.connection_ref))
                    .unwrap_or_default(),
                reaches: describe(r),
            }
        }
        tenancy::Refusal::ProvenanceUnknown => Error::ProvenanceUnknown { id: held },
        tenancy::Refusal::HoldsAnother => Error::InvalidSpec(format!(
            "spec.identityId names another identity than the one this object holds ({held}); \
             delete this AcsIdentity and create one that adopts it"
        )),
    }
}

/// `kind name` of a connectionRef, for messages.
pub fn describe(r: &ConnectionRef) -> String {
    let kind = match r.kind {
        ConnectionKind::AcsConnection => "AcsConnection",
        ConnectionKind::ClusterAcsConnection => "ClusterAcsConnection",
    };
    format!("{kind} {}", r.name)
}

/// The normalised endpoint of the resource a resolved connection reaches.
pub fn reached(connection: &Resolved) -> Result<String, Error> {
    let endpoint = connection.client.endpoint().as_str();
    provenance::normalise_endpoint(endpoint)
        .ok_or_else(|| Error::InvalidConnection(format!("endpoint {endpoint} has no host")))
}

/// A connectionRef of an object in `namespace`, as the tenancy rules compare it.
pub fn via_of<'a>(namespace: &'a str, r: &'a ConnectionRef) -> Via<'a> {
    Via {
        kind: r.kind,
        namespace: match r.kind {
            ConnectionKind::AcsConnection => namespace,
            ConnectionKind::ClusterAcsConnection => "",
        },
        name: &r.name,
    }
}

/// A recorded provenance of an object in `namespace`.
pub fn home_of<'a>(p: &'a Provenance, namespace: &'a str) -> Home<'a> {
    Home {
        endpoint: &p.endpoint,
        via: via_of(namespace, &p.connection_ref),
        adopted: p.origin == Origin::Adopted,
    }
}

/// The provenance status records for `home`.
pub fn provenance_of(home: Home<'_>) -> Provenance {
    Provenance {
        endpoint: home.endpoint.to_string(),
        connection_ref: ConnectionRef {
            kind: home.via.kind,
            name: home.via.name.to_string(),
        },
        origin: if home.adopted {
            Origin::Adopted
        } else {
            Origin::Created
        },
    }
}

/// An AcsIdentity as the claim rules see it, from its cached status.
pub fn claimant(obj: &AcsIdentity) -> tenancy::Claimant<'_> {
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let status = obj.status.as_ref();
    tenancy::Claimant {
        uid: obj.metadata.uid.as_deref().unwrap_or_default(),
        created_at: obj.metadata.creation_timestamp.as_ref().map(|t| t.0),
        holds: status.and_then(|s| s.identity_id.as_deref()),
        home: status
            .and_then(|s| s.provenance.as_ref())
            .map(|p| home_of(p, namespace)),
        adopts: obj.spec.identity_id.as_deref(),
        via: via_of(namespace, &obj.spec.connection_ref),
        leaving: obj.metadata.deletion_timestamp.is_some(),
    }
}

/// [`claimant`], except that one whose cleanup is done (`released`) holds nothing any more.
fn seen<'a>(
    obj: &'a AcsIdentity,
    released: &std::collections::HashSet<String>,
) -> tenancy::Claimant<'a> {
    let c = claimant(obj);
    if c.leaving && released.contains(c.uid) {
        tenancy::Claimant { holds: None, ..c }
    } else {
        c
    }
}

/// The id an AcsIdentity holds and where, as the create check reads it.
pub fn recorded(obj: &AcsIdentity) -> Option<provenance::Recorded<'_>> {
    let c = claimant(obj);
    Some(provenance::Recorded {
        uid: c.uid,
        namespace: obj.metadata.namespace.as_deref().unwrap_or_default(),
        id: c.holds?,
        home: c.home,
    })
}

/// A request annotation's value, when it differs from the one last handled.
fn unhandled(obj: &AcsIdentity, annotation: &str, handled: &Option<String>) -> Option<String> {
    let value = obj.annotations().get(annotation)?;
    (handled.as_ref() != Some(value)).then(|| value.clone())
}

fn renew_before(obj: &AcsIdentity) -> RenewBefore {
    match (&obj.spec.renew_before, obj.spec.renew_before_percentage) {
        (Some(d), _) => RenewBefore::Fixed(d.value()),
        (None, Some(p)) => RenewBefore::Percentage(p),
        (None, None) => RenewBefore::Default,
    }
}

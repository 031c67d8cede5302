//! Reconcile failures. [`Error::class`] classifies each once: its [`Reason`] (condition
//! reason, Event reason and metrics label, never a free-form string there), its standing
//! (transient, permanent, held back) and the wait asked for; [`crate::policy::failure`]
//! decides what follows from that.

use crate::acs::{AcsError, ConnectionStringError};
use crate::policy::Reason;
use crate::policy::failure::{self, Class, FailureStanding};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name} not found")]
    ConnectionNotFound { kind: &'static str, name: String },
    #[error("ClusterAcsConnection {name} does not allow namespace {namespace}")]
    ConnectionNotAllowed { name: String, namespace: String },
    #[error("connection Secret {namespace}/{name} not found")]
    ConnectionSecretNotFound { namespace: String, name: String },
    #[error("connection Secret {namespace}/{name} has no key {key}")]
    ConnectionSecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("connection Secret {namespace}/{name} key {key}: {source}")]
    InvalidConnectionString {
        namespace: String,
        name: String,
        key: String,
        source: ConnectionStringError,
    },
    #[error("invalid CA bundle: {0}")]
    InvalidCaBundle(String),
    /// The connection's endpoint is not one requests may go to.
    #[error("{0}")]
    EndpointNotAllowed(#[from] crate::policy::endpoint::EndpointRefusal),
    /// The connection's spec cannot be used as written.
    #[error("invalid connection: {0}")]
    InvalidConnection(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The connection's workload identity is incomplete, or its token file unreadable.
    #[error("workload identity: {0}")]
    WorkloadIdentity(String),
    #[error("Secret {0} exists and is not owned by this AcsIdentity")]
    SecretConflict(String),
    /// The token Secret changed between reading and writing it: a race, looked at again.
    #[error("Secret {0} changed while it was being written; looking again")]
    SecretChanged(String),
    #[error("ACS identity {id} does not exist: {source}")]
    IdentityNotFound { id: String, source: AcsError },
    #[error(transparent)]
    Acs(#[from] AcsError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "ClusterAcsConnection {connection} does not allow namespace {namespace} to adopt \
         identities (spec.identityId); ask its owner to add the namespace to \
         adoptionAllowedNamespaces, or remove identityId to have an identity created"
    )]
    AdoptionNotAllowed {
        connection: String,
        namespace: String,
    },
    #[error(
        "ACS identity {id} is already held by another AcsIdentity; an ACS identity can be held \
         by one AcsIdentity only"
    )]
    IdentityClaimed { id: String },
    #[error(
        "namespace {namespace} already has {max} AcsIdentities on ClusterAcsConnection \
         {connection} (maxIdentitiesPerNamespace); this one waits until one is deleted"
    )]
    IdentityLimitReached {
        connection: String,
        namespace: String,
        max: u32,
    },
    #[error(
        "ACS identity {id} lives on {home} (created or adopted through {via}); {reaches} \
         reaches another ACS resource, where it is not this object's: point connectionRef back, \
         or delete this AcsIdentity and create a new one"
    )]
    IdentityOnOtherResource {
        id: String,
        home: String,
        via: String,
        reaches: String,
    },
    #[error(
        "ACS identity {id} was recorded by an earlier version without where it lives, and its \
         connection cannot vouch for it (its last token came through another connection, its \
         id is another resource's, or another AcsIdentity holds it); no token is issued and \
         deleting this object leaves the identity in ACS"
    )]
    ProvenanceUnknown { id: String },
    #[error(
        "ACS at {endpoint} answered the create with {id}, which is not a new identity of that \
         resource; nothing was recorded"
    )]
    ForeignIdentity { id: String, endpoint: String },
    #[error(
        "namespace {namespace}'s AcsConnections already hold {max} distinct clients (endpoint, \
         credential and CA bundle; the operator's --max-clients-per-namespace); this one waits \
         until one of them is deleted or made the same as another"
    )]
    ConnectionLimitReached { namespace: String, max: usize },
    /// The endpoint's breaker is open ([`crate::policy::bulkhead`]): no call was made.
    #[error(
        "the connection's ACS endpoint did not answer several calls in a row (connect or \
         first-byte timeouts, or failed connections); its calls are paused and one is tried \
         again in {}s",
        retry_in.as_secs().max(1)
    )]
    AcsCircuitOpen { retry_in: Duration },
    /// The endpoint or the namespace had its most ACS calls in flight: no call was made, the
    /// object is looked at again shortly (only cleanup returns it; a reconcile waits in line).
    #[error("waiting for room among the ACS calls in flight (the operator's bulkheads)")]
    Crowded,
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The one classification of this error: its reason, its standing and its metric label
    /// (see [`Class`]), with the wait ACS or the breaker asked for. No catch-all arm, here or
    /// for ACS's errors: a new variant does not compile until it is classified.
    pub fn class(&self) -> Class {
        use FailureStanding::{Crowded, ForeignSecret, HeldBackByOthers, Permanent, Transient};
        let (reason, standing) = match self {
            Error::ConnectionNotFound { .. } | Error::ConnectionSecretNotFound { .. } => {
                (Reason::ConnectionNotFound, Permanent)
            }
            Error::ConnectionNotAllowed { .. } => (Reason::ConnectionNotAllowed, Permanent),
            Error::ConnectionSecretKeyMissing { .. } | Error::InvalidConnectionString { .. } => {
                (Reason::InvalidConnectionString, Permanent)
            }
            Error::InvalidCaBundle(_) => (Reason::InvalidCaBundle, Permanent),
            Error::InvalidConnection(_) => (Reason::InvalidConnection, Permanent),
            Error::EndpointNotAllowed(_) => (Reason::EndpointNotAllowed, Permanent),
            Error::InvalidSpec(_) => (Reason::InvalidSpec, Permanent),
            Error::WorkloadIdentity(_) => (Reason::InvalidWorkloadIdentity, Permanent),
            Error::SecretConflict(_) => (Reason::SecretConflict, ForeignSecret),
            Error::IdentityNotFound { .. } => (Reason::IdentityNotFound, Permanent),
            Error::AdoptionNotAllowed { .. } => (Reason::AdoptionNotAllowed, Permanent),
            Error::IdentityClaimed { .. } => (Reason::IdentityClaimed, HeldBackByOthers),
            Error::IdentityLimitReached { .. } => (Reason::IdentityLimitReached, HeldBackByOthers),
            Error::IdentityOnOtherResource { .. } => (Reason::IdentityOnOtherResource, Permanent),
            Error::ProvenanceUnknown { .. } => (Reason::ProvenanceUnknown, HeldBackByOthers),
            Error::ForeignIdentity { .. } => (Reason::ForeignIdentity, Permanent),
            Error::ConnectionLimitReached { .. } => {
                (Reason::ConnectionLimitReached, HeldBackByOthers)
            }
            Error::AcsCircuitOpen { retry_in } => {
                return Class::new(Reason::AcsCircuitOpen, Transient).retry_after(Some(*retry_in));
            }
            Error::Crowded => (Reason::InLine, Crowded),
            Error::Acs(e) => return acs_class(e),
            Error::Kube(kube::Error::Api(status)) => (
                Reason::KubernetesError,
                failure::api_status_standing(status.code),
            ),
            Error::SecretChanged(_) | Error::Kube(_) | Error::Finalizer(_) => {
                (Reason::KubernetesError, Transient)
            }
        };
        Class::new(reason, standing)
    }

    /// The stable reason for conditions, Events and metrics.
    pub fn reason(&self) -> Reason {
        self.class().reason
    }

    /// Whether retrying later without any change can help. Permanent failures wait for a
    /// change of the spec, the connection or its Secret (all watched) instead of hammering ACS,
    /// and are reported as Stalled.
    pub fn is_transient(&self) -> bool {
        self.class().is_transient()
    }

    /// Whether this is no failure: a cleanup that found no room for its ACS calls.
    pub fn is_crowded(&self) -> bool {
        self.class().standing == FailureStanding::Crowded
    }
}

/// An ACS failure's reason; its standing is ACS's own ([`crate::acs::AcsClass`]: whether the
/// same call may succeed later), and so is the wait a 429 asks for.
fn acs_class(e: &AcsError) -> Class {
    let (reason, retry_after) = match e {
        AcsError::Throttled { retry_after, .. } => (Reason::AcsThrottled, *retry_after),
        AcsError::Unauthorized { .. } => (Reason::AcsUnauthorized, None),
        AcsError::Unavailable { .. } | AcsError::Timeout { .. } | AcsError::Transport(_) => {
            (Reason::AcsUnavailable, None)
        }
        AcsError::UntrustedCertificate(_) => (Reason::AcsCertificateUntrusted, None),
        AcsError::NotFound(_) => (Reason::IdentityNotFound, None),
        AcsError::Rejected { .. } | AcsError::InvalidRequest(_) => (Reason::AcsRejected, None),
        AcsError::InvalidResponse(_) => (Reason::AcsInvalidResponse, None),
        AcsError::InvalidCaBundle(_) => (Reason::InvalidCaBundle, None),
        AcsError::Config(_) => (Reason::InvalidConnection, None),
        AcsError::Credential { .. } => (Reason::EntraTokenFailed, None),
    };
    let standing = if e.class().retriable {
        FailureStanding::Transient
    } else {
        FailureStanding::Permanent
    };
    Class::new(reason, standing).retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::ServiceError;

    fn svc() -> ServiceError {
        ServiceError {
            code: "X".into(),
            message: "m".into(),
            target: None,
        }
    }

    #[test]
    fn reasons_and_transience() {
        let cases: Vec<(Error, Reason, bool)> = vec![
            (
                Error::ConnectionNotFound {
                    kind: "AcsConnection",
                    name: "a".into(),
                },
                Reason::ConnectionNotFound,
                false,
            ),
            (
                Error::SecretConflict("s".into()),
                Reason::SecretConflict,
                false,
            ),
            (
                Error::Acs(AcsError::Throttled {
                    retry_after: None,
                    error: svc(),
                }),
                Reason::AcsThrottled,
                true,
            ),
            (
                Error::Acs(AcsError::Unauthorized {
                    status: 401,
                    error: svc(),
                }),
                Reason::AcsUnauthorized,
                false,
            ),
            (
                Error::Acs(AcsError::Unavailable {
                    status: 503,
                    error: svc(),
                }),
                Reason::AcsUnavailable,
                true,
            ),
            (
                Error::Acs(AcsError::Timeout {
                    phase: crate::acs::TimeoutPhase::FirstByte,
                    after: Duration::from_secs(1),
                }),
                Reason::AcsUnavailable,
                true,
            ),
            (
                Error::Acs(AcsError::Rejected {
                    status: 400,
                    error: svc(),
                }),
                Reason::AcsRejected,
                false,
            ),
            (
                Error::IdentityNotFound {
                    id: "i".into(),
                    source: AcsError::NotFound(svc()),
                },
                Reason::IdentityNotFound,
                false,
            ),
        ];
        for (error, reason, transient) in cases {
            assert_eq!(error.reason(), reason, "{error}");
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }

    /// The standing of each kind of error, and the wait it carries. A transient failure is
    /// one whose reason retries; one that is not never says Done or Reconciling.
    #[test]
    fn standings() {
        use FailureStanding::*;
        let api = |code: u16| {
            Error::Kube(kube::Error::Api(
                kube::core::Status::failure("m", "R")
                    .with_code(code)
                    .boxed(),
            ))
        };
        let wait = Duration::from_secs(9);
        let cases: Vec<(Error, FailureStanding, Option<Duration>)> = vec![
            (Error::SecretConflict("s".into()), ForeignSecret, None),
            (
                Error::IdentityClaimed { id: "i".into() },
                HeldBackByOthers,
                None,
            ),
            (
                Error::IdentityLimitReached {
                    connection: "c".into(),
                    namespace: "n".into(),
                    max: 1,
                },
                HeldBackByOthers,
                None,
            ),
            (
                Error::ProvenanceUnknown { id: "i".into() },
                HeldBackByOthers,
                None,
            ),
            (
                Error::ConnectionLimitReached {
                    namespace: "n".into(),
                    max: 1,
                },
                HeldBackByOthers,
                None,
            ),
            (
                Error::AdoptionNotAllowed {
                    connection: "c".into(),
                    namespace: "n".into(),
                },
                Permanent,
                None,
            ),
            (
                Error::ForeignIdentity {
                    id: "i".into(),
                    endpoint: "e".into(),
                },
                Permanent,
                None,
            ),
            (
                Error::AcsCircuitOpen { retry_in: wait },
                Transient,
                Some(wait),
            ),
            (Error::Crowded, Crowded, None),
            (Error::SecretChanged("s".into()), Transient, None),
            (api(409), Transient, None),
            (api(500), Transient, None),
            (api(403), Permanent, None),
            (api(422), Permanent, None),
            (
                Error::Acs(AcsError::Throttled {
                    retry_after: Some(wait),
                    error: svc(),
                }),
                Transient,
                Some(wait),
            ),
            (
                Error::Acs(AcsError::Credential {
                    retriable: true,
                    message: "m".into(),
                }),
                Transient,
                None,
            ),
            (
                Error::Acs(AcsError::Credential {
                    retriable: false,
                    message: "m".into(),
                }),
                Permanent,
                None,
            ),
            (
                Error::Acs(AcsError::InvalidResponse("x".into())),
                Permanent,
                None,
            ),
            (Error::Acs(AcsError::Transport("x".into())), Transient, None),
        ];
        for (error, standing, retry_after) in cases {
            let class = error.class();
            assert_eq!(
                (class.standing, class.retry_after),
                (standing, retry_after),
                "{error}"
            );
            assert_eq!(class.label, class.reason.as_str());
            let reason = class.reason.standing();
            match standing {
                Transient => assert_eq!(reason, crate::policy::Standing::Retrying, "{error}"),
                Crowded => {}
                _ => assert!(
                    matches!(
                        reason,
                        crate::policy::Standing::Stalled | crate::policy::Standing::Retrying
                    ),
                    "{error}"
                ),
            }
        }
    }
}

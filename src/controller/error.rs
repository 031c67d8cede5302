//! Reconcile failures. Each maps to one [`Reason`], used as condition reason, Event reason and
//! metrics label (never a free-form string there), and says whether retrying can help.

use crate::acs::{AcsError, ConnectionStringError};
use crate::policy::{Reason, Standing};
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
    /// The stable reason for conditions, Events and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Error::ConnectionNotFound { .. } | Error::ConnectionSecretNotFound { .. } => {
                Reason::ConnectionNotFound
            }
            Error::ConnectionNotAllowed { .. } => Reason::ConnectionNotAllowed,
            Error::ConnectionSecretKeyMissing { .. } | Error::InvalidConnectionString { .. } => {
                Reason::InvalidConnectionString
            }
            Error::InvalidCaBundle(_) => Reason::InvalidCaBundle,
            Error::InvalidConnection(_) => Reason::InvalidConnection,
            Error::EndpointNotAllowed(_) => Reason::EndpointNotAllowed,
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::WorkloadIdentity(_) => Reason::InvalidWorkloadIdentity,
            Error::SecretConflict(_) => Reason::SecretConflict,
            Error::IdentityNotFound { .. } => Reason::IdentityNotFound,
            Error::AdoptionNotAllowed { .. } => Reason::AdoptionNotAllowed,
            Error::IdentityClaimed { .. } => Reason::IdentityClaimed,
            Error::IdentityLimitReached { .. } => Reason::IdentityLimitReached,
            Error::IdentityOnOtherResource { .. } => Reason::IdentityOnOtherResource,
            Error::ProvenanceUnknown { .. } => Reason::ProvenanceUnknown,
            Error::ForeignIdentity { .. } => Reason::ForeignIdentity,
            Error::ConnectionLimitReached { .. } => Reason::ConnectionLimitReached,
            Error::AcsCircuitOpen { .. } => Reason::AcsCircuitOpen,
            Error::Crowded => Reason::InLine,
            Error::Acs(e) => acs_reason(e),
            Error::SecretChanged(_) | Error::Kube(_) | Error::Finalizer(_) => {
                Reason::KubernetesError
            }
        }
    }

    /// Whether retrying later without any change can help. Permanent failures wait for a
    /// change of the spec, the connection or its Secret (all watched) instead of hammering ACS,
    /// and are reported as Stalled. The reason's [`Standing`] decides, except for the two
    /// retrying kinds of reason whose errors can also be final.
    pub fn is_transient(&self) -> bool {
        match self {
            // The API server being unavailable or conflicting is transient; a 4xx is not.
            Error::Kube(kube::Error::Api(status)) => status.code == 409 || status.code >= 500,
            // Entra ID refusing the credential (4xx) is not.
            Error::Acs(AcsError::Credential { retriable, .. }) => *retriable,
            _ => self.reason().standing() == Standing::Retrying,
        }
    }

    /// Whether this is no failure: a cleanup that found no room for its ACS calls.
    pub fn is_crowded(&self) -> bool {
        matches!(self, Error::Crowded)
    }

    /// A `Retry-After` from ACS, when it sent one; or when an open breaker lets a call through.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::AcsCircuitOpen { retry_in } => Some(*retry_in),
            Error::Acs(AcsError::Throttled { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

fn acs_reason(e: &AcsError) -> Reason {
    match e {
        AcsError::Throttled { .. } => Reason::AcsThrottled,
        AcsError::Unauthorized { .. } => Reason::AcsUnauthorized,
        AcsError::Unavailable { .. } | AcsError::Timeout { .. } | AcsError::Transport(_) => {
            Reason::AcsUnavailable
        }
        AcsError::UntrustedCertificate(_) => Reason::AcsCertificateUntrusted,
        AcsError::NotFound(_) => Reason::IdentityNotFound,
        AcsError::Rejected { .. } | AcsError::InvalidRequest(_) => Reason::AcsRejected,
        AcsError::InvalidResponse(_) => Reason::AcsInvalidResponse,
        AcsError::InvalidCaBundle(_) => Reason::InvalidCaBundle,
        AcsError::Config(_) => Reason::InvalidConnection,
        AcsError::Credential { .. } => Reason::EntraTokenFailed,
    }
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
}

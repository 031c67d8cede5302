//! Reconcile failures, each with a stable category used as condition reason, Event reason and
//! metrics label (never a free-form string there).

use crate::acs::{AcsError, ConnectionStringError};
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
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The connection's workload identity is incomplete, or its token file unreadable.
    #[error("workload identity: {0}")]
    WorkloadIdentity(String),
    #[error("Secret {0} exists and is not owned by this AcsIdentity")]
    SecretConflict(String),
    #[error("ACS identity {id} does not exist: {source}")]
    IdentityNotFound { id: String, source: AcsError },
    #[error(transparent)]
    Acs(#[from] AcsError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// The stable reason string for conditions, Events and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ConnectionNotFound { .. } | Error::ConnectionSecretNotFound { .. } => {
                "ConnectionNotFound"
            }
            Error::ConnectionNotAllowed { .. } => "ConnectionNotAllowed",
            Error::ConnectionSecretKeyMissing { .. } | Error::InvalidConnectionString { .. } => {
                "InvalidConnectionString"
            }
            Error::InvalidCaBundle(_) => "InvalidCaBundle",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::WorkloadIdentity(_) => "InvalidWorkloadIdentity",
            Error::SecretConflict(_) => "SecretConflict",
            Error::IdentityNotFound { .. } => "IdentityNotFound",
            Error::Acs(e) => match e {
                AcsError::Throttled { .. } => "AcsThrottled",
                AcsError::Unauthorized { .. } => "AcsUnauthorized",
                AcsError::Unavailable { .. } | AcsError::Timeout(_) | AcsError::Transport(_) => {
                    "AcsUnavailable"
                }
                AcsError::NotFound(_) => "IdentityNotFound",
                AcsError::Rejected { .. } | AcsError::InvalidRequest(_) => "AcsRejected",
                AcsError::InvalidResponse(_) => "AcsInvalidResponse",
                AcsError::Config(_) => "InvalidCaBundle",
                AcsError::Credential { .. } => "EntraTokenFailed",
            },
            Error::Kube(_) | Error::Finalizer(_) => "KubernetesError",
        }
    }

    /// Whether retrying later without any change can help. Permanent failures wait for a
    /// change of the spec, the connection or its Secret (all watched) instead of hammering ACS.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Acs(e) => e.is_retriable(),
            // The API server being unavailable or conflicting is transient; a 4xx is not.
            Error::Kube(kube::Error::Api(status)) => status.code == 409 || status.code >= 500,
            Error::Kube(_) | Error::Finalizer(_) => true,
            _ => false,
        }
    }

    /// A `Retry-After` from ACS, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Acs(AcsError::Throttled { retry_after, .. }) => *retry_after,
            _ => None,
        }
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
    fn categories_and_transience() {
        let cases: Vec<(Error, &str, bool)> = vec![
            (
                Error::ConnectionNotFound {
                    kind: "AcsConnection",
                    name: "a".into(),
                },
                "ConnectionNotFound",
                false,
            ),
            (Error::SecretConflict("s".into()), "SecretConflict", false),
            (
                Error::Acs(AcsError::Throttled {
                    retry_after: None,
                    error: svc(),
                }),
                "AcsThrottled",
                true,
            ),
            (
                Error::Acs(AcsError::Unauthorized {
                    status: 401,
                    error: svc(),
                }),
                "AcsUnauthorized",
                false,
            ),
            (
                Error::Acs(AcsError::Unavailable {
                    status: 503,
                    error: svc(),
                }),
                "AcsUnavailable",
                true,
            ),
            (
                Error::Acs(AcsError::Timeout(Duration::from_secs(1))),
                "AcsUnavailable",
                true,
            ),
            (
                Error::Acs(AcsError::Rejected {
                    status: 400,
                    error: svc(),
                }),
                "AcsRejected",
                false,
            ),
            (
                Error::IdentityNotFound {
                    id: "i".into(),
                    source: AcsError::NotFound(svc()),
                },
                "IdentityNotFound",
                false,
            ),
        ];
        for (error, category, transient) in cases {
            assert_eq!(error.category(), category, "{error}");
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }
}

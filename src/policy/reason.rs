//! Every reason the operator states: the Ready condition's `reason`, the Event `reason` and
//! the `category` label of the failure metrics are one vocabulary, this enum. A newcomer asks
//! "what does this reason mean?" and finds each variant's doc here and its row in README.md
//! (a test checks that README lists every one).

use std::fmt;

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The stable string used in conditions, Events and metric labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    // States of the token (Ready condition).
    /// The Secret holds a token for the current spec that is not yet due.
    TokenValid,
    /// Renewal is overdue or the token expired.
    Expired,
    /// Nothing issued yet.
    Pending,
    /// Waiting in line for ACS capacity (the connection's rate limit); the operator goes on
    /// when its turn comes (the Reconciling condition).
    InLine,
    /// A connection is usable as written (its Ready condition; no ACS call is made to check).
    Valid,

    // Successes (Normal Events).
    /// A new ACS identity was created, with its first token.
    IdentityCreated,
    /// A token was issued for a new reason (spec, connection, Secret or refresh).
    TokenIssued,
    /// A token was re-issued because the old one fell due or expired.
    TokenRenewed,
    /// The identity's tokens were revoked: during deletion, or for the revoke annotation.
    TokensRevoked,
    /// The ACS identity was deleted during deletion.
    IdentityDeleted,

    // Failures (Ready condition, Warning Events, failure metrics).
    /// The connection object or its Secret does not exist.
    ConnectionNotFound,
    /// A ClusterAcsConnection does not allow the identity's namespace.
    ConnectionNotAllowed,
    /// The connection Secret's key is missing or is not `endpoint=…;accesskey=…`.
    InvalidConnectionString,
    /// The connection's CA bundle is not PEM or holds no certificate.
    InvalidCaBundle,
    /// The connection cannot be used as written (both or neither authentication form, an
    /// endpoint that is not https).
    InvalidConnection,
    /// ACS's TLS certificate is not trusted by the system roots or the connection's CA bundle.
    AcsCertificateUntrusted,
    /// The connection's endpoint is not an ACS endpoint nor one the installer allowed
    /// (`--allowed-endpoints`): no request is sent to it.
    EndpointNotAllowed,
    /// A workload identity connection lacks a client or tenant id, or the token file.
    InvalidWorkloadIdentity,
    /// Entra ID gave no token for the workload identity.
    EntraTokenFailed,
    /// ACS refused the key or token (401/403).
    AcsUnauthorized,
    /// ACS answered 429.
    AcsThrottled,
    /// ACS answered 5xx, timed out or could not be reached.
    AcsUnavailable,
    /// The connection's ACS endpoint did not answer several calls in a row (connect or
    /// first-byte timeouts, failed connections): its calls are refused at once for a cooldown,
    /// then one is tried (the endpoint's circuit breaker).
    AcsCircuitOpen,
    /// ACS rejected the request (other 4xx).
    AcsRejected,
    /// ACS answered success with a body that is not what its API defines.
    AcsInvalidResponse,
    /// ACS does not know the identity.
    IdentityNotFound,
    /// A Secret of that name exists and is not owned by this AcsIdentity.
    SecretConflict,
    /// The spec cannot be carried out (e.g. a token lifetime ACS does not accept).
    InvalidSpec,
    /// The Kubernetes API server refused or failed a request.
    KubernetesError,
    /// `spec.identityId` through a ClusterAcsConnection that does not allow this namespace to
    /// adopt identities (`adoptionAllowedNamespaces`); also an Event when a deletion keeps an
    /// identity adopted that way.
    AdoptionNotAllowed,
    /// Another AcsIdentity in the cluster holds this ACS identity (which one is not said).
    IdentityClaimed,
    /// The namespace already has `maxIdentitiesPerNamespace` AcsIdentities on this
    /// ClusterAcsConnection.
    IdentityLimitReached,
    /// The ACS identity held lives on another ACS resource than the connection reaches now
    /// (`connectionRef` moved); also the Warning when a deletion keeps an identity because its
    /// connection no longer reaches where it lives.
    IdentityOnOtherResource,
    /// An identity held since the previous version, whose home cannot be told from its
    /// current connection (see README, "Upgrade").
    ProvenanceUnknown,
    /// ACS answered a create with an id that is not a new identity of the resource asked
    /// (malformed, of another resource, or held by another AcsIdentity there).
    ForeignIdentity,
    /// A deletion deleted the identity it created on a ClusterAcsConnection's resource
    /// although skip-cleanup or `deletionPolicy: Retain` asked to keep it.
    RetainNotAllowed,
    /// The namespace's AcsConnections already hold the most distinct clients the operator
    /// builds for one namespace (`--max-clients-per-namespace`).
    ConnectionLimitReached,

    // Restarts of the workloads that consume a renewed token (Events on the workload and on
    // its AcsIdentities, the AcsIdentity's WorkloadsRestarted condition).
    /// A consuming workload was restarted for its identities' renewed tokens (Normal Event).
    Restarted,
    /// Another field manager sets the restart annotation to another value: not fought over,
    /// not retried until the tokens change again.
    RestartConflict,
    /// The workload to restart is gone (or was made again under its name).
    RestartTargetMissing,
    /// The operator may not patch the workload (RBAC).
    RestartForbidden,
    /// The restart's write failed otherwise (the API server failed, timed out or could not be
    /// reached).
    RestartFailed,
    /// The workload's restart-on-renewal annotation is not understood.
    RestartAnnotationInvalid,

    // Notices about a connection's ACS resource (Warning Events, once).
    /// The resource refused the preview api-version of the idempotent create (`customId`):
    /// identities are created with the GA create from then on, their ids recorded in status
    /// before their tokens are stored.
    IdempotentCreateUnavailable,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_the_variant() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{r} twice");
            assert_eq!(format!("{r:?}"), r.as_str());
        }
    }

    /// README's tables are what users read; each reason the code can state must be there.
    #[test]
    fn readme_lists_every_reason() {
        let readme = include_str!("../../README.md");
        let missing: Vec<_> = Reason::ALL
            .iter()
            .filter(|r| !readme.contains(&format!("| `{r}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md has no table row for {missing:?}"
        );
    }
}

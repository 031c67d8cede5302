//! Entra workload identity configuration: whose service-account token a connection exchanges
//! ([`assertion_source`]: the operator pod's own for a ClusterAcsConnection, a ServiceAccount
//! of its own namespace for an AcsConnection), the spec merged with that ServiceAccount's
//! annotations and the pod's environment into a complete [`WorkloadIdentity`], and its
//! fingerprint. Pure apart from [`WorkloadIdentityDefaults::from_env`].
//!
//! Ambient credentials are the platform's: the pod's identity (what the AKS webhook injects)
//! is never used for a namespaced connection, whatever its spec says, and its client id is
//! never a default for one. A tenant's connection gets Entra tokens only for applications
//! federated with that tenant's own ServiceAccount.

use crate::acs::WorkloadIdentity;
use crate::acs::entra::DEFAULT_AUTHORITY_HOST;
use crate::acs::fingerprint::short_sha256_hex;
use crate::api::WorkloadIdentitySpec;
use crate::controller::error::Error;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The operator pod's Entra workload identity environment: defaults for every connection with
/// `workloadIdentity` (on AKS the workload identity webhook injects the `AZURE_*` variables).
/// Tests set the fields directly instead of touching the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadIdentityDefaults {
    /// `AZURE_CLIENT_ID`, when a connection names no clientId.
    pub client_id: Option<String>,
    /// `AZURE_TENANT_ID`, when a connection names no tenantId.
    pub tenant_id: Option<String>,
    /// `AZURE_FEDERATED_TOKEN_FILE`: the projected service-account token. Without it no
    /// workload identity connection can be used.
    pub token_file: Option<PathBuf>,
    /// `AZURE_AUTHORITY_HOST`; the public cloud's authority when absent.
    pub authority_host: Option<String>,
    /// PEM certificates to trust for the authority besides the system roots (read from the
    /// file named by `ACS_OPERATOR_AUTHORITY_CA_FILE`), e.g. a local emulator's CA.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl WorkloadIdentityDefaults {
    /// Names the environment variables read by [`Self::from_env`].
    pub const AUTHORITY_CA_FILE_ENV: &'static str = "ACS_OPERATOR_AUTHORITY_CA_FILE";

    /// Reads the `AZURE_*` variables (empty ones count as unset) and the authority CA file.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let extra_ca_pem = match var(Self::AUTHORITY_CA_FILE_ENV) {
            Some(path) => Some(
                std::fs::read(&path)
                    .map_err(|e| format!("{}={path}: {e}", Self::AUTHORITY_CA_FILE_ENV))?,
            ),
            None => None,
        };
        Ok(Self {
            client_id: var("AZURE_CLIENT_ID"),
            tenant_id: var("AZURE_TENANT_ID"),
            token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            authority_host: var("AZURE_AUTHORITY_HOST"),
            extra_ca_pem,
        })
    }
}

/// The annotation of a ServiceAccount naming its Entra application (the webhook's and ESO's).
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// The annotation of a ServiceAccount naming its Entra tenant.
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";

/// Whose service-account token a workload identity connection exchanges with Entra.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionSource {
    /// The operator pod's own (`AZURE_FEDERATED_TOKEN_FILE`): ClusterAcsConnections only.
    Pod,
    /// A token requested for this ServiceAccount of the AcsConnection's namespace.
    ServiceAccount { namespace: String, name: String },
}

/// Decides whose token a connection exchanges: `namespace` is the AcsConnection's, `None` for
/// a ClusterAcsConnection. One place for the rule "ambient credentials are the platform's".
pub fn assertion_source(
    namespace: Option<&str>,
    spec: &WorkloadIdentitySpec,
) -> Result<AssertionSource, Error> {
    let named = spec
        .service_account_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    match (namespace, named) {
        (None, None) => Ok(AssertionSource::Pod),
        (None, Some(_)) => Err(Error::WorkloadIdentity(
            "a ClusterAcsConnection uses the operator's own workload identity: remove spec.workloadIdentity.serviceAccountName (it is for AcsConnections)".into(),
        )),
        (Some(namespace), None) => Err(Error::WorkloadIdentity(format!(
            "an AcsConnection authenticates as a ServiceAccount of its own namespace: set spec.workloadIdentity.serviceAccountName to a ServiceAccount of {namespace} whose Entra application has a federated credential for it (the operator's own identity serves ClusterAcsConnections only)"
        ))),
        (Some(namespace), Some(name)) => Ok(AssertionSource::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }),
    }
}

/// The complete workload identity of a connection: its spec, with the ServiceAccount's
/// annotations (`annotations`, for [`AssertionSource::ServiceAccount`]) or the pod's client
/// id (for [`AssertionSource::Pod`]) filled in; the tenant may default to the pod's, the
/// client id of a ServiceAccount never does. Pure, so every missing piece has its own message.
pub fn workload_identity(
    spec: &WorkloadIdentitySpec,
    source: &AssertionSource,
    annotations: &BTreeMap<String, String>,
    defaults: &WorkloadIdentityDefaults,
    timeout: Duration,
) -> Result<WorkloadIdentity, Error> {
    let chosen = |choices: &[Option<&String>]| {
        choices
            .iter()
            .flatten()
            .map(|v| v.trim().to_string())
            .find(|v| !v.is_empty())
    };
    let (client_id, tenant_id, token_file) = match source {
        AssertionSource::Pod => {
            let missing = |what: &str, field: &str, env: &str| {
                Error::WorkloadIdentity(format!(
                    "no {what}: set spec.workloadIdentity.{field} or {env} on the operator"
                ))
            };
            let client_id = chosen(&[spec.client_id.as_ref(), defaults.client_id.as_ref()])
                .ok_or_else(|| missing("client id", "clientId", "AZURE_CLIENT_ID"))?;
            let tenant_id = chosen(&[spec.tenant_id.as_ref(), defaults.tenant_id.as_ref()])
                .ok_or_else(|| missing("tenant id", "tenantId", "AZURE_TENANT_ID"))?;
            let token_file = defaults.token_file.clone().ok_or_else(|| {
                Error::WorkloadIdentity(
                    "the operator has no federated token file (AZURE_FEDERATED_TOKEN_FILE): is workload identity enabled for its pod?"
                        .into(),
                )
            })?;
            (client_id, tenant_id, Some(token_file))
        }
        AssertionSource::ServiceAccount { namespace, name } => {
            let missing = |what: &str, field: &str, annotation: &str| {
                Error::WorkloadIdentity(format!(
                    "no {what}: set spec.workloadIdentity.{field} or the {annotation} annotation of ServiceAccount {namespace}/{name}"
                ))
            };
            let client_id = chosen(&[
                spec.client_id.as_ref(),
                annotations.get(CLIENT_ID_ANNOTATION),
            ])
            .ok_or_else(|| missing("client id", "clientId", CLIENT_ID_ANNOTATION))?;
            let tenant_id = chosen(&[
                spec.tenant_id.as_ref(),
                annotations.get(TENANT_ID_ANNOTATION),
                defaults.tenant_id.as_ref(),
            ])
            .ok_or_else(|| missing("tenant id", "tenantId", TENANT_ID_ANNOTATION))?;
            (client_id, tenant_id, None)
        }
    };
    Ok(WorkloadIdentity {
        tenant_id,
        client_id,
        token_file,
        authority_host: authority_host(defaults)?,
        extra_ca_pem: defaults.extra_ca_pem.clone(),
        timeout,
    })
}

fn authority_host(defaults: &WorkloadIdentityDefaults) -> Result<Url, Error> {
    let authority = defaults
        .authority_host
        .as_deref()
        .unwrap_or(DEFAULT_AUTHORITY_HOST);
    Url::parse(authority)
        .ok()
        .filter(|u| u.scheme() == "https")
        .ok_or_else(|| {
            Error::WorkloadIdentity(format!(
                "authority host (AZURE_AUTHORITY_HOST) {authority:?} is not an https URL"
            ))
        })
}

/// Fingerprint of endpoint, tenant and client id: another identity (or resource) means other
/// tokens. Domain-separated from the connection string fingerprint.
pub fn workload_identity_fingerprint(endpoint: &Url, identity: &WorkloadIdentity) -> String {
    short_sha256_hex(&[
        b"workload-identity",
        endpoint.as_str().as_bytes(),
        identity.tenant_id.as_bytes(),
        identity.client_id.as_bytes(),
    ])
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn wi(client: Option<&str>, tenant: Option<&str>) -> WorkloadIdentitySpec {
        WorkloadIdentitySpec {
            client_id: client.map(Into::into),
            tenant_id: tenant.map(Into::into),
            service_account_name: None,
        }
    }

    pub fn pod_env() -> WorkloadIdentityDefaults {
        WorkloadIdentityDefaults {
            client_id: Some("pod-client".into()),
            tenant_id: Some("pod-tenant".into()),
            token_file: Some("/var/run/secrets/azure/tokens/azure-identity-token".into()),
            authority_host: Some("https://login.example/".into()),
            extra_ca_pem: None,
        }
    }

    #[test]
    fn workload_identity_spec_wins_over_the_pod_defaults() {
        let t = Duration::from_secs(3);
        let from_pod = workload_identity(
            &wi(None, None),
            &AssertionSource::Pod,
            &BTreeMap::new(),
            &pod_env(),
            t,
        )
        .unwrap();
        assert_eq!(
            (from_pod.client_id.as_str(), from_pod.tenant_id.as_str()),
            ("pod-client", "pod-tenant")
        );
        assert_eq!(from_pod.authority_host.as_str(), "https://login.example/");
        assert_eq!(from_pod.timeout, t);
        let from_spec = workload_identity(
            &wi(Some("c"), Some("t")),
            &AssertionSource::Pod,
            &BTreeMap::new(),
            &pod_env(),
            t,
        )
        .unwrap();
        assert_eq!(
            (from_spec.client_id.as_str(), from_spec.tenant_id.as_str()),
            ("c", "t")
        );
        let public = WorkloadIdentityDefaults {
            authority_host: None,
            ..pod_env()
        };
        assert_eq!(
            workload_identity(
                &wi(None, None),
                &AssertionSource::Pod,
                &BTreeMap::new(),
                &public,
                t
            )
            .unwrap()
            .authority_host
            .as_str(),
            "https://login.microsoftonline.com/"
        );
    }

    #[test]
    fn incomplete_workload_identities_say_what_is_missing() {
        let t = Duration::from_secs(3);
        let cases = [
            (
                WorkloadIdentityDefaults {
                    client_id: None,
                    ..pod_env()
                },
                "AZURE_CLIENT_ID",
            ),
            (
                WorkloadIdentityDefaults {
                    tenant_id: Some(" ".into()),
                    ..pod_env()
                },
                "AZURE_TENANT_ID",
            ),
            (
                WorkloadIdentityDefaults {
                    token_file: None,
                    ..pod_env()
                },
                "AZURE_FEDERATED_TOKEN_FILE",
            ),
            (
                WorkloadIdentityDefaults {
                    authority_host: Some("http://login.example/".into()),
                    ..pod_env()
                },
                "not an https URL",
            ),
        ];
        for (defaults, expected) in cases {
            let error = workload_identity(
                &wi(None, None),
                &AssertionSource::Pod,
                &BTreeMap::new(),
                &defaults,
                t,
            )
            .unwrap_err();
            assert_eq!(
                error.reason(),
                crate::policy::Reason::InvalidWorkloadIdentity
            );
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn workload_identity_fingerprint_changes_with_endpoint_tenant_or_client() {
        let t = Duration::from_secs(3);
        let a = workload_identity(
            &wi(Some("c"), Some("t")),
            &AssertionSource::Pod,
            &BTreeMap::new(),
            &pod_env(),
            t,
        )
        .unwrap();
        let b = workload_identity(
            &wi(Some("c2"), Some("t")),
            &AssertionSource::Pod,
            &BTreeMap::new(),
            &pod_env(),
            t,
        )
        .unwrap();
        let c = workload_identity(
            &wi(Some("c"), Some("t2")),
            &AssertionSource::Pod,
            &BTreeMap::new(),
            &pod_env(),
            t,
        )
        .unwrap();
        let e1 = Url::parse("https://one/").unwrap();
        let e2 = Url::parse("https://two/").unwrap();
        let f = workload_identity_fingerprint(&e1, &a);
        assert_eq!(f.len(), 16);
        assert_eq!(f, workload_identity_fingerprint(&e1, &a.clone()));
        assert_ne!(f, workload_identity_fingerprint(&e1, &b));
        assert_ne!(f, workload_identity_fingerprint(&e1, &c));
        assert_ne!(f, workload_identity_fingerprint(&e2, &a));
    }

    fn named(account: Option<&str>) -> WorkloadIdentitySpec {
        WorkloadIdentitySpec {
            service_account_name: account.map(Into::into),
            ..wi(None, None)
        }
    }

    #[test]
    fn only_cluster_connections_use_the_pods_identity() {
        let b = Some("team-b");
        let account = |name: &str| AssertionSource::ServiceAccount {
            namespace: "team-b".into(),
            name: name.into(),
        };
        let cases: [(
            Option<&str>,
            WorkloadIdentitySpec,
            Result<AssertionSource, &str>,
        ); 5] = [
            (None, named(None), Ok(AssertionSource::Pod)),
            (
                None,
                named(Some("acs")),
                Err("remove spec.workloadIdentity.serviceAccountName"),
            ),
            (b, named(Some("acs")), Ok(account("acs"))),
            (
                b,
                named(None),
                Err("set spec.workloadIdentity.serviceAccountName to a ServiceAccount of team-b"),
            ),
            (
                b,
                named(Some(" ")),
                Err("set spec.workloadIdentity.serviceAccountName"),
            ),
        ];
        for (namespace, spec, expected) in cases {
            let got = assertion_source(namespace, &spec);
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected),
                (Err(error), Err(message)) => {
                    assert_eq!(
                        error.reason(),
                        crate::policy::Reason::InvalidWorkloadIdentity
                    );
                    assert!(error.to_string().contains(message), "{error}");
                }
                (got, expected) => panic!("{namespace:?} {spec:?}: {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_service_accounts_identity_never_defaults_to_the_pods_client() {
        let t = Duration::from_secs(3);
        let source = AssertionSource::ServiceAccount {
            namespace: "team-b".into(),
            name: "acs".into(),
        };
        let annotations: BTreeMap<String, String> = [
            (CLIENT_ID_ANNOTATION.to_string(), "b-app".to_string()),
            (TENANT_ID_ANNOTATION.to_string(), "b-tenant".to_string()),
        ]
        .into();
        let from_annotations =
            workload_identity(&wi(None, None), &source, &annotations, &pod_env(), t).unwrap();
        assert_eq!(
            (
                from_annotations.client_id.as_str(),
                from_annotations.tenant_id.as_str()
            ),
            ("b-app", "b-tenant")
        );
        assert_eq!(
            from_annotations.token_file, None,
            "the pod's file is not read"
        );
        let from_spec = workload_identity(
            &wi(Some("c"), Some("t")),
            &source,
            &annotations,
            &pod_env(),
            t,
        )
        .unwrap();
        assert_eq!(
            (from_spec.client_id.as_str(), from_spec.tenant_id.as_str()),
            ("c", "t")
        );
        // No annotation, no clientId: refused, although the pod has AZURE_CLIENT_ID.
        let error = workload_identity(&wi(None, None), &source, &BTreeMap::new(), &pod_env(), t)
            .unwrap_err();
        assert_eq!(
            error.reason(),
            crate::policy::Reason::InvalidWorkloadIdentity
        );
        assert!(
            error.to_string().contains(
                "set spec.workloadIdentity.clientId or the azure.workload.identity/client-id annotation of ServiceAccount team-b/acs"
            ),
            "{error}"
        );
        // The tenant may come from the pod (one directory); the client never does.
        let tenant_from_pod = workload_identity(
            &wi(Some("c"), None),
            &source,
            &BTreeMap::new(),
            &pod_env(),
            t,
        )
        .unwrap();
        assert_eq!(tenant_from_pod.tenant_id, "pod-tenant");
    }
}

//! The client assertion of a namespaced connection's workload identity: a token of the
//! ServiceAccount it names, requested from the API server (TokenRequest, audience
//! `api://AzureADTokenExchange`, the shortest lifetime the API server allows) each time the
//! credential asks Entra for a token, that is about once an hour per connection (the
//! credential caches Entra's token until 5 minutes before its expiry). The token is handed to
//! `azure_identity` and never kept, logged or written anywhere.

use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, StatusCode};
use azure_identity::ClientAssertion;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};
use std::fmt;

/// The audience Entra expects of a federated assertion.
pub const AUDIENCE: &str = "api://AzureADTokenExchange";

/// Lifetime asked of each token: the API server's minimum (10 minutes). The token is used
/// once, at once.
pub const TOKEN_SECONDS: i64 = 600;

/// Requests tokens of ServiceAccount `namespace`/`name`.
#[derive(Clone)]
pub struct ServiceAccountAssertion {
    client: Client,
    namespace: String,
    name: String,
}

impl ServiceAccountAssertion {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Debug for ServiceAccountAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountAssertion")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ClientAssertion for ServiceAccountAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![AUDIENCE.to_string()]),
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: None,
            }),
            ..TokenRequest::default()
        };
        let what = format!(
            "TokenRequest for ServiceAccount {}/{}",
            self.namespace, self.name
        );
        match api
            .create_token_request(&self.name, &PostParams::default(), &request)
            .await
        {
            Ok(answer) => answer
                .status
                .and_then(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    azure_core::Error::with_message(
                        ErrorKind::DataConversion,
                        format!("{what}: the answer holds no token"),
                    )
                }),
            // The API server's refusal (404: no such ServiceAccount, 403: the operator may not
            // ask) is an answer like Entra's own: classified by its status.
            Err(kube::Error::Api(status)) => Err(azure_core::Error::with_message(
                ErrorKind::HttpResponse {
                    status: StatusCode::from(status.code),
                    error_code: Some(status.reason.clone()),
                    raw_response: None,
                },
                format!("{what}: {}", status.message),
            )),
            Err(other) => Err(azure_core::Error::with_message(
                ErrorKind::Io,
                format!("{what}: {other}"),
            )),
        }
    }
}

//! Entra ID (Azure AD) bearer credentials for ACS, from the official `azure_identity` crate.
//!
//! [`WorkloadIdentity::credential`] builds `azure_identity::WorkloadIdentityCredential` with
//! every input given explicitly (tenant, client id, token file, authority), and
//! [`WorkloadIdentity::credential_with_assertion`] a `ClientAssertionCredential` whose
//! assertion comes from elsewhere (a TokenRequest for a tenant's ServiceAccount), so nothing here
//! reads the process environment, and with our own HTTP transport: the crate's token requests
//! go through the same reqwest/rustls(ring) stack as the ACS calls, trusting the same kind of
//! extra CA bundle. That is how an emulated authority with a private CA is trusted, and why the
//! crate's own reqwest 0.13 (rustls with aws-lc-rs) is not compiled in.
//!
//! Token caching is the crate's: a token is reused until 5 minutes before it expires, per
//! credential and scope set, and the federated token file is re-read when the cached
//! assertion is older than 10 minutes (kubelet rotates it). The crate's own retries are off:
//! like the ACS calls, a failed token request is reported at once and the caller (the
//! reconcile's backoff) decides when to try again.

use super::AcsError;
use super::client::http_client;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{
    AsyncRawResponse, Body, ClientOptions, HttpClient, Request, RetryOptions, StatusCode, Transport,
};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The token scope of every ACS data-plane call (the double slash is intentional: resource
/// `https://communication.azure.com/` plus `/.default`).
pub const ACS_SCOPE: &str = "https://communication.azure.com//.default";

/// The public cloud's authority, used when `AZURE_AUTHORITY_HOST` is not set.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// Everything a workload identity credential needs, resolved by the caller (from a spec, a
/// ServiceAccount and the pod's `AZURE_*` environment). Holds no secret: the token file is read
/// by the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentity {
    pub tenant_id: String,
    pub client_id: String,
    /// The projected service-account token (`AZURE_FEDERATED_TOKEN_FILE`) of the operator pod,
    /// for [`Self::credential`]; `None` when the assertion comes from elsewhere
    /// ([`Self::credential_with_assertion`]).
    pub token_file: Option<PathBuf>,
    /// `AZURE_AUTHORITY_HOST`; must be https.
    pub authority_host: Url,
    /// Extra PEM certificates to trust for the authority besides the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Upper bound of one token request.
    pub timeout: Duration,
}

impl WorkloadIdentity {
    /// Builds the credential of the pod's token file. Reads the file once (it must exist);
    /// makes no request.
    pub fn credential(&self) -> Result<Arc<dyn TokenCredential>, AcsError> {
        let client_options = self.client_options()?;
        let token_file = self
            .token_file
            .clone()
            .ok_or_else(|| AcsError::Config("no federated token file".into()))?;
        let options = WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options },
            client_id: Some(self.client_id.clone()),
            tenant_id: Some(self.tenant_id.clone()),
            token_file_path: Some(token_file),
        };
        let credential = WorkloadIdentityCredential::new(Some(options))
            .map_err(|e| AcsError::Config(one_line(&e.to_string())))?;
        Ok(credential)
    }

    /// Builds a credential that exchanges the assertions `assertion` supplies (asked for each
    /// Entra token request, that is when the cached Entra token is within 5 minutes of its
    /// expiry). Makes no request.
    pub fn credential_with_assertion<A: ClientAssertion + 'static>(
        &self,
        assertion: A,
    ) -> Result<Arc<dyn TokenCredential>, AcsError> {
        let client_options = self.client_options()?;
        let credential = ClientAssertionCredential::new(
            self.tenant_id.clone(),
            self.client_id.clone(),
            assertion,
            Some(ClientAssertionCredentialOptions { client_options }),
        )
        .map_err(|e| AcsError::Config(one_line(&e.to_string())))?;
        Ok(credential)
    }

    fn client_options(&self) -> Result<ClientOptions, AcsError> {
        if self.authority_host.scheme() != "https" {
            return Err(AcsError::Config(format!(
                "authority host {} is not https",
                self.authority_host
            )));
        }
        if self.client_id.trim().is_empty() {
            return Err(AcsError::Config("empty client id".into()));
        }
        // Entra's connect bound as before the ACS calls had their own: at most 10 s.
        let connect = self.timeout.min(std::time::Duration::from_secs(10));
        let http = http_client(self.timeout, connect, self.extra_ca_pem.as_deref())?;
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = self
            .authority_host
            .as_str()
            .trim_end_matches('/')
            .to_string();
        Ok(ClientOptions {
            transport: Some(Transport::new(Arc::new(ReqwestTransport(http)))),
            cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        })
    }
}

/// Classifies a failed `get_token`: an answer of the authority in 4xx (other than 408/429)
/// means it refused this identity, which retrying will not change; anything else (no answer,
/// 5xx, throttling) may pass later.
pub fn credential_error(error: &azure_core::Error) -> AcsError {
    let status = authority_status(error);
    let retriable = match status {
        Some(status) => status == 408 || status == 429 || status >= 500,
        None => true,
    };
    AcsError::Credential {
        retriable,
        message: one_line(&error.to_string()),
    }
}

/// The HTTP status the authority answered with, found anywhere in the error's chain (the
/// crate wraps the HTTP error in a credential error).
fn authority_status(error: &azure_core::Error) -> Option<u16> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(ErrorKind::HttpResponse { status, .. }) =
            e.downcast_ref::<azure_core::Error>().map(|e| e.kind())
        {
            return Some(u16::from(*status));
        }
        current = e.source();
    }
    None
}

/// The crate's messages end in a troubleshooting link on its own line; conditions and Events
/// read better on one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `azure_core`'s transport over our reqwest client. The crate's token requests are small
/// form posts with small JSON answers, so bodies are sent and read whole.
#[derive(Debug)]
struct ReqwestTransport(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| azure_core::Error::with_error(ErrorKind::Other, e, "HTTP method"))?;
        let Body::Bytes(body) = request.body() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "streamed request bodies are not supported by this transport",
            ));
        };
        let mut builder = self
            .0
            .request(method, request.url().clone())
            .body(body.clone());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            azure_core::Error::with_error(kind, e, "token request failed")
        })?;
        let status = StatusCode::from(response.status().as_u16());
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(value.to_owned()),
                );
            }
        }
        let bytes = super::client::read_capped(response)
            .await
            .map_err(|e| match e {
                super::client::BodyError::TooLarge => azure_core::Error::with_message(
                    ErrorKind::DataConversion,
                    "the token response is larger than 1 MiB",
                ),
                super::client::BodyError::Transport(e) => azure_core::Error::with_error(
                    ErrorKind::Io,
                    e,
                    "reading the token response failed",
                ),
            })?;
        Ok(AsyncRawResponse::from_bytes(status, headers, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn identity(token_file: PathBuf) -> WorkloadIdentity {
        WorkloadIdentity {
            tenant_id: "11111111-2222-3333-4444-555555555555".into(),
            client_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            token_file: Some(token_file),
            authority_host: Url::parse(DEFAULT_AUTHORITY_HOST).unwrap(),
            extra_ca_pem: None,
            timeout: Duration::from_secs(5),
        }
    }

    fn token_file() -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig\n")
            .unwrap();
        file
    }

    #[test]
    fn builds_from_explicit_settings_without_a_request() {
        let file = token_file();
        assert!(identity(file.path().into()).credential().is_ok());
    }

    #[test]
    fn refuses_plain_http_authorities_and_missing_token_files() {
        let file = token_file();
        let mut http = identity(file.path().into());
        http.authority_host = Url::parse("http://127.0.0.1:1/").unwrap();
        assert!(matches!(http.credential(), Err(AcsError::Config(m)) if m.contains("not https")));
        let missing = identity("/nonexistent/azure-identity-token".into());
        assert!(matches!(missing.credential(), Err(AcsError::Config(m)) if m.contains("token")));
        let mut bad_tenant = identity(file.path().into());
        bad_tenant.tenant_id = "not a tenant!".into();
        assert!(matches!(bad_tenant.credential(), Err(AcsError::Config(_))));
    }

    #[test]
    fn refused_identities_are_permanent_and_unreachable_authorities_transient() {
        let refused = azure_core::Error::new(
            ErrorKind::HttpResponse {
                status: StatusCode::from(400),
                error_code: Some("700211".into()),
                raw_response: None,
            },
            "AADSTS700211: No matching federated identity record found.",
        );
        let wrapped = azure_core::Error::with_error(
            ErrorKind::Credential,
            refused,
            "WorkloadIdentityCredential authentication failed.\nTo troubleshoot, visit x",
        );
        let error = credential_error(&wrapped);
        assert!(!error.is_retriable(), "{error}");
        assert!(!error.to_string().contains('\n'));
        for status in [429, 503] {
            let busy = azure_core::Error::new(
                ErrorKind::HttpResponse {
                    status: StatusCode::from(status),
                    error_code: None,
                    raw_response: None,
                },
                "busy",
            );
            assert!(credential_error(&busy).is_retriable(), "{status}");
        }
        let unreachable = azure_core::Error::with_message(ErrorKind::Connection, "refused");
        assert!(credential_error(&unreachable).is_retriable());
    }
}

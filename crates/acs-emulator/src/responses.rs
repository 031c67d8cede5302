//! How the emulator answers: ACS error bodies (`{"error":{"code","message","target"?}}`) and
//! the headers the real service puts on every data-plane response.

use acs_client::model::{ErrorBody, ErrorResponse, SUPPORTED_API_VERSIONS};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;
use std::time::Duration;

pub type HttpResponse = Response<Full<Bytes>>;

/// Success bodies carry a charset, error bodies do not (as recorded from the service).
const JSON_UTF8: &str = "application/json; charset=utf-8";
const JSON: &str = "application/json";

/// An error the emulator answers with, in the service's shape (status, `error.code`,
/// `error.message`, optional `error.target` and `Retry-After`). Not the client's
/// [`acs_client::AcsError`], which is what a client makes of such an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub target: Option<&'static str>,
    pub retry_after_seconds: Option<u64>,
}

impl ErrorReply {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            target: None,
            retry_after_seconds: None,
        }
    }

    pub fn with_target(mut self, target: &'static str) -> Self {
        self.target = Some(target);
        self
    }

    pub fn with_retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after_seconds = seconds;
        self
    }

    /// 400 `ValidationError`, the code the service uses for every bad request body.
    pub fn validation(message: impl Into<String>, target: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message).with_target(target)
    }

    /// 400 for a body that is not JSON of the expected shape. Code chosen by the emulator.
    pub fn malformed_body(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            format!("The request body is not valid JSON for this operation: {reason}"),
        )
    }

    /// 401 `Denied`: bad signature, body hash, date or missing headers.
    pub fn denied(reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Denied", reason.to_string())
    }

    /// 404 for an unknown or deleted identity. Code and message chosen by the emulator: neither
    /// the service's documentation nor any captured answer shows the service's body here.
    pub fn identity_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "IdentityNotFound",
            format!("Identity '{id}' was not found."),
        )
    }

    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No resource matches {method} {path}."),
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            format!("The request body exceeds {limit} bytes."),
        )
    }

    pub fn to_response(&self) -> HttpResponse {
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message.clone(),
                target: self.target.map(str::to_string),
            },
        };
        let mut response = json(self.status, &body, JSON);
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A success body: `Content-Type: application/json; charset=utf-8`.
pub fn success_json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    json(status, body, JSON_UTF8)
}

/// A success without body (204).
pub fn no_content() -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// An admin API answer.
pub fn admin_json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    json(status, body, JSON)
}

fn json(status: StatusCode, body: &impl Serialize, content_type: &'static str) -> HttpResponse {
    // Our bodies are maps of strings and numbers; serializing them cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Adds the service's data-plane headers: `api-supported-versions`, `MS-CV`,
/// `X-Processing-Time`, `Request-Context`, and the caller's `x-ms-client-request-id` echoed.
pub fn add_service_headers(
    response: &mut HttpResponse,
    client_request_id: Option<&HeaderValue>,
    elapsed: Duration,
) {
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("api-supported-versions"),
        HeaderValue::from_str(&SUPPORTED_API_VERSIONS.join(", "))
            .unwrap_or(HeaderValue::from_static("")),
    );
    if let Ok(cv) = HeaderValue::from_str(&correlation_vector()) {
        headers.insert(HeaderName::from_static("ms-cv"), cv);
    }
    if let Ok(time) = HeaderValue::from_str(&format!("{}ms", elapsed.as_millis())) {
        headers.insert(HeaderName::from_static("x-processing-time"), time);
    }
    headers.insert(
        HeaderName::from_static("request-context"),
        HeaderValue::from_static("appId="),
    );
    if let Some(id) = client_request_id {
        headers.insert(
            HeaderName::from_static("x-ms-client-request-id"),
            id.clone(),
        );
    }
}

/// An `MS-CV` value shaped like the service's: 22 base64 characters and `.0`.
fn correlation_vector() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    format!("{encoded}.0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: HttpResponse) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn error_body_has_the_service_shape() {
        let error = ErrorReply::validation(
            "ExpiresInMinutes value 59 is invalid. Value must be within the [60, 1440] interval.",
            "ExpiresInMinutes",
        );
        let response = error.to_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"error": {
                "code": "ValidationError",
                "message": "ExpiresInMinutes value 59 is invalid. Value must be within the [60, 1440] interval.",
                "target": "ExpiresInMinutes"
            }})
        );
    }

    #[tokio::test]
    async fn target_is_omitted_when_absent_and_retry_after_is_a_header() {
        let response = ErrorReply::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "slow")
            .with_retry_after(Some(7))
            .to_response();
        assert_eq!(response.headers()[RETRY_AFTER], "7");
        let json = body_json(response).await;
        assert!(json["error"].get("target").is_none());
    }

    #[test]
    fn service_headers_echo_the_request_id() {
        let mut response = no_content();
        let id = HeaderValue::from_static("11039838-e65f-11f1-bfb3-02fc00000001");
        add_service_headers(&mut response, Some(&id), Duration::from_millis(3));
        let headers = response.headers();
        assert_eq!(headers["x-ms-client-request-id"], id);
        assert_eq!(headers["x-processing-time"], "3ms");
        assert!(
            headers["api-supported-versions"]
                .to_str()
                .unwrap()
                .contains("2023-10-01")
        );
        let cv = headers["ms-cv"].to_str().unwrap();
        assert_eq!(cv.len(), 24, "{cv}");
        assert!(cv.ends_with(".0"));
    }
}

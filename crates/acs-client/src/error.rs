//! Typed ACS failures: what went wrong, and whether trying again can help.

use super::model::{ErrorBody, ErrorResponse};
use std::fmt;
use std::time::Duration;

/// The `error` object of an ACS error response (or what could be salvaged of a non-JSON body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub code: String,
    pub message: String,
    pub target: Option<String>,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code.is_empty(), &self.target) {
            (true, _) => f.write_str(&self.message),
            (false, Some(target)) => write!(f, "{}: {} (target {target})", self.code, self.message),
            (false, None) => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl ServiceError {
    /// Reads an error body. Only ACS's own error shape with a well-formed code is shown (each
    /// piece bounded); any other body, which may be an internal service's page, becomes the
    /// status's fixed description and is not repeated: conditions and Events are read by the
    /// tenant who chose the endpoint.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorResponse>(body) {
            Ok(ErrorResponse {
                error:
                    ErrorBody {
                        code,
                        message,
                        target,
                    },
            }) if is_error_code(&code) => Self {
                code,
                message: excerpt(&message),
                target: target.as_deref().map(excerpt),
            },
            _ => Self {
                code: String::new(),
                message: not_acs_error(status, body.len()),
                target: None,
            },
        }
    }
}

/// An ACS error code as the service writes them (`Unauthorized`, `IdentityNotFound`,
/// `ValidationError`): a short identifier, nothing else.
fn is_error_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What is said of an error body that is not ACS's: the status's name and the body's size.
fn not_acs_error(status: u16, len: usize) -> String {
    let name = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unknown status");
    if len == 0 {
        format!("{name} (empty body)")
    } else {
        format!("{name} (a {len}-byte body that is not an ACS error; not shown)")
    }
}

/// Most bytes of one piece of a server's answer kept in an error: its text goes into a
/// condition, an Event and a log line, and a hostile server must not make those big.
pub const MAX_EXCERPT: usize = 200;

/// At most [`MAX_EXCERPT`] bytes of `text`, cut at a character boundary and marked with `…`
/// when cut.
pub fn excerpt(text: &str) -> String {
    if text.len() <= MAX_EXCERPT {
        return text.to_string();
    }
    let mut end = MAX_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[derive(Debug, thiserror::Error)]
pub enum AcsError {
    /// 404: the identity is unknown to ACS (never existed, or deleted).
    #[error("ACS identity not found (HTTP 404): {0}")]
    NotFound(ServiceError),
    /// 429: over the resource's rate limit; `retry_after` from the `Retry-After` header.
    #[error("ACS throttled the request (HTTP 429){}", retry_after_suffix(.retry_after))]
    Throttled {
        retry_after: Option<Duration>,
        error: ServiceError,
    },
    /// 401/403: the key or token is wrong, or lacks permission. Retrying will not help.
    #[error("ACS refused the credentials (HTTP {status}): {error}")]
    Unauthorized { status: u16, error: ServiceError },
    /// Any other 4xx: the request itself is wrong (validation errors and the like).
    #[error("ACS rejected the request (HTTP {status}): {error}")]
    Rejected { status: u16, error: ServiceError },
    /// 5xx or 408: the service is failing; another attempt later may succeed.
    #[error("ACS is unavailable (HTTP {status}): {error}")]
    Unavailable { status: u16, error: ServiceError },
    /// No answer in time; `phase` says which bound was passed (never what the server sent).
    #[error("{}", phase.describe(*after))]
    Timeout {
        phase: TimeoutPhase,
        after: Duration,
    },
    #[error("could not reach ACS: {0}")]
    Transport(String),
    /// The TLS handshake failed because the server's certificate is not trusted (unknown
    /// issuer, expired, wrong name). Retrying cannot help; the connection's CA must change.
    #[error(
        "ACS's TLS certificate is not trusted ({0}): if the endpoint uses a private CA, put \
         that CA in the connection's caBundle or caSecretRef"
    )]
    UntrustedCertificate(String),
    /// A success status with a body that is not what the API defines.
    #[error("unexpected ACS response: {0}")]
    InvalidResponse(String),
    /// An argument the service would reject anyway, caught before sending.
    #[error("invalid ACS request: {0}")]
    InvalidRequest(String),
    /// The CA bundle given for the connection is not PEM or holds no certificate.
    #[error("invalid CA bundle: {0}")]
    InvalidCaBundle(String),
    /// The client could not be built as configured (e.g. bearer authentication over http).
    #[error("invalid ACS client configuration: {0}")]
    Config(String),
    /// No Entra ID token for the bearer credential: the authority refused the workload
    /// identity (`retriable: false`), or could not be reached or failed (`retriable: true`).
    /// ACS was not called.
    #[error("could not get an Entra ID token for ACS: {message}")]
    Credential { retriable: bool, message: String },
}

/// What an [`AcsError`] means to its callers: the one classification of each variant, made by
/// the exhaustive match in [`AcsError::class`], so a new variant does not compile until it is
/// given its standing and its metric label. (What it means to a user, its `Reason`, is the
/// operator's to choose: `controller::Error::class`, also without a catch-all arm.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcsClass {
    /// Whether the same call may succeed if tried again later, unchanged.
    pub retriable: bool,
    /// Whether the endpoint gave no (whole) answer: a timeout of any phase, or a failed
    /// connection. What an endpoint's circuit breaker counts.
    pub unreachable: bool,
    /// The `code` label of the ACS request metrics.
    pub code: MetricCode,
}

/// The `code` label of a failed ACS request: the HTTP status ACS answered with, or, when it
/// gave no answer to classify by status, the kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricCode {
    Status(u16),
    Kind(&'static str),
}

impl fmt::Display for MetricCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricCode::Status(status) => write!(f, "{status}"),
            MetricCode::Kind(kind) => f.write_str(kind),
        }
    }
}

impl AcsError {
    /// The one classification of this error (see [`AcsClass`]). No catch-all arm.
    pub fn class(&self) -> AcsClass {
        use MetricCode::{Kind, Status};
        let (retriable, unreachable, code) = match self {
            AcsError::NotFound(_) => (false, false, Status(404)),
            AcsError::Throttled { .. } => (true, false, Status(429)),
            AcsError::Unauthorized { status, .. } | AcsError::Rejected { status, .. } => {
                (false, false, Status(*status))
            }
            AcsError::Unavailable { status, .. } => (true, false, Status(*status)),
            AcsError::Timeout { .. } => (true, true, Kind("timeout")),
            AcsError::Transport(_) => (true, true, Kind("transport")),
            AcsError::UntrustedCertificate(_) => (false, false, Kind("untrusted_certificate")),
            AcsError::InvalidResponse(_) => (false, false, Kind("invalid_response")),
            AcsError::InvalidRequest(_) => (false, false, Kind("invalid_request")),
            AcsError::InvalidCaBundle(_) | AcsError::Config(_) => (false, false, Kind("error")),
            AcsError::Credential { retriable, .. } => (*retriable, false, Kind("error")),
        };
        AcsClass {
            retriable,
            unreachable,
            code,
        }
    }

    /// Whether the same call may succeed if tried again later, unchanged.
    pub fn is_retriable(&self) -> bool {
        self.class().retriable
    }

    /// Whether the endpoint gave no (whole) answer: a timeout of any phase, or a failed
    /// connection. What an endpoint's circuit breaker counts.
    pub fn is_unreachable(&self) -> bool {
        self.class().unreachable
    }

    /// The HTTP status ACS answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self.class().code {
            MetricCode::Status(status) => Some(status),
            MetricCode::Kind(_) => None,
        }
    }

    /// The ACS `error.code`, if the service sent one.
    pub fn service_code(&self) -> Option<&str> {
        let error = match self {
            AcsError::NotFound(error)
            | AcsError::Throttled { error, .. }
            | AcsError::Unauthorized { error, .. }
            | AcsError::Rejected { error, .. }
            | AcsError::Unavailable { error, .. } => error,
            _ => return None,
        };
        (!error.code.is_empty()).then_some(error.code.as_str())
    }

    /// Classifies a non-success response.
    pub fn from_response(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let error = ServiceError::from_body(status, body);
        match status {
            404 => AcsError::NotFound(error),
            429 => AcsError::Throttled { retry_after, error },
            401 | 403 => AcsError::Unauthorized { status, error },
            408 | 500..=599 => AcsError::Unavailable { status, error },
            _ => AcsError::Rejected { status, error },
        }
    }
}

/// Which bound of a call was passed. Connecting and the first byte of the answer have bounds
/// of their own, shorter than the whole call's: an endpoint that accepts and never answers
/// is found out long before the call's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// The TCP (and TLS) connection was not made in time.
    Connect,
    /// Connected and sent, but no answer began in time.
    FirstByte,
    /// The whole call (an answer that began and did not finish).
    Whole,
}

impl TimeoutPhase {
    fn describe(self, after: Duration) -> String {
        match self {
            TimeoutPhase::Connect => format!("could not connect to ACS within {after:?}"),
            TimeoutPhase::FirstByte => {
                format!("ACS accepted the connection but did not begin to answer within {after:?}")
            }
            TimeoutPhase::Whole => format!("ACS did not finish answering within {after:?}"),
        }
    }
}

/// `error` and its sources, for the operator's log.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A request that got no answer, as a class of failure that names no peer: which address
/// refused, what a TLS certificate names or what a proxy wrote stay in the operator's log.
pub(crate) fn network_failure(error: &(dyn std::error::Error + 'static)) -> AcsError {
    let mut source = Some(error);
    let mut class = None;
    while let Some(cause) = source {
        if let Some(tls) = rustls_error(cause) {
            return match tls {
                rustls::Error::InvalidCertificate(why) => {
                    AcsError::UntrustedCertificate(certificate_problem(why).into())
                }
                _ => AcsError::Transport("the TLS handshake failed".into()),
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            class = class.or(match io.kind() {
                ConnectionRefused => Some("the connection was refused"),
                TimedOut => Some("connecting timed out"),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    Some("the connection was closed before the answer")
                }
                HostUnreachable | NetworkUnreachable | AddrNotAvailable => {
                    Some("the host is unreachable")
                }
                _ => None,
            });
        }
        source = cause.source();
    }
    let class = class.unwrap_or_else(|| match error.downcast_ref::<reqwest::Error>() {
        Some(e) if e.is_connect() => "could not connect (name resolution or network)",
        Some(e) if e.is_body() || e.is_decode() => "the answer broke off",
        _ => "the request failed (not an HTTP answer)",
    });
    AcsError::Transport(class.into())
}

/// Why a certificate is not trusted, in fixed words: rustls's own text may carry the names
/// the server's certificate presents.
fn certificate_problem(error: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError::*;
    match error {
        UnknownIssuer => "issued by a CA that is not trusted",
        Expired | ExpiredContext { .. } => "expired",
        NotValidYet | NotValidYetContext { .. } => "not valid yet",
        NotValidForName | NotValidForNameContext { .. } => "not valid for the endpoint's name",
        Revoked => "revoked",
        InvalidPurpose | InvalidPurposeContext { .. } => "not for server authentication",
        BadSignature
        | UnsupportedSignatureAlgorithmContext { .. }
        | UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => "not signed acceptably",
        BadEncoding => "not readable",
        _ => "not trusted",
    }
}

/// The rustls error behind `e`: it reaches us wrapped in io::Errors (twice, through hyper),
/// whose `source` skips the error they wrap.
fn rustls_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {}s", d.as_secs_f64()),
        None => String::new(),
    }
}

/// Reads `Retry-After` (seconds or an HTTP date) and the millisecond variants Azure uses.
pub fn parse_retry_after(
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
    now: std::time::SystemTime,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    let value = retry_after?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn classifies_statuses() {
        let body = br#"{"error":{"code":"X","message":"m"}}"#;
        let cases = [
            (400, false, "Rejected"),
            (401, false, "Unauthorized"),
            (403, false, "Unauthorized"),
            (404, false, "NotFound"),
            (408, true, "Unavailable"),
            (409, false, "Rejected"),
            (429, true, "Throttled"),
            (500, true, "Unavailable"),
            (503, true, "Unavailable"),
        ];
        for (status, retriable, variant) in cases {
            let err = AcsError::from_response(status, None, body);
            assert_eq!(err.is_retriable(), retriable, "{status}");
            assert!(format!("{err:?}").starts_with(variant), "{status}: {err:?}");
            assert_eq!(err.status(), Some(status));
            assert_eq!(err.service_code(), Some("X"));
        }
    }

    /// Every variant, its standing, and its metric label: the labels are the values the
    /// dashboards and alerts already read, and must not change.
    #[test]
    fn every_variant_has_its_class() {
        let svc = || ServiceError {
            code: "X".into(),
            message: "m".into(),
            target: None,
        };
        let second = Duration::from_secs(1);
        let cases: Vec<(AcsError, bool, bool, &str)> = vec![
            (AcsError::NotFound(svc()), false, false, "404"),
            (
                AcsError::Throttled {
                    retry_after: None,
                    error: svc(),
                },
                true,
                false,
                "429",
            ),
            (
                AcsError::Unauthorized {
                    status: 403,
                    error: svc(),
                },
                false,
                false,
                "403",
            ),
            (
                AcsError::Rejected {
                    status: 409,
                    error: svc(),
                },
                false,
                false,
                "409",
            ),
            (
                AcsError::Unavailable {
                    status: 408,
                    error: svc(),
                },
                true,
                false,
                "408",
            ),
            (
                AcsError::Timeout {
                    phase: TimeoutPhase::Connect,
                    after: second,
                },
                true,
                true,
                "timeout",
            ),
            (AcsError::Transport("x".into()), true, true, "transport"),
            (
                AcsError::UntrustedCertificate("x".into()),
                false,
                false,
                "untrusted_certificate",
            ),
            (
                AcsError::InvalidResponse("x".into()),
                false,
                false,
                "invalid_response",
            ),
            (
                AcsError::InvalidRequest("x".into()),
                false,
                false,
                "invalid_request",
            ),
            (AcsError::InvalidCaBundle("x".into()), false, false, "error"),
            (AcsError::Config("x".into()), false, false, "error"),
            (
                AcsError::Credential {
                    retriable: true,
                    message: "x".into(),
                },
                true,
                false,
                "error",
            ),
            (
                AcsError::Credential {
                    retriable: false,
                    message: "x".into(),
                },
                false,
                false,
                "error",
            ),
        ];
        for (error, retriable, unreachable, code) in cases {
            let class = error.class();
            assert_eq!(
                (
                    class.retriable,
                    class.unreachable,
                    class.code.to_string().as_str()
                ),
                (retriable, unreachable, code),
                "{error:?}"
            );
            assert_eq!(error.status(), code.parse::<u16>().ok(), "{error:?}");
        }
    }

    /// What a server answered is shown only when it is ACS's error shape; anything else (an
    /// internal page, a proxy's error, JSON of another API) is named by status and size.
    #[test]
    fn only_acs_error_bodies_are_shown() {
        let internal = "postgres://app:hunter2@db.internal:5432/prod";
        let bodies: [(u16, String); 6] = [
            (
                403,
                format!("<html><h1>Forbidden</h1><p>{internal}</p></html>"),
            ),
            (500, format!("panic: cannot reach {internal}")),
            (400, serde_json::json!({"detail": internal}).to_string()),
            (401, serde_json::json!({"error": internal}).to_string()),
            // ACS's shape with a code that is no identifier: the code carries the text.
            (
                404,
                serde_json::json!({"error": {"code": internal, "message": "m"}}).to_string(),
            ),
            (
                502,
                serde_json::json!({"error": {"message": internal}}).to_string(),
            ),
        ];
        for (status, body) in bodies {
            let err = AcsError::from_response(status, None, body.as_bytes());
            let text = err.to_string();
            assert!(!text.contains("db.internal"), "{text}");
            assert!(text.contains(&format!("HTTP {status}")), "{text}");
            assert!(text.contains("not shown"), "{text}");
            assert_eq!(err.service_code(), None);
        }
        let err = AcsError::from_response(403, None, b"<html>x</html>");
        assert_eq!(
            err.to_string(),
            "ACS refused the credentials (HTTP 403): Forbidden (a 14-byte body that is not an \
             ACS error; not shown)"
        );
        let err = AcsError::from_response(503, None, b"");
        assert_eq!(
            err.to_string(),
            "ACS is unavailable (HTTP 503): Service Unavailable (empty body)"
        );
    }

    #[test]
    fn acs_error_bodies_are_kept_short() {
        // The ACS shape is bounded piece by piece.
        let long = "é".repeat(5000);
        let body = serde_json::json!({"error": {"code": "Big", "message": long, "target": long}});
        let err = ServiceError::from_body(400, body.to_string().as_bytes());
        assert_eq!(err.code, "Big");
        for piece in [&err.message, err.target.as_ref().unwrap()] {
            assert!(
                piece.len() <= MAX_EXCERPT + '…'.len_utf8(),
                "{}",
                piece.len()
            );
            assert!(piece.ends_with('…'));
        }
        let code = "C".repeat(65);
        let body = serde_json::json!({"error": {"code": code, "message": "m"}});
        assert_eq!(
            ServiceError::from_body(400, body.to_string().as_bytes()).code,
            ""
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after(Some("7"), None, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(Some("7"), Some("1500"), now),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(Some(&later), None, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(Some(&earlier), None, now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(Some("soon"), None, now), None);
        assert_eq!(parse_retry_after(None, None, SystemTime::now()), None);
    }

    #[test]
    fn display_includes_code_message_and_retry_hint() {
        let err = AcsError::from_response(
            429,
            Some(Duration::from_secs(3)),
            br#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
        );
        assert_eq!(
            err.to_string(),
            "ACS throttled the request (HTTP 429), retry after 3s"
        );
        let err = AcsError::from_response(
            400,
            None,
            br#"{"error":{"code":"ValidationError","message":"bad","target":"ExpiresInMinutes"}}"#,
        );
        assert_eq!(
            err.to_string(),
            "ACS rejected the request (HTTP 400): ValidationError: bad (target ExpiresInMinutes)"
        );
    }
}

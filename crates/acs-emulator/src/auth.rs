//! HMAC-SHA256 verification of every data-plane request.
//!
//! A client signs `METHOD\n<path and query>\n<date>;<host>;<content hash>` with the access key.
//! Each signed value closes a hole: the date (checked against a skew window) keeps a captured
//! request from being replayed later, the host ties the signature to this resource, and
//! `x-ms-content-sha256`, the SHA-256 of the body, ties it to the body. No other header is
//! signed, so the rest (`User-Agent`, `x-ms-client-request-id`, …) never affects the check.
//!
//! The official SDKs agree on that scheme but not on the details, and all of them must pass:
//! the date comes in `x-ms-date` or, from older SDKs, in `date`; the signed headers are taken in
//! the order the client lists them; the target is the one received, byte for byte (most SDKs
//! send `%3A` in identity ids, Python's aiohttp transport sends `:`); and the host is tried with
//! and without its port, because the Java SDK signs it without.

use acs_client::AccessKey;
use acs_client::signing::{content_hash, parse_authorization, signature_matches, string_to_sign};
use hyper::HeaderMap;
use std::time::{Duration, SystemTime};

/// The ACS front door's clock-skew tolerance is undocumented; Azure App Configuration uses the
/// identical scheme with 15 minutes.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request was not authenticated. Every variant is answered 401 `Denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("The request has no Authorization header.")]
    MissingAuthorization,
    #[error(
        "Only HMAC-SHA256 (access key) and Bearer (Entra ID) authentication are supported by the emulator."
    )]
    UnsupportedScheme,
    #[error(
        "The Authorization header is not of the form 'HMAC-SHA256 SignedHeaders=...&Signature=...'."
    )]
    MalformedAuthorization,
    #[error("SignedHeaders must name x-ms-date (or date), host and x-ms-content-sha256.")]
    UnsupportedSignedHeaders,
    #[error("The signed header '{0}' is missing from the request.")]
    MissingHeader(&'static str),
    #[error("Request 'x-ms-content-sha256' differs from generated content hash.")]
    ContentHashMismatch,
    #[error("The request date is not a valid RFC 1123 date.")]
    InvalidDate,
    #[error("The request date is too far from the server time.")]
    ClockSkew,
    #[error("Denied by the resource provider.")]
    BadSignature,
    /// A bearer token this emulator's Entra endpoint did not issue, or no longer accepts.
    #[error(transparent)]
    Bearer(#[from] super::entra::BearerError),
}

/// The token of an `Authorization: Bearer <token>` header, if the request carries one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What of a request the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// Path and query exactly as they came on the wire.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// The authority when there is no `Host` header (HTTP/2 sends `:authority`).
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signed {
    Date(&'static str),
    Host,
    ContentHash,
}

/// Checks requests against one resource's access key.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: AccessKey,
    /// `None` accepts any date.
    max_clock_skew: Option<Duration>,
}

impl Verifier {
    pub fn new(key: AccessKey, max_clock_skew: Option<Duration>) -> Self {
        Self {
            key,
            max_clock_skew,
        }
    }

    pub fn verify(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<(), AuthError> {
        let authorization = request
            .headers
            .get(hyper::header::AUTHORIZATION)
            .ok_or(AuthError::MissingAuthorization)?
            .to_str()
            .map_err(|_| AuthError::MalformedAuthorization)?;
        let Some(parsed) = parse_authorization(authorization) else {
            return Err(if authorization.trim_start().starts_with("HMAC-SHA256") {
                AuthError::MalformedAuthorization
            } else {
                AuthError::UnsupportedScheme
            });
        };
        let roles = signed_roles(&parsed.signed_headers)?;

        let mut values = Vec::with_capacity(3);
        let mut date = "";
        let mut host_index = 0;
        for (index, role) in roles.iter().enumerate() {
            let value = match role {
                Signed::Date(name) => {
                    date = header(request.headers, name).ok_or(AuthError::MissingHeader(name))?;
                    date
                }
                Signed::Host => {
                    host_index = index;
                    header(request.headers, "host")
                        .or(request.authority)
                        .ok_or(AuthError::MissingHeader("host"))?
                }
                Signed::ContentHash => header(request.headers, "x-ms-content-sha256")
                    .ok_or(AuthError::MissingHeader("x-ms-content-sha256"))?,
            };
            values.push(value);
        }

        let hash_index = roles
            .iter()
            .position(|role| *role == Signed::ContentHash)
            .unwrap_or_default();
        if values[hash_index] != content_hash(request.body) {
            return Err(AuthError::ContentHashMismatch);
        }
        self.check_date(date, now)?;

        let signature_with = |host: &str| {
            let mut v = values.clone();
            v[host_index] = host;
            let to_sign = string_to_sign(request.method, request.target, v[0], v[1], v[2]);
            signature_matches(&self.key, &to_sign, parsed.signature)
        };
        let host = values[host_index];
        if signature_with(host) || without_port(host).is_some_and(signature_with) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }

    fn check_date(&self, date: &str, now: SystemTime) -> Result<(), AuthError> {
        let sent = httpdate::parse_http_date(date).map_err(|_| AuthError::InvalidDate)?;
        let Some(max) = self.max_clock_skew else {
            return Ok(());
        };
        let skew = now
            .duration_since(sent)
            .or_else(|_| sent.duration_since(now))
            .unwrap_or_default();
        if skew > max {
            return Err(AuthError::ClockSkew);
        }
        Ok(())
    }
}

/// The three signed headers, in the client's order; each role exactly once.
fn signed_roles(names: &[&str]) -> Result<[Signed; 3], AuthError> {
    let roles: Vec<Signed> = names
        .iter()
        .map(|name| match name.to_ascii_lowercase().as_str() {
            "x-ms-date" => Ok(Signed::Date("x-ms-date")),
            "date" => Ok(Signed::Date("date")),
            "host" => Ok(Signed::Host),
            "x-ms-content-sha256" => Ok(Signed::ContentHash),
            _ => Err(AuthError::UnsupportedSignedHeaders),
        })
        .collect::<Result<_, _>>()?;
    let count = |pred: fn(&Signed) -> bool| roles.iter().filter(|r| pred(r)).count();
    let complete = count(|r| matches!(r, Signed::Date(_))) == 1
        && count(|r| *r == Signed::Host) == 1
        && count(|r| *r == Signed::ContentHash) == 1;
    match roles.as_slice() {
        [a, b, c] if complete => Ok([*a, *b, *c]),
        _ => Err(AuthError::UnsupportedSignedHeaders),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// `host:port` → `host`, `[::1]:port` → `[::1]`; `None` when there is no port.
fn without_port(host: &str) -> Option<&str> {
    let (name, port) = host.rsplit_once(':')?;
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let bracketed_or_plain = name.ends_with(']') || !name.contains(':');
    (is_port && bracketed_or_plain && !name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use acs_client::signing::{SIGNED_HEADERS, signature};
    use hyper::header::HeaderValue;
    use std::time::UNIX_EPOCH;

    const KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";
    const TARGET: &str = "/identities/8%3Aacs%3Ax_y/:issueAccessToken?api-version=2023-10-01";
    const BODY: &[u8] = br#"{"scopes":["chat"]}"#;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_000_000)
    }

    fn key() -> AccessKey {
        AccessKey::from_base64(KEY).unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(key(), Some(DEFAULT_MAX_CLOCK_SKEW))
    }

    /// Headers as an SDK would send them, signing `signed_host` and `target`.
    fn signed_headers(
        date_header: &str,
        signed_names: &str,
        sent_host: &str,
        signed_host: &str,
        target: &str,
        at: SystemTime,
    ) -> HeaderMap {
        let date = httpdate::fmt_http_date(at);
        let hash = content_hash(BODY);
        let to_sign = string_to_sign("POST", target, &date, signed_host, &hash);
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(sent_host).unwrap());
        headers.insert(
            hyper::header::HeaderName::from_bytes(date_header.as_bytes()).unwrap(),
            HeaderValue::from_str(&date).unwrap(),
        );
        headers.insert("x-ms-content-sha256", HeaderValue::from_str(&hash).unwrap());
        let auth = format!(
            "HMAC-SHA256 SignedHeaders={signed_names}&Signature={}",
            signature(&key(), &to_sign)
        );
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        headers
    }

    fn sdk_headers() -> HeaderMap {
        signed_headers(
            "x-ms-date",
            SIGNED_HEADERS,
            "127.0.0.1:8443",
            "127.0.0.1:8443",
            TARGET,
            now(),
        )
    }

    fn check(headers: &HeaderMap, target: &str, body: &[u8]) -> Result<(), AuthError> {
        let request = SignedRequest {
            method: "POST",
            target,
            headers,
            authority: None,
            body,
        };
        verifier().verify(&request, now())
    }

    #[test]
    fn accepts_what_the_sdks_send() {
        assert_eq!(check(&sdk_headers(), TARGET, BODY), Ok(()));
    }

    /// Requests as the Python and JS SDKs sent them to this emulator over plain HTTP: target,
    /// host, date, body and signature verbatim.
    #[test]
    fn accepts_requests_captured_from_the_python_and_js_sdks() {
        let id = "8%3Aacs%3A00000000-0000-0000-0000-000000000000";
        let captured = [
            (
                "POST",
                format!(
                    "/identities/{id}_d07f8fc7-ff36-458b-b550-d3400aebc5aa/:issueAccessToken?api-version=2023-10-01"
                ),
                "127.0.0.1:18080",
                "Sun, 22 Nov 2026 10:22:51 GMT",
                r#"{"scopes": ["chat"]}"#,
                "RXbEZ+brUGg9leOVzN9BFUJPYv6czh8gIv9h4H4KmDM=",
            ),
            (
                "DELETE",
                format!(
                    "/identities/{id}_d07f8fc7-ff36-458b-b550-d3400aebc5aa?api-version=2023-10-01"
                ),
                "127.0.0.1:18080",
                "Sun, 22 Nov 2026 10:22:51 GMT",
                "",
                "4PU0bndZbRcXGCesJg1dtRlmyBxui3P+gw5qQ/ZvVfY=",
            ),
            (
                "POST",
                format!(
                    "/identities/{id}_c344e6a5-56fc-4c21-852a-5b71d0720954/:issueAccessToken?api-version=2023-10-01"
                ),
                "127.0.0.1:18081",
                "Sun, 22 Nov 2026 10:25:28 GMT",
                r#"{"scopes":["chat"]}"#,
                "1f3YbcoWjV/OdHJ8LHAjGsrffXW4njD3hVslRoTPhwU=",
            ),
        ];
        for (method, target, host, date, body, signature) in captured {
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static(host));
            headers.insert("x-ms-date", HeaderValue::from_static(date));
            let hash = content_hash(body.as_bytes());
            headers.insert("x-ms-content-sha256", HeaderValue::from_str(&hash).unwrap());
            let auth = format!("HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}&Signature={signature}");
            headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
            let request = SignedRequest {
                method,
                target: &target,
                headers: &headers,
                authority: None,
                body: body.as_bytes(),
            };
            let at = httpdate::parse_http_date(date).unwrap();
            assert_eq!(verifier().verify(&request, at), Ok(()), "{method} {target}");
        }
    }

    #[test]
    fn target_must_match_byte_for_byte() {
        let raw_colons = TARGET.replace("%3A", ":");
        assert_eq!(
            check(&sdk_headers(), &raw_colons, BODY),
            Err(AuthError::BadSignature)
        );
        let headers = signed_headers(
            "x-ms-date",
            SIGNED_HEADERS,
            "h:1",
            "h:1",
            &raw_colons,
            now(),
        );
        assert_eq!(check(&headers, &raw_colons, BODY), Ok(()));
    }

    #[test]
    fn legacy_date_header_and_any_header_order() {
        let headers = signed_headers(
            "date",
            "date;host;x-ms-content-sha256",
            "h",
            "h",
            TARGET,
            now(),
        );
        assert_eq!(check(&headers, TARGET, BODY), Ok(()));
        // Values are joined in the order the client lists them; string_to_sign joins
        // date;host;hash positionally, so a reordered list signs a reordered string.
        let date = httpdate::fmt_http_date(now());
        let hash = content_hash(BODY);
        let to_sign = string_to_sign("POST", TARGET, "h", &hash, &date);
        let mut headers = signed_headers("x-ms-date", SIGNED_HEADERS, "h", "h", TARGET, now());
        let auth = format!(
            "HMAC-SHA256 SignedHeaders=host;x-ms-content-sha256;x-ms-date&Signature={}",
            signature(&key(), &to_sign)
        );
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        assert_eq!(check(&headers, TARGET, BODY), Ok(()));
    }

    #[test]
    fn host_signed_without_port_is_accepted() {
        let headers = signed_headers(
            "x-ms-date",
            SIGNED_HEADERS,
            "localhost:8443",
            "localhost",
            TARGET,
            now(),
        );
        assert_eq!(check(&headers, TARGET, BODY), Ok(()));
    }

    #[test]
    fn http2_authority_stands_in_for_host() {
        let mut headers = sdk_headers();
        headers.remove("host");
        let request = SignedRequest {
            method: "POST",
            target: TARGET,
            headers: &headers,
            authority: Some("127.0.0.1:8443"),
            body: BODY,
        };
        assert_eq!(verifier().verify(&request, now()), Ok(()));
    }

    #[test]
    fn wrong_key_is_denied() {
        let other = Verifier::new(AccessKey::from_base64("pw==").unwrap(), None);
        let request = SignedRequest {
            method: "POST",
            target: TARGET,
            headers: &sdk_headers(),
            authority: None,
            body: BODY,
        };
        assert_eq!(other.verify(&request, now()), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_body_fails_the_hash_check() {
        assert_eq!(
            check(&sdk_headers(), TARGET, br#"{"scopes":["voip"]}"#),
            Err(AuthError::ContentHashMismatch)
        );
    }

    #[test]
    fn missing_headers_are_named() {
        for (name, expected) in [
            ("x-ms-date", AuthError::MissingHeader("x-ms-date")),
            ("host", AuthError::MissingHeader("host")),
            (
                "x-ms-content-sha256",
                AuthError::MissingHeader("x-ms-content-sha256"),
            ),
            ("authorization", AuthError::MissingAuthorization),
        ] {
            let mut headers = sdk_headers();
            headers.remove(name);
            assert_eq!(check(&headers, TARGET, BODY), Err(expected), "{name}");
        }
    }

    #[test]
    fn malformed_or_foreign_authorization() {
        for (value, expected) in [
            ("Bearer eyJ", AuthError::UnsupportedScheme),
            (
                "HMAC-SHA256 Signature=abc",
                AuthError::MalformedAuthorization,
            ),
            (
                "HMAC-SHA256 SignedHeaders=host;x-ms-content-sha256&Signature=abc",
                AuthError::UnsupportedSignedHeaders,
            ),
            (
                "HMAC-SHA256 SignedHeaders=x-ms-date;date;host;x-ms-content-sha256&Signature=a",
                AuthError::UnsupportedSignedHeaders,
            ),
            (
                "HMAC-SHA256 SignedHeaders=x-ms-date;host;host&Signature=abc",
                AuthError::UnsupportedSignedHeaders,
            ),
            (
                "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=%%%",
                AuthError::BadSignature,
            ),
        ] {
            let mut headers = sdk_headers();
            headers.insert("authorization", HeaderValue::from_static(value));
            assert_eq!(check(&headers, TARGET, BODY), Err(expected), "{value}");
        }
    }

    #[test]
    fn dates_outside_the_skew_window_are_denied() {
        let minute = Duration::from_secs(60);
        for (at, expected) in [
            (now() - 14 * minute, Ok(())),
            (now() + 14 * minute, Ok(())),
            (now() - 16 * minute, Err(AuthError::ClockSkew)),
            (now() + 16 * minute, Err(AuthError::ClockSkew)),
        ] {
            let headers = signed_headers("x-ms-date", SIGNED_HEADERS, "h", "h", TARGET, at);
            assert_eq!(check(&headers, TARGET, BODY), expected);
        }
        let mut headers = sdk_headers();
        headers.insert("x-ms-date", HeaderValue::from_static("yesterday"));
        assert_eq!(check(&headers, TARGET, BODY), Err(AuthError::InvalidDate));
    }

    #[test]
    fn skew_check_can_be_switched_off() {
        let lenient = Verifier::new(key(), None);
        let headers = signed_headers(
            "x-ms-date",
            SIGNED_HEADERS,
            "h",
            "h",
            TARGET,
            now() - Duration::from_secs(86_400),
        );
        let request = SignedRequest {
            method: "POST",
            target: TARGET,
            headers: &headers,
            authority: None,
            body: BODY,
        };
        assert_eq!(lenient.verify(&request, now()), Ok(()));
    }

    #[test]
    fn port_stripping() {
        assert_eq!(without_port("localhost:8443"), Some("localhost"));
        assert_eq!(without_port("[::1]:8443"), Some("[::1]"));
        assert_eq!(without_port("localhost"), None);
        assert_eq!(without_port("::1"), None);
        assert_eq!(without_port(":80"), None);
    }
}

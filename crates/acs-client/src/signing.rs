//! HMAC-SHA256 request signing as every official ACS SDK does it, and its verification (used
//! by the emulator). The string to sign is
//! `METHOD\npath_and_query\nx-ms-date;host;x-ms-content-sha256`.

use super::AccessKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::SystemTime;
use url::Url;

type HmacSha256 = Hmac<Sha256>;

/// The signed-headers list the current SDKs send.
pub const SIGNED_HEADERS: &str = "x-ms-date;host;x-ms-content-sha256";

/// The headers that authenticate one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    pub x_ms_date: String,
    pub x_ms_content_sha256: String,
    pub authorization: String,
}

/// Base64 of SHA-256 over the exact body bytes (an empty body hashes the empty string).
pub fn content_hash(body: &[u8]) -> String {
    B64.encode(Sha256::digest(body))
}

/// The RFC 1123 date in GMT that goes into `x-ms-date`.
pub fn format_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

/// The host as the SDKs sign it: the URL's authority, with the port only when non-default.
pub fn signed_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The request target exactly as sent: the already-encoded path plus `?query` if present.
pub fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{}", url.path(), query),
        None => url.path().to_string(),
    }
}

pub fn string_to_sign(
    method: &str,
    path_and_query: &str,
    date: &str,
    host: &str,
    content_hash: &str,
) -> String {
    format!(
        "{}\n{path_and_query}\n{date};{host};{content_hash}",
        method.to_ascii_uppercase()
    )
}

/// Base64 of HMAC-SHA256 over the string to sign.
pub fn signature(key: &AccessKey, string_to_sign: &str) -> String {
    B64.encode(mac(key, string_to_sign).finalize().into_bytes())
}

/// Checks a base64 signature in constant time.
pub fn signature_matches(key: &AccessKey, string_to_sign: &str, claimed_b64: &str) -> bool {
    let Ok(claimed) = B64.decode(claimed_b64.trim()) else {
        return false;
    };
    mac(key, string_to_sign).verify_slice(&claimed).is_ok()
}

/// Signs a request to be sent to `url` with `body` at time `at`.
pub fn sign_request(
    key: &AccessKey,
    method: &str,
    url: &Url,
    body: &[u8],
    at: SystemTime,
) -> RequestSignature {
    let x_ms_date = format_date(at);
    let x_ms_content_sha256 = content_hash(body);
    let to_sign = string_to_sign(
        method,
        &path_and_query(url),
        &x_ms_date,
        &signed_host(url),
        &x_ms_content_sha256,
    );
    let authorization = format!(
        "HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}&Signature={}",
        signature(key, &to_sign)
    );
    RequestSignature {
        x_ms_date,
        x_ms_content_sha256,
        authorization,
    }
}

/// The two parts of an `Authorization: HMAC-SHA256 SignedHeaders=..&Signature=..` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacAuthorization<'a> {
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Parses an HMAC `Authorization` header value; `None` when it is not of that scheme or shape.
pub fn parse_authorization(value: &str) -> Option<HmacAuthorization<'_>> {
    let rest = value.trim().strip_prefix("HMAC-SHA256")?.trim_start();
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split('&') {
        let (name, val) = part.split_once('=')?;
        match name.trim() {
            "SignedHeaders" => signed_headers = Some(val.split(';').map(str::trim).collect()),
            "Signature" => signature = Some(val.trim()),
            _ => return None,
        }
    }
    Some(HmacAuthorization {
        signed_headers: signed_headers?,
        signature: signature.filter(|s| !s.is_empty())?,
    })
}

fn mac(key: &AccessKey, string_to_sign: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn empty_body_hash_is_the_well_known_value() {
        assert_eq!(
            content_hash(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn date_has_two_digit_day_and_gmt() {
        let at = UNIX_EPOCH + Duration::from_secs(1_649_873_352); // 2022-04-13T18:09:12Z
        assert_eq!(format_date(at), "Wed, 13 Apr 2022 18:09:12 GMT");
        let early = UNIX_EPOCH + Duration::from_secs(1_801_641_600); // 2027-02-03
        assert!(format_date(early).starts_with("Wed, 03 Feb 2027"));
    }

    #[test]
    fn host_carries_only_non_default_ports() {
        let with_port = Url::parse("https://127.0.0.1:8443/identities").unwrap();
        assert_eq!(signed_host(&with_port), "127.0.0.1:8443");
        let default_port = Url::parse("https://x.communication.azure.com:443/").unwrap();
        assert_eq!(signed_host(&default_port), "x.communication.azure.com");
        let http_default = Url::parse("http://localhost:80/").unwrap();
        assert_eq!(signed_host(&http_default), "localhost");
    }

    #[test]
    fn path_keeps_percent_encoding_and_query() {
        let url = Url::parse(
            "https://h/identities/8%3Aacs%3Aabc/:issueAccessToken?api-version=2023-10-01",
        )
        .unwrap();
        assert_eq!(
            path_and_query(&url),
            "/identities/8%3Aacs%3Aabc/:issueAccessToken?api-version=2023-10-01"
        );
    }

    #[test]
    fn parses_authorization_header() {
        let parsed = parse_authorization(
            "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=abc=",
        )
        .unwrap();
        assert_eq!(
            parsed.signed_headers,
            ["x-ms-date", "host", "x-ms-content-sha256"]
        );
        assert_eq!(parsed.signature, "abc=");
        assert_eq!(parse_authorization("Bearer xyz"), None);
        assert_eq!(parse_authorization("HMAC-SHA256 Signature=abc"), None);
        assert_eq!(
            parse_authorization("HMAC-SHA256 SignedHeaders=host&Signature="),
            None
        );
    }

    #[test]
    fn signature_check_rejects_other_keys_and_garbage() {
        let key = AccessKey::from_base64("pw==").unwrap();
        let other = AccessKey::from_base64("cHc=").unwrap();
        let sig = signature(&key, "banana");
        assert!(signature_matches(&key, "banana", &sig));
        assert!(!signature_matches(&other, "banana", &sig));
        assert!(!signature_matches(&key, "banana2", &sig));
        assert!(!signature_matches(&key, "banana", "%%%"));
    }
}

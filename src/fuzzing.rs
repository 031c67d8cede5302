//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_replay.rs`, which feeds
//! them the saved corpus on stable Rust. One function per parser that takes outside input;
//! each takes raw bytes, must never panic, and panics only when a property every input must
//! have is broken (so the fuzzer reports it as a crash). Not an API: hidden from the docs.
//!
//! `fuzz/README.md` says how to run the fuzzer and add to the corpus.

use crate::acs::client::{parse_create_response, parse_token_response};
use crate::acs::error::parse_retry_after;
use crate::acs::{AcsError, ConnectionString};
use crate::api::GoDuration;
use crate::emulator::auth::{SignedRequest, Verifier};
use crate::emulator::routes::{self, AcsRoute, Route};
use crate::emulator::tokens::{TokenClaims, TokenMinter};
use std::time::{Duration, UNIX_EPOCH};

/// A fuzz entry: takes any bytes.
pub type Entry = fn(&[u8]);

/// The targets, by the name of their corpus folder (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Entry)] = &[
    ("connection_string", connection_string),
    ("acs_response", acs_response),
    ("retry_after", retry_after),
    ("go_duration", go_duration),
    ("emulator_route", emulator_route),
    ("signature_header", signature_header),
    ("emulator_token", emulator_token),
];

/// Longest error text any parser may produce: it ends up in a condition message, an Event and
/// a log line, so a hostile input must not be able to make it big.
pub const MAX_ERROR_TEXT: usize = 1024;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

fn check_error_text(what: &str, message: &str) {
    assert!(
        message.len() <= MAX_ERROR_TEXT,
        "{what} error text is {} bytes (max {MAX_ERROR_TEXT})",
        message.len()
    );
}

/// `endpoint=…;accesskey=…`: a parsed string round-trips through its exposed form, and an
/// error never repeats the access key.
pub fn connection_string(data: &[u8]) {
    let Some(input) = text(data) else { return };
    match input.parse::<ConnectionString>() {
        Ok(parsed) => {
            let again: ConnectionString = parsed
                .expose()
                .parse()
                .expect("an exposed connection string parses again");
            assert!(again == parsed, "exposed connection string round-trips");
        }
        Err(error) => {
            let message = error.to_string();
            check_error_text("connection string", &message);
            for segment in input.split(';') {
                let Some((name, value)) = segment.split_once('=') else {
                    continue;
                };
                let value = value.trim();
                let key_like = value.len() >= 16
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
                if name.trim().eq_ignore_ascii_case("accesskey") && key_like {
                    assert!(
                        !message.contains(value),
                        "connection string error repeats the access key"
                    );
                }
            }
        }
    }
}

/// Bodies of ACS answers: the first byte picks create (even) or issue-token (odd) success
/// bodies, and with the next two bytes an error status; the rest is the body.
pub fn acs_response(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let errors = match selector % 3 {
        0 => parse_create_response(rest).err(),
        1 => parse_token_response(rest).err(),
        _ => {
            let (status, body) = match rest {
                [hi, lo, body @ ..] => (u16::from_be_bytes([*hi, *lo]) % 600, body),
                _ => (500, rest),
            };
            Some(AcsError::from_response(status, None, body))
        }
    };
    if let Some(error) = errors {
        check_error_text("ACS answer", &error.to_string());
    }
}

/// `Retry-After` and `retry-after-ms`: the first line is one, the rest the other. Whatever
/// the server says, the pause asked for is finite and a number of seconds is read as such.
pub fn retry_after(data: &[u8]) {
    let Some(input) = text(data) else { return };
    let (seconds, millis) = input.split_once('\n').unwrap_or((input, ""));
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let millis = (!millis.is_empty()).then_some(millis);
    let pause = parse_retry_after(Some(seconds), millis, now);
    if millis.is_none()
        && let Ok(n) = seconds.trim().parse::<u64>()
    {
        assert_eq!(pause, Some(Duration::from_secs(n)));
    }
    parse_retry_after(None, millis, now);
}

/// Go durations (`1h30m`): what parses prints as it was written and survives JSON.
pub fn go_duration(data: &[u8]) {
    let Some(input) = text(data) else { return };
    match input.parse::<GoDuration>() {
        Ok(duration) => {
            assert_eq!(duration.to_string(), input);
            let json = serde_json::to_string(&duration).expect("a duration serializes");
            let back: GoDuration = serde_json::from_str(&json).expect("and reads back");
            assert_eq!(back, duration);
        }
        Err(error) => {
            // The message quotes the input; the CRD schema bounds its length before it.
            let _ = error.to_string();
        }
    }
}

const METHODS: [&str; 7] = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"];

/// The emulator's routing: the first byte picks a method, the rest is `path[?query]`. A data
/// route never names an empty identity.
pub fn emulator_route(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some(target) = text(rest) else { return };
    let method: hyper::Method = METHODS[usize::from(selector) % METHODS.len()]
        .parse()
        .expect("a known method");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if let Route::Acs(
        AcsRoute::IssueToken(id) | AcsRoute::RevokeTokens(id) | AcsRoute::Delete(id),
    ) = routes::route(&method, path)
    {
        assert!(!id.is_empty(), "a data route names an identity");
    }
    let _ = routes::api_version(query);
}

/// The HMAC check of the emulator, on a request written as text: the method, the target,
/// `name: value` header lines, an empty line, then the body. Bytes the HTTP stack would refuse
/// (bad header names or values) are skipped. Nothing but a correctly signed request passes.
pub fn signature_header(data: &[u8]) {
    let _ = signature_verdict(data);
}

/// What [`signature_header`] decides: `None` when the head is not UTF-8, else the verdict with
/// the clock-skew check (the error's text when refused).
pub fn signature_verdict(data: &[u8]) -> Option<Result<(), String>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = text(head)?;
    let mut lines = head.split('\n');
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let mut headers = hyper::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let request = SignedRequest {
        method,
        target,
        headers: &headers,
        authority: Some("localhost:8080"),
        body,
    };
    let key = crate::acs::AccessKey::from_base64(FUZZ_KEY).expect("a valid key");
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let _ = crate::emulator::auth::bearer_token(&headers);
    let mut verdict = None;
    for skew in [None, Some(crate::emulator::auth::DEFAULT_MAX_CLOCK_SKEW)] {
        let result = Verifier::new(key.clone(), skew).verify(&request, now);
        if let Err(error) = &result {
            check_error_text("signature", &error.to_string());
        }
        verdict = Some(result.map_err(|e| e.to_string()));
    }
    verdict
}

/// The access key the signature target checks against (base64 of a fixed test string), so a
/// seed can carry a valid signature.
pub const FUZZ_KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

/// The secret of the token target's minter, so a seed can carry a genuine token.
pub const FUZZ_TOKEN_SECRET: [u8; 32] = [7; 32];

/// The emulator's tokens (what `admin/tokens:verify` and the SDK compatibility checks read):
/// whatever is read back was signed by the minter, and re-signing it reads back the same.
pub fn emulator_token(data: &[u8]) {
    let Some(token) = text(data) else { return };
    let minter = TokenMinter::new(FUZZ_TOKEN_SECRET);
    if let Ok(claims) = minter.read(token) {
        let again: TokenClaims = minter
            .read(&minter.mint(&claims).token)
            .expect("a minted token reads back");
        assert_eq!(again, claims);
    }
    let _ = minter.verify::<serde_json::Value>(token);
    let _ = TokenMinter::new([0; 32]).read(token);
}

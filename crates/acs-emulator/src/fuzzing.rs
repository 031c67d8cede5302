//! Entry points for the fuzz targets in `fuzz/` and for the operator's `tests/fuzz_replay.rs`,
//! which feeds them the saved corpus on stable Rust. One function per parser of this crate
//! that takes outside input; each takes raw bytes, must never panic, and panics only when a
//! property every input must have is broken (so the fuzzer reports it as a crash). Not an API:
//! hidden from the docs. `fuzz/README.md` says how to run the fuzzer and add to the corpus.

use crate::auth::{SignedRequest, Verifier};
use crate::routes::{self, AcsRoute, Route};
use crate::tokens::{TokenClaims, TokenMinter};
use acs_client::fuzzing::{Entry, check_error_text, text};
use std::time::{Duration, UNIX_EPOCH};

/// This crate's targets, by the name of their corpus folder (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Entry)] = &[
    ("emulator_route", emulator_route),
    ("signature_header", signature_header),
    ("emulator_token", emulator_token),
];

const METHODS: [&str; 7] = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"];

/// The emulator's routing: the first byte picks a method, the rest is `path[?query]`. A data
/// route never names an empty identity, tenant or object.
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
    match routes::route(&method, path) {
        Route::Acs(
            AcsRoute::IssueToken(id)
            | AcsRoute::RevokeTokens(id)
            | AcsRoute::Delete(id)
            | AcsRoute::EntraAssignment { object_id: id, .. },
        ) => assert!(!id.is_empty(), "a data route names an identity"),
        Route::Acs(AcsRoute::TeamsExtensionAssignment {
            tenant_id,
            object_id,
            ..
        }) => assert!(
            !tenant_id.is_empty() && !object_id.is_empty(),
            "an assignment route names its tenant and object"
        ),
        _ => {}
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
    let key = acs_client::AccessKey::from_base64(FUZZ_KEY).expect("a valid key");
    let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let _ = crate::auth::bearer_token(&headers);
    let mut verdict = None;
    for skew in [None, Some(crate::auth::DEFAULT_MAX_CLOCK_SKEW)] {
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

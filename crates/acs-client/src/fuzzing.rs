//! Entry points for the fuzz targets in `fuzz/` and for the operator's `tests/fuzz_replay.rs`,
//! which feeds them the saved corpus on stable Rust. One function per parser of this crate
//! that takes outside input; each takes raw bytes, must never panic, and panics only when a
//! property every input must have is broken (so the fuzzer reports it as a crash). Not an API:
//! hidden from the docs. `fuzz/README.md` says how to run the fuzzer and add to the corpus.

use crate::client::{parse_create_response, parse_token_response};
use crate::error::parse_retry_after;
use crate::{AcsError, ConnectionString};
use std::time::{Duration, UNIX_EPOCH};

/// A fuzz entry: takes any bytes.
pub type Entry = fn(&[u8]);

/// This crate's targets, by the name of their corpus folder (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Entry)] = &[
    ("connection_string", connection_string),
    ("acs_response", acs_response),
    ("retry_after", retry_after),
];

/// Longest error text any parser may produce: it ends up in a condition message, an Event and
/// a log line, so a hostile input must not be able to make it big.
pub const MAX_ERROR_TEXT: usize = 1024;

pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

pub fn check_error_text(what: &str, message: &str) {
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

//! Parsing of `endpoint=https://…;accesskey=…` connection strings.
//!
//! Accepts the keys in any order and any case, surrounding whitespace and a trailing `;`.
//! Splits each segment at its first `=` so the key's base64 padding survives. Errors name
//! what is wrong but never echo the input: it carries the access key.

use super::AccessKey;
use std::fmt;
use std::str::FromStr;
use url::Url;

/// Where an ACS resource is and the key that signs requests to it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub endpoint: Url,
    pub access_key: AccessKey,
}

/// The longest connection string read: the portal's is about 150 bytes (an 88-character key
/// and the endpoint). Each client keeps its key, and tenants write the Secret.
pub const MAX_CONNECTION_STRING: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("connection string is empty")]
    Empty,
    #[error("connection string is {0} bytes, more than {MAX_CONNECTION_STRING}")]
    TooLong(usize),
    #[error("connection string segment {0} is not of the form key=value")]
    MalformedSegment(usize),
    #[error("connection string names `{0}` more than once")]
    DuplicateKey(&'static str),
    #[error("connection string has no `endpoint`")]
    MissingEndpoint,
    #[error("connection string has no `accesskey`")]
    MissingAccessKey,
    #[error("connection string endpoint is not a valid URL: {0}")]
    InvalidEndpoint(String),
    #[error("connection string endpoint must use https or http, not `{0}`")]
    UnsupportedScheme(String),
    #[error(
        "connection string endpoint must be scheme://host[:port] with no path, query or credentials"
    )]
    EndpointHasPath,
    #[error("connection string accesskey is not valid base64")]
    InvalidAccessKey,
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.trim().is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        if input.len() > MAX_CONNECTION_STRING {
            return Err(ConnectionStringError::TooLong(input.len()));
        }
        let mut endpoint = None;
        let mut access_key = None;
        let segments = input.split(';').map(str::trim).filter(|s| !s.is_empty());
        for (index, segment) in segments.enumerate() {
            let (name, value) = segment
                .split_once('=')
                .ok_or(ConnectionStringError::MalformedSegment(index + 1))?;
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("endpoint") {
                set_once(&mut endpoint, value, "endpoint")?;
            } else if name.eq_ignore_ascii_case("accesskey") {
                set_once(&mut access_key, value, "accesskey")?;
            }
            // Unknown keys are ignored, as the SDKs do.
        }
        let endpoint = parse_endpoint(endpoint.ok_or(ConnectionStringError::MissingEndpoint)?)?;
        let access_key = access_key.ok_or(ConnectionStringError::MissingAccessKey)?;
        let access_key = AccessKey::from_base64(access_key)
            .map_err(|_| ConnectionStringError::InvalidAccessKey)?;
        Ok(Self {
            endpoint,
            access_key,
        })
    }
}

impl ConnectionString {
    /// The string form, e.g. for handing to an official SDK. It contains the key: never log it.
    pub fn expose(&self) -> String {
        format!(
            "endpoint={};accesskey={}",
            self.endpoint,
            self.access_key.to_base64()
        )
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("endpoint", &self.endpoint.as_str())
            .field("access_key", &self.access_key)
            .finish()
    }
}

fn set_once<'a>(
    slot: &mut Option<&'a str>,
    value: &'a str,
    name: &'static str,
) -> Result<(), ConnectionStringError> {
    if slot.replace(value).is_some() {
        return Err(ConnectionStringError::DuplicateKey(name));
    }
    Ok(())
}

fn parse_endpoint(raw: &str) -> Result<Url, ConnectionStringError> {
    let url = Url::parse(raw).map_err(|e| ConnectionStringError::InvalidEndpoint(e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConnectionStringError::UnsupportedScheme(
            url.scheme().to_string(),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConnectionStringError::InvalidEndpoint("no host".into()));
    }
    let has_extras = url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some();
    if has_extras {
        return Err(ConnectionStringError::EndpointHasPath);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::ConnectionStringError as E;
    use super::*;

    const KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

    fn parse(s: &str) -> Result<ConnectionString, E> {
        s.parse()
    }

    #[test]
    fn parses_the_portal_form() {
        let cs = parse(&format!(
            "endpoint=https://acs.communication.azure.com/;accesskey={KEY}"
        ))
        .unwrap();
        assert_eq!(cs.endpoint.as_str(), "https://acs.communication.azure.com/");
        assert_eq!(cs.access_key.to_base64(), KEY);
    }

    #[test]
    fn accepts_any_order_case_whitespace_and_trailing_semicolon() {
        let cs = parse(&format!(
            "  AccessKey = {KEY} ;\n ENDPOINT=http://127.0.0.1:8080 ; "
        ))
        .unwrap();
        assert_eq!(cs.endpoint.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(cs.access_key.to_base64(), KEY);
    }

    #[test]
    fn ignores_unknown_keys() {
        let cs = parse(&format!("endpoint=https://a/;foo=bar;accesskey={KEY}")).unwrap();
        assert_eq!(cs.endpoint.host_str(), Some("a"));
    }

    #[test]
    fn each_malformed_form_has_its_own_error() {
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("   ", E::Empty),
            ("endpoint=https://a/;garbage", E::MalformedSegment(2)),
            (&format!("accesskey={KEY}"), E::MissingEndpoint),
            ("endpoint=https://a/", E::MissingAccessKey),
            (
                "endpoint=https://a/;endpoint=https://b/;accesskey=pw==",
                E::DuplicateKey("endpoint"),
            ),
            (
                "endpoint=https://a/;accesskey=pw==;ACCESSKEY=pw==",
                E::DuplicateKey("accesskey"),
            ),
            (
                "endpoint=ftp://a/;accesskey=pw==",
                E::UnsupportedScheme("ftp".into()),
            ),
            ("endpoint=https://a/x;accesskey=pw==", E::EndpointHasPath),
            ("endpoint=https://a/?q=1;accesskey=pw==", E::EndpointHasPath),
            ("endpoint=https://u:p@a/;accesskey=pw==", E::EndpointHasPath),
            (
                "endpoint=https://a/;accesskey=not*base64",
                E::InvalidAccessKey,
            ),
            ("endpoint=https://a/;accesskey=", E::InvalidAccessKey),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input).unwrap_err(), *expected, "input: {input:?}");
        }
        assert!(matches!(
            parse("endpoint=not a url;accesskey=pw=="),
            Err(E::InvalidEndpoint(_))
        ));
    }

    #[test]
    fn neither_debug_nor_errors_reveal_the_key() {
        let cs = parse(&format!("endpoint=https://a/;accesskey={KEY}")).unwrap();
        assert!(!format!("{cs:?}").contains(KEY));
        let secret = "c2VjcmV0c2VjcmV0";
        for input in [
            format!("endpoint=https://a/x;accesskey={secret}"),
            format!("endpoint=ftp://a;accesskey={secret}"),
            format!("endpoint=https://a/;accesskey={secret}*"),
            format!("{secret};endpoint=https://a/"),
        ] {
            let err = parse(&input).unwrap_err();
            assert!(!err.to_string().contains(secret), "{err}");
            assert!(!format!("{err:?}").contains(secret), "{err:?}");
        }
    }

    #[test]
    fn a_connection_string_is_bounded() {
        let padded = format!("endpoint=https://a/;accesskey={KEY};{}", " ".repeat(5000));
        assert!(parse(&padded[..MAX_CONNECTION_STRING]).is_ok());
        let long = format!("endpoint=https://a/;accesskey={}", "A".repeat(1_000_000));
        assert_eq!(parse(&long).unwrap_err(), E::TooLong(long.len()));
    }

    #[test]
    fn expose_round_trips() {
        let cs = parse(&format!("accesskey={KEY};endpoint=https://a:8443")).unwrap();
        assert_eq!(parse(&cs.expose()).unwrap(), cs);
    }
}

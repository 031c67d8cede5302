//! The ACS access key: raw HMAC key bytes that never print.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;

/// The decoded access key of an ACS resource. `Debug` and `Display` are redacted so that the
/// key cannot reach a log line, an error message or an Event by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey(Vec<u8>);

/// The access key was not valid standard base64 (the form the Azure portal shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access key is not valid base64")]
pub struct InvalidAccessKey;

impl AccessKey {
    /// Decodes a key as written in a connection string (standard base64 with padding).
    pub fn from_base64(encoded: &str) -> Result<Self, InvalidAccessKey> {
        let bytes = B64.decode(encoded.trim()).map_err(|_| InvalidAccessKey)?;
        if bytes.is_empty() {
            return Err(InvalidAccessKey);
        }
        Ok(Self(bytes))
    }

    /// The key in the base64 form a connection string carries.
    pub fn to_base64(&self) -> String {
        B64.encode(&self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = AccessKey::from_base64("c2VjcmV0LWtleQ==").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn rejects_non_base64_and_empty() {
        assert_eq!(AccessKey::from_base64("not base64!"), Err(InvalidAccessKey));
        assert_eq!(AccessKey::from_base64(""), Err(InvalidAccessKey));
    }

    #[test]
    fn round_trips_base64() {
        let key = AccessKey::from_base64(" pw== ").unwrap();
        assert_eq!(key.bytes(), &[0xa7]);
        assert_eq!(key.to_base64(), "pw==");
    }
}

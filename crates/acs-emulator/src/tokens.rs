//! The emulator's access tokens: JWTs (`header.payload.signature`, base64url without
//! padding), HS256-signed with a secret of the emulator instance. Signing and checking are the
//! `jsonwebtoken` crate's (HMAC, constant-time comparison, header and part decoding); only the
//! payload's text is written here, for the reason below. The ACS user tokens
//! ([`TokenClaims`]) and the Entra bearer tokens ([`super::entra`]) use one minter each, so a
//! token of one kind never passes as the other.
//!
//! The official SDKs read `exp` from the payload although tokens are meant to be opaque, and the
//! Python SDK decodes it with `base64.b64decode`: the *standard* alphabet, which skips the
//! `-` and `_` of base64url instead of failing, so a payload holding them decodes to garbage.
//! The payload is therefore kept pure ASCII without `>`, `?` and `~`: for such bytes base64url
//! and standard base64 produce the same text. `jsonwebtoken::encode` serializes the claims
//! itself (raw `>`, `?`, `~` and UTF-8), so tokens are put together from our payload text and
//! the crate's signature of it; reading them back is the crate's `decode` (a `\uXXXX` escape
//! is plain JSON to it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jiff::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// `{"alg":"HS256","kid":"acs-emulator","typ":"JWT"}` in base64url.
const HEADER_JSON: &str = r#"{"alg":"HS256","kid":"acs-emulator","typ":"JWT"}"#;

/// Claims of an emulator token. The first six mirror what real ACS tokens carry; `jti` makes
/// every token unique and `seq` orders it against revocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenClaims {
    /// The identity without its `8:` prefix, as in real tokens: `acs:<resource>_<user>`.
    pub skypeid: String,
    pub scp: u32,
    /// Issued-at, as a decimal string (real tokens carry it that way).
    pub csi: String,
    pub iat: i64,
    pub exp: i64,
    /// Scopes joined with `,`.
    pub acs_scope: String,
    pub resource_id: String,
    pub jti: String,
    pub seq: u64,
}

impl TokenClaims {
    /// The identity id the token was issued to (`8:acs:…`).
    pub fn identity_id(&self) -> String {
        format!("8:{}", self.skypeid)
    }
}

/// A freshly minted token with the expiry the service reports for it.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    pub token: String,
    /// `exp` formatted as the service formats `expiresOn`.
    pub expires_on: String,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts around a JSON payload of our claims.
    #[error("token is malformed")]
    Malformed,
    /// Well-formed but not signed by this emulator instance.
    #[error("token was not issued by this emulator")]
    ForeignSignature,
}

/// Mints and checks tokens with one secret.
pub struct TokenMinter {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// HS256 only; no claim is required or checked by the crate: expiry, revocation and
    /// audience are verdicts of their own, decided by the callers.
    validation: Validation,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMinter(<secret>)")
    }
}

impl TokenMinter {
    pub fn new(secret: [u8; 32]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        }
    }

    pub fn mint(&self, claims: &TokenClaims) -> MintedToken {
        MintedToken {
            token: self.sign(claims),
            expires_on: format_expires_on(claims.exp),
        }
    }

    /// Reads a token's claims after checking its signature in constant time.
    pub fn read(&self, token: &str) -> Result<TokenClaims, TokenError> {
        self.verify(token)
    }

    /// A JWT carrying `claims`, signed with this minter's secret.
    pub fn sign(&self, claims: &impl Serialize) -> String {
        let header = B64URL.encode(HEADER_JSON);
        let payload = B64URL.encode(ascii_safe_json(claims));
        let signing_input = format!("{header}.{payload}");
        // HS256 signing with an HMAC key cannot fail.
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.encoding, Algorithm::HS256)
                .unwrap_or_default();
        format!("{signing_input}.{signature}")
    }

    /// The claims of a token this minter signed. `ForeignSignature` when another secret signed
    /// it; `Malformed` when it is not a JWT of HS256 around a JSON payload of `T`.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        match jsonwebtoken::decode::<T>(token.trim(), &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(error) => Err(match error.kind() {
                ErrorKind::InvalidSignature => TokenError::ForeignSignature,
                _ => TokenError::Malformed,
            }),
        }
    }
}

/// Whole seconds since the Unix epoch, as JWT time claims count; 0 before it.
pub fn unix_seconds(at: SystemTime) -> i64 {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// `expiresOn` as the service writes it: seven fractional digits and an explicit `+00:00`
/// offset, e.g. `2023-10-10T21:39:39.0000000+00:00`. It is exactly the token's `exp`.
pub fn format_expires_on(exp: i64) -> String {
    match Timestamp::from_second(exp) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00").to_string(),
        Err(_) => "9999-12-31T23:59:59.0000000+00:00".to_string(),
    }
}

/// JSON text whose every byte is printable ASCII other than `>`, `?`, `~`. Those three (and
/// anything non-ASCII) can only occur inside JSON strings, where a `\uXXXX` escape is the same
/// value, so the result parses to the same claims.
fn ascii_safe_json(claims: &impl Serialize) -> String {
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_string(claims).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() && !matches!(c, '>' | '?' | '~') {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

    fn claims(skypeid: &str) -> TokenClaims {
        TokenClaims {
            skypeid: skypeid.into(),
            scp: 1792,
            csi: "1795000000".into(),
            iat: 1_795_000_000,
            exp: 1_795_086_400,
            acs_scope: "chat,voip".into(),
            resource_id: "2dee53b4-368b-45b4-ab52-8493fb117652".into(),
            jti: "0f4c2b8e-2a57-4bd6-9d43-0d1c3b54d7e1".into(),
            seq: 7,
        }
    }

    /// What Python's `base64.b64decode(payload + "==")` does: standard alphabet, lenient
    /// padding.
    fn python_decode(payload: &str) -> Vec<u8> {
        let lenient = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let padded = format!("{payload}{}", "=".repeat((4 - payload.len() % 4) % 4));
        lenient
            .decode(padded)
            .or_else(|_| STANDARD.decode(payload))
            .unwrap()
    }

    #[test]
    fn token_round_trips_and_exp_matches_expires_on() {
        let minter = TokenMinter::new([7; 32]);
        let minted = minter.mint(&claims("acs:r_u"));
        assert_eq!(minter.read(&minted.token), Ok(claims("acs:r_u")));
        assert_eq!(minted.expires_on, "2026-11-19T11:06:40.0000000+00:00");
        let parsed: Timestamp = minted.expires_on.parse().unwrap();
        assert_eq!(parsed.as_second(), claims("acs:r_u").exp);
    }

    #[test]
    fn payload_is_ascii_and_decodes_with_the_standard_alphabet() {
        let minter = TokenMinter::new([1; 32]);
        // Hostile content: characters whose base64url and base64 encodings differ.
        for skypeid in ["acs:r_u", "acs:>>>???~~~", "acs:ünïcode😀", "acs:\u{7f}\n"] {
            let minted = minter.mint(&claims(skypeid));
            assert!(minted.token.is_ascii());
            let payload = minted.token.split('.').nth(1).unwrap();
            assert!(
                !payload.contains(['-', '_']),
                "payload uses url-safe-only characters: {payload}"
            );
            let decoded: TokenClaims = serde_json::from_slice(&python_decode(payload)).unwrap();
            assert_eq!(decoded.skypeid, skypeid);
            assert_eq!(decoded.exp, 1_795_086_400);
        }
    }

    #[test]
    fn header_decodes_as_a_jwt_header() {
        let minted = TokenMinter::new([1; 32]).mint(&claims("acs:r_u"));
        let header = minted.token.split('.').next().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&python_decode(header)).unwrap();
        assert_eq!(json["alg"], "HS256");
        assert_eq!(json["typ"], "JWT");
    }

    #[test]
    fn other_instances_and_garbage_are_rejected() {
        let minted = TokenMinter::new([1; 32]).mint(&claims("acs:r_u"));
        assert_eq!(
            TokenMinter::new([2; 32]).read(&minted.token),
            Err(TokenError::ForeignSignature)
        );
        let minter = TokenMinter::new([1; 32]);
        for garbage in ["", "a.b", "a.b.c.d", "eyJ.eyJ.sig", "x.e30.sig"] {
            assert_eq!(
                minter.read(garbage),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
        let mut tampered = minted.token.clone();
        tampered.push('A');
        assert!(minter.read(&tampered).is_err());
    }

    #[test]
    fn tokens_are_standard_jwts_both_ways() {
        let minter = TokenMinter::new([3; 32]);
        // Another JWT implementation reads ours...
        let minted = minter.mint(&claims("acs:r_u"));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        let read = jsonwebtoken::decode::<TokenClaims>(
            &minted.token,
            &DecodingKey::from_secret(&[3; 32]),
            &validation,
        )
        .unwrap();
        assert_eq!(read.claims, claims("acs:r_u"));
        // ...and ours reads a token it wrote with the same secret.
        let foreign_made = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims("acs:r_v"),
            &EncodingKey::from_secret(&[3; 32]),
        )
        .unwrap();
        assert_eq!(minter.read(&foreign_made), Ok(claims("acs:r_v")));
        // Another algorithm, even with the right secret, is not one of ours.
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS512),
            &claims("acs:r_v"),
            &EncodingKey::from_secret(&[3; 32]),
        )
        .unwrap();
        assert_eq!(minter.read(&hs512), Err(TokenError::Malformed));
    }

    #[test]
    fn debug_hides_the_token() {
        let minted = TokenMinter::new([1; 32]).mint(&claims("acs:r_u"));
        assert!(!format!("{minted:?}").contains(&minted.token));
    }
}

//! What an ACS access token says about itself. ACS tokens are JWTs whose payload names the
//! identity (`skypeid`), the scopes (`acsScope`) and the issue and expiry times; Microsoft does
//! not promise these claims, so every one is optional here and a token that is not a JWT is
//! still inspected (its claims shown as unknown). The signature is not checked: only ACS can.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde::Deserialize;

/// The claims the plugin reads, each as the token carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `8:acs:<resource>_<user>` (the claim lacks the `8:` prefix).
    pub identity_id: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    skypeid: Option<String>,
    acs_scope: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
}

/// Why a token's claims could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreadable {
    #[error("the token is not a JWT (three dot-separated parts)")]
    NotAJwt,
    #[error("the token's payload is not base64url")]
    NotBase64,
    #[error("the token's payload is not a JSON object")]
    NotJson,
}

/// Reads the claims of `token`.
pub fn claims(token: &str) -> Result<Claims, Unreadable> {
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Unreadable::NotAJwt);
    };
    let payload = payload.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .or_else(|_| STANDARD_NO_PAD.decode(payload))
        .map_err(|_| Unreadable::NotBase64)?;
    let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| Unreadable::NotJson)?;
    let time = |s: Option<i64>| s.and_then(|s| Timestamp::from_second(s).ok());
    Ok(Claims {
        identity_id: payload.skypeid.map(|s| format!("8:{s}")),
        scopes: payload
            .acs_scope
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        issued_at: time(payload.iat),
        expires_at: time(payload.exp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_the_claims_acs_tokens_carry() {
        let token = jwt(
            r#"{"skypeid":"acs:r_u","scp":1792,"csi":"1700000000","iat":1700000000,"exp":1700003600,"acsScope":"chat, voip","resourceId":"r"}"#,
        );
        let claims = claims(&token).unwrap();
        assert_eq!(claims.identity_id.as_deref(), Some("8:acs:r_u"));
        assert_eq!(claims.scopes, ["chat", "voip"]);
        assert_eq!(claims.issued_at.unwrap().as_second(), 1_700_000_000);
        assert_eq!(claims.expires_at.unwrap().as_second(), 1_700_003_600);
    }

    #[test]
    fn missing_claims_are_unknown_and_bad_tokens_say_why() {
        assert_eq!(claims(&jwt("{}")).unwrap(), Claims::default());
        let cases = [
            ("opaque", Unreadable::NotAJwt),
            ("a.b.c.d", Unreadable::NotAJwt),
            ("a.!!!.c", Unreadable::NotBase64),
            (&jwt("[1]"), Unreadable::NotJson),
            (&jwt("not json"), Unreadable::NotJson),
        ];
        for (token, why) in cases {
            assert_eq!(claims(token), Err(why), "{token}");
        }
    }

    #[test]
    fn padded_and_standard_alphabet_payloads_are_read_too() {
        let payload = STANDARD_NO_PAD.encode(r#"{"exp":1700003600}"#);
        let token = format!("h.{payload}==.s");
        assert_eq!(
            claims(&token).unwrap().expires_at.unwrap().as_second(),
            1_700_003_600
        );
    }
}

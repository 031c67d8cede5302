//! Short one-way fingerprints: enough to tell values apart or notice a change, useless for
//! recovering them. Status records them, so their bytes must never change.

use sha2::{Digest, Sha256};

/// 16 hex digits (64 bits) of SHA-256 over `parts`, a zero byte between each two, so that
/// moving a boundary (`"ab","c"` against `"a","bc"`) changes the result.
pub fn short_sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_separated_and_the_digest_is_sixteen_hex_digits() {
        let joined = short_sha256_hex(&[b"ab", b"c"]);
        assert_eq!(joined.len(), 16);
        assert!(joined.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(joined, short_sha256_hex(&[b"a", b"bc"]));
        assert_eq!(
            short_sha256_hex(&[b"a", b"b"]),
            short_sha256_hex(&[b"a\0b"])
        );
    }
}

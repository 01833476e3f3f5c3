//! API key format: `gk_<id>_<secret>`.
//!
//! * `id`: 16 lowercase hex characters (64 random bits). Not secret; it is the
//!   primary key, so a lookup is one indexed read, never a scan.
//! * `secret`: 43 base62 characters (~256 bits from the OS CSPRNG). Only its
//!   SHA-256 is stored. A slow password hash is unnecessary for a secret with
//!   this much entropy, and would put milliseconds on every Check.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub const KEY_PREFIX: &str = "gk_";
pub const ID_LEN: usize = 16;
pub const SECRET_LEN: usize = 43;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated key: the full key string is shown once, then dropped.
#[derive(Debug)]
pub struct GeneratedKey {
    pub id: String,
    pub key: Secret,
    pub secret_hash: [u8; 32],
}

/// The two halves of a presented key. Borrowed: parsing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedKey<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("API key is not in the gk_<id>_<secret> format")]
pub struct MalformedKey;

/// Whether a bearer token claims to be an API key rather than a JWT.
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

pub fn parse(key: &str) -> Result<PresentedKey<'_>, MalformedKey> {
    let rest = key.strip_prefix(KEY_PREFIX).ok_or(MalformedKey)?;
    if rest.len() != ID_LEN + 1 + SECRET_LEN || !rest.is_char_boundary(ID_LEN) {
        return Err(MalformedKey);
    }
    let (id, sep_secret) = rest.split_at(ID_LEN);
    let secret = sep_secret.strip_prefix('_').ok_or(MalformedKey)?;
    if !is_valid_id(id) || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(MalformedKey);
    }
    Ok(PresentedKey { id, secret })
}

/// Key ids as they appear in URLs and CLI arguments.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn verify(secret: &str, stored_hash: &[u8; 32]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

pub fn generate() -> GeneratedKey {
    let mut id_bytes = [0u8; ID_LEN / 2];
    fill_random(&mut id_bytes);
    let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = random_base62(SECRET_LEN);
    let secret_hash = hash_secret(&secret);
    GeneratedKey { key: Secret::new(format!("{KEY_PREFIX}{id}_{secret}")), id, secret_hash }
}

/// `len` characters drawn uniformly from the base62 alphabet (rejection sampling,
/// so no character is more likely than another).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill_random(&mut buf);
        for &b in &buf {
            // 248 = 4 * 62: bytes at or above it would bias the first symbols.
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

pub fn fill_random(buf: &mut [u8]) {
    // Without an OS random source there is no safe way to go on.
    #[expect(clippy::expect_used, reason = "no CSPRNG means no safe way to continue")]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let k = generate();
        let p = parse(k.key.expose()).unwrap();
        assert_eq!(p.id, k.id);
        assert!(verify(p.secret, &k.secret_hash));
        assert!(!verify("wrong", &k.secret_hash));
        assert_eq!(k.key.expose().len(), KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
    }

    #[test]
    fn keys_are_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a.id, b.id);
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn rejects_malformed_keys() {
        let good = generate().key.expose().to_owned();
        for bad in [
            "",
            "gk_",
            "sk-abc",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen("gk_", "GK_", 1),
            &good.replace('_', "-"),
            &format!("gk_{}_{}", "G".repeat(ID_LEN), "a".repeat(SECRET_LEN)),
            &format!("gk_{}_{}", "a".repeat(ID_LEN), "é".repeat(SECRET_LEN / 2)),
            &format!("gk_{}é{}", "a".repeat(ID_LEN - 1), "a".repeat(SECRET_LEN)),
        ] {
            assert_eq!(parse(bad), Err(MalformedKey), "{bad:?}");
        }
    }
}

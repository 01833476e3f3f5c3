//! API key format: `gk_<id>_<secret><check>`.
//!
//! * `id`: 16 lowercase hex characters (64 random bits). Not secret; it is the
//!   primary key, so a lookup is one indexed read, never a scan.
//! * `secret`: 43 base62 characters (~256 bits from the OS CSPRNG). Only its
//!   SHA-256 is stored. A slow password hash is unnecessary for a secret with
//!   this much entropy, and would put milliseconds on every Check.
//! * `check`: the CRC32 of everything before it, as 6 base62 characters. A
//!   random, truncated or mistyped key fails here, before any lookup, so a
//!   flood of made-up keys costs no database query.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub const KEY_PREFIX: &str = "gk_";
pub const ID_LEN: usize = 16;
pub const SECRET_LEN: usize = 43;
pub const CHECK_LEN: usize = 6;
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
#[error("API key is not in the gk_<id>_<secret> format, or its check digits are wrong")]
pub struct MalformedKey;

/// Whether a bearer token claims to be an API key rather than a JWT.
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

pub fn parse(key: &str) -> Result<PresentedKey<'_>, MalformedKey> {
    let rest = key.strip_prefix(KEY_PREFIX).ok_or(MalformedKey)?;
    if rest.len() != ID_LEN + 1 + SECRET_LEN + CHECK_LEN || !key.is_ascii() {
        return Err(MalformedKey);
    }
    let (body, check) = key.split_at(key.len() - CHECK_LEN);
    if check_digits(body) != check.as_bytes() {
        return Err(MalformedKey);
    }
    let (id, sep_secret) = rest[..ID_LEN + 1 + SECRET_LEN].split_at(ID_LEN);
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

/// A short, non-secret name for a stored secret hash, as the audit log shows
/// it: `sha256:` and the first 12 hex digits of the hash.
pub fn fingerprint(hash: &[u8; 32]) -> String {
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn verify(secret: &str, stored_hash: &[u8; 32]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

pub fn generate() -> GeneratedKey {
    let mut id_bytes = [0u8; ID_LEN / 2];
    fill_random(&mut id_bytes);
    let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    generate_for(id)
}

/// A new secret for an existing key id (rotation).
pub fn generate_for(id: String) -> GeneratedKey {
    let secret = random_base62(SECRET_LEN);
    let secret_hash = hash_secret(&secret);
    GeneratedKey { key: Secret::new(assemble(&id, &secret)), id, secret_hash }
}

/// The full key for an id and a secret, check digits included.
pub fn assemble(id: &str, secret: &str) -> String {
    let body = format!("{KEY_PREFIX}{id}_{secret}");
    let check = check_digits(&body);
    body + std::str::from_utf8(&check).unwrap_or_default()
}

/// CRC32 (IEEE) of `body` as 6 base62 digits.
fn check_digits(body: &str) -> [u8; CHECK_LEN] {
    let crc = body.bytes().fold(!0u32, |crc, b| (crc >> 8) ^ CRC32_TABLE[usize::from((crc as u8) ^ b)]);
    let mut n = u64::from(!crc);
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// CRC32 (IEEE, reflected) one byte at a time.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

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
        assert_eq!(k.key.expose().len(), KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN + CHECK_LEN);
    }

    #[test]
    fn keys_are_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a.id, b.id);
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn check_digits_catch_typos() {
        // CRC32("123456789") is the standard check value 0xCBF43926.
        let mut n = 0xCBF4_3926_u64;
        let mut expected = String::new();
        for _ in 0..CHECK_LEN {
            expected.insert(0, BASE62[(n % 62) as usize] as char);
            n /= 62;
        }
        assert_eq!(check_digits("123456789"), expected.as_bytes());
        let key = generate().key.expose().to_owned();
        let mut typo = key.clone().into_bytes();
        typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(std::str::from_utf8(&typo).unwrap()), Err(MalformedKey));
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
            &assemble(&"G".repeat(ID_LEN), &"a".repeat(SECRET_LEN)),
            &assemble(&"a".repeat(ID_LEN), &"-".repeat(SECRET_LEN)),
            &format!("gk_{}é{}", "a".repeat(ID_LEN - 1), "a".repeat(SECRET_LEN + CHECK_LEN)),
            &format!("gk_{}_{}", "a".repeat(ID_LEN), "a".repeat(SECRET_LEN + CHECK_LEN)),
        ] {
            assert_eq!(parse(bad), Err(MalformedKey), "{bad:?}");
        }
    }
}

//! Passwords: argon2id with the crate's recommended parameters (19 MiB, 2
//! passes). Hashing is CPU-bound for tens of milliseconds, so callers run it on
//! the blocking pool.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::secret::Secret;

/// Longest password accepted: hashing cost must not be the caller's to choose.
pub const MAX_LEN: usize = 1024;

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

pub fn hash(password: &Secret) -> String {
    let mut salt = [0u8; 16];
    crate::authn::api_key::fill_random(&mut salt);
    #[expect(clippy::expect_used, reason = "16 random bytes always make a valid salt")]
    let salt = SaltString::encode_b64(&salt).expect("valid salt");
    #[expect(clippy::expect_used, reason = "default argon2id parameters cannot fail")]
    argon2().hash_password(password.expose().as_bytes(), &salt).expect("argon2id hashing").to_string()
}

/// Verifies `password` against a stored hash. With no hash (unknown user, or a
/// user without a password) a dummy hash is checked, so the answer takes as
/// long either way and timing does not reveal which accounts exist.
pub fn verify(password: &Secret, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash(&Secret::new("gatehouse-dummy-password")));
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    argon2().verify_password(password.expose().as_bytes(), &parsed).is_ok() && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let pw = Secret::new("correct horse battery staple");
        let a = hash(&pw);
        let b = hash(&pw);
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify(&pw, Some(&a)));
        assert!(!verify(&Secret::new("wrong"), Some(&a)));
        assert!(!verify(&pw, None));
        assert!(!verify(&pw, Some("not a hash")));
    }
}

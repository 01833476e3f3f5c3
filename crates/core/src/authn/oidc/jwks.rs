//! A provider's signing keys: the JWKS read with a cap on its keys, and
//! which algorithms each key may verify.

use super::*;

pub(super) struct KeyEntry {
    pub(super) key: DecodingKey,
    /// The JWK's own `alg`, when it states one.
    pub(super) alg: Option<Algorithm>,
    pub(super) family: KeyFamily,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

/// A JWKS of which at most [`MAX_JWKS_KEYS`] keys are parsed.
#[derive(Deserialize)]
pub(super) struct CappedJwks {
    pub(super) keys: CappedKeys,
}

pub(super) struct CappedKeys {
    pub(super) taken: Vec<Jwk>,
    pub(super) ignored: usize,
}

impl<'de> Deserialize<'de> for CappedKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CappedKeys;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of JWKs")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<CappedKeys, A::Error> {
                let mut keys = CappedKeys { taken: Vec::new(), ignored: 0 };
                while keys.taken.len() < MAX_JWKS_KEYS {
                    match seq.next_element::<Jwk>()? {
                        Some(jwk) => keys.taken.push(jwk),
                        None => return Ok(keys),
                    }
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    keys.ignored += 1;
                }
                Ok(keys)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

pub(super) fn key_entry(jwk: &Jwk) -> Option<KeyEntry> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Okp,
        // A symmetric key in a JWKS would let anyone who reads it sign tokens.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
    Some(KeyEntry { key: DecodingKey::from_jwk(jwk).ok()?, alg, family })
}

/// Never `none` or HMAC; the header's algorithm must be the key's own, or of
/// the key's family when the key does not say.
pub(super) fn algorithm_fits(alg: Algorithm, entry: &KeyEntry) -> bool {
    use Algorithm::*;
    let family = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyFamily::Rsa,
        ES256 | ES384 => KeyFamily::Ec,
        EdDSA => KeyFamily::Okp,
        HS256 | HS384 | HS512 => return false,
    };
    family == entry.family && entry.alg.is_none_or(|a| a == alg)
}

//! Gatehouse's own session tokens (JWT).
//!
//! The algorithm is pinned to the configured one: a token whose header names
//! any other (`none`, or HS256 when the key is RSA) is refused before its
//! signature is looked at. Times are checked here, against the caller's clock,
//! with a small leeway, so "expired" can be told apart from "invalid".

use std::path::Path;

use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{Denial, User};
use crate::secret::Secret;

/// Shortest accepted HS256 secret.
pub const MIN_SECRET_LEN: usize = 32;
/// How long a session lasts from its login, however often it is refreshed,
/// unless configured.
pub const DEFAULT_SESSION_MAX_SECONDS: i64 = 30 * 86_400;

/// The claims of a Gatehouse token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    /// The role when the token was issued; Check uses the user's current role.
    pub role: String,
    pub group: String,
    pub jti: String,
    /// When issued; never at or before the user's `tokens_valid_after`.
    pub iat: i64,
    /// When the user logged in: carried unchanged through refreshes, which
    /// stop at `auth_time` plus the session lifetime. Tokens without it (from
    /// before it existed) cannot be refreshed.
    #[serde(default)]
    pub auth_time: i64,
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

#[derive(Clone, Debug)]
pub struct JwtSettings {
    pub algorithm: Algorithm,
    pub issuer: String,
    pub audience: String,
    pub expiry_seconds: i64,
    pub leeway_seconds: i64,
    /// How long after expiry a token may still be exchanged at /auth/refresh.
    pub refresh_grace_seconds: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("JWT_SECRET must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    #[error("JWT_ALGORITHM {0:?} needs JWT_PRIVATE_KEY_FILE")]
    MissingKeyFile(Algorithm),
    #[error("JWT_ALGORITHM {0:?} is not supported (use HS256, RS256, ES256 or EdDSA)")]
    Unsupported(Algorithm),
    #[error("cannot read JWT_PRIVATE_KEY_FILE {0}: {1}")]
    Read(String, std::io::Error),
    #[error("JWT_PRIVATE_KEY_FILE is not a valid {0:?} private key in PEM: {1}")]
    Invalid(Algorithm, String),
}

/// Signing and verification keys, and the public JWK for asymmetric keys.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: Option<String>,
    public: Option<Jwk>,
}

impl JwtKeys {
    pub fn hmac(secret: &Secret) -> Result<Self, KeyError> {
        if secret.expose().len() < MIN_SECRET_LEN {
            return Err(KeyError::ShortSecret);
        }
        let bytes = secret.expose().as_bytes();
        Ok(JwtKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            kid: None,
            public: None,
        })
    }

    /// A random HS256 key for this process only.
    pub fn ephemeral() -> Self {
        let secret = Secret::new(crate::authn::api_key::random_base62(48));
        #[expect(clippy::expect_used, reason = "48 characters is above the minimum")]
        JwtKeys::hmac(&secret).expect("a 48-character secret is long enough")
    }

    pub fn from_pem_file(algorithm: Algorithm, path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|e| {
            let shown = path.display().to_string();
            // A key pasted where its file's path belongs: never print it.
            let looks_like_a_key = shown.contains("-----BEGIN") || shown.contains('\n') || shown.len() > 4096;
            KeyError::Read(if looks_like_a_key { "(the value is a key, not a file path)".into() } else { shown }, e)
        })?;
        JwtKeys::from_pem(algorithm, &pem)
    }

    pub fn from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid(algorithm, e.to_string());
        let (encoding, mut jwk) = match algorithm {
            Algorithm::RS256 | Algorithm::PS256 => {
                let key = EncodingKey::from_rsa_pem(pem).map_err(invalid)?;
                let jwk = Jwk::from_encoding_key(&key, algorithm).map_err(invalid)?;
                (key, jwk)
            }
            Algorithm::ES256 => {
                let key = EncodingKey::from_ec_pem(pem).map_err(invalid)?;
                let jwk = Jwk::from_encoding_key(&key, algorithm).map_err(invalid)?;
                (key, jwk)
            }
            Algorithm::EdDSA => {
                let key = EncodingKey::from_ed_pem(pem).map_err(invalid)?;
                let jwk = ed25519_jwk(key.inner()).ok_or(KeyError::Invalid(algorithm, "not an Ed25519 key".into()))?;
                (key, jwk)
            }
            other => return Err(KeyError::Unsupported(other)),
        };
        let decoding = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(JwtKeys { encoding, decoding, kid: Some(kid), public: Some(jwk) })
    }
}

/// The public JWK of an Ed25519 private key in PKCS#8 DER, v1 or v2 (RFC
/// 5958: a v2 key carries its public key too, which must match the seed).
fn ed25519_jwk(pkcs8: &[u8]) -> Option<Jwk> {
    use base64::Engine;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let public = ed25519_dalek::SigningKey::from_pkcs8_der(pkcs8).ok()?.verifying_key();
    Some(Jwk {
        common: CommonParameters { key_algorithm: Some(KeyAlgorithm::EdDSA), ..Default::default() },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_bytes()),
        }),
    })
}

#[derive(Serialize, Deserialize)]
struct StateEnvelope<T> {
    aud: String,
    iss: String,
    exp: i64,
    payload: T,
}

/// A token just issued.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: Secret,
    pub jti: String,
    pub expires_at: i64,
    pub expires_in: i64,
}

pub struct Jwt {
    keys: JwtKeys,
    settings: JwtSettings,
    validation: Validation,
    /// A session's absolute lifetime, from its login.
    session_max_seconds: i64,
}

impl Jwt {
    pub fn new(keys: JwtKeys, settings: JwtSettings) -> Self {
        let mut validation = Validation::new(settings.algorithm);
        validation.algorithms = vec![settings.algorithm];
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Times are checked in `check_times` against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Jwt { keys, settings, validation, session_max_seconds: DEFAULT_SESSION_MAX_SECONDS }
    }

    /// Sets how long a session lasts from its login, refreshes included.
    #[must_use]
    pub fn with_session_max(mut self, seconds: i64) -> Self {
        self.session_max_seconds = seconds;
        self
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    pub fn session_max_seconds(&self) -> i64 {
        self.session_max_seconds
    }

    /// A token for a new session (a login).
    pub fn issue(&self, user: &User, now: i64) -> Result<IssuedToken, Denial> {
        self.sign(user, now, now)
    }

    /// The next token of a session that began at `auth_time`: refused once
    /// the session's lifetime is over, and never valid past it.
    pub fn continue_session(&self, user: &User, now: i64, auth_time: i64) -> Result<IssuedToken, Denial> {
        if auth_time <= 0 || self.session_end(auth_time) <= now {
            return Err(Denial::Expired);
        }
        self.sign(user, now, auth_time)
    }

    fn session_end(&self, auth_time: i64) -> i64 {
        auth_time.saturating_add(self.session_max_seconds)
    }

    fn sign(&self, user: &User, now: i64, auth_time: i64) -> Result<IssuedToken, Denial> {
        let jti = uuid::Uuid::new_v4().to_string();
        let exp = (now + self.settings.expiry_seconds).min(self.session_end(auth_time));
        // After the user's sessions were ended in this very second, a new
        // token must still be told apart from the ended ones, which were
        // issued at or before `tokens_valid_after`.
        let iat = now.max(user.tokens_valid_after.saturating_add(1));
        let claims = Claims {
            sub: user.id.clone(),
            email: user.email.clone(),
            role: user.role.to_string(),
            group: user.group.clone(),
            jti: jti.clone(),
            iat,
            auth_time,
            nbf: now,
            exp,
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
        };
        let mut header = Header::new(self.settings.algorithm);
        header.kid = self.keys.kid.clone();
        let token = jsonwebtoken::encode(&header, &claims, &self.keys.encoding).map_err(|e| {
            tracing::error!(error = %e, "could not sign a token");
            Denial::BackendUnavailable
        })?;
        Ok(IssuedToken { token: Secret::new(token), jti, expires_at: exp, expires_in: exp - now })
    }

    /// Full verification: signature, algorithm, issuer, audience, times.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Denial> {
        let claims = self.decode(token)?;
        self.check_times(&claims, now, 0)?;
        Ok(claims)
    }

    /// As [`Jwt::verify`], but a token that expired less than the refresh
    /// grace window ago is still accepted.
    pub fn verify_for_refresh(&self, token: &str, now: i64) -> Result<Claims, Denial> {
        let claims = self.decode(token)?;
        self.check_times(&claims, now, self.settings.refresh_grace_seconds)?;
        Ok(claims)
    }

    fn decode(&self, token: &str) -> Result<Claims, Denial> {
        jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| Denial::InvalidCredential)
    }

    fn check_times(&self, claims: &Claims, now: i64, grace: i64) -> Result<(), Denial> {
        let leeway = self.settings.leeway_seconds;
        if claims.nbf > now + leeway {
            return Err(Denial::InvalidCredential);
        }
        if claims.exp + leeway + grace <= now {
            return Err(Denial::Expired);
        }
        Ok(())
    }

    /// Signs short-lived data that must come back unchanged (the login state
    /// cookie). Its audience differs from session tokens', so one can never
    /// pass for the other.
    pub fn sign_state<T: Serialize>(&self, payload: &T, now: i64, ttl: i64) -> Result<String, Denial> {
        let envelope =
            StateEnvelope { aud: self.state_audience(), iss: self.settings.issuer.clone(), exp: now + ttl, payload };
        let mut header = Header::new(self.settings.algorithm);
        header.kid = self.keys.kid.clone();
        jsonwebtoken::encode(&header, &envelope, &self.keys.encoding).map_err(|_| Denial::BackendUnavailable)
    }

    pub fn verify_state<T: serde::de::DeserializeOwned>(&self, token: &str, now: i64) -> Result<T, Denial> {
        let mut validation = Validation::new(self.settings.algorithm);
        validation.algorithms = vec![self.settings.algorithm];
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[self.state_audience()]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<StateEnvelope<T>>(token, &self.keys.decoding, &validation)
            .map_err(|_| Denial::InvalidRequest("invalid or missing login state"))?;
        if data.claims.exp <= now {
            return Err(Denial::InvalidRequest("the login took too long, start again"));
        }
        Ok(data.claims.payload)
    }

    fn state_audience(&self) -> String {
        format!("{}/login-state", self.settings.audience)
    }

    /// The public keys, for `/.well-known/jwks.json` (none for HS256).
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.keys.public.iter().cloned().collect() }
    }
}

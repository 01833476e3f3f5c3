//! The HTTP client that reads providers' discovery documents and JWKS, and
//! exchanges login codes: short timeouts and no redirects, so a slow or
//! hostile provider cannot hold requests for long or send them elsewhere;
//! every answer read with a size cap.

use std::time::Duration;

use gatehouse_core::authn::oidc::{Fetch, OidcError};

/// The client for providers.
pub fn http_client() -> Result<reqwest::Client, OidcError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| OidcError::Invalid(e.to_string()))
}

/// A transport error, without the URL (it may carry a code or a secret).
pub fn http_error(e: reqwest::Error) -> OidcError {
    OidcError::Http(e.without_url().to_string())
}

/// A response's body, read as it arrives and refused as soon as it passes
/// `limit` bytes (or when its announced length does), so no more than
/// `limit` bytes are ever held.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, OidcError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(OidcError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http_error)? {
        let needed = body.len() + chunk.len();
        if needed > limit {
            return Err(OidcError::TooLarge { limit });
        }
        // Grow by doubling, but never past the cap.
        if needed > body.capacity() {
            body.reserve_exact(needed.max(body.capacity() * 2).min(limit) - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`Fetch`] over reqwest.
#[derive(Clone)]
pub struct HttpFetch(pub reqwest::Client);

impl HttpFetch {
    pub fn new() -> Result<Self, OidcError> {
        http_client().map(HttpFetch)
    }
}

#[async_trait::async_trait]
impl Fetch for HttpFetch {
    async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, OidcError> {
        let response = self.0.get(url).send().await.map_err(http_error)?.error_for_status().map_err(http_error)?;
        read_capped(response, limit).await
    }
}

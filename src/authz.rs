//! The decision for one request, independent of how it arrived (Envoy's
//! ext_authz gRPC call, the `gatehouse check` command, a test).

use crate::authn::{Authenticator, credentials};
use crate::domain::{Denial, Principal};
use crate::policy::{Policy, path};
use crate::ratelimit::{LimitPolicy, Outcome};

/// The request attributes a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The path as received, with its query string.
    pub path: &'a str,
    /// The client's address as the proxy saw it.
    pub client_ip: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Denial),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// `None`: the caller is anonymous (a public route, or auth not required).
    pub principal: Option<Principal>,
    /// Whether the credential was consumed here and should be kept from the upstream.
    pub credential_used: bool,
    /// The rate limit that applied, for the `X-RateLimit-*` headers.
    pub rate: Option<Outcome>,
}

pub struct Authorizer {
    authn: Authenticator,
    policy: Policy,
    limits: LimitPolicy,
    require_auth: bool,
}

impl Authorizer {
    pub fn new(authn: Authenticator, policy: Policy, limits: LimitPolicy, require_auth: bool) -> Self {
        Authorizer { authn, policy, limits, require_auth }
    }

    pub async fn decide<'a, H>(&self, request: RequestView<'_>, headers: H, now: i64) -> Decision
    where
        H: IntoIterator<Item = (&'a str, &'a str)>,
    {
        match self.try_decide(request, headers, now).await {
            Ok(allow) => Decision::Allow(allow),
            Err(denial) => Decision::Deny(denial),
        }
    }

    pub fn authn(&self) -> &Authenticator {
        &self.authn
    }

    /// Authenticates a caller of Gatehouse's own APIs: a credential is required.
    pub async fn authenticate<'a, H>(&self, headers: H, now: i64) -> Result<Principal, Denial>
    where
        H: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let credential = credentials::extract(headers)?.ok_or(Denial::MissingCredential)?;
        self.authn.authenticate(credential, now).await
    }

    async fn try_decide<'a, H>(&self, request: RequestView<'_>, headers: H, now: i64) -> Result<Allow, Denial>
    where
        H: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let path = path::normalize(request.path).map_err(|_| Denial::InvalidRequest("ambiguous or malformed path"))?;
        let (principal, credential_used) = if self.policy.is_public(&path) {
            (None, false)
        } else {
            match credentials::extract(headers)? {
                Some(credential) => (Some(self.authn.authenticate(credential, now).await?), true),
                None if self.require_auth => return Err(Denial::MissingCredential),
                None => (None, false),
            }
        };
        let rate = self.limits.check(principal.as_ref(), request.client_ip, request.method, &path).await?;
        Ok(Allow { principal, credential_used, rate })
    }
}

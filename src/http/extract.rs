//! Request extractors for the REST API.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::HttpState;
use super::error::ApiError;
use crate::domain::{Denial, Permission, Principal};

/// A JSON body, read up to the configured size. A malformed body is refused
/// with 400 naming the field at fault; an oversized one with 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<HttpState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, ApiError> {
        read_json(req, state).await?.map(JsonBody).ok_or(ApiError::validation("body", "a JSON object is required"))
    }
}

/// A JSON body whose every field is optional: an empty body is `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<HttpState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, ApiError> {
        Ok(OptionalJsonBody(read_json(req, state).await?.unwrap_or_default()))
    }
}

/// The body as `T`; `None` when it is empty. A body must be declared JSON
/// (`application/json` or `application/*+json`): a cross-site page can send a
/// body without a CORS preflight only as a form, as text, or with no
/// `Content-Type` at all, and none of those is read. An empty body may come
/// without one (endpoints whose body is optional).
async fn read_json<T: DeserializeOwned>(req: Request, state: &HttpState) -> Result<Option<T>, ApiError> {
    let declared = req.headers().get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().is_ok_and(is_json));
    if declared == Some(false) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = state.max_body_bytes;
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| ApiError::PayloadTooLarge(limit))?;
    if declared.is_none() && !bytes.is_empty() {
        return Err(ApiError::UnsupportedMediaType);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map(Some).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let field = if path == "." { missing_field(&message).unwrap_or("body").to_owned() } else { path };
        ApiError::Validation { message: format!("invalid JSON: {message}"), field: Some(field) }
    })
}

/// `application/json` or `application/<anything>+json`, parameters aside.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|s| s.ends_with("+json") && !s.contains('/'))
}

/// `missing field `email`` -> `email`.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.split("field `").nth(1)?;
    rest.split('`').next()
}

/// Query parameters; a malformed query string is a 400 in the API's error shape.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| ApiError::validation("query", e.body_text()))
    }
}

/// The authenticated caller (API key or session token).
pub struct Caller(pub Principal);

impl FromRequestParts<HttpState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let headers = parts.headers.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("\u{0}")));
        let principal = match state.authorizer.authenticate(headers, state.clock.now()).await {
            Ok(principal) => principal,
            Err(denial) => {
                // On administrative routes, a credential that was sent and
                // refused (invalid, expired, revoked) is audited, charged to
                // the client address; a request without one is not.
                let audited = !matches!(denial, Denial::MissingCredential | Denial::BackendUnavailable);
                if audited && parts.extensions.get::<AdminArea>().is_some() {
                    let by = Audited::from_request_parts(parts, state).await?;
                    let refused = crate::audit::event(crate::domain::AuditAction::AdminDenied)
                        .target(by.endpoint.clone())
                        .detail(format!("credential refused: {}", denial.reason()));
                    by.record(refused).await;
                }
                return Err(denial.into());
            }
        };
        tracing::Span::current().record("user_id", &*principal.user_id);
        Ok(Caller(principal))
    }
}

/// Marks administrative routes, whose refusals are audited even when the
/// credential itself is refused.
#[derive(Clone, Copy, Debug)]
pub struct AdminArea;

impl Caller {
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.0.permissions.contains(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("the {permission} permission is required")))
        }
    }
}

/// Records security events for this request, with its client address and,
/// for refused calls, its method and path.
pub struct Audited {
    audit: crate::audit::Audit,
    pub client_ip: Option<String>,
    endpoint: String,
}

impl FromRequestParts<HttpState> for Audited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        Ok(Audited {
            audit: state.audit.clone(),
            client_ip: ip.map(|ip| ip.to_string()),
            // Nested routers see their own suffix; the full path is the original one.
            endpoint: match parts.extensions.get::<axum::extract::OriginalUri>() {
                Some(original) => format!("{} {}", parts.method, original.path()),
                None => format!("{} {}", parts.method, parts.uri.path()),
            },
        })
    }
}

impl Audited {
    /// The caller as the account service's actor, through the REST door.
    pub fn acting<'a>(&'a self, caller: &'a Principal) -> crate::accounts::Acting<'a> {
        crate::accounts::Acting::caller(caller, crate::accounts::Door::Rest, self.client_ip.as_deref())
    }

    pub async fn record(&self, event: crate::domain::NewAuditEvent) {
        self.audit.record(event.client_ip(self.client_ip.as_deref())).await;
    }

    /// `caller.require(permission)`, recording a refusal as `admin.denied`.
    pub async fn require(&self, caller: &Caller, permission: Permission) -> Result<(), ApiError> {
        let allowed = caller.require(permission);
        if allowed.is_err() {
            let event = crate::audit::event(crate::domain::AuditAction::AdminDenied)
                .actor(&*caller.0.user_id)
                .target(self.endpoint.clone())
                .detail(format!("missing permission {permission}"));
            self.record(event).await;
        }
        allowed
    }
}

/// The connection's peer address, over TCP or TLS.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::HttpsListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::HttpsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The client's address: the connection's peer, or, behind
/// `trusted_proxy_hops` proxies, the `X-Forwarded-For` entry the outermost
/// trusted proxy appended. Entries a client wrote itself are never used.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<HttpState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<PeerAddr>>().map(|c| c.0.0.ip());
        if state.trusted_proxy_hops == 0 {
            return Ok(ClientIp(peer));
        }
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let from_proxy = forwarded
            .len()
            .checked_sub(state.trusted_proxy_hops)
            .and_then(|i| forwarded.get(i))
            .and_then(|s| s.parse().ok());
        Ok(ClientIp(from_proxy.or(peer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_field() {
        assert_eq!(missing_field("missing field `password` at line 1 column 2"), Some("password"));
        assert_eq!(missing_field("expected value"), None);
    }

    #[test]
    fn only_json_types_are_json() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "application/merge-patch+json",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/json5",
            "application/x/y+json",
            "",
        ] {
            assert!(!is_json(other), "{other}");
        }
    }
}

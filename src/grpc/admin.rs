//! `gatehouse.admin.v1.KeyAdmin`: key administration over gRPC. Translates to
//! and from [`Accounts`]; the rules live there.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::accounts::{AccountError, Accounts, Acting, Door, KeyRequest};
use crate::audit::{Audit, event};
use crate::authz::Authorizer;
use crate::domain::{ApiKey, AuditAction, Denial, NewAuditEvent, Permission, Principal};

pub mod pb {
    tonic::include_proto!("gatehouse.admin.v1");
}

use pb::key_admin_server::KeyAdmin;

#[derive(Clone)]
pub struct AdminService {
    authorizer: Arc<Authorizer>,
    accounts: Accounts,
    audit: Audit,
}

impl AdminService {
    pub fn new(authorizer: Arc<Authorizer>, accounts: Accounts) -> Self {
        let audit = accounts.audit().clone();
        AdminService { authorizer, accounts, audit }
    }

    pub fn into_server(self) -> pb::key_admin_server::KeyAdminServer<Self> {
        pb::key_admin_server::KeyAdminServer::new(self)
    }

    /// The caller, who must hold `manage_users`; a refusal is audited.
    async fn admin<T>(&self, request: &Request<T>, method: &str, now: i64) -> Result<Principal, Status> {
        let headers = request.metadata().iter().filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str(), v.to_str().unwrap_or("\u{0}"))),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        });
        let principal = match self.authorizer.authenticate(headers, now).await {
            Ok(principal) => principal,
            Err(d) => {
                // A credential sent and refused is audited, charged to the
                // client address (bounded like every refusal); none sent is not.
                if !matches!(d, Denial::MissingCredential | Denial::BackendUnavailable) {
                    let refused = event(AuditAction::AdminDenied)
                        .target(format!("gRPC gatehouse.admin.v1.KeyAdmin/{method}"))
                        .detail(format!("credential refused: {}", d.reason()));
                    self.record(request, refused).await;
                }
                return Err(denial_status(&d));
            }
        };
        if !principal.permissions.contains(Permission::ManageUsers) {
            let denied = event(AuditAction::AdminDenied)
                .actor(&*principal.user_id)
                .target(format!("gRPC gatehouse.admin.v1.KeyAdmin/{method}"))
                .detail("missing permission manage_users");
            self.record(request, denied).await;
            return Err(Status::permission_denied("the manage_users permission is required"));
        }
        Ok(principal)
    }

    async fn record<T>(&self, request: &Request<T>, event: NewAuditEvent) {
        let ip = request.remote_addr().map(|a| a.ip().to_string());
        self.audit.record(event.client_ip(ip.as_deref())).await;
    }
}

fn denial_status(d: &Denial) -> Status {
    crate::render::grpc_status(d)
}

fn account_status(e: AccountError) -> Status {
    match e {
        AccountError::Validation { .. } => Status::invalid_argument(e.to_string()),
        AccountError::NotFound(_) => Status::not_found(e.to_string()),
        AccountError::Conflict(_) => Status::already_exists(e.to_string()),
        AccountError::Forbidden(_) | AccountError::Refused(_) => Status::permission_denied(e.to_string()),
        AccountError::InvalidLogin => Status::unauthenticated(e.to_string()),
        AccountError::Busy(_) => Status::unavailable(e.to_string()),
        AccountError::Store(s) if s.is_unavailable() => Status::unavailable("database unavailable"),
        AccountError::Store(s) => {
            tracing::error!(error = %s, "admin API store error");
            Status::internal("internal error")
        }
    }
}

fn key_message(k: &ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        user_id: k.user_id.clone(),
        permissions: k.permissions.map(|p| p.names().into_iter().map(str::to_owned).collect()).unwrap_or_default(),
        inherits_permissions: k.permissions.is_none(),
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        created_at: k.created_at,
        last_used_at: k.last_used_at,
        allowed_models: k.models.as_ref().map(|m| m.names().to_vec()).unwrap_or_default(),
        token_limit: k.budget.tokens.map(|t| t.to_string()),
        spend_limit: k.budget.spend.map(|s| s.to_string()),
    }
}

#[tonic::async_trait]
impl KeyAdmin for AdminService {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let now = self.accounts.clock().now();
        let caller = self.admin(&request, "CreateKey", now).await?;
        let ip = request.remote_addr().map(|a| a.ip().to_string());
        let by = Acting::caller(&caller, Door::Grpc, ip.as_deref());
        let req = request.into_inner();
        let request = KeyRequest {
            name: &req.name,
            permissions: (!req.permissions.is_empty()).then_some(req.permissions.as_slice()),
            expires_in_days: req.expires_in_days,
            models: (!req.allowed_models.is_empty()).then_some(req.allowed_models.as_slice()),
            budget: crate::accounts::parse_budget(req.token_limit.as_deref(), req.spend_limit.as_deref())
                .map_err(account_status)?,
        };
        let (key, secret) =
            self.accounts.create_key(&by, Some(&req.user), request, now).await.map_err(account_status)?;
        tracing::info!(actor = %caller.user_id, key_id = %key.id, owner = %key.user_id, "API key created over gRPC");
        Ok(Response::new(pb::CreateKeyResponse { key: Some(key_message(&key)), secret: secret.expose().to_owned() }))
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.admin(&request, "ListKeys", self.accounts.clock().now()).await?;
        let user = request.into_inner().user;
        let user_id = match user.as_str() {
            "" => None,
            u => Some(self.accounts.find_user(u).await.map_err(account_status)?.id),
        };
        let keys = self.accounts.list_keys(user_id.as_deref()).await.map_err(account_status)?;
        Ok(Response::new(pb::ListKeysResponse { keys: keys.iter().map(key_message).collect() }))
    }

    async fn revoke_key(&self, request: Request<pb::RevokeKeyRequest>) -> Result<Response<pb::ApiKey>, Status> {
        let now = self.accounts.clock().now();
        let caller = self.admin(&request, "RevokeKey", now).await?;
        let ip = request.remote_addr().map(|a| a.ip().to_string());
        let by = Acting::caller(&caller, Door::Grpc, ip.as_deref());
        let key = self.accounts.revoke_key(&by, &request.get_ref().id, now).await.map_err(account_status)?;
        tracing::info!(actor = %caller.user_id, key_id = %key.id, "API key revoked over gRPC");
        Ok(Response::new(key_message(&key)))
    }
}

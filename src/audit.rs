//! Recording security events (see [`crate::domain::audit`]): stored for
//! `GET /auth/audit`, and logged under the `audit` target.

use crate::domain::{AuditAction, NewAuditEvent};
use crate::store::DynStore;

#[derive(Clone)]
pub struct Audit {
    store: DynStore,
}

impl Audit {
    pub fn new(store: DynStore) -> Self {
        Audit { store }
    }

    /// Stores `event`. The operation it describes has already happened (or
    /// been refused), so a failure to store is logged and counted, not
    /// reported to the caller.
    pub async fn record(&self, event: NewAuditEvent) {
        tracing::info!(
            target: "audit",
            action = event.action.as_str(),
            outcome = event.action.outcome().as_str(),
            actor_id = event.actor_id.as_deref(),
            target = event.target.as_deref(),
            client_ip = event.client_ip.as_deref(),
            detail = event.detail.as_deref(),
            "audit event"
        );
        if let Err(e) = self.store.record_audit(&event).await {
            metrics::counter!("gatehouse_audit_write_errors_total").increment(1);
            tracing::error!(error = %e, action = event.action.as_str(), "could not store an audit event");
        }
    }
}

/// An event being described: `Audit::record(event(...).actor(..).target(..))`.
pub fn event(action: AuditAction) -> NewAuditEvent {
    NewAuditEvent { at: crate::app::now(), action, actor_id: None, target: None, client_ip: None, detail: None }
}

impl NewAuditEvent {
    pub fn actor(mut self, id: impl Into<String>) -> Self {
        self.actor_id = Some(id.into());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn client_ip(mut self, ip: Option<&str>) -> Self {
        self.client_ip = ip.map(str::to_owned);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

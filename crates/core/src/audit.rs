//! Recording security events (see [`crate::domain::audit`]): stored for
//! `GET /auth/audit`, and logged under the `audit` target.
//!
//! Every field is escaped and capped before it is stored or logged (see
//! [`crate::redact::escape`]), and refused administrative calls
//! (`admin.denied`) are stored at most [`DENIED_PER_MINUTE`] times a minute
//! per caller (the acting user, or the client address when the credential
//! was refused) and [`DENIED_PER_MINUTE_TOTAL`] times a minute in all: the
//! rest are counted in `gatehouse_audit_suppressed_total`, and the caller's
//! next stored refusal says how many were left out. So refused calls cannot
//! grow the audit table or the log faster than that.

use crate::clock::SharedClock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use crate::domain::{AuditAction, NewAuditEvent};
use crate::redact::{PATH_CAP, escape, redact_emails};
use crate::store::DynStore;

/// `admin.denied` events stored per caller per minute.
pub const DENIED_PER_MINUTE: u32 = 10;
/// `admin.denied` events stored per minute by this process, all callers together.
pub const DENIED_PER_MINUTE_TOTAL: u32 = 300;
/// Callers tracked at once; past this, refusals of new callers are counted only.
const MAX_TRACKED: usize = 10_000;

/// The longest `detail` stored, in bytes.
pub const DETAIL_CAP: usize = 512;
const ACTOR_CAP: usize = 128;
const CLIENT_IP_CAP: usize = 64;

#[derive(Clone)]
pub struct Audit {
    store: DynStore,
    clock: SharedClock,
}

impl Audit {
    pub fn new(store: DynStore, clock: SharedClock) -> Self {
        Audit { store, clock }
    }

    /// Stores `event`. The operation it describes has already happened (or
    /// been refused), so a failure to store is logged and counted, not
    /// reported to the caller.
    pub async fn record(&self, event: NewAuditEvent) {
        let mut event = bounded(event);
        if event.at == 0 {
            event.at = self.clock.now();
        }
        if event.action == AuditAction::AdminDenied {
            match admit_denied(&event) {
                Admit::Store { left_out: 0 } => {}
                Admit::Store { left_out } => {
                    let detail = event.detail.take().unwrap_or_default();
                    event.detail =
                        Some(format!("{detail} [{left_out} earlier refusals of this caller were not stored]"));
                }
                Admit::Drop => return,
            }
        }
        let target = event.target.as_deref().map(redact_emails);
        let detail = event.detail.as_deref().map(redact_emails);
        tracing::info!(
            target: "audit",
            action = event.action.as_str(),
            outcome = event.action.outcome().as_str(),
            actor_id = event.actor_id.as_deref(),
            target = target.as_deref(),
            client_ip = event.client_ip.as_deref(),
            detail = detail.as_deref(),
            "audit event"
        );
        if let Err(e) = self.store.record_audit(&event).await {
            metrics::counter!("gatehouse_audit_write_errors_total").increment(1);
            tracing::error!(error = %e, action = event.action.as_str(), "could not store an audit event");
        }
    }
}

/// `event` with every field escaped and capped.
fn bounded(mut event: NewAuditEvent) -> NewAuditEvent {
    let cap = |value: &mut Option<String>, cap: usize| {
        if let Some(v) = value.as_mut()
            && let std::borrow::Cow::Owned(escaped) = escape(v, cap)
        {
            *v = escaped;
        }
    };
    cap(&mut event.actor_id, ACTOR_CAP);
    cap(&mut event.target, PATH_CAP);
    cap(&mut event.client_ip, CLIENT_IP_CAP);
    cap(&mut event.detail, DETAIL_CAP);
    event
}

enum Admit {
    /// Store it; `left_out` refusals of this caller were dropped before it.
    Store {
        left_out: u64,
    },
    Drop,
}

#[derive(Default)]
struct DeniedBudget {
    minute: i64,
    stored: u32,
    /// The process-wide budget ran out this minute (logged once).
    exhausted: bool,
    callers: HashMap<String, CallerBudget>,
}

struct CallerBudget {
    minute: i64,
    stored: u32,
    left_out: u64,
}

/// Who a refusal is charged to: the acting user, else the client address
/// (an IPv6 client by its /64, which one host typically holds whole).
fn caller_key(event: &NewAuditEvent) -> String {
    if let Some(actor) = &event.actor_id {
        return format!("user:{actor}");
    }
    match event.client_ip.as_deref().map(str::parse::<IpAddr>) {
        Some(Ok(IpAddr::V6(v6))) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(Ok(ip)) => format!("ip:{ip}"),
        _ => "ip:unknown".to_owned(),
    }
}

fn admit_denied(event: &NewAuditEvent) -> Admit {
    static BUDGET: OnceLock<Mutex<DeniedBudget>> = OnceLock::new();
    let key = caller_key(event);
    let minute = event.at.div_euclid(60);
    let mut budget = BUDGET.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let admit = budget.admit(&key, minute);
    drop(budget);
    if let Admit::Drop = admit {
        metrics::counter!("gatehouse_audit_suppressed_total", "action" => AuditAction::AdminDenied.as_str())
            .increment(1);
    }
    admit
}

impl DeniedBudget {
    fn admit(&mut self, key: &str, minute: i64) -> Admit {
        if minute != self.minute {
            self.minute = minute;
            self.stored = 0;
            self.exhausted = false;
            // Past minutes' counts matter only for what they left out.
            self.callers.retain(|_, c| c.minute == minute || c.left_out > 0);
        }
        if !self.callers.contains_key(key) && self.callers.len() >= MAX_TRACKED {
            self.callers.retain(|_, c| c.minute == minute);
            if self.callers.len() >= MAX_TRACKED {
                return Admit::Drop;
            }
        }
        let caller = self.callers.entry(key.to_owned()).or_insert(CallerBudget { minute, stored: 0, left_out: 0 });
        if caller.minute != minute {
            caller.minute = minute;
            caller.stored = 0;
        }
        if caller.stored < DENIED_PER_MINUTE && self.stored < DENIED_PER_MINUTE_TOTAL {
            caller.stored += 1;
            self.stored += 1;
            return Admit::Store { left_out: std::mem::take(&mut caller.left_out) };
        }
        caller.left_out += 1;
        if caller.left_out == 1 && caller.stored >= DENIED_PER_MINUTE {
            tracing::warn!(
                target: "audit",
                caller = key,
                limit = DENIED_PER_MINUTE,
                "admin.denied: a caller exceeds the stored refusals per minute; more are counted, not stored"
            );
        } else if self.stored >= DENIED_PER_MINUTE_TOTAL && !self.exhausted {
            self.exhausted = true;
            tracing::warn!(
                target: "audit",
                limit = DENIED_PER_MINUTE_TOTAL,
                "admin.denied: refusals per minute exceed what is stored; more are counted, not stored"
            );
        }
        Admit::Drop
    }
}

/// An event being described: `Audit::record(event(...).actor(..).target(..))`
/// stamps it with the audit's clock.
pub fn event(action: AuditAction) -> NewAuditEvent {
    NewAuditEvent { at: 0, action, actor_id: None, target: None, client_ip: None, detail: None }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(actor: Option<&str>, ip: &str) -> NewAuditEvent {
        let e = event(AuditAction::AdminDenied).client_ip(Some(ip));
        match actor {
            Some(a) => e.actor(a),
            None => e,
        }
    }

    #[test]
    fn refusals_are_stored_per_caller_per_minute_and_the_rest_summarised() {
        let mut budget = DeniedBudget::default();
        let stored = |b: &mut DeniedBudget, key: &str, minute| matches!(b.admit(key, minute), Admit::Store { .. });
        let alice = (0..50).filter(|_| stored(&mut budget, "user:alice", 7)).count();
        assert_eq!(alice, DENIED_PER_MINUTE as usize);
        assert!(stored(&mut budget, "user:bob", 7), "another caller has a budget of its own");
        // The next minute: stored again, saying how many were left out.
        assert!(matches!(budget.admit("user:alice", 8), Admit::Store { left_out: 40 }));
        assert!(matches!(budget.admit("user:alice", 8), Admit::Store { left_out: 0 }));
    }

    #[test]
    fn refusals_in_all_are_bounded_per_minute() {
        let mut budget = DeniedBudget::default();
        let stored = (0..2000)
            .filter(|i| matches!(budget.admit(&format!("ip:10.0.{}.{}", i / 256, i % 256), 1), Admit::Store { .. }))
            .count();
        assert_eq!(stored, DENIED_PER_MINUTE_TOTAL as usize);
        assert!(budget.callers.len() <= MAX_TRACKED);
    }

    #[test]
    fn refusals_without_an_actor_are_charged_to_the_address_and_an_ipv6_client_by_its_64() {
        assert_eq!(caller_key(&denied(Some("u1"), "10.0.0.1")), "user:u1");
        assert_eq!(caller_key(&denied(None, "10.0.0.1")), "ip:10.0.0.1");
        assert_eq!(caller_key(&denied(None, "2001:db8:1:2:3:4:5:6")), caller_key(&denied(None, "2001:db8:1:2::9")));
    }

    #[test]
    fn fields_are_escaped_and_capped() {
        let long = format!("GET /admin/{}", "a".repeat(60_000));
        let e = bounded(denied(Some("u1"), "10.0.0.1").target(long).detail("line\nforged\u{1b}[31m"));
        let target = e.target.unwrap();
        assert!(target.len() <= PATH_CAP + 24, "{}", target.len());
        assert!(target.ends_with("…(60011 bytes)"), "{target}");
        assert_eq!(e.detail.as_deref(), Some("line\\u{a}forged\\u{1b}[31m"));
    }
}

//! What the run knows: the credentials and users in play, every change the
//! driver made (when it was sent, when it was acknowledged), every decision
//! the load saw, and when each fault began and ended. Times are seconds since
//! the run began.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredKind {
    ApiKey,
    Session,
    Oidc,
    /// A provider token that lives one second, used past its expiry.
    OidcShort,
}

impl CredKind {
    pub fn label(self) -> &'static str {
        match self {
            CredKind::ApiKey => "API key",
            CredKind::Session => "session token",
            CredKind::Oidc => "provider token",
            CredKind::OidcShort => "provider token (1 s)",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Cred {
    pub kind: CredKind,
    /// (header name, value)
    pub header: (&'static str, String),
    /// The owner's index in `users`, once known (provider tokens: on the
    /// first allowed answer).
    pub user: Option<usize>,
    pub key_id: Option<String>,
    pub created: f64,
    /// Revoked or logged out: when the driver's call was acknowledged.
    pub invalid: Option<f64>,
    /// When an invalidating call (revoke, log out, expire) was sent: from
    /// then on it may be in effect, acknowledged or not.
    pub uncertain: Option<f64>,
    /// When it stops being valid by itself (expiry plus leeway).
    pub expires: Option<f64>,
    /// Replaced by a newer one: the load no longer uses it.
    pub retired: bool,
}

impl UserRec {
    pub fn unsure_at(&self, t: f64) -> bool {
        self.unsure.iter().any(|&(from, to)| t >= from - 0.5 && to.is_none_or(|to| t <= to))
    }

    pub fn settled(&self) -> bool {
        self.unsure.iter().all(|(_, to)| to.is_some())
    }
}

/// How long the load keeps presenting a credential after it stopped being
/// valid (revoked, logged out, expired, owner disabled).
pub const KEEP_TRYING: f64 = 10.0;

impl Cred {
    /// When it stopped being valid, as far as the driver knows.
    pub fn ended(&self, users: &[UserRec]) -> Option<f64> {
        let owner = self.user.and_then(|u| users[u].disabled);
        [self.invalid, self.expires, owner].into_iter().flatten().reduce(f64::min)
    }

    /// Still presented by the load at `now`.
    pub fn in_play(&self, users: &[UserRec], now: f64) -> bool {
        !self.retired && self.ended(users).is_none_or(|end| now < end + KEEP_TRYING)
    }
}

#[derive(Clone, Debug, Default)]
pub struct UserRec {
    pub id: String,
    pub email: String,
    pub password: Option<String>,
    /// Role changes: (sent, acknowledged, operator?) — the first is the
    /// role it was created with (sent = acknowledged = 0). Empty: not known
    /// (a provider's user, whose role comes from its claims).
    pub roles: Vec<(f64, f64, bool)>,
    /// When disabling it was acknowledged.
    pub disabled: Option<f64>,
    /// Stretches of time when the user's state was not known for sure: from
    /// sending a disable or role change until it was acknowledged, or (one
    /// that failed) until the driver read the state back (open: not yet).
    pub unsure: Vec<(f64, Option<f64>)>,
    /// In the rate-limited group.
    pub metered: bool,
    /// Left alone by the driver.
    pub fixed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Models,
    Chat,
    /// Needs `read_metrics` (operators, not viewers).
    Metrics,
}

impl Route {
    pub fn needs_operator(self) -> bool {
        self == Route::Metrics
    }
}

/// What the client saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// 401 / 403
    Denied,
    RateLimited,
    /// 503 AUTH_BACKEND_UNAVAILABLE: Gatehouse could not reach its database.
    BackendUnavailable,
    /// Any other 5xx, or no answer at all.
    Failed,
    /// Anything else (a 400, say): reported as such.
    Other,
}

#[derive(Clone, Copy, Debug)]
pub struct Record {
    pub t: f32,
    pub latency_ms: f32,
    pub cred: u32,
    pub route: Route,
    pub outcome: Outcome,
    pub status: u16,
    /// For allowed requests: whether the upstream was told the right user.
    pub identity_ok: Option<bool>,
}

/// A change the driver made, and through which door.
#[derive(Clone, Debug)]
pub struct Write {
    pub what: WriteKind,
    pub door: &'static str,
    pub sent: f64,
    /// None: failed (not acknowledged).
    pub acked: Option<f64>,
}

#[derive(Clone, Debug)]
pub enum WriteKind {
    CreateKey { key_id: String },
    RevokeKey { key_id: String },
    CreateUser { email: String },
    Disable { user: String },
    Role { user: String, operator: bool },
    Logout { jti: String },
    Expire { key_id: String, at_unix: i64 },
    Login,
}

impl WriteKind {
    pub fn label(&self) -> &'static str {
        match self {
            WriteKind::CreateKey { .. } => "create key",
            WriteKind::RevokeKey { .. } => "revoke key",
            WriteKind::CreateUser { .. } => "create user",
            WriteKind::Disable { .. } => "disable user",
            WriteKind::Role { .. } => "change role",
            WriteKind::Logout { .. } => "log out",
            WriteKind::Expire { .. } => "expire key",
            WriteKind::Login => "log in",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub name: String,
    pub start: f64,
    /// When the fault was undone (the replica restarted, Postgres started...).
    pub end: f64,
    /// When everything it touched was healthy again.
    pub recovered: Option<f64>,
}

#[derive(Default)]
pub struct Inner {
    pub creds: Vec<Cred>,
    pub users: Vec<UserRec>,
    pub records: Vec<Record>,
    pub writes: Vec<Write>,
    pub faults: Vec<Fault>,
    /// Replica processes: (replica, started, stopped).
    pub incarnations: Vec<(usize, f64, Option<f64>)>,
    /// Times some replica reported Redis unavailable (polled).
    pub redis_degraded: Vec<f64>,
    /// The start of the body of each failed answer, by record index.
    pub failure_bodies: std::collections::HashMap<usize, String>,
    pub notes: Vec<String>,
}

pub struct World {
    pub start: Instant,
    /// Unix time (seconds) at `start`.
    pub unix0: f64,
    pub inner: Mutex<Inner>,
}

impl World {
    pub fn new() -> World {
        let unix0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        World { start: Instant::now(), unix0, inner: Mutex::default() }
    }

    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// A Unix time as run time.
    pub fn run_time(&self, unix: f64) -> f64 {
        unix - self.unix0
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn note(&self, note: String) {
        let t = self.now();
        self.lock().notes.push(format!("{t:7.1}s {note}"));
    }

    pub fn add_cred(&self, cred: Cred) -> usize {
        let mut w = self.lock();
        w.creds.push(cred);
        w.creds.len() - 1
    }

    pub fn add_user(&self, user: UserRec) -> usize {
        let mut w = self.lock();
        w.users.push(user);
        w.users.len() - 1
    }

    pub fn write(&self, what: WriteKind, door: &'static str, sent: f64, acked: bool) {
        let acked = acked.then(|| self.now());
        self.lock().writes.push(Write { what, door, sent, acked });
    }

    pub fn replica_up(&self, i: usize) {
        let t = self.now();
        self.lock().incarnations.push((i, t, None));
    }

    pub fn replica_down(&self, i: usize) {
        let t = self.now();
        let mut w = self.lock();
        if let Some(inc) = w.incarnations.iter_mut().rev().find(|(r, _, end)| *r == i && end.is_none()) {
            inc.2 = Some(t);
        }
    }

    pub fn fault_begins(&self, name: impl Into<String>) -> usize {
        let t = self.now();
        let mut w = self.lock();
        w.faults.push(Fault { name: name.into(), start: t, end: t, recovered: None });
        w.faults.len() - 1
    }

    pub fn fault_undone(&self, id: usize) {
        let t = self.now();
        self.lock().faults[id].end = t;
    }

    pub fn fault_recovered(&self, id: usize) {
        let t = self.now();
        self.lock().faults[id].recovered = Some(t);
    }
}

//! Every decision checked against the truth at its time, every acknowledged
//! change looked up in the database, and the report: a Markdown table and an
//! SVG timeline.

use std::fmt::Write as _;

use crate::world::{Cred, CredKind, Fault, Inner, Outcome, Record, UserRec, WriteKind};

/// How long a change may take to reach every replica (the change feed polls
/// every 250 ms; the documented bound is a second).
pub const BOUND: f64 = 1.0;

/// The rate-limited group's budget.
pub struct Limit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Default)]
pub struct Findings {
    pub requests: usize,
    pub wrong_allows: Vec<String>,
    pub rate_excess: usize,
    pub wrong_denies: Vec<String>,
    pub failed_outside: Vec<String>,
    pub failed_inside: Vec<String>,
    pub cold_lookups: usize,
    /// Cold lookups by credential kind.
    pub cold_kinds: std::collections::BTreeMap<&'static str, usize>,
    pub other: Vec<String>,
    pub lost_writes: Vec<String>,
    pub acked_writes: usize,
    pub unacked_writes: usize,
}

impl Findings {
    pub fn passed(&self) -> bool {
        self.wrong_allows.is_empty()
            && self.rate_excess == 0
            && self.failed_outside.is_empty()
            && self.failed_inside.is_empty()
            && self.lost_writes.is_empty()
    }
}

/// A fault's window: from its start until it was recovered (or undone, if
/// it never was), plus two seconds.
fn window(f: &Fault) -> (f64, f64) {
    (f.start, f.recovered.unwrap_or(f.end).max(f.end) + 2.0)
}

fn in_window(t: f64, w: (f64, f64)) -> bool {
    t >= w.0 && t <= w.1
}

/// When a change the database acknowledged at `acked` must be in effect on
/// every replica: within `BOUND`, as they read the change feed; if the
/// database went down before they could (an outage under way within `BOUND`
/// of the change), within its window, which ends 2 s after it recovered.
/// Replicas keep answering from their caches meanwhile (README, "Caching and
/// consistency").
fn in_effect_by(acked: f64, pg: &[(f64, f64)]) -> f64 {
    pg.iter()
        .filter(|&&(start, end)| start <= acked + BOUND && end >= acked)
        .map(|&(_, end)| end)
        .fold(acked + BOUND, f64::max)
}

/// Roles the user may have had at `t`: the one in effect by then, and any
/// sent before `t` but not yet certainly in effect.
fn possible_roles(user: &UserRec, t: f64, pg: &[(f64, f64)]) -> Vec<bool> {
    let mut settled = None;
    let mut out = Vec::new();
    for &(sent, acked, operator) in &user.roles {
        if in_effect_by(acked, pg) <= t {
            settled = Some(operator);
        } else if sent < t {
            out.push(operator);
        }
    }
    out.extend(settled);
    out
}

fn describe(cred: &Cred, users: &[UserRec]) -> String {
    let owner = cred.user.map_or("?", |u| users[u].email.as_str());
    format!("{} of {}", cred.kind.label(), if owner.is_empty() { "a provider's user" } else { owner })
}

/// Checks one allowed or denied answer; a wrong allow or deny, described.
fn judge(r: &Record, cred: &Cred, users: &[UserRec], pg: &[(f64, f64)]) -> (Option<String>, Option<String>) {
    let t = f64::from(r.t);
    let user = cred.user.map(|u| &users[u]);
    match r.outcome {
        Outcome::Allowed => {
            // `what` happened at `at` and had to be in effect by `by`.
            let late = |what: &str, at: f64, by: f64| {
                (t > by).then(|| {
                    format!(
                        "{} allowed {:.1} s after {what} ({:?} at {t:.1} s)",
                        describe(cred, users),
                        t - at,
                        r.route
                    )
                })
            };
            let wrong = (r.identity_ok == Some(false))
                .then(|| format!("{} allowed as another user", describe(cred, users)))
                .or_else(|| cred.invalid.and_then(|at| late("it was revoked", at, in_effect_by(at, pg))))
                .or_else(|| {
                    // A key's expiry is a database change (sent when it
                    // became uncertain); a token's is in the token.
                    let written = cred.uncertain.filter(|_| cred.kind == CredKind::ApiKey);
                    let known_by = written.map_or(0.0, |w| in_effect_by(w, pg));
                    cred.expires.and_then(|at| late("it expired", at, known_by.max(at + BOUND)))
                })
                .or_else(|| {
                    user.and_then(|u| u.disabled)
                        .and_then(|at| late("its owner was disabled", at, in_effect_by(at, pg)))
                })
                .or_else(|| {
                    let u = user?;
                    let unsure = u.unsure_at(t);
                    let roles = possible_roles(u, t, pg);
                    (r.route.needs_operator() && !unsure && !u.roles.is_empty() && roles.iter().all(|op| !op))
                        .then(|| format!("{} allowed on {:?} as a viewer at {t:.1} s", describe(cred, users), r.route))
                });
            (wrong, None)
        }
        Outcome::Denied => {
            let unsure = cred.uncertain.is_some_and(|s| t > s - 0.5)
                || cred.expires.is_some_and(|e| t > e - BOUND)
                || user.is_some_and(|u| u.unsure_at(t) || u.disabled.is_some_and(|d| t >= d));
            let role_ok = !r.route.needs_operator()
                || user.is_some_and(|u| !u.roles.is_empty() && possible_roles(u, t, pg).iter().all(|op| *op));
            let wrong = (!unsure && role_ok && t > cred.created + BOUND)
                .then(|| format!("{} refused ({}) on {:?} at {t:.1} s", describe(cred, users), r.status, r.route));
            (None, wrong)
        }
        _ => (None, None),
    }
}

/// Allowed answers to a rate-limited caller beyond its budget: in any
/// stretch of time (up to 10 s), at most `burst + rate × (length + 1 s)`
/// allowed, times the number of replica processes alive then if Redis was
/// away during it (each replica limits on its own then).
fn rate_excess(
    allowed: &[f64],
    limit: &Limit,
    away: &[(f64, f64)],
    incarnations: &[(usize, f64, Option<f64>)],
) -> usize {
    let mut excess = std::collections::BTreeSet::new();
    for i in 0..allowed.len() {
        for j in i..allowed.len() {
            let (a, b) = (allowed[i], allowed[j]);
            if b - a > 10.0 {
                break;
            }
            let overlaps_away = away.iter().any(|&(s, e)| s <= b && a <= e);
            let replicas = if overlaps_away {
                incarnations.iter().filter(|&&(_, s, e)| s <= b && e.is_none_or(|e| a <= e)).count().max(1)
            } else {
                1
            };
            let bound = replicas as f64 * (limit.burst + limit.per_second * (b - a + 1.0)) + 1.0;
            if (j - i + 1) as f64 > bound {
                excess.insert(j);
            }
        }
    }
    excess.len()
}

pub async fn lost_writes(w: &Inner, sql: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::Row;
    let mut lost = Vec::new();
    let mut last_role: std::collections::BTreeMap<&str, (bool, f64)> = Default::default();
    for write in w.writes.iter().filter(|w| w.acked.is_some()) {
        let present = match &write.what {
            WriteKind::CreateKey { key_id } => {
                sqlx::query("SELECT 1 FROM api_keys WHERE id = $1").bind(key_id).fetch_optional(sql).await?.is_some()
            }
            WriteKind::RevokeKey { key_id } => {
                sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 AND revoked_at IS NOT NULL")
                    .bind(key_id)
                    .fetch_optional(sql)
                    .await?
                    .is_some()
            }
            WriteKind::CreateUser { email } => {
                sqlx::query("SELECT 1 FROM users WHERE email = $1").bind(email).fetch_optional(sql).await?.is_some()
            }
            WriteKind::Disable { user } => sqlx::query("SELECT 1 FROM users WHERE id = $1 AND disabled")
                .bind(user)
                .fetch_optional(sql)
                .await?
                .is_some(),
            WriteKind::Role { user, operator } => {
                last_role.insert(user, (*operator, write.acked.unwrap_or_default()));
                true
            }
            WriteKind::Logout { jti } => sqlx::query("SELECT 1 FROM revoked_tokens WHERE jti = $1")
                .bind(jti)
                .fetch_optional(sql)
                .await?
                .is_some(),
            WriteKind::Expire { key_id, at_unix } => {
                sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 AND expires_at = $2")
                    .bind(key_id)
                    .bind(at_unix)
                    .fetch_optional(sql)
                    .await?
                    .is_some()
            }
            WriteKind::Login => true,
        };
        if !present {
            lost.push(format!("{} ({}) at {:.1} s: {:?}", write.what.label(), write.door, write.sent, write.what));
        }
    }
    // A role is checked as last acknowledged, unless a later change failed
    // (it may have happened anyway).
    for (user, (operator, acked)) in last_role {
        let later_failure = w.users.iter().any(|u| u.id == user && u.unsure.iter().any(|&(from, _)| from > acked));
        if later_failure {
            continue;
        }
        let row = sqlx::query("SELECT role FROM users WHERE id = $1").bind(user).fetch_one(sql).await?;
        let role: String = row.get("role");
        if (role == "operator") != operator {
            lost.push(format!("change role: {user} is {role}"));
        }
    }
    Ok(lost)
}

pub fn analyse(w: &Inner, limit: &Limit, metered_users: &[usize]) -> Findings {
    let mut f = Findings { requests: w.records.len(), ..Findings::default() };
    let windows: Vec<(&Fault, (f64, f64))> = w.faults.iter().map(|f| (f, window(f))).collect();
    let pg: Vec<(f64, f64)> =
        windows.iter().filter(|(f, _)| f.name.starts_with("Postgres")).map(|(_, win)| *win).collect();
    for (n, r) in w.records.iter().enumerate() {
        let cred = &w.creds[r.cred as usize];
        let (wrong_allow, wrong_deny) = judge(r, cred, &w.users, &pg);
        f.wrong_allows.extend(wrong_allow);
        f.wrong_denies.extend(wrong_deny);
        let t = f64::from(r.t);
        let inside: Vec<&str> =
            windows.iter().filter(|(_, win)| in_window(t, *win)).map(|(f, _)| f.name.as_str()).collect();
        let what = || {
            let body = w.failure_bodies.get(&n).map_or(String::new(), |b| format!(": {b:?}"));
            format!(
                "{} after {:.0} ms, {} on {:?} at {t:.1} s{body}",
                r.status,
                r.latency_ms,
                describe(cred, &w.users),
                r.route
            )
        };
        match r.outcome {
            Outcome::BackendUnavailable if pg.iter().any(|win| in_window(t, *win)) => {
                f.cold_lookups += 1;
                *f.cold_kinds.entry(cred.kind.label()).or_default() += 1;
            }
            Outcome::Failed | Outcome::BackendUnavailable if inside.is_empty() => f.failed_outside.push(what()),
            Outcome::Failed | Outcome::BackendUnavailable => {
                f.failed_inside.push(format!("{} (during: {})", what(), inside.join(", ")));
            }
            Outcome::RateLimited if !cred.user.is_some_and(|u| w.users[u].metered) => {
                f.wrong_denies.push(format!("{} rate limited", what()));
            }
            Outcome::Other => f.other.push(what()),
            _ => {}
        }
    }
    // Redis away: its faults until recovered, and whenever a replica said so.
    let mut away: Vec<(f64, f64)> =
        windows.iter().filter(|(f, _)| f.name.starts_with("Redis")).map(|(_, win)| *win).collect();
    away.extend(w.redis_degraded.iter().map(|&t| (t - 1.0, t + 1.0)));
    for &u in metered_users {
        let mut allowed: Vec<f64> = w
            .records
            .iter()
            .filter(|r| r.outcome == Outcome::Allowed && w.creds[r.cred as usize].user == Some(u))
            .map(|r| f64::from(r.t))
            .collect();
        allowed.sort_by(f64::total_cmp);
        f.rate_excess += rate_excess(&allowed, limit, &away, &w.incarnations);
    }
    f.acked_writes = w.writes.iter().filter(|w| w.acked.is_some()).count();
    f.unacked_writes = w.writes.len() - f.acked_writes;
    f
}

fn percentile(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latencies<'a>(records: impl Iterator<Item = &'a Record>) -> (usize, f32, f32) {
    let mut l: Vec<f32> = records.filter(|r| r.outcome != Outcome::Failed).map(|r| r.latency_ms).collect();
    l.sort_by(f32::total_cmp);
    (l.len(), percentile(&l, 0.5), percentile(&l, 0.99))
}

fn list(out: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n<details><summary>{title} ({})</summary>\n", items.len());
    for item in items.iter().take(50) {
        let _ = writeln!(out, "- {item}");
    }
    if items.len() > 50 {
        let _ = writeln!(out, "- … and {} more", items.len() - 50);
    }
    let _ = writeln!(out, "\n</details>");
}

pub struct RunInfo {
    pub seconds: f64,
    pub cycles: usize,
    pub rate: f64,
    pub when: String,
}

pub fn markdown(w: &Inner, f: &Findings, info: &RunInfo) -> String {
    let mut out = String::new();
    let verdict = if f.passed() { "passed" } else { "FAILED" };
    let _ = writeln!(
        out,
        "# Chaos run: {verdict}\n\n{} s, {} fault cycle(s), {} requests through Envoy (~{:.0}/s; general load {:.0}/s plus rate-limited callers), {} changes by the driver; {}.\n",
        info.seconds.round(),
        info.cycles,
        f.requests,
        f.requests as f64 / info.seconds,
        info.rate,
        w.writes.len(),
        info.when
    );
    let _ = writeln!(out, "![timeline](timeline.svg)\n");
    let _ = writeln!(out, "| measure | target | result |\n|---|---|---|");
    let row = |out: &mut String, m: &str, target: &str, result: String| {
        let _ = writeln!(out, "| {m} | {target} | {result} |");
    };
    row(
        &mut out,
        "wrong allows: revoked, logged-out, expired or disabled credentials, another user, a role's permissions (1 s bound)",
        "0",
        f.wrong_allows.len().to_string(),
    );
    row(
        &mut out,
        "wrong allows: rate-limited callers past their budget (×replicas while Redis is away)",
        "0",
        f.rate_excess.to_string(),
    );
    row(&mut out, "failed requests (5xx, no answer) outside fault windows", "0", f.failed_outside.len().to_string());
    row(
        &mut out,
        "failed requests inside fault windows, other than cold lookups while Postgres is down",
        "0",
        f.failed_inside.len().to_string(),
    );
    let kinds: Vec<String> = f.cold_kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let kinds = if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) };
    row(
        &mut out,
        "cold lookups refused (503) while Postgres is down: credentials a replica had not cached",
        "—",
        format!("{}{kinds}", f.cold_lookups),
    );
    row(
        &mut out,
        "lost writes (acknowledged, missing from the database)",
        "0",
        format!("{} of {}", f.lost_writes.len(), f.acked_writes),
    );
    row(&mut out, "changes refused or unanswered (not acknowledged: not expected)", "—", f.unacked_writes.to_string());
    row(&mut out, "wrong denials (a valid credential refused)", "—", f.wrong_denies.len().to_string());
    row(&mut out, "other answers (4xx not 401/403/429)", "—", f.other.len().to_string());

    let _ = writeln!(
        out,
        "\n| phase | requests | failed | cold lookups (503) | p50 ms | p99 ms | undone after | recovered after |\n|---|---|---|---|---|---|---|---|"
    );
    let in_any = |t: f64| w.faults.iter().any(|fault| in_window(t, window(fault)));
    let (n, p50, p99) = latencies(w.records.iter().filter(|r| !in_any(f64::from(r.t))));
    let _ = writeln!(out, "| steady (no fault) | {n} | 0 | 0 | {p50:.1} | {p99:.1} | | |");
    for fault in &w.faults {
        let win = window(fault);
        let records: Vec<&Record> = w.records.iter().filter(|r| in_window(f64::from(r.t), win)).collect();
        let failed = records.iter().filter(|r| r.outcome == Outcome::Failed).count();
        let cold = records.iter().filter(|r| r.outcome == Outcome::BackendUnavailable).count();
        let (n, p50, p99) = latencies(records.iter().copied());
        let recovered = fault.recovered.map_or("not seen".to_owned(), |r| format!("{:.1} s", (r - fault.end).max(0.0)));
        let _ = writeln!(
            out,
            "| {} at {:.0} s | {n} | {failed} | {cold} | {p50:.1} | {p99:.1} | {:.1} s | {recovered} |",
            fault.name,
            fault.start,
            fault.end - fault.start
        );
    }
    let mut doors: std::collections::BTreeMap<(&str, &str), (usize, usize)> = Default::default();
    for write in &w.writes {
        let e = doors.entry((write.what.label(), write.door)).or_default();
        if write.acked.is_some() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let _ = writeln!(out, "\n| change | door | acknowledged | not |\n|---|---|---|---|");
    for ((what, door), (acked, not)) in doors {
        let _ = writeln!(out, "| {what} | {door} | {acked} | {not} |");
    }
    list(&mut out, "wrong allows", &f.wrong_allows);
    list(&mut out, "failed requests outside fault windows", &f.failed_outside);
    list(&mut out, "failed requests inside fault windows", &f.failed_inside);
    list(&mut out, "lost writes", &f.lost_writes);
    list(&mut out, "wrong denials", &f.wrong_denies);
    list(&mut out, "other answers", &f.other);
    list(&mut out, "notes", &w.notes);
    out
}

/// A line of the timeline: its name, a value per second, its colour.
type Line<'a> = (&'a str, Vec<f64>, &'a str);

/// Requests/s, error rates and p99 latency per second, faults as bands.
pub fn svg(w: &Inner, seconds: f64) -> String {
    // Whole seconds only: the last, partial one would look like a drop.
    let secs = (seconds.floor() as usize).max(1);
    let mut count = vec![0usize; secs];
    let mut failed = vec![0usize; secs];
    let mut cold = vec![0usize; secs];
    let mut lat: Vec<Vec<f32>> = vec![Vec::new(); secs];
    for r in w.records.iter().filter(|r| (r.t as usize) < secs) {
        let s = r.t as usize;
        count[s] += 1;
        match r.outcome {
            Outcome::Failed => failed[s] += 1,
            Outcome::BackendUnavailable => cold[s] += 1,
            _ => lat[s].push(r.latency_ms),
        }
    }
    let p99: Vec<f64> = lat
        .iter_mut()
        .map(|l| {
            l.sort_by(f32::total_cmp);
            if l.is_empty() { 0.0 } else { f64::from(percentile(l, 0.99)) }
        })
        .collect();
    let share = |part: &[usize]| -> Vec<f64> {
        count.iter().zip(part).map(|(&c, &e)| if c == 0 { 0.0 } else { 100.0 * e as f64 / c as f64 }).collect()
    };
    let (width, left, right, panel, gap, top) = (960.0, 110.0, 20.0, 90.0, 28.0, 60.0);
    let plot = width - left - right;
    let height = top + 3.0 * panel + 2.0 * gap + 30.0;
    let x = |t: f64| left + plot * t / secs as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let colors = ["#f4a582", "#92c5de", "#b8e186", "#fddbc7", "#d1e5f0", "#e6f5d0", "#c2a5cf", "#fee090"];
    let mut kinds: Vec<String> = Vec::new();
    for fault in &w.faults {
        let kind = fault.name.split(" replica").next().unwrap_or(&fault.name).to_owned();
        let k = kinds.iter().position(|x| *x == kind).unwrap_or_else(|| {
            kinds.push(kind.clone());
            kinds.len() - 1
        });
        let (a, b) = (fault.start, fault.recovered.unwrap_or(fault.end).max(fault.end));
        let _ = writeln!(
            out,
            r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.55"><title>{}</title></rect>"#,
            x(a),
            (x(b) - x(a)).max(2.0),
            3.0 * panel + 2.0 * gap,
            colors[k % colors.len()],
            fault.name
        );
    }
    // The legend, in rows.
    let (mut lx, mut ly) = (left, 8.0);
    for (k, kind) in kinds.iter().enumerate() {
        let span = 24.0 + 6.0 * kind.len() as f64;
        if lx + span > width - right {
            (lx, ly) = (left, ly + 16.0);
        }
        let _ =
            writeln!(out, r#"<rect x="{lx}" y="{ly}" width="10" height="10" fill="{}"/>"#, colors[k % colors.len()]);
        let _ = writeln!(out, r#"<text x="{}" y="{}">{kind}</text>"#, lx + 13.0, ly + 9.0);
        lx += span;
    }
    // Panels: a label and its lines (name, values, colour).
    let panels: [(&str, Vec<Line<'_>>); 3] = [
        ("requests/s", vec![("", count.iter().map(|&c| c as f64).collect(), "#2166ac")]),
        ("errors %", vec![("failed (5xx)", share(&failed), "#b2182b"), ("cold lookup 503", share(&cold), "#e08214")]),
        ("p99 latency, ms", vec![("", p99, "#1b7837")]),
    ];
    for (i, (label, lines)) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (panel + gap);
        let floor = if *label == "errors %" { 1.0 } else { 1e-9 };
        let max = lines.iter().flat_map(|(_, v, _)| v.iter().copied()).fold(0.0, f64::max).max(floor);
        let _ =
            writeln!(out, r##"<rect x="{left}" y="{y0}" width="{plot}" height="{panel}" fill="none" stroke="#999"/>"##);
        let _ = writeln!(out, r#"<text x="4" y="{:.1}">{label}</text>"#, y0 + 12.0);
        let _ = writeln!(out, r##"<text x="4" y="{:.1}" fill="#666">max {max:.0}</text>"##, y0 + 26.0);
        for (n, (name, values, color)) in lines.iter().enumerate() {
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(s, v)| format!("{:.1},{:.1}", x(s as f64 + 0.5), y0 + panel - panel * v / max))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{}"/>"#,
                points.join(" ")
            );
            if !name.is_empty() {
                let _ =
                    writeln!(out, r#"<text x="4" y="{:.1}" fill="{color}">{name}</text>"#, y0 + 44.0 + 14.0 * n as f64);
            }
        }
    }
    let axis = top + 3.0 * panel + 2.0 * gap;
    let step = if secs > 300 {
        60
    } else if secs > 120 {
        30
    } else {
        10
    };
    for s in (0..=secs).step_by(step) {
        let _ =
            writeln!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s} s</text>"#, x(s as f64), axis + 16.0);
    }
    out.push_str("</svg>\n");
    out
}

/// Every decision: when it was sent, the credential (kind, owner), route,
/// status, outcome and latency.
pub fn decisions_csv(w: &Inner) -> String {
    let mut out = String::from("time_s,credential,kind,owner,route,status,outcome,latency_ms\n");
    for r in &w.records {
        let cred = &w.creds[r.cred as usize];
        let owner = cred.user.map_or("", |u| w.users[u].id.as_str());
        let _ = writeln!(
            out,
            "{:.3},{},{},{owner},{:?},{},{:?},{:.1}",
            r.t,
            r.cred,
            cred.kind.label(),
            r.route,
            r.status,
            r.outcome,
            r.latency_ms
        );
    }
    out
}

#[test]
fn a_change_just_before_the_database_goes_down_is_in_effect_after_it_recovers() {
    let pg = [(12.0, 34.0)];
    assert_eq!(in_effect_by(5.0, &pg), 5.0 + BOUND, "read from the feed before the outage");
    assert_eq!(in_effect_by(11.5, &pg), 34.0, "the outage began before replicas had to read it");
    assert_eq!(in_effect_by(40.0, &pg), 40.0 + BOUND, "after the outage's window");
    let user = UserRec { roles: vec![(0.0, 0.0, true), (11.0, 11.6, false)], ..UserRec::default() };
    assert_eq!(possible_roles(&user, 20.0, &pg), vec![false, true], "either role while the change may not be read");
    assert_eq!(possible_roles(&user, 35.0, &pg), vec![false]);
}

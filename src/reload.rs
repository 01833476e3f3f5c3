//! Reloading the route table while serving: when its file changes (checked
//! every `GATEHOUSE_POLICY_RELOAD_SECONDS`) or on SIGHUP. The
//! configuration is layered again (file, environment, policy file) and only
//! the policy is compiled and taken from it (TLS and key files are not read:
//! a reload during a certificate rotation is not refused for them); a file that does not load is refused with an error in the log and
//! the running policy stays. Checks in flight finish with the policy they
//! started with.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::authz::Authorizer;
use crate::config::Config;

/// 1 when the last reload installed the file's policy (or none was tried),
/// 0 while the file on disk is refused and an older policy serves.
const LAST_RELOAD_OK: &str = "gatehouse_policy_last_reload_successful";

pub struct PolicyReloader {
    pub authorizer: Arc<Authorizer>,
    /// The config file to load again (`None`: environment only).
    pub config_file: Option<PathBuf>,
    /// The file whose changes trigger a reload.
    pub watched: Option<PathBuf>,
    /// Zero: only on SIGHUP.
    pub interval: Duration,
}

impl PolicyReloader {
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the policy reloads only when its file changes");
                None
            }
        };
        // Present from the start, so the first failure shows in rate().
        for result in ["ok", "error"] {
            metrics::counter!("gatehouse_policy_reloads_total", "result" => result).increment(0);
        }
        metrics::gauge!(LAST_RELOAD_OK).set(1.0);
        metrics::gauge!("gatehouse_policy_rules").set(self.authorizer.policy().rules().len() as f64);
        let mut last = self.read_watched().await;
        // Without a file there is nothing to watch, and SIGHUP has nothing to read.
        let interval = if self.watched.is_some() { self.interval } else { Duration::ZERO };
        tokio::pin!(stop);
        loop {
            let forced = tokio::select! {
                () = &mut stop => return,
                () = tick(interval) => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            };
            if self.watched.is_none() {
                tracing::info!("SIGHUP: the policy comes from the environment and built-in table; nothing to reload");
                continue;
            }
            let current = self.read_watched().await;
            if !forced && current == last {
                continue;
            }
            last = current;
            self.reload(if forced { "SIGHUP" } else { "file changed" });
        }
    }

    async fn read_watched(&self) -> Option<Vec<u8>> {
        let path = self.watched.as_ref()?;
        tokio::fs::read(path).await.ok()
    }

    /// Loads and installs the policy; returns whether it was installed.
    pub fn reload(&self, trigger: &str) -> bool {
        let loaded = Config::load_policy(self.config_file.as_deref());
        match loaded {
            Ok(policy) => {
                let rules = policy.rules().len();
                let changed = *self.authorizer.policy() != policy;
                if changed {
                    self.authorizer.set_policy(policy);
                }
                metrics::counter!("gatehouse_policy_reloads_total", "result" => "ok").increment(1);
                metrics::gauge!("gatehouse_policy_rules").set(rules as f64);
                metrics::gauge!(LAST_RELOAD_OK).set(1.0);
                tracing::info!(trigger, rules, changed, "policy loaded");
                true
            }
            Err(e) => {
                metrics::counter!("gatehouse_policy_reloads_total", "result" => "error").increment(1);
                metrics::gauge!(LAST_RELOAD_OK).set(0.0);
                tracing::error!(trigger, error = %e, "policy rejected; the running policy stays in force");
                false
            }
        }
    }
}

async fn tick(interval: Duration) {
    if interval.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(interval).await;
}

//! `last_used_at` bookkeeping without a database write on the Check path.
//!
//! Check records the key id in memory; a background task writes the batch
//! every `interval`. A key used many times in one interval costs one write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::DynStore;

#[derive(Clone, Default)]
pub struct UsageRecorder {
    pending: Arc<Mutex<HashMap<Arc<str>, i64>>>,
}

impl UsageRecorder {
    pub fn record(&self, key_id: &Arc<str>, now: i64) {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map is still usable for best-effort bookkeeping.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = pending.get_mut(key_id) {
            *at = (*at).max(now);
        } else {
            pending.insert(key_id.clone(), now);
        }
    }

    fn take(&self) -> Vec<(String, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().map(|(k, at)| (k.to_string(), at)).collect()
    }

    /// Writes what was recorded. On failure the batch is dropped: last-used
    /// times are informational, and retrying could pile up work during an outage.
    pub async fn flush(&self, store: &DynStore) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.touch_api_keys(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "could not record key usage");
        }
    }

    /// Flushes every `interval` until `shutdown` resolves, then once more.
    pub async fn run(self, store: DynStore, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(&store).await,
                () = &mut shutdown => break,
            }
        }
        self.flush(&store).await;
    }
}

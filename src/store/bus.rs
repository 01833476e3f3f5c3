//! Cross-replica invalidation over Redis pub/sub.
//!
//! A replica that changes a key, user, group or revokes a token evicts its
//! own caches at once and publishes the change; every other replica evicts on
//! receipt, so the staleness across replicas is one pub/sub hop (well under a
//! second). Without Redis, or while it is unreachable, caches fall back to
//! their TTL and revocations to polling the database. A subscriber that
//! (re)connects drops every cached entry, since it may have missed messages.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Mutex, RwLock};

use crate::redis_target::{Conn, RedisTarget};

pub use gatehouse_core::store::bus::*;

pub const CHANNEL: &str = "gatehouse:invalidate";

#[derive(Clone, Default)]
pub struct Bus {
    target: Option<Arc<RedisTarget>>,
    publisher: Arc<Mutex<Option<Conn>>>,
    connected: Arc<RwLock<bool>>,
}

impl Bus {
    /// A bus over Redis, or one that only works locally when `None`.
    pub fn new(target: Option<Arc<RedisTarget>>) -> Bus {
        Bus { target, ..Bus::default() }
    }

    /// Publishes a change for the other replicas (best effort: on failure
    /// they catch up through TTLs and polling).
    pub async fn publish(&self, change: &Change) {
        let Some(target) = &self.target else { return };
        let mut publisher = self.publisher.lock().await;
        let result = async {
            if publisher.is_none() {
                *publisher = Some(target.connect().await.map_err(|e| e.to_string())?);
            }
            let Some(conn) = publisher.as_mut() else { return Err("not connected".to_owned()) };
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(CHANNEL).arg(change.encode());
            match tokio::time::timeout(Duration::from_secs(1), cmd.query_async::<i64>(conn)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        }
        .await;
        if let Err(e) = result {
            if !target.reconnects_itself() {
                *publisher = None; // ask the sentinels for the primary next time
            }
            tracing::warn!(error = %e, "could not publish a cache invalidation; other replicas rely on TTLs");
        }
    }

    /// Whether the subscriber is connected (false without Redis).
    pub async fn is_connected(&self) -> bool {
        *self.connected.read().await
    }

    /// Receives changes until `shutdown`, reconnecting as needed.
    pub async fn subscribe(self, target: impl Apply, shutdown: impl std::future::Future<Output = ()>) {
        let Some(redis) = self.target.clone() else { return };
        tokio::pin!(shutdown);
        loop {
            let session = async {
                let mut pubsub = redis.pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                *self.connected.write().await = true;
                target.reset().await;
                tracing::info!("subscribed to cache invalidations");
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if let Some(change) = msg.get_payload::<String>().ok().as_deref().and_then(Change::decode) {
                        target.apply(&change).await;
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                result = session => {
                    *self.connected.write().await = false;
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "invalidation channel unavailable; caches fall back to TTLs");
                    }
                }
                () = &mut shutdown => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = &mut shutdown => return,
            }
        }
    }
}

#[async_trait::async_trait]
impl Publish for Bus {
    async fn publish(&self, change: &Change) {
        Bus::publish(self, change).await;
    }
}

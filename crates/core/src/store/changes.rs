//! The change feed: how every replica learns of a change made by any door.
//!
//! Triggers in the database write a row to `changes` for every update of a
//! key, user or group (and every token revocation), in the transaction that made it (see the migration
//! `0008_change_feed.sql`). Each replica polls the table for rows newer than
//! the ones it has applied and evicts what they name. Unlike the Redis bus
//! (a push that is lost while Redis is away) and cache TTLs (30 s), this
//! bounds the staleness of every replica by the poll interval, whichever door
//! made the change (REST, gRPC, `gatehouse keys revoke` on the database
//! directly) and whatever the topology (SQLite, Postgres, with or without
//! Redis).
//!
//! Postgres assigns ids before commit, so a row with a smaller id can become
//! visible after a larger one. The poller therefore reads from a watermark
//! that trails the newest id it has seen by [`LOOKBACK`], and skips rows it
//! has already applied.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::bus::{Apply, Change};
use super::{DynStore, StoreResult};

/// How long a row may take from getting its id to becoming visible.
pub const LOOKBACK: Duration = Duration::from_secs(10);
/// Rows older than this are deleted.
pub const RETENTION_SECONDS: i64 = 3600;
/// Rows read per poll; a longer backlog is read over the next polls.
const BATCH: i64 = 1000;

pub struct ChangeFeed {
    store: DynStore,
    /// Rows with ids up to here are applied (or older than the lookback);
    /// `None` until the first successful read.
    watermark: Option<i64>,
    /// Rows above the watermark already applied, with when they were seen.
    recent: VecDeque<(Instant, i64)>,
    applied: HashSet<i64>,
}

impl ChangeFeed {
    /// A feed that starts after the newest row at its first poll: this
    /// replica's caches start empty, so older changes need not be applied.
    pub fn new(store: DynStore) -> ChangeFeed {
        ChangeFeed { store, watermark: None, recent: VecDeque::new(), applied: HashSet::new() }
    }

    /// Applies the rows written since the last poll; returns how many.
    pub async fn poll(&mut self, target: &impl Apply) -> StoreResult<usize> {
        let watermark = match self.watermark {
            Some(w) => w,
            None => {
                let latest = self.store.latest_change().await?;
                self.watermark = Some(latest);
                return Ok(0);
            }
        };
        let rows = self.store.changes_after(watermark, BATCH).await?;
        let now = Instant::now();
        let mut count = 0;
        for (id, kind, reference) in rows {
            if !self.applied.insert(id) {
                continue;
            }
            self.recent.push_back((now, id));
            if let Some(change) = decode(&kind, reference) {
                target.apply(&change).await;
                count += 1;
            }
        }
        // Rows seen longer ago than the lookback can no longer have earlier
        // neighbours still to commit: move the watermark past them.
        while let Some(&(seen, id)) = self.recent.front() {
            if now.duration_since(seen) < LOOKBACK {
                break;
            }
            self.recent.pop_front();
            self.applied.remove(&id);
            self.watermark = Some(self.watermark.map_or(id, |w| w.max(id)));
        }
        Ok(count)
    }

    /// Polls every `interval` until `shutdown`; prunes old rows now and then.
    /// While the database is unreachable nothing can change in it either;
    /// polling resumes where it stopped.
    pub async fn run(mut self, target: impl Apply, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = Instant::now();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.poll(&target).await {
                        tracing::warn!(error = %e, "could not read the change feed");
                    }
                    if last_prune.elapsed() > Duration::from_secs(60) {
                        last_prune = Instant::now();
                        let before = time::OffsetDateTime::now_utc().unix_timestamp() - RETENTION_SECONDS;
                        if let Err(e) = self.store.prune_changes(before).await {
                            tracing::debug!(error = %e, "could not prune the change feed");
                        }
                    }
                }
                () = &mut shutdown => break,
            }
        }
    }
}

fn decode(kind: &str, reference: String) -> Option<Change> {
    Some(match kind {
        "key" => Change::Key(reference),
        "user" => Change::User(reference),
        "group" => Change::Group(reference),
        "token" => {
            let (expires_at, jti) = reference.split_once(':')?;
            Change::Token { jti: jti.to_owned(), expires_at: expires_at.parse().ok()? }
        }
        _ => return None,
    })
}

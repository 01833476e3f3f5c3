//! What `REDIS_URL` names: one Redis, a Redis Cluster, or a primary managed
//! by Sentinel. The rate limiter and the invalidation bus connect through
//! this, so both work on each.
//!
//! * `redis://[user:password@]host:port[/db]` (or `rediss://`): one server.
//! * `redis+cluster://[user:password@]host1:port1,host2:port2`, or several
//!   `redis://` URLs separated by commas: a cluster, found from any of the
//!   seed nodes. Limiter keys carry a hash tag, so a script's keys share a
//!   slot; PUBLISH reaches every node of a cluster, so the bus subscribes on
//!   any one node that answers.
//! * `redis+sentinel://[user:password@]sentinel1:26379,sentinel2:26379/SERVICE[/db]`:
//!   the sentinels are asked for SERVICE's primary; after a failover the next
//!   connection asks again.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

/// How long to wait for a connection before calling Redis unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub enum RedisTarget {
    Single(redis::Client),
    Cluster { client: ClusterClient, nodes: Vec<redis::ConnectionInfo> },
    Sentinel(Mutex<SentinelClient>),
}

impl RedisTarget {
    /// Parses `REDIS_URL`; connects to nothing.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (auth, hosts) = split_auth(rest);
            let nodes = hosts.split(',').map(|h| format!("redis://{auth}{}", h.trim())).collect();
            return Self::cluster(nodes);
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (auth, rest) = split_auth(rest);
            let (hosts, path) = rest.split_once('/').ok_or("redis+sentinel:// needs /SERVICE after the sentinels")?;
            let mut path = path.split('/');
            let service = path.next().filter(|s| !s.is_empty()).ok_or("redis+sentinel:// needs a service name")?;
            let db: i64 = match path.next() {
                Some(d) if !d.is_empty() => d.parse().map_err(|_| format!("invalid database number '{d}'"))?,
                _ => 0,
            };
            let sentinels: Vec<String> = hosts.split(',').map(|h| format!("redis://{}", h.trim())).collect();
            let mut node = redis::RedisConnectionInfo { db, ..Default::default() };
            if let Some((user, password)) = auth.trim_end_matches('@').split_once(':') {
                node.password = Some(password.to_owned());
                node.username = (!user.is_empty()).then(|| user.to_owned());
            }
            let info = SentinelNodeConnectionInfo { tls_mode: None, redis_connection_info: Some(node) };
            let client = SentinelClient::build(sentinels, service.to_owned(), Some(info), SentinelServerType::Master)
                .map_err(|e| e.to_string())?;
            return Ok(RedisTarget::Sentinel(Mutex::new(client)));
        }
        if url.contains(',') {
            return Self::cluster(url.split(',').map(|u| u.trim().to_owned()).collect());
        }
        redis::Client::open(url).map(RedisTarget::Single).map_err(|e| e.to_string())
    }

    fn cluster(nodes: Vec<String>) -> Result<RedisTarget, String> {
        let infos: Vec<redis::ConnectionInfo> = nodes
            .iter()
            .map(|n| n.as_str().into_connection_info())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let client = redis::cluster::ClusterClientBuilder::new(infos.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(Duration::from_secs(1))
            .retries(2)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RedisTarget::Cluster { client, nodes: infos })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => "single",
            RedisTarget::Cluster { .. } => "cluster",
            RedisTarget::Sentinel(_) => "sentinel",
        }
    }

    /// Whether a connection must be made again after an error (a Sentinel
    /// failover moves the primary; the others reconnect by themselves).
    pub fn reconnects_itself(&self) -> bool {
        !matches!(self, RedisTarget::Sentinel(_))
    }

    /// A connection for commands and scripts.
    pub async fn connect(&self) -> RedisResult<Conn> {
        let connect = async {
            match self {
                RedisTarget::Single(client) => client.get_connection_manager().await.map(Conn::Single),
                RedisTarget::Cluster { client, .. } => client.get_async_connection().await.map(Conn::Cluster),
                RedisTarget::Sentinel(sentinel) => {
                    let primary = sentinel.lock().await.async_get_client().await?;
                    primary.get_connection_manager().await.map(Conn::Single)
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::IoError, "connection timed out")))?
    }

    /// A subscription connection: to the server, the current primary, or the
    /// first cluster node that answers.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let timed_out = || redis::RedisError::from((redis::ErrorKind::IoError, "connection timed out"));
        match self {
            RedisTarget::Single(client) => client.get_async_pubsub().await,
            RedisTarget::Sentinel(sentinel) => {
                let primary = sentinel.lock().await.async_get_client().await?;
                primary.get_async_pubsub().await
            }
            RedisTarget::Cluster { nodes, .. } => {
                let mut last = None;
                for node in nodes {
                    let client = redis::Client::open(node.clone())?;
                    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
                        Ok(Ok(pubsub)) => return Ok(pubsub),
                        Ok(Err(e)) => last = Some(e),
                        Err(_) => last = Some(timed_out()),
                    }
                }
                Err(last.unwrap_or_else(|| (redis::ErrorKind::IoError, "no cluster node answered").into()))
            }
        }
    }
}

/// `user:password@` (with the `@`) and the rest.
fn split_auth(rest: &str) -> (&str, &str) {
    match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    }
}

/// A connection to a single server (or primary) or to a cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        assert_eq!(RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap().kind(), "single");
        assert_eq!(RedisTarget::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap().kind(), "cluster");
        assert_eq!(RedisTarget::parse("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001").unwrap().kind(), "cluster");
        assert_eq!(RedisTarget::parse("redis://127.0.0.1:7000, redis://127.0.0.1:7001").unwrap().kind(), "cluster");
        assert_eq!(
            RedisTarget::parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster").unwrap().kind(),
            "sentinel"
        );
        assert_eq!(RedisTarget::parse("redis+sentinel://:pw@127.0.0.1:26379/mymaster/3").unwrap().kind(), "sentinel");
        assert!(RedisTarget::parse("redis+sentinel://127.0.0.1:26379").is_err(), "needs a service");
        assert!(RedisTarget::parse("redis+sentinel://127.0.0.1:26379/m/x").is_err(), "bad db");
        assert!(RedisTarget::parse("http://example.com").is_err());
        assert!(RedisTarget::parse("redis+cluster://h:notaport").is_err());
        assert_eq!(split_auth("u:p@h:1,h:2"), ("u:p@", "h:1,h:2"));
    }
}

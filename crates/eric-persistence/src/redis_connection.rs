//! One Redis or a Redis Cluster, behind one connection type, for cluster mode.
//!
//! A single URL is one Redis server; several seed URLs separated by commas
//! (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`) are the nodes of a Redis Cluster,
//! and commands go to the node holding their key's slot (redis-rs `cluster-async`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::Result;
use crate::redis_storage::storage_error;

/// A connection to either: commands are routed by key on a cluster.
#[derive(Clone)]
pub(crate) enum RedisConnection {
    /// Shared, self-reconnecting, requests time out after 2 s.
    Managed(ConnectionManager),
    /// A connection to every node of a cluster (self-refreshing on MOVED).
    Cluster(ClusterConnection),
}

/// The seed URLs in `urls` (comma-separated); more than one means a Redis Cluster.
pub(crate) fn seeds(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Connects to `urls`: the shared connection for commands.
pub(crate) async fn connect(urls: &str) -> Result<RedisConnection> {
    let failed = |source| storage_error("connect to", urls, source);
    let seeds = seeds(urls);
    if seeds.len() <= 1 {
        let (_, connection) = crate::redis_storage::connect(urls.trim()).await?;
        return Ok(RedisConnection::Managed(connection));
    }
    let commands = cluster_builder(&seeds).build().map_err(failed)?;
    let connection = commands.get_async_connection().await.map_err(failed)?;
    Ok(RedisConnection::Cluster(connection))
}

/// A Redis Cluster client on `seeds`, as every connection of cluster mode wants it.
pub(crate) fn cluster_builder(seeds: &[&str]) -> ClusterClientBuilder {
    ClusterClient::builder(seeds.iter().copied())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        // A few quick retries ride out a failover's MOVED/TRYAGAIN; requests still
        // fail within seconds while a node is away.
        .retries(3)
        .max_retry_wait(500)
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Managed(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Managed(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seeds;

    #[test]
    fn several_comma_separated_urls_are_the_seed_nodes_of_a_cluster() {
        assert_eq!(seeds("redis://127.0.0.1:6379"), ["redis://127.0.0.1:6379"]);
        assert_eq!(
            seeds("redis://127.0.0.1:7000, redis://127.0.0.1:7001,"),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
    }
}

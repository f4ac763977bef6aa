//! Connections to Redis, by URL: one server (`redis://`, `rediss://` for TLS) or a Redis
//! Cluster (`redis+cluster://host:port,host:port`, `rediss+cluster://…`). One [`Conn`] type
//! for both, so the store's commands and scripts do not care which it talks to.
//!
//! Every call fails within [`TIMEOUT`] when Redis is away, with no retry inside a call (the
//! first retry would wait a second or more, which a page would pay per store call); the
//! connection reconnects on the next call instead.

use super::unavailable;
use crate::cache::CacheError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// How long a connect or a call may take before it fails with `Unavailable`.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to one Redis server or to a Redis Cluster. Cheap to clone: clones share the
/// underlying multiplexed connection(s).
#[derive(Clone)]
pub enum Conn {
    /// One server (or one shard's primary), reconnecting by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the primary that owns its keys' slot.
    Cluster(ClusterConnection),
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server: the URL as `redis` parses it.
    Single(String),
    /// A cluster: one `redis://` (or `rediss://`) URL per seed node.
    Cluster(Vec<String>),
}

/// Reads a store URL. `redis+cluster://[user:password@]host:port[,host:port…]` names a
/// cluster by some of its nodes (the others are discovered); the credentials apply to each.
pub fn target(url: &str) -> Result<Target, CacheError> {
    let cluster = [("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")]
        .into_iter()
        .find_map(|(scheme, plain)| url.strip_prefix(scheme).map(|rest| (plain, rest)));
    let Some((scheme, rest)) = cluster else { return Ok(Target::Single(url.to_string())) };
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.split_once('/').map_or(hosts, |(hosts, _)| hosts);
    let nodes: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("{scheme}{credentials}{h}")).collect();
    if nodes.is_empty() {
        return Err(unavailable(format!("{url}: a cluster URL names at least one host:port")));
    }
    Ok(Target::Cluster(nodes))
}

impl Conn {
    /// Connects to what `url` names ([`target`]). Fails if it cannot be reached now.
    pub async fn open(url: &str) -> Result<Self, CacheError> {
        match target(url)? {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(TIMEOUT)
                    .set_response_timeout(TIMEOUT)
                    .set_number_of_retries(0);
                let manager = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
                Ok(Self::Single(manager))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes)
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .retries(0)
                    .build()
                    .map_err(unavailable)?;
                Ok(Self::Cluster(client.get_async_connection().await.map_err(unavailable)?))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_each_seed_node_with_the_credentials() {
        assert_eq!(target("redis://h:1/2").unwrap(), Target::Single("redis://h:1/2".into()));
        assert_eq!(
            target("rediss+cluster://u:p@a:1,b:2").unwrap(),
            Target::Cluster(vec!["rediss://u:p@a:1".into(), "rediss://u:p@b:2".into()])
        );
        assert!(target("redis+cluster://").is_err());
    }
}

//! Connections to Redis, by URL: one server, a Redis Cluster, or the master of a Redis
//! Sentinel service (`sentinel`), each over plain TCP or TLS. One [`Conn`] type for all, so
//! the store's commands and scripts do not care which it talks to. What a URL names is
//! `url`'s ([`Target`]).
//!
//! Every call fails within [`TIMEOUT`] when Redis is away, with no retry inside a call (the
//! first retry would wait a second or more, which a page would pay per store call); the
//! connection reconnects on the next call instead.

use super::sentinel::Failover;
use super::unavailable;
use super::url::{Target, Tls, Topology};
use crate::CacheError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, ConnectionInfo, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long a connect or a call may take before it fails with `Unavailable`.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to one Redis server, to a Redis Cluster, or to a Sentinel service's master.
/// Cheap to clone: clones share the underlying multiplexed connection(s).
#[derive(Clone)]
pub enum Conn {
    /// One server (or one shard's primary), reconnecting by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the primary that owns its keys' slot.
    Cluster(ClusterConnection),
    /// The master of a Sentinel service, looked up again whenever its connection breaks.
    Sentinel(Arc<Failover>),
}

impl Conn {
    /// Connects to what `url` names ([`Target::parse`]). Fails if it cannot be reached now,
    /// or if its `ca` file is missing or holds no certificate; the error holds no credential.
    pub async fn open(url: &str) -> Result<Self, CacheError> {
        let target = Target::parse(url).map_err(unavailable)?;
        let shown = Target::redact(url);
        let fail = |e: &dyn fmt::Display| unavailable(format!("{shown}: {e}"));
        let certificates = target.certificates().map_err(|e| fail(&e))?;
        if target.tls == Tls::Insecure {
            tracing::warn!(
                store = %shown,
                "Redis over TLS without certificate checks (#insecure): for local testing only"
            );
        }
        match &target.topology {
            Topology::Single(node) => {
                let client = client(target.connection_info(node), &certificates).map_err(|e| fail(&e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(TIMEOUT)
                    .set_response_timeout(TIMEOUT)
                    .set_number_of_retries(0);
                let manager = ConnectionManager::new_with_config(client, config).await.map_err(|e| fail(&e))?;
                Ok(Self::Single(manager))
            }
            Topology::Cluster(nodes) => {
                let nodes: Vec<ConnectionInfo> = nodes.iter().map(|n| target.connection_info(n)).collect();
                let mut builder =
                    ClusterClientBuilder::new(nodes).connection_timeout(TIMEOUT).response_timeout(TIMEOUT).retries(0);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                let client = builder.build().map_err(|e| fail(&e))?;
                Ok(Self::Cluster(client.get_async_connection().await.map_err(|e| fail(&e))?))
            }
            Topology::Sentinel { sentinels, service } => {
                let failover = Failover::new(&target, sentinels, service, certificates).map_err(|e| fail(&e))?;
                // Connect now, as the other kinds do: a wrong URL fails at start-up.
                failover.call(|_| async { Ok(()) }).await.map_err(|e| fail(&e))?;
                Ok(Self::Sentinel(Arc::new(failover)))
            }
        }
    }
}

/// A client for `info`, with the `ca` file's certificates if there are any.
pub(super) fn client(info: ConnectionInfo, certificates: &Option<TlsCertificates>) -> RedisResult<Client> {
    match certificates {
        Some(certificates) => Client::build_with_tls(info, certificates.clone()),
        None => Client::open(info),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(f) => Box::pin(f.call(move |mut c| async move { c.req_packed_command(cmd).await })),
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
            Self::Sentinel(f) => {
                Box::pin(f.call(move |mut c| async move { c.req_packed_commands(cmd, offset, count).await }))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(f) => f.db(),
        }
    }
}

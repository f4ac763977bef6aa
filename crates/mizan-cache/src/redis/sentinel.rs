//! The master of a Redis Sentinel service as one connection ([`Failover`]), found through the
//! sentinels. A connection that breaks (the master died, or was demoted and answers
//! `READONLY`) asks the sentinels for the master again on the next call, so after a failover
//! calls fail for a moment, then reach the new master.

use super::conn::{TIMEOUT, client};
use super::url::{Node, Target};
use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, ErrorKind, RedisConnectionInfo, RedisError, RedisResult, Role,
    TlsCertificates,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After the sentinels could not name a reachable master, how long calls fail at once
/// (with that reason) before one asks them again: during a failover the sentinels are asked
/// a few times a second, not once per store call.
pub const RESOLVE_BACKOFF: Duration = Duration::from_millis(100);

/// How long a sentinel may take to connect, and to answer, before a lookup goes on without
/// it (the others are asked at the same time): a sentinel that has gone silent does not hold
/// a lookup for the whole [`TIMEOUT`], during a failover when every lookup counts.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

/// The master of a Sentinel service: one multiplexed connection, found through the sentinels
/// and kept until it breaks (an I/O error, a timeout, `READONLY`, `MASTERDOWN`); the next call
/// then looks the master up again. One lookup at a time; the calls waiting meanwhile use its
/// answer.
///
/// A lookup asks every sentinel at once (`SENTINEL get-master-addr-by-name`) and keeps the
/// first address that answers `ROLE` as a master: a sentinel that is down or still names the
/// old master delays nothing, a silent one at most [`SENTINEL_TIMEOUT`]. Each lookup opens
/// fresh connections, bounded by [`SENTINEL_TIMEOUT`] to a sentinel and [`TIMEOUT`] to the
/// master. (redis-rs's own `Sentinel` asks the sentinels one after the other on cached
/// connections without a timeout: a sentinel on a host that vanished would hold every
/// lookup.)
pub struct Failover {
    /// The sentinels, with their own credentials and the URL's TLS.
    sentinels: Vec<Client>,
    /// The URL: TLS and credentials of the data nodes, the database.
    target: Target,
    /// The `ca` file's certificates, for the data nodes.
    certificates: Option<TlsCertificates>,
    /// The service name.
    service: String,
    /// When the last lookup failed, and why; the lock makes lookups one at a time.
    lookup: tokio::sync::Mutex<Option<(Instant, String)>>,
    /// The master's connection, `None` until found and once broken.
    master: ArcSwapOption<Master>,
}

struct Master {
    conn: MultiplexedConnection,
    /// `host:port`, for messages.
    addr: String,
}

impl Failover {
    /// The database the URL names, on whichever master.
    pub(super) fn db(&self) -> i64 {
        self.target.db
    }

    /// A failover over `sentinels` for `service`; connects to nothing yet.
    pub(super) fn new(
        target: &Target,
        sentinels: &[Node],
        service: &str,
        certificates: Option<TlsCertificates>,
    ) -> RedisResult<Self> {
        let sentinels = sentinels
            .iter()
            .map(|node| {
                let info = ConnectionInfo {
                    addr: target.addr(node),
                    redis: RedisConnectionInfo {
                        username: target.sentinel_auth.username.clone(),
                        password: target.sentinel_auth.password.as_ref().map(|p| p.0.clone()),
                        ..Default::default()
                    },
                };
                client(info, &certificates)
            })
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Self {
            sentinels,
            target: target.clone(),
            certificates,
            service: service.to_string(),
            lookup: tokio::sync::Mutex::new(None),
            master: ArcSwapOption::empty(),
        })
    }

    /// Sends one request to the master (found first if need be), all within [`TIMEOUT`]. An
    /// error that means the connection is no good drops it; nothing is retried.
    pub(super) async fn call<T, F, Fut>(&self, request: F) -> RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let master = self.master(deadline).await?;
        let result = match tokio::time::timeout_at(deadline, request(master.conn.clone())).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the master {} of {} did not answer within {TIMEOUT:?}", master.addr, self.service),
            ))),
        };
        if let Err(e) = &result
            && breaks_connection(e)
        {
            self.forget(&master, e);
        }
        result
    }

    /// The master's connection: the one in use, or a new one to the master the sentinels
    /// name now (unless a lookup failed less than [`RESOLVE_BACKOFF`] ago); by `deadline`.
    async fn master(&self, deadline: tokio::time::Instant) -> RedisResult<Arc<Master>> {
        if let Some(master) = self.master.load_full() {
            return Ok(master);
        }
        let unavailable = |why: &str| failure(format!("sentinel service {}: {why}", self.service));
        let Ok(mut failed) = tokio::time::timeout_at(deadline, self.lookup.lock()).await else {
            return Err(unavailable(&format!("no master found within {TIMEOUT:?} (another call is looking)")));
        };
        if let Some(master) = self.master.load_full() {
            return Ok(master);
        }
        if let Some((at, why)) = &*failed
            && at.elapsed() < RESOLVE_BACKOFF
        {
            return Err(unavailable(why));
        }
        let found = match tokio::time::timeout_at(deadline, self.find()).await {
            Ok(found) => found,
            Err(_) => Err(format!("no master found within {TIMEOUT:?}")),
        };
        match found {
            Ok(master) => {
                tracing::info!(
                    store = "redis",
                    service = %self.service,
                    master = %master.addr,
                    "connected to the sentinel service's master"
                );
                *failed = None;
                let master = Arc::new(master);
                self.master.store(Some(master.clone()));
                Ok(master)
            }
            Err(why) => {
                let error = unavailable(&why);
                *failed = Some((Instant::now(), why));
                Err(error)
            }
        }
    }

    /// Asks every sentinel at once; the first master found wins. The error says what each
    /// sentinel answered.
    async fn find(&self) -> Result<Master, String> {
        let mut asks: FuturesUnordered<_> = self.sentinels.iter().map(|sentinel| self.ask(sentinel)).collect();
        let mut errors = Vec::new();
        while let Some(answer) = asks.next().await {
            match answer {
                Ok(master) => return Ok(master),
                Err(why) => errors.push(why),
            }
        }
        Err(errors.join("; "))
    }

    /// The master `sentinel` names, connected, if it answers `ROLE` as a master.
    async fn ask(&self, sentinel: &Client) -> Result<Master, String> {
        let quick = AsyncConnectionConfig::new()
            .set_connection_timeout(SENTINEL_TIMEOUT)
            .set_response_timeout(SENTINEL_TIMEOUT);
        let config = AsyncConnectionConfig::new().set_connection_timeout(TIMEOUT).set_response_timeout(TIMEOUT);
        let at = sentinel.get_connection_info().addr.to_string();
        let mut conn = sentinel
            .get_multiplexed_async_connection_with_config(&quick)
            .await
            .map_err(|e| format!("sentinel {at}: {e}"))?;
        let mut ask = redis::cmd("SENTINEL");
        ask.arg("get-master-addr-by-name").arg(&self.service);
        let named: Option<(String, u16)> =
            ask.query_async(&mut conn).await.map_err(|e| format!("sentinel {at}: {e}"))?;
        let Some((host, port)) = named else { return Err(format!("sentinel {at} knows no such service")) };
        let node = Node { host, port };
        let addr = format!("{}:{}", node.host, node.port);
        let master = client(self.target.connection_info(&node), &self.certificates)
            .map_err(|e| format!("master {addr} (from sentinel {at}): {e}"))?;
        let mut conn = master
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("master {addr} (from sentinel {at}): {e}"))?;
        match redis::cmd("ROLE").query_async(&mut conn).await {
            Ok(Role::Primary { .. }) => Ok(Master { conn, addr }),
            Ok(_) => Err(format!("{addr} (from sentinel {at}) is not a master (yet)")),
            Err(e) => Err(format!("master {addr} (from sentinel {at}): {e}")),
        }
    }

    /// Drops `master`'s connection if it is still the one in use: the next call looks up the
    /// master again.
    fn forget(&self, master: &Arc<Master>, error: &RedisError) {
        let previous = self.master.compare_and_swap(master, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, master)) {
            tracing::warn!(
                store = "redis",
                service = %self.service,
                master = %master.addr,
                %error,
                "lost the master's connection; the next call looks it up again"
            );
        }
    }
}

/// An error of this module's own, as redis-rs errors display: the message alone.
fn failure(message: String) -> RedisError {
    RedisError::from(std::io::Error::other(message))
}

/// Whether `e` means the connection is no longer the master's, or no longer works.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown)
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
}

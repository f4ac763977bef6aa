//! The render node: everything a request needs, built once at start-up and shared by the
//! HTTP handlers as `Arc<Node>`. The page pipeline is in [`page`] (rendering a page in
//! `render`), request coalescing in [`coalesce`], streaming misses in [`stream`]; several nodes
//! on one store: render locks in [`lock`], the memory tier in front of Redis in [`tier`].

pub mod coalesce;
pub mod live;
pub mod lock;
pub mod memo;
pub mod page;
pub mod purges;
pub mod quarantine;
mod render;
pub mod stream;
pub mod tier;

use crate::cache::invalidate::Invalidation;
use crate::cache::memory::MemoryStore;
use crate::cache::signature::Verifier;
use crate::cache::sqlite::SqliteStore;
use crate::cache::{CacheError, Keys, Store, now_ms};
use crate::manifest::{Manifest, ManifestError, Router};
use crate::metrics::PurgeSource;
use crate::origin::proxy::Forwarding;
use crate::origin::{Origin, OriginConfig};
use crate::pool::{BundleSource, Pool, PoolConfig, RenderError};
use coalesce::Coalescer;
use memo::TargetMemo;
use page::PageOutcome;
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::cache::StoreConfig;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_parsed_and_logged_without_credentials() {
        let redis: StoreConfig = "redis://:hunter2@10.0.0.5:6379/0".parse().unwrap();
        assert_eq!(redis.redacted(), "redis://***@10.0.0.5:6379/0");
        assert_eq!(redact_url("redis://10.0.0.5/"), "redis://10.0.0.5/");
        assert_eq!(redact_url("http://user:pw@origin:8000/x@y"), "http://***@origin:8000/x@y");
        let tls: StoreConfig = "rediss://:hunter2@h/?ca=/ca.pem".parse().unwrap();
        assert_eq!(tls.redacted(), "rediss://***@h/?ca=/ca.pem");
        let sentinel: StoreConfig = "redis+sentinel://s1,s2/m?sentinel_password=hunter2".parse().unwrap();
        assert_eq!(sentinel.redacted(), "redis+sentinel://s1,s2/m?sentinel_password=***");
        for bad in ["redis://:hunter2@a,b/", "http://:hunter2@h/", "valkey://:hunter2@h/", "hunter2"] {
            let e = bad.parse::<StoreConfig>().unwrap_err();
            assert!(!e.contains("hunter2"), "{bad}: {e}");
            assert!(e.contains("redis+sentinel://"), "{bad}: {e}");
        }
    }
}

/// `url` without the credentials of its authority: `redis://:secret@host/` is
/// `redis://***@host/`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(unparsable URL)".into() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Everything the node is configured with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The edge manifest file.
    pub manifest: PathBuf,
    /// The origin.
    pub origin: OriginConfig,
    /// The cache store.
    pub store: StoreConfig,
    /// The isolate pool.
    pub pool: PoolConfig,
    /// `MIZAN_SECRET`.
    pub secret: Vec<u8>,
    /// Development mode (the example secret is accepted).
    pub dev: bool,
    /// The `X-Forwarded-*` the proxy writes: the public URL, the trusted proxies.
    pub forwarding: Forwarding,
    /// Bound of the request-target memo, in bytes.
    pub memo_bytes: usize,
    /// The metrics to record into: a reload passes the running node's, so they are
    /// cumulative; `None` makes a fresh set.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Several nodes on one store: the memory tier and the render locks.
    pub shared: SharedConfig,
}

/// What a node does to share one store with others (docs/operations.md, "Several nodes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedConfig {
    /// Bytes of the node's memory tier in front of a Redis store (`--l1-mb`); 0: none.
    pub l1_bytes: u64,
    /// How long a render lock lasts, in ms (`--render-lock-ms`); 0 turns cross-node locks off;
    /// `None`: [`default_render_lock_ms`] of the origin and render timeouts.
    pub render_lock_ms: Option<u64>,
}

/// What a render lock's holder may need beyond the origin timeout and the render deadline:
/// reading generations before, and writing the page after.
pub const LOCK_MARGIN: Duration = Duration::from_secs(1);

/// The default render lock time: the longest a render flight can take (one origin timeout,
/// the dependencies being fetched at once, plus the render deadline, counted from the queue)
/// plus [`LOCK_MARGIN`]; so a live holder never loses its lock.
pub fn default_render_lock_ms(origin_timeout: Duration, render_timeout: Duration) -> u64 {
    (origin_timeout + render_timeout + LOCK_MARGIN).as_millis() as u64
}

impl SharedConfig {
    /// The render locks `config` asks for: `None` when turned off.
    fn render_lock(&self, origin_timeout: Duration, render_timeout: Duration) -> Option<lock::RenderLock> {
        let ttl_ms = self.render_lock_ms.unwrap_or_else(|| default_render_lock_ms(origin_timeout, render_timeout));
        (ttl_ms > 0).then_some(lock::RenderLock { ttl_ms, wait: origin_timeout + render_timeout })
    }
}

/// Default bound of the request-target memo: 16 MiB.
pub const DEFAULT_MEMO_BYTES: usize = 16 << 20;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A bundle does not load, or the pool does not start.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The secret is refused, or the store cannot be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The origin client cannot be set up (a `returns` schema that does not compile, say).
    #[error("origin: {0}")]
    Origin(String),
    /// Settings that do not go together (a memory tier without a Redis store, say).
    #[error("{0}")]
    Config(String),
}

/// Retries the purges that did not land, with backoff, until each does. Holds the node only
/// while retrying, so a dropped node ends it.
async fn retry_purges(node: std::sync::Weak<Node>, pending: Arc<purges::PendingPurges>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if pending.is_empty() {
            pending.wake.notified().await;
            backoff = Duration::from_millis(100);
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(purges::MAX_RETRY);
        }
        let Some(node) = node.upgrade() else {
            // A reload retired this node: the wake-up this task took belongs to the next one's.
            pending.wake.notify_one();
            return;
        };
        for purge in pending.take() {
            if node.try_purge(&purge, PurgeSource::Deferred, "deferred purge landed").await {
                pending.landed(&purge);
            } else {
                pending.retry_later(purge);
            }
        }
    }
}

/// The node's notion of now: the system clock plus an offset that tests move forward.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicU64,
}

impl Clock {
    /// Unix milliseconds.
    pub fn now(&self) -> u64 {
        now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves time forward (tests only need this; production never calls it).
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

/// Counters since start, reported by `/_mizan/health`.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Pages served from the cache, fresh.
    pub hits: AtomicU64,
    /// Pages rendered for a miss.
    pub misses: AtomicU64,
    /// Stale pages served (revalidating, or because the origin or render failed).
    pub stale: AtomicU64,
    /// Pages never cached (no-store).
    pub bypass: AtomicU64,
    /// Store calls that failed; the node failed open.
    pub store_errors: AtomicU64,
    /// Renders whose write was dropped because a purge moved a generation.
    pub dropped_writes: AtomicU64,
    /// Entries purged.
    pub purged: AtomicU64,
    /// When a store call last failed (unix ms; 0: never).
    pub last_store_error_ms: AtomicU64,
    /// Requests refused because their route is quarantined.
    pub quarantined: AtomicU64,
    /// Render locks: acquired, waited for, taken over.
    pub locks: lock::LockStats,
}

/// A bundle's identity, recorded in page metadata.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// `react`, `vue`, `svelte`.
    pub framework: String,
    /// Hex SHA-256.
    pub hash: String,
    /// Where its client bundle is served, if it has one.
    pub client_url: Option<String>,
}

/// A static asset the node serves (client bundles), immutable under its content hash.
#[derive(Debug, Clone)]
pub struct Asset {
    /// The bytes.
    pub body: bytes::Bytes,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// The render node.
pub struct Node {
    /// The manifest.
    pub manifest: Manifest,
    router: Router,
    /// The isolate pool.
    pub pool: Pool,
    /// The cache store.
    pub store: Arc<dyn Store>,
    /// The origin client.
    pub origin: Origin,
    /// Protocol keys.
    pub keys: Keys,
    /// Purge and reload signature checks (shared by the node's generations, so a signature
    /// accepted before a reload is still a replay after it).
    pub verifier: Arc<Verifier>,
    /// Page renders in flight.
    pub flights: Coalescer<PageOutcome>,
    /// Now (shared by the node's generations).
    pub clock: Arc<Clock>,
    /// Counters (shared by the node's generations).
    pub stats: Arc<NodeStats>,
    bundles: HashMap<String, BundleInfo>,
    /// The hash of each route's bundle, by route index: a page rendered by another version of
    /// the bundle (before a reload) is not served.
    route_bundles: Vec<Option<Arc<str>>>,
    /// Static assets by URL path.
    pub assets: HashMap<String, Asset>,
    /// Raw request target -> where it goes (routes without `vary` only), bounded in bytes.
    pub targets: TargetMemo,
    /// The `X-Forwarded-*` headers the proxy writes.
    pub forwarding: Forwarding,
    /// Routes whose renders keep failing.
    pub quarantine: quarantine::Quarantine,
    /// Purges from the origin that have not landed in the store yet.
    pub purges: Arc<purges::PendingPurges>,
    /// Workers that renders of suspect routes may hold at once: one less than the pool has.
    pub(crate) suspect_slots: tokio::sync::Semaphore,
    /// Each route's queue lane (its path), by route index.
    lanes: Vec<Arc<str>>,
    /// Prometheus metrics, shared by the node's generations.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cross-node render locks, unless turned off.
    render_lock: Option<lock::RenderLock>,
    /// The memory tier in front of the store, if any.
    tier: Option<Arc<dyn tier::TierView>>,
}

/// What a node hands to the one a reload builds: the store and what counts since start.
#[derive(Clone)]
pub struct Carried {
    /// The open store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<Clock>,
    /// The counters.
    pub stats: Arc<NodeStats>,
    /// Purges from the origin that have not landed.
    pub purges: Arc<purges::PendingPurges>,
    /// The signatures accepted lately.
    pub verifier: Arc<Verifier>,
    /// The memory tier in front of the store, if any (it is part of the store).
    pub tier: Option<Arc<dyn tier::TierView>>,
}

impl Node {
    /// Loads the manifest and bundles, starts the pool, opens the store.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, StartError> {
        Self::start_carrying(config, None).await
    }

    /// What a reload carries over from this node to the next.
    pub fn carried(&self) -> Carried {
        Carried {
            store: self.store.clone(),
            clock: self.clock.clone(),
            stats: self.stats.clone(),
            purges: self.purges.clone(),
            verifier: self.verifier.clone(),
            tier: self.tier.clone(),
        }
    }

    /// [`Node::start`], on the store and counters of a running node when `carried` is given (a
    /// reload): the manifest and bundles are loaded again and a pool is built for them, beside
    /// the running node's.
    pub async fn start_carrying(config: NodeConfig, carried: Option<Carried>) -> Result<Arc<Node>, StartError> {
        let keys = Keys::from_secret(&config.secret, config.dev)?;
        let manifest = Manifest::load(&config.manifest)?;
        let router = Router::new(&manifest).expect("a loaded manifest has a valid router");
        let mut sources = Vec::new();
        let mut bundles = HashMap::new();
        let mut assets = HashMap::new();
        for (name, bundle) in &manifest.bundles {
            let path = manifest.bundle_path(name).expect("bundle names come from the manifest");
            let mut source = BundleSource::read(name, &path)?;
            source.isolation = bundle.isolation;
            let framework = serde_json::to_value(bundle.framework).ok().and_then(|v| v.as_str().map(str::to_string));
            let client_url = match &bundle.client {
                None => None,
                Some(file) => {
                    let path = manifest.base_dir.join(file);
                    let body = std::fs::read(&path).map_err(|source| RenderError::BundleRead {
                        bundle: format!("{name} (client)"),
                        path: path.clone(),
                        source,
                    })?;
                    let hash = hex::encode(sha2::Sha256::digest(&body));
                    let url = format!("/_mizan/assets/{name}/client.{}.js", &hash[..16]);
                    let asset = Asset { body: body.into(), content_type: "text/javascript; charset=utf-8" };
                    assets.insert(url.clone(), asset);
                    Some(url)
                }
            };
            let info = BundleInfo { framework: framework.unwrap_or_default(), hash: source.hash.clone(), client_url };
            bundles.insert(name.clone(), info);
            sources.push(source);
        }
        let metrics = config.metrics.clone().unwrap_or_else(crate::metrics::Metrics::new);
        let pool_config = crate::pool::PoolConfig { metrics: Some(metrics.pool()), ..config.pool.clone() };
        let pool = tokio::task::spawn_blocking(move || Pool::start(pool_config, &sources))
            .await
            .map_err(|e| RenderError::Setup(e.to_string()))??;
        for route in manifest.routes.iter().filter(|r| r.stream && !pool.streams(&r.bundle)) {
            tracing::warn!(
                route = %route.path,
                bundle = %route.bundle,
                "the route asks to stream, but its bundle has no renderStream(input) (Svelte 5 has no streaming renderer): its misses render buffered"
            );
        }
        let origin = Origin::new(config.origin.clone(), &manifest).map_err(StartError::Origin)?;
        let carried = match carried {
            Some(carried) => carried,
            None => {
                let l1_bytes = config.shared.l1_bytes;
                if l1_bytes > 0 && !matches!(config.store, StoreConfig::Redis(_)) {
                    return Err(StartError::Config(format!(
                        "a memory tier (--l1-mb) sits in front of a Redis store, and the store is {}",
                        config.store.redacted()
                    )));
                }
                let (store, tier): (Arc<dyn Store>, _) = match &config.store {
                    StoreConfig::Memory(bytes) => (Arc::new(MemoryStore::new(*bytes)), None),
                    StoreConfig::Sqlite(path) => (Arc::new(SqliteStore::open(path, &manifest.site)?), None),
                    StoreConfig::Redis(url) => tier::open_redis(url, &manifest.site, l1_bytes).await?,
                };
                if let Some(tier) = &tier {
                    tier::watch(&metrics, tier);
                }
                Carried {
                    store: crate::metrics::store::MeteredStore::wrap(store, &metrics),
                    clock: Arc::default(),
                    stats: Arc::default(),
                    purges: Arc::default(),
                    verifier: Arc::new(Verifier::new(keys.clone())),
                    tier,
                }
            }
        };
        let Carried { store, clock, stats, purges, verifier, tier } = carried;
        let route_bundles =
            manifest.routes.iter().map(|r| bundles.get(&r.bundle).map(|b| Arc::from(b.hash.as_str()))).collect();
        let node = Arc::new(Node {
            router,
            pool,
            store,
            origin,
            verifier,
            keys,
            flights: Coalescer::default(),
            clock,
            stats,
            bundles,
            route_bundles,
            assets,
            targets: TargetMemo::new(config.memo_bytes),
            forwarding: config.forwarding.clone(),
            quarantine: quarantine::Quarantine::new(manifest.routes.len()),
            purges: purges.clone(),
            suspect_slots: tokio::sync::Semaphore::new(config.pool.workers.saturating_sub(1).max(1)),
            lanes: manifest.routes.iter().map(|r| Arc::from(r.path.as_str())).collect(),
            metrics,
            render_lock: config.shared.render_lock(config.origin.timeout, config.pool.render_timeout),
            tier,
            manifest,
        });
        tokio::spawn(retry_purges(Arc::downgrade(&node), purges));
        Ok(node)
    }

    /// Applies a purge the origin asked for; one the store cannot take now is kept, retried
    /// until it lands, and meanwhile its context is never served from the cache.
    pub async fn purge_from_origin(&self, purge: Invalidation) {
        if !self.try_purge(&purge, PurgeSource::Header, "X-Mizan-Invalidate").await {
            tracing::error!(context = %purge.context, "purge deferred: retried until it lands; its pages are rendered fresh meanwhile");
            self.metrics.purges_deferred.increment(1);
            self.purges.defer(purge);
        }
    }

    /// Applies `purge` to the store; counts and logs (`landed`) what it removed, or the store's
    /// failure. Whether it landed.
    async fn try_purge(&self, purge: &Invalidation, source: PurgeSource, landed: &str) -> bool {
        match self.store.purge(&purge.context, &purge.params, purge.mode).await {
            Ok(n) => {
                self.stats.purged.fetch_add(n, Ordering::Relaxed);
                self.metrics.purged(source, n);
                tracing::info!(context = %purge.context, purged = n, "{landed}");
                true
            }
            Err(e) => {
                self.store_failed("purge", &e);
                false
            }
        }
    }

    /// Waits for every render flight in the air (background re-renders included) to land.
    pub async fn settle_flights(&self) {
        loop {
            let keys = self.flights.keys();
            if keys.is_empty() {
                return;
            }
            for key in keys {
                self.flights.settle(&key).await;
            }
        }
    }

    /// Each bundle's name and hash (hex SHA-256 of its code), by name.
    pub fn bundle_hashes(&self) -> std::collections::BTreeMap<&str, &str> {
        self.bundles.iter().map(|(name, info)| (name.as_str(), info.hash.as_str())).collect()
    }

    /// Whether `meta` (a cached entry's) was rendered by the bundle route `index` has now: a
    /// page from another version of the bundle is not served.
    pub(crate) fn same_bundle(&self, index: usize, meta: &crate::cache::Meta) -> bool {
        match (&meta.render, self.route_bundles.get(index)) {
            (Some(render), Some(Some(hash))) => render.bundle == **hash,
            _ => true,
        }
    }

    /// The queue lane of route `index`.
    pub(crate) fn lane(&self, index: usize) -> Option<Arc<str>> {
        self.lanes.get(index).cloned()
    }

    /// The memory tier's numbers for `/_mizan/health` (`null` without one).
    pub fn tier_report(&self) -> serde_json::Value {
        self.tier.as_ref().map_or(serde_json::Value::Null, |tier| tier.report())
    }

    /// Counts a failed store call; the caller goes on without the cache.
    pub(crate) fn store_failed(&self, what: &str, error: &CacheError) {
        self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
        self.stats.last_store_error_ms.store(self.clock.now(), Ordering::Relaxed);
        tracing::warn!(store = self.store.name(), %error, "cache {what} failed; serving without the cache");
    }
}

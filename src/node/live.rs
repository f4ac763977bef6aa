//! The serving node and its reloads. A reload (`SIGHUP`, a signed `POST /_mizan/reload`) loads
//! the manifest and bundles again and builds a new node generation — snapshot, isolates,
//! origin client — beside the serving one, on the same store and counters; it is swapped in
//! when it is ready. Requests already in the old generation finish there; the old generation
//! is dropped (its isolates with it) when the last of them is done. A reload that fails
//! changes nothing: the old generation keeps serving and the error says what was wrong.

use super::{Node, NodeConfig, StartError};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The node that serves now, swapped by reloads.
pub struct Live {
    current: ArcSwap<Node>,
    config: NodeConfig,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Reloads that were swapped in.
    generation: AtomicU64,
    /// Replaced generations not dropped yet (requests or renders still hold them).
    retiring: Arc<AtomicU64>,
}

/// Why a reload was refused (the serving generation is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The manifest or a bundle does not load, or the new pool does not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The manifest names another site: its entries live under other keys in the store,
    /// which is opened for one site.
    #[error("the manifest's site changed from {from:?} to {to:?}: restart the node to serve another site")]
    SiteChanged {
        /// The serving site.
        from: String,
        /// The manifest's.
        to: String,
    },
}

/// What a reload swapped in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// How many reloads have been swapped in since start, this one included.
    pub generation: u64,
    /// Each bundle: its name, its hash, and whether it changed (its cached pages are rendered
    /// again on their next request) or not (they stay valid).
    pub bundles: Vec<BundleChange>,
    /// How long loading and building took.
    pub ms: u64,
}

/// One bundle after a reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleChange {
    /// The manifest's name for it.
    pub name: String,
    /// Hex SHA-256 of its code.
    pub hash: String,
    /// Whether its code differs from the previous generation's (or it is new).
    pub changed: bool,
}

impl Live {
    /// `node`, started from `config`, which reloads use again.
    pub fn new(node: Arc<Node>, config: NodeConfig) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::new(node),
            config,
            reloading: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            retiring: Arc::default(),
        })
    }

    /// The generation that serves now; a request holds it to its end.
    pub fn node(&self) -> Arc<Node> {
        self.current.load_full()
    }

    /// How many reloads have been swapped in since start.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Replaced generations still finishing their requests (their isolates still alive).
    pub fn retiring(&self) -> u64 {
        self.retiring.load(Ordering::Relaxed)
    }

    /// Loads the manifest and bundles again and swaps the new generation in once it is
    /// ready; on error the serving generation is unchanged.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one = self.reloading.lock().await;
        let started = Instant::now();
        let old = self.node();
        let result = self.build(&old).await;
        match &result {
            Ok(_) => old.metrics.reload_ok.increment(1),
            Err(_) => old.metrics.reload_failed.increment(1),
        }
        let new = match result {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(%error, "reload refused; the previous version keeps serving");
                return Err(error);
            }
        };
        let mut bundles: Vec<BundleChange> = new
            .bundles
            .iter()
            .map(|(name, info)| BundleChange {
                name: name.clone(),
                hash: info.hash.clone(),
                changed: old.bundles.get(name).is_none_or(|o| o.hash != info.hash),
            })
            .collect();
        bundles.sort_by(|a, b| a.name.cmp(&b.name));
        self.current.store(new);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let ms = started.elapsed().as_millis() as u64;
        let changed: Vec<&str> = bundles.iter().filter(|b| b.changed).map(|b| b.name.as_str()).collect();
        tracing::info!(generation, ms, changed = ?changed, "reloaded: new requests go to the new version");
        self.retiring.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(retire(old, self.retiring.clone()));
        Ok(Reloaded { generation, bundles, ms })
    }

    async fn build(&self, old: &Arc<Node>) -> Result<Arc<Node>, ReloadError> {
        let mut config = self.config.clone();
        config.metrics = Some(old.metrics.clone());
        let new = Node::start_carrying(config, Some(old.carried())).await?;
        if new.manifest.site != old.manifest.site {
            return Err(ReloadError::SiteChanged { from: old.manifest.site.clone(), to: new.manifest.site.clone() });
        }
        Ok(new)
    }
}

/// Drops a replaced generation once its requests and background renders are done, on a
/// blocking thread: dropping a pool joins its render threads.
async fn retire(old: Arc<Node>, retiring: Arc<AtomicU64>) {
    let mut wait = Duration::from_millis(10);
    while Arc::strong_count(&old) > 1 {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
    let _ = tokio::task::spawn_blocking(move || drop(old)).await;
    retiring.fetch_sub(1, Ordering::Relaxed);
    tracing::info!("the previous version is retired: its isolates are gone");
}

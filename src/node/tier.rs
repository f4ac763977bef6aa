//! The node's memory tier (`--l1-mb`): pages and data kept in this node's memory in front of
//! a shared Redis, kept honest by Redis's purge log ([`crate::cache::tiered`]). The node opens
//! it with the store, carries it across reloads with the store (so its memory and its reader
//! of the log survive a reload), and reports its numbers in `/_mizan/health` (`store_tier`)
//! and `/metrics` (`mizan_l1_*`).

use super::StartError;
use crate::cache::Store;
use crate::cache::redis::RedisStore;
use crate::cache::tiered::TieredStore;
use crate::metrics::{Metrics, TierSample};
use std::sync::Arc;

/// What the node reads of its memory tier.
pub trait TierView: Send + Sync {
    /// Its numbers, as `/_mizan/health` shows them.
    fn report(&self) -> serde_json::Value;
    /// Its numbers, as the metrics need them.
    fn sample(&self) -> TierSample;
}

/// A Redis store for `site` at `url`, behind a memory tier of `l1_bytes` when that is not 0;
/// the tier as well, to report on.
pub(super) async fn open_redis(
    url: &str,
    site: &str,
    l1_bytes: u64,
) -> Result<(Arc<dyn Store>, Option<Arc<dyn TierView>>), StartError> {
    let redis = RedisStore::connect(url, site).await?;
    if l1_bytes == 0 {
        return Ok((Arc::new(redis), None));
    }
    tiered(redis, l1_bytes).await
}

/// The memory tier in front of `redis`.
async fn tiered(redis: RedisStore, l1_bytes: u64) -> Result<(Arc<dyn Store>, Option<Arc<dyn TierView>>), StartError> {
    let tier = TieredStore::start(Arc::new(redis), l1_bytes).await?;
    Ok((tier.clone(), Some(tier)))
}

impl TierView for TieredStore {
    fn report(&self) -> serde_json::Value {
        let s = self.stats();
        serde_json::json!({
            "current": s.current,
            "entries": s.entries,
            "bytes": s.bytes,
            "capacity": s.capacity,
            "hits": s.hits,
            "misses": s.misses,
            "refused": s.refused,
            "purges_applied": s.purges_applied,
            "resets": { "gap": s.resets_gap, "error": s.resets_error },
            "last_seq": s.last_seq,
            "confirmed_ms_ago": s.confirmed_ms_ago,
        })
    }

    fn sample(&self) -> TierSample {
        let s = self.stats();
        TierSample {
            hits: s.hits,
            misses: s.misses,
            bytes: s.bytes,
            entries: s.entries,
            resets: vec![("gap".into(), s.resets_gap), ("error".into(), s.resets_error)],
            current: s.current,
        }
    }
}

/// Has `metrics` read the tier's series from `tier` at each scrape, for as long as it lives.
pub(super) fn watch(metrics: &Metrics, tier: &Arc<dyn TierView>) {
    let tier = Arc::downgrade(tier);
    metrics.watch_tier(Box::new(move || tier.upgrade().map(|tier| tier.sample())));
}

//! [`MeteredStore`]: any [`Store`] with every call timed and every failure counted, by backend
//! and operation (`mizan_store_duration_seconds{backend,op}`,
//! `mizan_store_errors_total{backend,op}`), except the memory store's lookups on the hit path
//! (`get_now`, no I/O). The node wraps the store it opens once; the backends know nothing of
//! it. Every call is forwarded, the render locks (`lock`, `unlock`, `put_fenced`) included: a
//! wrapper that left them to the trait's defaults would silently turn the locks off.

use super::Metrics;
use crate::cache::{CacheError, Entry, Fence, Generations, LockOutcome, PurgeMode, PutOutcome, Store};
use metrics::{Counter, Histogram};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// The operations, as labelled.
const OPS: [&str; 8] = ["get", "put", "purge", "generations", "remove", "lock", "unlock", "put_fenced"];
const GET: usize = 0;
const PUT: usize = 1;
const PURGE: usize = 2;
const GENERATIONS: usize = 3;
const REMOVE: usize = 4;
const LOCK: usize = 5;
const UNLOCK: usize = 6;
const PUT_FENCED: usize = 7;

/// A store whose calls are timed and counted.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    durations: [Histogram; OPS.len()],
    errors: [Counter; OPS.len()],
}

impl MeteredStore {
    /// `store`, metered into `metrics`.
    pub fn wrap(store: Arc<dyn Store>, metrics: &Metrics) -> Arc<dyn Store> {
        let backend = store.name();
        Arc::new(Self {
            durations: OPS
                .map(|op| metrics.histogram("mizan_store_duration_seconds", &[("backend", backend), ("op", op)])),
            errors: OPS.map(|op| metrics.counter("mizan_store_errors_total", &[("backend", backend), ("op", op)])),
            inner: store,
        })
    }

    /// Awaits `call`, timed as `op`; a failure counts, and so does a call its caller gave up
    /// on (a write that outlived the node's wait for it).
    async fn timed<T>(&self, op: usize, call: impl Future<Output = Result<T, CacheError>>) -> Result<T, CacheError> {
        let mut timing = Timing { store: self, op, started: Instant::now(), failed: true };
        let result = call.await;
        timing.failed = result.is_err();
        result
    }
}

/// One call being timed: recorded when dropped, whether the call finished or was abandoned.
struct Timing<'a> {
    store: &'a MeteredStore,
    op: usize,
    started: Instant,
    failed: bool,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        self.store.durations[self.op].record(self.started.elapsed());
        if self.failed {
            self.store.errors[self.op].increment(1);
        }
    }
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        self.timed(GET, self.inner.get(key)).await
    }

    /// Not timed: a lookup without I/O (the memory store's hit path) takes a fraction of a
    /// microsecond, less than timing it would cost on every hit.
    fn get_now(&self, key: &str) -> Option<Option<Arc<Entry>>> {
        self.inner.get_now(key)
    }

    async fn generations(&self, tags: &[String]) -> Result<Generations, CacheError> {
        self.timed(GENERATIONS, self.inner.generations(tags)).await
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        self.timed(PUT, self.inner.put(entry)).await
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        self.timed(PURGE, self.inner.purge(context, params, mode)).await
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        self.timed(REMOVE, self.inner.remove(key)).await
    }

    async fn lock(&self, key: &str, ttl_ms: u64) -> Result<LockOutcome, CacheError> {
        self.timed(LOCK, self.inner.lock(key, ttl_ms)).await
    }

    async fn unlock(&self, key: &str, fence: Fence) -> Result<(), CacheError> {
        self.timed(UNLOCK, self.inner.unlock(key, fence)).await
    }

    async fn put_fenced(&self, entry: Entry, fence: Fence) -> Result<PutOutcome, CacheError> {
        self.timed(PUT_FENCED, self.inner.put_fenced(entry, fence)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::redis::RedisStore;
    use crate::testing::RedisServer;

    fn page(key: &str) -> Entry {
        let meta = serde_json::from_value(serde_json::json!({
            "v": 1, "kind": "page", "key": key, "status": 200, "headers": [],
            "created_at": crate::cache::now_ms(), "ttl_s": 60, "swr_s": 0, "sie_s": 0,
            "deps": [], "etag": null, "generation": {}
        }))
        .unwrap();
        Entry { body: bytes::Bytes::from_static(b"page"), meta }
    }

    /// The render locks reach the wrapped store (the trait's defaults would answer
    /// `Unsupported` and turn them off without a word), and are timed like the other calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn render_locks_reach_the_wrapped_store_and_are_timed() {
        let server = RedisServer::start();
        let metrics = Metrics::new();
        let redis = RedisStore::connect(&server.url(), "shop").await.unwrap();
        let store = MeteredStore::wrap(Arc::new(redis), &metrics);
        let key = "mz1:p:metered";
        let LockOutcome::Acquired(fence) = store.lock(key, 10_000).await.unwrap() else { panic!("not acquired") };
        assert!(matches!(store.lock(key, 10_000).await.unwrap(), LockOutcome::Held { .. }));
        store.unlock(key, fence).await.unwrap();
        let LockOutcome::Acquired(next) = store.lock(key, 10_000).await.unwrap() else { panic!("not released") };
        assert!(next > fence, "fences grow");
        assert_eq!(store.put_fenced(page(key), next).await.unwrap(), PutOutcome::Stored);
        assert!(store.get(key).await.unwrap().is_some());
        assert!(
            matches!(store.lock(key, 10_000).await.unwrap(), LockOutcome::Acquired(_)),
            "the fenced put released it"
        );
        let text = metrics.render();
        for op in ["lock", "unlock", "put_fenced"] {
            let series = format!("mizan_store_duration_seconds_count{{backend=\"redis\",op=\"{op}\"}}");
            assert!(text.contains(&series), "{series} in {text}");
        }
    }
}

//! [`MeteredStore`]: any [`Store`] with every call timed and every failure counted, by backend
//! and operation (`mizan_store_duration_seconds{backend,op}`,
//! `mizan_store_errors_total{backend,op}`), except the memory store's lookups on the hit path
//! (`get_now`, no I/O). The node wraps the store it opens once; the backends know nothing of
//! it.

use super::Metrics;
use crate::cache::{CacheError, Entry, Generations, PurgeMode, PutOutcome, Store};
use metrics::{Counter, Histogram};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// The operations, as labelled.
const OPS: [&str; 5] = ["get", "put", "purge", "generations", "remove"];
const GET: usize = 0;
const PUT: usize = 1;
const PURGE: usize = 2;
const GENERATIONS: usize = 3;
const REMOVE: usize = 4;

/// A store whose calls are timed and counted.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    durations: [Histogram; 5],
    errors: [Counter; 5],
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
}

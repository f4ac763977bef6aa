//! The in-memory store (the default): a byte-bounded moka cache for entries, read without
//! locks on the hit path, and a tag index and generation table behind one mutex that puts
//! and purges take (never gets).
//!
//! moka evicts on its own schedule, possibly inside an insert made while the mutex is held,
//! so its eviction listener only queues the evicted key; the queue is drained into the index
//! at the next put or purge.

use super::CacheError;
use super::meta::purge_tags;
use super::store::{Entry, Generations, PurgeMode, PutOutcome, Store, moved, now_ms};
use moka::sync::Cache;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Default capacity: 256 MiB of bodies and metadata.
pub const DEFAULT_CAPACITY: u64 = 256 << 20;

/// Seeded per process; faster than SipHash on 70-byte keys, still HashDoS-resistant.
type Hasher = foldhash::quality::RandomState;

#[derive(Default)]
struct Index {
    tags: HashMap<String, HashSet<Arc<str>, Hasher>, Hasher>,
    key_tags: HashMap<Arc<str>, Vec<String>, Hasher>,
    generations: HashMap<String, u64>,
}

impl Index {
    fn unlink(&mut self, key: &str) {
        if let Some(tags) = self.key_tags.remove(key) {
            for tag in tags {
                if let Some(keys) = self.tags.get_mut(&tag) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.tags.remove(&tag);
                    }
                }
            }
        }
    }
}

/// Expiry of each entry: when its metadata says no rule can serve it any more.
struct ExpiresAt;

impl moka::Expiry<Arc<str>, Arc<Entry>> for ExpiresAt {
    fn expire_after_create(&self, _: &Arc<str>, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(Duration::from_millis(entry.meta.expires_at().saturating_sub(now_ms())))
    }

    fn expire_after_update(
        &self,
        k: &Arc<str>,
        entry: &Arc<Entry>,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(k, entry, at)
    }
}

/// The in-memory store.
pub struct MemoryStore {
    entries: Cache<Arc<str>, Arc<Entry>, Hasher>,
    index: Mutex<Index>,
    evicted: Mutex<mpsc::Receiver<Arc<str>>>,
}

impl MemoryStore {
    /// A store holding at most `capacity` bytes of keys, bodies and metadata.
    pub fn new(capacity: u64) -> Self {
        let (tx, rx) = mpsc::channel::<Arc<str>>();
        let tx = Mutex::new(tx);
        let entries = Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &Arc<str>, entry: &Arc<Entry>| {
                let meta = 256 + entry.meta.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
                u32::try_from(key.len() + entry.body.len() + meta).unwrap_or(u32::MAX)
            })
            .expire_after(ExpiresAt)
            .eviction_listener(move |key: Arc<Arc<str>>, _, cause| {
                // Only moka's own removals: puts, purges and removes keep the index themselves.
                use moka::notification::RemovalCause;
                if matches!(cause, RemovalCause::Expired | RemovalCause::Size)
                    && let Ok(tx) = tx.lock()
                {
                    let _ = tx.send((*key).clone());
                }
            })
            .build_with_hasher(Hasher::default());
        Self { entries, index: Mutex::new(Index::default()), evicted: Mutex::new(rx) }
    }

    /// The index, with evictions since the last call applied.
    fn index(&self) -> MutexGuard<'_, Index> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(evicted) = self.evicted.lock() {
            while let Ok(key) = evicted.try_recv() {
                // Evicted, unless it was put again since.
                if !self.entries.contains_key(&key) {
                    index.unlink(&key);
                }
            }
        }
        index
    }

    /// Bytes currently held, after pending evictions ran.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// Number of tags in the index (for tests of index hygiene).
    pub fn tag_count(&self) -> usize {
        self.entries.run_pending_tasks();
        self.index().tags.len()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        Ok(self.entries.get(key))
    }

    fn get_now(&self, key: &str) -> Option<Option<Arc<Entry>>> {
        Some(self.entries.get(key))
    }

    async fn generations(&self, contexts: &[String]) -> Result<Generations, CacheError> {
        let index = self.index();
        Ok(contexts.iter().map(|c| (c.clone(), index.generations.get(c).copied().unwrap_or(0))).collect())
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        let mut index = self.index();
        if let Some(context) = moved(&entry.meta.generation, |c| index.generations.get(c).copied().unwrap_or(0)) {
            return Ok(PutOutcome::Dropped { context });
        }
        let key: Arc<str> = Arc::from(entry.meta.key.as_str());
        let tags = entry.meta.tags();
        index.unlink(&key);
        for tag in &tags {
            index.tags.entry(tag.clone()).or_default().insert(key.clone());
        }
        index.key_tags.insert(key.clone(), tags);
        self.entries.insert(key, Arc::new(entry));
        Ok(PutOutcome::Stored)
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        let mut index = self.index();
        *index.generations.entry(context.to_string()).or_insert(0) += 1;
        let tags = purge_tags(context, params);
        let mut sets: Vec<&HashSet<Arc<str>, Hasher>> = Vec::with_capacity(tags.len());
        for tag in &tags {
            match index.tags.get(tag) {
                Some(set) => sets.push(set),
                None => return Ok(0),
            }
        }
        sets.sort_by_key(|s| s.len());
        let (first, rest) = sets.split_first().expect("purge_tags is never empty");
        let keys: Vec<Arc<str>> = first.iter().filter(|k| rest.iter().all(|s| s.contains(*k))).cloned().collect();
        let now = now_ms();
        let mut count = 0;
        // Removed entries are dropped after the index lock is released.
        let mut removed = Vec::with_capacity(keys.len());
        for key in keys {
            match mode {
                PurgeMode::Hard => {
                    index.unlink(&key);
                    if let Some(entry) = self.entries.remove(&key) {
                        removed.push(entry);
                        count += 1;
                    }
                }
                PurgeMode::Soft => {
                    if let Some(old) = self.entries.get(&key) {
                        let mut entry = (*old).clone();
                        entry.meta.stale_at = Some(entry.meta.stale_at.map_or(now, |s| s.min(now)));
                        self.entries.insert(key, Arc::new(entry));
                        count += 1;
                    }
                }
            }
        }
        drop(index);
        drop(removed);
        Ok(count)
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let mut index = self.index();
        self.entries.remove(key);
        index.unlink(key);
        Ok(())
    }
}

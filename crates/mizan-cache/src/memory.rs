//! The in-memory store (the default): a byte-bounded moka cache for entries, read without
//! locks on the hit path, and a tag index and generation table behind one mutex that puts
//! and purges take (never gets), each only briefly.
//!
//! moka evicts on its own schedule, possibly inside an insert made while the mutex is held,
//! so its eviction listener only queues the evicted key; the queue is drained into the index
//! (a bounded number per lock) at the next put or purge.
//!
//! A purge takes the mutex once to bump the generation and list the matching keys, then
//! removes (or marks) them in chunks of [`CHUNK`], taking the mutex again for each chunk and
//! releasing it in between, so puts and renders' `generations` wait at most one chunk; a purge
//! larger than one chunk runs on tokio's blocking pool, off the runtime's threads. It stays
//! exact:
//!
//! - the generations of the purge's tags move, under the mutex, before anything is removed,
//!   and every put checks the generations and inserts under the same mutex: a put of a render
//!   that read an old generation and comes after the bump is dropped; a put that came before
//!   it is in the list;
//! - a chunk removes an entry only if it is still one stored before the bump: its recorded
//!   generation of the purge's first tag is older than the purge's (or absent). The check and the
//!   removal happen under the mutex, so no put slips between them. An entry put after the
//!   bump by a render that started after it is left alone (a purge never drops a fresh
//!   write); one that was there before is removed unless such a fresh one replaced it;
//! - a soft purge rewrites an entry under the mutex from the entry it just read there, so it
//!   never writes back over a newer put (no resurrection);
//! - once a purge is under way it finishes even if its caller stops waiting: the chunks after
//!   the first run on a blocking task that is not cancelled with the future.

use super::CacheError;
use super::meta::purge_tags;
use super::store::{
    Entry, GENERATION_TTL_MS, Generations, PurgeMode, PutOutcome, Store, moved, next_generation, now_ms,
};
use moka::sync::Cache;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Default capacity: 256 MiB of bodies and metadata.
pub const DEFAULT_CAPACITY: u64 = 256 << 20;

/// Entries a purge removes or marks per acquisition of the index mutex (1.5–3.6 ms of work on
/// the 2-vCPU benchmark machine, moka's bookkeeping included).
pub const CHUNK: usize = 256;

/// Evicted keys applied to the index per acquisition of the mutex, so that a burst of
/// expiries never makes one put hold it long; the rest wait for the next acquisition.
const EVICTIONS_PER_LOCK: usize = 1024;

/// Seeded per process; faster than SipHash on 70-byte keys, still HashDoS-resistant.
type Hasher = foldhash::quality::RandomState;

#[derive(Default)]
struct Index {
    tags: HashMap<String, HashSet<Arc<str>, Hasher>, Hasher>,
    /// Each indexed key's tags and the generations its entry recorded (what a purge checks,
    /// without a read of the entry that moka would record).
    key_tags: HashMap<Arc<str>, Linked, Hasher>,
    /// Each purged tag's generation and when a purge last moved it (unix ms).
    generations: HashMap<String, (u64, u64), Hasher>,
    /// (moved at, tag) in the order purges moved them: generations not moved for
    /// [`GENERATION_TTL_MS`] are forgotten from the front.
    moves: VecDeque<(u64, String)>,
    /// Tag sets emptied by [`Index::unlink`], to be freed once the mutex is released: freeing
    /// a large table can take the allocator tens of milliseconds (it may return memory to the
    /// system then).
    emptied: Vec<HashSet<Arc<str>, Hasher>>,
}

struct Linked {
    tags: Vec<String>,
    generation: Generations,
}

impl Index {
    /// The generation of `tag`: 0 if never moved, or forgotten.
    fn generation(&self, tag: &str) -> u64 {
        self.generations.get(tag).map_or(0, |(g, _)| *g)
    }

    /// Moves the generation of `tag` at `now`; returns the new one.
    fn bump(&mut self, tag: &str, now: u64) -> u64 {
        let generation = next_generation(self.generation(tag), now);
        self.generations.insert(tag.to_string(), (generation, now));
        self.moves.push_back((now, tag.to_string()));
        generation
    }

    /// Forgets the generations no purge moved for [`GENERATION_TTL_MS`].
    fn forget(&mut self, now: u64) {
        while let Some((at, _)) = self.moves.front()
            && at.saturating_add(GENERATION_TTL_MS) <= now
        {
            let Some((at, tag)) = self.moves.pop_front() else { break };
            // Only if no later purge moved it again.
            if self.generations.get(&tag).is_some_and(|(_, moved_at)| *moved_at == at) {
                self.generations.remove(&tag);
            }
        }
    }

    fn unlink(&mut self, key: &str) {
        if let Some(linked) = self.key_tags.remove(key) {
            for tag in linked.tags {
                if let Some(keys) = self.tags.get_mut(&tag) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.emptied.extend(self.tags.remove(&tag));
                    }
                }
            }
        }
    }
}

/// Releases the mutex, then frees what the critical section emptied.
fn release(mut index: MutexGuard<'_, Index>) {
    let emptied = std::mem::take(&mut index.emptied);
    drop(index);
    drop(emptied);
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
    inner: Arc<Inner>,
}

struct Inner {
    entries: Cache<Arc<str>, Arc<Entry>, Hasher>,
    index: Mutex<Index>,
    evicted: Mutex<mpsc::Receiver<Arc<str>>>,
    #[cfg(test)]
    pause: super::store::PauseHook,
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
        let inner = Inner {
            entries,
            index: Mutex::new(Index::default()),
            evicted: Mutex::new(rx),
            #[cfg(test)]
            pause: Default::default(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Bytes currently held, after pending evictions ran.
    pub fn weighted_size(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.weighted_size()
    }

    /// Number of entries held, after pending evictions ran.
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.entry_count()
    }

    /// Inserts a copy of an entry another store holds (the memory tier of
    /// [`super::tiered::TieredStore`] copies Redis's entries), without the generation check
    /// of [`Store::put`]: this store's generations are not the other store's, and the caller
    /// decides when a copy may go in. The copy's tags are indexed with no recorded
    /// generation, so every purge of this store that matches it takes it, however recently
    /// it was inserted.
    pub fn insert_copy(&self, entry: Arc<Entry>) {
        let key: Arc<str> = Arc::from(entry.meta.key.as_str());
        let tags = entry.meta.tags();
        let mut index = self.inner.index();
        index.unlink(&key);
        for tag in &tags {
            index.tags.entry(tag.clone()).or_default().insert(key.clone());
        }
        index.key_tags.insert(key.clone(), Linked { tags, generation: Generations::new() });
        self.inner.entries.insert(key, entry);
        release(index);
    }

    /// Number of tags in the index (for tests of index hygiene), after every pending eviction
    /// was applied.
    pub fn tag_count(&self) -> usize {
        self.inner.entries.run_pending_tasks();
        self.inner.index_applying(usize::MAX).tags.len()
    }
}

impl Inner {
    /// The index, with (up to [`EVICTIONS_PER_LOCK`]) evictions since the last call applied.
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index_applying(EVICTIONS_PER_LOCK)
    }

    /// The index, with up to `evictions` evictions since the last call applied.
    fn index_applying(&self, evictions: usize) -> MutexGuard<'_, Index> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(evicted) = self.evicted.lock() {
            for _ in 0..evictions {
                let Ok(key) = evicted.try_recv() else { break };
                // Evicted, unless it was put again since.
                if !self.entries.contains_key(&key) {
                    index.unlink(&key);
                }
            }
        }
        index
    }

    /// Removes (hard) or marks stale (soft) those of `keys` that are still entries stored
    /// before generation `generation` of `tag`, one chunk per acquisition of the mutex.
    /// Returns how many it removed or marked.
    ///
    /// With `pending_tasks`, moka's pending bookkeeping is run after each chunk, on this
    /// thread.
    fn purge_keys(&self, tag: &str, generation: u64, keys: &[Arc<str>], mode: PurgeMode, pending_tasks: bool) -> u64 {
        let now = now_ms();
        let mut count = 0;
        #[cfg(test)]
        let (mut chunks, mut _done) = (0, None);
        for chunk in keys.chunks(CHUNK) {
            #[cfg(test)]
            {
                if chunks == 1 {
                    _done = Some(self.pause.pause_blocking());
                }
                chunks += 1;
            }
            // Removed entries are freed after the mutex is released.
            let mut removed = Vec::with_capacity(chunk.len());
            let mut index = self.index();
            for key in chunk {
                // Gone from the index (removed, or evicted and applied), or stored after the
                // bump by a render that started after it: not this purge's.
                let Some(linked) = index.key_tags.get(key) else { continue };
                if linked.generation.get(tag).is_some_and(|g| *g >= generation) {
                    continue;
                }
                match mode {
                    PurgeMode::Hard => {
                        index.unlink(key);
                        if let Some(entry) = self.entries.remove(key) {
                            removed.push(entry);
                            count += 1;
                        }
                    }
                    PurgeMode::Soft => {
                        if let Some(entry) = self.entries.get(key) {
                            let mut marked = (*entry).clone();
                            marked.meta.stale_at = Some(marked.meta.stale_at.map_or(now, |s| s.min(now)));
                            self.entries.insert(key.clone(), Arc::new(marked));
                            removed.push(entry);
                            count += 1;
                        }
                    }
                }
            }
            release(index);
            drop(removed);
            if pending_tasks {
                // moka's bookkeeping of these writes is done here, not by the next hits.
                self.entries.run_pending_tasks();
            }
        }
        count
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
        Ok(self.inner.entries.get(key))
    }

    fn get_now(&self, key: &str) -> Option<Option<Arc<Entry>>> {
        Some(self.inner.entries.get(key))
    }

    async fn generations(&self, tags: &[String]) -> Result<Generations, CacheError> {
        let index = self.inner.index();
        Ok(tags.iter().map(|t| (t.clone(), index.generation(t))).collect())
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        // Everything that allocates is done before the mutex is taken.
        let key: Arc<str> = Arc::from(entry.meta.key.as_str());
        let tags = entry.meta.tags();
        let generation = entry.meta.generation.clone();
        let entry = Arc::new(entry);
        let mut index = self.inner.index();
        if let Some(tag) = moved(&entry.meta.generation, |t| index.generation(t)) {
            return Ok(PutOutcome::Dropped { tag });
        }
        index.unlink(&key);
        for tag in &tags {
            index.tags.entry(tag.clone()).or_default().insert(key.clone());
        }
        index.key_tags.insert(key.clone(), Linked { tags, generation });
        self.inner.entries.insert(key, entry);
        release(index);
        Ok(PutOutcome::Stored)
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        // Under the mutex: the generations of the purge's tags move, then the matching keys
        // are listed. Entries are told apart by their generation of the first tag.
        let tags = purge_tags(context, params);
        let (tag, generation, keys) = {
            let mut index = self.inner.index();
            let now = now_ms();
            index.forget(now);
            let moved: Vec<u64> = tags.iter().map(|tag| index.bump(tag, now)).collect();
            let generation = moved[0];
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
            (tags[0].clone(), generation, keys)
        };
        // One chunk or no runtime to hand it to: here and now (no await, so it cannot be cut
        // short). More: on the blocking pool, which finishes it even if this future is dropped.
        let runtime = tokio::runtime::Handle::try_current();
        if keys.len() <= CHUNK || runtime.is_err() {
            return Ok(self.inner.purge_keys(&tag, generation, &keys, mode, false));
        }
        let inner = self.inner.clone();
        let purge = runtime
            .expect("checked above")
            .spawn_blocking(move || inner.purge_keys(&tag, generation, &keys, mode, true));
        purge.await.map_err(|e| CacheError::Unavailable { store: "memory", message: e.to_string() })
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let mut index = self.inner.index();
        let entry = self.inner.entries.remove(key);
        index.unlink(key);
        release(index);
        drop(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{CHUNK, MemoryStore};
    use crate::{Entry, Generations, Meta, PurgeMode, PutOutcome, Store, dependency_tags, now_ms};
    use serde_json::{Map, Value, json};
    use std::time::Duration;

    /// A page depending on `hot` with `id`, recording `generation` (what a render read).
    fn entry(key: &str, id: u64, generation: &Generations, body: &str) -> Entry {
        let meta: Meta = serde_json::from_value(json!({
            "v": 1, "kind": "page", "key": key, "status": 200, "headers": [],
            "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
            "deps": [{"context": "hot", "params": {"id": id}}], "etag": null, "generation": generation
        }))
        .unwrap();
        Entry { body: body.to_string().into_bytes().into(), meta }
    }

    fn id(id: u64) -> Map<String, Value> {
        json!({ "id": id }).as_object().unwrap().clone()
    }

    /// What a render of a page depending on `hot` with `id` reads when it starts.
    async fn read(store: &MemoryStore, n: u64) -> Generations {
        store.generations(&dependency_tags([("hot", &id(n))])).await.unwrap()
    }

    /// A deadline that fails the test with a message instead of hanging it.
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), f).await.unwrap_or_else(|_| panic!("{what} did not complete"))
    }

    /// A purge of several chunks, stopped after its first: hits, renders' `generations` and
    /// puts all proceed meanwhile, a put of a render that read the old generation is dropped,
    /// fresh puts of keys the purge listed survive it, and everything else it listed is gone.
    async fn a_large_purge_lets_everything_proceed_and_stays_exact(mode: PurgeMode) {
        let store = std::sync::Arc::new(MemoryStore::new(64 << 20));
        let n = 3 * CHUNK + 10;
        let before = read(&store, 0).await;
        for i in 0..n {
            assert_eq!(store.put(entry(&format!("m{i}"), 0, &before, "old")).await.unwrap(), PutOutcome::Stored);
        }
        let other = read(&store, 1).await;
        store.put(entry("other", 1, &other, "other")).await.unwrap();
        let paused = store.inner.pause.arm();
        let crate::store::Paused { reached, resume, .. } = paused;
        let purge = tokio::spawn({
            let store = store.clone();
            async move { store.purge("hot", &id(0), mode).await.unwrap() }
        });
        within("the purge's first chunk", reached).await.unwrap();
        assert!(!purge.is_finished());

        // Meanwhile, with the purge listed and one chunk done:
        assert_eq!(&*within("a hit", store.get("other")).await.unwrap().unwrap().body, b"other");
        let now = within("generations", read(&store, 0)).await;
        assert!(now["c:hot:id=0"] > before["c:hot:id=0"], "the generation moved before anything was removed");
        assert_eq!(now["c:hot"], before["c:hot"], "a purge of one id leaves the context's generation");
        assert_eq!(read(&store, 1).await, other, "and every other id's");
        // A listed key the purge has not reached yet (the list is in no particular order).
        let mut last = None;
        for i in 0..n {
            let key = format!("m{i}");
            if store.get(&key).await.unwrap().is_some_and(|e| e.meta.stale_at.is_none()) {
                last = Some(key);
                break;
            }
        }
        let last = last.expect("the purge stopped after its first chunk");
        let late = within("a put", store.put(entry(&last, 0, &before, "rendered before the purge"))).await.unwrap();
        assert_eq!(late, PutOutcome::Dropped { tag: "c:hot:id=0".into() });
        let fresh = within("a put", store.put(entry(&last, 0, &now, "fresh"))).await.unwrap();
        assert_eq!(fresh, PutOutcome::Stored);
        assert_eq!(store.put(entry("new", 0, &now, "fresh")).await.unwrap(), PutOutcome::Stored);
        // A render of another id that read its generations before the purge is stored.
        assert_eq!(store.put(entry("other2", 1, &other, "other")).await.unwrap(), PutOutcome::Stored);
        assert!(!purge.is_finished(), "the purge waited for the test all along");

        resume.send(()).unwrap();
        let count = within("the purge", purge).await.unwrap();
        assert_eq!(count as usize, n - 1, "every listed entry but the fresh one");
        for key in (0..n).map(|i| format!("m{i}")).filter(|key| *key != last) {
            let got = store.get(&key).await.unwrap();
            match mode {
                PurgeMode::Hard => assert!(got.is_none(), "{key} survived the purge"),
                PurgeMode::Soft => assert!(got.unwrap().meta.stale_at.is_some(), "{key} not marked"),
            }
        }
        for key in [last.as_str(), "new"] {
            let got = store.get(key).await.unwrap().unwrap();
            assert_eq!((&*got.body, got.meta.stale_at), (&b"fresh"[..], None), "{key}: a fresh write was purged");
        }
        assert_eq!(store.get("other").await.unwrap().unwrap().meta.stale_at, None);
        // The index still finds the fresh entries.
        let expected = if mode == PurgeMode::Hard { 2 } else { n + 1 };
        assert_eq!(store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap() as usize, expected);
        assert_eq!(store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap(), 2);
        assert_eq!(store.tag_count(), 0, "nothing left in the index");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_hard_purge_lets_everything_proceed_and_stays_exact() {
        a_large_purge_lets_everything_proceed_and_stays_exact(PurgeMode::Hard).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_soft_purge_lets_everything_proceed_and_never_writes_over_a_newer_put() {
        a_large_purge_lets_everything_proceed_and_stays_exact(PurgeMode::Soft).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_whose_caller_stops_waiting_still_finishes() {
        let store = std::sync::Arc::new(MemoryStore::new(64 << 20));
        let n = 2 * CHUNK + 1;
        let before = read(&store, 0).await;
        for i in 0..n {
            store.put(entry(&format!("m{i}"), 0, &before, "old")).await.unwrap();
        }
        let paused = store.inner.pause.arm();
        let crate::store::Paused { reached, resume, done } = paused;
        let purge = tokio::spawn({
            let store = store.clone();
            async move { store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap() }
        });
        within("the purge's first chunk", reached).await.unwrap();
        purge.abort();
        assert!(within("the aborted caller", purge).await.unwrap_err().is_cancelled());
        resume.send(()).unwrap();
        // The blocking task goes on.
        within("the rest of the purge", done).await.unwrap();
        let mut left = 0;
        for i in 0..n {
            left += usize::from(store.get(&format!("m{i}")).await.unwrap().is_some());
        }
        assert_eq!(left, 0, "a purge cut short by its caller left entries behind");
    }

    /// A copy goes in whatever generations this store holds and the entry recorded, and any
    /// matching purge of this store takes it, even one whose generation is older than the
    /// copy's record: the generations a copy recorded are another store's.
    #[tokio::test]
    async fn tier_copies_skip_the_generation_check_and_any_matching_purge_takes_them() {
        let store = MemoryStore::new(1 << 20);
        let stale = read(&store, 0).await;
        store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
        let refused = store.put(entry("k", 0, &stale, "copy")).await.unwrap();
        assert_eq!(refused, PutOutcome::Dropped { tag: "c:hot:id=0".into() }, "a put is checked");
        store.insert_copy(std::sync::Arc::new(entry("k", 0, &stale, "copy")));
        assert_eq!(&*store.get("k").await.unwrap().unwrap().body, b"copy", "a copy is not");
        // A copy recording a generation newer than any purge of this store is still taken.
        let mut ahead = read(&store, 0).await;
        ahead.values_mut().for_each(|g| *g = u64::MAX);
        store.insert_copy(std::sync::Arc::new(entry("k2", 0, &ahead, "copy")));
        store.insert_copy(std::sync::Arc::new(entry("k3", 1, &ahead, "other")));
        assert_eq!(store.entry_count(), 3);
        assert_eq!(store.purge("hot", &id(0), PurgeMode::Soft).await.unwrap(), 2);
        assert!(store.get("k2").await.unwrap().unwrap().meta.stale_at.is_some(), "marked");
        assert_eq!(store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap(), 2);
        assert!(store.get("k").await.unwrap().is_none() && store.get("k2").await.unwrap().is_none());
        assert_eq!(store.get("k3").await.unwrap().unwrap().meta.stale_at, None, "another id's copy is left");
        // Inserting a key again replaces its tags in the index.
        store.insert_copy(std::sync::Arc::new(entry("k3", 0, &ahead, "moved")));
        assert_eq!(store.purge("hot", &id(1), PurgeMode::Hard).await.unwrap(), 0);
        assert_eq!(store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap(), 1);
        assert_eq!(store.tag_count(), 0, "nothing left in the index");
    }

    /// A generation no purge moved for [`GENERATION_TTL_MS`] is forgotten (the table does not
    /// grow with every product ever purged), and the next purge of its tag still moves it past
    /// anything an entry recorded, so an entry stored before the forgetting is purged.
    #[tokio::test]
    async fn forgotten_generations_come_back_newer() {
        let store = MemoryStore::new(1 << 20);
        store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
        let recorded = read(&store, 0).await;
        assert!(recorded["c:hot:id=0"] >= now_ms() - 60_000, "seeded by the clock: {recorded:?}");
        store.put(entry("k", 0, &recorded, "body")).await.unwrap();
        // An hour later (the index is told the time: no test waits an hour).
        let later = now_ms() + super::GENERATION_TTL_MS + 1;
        store.inner.index().forget(later);
        assert_eq!(read(&store, 0).await["c:hot:id=0"], 0, "forgotten");
        assert!(store.inner.index().moves.is_empty());
        // The next purge, an hour later, starts again from the clock: past what `k` recorded.
        assert_eq!(store.inner.index().bump("c:hot:id=0", later), later);
        assert_eq!(store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap(), 1, "an older entry is still taken");
        assert!(store.get("k").await.unwrap().is_none());
        assert!(read(&store, 0).await["c:hot:id=0"] > later);
    }
}

//! A per-node memory tier in front of the Redis store: hits served from this process's memory
//! with no round trip, kept honest by the purge log ([`super::redis::log`]).
//!
//! Redis answers the truth; the memory tier ([`MemoryStore`]) only ever holds copies of what
//! Redis returned to a get or accepted from a put. Writes, purges, locks and generations go to
//! Redis. What makes the copies safe to serve is one rule: **a node that cannot prove it saw
//! every purge since an entry was cached does not serve that entry from memory.**
//!
//! # How the tier follows the purges
//!
//! Every purge a Redis store carries out, on any node, is appended to the site's log once its
//! walk has finished, with a sequence number one more than the last. A reader task per node
//! follows the log from its head (`XREAD BLOCK`, [`BLOCK`] at a time) and applies each purge to
//! memory, in order, with the same context, params and mode; the purging node also applies it
//! to its own memory as soon as its Redis purge returns. Applying a purge to memory always
//! takes a matching copy, however recently it was inserted
//! ([`MemoryStore::insert_copy`] records no generation): a copy the purge did not need to take
//! costs one trip to Redis, never a stale page.
//!
//! An **epoch** counter moves, under a mutex, before each purge is applied to memory and at
//! each reset. A get captures it before it asks Redis, and copies what Redis answered into
//! memory only if the epoch has not moved since, checked under the same mutex as the insert
//! (a put likewise, capturing it before the Redis put). So:
//!
//! - **An entry fetched before the walk took it** (the purge is under way in Redis, or just
//!   finished and not yet applied here) either went into memory before the purge was applied
//!   here (the epoch had not moved: it is then among the entries the purge lists, and is
//!   taken), or comes to the insert after the epoch moved and is refused. It is never left
//!   behind. This is why the log is appended *after* the walk: when a reader applies a purge,
//!   Redis no longer holds anything that purge takes, so a get started after the apply sees
//!   the purged state, and every get that could have seen the old state started before the
//!   epoch moved.
//! - **An entry fetched after the walk** is the purged state (removed, or marked stale), or a
//!   render's newer put that Redis's generation check let through: correct to copy.
//! - **Puts** are copied only once Redis stored them (its generation check passed), under the
//!   same epoch rule.
//!
//! # When the tier cannot prove it saw every purge
//!
//! - **Gaps.** The log's numbers are contiguous. A purge numbered other than one past the
//!   last one applied (the stream was trimmed past this reader, the log was lost, the counter
//!   moved) means purges may have been missed: the tier **resets** (the epoch moves and memory
//!   is emptied) and goes on from there. So does an empty read after which the log's head is
//!   behind the last purge applied (the log was deleted or flushed under the reader).
//! - **Silence.** The tier is *current* only while its reader is connected and its last
//!   successful read (empty or not) returned less than [`BLOCK`] + [`GRACE`] ago; memory is
//!   served only while it is current. A Redis that freezes, or that this node can no longer
//!   reach while other nodes still purge through it, stops memory serving within that bound:
//!   a purge this node never saw can leave its copies served for at most [`BLOCK`] +
//!   [`GRACE`] after the reader's last confirmation, which came before the purge.
//! - **Errors.** On any reader error the tier stops being current, resets, and reconnects
//!   with backoff (each outage logged once); once reconnected it reads the log's head and
//!   resets again before it is current. Entries copied while it was away went in with no
//!   reader watching the log: the second reset drops them and refuses their inserts still in
//!   flight. Whatever Redis became meanwhile (restarted empty, failed over, flushed), the
//!   purges logged before the new head had finished their walks before any get that can
//!   insert again began, and the reader applies every purge after it. A Redis restart drops
//!   the reader's connection, so it never leaves an entry cached before it in memory.
//!
//! A Redis purge that fails (Redis unreachable from the purging node mid-walk, or the append
//! itself fails) is not logged: the caller gets the error and must purge again, as without
//! the tier; the purging node's own memory is purged regardless.
//!
//! One hole remains that no contiguity check can close: a log lost without any reader's
//! connection dropping (`FLUSHDB`, a hand `DEL` of both keys), which then receives more
//! purges than a reader had applied before that reader's next empty read, looks contiguous
//! to it.

use super::CacheError;
use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::redis::log::PurgeLog;
use super::store::{Entry, Fence, Generations, LockOutcome, PurgeMode, PutOutcome, Store, now_ms};
use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one read of the purge log waits for a purge: the reader confirms at least this
/// often that it missed none.
pub const BLOCK: Duration = Duration::from_secs(1);

/// How much later than [`BLOCK`] a read may return before the tier stops serving memory.
pub const GRACE: Duration = Duration::from_millis(500);

/// First wait before the reader reconnects after an error; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest wait between two reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A snapshot of the tier's state and counters, for health and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierStats {
    /// Entries in memory.
    pub entries: u64,
    /// Bytes they weigh (keys, bodies, metadata).
    pub bytes: u64,
    /// The most bytes memory holds.
    pub capacity: u64,
    /// Gets answered from memory.
    pub hits: u64,
    /// Gets that went to Redis (memory missed, or the tier was not current).
    pub misses: u64,
    /// Copies not inserted because a purge was applied, or a reset happened, while their
    /// Redis get or put ran.
    pub refused: u64,
    /// Purges from the log applied to memory.
    pub purges_applied: u64,
    /// Resets because the log had a gap (or went back).
    pub resets_gap: u64,
    /// Resets because the reader failed (Redis unreachable, a malformed entry).
    pub resets_error: u64,
    /// Whether memory is served now.
    pub current: bool,
    /// The sequence number of the last purge the reader read.
    pub last_seq: u64,
    /// Milliseconds since the reader's last successful read.
    pub confirmed_ms_ago: u64,
}

/// The Redis store with a memory tier in front of it. Drop it (or [`TieredStore::shutdown`])
/// to stop its reader.
pub struct TieredStore {
    shared: Arc<Shared>,
    reader: tokio::task::AbortHandle,
}

/// What the store and its reader task share.
struct Shared {
    redis: Arc<RedisStore>,
    /// Replaced by an empty one at each reset.
    memory: ArcSwap<MemoryStore>,
    capacity: u64,
    /// Moves (under `gate`) before each purge is applied to memory and at each reset.
    epoch: AtomicU64,
    /// Held by epoch moves and by inserts, which check the epoch and insert under it.
    gate: Mutex<()>,
    /// The reader has a connection and has read the log's head on it.
    connected: AtomicBool,
    /// Shut down: never current again (the reader may still be running until its next
    /// await, and set `connected`).
    stopped: AtomicBool,
    /// Monotonic origin of `confirmed_at`.
    base: Instant,
    /// When the reader's last read succeeded: ms since `base`.
    confirmed_at: AtomicU64,
    last_seq: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    refused: AtomicU64,
    purges_applied: AtomicU64,
    resets_gap: AtomicU64,
    resets_error: AtomicU64,
    #[cfg(test)]
    pause: super::store::PauseHook,
}

impl TieredStore {
    /// Puts a memory tier of `l1_bytes` in front of `redis`: opens the purge log's reader on
    /// a connection of its own, reads the log's head, and starts following it on a task.
    /// Fails if Redis cannot be reached now.
    pub async fn start(redis: Arc<RedisStore>, l1_bytes: u64) -> Result<Arc<Self>, CacheError> {
        let (log, head) = open(&redis).await?;
        let shared = Arc::new(Shared {
            redis,
            memory: ArcSwap::from_pointee(MemoryStore::new(l1_bytes)),
            capacity: l1_bytes,
            epoch: AtomicU64::new(0),
            gate: Mutex::new(()),
            connected: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            base: Instant::now(),
            confirmed_at: AtomicU64::new(0),
            last_seq: AtomicU64::new(head),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            purges_applied: AtomicU64::new(0),
            resets_gap: AtomicU64::new(0),
            resets_error: AtomicU64::new(0),
            #[cfg(test)]
            pause: Default::default(),
        });
        let reader = tokio::spawn(shared.clone().run(log, head)).abort_handle();
        Ok(Arc::new(Self { shared, reader }))
    }

    /// The Redis store behind the tier.
    pub fn redis(&self) -> &Arc<RedisStore> {
        &self.shared.redis
    }

    /// Stops the reader: memory is no longer served (every get goes to Redis).
    pub fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.reader.abort();
    }

    /// Whether memory is served now: the reader is connected and its last read returned less
    /// than [`BLOCK`] + [`GRACE`] ago.
    pub fn is_current(&self) -> bool {
        self.shared.current()
    }

    /// The tier's state and counters.
    pub fn stats(&self) -> TierStats {
        let s = &self.shared;
        let memory = s.memory.load_full();
        TierStats {
            entries: memory.entry_count(),
            bytes: memory.weighted_size(),
            capacity: s.capacity,
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            purges_applied: s.purges_applied.load(Ordering::Relaxed),
            resets_gap: s.resets_gap.load(Ordering::Relaxed),
            resets_error: s.resets_error.load(Ordering::Relaxed),
            current: s.current(),
            last_seq: s.last_seq.load(Ordering::Relaxed),
            confirmed_ms_ago: s.since_confirmed(),
        }
    }

    /// What memory holds under `key`, current or not (for tests).
    #[cfg(test)]
    fn in_memory(&self, key: &str) -> Option<Arc<Entry>> {
        self.shared.memory.load().get_now(key).flatten()
    }
}

impl Drop for TieredStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A reader of `redis`'s purge log and the log's head.
async fn open(redis: &RedisStore) -> Result<(PurgeLog, u64), CacheError> {
    let mut log = redis.purge_log().await?;
    let head = log.head().await?;
    Ok((log, head))
}

impl Shared {
    /// Milliseconds since `base`.
    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn since_confirmed(&self) -> u64 {
        self.now().saturating_sub(self.confirmed_at.load(Ordering::SeqCst))
    }

    fn current(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
            && !self.stopped.load(Ordering::SeqCst)
            && self.since_confirmed() < (BLOCK + GRACE).as_millis() as u64
    }

    fn confirm(&self) {
        self.confirmed_at.store(self.now(), Ordering::SeqCst);
    }

    /// The gate: poisoning cannot leave `()` half-written.
    fn gate(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Moves the epoch: copies fetched before now are refused from here on.
    fn bump(&self) {
        let _gate = self.gate();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Moves the epoch and empties memory.
    fn reset(&self) {
        let empty = Arc::new(MemoryStore::new(self.capacity));
        let old = {
            let _gate = self.gate();
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.memory.swap(empty)
        };
        // Freed outside the gate (or later, by a get still holding it).
        drop(old);
    }

    /// A memory hit, if the tier is current.
    fn memory_hit(&self, key: &str) -> Option<Arc<Entry>> {
        if !self.current() {
            return None;
        }
        let entry = self.memory.load().get_now(key).flatten()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Copies `entry`, which Redis returned or stored after the epoch was `epoch`, into
    /// memory if the epoch has not moved since (and the reader is connected and running).
    fn insert(&self, epoch: u64, entry: Arc<Entry>) {
        if entry.meta.expires_at() <= now_ms() {
            return;
        }
        let _gate = self.gate();
        if self.epoch() != epoch {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Not following the log: the reconnection's reset would drop it anyway.
        if self.connected.load(Ordering::SeqCst) && !self.stopped.load(Ordering::SeqCst) {
            self.memory.load().insert_copy(entry);
        }
    }

    /// Applies a purge to memory: the epoch moves first, so a copy fetched before it is
    /// either listed by the purge or refused.
    async fn apply(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        self.bump();
        let memory = self.memory.load_full();
        memory.purge(context, params, mode).await
    }

    /// The reader: follows the log from `last` until an error, then resets, reconnects and
    /// follows again, for as long as the store lives (the task is aborted on drop).
    async fn run(self: Arc<Self>, mut log: PurgeLog, mut last: u64) {
        loop {
            let error = self.follow(&mut log, &mut last).await;
            self.connected.store(false, Ordering::SeqCst);
            self.reset();
            self.resets_error.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = "tiered", site = self.redis.site(), %error,
                "purge log reader failed: memory tier off and emptied until it reconnects"
            );
            let (mut backoff, mut attempts) = (BACKOFF_MIN, 1);
            let (attempts, reopened) = loop {
                tokio::time::sleep(backoff).await;
                match open(&self.redis).await {
                    Ok(reopened) => break (attempts, reopened),
                    // Not logged again: the outage was, once.
                    Err(_) => {
                        attempts += 1;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            };
            (log, last) = reopened;
            // Whatever went into memory while no reader watched the log goes, and inserts
            // of gets begun before this point are refused.
            self.reset();
            self.last_seq.store(last, Ordering::Relaxed);
            self.confirm();
            self.connected.store(true, Ordering::SeqCst);
            tracing::info!(
                store = "tiered",
                site = self.redis.site(),
                head = last,
                attempts,
                "purge log reader reconnected"
            );
        }
    }

    /// Reads and applies purges until a read fails; returns its error.
    async fn follow(&self, log: &mut PurgeLog, last: &mut u64) -> CacheError {
        loop {
            let purges = match log.read(*last, BLOCK).await {
                Ok(purges) => purges,
                Err(error) => return error,
            };
            self.confirm();
            if purges.is_empty() {
                // A log that went back under the reader (deleted or flushed with its counter)
                // would hide the purges numbered up to `last`.
                match log.head().await {
                    Ok(head) if head < *last => {
                        self.gap(*last + 1, head);
                        *last = head;
                        self.last_seq.store(head, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => return error,
                }
                continue;
            }
            for purge in purges {
                if purge.seq != *last + 1 {
                    self.gap(*last + 1, purge.seq);
                } else if let Err(error) = self.apply(&purge.context, &purge.params, purge.mode).await {
                    return error;
                } else {
                    self.purges_applied.fetch_add(1, Ordering::Relaxed);
                }
                *last = purge.seq;
                self.last_seq.store(purge.seq, Ordering::Relaxed);
            }
        }
    }

    /// The log jumped from `expected` to `got`: purges may have been missed.
    fn gap(&self, expected: u64, got: u64) {
        self.reset();
        self.resets_gap.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(store = "tiered", site = self.redis.site(), expected, got, "purge log gap: memory tier emptied");
    }
}

#[async_trait::async_trait]
impl Store for TieredStore {
    fn name(&self) -> &'static str {
        "tiered"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        let s = &self.shared;
        if let Some(entry) = s.memory_hit(key) {
            return Ok(Some(entry));
        }
        s.misses.fetch_add(1, Ordering::Relaxed);
        let epoch = s.epoch();
        let got = s.redis.get(key).await?;
        #[cfg(test)]
        let _done = s.pause.pause().await;
        if let Some(entry) = &got {
            s.insert(epoch, entry.clone());
        }
        Ok(got)
    }

    fn get_now(&self, key: &str) -> Option<Option<Arc<Entry>>> {
        // A memory miss says nothing of Redis: ask `get`.
        self.shared.memory_hit(key).map(Some)
    }

    async fn generations(&self, tags: &[String]) -> Result<Generations, CacheError> {
        self.shared.redis.generations(tags).await
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        let s = &self.shared;
        let copy = Arc::new(entry.clone());
        let epoch = s.epoch();
        let outcome = s.redis.put(entry).await?;
        if outcome == PutOutcome::Stored {
            s.insert(epoch, copy);
        }
        Ok(outcome)
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        let s = &self.shared;
        // Redis first (it logs the purge at the end of its walk); then this node's memory at
        // once, even if Redis failed. The reader applies it again: harmless.
        let purged = s.redis.purge(context, params, mode).await;
        s.apply(context, params, mode).await?;
        purged
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let s = &self.shared;
        s.redis.remove(key).await?;
        // After Redis: a get that fetched the entry before is refused its insert.
        s.bump();
        s.memory.load_full().remove(key).await
    }

    async fn lock(&self, key: &str, ttl_ms: u64) -> Result<LockOutcome, CacheError> {
        self.shared.redis.lock(key, ttl_ms).await
    }

    async fn unlock(&self, key: &str, fence: Fence) -> Result<(), CacheError> {
        self.shared.redis.unlock(key, fence).await
    }

    async fn put_fenced(&self, entry: Entry, fence: Fence) -> Result<PutOutcome, CacheError> {
        let s = &self.shared;
        let copy = Arc::new(entry.clone());
        let epoch = s.epoch();
        let outcome = s.redis.put_fenced(entry, fence).await?;
        if outcome == PutOutcome::Stored {
            s.insert(epoch, copy);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::TieredStore;
    use crate::cache::redis::RedisStore;
    use crate::cache::store::Paused;
    use crate::cache::{Entry, Meta, PurgeMode, PutOutcome, Store, dependency_tags, now_ms};
    use crate::testing::{DEADLINE, RedisServer, wait_until};
    use redis::aio::MultiplexedConnection;
    use serde_json::{Map, Value, json};
    use std::future::ready;
    use std::sync::Arc;
    use std::time::Duration;

    fn id(id: u64) -> Map<String, Value> {
        json!({ "id": id }).as_object().unwrap().clone()
    }

    /// A page under `key` depending on `hot` with `n`, recording the generations `store`
    /// holds now (what a render starting now reads).
    async fn page(store: &TieredStore, key: &str, n: u64, body: &str) -> Entry {
        let generation = store.generations(&dependency_tags([("hot", &id(n))])).await.unwrap();
        let meta: Meta = serde_json::from_value(json!({
            "v": 1, "kind": "page", "key": key, "status": 200, "headers": [],
            "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
            "deps": [{"context": "hot", "params": {"id": n}}], "etag": null, "generation": generation
        }))
        .unwrap();
        Entry { body: body.to_string().into_bytes().into(), meta }
    }

    async fn node(server: &RedisServer) -> Arc<TieredStore> {
        let redis = RedisStore::connect(&server.url(), "shop").await.unwrap();
        TieredStore::start(Arc::new(redis), 16 << 20).await.unwrap()
    }

    /// A Redis and two nodes sharing it, each with its own connections and memory tier.
    async fn start() -> (RedisServer, Arc<TieredStore>, Arc<TieredStore>, MultiplexedConnection) {
        let server = RedisServer::start();
        let (a, b) = (node(&server).await, node(&server).await);
        let raw = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        (server, a, b, raw)
    }

    /// `a` stores a page of `hot` `n` under `key`; `b` reads it, which copies it into its
    /// memory.
    async fn cached(a: &TieredStore, b: &TieredStore, key: &str, n: u64) {
        assert_eq!(a.put(page(a, key, n, key).await).await.unwrap(), PutOutcome::Stored);
        assert!(b.get(key).await.unwrap().is_some());
        assert!(b.in_memory(key).is_some(), "{key} copied into memory");
        assert!(matches!(b.get_now(key), Some(Some(_))), "and served from it");
    }

    /// A deadline that fails the test with a message instead of hanging it.
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("{what} did not complete"))
    }

    /// Copies in another node's memory go once the purge is logged and its reader applied
    /// it; a subset match leaves the other ids' copies, and the purging node's own memory is
    /// purged when its purge returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_on_one_node_reaches_the_tier_of_another() {
        let (_server, a, b, _raw) = start().await;
        for (key, n) in [("mz1:p:0", 0), ("mz1:p:1", 1), ("mz1:p:0b", 0)] {
            cached(&a, &b, key, n).await;
        }
        assert!(a.in_memory("mz1:p:0").is_some(), "a put is copied into the putting node's memory");
        let before = b.stats();
        assert!(before.current && before.entries == 3 && before.hits >= 3, "{before:?}");

        assert_eq!(a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap(), 2);
        assert!(a.in_memory("mz1:p:0").is_none(), "the purging node's memory, at once");
        wait_until("b's reader to apply the purge", DEADLINE, || {
            ready(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:0b").is_none())
        })
        .await;
        assert_eq!(b.get_now("mz1:p:0"), None, "a memory miss asks Redis");
        assert!(b.get("mz1:p:0").await.unwrap().is_none(), "which has nothing either");
        assert!(b.in_memory("mz1:p:1").is_some(), "another id's copy stays");
        let after = b.stats();
        assert_eq!((after.purges_applied, after.last_seq, after.resets_gap, after.resets_error), (1, 1, 0, 0));
        assert_eq!(after.refused, 0);

        // A purge of the whole context takes the rest.
        a.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap();
        wait_until("the context purge", DEADLINE, || ready(b.in_memory("mz1:p:1").is_none())).await;
        assert_eq!(b.stats().entries, 0);
    }

    /// A soft purge marks the copies in other nodes' memory stale, as Redis marks its entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_soft_purge_marks_the_tier_copies_stale() {
        let (_server, a, b, _raw) = start().await;
        cached(&a, &b, "mz1:p:0", 0).await;
        cached(&a, &b, "mz1:p:1", 1).await;
        assert_eq!(a.purge("hot", &id(0), PurgeMode::Soft).await.unwrap(), 1);
        wait_until("the copy to be marked", DEADLINE, || {
            ready(b.in_memory("mz1:p:0").is_some_and(|e| e.meta.stale_at.is_some()))
        })
        .await;
        assert!(b.get("mz1:p:0").await.unwrap().unwrap().meta.stale_at.is_some(), "served stale, from memory");
        assert_eq!(b.in_memory("mz1:p:1").unwrap().meta.stale_at, None);
    }

    /// The epoch rule: an entry Redis returned before a purge's walk, whose insert comes after
    /// the purge was applied to memory, is not inserted (it would never be purged again).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tier_refuses_a_copy_fetched_before_a_purge_it_applied() {
        let (_server, a, b, _raw) = start().await;
        a.put(page(&a, "mz1:p:0", 0, "old").await).await.unwrap();
        let Paused { reached, resume, .. } = b.shared.pause.arm();
        let get = tokio::spawn({
            let b = b.clone();
            async move { b.get("mz1:p:0").await.unwrap() }
        });
        within("b's Redis get", reached).await.unwrap();
        // Redis answered with the entry; the purge walks, is logged and is applied by b.
        a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
        wait_until("b's reader to apply the purge", DEADLINE, || ready(b.stats().purges_applied == 1)).await;
        resume.send(()).unwrap();
        let got = within("b's get", get).await.unwrap();
        assert_eq!(&*got.expect("what Redis answered before the purge").body, b"old");
        assert!(b.in_memory("mz1:p:0").is_none(), "a purged entry went into memory");
        assert_eq!(b.stats().refused, 1);
        assert!(b.get("mz1:p:0").await.unwrap().is_none());

        // Without a purge in between, the same path inserts.
        a.put(page(&a, "mz1:p:0", 0, "new").await).await.unwrap();
        let Paused { reached, resume, .. } = b.shared.pause.arm();
        let get = tokio::spawn({
            let b = b.clone();
            async move { b.get("mz1:p:0").await.unwrap() }
        });
        within("b's Redis get", reached).await.unwrap();
        resume.send(()).unwrap();
        within("b's get", get).await.unwrap();
        assert_eq!(&*b.in_memory("mz1:p:0").expect("copied").body, b"new");
        assert_eq!(b.stats().refused, 1);
    }

    /// Redis killed: the node stops serving memory at once; once Redis is back (restarted
    /// empty), memory was emptied before the tier serves again, and serving resumes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_restart_turns_the_tier_off_and_empties_it() {
        let (mut server, a, b, _raw) = start().await;
        cached(&a, &b, "mz1:p:0", 0).await;
        a.purge("hot", &id(1), PurgeMode::Hard).await.unwrap();
        wait_until("the purge to be read", DEADLINE, || ready(b.stats().last_seq == 1)).await;

        server.kill();
        wait_until("b's tier to turn off", DEADLINE, || ready(!b.is_current())).await;
        assert_eq!(b.get_now("mz1:p:0"), None, "memory is not served");
        assert!(b.get("mz1:p:0").await.is_err(), "and Redis is away");

        server.restart();
        wait_until("b's tier to turn on again", DEADLINE, || ready(b.is_current())).await;
        let stats = b.stats();
        assert_eq!((stats.entries, stats.last_seq), (0, 0), "emptied, and following the new log: {stats:?}");
        assert!(stats.resets_error >= 1, "{stats:?}");
        assert!(b.in_memory("mz1:p:0").is_none());

        // The store's own connections come back on their next call.
        wait_until("a's connection", DEADLINE, || {
            let a = a.clone();
            async move { a.generations(&["c:hot".to_string()]).await.is_ok() }
        })
        .await;
        a.put(page(&a, "mz1:p:0", 0, "again").await).await.unwrap();
        wait_until("b's get", DEADLINE, || {
            let b = b.clone();
            async move { b.get("mz1:p:0").await.is_ok_and(|e| e.is_some()) }
        })
        .await;
        assert_eq!(&*b.get_now("mz1:p:0").unwrap().unwrap().body, b"again", "served from memory again");
        a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
        wait_until("the purge after the restart", DEADLINE, || ready(b.in_memory("mz1:p:0").is_none())).await;
        assert_eq!(b.stats().last_seq, 1);
    }

    /// A gap in the log (the counter moved past purges the reader never saw), or a log that
    /// went back under the reader (deleted with its counter), empties memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gap_in_the_purge_log_resets_the_tier() {
        let (_server, a, b, mut raw) = start().await;
        cached(&a, &b, "mz1:p:0", 0).await;
        cached(&a, &b, "mz1:p:1", 1).await;
        let _: () = redis::cmd("SET").arg("mz1:{shop}:seq").arg(50).query_async(&mut raw).await.unwrap();
        // A purge of something else entirely, numbered 51 where 1 was expected.
        a.purge("cart", &Map::new(), PurgeMode::Hard).await.unwrap();
        wait_until("the gap to reset b", DEADLINE, || ready(b.stats().resets_gap == 1)).await;
        assert!(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:1").is_none(), "memory emptied");
        assert_eq!((b.stats().last_seq, b.stats().purges_applied), (51, 0));
        assert!(b.is_current(), "and it goes on from there");

        // Contiguous again: applied as usual.
        cached(&a, &b, "mz1:p:0", 0).await;
        cached(&a, &b, "mz1:p:1", 1).await;
        a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
        wait_until("the next purge", DEADLINE, || ready(b.stats().purges_applied == 1)).await;
        assert!(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:1").is_some());

        // The log and its counter deleted under the reader: its next empty read finds the head
        // behind it.
        let _: () = redis::cmd("DEL").arg("mz1:{shop}:seq").arg("mz1:{shop}:log").query_async(&mut raw).await.unwrap();
        wait_until("the lost log to reset b", DEADLINE, || ready(b.stats().resets_gap == 2)).await;
        assert!(b.in_memory("mz1:p:1").is_none());
        assert_eq!(b.stats().last_seq, 0);
        cached(&a, &b, "mz1:p:1", 1).await;
        a.purge("hot", &id(1), PurgeMode::Hard).await.unwrap();
        wait_until("the first purge of the new log", DEADLINE, || ready(b.in_memory("mz1:p:1").is_none())).await;
        assert_eq!((b.stats().last_seq, b.stats().purges_applied, b.stats().resets_gap), (1, 2, 2));
    }

    /// A malformed entry fails the reader: it resets, reconnects and goes on after the entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_purge_log_entry_resets_the_tier_and_it_goes_on() {
        let (_server, a, b, mut raw) = start().await;
        a.purge("cart", &Map::new(), PurgeMode::Hard).await.unwrap();
        cached(&a, &b, "mz1:p:0", 0).await;
        cached(&a, &b, "mz1:p:1", 1).await;
        let _: () =
            redis::cmd("XADD").arg("mz1:{shop}:log").arg("2-1").arg("x").arg("y").query_async(&mut raw).await.unwrap();
        wait_until("b to reset and reconnect", DEADLINE, || {
            ready(b.stats().resets_error == 1 && b.is_current() && b.stats().last_seq == 2)
        })
        .await;
        assert!(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:1").is_none(), "memory emptied");
        cached(&a, &b, "mz1:p:1", 1).await;
        a.purge("hot", &id(1), PurgeMode::Hard).await.unwrap();
        wait_until("the next purge", DEADLINE, || ready(b.in_memory("mz1:p:1").is_none())).await;
        let stats = b.stats();
        assert_eq!((stats.last_seq, stats.resets_gap, stats.resets_error), (3, 0, 1), "{stats:?}");
    }

    /// A frozen Redis (every client paused): reads stop confirming, so memory stops being
    /// served within [`super::BLOCK`] + [`super::GRACE`], and comes back after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_redis_turns_the_tier_off() {
        let (_server, a, b, mut raw) = start().await;
        cached(&a, &b, "mz1:p:0", 0).await;
        // A read blocked when the pause began may still be answered (empty) during it; the
        // next is not: off within BLOCK + (BLOCK + GRACE) of the pause's start.
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(4000).arg("ALL").query_async(&mut raw).await.unwrap();
        let paused = std::time::Instant::now();
        wait_until("b's tier to turn off", DEADLINE, || ready(!b.is_current())).await;
        assert!(paused.elapsed() < Duration::from_millis(4000), "off while Redis was still frozen");
        assert_eq!(b.get_now("mz1:p:0"), None);
        wait_until("b's tier to turn on again", DEADLINE, || ready(b.is_current())).await;
    }

    /// Shutdown stops the reader: memory is no longer served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tier_shut_down_serves_no_memory() {
        let (_server, a, b, _raw) = start().await;
        cached(&a, &b, "mz1:p:0", 0).await;
        b.shutdown();
        assert!(!b.is_current());
        assert_eq!(b.get_now("mz1:p:0"), None);
        assert!(b.get("mz1:p:0").await.unwrap().is_some(), "Redis still answers");
    }
}

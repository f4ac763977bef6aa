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
//! (`reader`) follows the log from its head (`XREAD BLOCK`, [`BLOCK`] at a time) and applies
//! each purge to memory, in order, with the same context, params and mode; the purging node
//! also applies it to its own memory as soon as its Redis purge returns. Applying a purge to memory always
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
//!   is emptied) and goes on from there. A log lost and started again under the reader
//!   (`FLUSHDB`, both keys deleted) is always a jump: a new log numbers its purges from
//!   Redis's clock, past any number the old one reached. An empty read after which the log's
//!   head is not the last purge applied resets too: behind it, the log went back; ahead of
//!   it, the reader reads again at once, and if that finds nothing after the last purge
//!   applied either, the log was lost and started again under the reader (purges it had not
//!   read yet may have gone with it).
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

use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::store::{Entry, Fence, Generations, LockOutcome, PurgeMode, PutOutcome, Store, now_ms};
use super::{CacheError, Freshness};
use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod reader;

/// How long one read of the purge log waits for a purge: the reader confirms at least this
/// often that it missed none.
pub const BLOCK: Duration = Duration::from_secs(1);

/// How much later than [`BLOCK`] a read may return before the tier stops serving memory.
pub const GRACE: Duration = Duration::from_millis(500);

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
        let (log, head) = reader::open(&redis).await?;
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

    /// A memory hit, if the tier is current and the copy is fresh. A copy past its freshness
    /// is not answered from memory: another node may have stored a newer page in Redis (a
    /// revalidation, a re-render after a soft purge), which the caller must see; the copy is
    /// replaced when Redis answers.
    fn memory_hit(&self, key: &str) -> Option<Arc<Entry>> {
        if !self.current() {
            return None;
        }
        let entry = self.memory.load().get_now(key).flatten()?;
        if entry.meta.freshness(now_ms()) != Freshness::Fresh {
            return None;
        }
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
mod tests;

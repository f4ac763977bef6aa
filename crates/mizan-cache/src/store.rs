//! The `Store` trait: the cache ABI every backend implements, and the rules they share.
//!
//! Generation rule: each purge tag (`c:<context>`, `c:<context>:<name>=<JCS value>`, see
//! [`super::meta::dependency_tags`]) has a generation that every purge naming the tag moves
//! before it removes anything. A render reads the generations of all its dependencies' tags
//! when it starts ([`Store::generations`]) and records them in [`Meta::generation`];
//! [`Store::put`] drops the write if any of them moved since. Each backend makes "check the
//! generations, then write" atomic with respect to purges, so a purge can never be undone by a
//! render that read the old data, and a purge of one product drops only the writes of renders
//! that read that product.
//!
//! A generation is moved to `max(current + 1, now in unix ms)` ([`next_generation`]), so it
//! grows across restarts of its counter: generations that no purge moved for
//! [`GENERATION_TTL_MS`] are forgotten (read as 0), and the next purge of the tag still gives
//! one newer than any an entry recorded. Forgetting is safe as long as no render runs that
//! long (renders are bounded by their deadline, seconds).

use super::CacheError;
use super::meta::Meta;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Purge generations by tag.
pub type Generations = BTreeMap<String, u64>;

/// How long a store keeps a tag's generation after the last purge that moved it: one hour,
/// far longer than any render (the generation read at its start must still be there at its
/// put).
pub const GENERATION_TTL_MS: u64 = 3_600_000;

/// The generation a purge moves a tag to: past the current one and at least `now` (unix ms),
/// so that a generation forgotten after [`GENERATION_TTL_MS`] comes back newer than any an
/// entry recorded.
pub fn next_generation(current: u64, now: u64) -> u64 {
    current.saturating_add(1).max(now)
}

/// A cached response: body and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The response body, any bytes; cloning it shares, never copies.
    pub body: bytes::Bytes,
    /// Its metadata; `meta.key` is the entry's key.
    pub meta: Meta,
}

/// Hard purges remove entries; soft purges mark them stale, to be served within `swr_s`
/// while they re-render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    /// Remove.
    Hard,
    /// Mark stale (`stale_at = now`).
    Soft,
}

/// What became of a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The entry is stored.
    Stored,
    /// A purge of a tag the render read ran after it started: the write was dropped.
    Dropped {
        /// The tag whose generation moved.
        tag: String,
    },
    /// A fenced put ([`Store::put_fenced`]) whose render lock was taken over (it expired and
    /// another render holds it, or stored since): the write was dropped, so an expired holder
    /// never stores over a newer render.
    Superseded,
}

/// A render lock's fencing token: increasing per lock key's store, so a later holder always
/// holds a larger one.
pub type Fence = u64;

/// What came of asking for a page's render lock ([`Store::lock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// This caller holds the lock until it unlocks, or until the lock's time runs out.
    Acquired(Fence),
    /// Another render (on this node or another) holds it, for at most `ttl_ms` more.
    Held {
        /// Milliseconds until the lock expires if its holder never releases it.
        ttl_ms: u64,
    },
    /// This store has no cross-node locks (memory, SQLite: one node per store, whose
    /// coalescer already renders a page once).
    Unsupported,
}

/// The cache ABI: `get(key)`, `put(key, response, metadata)`, `purge(context, params)`.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name, for logs: `memory`, `sqlite`, `redis`.
    fn name(&self) -> &'static str;

    /// The entry under `key`, whatever its freshness, or `None`. A damaged entry is removed,
    /// logged and reported as `None`.
    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError>;

    /// The entry under `key` if the store can tell without I/O (memory): `Some(answer)`;
    /// `None` means "ask [`Store::get`]". Lets the hit path skip a boxed future.
    fn get_now(&self, _key: &str) -> Option<Option<Arc<Entry>>> {
        None
    }

    /// The current purge generations of `tags` (0 for one never purged, or forgotten).
    async fn generations(&self, tags: &[String]) -> Result<Generations, CacheError>;

    /// Stores `entry` under `entry.meta.key`, unless a tag in `entry.meta.generation` was
    /// purged since those generations were read.
    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError>;

    /// Purges every entry with a dependency on `context` whose params contain all of
    /// `params` (`{}`: the whole context), and moves the generation of each of the purge's
    /// tags ([`super::meta::purge_tags`]). Returns how many entries it removed or marked.
    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError>;

    /// Removes one entry.
    async fn remove(&self, key: &str) -> Result<(), CacheError>;

    /// Takes the render lock of page `key` for `ttl_ms` if nobody holds it (Redis:
    /// `SET NX PX`, across every node sharing the store).
    async fn lock(&self, _key: &str, _ttl_ms: u64) -> Result<LockOutcome, CacheError> {
        Ok(LockOutcome::Unsupported)
    }

    /// Releases the render lock of `key` if `fence` still holds it (never another's).
    async fn unlock(&self, _key: &str, _fence: Fence) -> Result<(), CacheError> {
        Ok(())
    }

    /// [`Store::put`] by the holder of the render lock `fence`, which it releases: dropped
    /// ([`PutOutcome::Superseded`]) if a later holder took the lock or stored since.
    async fn put_fenced(&self, entry: Entry, _fence: Fence) -> Result<PutOutcome, CacheError> {
        self.put(entry).await
    }
}

/// The tag whose generation moved since `recorded`, if any.
pub(crate) fn moved(recorded: &Generations, current: impl Fn(&str) -> u64) -> Option<String> {
    recorded.iter().find(|(tag, generation)| current(tag) != **generation).map(|(t, _)| t.clone())
}

/// Checks a site id before a shared store (SQLite, Redis) namespaces its keys or rows with
/// it: `[A-Za-z0-9_.-]+`, so it can never hold the `:` that ends the Redis key segment.
pub(crate) fn check_site(site: &str) -> Result<(), CacheError> {
    let ok = !site.is_empty() && site.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(CacheError::Site(site.to_string())) }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A test hook that stops a long purge halfway (between two batches, or inside its
/// transaction) until the test lets it go, so a test can assert what proceeds meanwhile
/// without timing anything.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct PauseHook(std::sync::Mutex<Option<Stop>>);

/// What a paused purge holds: tells the test it stopped, waits to be let go, and tells the
/// test when it has finished (when dropped).
#[cfg(test)]
pub(crate) struct Stop {
    reached: tokio::sync::oneshot::Sender<()>,
    resume: tokio::sync::oneshot::Receiver<()>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// The test's side of an armed [`PauseHook`].
#[cfg(test)]
pub(crate) struct Paused {
    /// Fires when the purge has stopped at the hook.
    pub reached: tokio::sync::oneshot::Receiver<()>,
    /// Send to let it go on.
    pub resume: tokio::sync::oneshot::Sender<()>,
    /// Fires (or closes) when the purge that stopped has finished its work.
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// Held by a purge that stopped at the hook until it finishes; tells the test on drop.
#[cfg(test)]
pub(crate) struct Done(Option<tokio::sync::oneshot::Sender<()>>);

#[cfg(test)]
impl Drop for Done {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
impl PauseHook {
    /// Arms the hook for the next purge that reaches it.
    pub(crate) fn arm(&self) -> Paused {
        let (reached_tx, reached) = tokio::sync::oneshot::channel();
        let (resume, resume_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        *self.0.lock().unwrap() = Some(Stop { reached: reached_tx, resume: resume_rx, done: done_tx });
        Paused { reached, resume, done }
    }

    /// On a blocking thread: stops here if armed; keep the answer until the work is done.
    pub(crate) fn pause_blocking(&self) -> Done {
        let armed = self.0.lock().unwrap().take();
        match armed {
            Some(stop) => {
                let _ = stop.reached.send(());
                let _ = stop.resume.blocking_recv();
                Done(Some(stop.done))
            }
            None => Done(None),
        }
    }

    /// On a task: stops here if armed; keep the answer until the work is done.
    pub(crate) async fn pause(&self) -> Done {
        let armed = self.0.lock().unwrap().take();
        match armed {
            Some(stop) => {
                let _ = stop.reached.send(());
                let _ = stop.resume.await;
                Done(Some(stop.done))
            }
            None => Done(None),
        }
    }
}

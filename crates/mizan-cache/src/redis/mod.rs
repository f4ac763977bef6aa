//! The Redis store, on one server or on a Redis Cluster, with one key layout for both
//! ([`names`]). With `<k>` an entry's key without its `mz1:` (`p:<hex>` for `mz1:p:<hex>`) and
//! `b` its bucket ([`names::bucket`], one of [`BUCKETS`]):
//!
//! - `mz1:{<site>/<b>}:<k>`: the entry, one string: a 4-byte big-endian metadata length, the
//!   metadata JSON, the body. One `GET` reads it and one `DEL` frees it.
//! - `mz1:{<site>/<b>}:s:<k>`: the soft-purge mark (`stale_at`, unix ms), same expiry.
//! - `mz1:{<site>/<b>}:k:<k>`: the entry's tag list (JSON `[[tag set, member], …]`), same
//!   expiry: read when the key is put again or removed, to drop its memberships, and by a purge
//!   of several tags, to match the entry's other tags.
//! - `mz1:{<site>/<b>}:t:<tag>`: a sorted set of bucket `b`'s entries carrying a tag. Each
//!   member is `<entry's Redis key>|<generation>`, the generation of that tag the entry's render
//!   read (empty if it recorded none), scored by the entry's expiry (unix ms, Redis clock).
//! - `mz1:{<site>/<b>}:g:<tag>`: bucket `b`'s generation of a tag: at least that of the last
//!   purge of the tag whose walk reached the bucket.
//! - `mz1:{<site>/<b>}:l:<k>`, `:w:<k>`, `:f`: render locks (the `lock` module).
//! - `mz1:{<site>}:g:<tag>`: the tag's canonical generation, what renders read
//!   ([`Store::generations`]); and the purge log ([`log`]).
//!
//! Generations and buckets expire [`GENERATION_TTL_MS`](super::GENERATION_TTL_MS) after the last purge that set them.
//! The `{…}` hash tags put each bucket's keys in one slot and the site's in another, so each
//! script touches one slot; the site is checked at construction (`[A-Za-z0-9_.-]+`: no `{`,
//! `}`, `/` or `:`), so two sites' keys never meet.
//!
//! **Generations across slots.** A purge of tags T first moves, in one script in the site
//! slot, each canonical `C_t` to `G_t = max(C_t + 1, now)`; these calls are serialised in that
//! slot, so a tag's G values strictly increase. Then it walks every bucket (all at once): the
//! walk's first call in bucket `b` raises `B_b,t` to at least `G_t`, then it walks the
//! smallest of its tag sets in batches ([`BATCH`]) and takes the members whose generation is
//! older than `G` (or empty). A put into bucket `b` of a render that recorded `r_t` is dropped
//! iff some `B_b,t > r_t`, in the put's script. A render that read before the purge's first
//! call has `r_t < G_t`: its put lands either before the walk reaches `b` (its member, older
//! than `G_t`, is then taken by the walk) or after (`B_b,t ≥ G_t > r_t`: dropped). A render
//! that read after the first call fetched its data after the purge began and recorded
//! `r_t ≥ G_t`: it is neither dropped by this purge nor taken by its walk. `>` rather than `!=`:
//! a bucket lags the canonical generation while a walk is on its way, forever if a purge was
//! cut off, and puts of renders that read the newer value must store meanwhile. A purge cut off
//! after its first call leaves the buckets it did not walk as they were (their old entries, and
//! puts of renders that read before it); it fails, and its retry moves past them and walks them.
//! Within a bucket, the walk takes every member stored before it that is still there, exactly
//! once (docs/protocol.md, "Backends", has the whole argument).
//!
//! No script's work grows with the size of a tag: a put drops up to [`PRUNE`] expired members
//! from each of its sets, and each walk call reads about [`BATCH`] members.
//!
//! When Redis is unreachable every call fails fast with [`CacheError::Unavailable`]; the
//! connection reconnects on its own when Redis is back.

mod conn;
mod lock;
pub mod log;
pub mod names;
mod purge;
mod scripts;
mod sentinel;
mod url;

pub use conn::Conn;
pub use log::LoggedPurge;
pub use names::BUCKETS;
pub use url::{Target, target};

use super::store::{Entry, Fence, Generations, LockOutcome, PurgeMode, PutOutcome, Store, check_site, now_ms};
use super::{CacheError, Meta};
use names::{Names, bucket};
use redis::Script;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Members a purge's walk reads per script call (plus those sharing the last one's expiry to
/// the millisecond): each call holds Redis for a few milliseconds at most, whatever the size
/// of the tag.
pub const BATCH: usize = 500;

/// Expired members a put drops from each of its tag sets (the put script's 64).
pub const PRUNE: usize = 64;

/// A staging key's suffix no other put uses: this process's id, a counter of its own puts, and a
/// random number (a forked child inherits the counter and the random generator's state, never
/// the process id; two machines share neither).
fn nonce() -> String {
    static PUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}.{n:x}.{:016x}", std::process::id(), fastrand::u64(..))
}

/// How long a put's staged entry lives if its script never runs (the connection dropped
/// between the two): the script runs right after it, in the same pipeline.
const STAGED_MS: u64 = 30_000;

/// The Redis store of one site.
pub struct RedisStore {
    conn: Conn,
    /// The URL it was opened with, for connections of its own (the purge log's reader).
    url: String,
    /// The site whose keys it holds.
    site: String,
    names: Names,
    put: Script,
    moves: Script,
    walk: Script,
    remove: Script,
    lock: Script,
    unlock: Script,
    /// Members per walk call: [`BATCH`], smaller in tests.
    batch: usize,
    pause: purge::Hook,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable { store: "redis", message: e.to_string() }
}

/// The stored form of an entry: metadata length, metadata, body.
fn pack(meta: &[u8], body: &[u8]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(4 + meta.len() + body.len());
    packed.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    packed.extend_from_slice(meta);
    packed.extend_from_slice(body);
    packed
}

fn unpack(packed: &[u8]) -> Result<(Meta, &[u8]), String> {
    let len = packed.get(..4).ok_or("shorter than its header")?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let meta = packed.get(4..4 + len).ok_or("metadata length past the end")?;
    let meta = serde_json::from_slice(meta).map_err(|e| format!("metadata: {e}"))?;
    Ok((meta, &packed[4 + len..]))
}

impl RedisStore {
    /// The URL the store was opened with (credentials included: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The site whose keys the store holds.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Connects to `url` (`redis://host:port/db`, or `redis+cluster://host:port,host:port`
    /// for a cluster: [`Conn::open`]) as the store of `site` (the manifest's `site`), whose
    /// keys all carry `{<site>}` or `{<site>/<bucket>}`. Fails with [`CacheError::Site`] if the
    /// site is not `[A-Za-z0-9_.-]+`, and if Redis cannot be reached now.
    pub async fn connect(url: &str, site: &str) -> Result<Self, CacheError> {
        check_site(site)?;
        let conn = Conn::open(url).await?;
        Ok(Self {
            conn,
            url: url.to_string(),
            site: site.to_string(),
            names: Names::new(site),
            put: Script::new(scripts::PUT),
            moves: Script::new(scripts::MOVE),
            walk: Script::new(scripts::WALK),
            remove: Script::new(scripts::REMOVE),
            lock: Script::new(scripts::LOCK),
            unlock: Script::new(scripts::UNLOCK),
            batch: BATCH,
            pause: Default::default(),
        })
    }

    /// A put, plain (`fence` `None`) or by the holder of a render lock.
    async fn write(&self, entry: Entry, fence: Option<Fence>) -> Result<PutOutcome, CacheError> {
        let key = entry.meta.key.as_str();
        let ttl = entry.meta.expires_at().saturating_sub(now_ms());
        if ttl == 0 {
            // Already past every window: nothing to keep (a holder lets its lock go). Its
            // outcome is still the generation rule's, as on the other stores.
            if let Some(fence) = fence {
                self.release_lock(key, fence).await?;
            }
            let tags: Vec<String> = entry.meta.generation.keys().cloned().collect();
            let current = self.generations(&tags).await?;
            let moved = entry.meta.generation.iter().find(|(tag, g)| current.get(*tag).is_some_and(|c| c > *g));
            return Ok(match moved {
                Some((tag, _)) => PutOutcome::Dropped { tag: tag.clone() },
                None => PutOutcome::Stored,
            });
        }
        let b = bucket(key);
        let entry_key = self.names.entry(key);
        // Each of the bucket's tag sets gets `<entry key>|<generation of the tag>`.
        let tags: Vec<(String, String)> = entry
            .meta
            .tags()
            .iter()
            .map(|tag| {
                let generation = entry.meta.generation.get(tag);
                let member = format!("{entry_key}|{}", generation.map_or(String::new(), |g| g.to_string()));
                (self.names.tag(b, tag), member)
            })
            .collect();
        let tags_json = serde_json::to_string(&tags).map_err(unavailable)?;
        let meta = serde_json::to_vec(&entry.meta).map_err(unavailable)?;
        let staged = self.names.staged(key, &nonce());
        let mut keys = vec![
            entry_key,
            self.names.stale(key),
            self.names.tag_list(key),
            self.names.lock(key),
            self.names.written(key),
            staged.clone(),
        ];
        let mut args = vec![
            ttl.to_string(),
            tags_json,
            entry.meta.stale_at.map_or(String::new(), |s| s.to_string()),
            fence.map_or(String::new(), |f| f.to_string()),
            entry.meta.generation.len().to_string(),
        ];
        for (tag, generation) in &entry.meta.generation {
            keys.push(self.names.bucket_generation(b, tag));
            args.push(generation.to_string());
        }
        for (tag, member) in tags {
            keys.push(tag);
            args.push(member);
        }
        // One round trip: the entry staged by a plain SET, then the script (one slot: the
        // bucket's). The staged copy outlives a lost script by STAGED_MS at most.
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(self.put.get_hash()).arg(keys.len()).arg(&keys).arg(&args);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&staged).arg(pack(&meta, &entry.body)).arg("PX").arg(STAGED_MS).ignore();
        pipe.add_command(evalsha);
        let mut conn = self.conn.clone();
        let outcome: i64 = match pipe.query_async::<(i64,)>(&mut conn).await {
            Ok((outcome,)) => outcome,
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                // A server that has not seen the script yet (or restarted): load it, go again.
                self.put.load_async(&mut conn).await.map_err(unavailable)?;
                pipe.query_async::<(i64,)>(&mut conn).await.map_err(unavailable)?.0
            }
            Err(e) => return Err(unavailable(e)),
        };
        if outcome == -2 {
            return Err(unavailable(format!("the staged copy of {key} was gone when its put's script ran (evicted)")));
        }
        Ok(match outcome {
            0 => PutOutcome::Stored,
            i if i < 0 => PutOutcome::Superseded,
            i => PutOutcome::Dropped {
                tag: entry.meta.generation.keys().nth(i as usize - 1).cloned().unwrap_or_default(),
            },
        })
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        let mut conn = self.conn.clone();
        let (packed, stale_at): (Option<Vec<u8>>, Option<u64>) = redis::cmd("MGET")
            .arg(self.names.entry(key))
            .arg(self.names.stale(key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let Some(packed) = packed else { return Ok(None) };
        let packed = bytes::Bytes::from(packed);
        match unpack(&packed) {
            Ok((mut meta, body)) => {
                meta.stale_at = stale_at;
                // The body is the tail of the value: share it, no copy.
                let body = packed.slice(packed.len() - body.len()..);
                Ok(Some(Arc::new(Entry { body, meta })))
            }
            Err(e) => {
                tracing::warn!(store = "redis", %key, error = %e, "damaged entry removed");
                self.remove(key).await?;
                Ok(None)
            }
        }
    }

    async fn generations(&self, tags: &[String]) -> Result<Generations, CacheError> {
        if tags.is_empty() {
            return Ok(Generations::new());
        }
        let mut conn = self.conn.clone();
        // One MGET in the site slot (even for one key: GET's nil would read as an empty list,
        // and a render would record no generation at all).
        let keys: Vec<String> = tags.iter().map(|t| self.names.generation(t)).collect();
        let values: Vec<Option<u64>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(unavailable)?;
        if values.len() != tags.len() {
            return Err(unavailable(format!("MGET answered {} values for {} keys", values.len(), tags.len())));
        }
        Ok(tags.iter().cloned().zip(values.into_iter().map(|v| v.unwrap_or(0))).collect())
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        self.write(entry, None).await
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        self.purge_all(context, params, mode).await
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.remove.key(self.names.entry(key));
        invocation.key(self.names.stale(key)).key(self.names.tag_list(key));
        invocation.invoke_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn lock(&self, key: &str, ttl_ms: u64) -> Result<LockOutcome, CacheError> {
        self.take_lock(key, ttl_ms).await
    }

    async fn unlock(&self, key: &str, fence: Fence) -> Result<(), CacheError> {
        self.release_lock(key, fence).await
    }

    async fn put_fenced(&self, entry: Entry, fence: Fence) -> Result<PutOutcome, CacheError> {
        self.write(entry, Some(fence)).await
    }
}

#[cfg(test)]
mod tests;

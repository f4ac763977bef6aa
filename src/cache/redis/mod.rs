//! The Redis store. Every key it writes sits under its site's prefix `mz1:<site>:`, so sites
//! sharing one Redis never see each other's entries, tags or generations. With `<k>` the
//! entry's key without its `mz1:` (`p:<hex>` for `mz1:p:<hex>`):
//!
//! - `mz1:<site>:<k>`: the entry, one string: a 4-byte big-endian metadata length, the
//!   metadata JSON, the body. One `GET` reads it and one `DEL` frees it.
//! - `mz1:<site>:s:<k>`: the soft-purge mark (`stale_at`, unix ms), same expiry as the entry.
//! - `mz1:<site>:k:<k>`: the entry's tag list (JSON `[[tag key, member], …]`), same expiry as
//!   the entry; read only when the key is put again or removed, to drop its memberships.
//! - `mz1:<site>:t:<tag>`: a sorted set of the entries carrying a tag. Each member is
//!   `mz1:<site>:<k>|<generation>`, the entry's Redis key and the generation of that tag its
//!   put checked (empty if the entry recorded none), scored by the entry's expiry (unix ms,
//!   Redis clock).
//! - `mz1:<site>:g:<tag>`: the tag's generation, a string that expires
//!   [`GENERATION_TTL_MS`] after the last purge that moved it. A purge moves it to
//!   `max(current + 1, now)` by Redis's clock, so a forgotten one comes back newer than any a
//!   member recorded (members of the earlier layout, which recorded per-context counters,
//!   included). The earlier layout's `mz1:<site>:gen` hash is no longer read.
//!
//! The site is checked at construction (`[A-Za-z0-9_.-]+`): it holds no `:`, so the prefixes
//! of two sites never overlap. The node's keys start `mz1:p:` or `mz1:d:`, so `<k>` starts
//! `p:` or `d:` and never meets the store's own `s:`, `k:`, `t:` and `g:`.
//!
//! Put, purge and remove are Lua scripts, atomic on the server, so several nodes (and several
//! sites) can share one Redis (standalone or one shard: the scripts touch keys they compute,
//! all under one prefix). No script's work grows with the size of a tag:
//!
//! - a put adds its members and drops, from each of its tag sets, up to [`PRUNE`] members
//!   whose entries expired more than a second ago, so a tag set holds about its live entries
//!   however long a hot tag lives;
//! - a purge runs as several script calls, each reading about [`BATCH`] members of the
//!   smallest of its tag sets, in the set's order (expiry, then member) from where the last
//!   call stopped. The first call moves the generations of all the purge's tags before it
//!   removes anything. A member whose generation (of the walked tag) is older than the
//!   purge's was stored before it and is removed (or
//!   marked); a newer one was stored after it by a render that started after it and is left
//!   alone. Every member that is in the set from the first call to the last lies in exactly
//!   one call's range, and an old member leaves its set only with its entry (deleted, expired,
//!   or replaced by a newer put), so when the walk ends no entry stored before the purge is
//!   left (docs/protocol.md, "Backends", has the whole argument). The walk runs on a task of
//!   its own, so it finishes even if the caller stops waiting.
//!
//! When Redis is unreachable every call fails fast with [`CacheError::Unavailable`]; the
//! connection manager reconnects on its own when Redis is back.

mod conn;
pub mod log;

pub use conn::{Conn, Target, target};
pub use log::LoggedPurge;

use super::meta::purge_tags;
use super::store::{Entry, GENERATION_TTL_MS, Generations, PurgeMode, PutOutcome, Store, check_site, now_ms};
use super::{CacheError, Meta};
use redis::Script;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The Redis names of one site's keys: everything under `mz1:<site>:`.
struct Names {
    /// `mz1:<site>:`.
    prefix: String,
}

impl Names {
    fn new(site: &str) -> Self {
        Self { prefix: format!("mz1:{site}:") }
    }

    fn generation(&self, tag: &str) -> String {
        format!("{}g:{tag}", self.prefix)
    }

    /// An entry's key without the protocol's `mz1:` (which the prefix already carries).
    fn local(key: &str) -> &str {
        key.strip_prefix("mz1:").unwrap_or(key)
    }

    fn entry(&self, key: &str) -> String {
        format!("{}{}", self.prefix, Self::local(key))
    }

    fn stale(&self, key: &str) -> String {
        format!("{}s:{}", self.prefix, Self::local(key))
    }

    fn tag_list(&self, key: &str) -> String {
        format!("{}k:{}", self.prefix, Self::local(key))
    }

    fn tag(&self, tag: &str) -> String {
        format!("{}t:{tag}", self.prefix)
    }
}

/// Members a purge reads per script call (plus those sharing the last one's expiry to the
/// millisecond): each call holds Redis for a few milliseconds at most, whatever the size of
/// the tag.
pub const BATCH: usize = 500;

/// Expired members a put drops from each of its tag sets.
pub const PRUNE: usize = 64;

/// Lua shared by the scripts.
///
/// `now()`: Redis's clock in unix ms. Members are scored with it and entries expire by it,
/// so no node's clock skew can prune a live entry's membership.
///
/// `zset(tag)`: a tag key of the earlier layout (a plain set of entry keys) becomes a sorted
/// set, each member `<key>|` (no generation: any purge takes it) scored with the set's own
/// expiry, which every put extended past its members', plus its position in ms (so no two
/// share a score, and none is pruned early). Once per key, the first time a script of this
/// layout touches it: the purge calls it on its tags, `zcall` when a command on a tag key
/// meets the wrong type.
macro_rules! prelude {
    () => {
        r#"
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function zset(tag, at)
  if redis.call('TYPE', tag).ok ~= 'set' then return end
  local pttl = redis.call('PTTL', tag)
  local score = at + (pttl > 0 and pttl or 31536000000)
  local keys = redis.call('SMEMBERS', tag)
  redis.call('DEL', tag)
  for i = 1, #keys, 500 do
    local args = {}
    for j = i, math.min(i + 499, #keys) do
      args[#args + 1] = score + j
      args[#args + 1] = keys[j] .. '|'
    end
    redis.call('ZADD', tag, unpack(args))
  end
  if pttl > 0 then redis.call('PEXPIRE', tag, pttl) end
end
local function zcall(command, tag, at, ...)
  local reply = redis.pcall(command, tag, ...)
  if type(reply) == 'table' and reply.err then
    zset(tag, at)
    reply = redis.call(command, tag, ...)
  end
  return reply
end
local function unlink(list, key, at)
  local old = redis.call('GET', list)
  if not old then return end
  for _, item in ipairs(cjson.decode(old)) do
    if type(item) == 'table' then
      zcall('ZREM', item[1], at, item[2])
    else
      zcall('ZREM', item, at, key .. '|')
    end
  end
end
"#
    };
}

/// KEYS: entry, stale mark, tag list, then the n generation keys of the tags the entry
/// recorded. ARGV: packed entry, ttl ms, tag list JSON, stale_at ("" for none), n, the n
/// recorded generations, then (tag key, member) pairs. Returns 0 when stored, else the
/// (1-based) position of the first generation that moved.
const PUT: &str = concat!(
    prelude!(),
    r#"
local n = tonumber(ARGV[5])
for i = 1, n do
  local current = redis.call('GET', KEYS[3 + i]) or '0'
  if current ~= ARGV[5 + i] then return i end
end
local at = now()
unlink(KEYS[3], KEYS[1], at)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('SET', KEYS[3], ARGV[3], 'PX', ttl)
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ttl) else redis.call('DEL', KEYS[2]) end
for i = 6 + n, #ARGV, 2 do
  local tag = ARGV[i]
  zcall('ZADD', tag, at, at + ttl, ARGV[i + 1])
  local dead = redis.call('ZRANGEBYSCORE', tag, '-inf', at - 1000, 'LIMIT', 0, 64)
  if #dead > 0 then redis.call('ZREM', tag, unpack(dead)) end
  if redis.call('PTTL', tag) < ttl then redis.call('PEXPIRE', tag, ttl) end
end
return 0
"#
);

/// One batch of a purge. KEYS: the generation keys of the purge's tags, in the order of the
/// tag keys in ARGV. ARGV: generation lifetime ms, mode, now ms (a soft purge's `stale_at`),
/// the site prefix `mz1:<site>:`, the purge's generation of the walked tag ("" on the first
/// call, which moves every tag's), the cursor (the last score the previous call reached; ""
/// on the first call), the batch size, the index of the walked tag set ("" on the first call,
/// which picks the smallest), then the tag keys to intersect. Returns {generation, next
/// cursor ("" when the walk is done), entries removed or marked, walked tag index}.
///
/// A call reads the next `batch` members of the walked set in its order (score, then member)
/// after the cursor, plus the rest of the members sharing the last one's score, so that the
/// next call can start strictly after that score: every member that is in the set from the
/// first call to the last lies in exactly one call's range.
const PURGE: &str = concat!(
    prelude!(),
    r#"
local prefix = ARGV[4]
local tags = {}
for i = 9, #ARGV do tags[#tags + 1] = ARGV[i] end
local generation, walked
if ARGV[5] == '' then
  local at, least, moved = now(), nil, {}
  for i, key in ipairs(KEYS) do
    moved[i] = math.max((tonumber(redis.call('GET', key)) or 0) + 1, at)
    redis.call('SET', key, string.format('%.0f', moved[i]), 'PX', ARGV[1])
  end
  for i, tag in ipairs(tags) do
    zset(tag, at)
    local size = redis.call('ZCARD', tag)
    if least == nil or size < least then least, walked = size, i end
  end
  generation = moved[walked]
else
  generation, walked = tonumber(ARGV[5]), tonumber(ARGV[8])
end
local set, batch = tags[walked], tonumber(ARGV[7])
local from = ARGV[6] == '' and '-inf' or '(' .. ARGV[6]
local page = redis.call('ZRANGE', set, from, '+inf', 'BYSCORE', 'LIMIT', 0, batch)
local next = ''
if #page == batch then
  next = redis.call('ZSCORE', set, page[#page])
  local same = redis.call('ZRANGE', set, next, next, 'BYSCORE')
  local at = 0
  for i = 1, #same do if same[i] == page[#page] then at = i; break end end
  for i = at + 1, #same do page[#page + 1] = same[i] end
  -- Nothing after this score: done, without one more call.
  if #redis.call('ZRANGE', set, '(' .. next, '+inf', 'BYSCORE', 'LIMIT', 0, 1) == 0 then next = '' end
end
local members, keys = {}, {}
for _, member in ipairs(page) do
  -- `<entry key>|<generation>`: the generation is after the last '|'.
  local bar = #member
  while bar > 0 and string.byte(member, bar) ~= 124 do bar = bar - 1 end
  local key, g = member, ''
  if bar > 0 then key, g = string.sub(member, 1, bar - 1), string.sub(member, bar + 1) end
  -- Stored before this purge's generation (or without one), and matching every tag.
  local taken = g == '' or tonumber(g) < generation
  if taken then
    for j, tag in ipairs(tags) do
      if j ~= walked and not redis.call('ZSCORE', tag, member) then taken = false; break end
    end
  end
  if taken then members[#members + 1] = member; keys[#keys + 1] = key end
end
local function mark_of(key) return prefix .. 's:' .. string.sub(key, #prefix + 1) end
local function each_part(list, f)
  for i = 1, #list, 500 do f({unpack(list, i, math.min(i + 499, #list))}) end
end
local count = 0
if ARGV[2] == 'hard' then
  each_part(keys, function(part)
    count = count + redis.call('DEL', unpack(part))
    for i, key in ipairs(part) do part[i] = mark_of(key) end
    redis.call('DEL', unpack(part))
  end)
  for _, tag in ipairs(tags) do each_part(members, function(part) redis.call('ZREM', tag, unpack(part)) end) end
else
  for i, key in ipairs(keys) do
    local ttl = redis.call('PTTL', key)
    if ttl > 0 then
      count = count + 1
      local mark = mark_of(key)
      local current = redis.call('GET', mark)
      if (not current) or tonumber(current) > tonumber(ARGV[3]) then
        redis.call('SET', mark, ARGV[3], 'PX', ttl)
      end
    else
      for _, tag in ipairs(tags) do redis.call('ZREM', tag, members[i]) end
    end
  end
end
return {generation, next, count, walked}
"#
);

/// KEYS: entry, stale mark, tag list. Removes the entry, its mark and its memberships.
const REMOVE: &str = concat!(
    prelude!(),
    r#"
unlink(KEYS[3], KEYS[1], now())
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"#
);

/// The Redis store of one site.
pub struct RedisStore {
    conn: Conn,
    /// The URL it was opened with, for connections of its own (the purge log's reader).
    url: String,
    /// The site whose keys it holds.
    site: String,
    names: Names,
    put: Script,
    purge: Script,
    remove: Script,
    batch: usize,
    #[cfg(test)]
    pause: Arc<super::store::PauseHook>,
}

/// One batch's answer: the purge's generation, the next cursor, how many entries it took,
/// and which tag set it walks.
type Batch = (u64, String, u64, u64);

/// The script calls of one purge.
struct Walk {
    conn: Conn,
    script: Script,
    /// The generation keys of the purge's tags.
    generations: Vec<String>,
    /// Generation lifetime, mode, now, prefix.
    args: Vec<String>,
    tags: Vec<String>,
    batch: usize,
}

impl Walk {
    /// One batch: `generation` and `walked` empty on the first call.
    async fn call(&mut self, generation: &str, cursor: &str, walked: &str) -> Result<Batch, CacheError> {
        let mut invocation = self.script.key(&self.generations);
        invocation.arg(&self.args).arg(generation).arg(cursor).arg(self.batch).arg(walked).arg(&self.tags);
        invocation.invoke_async(&mut self.conn).await.map_err(unavailable)
    }
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

    /// Connects to `url` (`redis://host:port/db`) as the store of `site` (the manifest's
    /// `site`), whose keys all go under `mz1:<site>:`. Fails with [`CacheError::Site`] if the
    /// site is not `[A-Za-z0-9_.-]+`, and if Redis cannot be reached now.
    pub async fn connect(url: &str, site: &str) -> Result<Self, CacheError> {
        check_site(site)?;
        let conn = Conn::open(url).await?;
        Ok(Self {
            conn,
            url: url.to_string(),
            site: site.to_string(),
            names: Names::new(site),
            put: Script::new(PUT),
            purge: Script::new(PURGE),
            remove: Script::new(REMOVE),
            batch: BATCH,
            #[cfg(test)]
            pause: Default::default(),
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
        // MGET even for one key: GET's nil would read as an empty list, and a render would
        // record no generation at all.
        let keys: Vec<String> = tags.iter().map(|t| self.names.generation(t)).collect();
        let values: Vec<Option<u64>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(unavailable)?;
        if values.len() != tags.len() {
            return Err(unavailable(format!("MGET answered {} values for {} keys", values.len(), tags.len())));
        }
        Ok(tags.iter().cloned().zip(values.into_iter().map(|v| v.unwrap_or(0))).collect())
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        let ttl = entry.meta.expires_at().saturating_sub(now_ms());
        if ttl == 0 {
            return Ok(PutOutcome::Stored); // already past every window: nothing to keep
        }
        let key = entry.meta.key.as_str();
        let entry_key = self.names.entry(key);
        // Each tag set gets `<entry key>|<generation of the tag>`.
        let tags: Vec<(String, String)> = entry
            .meta
            .tags()
            .iter()
            .map(|tag| {
                let generation = entry.meta.generation.get(tag);
                let member = format!("{entry_key}|{}", generation.map_or(String::new(), |g| g.to_string()));
                (self.names.tag(tag), member)
            })
            .collect();
        let tags_json = serde_json::to_string(&tags).map_err(unavailable)?;
        let meta = serde_json::to_vec(&entry.meta).map_err(unavailable)?;
        let mut invocation = self.put.key(&entry_key);
        invocation
            .key(self.names.stale(key))
            .key(self.names.tag_list(key))
            .arg(pack(&meta, &entry.body))
            .arg(ttl)
            .arg(tags_json)
            .arg(entry.meta.stale_at.map_or(String::new(), |s| s.to_string()))
            .arg(entry.meta.generation.len());
        for (tag, generation) in &entry.meta.generation {
            invocation.key(self.names.generation(tag)).arg(generation.to_string());
        }
        for (tag, member) in &tags {
            invocation.arg(tag).arg(member);
        }
        let mut conn = self.conn.clone();
        let moved: usize = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(match moved {
            0 => PutOutcome::Stored,
            i => PutOutcome::Dropped { tag: entry.meta.generation.keys().nth(i - 1).cloned().unwrap_or_default() },
        })
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        let tags = purge_tags(context, params);
        let mut walk = Walk {
            conn: self.conn.clone(),
            script: self.purge.clone(),
            generations: tags.iter().map(|t| self.names.generation(t)).collect(),
            args: vec![
                GENERATION_TTL_MS.to_string(),
                if mode == PurgeMode::Hard { "hard" } else { "soft" }.to_string(),
                now_ms().to_string(),
                self.names.prefix.clone(),
            ],
            tags: tags.iter().map(|t| self.names.tag(t)).collect(),
            batch: self.batch,
        };
        #[cfg(test)]
        let pause = self.pause.clone();
        let (site, context, params) = (self.site.clone(), context.to_string(), params.clone());
        // The whole walk on a task of its own: once the generation has moved, the batches run
        // to the end even if this future is dropped.
        let task = tokio::spawn(async move {
            let (generation, mut cursor, mut count, walked) = walk.call("", "", "").await?;
            #[cfg(test)]
            let _done = if cursor.is_empty() { None } else { Some(pause.pause().await) };
            let (generation, walked) = (generation.to_string(), walked.to_string());
            while !cursor.is_empty() {
                let (_, next, taken, _) = walk.call(&generation, &cursor, &walked).await?;
                (cursor, count) = (next, count + taken);
            }
            // Logged once the walk is over: a memory tier that applies it then can no longer
            // fetch an entry the purge takes.
            log::append(&mut walk.conn, &site, &context, &params, mode).await?;
            Ok(count)
        });
        task.await.map_err(unavailable)?
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.remove.key(self.names.entry(key));
        invocation.key(self.names.stale(key)).key(self.names.tag_list(key));
        invocation.invoke_async::<()>(&mut conn).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::{BATCH, Names, RedisStore, pack, unpack};
    use crate::cache::store::Paused;
    use crate::cache::{Entry, Generations, Meta, PurgeMode, PutOutcome, Store, dependency_tags, now_ms};
    use crate::testing::RedisServer;
    use redis::aio::MultiplexedConnection;
    use serde_json::{Map, Value, json};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn every_key_sits_under_the_site_prefix() {
        let names = Names::new("shop");
        assert_eq!(names.entry("mz1:p:ab12"), "mz1:shop:p:ab12");
        assert_eq!(names.entry("mz1:d:cd34"), "mz1:shop:d:cd34");
        assert_eq!(names.stale("mz1:p:ab12"), "mz1:shop:s:p:ab12");
        assert_eq!(names.tag_list("mz1:p:ab12"), "mz1:shop:k:p:ab12");
        assert_eq!(names.tag("c:product_detail:id=1"), "mz1:shop:t:c:product_detail:id=1");
        assert_eq!(names.generation("c:product_detail:id=1"), "mz1:shop:g:c:product_detail:id=1");
    }

    #[test]
    fn packs_and_refuses_damaged_values() {
        let meta = br#"{"v":1,"kind":"data","key":"k","status":200,"headers":[],"created_at":1,"ttl_s":1,"swr_s":0,"sie_s":0,"deps":[],"etag":null,"generation":{}}"#;
        let packed = pack(meta, b"\x00body\xff");
        let (m, body) = unpack(&packed).unwrap();
        assert_eq!((m.key.as_str(), body), ("k", &b"\x00body\xff"[..]));
        assert!(unpack(b"\x00\x00").is_err());
        assert!(unpack(b"\x00\x00\x01\x00{}").is_err());
        assert!(unpack(b"\x00\x00\x00\x02{x").is_err());
    }

    /// A page under `key` depending on `deps` ([context, params] pairs), recording
    /// `generation` (what its render read), with a lifetime of 60 + 30 + 100 s.
    fn entry(key: &str, deps: &[(&str, Value)], generation: &Generations, body: &str) -> Entry {
        let deps: Vec<Value> = deps.iter().map(|(c, p)| json!({"context": c, "params": p})).collect();
        let meta: Meta = serde_json::from_value(json!({
            "v": 1, "kind": "page", "key": key, "status": 200, "headers": [],
            "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
            "deps": deps, "etag": null, "generation": generation
        }))
        .unwrap();
        Entry { body: body.to_string().into_bytes().into(), meta }
    }

    fn hot(key: &str, id: u64, generation: &Generations, body: &str) -> Entry {
        entry(key, &[("hot", json!({ "id": id }))], generation, body)
    }

    /// What a render of a page depending on `hot` with `id` reads when it starts.
    async fn read(store: &RedisStore, id: u64) -> Generations {
        store.generations(&dependency_tags([("hot", &params(json!({ "id": id })))])).await.unwrap()
    }

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// A deadline that fails the test with a message instead of hanging it.
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f).await.unwrap_or_else(|_| panic!("{what} did not complete"))
    }

    async fn start() -> (RedisServer, Arc<RedisStore>, MultiplexedConnection) {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), "shop").await.unwrap();
        let raw = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
        (server, Arc::new(store), raw)
    }

    async fn card(raw: &mut MultiplexedConnection, key: &str) -> u64 {
        redis::cmd("ZCARD").arg(key).query_async(raw).await.unwrap()
    }

    async fn exists(raw: &mut MultiplexedConnection, key: &str) -> bool {
        redis::cmd("EXISTS").arg(key).query_async(raw).await.unwrap()
    }

    /// Tags larger than one batch, purged by one tag and by an intersection of two, hard and
    /// soft: every match is taken, nothing else, and the walk took several calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tag_with_more_members_than_one_batch_is_purged_completely() {
        let (_server, store, mut raw) = start().await;
        let n = 2 * BATCH + 300;
        for i in 0..n {
            let deps = [("hot", json!({"id": 0})), ("search", json!({"q": "a", "page": i % 2}))];
            let none = Generations::new();
            assert_eq!(store.put(entry(&format!("mz1:p:{i}"), &deps, &none, "old")).await.unwrap(), PutOutcome::Stored);
        }
        let other = read(&store, 1).await;
        for i in 0..10 {
            store.put(hot(&format!("mz1:p:other{i}"), 1, &other, "other")).await.unwrap();
        }
        assert_eq!(card(&mut raw, "mz1:shop:t:c:hot:id=0").await, n as u64);

        // An intersection, walked over several calls (the hook stops it after the first).
        let Paused { reached, resume, done } = store.pause.arm();
        let search = tokio::spawn({
            let store = store.clone();
            async move { store.purge("search", &params(json!({"q": "a", "page": 1})), PurgeMode::Soft).await.unwrap() }
        });
        within("the first batch", reached).await.unwrap();
        resume.send(()).unwrap();
        assert_eq!(within("the soft purge", search).await.unwrap() as usize, n / 2);
        within("the walk", done).await.unwrap();
        for i in 0..n {
            let got = store.get(&format!("mz1:p:{i}")).await.unwrap().unwrap();
            assert_eq!(got.meta.stale_at.is_some(), i % 2 == 1, "mz1:p:{i}");
        }

        assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, n);
        for i in 0..n {
            assert!(store.get(&format!("mz1:p:{i}")).await.unwrap().is_none(), "mz1:p:{i} survived");
            assert!(!exists(&mut raw, &format!("mz1:shop:s:p:{i}")).await, "its mark too");
        }
        assert!(!exists(&mut raw, "mz1:shop:t:c:hot:id=0").await, "the purged tag set is empty");
        // The purged entries' memberships of other tags stay until those sets prune them (or the
        // keys are put again): a purge of the whole context walks them and counts only the live.
        assert_eq!(store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap(), 10);
        assert!(!exists(&mut raw, "mz1:shop:t:c:hot").await, "the walk emptied the context's set");
    }

    /// Members sharing an expiry to the millisecond (puts in the same millisecond) across the
    /// end of a batch: the call that reaches such a group reads all of it, so the next one can
    /// start after it and none is skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_sharing_an_expiry_across_batches_are_all_purged() {
        let (_server, store, mut raw) = start().await;
        let n = 2 * BATCH + 50;
        let g = read(&store, 0).await;
        for i in 0..n {
            store.put(hot(&format!("mz1:p:{i}"), 0, &g, "old")).await.unwrap();
        }
        // Groups of 7 members with one score: the 500th member falls inside a group.
        let base = now_ms() + 600_000;
        let mut pipe = redis::pipe();
        for i in 0..n {
            pipe.cmd("ZADD")
                .arg("mz1:shop:t:c:hot:id=0")
                .arg("XX")
                .arg(base + (i / 7) as u64)
                .arg(format!("mz1:shop:p:{i}|0"))
                .ignore();
        }
        let _: () = pipe.query_async(&mut raw).await.unwrap();
        assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, n);
        for i in 0..n {
            assert!(store.get(&format!("mz1:p:{i}")).await.unwrap().is_none(), "mz1:p:{i} survived");
        }
        assert!(!exists(&mut raw, "mz1:shop:t:c:hot:id=0").await);
    }

    /// Members whose entries expired leave the tag sets as puts go on, so a hot tag's set stays
    /// the size of its live entries. The wait is for Redis's clock to pass the entries' expiry
    /// and the one-second grace: time, not another task, is what the test waits for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_members_are_pruned_from_tag_sets() {
        let (_server, store, mut raw) = start().await;
        let g = read(&store, 0).await;
        let short = |key: &str| {
            let mut e = hot(key, 0, &g, "short");
            (e.meta.ttl_s, e.meta.swr_s, e.meta.sie_s) = (1, 0, 0);
            e.meta.created_at = now_ms() - 900; // expires in about 100 ms
            e
        };
        for i in 0..100 {
            store.put(short(&format!("mz1:p:short{i}"))).await.unwrap();
        }
        store.put(hot("mz1:p:live", 0, &g, "live")).await.unwrap();
        let tag = "mz1:shop:t:c:hot:id=0";
        assert_eq!(card(&mut raw, tag).await, 101);
        let latest: f64 =
            redis::cmd("ZSCORE").arg(tag).arg("mz1:shop:p:short99|0").query_async(&mut raw).await.unwrap();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
        let redis_now = secs * 1000 + micros / 1000;
        tokio::time::sleep(Duration::from_millis((latest as u64 + 1001).saturating_sub(redis_now))).await;

        assert!(store.get("mz1:p:short0").await.unwrap().is_none(), "the short entries expired");
        store.put(hot("mz1:p:live2", 0, &g, "live")).await.unwrap();
        assert_eq!(card(&mut raw, tag).await, 102 - super::PRUNE as u64, "one put prunes up to PRUNE members");
        store.put(hot("mz1:p:live3", 0, &g, "live")).await.unwrap();
        assert_eq!(card(&mut raw, tag).await, 3, "only the live entries are left");
        let left: Vec<String> = redis::cmd("ZRANGE").arg(tag).arg(0).arg(-1).query_async(&mut raw).await.unwrap();
        assert!(left.iter().all(|m| m.starts_with("mz1:shop:p:live")), "{left:?}");
        // The context's set was pruned the same way, and a purge finds exactly the live ones.
        assert_eq!(card(&mut raw, "mz1:shop:t:c:hot").await, 3);
        assert_eq!(store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap(), 3);
    }

    /// Puts land between two batches of a purge: one from a render that read the old
    /// generation (dropped), and fresh ones (stored with the new generation) of a key the walk
    /// has not reached, of a key it already took and of a new key. The walk takes every entry
    /// stored before it and none of the fresh ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_racing_a_multi_batch_purge_leaves_nothing_stale() {
        let (_server, store, _raw) = start().await;
        let n = 3 * BATCH;
        let before = read(&store, 0).await;
        for i in 0..n {
            store.put(hot(&format!("mz1:p:{i}"), 0, &before, "old")).await.unwrap();
        }
        let Paused { reached, resume, .. } = store.pause.arm();
        let purge = tokio::spawn({
            let store = store.clone();
            async move { store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() }
        });
        within("the first batch", reached).await.unwrap();
        let now = read(&store, 0).await;
        assert!(now["c:hot:id=0"] > before["c:hot:id=0"], "moved before any removal");
        assert_eq!(now["c:hot"], before["c:hot"], "a purge of one id leaves the context's generation");
        let (mut pending, mut taken) = (None, None);
        for i in 0..n {
            let key = format!("mz1:p:{i}");
            match store.get(&key).await.unwrap() {
                Some(_) if pending.is_none() => pending = Some(key),
                None if taken.is_none() => taken = Some(key),
                _ => {}
            }
        }
        let (pending, taken) = (pending.expect("a key the walk has not reached"), taken.expect("a key it took"));
        let late = store.put(hot(&pending, 0, &before, "rendered before the purge")).await.unwrap();
        assert_eq!(late, PutOutcome::Dropped { tag: "c:hot:id=0".into() });
        for key in [pending.as_str(), taken.as_str(), "mz1:p:new"] {
            assert_eq!(store.put(hot(key, 0, &now, "fresh")).await.unwrap(), PutOutcome::Stored, "{key}");
        }
        assert!(!purge.is_finished(), "the purge waited for the test all along");
        resume.send(()).unwrap();
        assert_eq!(within("the purge", purge).await.unwrap() as usize, n - 1, "all old entries but the replaced one");

        for i in 0..n {
            let key = format!("mz1:p:{i}");
            let got = store.get(&key).await.unwrap();
            if key == pending || key == taken {
                assert_eq!(&*got.expect("a fresh write was purged").body, b"fresh", "{key}");
            } else {
                assert!(got.is_none(), "{key}: an entry stored before the purge survived it");
            }
        }
        assert_eq!(&*store.get("mz1:p:new").await.unwrap().unwrap().body, b"fresh");
        assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap(), 3);
    }

    /// Renders (read the generation, put) race multi-batch purges for real, with no hook:
    /// afterwards exactly the entries stored with the last generation are there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_racing_multi_batch_purges_are_kept_or_purged_exactly() {
        let (_server, store, _raw) = start().await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move {
                let mut stored = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let g = read(&store, 0).await;
                    let key = format!("mz1:p:w{i}");
                    if store.put(hot(&key, 0, &g, "w")).await.unwrap() == PutOutcome::Stored {
                        stored.push((key, g["c:hot:id=0"]));
                    }
                    i += 1;
                }
                stored
            }
        });
        // Each purge walks more than one batch: the entries seeded before it, and the renders'.
        let mut stored = Vec::new();
        let rounds = 4;
        let mut seen = std::collections::BTreeSet::new();
        for round in 0..rounds {
            let g = read(&store, 0).await;
            for i in 0..2 * BATCH {
                let key = format!("mz1:p:seed{round}-{i}");
                assert_eq!(store.put(hot(&key, 0, &g, "seed")).await.unwrap(), PutOutcome::Stored);
                stored.push((key, g["c:hot:id=0"]));
            }
            seen.insert(g["c:hot:id=0"]);
            store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.await.unwrap();
        assert!(written.iter().any(|(_, g)| *g > 0), "renders ran between the purges");
        stored.extend(written);
        let last = read(&store, 0).await["c:hot:id=0"];
        assert_eq!(seen.len(), rounds, "each round began at a generation of its own");
        assert!(seen.iter().all(|g| *g < last), "the last purge moved past all of them");
        let mut kept = 0;
        for (key, g) in &stored {
            let present = store.get(key).await.unwrap().is_some();
            assert_eq!(present, *g == last, "{key} stored at generation {g}, the last is {last}");
            kept += usize::from(present);
        }
        assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, kept);
    }

    /// A caller that stops waiting does not stop the walk: the generation has moved, so the
    /// rest of the batches must run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_whose_caller_stops_waiting_still_finishes() {
        let (_server, store, _raw) = start().await;
        let n = 2 * BATCH + 1;
        let g = read(&store, 0).await;
        for i in 0..n {
            store.put(hot(&format!("mz1:p:{i}"), 0, &g, "old")).await.unwrap();
        }
        let Paused { reached, resume, done } = store.pause.arm();
        let purge = tokio::spawn({
            let store = store.clone();
            async move { store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap() }
        });
        within("the first batch", reached).await.unwrap();
        purge.abort();
        assert!(within("the aborted caller", purge).await.unwrap_err().is_cancelled());
        resume.send(()).unwrap();
        within("the rest of the walk", done).await.unwrap();
        for i in 0..n {
            assert!(store.get(&format!("mz1:p:{i}")).await.unwrap().is_none(), "mz1:p:{i} survived");
        }
    }

    /// Tag sets of the earlier layout (plain sets of entry keys, a JSON list of tag keys) are
    /// converted by the first script that touches them, and purges still find their entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tag_sets_of_the_earlier_layout_are_converted_and_still_purged() {
        let (_server, store, mut raw) = start().await;
        let legacy = |key: &str| {
            let tags = ["mz1:shop:t:c:hot", "mz1:shop:t:c:hot:id=0"];
            let mut pipe = redis::pipe();
            pipe.del(&tags[..]).ignore();
            for tag in tags {
                pipe.sadd(tag, format!("mz1:shop:{}", &key[4..])).ignore().pexpire(tag, 60_000).ignore();
            }
            pipe.set(format!("mz1:shop:k:{}", &key[4..]), serde_json::to_string(&tags).unwrap()).ignore();
            pipe
        };
        store.put(hot("mz1:p:old", 0, &read(&store, 0).await, "old")).await.unwrap();
        let _: () = legacy("mz1:p:old").query_async(&mut raw).await.unwrap();
        assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap(), 1);
        assert!(store.get("mz1:p:old").await.unwrap().is_none());

        let g = read(&store, 0).await;
        store.put(hot("mz1:p:old", 0, &g, "old")).await.unwrap();
        let _: () = legacy("mz1:p:old").query_async(&mut raw).await.unwrap();
        // A put on the same tags converts them; a put again of the legacy key drops its member.
        store.put(hot("mz1:p:new", 0, &g, "new")).await.unwrap();
        let kind: String = redis::cmd("TYPE").arg("mz1:shop:t:c:hot:id=0").query_async(&mut raw).await.unwrap();
        assert_eq!(kind, "zset");
        store.put(hot("mz1:p:old", 0, &g, "again")).await.unwrap();
        assert_eq!(card(&mut raw, "mz1:shop:t:c:hot:id=0").await, 2, "no stale membership left");
        assert_eq!(store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap(), 2);
        assert!(store.get("mz1:p:new").await.unwrap().is_none());
    }

    /// A tag's generation lives in a key that expires [`GENERATION_TTL_MS`] after the last
    /// purge that moved it, seeded by Redis's clock, so a purge moves past anything a member
    /// recorded: members of the earlier layout recorded small per-context counters, and are
    /// taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn generations_expire_and_members_of_the_earlier_layout_are_taken() {
        let (_server, store, mut raw) = start().await;
        store.put(hot("mz1:p:legacy", 0, &Generations::new(), "old")).await.unwrap();
        let tag = "mz1:shop:t:c:hot:id=0";
        let score: f64 = redis::cmd("ZSCORE").arg(tag).arg("mz1:shop:p:legacy|").query_async(&mut raw).await.unwrap();
        let mut pipe = redis::pipe();
        pipe.zrem(tag, "mz1:shop:p:legacy|").ignore().zadd(tag, "mz1:shop:p:legacy|41", score).ignore();
        let _: () = pipe.query_async(&mut raw).await.unwrap();

        assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap(), 1);
        assert!(store.get("mz1:p:legacy").await.unwrap().is_none());
        let generation = read(&store, 0).await["c:hot:id=0"];
        assert!(generation >= now_ms() - 60_000, "seeded by the clock: {generation}");
        let pttl: i64 = redis::cmd("PTTL").arg("mz1:shop:g:c:hot:id=0").query_async(&mut raw).await.unwrap();
        assert!((1..=super::GENERATION_TTL_MS as i64).contains(&pttl) && pttl > 3_000_000, "expires: {pttl}");
        assert!(!exists(&mut raw, "mz1:shop:g:c:hot").await, "a purge of one id moves only that tag");
    }
}

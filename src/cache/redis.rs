//! The Redis store: each entry a hash (`body`, `meta`, `stale_at`, `tags`) under its protocol
//! key, each tag a set under `mz1:t:<tag>`, the generations one hash `mz1:gen`. Put and purge
//! are Lua scripts, so each runs atomically on the server: the generation check and the write
//! cannot interleave with a purge, and several nodes can share one Redis.
//!
//! The scripts touch keys they compute, so they need a standalone Redis (or one shard).
//! When Redis is unreachable every call fails fast with [`CacheError::Unavailable`]; the
//! connection manager reconnects on its own when Redis is back.

use super::meta::purge_tags;
use super::store::{Entry, Generations, PurgeMode, PutOutcome, Store, now_ms};
use super::{CacheError, Meta};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

const GENERATIONS: &str = "mz1:gen";
const TAG_PREFIX: &str = "mz1:t:";

/// KEYS[1] entry, KEYS[2] generations. ARGV: body, meta, ttl ms, tags JSON, stale_at ("" for
/// none), number of generations, then (context, generation) pairs, then the tag keys.
const PUT: &str = r#"
local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local context = ARGV[7 + 2 * i]
  local current = redis.call('HGET', KEYS[2], context) or '0'
  if current ~= ARGV[8 + 2 * i] then return context end
end
local old = redis.call('HGET', KEYS[1], 'tags')
if old then
  for _, tag in ipairs(cjson.decode(old)) do redis.call('SREM', tag, KEYS[1]) end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'meta', ARGV[2], 'tags', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'stale_at', ARGV[5]) end
local ttl = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
for i = 7 + 2 * n, #ARGV do
  redis.call('SADD', ARGV[i], KEYS[1])
  if redis.call('PTTL', ARGV[i]) < ttl then redis.call('PEXPIRE', ARGV[i], ttl) end
end
return ''
"#;

/// KEYS[1] generations. ARGV: context, mode, now ms, then the tag keys to intersect.
/// Removals are batched (one SREM per tag, one DEL per 500 keys) to keep a purge of
/// thousands of entries within a few milliseconds.
const PURGE: &str = r#"
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local tags = {}
for i = 4, #ARGV do tags[#tags + 1] = ARGV[i] end
local keys = redis.call('SINTER', unpack(tags))
local count = 0
local by_tag = {}
local doomed = {}
local function unlink(tag, key)
  local list = by_tag[tag]
  if not list then list = {}; by_tag[tag] = list end
  list[#list + 1] = key
end
for _, key in ipairs(keys) do
  local own = redis.call('HGET', key, 'tags')
  if own then
    count = count + 1
    if ARGV[2] == 'hard' then
      for _, tag in ipairs(cjson.decode(own)) do unlink(tag, key) end
      doomed[#doomed + 1] = key
    else
      local current = redis.call('HGET', key, 'stale_at')
      if (not current) or tonumber(current) > tonumber(ARGV[3]) then
        redis.call('HSET', key, 'stale_at', ARGV[3])
      end
    end
  else
    for _, tag in ipairs(tags) do unlink(tag, key) end
  end
end
local function in_chunks(command, first, list)
  for i = 1, #list, 500 do
    local args = {}
    for j = i, math.min(i + 499, #list) do args[#args + 1] = list[j] end
    if first then redis.call(command, first, unpack(args)) else redis.call(command, unpack(args)) end
  end
end
for tag, list in pairs(by_tag) do in_chunks('SREM', tag, list) end
in_chunks('DEL', nil, doomed)
return count
"#;

/// The Redis store.
pub struct RedisStore {
    conn: ConnectionManager,
    put: Script,
    purge: Script,
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable { store: "redis", message: e.to_string() }
}

fn tag_key(tag: &str) -> String {
    format!("{TAG_PREFIX}{tag}")
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`). Fails if Redis cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
        Ok(Self { conn, put: Script::new(PUT), purge: Script::new(PURGE) })
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        let mut conn = self.conn.clone();
        let (body, meta, stale_at): (Option<Vec<u8>>, Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(key)
            .arg("body")
            .arg("meta")
            .arg("stale_at")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let (Some(body), Some(meta)) = (body, meta) else { return Ok(None) };
        match serde_json::from_str::<Meta>(&meta) {
            Ok(mut meta) => {
                meta.stale_at = stale_at;
                Ok(Some(Arc::new(Entry { body: body.into(), meta })))
            }
            Err(e) => {
                tracing::warn!(store = "redis", %key, error = %e, "damaged entry removed");
                self.remove(key).await?;
                Ok(None)
            }
        }
    }

    async fn generations(&self, contexts: &[String]) -> Result<Generations, CacheError> {
        if contexts.is_empty() {
            return Ok(Generations::new());
        }
        let mut conn = self.conn.clone();
        // HMGET even for one field: HGET's nil would read as an empty list, and a render would
        // record no generation at all.
        let values: Vec<Option<u64>> =
            redis::cmd("HMGET").arg(GENERATIONS).arg(contexts).query_async(&mut conn).await.map_err(unavailable)?;
        if values.len() != contexts.len() {
            return Err(unavailable(format!("HMGET answered {} values for {} fields", values.len(), contexts.len())));
        }
        Ok(contexts.iter().cloned().zip(values.into_iter().map(|v| v.unwrap_or(0))).collect())
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        let ttl = entry.meta.expires_at().saturating_sub(now_ms());
        if ttl == 0 {
            return Ok(PutOutcome::Stored); // already past every window: nothing to keep
        }
        let tags: Vec<String> = entry.meta.tags().iter().map(|t| tag_key(t)).collect();
        let tags_json = serde_json::to_string(&tags).map_err(unavailable)?;
        let meta = serde_json::to_string(&entry.meta).map_err(unavailable)?;
        let mut invocation = self.put.key(&entry.meta.key);
        invocation
            .key(GENERATIONS)
            .arg(&entry.body[..])
            .arg(meta)
            .arg(ttl)
            .arg(tags_json)
            .arg(entry.meta.stale_at.map_or(String::new(), |s| s.to_string()))
            .arg(entry.meta.generation.len());
        for (context, generation) in &entry.meta.generation {
            invocation.arg(context).arg(generation.to_string());
        }
        for tag in &tags {
            invocation.arg(tag);
        }
        let mut conn = self.conn.clone();
        let moved: String = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if moved.is_empty() { PutOutcome::Stored } else { PutOutcome::Dropped { context: moved } })
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        let mut invocation = self.purge.key(GENERATIONS);
        invocation.arg(context).arg(if mode == PurgeMode::Hard { "hard" } else { "soft" }).arg(now_ms());
        for tag in purge_tags(context, params) {
            invocation.arg(tag_key(&tag));
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(unavailable)
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let tags: Option<String> = conn.hget(key, "tags").await.map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for tag in tags.and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok()).unwrap_or_default() {
            pipe.srem(tag, key).ignore();
        }
        pipe.del(key).ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }
}

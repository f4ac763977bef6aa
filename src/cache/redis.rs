//! The Redis store. Every key it writes sits under its site's prefix `mz1:<site>:`, so sites
//! sharing one Redis never see each other's entries, tags or generations. With `<k>` the
//! entry's key without its `mz1:` (`p:<hex>` for `mz1:p:<hex>`):
//!
//! - `mz1:<site>:<k>`: the entry, one string: a 4-byte big-endian metadata length, the
//!   metadata JSON, the body. One `GET` reads it and one `DEL` frees it.
//! - `mz1:<site>:s:<k>`: the soft-purge mark (`stale_at`, unix ms), same expiry as the entry.
//! - `mz1:<site>:k:<k>`: the entry's tag list (JSON), same expiry as the entry; read only when
//!   the key is put again, to drop memberships of tags it no longer has.
//! - `mz1:<site>:t:<tag>`: the set of entry keys carrying a tag; `mz1:<site>:gen`: the
//!   generations hash.
//!
//! The site is checked at construction (`[A-Za-z0-9_.-]+`): it holds no `:`, so the prefixes
//! of two sites never overlap. The node's keys start `mz1:p:` or `mz1:d:`, so `<k>` starts
//! `p:` or `d:` and never meets the store's own `s:`, `k:`, `t:` and `gen`.
//!
//! Put and purge are Lua scripts, atomic on the server, so several nodes (and several sites)
//! can share one Redis (standalone or one shard: the scripts touch keys they compute, all under
//! one prefix). A hard purge deletes the matching entries and the purge's own tag sets in
//! batches, without reading any entry; the entries' memberships in other tag sets go when those
//! keys are put again, or with the sets. When Redis is unreachable every call fails fast with
//! [`CacheError::Unavailable`]; the connection manager reconnects on its own when Redis is back.

use super::meta::purge_tags;
use super::store::{Entry, Generations, PurgeMode, PutOutcome, Store, check_site, now_ms};
use super::{CacheError, Meta};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The Redis names of one site's keys: everything under `mz1:<site>:`.
struct Names {
    /// `mz1:<site>:`.
    prefix: String,
    /// `mz1:<site>:gen`.
    generations: String,
}

impl Names {
    fn new(site: &str) -> Self {
        let prefix = format!("mz1:{site}:");
        Self { generations: format!("{prefix}gen"), prefix }
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

/// KEYS: entry, generations, stale mark, tag list. ARGV: packed entry, ttl ms, tag list JSON,
/// stale_at ("" for none), number of generations, (context, generation) pairs, tag keys.
const PUT: &str = r#"
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  local context = ARGV[6 + 2 * i]
  local current = redis.call('HGET', KEYS[2], context) or '0'
  if current ~= ARGV[7 + 2 * i] then return context end
end
local old = redis.call('GET', KEYS[4])
if old then
  for _, tag in ipairs(cjson.decode(old)) do redis.call('SREM', tag, KEYS[1]) end
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('SET', KEYS[4], ARGV[3], 'PX', ttl)
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ttl) else redis.call('DEL', KEYS[3]) end
for i = 6 + 2 * n, #ARGV do
  redis.call('SADD', ARGV[i], KEYS[1])
  if redis.call('PTTL', ARGV[i]) < ttl then redis.call('PEXPIRE', ARGV[i], ttl) end
end
return ''
"#;

/// KEYS: generations. ARGV: context, mode, now ms, the site prefix `mz1:<site>:`, then the tag
/// keys to intersect. The sets hold entry keys `<prefix><k>`; an entry's mark is `<prefix>s:<k>`.
const PURGE: &str = r#"
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local prefix = ARGV[4]
local function mark_of(key) return prefix .. 's:' .. string.sub(key, #prefix + 1) end
local tags = {}
for i = 5, #ARGV do tags[#tags + 1] = ARGV[i] end
local keys = redis.call('SINTER', unpack(tags))
local count = 0
local function chunks(list, f)
  for i = 1, #list, 500 do
    local part = {}
    for j = i, math.min(i + 499, #list) do part[#part + 1] = list[j] end
    f(part)
  end
end
if ARGV[2] == 'hard' then
  chunks(keys, function(part)
    count = count + redis.call('DEL', unpack(part))
    local marks = {}
    for _, key in ipairs(part) do marks[#marks + 1] = mark_of(key) end
    redis.call('DEL', unpack(marks))
  end)
  if #tags == 1 then
    redis.call('DEL', tags[1])
  else
    for _, tag in ipairs(tags) do chunks(keys, function(part) redis.call('SREM', tag, unpack(part)) end) end
  end
else
  for _, key in ipairs(keys) do
    local ttl = redis.call('PTTL', key)
    if ttl > 0 then
      count = count + 1
      local mark = mark_of(key)
      local current = redis.call('GET', mark)
      if (not current) or tonumber(current) > tonumber(ARGV[3]) then
        redis.call('SET', mark, ARGV[3], 'PX', ttl)
      end
    else
      for _, tag in ipairs(tags) do redis.call('SREM', tag, key) end
    end
  end
end
return count
"#;

/// The Redis store of one site.
pub struct RedisStore {
    conn: ConnectionManager,
    names: Names,
    put: Script,
    purge: Script,
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
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
    /// Connects to `url` (`redis://host:port/db`) as the store of `site` (the manifest's
    /// `site`), whose keys all go under `mz1:<site>:`. Fails with [`CacheError::Site`] if the
    /// site is not `[A-Za-z0-9_.-]+`, and if Redis cannot be reached now.
    pub async fn connect(url: &str, site: &str) -> Result<Self, CacheError> {
        check_site(site)?;
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?;
        Ok(Self { conn, names: Names::new(site), put: Script::new(PUT), purge: Script::new(PURGE) })
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

    async fn generations(&self, contexts: &[String]) -> Result<Generations, CacheError> {
        if contexts.is_empty() {
            return Ok(Generations::new());
        }
        let mut conn = self.conn.clone();
        // HMGET even for one field: HGET's nil would read as an empty list, and a render would
        // record no generation at all.
        let values: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(&self.names.generations)
            .arg(contexts)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
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
        let key = entry.meta.key.as_str();
        let tags: Vec<String> = entry.meta.tags().iter().map(|t| self.names.tag(t)).collect();
        let tags_json = serde_json::to_string(&tags).map_err(unavailable)?;
        let meta = serde_json::to_vec(&entry.meta).map_err(unavailable)?;
        let mut invocation = self.put.key(self.names.entry(key));
        invocation
            .key(&self.names.generations)
            .key(self.names.stale(key))
            .key(self.names.tag_list(key))
            .arg(pack(&meta, &entry.body))
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
        let mut invocation = self.purge.key(&self.names.generations);
        invocation
            .arg(context)
            .arg(if mode == PurgeMode::Hard { "hard" } else { "soft" })
            .arg(now_ms())
            .arg(&self.names.prefix);
        for tag in purge_tags(context, params) {
            invocation.arg(self.names.tag(&tag));
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(unavailable)
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let (entry, tag_list) = (self.names.entry(key), self.names.tag_list(key));
        let tags: Option<String> =
            redis::cmd("GET").arg(&tag_list).query_async(&mut conn).await.map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for tag in tags.and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok()).unwrap_or_default() {
            pipe.srem(tag, &entry).ignore();
        }
        pipe.del(&entry).ignore().del(self.names.stale(key)).ignore().del(&tag_list).ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::{Names, pack, unpack};

    #[test]
    fn every_key_sits_under_the_site_prefix() {
        let names = Names::new("shop");
        assert_eq!(names.entry("mz1:p:ab12"), "mz1:shop:p:ab12");
        assert_eq!(names.entry("mz1:d:cd34"), "mz1:shop:d:cd34");
        assert_eq!(names.stale("mz1:p:ab12"), "mz1:shop:s:p:ab12");
        assert_eq!(names.tag_list("mz1:p:ab12"), "mz1:shop:k:p:ab12");
        assert_eq!(names.tag("c:product_detail:id=1"), "mz1:shop:t:c:product_detail:id=1");
        assert_eq!(names.generations, "mz1:shop:gen");
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
}

//! The store's Lua scripts. Each runs atomically on the server that owns its keys' slot, and
//! every key it touches carries one hash tag ([`super::names`]): the site's (`{<site>}`,
//! [`MOVE`]) or one bucket's (`{<site>/<b>}`, the others). Each declares in `KEYS` the keys it
//! names up front (a cluster routes a script by its first key); the keys it derives from a
//! tag set's members (entries, marks, tag lists) are in the same bucket, so the same slot.
//!
//! Numbers: generations (unix ms) and fences stay below 2^53, exact in Lua's doubles; they are
//! written back with `%.0f` so Redis stores plain digits.

/// Lua shared by the scripts.
///
/// `now()`: Redis's clock in unix ms. Members are scored with it and entries expire by it, so
/// no node's clock skew can prune a live entry's membership.
///
/// `unlink(list)`: removes the memberships listed in the tag list `list` (JSON
/// `[[tag set, member], …]`) from their sets.
macro_rules! prelude {
    () => {
        r#"
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function unlink(list)
  local old = redis.call('GET', list)
  if not old then return end
  local ok, items = pcall(cjson.decode, old)
  if not ok then return end
  for _, item in ipairs(items) do
    if type(item) == 'table' then redis.call('ZREM', item[1], item[2]) end
  end
end
"#
    };
}

/// A put, plain or fenced, in the entry's bucket. The entry itself is not an argument: the
/// same pipeline `SET`s it to a staging key first, which this script renames into place or
/// deletes. (Redis's Lua hashes every byte of every string argument, about 1.7 ns a byte on
/// the server's one thread: 90 µs for a 50 KB page passed through `ARGV`, 2 µs for `SET`.)
///
/// KEYS: entry, stale mark, tag list, render lock, last fence, staged entry, then the bucket's
/// generation keys of the n tags the entry recorded, then the entry's tag sets. ARGV: ttl ms,
/// tag list JSON, stale_at ("" for none), fence ("" for a plain put), n, the n recorded
/// generations, then the entry's member of each tag set.
///
/// Returns 0 when stored; -1 when superseded (fenced: the lock holds another fence, or a
/// larger one stored); -2 when the staged entry is gone (expired or evicted: nothing stored);
/// else the (1-based) position of the first recorded generation that the bucket's is past (the
/// write is dropped). A fenced put releases its lock when it stores or is dropped. Each tag set
/// loses up to [`super::PRUNE`] (64) members whose entries expired more than a second ago, and
/// lives as long as its longest-lived member.
pub(super) const PUT: &str = concat!(
    prelude!(),
    r#"
local n, fence = tonumber(ARGV[5]), ARGV[4]
local function release()
  if fence ~= '' and redis.call('GET', KEYS[4]) == fence then redis.call('DEL', KEYS[4]) end
end
if fence ~= '' then
  local holder = redis.call('GET', KEYS[4])
  local last = redis.call('GET', KEYS[5])
  if (holder and holder ~= fence) or (last and tonumber(last) > tonumber(fence)) then
    redis.call('DEL', KEYS[6])
    return -1
  end
end
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[6 + i]) or '0') > tonumber(ARGV[5 + i]) then
    redis.call('DEL', KEYS[6])
    release()
    return i
  end
end
if redis.call('EXISTS', KEYS[6]) == 0 then
  release()
  return -2
end
local at = now()
unlink(KEYS[3])
local ttl = tonumber(ARGV[1])
redis.call('RENAME', KEYS[6], KEYS[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[3], ARGV[2], 'PX', ttl)
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl) else redis.call('DEL', KEYS[2]) end
for i = 1, #KEYS - 6 - n do
  local tag = KEYS[6 + n + i]
  redis.call('ZADD', tag, at + ttl, ARGV[5 + n + i])
  local dead = redis.call('ZRANGEBYSCORE', tag, '-inf', at - 1000, 'LIMIT', 0, 64)
  if #dead > 0 then redis.call('ZREM', tag, unpack(dead)) end
  if redis.call('PTTL', tag) < ttl then redis.call('PEXPIRE', tag, ttl) end
end
if fence ~= '' then
  redis.call('SET', KEYS[5], fence, 'PX', ttl)
  release()
end
return 0
"#
);

/// A purge's first call, in the site slot: moves the canonical generation of each of its
/// tags to `max(current + 1, now)`. KEYS: the canonical generation keys. ARGV: their lifetime
/// (ms). Returns the new generations, in the order of KEYS.
pub(super) const MOVE: &str = concat!(
    prelude!(),
    r#"
local at, moved = now(), {}
for i, key in ipairs(KEYS) do
  moved[i] = string.format('%.0f', math.max((tonumber(redis.call('GET', key)) or 0) + 1, at))
  redis.call('SET', key, moved[i], 'PX', ARGV[1])
end
return moved
"#
);

/// One call of a purge's walk of one bucket.
///
/// KEYS: the bucket's generation keys of the purge's m tags, then the bucket's m tag sets, in
/// the same order. ARGV: generation lifetime ms, mode (`hard`/`soft`), now ms (a soft purge's
/// `stale_at`), the bucket's prefix `mz1:{<site>/<b>}:`, the index of the walked set ("" on
/// the first call), the cursor (the last score the previous call reached; "" on the first
/// call), the batch size, then the purge's generation of each tag (what [`MOVE`] returned).
/// Returns {next cursor ("" when the walk is done), entries removed or marked, walked index}.
///
/// The first call raises each of the bucket's generations to at least the purge's (from then
/// on a put of a render that read an older one is dropped here), then picks the smallest set.
/// A call reads the next `batch` members of the walked set in its order (score, then member)
/// after the cursor, plus the rest of the members sharing the last one's score, so that the
/// next call can start strictly after that score: every member that is in the set from the
/// first call to the last lies in exactly one call's range.
///
/// A member `<entry key>|<generation>` whose generation (of the walked tag) is older than the
/// purge's, or empty, is taken if the entry is in every other set of the purge: its tag list
/// lists the walked member and a member of each of them (so an entry whose tags recorded
/// different generations matches too). A hard purge deletes the entry and its mark and removes
/// its members from the purge's sets; a soft one marks the live entry (keeping an earlier
/// mark) and removes the members of an entry that is gone.
pub(super) const WALK: &str = concat!(
    prelude!(),
    r#"
local m, prefix = #KEYS / 2, ARGV[4]
local moved = {}
for i = 1, m do moved[i] = tonumber(ARGV[7 + i]) end
local walked
if ARGV[5] == '' then
  local least
  for i = 1, m do
    local current = tonumber(redis.call('GET', KEYS[i]) or '0')
    redis.call('SET', KEYS[i], string.format('%.0f', math.max(current, moved[i])), 'PX', ARGV[1])
    local size = redis.call('ZCARD', KEYS[m + i])
    if least == nil or size < least then least, walked = size, i end
  end
else
  walked = tonumber(ARGV[5])
end
local generation, set, batch = moved[walked], KEYS[m + walked], tonumber(ARGV[7])
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
local function local_of(key) return string.sub(key, #prefix + 1) end
-- The sets the entry under `key` is in now, each with its member: from its tag list.
local function carried(key)
  local list = redis.call('GET', prefix .. 'k:' .. local_of(key))
  if not list then return nil end
  local ok, items = pcall(cjson.decode, list)
  if not ok then return nil end
  local sets = {}
  for _, item in ipairs(items) do
    if type(item) == 'table' then sets[item[1]] = item[2] end
  end
  return sets
end
-- keys[i]: a taken entry; members[j][i]: its member of the purge's set j.
local keys, members = {}, {}
for j = 1, m do members[j] = {} end
for _, member in ipairs(page) do
  -- `<entry key>|<generation>`: the generation is after the last '|'.
  local bar = #member
  while bar > 0 and string.byte(member, bar) ~= 124 do bar = bar - 1 end
  local key, g = member, ''
  if bar > 0 then key, g = string.sub(member, 1, bar - 1), string.sub(member, bar + 1) end
  if g == '' or tonumber(g) < generation then
    local mine = {}
    mine[walked] = member
    if m > 1 then
      local sets = carried(key)
      if sets == nil or sets[set] ~= member then
        mine = nil
      else
        for j = 1, m do
          if j ~= walked then
            mine[j] = sets[KEYS[m + j]]
            if not mine[j] then mine = nil; break end
          end
        end
      end
    end
    if mine then
      keys[#keys + 1] = key
      for j = 1, m do members[j][#keys] = mine[j] end
    end
  end
end
local function each_part(list, f)
  for i = 1, #list, 500 do f({unpack(list, i, math.min(i + 499, #list))}) end
end
local function drop_members(which)
  for j = 1, m do
    local gone = {}
    for _, i in ipairs(which) do gone[#gone + 1] = members[j][i] end
    each_part(gone, function(part) redis.call('ZREM', KEYS[m + j], unpack(part)) end)
  end
end
local count, all, dead = 0, {}, {}
if ARGV[2] == 'hard' then
  each_part(keys, function(part)
    count = count + redis.call('DEL', unpack(part))
    for i, key in ipairs(part) do part[i] = prefix .. 's:' .. local_of(key) end
    redis.call('DEL', unpack(part))
  end)
  for i = 1, #keys do all[i] = i end
  drop_members(all)
else
  for i, key in ipairs(keys) do
    local ttl = redis.call('PTTL', key)
    if ttl > 0 then
      count = count + 1
      local mark = prefix .. 's:' .. local_of(key)
      local current = redis.call('GET', mark)
      if (not current) or tonumber(current) > tonumber(ARGV[3]) then
        redis.call('SET', mark, ARGV[3], 'PX', ttl)
      end
    else
      dead[#dead + 1] = i
    end
  end
  drop_members(dead)
end
return {next, count, walked}
"#
);

/// KEYS: entry, stale mark, tag list. Removes the entry, its mark and its memberships.
pub(super) const REMOVE: &str = concat!(
    prelude!(),
    r#"
unlink(KEYS[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"#
);

/// Takes a render lock. KEYS: the lock, the bucket's fence counter, the key's last fence.
/// ARGV: ttl ms. Returns {1, fence} when taken, {0, ms left} when another holds it.
///
/// The fence is the counter's next value, and past the key's last fenced write even if the
/// counter was lost (evicted, say): a later holder of a key's lock always holds a larger fence.
pub(super) const LOCK: &str = r#"
local left = redis.call('PTTL', KEYS[1])
if left ~= -2 then return {0, math.max(left, 0)} end
local fence = redis.call('INCR', KEYS[2])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if fence <= last then
  fence = last + 1
  redis.call('SET', KEYS[2], string.format('%.0f', fence))
end
redis.call('SET', KEYS[1], string.format('%.0f', fence), 'PX', ARGV[1])
return {1, fence}
"#;

/// Releases a render lock. KEYS: the lock. ARGV: the fence. Deletes it only if it still holds
/// that fence; returns 1 if it did.
pub(super) const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

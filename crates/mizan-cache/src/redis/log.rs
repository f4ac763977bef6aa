//! The purge log: every purge a Redis store carries out is appended, after its walk has
//! finished, to one stream per site, so that each node's memory tier
//! ([`crate::tiered`]) can apply every purge, from any node or from the origin side,
//! and can tell when it may have missed one.
//!
//! Layout (in the site's own hash slot `{<site>}`): `mz1:{<site>}:seq`, a counter, and
//! `mz1:{<site>}:log`, a stream whose entry ids are `<seq>-1`, each with the fields
//! `c` (context), `p` (the params as JCS) and `m` (`hard` or `soft`).
//!
//! An append is one script, atomic on the server: `INCR` the counter, `XADD` the entry under
//! the id `<seq>-1`, trimming the stream to about [`MAX_LEN`] entries. The numbers are
//! therefore contiguous: a reader that sees `seq` right after `seq - 1` missed nothing in
//! between, and one that sees a jump knows it may have (the stream was trimmed past it, or
//! the log was lost). A counter deleted while its stream was kept would give a number the
//! stream already passed; the script then moves the counter past the stream's last id, so
//! appends never fail for good and the numbers stay contiguous.
//!
//! **A new log starts from the clock.** When neither key exists (a new site, a flushed or
//! restarted Redis, both keys deleted by hand), the log is started by whoever comes first,
//! an append or a reader asking for the head ([`PurgeLog::head`]): the counter is set to
//! Redis's clock in microseconds (`TIME`: seconds × 10⁶ + micros), and the first purge is
//! numbered one past it. A log lost and started again therefore numbers its purges past
//! every number the lost one reached (as long as Redis's clock does not go back), however
//! many purges either holds: a reader that followed the lost log always sees a jump, never
//! a number that seems to follow its last one. And a reader that starts on a log nobody has
//! started yet starts it, so the first purge is one past the head it read, not a jump.
//!
//! A reader ([`PurgeLog`]) has a connection of its own: its blocking `XREAD` would hold up
//! every call sharing the store's multiplexed connection. Its reads block for at most
//! [`MAX_BLOCK`], inside the connection's response timeout.

use super::conn::TIMEOUT;
use super::{Conn, unavailable};
use crate::key::jcs;
use crate::{CacheError, PurgeMode};
use redis::{Cmd, FromRedisValue, Script, Value as Reply};
use serde_json::{Map, Value};
use std::sync::LazyLock;
use std::time::Duration;

/// About how many purges the stream keeps (`XADD … MAXLEN ~`): a reader that falls further
/// behind than this sees a gap.
pub const MAX_LEN: u64 = 100_000;

/// The longest a [`PurgeLog::read`] waits for a purge: well within the response timeout of
/// a [`Conn`] (2 s), which a blocked read must answer inside.
pub const MAX_BLOCK: Duration = Duration::from_secs(1);

/// Most purges one [`PurgeLog::read`] returns.
pub const READ_COUNT: usize = 1000;

/// Lua, for scripts whose `KEYS[1]` is the counter: `start()` begins a new log, setting the
/// counter to Redis's clock in microseconds (seconds × 10⁶ + micros: about 1.8 × 10¹⁵, exact
/// in a Lua number below 2⁵³) and returning it. Called only when neither the counter nor the
/// stream exists, so a new log's numbers start past any an earlier log reached.
const START: &str = r#"
local function start()
  local now = redis.call('TIME')
  local seed = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', KEYS[1], string.format('%.0f', seed))
  return seed
end
"#;

/// KEYS: the counter, the stream. ARGV: context, params (JCS), mode, max length. Returns the
/// purge's sequence number.
const APPEND: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then start() end
local seq = redis.call('INCR', KEYS[1])
local function add(n)
  return redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], string.format('%.0f', n) .. '-1',
    'c', ARGV[1], 'p', ARGV[2], 'm', ARGV[3])
end
local added = add(seq)
if type(added) == 'table' and added.err then
  -- The counter is behind the stream (it was deleted, the stream kept): move it past the
  -- stream's last id. Any other failure is the caller's.
  if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('TYPE', KEYS[2]).ok ~= 'stream' then
    return redis.error_reply(added.err)
  end
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  local top
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then top = tonumber(string.match(info[i + 1], '^(%d+)%-')) end
  end
  if top == nil or top < seq then return redis.error_reply(added.err) end
  seq = top + 1
  redis.call('SET', KEYS[1], string.format('%.0f', seq))
  added = add(seq)
  if type(added) == 'table' and added.err then return redis.error_reply(added.err) end
end
return seq
"#;

/// KEYS: the counter, the stream. Returns the log's head: the larger of the counter and the
/// number of the stream's last id (its `last-generated-id`, which outlives a deleted entry);
/// a log with neither key is started (`start()`) and its head is the seed.
const HEAD: &str = r#"
local counter = redis.call('GET', KEYS[1])
local top
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then top = tonumber(string.match(info[i + 1], '^(%d+)%-')) end
  end
  if top == nil then return redis.error_reply('the stream has no last-generated-id') end
end
if not counter and not top then return start() end
local seq = tonumber(counter or '0')
if seq == nil then return redis.error_reply('the counter is not a number') end
return math.max(seq, top or 0)
"#;

static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{START}{APPEND}")));

static HEAD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{START}{HEAD}")));

/// One purge as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedPurge {
    /// Its place in the log: one more than the purge logged before it.
    pub seq: u64,
    /// The purged context.
    pub context: String,
    /// Its params (a subset match; empty for the whole context).
    pub params: Map<String, Value>,
    /// Hard or soft.
    pub mode: PurgeMode,
}

/// The counter's key: `mz1:{<site>}:seq`.
fn seq_key(site: &str) -> String {
    format!("mz1:{{{site}}}:seq")
}

/// The stream's key: `mz1:{<site>}:log`.
fn log_key(site: &str) -> String {
    format!("mz1:{{{site}}}:log")
}

/// Appends a purge to `site`'s log; returns its sequence number.
pub(super) async fn append(
    conn: &mut Conn,
    site: &str,
    context: &str,
    params: &Map<String, Value>,
    mode: PurgeMode,
) -> Result<u64, CacheError> {
    let mode = match mode {
        PurgeMode::Hard => "hard",
        PurgeMode::Soft => "soft",
    };
    let params = jcs(&Value::Object(params.clone()));
    let mut invocation = APPEND_SCRIPT.key(seq_key(site));
    invocation.key(log_key(site)).arg(context).arg(params).arg(mode).arg(MAX_LEN);
    invocation.invoke_async(conn).await.map_err(unavailable)
}

/// A reader of one site's purge log, on a connection of its own. Dropping it closes the
/// connection.
pub struct PurgeLog {
    conn: Conn,
    /// `mz1:{<site>}:seq`.
    seq: String,
    /// `mz1:{<site>}:log`.
    log: String,
}

impl super::RedisStore {
    /// Opens a reader of this store's purge log on a new connection to the store's URL (one
    /// server, a cluster, which routes the reader's commands by their key, or a Sentinel
    /// service's master). Fails if Redis cannot be reached now.
    pub async fn purge_log(&self) -> Result<PurgeLog, CacheError> {
        let conn = Conn::open(self.url()).await?;
        Ok(PurgeLog { conn, seq: seq_key(self.site()), log: log_key(self.site()) })
    }
}

impl PurgeLog {
    /// Sends `cmd`, failing with `Unavailable` if no answer comes within `within` (the
    /// connection's own response timeout applies too).
    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd, within: Duration) -> Result<T, CacheError> {
        let call = cmd.query_async(&mut self.conn);
        tokio::time::timeout(within, call).await.map_err(|_| unavailable("no answer in time"))?.map_err(unavailable)
    }

    /// The log's head: the sequence number of the last purge logged (or handed out). A log
    /// that does not exist (neither key) is started here, from Redis's clock as an append
    /// would start it, so a reader always follows a log that exists: the first purge appended
    /// to it is then one past this head, and a log lost and started again under a reader is a
    /// jump. The stream's last id is read, not its last entry, so that a reader whose read
    /// failed on a malformed last entry can start again after it.
    pub async fn head(&mut self) -> Result<u64, CacheError> {
        let mut invocation = HEAD_SCRIPT.key(&self.seq);
        invocation.key(&self.log);
        let call = invocation.invoke_async(&mut self.conn);
        tokio::time::timeout(TIMEOUT, call).await.map_err(|_| unavailable("no answer in time"))?.map_err(unavailable)
    }

    /// The purges logged after `after`, in order, at most [`READ_COUNT`]; waits up to `block`
    /// (at most [`MAX_BLOCK`]) for one if there are none yet, and is empty once it has passed
    /// (`ZERO`: no wait). A malformed entry fails the read, naming its id.
    pub async fn read(&mut self, after: u64, block: Duration) -> Result<Vec<LoggedPurge>, CacheError> {
        let block = block.min(MAX_BLOCK);
        let mut cmd = redis::cmd("XREAD");
        // BLOCK 0 would wait for ever.
        let block_ms = block.as_millis() as u64;
        if block_ms > 0 {
            cmd.arg("BLOCK").arg(block_ms);
        }
        cmd.arg("COUNT").arg(READ_COUNT).arg("STREAMS").arg(&self.log).arg(format!("{after}-1"));
        let reply: Reply = self.query(&cmd, block + TIMEOUT).await?;
        let streams = match reply {
            Reply::Nil => return Ok(Vec::new()),
            Reply::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect::<Vec<_>>(),
            other => array(other, "XREAD")?
                .into_iter()
                .map(|stream| {
                    let mut parts = array(stream, "XREAD")?.into_iter();
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(_), Some(entries), None) => Ok(entries),
                        _ => Err(malformed("an XREAD reply whose stream is not [key, entries]")),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut purges = Vec::new();
        for entries in streams {
            for entry in array(entries, "XREAD")? {
                purges.push(parse_entry(entry)?);
            }
        }
        Ok(purges)
    }
}

fn malformed(what: impl std::fmt::Display) -> CacheError {
    CacheError::Corrupt { store: "redis", message: format!("purge log: {what}") }
}

/// The items of an array reply (RESP3 sets too).
fn array(reply: Reply, command: &str) -> Result<Vec<Reply>, CacheError> {
    match reply {
        Reply::Array(items) | Reply::Set(items) => Ok(items),
        Reply::Nil => Ok(Vec::new()),
        other => Err(malformed(format!("{command} answered {other:?} where an array belongs"))),
    }
}

fn text(reply: Reply) -> Option<String> {
    match reply {
        Reply::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Reply::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// `[id, fields]` into the id, as text, and the fields.
fn split_entry(entry: Reply) -> Result<(String, Reply), CacheError> {
    let mut parts = array(entry, "a stream entry")?.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("a stream entry that is not [id, fields]"));
    };
    let id = text(id).ok_or_else(|| malformed("a stream entry whose id is not text"))?;
    Ok((id, fields))
}

/// `[id, [field, value, …]]` into a purge: the id is `<seq>-1`, the fields exactly `c`, `p`
/// (a JSON object) and `m` (`hard` or `soft`), each once.
fn parse_entry(entry: Reply) -> Result<LoggedPurge, CacheError> {
    let (id, fields) = split_entry(entry)?;
    let bad = |why: &str| malformed(format!("entry {id}: {why}"));
    let seq = id
        .strip_suffix("-1")
        .and_then(|seq| seq.parse::<u64>().ok())
        .filter(|seq| *seq > 0)
        .ok_or_else(|| bad("its id is not <seq>-1"))?;
    let pairs: Vec<(Reply, Reply)> = match fields {
        Reply::Map(pairs) => pairs,
        fields => {
            let items = array(fields, "a stream entry").map_err(|_| bad("its fields are not a list"))?;
            if items.len() % 2 != 0 {
                return Err(bad("a field without a value"));
            }
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
    };
    let (mut context, mut params, mut mode) = (None, None, None);
    for (name, value) in pairs {
        let name = text(name).ok_or_else(|| bad("a field name that is not text"))?;
        let value = text(value).ok_or_else(|| bad(&format!("field {name} is not UTF-8 text")))?;
        let slot = match name.as_str() {
            "c" => &mut context,
            "p" => &mut params,
            "m" => &mut mode,
            _ => return Err(bad(&format!("unknown field {name:?}"))),
        };
        if slot.replace(value).is_some() {
            return Err(bad(&format!("field {name} twice")));
        }
    }
    let context = context.ok_or_else(|| bad("no field c"))?;
    let params = params.ok_or_else(|| bad("no field p"))?;
    let params = match serde_json::from_str::<Value>(&params) {
        Ok(Value::Object(params)) => params,
        _ => return Err(bad("field p is not a JSON object")),
    };
    let mode = match mode.ok_or_else(|| bad("no field m"))?.as_str() {
        "hard" => PurgeMode::Hard,
        "soft" => PurgeMode::Soft,
        other => return Err(bad(&format!("field m is {other:?}, not hard or soft"))),
    };
    Ok(LoggedPurge { seq, context, params, mode })
}

#[cfg(test)]
mod tests;

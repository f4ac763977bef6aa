//! A purge on Redis: one call in the site slot that moves the canonical generations, then one
//! walk per bucket, all at once, then the purge log. All of it on a task of its own, so that
//! once the generations have moved, the walks finish even if the caller stops waiting.
//!
//! Why a purge that spans slots, with no transaction across them, still leaves nothing stale
//! and drops only what it must: the module doc of [`super`] and docs/protocol.md, "Backends".

use super::names::BUCKETS;
use super::{Conn, RedisStore, log, unavailable};
use crate::CacheError;
use crate::meta::purge_tags;
use crate::store::{GENERATION_TTL_MS, PurgeMode, now_ms};
use redis::Script;
use serde_json::{Map, Value};

/// Where a purge may stop in a test ([`crate::store::PauseHook`]), each armed on its
/// own.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Hooks {
    /// Once the canonical generations moved, before any bucket is walked.
    pub(super) moved: crate::store::PauseHook,
    /// In a walk, between its first batch and the next.
    pub(super) batches: crate::store::PauseHook,
}

/// The test hooks.
#[cfg(test)]
pub(super) type Hook = std::sync::Arc<Hooks>;

/// No hooks outside tests.
#[cfg(not(test))]
#[derive(Clone, Default)]
pub(super) struct Hook;

/// What a purge that stopped at a hook holds until it is over.
#[cfg(test)]
type Held = Option<crate::store::Done>;

/// Nothing, outside tests.
#[cfg(not(test))]
type Held = Option<std::convert::Infallible>;

#[cfg(test)]
async fn pause(hook: &Hook, moved: bool) -> Held {
    Some(if moved { hook.moved.pause().await } else { hook.batches.pause().await })
}

#[cfg(not(test))]
async fn pause(_hook: &Hook, _moved: bool) -> Held {
    None
}

/// The script calls that walk one bucket.
struct Walk {
    conn: Conn,
    script: Script,
    /// The bucket's generation keys of the purge's tags, then its tag sets.
    keys: Vec<String>,
    /// Generation lifetime, mode, now, the bucket's prefix.
    args: Vec<String>,
    batch: usize,
}

impl Walk {
    /// One call: `walked` and `cursor` empty on the first. Returns the next cursor, how many
    /// entries it took, and which set it walks.
    async fn call(&mut self, moved: &[u64], walked: &str, cursor: &str) -> Result<(String, u64, u64), CacheError> {
        let mut invocation = self.script.key(&self.keys);
        invocation.arg(&self.args).arg(walked).arg(cursor).arg(self.batch).arg(moved);
        invocation.invoke_async(&mut self.conn).await.map_err(unavailable)
    }

    /// The whole walk, with the purge's generations `moved`: how many entries it took.
    async fn run(mut self, moved: &[u64], hook: &Hook) -> Result<(u64, Held), CacheError> {
        let (mut cursor, mut count, walked) = self.call(moved, "", "").await?;
        let held = if cursor.is_empty() { None } else { pause(hook, false).await };
        let walked = walked.to_string();
        while !cursor.is_empty() {
            let (next, taken, _) = self.call(moved, &walked, &cursor).await?;
            (cursor, count) = (next, count + taken);
        }
        Ok((count, held))
    }
}

impl RedisStore {
    /// [`crate::Store::purge`]: moves the canonical generations, walks every bucket,
    /// logs the purge.
    pub(super) async fn purge_all(
        &self,
        context: &str,
        params: &Map<String, Value>,
        mode: PurgeMode,
    ) -> Result<u64, CacheError> {
        let tags = purge_tags(context, params);
        let canonical: Vec<String> = tags.iter().map(|t| self.names.generation(t)).collect();
        let (mode_name, now) = (if mode == PurgeMode::Hard { "hard" } else { "soft" }, now_ms());
        let walks: Vec<Walk> = (0..BUCKETS)
            .map(|b| Walk {
                conn: self.conn.clone(),
                script: self.walk.clone(),
                keys: (tags.iter().map(|t| self.names.bucket_generation(b, t)))
                    .chain(tags.iter().map(|t| self.names.tag(b, t)))
                    .collect(),
                args: vec![
                    GENERATION_TTL_MS.to_string(),
                    mode_name.to_string(),
                    now.to_string(),
                    self.names.prefix(b).to_string(),
                ],
                batch: self.batch,
            })
            .collect();
        let (mut conn, first, hook) = (self.conn.clone(), self.moves.clone(), self.pause.clone());
        let (site, context, params) = (self.site.clone(), context.to_string(), params.clone());
        let task = tokio::spawn(async move {
            let mut invocation = first.key(&canonical);
            invocation.arg(GENERATION_TTL_MS);
            let moved: Vec<u64> = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
            if moved.len() != canonical.len() {
                return Err(unavailable(format!("{} generations moved for {} tags", moved.len(), canonical.len())));
            }
            let stopped = pause(&hook, true).await;
            // Every bucket is walked, even if another's walk fails: the generations have moved,
            // and each bucket walked is one a retry has less to do in.
            let walked = futures_util::future::join_all(walks.into_iter().map(|w| w.run(&moved, &hook))).await;
            let (mut count, mut held) = (0, vec![stopped]);
            for walk in walked {
                let (taken, stopped) = walk?;
                count += taken;
                held.push(stopped);
            }
            // Logged once every walk is over: a memory tier that applies it then can no longer
            // fetch an entry the purge takes.
            log::append(&mut conn, &site, &context, &params, mode).await?;
            drop(held);
            Ok(count)
        });
        task.await.map_err(unavailable)?
    }
}

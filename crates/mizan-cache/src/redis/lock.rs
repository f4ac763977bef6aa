//! Render locks across nodes: `mz1:{<site>/<b>}:l:<k>` holds the fence of the render that
//! holds page `<k>`'s lock, with the lock's time as its `PX`. A fence is the next value of the
//! bucket's counter `mz1:{<site>/<b>}:f` (and past the key's last fenced write,
//! `mz1:{<site>/<b>}:w:<k>`, should the counter be lost), so a later holder of a key's lock
//! always holds a larger fence than an earlier one.
//!
//! A holder whose render outlived its lock may still try to store: its fenced put
//! ([`crate::Store::put_fenced`], the put script with the fence) is dropped as
//! superseded if the lock now holds another fence or a larger fence has stored since, so an
//! expired holder never writes over a newer render; if nobody took the lock meanwhile, it
//! stores. A stored fenced put records its fence in `w:<k>` (with the entry's lifetime) and
//! releases its lock.

use super::names::bucket;
use super::{RedisStore, unavailable};
use crate::CacheError;
use crate::store::{Fence, LockOutcome};

impl RedisStore {
    /// [`crate::Store::lock`]: one script in the key's bucket.
    pub(super) async fn take_lock(&self, key: &str, ttl_ms: u64) -> Result<LockOutcome, CacheError> {
        let mut invocation = self.lock.key(self.names.lock(key));
        invocation.key(self.names.fence_counter(bucket(key))).key(self.names.written(key)).arg(ttl_ms.max(1));
        let mut conn = self.conn.clone();
        let (taken, value): (u64, u64) = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if taken == 1 { LockOutcome::Acquired(value) } else { LockOutcome::Held { ttl_ms: value } })
    }

    /// [`crate::Store::unlock`]: deletes the lock if it still holds `fence`.
    pub(super) async fn release_lock(&self, key: &str, fence: Fence) -> Result<(), CacheError> {
        let mut invocation = self.unlock.key(self.names.lock(key));
        invocation.arg(fence);
        let mut conn = self.conn.clone();
        invocation.invoke_async::<u64>(&mut conn).await.map(drop).map_err(unavailable)
    }
}

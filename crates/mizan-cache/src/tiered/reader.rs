//! The tier's reader task: follows the purge log, applies each purge to memory in order,
//! resets memory on a gap, and on an error resets, reconnects with backoff and resets again.

use super::{BLOCK, Shared};
use crate::CacheError;
use crate::redis::RedisStore;
use crate::redis::log::PurgeLog;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// First wait before the reader reconnects after an error; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest wait between two reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A reader of `redis`'s purge log and the log's head.
pub(super) async fn open(redis: &RedisStore) -> Result<(PurgeLog, u64), CacheError> {
    let mut log = redis.purge_log().await?;
    let head = log.head().await?;
    Ok((log, head))
}

impl Shared {
    /// The reader: follows the log from `last` until an error, then resets, reconnects and
    /// follows again, for as long as the store lives (the task is aborted on drop).
    pub(super) async fn run(self: Arc<Self>, mut log: PurgeLog, mut last: u64) {
        loop {
            let error = self.follow(&mut log, &mut last).await;
            self.connected.store(false, Ordering::SeqCst);
            self.reset();
            self.resets_error.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = "tiered", site = self.redis.site(), %error,
                "purge log reader failed: memory tier off and emptied until it reconnects"
            );
            let (mut backoff, mut attempts) = (BACKOFF_MIN, 1);
            let (attempts, reopened) = loop {
                tokio::time::sleep(backoff).await;
                match open(&self.redis).await {
                    Ok(reopened) => break (attempts, reopened),
                    // Not logged again: the outage was, once.
                    Err(_) => {
                        attempts += 1;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            };
            (log, last) = reopened;
            // Whatever went into memory while no reader watched the log goes, and inserts
            // of gets begun before this point are refused.
            self.reset();
            self.last_seq.store(last, Ordering::Relaxed);
            self.confirm();
            self.connected.store(true, Ordering::SeqCst);
            tracing::info!(
                store = "tiered",
                site = self.redis.site(),
                head = last,
                attempts,
                "purge log reader reconnected"
            );
        }
    }

    /// Reads and applies purges until a read fails; returns its error.
    async fn follow(&self, log: &mut PurgeLog, last: &mut u64) -> CacheError {
        // `ZERO` right after an empty read found the head past `last`: read again at once.
        let mut block = BLOCK;
        loop {
            let purges = match log.read(*last, block).await {
                Ok(purges) => purges,
                Err(error) => return error,
            };
            self.confirm();
            if purges.is_empty() {
                // Nothing after `last`: the head should be `last`. Behind it, the log went
                // back (the counter was set back by hand). Ahead of it, either purges were
                // logged since the read (the read again at once returns them) or the log was
                // lost and started again under the reader (that read is empty too, or starts
                // with a jump): purges up to the head may have been missed.
                let head = match log.head().await {
                    Ok(head) => head,
                    Err(error) => return error,
                };
                if head < *last || (head > *last && block.is_zero()) {
                    self.gap(*last + 1, head);
                    *last = head;
                    self.last_seq.store(head, Ordering::Relaxed);
                }
                block = if head > *last { Duration::ZERO } else { BLOCK };
                continue;
            }
            block = BLOCK;
            for purge in purges {
                if purge.seq != *last + 1 {
                    self.gap(*last + 1, purge.seq);
                } else if let Err(error) = self.apply(&purge.context, &purge.params, purge.mode).await {
                    return error;
                } else {
                    self.purges_applied.fetch_add(1, Ordering::Relaxed);
                }
                *last = purge.seq;
                self.last_seq.store(purge.seq, Ordering::Relaxed);
            }
        }
    }

    /// The log jumped from `expected` to `got`: purges may have been missed.
    fn gap(&self, expected: u64, got: u64) {
        self.reset();
        self.resets_gap.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(store = "tiered", site = self.redis.site(), expected, got, "purge log gap: memory tier emptied");
    }
}

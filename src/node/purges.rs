//! Purges that must not be lost. When the origin says data changed (`X-Mizan-Invalidate`)
//! and the store cannot take the purge, the purge is kept and retried in the background until
//! it lands; meanwhile every page and data entry that depends on one of its contexts is
//! served fresh, never from the cache, on this node.

use crate::cache::invalidate::Invalidation;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The longest wait between two retries: also how long, at most, after a shared Redis comes
/// back, the other nodes may serve a page this node's pending purge will take (they cannot
/// know of it). A retry against a Redis that is down costs one refused connection.
pub const MAX_RETRY: Duration = Duration::from_secs(1);

/// Purges waiting to land, and the contexts they make unsafe to serve from the cache.
#[derive(Default)]
pub struct PendingPurges {
    purges: Mutex<Vec<Invalidation>>,
    /// Pending purges per context.
    contexts: Mutex<HashMap<String, usize>>,
    /// How many purges are pending: the hit path reads only this while it is 0.
    count: AtomicUsize,
    /// Wakes the retry task.
    pub(crate) wake: tokio::sync::Notify,
}

impl std::fmt::Debug for PendingPurges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPurges").field("count", &self.len()).finish()
    }
}

impl PendingPurges {
    /// Keeps `purge` until it lands.
    pub fn defer(&self, purge: Invalidation) {
        *self.contexts.lock().unwrap_or_else(|e| e.into_inner()).entry(purge.context.clone()).or_insert(0) += 1;
        self.purges.lock().unwrap_or_else(|e| e.into_inner()).push(purge);
        self.count.fetch_add(1, Ordering::Release);
        self.wake.notify_one();
    }

    /// Takes every pending purge, to retry them; each is given back with [`Self::defer`] if it
    /// fails again, or forgotten with [`Self::landed`] once it lands.
    pub(crate) fn take(&self) -> Vec<Invalidation> {
        std::mem::take(&mut *self.purges.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A retried purge landed: its context may be served from the cache again once no other
    /// purge of it is pending.
    pub(crate) fn landed(&self, purge: &Invalidation) {
        let mut contexts = self.contexts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = contexts.get_mut(&purge.context) {
            *n -= 1;
            if *n == 0 {
                contexts.remove(&purge.context);
            }
        }
        self.count.fetch_sub(1, Ordering::Release);
    }

    /// A purge taken for a retry that failed again: back in the list (its context stays
    /// unsafe all along, so it is not counted twice).
    pub(crate) fn retry_later(&self, purge: Invalidation) {
        self.purges.lock().unwrap_or_else(|e| e.into_inner()).push(purge);
    }

    /// Purges pending now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any of `contexts` has a purge pending: its cached entries must not be served.
    pub fn blocks<'a>(&self, mut contexts: impl Iterator<Item = &'a str>) -> bool {
        if self.is_empty() {
            return false;
        }
        let pending = self.contexts.lock().unwrap_or_else(|e| e.into_inner());
        contexts.any(|c| pending.contains_key(c))
    }
}

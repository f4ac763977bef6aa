//! The request-target memo: raw request target -> where it goes ([`super::page::Target`]), so a
//! repeated URL skips normalisation, routing and key derivation on the hit path.
//!
//! Bounded in bytes, not entries: a visitor controls the raw target (`/./././…/about` is a
//! new one every time), so each entry is weighed by what it holds. Past the budget the memo
//! starts over; it needs no recency bookkeeping, and a lock-free map keeps the hit path free
//! of contention.

use super::page::Target;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What an entry costs beyond its strings: the map slot, the `Arc`, the route match's maps.
const ENTRY_OVERHEAD: usize = 512;

/// A byte-bounded, lock-free memo of request targets.
pub struct TargetMemo {
    map: papaya::HashMap<String, Arc<Target>, foldhash::quality::RandomState>,
    bytes: AtomicUsize,
    budget: usize,
}

impl TargetMemo {
    /// A memo that holds at most about `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self { map: papaya::HashMap::with_hasher(Default::default()), bytes: AtomicUsize::new(0), budget }
    }

    /// The memoised target of `raw`.
    pub fn get(&self, raw: &str) -> Option<Arc<Target>> {
        self.map.pin().get(raw).cloned()
    }

    /// Remembers `target` for `raw`; past the budget, forgets everything first.
    pub fn insert(&self, raw: &str, target: Arc<Target>) {
        let cost = raw.len() + target.weight() + ENTRY_OVERHEAD;
        if cost > self.budget {
            return;
        }
        let map = self.map.pin();
        if self.bytes.fetch_add(cost, Ordering::Relaxed) + cost > self.budget {
            // Hostile or endless URLs cannot grow it: start over. Concurrent inserts may be
            // counted or not around the reset; the bound holds to within one entry per thread.
            map.clear();
            self.bytes.store(cost, Ordering::Relaxed);
        }
        map.insert(raw.to_string(), target);
    }

    /// Bytes the memo accounts for now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Its bound in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Targets held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

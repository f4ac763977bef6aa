//! One render per miss across nodes: a flight's leader asks the store for the page's render
//! lock before it reads generations or fetches anything ([`Node::claim_or_answer`]). Local
//! coalescing comes first, so a node asks once per key, not once per request.
//!
//! - **Acquired**: unless the page landed in the store meanwhile (another node stored it and
//!   released the lock between this node's miss and its lock: one more look), this node
//!   renders and stores with `put_fenced`, which releases the lock; on every other end (not
//!   storable, render error, panic, the client gone) the [`LockGuard`] releases it when
//!   dropped.
//! - **Held**: another node renders it. The flight polls the store for the page (2 ms,
//!   doubling to 50 ms, never past the lock's remaining time) and answers with it as a hit.
//!   If the lock expires without a page (its holder died or hung) the flight takes it and
//!   renders. If it is released without a page (the holder's render failed, or its page may
//!   not be stored), the flight serves its stale page when it has one within stale-if-error
//!   (another render would most likely fail too), else renders, with the lock if it gets it,
//!   without if another node did (no second round of waiting). It never waits past its own
//!   deadline (the longest its own render could take: origin timeout plus render timeout): it
//!   then renders without the lock (fail open).
//! - **Unsupported** (memory, SQLite) or a store error: it renders, as without locks (an error
//!   is counted).
//!
//! A background revalidation (stale-while-revalidate) takes the lock too but never waits: if
//! another node holds it, that node revalidates and this one keeps serving its stale page.
//! A streaming flight takes it like a buffered one; one that finds it held cannot stream the
//! other node's render, and serves the whole page from the store once it lands.

use super::Node;
use super::page::{Flown, Provenance, Target};
use crate::cache::{Entry, Fence, Freshness, LockOutcome, Store};
use crate::metrics::{LockAnswer, WaitEnd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// First pause between two looks at the store while another node renders.
const FIRST_POLL: Duration = Duration::from_millis(2);

/// Longest pause between two looks.
const MAX_POLL: Duration = Duration::from_millis(50);

/// A lock that ended this close to the end of the time its holder had (or later) expired;
/// earlier, its holder released it without storing a page.
const EXPIRY_SLACK: Duration = Duration::from_millis(25);

/// A lock whose end moved later than this had changed hands (a holder's own lock only runs
/// down); smaller moves are the jitter of two reads of its time.
const HANDOVER_SLACK: Duration = Duration::from_millis(50);

/// How render locks are used: how long one is held, how long a flight waits for another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLock {
    /// The lock's time to live: a holder that dies frees it after this long.
    pub ttl_ms: u64,
    /// Longest a flight waits for another node's render before it renders itself.
    pub wait: Duration,
}

/// What a flight has to serve instead of rendering, if it cannot have the page.
pub(super) enum Keep {
    /// Nothing: a miss.
    Nothing,
    /// A miss with a page within its stale-if-error time: served if another node's render of
    /// the page ends without a page (it failed, or its page may not be stored).
    OnError(Arc<Entry>),
    /// A background revalidation of this stale page: skipped if another node runs one.
    Revalidating(Arc<Entry>),
}

impl Keep {
    /// The page to keep, if any.
    pub(super) fn page(self) -> Option<Arc<Entry>> {
        match self {
            Keep::Nothing => None,
            Keep::OnError(page) | Keep::Revalidating(page) => Some(page),
        }
    }
}

/// What the store said, and what the flight does about it.
enum Claim {
    /// Render; with the lock held when there is one.
    Render(Option<LockGuard>),
    /// Another node rendered the page meanwhile: serve it.
    Serve(Arc<Entry>),
    /// Serve the page the flight keeps ([`Keep`]) instead.
    Skip,
}

/// A flight waiting for another node's render.
struct Wait<'a> {
    target: &'a Target,
    lock: RenderLock,
    started: Instant,
    /// The stale page it serves if the render ends without a page (and the store still holds it).
    stale: Option<&'a Entry>,
}

/// Counters of the render locks since start, reported by `/_mizan/health` (`store_locks`).
#[derive(Debug, Default)]
pub struct LockStats {
    /// Flights that got the lock at once.
    pub acquired: AtomicU64,
    /// Flights that got it at once and found the page stored meanwhile by another node (which
    /// had just released it): served, not rendered.
    pub found_stored: AtomicU64,
    /// Flights that found it held and waited.
    pub waited: AtomicU64,
    /// Waits that ended with the other node's page, served from the store.
    pub waited_and_served: AtomicU64,
    /// Waits that ended with the lock expired (its holder died or hung): this node rendered.
    pub took_over_after_expiry: AtomicU64,
    /// Waits that ended with the lock released without a page (the holder's render failed or
    /// may not be stored): this node rendered.
    pub took_over_after_release: AtomicU64,
    /// Waits that ended with the lock released without a page, the flight having a page within
    /// its stale-if-error time: that page was served.
    pub stale_after_release: AtomicU64,
    /// Waits that reached the flight's deadline: this node rendered without the lock.
    pub rendered_after_deadline: AtomicU64,
    /// Revalidations skipped because another node was running one.
    pub revalidations_skipped: AtomicU64,
    /// Fenced writes dropped because the lock had passed to a later render.
    pub superseded_writes: AtomicU64,
    /// Lock calls that failed; the node rendered without the lock.
    pub errors: AtomicU64,
}

impl LockStats {
    /// The counters as `/_mizan/health` shows them.
    pub fn report(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "acquired": n(&self.acquired),
            "found_stored": n(&self.found_stored),
            "waited": n(&self.waited),
            "waited_and_served": n(&self.waited_and_served),
            "took_over_after_expiry": n(&self.took_over_after_expiry),
            "took_over_after_release": n(&self.took_over_after_release),
            "stale_after_release": n(&self.stale_after_release),
            "rendered_after_deadline": n(&self.rendered_after_deadline),
            "revalidations_skipped": n(&self.revalidations_skipped),
            "superseded_writes": n(&self.superseded_writes),
            "errors": n(&self.errors),
        })
    }
}

/// A render lock this node holds. Dropped while armed (the render failed, its page may not be
/// stored, the flight panicked), it releases the lock from a task of its own.
pub(super) struct LockGuard {
    store: Arc<dyn Store>,
    key: String,
    fence: Fence,
    armed: bool,
}

impl LockGuard {
    /// The lock's fencing token, for `put_fenced`.
    pub(super) fn fence(&self) -> Fence {
        self.fence
    }

    /// The store released it (a fenced write answered): nothing is left to release.
    pub(super) fn released(mut self) {
        self.armed = false;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Without a runtime (the process is ending) the lock simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, fence) = (self.store.clone(), std::mem::take(&mut self.key), self.fence);
            runtime.spawn(async move {
                if let Err(error) = store.unlock(&key, fence).await {
                    tracing::warn!(%key, %error, "a render lock could not be released; it expires by itself");
                }
            });
        }
    }
}

impl Node {
    /// What a flight does first: `Ok` to render (holding the page's render lock when there is
    /// one), or `Err` with its answer instead: the page another node rendered, or the stale
    /// page `keep` offers.
    pub(super) async fn claim_or_answer(&self, target: &Target, keep: Keep) -> Result<Option<LockGuard>, Flown> {
        match self.claim(target, &keep).await {
            Claim::Render(lock) => Ok(lock),
            Claim::Serve(page) => Err(Flown::from_store(page, Provenance::Awaited)),
            Claim::Skip => keep.page().map_or(Ok(None), |page| Err(Flown::from_store(page, Provenance::Kept))),
        }
    }

    /// Asks for the render lock of `target`'s page and decides what the flight does: render
    /// (holding it, or without one), serve the page another node rendered, or keep the page
    /// `keep` offers.
    async fn claim(&self, target: &Target, keep: &Keep) -> Claim {
        let Some(lock) = self.render_lock else { return Claim::Render(None) };
        let started = Instant::now();
        let stats = &self.stats.locks;
        match self.store.lock(&target.key, lock.ttl_ms).await {
            Ok(LockOutcome::Acquired(fence)) => {
                stats.acquired.fetch_add(1, Ordering::Relaxed);
                self.metrics.locks.answered(LockAnswer::Acquired);
                let guard = self.guard(target, fence);
                // Another node may have stored the page, and released its lock, between this
                // node's miss and this lock: one more look saves rendering it again.
                match self.usable(target).await {
                    Some(page) => {
                        stats.found_stored.fetch_add(1, Ordering::Relaxed);
                        Claim::Serve(page)
                    }
                    None => Claim::Render(Some(guard)),
                }
            }
            Ok(LockOutcome::Unsupported) => {
                self.metrics.locks.answered(LockAnswer::Unsupported);
                Claim::Render(None)
            }
            Err(error) => {
                self.lock_failed(&error);
                self.metrics.locks.answered(LockAnswer::Error);
                Claim::Render(None)
            }
            Ok(LockOutcome::Held { .. }) if matches!(keep, Keep::Revalidating(_)) => {
                self.metrics.locks.answered(LockAnswer::Held);
                stats.revalidations_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key = %target.key, "another node revalidates this page; the stale page stays");
                Claim::Skip
            }
            Ok(LockOutcome::Held { ttl_ms }) => {
                self.metrics.locks.answered(LockAnswer::Held);
                stats.waited.fetch_add(1, Ordering::Relaxed);
                let wait = Wait {
                    target,
                    lock,
                    started,
                    stale: match keep {
                        Keep::OnError(page) => Some(&**page),
                        _ => None,
                    },
                };
                let (claim, end) = self.wait_for_render(wait, ttl_ms).await;
                self.metrics.locks.waited(end, started.elapsed());
                claim
            }
        }
    }

    /// Waits while another node renders the page: its page, once stored; if the lock ends
    /// without one, the lock (or, when another node took it first, a render without it, or the
    /// stale page when there is one: the page cannot be had from the store this time); at the
    /// flight's deadline, a render without the lock.
    async fn wait_for_render(&self, wait: Wait<'_>, ttl_ms: u64) -> (Claim, WaitEnd) {
        let (stats, target) = (&self.stats.locks, wait.target);
        let deadline = wait.started + wait.lock.wait;
        let mut expires = Instant::now() + Duration::from_millis(ttl_ms);
        let mut pause = FIRST_POLL;
        loop {
            let now = Instant::now();
            if now >= deadline {
                stats.rendered_after_deadline.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %target.key, waited_ms = wait.started.elapsed().as_millis() as u64,
                    "another node's render of this page is taking too long; rendering it here too");
                return (Claim::Render(None), WaitEnd::RenderedAfterDeadline);
            }
            let remaining = expires.saturating_duration_since(now).min(deadline - now);
            tokio::time::sleep(pause.min(remaining).max(Duration::from_millis(1))).await;
            pause = (pause * 2).min(MAX_POLL);
            // Both looks are bounded by the deadline: a stalled Redis must not keep the flight
            // waiting past it (each call alone may take the connection's whole timeout).
            let at = tokio::time::Instant::from_std(deadline);
            if let Ok(Some(page)) = tokio::time::timeout_at(at, self.usable(target)).await {
                stats.waited_and_served.fetch_add(1, Ordering::Relaxed);
                return (Claim::Serve(page), WaitEnd::Served);
            }
            // Timed from before the call: a slow answer must not make an expired lock look
            // released early.
            let now = Instant::now();
            let Ok(answer) = tokio::time::timeout_at(at, self.store.lock(&target.key, wait.lock.ttl_ms)).await else {
                continue; // the deadline passed: the loop's first check renders
            };
            // The lock ended before its time ran out, without a page: its holder's render failed
            // or made a page that may not be stored; this node's would most likely too.
            let released = now + EXPIRY_SLACK < expires;
            match answer {
                Ok(LockOutcome::Held { ttl_ms }) => {
                    let next = now + Duration::from_millis(ttl_ms);
                    let handed_over = next > expires + HANDOVER_SLACK;
                    expires = next;
                    if handed_over && released {
                        // A lock taken only for a moment (another node's look after a page
                        // landed) also looks like a handover: the page may be there now.
                        if let Some(page) = self.usable(target).await {
                            stats.waited_and_served.fetch_add(1, Ordering::Relaxed);
                            return (Claim::Serve(page), WaitEnd::Served);
                        }
                        return self.after_release(target, None, wait.stale).await;
                    }
                    // Same holder, or a new one after the last expired (its holder died): wait
                    // for it.
                }
                Ok(LockOutcome::Acquired(fence)) => {
                    let guard = self.guard(target, fence);
                    // Its holder may have stored the page and released the lock between the two
                    // looks: serve it rather than render it again.
                    if let Some(page) = self.usable(target).await {
                        stats.waited_and_served.fetch_add(1, Ordering::Relaxed);
                        return (Claim::Serve(page), WaitEnd::Served);
                    }
                    if released {
                        return self.after_release(target, Some(guard), wait.stale).await;
                    }
                    stats.took_over_after_expiry.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(key = %target.key, "the render lock expired without a page; rendering it here");
                    return (Claim::Render(Some(guard)), WaitEnd::TookOver);
                }
                Ok(LockOutcome::Unsupported) => return (Claim::Render(None), WaitEnd::TookOver),
                Err(error) => {
                    self.lock_failed(&error);
                    return (Claim::Render(None), WaitEnd::Error);
                }
            }
        }
    }

    /// The lock was released without a page: the stale page when the flight has one (another
    /// render would most likely fail as the holder's did), else a render, holding the lock if
    /// this node got it (no waiting for a second holder).
    ///
    /// The stale page is served only if the store still holds it as it was and no purge of its
    /// contexts is pending: a fenced write dropped by a purge also releases the lock without a
    /// page, and the purged page must not be served then.
    async fn after_release(
        &self,
        target: &Target,
        guard: Option<LockGuard>,
        stale: Option<&Entry>,
    ) -> (Claim, WaitEnd) {
        let stats = &self.stats.locks;
        if let Some(kept) = stale
            && self.still_stored(target, kept).await
        {
            stats.stale_after_release.fetch_add(1, Ordering::Relaxed);
            tracing::info!(key = %target.key, "the render lock was released without a page; serving the stale page");
            return (Claim::Skip, WaitEnd::Stale);
        }
        stats.took_over_after_release.fetch_add(1, Ordering::Relaxed);
        tracing::info!(key = %target.key, locked = guard.is_some(), "the render lock was released without a page; rendering it here");
        (Claim::Render(guard), WaitEnd::TookOver)
    }

    /// Whether the store still holds `kept` under `target`'s key as it was (not purged, marked
    /// or replaced since) and no purge of its contexts is pending.
    async fn still_stored(&self, target: &Target, kept: &Entry) -> bool {
        if self.purges.blocks(target.contexts()) {
            return false;
        }
        match self.store.get(&target.key).await {
            Ok(Some(now)) => {
                let (a, b) = (&now.meta, &kept.meta);
                a.created_at == b.created_at && a.etag == b.etag && a.stale_at == b.stale_at
            }
            Ok(None) => false,
            Err(error) => {
                self.store_failed("get", &error);
                false
            }
        }
    }

    /// The page of `target` if the store has one this node may serve as a hit: fresh, of this
    /// bundle, and of no context with a purge still pending.
    async fn usable(&self, target: &Target) -> Option<Arc<Entry>> {
        if self.purges.blocks(target.contexts()) {
            return None;
        }
        match self.store.get(&target.key).await {
            Ok(Some(entry))
                if self.same_bundle(target.matched.index, &entry.meta)
                    && entry.meta.freshness(self.clock.now()) == Freshness::Fresh =>
            {
                Some(entry)
            }
            Ok(_) => None,
            Err(error) => {
                self.store_failed("get", &error);
                None
            }
        }
    }

    fn guard(&self, target: &Target, fence: Fence) -> LockGuard {
        LockGuard { store: self.store.clone(), key: target.key.clone(), fence, armed: true }
    }

    fn lock_failed(&self, error: &crate::cache::CacheError) {
        self.stats.locks.errors.fetch_add(1, Ordering::Relaxed);
        self.store_failed("lock", error);
    }
}

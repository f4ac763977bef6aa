//! Quarantine of routes whose renders keep failing (CPU budget, heap, deadline, a throw): a
//! bad page costs only itself. After [`STRIKES`] faults in a row a route is quarantined for a
//! cool-down; its requests get the stale page within `sie`, else an immediate 503 with
//! `Retry-After`, without taking a worker. When the cool-down ends, one probe render at a
//! time decides: a success ends the quarantine, a fault starts a longer one (doubling, up to
//! [`MAX_COOLDOWN`]). A route that has failed since it last rendered well is *suspect*: its
//! renders share a bounded number of workers (one less than the pool has), so a burst of bad
//! renders can never occupy every worker.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Faults in a row that quarantine a route.
pub const STRIKES: u32 = 3;

/// The first cool-down.
pub const COOLDOWN: Duration = Duration::from_secs(10);

/// The longest cool-down.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Default)]
struct RouteHealth {
    /// Page faults in a row.
    faults: AtomicU32,
    /// Quarantined until this unix ms (0: not quarantined).
    until_ms: AtomicU64,
    /// Quarantines in a row, for the back-off.
    episodes: AtomicU32,
    /// A probe render is in flight.
    probing: AtomicBool,
}

/// How a render of a route ended, for its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It rendered.
    Rendered,
    /// The page was at fault (threw, looped, allocated, answered badly).
    Fault,
    /// Neither: the node was busy, the origin failed.
    Neutral,
}

/// Whether a route may render now.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Yes.
    Render,
    /// Yes, as the one probe of a route whose cool-down ended; held until the probe is done.
    Probe(Probe<'a>),
    /// No: quarantined; retry after this many seconds.
    Refuse(u64),
}

/// The probe slot of a route, freed when dropped.
#[derive(Debug)]
pub struct Probe<'a>(&'a AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for RouteHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteHealth").field("until_ms", &self.until_ms.load(Ordering::Relaxed)).finish()
    }
}

/// The health of every route of the manifest, by route index.
#[derive(Debug)]
pub struct Quarantine {
    routes: Vec<RouteHealth>,
    /// Quarantines started since the node started.
    pub started: AtomicU64,
}

impl Quarantine {
    /// Health for `routes` routes, all healthy.
    pub fn new(routes: usize) -> Self {
        Self { routes: (0..routes).map(|_| RouteHealth::default()).collect(), started: AtomicU64::new(0) }
    }

    /// Whether route `index` may render at `now_ms`.
    pub fn admit(&self, index: usize, now_ms: u64) -> Admission<'_> {
        let Some(health) = self.routes.get(index) else { return Admission::Render };
        let until = health.until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Render;
        }
        if now_ms < until {
            return Admission::Refuse((until - now_ms).div_ceil(1000));
        }
        match health.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Admission::Probe(Probe(&health.probing)),
            Err(_) => Admission::Refuse(1),
        }
    }

    /// Records how a render of route `index` (`path`, for the log) ended at `now_ms`.
    pub fn record(&self, index: usize, path: &str, outcome: Outcome, now_ms: u64) {
        let Some(health) = self.routes.get(index) else { return };
        match outcome {
            Outcome::Neutral => {}
            Outcome::Rendered => {
                health.faults.store(0, Ordering::Relaxed);
                if health.until_ms.swap(0, Ordering::AcqRel) != 0 {
                    health.episodes.store(0, Ordering::Relaxed);
                    tracing::info!(route = %path, "route healthy again: quarantine ended");
                }
            }
            Outcome::Fault => {
                let faults = health.faults.fetch_add(1, Ordering::Relaxed) + 1;
                let quarantined = health.until_ms.load(Ordering::Acquire) != 0;
                // A failed probe quarantines again at once; a healthy route after STRIKES.
                if quarantined || faults >= STRIKES {
                    let episode = health.episodes.fetch_add(1, Ordering::Relaxed);
                    let cooldown = COOLDOWN.saturating_mul(1 << episode.min(16)).min(MAX_COOLDOWN);
                    health.until_ms.store(now_ms + cooldown.as_millis() as u64, Ordering::Release);
                    health.faults.store(0, Ordering::Relaxed);
                    self.started.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(route = %path, faults, cooldown_s = cooldown.as_secs(), "route quarantined: its renders keep failing");
                }
            }
        }
    }

    /// Whether route `index` has failed since it last rendered well (or is quarantined): its
    /// renders then share one worker less than the pool has, so good pages always find one.
    pub fn is_suspect(&self, index: usize) -> bool {
        self.routes
            .get(index)
            .is_some_and(|h| h.faults.load(Ordering::Relaxed) > 0 || h.until_ms.load(Ordering::Relaxed) != 0)
    }

    /// Indices of the routes quarantined at `now_ms`.
    pub fn quarantined(&self, now_ms: u64) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, health) in self.routes.iter().enumerate() {
            let until = health.until_ms.load(Ordering::Relaxed);
            if until != 0 && now_ms < until {
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_faults_quarantine_one_probe_decides() {
        let q = Quarantine::new(2);
        for _ in 0..STRIKES - 1 {
            q.record(0, "/bad", Outcome::Fault, 1_000);
        }
        assert!(matches!(q.admit(0, 1_000), Admission::Render));
        assert!(q.is_suspect(0) && !q.is_suspect(1), "a route that failed shares fewer workers");
        q.record(0, "/bad", Outcome::Fault, 1_000);
        assert!(matches!(q.admit(0, 1_000), Admission::Refuse(10)));
        assert!(matches!(q.admit(1, 1_000), Admission::Render), "another route is not affected");
        assert_eq!(q.quarantined(1_000), vec![0]);
        // Cool-down over: one probe at a time.
        let probe = q.admit(0, 11_000);
        assert!(matches!(probe, Admission::Probe(_)));
        assert!(matches!(q.admit(0, 11_000), Admission::Refuse(1)));
        // The probe fails: a longer quarantine.
        q.record(0, "/bad", Outcome::Fault, 11_000);
        drop(probe);
        assert!(matches!(q.admit(0, 11_000), Admission::Refuse(20)));
        let probe = q.admit(0, 31_000);
        q.record(0, "/bad", Outcome::Rendered, 31_000);
        drop(probe);
        assert!(matches!(q.admit(0, 31_000), Admission::Render));
        assert!(q.quarantined(31_000).is_empty());
        assert!(!q.is_suspect(0), "a good render clears it");
        assert_eq!(q.started.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn neutral_outcomes_neither_count_nor_clear() {
        let q = Quarantine::new(1);
        q.record(0, "/x", Outcome::Fault, 0);
        q.record(0, "/x", Outcome::Neutral, 0);
        q.record(0, "/x", Outcome::Fault, 0);
        q.record(0, "/x", Outcome::Neutral, 0);
        assert!(matches!(q.admit(0, 0), Admission::Render));
        q.record(0, "/x", Outcome::Fault, 0);
        assert!(matches!(q.admit(0, 0), Admission::Refuse(_)));
    }
}

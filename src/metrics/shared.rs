//! Several nodes on one store: the render locks (`mizan_render_locks_total{outcome}`,
//! `mizan_render_lock_wait_seconds`, `mizan_lock_waits_total{result}`) and the per-node memory
//! tier in front of Redis (`mizan_l1_requests_total{result}`, `mizan_l1_bytes`,
//! `mizan_l1_entries`, `mizan_l1_resets_total{reason}`, `mizan_l1_current`).
//!
//! The lock series have fixed labels and are registered with the [`super::Metrics`]. The tier
//! keeps its own counters; the node hands the metrics a [`TierSampler`] and they are read from
//! it when `/metrics` is scraped, so the hit path records nothing more than the tier already
//! counts.

use metrics::{Counter, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;

/// What the first answer to a flight's lock request was (`mizan_render_locks_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAnswer {
    /// This node holds the page's render lock: it renders.
    Acquired,
    /// Another render holds it: the flight waits for its page (or, revalidating, skips).
    Held,
    /// The store has no cross-node locks (memory, SQLite).
    Unsupported,
    /// The store failed: the node rendered without the lock.
    Error,
}

impl LockAnswer {
    const ALL: [LockAnswer; 4] = [LockAnswer::Acquired, LockAnswer::Held, LockAnswer::Unsupported, LockAnswer::Error];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            LockAnswer::Acquired => "acquired",
            LockAnswer::Held => "held",
            LockAnswer::Unsupported => "unsupported",
            LockAnswer::Error => "error",
        }
    }
}

/// How a wait for another node's render ended (`mizan_lock_waits_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The page landed in the store and was served from it.
    Served,
    /// The lock ended without a page (its holder died, failed, or rendered a page that may not
    /// be stored): this node rendered (holding the lock if it got it).
    TookOver,
    /// The request's deadline came first: this node rendered without the lock (fail open).
    RenderedAfterDeadline,
    /// The store failed while the flight waited: this node rendered without the lock.
    Error,
    /// The lock was released without a page and the flight had a page within stale-if-error:
    /// it served that.
    Stale,
}

impl WaitEnd {
    const ALL: [WaitEnd; 5] =
        [WaitEnd::Served, WaitEnd::TookOver, WaitEnd::RenderedAfterDeadline, WaitEnd::Error, WaitEnd::Stale];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitEnd::Served => "served",
            WaitEnd::TookOver => "took_over",
            WaitEnd::RenderedAfterDeadline => "rendered_after_deadline",
            WaitEnd::Error => "error",
            WaitEnd::Stale => "stale",
        }
    }
}

/// The render lock series.
pub struct LockMetrics {
    answers: [Counter; 4],
    wait: Histogram,
    waits: [Counter; 5],
}

impl LockMetrics {
    pub(super) fn register(recorder: &PrometheusRecorder) -> Self {
        let meta = &super::META;
        Self {
            answers: LockAnswer::ALL.map(|a| {
                recorder
                    .register_counter(&Key::from_parts("mizan_render_locks_total", &[("outcome", a.as_str())]), meta)
            }),
            wait: recorder.register_histogram(&Key::from_static_name("mizan_render_lock_wait_seconds"), meta),
            waits: WaitEnd::ALL.map(|w| {
                recorder.register_counter(&Key::from_parts("mizan_lock_waits_total", &[("result", w.as_str())]), meta)
            }),
        }
    }

    /// Counts a flight's first lock answer.
    pub fn answered(&self, answer: LockAnswer) {
        self.answers[answer as usize].increment(1);
    }

    /// Records a wait for another node's render that took `took` and ended as `end`.
    pub fn waited(&self, end: WaitEnd, took: std::time::Duration) {
        self.wait.record(took);
        self.waits[end as usize].increment(1);
    }
}

/// The memory tier's numbers at one moment, as the metrics need them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierSample {
    /// Lookups answered from memory, since start.
    pub hits: u64,
    /// Lookups that went on to Redis, since start.
    pub misses: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Entries held.
    pub entries: u64,
    /// Times the tier was emptied, by reason, since start.
    pub resets: Vec<(String, u64)>,
    /// Whether it has applied every purge logged so far (it serves from memory only then).
    pub current: bool,
}

/// Reads the tier's numbers when `/metrics` is scraped; `None` once the tier is gone.
pub type TierSampler = Box<dyn Fn() -> Option<TierSample> + Send + Sync>;

/// Sets the tier's series from `sample`. Counters are set to the tier's own totals (they only
/// grow, so a scrape never sees one go back).
pub(super) fn record_tier(recorder: &PrometheusRecorder, sample: &TierSample) {
    let meta = &super::META;
    let counter =
        |name: &'static str, labels: Vec<Label>| recorder.register_counter(&Key::from_parts(name, labels), meta);
    let gauge = |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), meta);
    counter("mizan_l1_requests_total", vec![Label::new("result", "hit")]).absolute(sample.hits);
    counter("mizan_l1_requests_total", vec![Label::new("result", "miss")]).absolute(sample.misses);
    for (reason, count) in &sample.resets {
        counter("mizan_l1_resets_total", vec![Label::new("reason", reason.clone())]).absolute(*count);
    }
    gauge("mizan_l1_bytes").set(sample.bytes as f64);
    gauge("mizan_l1_entries").set(sample.entries as f64);
    gauge("mizan_l1_current").set(if sample.current { 1.0 } else { 0.0 });
}

//! The render pool's handles: queue depth and wait, workers and isolates alive, isolates
//! replaced by reason, render faults by kind, renders refused. Every label is fixed, so each
//! series is registered once, when the [`super::Metrics`] is made; a pool records with an
//! index into an array. The gauges move by deltas, so two pools alive at once (a reload
//! draining the old one) add up to what the process holds.

use crate::pool::RenderError;
use metrics::{Counter, Gauge, Histogram, Key, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;

/// Why a render failed (`mizan_render_faults_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The bundle threw or rejected.
    Js,
    /// The bundle answered something that is not a page.
    BadOutput,
    /// Past its deadline.
    Timeout,
    /// Past its CPU budget.
    CpuBudget,
    /// Past the heap limit.
    HeapLimit,
    /// Anything else (the pool closing, an isolate that cannot be set up).
    Other,
}

impl FaultKind {
    const ALL: [FaultKind; 6] = [
        FaultKind::Js,
        FaultKind::BadOutput,
        FaultKind::Timeout,
        FaultKind::CpuBudget,
        FaultKind::HeapLimit,
        FaultKind::Other,
    ];

    /// The kind of `error`; `None` for a refusal for lack of room (those are
    /// `mizan_render_rejected_total`).
    pub fn of(error: &RenderError) -> Option<Self> {
        Some(match error {
            RenderError::Js { .. } => FaultKind::Js,
            RenderError::BadOutput { .. } => FaultKind::BadOutput,
            RenderError::Timeout { .. } => FaultKind::Timeout,
            RenderError::CpuBudget { .. } => FaultKind::CpuBudget,
            RenderError::HeapLimit { .. } => FaultKind::HeapLimit,
            e if e.is_overload() => return None,
            _ => FaultKind::Other,
        })
    }

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Js => "js",
            FaultKind::BadOutput => "bad_output",
            FaultKind::Timeout => "timeout",
            FaultKind::CpuBudget => "cpu_budget",
            FaultKind::HeapLimit => "heap_limit",
            FaultKind::Other => "other",
        }
    }
}

/// Why an isolate was replaced from the snapshot (`mizan_isolates_replaced_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// Its render failed: the fault's kind.
    Fault(FaultKind),
    /// The watchdog terminated it although the render answered.
    Terminated,
    /// The render left work pending (a timer it could not cancel, a message in flight).
    Tainted,
    /// It made `max_renders_per_isolate` renders (recycling).
    MaxRenders,
    /// Its bundle asks for a fresh isolate per render (`"isolation": "render"`).
    PerRender,
}

impl Replaced {
    const ALL: [Replaced; 10] = [
        Replaced::Fault(FaultKind::Js),
        Replaced::Fault(FaultKind::BadOutput),
        Replaced::Fault(FaultKind::Timeout),
        Replaced::Fault(FaultKind::CpuBudget),
        Replaced::Fault(FaultKind::HeapLimit),
        Replaced::Fault(FaultKind::Other),
        Replaced::Terminated,
        Replaced::Tainted,
        Replaced::MaxRenders,
        Replaced::PerRender,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Replaced::Fault(kind) => kind.as_str(),
            Replaced::Terminated => "terminated",
            Replaced::Tainted => "tainted",
            Replaced::MaxRenders => "max_renders",
            Replaced::PerRender => "per_render",
        }
    }
}

/// Renders refused before they were queued (`mizan_render_rejected_total{reason}`).
const REJECTED: [&str; 3] = ["queue_full", "lane_full", "queue_bytes"];

/// What the pool records. `Default` records nothing (a pool without a node: tests, the
/// `render` command).
#[derive(Debug)]
pub struct PoolMetrics {
    /// Time from queueing to a worker taking the job.
    pub queue_wait: Histogram,
    /// Jobs waiting.
    pub queue_depth: Gauge,
    /// Bytes of input waiting.
    pub queue_bytes: Gauge,
    /// Worker threads started.
    pub workers: Gauge,
    /// Workers able to render.
    pub workers_alive: Gauge,
    /// Isolates ready to render.
    pub isolates_alive: Gauge,
    /// Workers restarted after a panic.
    pub restarts: Counter,
    faults: [Counter; 6],
    replaced: [Counter; 10],
    rejected: [Counter; 3],
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self {
            queue_wait: Histogram::noop(),
            queue_depth: Gauge::noop(),
            queue_bytes: Gauge::noop(),
            workers: Gauge::noop(),
            workers_alive: Gauge::noop(),
            isolates_alive: Gauge::noop(),
            restarts: Counter::noop(),
            faults: std::array::from_fn(|_| Counter::noop()),
            replaced: std::array::from_fn(|_| Counter::noop()),
            rejected: std::array::from_fn(|_| Counter::noop()),
        }
    }
}

impl PoolMetrics {
    /// Registers every series with `recorder`.
    pub(super) fn register(recorder: &PrometheusRecorder) -> Self {
        let meta = &super::META;
        let counter = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            recorder.register_counter(&Key::from_parts(name, labels), meta)
        };
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), meta);
        Self {
            queue_wait: recorder.register_histogram(&Key::from_static_name("mizan_render_queue_wait_seconds"), meta),
            queue_depth: gauge("mizan_render_queue_depth"),
            queue_bytes: gauge("mizan_render_queue_bytes"),
            workers: gauge("mizan_render_workers"),
            workers_alive: gauge("mizan_render_workers_alive"),
            isolates_alive: gauge("mizan_isolates_alive"),
            restarts: counter("mizan_worker_restarts_total", &[]),
            faults: FaultKind::ALL.map(|k| counter("mizan_render_faults_total", &[("kind", k.as_str())])),
            replaced: Replaced::ALL.map(|r| counter("mizan_isolates_replaced_total", &[("reason", r.as_str())])),
            rejected: REJECTED.map(|r| counter("mizan_render_rejected_total", &[("reason", r)])),
        }
    }

    /// Counts a failed render: a fault by kind, or a refusal by reason.
    pub fn failed(&self, error: &RenderError) {
        match (FaultKind::of(error), error) {
            (Some(kind), _) => self.faults[kind as usize].increment(1),
            (None, RenderError::Overloaded { .. }) => self.rejected[0].increment(1),
            (None, RenderError::LaneFull { .. }) => self.rejected[1].increment(1),
            (None, _) => self.rejected[2].increment(1),
        }
    }

    /// Counts an isolate replaced for `reason`.
    pub fn replaced(&self, reason: Replaced) {
        if let Some(i) = Replaced::ALL.iter().position(|r| *r == reason) {
            self.replaced[i].increment(1);
        }
    }
}

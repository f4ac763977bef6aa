//! Prometheus metrics: one [`Metrics`] per process, shared by every node generation a reload
//! builds, so counters and histograms are cumulative across reloads. No global recorder:
//! each `Metrics` owns its own Prometheus recorder, so tests may run several nodes in one
//! process, each with its own numbers.
//!
//! Handles are registered once and kept: series with fixed labels (purge sources, fault kinds,
//! replacement reasons) when the `Metrics` is made, series labelled by route or context the
//! first time the label is seen, in lock-free maps ([`RouteSeries`]). Recording is then an
//! atomic add (counters, gauges) or a lock-free push (histograms). The request id and the
//! per-request facts the access log reads are in [`request`]; the store's timings in
//! [`store`]; the pool's handles in [`pool`]; render locks and the memory tier (several nodes
//! on one store) in [`shared`].

pub mod pool;
pub mod request;
pub mod shared;
pub mod store;

use crate::node::page::CacheState;
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use pool::PoolMetrics;
pub use shared::{LockAnswer, LockMetrics, TierSample, TierSampler, WaitEnd};

/// Upper bounds of every latency histogram, in seconds: 0.5 ms to 10 s.
pub const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Where a purge came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeSource {
    /// An origin's `X-Mizan-Invalidate` on a proxied answer.
    Header,
    /// A signed `POST /_mizan/purge`.
    Api,
    /// A header purge the store refused at first, landed by the retry task.
    Deferred,
}

impl PurgeSource {
    const ALL: [PurgeSource; 3] = [PurgeSource::Header, PurgeSource::Api, PurgeSource::Deferred];

    /// The `source` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeSource::Header => "header",
            PurgeSource::Api => "api",
            PurgeSource::Deferred => "deferred",
        }
    }
}

/// The `cache` label of a request: how its page was served, `none` when no page was (an
/// error, the proxy, an endpoint).
pub fn cache_label(state: Option<CacheState>) -> &'static str {
    CACHE_LABELS[cache_index(state)]
}

const CACHE_LABELS: [&str; 5] = ["hit", "miss", "stale", "bypass", "none"];

fn cache_index(state: Option<CacheState>) -> usize {
    match state {
        Some(CacheState::Hit) => 0,
        Some(CacheState::Miss) => 1,
        Some(CacheState::Stale) => 2,
        Some(CacheState::Bypass) => 3,
        None => 4,
    }
}

/// Statuses whose request counters sit in a fixed slot of their route (no map lookup);
/// others go to a small locked map.
const STATUSES: [u16; 17] = [200, 204, 301, 302, 304, 400, 401, 403, 404, 405, 410, 414, 429, 500, 502, 503, 504];

/// The series of one `route` label: a manifest route pattern (`/products/:id`), `proxy`, an
/// endpoint of the node (`/_mizan/purge`) or `unmatched`.
pub struct RouteSeries {
    label: SharedString,
    requests: [[OnceLock<Counter>; STATUSES.len()]; CACHE_LABELS.len()],
    other: Mutex<HashMap<(usize, u16), Counter>>,
    /// `mizan_request_duration_seconds{route}`: until the response head.
    pub duration: Histogram,
    /// `mizan_render_duration_seconds{route}`: time in the isolate, per render.
    pub render: Histogram,
    /// `mizan_coalesced_requests_total{route}`: requests that joined another's render.
    pub coalesced: Counter,
}

/// The process's metrics and their Prometheus recorder.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    routes: papaya::HashMap<Arc<str>, Arc<RouteSeries>, foldhash::fast::RandomState>,
    contexts: papaya::HashMap<Arc<str>, Histogram, foldhash::fast::RandomState>,
    pool: Arc<PoolMetrics>,
    purges: [Counter; 3],
    purged: [Counter; 3],
    /// `mizan_purges_deferred_total`: header purges the store refused, kept and retried.
    pub purges_deferred: Counter,
    /// `mizan_dropped_writes_total`: renders not stored because a purge ran meanwhile.
    pub dropped_writes: Counter,
    /// `mizan_reloads_total{result="ok"}`.
    pub reload_ok: Counter,
    /// `mizan_reloads_total{result="failed"}`.
    pub reload_failed: Counter,
    /// Render locks: answers, waits.
    pub locks: LockMetrics,
    /// Reads the memory tier's numbers at scrape time, once a node has one.
    tier: Mutex<Option<TierSampler>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("routes", &self.routes.len()).finish_non_exhaustive()
    }
}

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// What each metric means, for `# HELP` lines: name, unit, description.
const DESCRIPTIONS: [(&str, Option<Unit>, &str); 32] = [
    ("mizan_requests_total", None, "HTTP requests answered, by route pattern, cache state and status"),
    ("mizan_request_duration_seconds", Some(Unit::Seconds), "Time to the response head, by route pattern"),
    ("mizan_render_duration_seconds", Some(Unit::Seconds), "Time a render spent in its isolate, by route pattern"),
    ("mizan_coalesced_requests_total", None, "Page requests that joined a render already in flight"),
    ("mizan_origin_duration_seconds", Some(Unit::Seconds), "Context fetches from the origin, by context"),
    ("mizan_origin_errors_total", None, "Context fetches that failed, by context and kind"),
    ("mizan_store_duration_seconds", Some(Unit::Seconds), "Cache store calls, by backend and operation"),
    ("mizan_store_errors_total", None, "Cache store calls that failed, by backend and operation"),
    ("mizan_purges_total", None, "Purges applied, by source (header, api, deferred)"),
    ("mizan_purged_entries_total", None, "Cache entries removed or marked stale by purges, by source"),
    ("mizan_purges_deferred_total", None, "X-Mizan-Invalidate purges the store refused, kept and retried"),
    ("mizan_dropped_writes_total", None, "Rendered pages not stored because a purge ran during the render"),
    ("mizan_render_queue_depth", None, "Renders waiting for a worker"),
    ("mizan_render_queue_bytes", Some(Unit::Bytes), "Bytes of render input waiting for a worker"),
    ("mizan_render_queue_wait_seconds", Some(Unit::Seconds), "Time renders waited for a worker"),
    ("mizan_render_rejected_total", None, "Renders refused before queueing, by reason"),
    ("mizan_render_faults_total", None, "Renders that failed, by kind"),
    ("mizan_isolates_replaced_total", None, "Isolates replaced from the snapshot, by reason"),
    ("mizan_isolates_alive", None, "Isolates ready to render (alive workers times bundles)"),
    ("mizan_render_workers", None, "Render worker threads started"),
    ("mizan_render_workers_alive", None, "Render workers able to render now"),
    ("mizan_worker_restarts_total", None, "Render workers restarted after a panic"),
    ("mizan_reloads_total", None, "Reloads of the manifest and bundles, by result"),
    ("mizan_build_info", None, "The running version (value 1)"),
    ("mizan_render_locks_total", None, "Render flights by the first answer to their render lock request"),
    ("mizan_render_lock_wait_seconds", Some(Unit::Seconds), "Time flights waited for another node's render"),
    ("mizan_lock_waits_total", None, "Waits for another node's render, by how they ended"),
    ("mizan_l1_requests_total", None, "Lookups in the memory tier, by result (hit: answered from memory)"),
    ("mizan_l1_bytes", Some(Unit::Bytes), "Bytes held by the memory tier"),
    ("mizan_l1_entries", None, "Entries held by the memory tier"),
    ("mizan_l1_resets_total", None, "Times the memory tier was emptied, by reason"),
    ("mizan_l1_current", None, "1 when the memory tier has applied every logged purge (it serves from memory), else 0"),
];

impl Metrics {
    /// A fresh set of metrics with its own recorder. Inside a tokio runtime it also starts the
    /// task that folds histogram samples into buckets every few seconds (it ends when the
    /// `Metrics` is dropped), so memory stays flat when nobody scrapes.
    pub fn new() -> Arc<Self> {
        let recorder =
            PrometheusBuilder::new().set_buckets(&BUCKETS).expect("the bucket list is not empty").build_recorder();
        for (name, unit, help) in DESCRIPTIONS {
            let name = metrics::KeyName::from_const_str(name);
            match name.as_str() {
                n if n.ends_with("_seconds") => recorder.describe_histogram(name, unit, help.into()),
                n if n.ends_with("_total") => recorder.describe_counter(name, unit, help.into()),
                _ => recorder.describe_gauge(name, unit, help.into()),
            }
        }
        let handle = recorder.handle();
        let counter = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            recorder.register_counter(&Key::from_parts(name, labels), &META)
        };
        let by_source = |name| PurgeSource::ALL.map(|s| counter(name, &[("source", s.as_str())]));
        let gauge = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            recorder.register_gauge(&Key::from_parts(name, labels), &META)
        };
        gauge("mizan_build_info", &[("version", env!("CARGO_PKG_VERSION"))]).set(1.0);
        let metrics = Arc::new(Self {
            pool: Arc::new(PoolMetrics::register(&recorder)),
            purges: by_source("mizan_purges_total"),
            purged: by_source("mizan_purged_entries_total"),
            purges_deferred: counter("mizan_purges_deferred_total", &[]),
            dropped_writes: counter("mizan_dropped_writes_total", &[]),
            reload_ok: counter("mizan_reloads_total", &[("result", "ok")]),
            reload_failed: counter("mizan_reloads_total", &[("result", "failed")]),
            locks: LockMetrics::register(&recorder),
            tier: Mutex::default(),
            routes: papaya::HashMap::with_hasher(Default::default()),
            contexts: papaya::HashMap::with_hasher(Default::default()),
            recorder,
            handle,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&metrics);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(UPKEEP).await;
                    let Some(metrics) = weak.upgrade() else { return };
                    metrics.handle.run_upkeep();
                }
            });
        }
        metrics
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let sampler = self.tier.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sample) = sampler.as_ref().and_then(|sample| sample()) {
            shared::record_tier(&self.recorder, &sample);
        }
        drop(sampler);
        self.handle.render()
    }

    /// Reads the memory tier's series from `sampler` at each scrape (replacing any earlier
    /// one: one tier per node lineage).
    pub fn watch_tier(&self, sampler: TierSampler) {
        *self.tier.lock().unwrap_or_else(|e| e.into_inner()) = Some(sampler);
    }

    /// The handles the render pool records into.
    pub fn pool(&self) -> Arc<PoolMetrics> {
        self.pool.clone()
    }

    /// A counter of `name` with `labels`, registered now (or found): for rare events.
    pub(crate) fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect();
        self.recorder.register_counter(&Key::from_parts(name, labels), &META)
    }

    /// A histogram of `name` with `labels`, registered now (or found).
    pub(crate) fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect();
        self.recorder.register_histogram(&Key::from_parts(name, labels), &META)
    }

    /// The series of route label `route`, registered the first time it is asked for.
    pub fn route(&self, route: &str) -> Arc<RouteSeries> {
        self.with_route(route, |series| series.clone())
    }

    fn with_route<R>(&self, route: &str, f: impl FnOnce(&Arc<RouteSeries>) -> R) -> R {
        let routes = self.routes.pin();
        if let Some(series) = routes.get(route) {
            return f(series);
        }
        let series = Arc::new(RouteSeries {
            label: SharedString::from(route.to_string()),
            requests: Default::default(),
            other: Mutex::default(),
            duration: self.histogram("mizan_request_duration_seconds", &[("route", route)]),
            render: self.histogram("mizan_render_duration_seconds", &[("route", route)]),
            coalesced: self.counter("mizan_coalesced_requests_total", &[("route", route)]),
        });
        f(routes.get_or_insert(Arc::from(route), series))
    }

    /// Counts a request answered with `status` for route label `route`, which took `took`
    /// to its response head. A label seen before costs no allocation and no lock.
    pub fn request(&self, route: &str, cache: Option<CacheState>, status: u16, took: Duration) {
        self.with_route(route, |series| {
            series.duration.record(took);
            let cache = cache_index(cache);
            let counter = |status: u16| {
                let labels = vec![
                    Label::new("route", series.label.clone()),
                    Label::new("cache", CACHE_LABELS[cache]),
                    Label::new("status", status.to_string()),
                ];
                self.recorder.register_counter(&Key::from_parts("mizan_requests_total", labels), &META)
            };
            match STATUSES.iter().position(|s| *s == status) {
                Some(slot) => series.requests[cache][slot].get_or_init(|| counter(status)).increment(1),
                None => {
                    let mut other = series.other.lock().unwrap_or_else(|e| e.into_inner());
                    other.entry((cache, status)).or_insert_with(|| counter(status)).increment(1);
                }
            }
        })
    }

    /// Records an origin fetch of `context` that took `took`, and its failure kind if any.
    pub fn origin(&self, context: &str, took: Duration, error: Option<&crate::origin::OriginError>) {
        use crate::origin::OriginError as E;
        let kind = match error {
            None => None,
            Some(E::Unreachable { .. }) => Some("unreachable"),
            Some(E::Timeout { .. }) => Some("timeout"),
            Some(E::TooLarge { .. }) => Some("too_large"),
            Some(E::Protocol { .. }) => Some("protocol"),
            Some(E::Schema { .. }) => Some("schema"),
            Some(E::Busy { .. }) => Some("busy"),
            Some(E::Failed { .. }) => Some("status_5xx"),
        };
        if let Some(kind) = kind {
            self.counter("mizan_origin_errors_total", &[("context", context), ("kind", kind)]).increment(1);
        }
        // A fetch refused for lack of an origin slot never reached the origin.
        if kind != Some("busy") {
            let contexts = self.contexts.pin();
            match contexts.get(context) {
                Some(histogram) => histogram.record(took),
                None => {
                    let histogram = self.histogram("mizan_origin_duration_seconds", &[("context", context)]);
                    contexts.get_or_insert(Arc::from(context), histogram).record(took);
                }
            }
        }
    }

    /// Counts a purge from `source` that removed (or marked) `entries`.
    pub fn purged(&self, source: PurgeSource, entries: u64) {
        let i = PurgeSource::ALL.iter().position(|s| *s == source).unwrap_or(0);
        self.purges[i].increment(1);
        self.purged[i].increment(entries);
    }
}

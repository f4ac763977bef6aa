//! The isolate pool: N render threads behind a bounded queue; each thread owns one isolate
//! per bundle, all restored from the one app snapshot.
//!
//! Bundles never share an isolate: nothing a render of one bundle sets on `globalThis` or a
//! prototype is seen by another bundle's renders. (Top-level code of every bundle runs once,
//! at start-up, into the snapshot; [`snapshot::build`] reports what it changed of the shared
//! globals.) Within a bundle, module
//! state persists between renders ([`Isolation::Module`], as in Workers) unless the manifest
//! asks for a fresh isolate per render ([`Isolation::Render`]); no timer, microtask or pending
//! task of one render ever runs during another ([`Isolate`]).
//!
//! Handlers see only [`Pool`], which is `Send + Sync`; isolates never leave their thread.
//! A render that fails (the bundle threw, bad output) answers its caller with a
//! [`RenderError`], and the worker replaces that isolate, so a faulty render cannot leave
//! state behind for the next one. Isolates are also recycled after a number of renders.
//!
//! A render is buffered ([`Pool::render_with`]: the whole page when it is done) or streamed
//! ([`Pool::render_stream_with`]: the head, then the body chunk by chunk as the bundle's
//! `renderStream(input)` produces it, under the same deadline, CPU budget and heap limit).

mod error;
mod isolate;
mod loader;
mod queue;
pub mod snapshot;
mod stream;
mod watchdog;
mod worker;

pub use error::RenderError;
pub use snapshot::BundleSource;
pub use stream::{RenderStream, StreamHold};

use crate::abi::{PageInput, Rendered};
pub use isolate::Isolate;
use queue::{Admission, Job, Reply, Work};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Sizing of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Render threads, each with one isolate. Default: the number of cores.
    pub workers: usize,
    /// Renders that may wait for a free worker; one more is refused with
    /// [`RenderError::Overloaded`]. Default: 64 per worker.
    pub queue: usize,
    /// Renders after which an isolate is replaced by a fresh one from the snapshot.
    pub max_renders_per_isolate: u64,
    /// Longest a render may take, waiting or computing; past it the render fails with
    /// [`RenderError::Timeout`] and the isolate is replaced. Default: 10 s.
    pub render_timeout: std::time::Duration,
    /// JS heap of each isolate, in bytes; a render that needs more fails with
    /// [`RenderError::HeapLimit`] and the isolate is replaced. Default: 256 MiB.
    pub max_heap: usize,
    /// CPU time a render may use on its worker thread (waiting does not count); past it the
    /// render fails with [`RenderError::CpuBudget`]. Per render: [`RenderOptions::cpu_budget`].
    /// Default: 500 ms.
    pub cpu_budget: Duration,
    /// Bytes of input that may wait in the queue. Default: 64 MiB.
    pub queue_bytes: usize,
    /// A classic script evaluated once, before any bundle, into the snapshot every isolate
    /// starts from: `mizan-render parity --deterministic` fixes the clock and seeds the random
    /// sources with it. Default: none.
    pub prelude: Option<Arc<str>>,
    /// Where the pool records its metrics (queue, workers, faults, replacements). Default:
    /// nowhere.
    pub metrics: Option<Arc<crate::metrics::PoolMetrics>>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            workers,
            queue: 64 * workers,
            max_renders_per_isolate: 10_000,
            render_timeout: std::time::Duration::from_secs(10),
            max_heap: 256 << 20,
            cpu_budget: Duration::from_millis(500),
            queue_bytes: 64 << 20,
            prelude: None,
            metrics: None,
        }
    }
}

/// What one bundle's renders share (the manifest bundle's `isolation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Renders of the bundle share its module state (what top-level code built, caches), as
    /// Workers do; the default.
    #[default]
    Module,
    /// Every render starts from a fresh isolate of the bundle's snapshot: for apps that keep
    /// per-visitor state in module globals. The replacement is made after the answer is sent.
    Render,
}

/// Counters of a pool since it started.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Renders that produced a page.
    pub rendered: AtomicU64,
    /// Renders that failed.
    pub failed: AtomicU64,
    /// Isolates created after the first one of each worker.
    pub recycled: AtomicU64,
    /// Workers restarted after a panic.
    pub restarts: AtomicU64,
    /// Workers able to render now (isolates ready).
    pub alive: AtomicUsize,
}

/// How one render is bounded and queued beyond the pool's defaults.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Its CPU budget (default: [`PoolConfig::cpu_budget`]).
    pub cpu_budget: Option<Duration>,
    /// The lane it queues in (the route): a lane may hold at most half the queue.
    pub lane: Option<Arc<str>>,
}

/// A pool of render isolates. Dropping it lets queued renders finish, then joins the workers.
pub struct Pool {
    queue: Option<async_channel::Sender<Work>>,
    bundles: BTreeSet<Arc<str>>,
    /// The bundles that have `renderStream(input)`.
    streaming: BTreeSet<Arc<str>>,
    /// Holds streaming renders after their first chunk while a test asks.
    gate: Arc<stream::Gate>,
    capacity: usize,
    cpu_budget: Duration,
    render_timeout: Duration,
    admission: Arc<Admission>,
    workers: Vec<JoinHandle<()>>,
    stats: Arc<PoolStats>,
    watchdog: Option<watchdog::Watchdog>,
    /// The set of bundles whose snapshot this pool holds (released on drop).
    family: String,
    metrics: Arc<crate::metrics::PoolMetrics>,
}

impl Pool {
    /// Builds the app snapshot of `bundles` and starts the workers; returns once every worker
    /// has its isolate, or with the first error (a bundle that does not load, say).
    pub fn start(config: PoolConfig, bundles: &[BundleSource]) -> Result<Self, RenderError> {
        // One snapshot holds every bundle: V8 shares one read-only heap per process, so
        // isolates restored from two different snapshots cannot be alive at once (it crashes).
        // Each bundle still renders only in isolates of its own, so no render of one bundle
        // can reach another's.
        let started = Instant::now();
        let prelude = config.prelude.as_deref();
        let family = snapshot::family(bundles, prelude);
        let snapshot = snapshot::acquire(bundles, prelude)?;
        // From here the pool holds its snapshot; dropping it (or a failed start) releases it.
        let mut pool = Self {
            queue: None,
            bundles: bundles.iter().map(|b| Arc::from(b.name.as_str())).collect(),
            streaming: BTreeSet::new(),
            gate: Arc::default(),
            capacity: 0,
            cpu_budget: config.cpu_budget,
            render_timeout: config.render_timeout,
            admission: Admission::new(1, 1, Arc::default()),
            workers: Vec::new(),
            stats: Arc::new(PoolStats::default()),
            watchdog: None,
            family,
            metrics: config.metrics.clone().unwrap_or_default(),
        };
        tracing::info!(
            bundles = bundles.len(),
            snapshot_kib = snapshot.len() / 1024,
            ms = started.elapsed().as_millis() as u64,
            "app snapshot ready"
        );
        let snapshots: HashMap<Arc<str>, BundleSnapshot> = bundles
            .iter()
            .map(|b| (Arc::from(b.name.as_str()), BundleSnapshot { bytes: snapshot, isolation: b.isolation }))
            .collect();
        let snapshots = Arc::new(snapshots);
        let workers = config.workers.max(1);
        let capacity = config.queue.max(1);
        let (tx, rx) = async_channel::bounded::<Work>(capacity);
        pool.queue = Some(tx);
        pool.capacity = capacity;
        pool.admission = Admission::new((capacity / 2).max(1), config.queue_bytes.max(1), pool.metrics.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let watchdog = pool.watchdog.insert(
            watchdog::Watchdog::start(workers, config.render_timeout, config.cpu_budget)
                .map_err(|e| RenderError::Setup(e.to_string()))?,
        );
        for index in 0..workers {
            let worker = worker::Worker {
                index,
                snapshots: snapshots.clone(),
                queue: rx.clone(),
                stats: pool.stats.clone(),
                metrics: pool.metrics.clone(),
                gate: pool.gate.clone(),
                limits: worker::Limits {
                    max_heap: config.max_heap,
                    max_renders: config.max_renders_per_isolate.max(1),
                    timeout: config.render_timeout,
                    watch: watchdog.watch(index),
                },
            };
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("mizan-render-{index}"))
                .spawn(move || worker.run(ready))
                .map_err(|e| RenderError::Setup(e.to_string()))?;
            pool.workers.push(handle);
            pool.metrics.workers.increment(1);
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(streaming)) => pool.streaming = streaming,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(RenderError::Setup("a render worker died while starting".into())),
            }
        }
        Ok(pool)
    }

    /// Renders `page` of `bundle` with `input` on the first free worker.
    pub async fn render(&self, bundle: &str, page: &str, input: &PageInput) -> Result<Rendered, RenderError> {
        self.render_with(bundle, page, input, RenderOptions::default()).await
    }

    /// Renders `page` of `bundle` with `input`, bounded and queued as `options` say.
    pub async fn render_with(
        &self,
        bundle: &str,
        page: &str,
        input: &PageInput,
        options: RenderOptions,
    ) -> Result<Rendered, RenderError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(bundle, page, input, options, Reply::Whole(reply))?;
        answer.await.map_err(|_| RenderError::PoolClosed)?
    }

    /// Renders `page` of `bundle` with the bundle's `renderStream(input)`, bounded and queued
    /// as `options` say: returns once the head (status, headers) is known, with the body to
    /// read as the render produces it ([`RenderStream::next_chunk`]). The deadline, CPU
    /// budget and heap limit bound the whole stream; a render that fails after some chunks
    /// ends the body with the error. A bundle without `renderStream` ([`Pool::streams`]) is
    /// rendered buffered and its page comes as one chunk.
    pub async fn render_stream_with(
        &self,
        bundle: &str,
        page: &str,
        input: &PageInput,
        options: RenderOptions,
    ) -> Result<RenderStream, RenderError> {
        let (frames, receiver) = mpsc::unbounded_channel();
        self.enqueue(bundle, page, input, options, Reply::Stream(frames))?;
        RenderStream::start(receiver).await
    }

    /// Whether `bundle` streams its pages: its default export has `renderStream(input)`.
    pub fn streams(&self, bundle: &str) -> bool {
        self.streaming.contains(bundle)
    }

    fn enqueue(
        &self,
        bundle: &str,
        page: &str,
        input: &PageInput,
        options: RenderOptions,
        reply: Reply,
    ) -> Result<(), RenderError> {
        let Some(bundle) = self.bundles.get(bundle).cloned() else {
            let known = self.bundles.iter().map(|b| &**b).collect::<Vec<_>>().join(", ");
            return Err(RenderError::UnknownBundle { bundle: bundle.into(), known });
        };
        let input = crate::abi::input_json(page, input)?;
        let queue = self.queue.as_ref().ok_or(RenderError::PoolClosed)?;
        let ticket = self.admission.admit(options.lane, input.len()).inspect_err(|e| self.metrics.failed(e))?;
        let job = Job {
            bundle,
            page: page.into(),
            input,
            enqueued: Instant::now(),
            cpu_budget: options.cpu_budget.unwrap_or(self.cpu_budget),
            reply,
            ticket: Some(ticket),
        };
        queue.try_send(Work::Render(job)).map_err(|e| {
            let error = match e {
                async_channel::TrySendError::Full(_) => RenderError::Overloaded { capacity: self.capacity },
                async_channel::TrySendError::Closed(_) => RenderError::PoolClosed,
            };
            if error.is_overload() {
                self.metrics.failed(&error);
            }
            error
        })
    }

    /// Holds every streaming render after its first chunk until the guard is dropped: for
    /// tests that must see a page's first bytes while its render provably still runs.
    #[doc(hidden)]
    pub fn hold_streams(&self) -> StreamHold {
        self.gate.hold()
    }

    /// Makes the worker that takes it panic, as a bug would: for the supervision tests.
    #[doc(hidden)]
    pub fn inject_worker_panic(&self) {
        if let Some(queue) = &self.queue {
            let _ = queue.try_send(Work::Panic);
        }
    }

    /// Bytes of render input waiting in the queue now.
    pub fn queued_bytes(&self) -> usize {
        self.admission.bytes()
    }

    /// The longest a render may take, waiting in the queue included.
    pub fn render_timeout(&self) -> Duration {
        self.render_timeout
    }

    /// Workers able to render now.
    pub fn alive(&self) -> usize {
        self.stats.alive.load(Ordering::Relaxed)
    }

    /// The names of the bundles this pool renders.
    pub fn bundles(&self) -> impl Iterator<Item = &str> {
        self.bundles.iter().map(|b| &**b)
    }

    /// Counters since the pool started.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Number of render threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends each worker's loop once the queue is drained.
        self.queue.take();
        self.metrics.workers.decrement(self.workers.len() as f64);
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.stop();
        }
        // Every isolate of this pool is gone: another set of bundles may have the process.
        snapshot::release(&self.family);
    }
}

/// A bundle's snapshot and how its renders are isolated.
struct BundleSnapshot {
    bytes: &'static [u8],
    isolation: Isolation,
}

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

mod error;
mod isolate;
pub mod snapshot;
mod watchdog;

pub use error::RenderError;
pub use snapshot::BundleSource;

use crate::abi::{PageInput, Rendered};
pub use isolate::Isolate;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

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
}

struct Job {
    bundle: Arc<str>,
    page: String,
    input: String,
    reply: oneshot::Sender<Result<Rendered, RenderError>>,
}

/// A pool of render isolates. Dropping it lets queued renders finish, then joins the workers.
pub struct Pool {
    queue: Option<async_channel::Sender<Job>>,
    bundles: BTreeSet<Arc<str>>,
    capacity: usize,
    workers: Vec<JoinHandle<()>>,
    stats: Arc<PoolStats>,
    watchdog: watchdog::Watchdog,
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
        let snapshot = snapshot::build(bundles)?;
        tracing::info!(
            bundles = bundles.len(),
            snapshot_kib = snapshot.len() / 1024,
            ms = started.elapsed().as_millis() as u64,
            "app snapshot built"
        );
        let snapshots: HashMap<Arc<str>, BundleSnapshot> = bundles
            .iter()
            .map(|b| (Arc::from(b.name.as_str()), BundleSnapshot { bytes: snapshot, isolation: b.isolation }))
            .collect();
        let snapshots = Arc::new(snapshots);
        let workers = config.workers.max(1);
        let capacity = config.queue.max(1);
        let (tx, rx) = async_channel::bounded::<Job>(capacity);
        let stats = Arc::new(PoolStats::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let watchdog =
            watchdog::Watchdog::start(workers, config.render_timeout).map_err(|e| RenderError::Setup(e.to_string()))?;
        let mut handles = Vec::with_capacity(workers);
        for index in 0..workers {
            let limits = Limits {
                max_heap: config.max_heap,
                max_renders: config.max_renders_per_isolate.max(1),
                timeout: config.render_timeout,
                watch: watchdog.watch(index),
            };
            let (rx, ready, stats, snapshots) = (rx.clone(), ready_tx.clone(), stats.clone(), snapshots.clone());
            let handle = std::thread::Builder::new()
                .name(format!("mizan-render-{index}"))
                .spawn(move || worker(index, &snapshots, rx, ready, stats, limits))
                .map_err(|e| RenderError::Setup(e.to_string()))?;
            handles.push(handle);
        }
        drop(ready_tx);
        let pool = Self {
            queue: Some(tx),
            bundles: bundles.iter().map(|b| Arc::from(b.name.as_str())).collect(),
            capacity,
            workers: handles,
            stats,
            watchdog,
        };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(RenderError::Setup("a render worker died while starting".into())),
            }
        }
        Ok(pool)
    }

    /// Renders `page` of `bundle` with `input` on the first free worker.
    pub async fn render(&self, bundle: &str, page: &str, input: &PageInput) -> Result<Rendered, RenderError> {
        let Some(bundle) = self.bundles.get(bundle).cloned() else {
            let known = self.bundles.iter().map(|b| &**b).collect::<Vec<_>>().join(", ");
            return Err(RenderError::UnknownBundle { bundle: bundle.into(), known });
        };
        let input = crate::abi::input_json(page, input)?;
        let queue = self.queue.as_ref().ok_or(RenderError::PoolClosed)?;
        let (reply, answer) = oneshot::channel();
        let job = Job { bundle, page: page.into(), input, reply };
        queue.try_send(job).map_err(|e| match e {
            async_channel::TrySendError::Full(_) => RenderError::Overloaded { capacity: self.capacity },
            async_channel::TrySendError::Closed(_) => RenderError::PoolClosed,
        })?;
        answer.await.map_err(|_| RenderError::PoolClosed)?
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
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
        self.watchdog.stop();
    }
}

/// A bundle's snapshot and how its renders are isolated.
struct BundleSnapshot {
    bytes: &'static [u8],
    isolation: Isolation,
}

/// What bounds one worker's renders.
struct Limits {
    max_heap: usize,
    max_renders: u64,
    timeout: std::time::Duration,
    watch: watchdog::Watch,
}

fn worker(
    index: usize,
    snapshots: &HashMap<Arc<str>, BundleSnapshot>,
    queue: async_channel::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), RenderError>>,
    stats: Arc<PoolStats>,
    limits: Limits,
) {
    let tokio = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(tokio) => tokio,
        Err(e) => {
            let _ = ready.send(Err(RenderError::Setup(e.to_string())));
            return;
        }
    };
    tokio.block_on(async move {
        let mut isolates = HashMap::with_capacity(snapshots.len());
        for (name, snapshot) in snapshots {
            match Isolate::new(snapshot.bytes, name, limits.max_heap) {
                Ok(isolate) => isolates.insert(name.clone(), isolate),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
        }
        let _ = ready.send(Ok(()));
        drop(ready);
        let mut seq = 0u64;
        while let Some(job) = next_job(&queue).await {
            if job.reply.is_closed() {
                continue; // the caller went away while the job was queued
            }
            let (Some(isolate), Some(snapshot)) = (isolates.get_mut(&job.bundle), snapshots.get(&job.bundle)) else {
                // Pool::render checks the name; a job for another bundle cannot be queued.
                let _ = job.reply.send(Err(RenderError::PoolClosed));
                continue;
            };
            seq += 1;
            limits.watch.arm(seq, limits.timeout, isolate.handle().clone());
            let render = isolate.render(&job.bundle, &job.page, &job.input);
            let outcome = tokio::time::timeout(limits.timeout, render).await;
            let terminated = limits.watch.disarm(seq);
            let timeout = || RenderError::Timeout {
                bundle: job.bundle.to_string(),
                page: job.page.clone(),
                ms: limits.timeout.as_millis() as u64,
            };
            let result = match outcome {
                Err(_) => Err(timeout()),
                Ok(Err(_)) if terminated => Err(timeout()),
                Ok(result) => result,
            };
            // A terminated isolate may still be terminating: never reuse it.
            let recycle = result.is_err()
                || terminated
                || isolate.tainted()
                || isolate.renders >= limits.max_renders
                || snapshot.isolation == Isolation::Render;
            match &result {
                Ok(_) => stats.rendered.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(worker = index, error = %e, "render failed");
                    stats.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            let _ = job.reply.send(result);
            if recycle {
                isolates.remove(&job.bundle);
                match Isolate::new(snapshot.bytes, &job.bundle, limits.max_heap) {
                    Ok(fresh) => isolates.insert(job.bundle.clone(), fresh),
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "cannot replace isolate; worker stops");
                        return;
                    }
                };
                stats.recycled.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// How long a worker that just finished keeps looking for the next job before it parks:
/// waking a parked thread (an idle vCPU, on a VM) costs tens of microseconds per render.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

async fn next_job(queue: &async_channel::Receiver<Job>) -> Option<Job> {
    let spin_until = Instant::now() + SPIN;
    while Instant::now() < spin_until {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(async_channel::TryRecvError::Closed) => return None,
            Err(async_channel::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    queue.recv().await.ok()
}

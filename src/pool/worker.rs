//! One render thread: its isolates (one per bundle), its job loop, and its supervision. A
//! worker that panics is restarted with fresh isolates; an isolate that cannot be replaced is
//! retried with backoff while the worker counts as missing ([`super::PoolStats::alive`]).

use super::queue::{Job, Reply, Work};
use super::stream::{Frame, FrameSender, Gate};
use super::watchdog::{Fired, Watch};
use super::{BundleSnapshot, Isolate, Isolation, PoolStats, RenderError};
use crate::metrics::pool::{FaultKind, PoolMetrics, Replaced};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What bounds one worker's renders.
pub(super) struct Limits {
    pub max_heap: usize,
    pub max_renders: u64,
    pub timeout: Duration,
    pub watch: Watch,
}

/// Everything a worker thread needs.
pub(super) struct Worker {
    pub index: usize,
    pub snapshots: Arc<HashMap<Arc<str>, BundleSnapshot>>,
    pub queue: async_channel::Receiver<Work>,
    pub stats: Arc<PoolStats>,
    pub metrics: Arc<PoolMetrics>,
    /// Holds streaming renders after their first chunk (tests).
    pub gate: Arc<Gate>,
    pub limits: Limits,
}

/// What a worker reports when it first starts: the bundles that stream, or why it cannot.
pub(super) type Ready = std::sync::mpsc::Sender<Result<BTreeSet<Arc<str>>, RenderError>>;

/// Longest wait between two attempts to create an isolate that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Worker {
    /// The thread's body: serves until the queue closes, restarting after a panic. The first
    /// start reports to `ready` whether the worker could create its isolates.
    pub fn run(self, ready: Ready) {
        self.limits.watch.on_this_thread();
        let mut ready = Some(ready);
        loop {
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.serve(&mut ready))) {
                Ok(()) => return,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(worker = self.index, panic = %what, "render worker panicked; restarting it");
                    self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                    self.metrics.restarts.increment(1);
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(RenderError::Setup(format!("render worker panicked: {what}"))));
                        return;
                    }
                }
            }
        }
    }

    /// One life of the worker: a tokio runtime, its isolates, the job loop.
    fn serve(&self, ready: &mut Option<Ready>) {
        let tokio = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(tokio) => tokio,
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(RenderError::Setup(e.to_string())));
                }
                return;
            }
        };
        tokio.block_on(async {
            let mut isolates = HashMap::with_capacity(self.snapshots.len());
            for (name, snapshot) in self.snapshots.iter() {
                let isolate = match ready.as_ref() {
                    // At start-up a failure stops the pool from starting, with the reason.
                    Some(_) => match Isolate::new(snapshot.bytes, name, self.limits.max_heap) {
                        Ok(isolate) => isolate,
                        Err(e) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(Err(e));
                            }
                            return;
                        }
                    },
                    None => self.create_until_it_works(snapshot, name, false).await,
                };
                isolates.insert(name.clone(), isolate);
            }
            let _alive = AliveWhile::new(self, true);
            if let Some(ready) = ready.take() {
                let _ = ready.send(Ok(isolates.iter().filter(|(_, i)| i.streams()).map(|(n, _)| n.clone()).collect()));
            }
            let mut seq = 0u64;
            while let Some(work) = next_job(&self.queue).await {
                let mut job = match work {
                    Work::Render(job) => job,
                    Work::Panic => panic!("fault injected by a test"),
                };
                drop(job.ticket.take()); // taken: its room in the queue is free again
                self.metrics.queue_wait.record(job.enqueued.elapsed());
                if job.reply.is_closed() {
                    continue; // the caller went away while the job was queued
                }
                let (Some(isolate), Some(snapshot)) = (isolates.get_mut(&job.bundle), self.snapshots.get(&job.bundle))
                else {
                    answer(job.reply, Err(RenderError::PoolClosed));
                    continue;
                };
                seq += 1;
                let handle = isolate.handle().clone();
                let (result, fired) = match &job.reply {
                    Reply::Stream(frames) if isolate.streams() => {
                        let render = isolate.render_stream(
                            &job.bundle,
                            &job.page,
                            &job.input,
                            |status, headers| {
                                let _ = frames.send(Frame::Head { status, headers });
                            },
                            self.chunk_sink(frames.clone()),
                        );
                        let (result, fired) = self.bounded(&job, seq, handle, render).await;
                        (result.map(Done::Streamed), fired)
                    }
                    _ => {
                        let render = isolate.render(&job.bundle, &job.page, &job.input);
                        let (result, fired) = self.bounded(&job, seq, handle, render).await;
                        (result.map(Done::Whole), fired)
                    }
                };
                // A terminated isolate may still be terminating: never reuse it.
                let recycle = match &result {
                    Err(e) => Some(Replaced::Fault(FaultKind::of(e).unwrap_or(FaultKind::Other))),
                    Ok(_) if fired.is_some() => Some(Replaced::Terminated),
                    Ok(_) if isolate.tainted() => Some(Replaced::Tainted),
                    Ok(_) if isolate.renders >= self.limits.max_renders => Some(Replaced::MaxRenders),
                    Ok(_) if snapshot.isolation == Isolation::Render => Some(Replaced::PerRender),
                    Ok(_) => None,
                };
                match &result {
                    Ok(_) => self.stats.rendered.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(worker = self.index, error = %e, "render failed");
                        self.metrics.failed(e);
                        self.stats.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                // Counted before the answer: whoever sees the page's fault sees its count.
                if let Some(reason) = recycle {
                    self.metrics.replaced(reason);
                }
                answer(job.reply, result);
                if recycle.is_some() {
                    isolates.remove(&job.bundle);
                    let fresh = self.create_until_it_works(snapshot, &job.bundle, true).await;
                    isolates.insert(job.bundle.clone(), fresh);
                    self.stats.recycled.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    /// Where a streaming render's chunks go: to the caller at once, each in a frame. With the
    /// test gate closed, the render then waits (after its first chunk).
    fn chunk_sink(&self, frames: FrameSender) -> impl FnMut(&[u8]) -> bool + 'static {
        let gate = self.gate.clone();
        move |chunk| {
            let sent = frames.send(Frame::Chunk(Bytes::copy_from_slice(chunk))).is_ok();
            gate.pass();
            sent
        }
    }

    /// Runs `render` (of `job`, on the isolate of `handle`) within its deadline (counted from
    /// when it was queued) and CPU budget.
    async fn bounded<T>(
        &self,
        job: &Job,
        seq: u64,
        handle: deno_core::v8::IsolateHandle,
        render: impl Future<Output = Result<T, RenderError>>,
    ) -> (Result<T, RenderError>, Option<Fired>) {
        let deadline = job.enqueued + self.limits.timeout;
        let timeout = || RenderError::Timeout {
            bundle: job.bundle.to_string(),
            page: job.page.clone(),
            ms: self.limits.timeout.as_millis() as u64,
        };
        let Some(remaining) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return (Err(timeout()), None); // it spent its whole deadline waiting in the queue
        };
        self.limits.watch.arm(seq, deadline, job.cpu_budget, handle);
        let outcome = tokio::time::timeout(remaining, render).await;
        let fired = self.limits.watch.disarm(seq);
        let result = match (outcome, fired) {
            (Err(_), _) | (Ok(Err(_)), Some(Fired::Deadline)) => Err(timeout()),
            (Ok(Err(_)), Some(Fired::Cpu)) => Err(RenderError::CpuBudget {
                bundle: job.bundle.to_string(),
                page: job.page.clone(),
                ms: job.cpu_budget.as_millis() as u64,
            }),
            (Ok(result), _) => result,
        };
        (result, fired)
    }

    /// A fresh isolate for `bundle`, retried with backoff while it cannot be created (a worker
    /// that was `counted` alive counts as missing meanwhile).
    async fn create_until_it_works(&self, snapshot: &BundleSnapshot, bundle: &str, counted: bool) -> Isolate {
        let mut backoff = Duration::from_millis(50);
        let mut missing: Option<AliveWhile> = None;
        loop {
            match Isolate::new(snapshot.bytes, bundle, self.limits.max_heap) {
                Ok(isolate) => return isolate,
                Err(e) => {
                    tracing::error!(worker = self.index, %bundle, error = %e, ?backoff, "cannot create an isolate; retrying");
                    if counted {
                        missing.get_or_insert_with(|| AliveWhile::new(self, false));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// A render that ended well: a whole page, or the end of a stream whose head and chunks went
/// out already (the time spent in the isolate).
enum Done {
    Whole(crate::abi::Rendered),
    Streamed(std::time::Duration),
}

/// Answers the caller of a render. A whole page for a streaming caller (its bundle has no
/// `renderStream`) goes as a head and one chunk; a streaming render's failure ends its frames.
fn answer(reply: Reply, result: Result<Done, RenderError>) {
    match (reply, result) {
        (Reply::Whole(reply), Ok(Done::Whole(rendered))) => {
            let _ = reply.send(Ok(rendered));
        }
        (Reply::Whole(reply), Ok(Done::Streamed(_))) => {
            let _ = reply.send(Err(RenderError::Setup("a buffered render was streamed".into())));
        }
        (Reply::Whole(reply), Err(error)) => {
            let _ = reply.send(Err(error));
        }
        (Reply::Stream(frames), Ok(Done::Whole(rendered))) => {
            let _ = frames.send(Frame::Head { status: rendered.status, headers: rendered.headers });
            let _ = frames.send(Frame::Chunk(Bytes::from(rendered.html.into_bytes())));
            let _ = frames.send(Frame::Done(rendered.elapsed));
        }
        (Reply::Stream(frames), Ok(Done::Streamed(elapsed))) => {
            let _ = frames.send(Frame::Done(elapsed));
        }
        (Reply::Stream(frames), Err(error)) => {
            let _ = frames.send(Frame::Failed(error));
        }
    }
}

/// Moves the count of workers able to render ([`PoolStats::alive`], and the workers and
/// isolates alive in the metrics) by one worker for as long as it lives: up while a worker
/// serves, down while a counted worker cannot create an isolate.
struct AliveWhile<'a> {
    worker: &'a Worker,
    up: bool,
}

impl<'a> AliveWhile<'a> {
    fn new(worker: &'a Worker, up: bool) -> Self {
        Self::shift(worker, up);
        Self { worker, up }
    }

    fn shift(worker: &Worker, up: bool) {
        let (metrics, isolates) = (&worker.metrics, worker.snapshots.len() as f64);
        if up {
            worker.stats.alive.fetch_add(1, Ordering::Relaxed);
            metrics.workers_alive.increment(1.0);
            metrics.isolates_alive.increment(isolates);
        } else {
            worker.stats.alive.fetch_sub(1, Ordering::Relaxed);
            metrics.workers_alive.decrement(1.0);
            metrics.isolates_alive.decrement(isolates);
        }
    }
}

impl Drop for AliveWhile<'_> {
    fn drop(&mut self) {
        Self::shift(self.worker, !self.up);
    }
}

/// How long a worker that just finished keeps looking for the next job before it parks:
/// waking a parked thread (an idle vCPU, on a VM) costs tens of microseconds per render.
const SPIN: Duration = Duration::from_micros(50);

async fn next_job(queue: &async_channel::Receiver<Work>) -> Option<Work> {
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

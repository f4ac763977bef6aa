//! Admission to the render queue: a job is queued only if the queue has room in count, in
//! bytes (the inputs waiting), and in its lane (one route may hold at most a share of the
//! queue, so a flood of one page cannot keep the others out). A job carries a [`Ticket`]
//! that gives its room back when a worker takes it, or when it is dropped unrun.

use super::RenderError;
use super::stream::FrameSender;
use crate::abi::Rendered;
use crate::metrics::PoolMetrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a worker takes from the queue.
pub(crate) enum Work {
    /// A render.
    Render(Job),
    /// Fault injection for tests: the worker that takes it panics.
    Panic,
}

/// One render request.
pub(crate) struct Job {
    pub bundle: Arc<str>,
    pub page: String,
    pub input: String,
    /// When it was queued: the wait counts toward its deadline.
    pub enqueued: Instant,
    /// Its CPU budget.
    pub cpu_budget: Duration,
    pub reply: Reply,
    /// Its room in the queue, given back when a worker takes the job.
    pub ticket: Option<Ticket>,
}

/// Where a job's page goes.
pub(crate) enum Reply {
    /// All at once, when the render is over.
    Whole(oneshot::Sender<Result<Rendered, RenderError>>),
    /// Head, chunks and end as the render produces them.
    Stream(FrameSender),
}

impl Reply {
    /// The caller went away.
    pub fn is_closed(&self) -> bool {
        match self {
            Reply::Whole(reply) => reply.is_closed(),
            Reply::Stream(frames) => frames.is_closed(),
        }
    }
}

/// Room in the queue for one job.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    lane: Option<Arc<str>>,
    bytes: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        self.admission.metrics.queue_depth.decrement(1.0);
        self.admission.metrics.queue_bytes.decrement(self.bytes as f64);
        if let Some(lane) = &self.lane {
            let mut lanes = self.admission.lanes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = lanes.get_mut(lane) {
                *n -= 1;
                if *n == 0 {
                    lanes.remove(lane);
                }
            }
        }
    }
}

/// The queue's bounds besides its count.
pub(crate) struct Admission {
    lanes: Mutex<HashMap<Arc<str>, usize>>,
    bytes: AtomicUsize,
    lane_limit: usize,
    byte_limit: usize,
    /// Where the depth and bytes waiting are recorded (each ticket moves them while it lives).
    metrics: Arc<PoolMetrics>,
}

impl Admission {
    /// A lane may hold `lane_limit` queued jobs; all jobs together `byte_limit` bytes of input.
    pub fn new(lane_limit: usize, byte_limit: usize, metrics: Arc<PoolMetrics>) -> Arc<Self> {
        Arc::new(Self { lanes: Mutex::default(), bytes: AtomicUsize::new(0), lane_limit, byte_limit, metrics })
    }

    /// Room for a job of `bytes` in `lane`, or why there is none.
    pub fn admit(self: &Arc<Self>, lane: Option<Arc<str>>, bytes: usize) -> Result<Ticket, RenderError> {
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > self.byte_limit {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(RenderError::QueueBytes { limit: self.byte_limit });
        }
        // From here the ticket owns the bytes: dropping it on an error below gives them back.
        self.metrics.queue_depth.increment(1.0);
        self.metrics.queue_bytes.increment(bytes as f64);
        let mut ticket = Ticket { admission: self.clone(), lane: None, bytes };
        if let Some(lane) = lane {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let n = lanes.entry(lane.clone()).or_insert(0);
            if *n >= self.lane_limit {
                return Err(RenderError::LaneFull { lane: lane.to_string(), limit: self.lane_limit });
            }
            *n += 1;
            ticket.lane = Some(lane);
        }
        Ok(ticket)
    }

    /// Bytes of input waiting now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_holds_its_share_and_bytes_are_bounded() {
        let admission = Admission::new(2, 100, Arc::default());
        let lane = || Some(Arc::<str>::from("/loop"));
        let a = admission.admit(lane(), 10).unwrap();
        let _b = admission.admit(lane(), 10).unwrap();
        assert!(matches!(admission.admit(lane(), 10), Err(RenderError::LaneFull { limit: 2, .. })));
        let _other = admission.admit(Some("/good".into()), 10).unwrap();
        drop(a);
        let _c = admission.admit(lane(), 10).unwrap();
        assert!(matches!(admission.admit(None, 71), Err(RenderError::QueueBytes { limit: 100 })));
        assert_eq!(admission.bytes(), 30, "a refused job keeps no bytes");
        let _d = admission.admit(None, 70).unwrap();
    }
}

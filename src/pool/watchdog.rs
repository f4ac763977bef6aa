//! Per-render limits for JavaScript that never yields: a wall deadline and a CPU budget. A
//! render that awaits (timers, a promise) is bounded by a tokio timeout on its worker; one
//! stuck in a synchronous loop never lets that timeout run, so one watchdog thread per pool
//! calls V8's `terminate_execution` on its isolate when its deadline passes or when the
//! worker thread's CPU time since the render started exceeds the render's budget. A render
//! that waits uses wall time, not CPU. The worker then replaces the isolate.
//!
//! Arming costs the worker two uncontended lock/unlock pairs and one clock read per render
//! and never wakes the watchdog, which ticks at a tenth of the smaller limit (at most every
//! 50 ms): a stuck render is stopped within about 10 % of its limit.

use deno_core::v8;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which limit the watchdog enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fired {
    /// The wall-clock deadline.
    Deadline,
    /// The CPU budget.
    Cpu,
}

/// A render in flight.
#[derive(Clone, Copy)]
struct Armed {
    seq: u64,
    deadline: Instant,
    cpu_start: Duration,
    cpu_budget: Duration,
}

/// What one worker is rendering now.
#[derive(Default)]
struct Slot {
    armed: Option<Armed>,
    /// The isolate of the render in flight.
    handle: Option<v8::IsolateHandle>,
    /// The worker thread's CPU clock.
    clock: Option<libc::clockid_t>,
    /// The last render the watchdog stopped, and why.
    fired: Option<(u64, Fired)>,
}

/// CPU time consumed by the thread whose clock is `clock`.
fn cpu_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; an invalid clock returns an error.
    let ok = unsafe { libc::clock_gettime(clock, &mut ts) } == 0;
    ok.then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The CPU clock of the calling thread, readable from other threads.
fn this_thread_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self() is the calling thread; `clock` is a valid place to write.
    let ok = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0;
    ok.then_some(clock)
}

/// One worker's view of the watchdog.
pub(crate) struct Watch {
    slot: Arc<Mutex<Slot>>,
}

impl Watch {
    /// Called on the worker thread once: the watchdog reads this thread's CPU clock.
    pub fn on_this_thread(&self) {
        self.lock().clock = this_thread_clock();
    }

    /// Render `seq` starts on the isolate of `handle`; it must end by `deadline` and use at
    /// most `cpu_budget` of this thread's CPU time.
    pub fn arm(&self, seq: u64, deadline: Instant, cpu_budget: Duration, handle: v8::IsolateHandle) {
        let mut slot = self.lock();
        let cpu_start = slot.clock.and_then(cpu_time).unwrap_or_default();
        slot.armed = Some(Armed { seq, deadline, cpu_start, cpu_budget });
        slot.handle = Some(handle);
    }

    /// Render `seq` ended. Returns which limit the watchdog stopped it for, if it did.
    pub fn disarm(&self, seq: u64) -> Option<Fired> {
        let mut slot = self.lock();
        slot.armed = None;
        slot.fired.filter(|(fired, _)| *fired == seq).map(|(_, why)| why)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watchdog thread.
pub(crate) struct Watchdog {
    slots: Vec<Arc<Mutex<Slot>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread for `workers` workers whose renders may take `timeout` and use
    /// `cpu_budget` (the defaults; the tick follows the smaller).
    pub fn start(workers: usize, timeout: Duration, cpu_budget: Duration) -> std::io::Result<Self> {
        let slots: Vec<_> = (0..workers).map(|_| Arc::new(Mutex::new(Slot::default()))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let tick = (timeout.min(cpu_budget) / 10).clamp(Duration::from_millis(1), Duration::from_millis(50));
        let (watched, stopping) = (slots.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("mizan-watchdog".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                std::thread::park_timeout(tick);
                let now = Instant::now();
                for slot in &watched {
                    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(armed) = slot.armed else { continue };
                    let why = if armed.deadline <= now {
                        Some(Fired::Deadline)
                    } else {
                        let used = slot.clock.and_then(cpu_time).map(|t| t.saturating_sub(armed.cpu_start));
                        used.filter(|used| *used > armed.cpu_budget).map(|_| Fired::Cpu)
                    };
                    if let (Some(why), Some(handle)) = (why, &slot.handle) {
                        // Under the slot's lock: the worker cannot arm its next render before
                        // it has seen this one was terminated, and it replaces the isolate.
                        handle.terminate_execution();
                        slot.fired = Some((armed.seq, why));
                        slot.armed = None;
                    }
                }
            }
        })?;
        Ok(Self { slots, stop, thread: Some(thread) })
    }

    /// Worker `index`'s side.
    pub fn watch(&self, index: usize) -> Watch {
        Watch { slot: self.slots[index].clone() }
    }

    /// Ends the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

//! Per-render deadlines for JavaScript that never yields. A render that awaits (timers, a
//! promise) is bounded by a tokio timeout on its worker; one stuck in a synchronous loop never
//! lets that timeout run, so one watchdog thread per pool calls V8's `terminate_execution`
//! on its isolate when its deadline passes. The worker then replaces the isolate.
//!
//! Arming costs the worker two uncontended lock/unlock pairs per render and never wakes the
//! watchdog, which ticks at a tenth of the timeout (at most every 50 ms): a stuck render is
//! stopped within about 10 % of its deadline.

use deno_core::v8;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one worker is rendering now.
#[derive(Default)]
struct Slot {
    /// The render in flight: its sequence number and deadline.
    armed: Option<(u64, Instant)>,
    /// The isolate of the render in flight.
    handle: Option<v8::IsolateHandle>,
}

/// One worker's view of the watchdog.
pub(crate) struct Watch {
    slot: Arc<Mutex<Slot>>,
    fired: Arc<AtomicU64>,
}

impl Watch {
    /// Render `seq` starts on the isolate of `handle` and must end within `timeout`.
    pub fn arm(&self, seq: u64, timeout: Duration, handle: v8::IsolateHandle) {
        let mut slot = self.lock();
        slot.armed = Some((seq, Instant::now() + timeout));
        slot.handle = Some(handle);
    }

    /// Render `seq` ended. Returns whether the watchdog terminated it.
    pub fn disarm(&self, seq: u64) -> bool {
        self.lock().armed = None;
        self.fired.load(Ordering::SeqCst) == seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watchdog thread.
pub(crate) struct Watchdog {
    slots: Vec<(Arc<Mutex<Slot>>, Arc<AtomicU64>)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread for `workers` workers whose renders may take `timeout`.
    pub fn start(workers: usize, timeout: Duration) -> std::io::Result<Self> {
        let slots: Vec<_> =
            (0..workers).map(|_| (Arc::new(Mutex::new(Slot::default())), Arc::new(AtomicU64::new(0)))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let tick = (timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(50));
        let (watched, stopping) = (slots.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("mizan-watchdog".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                std::thread::park_timeout(tick);
                let now = Instant::now();
                for (slot, fired) in &watched {
                    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((seq, deadline)) = slot.armed
                        && deadline <= now
                        && let Some(handle) = &slot.handle
                    {
                        // Under the slot's lock: the worker cannot arm its next render before
                        // it has seen this one was terminated, and it replaces the isolate.
                        fired.store(seq, Ordering::SeqCst);
                        handle.terminate_execution();
                        slot.armed = None;
                    }
                }
            }
        })?;
        Ok(Self { slots, stop, thread: Some(thread) })
    }

    /// Worker `index`'s side.
    pub fn watch(&self, index: usize) -> Watch {
        let (slot, fired) = &self.slots[index];
        Watch { slot: slot.clone(), fired: fired.clone() }
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

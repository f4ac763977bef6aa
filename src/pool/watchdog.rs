//! Per-render deadlines for JavaScript that never yields. A render that awaits (timers, a
//! promise) is bounded by a tokio timeout on its worker; one stuck in a synchronous loop never
//! lets that timeout run, so one watchdog thread per pool calls V8's `terminate_execution`
//! on its isolate when its deadline passes. The worker then replaces the isolate.

use deno_core::v8;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) enum Watch {
    /// Worker `worker` starts render `seq`, to end by `deadline`.
    Arm { worker: usize, seq: u64, deadline: Instant, handle: v8::IsolateHandle },
    /// Render `seq` of `worker` ended.
    Disarm { worker: usize, seq: u64 },
}

/// The watchdog thread and, per worker, the last render it terminated.
pub(crate) struct Watchdog {
    pub tx: mpsc::Sender<Watch>,
    pub fired: Arc<[AtomicU64]>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(workers: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Watch>();
        let fired: Arc<[AtomicU64]> = (0..workers).map(|_| AtomicU64::new(0)).collect();
        let flags = fired.clone();
        let thread = std::thread::Builder::new().name("mizan-watchdog".into()).spawn(move || {
            let mut armed: HashMap<usize, (u64, Instant, v8::IsolateHandle)> = HashMap::new();
            loop {
                let next = armed.values().map(|(_, deadline, _)| *deadline).min();
                let message = match next {
                    Some(deadline) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now())),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match message {
                    Ok(Watch::Arm { worker, seq, deadline, handle }) => {
                        armed.insert(worker, (seq, deadline, handle));
                    }
                    Ok(Watch::Disarm { worker, seq }) => {
                        if armed.get(&worker).is_some_and(|(s, _, _)| *s == seq) {
                            armed.remove(&worker);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                let now = Instant::now();
                armed.retain(|worker, (seq, deadline, handle)| {
                    if *deadline > now {
                        return true;
                    }
                    flags[*worker].store(*seq, Ordering::SeqCst);
                    handle.terminate_execution();
                    false
                });
            }
        })?;
        Ok(Self { tx, fired, thread: Some(thread) })
    }

    /// Ends the thread; call once the workers (and their senders) are gone.
    pub fn stop(&mut self) {
        // Replacing the pool's sender drops it; the thread sees the channel close.
        self.tx = mpsc::channel().0;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The deadline of a render that starts now.
pub(crate) fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

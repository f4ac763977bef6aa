//! Request coalescing: concurrent misses for one key share one flight (one origin fetch,
//! one render). The flight runs as its own task, so a client that goes away does not cancel
//! the render the others wait for, and it leaves the table when it lands, whatever its
//! outcome: the next miss after that starts a new flight.

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

type Flight<T> = Shared<BoxFuture<'static, Option<T>>>;

/// In-flight work by key. `T` is the shared outcome (cheap to clone: an `Arc` or a `Result`
/// of `Arc`s).
pub struct Coalescer<T> {
    flights: Arc<Mutex<HashMap<String, Flight<T>>>>,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Self { flights: Arc::default() }
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// Joins the flight for `key`, starting it with `work` if there is none. Returns the
    /// outcome, and whether this call started the flight. `None` only if the flight's task
    /// panicked.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> (Option<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (flight, leader) = self.join(key, work);
        (flight.await, leader)
    }

    /// Starts the flight for `key` if there is none, without waiting for it (background
    /// revalidation). Returns whether it started one.
    pub fn spawn<F>(&self, key: &str, work: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.join(key, work).1
    }

    fn join<F>(&self, key: &str, work: impl FnOnce() -> F) -> (Flight<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(key) {
            return (flight.clone(), false);
        }
        // The flight is in the table before its task can finish, so the task's removal
        // always finds it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let flight: Flight<T> = async move { rx.await.ok() }.boxed().shared();
        flights.insert(key.to_string(), flight.clone());
        let leave = Leave { table: self.flights.clone(), key: key.to_string() };
        let work = work();
        tokio::spawn(async move {
            let outcome = work.await;
            // Leaves the table before answering; if the work panicked, the guard's drop does
            // it during unwinding and the waiters get `None`.
            drop(leave);
            let _ = tx.send(outcome);
        });
        (flight, true)
    }

    /// Callers waiting on the flight for `key` (0 if none is in flight).
    pub fn waiting(&self, key: &str) -> usize {
        let flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // The table's own handle is not a waiter.
        flights.get(key).and_then(Shared::strong_count).map_or(0, |n| n.saturating_sub(1))
    }

    /// Waits for the flight of `key`, if one is in the air.
    pub async fn settle(&self, key: &str) {
        let flight = self.flights.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        if let Some(flight) = flight {
            flight.await;
        }
    }

    /// Keys in flight.
    pub fn keys(&self) -> Vec<String> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }
}

/// Removes a flight from the table when dropped: when it lands, or when its work panics.
struct Leave<T> {
    table: Arc<Mutex<HashMap<String, Flight<T>>>>,
    key: String,
}

impl<T> Drop for Leave<T> {
    fn drop(&mut self) {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_flight() {
        let coalescer = Arc::new(Coalescer::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (coalescer, runs, mut gate) = (coalescer.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                coalescer
                    .run("k", move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        42
                    })
                    .await
            }));
        }
        crate::testing::wait_until("ten callers waiting on one flight", crate::testing::DEADLINE, || {
            std::future::ready(coalescer.waiting("k") == 10)
        })
        .await;
        release.send(true).unwrap();
        let mut leaders = 0;
        for task in tasks {
            let (outcome, leader) = task.await.unwrap();
            assert_eq!(outcome, Some(42));
            leaders += leader as usize;
        }
        assert_eq!((runs.load(Ordering::SeqCst), leaders), (1, 1));
        assert!(coalescer.keys().is_empty(), "the flight leaves the table when it lands");
        // The next miss flies again.
        assert_eq!(coalescer.run("k", || async { 7 }).await, (Some(7), true));
    }
}

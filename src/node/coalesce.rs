//! Request coalescing: concurrent misses for one key share one flight (one origin fetch,
//! one render). The flight runs as its own task, so a client that goes away does not cancel
//! the render the others wait for, and it leaves the table when it lands, whatever its
//! outcome: the next miss after that starts a new flight. A flight may answer before it is
//! over ([`Pilot`]: a page whose body still streams); it then stays in the table, and callers
//! that join it get the same answer, until it lands.

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

type SharedFuture<T> = Shared<BoxFuture<'static, T>>;

/// One flight in the table.
struct Flight<T> {
    /// Its outcome, for every caller that joins it.
    outcome: SharedFuture<Option<T>>,
    /// Resolves when it has left the table.
    landed: SharedFuture<()>,
}

impl<T> Clone for Flight<T> {
    fn clone(&self) -> Self {
        Self { outcome: self.outcome.clone(), landed: self.landed.clone() }
    }
}

type Table<T> = Arc<Mutex<HashMap<String, Flight<T>>>>;

/// In-flight work by key. `T` is the shared outcome (cheap to clone: an `Arc` or a `Result`
/// of `Arc`s).
pub struct Coalescer<T> {
    flights: Table<T>,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Self { flights: Arc::default() }
    }
}

/// The work of a flight, as [`Coalescer::run_piloted`] gives it: it may answer the callers
/// before it is over (a page whose body still streams), and leave the table when it chooses.
/// Whatever it did not do is done when the work returns: leave, then answer with its result.
pub struct Pilot<T> {
    inner: Arc<Mutex<PilotState<T>>>,
}

impl<T> Clone for Pilot<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct PilotState<T> {
    answer: Option<tokio::sync::oneshot::Sender<T>>,
    leave: Option<Leave<T>>,
}

impl<T> Pilot<T> {
    fn state(&self) -> std::sync::MutexGuard<'_, PilotState<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives every caller of the flight, present and to come, its outcome now. Only the first
    /// answer counts.
    pub fn answer(&self, outcome: T) {
        if let Some(answer) = self.state().answer.take() {
            let _ = answer.send(outcome);
        }
    }

    /// Leaves the table: the next caller for the key starts a new flight.
    pub fn land(&self) {
        let leave = self.state().leave.take();
        drop(leave);
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
        self.run_piloted(key, |_| work()).await
    }

    /// As [`Coalescer::run`], for work that may answer before it is over ([`Pilot`]): the
    /// flight stays in the table, so later callers join it and get the same outcome, until
    /// the work lands it or returns.
    pub async fn run_piloted<F>(&self, key: &str, work: impl FnOnce(Pilot<T>) -> F) -> (Option<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (flight, leader) = self.join(key, work);
        (flight.outcome.await, leader)
    }

    /// Starts the flight for `key` if there is none, without waiting for it (background
    /// revalidation). Returns whether it started one.
    pub fn spawn<F>(&self, key: &str, work: impl FnOnce() -> F) -> bool
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.join(key, |_| work()).1
    }

    fn join<F>(&self, key: &str, work: impl FnOnce(Pilot<T>) -> F) -> (Flight<T>, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(key) {
            return (flight.clone(), false);
        }
        // The flight is in the table before its task can finish, so the task's removal
        // always finds it.
        let (answer, outcome) = tokio::sync::oneshot::channel();
        let (landing, landed) = tokio::sync::oneshot::channel::<()>();
        let flight = Flight {
            outcome: async move { outcome.await.ok() }.boxed().shared(),
            landed: async move {
                let _ = landed.await;
            }
            .boxed()
            .shared(),
        };
        flights.insert(key.to_string(), flight.clone());
        let leave = Leave { table: self.flights.clone(), key: key.to_string(), _landing: landing };
        let pilot = Pilot { inner: Arc::new(Mutex::new(PilotState { answer: Some(answer), leave: Some(leave) })) };
        let work = work(pilot.clone());
        tokio::spawn(async move {
            let outcome = work.await;
            // Leaves the table before answering; if the work panicked, the pilot's drop does
            // it during unwinding and the waiters get `None`.
            pilot.land();
            pilot.answer(outcome);
        });
        (flight, true)
    }

    /// Callers waiting on the flight for `key` (0 if none is in flight).
    pub fn waiting(&self, key: &str) -> usize {
        let flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // The table's own handle is not a waiter.
        flights.get(key).and_then(|f| f.outcome.strong_count()).map_or(0, |n| n.saturating_sub(1))
    }

    /// Waits until the flight of `key`, if one is in the air, has left the table.
    pub async fn settle(&self, key: &str) {
        let flight = self.flights.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        if let Some(flight) = flight {
            flight.landed.await;
        }
    }

    /// Keys in flight.
    pub fn keys(&self) -> Vec<String> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }
}

/// Removes a flight from the table when dropped: when it lands, or when its work panics.
/// Then its `landed` future resolves.
struct Leave<T> {
    table: Table<T>,
    key: String,
    _landing: tokio::sync::oneshot::Sender<()>,
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

    #[tokio::test]
    async fn a_piloted_flight_answers_early_and_stays_joinable_until_it_lands() {
        let coalescer = Arc::new(Coalescer::<usize>::default());
        let (release, mut gate) = tokio::sync::watch::channel(false);
        let (outcome, leader) = coalescer
            .run_piloted("k", move |pilot| async move {
                pilot.answer(1);
                let _ = gate.wait_for(|open| *open).await;
                pilot.land();
                2
            })
            .await;
        assert_eq!((outcome, leader), (Some(1), true), "answered before the work is over");
        // Still in the air: a caller now joins it and gets the same answer.
        let joined = coalescer.run("k", || async { 3 }).await;
        assert_eq!(joined, (Some(1), false));
        let settled = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.settle("k").await }
        });
        assert!(!settled.is_finished());
        release.send(true).unwrap();
        settled.await.unwrap();
        assert!(coalescer.keys().is_empty(), "landed");
        assert_eq!(coalescer.run("k", || async { 4 }).await, (Some(4), true));
    }
}

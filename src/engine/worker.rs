//! A worker thread: pop a connection, drive it (see `driver.rs`), and lead the
//! group commits of the batchers.
//!
//! A request staged for a group commit waits in its lane's batcher as a whole
//! connection; the worker that commits a batch answers every connection of it
//! itself (they go on its `ready` list, no wake-up per request), and a worker with
//! nothing else to do commits a waiting batch once it is due.
//!
//! A panic anywhere in serving costs the connection being served, never the
//! thread: the driver runs dispatching under `catch_unwind`, batch commits run
//! under it here (every request of the batch: 500, then close), and this loop
//! catches whatever else unwinds, counts it and goes on.

use super::batch::{Committed, Lead};
use super::conn::{Conn, Grant, Phase};
use super::driver::{panic_message, Driven, Driver};
use super::queue::Popped;
use super::shared::{Shared, Waiter};
use crate::api::error::ApiError;
use crate::api::route::Lane;
use crate::api::Api;
use crate::obs::stats::Stats;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// What one staged request gets from its batch: a value or id, or an error.
type Outcome = Result<i64, ApiError>;

pub(crate) struct Worker {
    /// This worker's consumer number at the task queue.
    id: usize,
    shared: Arc<Shared>,
    driver: Driver,
    /// Connections of a batch this worker committed, to answer before anything else.
    ready: VecDeque<Box<Conn>>,
    /// When the current `serve` began (it counts as busy until it ends; a panic
    /// that cuts it short is accounted for in `run`).
    busy_since: Option<Instant>,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>, api: Api) -> Worker {
        Worker {
            id,
            driver: Driver::new(id, Arc::clone(&shared), api),
            shared,
            ready: VecDeque::with_capacity(64),
            busy_since: None,
        }
    }

    /// Serves connections until the queue is closed and empty. A panic that
    /// escapes serving drops the connection it was serving (closing it) and is
    /// logged and counted; the loop goes on.
    pub fn run(mut self) {
        loop {
            let served = catch_unwind(AssertUnwindSafe(|| match self.next_task() {
                Some(conn) => {
                    let now = Instant::now();
                    let wait = now.saturating_duration_since(conn.queued_at);
                    self.shared.shedder.observe(wait, now);
                    if self.shared.config.metrics {
                        self.shared.metrics.worker(self.id).queue_wait(wait);
                    }
                    self.serve(Some(conn), now);
                    true
                }
                None => false,
            }));
            match served {
                Ok(true) => {}
                Ok(false) => return,
                Err(payload) => {
                    if let Some(started) = self.busy_since.take() {
                        self.end_busy(started);
                    }
                    self.shared.stats.panics.fetch_add(1, Relaxed);
                    tracing::error!(
                        "a worker caught a panic ({}); the connection it was serving is closed",
                        panic_message(&*payload)
                    );
                }
            }
        }
    }

    /// The next connection to drive; `None` once the queue is closed and drained.
    /// With the queue empty, batches waiting in the batchers come first: this
    /// worker commits them when they are due, and waits for new work only until then.
    fn next_task(&mut self) -> Option<Box<Conn>> {
        loop {
            if !self.ready.is_empty() {
                // Left over from a panic in the middle of answering a batch.
                self.serve(None, Instant::now());
            }
            if let Some(conn) = self.shared.queue.try_pop() {
                return Some(conn);
            }
            let deadline = self.lead_batches();
            match self.shared.queue.pop_until(self.id, deadline) {
                Popped::Item(conn) => return Some(conn),
                Popped::TimedOut => {}
                Popped::Closed => return None,
            }
        }
    }

    /// Commits and answers waiting batches while any is due. Returns when the next
    /// waiting batch will be due, if any waits.
    fn lead_batches(&mut self) -> Option<Instant> {
        loop {
            let (led, next_due) = self.lead_all();
            if !led {
                return next_due;
            }
            self.serve(None, Instant::now());
        }
    }

    /// Commits every lane's waiting batch that is due; its connections become
    /// ready. Returns whether any was, and when the next one will be.
    fn lead_all(&mut self) -> (bool, Option<Instant>) {
        let mut led = false;
        let mut next_due: Option<Instant> = None;
        for lane in Lane::ALL {
            if !self.shared.batcher(lane).has_pending() {
                continue;
            }
            match self.lead(lane) {
                Lead::Done(batch) => {
                    self.resume(batch);
                    led = true;
                }
                Lead::WaitUntil(due) => next_due = Some(next_due.map_or(due, |d| d.min(due))),
                Lead::Idle => {}
            }
        }
        (led, next_due)
    }

    /// Drives `conn` and the connections of every batch this worker commits
    /// meanwhile (a batch that comes due after a request is committed at once).
    /// `started`: now, as the caller already read it.
    fn serve(&mut self, conn: Option<Box<Conn>>, started: Instant) {
        self.shared.stats.busy.fetch_add(1, Relaxed);
        self.busy_since = Some(started);
        if let Some(conn) = conn {
            self.drive(conn);
        }
        loop {
            while let Some(conn) = self.ready.pop_front() {
                self.drive(conn);
            }
            if !self.lead_all().0 {
                break;
            }
        }
        if let Some(started) = self.busy_since.take() {
            self.end_busy(started);
        }
    }

    /// Counts the end of one `serve`: not busy any more, one task, its time.
    fn end_busy(&self, started: Instant) {
        let stats = &self.shared.stats;
        stats.busy.fetch_sub(1, Relaxed);
        stats.tasks.fetch_add(1, Relaxed);
        stats
            .task_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
    }

    fn drive(&mut self, conn: Box<Conn>) {
        if let Driven::Batch(lane, waiter) = self.driver.drive(conn) {
            self.submit(lane, waiter);
        }
    }

    /// Commits the lane's waiting requests if their batch is due. The caller is
    /// busy when its queue holds more connections (which may hold more requests for
    /// the batch).
    fn lead(&self, lane: Lane) -> Lead<Waiter, Outcome, ApiError> {
        let busy = !self.shared.queue.is_empty();
        let (api, stats) = (self.driver.api(), &*self.shared.stats);
        let metrics = self.shared.metrics.worker(self.id);
        self.shared.batcher(lane).lead(Instant::now(), busy, |items| {
            metrics.batch(items.len());
            commit(api, stats, lane, items)
        })
    }

    /// Hands a staged request to its lane's batcher; if this worker leads the batch,
    /// its connections become ready.
    fn submit(&mut self, lane: Lane, waiter: Waiter) {
        let busy = !self.shared.queue.is_empty();
        let (api, stats) = (self.driver.api(), &*self.shared.stats);
        let metrics = self.shared.metrics.worker(self.id);
        if let Some(batch) = self.shared.batcher(lane).submit(waiter, busy, |items| {
            metrics.batch(items.len());
            commit(api, stats, lane, items)
        }) {
            self.resume(batch);
        }
    }

    fn resume(&mut self, batch: Committed<Waiter, Outcome, ApiError>) {
        for (waiter, result) in batch {
            let mut conn = waiter.conn;
            conn.phase = Phase::Granted(Grant::Committed(result.and_then(|r| r)));
            self.ready.push_back(conn);
        }
    }
}

/// Commits one batch through the API; a panic in it fails the batch (each request
/// gets 500 and its connection closes) instead of unwinding through the batcher.
fn commit(api: &Api, stats: &Stats, lane: Lane, items: &[Waiter]) -> Result<Vec<Outcome>, ApiError> {
    let outcomes = catch_unwind(AssertUnwindSafe(|| {
        api.commit(lane, items.iter().map(|w| &w.staged))
    }))
    .unwrap_or_else(|payload| {
        stats.panics.fetch_add(1, Relaxed);
        Err(ApiError::Panicked(panic_message(&*payload)))
    })?;
    if outcomes.len() != items.len() {
        return Err(ApiError::Internal(format!(
            "a batch of {} got {} outcomes",
            items.len(),
            outcomes.len()
        )));
    }
    Ok(outcomes)
}

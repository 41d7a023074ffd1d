//! [`Shared`]: everything the poller and the workers share, and what becomes of a
//! released hashing permit.
//!
//! Shutdown is a flag plus a wake-up of the poller: the poller stops accepting,
//! closes idle connections, waits for the busy ones (up to the grace period), then
//! closes the task queue so the workers end.

use super::batch::Batcher;
use super::buffers::BufferPool;
use super::conn::{Conn, Grant, Phase};
use super::gate::{Gate, Permit, ReleasePermit};
use super::queue::TaskQueue;
use super::registry::Registry;
use crate::api::route::Lane;
use crate::api::Staged;
use crate::config::Config;
use crate::obs::access_log::AccessLog;
use crate::obs::metrics::{Exposition, Metrics};
use crate::obs::stats::Stats;
use crate::traffic::shed::Shedder;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A connection whose request waits for its batch, with what it will commit.
pub(crate) struct Waiter {
    pub conn: Box<Conn>,
    pub staged: Staged,
}

/// State shared by the poller and the workers.
pub(crate) struct Shared {
    pub config: Config,
    pub registry: Arc<Registry<Conn>>,
    /// Connections ready to be served; holds every connection at once if need be.
    pub queue: TaskQueue<Box<Conn>>,
    /// Bounds concurrent password hashing; connections wait here, not workers.
    pub gate: Gate<Box<Conn>>,
    /// Requests waiting for their group commit, one batcher per lane
    /// (`Lane::index`).
    pub batchers: [Batcher<Waiter>; Lane::ALL.len()],
    pub buffers: BufferPool,
    pub stats: Arc<Stats>,
    /// Per-worker request figures for /metrics.
    pub metrics: Arc<Metrics>,
    /// Where answered requests are logged (`--access-log`), if anywhere.
    pub access_log: Option<AccessLog>,
    /// Decides from queue waits whether new requests are refused.
    pub shedder: Shedder,
    shutdown: AtomicBool,
    stopped: AtomicBool,
}

impl Shared {
    pub fn new(
        config: Config,
        registry: Arc<Registry<Conn>>,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
    ) -> Shared {
        Shared {
            queue: TaskQueue::with_capacity(config.max_connections, config.threads),
            gate: Gate::new(config.hash_concurrency),
            batchers: Lane::ALL.map(|_| Batcher::new(config.counter_gather)),
            buffers: BufferPool::new(config.threads * 64, config.read_buffer_bytes()),
            stats: Arc::new(Stats::default()),
            metrics,
            access_log,
            shedder: Shedder::new(config.shed_target, config.shed_interval),
            registry,
            shutdown: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            config,
        }
    }

    /// The engine's gauges and counters for /metrics.
    pub fn render_gauges(&self, x: &mut Exposition) {
        let busy = self.stats.busy.load(Ordering::Relaxed);
        let waiting = self.gate.waiting() + self.batchers.iter().map(Batcher::waiting).sum::<usize>();
        x.single(
            "http_server_active_requests",
            "gauge",
            "Requests being served or waiting for a hashing permit or a group commit.",
            (busy + waiting) as f64,
        );
        x.single(
            "crudrs_open_connections",
            "gauge",
            "Client connections open.",
            self.registry.active() as f64,
        );
        x.single(
            "crudrs_queue_depth",
            "gauge",
            "Ready connections waiting in the task queue for a worker.",
            self.queue.len() as f64,
        );
        x.single(
            "crudrs_busy_workers",
            "gauge",
            "Workers serving a connection.",
            busy as f64,
        );
        x.single(
            "crudrs_workers",
            "gauge",
            "Worker threads.",
            self.config.threads as f64,
        );
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                "crudrs_connections_accepted_total",
                "Connections accepted.",
                &self.stats.accepted,
            ),
            (
                "crudrs_connections_refused_total",
                "Connections refused 503 at the connection limit.",
                &self.stats.rejected,
            ),
            (
                "crudrs_request_timeouts_total",
                "Requests answered 408: the head or body did not arrive in time.",
                &self.stats.timeouts,
            ),
            (
                "crudrs_shed_requests_total",
                "Requests refused 503 while shedding load.",
                &self.stats.shed,
            ),
            (
                "crudrs_panics_total",
                "Panics caught while serving (each cost one connection).",
                &self.stats.panics,
            ),
            (
                "crudrs_abandoned_requests_total",
                "Requests dropped unserved because their client had gone.",
                &self.stats.abandoned,
            ),
        ];
        for (name, help, value) in counters {
            x.single(name, "counter", help, value.load(Ordering::Relaxed) as f64);
        }
    }

    /// Puts a connection on the task queue, noting when (for load shedding). A
    /// full or closed queue hands it back.
    pub fn enqueue(&self, conn: Box<Conn>) -> Result<(), Box<Conn>> {
        self.enqueue_at(conn, Instant::now())
    }

    /// [`Shared::enqueue`] with the time already read (the poller reads it once
    /// per wake-up for all its events).
    pub fn enqueue_at(&self, mut conn: Box<Conn>, at: Instant) -> Result<(), Box<Conn>> {
        conn.queued_at = at;
        self.queue.push(conn)
    }

    /// A hashing permit, taken from the gate by the caller, that comes back here
    /// when dropped.
    pub fn permit(self: &Arc<Self>) -> Permit {
        Permit::new(Arc::clone(self) as Arc<dyn ReleasePermit>)
    }

    pub fn batcher(&self, lane: Lane) -> &Batcher<Waiter> {
        &self.batchers[lane.index()]
    }

    /// Asks the server to stop: no new connections, finish what is in flight.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.registry.wake();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// The poller is gone: nothing can be parked any more; workers drain and exit.
    pub fn stop_workers(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.queue.close();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// A released permit passes to the oldest connection waiting in the gate, which
/// is queued to be driven again.
impl ReleasePermit for Shared {
    fn release_permit(self: Arc<Self>) {
        while let Some(mut next) = self.gate.release() {
            if next.io.peer_gone() {
                // Its client closed while it waited: a hash nobody would receive.
                // Dropping it closes the connection; the permit goes on to the next.
                self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                drop(next);
                continue;
            }
            next.phase = Phase::Granted(Grant::Permit(self.permit()));
            // A closed queue (shutdown) drops the connection, which releases again.
            let _ = self.enqueue(next);
            return;
        }
    }
}

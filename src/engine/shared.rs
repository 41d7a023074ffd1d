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
use crate::obs::metrics::{EngineGauges, Metrics};
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

    /// The engine's gauges and counters for /metrics and the dashboard.
    pub fn gauges(&self) -> EngineGauges {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let busy = self.stats.busy.load(Ordering::Relaxed);
        let waiting = self.gate.waiting() + self.batchers.iter().map(Batcher::waiting).sum::<usize>();
        EngineGauges {
            active_requests: (busy + waiting) as u64,
            open_connections: self.registry.active() as u64,
            queue_depth: self.queue.len() as u64,
            busy_workers: busy as u64,
            workers: self.config.threads as u64,
            accepted: load(&self.stats.accepted),
            refused: load(&self.stats.rejected),
            timeouts: load(&self.stats.timeouts),
            shed: self.shedder.refused(),
            panics: load(&self.stats.panics),
            abandoned: load(&self.stats.abandoned),
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

//! [`Shared`]: everything the poller and the workers share, and [`Permit`], one
//! permit of the hashing gate held by a connection.
//!
//! Shutdown is a flag plus a wake-up of the poller: the poller stops accepting,
//! closes idle connections, waits for the busy ones (up to the grace period), then
//! closes the task queue so the workers end.

use super::batch::Batcher;
use super::buffers::BufferPool;
use super::conn::Conn;
use super::gate::Gate;
use super::queue::TaskQueue;
use super::registry::Registry;
use crate::api::route::Lane;
use crate::api::Staged;
use crate::config::Config;
use crate::obs::stats::Stats;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A connection whose request waits for its batch, with what it will commit.
pub(crate) struct Waiter {
    pub conn: Box<Conn>,
    pub staged: Staged,
}

/// State shared by the poller and the workers.
pub(crate) struct Shared {
    pub config: Config,
    pub registry: Arc<Registry>,
    /// Connections ready to be served; holds every connection at once if need be.
    pub queue: TaskQueue<Box<Conn>>,
    /// Bounds concurrent password hashing; connections wait here, not workers.
    pub gate: Gate<Box<Conn>>,
    /// Requests waiting for their group commit, one batcher per lane
    /// (`Lane::index`).
    pub batchers: [Batcher<Waiter>; Lane::ALL.len()],
    pub buffers: BufferPool,
    pub stats: Arc<Stats>,
    shutdown: AtomicBool,
    stopped: AtomicBool,
}

impl Shared {
    pub fn new(config: Config, registry: Arc<Registry>) -> Shared {
        Shared {
            queue: TaskQueue::with_capacity(config.max_connections, config.threads),
            gate: Gate::new(config.hash_concurrency),
            batchers: Lane::ALL.map(|_| Batcher::new(config.counter_gather)),
            buffers: BufferPool::new(config.threads * 64, config.read_buffer_bytes()),
            stats: Arc::new(Stats::default()),
            registry,
            shutdown: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            config,
        }
    }

    pub fn batcher(&self, lane: Lane) -> &Batcher<Waiter> {
        &self.batchers[lane.index()]
    }

    /// Whether requests wait in any batcher (a hint, without locking).
    pub fn batches_pending(&self) -> bool {
        self.batchers.iter().any(Batcher::has_pending)
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

/// One permit of the hashing gate, held by a connection. Dropping it releases the
/// permit; if a connection is waiting, the permit passes to it and it is queued.
pub(crate) struct Permit(Arc<Shared>);

impl Permit {
    pub fn new(shared: Arc<Shared>) -> Permit {
        Permit(shared)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let shared = &self.0;
        while let Some(next) = shared.gate.release() {
            if next.io.peer_gone() {
                // Its client closed while it waited: a hash nobody would receive.
                // Dropping it closes the connection; the permit goes on to the next.
                shared.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                drop(next);
                continue;
            }
            let mut next = next;
            next.phase = super::conn::Phase::Granted(super::conn::Grant::Permit(Permit(Arc::clone(shared))));
            // A closed queue (shutdown) drops the connection, which releases again.
            let _ = shared.queue.push(next);
            return;
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

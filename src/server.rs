//! Start-up and shutdown: applies the schema, builds the shared state, binds the
//! listener, spawns the poller, the workers and the status line, and joins them.
//!
//! [`Shared`] is everything the threads share. Shutdown is a flag plus a wake-up of
//! the poller: the poller stops accepting, closes idle connections, waits for the
//! busy ones (up to the grace period), then closes the task queue so the workers end.

use crate::api::{Api, Passwords, State, TokenCache};
use crate::batch::Batcher;
use crate::buffers::BufferPool;
use crate::config::Config;
use crate::conn::Conn;
use crate::db::{self, Db};
use crate::gate::Gate;
use crate::poller::{self, Registry};
use crate::queue::TaskQueue;
use crate::stats::{self, Stats};
use crate::worker::Worker;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// State shared by the poller and the workers.
pub struct Shared {
    pub config: Config,
    pub registry: Arc<Registry>,
    /// Connections ready to be served; holds every connection at once if need be.
    pub queue: TaskQueue<Box<Conn>>,
    /// Bounds concurrent password hashing; connections wait here, not workers.
    pub gate: Gate<Box<Conn>>,
    /// Connections whose next request is a counter increment, waiting for its batch.
    pub counter: Batcher<Box<Conn>>,
    pub buffers: BufferPool,
    pub stats: Arc<Stats>,
    shutdown: AtomicBool,
    stopped: AtomicBool,
}

impl Shared {
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
pub struct Permit(Arc<Shared>);

impl Permit {
    pub fn new(shared: Arc<Shared>) -> Permit {
        Permit(shared)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let shared = &self.0;
        if let Some(mut next) = shared.gate.release() {
            next.permit = Some(Permit(Arc::clone(shared)));
            // A closed queue (shutdown) drops the connection, which releases again.
            let _ = shared.queue.push(next);
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Applies the schema, binds and spawns every thread.
    pub fn start(config: Config) -> Result<Server, String> {
        db::apply_schema(&config.database_url, config.db_startup_wait)
            .map_err(|e| format!("cannot apply schema.sql: {e}"))?;
        let db = Db::new(&config.database_url, config.db_pool_size, config.db_timeout)
            .map_err(|e| e.to_string())?;
        let passwords = Passwords::new(config.argon2_memory_kib, config.argon2_iterations)?;
        let store = crate::storage::Store::open(&config.data_dir)
            .map_err(|e| format!("cannot use data directory {}: {e}", config.data_dir.display()))?;
        let state = Arc::new(State {
            store,
            events: Default::default(),
            tokens: TokenCache::new(config.token_cache_size),
            passwords,
            db,
            config: config.clone(),
        });

        let listener = poller::bind(config.addr, config.backlog)
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (registry, poll) = Registry::new(config.max_connections).map_err(|e| format!("poller: {e}"))?;
        let registry = Arc::new(registry);
        let shared = Arc::new(Shared {
            queue: TaskQueue::with_capacity(config.max_connections),
            gate: Gate::new(config.hash_concurrency),
            counter: Batcher::new(config.counter_gather),
            buffers: BufferPool::new(config.threads * 64, config.read_buffer_bytes()),
            stats: Arc::new(Stats::default()),
            registry,
            shutdown: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            config,
        });

        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| format!("cannot spawn thread: {e}"))
        };
        for i in 0..shared.config.threads {
            let worker = Worker::new(Arc::clone(&shared), Api::new(Arc::clone(&state)));
            threads.push(spawn(format!("worker-{i}"), Box::new(move || worker.run()))?);
        }
        let s = Arc::clone(&shared);
        threads.push(spawn(
            "poller".into(),
            Box::new(move || poller::run(s, listener, poll)),
        )?);
        if shared.config.stats {
            let s = Arc::clone(&shared);
            // Not joined: it only prints, and ends with the process.
            spawn(
                "stats".into(),
                Box::new(move || {
                    let threads = s.config.threads;
                    stats::status_line_loop(
                        Arc::clone(&s.stats),
                        threads,
                        || s.registry.active(),
                        || s.queue.len(),
                        || s.is_stopped(),
                    )
                }),
            )?;
        }
        Ok(Server {
            shared,
            addr,
            threads,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits until shutdown has finished.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

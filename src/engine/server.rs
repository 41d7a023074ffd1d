//! Start-up and shutdown: opens the API (schema, pool, data directory), binds the
//! listener, spawns the poller, the workers and the status line, and joins them.

use super::conn::Conn;
use super::poller;
use super::registry::Registry;
use super::shared::Shared;
use super::worker::Worker;
use crate::api::route::ROUTE_LABELS;
use crate::api::Api;
use crate::config::Config;
use crate::obs::access_log::AccessLog;
use crate::obs::metrics::Metrics;
use crate::obs::stats;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    api: Api,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

/// Asks a running server to shut down gracefully (from any thread).
#[derive(Clone)]
pub struct Stopper(Arc<Shared>, Api);

impl Stopper {
    /// Stop accepting, finish in-flight requests, close idle connections. With
    /// `--drain-delay`, drain first: /ready answers 503 and every response closes
    /// its connection while requests are still served, so a load balancer moves
    /// its traffic away before anything is refused.
    pub fn stop(&self) {
        let delay = self.0.config.drain_delay;
        // The API holds the one draining flag: /ready reads it, and so does the
        // dispatcher, which then closes every connection after its answer.
        if delay.is_zero() || !self.1.begin_drain() {
            self.0.request_shutdown();
            return;
        }
        tracing::info!("draining for {delay:?} before shutting down");
        let shared = Arc::clone(&self.0);
        let spawned = std::thread::Builder::new().name("drain".into()).spawn(move || {
            std::thread::sleep(delay);
            shared.request_shutdown();
        });
        if spawned.is_err() {
            self.0.request_shutdown();
        }
    }
}

impl Server {
    /// Applies the schema, binds and spawns every thread.
    pub fn start(config: Config) -> Result<Server, String> {
        if let Some(id) = &config.instance_id {
            crate::http::response::set_instance_id(id);
        }
        let metrics = Arc::new(Metrics::new(config.threads, ROUTE_LABELS));
        let api = Api::open(&config, Arc::clone(&metrics))?;
        let listener = poller::bind(config.addr, config.backlog)
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (registry, poll) =
            Registry::<Conn>::new(config.max_connections).map_err(|e| format!("poller: {e}"))?;
        let access_log = match &config.access_log {
            Some(path) => Some(
                AccessLog::open(path)
                    .map_err(|e| format!("cannot open access log {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared::new(
            config,
            Arc::new(registry),
            Arc::clone(&metrics),
            access_log,
        ));
        let weak = Arc::downgrade(&shared);
        metrics.set_gauges(Box::new(move || {
            weak.upgrade().map(|s| s.gauges()).unwrap_or_default()
        }));

        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| format!("cannot spawn thread: {e}"))
        };
        for i in 0..shared.config.threads {
            let worker = Worker::new(i, Arc::clone(&shared), api.clone());
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
                        || s.shedder.refused(),
                        || s.is_stopped(),
                    )
                }),
            )?;
        }
        Ok(Server {
            shared,
            api,
            addr,
            threads,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that shuts this server down.
    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.shared), self.api.clone())
    }

    /// Makes `name` an admin (creating the account if need be) and returns a new
    /// key for it.
    pub fn create_admin(&self, name: &str) -> Result<String, String> {
        self.api.create_admin(name)
    }

    /// Whether every pooled database connection is open: until then the pool is
    /// still connecting in the background (and allocating).
    pub fn pool_filled(&self) -> bool {
        self.api.pool_filled()
    }

    /// Waits until shutdown has finished.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

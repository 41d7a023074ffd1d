//! crudrs: an HTTP/1.1 REST API server backed by PostgreSQL.
//!
//! ```text
//! listener ─► poller thread ─► TaskQueue (fixed ring, Mutex + Condvar) ─► N workers
//!              accept; edge readiness (mio);       │ read to WouldBlock into a worker buffer
//!              timeouts; connection limit          │ parse every complete request (pipelining)
//!                     ▲                            │ plan → handler (Postgres via r2d2)
//!                     └──── park (no syscall) ◄────┘ one write per batch
//! ```
//!
//! Layers, each a folder, imports one way only (checked by `tests/layers.rs`):
//! `engine/` (threads, sockets, connections) uses `http/` (bytes ↔ heads and
//! responses) and calls `api/` (routes, policy, handlers, the error → status map)
//! through `api::Api`; `api/` uses `store/` (PostgreSQL, files, the 1MRC aggregate);
//! everyone may use `obs/` (counters, the status line, metrics), and `store/`,
//! `api/` and `engine/` use `traffic/` (the circuit breaker, the rate limiter, the
//! load shedder). `http/`, `obs/` and `traffic/` import
//! nothing of the crate. See ARCHITECTURE.md for the map and the invariants.

pub(crate) mod api;
pub(crate) mod cache;
pub mod config;
pub(crate) mod engine;
pub(crate) mod http;
pub(crate) mod obs;
pub(crate) mod relay;
pub(crate) mod store;
pub(crate) mod traffic;

pub use config::{Args, Config};
pub use engine::{Server, Stopper};

/// Runs the server until SIGINT or SIGTERM has been handled and in-flight requests
/// are done. Prints the bound address on stdout first.
pub fn run(config: Config) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::io::Write;

    let threads = config.threads;
    let create_admin = config.create_admin.clone();
    let server = Server::start(config)?;
    let stopper = server.stopper();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    tracing::warn!("second signal {sig}: exiting now");
                    std::process::exit(1);
                }
                stopper.stop();
            }
        })
        .map_err(|e| format!("cannot spawn thread: {e}"))?;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "crudrs listening on http://{} with {threads} workers",
        server.addr()
    );
    if let Some(name) = create_admin {
        match server.create_admin(&name) {
            // The one place a key is shown; it is stored only as its hash.
            Ok(key) => {
                let _ = writeln!(out, "admin {name}: key {key} (shown once; keep it secret)");
            }
            Err(e) => tracing::error!("--create-admin: {e}"),
        }
    }
    let _ = out.flush();
    drop(out);
    server.join();
    tracing::info!("shut down cleanly");
    Ok(())
}

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
//! Layers, each a folder (`config` is a file), import one way only (checked by
//! `tests/layers.rs`):
//! - `engine/` (threads, sockets, connections) may use `api/`, `config`, `http/`,
//!   `obs/` and `traffic/`; it calls `api/` logic only through `api::Api` (apart
//!   from encoding errors and writing upload bytes) and otherwise uses its data
//!   types.
//! - `api/` (routes, policy, handlers, the error → status map) may use `cache/`,
//!   `config`, `http/`, `obs/`, `relay/`, `store/` and `traffic/`.
//! - `relay/` (the upstream relay and its two cache levels) may use `cache/`,
//!   `obs/`, `store/` and `traffic/`.
//! - `store/` (PostgreSQL, files, the 1MRC aggregate) may use `obs/` and `traffic/`.
//! - `config` may use `http/`.
//! - `http/` (bytes ↔ heads and responses), `obs/` (counters, the status line,
//!   metrics), `traffic/` (the circuit breaker, the rate limiter, the load shedder)
//!   and `cache/` (HTTP caching primitives) import nothing of the crate.
//!
//! `lib.rs` and `main.rs` may use anything. See ARCHITECTURE.md for the map and the
//! invariants.

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

//! crudrs: an HTTP/1.1 REST API server backed by PostgreSQL.
//!
//! ```text
//! listener ─► poller thread ─► TaskQueue (fixed ring, Mutex + Condvar) ─► N workers
//!              accept; edge readiness (mio);       │ read to WouldBlock into a worker buffer
//!              timeouts; connection limit          │ parse every complete request (pipelining)
//!                     ▲                            │ route → handler (Postgres via r2d2)
//!                     └──── park (no syscall) ◄────┘ one write per batch
//! ```
//!
//! `http/` turns bytes into request heads and responses and knows nothing of routes;
//! `api/` serves requests and never sees a socket; `worker.rs` glues the two; `db/`
//! owns SQL and the pool. See ARCHITECTURE.md for the map and the invariants.

pub mod api;
pub mod batch;
pub mod buffers;
pub mod config;
pub mod conn;
pub mod db;
pub mod error;
pub mod events;
pub mod gate;
pub mod http;
pub mod poller;
pub mod queue;
pub mod server;
pub mod stats;
pub mod storage;
pub mod transfer;
pub mod worker;

pub use config::{Args, Config};
pub use server::Server;

/// Runs the server until SIGINT or SIGTERM has been handled and in-flight requests
/// are done. Prints the bound address on stdout first.
pub fn run(config: Config) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::io::Write;

    let threads = config.threads;
    let server = Server::start(config)?;
    let shared = std::sync::Arc::clone(server.shared());
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
                shared.request_shutdown();
            }
        })
        .map_err(|e| format!("cannot spawn thread: {e}"))?;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "crudrs listening on http://{} with {threads} workers",
        server.addr()
    );
    let _ = out.flush();
    drop(out);
    server.join();
    tracing::info!("shut down cleanly");
    Ok(())
}

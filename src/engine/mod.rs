//! The engine: the thread model, and everything that touches a socket.
//!
//! ```text
//! listener ─► poller thread ─► TaskQueue (fixed ring, Mutex + Condvar per worker) ─► N workers
//!              accept; edge readiness (mio);        │ driver: read to WouldBlock into a worker buffer
//!              timeouts; connection limit           │ dispatch: parse → plan → wait? → handle → encode
//!                     ▲                             │ one write per batch of answers
//!                     └──── Registry::park (no syscall) ◄──┘
//! ```
//!
//! The engine uses `http` for bytes and calls `api` only through `Api` (plan,
//! handle, stage/commit, admit/finish upload); it never touches the store and never
//! matches on routes. Waiting (for a hashing permit, for a group commit) is done by
//! whole connections in the `gate` and the `batch`ers, never by a worker.

mod batch;
mod buffers;
mod conn;
mod dispatch;
mod driver;
mod gate;
mod io;
mod poller;
mod queue;
mod registry;
mod server;
mod shared;
mod transfer;
mod worker;

pub use server::{Server, Stopper};

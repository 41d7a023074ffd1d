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
//! The engine uses `http` for bytes. It calls `api` logic only through `Api`
//! (`plan`, `admit`, `handle`, `stage`/`commit`, `relay_lookup`/`relay_wait`,
//! `admit_upload`/`finish_upload`), apart from `Error::encode` for error answers
//! and `UploadBody::write` for upload bytes, and otherwise uses `api`'s data types
//! (`Plan`, `Wait`, `Lane`, `BodyUse`, `ROUTE_LABELS`, `UNMATCHED`,
//! `Request`/`Reply`, `Error`/`ApiError`, `QuotaFields`, `Staged`,
//! `Looked`/`Ticket`/`Resume`/`Fetched`, `UploadBody`). It never touches the store
//! and never matches on routes. Waiting (for a hashing permit, for a group commit,
//! for a relay fetch) is done by whole connections in the `gate`, the `batch`ers
//! and the relay's flights, never by a worker.

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

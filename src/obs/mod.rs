//! Observability: what the server counts about itself and how it reports it (today
//! the once-a-second status line; metrics come here too).
//!
//! Recording is relaxed atomics that any thread bumps; nothing here knows of
//! sockets, routes or SQL. Callers name what they count with [`stats::Kind`].

pub(crate) mod stats;

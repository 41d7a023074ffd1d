//! Observability: what the server counts about itself and how it reports it: the
//! once-a-second status line ([`stats`]) and the Prometheus metrics ([`metrics`]).
//!
//! Nothing here knows of sockets, routes or SQL: callers name what they count
//! ([`stats::Kind`], a route slot and its labels). The status line's counters are
//! relaxed atomics any thread bumps; the metrics' per-request figures are
//! per-worker blocks only their worker writes.

pub(crate) mod access_log;
pub(crate) mod metrics;
pub(crate) mod stats;

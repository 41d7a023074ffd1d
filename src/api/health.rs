//! GET /health (the process answers) and GET /ready (it can also reach PostgreSQL,
//! and says what the database circuit breaker thinks).
//!
//! /health touches nothing shared and allocates nothing: it is the plain request
//! the benchmarks and the zero-allocation test measure.

use super::auth::note;
use super::error::{ApiError, Error};
use super::request::{HeaderValue, Reply};
use super::state::State;

pub fn health(out: &mut Vec<u8>) -> Result<Reply, Error> {
    out.extend_from_slice(br#"{"status":"ok"}"#);
    Ok(Reply::json(200))
}

/// 200 `{"status":"ready","database":"closed"}` when a ping succeeds; otherwise 503
/// (with Retry-After) and the breaker's state, e.g. `{"status":"unavailable",
/// "database":"open"}` while the breaker is open, or `{"status":"draining",...}`
/// once shutdown has begun.
pub fn ready(st: &State, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let pinged = st.db.get().map_err(ApiError::from).and_then(|mut pooled| {
        let db = &mut *pooled;
        db.client
            .query_one(&db.st.ping, &[])
            .map(|_| ())
            .map_err(|e| note(st, e))
    });
    let draining = st.draining.load(std::sync::atomic::Ordering::Relaxed);
    let reply = match pinged {
        Ok(()) if draining => Reply {
            header: Some(("Retry-After", HeaderValue::Static("1"))),
            ..Reply::json(503)
        },
        Ok(()) => Reply::json(200),
        Err(ApiError::Unavailable) => Reply {
            header: Some(("Retry-After", HeaderValue::Static("1"))),
            ..Reply::json(503)
        },
        Err(e) => return Err(e.into()),
    };
    let status = match (reply.status, draining) {
        (200, _) => "ready",
        (_, true) => "draining",
        _ => "unavailable",
    };
    serde_json::to_writer(
        out,
        &serde_json::json!({ "status": status, "database": st.db.breaker_state().as_str() }),
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(reply)
}

//! GET /health (the process answers) and GET /ready (it can also reach PostgreSQL,
//! and says what the database circuit breaker thinks).
//!
//! /health touches nothing shared and allocates nothing: it is the plain request
//! the benchmarks and the zero-allocation test measure.

use super::auth::note;
use super::error::{ApiError, Error};
use super::request::Reply;
use super::state::State;

pub fn health(out: &mut Vec<u8>) -> Result<Reply, Error> {
    out.extend_from_slice(br#"{"status":"ok"}"#);
    Ok(Reply::json(200))
}

/// 200 `{"status":"ready","database":"closed"}` when a ping succeeds; otherwise 503
/// (with Retry-After) and the breaker's state, e.g. `{"status":"unavailable",
/// "database":"open"}` while the breaker is open.
pub fn ready(st: &State, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let pinged = st.db.get().map_err(ApiError::from).and_then(|mut pooled| {
        let db = &mut *pooled;
        db.client
            .query_one(&db.st.ping, &[])
            .map(|_| ())
            .map_err(|e| note(st, e))
    });
    let breaker = st.db.breaker_state().as_str();
    match pinged {
        Ok(()) => {
            out.extend_from_slice(br#"{"status":"ready","database":""#);
            out.extend_from_slice(breaker.as_bytes());
            out.extend_from_slice(br#""}"#);
            Ok(Reply::json(200))
        }
        Err(ApiError::Unavailable) => {
            out.extend_from_slice(br#"{"status":"unavailable","database":""#);
            out.extend_from_slice(breaker.as_bytes());
            out.extend_from_slice(br#""}"#);
            Ok(Reply {
                header: Some(("Retry-After", "1".to_string())),
                ..Reply::json(503)
            })
        }
        Err(e) => Err(e.into()),
    }
}

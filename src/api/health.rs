//! GET /health (the process answers) and GET /ready (it can also reach PostgreSQL).
//!
//! /health touches nothing shared and allocates nothing: it is the plain request
//! the benchmarks and the zero-allocation test measure.

use super::auth::note;
use super::error::Error;
use super::request::Reply;
use super::state::State;

pub fn health(out: &mut Vec<u8>) -> Result<Reply, Error> {
    out.extend_from_slice(br#"{"status":"ok"}"#);
    Ok(Reply::json(200))
}

pub fn ready(st: &State, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    db.client.query_one(&db.st.ping, &[]).map_err(|e| note(st, e))?;
    out.extend_from_slice(br#"{"status":"ready"}"#);
    Ok(Reply::json(200))
}

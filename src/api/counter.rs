//! POST /api/v1/counter and GET /api/v1/counter: a durable counter in PostgreSQL.
//!
//! Increments go through the group-commit batcher, which the connection driver
//! owns (what waits there is the connection itself, see `route::Wait::Batch`): all
//! increments waiting while a commit is in flight become one [`commit`], and each
//! request gets its own value from the k it reserved, so values are distinct and
//! gap-free across answered requests (a client that disconnects after its batch
//! committed takes its value with it). A failed commit answers 503 to every request
//! of its batch. One case stays ambiguous, as for any client of a database: if the
//! connection dies after the UPDATE was sent, the server cannot know whether it
//! committed; those requests get 503 and their increments may or may not have
//! happened.

use super::auth::note;
use super::error::{ApiError, Error};
use super::json::write_int_object;
use super::request::{Reply, Request};
use super::state::State;

/// Commits `k` increments as one `UPDATE ... SET value = value + k RETURNING value`
/// and returns the k values they produced, lowest first.
pub fn commit(st: &State, k: usize) -> Result<Vec<i64>, ApiError> {
    let k = k as i64;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let row = db
        .client
        .query_one(&db.st.counter_add, &[&k])
        .map_err(|e| note(st, e))?;
    let last: i64 = row.get(0);
    st.increments
        .fetch_add(k as u64, std::sync::atomic::Ordering::Relaxed);
    Ok((last - k + 1..=last).collect())
}

/// Answers an increment with the value its batch's commit gave it.
pub fn increment(req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    write_int_object(out, "value", req.committed()?);
    Ok(Reply::json(200))
}

pub fn get(st: &State, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let row = db
        .client
        .query_one(&db.st.counter_get, &[])
        .map_err(|e| note(st, e))?;
    write_int_object(out, "value", row.get(0));
    Ok(Reply::json(200))
}

//! POST /event and GET /stats: the One Million Request Challenge, answered from the
//! in-memory aggregate in `store::events` with no database round trip. With
//! `--shared-stats` (several instances), each instance also publishes what it
//! counted to PostgreSQL every 250 ms, and GET /stats publishes this instance's
//! latest events and answers the sum of all: exact for every event acknowledged
//! anywhere once the load has stopped for 250 ms plus one publication; while load
//! runs, another instance's last 250 ms may be missing.
//!
//! The body is `{"userId": string, "value": number}`; the value is read from its
//! JSON text so it is summed exactly (see `events::parse_nanos`). Parsing borrows
//! from the request body, so an event costs no allocation unless its user is new.

use super::auth::note;
use super::error::{ApiError, Error};
use super::request::{Reply, Request};
use super::state::State;
use crate::store::events::Stats;
use crate::store::events::{format_nanos, parse_nanos};
use crate::store::sql;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Longest user id accepted, in characters (as JSON Schema counts them).
const MAX_USER_ID_CHARS: usize = 256;

/// How often an instance publishes its events when the statistics are shared.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event<'a> {
    #[serde(rename = "userId", borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    value: &'a RawValue,
}

pub fn post(st: &State, req: &Request<'_>) -> Result<Reply, Error> {
    let ev: Event<'_> =
        serde_json::from_slice(req.body).map_err(|e| ApiError::Invalid(format!("invalid event: {e}")))?;
    if ev.user_id.is_empty() || ev.user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(ApiError::Invalid(format!("userId: must be 1 to {MAX_USER_ID_CHARS} characters")).into());
    }
    let nanos = parse_nanos(ev.value.get()).map_err(|e| ApiError::Invalid(format!("value: {e}")))?;
    st.events.record(&ev.user_id, nanos);
    Ok(Reply::empty(200))
}

pub fn stats(st: &State, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let s = if st.config.shared_stats {
        // This instance's latest events first, then everyone's.
        publish(st)?;
        shared_stats(st)?
    } else {
        st.events.stats()
    };
    let mut sum = String::new();
    format_nanos(s.sum_nanos, &mut sum);
    let avg = serde_json::to_string(&s.average()).map_err(|e| ApiError::Internal(e.to_string()))?;
    out.extend_from_slice(
        format!(
            r#"{{"totalRequests":{},"uniqueUsers":{},"sum":{},"avg":{}}}"#,
            s.total, s.unique_users, sum, avg
        )
        .as_bytes(),
    );
    Ok(Reply::json(200))
}

/// Publishes the events this instance counted since its last publication: their
/// count and sum are added to `event_totals` and their new users inserted, in one
/// transaction; on failure the delta is kept for the next try.
pub fn publish(st: &State) -> Result<(), ApiError> {
    let delta = st.events.take_delta();
    if delta.is_empty() {
        return Ok(());
    }
    let attempt = (|| -> Result<(), ApiError> {
        let mut pooled = st.db.get()?;
        let db = &mut *pooled;
        let mut tx = db.client.transaction().map_err(|e| note(st, e))?;
        let count = delta.count as i64;
        let sum = delta.sum_nanos.to_string();
        tx.execute(sql::ADD_EVENT_TOTALS, &[&count, &sum])
            .map_err(|e| note(st, e))?;
        if !delta.users.is_empty() {
            let users: Vec<&str> = delta.users.iter().map(|u| &**u).collect();
            tx.execute(sql::ADD_EVENT_USERS, &[&users])
                .map_err(|e| note(st, e))?;
        }
        tx.commit().map_err(|e| note(st, e))
    })();
    if attempt.is_err() {
        st.events.restore(delta);
    }
    attempt
}

/// The statistics of every instance together, as published.
fn shared_stats(st: &State) -> Result<Stats, ApiError> {
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let row = db
        .client
        .query_one(sql::SHARED_EVENT_STATS, &[])
        .map_err(|e| note(st, e))?;
    let sum: &str = row.get(1);
    Ok(Stats {
        total: row.get::<_, i64>(0) as u64,
        unique_users: row.get::<_, i64>(2) as u64,
        sum_nanos: sum
            .parse()
            .map_err(|_| ApiError::Internal(format!("event sum {sum:?} is not an integer")))?,
    })
}

/// With `--shared-stats`, publishes this instance's events every
/// `PUBLISH_EVERY` for as long as `state` lives.
pub fn start_publishing(state: &Arc<State>) -> Result<(), String> {
    if !state.config.shared_stats {
        return Ok(());
    }
    let weak: Weak<State> = Arc::downgrade(state);
    std::thread::Builder::new()
        .name("events-publish".into())
        .spawn(move || {
            while let Some(st) = weak.upgrade() {
                if let Err(e) = publish(&st) {
                    tracing::debug!("events not published yet: {e:?}");
                }
                drop(st);
                std::thread::sleep(PUBLISH_EVERY);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the events publisher: {e}"))
}

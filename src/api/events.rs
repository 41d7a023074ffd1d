//! POST /event and GET /stats: the One Million Request Challenge, answered from the
//! in-memory aggregate in `crate::events` with no database round trip.
//!
//! The body is `{"userId": string, "value": number}`; the value is read from its
//! JSON text so it is summed exactly (see `events::parse_nanos`). Parsing borrows
//! from the request body, so an event costs no allocation unless its user is new.

use super::error::{ApiError, Error};
use super::request::{Reply, Request};
use super::state::State;
use crate::store::events::{format_nanos, parse_nanos};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Longest user id accepted, in bytes.
const MAX_USER_ID_BYTES: usize = 256;

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
    if ev.user_id.is_empty() || ev.user_id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::Invalid(format!("userId: must be 1 to {MAX_USER_ID_BYTES} bytes")).into());
    }
    let nanos = parse_nanos(ev.value.get()).map_err(|e| ApiError::Invalid(format!("value: {e}")))?;
    st.events.record(&ev.user_id, nanos);
    Ok(Reply::empty(200))
}

pub fn stats(st: &State, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let s = st.events.stats();
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

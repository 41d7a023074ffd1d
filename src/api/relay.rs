//! `GET /relay/<target>`: the route's side of the relay. `lookup` checks the
//! target (nothing may escape the upstream's base path: 400) and asks the
//! relay's caches; `answer` turns what the cache or the upstream gave into the
//! reply: the upstream's fields, `Age`, `X-Cache`, and a 304 when the client's
//! `If-None-Match` matches the entry's `ETag`.

use super::error::{ApiError, Error};
use super::request::{Reply, Request, UpstreamHead};
use super::state::State;
use crate::cache::policy::etag_matches;
use crate::relay::target::{self, Refused};
use crate::relay::{Fetched, Lookup, RelayError};
use std::sync::Arc;

/// What a relayed request waits for: the key's flight.
pub(crate) struct Ticket {
    pub(super) key: Box<str>,
    pub(super) request_id: Box<str>,
}

/// The target of a relayed request (path and query after `/relay`, as sent),
/// checked. One UTF-8 check for the whole of it: the head parser's spans of
/// the path and the query are contiguous in the request line.
fn target_of<'r>(req: &'r Request<'_>) -> Result<&'r str, Error> {
    let start = req.head.path.start as usize + "/relay".len();
    let path_end = req.head.path.end as usize;
    let end = req.head.query.map_or(path_end, |q| q.end as usize);
    let target = req
        .buf
        .get(start..end)
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or_else(|| ApiError::Invalid("malformed relay path".into()))?;
    let (path, query) = target.split_at(path_end.saturating_sub(start).min(target.len()));
    let query = query.strip_prefix('?');
    target::check(path, query).map_err(|why| {
        ApiError::Invalid(match why {
            Refused::Escapes => "the relay path may not leave the upstream's base path".into(),
            Refused::Malformed => "malformed relay path".into(),
        })
    })?;
    Ok(if target.is_empty() { "/" } else { target })
}

pub enum Looked {
    Ready(Fetched),
    Wait(Ticket),
}

/// Answers from the cache at once when it can; otherwise the ticket to wait with.
pub fn lookup(st: &State, req: &Request<'_>, request_id: &[u8]) -> Result<Looked, Error> {
    let relay = st.relay.as_ref().ok_or(ApiError::NotFound)?;
    let target = target_of(req)?;
    Ok(match relay.lookup(target, request_id) {
        Lookup::Ready(fetched) => Looked::Ready(fetched),
        Lookup::Wait => Looked::Wait(Ticket {
            key: target.into(),
            request_id: String::from_utf8_lossy(request_id).into(),
        }),
    })
}

/// The reply to a relayed request, from what it was given.
pub fn answer(req: &Request<'_>) -> Result<Reply, Error> {
    let fetched = req
        .fetched
        .as_ref()
        .ok_or_else(|| ApiError::Internal("a relayed request was answered before its fetch".into()))?;
    let entry = match &fetched.result {
        Ok(entry) => entry,
        Err(RelayError::BadGateway(why)) => return Err(ApiError::BadGateway(why.clone()).into()),
        Err(RelayError::Timeout) => return Err(ApiError::GatewayTimeout.into()),
        Err(RelayError::Unavailable(after)) => return Err(ApiError::UpstreamUnavailable(*after).into()),
    };
    let not_modified = matches!(entry.status, 200 | 203)
        && match (req.head.if_none_match, &entry.etag) {
            (Some(inm), Some(etag)) => etag_matches(inm.str(req.buf), etag),
            _ => false,
        };
    let head = UpstreamHead {
        lines: Arc::clone(if not_modified {
            &entry.lines_304
        } else {
            &entry.lines
        }),
        age: fetched.age,
        cache: fetched.cache.as_str(),
        body: (!not_modified).then(|| Arc::clone(&entry.body)),
    };
    let status = if not_modified { 304 } else { entry.status };
    Ok(Reply {
        cache_control: None,
        upstream: Some(head),
        ..Reply::empty(status)
    })
}

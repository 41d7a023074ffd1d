//! What a handler receives ([`Request`]: a parsed head, the bytes it points into and
//! the whole body) and what it answers ([`Reply`]). Handlers never see more of the
//! connection than this.

use super::error::{ApiError, Error};
use super::tokens::{Principal, TokenHash};
use crate::http::parse::Head;
use crate::relay::Fetched;
use std::net::IpAddr;
use std::sync::Arc;

/// A complete request as handlers see it.
pub struct Request<'b> {
    pub head: &'b Head,
    /// The bytes the head's spans point into.
    pub buf: &'b [u8],
    pub body: &'b [u8],
    /// For a request whose route waits for a batch (see `route::Wait::Batch`): what
    /// the commit of its batch gave it: the counter value or the new row's id, or
    /// the error that is this request's alone (a duplicate) or its whole batch's.
    pub committed: Option<Result<i64, ApiError>>,
    /// The client's address: the peer's, or behind a trusted proxy the one it
    /// forwarded (see `limits::client_ip`).
    pub client: IpAddr,
    /// The bearer token's owner, when admission already resolved it (rate limits
    /// on); handlers then do not resolve it again.
    pub auth: Option<Result<(Principal, TokenHash), ApiError>>,
    /// For a relayed request (see `route::Wait::Fetch`): what the cache or the
    /// upstream gave it.
    pub fetched: Option<Fetched>,
}

impl Request<'_> {
    /// What the commit of this request's batch gave it; an error when it was never
    /// committed, which the connection driver does not allow.
    pub fn committed(&self) -> Result<i64, Error> {
        match &self.committed {
            Some(Ok(value)) => Ok(*value),
            Some(Err(e)) => Err(e.clone().into()),
            None => {
                Err(ApiError::Internal("a request was answered before its batch committed".into()).into())
            }
        }
    }

    pub fn query(&self) -> &str {
        self.head.query.map(|q| q.str(self.buf)).unwrap_or("")
    }

    pub fn authorization(&self) -> Option<&str> {
        self.head.authorization.map(|a| a.str(self.buf))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.head.content_type.map(|c| c.str(self.buf))
    }
}

/// The default: a dynamic or authenticated answer no cache may keep.
pub const NO_STORE: &str = "no-store";

/// A field value a handler adds to its answer: a literal, one made for this
/// answer, or one shared with a cache entry (so that a cached answer's validator
/// costs no allocation).
#[derive(Debug, Clone)]
pub enum HeaderValue {
    Static(&'static str),
    Owned(String),
    Shared(Arc<str>),
}

impl HeaderValue {
    pub fn as_str(&self) -> &str {
        match self {
            HeaderValue::Static(s) => s,
            HeaderValue::Owned(s) => s,
            HeaderValue::Shared(s) => s,
        }
    }
}

/// What a handler answers; the body is in the buffer it was given, unless `file`
/// holds a stored file (and its size) to stream after the head.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub header: Option<(&'static str, HeaderValue)>,
    pub file: Option<(std::fs::File, u64)>,
    /// What caches may do with the response (RFC 9111); `None` only when the
    /// relayed fields in `upstream` say it themselves.
    pub cache_control: Option<&'static str>,
    /// The head of a relayed response: the upstream's fields, its age, how the
    /// cache made it.
    pub upstream: Option<UpstreamHead>,
    /// For a 304 standing for a JSON 200: that body's length, so the 304 carries
    /// the fields the 200 would (`Vary`, and the validator of the encoding the
    /// client would get).
    pub stands_for_json: Option<usize>,
}

/// What a relayed response carries besides its body.
#[derive(Debug)]
pub struct UpstreamHead {
    /// Header text, each field `\r\nName: value` (see `relay::entry::Entry`),
    /// the upstream's `Date` among them: the server writes none of its own.
    pub lines: Arc<[u8]>,
    /// `Age`, in seconds.
    pub age: u64,
    /// `X-Cache`.
    pub cache: &'static str,
    /// The body, shared with the cache entry (none for a 304): encoded from
    /// there, not copied into the handler's buffer first.
    pub body: Option<Arc<[u8]>>,
}

impl Reply {
    pub const fn json(status: u16) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            header: None,
            file: None,
            cache_control: Some(NO_STORE),
            upstream: None,
            stands_for_json: None,
        }
    }

    pub const fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            header: None,
            file: None,
            cache_control: Some(NO_STORE),
            upstream: None,
            stands_for_json: None,
        }
    }
}

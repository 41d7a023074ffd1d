//! The REST API: the route table, the shared application state and the dispatch of a
//! complete request to its handler.
//!
//! This layer never sees a socket or a read buffer position: it gets a [`Request`]
//! (a parsed head plus the whole body) and writes a response body into a `Vec`. What
//! a route may receive (body limit, whether it needs a password-hashing permit) is
//! declared here so the connection driver can decide before reading a body.

mod auth;
mod counter;
mod events;
mod files;
mod health;
mod json;
mod passwords;
mod samples;
mod tokens;

use crate::config::Config;
use crate::db::Db;
use crate::error::{ApiError, Error};
use crate::http::{Head, HttpError, Method};
use std::sync::Arc;

pub use files::Admitted;
pub use passwords::Passwords;
pub use tokens::{encode_hex, TokenCache};

/// Everything handlers share, built once at start-up.
pub struct State {
    pub config: Config,
    pub db: Db,
    pub store: crate::storage::Store,
    pub events: crate::events::Events,
    pub tokens: TokenCache,
    pub passwords: Passwords,
}

/// A resolved route, with its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    AuthCreate,
    AuthLogin,
    AuthLogout,
    SampleCreate,
    SampleGet(i64),
    SampleList,
    FileUpload,
    FileGet([u8; 16]),
    CounterIncrement,
    CounterGet,
    EventPost,
    EventStats,
}

/// Coarse groups of routes, for the status line's "tasks by kind".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Health,
    Auth,
    Sample,
    File,
    Counter,
    Event,
}

impl Route {
    pub fn kind(self) -> Kind {
        match self {
            Route::Health | Route::Ready => Kind::Health,
            Route::AuthCreate | Route::AuthLogin | Route::AuthLogout => Kind::Auth,
            Route::SampleCreate | Route::SampleGet(_) | Route::SampleList => Kind::Sample,
            Route::FileUpload | Route::FileGet(_) => Kind::File,
            Route::CounterIncrement | Route::CounterGet => Kind::Counter,
            Route::EventPost | Route::EventStats => Kind::Event,
        }
    }

    /// Whether serving this route computes a password hash, which is bounded by the
    /// hashing gate (see `gate.rs`).
    pub fn needs_hash_permit(self) -> bool {
        matches!(self, Route::AuthCreate | Route::AuthLogin)
    }

    /// Whether the route takes a JSON body.
    fn takes_json(self) -> bool {
        matches!(
            self,
            Route::AuthCreate | Route::AuthLogin | Route::SampleCreate | Route::EventPost
        )
    }
}

/// Resolves method and path to a route: 404 for an unknown path, 405 with `Allow` for a
/// known path and another method, 400 for a malformed path parameter.
pub fn route(method: Method, path: &str) -> Result<Route, ApiError> {
    const GET: &str = "GET, HEAD";
    const POST: &str = "POST";
    let is_get = matches!(method, Method::Get | Method::Head);
    let is_post = method == Method::Post;
    let (route, allow, ok) = match path {
        "/health" => (Route::Health, GET, is_get),
        "/ready" => (Route::Ready, GET, is_get),
        "/auth/create" => (Route::AuthCreate, POST, is_post),
        "/auth/login" => (Route::AuthLogin, POST, is_post),
        "/auth/logout" => (Route::AuthLogout, POST, is_post),
        "/api/sample" => (Route::SampleCreate, POST, is_post),
        "/api/samples" => (Route::SampleList, GET, is_get),
        "/api/file" => (Route::FileUpload, POST, is_post),
        "/api/v1/counter" => {
            return match method {
                Method::Post => Ok(Route::CounterIncrement),
                Method::Get | Method::Head => Ok(Route::CounterGet),
                _ => Err(ApiError::MethodNotAllowed("GET, HEAD, POST")),
            }
        }
        "/event" => (Route::EventPost, POST, is_post),
        "/stats" => (Route::EventStats, GET, is_get),
        _ => {
            let parsed = if let Some(id) = path.strip_prefix("/api/sample/") {
                parse_id(id).map(Route::SampleGet)
            } else if let Some(md5) = path.strip_prefix("/api/file/") {
                parse_md5(md5).map(Route::FileGet)
            } else {
                return Err(ApiError::NotFound);
            };
            if !is_get {
                return Err(ApiError::MethodNotAllowed(GET));
            }
            return parsed;
        }
    };
    if ok {
        Ok(route)
    } else {
        Err(ApiError::MethodNotAllowed(allow))
    }
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    match s.parse::<i64>() {
        Ok(id) if id > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ApiError::Invalid("id must be a positive integer".into())),
    }
}

fn parse_md5(s: &str) -> Result<[u8; 16], ApiError> {
    let mut md5 = [0u8; 16];
    tokens::decode_hex(s.as_bytes(), &mut md5)
        .map(|()| md5)
        .ok_or_else(|| ApiError::Invalid("md5 must be 32 hexadecimal digits".into()))
}

/// A complete request as handlers see it.
pub struct Request<'b> {
    pub head: &'b Head,
    /// The bytes the head's spans point into.
    pub buf: &'b [u8],
    pub body: &'b [u8],
    /// For a counter increment: what the commit of its batch gave it (the worker
    /// commits increments in batches before it answers them).
    pub increment: Option<Result<i64, ApiError>>,
}

impl Request<'_> {
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

/// What a handler answers; the body is in the buffer it was given, unless `file`
/// holds a stored file (and its size) to stream after the head.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub header: Option<(&'static str, String)>,
    pub file: Option<(std::fs::File, u64)>,
}

impl Reply {
    pub const fn json(status: u16) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            header: None,
            file: None,
        }
    }

    pub const fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            header: None,
            file: None,
        }
    }
}

/// The per-worker handle on the API.
pub struct Api {
    state: Arc<State>,
}

impl Api {
    pub fn new(state: Arc<State>) -> Api {
        Api { state }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Decides, from the head alone, which route serves the request and the most body
    /// bytes it may carry; a Content-Length over that is refused before any body byte
    /// is read.
    pub fn plan(&self, head: &Head, buf: &[u8]) -> Result<(Route, u64), Error> {
        let route = route(head.method, head.path.str(buf))?;
        // Routes without a meaningful body still read (and ignore) a small one.
        let limit = match route {
            Route::FileUpload => self.state.config.max_upload_bytes,
            _ => self.state.config.max_json_bytes as u64,
        };
        if let crate::http::Framing::Length(n) = head.framing {
            if n > limit {
                return Err(HttpError::BodyTooLarge.into());
            }
        }
        Ok((route, limit))
    }

    /// Serves a complete request, writing the response body into `out`.
    pub fn handle(&self, route: Route, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
        let st = &*self.state;
        if route.takes_json() {
            json::check_content_type(req.content_type())?;
        }
        match route {
            Route::Health => health::health(out),
            Route::Ready => health::ready(st, out),
            Route::AuthCreate => auth::create(st, req, out),
            Route::AuthLogin => auth::login(st, req, out),
            Route::AuthLogout => auth::logout(st, req),
            Route::SampleCreate => samples::create(st, req, out),
            Route::SampleGet(id) => samples::get(st, req, id, out),
            Route::SampleList => samples::list(st, req, out),
            Route::FileGet(md5) => files::get(st, req, md5),
            Route::CounterIncrement => counter::increment(req.increment.clone(), out),
            Route::CounterGet => counter::get(st, out),
            Route::EventPost => events::post(st, req),
            Route::EventStats => events::stats(st, out),
            Route::FileUpload => {
                Err(ApiError::Internal("uploads are streamed, not dispatched".into()).into())
            }
        }
    }

    /// Commits `k` counter increments at once; see `counter::commit`.
    pub fn commit_increments(&self, k: usize) -> Result<Vec<i64>, ApiError> {
        counter::commit(&self.state, k)
    }

    /// Whether an upload may start; see `files::admit`.
    pub fn admit_upload(&self, req: &Request<'_>) -> Result<Admitted, Error> {
        files::admit(&self.state, req)
    }

    /// Stores a complete upload and records it; the response body goes into `out`.
    pub fn finish_upload(
        &self,
        incoming: crate::transfer::Incoming,
        out: &mut Vec<u8>,
    ) -> Result<Reply, Error> {
        files::finish(&self.state, incoming, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_with_404_405_and_400() {
        assert_eq!(route(Method::Get, "/health"), Ok(Route::Health));
        assert_eq!(route(Method::Head, "/health"), Ok(Route::Health));
        assert_eq!(route(Method::Get, "/api/sample/42"), Ok(Route::SampleGet(42)));
        assert!(matches!(route(Method::Get, "/nope"), Err(ApiError::NotFound)));
        assert!(matches!(
            route(Method::Post, "/health"),
            Err(ApiError::MethodNotAllowed("GET, HEAD"))
        ));
        assert!(matches!(
            route(Method::Get, "/auth/login"),
            Err(ApiError::MethodNotAllowed("POST"))
        ));
        assert!(matches!(
            route(Method::Get, "/api/sample/x1"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            route(Method::Get, "/api/sample/-1"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            route(Method::Get, "/api/sample/+1"),
            Err(ApiError::Invalid(_))
        ));
    }
}

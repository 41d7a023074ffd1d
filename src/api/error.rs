//! The one place where failures become HTTP statuses.
//!
//! Each layer has its own error type ([`HttpError`] for bytes on the wire,
//! [`ApiError`] for requests that parsed but cannot be served, [`DbError`] for the
//! database); [`Error::status`] is the only function that maps them to a status, and
//! [`Error::write_body`] the only one that renders the `{"error","detail"}` body.

use crate::http::error::HttpError;
use crate::http::response::{encode, ResponseHead};
use crate::store::db::DbError;
use std::fmt;

/// Failures of a well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The body or a parameter is invalid; the detail names the fields.
    Invalid(String),
    /// Missing, malformed, unknown, expired or revoked credentials.
    Unauthorized,
    /// Wrong username or password (the same answer for both).
    BadCredentials,
    /// Authenticated, but not allowed (an admin route for a user who is not one).
    Forbidden,
    NotFound,
    /// The path exists but not with this method; holds the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A unique value is taken; the detail says which.
    Conflict(&'static str),
    /// The body has a media type this route does not take.
    UnsupportedMediaType(&'static str),
    /// The database is down or overloaded: try again shortly.
    Unavailable,
    /// The server is at its connection limit.
    Overloaded,
    /// The server is shedding load (its queue wait stays above target).
    Shed,
    /// Over a rate limit (or the failed-login limit); holds Retry-After seconds.
    RateLimited(u64),
    /// The relay's upstream is unreachable or answered unusably (502).
    BadGateway(String),
    /// The relay's upstream did not answer within `--relay-timeout` (504).
    GatewayTimeout,
    /// The relay's upstream breaker is open, or its fetch queue is full (503);
    /// holds Retry-After seconds.
    UpstreamUnavailable(u64),
    /// A bug or an unexpected database answer; logged, never shown in detail.
    Internal(String),
    /// Serving the request panicked (a bug); holds the panic message. The connection
    /// is closed after the 500: whatever the panic interrupted is not trusted.
    Panicked(String),
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) => ApiError::Unavailable,
            DbError::Conflict(_) => ApiError::Conflict("already exists"),
            DbError::Other(e) => ApiError::Internal(e),
        }
    }
}

/// Any failure a request can end in.
#[derive(Debug)]
pub enum Error {
    Http(HttpError),
    Api(ApiError),
}

impl From<HttpError> for Error {
    fn from(e: HttpError) -> Self {
        Error::Http(e)
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Api(e.into())
    }
}

impl Error {
    /// The status for this failure.
    pub fn status(&self) -> u16 {
        match self {
            Error::Http(e) => match e {
                HttpError::BadRequest(_) => 400,
                HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
                HttpError::BodyTooLarge => 413,
                HttpError::LengthRequired => 411,
                HttpError::ExpectationFailed => 417,
                HttpError::UnsupportedCoding => 501,
                HttpError::Timeout => 408,
            },
            Error::Api(e) => match e {
                ApiError::Invalid(_) => 400,
                ApiError::Unauthorized | ApiError::BadCredentials => 401,
                ApiError::Forbidden => 403,
                ApiError::NotFound => 404,
                ApiError::MethodNotAllowed(_) => 405,
                ApiError::Conflict(_) => 409,
                ApiError::UnsupportedMediaType(_) => 415,
                ApiError::RateLimited(_) => 429,
                ApiError::Unavailable
                | ApiError::Overloaded
                | ApiError::Shed
                | ApiError::UpstreamUnavailable(_) => 503,
                ApiError::BadGateway(_) => 502,
                ApiError::GatewayTimeout => 504,
                ApiError::Internal(_) | ApiError::Panicked(_) => 500,
            },
        }
    }

    /// Whether the connection must close after the response. Every protocol error
    /// does (the server no longer knows where the next request starts), and so does
    /// a panic.
    pub fn closes_connection(&self) -> bool {
        matches!(self, Error::Http(_) | Error::Api(ApiError::Panicked(_)))
    }

    /// The extra header field the response must carry, if any.
    pub fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Error::Api(ApiError::MethodNotAllowed(allow)) => Some(("Allow", allow)),
            Error::Api(ApiError::Unauthorized) | Error::Api(ApiError::BadCredentials) => {
                Some(("WWW-Authenticate", "Bearer"))
            }
            Error::Api(ApiError::Unavailable | ApiError::Overloaded | ApiError::Shed) => {
                Some(("Retry-After", "1"))
            }
            _ => None,
        }
    }

    /// Short machine-readable name of the failure.
    fn code(&self) -> &'static str {
        match self.status() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            408 => "request_timeout",
            409 => "conflict",
            411 => "length_required",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            417 => "expectation_failed",
            429 => "rate_limited",
            431 => "header_fields_too_large",
            501 => "not_implemented",
            502 => "bad_gateway",
            503 => "unavailable",
            504 => "gateway_timeout",
            _ => "internal",
        }
    }

    /// Renders `{"error": ..., "detail": ...}` into `out`.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: &'a str,
            detail: &'a str,
        }
        let detail_owned;
        let detail: &str = match self {
            Error::Http(e) => {
                detail_owned = e.to_string();
                &detail_owned
            }
            Error::Api(e) => match e {
                ApiError::Invalid(d) => d,
                ApiError::Unauthorized => "missing, invalid, expired or revoked token",
                ApiError::BadCredentials => "invalid username or password",
                ApiError::Forbidden => "this key may not do that",
                ApiError::NotFound => "no such resource",
                ApiError::MethodNotAllowed(_) => "method not allowed on this path",
                ApiError::Conflict(d) => d,
                ApiError::UnsupportedMediaType(d) => d,
                ApiError::Unavailable => "database unavailable, retry shortly",
                ApiError::Overloaded => "server at its connection limit, retry shortly",
                ApiError::Shed => "server overloaded, retry shortly",
                ApiError::RateLimited(_) => "rate limit exceeded, retry after the time in Retry-After",
                ApiError::BadGateway(d) => d,
                ApiError::GatewayTimeout => "the upstream did not answer in time",
                ApiError::UpstreamUnavailable(_) => "the upstream is unavailable, retry shortly",
                ApiError::Internal(_) | ApiError::Panicked(_) => "internal error",
            },
        };
        // Serialising two strings into a Vec cannot fail.
        let _ = serde_json::to_writer(
            out,
            &Body {
                error: self.code(),
                detail,
            },
        );
    }
}

/// What the connection and the request add to an error response.
pub struct ErrorHead<'a> {
    pub date: &'a [u8],
    /// The connection closes after it.
    pub close: bool,
    /// A HEAD request: the body is left out.
    pub head_only: bool,
    pub request_id: &'a [u8],
    /// Further header lines, each starting with CRLF.
    pub lines: &'a [u8],
}

impl Error {
    /// Appends the whole error response to `out`, with its request ID.
    pub fn encode(&self, out: &mut Vec<u8>, date: &[u8], close: bool, head_only: bool, request_id: &[u8]) {
        let parts = ErrorHead {
            date,
            close,
            head_only,
            request_id,
            lines: b"",
        };
        self.encode_with(out, &mut Vec::new(), parts);
    }

    /// Appends the whole error response to `out`, with the `parts` the connection
    /// and the request add. The body is written into `scratch` first (cleared
    /// here): a buffer the caller reuses, so that answering an error allocates
    /// nothing once it has grown.
    pub fn encode_with(&self, out: &mut Vec<u8>, scratch: &mut Vec<u8>, parts: ErrorHead<'_>) {
        let ErrorHead {
            date,
            close,
            head_only,
            request_id,
            lines,
        } = parts;
        scratch.clear();
        self.write_body(scratch);
        let body = &*scratch;
        // An error is about this one request: no cache may keep it.
        let mut fields = [("Cache-Control", "no-store"), ("", ""), ("", "")];
        let mut n = 1;
        let mut secs = itoa::Buffer::new();
        if let Some(h) = self.header() {
            fields[n] = h;
            n += 1;
        }
        if let Error::Api(ApiError::RateLimited(after) | ApiError::UpstreamUnavailable(after)) = self {
            fields[n] = ("Retry-After", secs.format(*after));
            n += 1;
        }
        let head = ResponseHead {
            status: self.status(),
            content_type: Some("application/json"),
            headers: &fields[..n],
            relayed: b"",
            lines,
            request_id,
            close: close || self.closes_connection(),
        };
        encode(out, date, &head, body, head_only);
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Http(e) => write!(f, "{e}"),
            Error::Api(ApiError::Internal(e)) => write!(f, "internal: {e}"),
            Error::Api(ApiError::Panicked(e)) => write!(f, "panicked: {e}"),
            Error::Api(e) => write!(f, "{e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_and_panics_close_and_api_errors_do_not() {
        assert!(Error::from(HttpError::BadRequest("x")).closes_connection());
        assert!(Error::from(ApiError::Panicked("bug".into())).closes_connection());
        assert!(!Error::from(ApiError::NotFound).closes_connection());
        assert_eq!(Error::from(ApiError::Panicked("bug".into())).status(), 500);
    }

    #[test]
    fn body_is_json_with_error_and_detail() {
        let mut out = Vec::new();
        Error::from(ApiError::Invalid("latitude: must be a finite number".into())).write_body(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["error"], "bad_request");
        assert_eq!(v["detail"], "latitude: must be a finite number");
    }
}

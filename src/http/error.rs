//! Protocol-level failures: bytes that are not an acceptable HTTP/1.1 request.
//!
//! Every variant ends the connection: after a framing error the server cannot know
//! where the next request would start. The status each maps to is decided in one
//! place, `crate::api::error::Error::status`, outside this layer.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The request line, a header or the body framing is malformed; the detail says which.
    BadRequest(&'static str),
    /// The request head is larger than the configured limit.
    HeadTooLarge,
    /// The request has more header fields than the configured limit.
    TooManyHeaders,
    /// The body is larger than the limit for its route.
    BodyTooLarge,
    /// A body was sent without Content-Length where the route needs one.
    LengthRequired,
    /// An `Expect` value other than `100-continue`.
    ExpectationFailed,
    /// A transfer coding other than chunked.
    UnsupportedCoding,
    /// The client did not finish its request within the header or body timeout.
    Timeout,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            HttpError::BadRequest(detail) => detail,
            HttpError::HeadTooLarge => "request head too large",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::LengthRequired => "content-length required",
            HttpError::ExpectationFailed => "only 100-continue is supported in expect",
            HttpError::UnsupportedCoding => "only the chunked transfer coding is supported",
            HttpError::Timeout => "request not completed in time",
        };
        f.write_str(s)
    }
}

impl std::error::Error for HttpError {}

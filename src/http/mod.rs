//! The HTTP/1.1 subset crudrs speaks: request-head parsing and framing checks,
//! chunked body decoding, response encoding and the cached `Date` value.
//!
//! This module knows nothing of routes, JSON or SQL: it turns bytes into a
//! [`parse::Head`] with offsets into the caller's buffer, and a status plus body back
//! into bytes. The connection driver that glues it to sockets lives in `worker.rs`.

pub mod chunked;
pub mod date;
pub mod error;
pub mod parse;
pub mod response;

pub use error::HttpError;
pub use parse::{Framing, Head, Limits, Method, Span};

//! The HTTP/1.1 subset crudrs speaks: request-head parsing and framing checks, one
//! body decoder for Content-Length and chunked bodies, response encoding, request
//! IDs and the cached `Date` value.
//!
//! This layer imports nothing else of the crate. It knows nothing of routes, JSON
//! or SQL: it turns bytes into a [`parse::Head`] with offsets into the caller's
//! buffer, and a status plus body back into bytes. The connection driver that glues
//! it to sockets is in `engine/`.

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod compress;
pub(crate) mod date;
pub(crate) mod error;
pub(crate) mod parse;
pub(crate) mod request_id;
pub(crate) mod response;

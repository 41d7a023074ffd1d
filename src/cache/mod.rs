//! HTTP caching primitives, I/O-free and generic: what RFC 9111 lets a shared
//! cache store and for how long (`policy`), a byte-bounded in-memory cache
//! (`memory`) and single flight (`flight`). The relay and the API's read cache
//! build on these; nothing here knows of sockets, SQL or routes.

pub mod flight;
pub mod memory;
pub mod policy;

//! Everything that persists or aggregates data: the PostgreSQL pool with its
//! prepared statements ([`db`]), the SQL text ([`sql`]), uploaded files on disk,
//! content-addressed ([`files`]), the in-memory 1MRC aggregate ([`events`]), news
//! between server processes through LISTEN/NOTIFY ([`notify`]), the relay's
//! level-2 cache table and fetch leases ([`http_cache`]), and hex encoding and
//! decoding of md5s, temp names and tokens ([`hex`]).
//!
//! The store knows nothing of HTTP, routes or connections: it is called by the API
//! layer and by `relay/` (which uses [`db`], [`http_cache`] and [`hex`]) with plain
//! values, and answers with plain values or a [`db::DbError`].

pub(crate) mod db;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod hex;
pub(crate) mod http_cache;
pub(crate) mod notify;
pub(crate) mod sql;

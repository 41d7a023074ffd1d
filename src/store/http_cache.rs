//! The relay's level-2 cache in PostgreSQL (`http_cache`, UNLOGGED): read on a
//! level-1 miss, written behind responses, purged of rows no one may serve any
//! more. Rows are plain data here; the relay decides what they mean.

use super::db::{Db, DbError};
use std::sync::Arc;

/// One stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub status: u16,
    /// Header text, each field `\r\nName: value`.
    pub header_lines: Arc<[u8]>,
    /// Shared with the cache entry it was made from: queuing a write copies nothing.
    pub body: Arc<[u8]>,
    /// Milliseconds since the epoch.
    pub stored_at: i64,
    /// Seconds.
    pub initial_age: i64,
    pub fresh: i64,
    pub swr: i64,
    pub sie: i64,
    /// Milliseconds since the epoch after which the row is useless.
    pub useless_after: i64,
}

const GET: &str =
    "SELECT status, header_lines, body, stored_at, initial_age, fresh, swr, sie, useless_after \
     FROM http_cache WHERE key = $1 AND useless_after > $2";
const PUT: &str = "INSERT INTO http_cache \
     (key, status, header_lines, body, stored_at, initial_age, fresh, swr, sie, useless_after) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, header_lines = EXCLUDED.header_lines, \
     body = EXCLUDED.body, stored_at = EXCLUDED.stored_at, initial_age = EXCLUDED.initial_age, \
     fresh = EXCLUDED.fresh, swr = EXCLUDED.swr, sie = EXCLUDED.sie, useless_after = EXCLUDED.useless_after \
     WHERE http_cache.stored_at <= EXCLUDED.stored_at";

const FORGET: &str = "DELETE FROM http_cache WHERE key = $1 AND stored_at <= $2";

/// The row for `key` that is still of use at `now_ms`.
pub fn get(db: &Db, key: &str, now_ms: i64) -> Result<Option<Row>, DbError> {
    let mut pooled = db.get()?;
    let row = pooled
        .client
        .query_opt(GET, &[&key, &now_ms])
        .map_err(|e| db.failed(e))?;
    Ok(row.map(|r| Row {
        status: r.get::<_, i16>(0) as u16,
        header_lines: r.get::<_, Vec<u8>>(1).into(),
        body: r.get::<_, Vec<u8>>(2).into(),
        stored_at: r.get(3),
        initial_age: r.get(4),
        fresh: r.get(5),
        swr: r.get(6),
        sie: r.get(7),
        useless_after: r.get(8),
    }))
}

/// Stores rows in one transaction; a newer row for a key is never replaced by an
/// older one (two instances may write the same key).
pub fn put(db: &Db, rows: &[(String, Row)]) -> Result<(), DbError> {
    let mut pooled = db.get()?;
    let mut tx = pooled.client.transaction().map_err(|e| db.failed(e))?;
    let statement = tx.prepare(PUT).map_err(|e| db.failed(e))?;
    for (key, r) in rows {
        let status = r.status as i16;
        let (header_lines, body): (&[u8], &[u8]) = (&r.header_lines, &r.body);
        tx.execute(
            &statement,
            &[
                key,
                &status,
                &header_lines,
                &body,
                &r.stored_at,
                &r.initial_age,
                &r.fresh,
                &r.swr,
                &r.sie,
                &r.useless_after,
            ],
        )
        .map_err(|e| db.failed(e))?;
    }
    tx.commit().map_err(|e| db.failed(e))
}

/// Takes the fetch lease on `key` for `holder` until `until` (ms), unless another
/// holder's lease is still running at `now_ms`. True when taken.
pub fn lease(db: &Db, key: &str, holder: &str, now_ms: i64, until: i64) -> Result<bool, DbError> {
    let mut pooled = db.get()?;
    let taken = pooled
        .client
        .query_opt(
            "INSERT INTO http_cache_leases (key, holder, until) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until \
             WHERE http_cache_leases.until <= $4 OR http_cache_leases.holder = EXCLUDED.holder \
             RETURNING holder",
            &[&key, &holder, &until, &now_ms],
        )
        .map_err(|e| db.failed(e))?;
    Ok(taken.is_some())
}

/// Whether someone holds a running lease on `key` at `now_ms`.
pub fn leased(db: &Db, key: &str, now_ms: i64) -> Result<bool, DbError> {
    let mut pooled = db.get()?;
    let row = pooled
        .client
        .query_opt(
            "SELECT 1 FROM http_cache_leases WHERE key = $1 AND until > $2",
            &[&key, &now_ms],
        )
        .map_err(|e| db.failed(e))?;
    Ok(row.is_some())
}

/// Gives back `holder`'s leases on `keys`.
pub fn release(db: &Db, keys: &[&str], holder: &str) -> Result<(), DbError> {
    let mut pooled = db.get()?;
    pooled
        .client
        .execute(
            "DELETE FROM http_cache_leases WHERE key = ANY($1) AND holder = $2",
            &[&keys, &holder],
        )
        .map(|_| ())
        .map_err(|e| db.failed(e))
}

/// Deletes each key's row stored at or before its time (ms): a newer row,
/// written since by another instance, stays.
pub fn forget(db: &Db, keys: &[(String, i64)]) -> Result<(), DbError> {
    let mut pooled = db.get()?;
    let mut tx = pooled.client.transaction().map_err(|e| db.failed(e))?;
    let statement = tx.prepare(FORGET).map_err(|e| db.failed(e))?;
    for (key, before) in keys {
        tx.execute(&statement, &[key, before]).map_err(|e| db.failed(e))?;
    }
    tx.commit().map_err(|e| db.failed(e))
}

/// Deletes rows useless at `now_ms`; how many.
pub fn purge(db: &Db, now_ms: i64) -> Result<u64, DbError> {
    let mut pooled = db.get()?;
    pooled
        .client
        .execute("DELETE FROM http_cache_leases WHERE until <= $1", &[&now_ms])
        .map_err(|e| db.failed(e))?;
    pooled
        .client
        .execute("DELETE FROM http_cache WHERE useless_after <= $1", &[&now_ms])
        .map_err(|e| db.failed(e))
}

/// Deletes every row; how many.
pub fn clear(db: &Db) -> Result<u64, DbError> {
    let mut pooled = db.get()?;
    pooled
        .client
        .execute("DELETE FROM http_cache", &[])
        .map_err(|e| db.failed(e))
}

/// Rows and the bytes of their bodies and fields.
pub fn size(db: &Db) -> Result<(i64, i64), DbError> {
    let mut pooled = db.get()?;
    let row = pooled
        .client
        .query_one(
            "SELECT count(*), COALESCE(sum(length(body) + length(header_lines)), 0)::bigint FROM http_cache",
            &[],
        )
        .map_err(|e| db.failed(e))?;
    Ok((row.get(0), row.get(1)))
}

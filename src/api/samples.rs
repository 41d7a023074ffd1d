//! Sample metadata (the C server's `geo_metadata`): POST /api/sample, GET
//! /api/sample/{id} and GET /api/samples with keyset pagination.
//!
//! Latitude and longitude are any finite numbers: the C project's own example body
//! has latitude 4743.546754, so no degree range is imposed. Every authenticated user
//! may read every sample; the owner's name is part of the answer.

use super::auth::{authenticate, note};
use super::json::Fields;
use super::tokens::{decode_hex, encode_hex};
use super::{Reply, Request, State};
use crate::db::DbError;
use crate::error::{ApiError, Error};
use postgres::Row;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// Most items in each of flora, fauna and calls.
const MAX_ITEMS: usize = 64;
/// Longest item in those arrays, in bytes.
const MAX_ITEM_BYTES: usize = 256;
/// Page size of GET /api/samples when none is asked for, and the most allowed.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

/// RFC 3339 date-time, or a plain `YYYY-MM-DD` taken as midnight UTC (the C example).
fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    Date::parse(s, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc())
}

pub fn create(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let (who, _) = authenticate(st, req)?;
    let mut f = Fields::parse(
        req.body,
        &[
            "img_md5",
            "timestamp",
            "latitude",
            "longitude",
            "altitude",
            "metadata",
            "flora",
            "fauna",
            "calls",
        ],
    )?;
    let mut md5 = [0u8; 16];
    if let Some(hex) = f.string("img_md5", 1, 64) {
        if decode_hex(hex.as_bytes(), &mut md5).is_none() {
            f.problem("img_md5", "must be 32 hexadecimal digits");
        }
    }
    let taken_at = f.string("timestamp", 1, 64).and_then(|s| {
        let t = parse_timestamp(&s);
        if t.is_none() {
            f.problem(
                "timestamp",
                "must be RFC 3339 (2000-12-09T10:00:00Z) or YYYY-MM-DD",
            );
        }
        t
    });
    let latitude = f.number("latitude");
    let longitude = f.number("longitude");
    let altitude = f.number("altitude");
    let metadata = f.int32("metadata");
    let flora = f.strings("flora", MAX_ITEMS, MAX_ITEM_BYTES);
    let fauna = f.strings("fauna", MAX_ITEMS, MAX_ITEM_BYTES);
    let calls = f.strings("calls", MAX_ITEMS, MAX_ITEM_BYTES);
    f.finish()?;
    let (Some(taken_at), Some(lat), Some(lon), Some(alt), Some(meta), Some(flora), Some(fauna), Some(calls)) = (
        taken_at, latitude, longitude, altitude, metadata, flora, fauna, calls,
    ) else {
        return Err(ApiError::Internal("validated fields missing".into()).into());
    };

    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let row = db
        .client
        .query_one(
            &db.st.insert_sample,
            &[
                &who.user_id,
                &&md5[..],
                &taken_at,
                &lat,
                &lon,
                &alt,
                &meta,
                &flora,
                &fauna,
                &calls,
            ],
        )
        .map_err(|e| match DbError::from(e) {
            DbError::Conflict(_) => ApiError::Conflict("a sample with this img_md5 exists"),
            other => {
                st.db.note(&other);
                other.into()
            }
        })?;
    let id: i64 = row.get(0);
    serde_json::to_writer(out, &serde_json::json!({ "id": id }))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Reply::json(201))
}

fn sample_json(row: &Row) -> Result<serde_json::Value, ApiError> {
    let fmt = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|e| ApiError::Internal(e.to_string()));
    let md5: &[u8] = row.get(1);
    Ok(serde_json::json!({
        "id": row.get::<_, i64>(0),
        "img_md5": encode_hex(md5),
        "timestamp": fmt(row.get(2))?,
        "latitude": row.get::<_, f64>(3),
        "longitude": row.get::<_, f64>(4),
        "altitude": row.get::<_, f64>(5),
        "metadata": row.get::<_, i32>(6),
        "flora": row.get::<_, Vec<String>>(7),
        "fauna": row.get::<_, Vec<String>>(8),
        "calls": row.get::<_, Vec<String>>(9),
        "created_at": fmt(row.get(10))?,
        "owner": row.get::<_, String>(11),
        "image_present": row.get::<_, bool>(12),
    }))
}

pub fn get(st: &State, req: &Request<'_>, id: i64, out: &mut Vec<u8>) -> Result<Reply, Error> {
    authenticate(st, req)?;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let rows = db
        .client
        .query(&db.st.get_sample, &[&id])
        .map_err(|e| note(st, e))?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    serde_json::to_writer(out, &sample_json(row)?).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Reply::json(200))
}

/// Reads `after` and `limit` from the query string.
fn page_params(query: &str) -> Result<(i64, i64), ApiError> {
    let mut after = 0i64;
    let mut limit = DEFAULT_PAGE;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = || {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| ApiError::Invalid(format!("{k}: must be a non-negative integer")))
        };
        match k {
            "after" => after = n()?,
            "limit" => {
                limit = n()?;
                if limit == 0 || limit > MAX_PAGE {
                    return Err(ApiError::Invalid(format!("limit: must be 1 to {MAX_PAGE}")));
                }
            }
            _ => return Err(ApiError::Invalid(format!("{k}: unknown query parameter"))),
        }
    }
    Ok((after, limit))
}

pub fn list(st: &State, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    authenticate(st, req)?;
    let (after, limit) = page_params(req.query())?;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let rows = db
        .client
        .query(&db.st.list_samples, &[&after, &limit])
        .map_err(|e| note(st, e))?;
    let samples = rows.iter().map(sample_json).collect::<Result<Vec<_>, _>>()?;
    // A full page may have more behind it; a short one is the end.
    let next_after = match rows.last() {
        Some(r) if rows.len() as i64 == limit => Some(r.get::<_, i64>(0)),
        _ => None,
    };
    serde_json::to_writer(
        out,
        &serde_json::json!({ "samples": samples, "next_after": next_after }),
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Reply::json(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_accept_rfc3339_and_plain_dates() {
        assert!(parse_timestamp("2000-12-09").is_some());
        assert!(parse_timestamp("2000-12-09T10:11:12Z").is_some());
        assert!(parse_timestamp("2000-12-09T10:11:12+02:00").is_some());
        assert!(parse_timestamp("2000-13-09").is_none());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn page_params_validate() {
        assert_eq!(page_params(""), Ok((0, DEFAULT_PAGE)));
        assert_eq!(page_params("after=10&limit=5"), Ok((10, 5)));
        assert!(page_params("limit=0").is_err());
        assert!(page_params("limit=501").is_err());
        assert!(page_params("after=-1").is_err());
        assert!(page_params("sort=id").is_err());
    }
}

//! Sample metadata (the C server's `geo_metadata`): POST /api/sample, GET
//! /api/sample/{id} and GET /api/samples with keyset pagination.
//!
//! Latitude and longitude are any finite numbers: the C project's own example body
//! has latitude 4743.546754, so no degree range is imposed. Every authenticated user
//! may read every sample; the owner's name is part of the answer.

use super::auth::{authenticate, note};
use super::error::{ApiError, Error};
use super::json::Fields;
use super::reads::{self, Read};
use super::request::{HeaderValue, Reply, Request};
use super::state::State;
use crate::store::db::DbError;
use crate::store::hex::{decode_hex, encode_hex, hex_pair};
use postgres::Row;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// Most items in each of flora, fauna and calls.
const MAX_ITEMS: usize = 64;
/// Longest item in those arrays, in characters (Unicode scalar values).
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

/// A validated sample waiting for its batch's INSERT.
pub struct NewSample {
    user_id: i64,
    md5: [u8; 16],
    taken_at: OffsetDateTime,
    latitude: f64,
    longitude: f64,
    altitude: f64,
    metadata: i32,
    flora: Vec<String>,
    fauna: Vec<String>,
    calls: Vec<String>,
}

/// POST /api/sample, first half: authenticates and validates the request (401,
/// 400 with every bad field), leaving the row to be inserted with its batch.
pub fn stage(st: &State, req: &Request<'_>) -> Result<NewSample, Error> {
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
    let (
        Some(taken_at),
        Some(latitude),
        Some(longitude),
        Some(altitude),
        Some(metadata),
        Some(flora),
        Some(fauna),
        Some(calls),
    ) = (
        taken_at, latitude, longitude, altitude, metadata, flora, fauna, calls,
    )
    else {
        return Err(ApiError::Internal("validated fields missing".into()).into());
    };
    Ok(NewSample {
        user_id: who.user_id,
        md5,
        taken_at,
        latitude,
        longitude,
        altitude,
        metadata,
        flora,
        fauna,
        calls,
    })
}

/// The answer to a duplicate `img_md5`.
const DUPLICATE: ApiError = ApiError::Conflict("a sample with this img_md5 exists");

/// Inserts a batch of samples with one multi-row INSERT and returns each one's
/// own outcome, in order: its new id, or 409 when its `img_md5` already exists
/// (in the table, or earlier in the same batch), without failing the others. A
/// database that is down fails the whole batch (503: nothing of it was stored).
/// Any other failure of a batch of several, a duplicate among them, is retried
/// one sample at a time, so a row the database refuses fails only its own request.
pub fn commit(st: &State, items: &[&NewSample]) -> Result<Vec<Result<i64, ApiError>>, ApiError> {
    // The first sample of each md5 goes to the INSERT; later ones in the batch are
    // duplicates of it whatever the database says.
    let mut first_of: std::collections::HashMap<[u8; 16], usize> = Default::default();
    let mut cols = Columns::with_capacity(items.len());
    for (i, s) in items.iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(e) = first_of.entry(s.md5) {
            e.insert(i);
            cols.push(s);
        }
    }
    let inserted = {
        let mut pooled = st.db.get()?;
        let db = &mut *pooled;
        db.client
            .query(
                &db.st.insert_samples,
                &[
                    &cols.user_id,
                    &cols.md5,
                    &cols.taken_at,
                    &cols.latitude,
                    &cols.longitude,
                    &cols.altitude,
                    &cols.metadata,
                    &cols.flora,
                    &cols.fauna,
                    &cols.calls,
                ],
            )
            .map_err(DbError::from)
            // Noted while the connection is still held, so that handing it back
            // does not count as a success (see `Db::note`).
            .inspect_err(|e| st.db.note(e))
    };
    let inserted = match inserted {
        Ok(rows) => {
            // Listings changed (other processes hear it from the INSERT).
            st.reads.samples_changed();
            rows
        }
        Err(e @ DbError::Unavailable(_)) => return Err(e.into()),
        Err(e) if items.len() > 1 => {
            // A duplicate is the client's business; anything else is worth a look.
            if let DbError::Conflict(_) = e {
                tracing::debug!(
                    "a batch of {} samples holds a duplicate; inserting one at a time",
                    items.len()
                );
            } else {
                tracing::warn!(
                    "a batch of {} samples failed ({e}); inserting one at a time",
                    items.len()
                );
            }
            let mut each = Vec::with_capacity(items.len());
            for item in items {
                let one = commit(st, &[item]).and_then(|mut r| {
                    r.pop()
                        .ok_or_else(|| ApiError::Internal("no outcome for a sample".into()))
                });
                // The database went away: the rest would each wait for it.
                if let Err(ApiError::Unavailable) = one {
                    each.resize(items.len(), Err(ApiError::Unavailable));
                    break;
                }
                each.push(one.and_then(|r| r));
            }
            return Ok(each);
        }
        Err(e) => return Err(sample_error(e)),
    };
    let mut ids: std::collections::HashMap<[u8; 16], i64> = Default::default();
    for row in &inserted {
        let md5: &[u8] = row.try_get(1).map_err(|e| ApiError::Internal(e.to_string()))?;
        let id: i64 = row.try_get(0).map_err(|e| ApiError::Internal(e.to_string()))?;
        let md5: [u8; 16] = md5
            .try_into()
            .map_err(|_| ApiError::Internal("image_md5 is not 16 bytes".into()))?;
        ids.insert(md5, id);
    }
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, s)| match ids.get(&s.md5) {
            Some(id) if first_of.get(&s.md5) == Some(&i) => Ok(*id),
            _ => Err(DUPLICATE),
        })
        .collect())
}

/// What a single sample's failure means to its client.
fn sample_error(e: DbError) -> ApiError {
    match e {
        DbError::Conflict(_) => DUPLICATE,
        other => {
            // An outage was noted where it happened, with the connection held.
            if let DbError::Other(ref detail) = other {
                tracing::error!("sample insert failed: {detail}");
            }
            other.into()
        }
    }
}

/// A batch of samples as the column arrays of `sql::INSERT_SAMPLES`.
struct Columns<'a> {
    user_id: Vec<i64>,
    md5: Vec<&'a [u8]>,
    taken_at: Vec<OffsetDateTime>,
    latitude: Vec<f64>,
    longitude: Vec<f64>,
    altitude: Vec<f64>,
    metadata: Vec<i32>,
    flora: Vec<String>,
    fauna: Vec<String>,
    calls: Vec<String>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Columns {
            user_id: Vec::with_capacity(n),
            md5: Vec::with_capacity(n),
            taken_at: Vec::with_capacity(n),
            latitude: Vec::with_capacity(n),
            longitude: Vec::with_capacity(n),
            altitude: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            flora: Vec::with_capacity(n),
            fauna: Vec::with_capacity(n),
            calls: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, s: &'a NewSample) {
        self.user_id.push(s.user_id);
        self.md5.push(&s.md5);
        self.taken_at.push(s.taken_at);
        self.latitude.push(s.latitude);
        self.longitude.push(s.longitude);
        self.altitude.push(s.altitude);
        self.metadata.push(s.metadata);
        self.flora.push(array_literal(&s.flora));
        self.fauna.push(array_literal(&s.fauna));
        self.calls.push(array_literal(&s.calls));
    }
}

/// A PostgreSQL array literal of text elements: every element quoted, with `\`
/// and `"` escaped, so any string (empty, with commas, braces or quotes, or the
/// word NULL) comes back as itself.
fn array_literal(items: &[String]) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|i| i.len() + 3).sum::<usize>());
    out.push('{');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// POST /api/sample, second half: answers with what the batch gave this sample.
pub fn created(req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, Error> {
    super::json::write_int_object(out, "id", req.committed()?);
    Ok(Reply::json(201))
}

/// One sample as the API answers it, borrowing its text from the row: no
/// `serde_json::Value` (a map of owned strings) per sample. The fields are in
/// alphabetical order, so the bytes are the ones a `Value` (sorted keys) gave.
#[derive(serde::Serialize)]
struct SampleOut<'a> {
    altitude: f64,
    calls: Vec<&'a str>,
    created_at: Rfc3339Time,
    fauna: Vec<&'a str>,
    flora: Vec<&'a str>,
    id: i64,
    image_present: bool,
    img_md5: Hex<'a>,
    latitude: f64,
    longitude: f64,
    metadata: i32,
    owner: &'a str,
    timestamp: Rfc3339Time,
}

/// A page of samples (fields in alphabetical order, like `SampleOut`).
#[derive(serde::Serialize)]
struct PageOut<'a> {
    next_after: Option<i64>,
    samples: Vec<SampleOut<'a>>,
}

/// A time written as RFC 3339 text, formatted on the stack.
struct Rfc3339Time(OffsetDateTime);

impl serde::Serialize for Rfc3339Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // What was written is told by how far the slice moved: the count that
        // format_into returns leaves out the digits of a fraction of a second.
        let n = {
            let mut rest = &mut buf[..];
            self.0
                .format_into(&mut rest, &Rfc3339)
                .map_err(serde::ser::Error::custom)?;
            64 - rest.len()
        };
        s.serialize_str(std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?)
    }
}

/// Bytes written as lower-case hex text (an md5: on the stack).
struct Hex<'a>(&'a [u8]);

impl serde::Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        match buf.get_mut(..self.0.len() * 2) {
            Some(out) => {
                for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
                    pair.copy_from_slice(hex_pair(*b).as_slice());
                }
                s.serialize_str(std::str::from_utf8(out).map_err(serde::ser::Error::custom)?)
            }
            None => s.serialize_str(&encode_hex(self.0)),
        }
    }
}

fn sample_out(row: &Row) -> SampleOut<'_> {
    SampleOut {
        id: row.get(0),
        img_md5: Hex(row.get(1)),
        timestamp: Rfc3339Time(row.get(2)),
        latitude: row.get(3),
        longitude: row.get(4),
        altitude: row.get(5),
        metadata: row.get(6),
        flora: row.get(7),
        fauna: row.get(8),
        calls: row.get(9),
        created_at: Rfc3339Time(row.get(10)),
        owner: row.get(11),
        image_present: row.get(12),
    }
}

pub fn get(st: &State, req: &Request<'_>, id: i64, out: &mut Vec<u8>) -> Result<Reply, Error> {
    authenticate(st, req)?;
    let mut key = itoa::Buffer::new();
    let key = key.format(id);
    if let Some(read) = st.reads.sample(key) {
        return Ok(cached(req, &read, out));
    }
    let at = st.reads.generations();
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let rows = db
        .client
        .query(&db.st.get_sample, &[&id])
        .map_err(|e| note(st, e))?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    serde_json::to_writer(&mut *out, &sample_out(row)).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(fresh(req, st.reads.keep_sample(key, out, at), out))
}

/// The answer from a cached read: 304 when the client has it already.
fn cached(req: &Request<'_>, read: &Read, out: &mut Vec<u8>) -> Reply {
    let not_modified = reads::not_modified(req.head.if_none_match.map(|s| s.str(req.buf)), read);
    if !not_modified {
        out.extend_from_slice(&read.body);
    }
    Reply {
        stands_for_json: not_modified.then_some(read.body.len()),
        ..validated(
            if not_modified { 304 } else { 200 },
            HeaderValue::Shared(Arc::clone(&read.etag)),
        )
    }
}

/// The answer to a read just made (`out` holds its body), with its validator
/// when it was kept.
fn fresh(req: &Request<'_>, kept: Option<Arc<Read>>, out: &mut Vec<u8>) -> Reply {
    match kept {
        Some(read) => {
            out.clear();
            cached(req, &read, out)
        }
        None => validated(200, HeaderValue::Owned(reads::etag_of(out))),
    }
}

/// Authenticated reads: a private cache may keep them, and must revalidate
/// (with the ETag) before reuse.
fn validated(status: u16, etag: HeaderValue) -> Reply {
    Reply {
        header: Some(("ETag", etag)),
        cache_control: Some("private, no-cache"),
        ..if status == 304 {
            Reply::empty(304)
        } else {
            Reply::json(status)
        }
    }
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
    if let Some(read) = st.reads.page(req.query()) {
        return Ok(cached(req, &read, out));
    }
    let at = st.reads.generations();
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let rows = db
        .client
        .query(&db.st.list_samples, &[&after, &limit])
        .map_err(|e| note(st, e))?;
    // A full page may have more behind it; a short one is the end.
    let next_after = match rows.last() {
        Some(r) if rows.len() as i64 == limit => Some(r.get::<_, i64>(0)),
        _ => None,
    };
    let page = PageOut {
        next_after,
        samples: rows.iter().map(sample_out).collect(),
    };
    serde_json::to_writer(&mut *out, &page).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(fresh(req, st.reads.keep_page(req.query(), out, at), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_serialises_to_the_bytes_a_json_value_gave() {
        // With a fraction of a second, as created_at always has.
        let t = OffsetDateTime::from_unix_timestamp_nanos(976_356_000_097_113_000).expect("a time");
        let md5 = [
            0xab_u8, 0x01, 0xff, 0x10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xc0, 0xde,
        ];
        let out = SampleOut {
            altitude: 4935.3,
            calls: vec!["MORDECAI"],
            created_at: Rfc3339Time(t),
            fauna: vec![],
            flora: vec!["ORCHID", "quote \" and \\ and é"],
            id: 7,
            image_present: false,
            img_md5: Hex(&md5),
            latitude: 4743.546754,
            longitude: -0.5,
            metadata: 35983465,
            owner: "ann",
            timestamp: Rfc3339Time(t),
        };
        let value = serde_json::json!({
            "id": 7,
            "img_md5": encode_hex(&md5),
            "timestamp": t.format(&Rfc3339).expect("formats"),
            "latitude": 4743.546754,
            "longitude": -0.5,
            "altitude": 4935.3,
            "metadata": 35983465,
            "flora": ["ORCHID", "quote \" and \\ and é"],
            "fauna": Vec::<String>::new(),
            "calls": ["MORDECAI"],
            "created_at": t.format(&Rfc3339).expect("formats"),
            "owner": "ann",
            "image_present": false,
        });
        let page = |samples| serde_json::json!({ "samples": samples, "next_after": Some(7) });
        assert_eq!(
            serde_json::to_string(&out).expect("serialises"),
            serde_json::to_string(&value).expect("serialises")
        );
        assert_eq!(
            serde_json::to_string(&PageOut {
                next_after: Some(7),
                samples: vec![out],
            })
            .expect("serialises"),
            serde_json::to_string(&page(vec![value])).expect("serialises")
        );
    }

    #[test]
    fn timestamps_accept_rfc3339_and_plain_dates() {
        assert!(parse_timestamp("2000-12-09").is_some());
        assert!(parse_timestamp("2000-12-09T10:11:12Z").is_some());
        assert!(parse_timestamp("2000-12-09T10:11:12+02:00").is_some());
        assert!(parse_timestamp("2000-13-09").is_none());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn array_literals_quote_and_escape_every_element() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(array_literal(&[]), "{}");
        assert_eq!(
            array_literal(&items(&["ORCHID", "DAFFODIL"])),
            r#"{"ORCHID","DAFFODIL"}"#
        );
        assert_eq!(
            array_literal(&items(&["", "a,b", "{x}", r#"say "hi"\"#, "NULL"])),
            r#"{"","a,b","{x}","say \"hi\"\\","NULL"}"#
        );
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

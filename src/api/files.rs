//! POST /api/file and GET /api/file/{md5}: admission of an upload before its body is
//! read, what a finished upload becomes (a row in `files`), and serving a file.
//!
//! The body itself never passes through here: the worker streams it into the store
//! (`transfer::Incoming`) and streams a download out (`transfer::Outgoing`).

use super::auth::{authenticate, note};
use super::tokens::encode_hex;
use super::{Reply, Request, State};
use crate::error::{ApiError, Error};
use crate::http::{Framing, HttpError};
use crate::transfer::{Incoming, MediaType};

/// An upload allowed to start.
pub struct Admitted {
    pub user_id: i64,
    pub media: MediaType,
}

/// Decides from the head alone whether an upload may start: a valid token (401
/// before any body byte), a supported media type (415), a declared length or chunked
/// framing (411). The size limit was already applied by `Api::plan`.
pub fn admit(st: &State, req: &Request<'_>) -> Result<Admitted, Error> {
    let (who, _) = authenticate(st, req)?;
    let media = match req.content_type().map(super::json::media_type) {
        Some(ct) if ct.eq_ignore_ascii_case("application/octet-stream") => MediaType::OctetStream,
        Some(ct) if ct.eq_ignore_ascii_case("image/png") => MediaType::Png,
        _ => {
            return Err(
                ApiError::UnsupportedMediaType("expected application/octet-stream or image/png").into(),
            )
        }
    };
    if req.head.framing == Framing::None {
        return Err(HttpError::LengthRequired.into());
    }
    Ok(Admitted {
        user_id: who.user_id,
        media,
    })
}

/// Makes a complete upload durable and records it: 201 for new bytes, 200 when the
/// same bytes were already stored.
pub fn finish(st: &State, incoming: Incoming, out: &mut Vec<u8>) -> Result<Reply, Error> {
    let Incoming {
        upload,
        media,
        user_id,
        ..
    } = incoming;
    let stored = upload
        .commit(&st.store)
        .map_err(|e| ApiError::Internal(format!("storing upload: {e}")))?;
    let mut pooled = st.db.get()?;
    let db = &mut *pooled;
    let size = stored.size as i64;
    let inserted = db
        .client
        .execute(
            &db.st.insert_file,
            &[&&stored.md5[..], &size, &media.as_str(), &user_id],
        )
        .map_err(|e| note(st, e))?;
    serde_json::to_writer(
        out,
        &serde_json::json!({ "md5": encode_hex(&stored.md5), "size": stored.size }),
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Reply::json(if inserted == 1 { 201 } else { 200 }))
}

/// Whether an If-None-Match value matches the entity tag `"<md5>"`.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

pub fn get(st: &State, req: &Request<'_>, md5: [u8; 16]) -> Result<Reply, Error> {
    authenticate(st, req)?;
    let media = {
        let mut pooled = st.db.get()?;
        let db = &mut *pooled;
        let rows = db
            .client
            .query(&db.st.get_file, &[&&md5[..]])
            .map_err(|e| note(st, e))?;
        let row = rows.first().ok_or(ApiError::NotFound)?;
        MediaType::from_stored(row.get::<_, &str>(0))
    };
    let etag = format!("\"{}\"", encode_hex(&md5));
    if let Some(inm) = req.head.if_none_match.map(|s| s.str(req.buf)) {
        if etag_matches(inm, &etag) {
            return Ok(Reply {
                status: 304,
                content_type: None,
                header: Some(("ETag", etag)),
                file: None,
            });
        }
    }
    let (file, size) = st.store.open_file(&md5).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::NotFound
        } else {
            ApiError::Internal(format!("opening stored file: {e}"))
        }
    })?;
    Ok(Reply {
        status: 200,
        content_type: Some(media.as_str()),
        header: Some(("ETag", etag)),
        file: Some((file, size)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_wildcards_match() {
        let tag = "\"a84c28046b82d832d9d7dac7e740bc65\"";
        assert!(etag_matches(tag, tag));
        assert!(etag_matches(&format!("\"x\", {tag}"), tag));
        assert!(etag_matches("*", tag));
        assert!(etag_matches(&format!("W/{tag}"), tag));
        assert!(!etag_matches("\"other\"", tag));
    }
}

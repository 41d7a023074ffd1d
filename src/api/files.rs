//! POST /api/file and GET /api/file/{md5}: admission of an upload before its body is
//! read, what its body must be (an [`UploadBody`]: bytes to a temp file, the PNG
//! signature checked across any split), what a finished upload becomes (a row in
//! `files`), and serving a file.
//!
//! Framing is not done here: the connection driver decodes the body as it arrives
//! and hands the bytes to [`UploadBody::write`], and streams a download out.

use super::auth::{authenticate, note};
use super::error::{ApiError, Error};
use super::request::{HeaderValue, Reply, Request};
use super::state::State;
use crate::cache::policy::etag_matches;
use crate::http::error::HttpError;
use crate::http::parse::Framing;
use crate::store::files::Upload;
use crate::store::hex::encode_hex;
use std::sync::atomic::Ordering::Relaxed;

/// The PNG file signature, which an `image/png` upload must start with.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// The media types an upload may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    OctetStream,
    Png,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::OctetStream => "application/octet-stream",
            MediaType::Png => "image/png",
        }
    }

    pub fn from_stored(s: &str) -> MediaType {
        if s == "image/png" {
            MediaType::Png
        } else {
            MediaType::OctetStream
        }
    }
}

/// The body of an admitted upload, written as it arrives.
pub struct UploadBody {
    upload: Upload,
    media: MediaType,
    user_id: i64,
    /// Bytes of the PNG signature checked so far (only for `image/png`).
    signature_checked: usize,
}

impl UploadBody {
    /// Appends body bytes: refuses an `image/png` body as soon as its first bytes
    /// differ from the PNG signature.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.media == MediaType::Png && self.signature_checked < PNG_SIGNATURE.len() {
            let n = bytes.len().min(PNG_SIGNATURE.len() - self.signature_checked);
            if bytes[..n] != PNG_SIGNATURE[self.signature_checked..self.signature_checked + n] {
                return Err(not_png());
            }
            self.signature_checked += n;
        }
        self.upload
            .write(bytes)
            .map_err(|e| ApiError::Internal(format!("writing upload: {e}")).into())
    }
}

fn not_png() -> Error {
    ApiError::Invalid("body is not a PNG image".into()).into()
}

/// Decides from the head alone whether an upload may start: a valid token (401
/// before any body byte), a supported media type (415), a declared length or chunked
/// framing (411); then opens its temp file. The size limit was already applied by
/// `Api::plan`.
pub fn admit(st: &State, req: &Request<'_>) -> Result<UploadBody, Error> {
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
    let upload = st
        .store
        .begin()
        .map_err(|e| ApiError::Internal(format!("starting upload: {e}")))?;
    Ok(UploadBody {
        upload,
        media,
        user_id: who.user_id,
        signature_checked: 0,
    })
}

/// Makes a complete upload durable and records it: 201 for new bytes, 200 when the
/// same bytes were already stored. A PNG shorter than its signature is refused.
pub fn finish(st: &State, body: UploadBody, out: &mut Vec<u8>) -> Result<Reply, Error> {
    if body.media == MediaType::Png && body.signature_checked < PNG_SIGNATURE.len() {
        return Err(not_png());
    }
    let UploadBody {
        upload,
        media,
        user_id,
        ..
    } = body;
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
    if inserted == 1 {
        // Samples naming this file changed (other processes hear it from the
        // INSERT).
        st.reads.files_changed();
    }
    st.uploads.fetch_add(1, Relaxed);
    st.upload_bytes.fetch_add(stored.size, Relaxed);
    serde_json::to_writer(
        out,
        &serde_json::json!({ "md5": encode_hex(&stored.md5), "size": stored.size }),
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Reply::json(if inserted == 1 { 201 } else { 200 }))
}

/// A stored file never changes (its name is its MD5), but only an authenticated
/// client may read it: a private cache may keep it and revalidate with its ETag,
/// a shared one may not keep it.
const PRIVATE_REVALIDATE: &str = "private, no-cache";

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
                cache_control: Some(PRIVATE_REVALIDATE),
                header: Some(("ETag", HeaderValue::Owned(etag))),
                ..Reply::empty(304)
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
        content_type: Some(media.as_str()),
        header: Some(("ETag", HeaderValue::Owned(etag))),
        file: Some((file, size)),
        cache_control: Some(PRIVATE_REVALIDATE),
        ..Reply::empty(200)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::files::Store;

    fn body(tag: &str, media: MediaType) -> (UploadBody, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("crudrs-upload-{tag}-{}", std::process::id()));
        let store = Store::open(&dir).expect("store");
        let upload = store.begin().expect("begin");
        let body = UploadBody {
            upload,
            media,
            user_id: 1,
            signature_checked: 0,
        };
        (body, dir)
    }

    #[test]
    fn the_png_signature_is_checked_across_splits() {
        let (mut png, dir) = body("png", MediaType::Png);
        png.write(&PNG_SIGNATURE[..3]).expect("prefix ok");
        png.write(&PNG_SIGNATURE[3..]).expect("rest ok");
        png.write(b"xy").expect("payload");
        assert_eq!(png.signature_checked, PNG_SIGNATURE.len());
        let (mut gif, gif_dir) = body("gif", MediaType::Png);
        assert!(gif.write(b"GIF89a").is_err(), "not a PNG");
        let (mut any, any_dir) = body("any", MediaType::OctetStream);
        any.write(b"GIF89a").expect("any bytes");
        for d in [dir, gif_dir, any_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

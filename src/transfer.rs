//! Bodies too large to buffer, streamed while the connection carries their progress:
//! [`Incoming`] feeds an upload's body bytes to a temp file as they arrive,
//! [`Outgoing`] sends a stored file as the socket accepts it.
//!
//! Neither ever blocks on the client: `Incoming::feed` takes whatever bytes a read
//! produced and `Outgoing::pump` writes until the socket would block; the worker then
//! parks the connection. Deciding whether an upload may start (auth, type, size) and
//! what a finished one means (the database row) is the API's business.

use crate::http::chunked::ChunkedDecoder;
use crate::http::HttpError;
use crate::poller::write_some;
use crate::storage::Upload;
use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::unix::fs::FileExt;

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

/// How much of the body is still to come.
enum Remaining {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Why feeding an upload failed.
#[derive(Debug)]
pub enum FeedError {
    Http(HttpError),
    /// An `image/png` body that does not start with the PNG signature.
    NotPng,
    Io(io::Error),
}

impl From<HttpError> for FeedError {
    fn from(e: HttpError) -> Self {
        FeedError::Http(e)
    }
}

/// An upload whose body is still arriving.
pub struct Incoming {
    pub upload: Upload,
    pub media: MediaType,
    pub user_id: i64,
    /// Whether the connection closes after the response.
    pub close: bool,
    /// The client sent `Expect: 100-continue` and waits before sending the body.
    pub expect_continue: bool,
    remaining: Remaining,
    /// Bytes of the PNG signature checked so far (only for `image/png`).
    signature_checked: usize,
}

impl Incoming {
    /// `length` is the Content-Length, or `None` for a chunked body of at most `limit`.
    pub fn new(
        upload: Upload,
        media: MediaType,
        user_id: i64,
        length: Option<u64>,
        limit: u64,
        close: bool,
    ) -> Incoming {
        let remaining = match length {
            Some(n) => Remaining::Length(n),
            None => Remaining::Chunked(ChunkedDecoder::new(limit)),
        };
        Incoming {
            upload,
            media,
            user_id,
            close,
            expect_continue: false,
            remaining,
            signature_checked: 0,
        }
    }

    /// Consumes body bytes from `input`; returns how many were body (the rest belongs
    /// to the next request) and whether the body is complete.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), FeedError> {
        match &mut self.remaining {
            Remaining::Length(left) => {
                let take = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let bytes = &input[..take];
                *left -= take as u64;
                let done = *left == 0;
                Self::accept(&mut self.upload, self.media, &mut self.signature_checked, bytes)?;
                if done {
                    self.finish_check()?;
                }
                Ok((take, done))
            }
            Remaining::Chunked(dec) => {
                let upload = &mut self.upload;
                let media = self.media;
                let checked = &mut self.signature_checked;
                let used = dec.decode(input, |b| Self::accept(upload, media, checked, b))?;
                let done = dec.is_done();
                if done {
                    self.finish_check()?;
                }
                Ok((used, done))
            }
        }
    }

    fn accept(
        upload: &mut Upload,
        media: MediaType,
        checked: &mut usize,
        bytes: &[u8],
    ) -> Result<(), FeedError> {
        if media == MediaType::Png && *checked < PNG_SIGNATURE.len() {
            let n = bytes.len().min(PNG_SIGNATURE.len() - *checked);
            if bytes[..n] != PNG_SIGNATURE[*checked..*checked + n] {
                return Err(FeedError::NotPng);
            }
            *checked += n;
        }
        upload.write(bytes).map_err(FeedError::Io)
    }

    /// At the end of the body: a PNG shorter than its signature is not a PNG.
    fn finish_check(&self) -> Result<(), FeedError> {
        if self.media == MediaType::Png && self.signature_checked < PNG_SIGNATURE.len() {
            return Err(FeedError::NotPng);
        }
        Ok(())
    }
}

/// A stored file being sent after its response head.
pub struct Outgoing {
    file: File,
    offset: u64,
    end: u64,
}

impl Outgoing {
    pub fn new(file: File, size: u64) -> Outgoing {
        Outgoing {
            file,
            offset: 0,
            end: size,
        }
    }

    /// Sends file bytes until done (`Ok(true)`) or the socket would block
    /// (`Ok(false)`). `scratch` is the worker's transfer buffer. Positional reads
    /// mean a partially written chunk is simply read again next time.
    pub fn pump(&mut self, sock: &TcpStream, scratch: &mut [u8]) -> io::Result<bool> {
        while self.offset < self.end {
            let want = scratch
                .len()
                .min(usize::try_from(self.end - self.offset).unwrap_or(usize::MAX));
            let n = self.file.read_at(&mut scratch[..want], self.offset)?;
            if n == 0 {
                // The file shrank under us; the promised length cannot be kept.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stored file truncated",
                ));
            }
            let written = write_some(sock, &scratch[..n])?;
            self.offset += written as u64;
            if written < n {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    fn store(tag: &str) -> (Store, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("crudrs-transfer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        (Store::open(&p).expect("store"), p)
    }

    #[test]
    fn length_bodies_stop_at_their_end() {
        let (s, root) = store("len");
        let mut inc = Incoming::new(
            s.begin().expect("begin"),
            MediaType::OctetStream,
            1,
            Some(5),
            100,
            false,
        );
        assert_eq!(inc.feed(b"he").expect("feed"), (2, false));
        assert_eq!(inc.feed(b"lloGET /").expect("feed"), (3, true));
        assert_eq!(inc.upload.size(), 5);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn png_signature_is_checked_across_splits() {
        let (s, root) = store("png");
        let mut inc = Incoming::new(s.begin().expect("begin"), MediaType::Png, 1, Some(10), 100, false);
        inc.feed(&PNG_SIGNATURE[..3]).expect("prefix ok");
        inc.feed(&PNG_SIGNATURE[3..]).expect("rest ok");
        assert_eq!(inc.feed(b"xy").expect("payload"), (2, true));

        let mut bad = Incoming::new(s.begin().expect("begin"), MediaType::Png, 1, Some(10), 100, false);
        assert!(matches!(bad.feed(b"GIF89a"), Err(FeedError::NotPng)));
        let mut short = Incoming::new(s.begin().expect("begin"), MediaType::Png, 1, Some(3), 100, false);
        assert!(matches!(short.feed(&PNG_SIGNATURE[..3]), Err(FeedError::NotPng)));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn chunked_uploads_respect_the_limit() {
        let (s, root) = store("chunk");
        let mut inc = Incoming::new(
            s.begin().expect("begin"),
            MediaType::OctetStream,
            1,
            None,
            4,
            false,
        );
        assert!(matches!(
            inc.feed(b"5\r\nhello\r\n"),
            Err(FeedError::Http(HttpError::BodyTooLarge))
        ));
        let mut ok = Incoming::new(
            s.begin().expect("begin"),
            MediaType::OctetStream,
            1,
            None,
            4,
            false,
        );
        assert_eq!(ok.feed(b"4\r\nabcd\r\n0\r\n\r\nNEXT").expect("feed"), (14, true));
        let _ = std::fs::remove_dir_all(root);
    }
}

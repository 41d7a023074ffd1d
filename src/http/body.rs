//! One incremental body decoder for both framings a request may use: a
//! Content-Length countdown or the chunked coding ([`ChunkedDecoder`]).
//!
//! The connection driver feeds it whatever bytes have arrived, in any split; it
//! hands body bytes to a sink and says how much input was body, so the bytes after
//! the body (a pipelined request) are left alone. Buffered JSON bodies and streamed
//! uploads go through the same decoder. It owns framing only: where the body goes
//! and what it means is the caller's business.

use super::chunked::ChunkedDecoder;
use super::error::HttpError;
use super::parse::Framing;

/// Where a request body stands.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// A Content-Length body (or none, as length 0): this many bytes are still due.
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl Decoder {
    /// The decoder for a request head's framing; a chunked body may decode to at
    /// most `limit` bytes (a Content-Length was checked against it from the head).
    pub fn new(framing: Framing, limit: u64) -> Decoder {
        match framing {
            Framing::None => Decoder::Length(0),
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(ChunkedDecoder::new(limit)),
        }
    }

    /// Decodes from `input`, handing each run of body bytes to `sink`. Returns how
    /// many input bytes belonged to the body.
    pub fn decode<E: From<HttpError>>(
        &mut self,
        input: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        match self {
            Decoder::Length(left) => {
                let take = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                if take > 0 {
                    sink(&input[..take])?;
                }
                Ok(take)
            }
            Decoder::Chunked(dec) => dec.decode(input, sink),
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        match self {
            Decoder::Length(left) => *left == 0,
            Decoder::Chunked(dec) => dec.is_done(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut dec: Decoder, splits: &[&[u8]]) -> (Vec<u8>, usize, bool) {
        let mut body = Vec::new();
        let mut used = 0;
        for part in splits {
            used += dec
                .decode(part, |b| {
                    body.extend_from_slice(b);
                    Ok::<(), HttpError>(())
                })
                .expect("valid body");
        }
        (body, used, dec.is_done())
    }

    #[test]
    fn both_framings_stop_at_the_end_of_the_body_in_any_split() {
        let length = Decoder::new(Framing::Length(5), 100);
        assert_eq!(run(length, &[b"he", b"lloGET /"]), (b"hello".to_vec(), 5, true));
        let chunked = Decoder::new(Framing::Chunked, 100);
        assert_eq!(
            run(chunked, &[b"3\r\nhel\r", b"\n2\r\nlo\r\n0\r\n\r\nGET /"]),
            (b"hello".to_vec(), 20, true)
        );
        assert!(Decoder::new(Framing::None, 100).is_done());
        assert!(!Decoder::new(Framing::Length(1), 100).is_done());
    }

    #[test]
    fn a_chunked_body_over_the_limit_is_refused() {
        let mut dec = Decoder::new(Framing::Chunked, 4);
        let r = dec.decode(b"5\r\nhello\r\n", |_| Ok::<(), HttpError>(()));
        assert_eq!(r, Err(HttpError::BodyTooLarge));
    }
}

//! An incremental decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! It is stricter than httparse's helper: a chunk size needs at least one hex digit
//! and at most 16, chunk lines end in CRLF only (a lone LF inside a chunk extension
//! is a known smuggling vector), and control bytes in extensions are refused. The
//! decoder keeps its position between calls, so a body can arrive in any split and
//! be streamed to its destination without being buffered whole.

use super::error::HttpError;

/// Longest trailer section accepted, in bytes; trailers are read and ignored.
const MAX_TRAILER_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// Inside a chunk extension, up to CR.
    Ext,
    /// After the CR of a chunk-size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name (at least one token character read).
    TrailerName,
    /// Inside a trailer field's value, after its colon.
    Trailer,
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read (while in `Size`), then bytes left of it.
    remaining: u64,
    /// Decoded bytes so far.
    total: u64,
    /// Most decoded bytes accepted; past it, [`HttpError::BodyTooLarge`].
    limit: u64,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(limit: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            total: 0,
            limit,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, handing each run of body bytes to `sink`. Returns how many
    /// input bytes were consumed; it stops right after the last byte of the body, so
    /// anything after it (a pipelined request) is left alone.
    pub fn decode<E: From<HttpError>>(
        &mut self,
        input: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => match hex_value(b) {
                    Some(v) => {
                        if digits == 16 {
                            return Err(bad("chunk size too long").into());
                        }
                        self.remaining = (self.remaining << 4) | u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    }
                    None if digits == 0 => return Err(bad("empty chunk size").into()),
                    None => {
                        self.state = match b {
                            b';' => State::Ext,
                            b'\r' => State::SizeLf,
                            _ => return Err(bad("invalid chunk size line").into()),
                        };
                        if self.total.saturating_add(self.remaining) > self.limit {
                            return Err(HttpError::BodyTooLarge.into());
                        }
                    }
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                    _ => return Err(bad("invalid byte in chunk extension").into()),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(bad("chunk size line must end in CRLF").into());
                    }
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take = (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    sink(&input[i..i + take])?;
                    self.total += take as u64;
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(bad("chunk data must end in CRLF").into());
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(bad("chunk data must end in CRLF").into());
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.state = match b {
                        b'\r' => State::EndLf,
                        b'\n' => return Err(bad("lone LF in chunked trailer").into()),
                        b if is_token(b) => State::TrailerName,
                        _ => return Err(bad("malformed chunked trailer field").into()),
                    };
                    self.count_trailer()?;
                }
                State::TrailerName => {
                    match b {
                        b':' => self.state = State::Trailer,
                        b if is_token(b) => {}
                        // A line without a colon, or a name with a space or a control
                        // byte: not a field line (RFC 9112 §5).
                        _ => return Err(bad("malformed chunked trailer field").into()),
                    }
                    self.count_trailer()?;
                }
                State::Trailer => {
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\n' => return Err(bad("lone LF in chunked trailer").into()),
                        b'\t' => {}
                        b if b < 0x20 || b == 0x7f => {
                            return Err(bad("control byte in chunked trailer").into())
                        }
                        _ => {}
                    }
                    self.count_trailer()?;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(bad("bare CR in chunked trailer").into());
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(bad("chunked body must end in CRLF").into());
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(())
    }
}

fn bad(detail: &'static str) -> HttpError {
    HttpError::BadRequest(detail)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A `tchar` of RFC 9110 §5.6.2: what a field name is made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns body and consumed count.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut body = Vec::new();
        let mut consumed = 0;
        while consumed < input.len() && !d.is_done() {
            let end = (consumed + step).min(input.len());
            consumed += d.decode(&input[consumed..end], |b| {
                body.extend_from_slice(b);
                Ok::<_, HttpError>(())
            })?;
        }
        Ok((body, consumed, d.is_done()))
    }

    #[test]
    fn decodes_at_every_split() {
        let input = b"5;name=val\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, consumed, done) = decode_in_steps(input, step).expect("valid");
            assert!(done);
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
            assert_eq!(&input[consumed..], b"NEXT", "step {step}");
        }
    }

    #[test]
    fn strict_lines_are_enforced() {
        let cases: [&[u8]; 9] = [
            b"\r\nhello\r\n0\r\n\r\n",
            b";ext\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
        ];
        for c in cases {
            assert!(
                decode_in_steps(c, c.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn body_over_limit_is_refused_from_the_size_line() {
        let mut d = ChunkedDecoder::new(4);
        let r = d.decode(b"5\r\n", |_| Ok::<_, HttpError>(()));
        assert_eq!(r, Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn trailer_lines_must_be_field_lines() {
        let ok = b"0\r\nX-A: 1\r\nY:\r\n\r\n";
        assert!(decode_in_steps(ok, ok.len()).expect("valid").2);
        for bad in [
            &b"0\r\nNoColon\r\n\r\n"[..],
            b"0\r\nX A: 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\n X: 1\r\n\r\n",
            b"0\r\nX: a\x01b\r\n\r\n",
        ] {
            assert!(
                decode_in_steps(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Feeds `input` cut at `cuts` (offsets, any order); returns the body, the
        /// bytes consumed and whether the body ended, or the first error.
        fn decode_cut(input: &[u8], cuts: &[usize], limit: u64) -> Result<(Vec<u8>, usize, bool), HttpError> {
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.push(input.len());
            points.sort_unstable();
            let mut d = ChunkedDecoder::new(limit);
            let (mut body, mut consumed) = (Vec::new(), 0);
            for end in points {
                if d.is_done() || end <= consumed {
                    continue;
                }
                consumed += d.decode(&input[consumed..end], |b| {
                    body.extend_from_slice(b);
                    Ok::<_, HttpError>(())
                })?;
            }
            Ok((body, consumed, d.is_done()))
        }

        /// A chunked body: its chunks (with an extension or not), the size's case
        /// and leading zeros, and trailer fields.
        fn chunked() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
            let chunk = (
                prop::collection::vec(any::<u8>(), 1..200),
                prop::option::of("[a-z]{1,8}(=[a-z0-9]{1,8})?"),
                any::<bool>(),
                0usize..3,
            );
            let trailer = ("X-[A-Za-z]{1,10}", "[ -~]{0,20}");
            (
                prop::collection::vec(chunk, 0..8),
                prop::collection::vec(trailer, 0..3),
            )
                .prop_map(|(chunks, trailers)| {
                    let (mut wire, mut body) = (Vec::new(), Vec::new());
                    for (data, ext, upper, zeros) in chunks {
                        let size = if upper {
                            format!("{:X}", data.len())
                        } else {
                            format!("{:x}", data.len())
                        };
                        wire.extend_from_slice("0".repeat(zeros).as_bytes());
                        wire.extend_from_slice(size.as_bytes());
                        if let Some(ext) = ext {
                            wire.extend_from_slice(format!(";{ext}").as_bytes());
                        }
                        wire.extend_from_slice(b"\r\n");
                        wire.extend_from_slice(&data);
                        wire.extend_from_slice(b"\r\n");
                        body.extend_from_slice(&data);
                    }
                    wire.extend_from_slice(b"0\r\n");
                    for (name, value) in trailers {
                        wire.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
                    }
                    wire.extend_from_slice(b"\r\n");
                    (wire, body)
                })
        }

        proptest! {
            /// Any valid chunked body, cut anywhere: the same body, consumed to its
            /// last byte and no further.
            #[test]
            fn prop_a_chunked_body_decodes_the_same_however_it_is_cut(
                (wire, body) in chunked(),
                cuts in prop::collection::vec(any::<usize>(), 0..12),
            ) {
                let mut input = wire.clone();
                input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
                let (decoded, consumed, done) = decode_cut(&input, &cuts, 1 << 20).expect("valid");
                prop_assert!(done);
                prop_assert_eq!(consumed, wire.len());
                prop_assert_eq!(decoded, body);
            }

            /// Any bytes, cut anywhere: no panic, never more than the limit decoded,
            /// never more consumed than given.
            #[test]
            fn prop_any_bytes_decode_within_the_limit(
                input in prop::collection::vec(any::<u8>(), 0..1024),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                if let Ok((decoded, consumed, _)) = decode_cut(&input, &cuts, 100) {
                    prop_assert!(decoded.len() <= 100);
                    prop_assert!(consumed <= input.len());
                }
            }

            /// Bytes shaped like chunked framing: the same checks, on inputs that
            /// get past the first size line more often.
            #[test]
            fn prop_chunk_like_bytes_decode_within_the_limit(
                parts in prop::collection::vec("([0-9a-fA-F]{1,20}|[;= a-z]{0,5}|\r\n|\n|\r|[ -~]{0,10})", 0..30),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                let input = parts.concat().into_bytes();
                if let Ok((decoded, consumed, _)) = decode_cut(&input, &cuts, 100) {
                    prop_assert!(decoded.len() <= 100);
                    prop_assert!(consumed <= input.len());
                }
            }
        }
    }
}

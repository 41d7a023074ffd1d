//! Request-head parsing: httparse tokenizes, this module judges.
//!
//! httparse accepts several things a server must not (duplicate Content-Length,
//! Transfer-Encoding beside Content-Length, a bare CR in some positions), so every
//! framing header is checked here. The result holds offsets ([`Span`]) into the
//! caller's buffer, never borrowed slices, so the buffer can move once parsing ends.
//!
//! Deliberately lenient, as RFC 9112 §2.2 allows: a lone LF ends a line, and empty
//! lines before the request line are skipped (the C project's clients rely on both).
//! A missing Host header is tolerated for the same clients; two Host headers are not.

use super::error::HttpError;

/// The size of the httparse header array; `Limits::max_headers` may only lower it.
pub const HEADER_SLOTS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Method {
    /// The method's name (`OTHER` for one this server does not know).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }

    fn from_bytes(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head.
    Chunked,
}

/// A byte range of the request buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// The spanned bytes as text; header values are visible ASCII or obs-text, so a
    /// non-UTF-8 value yields an empty string rather than an error.
    pub fn str<'b>(&self, buf: &'b [u8]) -> &'b str {
        std::str::from_utf8(self.of(buf)).unwrap_or("")
    }

    fn within(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

/// Limits on the request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of request line plus headers (plus any skipped empty lines); past it, 431.
    pub max_head_bytes: usize,
    /// Number of header fields; past it, 431.
    pub max_headers: usize,
}

/// A parsed request head. Every [`Span`] is relative to the buffer that was parsed.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    /// The path part of the request target, always starting with `/`.
    pub path: Span,
    /// The query after `?`, when there is one.
    pub query: Option<Span>,
    /// Bytes the head took, including skipped empty lines before it.
    pub len: usize,
    pub framing: Framing,
    /// Whether the client allows the connection to stay open after the response.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    pub content_type: Option<Span>,
    pub authorization: Option<Span>,
    pub if_none_match: Option<Span>,
    pub accept_encoding: Option<Span>,
    /// The last `FORWARDED_FIELDS` X-Forwarded-For fields, in order (most requests
    /// have none; a proxy appends either to the last field or as a new one).
    pub forwarded_for: [Span; FORWARDED_FIELDS],
    pub forwarded_count: u8,
    /// The client's `X-Request-Id` (the last one, if several).
    pub request_id: Option<Span>,
}

/// X-Forwarded-For fields a head keeps: the right-most ones, which the trusted
/// proxies wrote.
pub const FORWARDED_FIELDS: usize = 4;

impl Head {
    /// The X-Forwarded-For fields kept, in order.
    pub fn forwarded_for(&self) -> &[Span] {
        &self.forwarded_for[..usize::from(self.forwarded_count)]
    }
}

/// Parses one request head at the start of `buf`.
///
/// `Ok(None)` means the head is not complete yet and more bytes are needed.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, HttpError> {
    let Some(start) = skip_empty_lines(buf) else {
        return Ok(None);
    };
    if start > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(&buf[start..]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            if let Some(pos) = bare_cr(&buf[start..]) {
                // A CR followed by anything but LF is malformed wherever it stands.
                if pos + 1 < buf.len() - start {
                    return Err(HttpError::BadRequest("bare CR in request head"));
                }
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::BadRequest(describe(e))),
    };
    let total = start + head_len;
    if total > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    if bare_cr(&buf[start..total]).is_some() {
        return Err(HttpError::BadRequest("bare CR in request head"));
    }
    if req.headers.len() > limits.max_headers {
        return Err(HttpError::TooManyHeaders);
    }

    let method = Method::from_bytes(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("");
    if !target.starts_with('/') {
        return Err(HttpError::BadRequest("request target must be an absolute path"));
    }
    let minor_version = req.version.unwrap_or(1);
    // A byte search: `str::find` with a char pattern was not inlined here and
    // cost about a hundred instructions a request (callgrind).
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    };

    let mut head = Head {
        method,
        path: Span::within(buf, path.as_bytes()),
        query: query.map(|q| Span::within(buf, q.as_bytes())),
        len: total,
        framing: Framing::None,
        keep_alive: minor_version == 1,
        expect_continue: false,
        content_type: None,
        authorization: None,
        if_none_match: None,
        accept_encoding: None,
        forwarded_for: [Span::default(); FORWARDED_FIELDS],
        forwarded_count: 0,
        request_id: None,
    };

    let mut content_length: Option<u64> = None;
    let mut saw_te = false;
    // Transfer codings across every Transfer-Encoding field, in order.
    let mut chunked_count = 0;
    let mut last_chunked = false;
    let mut other_coding = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HttpError::BadRequest("more than one content-length"));
            }
            content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            saw_te = true;
            for coding in tokens(value) {
                if coding.is_empty() {
                    return Err(HttpError::BadRequest("empty transfer coding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_count += 1;
                    last_chunked = true;
                } else {
                    other_coding = true;
                    last_chunked = false;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for opt in tokens(value) {
                if opt.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") && minor_version == 0 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if trim(value).eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            } else {
                return Err(HttpError::ExpectationFailed);
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if hosts > 1 {
                return Err(HttpError::BadRequest("more than one host header"));
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(Span::within(buf, trim(value)));
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(Span::within(buf, trim(value)));
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(Span::within(buf, trim(value)));
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            head.accept_encoding = Some(Span::within(buf, trim(value)));
        } else if name.eq_ignore_ascii_case("x-request-id") {
            head.request_id = Some(Span::within(buf, trim(value)));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let span = Span::within(buf, trim(value));
            let n = usize::from(head.forwarded_count);
            if n < FORWARDED_FIELDS {
                head.forwarded_for[n] = span;
                head.forwarded_count += 1;
            } else {
                head.forwarded_for.rotate_left(1);
                head.forwarded_for[FORWARDED_FIELDS - 1] = span;
            }
        }
    }

    head.framing = match (saw_te, content_length) {
        (true, Some(_)) => return Err(HttpError::BadRequest("both content-length and transfer-encoding")),
        (true, None) if minor_version == 0 => {
            return Err(HttpError::BadRequest("transfer-encoding in an HTTP/1.0 request"))
        }
        // RFC 9112 §6.3: without chunked as the final coding the length is unknowable.
        (true, None) if !last_chunked || chunked_count > 1 => {
            return Err(HttpError::BadRequest(
                "transfer-encoding must end in a single chunked",
            ))
        }
        (true, None) if other_coding => return Err(HttpError::UnsupportedCoding),
        (true, None) => Framing::Chunked,
        (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    if head.expect_continue && minor_version == 0 {
        // RFC 9110 §10.1.1: ignore 100-continue from HTTP/1.0 clients.
        head.expect_continue = false;
    }
    Ok(Some(head))
}

/// Offset of the first byte after any empty lines, or `None` when `buf` ends inside
/// them (a trailing CR may be the start of one more CRLF).
fn skip_empty_lines(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        match &buf[i..] {
            [b'\r', b'\n', ..] => i += 2,
            [b'\n', ..] => i += 1,
            [b'\r'] | [] => return None,
            _ => return Some(i),
        }
    }
}

/// Position of the first CR not followed by LF (a CR at the very end counts).
fn bare_cr(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = bytes[from..].iter().position(|&b| b == b'\r') {
        let at = from + p;
        if bytes.get(at + 1) != Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let digits = trim(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadRequest("invalid content-length"));
    }
    Ok(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Comma-separated list elements, each trimmed of optional whitespace.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim)
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 8192,
        max_headers: 64,
    };

    fn parse(s: &str) -> Result<Option<Head>, HttpError> {
        parse_head(s.as_bytes(), &LIMITS)
    }

    fn head(s: &str) -> Head {
        parse(s).expect("valid").expect("complete")
    }

    fn bad(s: &str) -> HttpError {
        parse(s).expect_err(s)
    }

    #[test]
    fn simple_get_keeps_alive_and_has_no_body() {
        let req = "GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = head(req);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path.of(req.as_bytes()), b"/health");
        assert_eq!(h.query.map(|q| q.of(req.as_bytes())), Some(&b"x=1"[..]));
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
        assert_eq!(h.len, req.len());
    }

    #[test]
    fn the_last_forwarded_for_fields_are_kept_in_order() {
        let mut req = String::from("GET / HTTP/1.1\r\n");
        for i in 0..6 {
            req.push_str(&format!("X-Forwarded-For: 10.0.0.{i}, 10.1.0.{i}\r\n"));
        }
        req.push_str("\r\n");
        let h = head(&req);
        let kept: Vec<&[u8]> = h.forwarded_for().iter().map(|s| s.of(req.as_bytes())).collect();
        assert_eq!(
            kept,
            [
                &b"10.0.0.2, 10.1.0.2"[..],
                b"10.0.0.3, 10.1.0.3",
                b"10.0.0.4, 10.1.0.4",
                b"10.0.0.5, 10.1.0.5"
            ]
        );
        assert!(head("GET / HTTP/1.1\r\n\r\n").forwarded_for().is_empty());
    }

    #[test]
    fn lone_lf_and_leading_empty_lines_are_accepted() {
        let req = "\r\n\nPOST /auth/login HTTP/1.1\nContent-Length: 2\n\n{}";
        let h = head(req);
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.framing, Framing::Length(2));
        assert_eq!(h.len, req.len() - 2);
    }

    #[test]
    fn incomplete_heads_need_more_bytes() {
        for prefix in [
            "",
            "\r",
            "\r\n",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            assert!(parse(prefix).expect("no error").is_none(), "{prefix:?}");
        }
    }

    #[test]
    fn http10_closes_unless_keep_alive_is_asked() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn framing_attacks_are_rejected() {
        let cases = [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            "GET / HTTP/1.1\rHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
        ];
        for c in cases {
            assert!(matches!(bad(c), HttpError::BadRequest(_)), "{c:?}");
        }
        assert_eq!(
            bad("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HttpError::UnsupportedCoding
        );
        for c in ["chunked, gzip", "gzip", "identity"] {
            let req = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {c}\r\n\r\n");
            assert!(matches!(bad(&req), HttpError::BadRequest(_)), "{c}");
        }
        assert_eq!(
            bad("GET / HTTP/1.1\r\nExpect: fast\r\n\r\n"),
            HttpError::ExpectationFailed
        );
    }

    #[test]
    fn limits_give_431() {
        let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            bad(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            HttpError::TooManyHeaders
        );
        let big = "x".repeat(9000);
        assert_eq!(
            bad(&format!("GET / HTTP/1.1\r\nX: {big}\r\n\r\n")),
            HttpError::HeadTooLarge
        );
        // Also when the head is still incomplete.
        assert_eq!(
            bad(&format!("GET / HTTP/1.1\r\nX: {big}")),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn chunked_and_expect_are_recognised() {
        let h = head("POST /x HTTP/1.1\r\ntransfer-encoding: Chunked\r\nExpect: 100-Continue\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.expect_continue);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A valid request head: method, path, fields (none that frames or
        /// repeats), optionally a Content-Length; returns the text, the path and
        /// the framing.
        fn request() -> impl Strategy<Value = (String, String, Framing)> {
            let method =
                prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
            let path = "/[a-z0-9/._~-]{0,40}";
            let field = ("X-[A-Za-z0-9-]{1,20}", "[ -~]{0,40}");
            let length = prop::option::of(0u64..1_000_000);
            (
                method,
                path,
                prop::collection::vec(field, 0..8),
                length,
                any::<bool>(),
            )
                .prop_map(|(method, path, fields, length, host)| {
                    let mut text = format!("{method} {path} HTTP/1.1\r\n");
                    if host {
                        text.push_str("Host: example.org\r\n");
                    }
                    for (name, value) in &fields {
                        text.push_str(&format!("{name}: {}\r\n", value.trim()));
                    }
                    if let Some(n) = length {
                        text.push_str(&format!("Content-Length: {n}\r\n"));
                    }
                    text.push_str("\r\n");
                    let framing = length.map_or(Framing::None, Framing::Length);
                    (text, path, framing)
                })
        }

        proptest! {
            /// Every split of a valid head: the part before the split is only ever
            /// "incomplete" (never an error, never a different request), and the
            /// whole parses to what was generated.
            #[test]
            fn prop_a_valid_head_parses_the_same_whole_or_split((text, path, framing) in request()) {
                let bytes = text.as_bytes();
                for split in 0..bytes.len() {
                    prop_assert_eq!(parse(&text[..split]).map(|h| h.is_none()), Ok(true), "split at {}", split);
                }
                let head = head(&text);
                prop_assert_eq!(head.len, bytes.len());
                prop_assert_eq!(head.path.of(bytes), path.as_bytes());
                prop_assert_eq!(head.framing, framing);
                // Whatever follows the head (a body, a pipelined request) changes nothing.
                let more = format!("{text}GET /next HTTP/1.1\r\n\r\n");
                prop_assert_eq!(parse(&more).map(|h| h.map(|h| (h.len, h.framing))), Ok(Some((head.len, framing))));
            }

            /// Any bytes at all: no panic, and an answer within bounds: a complete
            /// head lies inside the input and every span inside the head.
            #[test]
            fn prop_any_bytes_get_a_bounded_answer(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
                if let Ok(Some(h)) = parse_head(&bytes, &LIMITS) {
                    prop_assert!(h.len <= bytes.len());
                    for span in [Some(h.path), h.query, h.content_type, h.authorization, h.request_id].into_iter().flatten() {
                        prop_assert!(span.start <= span.end && span.end as usize <= h.len);
                    }
                }
            }

            /// Bytes that look like a request: still no panic, and the same answer
            /// whatever comes after a complete head.
            #[test]
            fn prop_request_like_bytes_get_a_bounded_answer(
                line in "(GET|POST|HEAD|[A-Z]{1,8}) [ -~]{0,30} HTTP/1\\.[0-9]",
                fields in prop::collection::vec("[ -~\t\r\n]{0,40}", 0..6),
            ) {
                let text = format!("{line}\r\n{}\r\n\r\n", fields.join("\r\n"));
                let whole = parse(&text);
                if let Ok(Some(h)) = &whole {
                    prop_assert!(h.len <= text.len());
                    let more = format!("{text}garbage");
                    prop_assert_eq!(parse(&more).map(|x| x.map(|x| x.len)), Ok(Some(h.len)));
                }
            }
        }
    }
}

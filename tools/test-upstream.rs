//! The caching relay's test upstream: a small HTTP/1.1 origin server for the
//! relay's integration tests and benchmarks.
//!
//! Every request to any path outside `/__` answers JSON describing the request
//! (`path`, raw `query`, `n` = how many times this exact target was requested,
//! `version` of the path, all `request_headers`), with the caching behaviour
//! chosen per request by query parameters: Cache-Control directives
//! (`max_age`, `s_maxage`, `swr`, `sie`, `no_store`, `private`, `no_cache`,
//! `public`), `expires`, `age`, validators (`etag`, `last_modified`, with 304
//! answers to If-None-Match / If-Modified-Since), `delay_ms`, `status`,
//! `cookie`, `bytes` (padding), `hop` (hop-by-hop headers), `vary`, `date`
//! (`date=N`: a Date N seconds from now, as from an origin whose clock is off;
//! `date=none`: no Date at all) and `no_store_from=N` (from the path's version N
//! on, `Cache-Control: no-store` instead of the directives asked for).
//! Control endpoints under `/__` read the counters (`GET /__count`), reset
//! everything (`POST /__reset`), bump a path's version (`POST /__bump`) and
//! inject failures (`POST /__fail?mode=500|close|hang|off`).
//!
//! Usage: `test-upstream [--listen ADDR]` (default `127.0.0.1:0`); after
//! binding it prints exactly one line, `listening on http://IP:PORT`.
//!
//! Invariants:
//! - Every request to a non-control path is counted exactly once (global total
//!   and per exact target `path?query`), at the moment its head is parsed,
//!   before any delay, failure, 304, 400 or 405; control paths are never
//!   counted.
//! - A path's version starts at 1 and changes only through `/__bump` (+1) and
//!   `/__reset` (back to 1); the ETag (`"v<version>"`) and Last-Modified
//!   (2023-01-02 plus `version` days) change exactly when it does.
//! - No Cache-Control header unless a directive is asked for (control
//!   endpoints answer `no-store`).
//! - Responses are framed by Content-Length (none on 204/304), never chunked;
//!   connections are kept alive unless the request says `Connection: close`,
//!   is HTTP/1.0, or is malformed; pipelined requests are answered in order.
//! - Network bytes never cause a panic; at most 4096 connections are served
//!   at once (extra ones are closed at once); TCP_NODELAY is set.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAX_CONNECTIONS: usize = 4096;
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const MAX_PAD_BYTES: u64 = 256 * 1024 * 1024;
/// `expires=N` is limited to +/- 100 years so the date stays printable.
const MAX_EXPIRES_SECS: u64 = 100 * 365 * 86_400;
const HANG: Duration = Duration::from_secs(60);
/// Mon, 02 Jan 2023 00:00:00 GMT.
const LAST_MODIFIED_BASE_SECS: u64 = 1_672_617_600;
const DAY_SECS: u64 = 86_400;
/// Fri, 31 Dec 9999 23:59:59 GMT, the last date httpdate can print.
const MAX_DATE_SECS: u64 = 253_402_300_799;
const READ_CHUNK: usize = 16 * 1024;
const INLINE_BODY_MAX: usize = 64 * 1024;
const USAGE: &str = "usage: test-upstream [--listen ADDR]   (default 127.0.0.1:0)";

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum FailMode {
    #[default]
    Off,
    Status500,
    Close,
    Hang,
}

#[derive(Default)]
struct Counts {
    total: u64,
    by_target: BTreeMap<String, u64>,
    versions: HashMap<String, u64>,
    fail: FailMode,
}

impl Counts {
    fn version(&self, path: &str) -> u64 {
        self.versions.get(path).copied().unwrap_or(1)
    }
}

#[derive(Default)]
struct State {
    counts: Mutex<Counts>,
    active: AtomicUsize,
}

/// What the counter said about one counted request.
struct Counted {
    n: u64,
    version: u64,
    fail: FailMode,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request and snapshots the path's version and the failure
    /// mode under the same lock.
    fn count(&self, target: &str, path: &str) -> Counted {
        let mut c = self.lock();
        c.total += 1;
        let n = {
            let slot = c.by_target.entry(target.to_string()).or_insert(0);
            *slot += 1;
            *slot
        };
        Counted {
            n,
            version: c.version(path),
            fail: c.fail,
        }
    }
}

/// Decrements the active-connection gauge when a connection thread ends.
struct ActiveGuard(Arc<State>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Query parsing and per-request behaviour
// ---------------------------------------------------------------------------

/// Decodes `%XX` escapes and `+` (as a space); malformed escapes stay as
/// they are. Invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a raw query into decoded `(name, value)` pairs, in order. A pair
/// without `=` has an empty value; empty pairs are skipped.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Last value of a query parameter.
fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The behaviour asked for by a request's query parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Behaviour {
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    swr: Option<u64>,
    sie: Option<u64>,
    no_store: bool,
    private: bool,
    no_cache: bool,
    public: bool,
    expires: Option<i64>,
    age: Option<u64>,
    etag: bool,
    last_modified: bool,
    delay_ms: u64,
    status: Option<u16>,
    cookie: bool,
    bytes: Option<u64>,
    hop: bool,
    vary: Option<String>,
    /// Seconds the Date field is ahead of now (negative: behind).
    date_offset: i64,
    /// No Date field at all.
    no_date: bool,
    /// From this version of the path on, the answer is `no-store`.
    no_store_from: Option<u64>,
}

fn parse_flag(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "yes" | "" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("{name}: expected 1 or 0, got {v:?}")),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{name}: expected a number, got {v:?}"))
}

/// Parses the behaviour parameters of a raw query. Unknown parameters are
/// ignored (any query may be used to make distinct targets); a known one
/// with a bad value is an error (answered 400). The last occurrence wins.
fn parse_behaviour(query: &str) -> Result<Behaviour, String> {
    let mut b = Behaviour::default();
    for (k, v) in query_pairs(query) {
        let v = v.as_str();
        match k.as_str() {
            "max_age" => b.max_age = Some(parse_num(&k, v)?),
            "s_maxage" => b.s_maxage = Some(parse_num(&k, v)?),
            "swr" => b.swr = Some(parse_num(&k, v)?),
            "sie" => b.sie = Some(parse_num(&k, v)?),
            "no_store" => b.no_store = parse_flag(&k, v)?,
            "private" => b.private = parse_flag(&k, v)?,
            "no_cache" => b.no_cache = parse_flag(&k, v)?,
            "public" => b.public = parse_flag(&k, v)?,
            "expires" => {
                let secs: i64 = parse_num(&k, v)?;
                if secs.unsigned_abs() > MAX_EXPIRES_SECS {
                    return Err(format!("expires: at most {MAX_EXPIRES_SECS} either way"));
                }
                b.expires = Some(secs);
            }
            "age" => b.age = Some(parse_num(&k, v)?),
            "etag" => b.etag = parse_flag(&k, v)?,
            "last_modified" => b.last_modified = parse_flag(&k, v)?,
            "delay_ms" => b.delay_ms = parse_num(&k, v)?,
            "status" => {
                let s: u16 = parse_num(&k, v)?;
                if !(200..=599).contains(&s) {
                    return Err(format!("status: expected 200..599, got {s}"));
                }
                b.status = Some(s);
            }
            "cookie" => b.cookie = parse_flag(&k, v)?,
            "bytes" => {
                let n: u64 = parse_num(&k, v)?;
                if n > MAX_PAD_BYTES {
                    return Err(format!("bytes: at most {MAX_PAD_BYTES}"));
                }
                b.bytes = Some(n);
            }
            "hop" => b.hop = parse_flag(&k, v)?,
            "no_store_from" => b.no_store_from = Some(parse_num(&k, v)?),
            "date" if v == "none" => b.no_date = true,
            "date" => {
                let secs: i64 = parse_num(&k, v)?;
                if secs.unsigned_abs() > MAX_EXPIRES_SECS {
                    return Err(format!("date: at most {MAX_EXPIRES_SECS} either way"));
                }
                b.date_offset = secs;
            }
            "vary" => {
                if v.is_empty() || v.bytes().any(|c| !(0x20..0x7f).contains(&c)) {
                    return Err("vary: expected visible ASCII".to_string());
                }
                b.vary = Some(v.to_string());
            }
            _ => {}
        }
    }
    Ok(b)
}

/// The Cache-Control value asked for, directives joined by ", " in a fixed
/// order; `None` when no directive was asked for.
fn cache_control(b: &Behaviour) -> Option<String> {
    let mut d: Vec<String> = Vec::new();
    if let Some(n) = b.max_age {
        d.push(format!("max-age={n}"));
    }
    if let Some(n) = b.s_maxage {
        d.push(format!("s-maxage={n}"));
    }
    if let Some(n) = b.swr {
        d.push(format!("stale-while-revalidate={n}"));
    }
    if let Some(n) = b.sie {
        d.push(format!("stale-if-error={n}"));
    }
    for (on, name) in [
        (b.no_store, "no-store"),
        (b.private, "private"),
        (b.no_cache, "no-cache"),
        (b.public, "public"),
    ] {
        if on {
            d.push(name.to_string());
        }
    }
    if d.is_empty() {
        None
    } else {
        Some(d.join(", "))
    }
}

/// If-None-Match (all values joined) matches `etag` by weak comparison, or
/// is `*`.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let ours = etag.strip_prefix("W/").unwrap_or(etag);
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == ours)
}

/// HTTP-date of `t`, clamped to what can be printed (1970..=9999).
fn fmt_date(t: SystemTime) -> String {
    let max = UNIX_EPOCH + Duration::from_secs(MAX_DATE_SECS);
    httpdate::fmt_http_date(t.clamp(UNIX_EPOCH, max))
}

fn date_from_now(secs: i64) -> String {
    let now = SystemTime::now();
    let d = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        now.checked_add(d)
    } else {
        now.checked_sub(d)
    };
    fmt_date(t.unwrap_or(UNIX_EPOCH))
}

fn last_modified_for(version: u64) -> SystemTime {
    let secs = version
        .saturating_mul(DAY_SECS)
        .saturating_add(LAST_MODIFIED_BASE_SECS)
        .min(MAX_DATE_SECS);
    UNIX_EPOCH + Duration::from_secs(secs)
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The body of a normal response; with `pad` it has a "pad" field making it
/// at least (exactly, when possible) that many bytes.
fn normal_body(
    path: &str,
    query: &str,
    n: u64,
    version: u64,
    headers: &BTreeMap<String, String>,
    pad: Option<u64>,
) -> Vec<u8> {
    let mut s = format!(
        "{{\"path\": {}, \"query\": {}, \"n\": {n}, \"version\": {version}, \"request_headers\": {{",
        json_str(path),
        json_str(query)
    );
    for (i, (k, v)) in headers.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&json_str(k));
        s.push_str(": ");
        s.push_str(&json_str(v));
    }
    s.push('}');
    if let Some(want) = pad {
        const OVERHEAD: usize = ", \"pad\": \"\"}".len();
        let have = s.len() + OVERHEAD;
        let fill = usize::try_from(want).unwrap_or(usize::MAX).saturating_sub(have);
        s.reserve(OVERHEAD + fill);
        s.push_str(", \"pad\": \"");
        s.extend(std::iter::repeat_n('x', fill));
        s.push('"');
    }
    s.push('}');
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
struct Request {
    method: String,
    /// Origin-form target (`path?query`); the counting key.
    target: String,
    path: String,
    query: String,
    /// Lower-case names, in arrival order.
    headers: Vec<(String, String)>,
    keep_alive: bool,
    framing: Framing,
    expect_continue: bool,
}

impl Request {
    fn header_last(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header_joined(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    Bad(String),
}

/// Origin-form of a request target: absolute-form loses scheme and
/// authority.
fn origin_form(target: &str) -> String {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return target.to_string();
    };
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_string(),
    }
}

/// Parses one request head from the front of `buf`: `Ok(None)` when more
/// bytes are needed, else the request and how many bytes its head took.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Bad(e.to_string())),
    };
    let (Some(method), Some(raw_target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Bad("incomplete request line".to_string()));
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();

    let target = origin_form(raw_target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };

    let mut r = Request {
        method: method.to_string(),
        target,
        path,
        query,
        headers,
        keep_alive: minor == 1,
        framing: Framing::None,
        expect_continue: false,
    };
    if r.has_token("connection", "close") {
        r.keep_alive = false;
    }
    r.expect_continue = minor == 1
        && r.header_last("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));

    if let Some(te) = r.header_joined("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if !last.eq_ignore_ascii_case("chunked") {
            return Err(HeadError::Bad(format!("unsupported transfer-encoding {te:?}")));
        }
        r.framing = Framing::Chunked;
        if r.header_last("content-length").is_some() {
            // Ambiguous framing: honour chunked, then close.
            r.keep_alive = false;
        }
    } else {
        let mut len: Option<u64> = None;
        for (_, v) in r.headers.iter().filter(|(n, _)| n == "content-length") {
            for part in v.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HeadError::Bad(format!("bad content-length {v:?}")));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| HeadError::Bad(format!("bad content-length {v:?}")))?;
                if len.is_some_and(|l| l != n) {
                    return Err(HeadError::Bad("conflicting content-length".to_string()));
                }
                len = Some(n);
            }
        }
        if let Some(n) = len.filter(|&n| n > 0) {
            r.framing = Framing::Length(n);
        }
    }
    Ok(Some((r, consumed)))
}

/// Reads more bytes into `buf`; EOF is an error.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Discards exactly `n` bytes: first from `buf`, then from the stream.
fn skip_exact(stream: &mut TcpStream, buf: &mut Vec<u8>, mut n: u64) -> io::Result<()> {
    loop {
        let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
        buf.drain(..take);
        n -= take as u64;
        if n == 0 {
            return Ok(());
        }
        fill(stream, buf)?;
    }
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Discards a chunked body, trailers included.
fn skip_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let (consumed, size) = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete(x)) => break x,
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => fill(stream, buf)?,
                _ => return Err(bad_data("bad chunk size")),
            }
        };
        buf.drain(..consumed);
        if size == 0 {
            break;
        }
        skip_exact(stream, buf, size)?;
        while buf.len() < 2 {
            fill(stream, buf)?;
        }
        if &buf[..2] != b"\r\n" {
            return Err(bad_data("chunk not followed by CRLF"));
        }
        buf.drain(..2);
    }
    // Trailer section: lines up to an empty one.
    loop {
        if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
            buf.drain(..pos + 2);
            if pos == 0 {
                return Ok(());
            }
        } else if buf.len() < MAX_HEAD_BYTES {
            fill(stream, buf)?;
        } else {
            return Err(bad_data("trailers too large"));
        }
    }
}

/// Reads and discards the request body, answering `100 Continue` first when
/// the client waits for it.
fn skip_body(stream: &mut TcpStream, buf: &mut Vec<u8>, req: &Request) -> io::Result<()> {
    if req.framing != Framing::None && req.expect_continue && buf.is_empty() {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    match req.framing {
        Framing::None => Ok(()),
        Framing::Length(n) => skip_exact(stream, buf, n),
        Framing::Chunked => skip_chunked(stream, buf),
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// `hop=1`: the Connection header also names X-Hop-Secret.
    hop: bool,
    /// The Date field, in seconds from the moment it is written; `None`: none.
    date: Option<i64>,
}

impl Response {
    fn json(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body: body.into_bytes(),
            hop: false,
            date: Some(0),
        }
    }

    fn error(status: u16, msg: &str) -> Response {
        Response::json(status, format!("{{\"error\": {}}}", json_str(msg)))
    }

    fn control(status: u16, body: String) -> Response {
        let mut r = Response::json(status, body);
        r.headers.push(("Cache-Control", "no-store".to_string()));
        r
    }

    fn empty(status: u16) -> Response {
        Response {
            status,
            headers: vec![("Cache-Control", "no-store".to_string())],
            body: Vec::new(),
            hop: false,
            date: Some(0),
        }
    }

    fn method_not_allowed(allow: &str, method: &str) -> Response {
        let mut r = Response::json(
            405,
            format!(
                "{{\"error\": \"method not allowed\", \"method\": {}}}",
                json_str(method)
            ),
        );
        r.headers.push(("Allow", allow.to_string()));
        r
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn body_allowed(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

fn write_response(stream: &mut TcpStream, resp: &Response, head_only: bool, close: bool) -> io::Result<()> {
    let allowed = body_allowed(resp.status);
    let send_body = allowed && !head_only;
    let mut out = Vec::with_capacity(
        512 + if send_body && resp.body.len() <= INLINE_BODY_MAX {
            resp.body.len()
        } else {
            0
        },
    );
    write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status))?;
    if let Some(offset) = resp.date {
        write!(out, "Date: {}\r\n", date_from_now(offset))?;
    }
    for (name, value) in &resp.headers {
        write!(out, "{name}: {value}\r\n")?;
    }
    match (close, resp.hop) {
        (true, false) => out.extend_from_slice(b"Connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"Connection: close, X-Hop-Secret\r\n"),
        (false, true) => out.extend_from_slice(b"Connection: keep-alive, X-Hop-Secret\r\n"),
        (false, false) => {}
    }
    if allowed {
        write!(out, "Content-Length: {}\r\n", resp.body.len())?;
    }
    out.extend_from_slice(b"\r\n");
    if send_body && resp.body.len() <= INLINE_BODY_MAX {
        out.extend_from_slice(&resp.body);
        stream.write_all(&out)?;
    } else {
        stream.write_all(&out)?;
        if send_body {
            stream.write_all(&resp.body)?;
        }
    }
    stream.flush()
}

/// The answer to a counted request under normal operation.
fn normal_response(req: &Request, b: &Behaviour, n: u64, version: u64) -> Response {
    let status = b.status.unwrap_or(200);
    let etag = format!("\"v{version}\"");
    let last_modified = last_modified_for(version);

    let not_modified = (200..300).contains(&status)
        && match req.header_joined("if-none-match") {
            Some(inm) => b.etag && etag_matches(&inm, &etag),
            None => {
                b.last_modified
                    && req
                        .header_last("if-modified-since")
                        .and_then(|v| httpdate::parse_http_date(v).ok())
                        .is_some_and(|ims| ims >= last_modified)
            }
        };

    let date = (!b.no_date).then_some(b.date_offset);
    let mut h: Vec<(&'static str, String)> = Vec::new();
    let withdrawn = b.no_store_from.is_some_and(|from| version >= from);
    if withdrawn {
        h.push(("Cache-Control", "no-store".to_string()));
    } else if let Some(cc) = cache_control(b) {
        h.push(("Cache-Control", cc));
    }
    if let Some(secs) = b.expires {
        h.push(("Expires", date_from_now(secs)));
    }
    if let Some(age) = b.age {
        h.push(("Age", age.to_string()));
    }
    if b.etag {
        h.push(("ETag", etag));
    }
    if b.last_modified {
        h.push(("Last-Modified", fmt_date(last_modified)));
    }
    if let Some(v) = &b.vary {
        h.push(("Vary", v.clone()));
    }
    if b.hop {
        h.push(("X-Hop-Secret", "1".to_string()));
        h.push(("Keep-Alive", "timeout=5".to_string()));
        h.push(("Proxy-Authenticate", "Basic".to_string()));
        h.push(("Upgrade", "h2c".to_string()));
        h.push(("Trailer", "X-T".to_string()));
        h.push(("X-End-To-End", "kept".to_string()));
    }
    if not_modified {
        return Response {
            status: 304,
            headers: h,
            body: Vec::new(),
            hop: b.hop,
            date,
        };
    }
    if b.cookie {
        h.push(("Set-Cookie", "session=abc; Path=/".to_string()));
    }
    if !body_allowed(status) {
        return Response {
            status,
            headers: h,
            body: Vec::new(),
            hop: b.hop,
            date,
        };
    }
    h.insert(0, ("Content-Type", "application/json".to_string()));
    let headers: BTreeMap<String, String> = req.headers.iter().cloned().collect();
    let body = normal_body(&req.path, &req.query, n, version, &headers, b.bytes);
    Response {
        status,
        headers: h,
        body,
        hop: b.hop,
        date,
    }
}

/// The control endpoints under `/__`; never counted.
fn control(state: &State, req: &Request) -> Response {
    let params = query_pairs(&req.query);
    let m = req.method.as_str();
    match req.path.as_str() {
        "/__count" => {
            if m != "GET" && m != "HEAD" {
                return Response::method_not_allowed("GET, HEAD", m);
            }
            let c = state.lock();
            if let Some(target) = param(&params, "target") {
                let n = c.by_target.get(target).copied().unwrap_or(0);
                return Response::control(200, format!("{{\"n\": {n}}}"));
            }
            let by: Vec<String> = c
                .by_target
                .iter()
                .map(|(k, v)| format!("{}: {v}", json_str(k)))
                .collect();
            Response::control(
                200,
                format!("{{\"total\": {}, \"by_target\": {{{}}}}}", c.total, by.join(", ")),
            )
        }
        "/__reset" => {
            if m != "POST" {
                return Response::method_not_allowed("POST", m);
            }
            *state.lock() = Counts::default();
            Response::empty(204)
        }
        "/__bump" => {
            if m != "POST" {
                return Response::method_not_allowed("POST", m);
            }
            let Some(path) = param(&params, "path").filter(|p| !p.is_empty()) else {
                return Response::error(400, "/__bump needs ?path=");
            };
            let mut c = state.lock();
            let v = c.version(path) + 1;
            c.versions.insert(path.to_string(), v);
            Response::control(200, format!("{{\"version\": {v}}}"))
        }
        "/__fail" => {
            if m != "POST" {
                return Response::method_not_allowed("POST", m);
            }
            let mode = match param(&params, "mode") {
                Some("500") => FailMode::Status500,
                Some("close") => FailMode::Close,
                Some("hang") => FailMode::Hang,
                Some("off") => FailMode::Off,
                _ => return Response::error(400, "/__fail needs ?mode=500|close|hang|off"),
            };
            state.lock().fail = mode;
            Response::empty(204)
        }
        _ => Response::error(404, "unknown control endpoint"),
    }
}

enum Flow {
    KeepAlive,
    Close,
}

fn finish(stream: &mut TcpStream, req: &Request, resp: &Response) -> Flow {
    let close = !req.keep_alive;
    match write_response(stream, resp, req.method == "HEAD", close) {
        Ok(()) if !close => Flow::KeepAlive,
        _ => Flow::Close,
    }
}

fn serve_request(stream: &mut TcpStream, buf: &mut Vec<u8>, state: &State, req: Request) -> Flow {
    if req.path.starts_with("/__") {
        if skip_body(stream, buf, &req).is_err() {
            return Flow::Close;
        }
        let resp = control(state, &req);
        return finish(stream, &req, &resp);
    }

    let counted = state.count(&req.target, &req.path);
    let behaviour = parse_behaviour(&req.query);
    let delay = Duration::from_millis(behaviour.as_ref().map_or(0, |b| b.delay_ms));

    match counted.fail {
        FailMode::Close => {
            thread::sleep(delay);
            return Flow::Close;
        }
        FailMode::Hang => {
            thread::sleep(delay + HANG);
            return Flow::Close;
        }
        FailMode::Off | FailMode::Status500 => {}
    }
    if skip_body(stream, buf, &req).is_err() {
        return Flow::Close;
    }
    thread::sleep(delay);

    let resp = if counted.fail == FailMode::Status500 {
        Response::json(500, "{\"error\":\"injected\"}".to_string())
    } else {
        match &behaviour {
            Err(msg) => Response::error(400, msg),
            Ok(_) if req.method != "GET" && req.method != "HEAD" => {
                Response::method_not_allowed("GET, HEAD", &req.method)
            }
            Ok(b) => normal_response(&req, b, counted.n, counted.version),
        }
    };
    finish(stream, &req, &resp)
}

fn handle_connection(mut stream: TcpStream, state: &State) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        match parse_head(&buf) {
            Ok(Some((req, consumed))) => {
                buf.drain(..consumed);
                match serve_request(&mut stream, &mut buf, state, req) {
                    Flow::KeepAlive => {}
                    Flow::Close => break,
                }
            }
            Ok(None) if buf.len() > MAX_HEAD_BYTES => {
                let resp = Response::error(431, "request head too large");
                let _ = write_response(&mut stream, &resp, false, true);
                break;
            }
            Ok(None) => match fill(&mut stream, &mut buf) {
                Ok(()) => {}
                Err(_) => break,
            },
            Err(HeadError::TooLarge) => {
                let resp = Response::error(431, "too many request headers");
                let _ = write_response(&mut stream, &resp, false, true);
                break;
            }
            Err(HeadError::Bad(msg)) => {
                let resp = Response::error(400, &msg);
                let _ = write_response(&mut stream, &resp, false, true);
                break;
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Accepts forever, one thread per connection, at most `MAX_CONNECTIONS`.
fn serve(listener: TcpListener, state: Arc<State>) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("test-upstream: accept: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if state.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            state.active.fetch_sub(1, Ordering::SeqCst);
            drop(stream);
            continue;
        }
        let st = Arc::clone(&state);
        let spawned = thread::Builder::new()
            .name("conn".to_string())
            .stack_size(512 * 1024)
            .spawn(move || {
                let guard = ActiveGuard(st);
                handle_connection(stream, &guard.0);
            });
        if let Err(e) = spawned {
            // The closure never ran, so its guard never existed.
            state.active.fetch_sub(1, Ordering::SeqCst);
            eprintln!("test-upstream: spawn: {e}");
        }
    }
}

/// `Ok(None)` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<String>, String> {
    let mut listen = "127.0.0.1:0".to_string();
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            return Ok(None);
        } else if a == "--listen" {
            listen = args.next().ok_or("--listen needs an address")?;
        } else if let Some(v) = a.strip_prefix("--listen=") {
            listen = v.to_string();
        } else {
            return Err(format!("unknown argument {a:?}"));
        }
    }
    Ok(Some(listen))
}

fn main() {
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("test-upstream: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test-upstream: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("test-upstream: local_addr: {e}");
            std::process::exit(1);
        }
    };
    {
        let mut out = io::stdout().lock();
        let printed = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
        if let Err(e) = printed {
            eprintln!("test-upstream: stdout: {e}");
        }
    }
    serve(listener, Arc::new(State::default()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2Fitems%2f7%3Fa%3D1"), "/items/7?a=1");
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn query_pairs_split_and_decode() {
        let p = query_pairs("a=1&&b&c=x%3Dy&a=2");
        assert_eq!(
            p,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), String::new()),
                ("c".to_string(), "x=y".to_string()),
                ("a".to_string(), "2".to_string()),
            ]
        );
        assert_eq!(param(&p, "a"), Some("2"));
        assert_eq!(param(&p, "z"), None);
        assert!(query_pairs("").is_empty());
    }

    #[test]
    fn behaviour_from_query() {
        let b =
            parse_behaviour("max_age=60&etag=1&delay_ms=5&status=503&bytes=100&vary=Accept&expires=-30&x=y")
                .expect("valid query");
        assert_eq!(b.max_age, Some(60));
        assert!(b.etag);
        assert!(!b.last_modified);
        assert_eq!(b.delay_ms, 5);
        assert_eq!(b.status, Some(503));
        assert_eq!(b.bytes, Some(100));
        assert_eq!(b.vary.as_deref(), Some("Accept"));
        assert_eq!(b.expires, Some(-30));
        assert_eq!((b.date_offset, b.no_date), (0, false));
        assert_eq!(
            parse_behaviour("no_store_from=2").expect("valid").no_store_from,
            Some(2)
        );
        let b = parse_behaviour("date=-100").expect("valid");
        assert_eq!((b.date_offset, b.no_date), (-100, false));
        assert!(parse_behaviour("date=none").expect("valid").no_date);
        assert_eq!(parse_behaviour("").expect("empty"), Behaviour::default());
        assert_eq!(parse_behaviour("etag=0").expect("off"), Behaviour::default());
    }

    #[test]
    fn behaviour_rejects_bad_values() {
        for q in [
            "max_age=x",
            "max_age=-1",
            "status=199",
            "status=600",
            "etag=2",
            "vary=a%0D%0Ab",
            "bytes=999999999999",
            "expires=99999999999",
            "date=soon",
            "date=99999999999",
        ] {
            assert!(parse_behaviour(q).is_err(), "{q} should be rejected");
        }
    }

    #[test]
    fn cache_control_assembly() {
        assert_eq!(cache_control(&Behaviour::default()), None);
        let b = parse_behaviour("max_age=60").expect("valid");
        assert_eq!(cache_control(&b).as_deref(), Some("max-age=60"));
        let b = parse_behaviour("public=1&no_cache=1&private=1&no_store=1&sie=4&swr=3&s_maxage=2&max_age=1")
            .expect("valid");
        assert_eq!(
            cache_control(&b).as_deref(),
            Some(
                "max-age=1, s-maxage=2, stale-while-revalidate=3, stale-if-error=4, \
                 no-store, private, no-cache, public"
            )
        );
        let b = parse_behaviour("no_store=1&private=0").expect("valid");
        assert_eq!(cache_control(&b).as_deref(), Some("no-store"));
    }

    #[test]
    fn etag_comparison() {
        assert!(etag_matches("\"v1\"", "\"v1\""));
        assert!(etag_matches("\"a\", W/\"v1\"", "\"v1\""));
        assert!(etag_matches("*", "\"v1\""));
        assert!(!etag_matches("\"v2\"", "\"v1\""));
        assert!(!etag_matches("v1", "\"v1\""));
    }

    #[test]
    fn dates() {
        assert_eq!(fmt_date(last_modified_for(0)), "Mon, 02 Jan 2023 00:00:00 GMT");
        assert_eq!(fmt_date(last_modified_for(1)), "Tue, 03 Jan 2023 00:00:00 GMT");
        // Clamped rather than panicking.
        assert_eq!(
            fmt_date(last_modified_for(u64::MAX)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            fmt_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn json_escaping_and_padding() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
        let mut h = BTreeMap::new();
        h.insert("x-q".to_string(), "\"quoted\"".to_string());
        let body = normal_body("/p", "a=1", 3, 2, &h, None);
        assert_eq!(
            String::from_utf8_lossy(&body),
            "{\"path\": \"/p\", \"query\": \"a=1\", \"n\": 3, \"version\": 2, \
             \"request_headers\": {\"x-q\": \"\\\"quoted\\\"\"}}"
        );
        assert_eq!(normal_body("/p", "", 1, 1, &h, Some(1000)).len(), 1000);
        let small = normal_body("/p", "", 1, 1, &h, Some(1));
        assert!(small.ends_with(b", \"pad\": \"\"}"));
    }

    #[test]
    fn head_parsing() {
        let raw = b"GET http://h:1/a/b?x=1 HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\
                    Content-Length: 3\r\n\r\nabcGET";
        let (req, used) = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(&raw[used..], b"abcGET");
        assert_eq!(req.target, "/a/b?x=1");
        assert_eq!(req.path, "/a/b");
        assert_eq!(req.query, "x=1");
        assert!(!req.keep_alive);
        assert_eq!(req.framing, Framing::Length(3));
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: h\r\n")
            .expect("ok")
            .is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        let (req, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!req.keep_alive);
        assert_eq!(origin_form("http://host"), "/");
        assert_eq!(origin_form("https://host?q"), "/?q");
    }

    // --- in-process end-to-end -------------------------------------------

    fn start() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || serve(listener, Arc::new(State::default())));
        addr
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>, head: bool) -> Reply {
        loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = r.parse(buf).expect("response parses") {
                let status = r.code.expect("code");
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().expect("length"));
                let len = if head { 0 } else { len };
                buf.drain(..n);
                while buf.len() < len {
                    fill(s, buf).expect("body");
                }
                let body = String::from_utf8_lossy(&buf[..len]).into_owned();
                buf.drain(..len);
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
            fill(s, buf).expect("more");
        }
    }

    #[test]
    fn pipelining_counts_and_revalidation() {
        let addr = start();
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut buf = Vec::new();
        s.write_all(
            b"GET /i/7?etag=1&max_age=60 HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /i/7?etag=1&max_age=60 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody\
              HEAD /i/7?etag=1&max_age=60 HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /i/7?etag=1&max_age=60 HTTP/1.1\r\nIf-None-Match: \"v1\"\r\n\r\n",
        )
        .expect("write");
        let a = read_reply(&mut s, &mut buf, false);
        assert_eq!(a.status, 200);
        assert_eq!(a.header("cache-control"), Some("max-age=60"));
        assert_eq!(a.header("etag"), Some("\"v1\""));
        assert!(a.body.contains("\"n\": 1,"), "{}", a.body);
        assert!(a.body.contains("\"host\": \"x\""), "{}", a.body);
        let b = read_reply(&mut s, &mut buf, false);
        assert_eq!(b.status, 405);
        assert_eq!(b.header("allow"), Some("GET, HEAD"));
        let c = read_reply(&mut s, &mut buf, true);
        assert_eq!(c.status, 200);
        assert!(c.header("content-length").is_some());
        let d = read_reply(&mut s, &mut buf, false);
        assert_eq!(d.status, 304);
        assert_eq!(d.header("etag"), Some("\"v1\""));

        s.write_all(b"POST /__bump?path=/i/7 HTTP/1.1\r\n\r\nGET /__count?target=%2Fi%2F7%3Fetag%3D1%26max_age%3D60 HTTP/1.1\r\n\r\n")
            .expect("write");
        assert_eq!(read_reply(&mut s, &mut buf, false).body, "{\"version\": 2}");
        assert_eq!(read_reply(&mut s, &mut buf, false).body, "{\"n\": 4}");

        s.write_all(b"GET /i/7?etag=1 HTTP/1.1\r\nIf-None-Match: \"v1\"\r\nConnection: close\r\n\r\n")
            .expect("write");
        let e = read_reply(&mut s, &mut buf, false);
        assert_eq!(e.status, 200);
        assert_eq!(e.header("etag"), Some("\"v2\""));
        assert_eq!(e.header("connection"), Some("close"));
        assert!(matches!(s.read(&mut [0u8; 1]), Ok(0) | Err(_)));
    }

    #[test]
    fn failure_modes_and_reset() {
        let addr = start();
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut buf = Vec::new();
        s.write_all(b"POST /__fail?mode=500 HTTP/1.1\r\n\r\nGET /a?max_age=9 HTTP/1.1\r\n\r\n")
            .expect("write");
        assert_eq!(read_reply(&mut s, &mut buf, false).status, 204);
        let r = read_reply(&mut s, &mut buf, false);
        assert_eq!(r.status, 500);
        assert_eq!(r.body, "{\"error\":\"injected\"}");
        assert_eq!(r.header("cache-control"), None);

        s.write_all(b"POST /__fail?mode=close HTTP/1.1\r\n\r\n")
            .expect("write");
        assert_eq!(read_reply(&mut s, &mut buf, false).status, 204);
        let mut t = TcpStream::connect(addr).expect("connect");
        t.write_all(b"GET /a HTTP/1.1\r\n\r\n").expect("write");
        let mut one = [0u8; 1];
        assert!(matches!(t.read(&mut one), Ok(0) | Err(_)));

        s.write_all(
            b"GET /__count HTTP/1.1\r\n\r\nPOST /__reset HTTP/1.1\r\n\r\nGET /__count HTTP/1.1\r\n\r\n",
        )
        .expect("write");
        assert_eq!(
            read_reply(&mut s, &mut buf, false).body,
            "{\"total\": 2, \"by_target\": {\"/a\": 1, \"/a?max_age=9\": 1}}"
        );
        assert_eq!(read_reply(&mut s, &mut buf, false).status, 204);
        assert_eq!(
            read_reply(&mut s, &mut buf, false).body,
            "{\"total\": 0, \"by_target\": {}}"
        );
    }
}

//! Client-side HTTP/1.1: the target address, request encoding, and an incremental
//! response parser (Content-Length bodies; the server never sends chunked).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
}

impl Target {
    /// Parses `http://host:port` (a trailing path is ignored).
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("target {url:?} must start with http://"))?;
        let hostport = rest.split('/').next().unwrap_or("");
        let with_port = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("no address for {hostport}"))?;
        Ok(Target {
            addr,
            host: hostport.to_string(),
        })
    }
}

/// Appends one request to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    for (k, v) in headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// One parsed response; `body` is a range of the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    /// Bytes the whole response took.
    pub len: usize,
    pub body: std::ops::Range<usize>,
    /// The server said `Connection: close`.
    pub close: bool,
}

/// Parses the response at the start of `buf`. `Ok(None)` means more bytes are
/// needed. A `100 Continue` is returned like any other response.
pub fn parse(buf: &[u8], head_only: bool) -> Result<Option<Parsed>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = 0usize;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("malformed content-length")?;
        } else if h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("unexpected transfer-encoding in response".into());
        }
    }
    if head_only || status == 100 || status == 204 || status == 304 {
        length = 0;
    }
    if buf.len() < head + length {
        return Ok(None);
    }
    Ok(Some(Parsed {
        status,
        len: head + length,
        body: head..head + length,
        close,
    }))
}

/// A blocking request/response exchange on a fresh connection (for set-up and the
/// latency client). Returns status and body.
pub fn roundtrip(target: &Target, raw: &[u8], timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect_timeout(&target.addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    read_one(&mut s, false)
}

/// Reads one response (skipping `100 Continue`) from a blocking stream.
pub fn read_one(s: &mut TcpStream, head_only: bool) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(p) = parse(&buf, head_only)? {
            if p.status == 100 {
                buf.drain(..p.len);
                continue;
            }
            return Ok((p.status, buf[p.body].to_vec()));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("connection closed before a complete response".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out waiting for the response".into())
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_incrementally() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse(&r[..20], false), Ok(None));
        assert_eq!(parse(&r[..39], false), Ok(None));
        let p = parse(r, false).expect("valid").expect("complete");
        assert_eq!((p.status, &r[p.body.clone()]), (200, &b"{}"[..]));
        let q = parse(&r[p.len..], false).expect("valid").expect("complete");
        assert_eq!(q.status, 204);
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn targets_and_requests() {
        let t = Target::parse("http://127.0.0.1:8080/x").expect("target");
        assert_eq!(t.addr.port(), 8080);
        assert!(Target::parse("https://x").is_err());
        let mut out = Vec::new();
        encode(
            &mut out,
            "POST",
            "/event",
            "h",
            &[("Content-Type", "application/json")],
            b"{}",
        );
        assert_eq!(out, b"POST /event HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    }
}

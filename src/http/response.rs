//! Response encoding into a caller-owned output buffer.
//!
//! Every response encoded here carries `Date` (this server's, or for a relayed
//! response the upstream's, which comes among its relayed fields), and
//! `Content-Length` unless it is a 204 or a 304 (no body, no Content-Length);
//! `Connection: close` when the server will close after it. (The interim
//! `100 Continue` is a fixed line, [`CONTINUE`].) Nothing here allocates beyond
//! growing the output buffer, which workers reuse across requests.

/// `X-Instance-Id` of this process (`--instance-id`), set once at start-up: every
/// response names the instance that made it, so a client behind a load balancer
/// can tell them apart. A process-wide value because the identity is the
/// process's.
static INSTANCE: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();

/// Names this process in every response from now on (the first call wins).
pub fn set_instance_id(id: &str) {
    let _ = INSTANCE.set(id.as_bytes().into());
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The head of one response.
pub struct ResponseHead<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    /// Further header fields, already valid header text.
    pub headers: &'a [(&'a str, &'a str)],
    /// Header lines relayed from an upstream's response, each starting with
    /// CRLF (already valid header text; empty for none).
    pub relayed: &'a [u8],
    /// Further header lines formatted by the caller, each starting with CRLF
    /// (already valid header text; empty for none).
    pub lines: &'a [u8],
    /// The `X-Request-Id` value (visible ASCII; empty: no field).
    pub request_id: &'a [u8],
    /// Whether the connection closes after this response.
    pub close: bool,
}

/// Appends a full response to `out`. `head_only` (a HEAD request) keeps the
/// Content-Length of the body but leaves the body out.
pub fn encode(out: &mut Vec<u8>, date: &[u8], head: &ResponseHead<'_>, body: &[u8], head_only: bool) {
    encode_head(out, date, head, body.len() as u64);
    if !head_only && !no_body_status(head.status) {
        out.extend_from_slice(body);
    }
}

/// Appends only the head, announcing `content_length` body bytes (the caller sends
/// them). An empty `date` writes no Date field: `head.relayed` holds one.
pub fn encode_head(out: &mut Vec<u8>, date: &[u8], head: &ResponseHead<'_>, content_length: u64) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(num.format(head.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(head.status).as_bytes());
    if !date.is_empty() {
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date);
    }
    if !no_body_status(head.status) {
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(num.format(content_length).as_bytes());
    }
    if let Some(ct) = head.content_type {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(ct.as_bytes());
    }
    out.extend_from_slice(head.relayed);
    for (name, value) in head.headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(head.lines);
    if !head.request_id.is_empty() {
        out.extend_from_slice(b"\r\nX-Request-Id: ");
        out.extend_from_slice(head.request_id);
    }
    if let Some(instance) = INSTANCE.get() {
        out.extend_from_slice(b"\r\nX-Instance-Id: ");
        out.extend_from_slice(instance);
    }
    if head.close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// 204 and 304 responses have no body and no Content-Length (RFC 9110 §8.6).
fn no_body_status(status: u16) -> bool {
    status == 204 || status == 304
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn encodes_status_date_length_and_extras() {
        let mut out = Vec::new();
        let head = ResponseHead {
            status: 405,
            content_type: Some("application/json"),
            headers: &[("Allow", "GET, HEAD")],
            relayed: b"",
            lines: b"\r\nRateLimit: \"free\";r=1;t=2",
            request_id: b"f00d",
            close: true,
        };
        encode(&mut out, DATE, &head, b"{}", false);
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
Content-Length: 2\r\nContent-Type: application/json\r\nAllow: GET, HEAD\r\nRateLimit: \"free\";r=1;t=2\r\n\
X-Request-Id: f00d\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn head_requests_and_204_carry_no_body() {
        let mut out = Vec::new();
        let head = ResponseHead {
            status: 200,
            content_type: None,
            headers: &[],
            relayed: b"",
            lines: b"",
            request_id: b"",
            close: false,
        };
        encode(&mut out, DATE, &head, b"hello", true);
        assert!(out.ends_with(b"Content-Length: 5\r\n\r\n"));
        out.clear();
        let head = ResponseHead {
            status: 204,
            content_type: None,
            headers: &[],
            relayed: b"",
            lines: b"",
            request_id: b"",
            close: false,
        };
        encode(&mut out, DATE, &head, b"", false);
        assert!(!out.windows(14).any(|w| w == b"Content-Length"));
    }

    #[test]
    fn a_relayed_head_brings_its_own_date() {
        let mut out = Vec::new();
        let head = ResponseHead {
            status: 200,
            content_type: None,
            headers: &[("Age", "7")],
            relayed: b"\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nETag: \"v1\"",
            lines: b"",
            request_id: b"",
            close: false,
        };
        encode(&mut out, b"", &head, b"{}", false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n\
ETag: \"v1\"\r\nAge: 7\r\n\r\n{}"
        );
    }
}

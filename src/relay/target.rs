//! Which upstream resource a `/relay/...` request names, and the refusal of any
//! target that could reach outside the upstream's base path.
//!
//! The rule is strict rather than clever: a relayed path is made of segments of
//! visible ASCII, none empty, none `.` or `..`, with no backslash, no `#`, and no
//! percent-encoding of a dot, a slash, a backslash or a control byte (so no
//! decoding here or upstream can turn it into a traversal), no segment that is
//! only dots and spaces before a `;` (`...`, `..%20`, `..;x`, which some servers
//! read as `..`), and no encoded bytes that are not UTF-8 (overlong `%c0%ae` is
//! a dot to a lax decoder). Neither the path nor
//! the query may hold `"`, `<`, `>` or `` ` `` (RFC 3986 allows none of them
//! unencoded, and the upstream client refuses to send some): a target the client
//! cannot send would fail without reaching the upstream, and must not count
//! against its breaker. What passes is appended to the base URL byte for byte, and
//! is also the cache key.
//! Invariant: the upstream URL always starts with the configured base path.

use crate::store::hex::decode_hex;

/// Why a relay target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `.`/`..` segments, empty segments, encoded separators or dots.
    Escapes,
    /// Bytes that have no place in a path.
    Malformed,
}

/// The part of a request path after `/relay`, checked; `query` is passed on as
/// is (the head parser already refused controls and spaces in it).
pub fn check(path: &str, query: Option<&str>) -> Result<(), Refused> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Refused::Malformed);
    };
    if rest.is_empty() {
        return Ok(());
    }
    for segment in rest.as_bytes().split(|&b| b == b'/') {
        if matches!(segment, b"" | b"." | b"..") {
            return Err(Refused::Escapes);
        }
        check_segment(segment)?;
    }
    if query.is_some_and(|q| {
        q.bytes()
            .any(|b| !(0x21..=0x7e).contains(&b) || b == b'#' || unsendable(b))
    }) {
        return Err(Refused::Malformed);
    }
    Ok(())
}

/// One path segment, byte by byte as it decodes. Besides the bytes refused
/// outright, two things some upstreams would turn into `..` are refused:
/// a segment that is only dots and spaces before any `;` (`...`, `.. ` from
/// `..%20`, `..;x`: servers that trim trailing dots and spaces, or take `;`
/// as the start of path parameters, see `..`), and encoded bytes that are not
/// UTF-8, overlong forms included (`%c0%ae`, which a lax decoder reads as `.`).
fn check_segment(segment: &[u8]) -> Result<(), Refused> {
    let mut utf8 = Utf8::default();
    let mut before_params = true;
    let mut only_dots_and_spaces = true;
    let mut has_dot = false;
    let mut i = 0;
    while i < segment.len() {
        let b = segment[i];
        let decoded = match b {
            b'\\' => return Err(Refused::Escapes),
            b'#' | b'?' => return Err(Refused::Malformed),
            b if unsendable(b) => return Err(Refused::Malformed),
            b'%' => {
                let mut value = [0u8];
                segment
                    .get(i + 1..i + 3)
                    .and_then(|h| decode_hex(h, &mut value))
                    .ok_or(Refused::Malformed)?;
                let [value] = value;
                if matches!(value, b'.' | b'/' | b'\\' | b'%') || value < 0x20 || value == 0x7f {
                    return Err(Refused::Escapes);
                }
                i += 2;
                value
            }
            0x21..=0x7e => b,
            _ => return Err(Refused::Malformed),
        };
        if !utf8.push(decoded) {
            return Err(Refused::Escapes);
        }
        if decoded == b';' {
            before_params = false;
        } else if before_params {
            only_dots_and_spaces &= matches!(decoded, b'.' | b' ');
            has_dot |= decoded == b'.';
        }
        i += 1;
    }
    if !utf8.complete() {
        return Err(Refused::Escapes);
    }
    if only_dots_and_spaces && has_dot {
        return Err(Refused::Escapes);
    }
    Ok(())
}

/// A UTF-8 validator fed one byte at a time (the ranges of RFC 3629 §4, which
/// leave out overlong forms and surrogates).
#[derive(Default)]
struct Utf8 {
    /// Continuation bytes still due.
    due: u8,
    /// The range the next continuation byte must fall in.
    lo: u8,
    hi: u8,
}

impl Utf8 {
    /// Takes the next byte; false when the sequence is not UTF-8.
    fn push(&mut self, b: u8) -> bool {
        if self.due > 0 {
            if !(self.lo..=self.hi).contains(&b) {
                return false;
            }
            self.due -= 1;
            (self.lo, self.hi) = (0x80, 0xbf);
            return true;
        }
        let (due, lo, hi) = match b {
            0x00..=0x7f => return true,
            0xc2..=0xdf => (1, 0x80, 0xbf),
            0xe0 => (2, 0xa0, 0xbf),
            0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
            0xed => (2, 0x80, 0x9f),
            0xf0 => (3, 0x90, 0xbf),
            0xf1..=0xf3 => (3, 0x80, 0xbf),
            0xf4 => (3, 0x80, 0x8f),
            _ => return false,
        };
        (self.due, self.lo, self.hi) = (due, lo, hi);
        true
    }

    /// Whether the bytes so far end on a whole character.
    fn complete(&self) -> bool {
        self.due == 0
    }
}

/// Visible ASCII that a URI may not hold unencoded and the upstream client
/// (the `http` crate's parser) refuses in a path or a query.
fn unsendable(b: u8) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'`')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_queries_pass() {
        assert_eq!(check("", None), Ok(()));
        assert_eq!(check("/", None), Ok(()));
        assert_eq!(check("/items/7", Some("a=1&b=%20x")), Ok(()));
        assert_eq!(check("/caf%C3%A9/v1.2/..x", None), Ok(()));
        assert_eq!(
            check("/a./.hidden/x..;v=1/;p/%F0%9F%98%80/%E2%82%AC", None),
            Ok(())
        );
    }

    #[test]
    fn every_way_out_of_the_base_path_is_refused() {
        for path in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/a/./b",
            "/.",
            "//evil.example/x",
            "/a//b",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/a%2fb",
            "/a%2F..%2Fb",
            "/a%5cb",
            "/a\\..\\b",
            "/%252e%252e/x",
            "/a%00b",
            "/a%0d%0ab",
            // What some upstreams normalise to `..`.
            "/.../x",
            "/..%20/x",
            "/..;/x",
            "/..;jsessionid=1/x",
            // Overlong and broken UTF-8.
            "/%c0%ae%c0%ae/x",
            "/%e0%80%ae/x",
            "/%c3",
            "/%c3x",
            "/%ed%a0%80",
            "/%f8%80%80%80%80",
        ] {
            assert_eq!(check(path, None), Err(Refused::Escapes), "{path}");
        }
    }

    #[test]
    fn what_passes_is_a_uri_the_client_can_send() {
        // The upstream URL is built by appending the target to the base; the
        // client (ureq, through the `http` crate) refuses to send a URI it cannot
        // parse, and that failure must never reach the upstream's breaker. So a
        // byte passes the check only where that parser takes it.
        let mut differ = Vec::new();
        for b in 0x20u8..=0x7f {
            let c = b as char;
            let path = format!("/a{c}b");
            let query = format!("x{c}y");
            for (what, target, ours) in [
                ("path", format!("http://h/base{path}"), check(&path, None)),
                (
                    "query",
                    format!("http://h/base/a?{query}"),
                    check("/a", Some(&query)),
                ),
            ] {
                let theirs = target.parse::<ureq::http::Uri>().is_ok();
                if ours.is_ok() && !theirs {
                    differ.push(format!("{what} {c:?}"));
                }
            }
        }
        assert!(
            differ.is_empty(),
            "passed the check, refused by the URI parser: {differ:?}"
        );
    }

    #[test]
    fn malformed_targets_are_refused() {
        for path in ["x", "/a b", "/a#b", "/a%", "/a%4", "/a%zz", "/caf\u{e9}"] {
            assert_eq!(check(path, None), Err(Refused::Malformed), "{path:?}");
        }
        assert_eq!(check("/a", Some("x=1#frag")), Err(Refused::Malformed));
        for path in ["/a<b", "/a>b", "/a`b", "/a\"b"] {
            assert_eq!(check(path, None), Err(Refused::Malformed), "{path:?}");
        }
        for query in ["f={\"a\":1}", "x=<y>", "x=`y`"] {
            assert_eq!(check("/a", Some(query)), Err(Refused::Malformed), "{query:?}");
        }
    }
}

//! Response compression: whether a client accepts gzip (`Accept-Encoding`, with its
//! q-values), and gzip itself (flate2 at its fastest level: JSON shrinks well even
//! there, and a worker's time is the scarce thing).
//!
//! What is worth compressing (media type, size, status) is the caller's decision;
//! this module only speaks the protocol and the format.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;

/// Whether an `Accept-Encoding` value allows gzip: listed (or `*`) with a q-value
/// above zero. An explicit `gzip;q=0` wins over `*`.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            // Bytes, not str slicing: a header value may hold any UTF-8.
            p.as_bytes()
                .get(..2)
                .is_some_and(|b| b.eq_ignore_ascii_case(b"q="))
                && p.get(2..)
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return !q_zero;
        }
        if coding == "*" {
            star = !q_zero;
        }
    }
    star
}

/// Appends the gzip encoding of `body` to `out`.
pub fn gzip(body: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut encoder = GzEncoder::new(out, Compression::fast());
    encoder.write_all(body)?;
    encoder.finish().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn accept_encoding_lists_and_q_values_are_honoured() {
        for yes in [
            "gzip;x€",
            "gzip",
            "deflate, gzip",
            "GZIP;q=0.5",
            "br;q=1, *",
            "x-gzip",
            "gzip ; q=1.0",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "br;x€",
            "€",
            "",
            "identity",
            "br",
            "gzip;q=0",
            "*, gzip;q=0",
            "gzip; q=0.000",
            "*;q=0",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }

    #[test]
    fn gzip_round_trips() {
        let body = br#"{"samples":[{"id":1,"flora":["ORCHID"]},{"id":2,"flora":["ORCHID"]}]}"#.repeat(50);
        let mut out = b"prefix".to_vec();
        gzip(&body, &mut out).expect("gzip");
        assert!(out.starts_with(b"prefix"));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[6..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert_eq!(back, body);
        assert!(out.len() - 6 < body.len() / 4);
    }
}

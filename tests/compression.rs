//! gzip on large JSON answers for clients that accept it: a listing of 500 samples
//! comes back at least 4x smaller and decodes to exactly the identity body (a HEAD
//! announces the same); never for a client that refuses gzip, a small body or a
//! stored file.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::{Read, Write};

fn get(server: &Server, path: &str, token: &str, accept: Option<&str>, method: &str) -> Response {
    get_if(server, path, token, accept, method, None)
}

/// `get` with an `If-None-Match`.
fn get_if(
    server: &Server,
    path: &str,
    token: &str,
    accept: Option<&str>,
    method: &str,
    if_none_match: Option<&str>,
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n");
    if let Some(a) = accept {
        req.push_str(&format!("Accept-Encoding: {a}\r\n"));
    }
    if let Some(tag) = if_none_match {
        req.push_str(&format!("If-None-Match: {tag}\r\n"));
    }
    req.push_str("\r\n");
    let mut r = Reader::new(connect(server.addr));
    r.stream.write_all(req.as_bytes()).unwrap();
    r.next(method == "HEAD").unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a valid gzip body");
    out
}

#[test]
fn large_json_answers_are_gzipped_for_clients_that_accept_it() {
    let db = TestDb::new("gzip");
    let server = Server::start(&db.url, &["2"]);
    let api = Api::new(server.addr);
    let token = api.user("lister");
    // 500 samples, written straight into the table.
    db.client()
        .batch_execute(
            "INSERT INTO samples (user_id, image_md5, taken_at, latitude, longitude, altitude, metadata, flora, fauna, calls)
             SELECT u.id, decode(md5(i::text), 'hex'), '2000-12-09', 4743.546754, 729.55436546, 4935.3, 35983465,
                    '{ORCHID,DAFFODIL}', '{GOBLIN}', '{MORDECAI}'
             FROM generate_series(1, 500) i, users u WHERE u.username = 'lister'",
        )
        .unwrap();
    let path = "/api/samples?limit=500";

    let plain = get(&server, path, &token, None, "GET");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["samples"].as_array().unwrap().len(), 500);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));

    let zipped = get(&server, path, &token, Some("br;q=1.0, gzip;q=0.8"), "GET");
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("vary"), Some("Accept-Encoding"));
    assert_eq!(gunzip(&zipped.body), plain.body, "gzip changed the body");
    let ratio = plain.body.len() as f64 / zipped.body.len() as f64;
    eprintln!(
        "500 samples: {} bytes plain, {} gzipped ({ratio:.1}x)",
        plain.body.len(),
        zipped.body.len()
    );
    assert!(ratio >= 4.0, "only {ratio:.1}x smaller");

    // Two encodings are two representations: the gzipped one's validator is the
    // plain one's made weak. A 304 carries the Vary and the validator its 200
    // would have, for either.
    let strong = plain.header("etag").unwrap().to_string();
    assert!(strong.starts_with('"'), "{strong}");
    assert_eq!(zipped.header("etag"), Some(format!("W/{strong}").as_str()));
    let weak = format!("W/{strong}");
    for (accept, tag, expected) in [
        (Some("gzip"), weak.as_str(), weak.as_str()),
        (None, strong.as_str(), strong.as_str()),
        (Some("gzip"), strong.as_str(), weak.as_str()),
        (None, weak.as_str(), strong.as_str()),
    ] {
        let r = get_if(&server, path, &token, accept, "GET", Some(tag));
        assert_eq!(r.status, 304, "{accept:?} {tag}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{accept:?} {tag}");
        assert_eq!(r.header("etag"), Some(expected), "{accept:?} {tag}");
        assert_eq!(r.header("content-encoding"), None);
    }

    // HEAD announces what GET would send.
    let head = get(&server, path, &token, Some("gzip"), "HEAD");
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(
        head.header("content-length"),
        Some(zipped.body.len().to_string().as_str())
    );
    // Refused gzip and small bodies: identity.
    let refused = get(&server, path, &token, Some("gzip;q=0, *"), "GET");
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, plain.body);
    let small = get(&server, "/health", &token, Some("gzip"), "GET");
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.header("vary"), None);
    assert_eq!(small.text(), r#"{"status":"ok"}"#);

    // A stored file is sent as stored.
    let png = png();
    let up = upload(server.addr, &token, "image/png", &png);
    assert!(matches!(up.status, 200 | 201), "{}", up.text());
    let md5 = up.json()["md5"].as_str().unwrap().to_string();
    let file = get(&server, &format!("/api/file/{md5}"), &token, Some("gzip"), "GET");
    assert_eq!(file.status, 200);
    assert_eq!(file.header("content-encoding"), None);
    assert_eq!(file.body, png);

    // Compression off.
    let off = Server::start(&db.url, &["1", "--compress-min-bytes", "0"]);
    let plain_off = get(&off, path, &token, Some("gzip"), "GET");
    assert_eq!(plain_off.header("content-encoding"), None);
    assert_eq!(plain_off.header("vary"), None);
}

//! File upload and download: content addressing, 100-continue, deduplication, ETag
//! and 304, every refusal, a dropped upload leaving nothing, slow uploaders and slow
//! readers not holding the only worker.

// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use md5::{Digest, Md5};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const PNG_MD5: &str = "a84c28046b82d832d9d7dac7e740bc65";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Files under `dir`, recursively.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { count_files(&p) } else { 1 })
        .sum()
}

#[test]
fn png_upload_with_100_continue_dedupes_and_downloads_identically() {
    let db = TestDb::new("files");
    let server = Server::start(&db.url, &["2"]);
    let api = Api::new(server.addr);
    let token = api.user("uploader");
    let bytes = png();

    // curl-like framing: head with Expect, wait for 100, then the body.
    let mut s = connect(server.addr);
    s.write_all(upload_head(&token, "image/png", bytes.len(), true).as_bytes())
        .unwrap();
    let mut r = Reader::new(s);
    assert_eq!(r.next(false).unwrap().status, 100);
    r.stream.write_all(&bytes).unwrap();
    let created = r.next(false).unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["md5"], PNG_MD5);
    assert_eq!(created.json()["size"], bytes.len());

    // The same bytes again: 200, still one copy and one row.
    let again = upload(server.addr, &token, "image/png", &bytes);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["md5"], PNG_MD5);
    assert_eq!(count_files(&server.data_dir.join("files")), 1);
    assert_eq!(count_files(&server.data_dir.join("tmp")), 0);
    let rows: i64 = db
        .client()
        .query_one("SELECT count(*) FROM files", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);

    let got = api.get(&format!("/api/file/{PNG_MD5}"), Some(&token));
    assert_eq!(got.status, 200);
    assert_eq!(got.body, bytes);
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header("etag"), Some(format!("\"{PNG_MD5}\"").as_str()));

    let raw = format!(
        "GET /api/file/{PNG_MD5} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nIf-None-Match: \"{PNG_MD5}\"\r\n\r\n\
         HEAD /api/file/{PNG_MD5} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n\
         GET /health HTTP/1.1\r\n\r\n"
    );
    let mut s = connect(server.addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut r = Reader::new(s);
    let not_modified = r.next(false).unwrap();
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let head = r.next(true).unwrap();
    assert_eq!(
        head.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(r.next(false).unwrap().status, 200, "pipelined request after HEAD");

    // A sample naming this image says it is present.
    let sample = api.call("POST", "/api/sample", Some(&token), Some(&fixture_body()));
    let id = sample.json()["id"].as_i64().unwrap();
    assert_eq!(
        api.get(&format!("/api/sample/{id}"), Some(&token)).json()["image_present"],
        true
    );

    assert_eq!(
        api.get("/api/file/00000000000000000000000000000000", Some(&token))
            .status,
        404
    );
    assert_eq!(api.get("/api/file/nothex", Some(&token)).status, 400);
    assert_eq!(api.get(&format!("/api/file/{PNG_MD5}"), None).status, 401);
}

#[test]
fn uploads_are_refused_for_size_type_auth_length_and_fake_png() {
    let db = TestDb::new("filerefuse");
    let server = Server::start(&db.url, &["2", "--max-upload-bytes", "1000"]);
    let api = Api::new(server.addr);
    let token = api.user("refused");

    // 413 from Content-Length, before the body: the response comes without sending it.
    let mut s = connect(server.addr);
    s.write_all(upload_head(&token, "application/octet-stream", 1001, false).as_bytes())
        .unwrap();
    let mut r = Reader::new(s);
    assert_eq!(r.next(false).unwrap().status, 413);
    assert!(r.next(false).is_none(), "connection left open after 413");

    // 413 for a chunked body once it passes the limit, and the connection closes.
    let mut s = connect(server.addr);
    write!(
        s,
        "POST /api/file HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..3 {
        write!(s, "190\r\n{}\r\n", "x".repeat(400)).unwrap();
    }
    let mut r = Reader::new(s);
    assert_eq!(r.next(false).unwrap().status, 413);
    assert!(r.next(false).is_none());

    // 401 before any body byte: only the head is sent.
    let mut s = connect(server.addr);
    s.write_all(upload_head("0".repeat(64).as_str(), "image/png", 500, false).as_bytes())
        .unwrap();
    let mut r = Reader::new(s);
    assert_eq!(r.next(false).unwrap().status, 401);

    assert_eq!(upload(server.addr, &token, "text/plain", b"hello").status, 415);
    let fake = upload(server.addr, &token, "image/png", b"GIF89a not a png");
    assert_eq!(fake.status, 400, "{}", fake.text());
    assert!(fake.text().contains("PNG"));

    let (r, _) = exchange(
        server.addr,
        format!(
            "POST /api/file HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r[0].status, 411);

    // Nothing of the refused uploads remains.
    assert_eq!(count_files(&server.data_dir.join("files")), 0);
    assert!(eventually(Duration::from_secs(3), || count_files(
        &server.data_dir.join("tmp")
    ) == 0));

    // A chunked upload within the limit works, and an empty body is a valid file.
    let body = b"chunked bytes";
    let raw = format!(
        "POST /api/file HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nchunked\r\n6\r\n bytes\r\n0\r\n\r\n"
    );
    let (r, _) = exchange(server.addr, raw.as_bytes());
    assert_eq!(r[0].status, 201);
    assert_eq!(r[0].json()["md5"], hex(&Md5::digest(body)));
    let empty = upload(server.addr, &token, "application/octet-stream", b"");
    assert_eq!(empty.status, 201);
    assert_eq!(empty.json()["size"], 0);
}

#[test]
fn a_client_that_disconnects_mid_body_leaves_no_file_and_no_row() {
    let db = TestDb::new("fileabort");
    let server = Server::start(&db.url, &["1"]);
    let token = Api::new(server.addr).user("quitter");
    let bytes = png();
    let mut s = connect(server.addr);
    s.write_all(upload_head(&token, "image/png", bytes.len(), false).as_bytes())
        .unwrap();
    s.write_all(&bytes[..bytes.len() / 2]).unwrap();
    assert!(eventually(Duration::from_secs(3), || count_files(
        &server.data_dir.join("tmp")
    ) == 1));
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || count_files(
            &server.data_dir.join("tmp")
        ) == 0),
        "temp file left behind"
    );
    assert_eq!(count_files(&server.data_dir.join("files")), 0);
    let rows: i64 = db
        .client()
        .query_one("SELECT count(*) FROM files", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

#[test]
fn twenty_trickling_uploads_do_not_hold_the_only_worker() {
    let db = TestDb::new("trickle");
    let server = Server::start(&db.url, &["1"]);
    let addr = server.addr;
    let token = Api::new(addr).user("trickler");
    // Each upload trickles for longer than the /health bound below (60 bytes, a gap
    // of slack x 10 ms before each), so a worker held by any one of them would show.
    let gap = bound(Duration::from_millis(10));
    let uploads: Vec<_> = (0..20)
        .map(|i| {
            let token = token.clone();
            std::thread::spawn(move || {
                let body = format!("trickled upload number {i:02} with a body of some length.....");
                let mut s = connect(addr);
                s.write_all(upload_head(&token, "application/octet-stream", body.len(), false).as_bytes())
                    .unwrap();
                for b in body.as_bytes() {
                    s.write_all(std::slice::from_ref(b)).unwrap();
                    std::thread::sleep(gap);
                }
                let r = Reader::new(s).next(false).unwrap();
                (
                    r.status,
                    r.json()["md5"].as_str().unwrap().to_string(),
                    hex(&Md5::digest(body.as_bytes())),
                )
            })
        })
        .collect();
    let api = Api::new(addr);
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < bound(Duration::from_millis(300)) {
        let t = Instant::now();
        assert_eq!(api.get("/health", None).status, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    for u in uploads {
        let (status, got, want) = u.join().unwrap();
        assert_eq!(status, 201);
        assert_eq!(got, want);
    }
    eprintln!("worst /health latency beside 20 trickling uploads on one worker: {worst:?}");
    // Typical figures are about a millisecond.
    assert!(
        worst < bound(Duration::from_millis(50)),
        "worst /health latency {worst:?}"
    );
}

#[test]
fn a_slow_reader_of_a_large_file_does_not_hold_the_only_worker() {
    let db = TestDb::new("slowread");
    let server = Server::start(&db.url, &["1"]);
    let api = Api::new(server.addr);
    let token = api.user("reader");
    let big: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = upload(server.addr, &token, "application/octet-stream", &big);
    assert_eq!(up.status, 201);
    let md5 = up.json()["md5"].as_str().unwrap().to_string();

    let mut slow = connect(server.addr);
    write!(
        slow,
        "GET /api/file/{md5} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    // The download has started once bytes of it wait, unread, in our socket; it then
    // stalls on our full receive buffer, and the worker must still serve others.
    let mut peeked = vec![0u8; 256 * 1024];
    assert!(eventually(Duration::from_secs(5), || slow
        .peek(&mut peeked)
        .is_ok_and(|n| n >= 64 * 1024)));
    let t = Instant::now();
    assert_eq!(api.get("/health", None).status, 200);
    assert!(
        t.elapsed() < bound(Duration::from_millis(50)),
        "{:?}",
        t.elapsed()
    );

    let r = Reader::new(slow).next(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == big, "downloaded bytes differ");
}

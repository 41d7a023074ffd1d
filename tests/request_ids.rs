//! X-Request-Id on every response: a new 128-bit ID (32 hex digits) unless the
//! client sent a valid one (1 to 128 visible ASCII characters), which is echoed;
//! an invalid one is replaced, never echoed. Errors carry one too, pipelined
//! requests each their own. The access log has one JSON line per request, with
//! that ID.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::Write;

fn generated(id: Option<&str>) -> bool {
    id.is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn send(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<Response> {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    Reader::new(s).until_close()
}

#[test]
fn every_response_has_a_request_id_of_its_own_or_the_clients() {
    let db = TestDb::new("request_ids");
    let server = Server::start(&db.url, &["1"]);
    let api = Api::new(server.addr);

    // Generated: 32 hex digits, a new one each time.
    let a = api.get("/health", None);
    let b = api.get("/health", None);
    assert!(generated(a.header("x-request-id")), "{:?}", a.headers);
    assert!(generated(b.header("x-request-id")));
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));

    // Echoed when valid, on successes and errors alike; pipelined requests each
    // get their own.
    let longest = "x".repeat(128);
    let raw = format!(
        "GET /health HTTP/1.1\r\nX-Request-Id: trace-1/a.b:c~\r\n\r\n\
         GET /nope HTTP/1.1\r\nX-Request-Id: {longest}\r\n\r\n\
         GET /health HTTP/1.1\r\n\r\n"
    );
    let r = send(server.addr, raw.as_bytes());
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].header("x-request-id"), Some("trace-1/a.b:c~"));
    assert_eq!(r[1].status, 404);
    assert_eq!(r[1].header("x-request-id"), Some(longest.as_str()));
    assert!(generated(r[2].header("x-request-id")));

    // Invalid ones are replaced, never echoed.
    let too_long = "y".repeat(129);
    for bad in [too_long.as_str(), "two words", "caf\u{e9}"] {
        let raw = format!("GET /health HTTP/1.1\r\nX-Request-Id: {bad}\r\n\r\n");
        let r = send(server.addr, raw.as_bytes());
        assert!(
            generated(r[0].header("x-request-id")),
            "{bad:?}: {:?}",
            r[0].headers
        );
    }

    // A request that does not even parse gets one, and so does a refusal of an
    // authenticated route.
    let r = send(
        server.addr,
        b"GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(r[0].status, 400);
    assert!(generated(r[0].header("x-request-id")));
    let r = send(
        server.addr,
        b"GET /api/samples HTTP/1.1\r\nX-Request-Id: who-am-i\r\n\r\n",
    );
    assert_eq!(r[0].status, 401);
    assert_eq!(r[0].header("x-request-id"), Some("who-am-i"));
}

#[test]
fn an_upload_answers_with_its_own_request_id() {
    let db = TestDb::new("request_ids_upload");
    let server = Server::start(&db.url, &["1"]);
    let key = Api::new(server.addr).user("uploader");
    let png = png();
    let mut s = connect(server.addr);
    let head = upload_head(&key, "image/png", png.len(), false).replacen(
        "\r\n",
        "\r\nX-Request-Id: upload-7\r\n",
        1,
    );
    s.write_all(head.as_bytes()).unwrap();
    // The body in two parts, a health check pipelined behind it.
    s.write_all(&png[..png.len() / 2]).unwrap();
    s.write_all(&png[png.len() / 2..]).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nX-Request-Id: after\r\n\r\n")
        .unwrap();
    let mut reader = Reader::new(s);
    let stored = reader.next(false).unwrap();
    assert_eq!(stored.status, 201, "{}", stored.text());
    assert_eq!(stored.header("x-request-id"), Some("upload-7"));
    assert_eq!(reader.next(false).unwrap().header("x-request-id"), Some("after"));
}

#[test]
fn the_access_log_has_one_json_line_per_request_with_its_id() {
    let db = TestDb::new("access_log");
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = Server::start(&db.url, &["2", "--access-log", path.to_str().unwrap()]);
    let api = Api::new(server.addr);
    let r = send(
        server.addr,
        b"GET /health HTTP/1.1\r\nX-Request-Id: log-1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
    );
    assert_eq!(r.len(), 2);
    let key = api.user("logged");
    assert_eq!(api.get("/api/samples", Some(&key)).status, 200);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["request_id"], "log-1");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["route"], "/health");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["client_ip"], "127.0.0.1");
    assert!(lines[0]["bytes"].as_u64().unwrap() > 15);
    assert!(lines[0]["duration_us"].is_u64());
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[1]["route"], "");
    assert_eq!(lines[1]["request_id"].as_str(), r[1].header("x-request-id"));
    assert_eq!(lines[2]["route"], "/auth/create");
    assert_eq!(lines[2]["status"], 201);
    assert_eq!(lines[3]["route"], "/api/samples");
    assert!(lines[3]["user_id"].as_i64().unwrap() > 0);
    assert!(lines[0]["user_id"].is_null());
    let _ = std::fs::remove_file(&path);
}

//! Start-up and shutdown: SIGTERM drains in-flight requests and exits 0, two servers
//! can apply the schema to one database at once, and a restart binds immediately.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::Write;

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let db = TestDb::new("sigterm");
    let mut server = Server::start(&db.url, &["2"]);
    // An idle keep-alive connection, and one halfway through a request.
    let mut idle = Reader::new(connect(server.addr));
    idle.stream.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(idle.next(false).unwrap().status, 200);
    let body = r#"{"username":"late","password":"password123","email":"late@example.org"}"#;
    let mut busy = Reader::new(connect(server.addr));
    write!(
        busy.stream,
        "POST /auth/create HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    // The server has the request in hand (head parsed, body awaited) once it says
    // 100 Continue: that is the in-flight request SIGTERM must not cut off.
    assert_eq!(busy.next(false).unwrap().status, 100);

    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    // The idle connection is closed without a response.
    assert!(idle.next(false).is_none());
    // The in-flight request completes, told that the connection closes.
    busy.stream.write_all(&body.as_bytes()[10..]).unwrap();
    let resp = busy.next(false).expect("in-flight request answered");
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.header("connection"), Some("close"));
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status:?}");
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM users WHERE username='late'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn two_servers_apply_the_schema_to_one_database_at_once() {
    let db = TestDb::new("schema");
    let url = db.url.clone();
    let a = std::thread::spawn(move || Server::start(&url, &["1"]));
    let b = Server::start(&db.url, &["1"]);
    let a = a.join().expect("first server started");
    for s in [&a, &b] {
        assert_eq!(Api::new(s.addr).get("/ready", None).status, 200);
    }
}

#[test]
fn a_restarted_server_binds_the_same_port_at_once() {
    let db = TestDb::new("rebind");
    let mut first = Server::start(&db.url, &["1"]);
    let port = first.addr.port().to_string();
    // Leave connections in TIME_WAIT on the server side.
    for _ in 0..5 {
        let mut r = Reader::new(connect(first.addr));
        r.stream
            .write_all(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(r.next(false).unwrap().status, 200);
    }
    assert!(first.terminate().success());
    let second = Server::start(&db.url, &["1", "--port", &port]);
    assert_eq!(second.addr.port().to_string(), port);
    assert_eq!(Api::new(second.addr).get("/health", None).status, 200);
}

//! HTTP/1.1 behaviour seen from a raw socket: pipelining, arbitrary splits,
//! 100-continue, keep-alive rules, limits, timeouts, the connection limit, and a
//! table of malformed and smuggling inputs.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

/// A side-effecting request appended after each bad input: if the server ever ran
/// it, a user named `smuggled_N` would exist.
fn smuggled(i: usize) -> String {
    let body =
        format!(r#"{{"username":"smuggled_{i}","password":"password123","email":"s{i}@example.org"}}"#);
    format!(
        "POST /auth/create HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn malformed_and_smuggling_inputs_get_4xx_and_close_without_running_the_next_request() {
    let db = TestDb::new("malformed");
    let server = Server::start(&db.url, &["2"]);
    let big = "x".repeat(9000);
    let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let post = "POST /auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n";
    let cases: Vec<(u16, String)> = vec![
        (400, "GARBAGE\r\n\r\n".into()),
        (400, "GET /health HTTP/1.1 extra\r\n\r\n".into()),
        (400, "GET /health\r\n\r\n".into()),
        (400, " GET /health HTTP/1.1\r\n\r\n".into()),
        (400, "GET health HTTP/1.1\r\n\r\n".into()),
        (400, "GET http://t/health HTTP/1.1\r\n\r\n".into()),
        (400, "GET /health HTTP/2.0\r\n\r\n".into()),
        (400, "G\x01T /health HTTP/1.1\r\n\r\n".into()),
        (
            400,
            "GET /health HTTP/1.1\r\nHost: t\r\n folded: x\r\n\r\n".into(),
        ),
        (400, "GET /health HTTP/1.1\r\nX: a\rb\r\n\r\n".into()),
        (400, "GET /health HTTP/1.1\rHost: t\r\n\r\n".into()),
        (400, "\rGET /health HTTP/1.1\r\n\r\n".into()),
        (400, "GET /health HTTP/1.1\r\nHost : t\r\n\r\n".into()),
        (400, "GET /health HTTP/1.1\r\nX(: y\r\n\r\n".into()),
        (400, "GET /health HTTP/1.1\r\nX: a\x00b\r\n\r\n".into()),
        (400, "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into()),
        (
            400,
            format!("{post}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n"),
        ),
        (
            400,
            format!("{post}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"),
        ),
        (
            400,
            format!("{post}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
        (400, format!("{post}Content-Length: 2, 2\r\n\r\n{{}}")),
        (400, format!("{post}Content-Length: -2\r\n\r\n{{}}")),
        (400, format!("{post}Content-Length: two\r\n\r\n{{}}")),
        (
            400,
            format!("{post}Content-Length: 184467440737095516160\r\n\r\n"),
        ),
        (400, format!("{post}Transfer-Encoding: gzip\r\n\r\n")),
        (400, format!("{post}Transfer-Encoding: chunked, identity\r\n\r\n")),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            400,
            "POST /auth/login HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
        ),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\n\r\n\r\n{{}}\r\n0\r\n\r\n"),
        ),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\n\r\n2;a\nb\r\n{{}}\r\n0\r\n\r\n"),
        ),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
        ),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\n\r\n2\r\n{{}}XX0\r\n\r\n"),
        ),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\n\r\n2\n{{}}\r\n0\r\n\r\n"),
        ),
        (
            400,
            format!("{post}Transfer-Encoding: chunked\r\n\r\n11111111111111111\r\n"),
        ),
        (
            501,
            format!("{post}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            417,
            format!("{post}Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
        (413, format!("{post}Content-Length: 70000\r\n\r\n{{}}")),
        (
            413,
            format!("{post}Transfer-Encoding: chunked\r\n\r\n20000\r\n{{}}"),
        ),
        (431, format!("GET /health HTTP/1.1\r\nX: {big}\r\n\r\n")),
        (431, format!("GET /health HTTP/1.1\r\n{many}\r\n")),
    ];
    assert!(cases.len() >= 30);
    for (i, (want, bad)) in cases.iter().enumerate() {
        let raw = format!("{bad}{}", smuggled(i));
        let (responses, closed) = exchange(server.addr, raw.as_bytes());
        assert_eq!(responses.len(), 1, "case {i} {bad:?}: {responses:?}");
        let r = &responses[0];
        assert_eq!(r.status, *want, "case {i} {bad:?}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "case {i}");
        assert!(
            r.header("date").is_some() && r.header("content-length").is_some(),
            "case {i}"
        );
        assert!(closed, "case {i}: connection left open");
        assert!(r.json()["error"].is_string(), "case {i}");
    }
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM users WHERE username LIKE 'smuggled%'", &[])
            .unwrap()
            .get(0)
    };
    let mut c = db.client();
    assert_eq!(count(&mut c), 0, "a request after a bad one was executed");
    // The same trailing request on its own does run, so the check above can fail.
    let (responses, _) = exchange(server.addr, smuggled(999).as_bytes());
    assert_eq!(responses[0].status, 201);
    assert_eq!(count(&mut c), 1);
}

/// Twenty requests of several kinds, and the statuses they must get, in order.
fn pipeline() -> (String, Vec<u16>) {
    let kinds = [
        (HEALTH.to_string(), 200),
        ("GET /nope HTTP/1.1\r\n\r\n".to_string(), 404),
        (
            "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_string(),
            405,
        ),
        (
            "GET /api/sample/abc HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n".to_string(),
            400,
        ),
        ("GET /api/samples HTTP/1.1\r\n\r\n".to_string(), 401),
        (
            "\nPOST /auth/login HTTP/1.1\nContent-Length: 2\n\n{}".to_string(),
            400,
        ),
        ("HEAD /health HTTP/1.1\r\n\r\n".to_string(), 200),
    ];
    let mut raw = String::new();
    let mut want = Vec::new();
    for i in 0..20 {
        let (req, status) = &kinds[i % kinds.len()];
        raw.push_str(req);
        want.push(*status);
    }
    (raw, want)
}

fn read_pipeline(r: &mut Reader, want: &[u16]) -> Vec<u16> {
    (0..want.len())
        .map(|i| r.next(i % 7 == 6).expect("response").status)
        .collect()
}

#[test]
fn pipelined_requests_answer_in_order() {
    let db = TestDb::new("pipeline");
    let server = Server::start(&db.url, &["2"]);
    let (raw, want) = pipeline();
    let mut s = connect(server.addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut r = Reader::new(s);
    assert_eq!(read_pipeline(&mut r, &want), want);
    // And the connection is still usable.
    r.stream.write_all(HEALTH.as_bytes()).unwrap();
    assert_eq!(r.next(false).unwrap().status, 200);
}

#[test]
fn the_same_bytes_sent_one_at_a_time_get_the_same_answers() {
    let db = TestDb::new("bytewise");
    let server = Server::start(&db.url, &["1"]);
    let (raw, want) = pipeline();
    let mut s = connect(server.addr);
    for b in raw.as_bytes() {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let mut r = Reader::new(s);
    assert_eq!(read_pipeline(&mut r, &want), want);
}

#[test]
fn a_request_split_at_any_byte_works() {
    let db = TestDb::new("split");
    let server = Server::start(&db.url, &["2"]);
    let body = r#"{"username":"nobody","password":"secret-pass"}"#;
    let req = format!(
        "POST /auth/login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n{:x};ext=1\r\n{}\r\n0\r\n\r\n",
        &body[..5],
        body.len() - 5,
        &body[5..]
    );
    for split in 1..req.len() {
        let mut s = connect(server.addr);
        s.write_all(&req.as_bytes()[..split]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        s.write_all(&req.as_bytes()[split..]).unwrap();
        let r = Reader::new(s).next(false).expect("response");
        assert_eq!(r.status, 401, "split at {split}: {}", r.text());
    }
}

#[test]
fn a_request_that_arrives_with_its_eof_is_answered_then_closed() {
    // The bytes and the FIN often arrive in one readiness edge; a worker that took a
    // short read as "nothing more" would never see the EOF and never close.
    let db = TestDb::new("eofwithdata");
    let server = Server::start(&db.url, &["1"]);
    let event = r#"{"userId":"u","value":1}"#;
    let post = format!(
        "POST /event HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{event}",
        event.len()
    );
    for i in 0..300 {
        let raw = if i % 2 == 0 {
            HEALTH.to_string()
        } else {
            post.clone()
        };
        let started = Instant::now();
        let (responses, closed) = exchange(server.addr, raw.as_bytes());
        assert_eq!(responses.len(), 1, "round {i}");
        assert_eq!(responses[0].status, 200, "round {i}");
        assert!(closed, "round {i}: not closed after the client's EOF");
        assert!(
            started.elapsed() < bound(Duration::from_secs(2)),
            "round {i}: close came late"
        );
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let db = TestDb::new("expect");
    let server = Server::start(&db.url, &["2"]);
    let body = r#"{"username":"carol","password":"password123","email":"c@example.org"}"#;
    let mut s = connect(server.addr);
    write!(
        s,
        "POST /auth/create HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut r = Reader::new(s);
    assert_eq!(r.next(false).unwrap().status, 100);
    r.stream.write_all(body.as_bytes()).unwrap();
    let created = r.next(false).unwrap();
    assert_eq!(created.status, 201, "{}", created.text());

    // Over the limit: the final status comes at once, no 100, and the connection closes.
    let mut s = connect(server.addr);
    s.write_all(b"POST /auth/create HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 999999\r\n\r\n")
        .unwrap();
    let mut r = Reader::new(s);
    assert_eq!(r.next(false).unwrap().status, 413);
    assert!(r.next(false).is_none());
}

#[test]
fn keep_alive_rules_follow_the_version_and_connection_header() {
    let db = TestDb::new("keepalive");
    let server = Server::start(&db.url, &["2"]);
    let cases: [(&str, bool); 4] = [
        ("GET /health HTTP/1.1\r\n\r\n", true),
        ("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        ("GET /health HTTP/1.0\r\n\r\n", false),
        ("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
    ];
    for (req, stays_open) in cases {
        let mut s = connect(server.addr);
        s.write_all(req.as_bytes()).unwrap();
        let mut r = Reader::new(s);
        let resp = r.next(false).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection") == Some("close"), !stays_open, "{req:?}");
        if stays_open {
            r.stream.write_all(HEALTH.as_bytes()).unwrap();
            assert_eq!(r.next(false).unwrap().status, 200, "{req:?}");
        } else {
            assert!(r.next(false).is_none(), "{req:?}");
        }
    }
}

#[test]
fn head_has_length_but_no_body_and_every_response_is_dated() {
    let db = TestDb::new("head");
    let server = Server::start(&db.url, &["1"]);
    let mut s = connect(server.addr);
    s.write_all(b"HEAD /health HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut r = Reader::new(s);
    let head = r.next(true).unwrap();
    assert_eq!(head.header("content-length"), Some("15"));
    assert!(head.body.is_empty());
    let get = r.next(false).unwrap();
    assert_eq!(get.text(), r#"{"status":"ok"}"#);
    assert!(get.header("date").is_some_and(|d| d.ends_with(" GMT")));
}

#[test]
fn slow_heads_get_408_and_idle_connections_are_closed() {
    let db = TestDb::new("timeouts");
    let server = Server::start(
        &db.url,
        &["1", "--header-timeout", "300ms", "--keepalive-timeout", "400ms"],
    );

    let mut s = connect(server.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n").unwrap();
    let started = Instant::now();
    let mut r = Reader::new(s);
    let resp = r.next(false).expect("a 408");
    assert_eq!(resp.status, 408);
    assert!(started.elapsed() < bound(Duration::from_secs(3)));
    assert!(r.next(false).is_none());

    let mut s = connect(server.addr);
    s.write_all(HEALTH.as_bytes()).unwrap();
    let mut r = Reader::new(s);
    assert_eq!(r.next(false).unwrap().status, 200);
    let idle = Instant::now();
    assert!(
        r.next(false).is_none(),
        "idle connection closed without a response"
    );
    let waited = idle.elapsed();
    // Never before the keep-alive timeout (less the poller's 100 ms tick), however
    // fast the machine; soon after it, however slow.
    assert!(
        waited >= Duration::from_millis(300) && waited < bound(Duration::from_secs(3)),
        "{waited:?}"
    );
}

#[test]
fn a_trickled_body_gets_408_at_the_body_timeout() {
    let db = TestDb::new("bodytimeout");
    let server = Server::start(
        &db.url,
        &["1", "--body-timeout", "500ms", "--keepalive-timeout", "60s"],
    );
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /event HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    let started = Instant::now();
    // A byte every 100 ms: never idle for the keep-alive timeout, yet cut.
    let writer = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let mut w = writer;
        for _ in 0..600 {
            std::thread::sleep(Duration::from_millis(100));
            if w.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let mut r = Reader::new(s);
    let resp = r.next(false).expect("a 408");
    let waited = started.elapsed();
    assert_eq!(resp.status, 408);
    assert!(
        waited >= Duration::from_millis(400) && waited < bound(Duration::from_secs(3)),
        "{waited:?}"
    );
    assert!(r.next(false).is_none(), "closed after the 408");
    trickle.join().unwrap();
}

#[test]
fn connections_over_the_limit_get_503_and_are_closed() {
    let db = TestDb::new("connlimit");
    let server = Server::start(&db.url, &["1", "--max-connections", "2"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(server.addr);
        s.write_all(HEALTH.as_bytes()).unwrap();
        let mut r = Reader::new(s);
        assert_eq!(r.next(false).unwrap().status, 200);
        held.push(r);
    }
    let (responses, closed) = exchange(server.addr, HEALTH.as_bytes());
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 503);
    assert_eq!(responses[0].header("retry-after"), Some("1"));
    assert!(closed);
    // Once one closes, a new connection is served again.
    drop(held.pop());
    assert!(eventually(Duration::from_secs(5), || {
        let (r, _) = exchange(server.addr, HEALTH.as_bytes());
        r.first().is_some_and(|r| r.status == 200)
    }));
}

#[test]
fn a_flood_of_logins_does_not_starve_health_checks() {
    let db = TestDb::new("loginflood");
    // Costly hashing, two workers: one may hash at a time, the other stays free.
    let server = Server::start(
        &db.url,
        &["2", "--argon2-memory-kib", "32768", "--argon2-iterations", "3"],
    );
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            let answered = std::sync::Arc::clone(&answered);
            std::thread::spawn(move || {
                let api = Api::new(addr);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = api.post(
                        "/auth/login",
                        None,
                        &serde_json::json!({"username":"x","password":"y"}),
                    );
                    assert_eq!(r.status, 401);
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    // The flood is under way once the first logins have been hashed.
    assert!(eventually(Duration::from_secs(5), || answered
        .load(std::sync::atomic::Ordering::Relaxed)
        >= 2));
    let api = Api::new(addr);
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(api.get("/health", None).status, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flood {
        f.join().unwrap();
    }
    // A hash of these costs takes tens of milliseconds and eight logins wait for the
    // one permit; a starved worker pool would make /health wait behind them all.
    assert!(
        worst < bound(Duration::from_millis(500)),
        "worst /health latency {worst:?}"
    );
}

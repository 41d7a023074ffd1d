//! What the engine promises whatever the handlers do: a panic costs one connection
//! and never a worker, a password hash is never computed for a client that is gone,
//! and a request that will not be served is not buffered first.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::io::Write;

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
const PANIC: &str = "GET /debug/panic HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn a_panicking_handler_costs_its_connection_not_the_worker() {
    let db = TestDb::new("panic");
    // One worker: if a panic killed it, nothing would answer afterwards.
    let server = Server::start(&db.url, &["1", "--test-routes"]);
    for round in 0..3 {
        // A request pipelined behind the panicking one is never processed: the
        // connection closes after the 500.
        let (responses, closed) = exchange(server.addr, format!("{PANIC}{HEALTH}").as_bytes());
        assert_eq!(responses.len(), 1, "round {round}: {responses:?}");
        assert_eq!(responses[0].status, 500, "round {round}");
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert_eq!(responses[0].json()["error"], "internal");
        assert!(closed, "round {round}: the connection stayed open");
        let (health, _) = exchange(server.addr, HEALTH.as_bytes());
        assert_eq!(health[0].status, 200, "round {round}: the worker is gone");
    }
    // Other connections, open all along, are served as before.
    let mut keep = Reader::new(connect(server.addr));
    keep.stream.write_all(HEALTH.as_bytes()).unwrap();
    assert_eq!(keep.next(false).unwrap().status, 200);
    let (_, _) = exchange(server.addr, PANIC.as_bytes());
    keep.stream.write_all(HEALTH.as_bytes()).unwrap();
    assert_eq!(keep.next(false).unwrap().status, 200);
}

#[test]
fn the_panic_route_exists_only_when_injection_is_asked_for() {
    let db = TestDb::new("nopanic");
    let server = Server::start(&db.url, &["1"]);
    let (responses, _) = exchange(server.addr, PANIC.as_bytes());
    assert_eq!(responses[0].status, 404);
}

#[test]
fn logins_of_clients_that_left_while_waiting_are_never_hashed() {
    let db = TestDb::new("abandoned");
    // Costly hashing and one permit: logins queue in the gate behind the first.
    let server = Server::start(
        &db.url,
        &[
            "2",
            "--hash-concurrency",
            "1",
            "--argon2-memory-kib",
            "32768",
            "--argon2-iterations",
            "3",
        ],
    );
    let api = Api::new(server.addr);
    api.user("leaver");
    let body = json!({"username": "leaver", "password": "correct horse"}).to_string();
    let login = format!(
        "POST /auth/login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Ten clients send a valid login and leave at once, as a load generator does
    // when it stops; each login would issue a token if it were hashed.
    for _ in 0..10 {
        let mut s = connect(server.addr);
        s.write_all(login.as_bytes()).unwrap();
        drop(s);
    }
    // A client that stays is answered, and only the logins that were being hashed
    // when their clients left (at most the one with the permit, and one that got
    // it before its client's close arrived) cost a hash and a token.
    let r = api.call("POST", "/auth/login", None, Some(&body));
    assert_eq!(r.status, 200, "{}", r.text());
    let tokens: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.username = 'leaver'",
            &[],
        )
        .unwrap()
        .get(0);
    // One from creating the account, one for the client that stayed.
    assert!(
        (2..=4).contains(&tokens),
        "{tokens} tokens: logins of departed clients were hashed"
    );
}

#[test]
fn an_unroutable_request_with_a_large_body_is_answered_at_once() {
    let db = TestDb::new("unroutable");
    let server = Server::start(&db.url, &["1"]);
    for head in [
        "POST /nope HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n",
        "POST /health HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n",
        "POST /nope HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        // The body never comes: the answer must not wait for it (or for the
        // read buffer to fill).
        let mut r = Reader::new(connect(server.addr));
        r.stream.write_all(head.as_bytes()).unwrap();
        let resp = r.next(false).expect("an answer without the body");
        assert!(matches!(resp.status, 404 | 405), "{head:?}: {}", resp.status);
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(r.next(false).is_none(), "{head:?}: the connection stayed open");
    }
    // A small body is read and skipped, and the connection stays usable.
    let mut r = Reader::new(connect(server.addr));
    r.stream
        .write_all(format!("POST /nope HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello{HEALTH}").as_bytes())
        .unwrap();
    assert_eq!(r.next(false).unwrap().status, 404);
    assert_eq!(r.next(false).unwrap().status, 200);
}

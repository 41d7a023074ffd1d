//! The database stopped under a running server: the circuit breaker opens after
//! the configured consecutive failures, requests that need the database then get
//! 503 with Retry-After at once, requests that do not keep working, `/ready` says
//! the breaker is open, and service comes back by itself (one probe, then closed)
//! once PostgreSQL is started again.
//!
//! This test owns a PostgreSQL cluster of its own (scripts/pg.sh on a private unix
//! socket), since stopping the shared one would break every other test.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn the_breaker_opens_on_an_outage_fails_fast_and_closes_by_itself() {
    let cluster = Cluster::new("outage");
    let url = cluster.start();
    // The checkout timeout is the outage's cost to a request before the breaker
    // opens; /health must stay far below it. Both scale with the slack factor.
    let db_timeout = bound(Duration::from_millis(500));
    let reset = Duration::from_millis(500);
    let server = Server::start(
        &url,
        &[
            "2",
            "--db-timeout",
            &format!("{}ms", db_timeout.as_millis()),
            "--breaker-failures",
            "3",
            "--breaker-reset",
            &format!("{}ms", reset.as_millis()),
        ],
    );
    let api = Api::new(server.addr);
    let key = api.user("survivor");
    let mut body: serde_json::Value = serde_json::from_str(&fixture_body()).unwrap();
    assert_eq!(api.post("/api/sample", Some(&key), &body).status, 201);
    let ready = api.get("/ready", None);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"status": "ready", "database": "closed"}));

    cluster.stop();

    // Each failure costs at most a checkout timeout; three in a row open it.
    let fails_within = db_timeout + bound(Duration::from_millis(300));
    for _ in 0..3 {
        let t = Instant::now();
        let r = api.get("/api/sample/1", Some(&key));
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(t.elapsed() < fails_within, "a 503 took {:?}", t.elapsed());
    }
    let r = api.get("/ready", None);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "unavailable");
    assert!(
        matches!(r.json()["database"].as_str(), Some("open" | "half-open")),
        "{}",
        r.text()
    );

    // Open: database routes fail at once, other routes are unharmed.
    let mut took: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(api.post("/api/sample", Some(&key), &body).status, 503);
            t.elapsed()
        })
        .collect();
    took.sort();
    let p99 = took[took.len() * 99 / 100 - 1];
    eprintln!("database route p99 while the breaker is open: {p99:?}");
    assert!(p99 < bound(Duration::from_millis(5)), "p99 {p99:?} while open");
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(api.get("/health", None).status, 200);
        assert!(t.elapsed() < db_timeout / 4, "/health slowed by the outage");
    }
    let login = api.post(
        "/auth/login",
        None,
        &json!({"username": "survivor", "password": "correct horse"}),
    );
    assert_eq!(login.status, 503);

    cluster.start();
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || api
            .get("/api/sample/1", Some(&key))
            .status
            == 200),
        "no recovery after the database came back"
    );
    let first = back.elapsed();
    eprintln!("first 2xx {first:?} after the database came back");
    // At most the rest of a reset period, then one probe (which takes an idle
    // connection r2d2 reopened in the background, or fails without waiting).
    assert!(first < bound(reset) + db_timeout, "first 2xx after {first:?}");
    body["img_md5"] = json!("00000000000000000000000000000001");
    assert_eq!(api.post("/api/sample", Some(&key), &body).status, 201);
    let ready = api.get("/ready", None);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"status": "ready", "database": "closed"}));
}

//! The database stopped under a running server: requests that need it get 503 with
//! Retry-After within about the checkout timeout, requests that do not keep working,
//! and service comes back by itself once PostgreSQL is started again.
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
fn database_down_gives_503_and_recovery_needs_no_restart() {
    let cluster = Cluster::new("outage");
    let url = cluster.start();
    // The checkout timeout is the outage's cost to the first request; /health must
    // stay far below it. Both scale with the slack factor, so their ratio holds.
    let db_timeout = bound(Duration::from_millis(500));
    let timeout_flag = format!("{}ms", db_timeout.as_millis());
    let fails_within = db_timeout + bound(Duration::from_millis(300));
    let server = Server::start(&url, &["2", "--db-timeout", &timeout_flag]);
    let api = Api::new(server.addr);
    let key = api.user("survivor");
    let mut body: serde_json::Value = serde_json::from_str(&fixture_body()).unwrap();
    assert_eq!(api.post("/api/sample", Some(&key), &body).status, 201);

    cluster.stop();

    let t = Instant::now();
    let r = api.get("/api/sample/1", Some(&key));
    let first = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(first < fails_within, "first 503 took {first:?}");

    // Once the outage is known, requests fail fast and others are unaffected.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(api.post("/api/sample", Some(&key), &body).status, 503);
        assert!(t.elapsed() < fails_within);
        let t = Instant::now();
        assert_eq!(api.get("/health", None).status, 200);
        assert!(t.elapsed() < db_timeout / 4, "/health slowed by the outage");
    }
    assert_eq!(api.get("/ready", None).status, 503);
    let login = api.post(
        "/auth/login",
        None,
        &json!({"username": "survivor", "password": "correct horse"}),
    );
    assert_eq!(login.status, 503);

    cluster.start();
    assert!(
        eventually(Duration::from_secs(15), || api
            .get("/api/sample/1", Some(&key))
            .status
            == 200),
        "no recovery after the database came back"
    );
    body["img_md5"] = json!("00000000000000000000000000000001");
    assert_eq!(api.post("/api/sample", Some(&key), &body).status, 201);
    assert_eq!(api.get("/ready", None).status, 200);
}

//! Several server processes on one database: what one of them changes about a
//! token or a user reaches every other within a second (PostgreSQL LISTEN/NOTIFY),
//! not at their next cache re-check (`--token-recheck`, a minute by default).
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn a_logout_or_a_tier_change_on_one_instance_reaches_the_others_within_a_second() {
    let db = TestDb::new("instances");
    let flags = [
        "2",
        "--rate-limits",
        "free=100/m,pro=1000/m",
        "--create-admin",
        "boss",
    ];
    let a = Server::start(&db.url, &flags);
    let key_a = admin_key(&a);
    let b = Server::start(&db.url, &flags);
    let _ = admin_key(&b);
    let (api_a, api_b) = (Api::new(a.addr), Api::new(b.addr));

    // Two keys of one user, both cached by B.
    let first = api_a.user("roamer");
    let second = api_a
        .post(
            "/auth/login",
            None,
            &json!({"username": "roamer", "password": "correct horse"}),
        )
        .json()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    for key in [&first, &second] {
        let r = api_b.get("/api/samples", Some(key));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy"), Some("\"free\";q=100;w=60"));
    }

    // A tier set through A: B sees it within a second.
    let set = api_a.call(
        "PUT",
        "/admin/api/users/roamer/tier",
        Some(&key_a),
        Some(&json!({"tier": "pro"}).to_string()),
    );
    assert_eq!(set.status, 200, "{}", set.text());
    assert!(
        eventually(Duration::from_secs(1), || {
            api_b
                .get("/api/samples", Some(&second))
                .header("ratelimit-policy")
                == Some("\"pro\";q=1000;w=60")
        }),
        "B still has the old tier"
    );

    // A logout on A: B refuses that key within a second, and keeps the other.
    assert_eq!(api_a.call("POST", "/auth/logout", Some(&first), None).status, 204);
    assert!(
        eventually(Duration::from_secs(1), || api_b
            .get("/api/samples", Some(&first))
            .status
            == 401),
        "B still accepts a key logged out on A"
    );
    assert_eq!(api_b.get("/api/samples", Some(&second)).status, 200);
}

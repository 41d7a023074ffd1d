//! The admin role and API: `--create-admin` prints a key once; the admin API
//! answers 401 without a key and 403 to users; an admin reads the figures, forces
//! the database breaker open and closed, clears caches, reads and sets a user's
//! tier (in effect at once) and revokes every token of a user.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

fn put(api: &Api, path: &str, token: &str, body: &serde_json::Value) -> Response {
    api.call("PUT", path, Some(token), Some(&body.to_string()))
}

#[test]
fn only_admins_use_the_admin_api() {
    let db = TestDb::new("admin_roles");
    let server = Server::start(&db.url, &["2", "--create-admin", "boss"]);
    let key = admin_key(&server);
    let api = Api::new(server.addr);
    let user = api.user("alice");

    let page = api.get("/admin", None);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.text().contains("/admin/api/stats"));

    for path in [
        "/admin/api/stats",
        "/admin/api/breakers",
        "/admin/api/caches",
        "/admin/api/users/alice/tier",
    ] {
        let none = api.get(path, None);
        assert_eq!(none.status, 401, "{path}");
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        let r = api.get(path, Some(&user));
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["error"], "forbidden");
        assert_eq!(api.get(path, Some(&key)).status, 200, "{path}");
    }
    let stats = api.get("/admin/api/stats", Some(&key)).json();
    assert!(stats["figures"]["routes"].as_array().unwrap().len() > 10);
    assert_eq!(stats["breakers"][0]["state"], "closed");
    assert_eq!(stats["figures"]["engine"]["workers"], 2);
    let revoke = api.call("POST", "/admin/api/users/alice/revoke-tokens", Some(&user), None);
    assert_eq!(revoke.status, 403);

    // --create-admin on an existing user promotes it; its old key now works.
    let again = Server::start(&db.url, &["1", "--create-admin", "alice"]);
    let _ = admin_key(&again);
    assert_eq!(
        Api::new(again.addr).get("/admin/api/stats", Some(&user)).status,
        200
    );
}

#[test]
fn an_admin_forces_the_breaker_and_clears_caches() {
    let db = TestDb::new("admin_ops");
    let server = Server::start(&db.url, &["2", "--create-admin", "boss"]);
    let key = admin_key(&server);
    let api = Api::new(server.addr);
    let user = api.user("alice");
    assert_eq!(api.get("/api/samples", Some(&user)).status, 200);

    let open = api.post(
        "/admin/api/breakers/database",
        Some(&key),
        &json!({"state": "open", "seconds": 600}),
    );
    assert_eq!(open.status, 200, "{}", open.text());
    assert_eq!(open.json()[0]["state"], "open");
    // A read the cache does not hold needs the database (the first page is
    // cached, and a cached read does not).
    let r = api.get("/api/samples?limit=3", Some(&user));
    assert_eq!(r.status, 503);
    assert_eq!(api.get("/api/samples", Some(&user)).status, 200);
    assert_eq!(api.get("/ready", None).json()["database"], "open");
    assert_eq!(api.get("/health", None).status, 200);
    let closed = api.post(
        "/admin/api/breakers/database",
        Some(&key),
        &json!({"state": "closed"}),
    );
    assert_eq!(closed.json()[0]["state"], "closed");
    assert_eq!(api.get("/api/samples", Some(&user)).status, 200);
    let bad = api.post(
        "/admin/api/breakers/database",
        Some(&key),
        &json!({"state": "ajar"}),
    );
    assert_eq!(bad.status, 400);

    let caches = api.get("/admin/api/caches", Some(&key)).json();
    assert!(caches[0]["entries"].as_u64().unwrap() >= 2, "{caches}");
    let cleared = api.call("POST", "/admin/api/caches/tokens/clear", Some(&key), None);
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.json()[0]["entries"], 0);
    // Tokens are looked up again: still valid.
    assert_eq!(api.get("/api/samples", Some(&user)).status, 200);
    assert_eq!(
        api.call("POST", "/admin/api/caches/nope/clear", Some(&key), None)
            .status,
        404
    );
}

#[test]
fn an_admin_sets_tiers_at_once_and_revokes_a_users_tokens() {
    let db = TestDb::new("admin_users");
    let server = Server::start(
        &db.url,
        &[
            "2",
            "--create-admin",
            "boss",
            "--rate-limits",
            "free=100/m,pro=1000/m",
        ],
    );
    let key = admin_key(&server);
    let api = Api::new(server.addr);
    let user = api.user("alice");
    let policy = |r: &Response| r.header("ratelimit-policy").map(str::to_string);
    assert_eq!(
        policy(&api.get("/api/samples", Some(&user))).as_deref(),
        Some("\"free\";q=100;w=60")
    );
    let tier = api.get("/admin/api/users/alice/tier", Some(&key)).json();
    assert_eq!(tier, json!({"username": "alice", "tier": "free", "role": "user"}));
    let set = put(&api, "/admin/api/users/alice/tier", &key, &json!({"tier": "pro"}));
    assert_eq!(set.status, 200, "{}", set.text());
    // In effect at once in this process: no wait for a cache re-check.
    assert_eq!(
        policy(&api.get("/api/samples", Some(&user))).as_deref(),
        Some("\"pro\";q=1000;w=60")
    );
    assert_eq!(
        put(
            &api,
            "/admin/api/users/alice/tier",
            &key,
            &json!({"tier": "gold"})
        )
        .status,
        400
    );
    assert_eq!(
        put(
            &api,
            "/admin/api/users/nobody/tier",
            &key,
            &json!({"tier": "pro"})
        )
        .status,
        404
    );
    assert_eq!(api.get("/admin/api/users/nobody/tier", Some(&key)).status, 404);

    // A second token for alice, then both revoked at once.
    let second = api
        .post(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": "correct horse"}),
        )
        .json()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = api.call("POST", "/admin/api/users/alice/revoke-tokens", Some(&key), None);
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["revoked"], 2);
    for token in [&user, &second] {
        assert_eq!(api.get("/api/samples", Some(token)).status, 401);
    }
    assert_eq!(
        api.call("POST", "/admin/api/users/nobody/revoke-tokens", Some(&key), None)
            .status,
        404
    );
}

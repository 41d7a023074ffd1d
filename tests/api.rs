//! Every endpoint's success and documented errors, through the real server and a
//! real PostgreSQL database of the test's own.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;

fn start(tag: &str) -> (TestDb, Server, Api) {
    let db = TestDb::new(tag);
    let server = Server::start(&db.url, &["4"]);
    let api = Api::new(server.addr);
    (db, server, api)
}

#[test]
fn create_login_logout_round_trip() {
    let (db, _server, api) = start("auth");
    let created = api.post(
        "/auth/create",
        None,
        &json!({"username": "alice", "password": "correct horse", "email": "Alice@Example.org"}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let key = created.json()["api_key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(created.json()["expires_at"].is_string());

    // Stored as an argon2id PHC string and a SHA-256 of the token, never in clear.
    let mut c = db.client();
    let phc: String = c
        .query_one("SELECT password_hash FROM users WHERE username='alice'", &[])
        .unwrap()
        .get(0);
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let stored: i64 = c
        .query_one(
            "SELECT count(*) FROM api_tokens WHERE encode(token_hash,'hex') = $1",
            &[&key],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "the token itself must not be stored");

    let login = api.post(
        "/auth/login",
        None,
        &json!({"username": "alice", "password": "correct horse"}),
    );
    assert_eq!(login.status, 200);
    let key2 = login.json()["api_key"].as_str().unwrap().to_string();
    assert_ne!(key, key2);
    assert_eq!(api.get("/api/samples", Some(&key2)).status, 200);

    let out = api.call("POST", "/auth/logout", Some(&key2), None);
    assert_eq!(out.status, 204);
    assert_eq!(
        api.get("/api/samples", Some(&key2)).status,
        401,
        "revoked token still works"
    );
    assert_eq!(api.call("POST", "/auth/logout", Some(&key2), None).status, 401);
    // The other token is unaffected.
    assert_eq!(api.get("/api/samples", Some(&key)).status, 200);
}

#[test]
fn account_errors() {
    let (_db, _server, api) = start("autherr");
    api.user("bob");
    let cases = [
        (
            json!({"username": "bob", "password": "long enough", "email": "other@example.org"}),
            409,
            "username",
        ),
        (
            json!({"username": "bobby", "password": "long enough", "email": "BOB@example.org"}),
            409,
            "email",
        ),
        (
            json!({"username": "b", "password": "long enough", "email": "b@example.org"}),
            400,
            "username",
        ),
        (
            json!({"username": "bo b", "password": "long enough", "email": "b@example.org"}),
            400,
            "username",
        ),
        (
            json!({"username": "carol", "password": "short", "email": "c@example.org"}),
            400,
            "password",
        ),
        (
            json!({"username": "carol", "password": "long enough", "email": "not-an-email"}),
            400,
            "email",
        ),
        (
            json!({"username": "carol", "password": "long enough"}),
            400,
            "email: is required",
        ),
        (
            json!({"username": 5, "password": "long enough", "email": "c@example.org"}),
            400,
            "username: must be a string",
        ),
        (
            json!({"username": "carol", "password": "long enough", "email": "c@example.org", "admin": true}),
            400,
            "admin",
        ),
        (json!(["not", "an", "object"]), 400, "object"),
    ];
    for (body, status, detail) in cases {
        let r = api.post("/auth/create", None, &body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let d = r.json()["detail"].as_str().unwrap().to_string();
        assert!(d.contains(detail), "{body}: {d}");
    }
    let r = api.call("POST", "/auth/create", None, Some("{not json"));
    assert_eq!(r.status, 400);
    let r = api.call("POST", "/auth/create", None, Some("\"\\u0000\""));
    assert_eq!(r.status, 400);

    // Unknown user and wrong password: same status, same body.
    let wrong = api.post(
        "/auth/login",
        None,
        &json!({"username": "bob", "password": "wrong password"}),
    );
    let unknown = api.post(
        "/auth/login",
        None,
        &json!({"username": "nobody", "password": "wrong password"}),
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));

    // Bad tokens of every shape.
    for token in ["", "abc", &"g".repeat(64), &"0".repeat(64)] {
        assert_eq!(api.get("/api/samples", Some(token)).status, 401, "{token:?}");
    }
    let r = api.call("GET", "/api/samples", None, None);
    assert_eq!(r.status, 401);
}

#[test]
fn wrong_content_type_is_415() {
    let (_db, server, _api) = start("ctype");
    let body = r#"{"username":"x","password":"y"}"#;
    let raw = format!(
        "POST /auth/login HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (r, _) = exchange(server.addr, raw.as_bytes());
    assert_eq!(r[0].status, 415);
}

#[test]
fn fifty_concurrent_creates_for_distinct_users_all_succeed() {
    let (db, server, _api) = start("concurrent");
    let addr = server.addr;
    let threads: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                Api::new(addr)
                    .post(
                        "/auth/create",
                        None,
                        &json!({"username": format!("user{i}"), "password": "password123", "email": format!("u{i}@example.org")}),
                    )
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM users", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 50);
}

#[test]
fn fifty_concurrent_creates_for_the_same_user_exactly_one_succeeds() {
    let (db, server, _api) = start("sameuser");
    let addr = server.addr;
    let barrier = Arc::new(std::sync::Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                Api::new(addr)
                    .post(
                        "/auth/create",
                        None,
                        &json!({"username": "same", "password": "password123", "email": format!("s{i}@example.org")}),
                    )
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 409).count(), 49, "{statuses:?}");
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM users", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let tokens: i64 = db
        .client()
        .query_one("SELECT count(*) FROM api_tokens", &[])
        .unwrap()
        .get(0);
    assert_eq!(tokens, 1, "a failed create must not leave a token");
}

#[test]
fn the_c_example_body_is_accepted_and_read_back() {
    let (_db, _server, api) = start("samples");
    let key = api.user("sampler");
    let r = api.call("POST", "/api/sample", Some(&key), Some(&fixture_body()));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_i64().unwrap();

    let got = api.get(&format!("/api/sample/{id}"), Some(&key));
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["img_md5"], "a84c28046b82d832d9d7dac7e740bc65");
    assert_eq!(v["timestamp"], "2000-12-09T00:00:00Z");
    assert_eq!(v["latitude"], 4743.546754);
    assert_eq!(v["longitude"], 729.55436546);
    assert_eq!(v["altitude"], 4935.3);
    assert_eq!(v["metadata"], 35983465);
    assert_eq!(
        v["flora"],
        json!(["ORCHID", "DAFFODIL", "GRASS", "MINECRAFTGRASS"])
    );
    assert_eq!(v["calls"][4], "MUSCLE MAN");
    assert_eq!(v["owner"], "sampler");
    assert_eq!(v["image_present"], false);

    // The same md5 again is a conflict.
    let dup = api.call("POST", "/api/sample", Some(&key), Some(&fixture_body()));
    assert_eq!(dup.status, 409);
    assert_eq!(api.get("/api/sample/999999", Some(&key)).status, 404);
    assert_eq!(api.get("/api/sample/0", Some(&key)).status, 400);
    assert_eq!(api.get(&format!("/api/sample/{id}"), None).status, 401);
    assert_eq!(
        api.call("POST", "/api/sample", None, Some(&fixture_body()))
            .status,
        401
    );
}

#[test]
fn sample_validation_names_each_bad_field() {
    let (_db, _server, api) = start("samplebad");
    let key = api.user("validator");
    let good: serde_json::Value = serde_json::from_str(&fixture_body()).unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut v = good.clone();
        v[field] = value;
        v
    };
    let without = |field: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(field);
        v
    };
    let cases = [
        (with("img_md5", json!("xyz")), "img_md5"),
        (
            with("img_md5", json!("g84c28046b82d832d9d7dac7e740bc65")),
            "img_md5",
        ),
        (with("timestamp", json!("yesterday")), "timestamp"),
        (with("timestamp", json!(20001209)), "timestamp"),
        (with("latitude", json!("north")), "latitude"),
        (with("metadata", json!(4294967296u64)), "metadata"),
        (with("metadata", json!(1.5)), "metadata"),
        (with("flora", json!("ORCHID")), "flora"),
        (with("fauna", json!([1, 2])), "fauna[0]"),
        (with("calls", json!(vec!["x"; 65])), "calls"),
        (with("calls", json!(["a\u{0}b"])), "calls[0]"),
        (without("altitude"), "altitude: is required"),
        (with("extra", json!(1)), "extra: unknown field"),
    ];
    for (body, field) in cases {
        let r = api.post("/api/sample", Some(&key), &body);
        assert_eq!(r.status, 400, "{field}: {}", r.text());
        let detail = r.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(field), "{field}: {detail}");
    }
    // Several problems are all reported at once.
    let mut both = with("latitude", json!(null));
    both["metadata"] = json!("x");
    let d = api.post("/api/sample", Some(&key), &both).json()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.contains("latitude") && d.contains("metadata"), "{d}");
    // RFC 3339 timestamps and negative coordinates are fine.
    let ok = with("timestamp", json!("2024-05-01T12:30:00+02:00"));
    let mut ok = ok;
    ok["latitude"] = json!(-33.5);
    assert_eq!(api.post("/api/sample", Some(&key), &ok).status, 201);
}

#[test]
fn samples_page_by_keyset() {
    let (_db, _server, api) = start("paging");
    let key = api.user("pager");
    let mut body: serde_json::Value = serde_json::from_str(&fixture_body()).unwrap();
    for i in 0..7 {
        body["img_md5"] = json!(format!("{i:032x}"));
        assert_eq!(api.post("/api/sample", Some(&key), &body).status, 201);
    }
    let mut seen: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .get(&format!("/api/samples?after={after}&limit=3"), Some(&key))
            .json();
        let ids: Vec<i64> = page["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect();
        seen.extend(&ids);
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(api.get("/api/samples?limit=0", Some(&key)).status, 400);
    assert_eq!(api.get("/api/samples?limit=abc", Some(&key)).status, 400);
    assert_eq!(api.get("/api/samples?order=desc", Some(&key)).status, 400);
}

#[test]
fn health_ready_404_and_405() {
    let (_db, _server, api) = start("health");
    assert_eq!(api.get("/health", None).json()["status"], "ok");
    assert_eq!(api.get("/ready", None).json()["status"], "ready");
    let nf = api.get("/nowhere", None);
    assert_eq!(nf.status, 404);
    assert_eq!(nf.json()["error"], "not_found");
    let r = api.call("DELETE", "/api/sample/1", None, None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = api.get("/auth/create", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

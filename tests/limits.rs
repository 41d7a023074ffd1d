//! Rate limits against the real binary: the IETF RateLimit fields on 2xx and 429,
//! Retry-After, the window (a client at exactly its quota is never refused, one
//! over it is, and the quota comes back), tiers from the database (and a tier
//! change), X-Forwarded-For only from trusted proxies, the failed-login limit
//! without user enumeration, bad tokens charged to the client IP and answered from
//! the negative cache, and the tier migration of an old schema.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

/// The `RateLimit-Policy` and `RateLimit` fields of a response.
fn quota(r: &Response) -> (Option<&str>, Option<&str>) {
    (r.header("ratelimit-policy"), r.header("ratelimit"))
}

fn random_token() -> String {
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .unwrap();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_client_at_its_quota_is_served_and_one_over_gets_429_with_the_fields() {
    let db = TestDb::new("limits_window");
    let server = Server::start(&db.url, &["2", "--rate-limits", "anonymous=5/m"]);
    let api = Api::new(server.addr);

    // The whole quota at once, pipelined on one connection: every one served.
    let mut s = connect(server.addr);
    s.write_all(&b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n".repeat(5))
        .unwrap();
    let mut reader = Reader::new(s);
    for left in (0..5).rev() {
        let r = reader.next(false).expect("a response");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            quota(&r),
            (
                Some("\"anonymous\";q=5;w=60"),
                Some(format!("\"anonymous\";r={left};t={}", 12 * (5 - left)).as_str())
            )
        );
    }
    // One over: 429, Retry-After (one unit comes back every 12 s), the JSON error
    // body and the fields again.
    let r = api.get("/stats", None);
    assert_eq!(r.status, 429, "{}", r.text());
    // 12 s, less whatever passed since the first request (a loaded machine).
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&after), "Retry-After {after}");
    assert_eq!(r.json()["error"], "rate_limited");
    assert_eq!(r.header("ratelimit-policy"), Some("\"anonymous\";q=5;w=60"));
    let state = r.header("ratelimit").unwrap();
    let reset: u64 = state
        .strip_prefix("\"anonymous\";r=0;t=")
        .unwrap_or_else(|| panic!("{state}"))
        .parse()
        .unwrap();
    assert!((48..=60).contains(&reset), "{state}");
    // A refused request is not processed: a refused increment is not committed.
    let r = api.call("POST", "/api/v1/counter", None, None);
    assert_eq!(r.status, 429);
    let value: i64 = db
        .client()
        .query_one("SELECT value FROM counter", &[])
        .unwrap()
        .get(0);
    assert_eq!(value, 0);
    // The probes are never limited and carry no fields.
    for path in ["/health", "/ready"] {
        let r = api.get(path, None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(quota(&r), (None, None), "{path}");
    }
    // With limits off the fields are gone too.
    let off = Server::start(&db.url, &["1"]);
    assert_eq!(quota(&Api::new(off.addr).get("/stats", None)), (None, None));
}

#[test]
fn the_quota_comes_back_smoothly() {
    let db = TestDb::new("limits_refill");
    let server = Server::start(&db.url, &["1", "--rate-limits", "anonymous=2/s"]);
    let api = Api::new(server.addr);
    for _ in 0..2 {
        assert_eq!(api.get("/stats", None).status, 200);
    }
    let r = api.get("/stats", None);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Half a second earns one request back: served again well within Retry-After.
    assert!(eventually(Duration::from_secs(2), || api
        .get("/stats", None)
        .status
        == 200));
}

#[test]
fn users_are_limited_at_their_tier_and_a_tier_change_takes_effect() {
    let db = TestDb::new("limits_tiers");
    let server = Server::start(
        &db.url,
        &[
            "2",
            "--rate-limits",
            "free=3/m,pro=6/m",
            "--token-recheck",
            "200ms",
        ],
    );
    let api = Api::new(server.addr);
    let key = api.user("tiered");
    for _ in 0..3 {
        let r = api.get("/api/samples", Some(&key));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("ratelimit-policy"), Some("\"free\";q=3;w=60"));
    }
    let r = api.get("/api/samples", Some(&key));
    assert_eq!(r.status, 429);
    // Another user has a bucket of their own; anonymous requests too.
    let other = api.user("untouched");
    assert_eq!(api.get("/api/samples", Some(&other)).status, 200);
    assert_eq!(api.get("/stats", None).status, 200);

    db.client()
        .execute("UPDATE users SET tier = 'pro' WHERE username = 'tiered'", &[])
        .unwrap();
    // Seen at the next re-check of the cached token: the pro quota, in a bucket
    // of its own.
    assert!(eventually(Duration::from_secs(2), || {
        api.get("/api/samples", Some(&key)).header("ratelimit-policy") == Some("\"pro\";q=6;w=60")
    }));
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let db = TestDb::new("limits_xff");
    let direct = Server::start(&db.url, &["1", "--rate-limits", "anonymous=2/m"]);
    let proxied = Server::start(
        &db.url,
        &[
            "1",
            "--rate-limits",
            "anonymous=2/m",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");

    // Not a trusted proxy: the header is ignored, one bucket for the peer.
    assert_eq!(get_with(direct.addr, "/stats", &xff("1.1.1.1")).status, 200);
    assert_eq!(get_with(direct.addr, "/stats", &xff("2.2.2.2")).status, 200);
    assert_eq!(get_with(direct.addr, "/stats", &xff("3.3.3.3")).status, 429);

    // Behind a trusted proxy: one bucket per forwarded client.
    for _ in 0..2 {
        assert_eq!(get_with(proxied.addr, "/stats", &xff("1.1.1.1")).status, 200);
    }
    assert_eq!(get_with(proxied.addr, "/stats", &xff("1.1.1.1")).status, 429);
    assert_eq!(get_with(proxied.addr, "/stats", &xff("2.2.2.2")).status, 200);
    // Addresses a client prepends itself do not buy a fresh bucket: the proxy's
    // right-most entry is what counts.
    assert_eq!(
        get_with(proxied.addr, "/stats", &xff("9.9.9.9, 1.1.1.1")).status,
        429
    );
    assert_eq!(
        get_with(
            proxied.addr,
            "/stats",
            "X-Forwarded-For: 9.9.9.9\r\nX-Forwarded-For: 1.1.1.1\r\n"
        )
        .status,
        429
    );
}

#[test]
fn failed_logins_are_limited_per_username_without_telling_who_exists() {
    let db = TestDb::new("limits_login");
    let server = Server::start(&db.url, &["2", "--login-limits", "username=3/m,ip=8/m"]);
    let api = Api::new(server.addr);
    api.user("alice");
    let login = |user: &str, password: &str| {
        api.post(
            "/auth/login",
            None,
            &json!({"username": user, "password": password}),
        )
    };
    // Three failures each for a real and an unknown user, then 429 for both:
    // the same status, body and header names, even with the right password.
    let mut answers = Vec::new();
    for user in ["alice", "ghost"] {
        for _ in 0..3 {
            assert_eq!(login(user, "wrong password").status, 401);
        }
        let r = login(user, "correct horse");
        assert_eq!(r.status, 429, "{user}: {}", r.text());
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&after), "Retry-After {after}");
        let mut names: Vec<String> = r.headers.iter().map(|(n, _)| n.to_lowercase()).collect();
        names.sort();
        answers.push((r.status, r.text(), names));
    }
    assert_eq!(answers[0], answers[1]);
    // Another username is not locked by alice's failures...
    api.user("bob");
    assert_eq!(login("bob", "correct horse").status, 200);
    // ...until the client IP has failed eight times, whatever the names.
    assert_eq!(login("carol", "wrong password").status, 401);
    assert_eq!(login("dave", "wrong password").status, 401);
    assert_eq!(login("erin", "wrong password").status, 429);
    assert_eq!(login("bob", "correct horse").status, 429);
}

#[test]
fn bad_tokens_are_charged_to_the_client_ip_and_answered_without_a_lookup() {
    let cluster = Cluster::new("badtokens");
    let url = cluster.start();
    let server = Server::start(
        &url,
        &[
            "2",
            "--rate-limits",
            "anonymous=6/h",
            "--breaker-failures",
            "1000",
            // One connection: once /ready succeeds after the restart, no broken
            // one is left to fail a lookup.
            "--db-pool-size",
            "1",
        ],
    );
    let api = Api::new(server.addr);
    let bad = random_token();
    let first = api.get("/api/samples", Some(&bad));
    assert_eq!(first.status, 401, "{}", first.text());
    assert_eq!(first.header("ratelimit"), Some("\"anonymous\";r=5;t=600"));
    let reset = |r: &Response, prefix: &str| -> u64 {
        let state = r.header("ratelimit").unwrap();
        state
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{state}"))
            .parse()
            .unwrap()
    };
    let again = api.get("/api/samples", Some(&bad));
    assert_eq!(again.status, 401);
    // 1200 s less whatever passed since the first (a loaded machine).
    assert!((1190..=1200).contains(&reset(&again, "\"anonymous\";r=4;t=")));

    // With the database gone, the known-bad token is still a plain 401: no
    // lookup was needed for it.
    cluster.stop();
    let r = api.get("/api/samples", Some(&bad));
    assert_eq!(r.status, 401, "{}", r.text());
    cluster.start();
    assert!(eventually(Duration::from_secs(10), || api
        .get("/ready", None)
        .status
        == 200));

    // Fresh random tokens each cost a lookup, paid from the same bucket; once
    // it is empty they are refused before any lookup.
    let statuses: Vec<u16> = (0..4)
        .map(|_| api.get("/api/samples", Some(&random_token())).status)
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429]);
}

#[test]
fn a_revoked_token_is_refused_at_once_and_for_good() {
    let db = TestDb::new("limits_revoke");
    let server = Server::start(&db.url, &["2", "--rate-limits", "anonymous=100/m"]);
    let api = Api::new(server.addr);
    let key = api.user("leaver");
    let r = api.get("/api/samples", Some(&key));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), Some("\"free\";q=1000;w=60"));
    assert_eq!(api.call("POST", "/auth/logout", Some(&key), None).status, 204);
    for _ in 0..3 {
        let r = api.get("/api/samples", Some(&key));
        assert_eq!(r.status, 401);
        // Charged to the client IP now, not to the user.
        assert_eq!(r.header("ratelimit-policy"), Some("\"anonymous\";q=100;w=60"));
    }
}

#[test]
fn old_tiers_are_migrated() {
    let db = TestDb::new("limits_migrate");
    db.client()
        .batch_execute(
            "CREATE TABLE users (
                id bigserial PRIMARY KEY,
                username text NOT NULL UNIQUE,
                email text NOT NULL,
                password_hash text NOT NULL,
                tier text NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'premium', 'internal')),
                created_at timestamptz NOT NULL DEFAULT now()
            );
            INSERT INTO users (username, email, password_hash, tier) VALUES
                ('s', 's@x.org', 'x', 'standard'), ('p', 'p@x.org', 'x', 'premium'),
                ('i', 'i@x.org', 'x', 'internal');",
        )
        .unwrap();
    let _server = Server::start(&db.url, &["1"]);
    // Twice: the migration runs once, the second start finds nothing to do.
    let _again = Server::start(&db.url, &["1"]);
    let mut c = db.client();
    let tiers: Vec<(String, String)> = c
        .query("SELECT username, tier FROM users ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        tiers,
        [("s", "free"), ("p", "pro"), ("i", "enterprise")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(c
        .execute("UPDATE users SET tier = 'standard' WHERE username = 's'", &[])
        .is_err());
    c.execute(
        "INSERT INTO users (username, email, password_hash) VALUES ('n', 'n@x.org', 'x')",
        &[],
    )
    .unwrap();
    let tier: String = c
        .query_one("SELECT tier FROM users WHERE username = 'n'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tier, "free");
}

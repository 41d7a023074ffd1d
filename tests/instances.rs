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

#[test]
fn shared_statistics_are_exact_across_instances_once_the_load_stops() {
    let db = TestDb::new("instances_stats");
    let a = Server::start(&db.url, &["2", "--shared-stats"]);
    let b = Server::start(&db.url, &["2", "--shared-stats"]);
    let (api_a, api_b) = (Api::new(a.addr), Api::new(b.addr));
    // 300 events on each: users 0..149 on A, 100..249 on B (100 shared), values
    // with decimals that binary floating point would not add exactly.
    let mut expected_sum = 0i128; // nano-units
    std::thread::scope(|s| {
        for (api, first) in [(&api_a, 0), (&api_b, 100)] {
            s.spawn(move || {
                for i in 0..300 {
                    let user = first + i % 150;
                    let text = format!(r#"{{"userId":"user_{user}","value":0.{}}}"#, i % 7);
                    assert_eq!(api.call("POST", "/event", None, Some(&text)).status, 200);
                }
            });
        }
    });
    for _ in 0..2 {
        for i in 0..300 {
            expected_sum += i128::from(i % 7) * 100_000_000;
        }
    }
    let want = |r: &Response| {
        let v = r.json();
        v["totalRequests"] == 600
            && v["uniqueUsers"] == 250
            && v["sum"] == serde_json::from_str::<serde_json::Value>(&format_sum(expected_sum)).unwrap()
    };
    for api in [&api_a, &api_b] {
        assert!(
            eventually(Duration::from_secs(1), || want(&api.get("/stats", None))),
            "{}",
            api.get("/stats", None).text()
        );
    }
}

/// Nano-units as the decimal /stats prints.
fn format_sum(nanos: i128) -> String {
    let (int, frac) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    if frac == 0 {
        int.to_string()
    } else {
        format!("{int}.{}", format!("{frac:09}").trim_end_matches('0'))
    }
}

#[test]
fn a_shared_limit_holds_across_instances() {
    let db = TestDb::new("instances_limits");
    let limit = 40;
    let rate = format!("anonymous={limit}/m");
    let shared: Vec<Server> = (0..2)
        .map(|_| Server::start(&db.url, &["2", "--rate-limits", &rate, "--shared-limits"]))
        .collect();
    // Three times the quota, alternating between the instances, as a balancer would.
    let served = (0..3 * limit)
        .filter(|i| Api::new(shared[i % 2].addr).get("/stats", None).status == 200)
        .count();
    // Every unit spent was charged to the shared bucket first: never over the
    // quota; unspent leases (a twentieth of it per instance) may refuse early.
    assert!(served <= limit, "{served} served for a quota of {limit}");
    assert!(
        served >= limit - 2 * limit.div_ceil(20),
        "{served} served for a quota of {limit}"
    );

    // Without sharing, each instance allows the whole quota.
    let db = TestDb::new("instances_limits_own");
    let own: Vec<Server> = (0..2)
        .map(|_| Server::start(&db.url, &["2", "--rate-limits", &rate]))
        .collect();
    let served = (0..3 * limit)
        .filter(|i| Api::new(own[i % 2].addr).get("/stats", None).status == 200)
        .count();
    assert_eq!(served, 2 * limit);
}

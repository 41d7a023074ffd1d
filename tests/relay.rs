//! The relay against the real binary and the project's test upstream
//! (`tools/test-upstream.rs`): cache states and headers, single flight, stale
//! serving, conditional refresh, path escapes, upstream failures, a slow
//! upstream with one worker, and the level-2 cache shared by two processes.
#![allow(clippy::unwrap_used)]

mod common;

use common::get_with as get;
use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// An upstream where nothing listens: port 1 is below the ephemeral range, so no
/// server of a test running in parallel can be there (a port freed by another
/// listener could be taken by one meanwhile).
const DEAD_UPSTREAM: &str = "http://127.0.0.1:1";

fn relay(db: &TestDb, upstream: &Upstream, extra: &[&str]) -> Server {
    let url = upstream.url();
    let mut args = vec!["2", "--relay-upstream", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&db.url, &args)
}

/// Waits until level 2 holds `rows` rows (it is written behind the responses).
fn shared_rows_become(db: &TestDb, rows: i64) -> bool {
    let mut client = db.client();
    eventually(Duration::from_secs(5), || {
        client
            .query_one("SELECT count(*) FROM http_cache", &[])
            .unwrap()
            .get::<_, i64>(0)
            == rows
    })
}

fn x_cache(r: &Response) -> &str {
    r.header("x-cache").unwrap_or("none")
}

#[test]
fn a_miss_then_hits_with_age_via_and_request_id_and_no_hop_by_hop_fields() {
    let db = TestDb::new("relay_hit");
    let upstream = Upstream::start();
    let server = relay(&db, &upstream, &[]);
    let path = "/relay/items/1?max_age=60&age=5&hop=1";

    let first = get(
        server.addr,
        path,
        "X-Request-Id: relay-test-1\r\nAuthorization: Bearer secret\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n",
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(first.header("x-request-id"), Some("relay-test-1"));
    let age: u64 = first.header("age").unwrap().parse().unwrap();
    assert!(age >= 5, "the upstream's Age counts: {age}");
    assert_eq!(first.header("cache-control"), Some("max-age=60"));
    assert_eq!(first.header("x-end-to-end"), Some("kept"));
    for hop in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "trailer",
    ] {
        assert!(
            first.header(hop).is_none(),
            "{hop} was relayed: {:?}",
            first.headers
        );
    }
    // What the upstream saw: its base path kept, Via and the request ID, none of
    // the client's credentials or hop-by-hop fields.
    let seen = first.json();
    assert_eq!(seen["path"], "/base/items/1");
    let headers = &seen["request_headers"];
    assert_eq!(headers["via"], "1.1 crudrs");
    assert_eq!(headers["x-request-id"], "relay-test-1");
    for private in ["authorization", "x-private", "connection"] {
        assert!(
            headers.get(private).is_none(),
            "{private} reached the upstream: {headers}"
        );
    }

    for _ in 0..5 {
        let hit = get(server.addr, path, "");
        assert_eq!(hit.status, 200);
        assert_eq!(x_cache(&hit), "HIT");
        assert_eq!(hit.body, first.body, "a hit is the stored body");
        assert!(hit.header("age").unwrap().parse::<u64>().unwrap() >= age);
    }
    assert_eq!(upstream.count("/base/items/1?max_age=60&age=5&hop=1"), 1);

    // HEAD is answered from the same entry, without a body.
    let mut s = connect(server.addr);
    write!(s, "HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let head = Reader::new(s).next(true).unwrap();
    assert_eq!((head.status, x_cache(&head)), (200, "HIT"));
    assert_eq!(
        head.header("content-length").unwrap(),
        first.body.len().to_string()
    );

    // The client's own If-None-Match is answered from the cache.
    let tagged = "/relay/items/2?max_age=60&etag=1";
    let r = get(server.addr, tagged, "");
    let etag = r.header("etag").unwrap().to_string();
    let not_modified = get(server.addr, tagged, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(not_modified.status, 304);
    assert_eq!(x_cache(&not_modified), "HIT");
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(not_modified.header("cache-control"), Some("max-age=60"));
    assert!(
        not_modified.header("content-type").is_none(),
        "a 304 carries no representation metadata"
    );
    assert!(not_modified.body.is_empty());
    assert_eq!(upstream.count("/base/items/2?max_age=60&etag=1"), 1);
}

#[test]
fn no_store_private_and_set_cookie_answers_are_never_shared() {
    let db = TestDb::new("relay_nostore");
    let upstream = Upstream::start();
    let server = relay(&db, &upstream, &[]);
    for query in [
        "no_store=1&max_age=60",
        "private=1&max_age=60",
        "cookie=1&max_age=60",
    ] {
        for n in 1..=2 {
            let r = get(server.addr, &format!("/relay/p?{query}"), "");
            assert_eq!(r.status, 200);
            assert_eq!(x_cache(&r), "MISS", "{query}");
            assert_eq!(r.json()["n"], n, "{query}: each request went upstream");
        }
    }
    // Silence means the default TTL: kept.
    get(server.addr, "/relay/p?plain=1", "");
    assert_eq!(x_cache(&get(server.addr, "/relay/p?plain=1", "")), "HIT");
}

#[test]
fn an_answer_that_forbids_sharing_takes_the_older_copy_out_of_both_levels() {
    let db = TestDb::new("relay_withdrawn");
    let mut upstream = Upstream::start();
    let first = relay(&db, &upstream, &[]);
    // Kept for a second, then servable for ten minutes when the upstream fails.
    let path = "/relay/flip?max_age=1&sie=600&no_store_from=2";
    assert_eq!(x_cache(&get(first.addr, path, "")), "MISS");
    assert!(shared_rows_become(&db, 1));
    // The resource changes, and its new answer is no-store: once the stored copy
    // is stale, the next request fetches it, and neither level keeps the old one.
    upstream.bump("/base/flip");
    assert!(eventually(Duration::from_secs(5), || get(first.addr, path, "")
        .header("cache-control")
        == Some("no-store")));
    assert!(shared_rows_become(&db, 0), "level 2 kept the older copy");
    // With the upstream gone, no instance serves the withdrawn copy stale.
    upstream.stop();
    let second = relay(&db, &upstream, &[]);
    for addr in [first.addr, second.addr] {
        let r = get(addr, path, "");
        assert_eq!(r.status, 502, "{:?} {}", r.headers, r.text());
    }
}

#[test]
fn concurrent_misses_make_one_upstream_request_per_key() {
    let db = TestDb::new("relay_flight");
    let upstream = Upstream::start();
    let server = relay(&db, &upstream, &[]);
    let addr = server.addr;
    // 10 keys, 20 clients each, all at once; the upstream takes 300 ms.
    let clients: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                let r = get(addr, &format!("/relay/k/{}?max_age=60&delay_ms=300", i % 10), "");
                (r.status, r.header("x-cache").map(String::from))
            })
        })
        .collect();
    for c in clients {
        let (status, cache) = c.join().unwrap();
        assert_eq!(status, 200);
        assert!(matches!(cache.as_deref(), Some("MISS" | "HIT")), "{cache:?}");
    }
    assert_eq!(upstream.total(), 10, "one upstream request per key");
}

#[test]
fn stale_entries_are_served_when_the_upstream_is_gone_within_stale_if_error() {
    let db = TestDb::new("relay_sie");
    let mut upstream = Upstream::start();
    let server = relay(&db, &upstream, &[]);
    let kept = "/relay/s?max_age=1&sie=600";
    let lost = "/relay/t?max_age=1";
    let first = get(server.addr, kept, "");
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(x_cache(&get(server.addr, lost, "")), "MISS");
    upstream.stop();
    // Once expired, the entry with stale-if-error is served stale; the other
    // one is a 502 with the JSON error body.
    assert!(
        eventually(Duration::from_secs(5), || x_cache(&get(server.addr, kept, ""))
            == "STALE"),
        "never served stale"
    );
    let stale = get(server.addr, kept, "");
    assert_eq!((stale.status, stale.body.clone()), (200, first.body.clone()));
    // The other one may have been stored a little later (a loaded machine), so
    // it may still be fresh for a moment: a HIT until it expires, then an error.
    let mut gone = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            let r = get(server.addr, lost, "");
            assert!(
                matches!((r.status, x_cache(&r)), (200, "HIT") | (502 | 503, _)),
                "{} {}",
                r.status,
                r.text()
            );
            let failed = r.status != 200;
            gone = failed.then_some(r);
            failed
        }),
        "the entry without stale-if-error was still served after it expired"
    );
    let gone = gone.unwrap();
    assert!(gone.json()["error"].is_string());
    assert_eq!(gone.header("cache-control"), Some("no-store"));
}

#[test]
fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let db = TestDb::new("relay_swr");
    let upstream = Upstream::start();
    let server = relay(&db, &upstream, &[]);
    // The upstream takes 2 s, so the refresh stays in flight while the stale
    // answers go out.
    let path = "/relay/w?max_age=1&swr=600&delay_ms=2000";
    let target = "/base/w?max_age=1&swr=600&delay_ms=2000";
    assert_eq!(get(server.addr, path, "").json()["n"], 1);
    // Stale now: answered at once with the old body, refreshed behind it.
    assert!(eventually(Duration::from_secs(5), || {
        let r = get(server.addr, path, "");
        x_cache(&r) == "STALE" && r.json()["n"] == 1
    }));
    let started = Instant::now();
    for _ in 0..20 {
        let r = get(server.addr, path, "");
        assert_eq!((x_cache(&r), r.json()["n"].as_u64()), ("STALE", Some(1)));
    }
    // The 20 stale answers came while the one refresh was in flight (it takes
    // the upstream 2 s): it reaches the upstream, and nothing else does.
    if started.elapsed() < Duration::from_millis(1500) {
        assert!(eventually(Duration::from_secs(2), || upstream.count(target) >= 2));
        assert_eq!(
            upstream.count(target),
            2,
            "one refresh for any number of stale answers"
        );
    }
    assert!(eventually(Duration::from_secs(5), || {
        let r = get(server.addr, path, "");
        x_cache(&r) == "HIT" && r.json()["n"] == 2
    }));
}

#[test]
fn expired_entries_are_revalidated_with_conditional_requests() {
    let db = TestDb::new("relay_revalidate");
    let upstream = Upstream::start();
    let server = relay(&db, &upstream, &[]);
    for (query, target) in [
        ("etag=1&max_age=1", "/base/r1?etag=1&max_age=1"),
        ("last_modified=1&max_age=1", "/base/r2?last_modified=1&max_age=1"),
    ] {
        let path = format!("/relay{}", target.trim_start_matches("/base"));
        let first = get(server.addr, &path, "");
        assert_eq!(
            (x_cache(&first), first.json()["n"].as_u64()),
            ("MISS", Some(1)),
            "{query}"
        );
        // After it expires, a 304 renews it: the stored body (n = 1) comes back,
        // although the upstream counted a second request.
        assert!(eventually(Duration::from_secs(5), || {
            let r = get(server.addr, &path, "");
            x_cache(&r) == "REVALIDATED" && r.json()["n"] == 1
        }));
        assert_eq!(upstream.count(target), 2, "{query}");
    }
    // A changed resource is a 200 to the conditional request: a new entry.
    upstream.bump("/base/r1");
    assert!(eventually(Duration::from_secs(5), || {
        let r = get(server.addr, "/relay/r1?etag=1&max_age=1", "");
        x_cache(&r) == "MISS" && r.json()["version"] == 2
    }));
}

#[test]
fn paths_that_could_leave_the_upstream_base_are_refused() {
    let db = TestDb::new("relay_escape");
    let upstream = Upstream::start();
    // One failure would open the upstream's breaker: a target that is refused, or
    // that the client cannot send, must count as none.
    let server = relay(
        &db,
        &upstream,
        &["--breaker-failures", "1", "--breaker-reset", "60s"],
    );
    for path in [
        "/relay/../x",
        "/relay/a/../../x",
        "/relay/./x",
        "/relay/%2e%2e/x",
        "/relay/%2E%2e/x",
        "/relay/.%2e/x",
        "/relay/a%2f..%2fb",
        "/relay/a%5c..%5cb",
        "/relay//evil.example/x",
        "/relay/%252e%252e/x",
        "/relay/a%00b",
        "/relay/.../x",
        "/relay/..;/x",
        "/relay/..%20/x",
        "/relay/%c0%ae%c0%ae/x",
        // Bytes a URI may not hold, which the upstream client refuses to send.
        "/relay/a<b",
        "/relay/a>b",
        "/relay/a`b",
        "/relay/a?f={\"a\":1}",
        "/relay/a?x=<y>",
    ] {
        let r = get(server.addr, path, "");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    let r = Api::new(server.addr).call("POST", "/relay/x", None, Some("{}"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(upstream.total(), 0, "nothing reached the upstream");
    let r = get(server.addr, "/relay/fine?x=1", "");
    assert_eq!(
        (r.status, x_cache(&r)),
        (200, "MISS"),
        "the breaker is still closed: {}",
        r.text()
    );
}

#[test]
fn upstream_failures_are_502_504_or_relayed_as_they_are() {
    let db = TestDb::new("relay_fail");
    let upstream = Upstream::start();
    let timeout = bound(Duration::from_millis(250));
    let timeout_flag = format!("{}ms", timeout.as_millis());
    let server = relay(
        &db,
        &upstream,
        &[
            "--relay-timeout",
            &timeout_flag,
            "--breaker-failures",
            "1000",
            "--relay-max-body",
            "4096",
        ],
    );

    // A body over --relay-max-body: 502, never a truncated answer.
    let r = get(server.addr, "/relay/big?bytes=10000", "");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_gateway");

    // Its own statuses, as they are.
    let r = get(server.addr, "/relay/f?status=404", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["path"], "/base/f");
    let r = get(server.addr, "/relay/f?status=500", "");
    assert_eq!((r.status, x_cache(&r)), (500, "MISS"));
    assert_eq!(r.json()["path"], "/base/f", "the upstream's own body");

    // Slower than --relay-timeout: 504.
    let slow = format!("/relay/slow?delay_ms={}", timeout.as_millis() * 4);
    let started = Instant::now();
    let r = get(server.addr, &slow, "");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "gateway_timeout");
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());

    // Connections closed without an answer: 502.
    upstream.fail("close");
    let r = get(server.addr, "/relay/closed", "");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_gateway");
    upstream.fail("off");

    // Nothing listening: 502.
    let url = DEAD_UPSTREAM.to_string();
    let orphan = Server::start(&db.url, &["1", "--relay-upstream", &url]);
    let r = get(orphan.addr, "/relay/x", "");
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn misses_that_waited_out_the_timeout_for_a_fetch_thread_are_answered_without_the_upstream() {
    // One fetch thread, an upstream a little faster than the timeout: the first
    // miss is fetched, and a miss still queued a whole timeout later is answered
    // 504 at once instead of going upstream after all. A slower machine only
    // makes queued misses older, so more of them expire, never fewer.
    let db = TestDb::new("relay_expire");
    let upstream = Upstream::start();
    let timeout = bound(Duration::from_millis(150));
    let timeout_flag = format!("{}ms", timeout.as_millis());
    let server = relay(
        &db,
        &upstream,
        &[
            "--relay-connections",
            "1",
            "--relay-timeout",
            &timeout_flag,
            "--breaker-failures",
            "1000",
        ],
    );
    // Each fetch takes half the timeout: the second miss starts after half a
    // timeout in the queue, the fourth after a timeout and a half.
    let delay = timeout.as_millis() / 2;
    let misses = 4;
    let addr = server.addr;
    let answers: Vec<Response> = (0..misses)
        .map(|i| std::thread::spawn(move || get(addr, &format!("/relay/q{i}?delay_ms={delay}"), "")))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let expired: Vec<&Response> = answers.iter().filter(|r| r.status == 504).collect();
    for r in &answers {
        assert!(matches!(r.status, 200 | 504), "{} {}", r.status, r.text());
    }
    assert!(
        !expired.is_empty(),
        "no miss expired in the queue: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &expired {
        assert_eq!(r.json()["error"], "gateway_timeout");
    }
    let asked = upstream.total();
    assert!(asked < misses as u64, "every miss went upstream ({asked})");
    // (A miss may have both asked and timed out upstream on a very slow machine.)
    assert!(
        asked as usize + expired.len() >= misses,
        "each miss asked the upstream or expired: {asked} asked, {} expired",
        expired.len()
    );
}

#[test]
fn the_upstream_breaker_opens_and_then_fails_fast() {
    let db = TestDb::new("relay_breaker");
    let url = DEAD_UPSTREAM.to_string();
    let server = Server::start(
        &db.url,
        &[
            "1",
            "--relay-upstream",
            &url,
            "--breaker-failures",
            "3",
            "--breaker-reset",
            "60s",
            "--create-admin",
            "root",
        ],
    );
    let key = admin_key(&server);
    for _ in 0..3 {
        assert_eq!(get(server.addr, "/relay/x", "").status, 502);
    }
    let r = get(server.addr, "/relay/x", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let breakers = Api::new(server.addr)
        .get("/admin/api/breakers", Some(&key))
        .json();
    let upstream = breakers
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["dependency"] == "upstream")
        .expect("the upstream breaker is listed")
        .clone();
    assert_eq!(upstream["state"], "open", "{breakers}");
}

#[test]
fn a_slow_upstream_never_holds_the_only_worker() {
    let db = TestDb::new("relay_slow");
    let upstream = Upstream::start();
    let url = upstream.url();
    let server = Server::start(
        &db.url,
        &["1", "--relay-upstream", &url, "--relay-connections", "64"],
    );
    let addr = server.addr;
    // 50 distinct misses, each taking the upstream 2 s.
    let misses: Vec<_> = (0..50)
        .map(|i| std::thread::spawn(move || get(addr, &format!("/relay/slow/{i}?delay_ms=2000"), "").status))
        .collect();
    assert!(eventually(Duration::from_secs(5), || upstream.total() == 50));
    // With all 50 waiting on the upstream, the one worker still answers at once.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(Api::new(addr).get("/health", None).status, 200);
        worst = worst.max(started.elapsed());
    }
    eprintln!("slowest /health with 50 slow relay misses in flight: {worst:?}");
    assert!(worst < bound(Duration::from_millis(50)), "{worst:?}");
    for m in misses {
        assert_eq!(m.join().unwrap(), 200);
    }
}

#[test]
fn relayed_answers_carry_the_upstreams_date_from_both_levels() {
    let db = TestDb::new("relay_date");
    let mut upstream = Upstream::start();
    let first = relay(&db, &upstream, &[]);
    // An upstream whose clock is an hour behind: its Date is relayed as it is
    // (a downstream cache computes Expires - Date with it), never replaced by
    // the time of serving.
    let path = "/relay/dated?max_age=600&date=-3600";
    let dates = |r: &Response| -> Vec<String> {
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("date"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let miss = get(first.addr, path, "");
    assert_eq!(x_cache(&miss), "MISS");
    let theirs = dates(&miss);
    assert_eq!(theirs.len(), 1, "one Date: {:?}", miss.headers);
    let behind = httpdate::parse_http_date(&theirs[0]).expect("an HTTP-date");
    let lag = std::time::SystemTime::now()
        .duration_since(behind)
        .expect("in the past");
    assert!(
        lag >= Duration::from_secs(3590),
        "the upstream's Date: {theirs:?}"
    );
    let hit = get(first.addr, path, "");
    assert_eq!((x_cache(&hit), dates(&hit)), ("HIT", theirs.clone()));
    // A 304 from the cache carries it too; our own answers keep our Date.
    let etagged = get(first.addr, "/relay/dated?max_age=600&date=-3600&etag=1", "");
    let etag = etagged.header("etag").unwrap().to_string();
    let not_modified = get(
        first.addr,
        "/relay/dated?max_age=600&date=-3600&etag=1",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(not_modified.status, 304);
    assert_eq!(dates(&not_modified), dates(&etagged));
    let ours = get(first.addr, "/health", "");
    assert_eq!(dates(&ours).len(), 1);
    assert_ne!(dates(&ours), theirs);
    // Level 2 keeps it: a second instance answers it from there, upstream gone.
    assert!(shared_rows_become(&db, 2));
    upstream.stop();
    let second = relay(&db, &upstream, &[]);
    let shared = get(second.addr, path, "");
    assert_eq!((x_cache(&shared), dates(&shared)), ("HIT", theirs));
}

#[test]
fn level_2_is_shared_by_instances_on_one_database() {
    let db = TestDb::new("relay_l2");
    let mut upstream = Upstream::start();
    let first = relay(&db, &upstream, &[]);
    let path = "/relay/shared?max_age=600";
    let miss = get(first.addr, path, "");
    assert_eq!(x_cache(&miss), "MISS");
    assert!(shared_rows_become(&db, 1));
    upstream.stop();
    let second = relay(&db, &upstream, &[]);
    let hit = get(second.addr, path, "");
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"), "{}", hit.text());
    assert_eq!(hit.body, miss.body);
    assert_eq!(hit.header("cache-control"), Some("max-age=600"));
}

#[test]
fn concurrent_misses_on_two_instances_make_one_upstream_request() {
    let db = TestDb::new("relay_lease");
    let upstream = Upstream::start();
    let a = relay(&db, &upstream, &[]);
    let b = relay(&db, &upstream, &[]);
    // The upstream takes 500 ms: the misses on both instances overlap.
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            std::thread::spawn(move || get(addr, "/relay/one?max_age=600&delay_ms=500", "").status)
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert_eq!(upstream.total(), 1, "one upstream request for the whole cluster");
    // An answer that is not stored does not keep the other instance waiting
    // for a row that never comes: each instance asks.
    let started = Instant::now();
    let clients: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .map(|addr| std::thread::spawn(move || get(addr, "/relay/private?private=1&delay_ms=300", "").status))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert!(
        started.elapsed() < bound(Duration::from_secs(2)),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_miss_behind_another_instances_fetch_waits_one_timeout_in_all() {
    let db = TestDb::new("relay_budget");
    let upstream = Upstream::start();
    let timeout = Duration::from_secs(3);
    let a = relay(&db, &upstream, &["--relay-timeout", "3s"]);
    let b = relay(&db, &upstream, &["--relay-timeout", "3s"]);
    // A takes the key's lease and asks an upstream that never answers in time.
    let path = "/relay/stuck?max_age=600&delay_ms=30000";
    let first = std::thread::spawn(move || get(a.addr, path, "").status);
    assert!(eventually(Duration::from_secs(1), || upstream
        .count("/base/stuck?max_age=600&delay_ms=30000")
        == 1));
    // B waits for A's row until A's lease ends; what is left of its own timeout
    // then is all it may still give the upstream, not a whole timeout more.
    let started = Instant::now();
    let second = get(b.addr, path, "");
    let waited = started.elapsed();
    assert_eq!(second.status, 504, "{}", second.text());
    assert_eq!(first.join().unwrap(), 504);
    assert!(
        waited < timeout + bound(Duration::from_millis(250)),
        "a miss waited {waited:?} with --relay-timeout {timeout:?}"
    );
}

#[test]
fn admins_see_and_clear_the_relay_caches() {
    let db = TestDb::new("relay_admin");
    let upstream = Upstream::start();
    let server = relay(&db, &upstream, &["--create-admin", "root"]);
    let key = admin_key(&server);
    let api = Api::new(server.addr);
    get(server.addr, "/relay/a?max_age=600", "");
    get(server.addr, "/relay/a?max_age=600", "");
    // Level 2 is written behind the response: wait for it before clearing.
    assert!(shared_rows_become(&db, 1));
    let caches = api.get("/admin/api/caches", Some(&key)).json();
    let find = |caches: &serde_json::Value, name: &str| {
        caches
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {caches}"))
            .clone()
    };
    let l1 = find(&caches, "relay");
    assert_eq!(
        (l1["entries"].as_u64(), l1["hits"].as_u64()),
        (Some(1), Some(1)),
        "{l1}"
    );
    assert_eq!(
        (l1["misses"].as_u64(), l1["upstream_requests"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(l1["bytes"].as_u64().unwrap() > 0);
    assert!(find(&caches, "relay_shared")["entries"].is_u64());
    let metrics = api.get("/metrics", None).text();
    for line in [
        "crudrs_cache_requests_total{cache=\"relay\",result=\"hit\"} 1",
        "crudrs_cache_entries{cache=\"relay\"} 1",
        "crudrs_relay_upstream_requests_total 1",
        "crudrs_circuit_breaker_state{dependency=\"upstream\",state=\"closed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    let cleared = api.call("POST", "/admin/api/caches/relay/clear", Some(&key), None);
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    assert_eq!(find(&cleared.json(), "relay")["entries"], 0);
    let r = api.call("POST", "/admin/api/caches/relay_shared/clear", Some(&key), None);
    assert_eq!(r.status, 200);
    let after = get(server.addr, "/relay/a?max_age=600", "");
    assert_eq!(x_cache(&after), "MISS");
    assert_eq!(upstream.total(), 2);
}

#[test]
fn every_response_says_how_caches_may_treat_it() {
    let db = TestDb::new("cache_control");
    let server = Server::start(&db.url, &["1"]);
    let api = Api::new(server.addr);
    for path in [
        "/health",
        "/ready",
        "/stats",
        "/api/v1/counter",
        "/api/samples",
        "/nowhere",
    ] {
        let r = api.get(path, None);
        assert_eq!(
            r.header("cache-control"),
            Some("no-store"),
            "{path}: {}",
            r.status
        );
    }
    let r = api.get("/openapi.json", None);
    assert!(
        r.header("cache-control").unwrap().contains("max-age"),
        "{:?}",
        r.headers
    );
    // Without --relay-upstream there is no relay.
    assert_eq!(api.get("/relay/x", None).status, 404);
}

//! GET /metrics, read by the Prometheus project's own parser of the text format
//! (`prometheus-client` from PyPI, in the project's virtualenv): it parses, the
//! names and labels are the documented ones, the counters move exactly with the
//! traffic between two scrapes, and `--metrics-token` guards it.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// Parses an exposition with prometheus_client's parser: sample name and sorted
/// labels → value. Panics when the parser refuses the text.
fn parse(text: &str) -> HashMap<String, f64> {
    let venv = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/py-venv.sh"))
        .output()
        .expect("run py-venv.sh");
    assert!(
        venv.status.success(),
        "py-venv.sh failed: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap().trim().to_string();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        key = s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
        if key in out:
            sys.exit("duplicate sample " + key)
        out[key] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scrape(api: &Api, token: &str) -> HashMap<String, f64> {
    let r = api.get("/metrics", Some(token));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&r.text())
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} among {} samples", m.len()))
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let db = TestDb::new("metrics");
    let token = "a".repeat(64);
    let server = Server::start(
        &db.url,
        &["2", "--metrics-token", &token, "--rate-limits", "anonymous=4/m"],
    );
    let api = Api::new(server.addr);

    // Without the token, or with another: 401.
    assert_eq!(api.get("/metrics", None).status, 401);
    assert_eq!(api.get("/metrics", Some(&"b".repeat(64))).status, 401);

    let before = scrape(&api, &token);
    let health = "http_server_requests_total{http_request_method=GET,http_response_status_code=200,http_route=/health}";
    let health_hist =
        "http_server_request_duration_seconds_count{http_request_method=GET,http_route=/health}";
    let health_inf =
        "http_server_request_duration_seconds_bucket{http_request_method=GET,http_route=/health,le=+Inf}";
    let counter = "http_server_requests_total{http_request_method=POST,http_response_status_code=200,http_route=/api/v1/counter}";
    let limited = "crudrs_rate_limited_requests_total{tier=anonymous}";
    let unmatched =
        "http_server_requests_total{http_request_method=_OTHER,http_response_status_code=404,http_route=}";
    assert_eq!(value(&before, limited), 0.0);

    for _ in 0..5 {
        assert_eq!(api.get("/health", None).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(api.call("POST", "/api/v1/counter", None, None).status, 200);
    }
    assert_eq!(api.get("/nope", None).status, 404);
    let mut statuses: Vec<u16> = (0..3).map(|_| api.get("/stats", None).status).collect();
    statuses.sort();
    // Four units: two increments, then two /stats, then 429.
    assert_eq!(statuses, [200, 200, 429]);

    // A key used twice is found in the token cache twice (creating its account
    // cached it); a server of its own, so no other test traffic counts.
    let user_server = Server::start(&db.url, &["1", "--metrics-token", &token]);
    let user_api = Api::new(user_server.addr);
    let key = user_api.user("cached");
    for _ in 0..2 {
        assert_eq!(user_api.get("/api/samples", Some(&key)).status, 200);
    }
    let cached = scrape(&user_api, &token);
    assert_eq!(
        value(&cached, "crudrs_cache_requests_total{cache=tokens,result=hit}"),
        2.0
    );
    assert_eq!(value(&cached, "crudrs_cache_entries{cache=tokens}"), 1.0);

    let after = scrape(&api, &token);
    let moved = |key: &str| value(&after, key) - before.get(key).copied().unwrap_or(0.0);
    assert_eq!(moved(health), 5.0);
    assert_eq!(moved(health_hist), 5.0);
    assert_eq!(moved(health_inf), 5.0);
    assert_eq!(moved(counter), 2.0);
    assert_eq!(moved(unmatched), 1.0);
    assert_eq!(moved(limited), 1.0);
    assert_eq!(moved("crudrs_counter_increments_total{}"), 2.0);
    assert!(moved("crudrs_group_commit_batch_size_count{}") >= 1.0);
    assert!(moved("crudrs_queue_wait_seconds_count{}") >= 1.0);
    assert!(value(&after, "crudrs_db_pool_wait_seconds_count{}") >= 2.0);
    assert_eq!(
        value(
            &after,
            "crudrs_circuit_breaker_state{dependency=database,state=closed}"
        ),
        1.0
    );
    assert_eq!(value(&after, "crudrs_workers{}"), 2.0);
    assert!(value(&after, "crudrs_open_connections{}") >= 1.0);
    assert!(value(&after, "process_resident_memory_bytes{}") > 1e6);
    assert!(value(&after, "process_open_fds{}") > 3.0);
    assert!(value(&after, "process_max_fds{}") >= value(&after, "process_open_fds{}"));
    assert!(value(&after, "process_start_time_seconds{}") > 1.7e9);
    // The scrape itself is counted, and never limited.
    let scrapes = "http_server_requests_total{http_request_method=GET,http_response_status_code=200,http_route=/metrics}";
    assert!(value(&after, scrapes) >= 1.0);
    // Bounded labels: no raw path, no id.
    assert!(after.keys().all(|k| !k.contains("/nope")));
}

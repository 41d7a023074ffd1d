//! The durable group-commit counter and the exact 1MRC event statistics.

// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

fn value(r: &Response) -> i64 {
    r.json()["value"].as_i64().unwrap()
}

/// `n` increments over one keep-alive connection, pipelined 8 at a time; returns
/// every answer's status and value.
fn increments(addr: std::net::SocketAddr, n: usize) -> Vec<(u16, Option<i64>)> {
    let mut r = Reader::new(connect(addr));
    let mut out = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(8);
        let batch = "POST /api/v1/counter HTTP/1.1\r\nContent-Length: 0\r\n\r\n".repeat(k);
        if r.stream.write_all(batch.as_bytes()).is_err() {
            break;
        }
        for _ in 0..k {
            match r.next(false) {
                Some(resp) => {
                    let v = (resp.status == 200).then(|| value(&resp));
                    out.push((resp.status, v));
                }
                None => return out,
            }
        }
        left -= k;
    }
    out
}

#[test]
fn concurrent_increments_get_distinct_values_and_none_is_lost() {
    let db = TestDb::new("counter");
    let server = Server::start(&db.url, &["8"]);
    let api = Api::new(server.addr);
    let start = value(&api.get("/api/v1/counter", None));
    let addr = server.addr;
    let threads: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || increments(addr, 250)))
        .collect();
    let mut values = Vec::new();
    for t in threads {
        for (status, v) in t.join().unwrap() {
            assert_eq!(status, 200);
            values.push(v.unwrap());
        }
    }
    assert_eq!(values.len(), 4000);
    let distinct: HashSet<i64> = values.iter().copied().collect();
    assert_eq!(distinct.len(), 4000, "duplicate counter values");
    let fin = value(&api.get("/api/v1/counter", None));
    assert_eq!(fin, start + 4000);
    // Gap-free: exactly the values start+1 ..= start+4000 were handed out.
    assert_eq!(*values.iter().min().unwrap(), start + 1);
    assert_eq!(*values.iter().max().unwrap(), fin);
    assert_eq!(
        api.call("DELETE", "/api/v1/counter", None, None).header("allow"),
        Some("GET, HEAD, POST")
    );
}

#[test]
fn a_request_sent_while_its_connection_waits_for_a_commit_is_answered() {
    // The connection waits in the batcher; a request that arrives meanwhile is an
    // event for a connection that is away, which the registry keeps for it. The
    // worker that answers the batch must read that request (at once, or when
    // parking hands the connection back), or it waits for an event that already
    // came. The counter row is held locked, so the commit waits for the request.
    let db = TestDb::new("counterwait");
    let server = Server::start(&db.url, &["1"]);
    let mut lock = db.client();
    let mut tx = lock.transaction().unwrap();
    tx.execute("SELECT value FROM counter WHERE id = 1 FOR UPDATE", &[])
        .unwrap();

    let mut stream = connect(server.addr);
    stream
        .write_all(b"POST /api/v1/counter HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut watch = db.client();
    assert!(
        eventually(Duration::from_secs(10), || {
            watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND query LIKE 'UPDATE counter%'",
                    &[],
                )
                .unwrap()
                .get::<_, i64>(0)
                == 1
        }),
        "the increment's commit never waited for the lock"
    );
    stream.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    // Its bytes arrive while the connection is away. The answer is due however
    // late they come; this pause only makes that the likely order.
    std::thread::sleep(Duration::from_millis(50));
    tx.rollback().unwrap();

    let mut reader = Reader::new(stream);
    let first = reader.next(false).expect("the increment's answer");
    assert_eq!(first.status, 200);
    assert_eq!(value(&first), 1);
    let second = reader.next(false).expect("the request sent during the commit");
    assert_eq!(second.status, 200, "{}", second.text());
}

#[test]
fn requests_left_in_the_socket_behind_an_increment_are_answered() {
    // One write: an increment, then more pipelined requests than the read buffer
    // holds. The read that finds the increment fills the buffer, so bytes stay in
    // the socket, and no new readiness event will announce them. When the
    // increment comes back from its commit, the socket must be read again.
    let db = TestDb::new("counterfull");
    // The smallest read buffer: 16 KiB (a header block plus a JSON body plus 1 KiB,
    // at least 16 KiB).
    let server = Server::start(
        &db.url,
        &["1", "--max-header-bytes", "1024", "--max-json-bytes", "1024"],
    );
    let health = "GET /health HTTP/1.1\r\n\r\n";
    // Sent in one write, so it likely arrives as one segment with one event.
    let n = 40 * 1024 / health.len();
    let mut raw = String::from("POST /api/v1/counter HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    raw.push_str(&health.repeat(n));
    let stream = connect(server.addr);
    let mut writer = stream.try_clone().unwrap();
    // Written from a thread: the answers (larger than the requests) are read meanwhile.
    let sent = std::thread::spawn(move || writer.write_all(raw.as_bytes()).unwrap());
    let mut reader = Reader::new(stream);
    let first = reader.next(false).expect("the increment's answer");
    assert_eq!((first.status, value(&first)), (200, 1));
    for i in 0..n {
        let r = reader
            .next(false)
            .unwrap_or_else(|| panic!("closed after {i} of {n} pipelined answers"));
        assert_eq!(r.status, 200);
    }
    sent.join().unwrap();
}

#[test]
fn increments_pipelined_among_other_requests_answer_in_order_on_one_worker() {
    // One worker: the connection waiting for its batch must not hold it, and the
    // worker that leads must also serve the increments that arrive meanwhile.
    let db = TestDb::new("counterpipe");
    let server = Server::start(&db.url, &["1"]);
    let inc = "POST /api/v1/counter HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    let raw = format!(
        "GET /health HTTP/1.1\r\n\r\n{inc}{inc}GET /api/v1/counter HTTP/1.1\r\n\r\n\
         GET /health HTTP/1.1\r\n\r\nPOST /api/v1/counter HTTP/1.1\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n"
    );
    let (responses, closed) = exchange(server.addr, raw.as_bytes());
    assert!(closed, "Connection: close was not honoured");
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses, [200; 6],
        "the request after Connection: close must not be answered"
    );
    let values: Vec<i64> = [1, 2, 3, 5].iter().map(|&i| value(&responses[i])).collect();
    assert_eq!(
        values,
        [1, 2, 2, 3],
        "increments, the read between them, in request order"
    );
    assert_eq!(responses[0].text(), responses[4].text());

    // Many connections at once, still one worker.
    let addr = server.addr;
    let threads: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || increments(addr, 100)))
        .collect();
    let mut all: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .map(|(status, v)| {
            assert_eq!(status, 200);
            v.unwrap()
        })
        .collect();
    all.sort_unstable();
    assert_eq!(all, (4..=803).collect::<Vec<_>>());
    // Group commit works with a single worker too: increments that arrive during a
    // commit wait in the task queue, and the worker gathers them before the next.
    let commits: i64 = db
        .client()
        .query_one("SELECT commits FROM counter", &[])
        .unwrap()
        .get(0);
    eprintln!("803 increments in {commits} commits");
    assert!(
        commits < 700,
        "803 increments took {commits} commits: no batching on one worker"
    );
}

#[test]
fn the_counter_survives_a_server_restart() {
    let db = TestDb::new("counterrestart");
    let mut server = Server::start(&db.url, &["2"]);
    let got = increments(server.addr, 37);
    assert!(got.iter().all(|(s, _)| *s == 200));
    assert!(server.terminate().success());
    let again = Server::start(&db.url, &["2"]);
    assert_eq!(value(&Api::new(again.addr).get("/api/v1/counter", None)), 37);
}

#[test]
fn a_database_restart_mid_run_loses_no_acknowledged_increment() {
    let cluster = Cluster::new("counterdb");
    let url = cluster.start();
    let server = Server::start(&url, &["8", "--db-timeout", "1s"]);
    let addr = server.addr;
    // Keep incrementing across the outage; reconnect when the server closes.
    let answers = restart_under_load(&cluster, 8, move || {
        let got = increments(addr, 10);
        let ok = got.iter().filter(|(s, _)| *s == 200).count();
        let unavailable = got.iter().filter(|(s, _)| *s == 503).count();
        (ok, unavailable, got)
    });
    let mut ok = Vec::new();
    let mut unavailable = 0;
    for (status, v) in answers {
        match status {
            200 => ok.push(v.unwrap()),
            503 => unavailable += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(unavailable > 0, "the outage was not noticed");
    assert!(!ok.is_empty());
    let distinct: HashSet<i64> = ok.iter().copied().collect();
    assert_eq!(distinct.len(), ok.len(), "duplicate values across the restart");
    let api = Api::new(addr);
    assert!(eventually(Duration::from_secs(15), || api
        .get("/api/v1/counter", None)
        .status
        == 200));
    let fin = value(&api.get("/api/v1/counter", None));
    // Every acknowledged value is durable: none exceeds the final value, and the
    // final value accounts for at least every acknowledged increment.
    assert!(ok.iter().all(|v| *v <= fin));
    assert!(
        fin >= ok.len() as i64,
        "acknowledged increments lost: final {fin}, acknowledged {}",
        ok.len()
    );
}

#[test]
fn stats_are_exact_after_concurrent_negative_and_fractional_events() {
    let db = TestDb::new("events");
    let server = Server::start(&db.url, &["4"]);
    let addr = server.addr;
    // 8 threads × 500 events; values cycle through tenths, negatives and integers.
    let values = [
        "0.1",
        "-0.3",
        "2",
        "1e-9",
        "-7.25",
        "1000000",
        "0.000000001",
        "3.5E1",
    ];
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut r = Reader::new(connect(addr));
                for chunk in 0..50 {
                    let mut raw = String::new();
                    for j in 0..10 {
                        let i = chunk * 10 + j;
                        let body = format!(
                            r#"{{"userId":"user_{}","value":{}}}"#,
                            (t * 500 + i) % 301,
                            values[i % 8]
                        );
                        raw.push_str(&format!(
                            "POST /event HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        ));
                    }
                    r.stream.write_all(raw.as_bytes()).unwrap();
                    for _ in 0..10 {
                        assert_eq!(r.next(false).unwrap().status, 200);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let raw = Api::new(addr).get("/stats", None);
    let s = raw.json();
    assert_eq!(s["totalRequests"], 4000);
    assert_eq!(s["uniqueUsers"], 301);
    // The expected sum, in integer nano-units (the same values, written out).
    let nanos: [i128; 8] = [
        100_000_000,
        -300_000_000,
        2_000_000_000,
        1,
        -7_250_000_000,
        1_000_000_000_000_000,
        1,
        35_000_000_000,
    ];
    let expected: i128 = (0..8).flat_map(|_| 0..500).map(|i| nanos[i % 8]).sum();
    let expected_text = format!(
        "{}.{}",
        expected / 1_000_000_000,
        format!("{:09}", expected % 1_000_000_000).trim_end_matches('0')
    );
    assert_eq!(expected_text, "496014671.200001");
    // Compared as text: parsing into an f64 could hide a lost digit.
    assert!(
        raw.text().contains(&format!(r#""sum":{expected_text},"#)),
        "{}",
        raw.text()
    );
    let avg = s["avg"].as_f64().unwrap();
    assert!((avg - expected as f64 / 1e9 / 4000.0).abs() < 1e-6);

    let api = Api::new(addr);
    for bad in [
        json!({"userId": "u"}),
        json!({"value": 1}),
        json!({"userId": 5, "value": 1}),
        json!({"userId": "u", "value": "1"}),
        json!({"userId": "", "value": 1}),
        json!({"userId": "u", "value": 1, "extra": true}),
    ] {
        assert_eq!(api.post("/event", None, &bad).status, 400, "{bad}");
    }
    let precise = api.call(
        "POST",
        "/event",
        None,
        Some(r#"{"userId":"u","value":0.0000000001}"#),
    );
    assert_eq!(precise.status, 400);
    assert!(precise.text().contains("decimal places"));
    assert_eq!(
        api.get("/stats", None).json()["totalRequests"],
        4000,
        "a refused event was counted"
    );
}

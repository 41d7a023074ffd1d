//! Load shedding: when connections keep waiting in the queue longer than the
//! target, new requests get 503 + Retry-After at once, liveness and readiness are
//! still answered, and serving resumes by itself once the queue drains; the log
//! gives each episode one line at its start and one at its end, which counts
//! every refusal. Without shedding the same overload is queued, never refused.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Sixteen clients each asking for 30 ms of the only worker's time, over and over:
/// a standing queue of about half a second. Returns a handle that stops them.
fn overload(addr: std::net::SocketAddr) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<Vec<u16>>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let clients = (0..16)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let api = Api::new(addr);
                let mut statuses = Vec::new();
                while !stop.load(Relaxed) {
                    statuses.push(api.get("/debug/sleep/30", None).status);
                }
                statuses
            })
        })
        .collect();
    (stop, clients)
}

#[test]
fn a_standing_queue_is_shed_and_serving_resumes_when_it_drains() {
    let db = TestDb::new("shed");
    let server = Server::start_logged(
        &db.url,
        &[
            "1",
            "--test-routes",
            "--shed-target",
            "20ms",
            "--shed-interval",
            "100ms",
        ],
    );
    // Every 503 any client of this test is answered: all of them are refusals.
    let mut probes_refused = 0;
    let api = Api::new(server.addr);
    let (stop, clients) = overload(server.addr);
    // New requests are refused at once, with the documented answer.
    let mut refused = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = api.get("/stats", None);
            let shed = r.status == 503;
            if shed {
                probes_refused += 1;
                refused = Some(r);
            }
            shed
        }),
        "the overload was never shed"
    );
    let refused = refused.unwrap();
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["error"], "unavailable");
    // Liveness and readiness are answered throughout.
    assert_eq!(api.get("/health", None).status, 200);
    assert_eq!(api.get("/ready", None).status, 200);
    stop.store(true, Relaxed);
    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| matches!(s, 200 | 503)), "{statuses:?}");
    assert!(statuses.contains(&503), "the overloading clients were never shed");
    // Once the queue has drained, requests are served again.
    assert!(
        eventually(Duration::from_secs(10), || {
            let status = api.get("/stats", None).status;
            probes_refused += usize::from(status == 503);
            status == 200
        }),
        "shedding never ended"
    );
    // The log speaks of episodes: as many ends as starts (not a line per flip of
    // the state), and the ends count exactly the refusals the clients got.
    let count = |log: &[String], what: &str| log.iter().filter(|l| l.contains(what)).count();
    assert!(
        eventually(Duration::from_secs(10), || {
            let log = server.log();
            let over = count(&log, "load shedding over");
            over >= 1 && over == count(&log, "load shedding begins")
        }),
        "shedding episodes not logged as begun and over: {:#?}",
        server.log()
    );
    let log = server.log();
    let logged_refusals: usize = log
        .iter()
        .filter_map(|l| {
            l.split(" requests refused")
                .next()
                .filter(|_| l.contains("load shedding over"))
        })
        .map(|l| l.split_whitespace().last().unwrap().parse::<usize>().unwrap())
        .sum();
    let seen = probes_refused + statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(logged_refusals, seen, "{log:#?}");
}

#[test]
fn without_shedding_the_same_overload_is_queued_not_refused() {
    let db = TestDb::new("noshed");
    let server = Server::start(&db.url, &["1", "--test-routes", "--shed-target", "0"]);
    let api = Api::new(server.addr);
    let (stop, clients) = overload(server.addr);
    for _ in 0..5 {
        assert_eq!(api.get("/stats", None).status, 200);
    }
    stop.store(true, Relaxed);
    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

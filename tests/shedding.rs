//! Load shedding: when connections keep waiting in the queue longer than the
//! target, new requests get 503 + Retry-After at once, liveness and readiness are
//! still answered, and serving resumes by itself once the queue drains. Without
//! shedding the same overload is queued, never refused.
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
    let server = Server::start(
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
    let api = Api::new(server.addr);
    let (stop, clients) = overload(server.addr);
    // New requests are refused at once, with the documented answer.
    let mut refused = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = api.get("/stats", None);
            let shed = r.status == 503;
            if shed {
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
        eventually(Duration::from_secs(10), || api.get("/stats", None).status == 200),
        "shedding never ended"
    );
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

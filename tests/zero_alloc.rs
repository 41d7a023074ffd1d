//! Proof that a plain request allocates nothing: the server runs in this process
//! under a counting global allocator, and twenty thousand pipelined GET /health
//! requests (and as many POST /event for a known user, rate-limited: charged to
//! the client IP, answered with the RateLimit fields, as many authenticated
//! GET /api/sample/{id} answered from the read cache with their ETag, as many
//! relayed GETs answered from the relay's memory, and as many requests refused
//! with 401) after warm-up must not allocate once, in any thread. (The relay's
//! test upstream is another process.)
//!
//! This file holds a single test so no other test shares the process.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DEPTH: usize = 16;
const OK: &[u8] = b"HTTP/1.1 200 OK\r\n";

/// Sends DEPTH pipelined requests and reads exactly `len` response bytes, into
/// buffers allocated by the caller.
fn round(s: &mut std::net::TcpStream, batch: &[u8], buf: &mut [u8], len: usize) {
    s.write_all(batch).expect("write");
    let mut got = 0;
    while got < len {
        let n = s.read(&mut buf[got..len]).expect("read");
        assert!(n > 0, "server closed");
        got += n;
    }
}

/// Allocations made, in the whole process, while `one` is answered 20,000 times
/// (pipelined DEPTH at a time) after warm-up. The first and the last answer
/// must start with `status` and contain `has` (all answers are the same length).
fn allocations_for(s: &mut std::net::TcpStream, one: &[u8], status: &[u8], has: &[u8]) -> u64 {
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * DEPTH).collect();
    let mut buf = vec![0u8; 64 * 1024];
    // Every answer has the same length (the Date value is fixed-width, and so is
    // a generated request ID).
    s.write_all(one).expect("write");
    let response_len = s.read(&mut buf).expect("read");
    let expected = |answer: &[u8]| answer.starts_with(status) && answer.windows(has.len()).any(|w| w == has);
    assert!(
        expected(&buf[..response_len]),
        "{:?}",
        String::from_utf8_lossy(&buf[..response_len])
    );
    for _ in 0..200 {
        round(s, &batch, &mut buf, response_len * DEPTH);
    }
    let before = ALLOCS.load(Relaxed);
    for _ in 0..(20_000 / DEPTH) {
        round(s, &batch, &mut buf, response_len * DEPTH);
    }
    let allocations = ALLOCS.load(Relaxed) - before;
    let last = &buf[response_len * (DEPTH - 1)..response_len * DEPTH];
    assert!(expected(last), "{:?}", String::from_utf8_lossy(last));
    allocations
}

#[test]
fn plain_requests_allocate_nothing_after_warm_up() {
    use clap::Parser;
    let db = common::TestDb::new("zeroalloc");
    let upstream = common::Upstream::start();
    let relay_upstream = upstream.url();
    let args = crudrs::Args::try_parse_from([
        "server",
        "2",
        "--port",
        "0",
        "--no-stats",
        "--argon2-memory-kib",
        "8",
        "--argon2-iterations",
        "1",
        "--database-url",
        &db.url,
        // Limited, with a quota no test run reaches (and a remaining count that
        // keeps its width, so every answer has the same length).
        "--rate-limits",
        "anonymous=1000000000/m,free=1000000000/m",
        "--relay-upstream",
        &relay_upstream,
    ])
    .expect("args");
    let config = crudrs::Config::from_args(args, false).expect("config");
    let server = crudrs::Server::start(config).expect("server starts");
    let addr = server.addr();
    // The pool opens its connections in the background, allocating as it goes:
    // measure once it is full.
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || server.pool_filled()),
        "the database pool never filled"
    );

    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let health = allocations_for(
        &mut s,
        b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        OK,
        br#"{"status":"ok"}"#,
    );
    assert_eq!(health, 0, "{health} allocations for 20000 GET /health requests");
    // An event for a user already seen parses by borrowing and allocates nothing.
    let event = b"POST /event HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{\"userId\":\"user_1\",\"value\":2.5}";
    let events = allocations_for(&mut s, event, OK, b";t=1\r\nX-Request-Id: ");
    assert_eq!(events, 0, "{events} allocations for 20000 POST /event requests");
    // A sample read by its owner, from the read cache: token from the token
    // cache, body and ETag shared with the cache entry.
    let api = common::Api::new(addr);
    let token = api.user("reader");
    let body: serde_json::Value = serde_json::from_str(&common::fixture_body()).unwrap();
    let created = api.post("/api/sample", Some(&token), &body);
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_i64().unwrap();
    let read = format!("GET /api/sample/{id} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    // The insert's own NOTIFY invalidates the read cache when the listener gets
    // it, a few milliseconds later: one whole pass more of warm-up, so that a
    // late delivery on a loaded machine is not counted as the hot path's.
    allocations_for(&mut s, read.as_bytes(), OK, b"\r\nETag: \"");
    let reads = allocations_for(&mut s, read.as_bytes(), OK, b"\r\nETag: \"");
    assert_eq!(
        reads, 0,
        "{reads} allocations for 20000 cached GET /api/sample/{{id}} requests"
    );
    // A relay cache hit: the entry's header text and body are shared with the
    // answer. (The upstream's Age of 100 keeps Age three digits wide while the
    // test runs, so every answer has the same length; the first request is the
    // miss that fills the cache, in the warm-up.)
    let target = "/relay/zero?max_age=3600&age=100";
    let miss = api.get(target, None);
    assert_eq!(miss.status, 200, "{}", miss.text());
    let hit = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
    let hits = allocations_for(&mut s, hit.as_bytes(), OK, b"\r\nX-Cache: HIT");
    assert_eq!(hits, 0, "{hits} allocations for 20000 relay cache hits");
    assert_eq!(upstream.total(), 1, "one upstream request: every other was a hit");
    // A refusal (here 401: no token) writes its JSON body into the worker's
    // reused body buffer: refusing, as under overload, allocates nothing either.
    let refused = allocations_for(
        &mut s,
        b"GET /api/sample/1 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"HTTP/1.1 401 Unauthorized\r\n",
        br#"{"error":"unauthorized""#,
    );
    assert_eq!(refused, 0, "{refused} allocations for 20000 refused requests");
    drop(s);
    server.stopper().stop();
    server.join();
}

//! Three instances on one database behind a real HAProxy (Debian's, installed by
//! scripts/haproxy.sh, configured by it as `make cluster` does): every instance
//! serves (X-Instance-Id), concurrent counter increments through the balancer get
//! distinct, gap-free values whichever instance committed them, an instance
//! stopped with SIGTERM under load (`--drain-delay`) fails no request, and one
//! killed with SIGKILL under load fails at most what it had in flight, loses no
//! acknowledged write, and rejoins once restarted; and every instance recovers
//! by itself from a PostgreSQL restart under load, losing nothing acknowledged.
// A panic is how a test reports failure, so unwrap is fine here.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// HAProxy in front of `ports`, on a free port of its own; killed on drop.
struct Balancer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Balancer {
    /// Starts HAProxy on a port that was free a moment ago. Another process may
    /// take that port first (a parallel test's server, say): HAProxy then fails to
    /// bind and exits, or, worse, the port answers for someone else. So HAProxy
    /// marks every answer with a header naming this start, it counts as up only
    /// when such an answer comes, and a start that fails is tried again on
    /// another port.
    fn start(ports: &[u16]) -> Balancer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/haproxy.sh");
        let binary = Command::new("bash").arg(script).output().unwrap();
        assert!(
            binary.status.success(),
            "{}",
            String::from_utf8_lossy(&binary.stderr)
        );
        let haproxy = String::from_utf8(binary.stdout).unwrap().trim().to_string();
        for _attempt in 0..5 {
            let public = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let config = Command::new("bash")
                .arg(script)
                .arg("config")
                .arg(public.port().to_string())
                .args(ports.iter().map(u16::to_string))
                .output()
                .unwrap();
            assert!(config.status.success());
            let mark = format!("{}-{}", std::process::id(), public.port());
            let config = String::from_utf8(config.stdout).unwrap();
            let marked = config.replacen(
                "    option forwardfor\n",
                &format!("    option forwardfor\n    http-response set-header X-Test-Balancer {mark}\n"),
                1,
            );
            assert_ne!(marked, config, "haproxy.sh's frontend changed: mark it elsewhere");
            let path =
                std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("haproxy-{mark}.cfg"));
            std::fs::write(&path, marked).unwrap();
            let child = Command::new(&haproxy)
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut b = Balancer { child, addr: public };
            // Up, its first health checks passed (some instance answers /ready),
            // and the answer came through this HAProxy; or it exited.
            let mut exited = false;
            let up = eventually(Duration::from_secs(5), || {
                exited = matches!(b.child.try_wait(), Ok(Some(_)));
                exited || answers_ready_marked(b.addr, &mark)
            });
            if up && !exited {
                return b;
            }
            assert!(exited, "haproxy did not start, or no instance is up behind it");
            eprintln!("haproxy could not take port {}; trying another", public.port());
        }
        panic!("haproxy could not take a port in 5 attempts");
    }
}

/// Whether `addr` answers GET /ready with 200 and `X-Test-Balancer: mark` within
/// a second times the slack factor (whatever else listens there, answering or
/// not, is no hang; a probe too slow is only tried again).
fn answers_ready_marked(addr: std::net::SocketAddr, mark: &str) -> bool {
    use std::io::{Read, Write};
    let patience = bound(Duration::from_secs(1));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, patience) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(patience));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    answer.starts_with("http/1.1 200") && answer.contains(&format!("\r\nx-test-balancer: {mark}\r\n"))
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn increments_through_haproxy_are_distinct_and_gap_free_across_instances() {
    let db = TestDb::new("cluster");
    let servers: Vec<Server> = (1..=3)
        .map(|i| Server::start(&db.url, &["2", "--instance-id", &format!("crudrs-{i}")]))
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.addr.port()).collect();
    let lb = Balancer::start(&ports);
    let api = Api::new(lb.addr);
    // Health checks mark every instance up.
    let mut seen = HashSet::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            let r = api.get("/ready", None);
            if r.status == 200 {
                seen.insert(r.header("x-instance-id").unwrap_or("").to_string());
            }
            seen.len() == 3
        }),
        "instances answering through haproxy: {seen:?}"
    );

    const THREADS: usize = 12;
    const EACH: usize = 250;
    let start: i64 = api.get("/api/v1/counter", None).json()["value"].as_i64().unwrap();
    let results: Vec<(Vec<i64>, HashSet<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut values = Vec::new();
                    let mut instances = HashSet::new();
                    for _ in 0..EACH {
                        let r = api.call("POST", "/api/v1/counter", None, None);
                        assert_eq!(r.status, 200, "{}", r.text());
                        instances.insert(r.header("x-instance-id").unwrap().to_string());
                        values.push(r.json()["value"].as_i64().unwrap());
                    }
                    (values, instances)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut values: Vec<i64> = results.iter().flat_map(|(v, _)| v.iter().copied()).collect();
    let instances: HashSet<&String> = results.iter().flat_map(|(_, i)| i).collect();
    values.sort_unstable();
    let expected: Vec<i64> = (start + 1..=start + (THREADS * EACH) as i64).collect();
    assert_eq!(values, expected, "values are not distinct and gap-free");
    assert_eq!(instances.len(), 3, "{instances:?}");
    let end: i64 = api.get("/api/v1/counter", None).json()["value"].as_i64().unwrap();
    assert_eq!(end, start + (THREADS * EACH) as i64);
}

/// One increment through `addr`: its value, or what went wrong (never a panic).
fn increment(addr: std::net::SocketAddr) -> Result<i64, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    // An answer may wait for a database checkout (--db-timeout) while
    // PostgreSQL restarts; on a loaded machine longer than 10 s.
    s.set_read_timeout(Some(bound(Duration::from_secs(10))))
        .map_err(|e| e.to_string())?;
    s.write_all(b"POST /api/v1/counter HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Reader::new(s).next(false)))
        .map_err(|_| "a broken answer".to_string())?
        .ok_or("closed without an answer")?;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.text()));
    }
    r.json()["value"].as_i64().ok_or_else(|| "no value".to_string())
}

/// Increments through `addr` from `clients` threads until `during` returns (it
/// runs while they do, after half a second of load, and is followed by a second
/// more): the values answered, and every failure.
fn under_load(addr: std::net::SocketAddr, clients: usize, during: impl FnOnce()) -> (Vec<i64>, Vec<String>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let load: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let (mut ok, mut bad) = (Vec::new(), Vec::new());
                    while !done.load(Relaxed) {
                        match increment(addr) {
                            Ok(v) => ok.push(v),
                            Err(e) => bad.push(e),
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        during();
        std::thread::sleep(Duration::from_millis(500));
        done.store(true, Relaxed);
        let mut all = (Vec::new(), Vec::new());
        for h in load {
            let (ok, bad) = h.join().unwrap();
            all.0.extend(ok);
            all.1.extend(bad);
        }
        all
    })
}

#[test]
fn an_instance_stopped_under_load_fails_no_request() {
    let db = TestDb::new("cluster_drain");
    // HAProxy marks an instance down after two failed checks 500 ms apart; the
    // drain outlasts that with room to spare.
    let servers: Vec<std::sync::Mutex<Server>> = (1..=3)
        .map(|i| {
            let id = format!("crudrs-{i}");
            std::sync::Mutex::new(Server::start(
                &db.url,
                &["2", "--instance-id", &id, "--drain-delay", "3s"],
            ))
        })
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.lock().unwrap().addr.port()).collect();
    let lb = Balancer::start(&ports);
    let api = Api::new(lb.addr);
    let start: i64 = api.get("/api/v1/counter", None).json()["value"].as_i64().unwrap();

    let (values, failures) = under_load(lb.addr, 4, || {
        let status = servers[1].lock().unwrap().terminate();
        assert!(status.success(), "the stopped instance exited with {status}");
    });
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut values = values;
    values.sort_unstable();
    let expected: Vec<i64> = (start + 1..=start + values.len() as i64).collect();
    assert_eq!(values, expected, "values are not distinct and gap-free");
    assert!(values.len() > 100, "only {} increments", values.len());
}

#[test]
fn an_instance_killed_under_load_costs_only_its_requests_in_flight_and_rejoins() {
    const CLIENTS: usize = 4;
    let db = TestDb::new("cluster_kill");
    let mut servers: Vec<Server> = (1..=3)
        .map(|i| Server::start(&db.url, &["2", "--instance-id", &format!("crudrs-{i}")]))
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.addr.port()).collect();
    let lb = Balancer::start(&ports);
    let api = Api::new(lb.addr);

    let victim = &mut servers[1];
    let (values, failures) = under_load(lb.addr, CLIENTS, || {
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
    });
    // Each client has one request in flight at a time: at most that many were on
    // the killed instance.
    assert!(
        failures.len() <= CLIENTS,
        "{} failed: {failures:?}",
        failures.len()
    );
    // No acknowledged increment is lost or given twice; the ones in flight on the
    // killed instance may have committed unanswered (a gap, not a loss).
    let mut sorted = values.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), values.len(), "a value was given twice");
    let end: i64 = api.get("/api/v1/counter", None).json()["value"].as_i64().unwrap();
    assert!(sorted.last().is_none_or(|&max| max <= end));
    assert!(
        end - (sorted.len() as i64) <= CLIENTS as i64,
        "more increments than answers plus those in flight"
    );

    // Restarted on its port, it is back in the rotation within a few checks.
    let port = ports[1].to_string();
    *victim = Server::start(&db.url, &["2", "--instance-id", "crudrs-2", "--port", &port]);
    assert!(
        eventually(Duration::from_secs(3), || api
            .get("/health", None)
            .header("x-instance-id")
            == Some("crudrs-2")),
        "the restarted instance did not rejoin"
    );
}

#[test]
fn every_instance_recovers_from_a_database_restart_and_nothing_acknowledged_is_lost() {
    let cluster = Cluster::new("cluster_restart");
    let url = cluster.start();
    let db_timeout = format!("{}ms", bound(Duration::from_millis(500)).as_millis());
    let servers: Vec<Server> = (1..=3)
        .map(|i| {
            let id = format!("crudrs-{i}");
            let flags = ["2", "--instance-id", &id, "--db-timeout", &db_timeout];
            Server::start(
                &url,
                &[
                    &flags[..],
                    &["--breaker-failures", "3", "--breaker-reset", "500ms"],
                ]
                .concat(),
            )
        })
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.addr.port()).collect();
    let lb = Balancer::start(&ports);
    let addr = lb.addr;

    // Increments through HAProxy while PostgreSQL stops and starts: answered, or
    // refused (503 from an instance's breaker, or from HAProxy with every
    // instance down), never anything else.
    let acknowledged = restart_under_load(&cluster, 4, move || match increment(addr) {
        Ok(v) => (1, 0, vec![v]),
        Err(e) if e.starts_with("status 503") || e.starts_with("connect") => (0, 1, vec![]),
        Err(e) => panic!("an increment ended in {e}"),
    });
    // Every instance is back on its own.
    for s in &servers {
        let api = Api::new(s.addr);
        assert!(
            eventually(Duration::from_secs(5), || api.get("/ready", None).status == 200),
            "an instance did not recover"
        );
    }
    let mut values = acknowledged.clone();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), acknowledged.len(), "a value was given twice");
    let end: i64 = Api::new(addr).get("/api/v1/counter", None).json()["value"]
        .as_i64()
        .unwrap();
    // Nothing acknowledged was lost: the counter is at least every value given.
    assert!(
        values.last().is_some_and(|&max| max <= end),
        "{end} < {:?}",
        values.last()
    );
}
